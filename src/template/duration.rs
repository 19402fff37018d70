//! Go duration strings (`5m`, `1h30m`, `300ms`, `1.5s`), as Packer reads them.

use std::time::Duration;

/// Parses a Go duration; negative durations make no sense here and are
/// rejected.
pub fn parse(s: &str) -> Result<Duration, String> {
    let bad = || format!("expected a duration such as \"5m\", \"1h30m\" or \"300ms\", got {s:?}");
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() || rest.starts_with('-') {
        return Err(bad());
    }
    let mut total_nanos: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = &rest[..num_len];
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return Err(bad());
        }
        let value: f64 = num.parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total_nanos += value * scale;
    }
    if total_nanos > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(Duration::from_nanos(total_nanos.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("300ms").unwrap(), Duration::from_millis(300));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
        assert_eq!(parse("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse("2us").unwrap(), Duration::from_micros(2));
        assert_eq!(
            parse("1h1m1s1ms").unwrap(),
            Duration::from_millis(3_661_001)
        );
        for bad in ["", "5", "m", "5 m", "-5s", "1x", "1..5s", "ten"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse("ten").unwrap_err(),
            "expected a duration such as \"5m\", \"1h30m\" or \"300ms\", got \"ten\""
        );
    }
}
