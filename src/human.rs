//! How kiln writes durations and sizes for people: one way each.

use std::time::Duration;

/// `4.2s` under a minute, `3m07s` from there.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// A size as it goes by (transfers): `812 KiB`, `612 MiB`, `1.43 GiB`.
pub fn bytes(bytes: u64) -> String {
    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    match bytes {
        0..MIB => format!("{} KiB", bytes / KIB),
        MIB..GIB => format!("{} MiB", bytes / MIB),
        _ => format!("{:.2} GiB", bytes as f64 / GIB as f64),
    }
}

/// A limit, to the byte: `1 MiB`, `64 KiB`, `1000 bytes` (rounding would
/// misstate it).
pub fn exact_bytes(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration(Duration::from_millis(4200)), "4.2s");
        assert_eq!(duration(Duration::from_secs(187)), "3m07s");
    }

    #[test]
    fn sizes() {
        assert_eq!(bytes(812 << 10), "812 KiB");
        assert_eq!(bytes(1536 << 20), "1.50 GiB");
        assert_eq!(exact_bytes(1 << 20), "1 MiB");
        assert_eq!(exact_bytes(1000), "1000 bytes");
    }
}
