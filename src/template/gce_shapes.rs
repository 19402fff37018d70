//! Compute Engine machine types as the vCPUs and memory of the local QEMU
//! machine that stands in for the instance, capped to what the host can
//! give.

/// The families [`shape`] knows, for the error naming an unknown type.
pub const KNOWN: &str = "n1-standard-N, n1-highmem-N, n1-highcpu-N, n2-standard-N, \
     n2-highmem-N, n2-highcpu-N, e2-standard-N, e2-highmem-N, e2-highcpu-N, e2-micro, \
     e2-small, e2-medium, f1-micro, g1-small, [n1-|n2-|e2-]custom-CPUS-MiB[-ext]";

/// The vCPUs and memory of a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Virtual CPUs.
    pub cpus: u32,
    /// Memory, in MiB.
    pub memory_mib: u64,
}

/// A predefined family: the vCPU counts it comes in and the memory per
/// vCPU, in tenths of a GB (GCE's GB are GiB: n1-standard-1 has 3.75 GB,
/// 3840 MiB).
struct Family {
    prefix: &'static str,
    cpus: &'static [u32],
    tenth_gb_per_cpu: u64,
}

const N1: &[u32] = &[1, 2, 4, 8, 16, 32, 64, 96];
const N1_NO_1: &[u32] = &[2, 4, 8, 16, 32, 64, 96];
const N2: &[u32] = &[2, 4, 8, 16, 32, 48, 64, 80, 96, 128];
const N2_HIGHCPU: &[u32] = &[2, 4, 8, 16, 32, 48, 64, 80, 96];
const E2: &[u32] = &[2, 4, 8, 16, 32];
const E2_HIGHMEM: &[u32] = &[2, 4, 8, 16];

const FAMILIES: &[Family] = &[
    Family {
        prefix: "n1-standard-",
        cpus: N1,
        tenth_gb_per_cpu: 375,
    },
    Family {
        prefix: "n1-highmem-",
        cpus: N1_NO_1,
        tenth_gb_per_cpu: 650,
    },
    Family {
        prefix: "n1-highcpu-",
        cpus: N1_NO_1,
        tenth_gb_per_cpu: 90,
    },
    Family {
        prefix: "n2-standard-",
        cpus: N2,
        tenth_gb_per_cpu: 400,
    },
    Family {
        prefix: "n2-highmem-",
        cpus: N2,
        tenth_gb_per_cpu: 800,
    },
    Family {
        prefix: "n2-highcpu-",
        cpus: N2_HIGHCPU,
        tenth_gb_per_cpu: 100,
    },
    Family {
        prefix: "e2-standard-",
        cpus: E2,
        tenth_gb_per_cpu: 400,
    },
    Family {
        prefix: "e2-highmem-",
        cpus: E2_HIGHMEM,
        tenth_gb_per_cpu: 800,
    },
    Family {
        prefix: "e2-highcpu-",
        cpus: E2,
        tenth_gb_per_cpu: 100,
    },
];

/// The shared-core types: fixed shapes.
const SHARED: &[(&str, Shape)] = &[
    (
        "e2-micro",
        Shape {
            cpus: 2,
            memory_mib: 1024,
        },
    ),
    (
        "e2-small",
        Shape {
            cpus: 2,
            memory_mib: 2048,
        },
    ),
    (
        "e2-medium",
        Shape {
            cpus: 2,
            memory_mib: 4096,
        },
    ),
    (
        "f1-micro",
        Shape {
            cpus: 1,
            memory_mib: 614,
        },
    ),
    (
        "g1-small",
        Shape {
            cpus: 1,
            memory_mib: 1740,
        },
    ),
];

/// The shape of machine type `name`; an error names it and lists the
/// families known.
pub fn shape(name: &str) -> Result<Shape, String> {
    let unknown = || format!("unknown machine type {name:?}: kiln knows {KNOWN}");
    if let Some((_, s)) = SHARED.iter().find(|(n, _)| *n == name) {
        return Ok(*s);
    }
    for family in FAMILIES {
        if let Some(count) = name.strip_prefix(family.prefix) {
            let cpus: u32 = count.parse().map_err(|_| unknown())?;
            if !family.cpus.contains(&cpus) {
                let counts: Vec<String> = family.cpus.iter().map(u32::to_string).collect();
                return Err(format!(
                    "unknown machine type {name:?}: {}N comes with N = {}",
                    family.prefix,
                    counts.join(", ")
                ));
            }
            let memory_mib = u64::from(cpus) * family.tenth_gb_per_cpu * 1024 / 100;
            return Ok(Shape { cpus, memory_mib });
        }
    }
    custom(name).ok_or_else(unknown)
}

/// `custom-CPUS-MiB`, with an optional `n1-`/`n2-`/`e2-` family in front
/// and `-ext` (extended memory) behind.
fn custom(name: &str) -> Option<Shape> {
    let rest = ["n1-", "n2-", "e2-"]
        .iter()
        .find_map(|f| name.strip_prefix(f))
        .unwrap_or(name);
    let rest = rest.strip_prefix("custom-")?;
    let rest = rest.strip_suffix("-ext").unwrap_or(rest);
    let (cpus, memory) = rest.split_once('-')?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(cpus) || !all_digits(memory) {
        return None;
    }
    let shape = Shape {
        cpus: cpus.parse().ok()?,
        memory_mib: memory.parse().ok()?,
    };
    (shape.cpus > 0 && shape.memory_mib > 0).then_some(shape)
}

/// What the host can give a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    /// Its CPU cores.
    pub cores: u32,
    /// Its memory, in MiB.
    pub memory_mib: u64,
}

impl Host {
    /// This machine; a part that cannot be read counts as unlimited (QEMU
    /// then says what is wrong).
    pub fn current() -> Host {
        let cores = std::thread::available_parallelism()
            .ok()
            .and_then(|n| u32::try_from(n.get()).ok())
            .unwrap_or(u32::MAX);
        let memory_mib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| mem_total_mib(&text))
            .unwrap_or(u64::MAX);
        Host { cores, memory_mib }
    }
}

/// `MemTotal:` of /proc/meminfo, in MiB.
fn mem_total_mib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// `shape` within the host: no more vCPUs than cores, no more than half
/// its memory (the rest is the host's, QEMU's and the other builds'). The
/// second value says what was capped, for a warning; `None` when the
/// shape fits.
pub fn cap(name: &str, shape: Shape, host: Host) -> (Shape, Option<String>) {
    let capped = Shape {
        cpus: shape.cpus.min(host.cores.max(1)),
        memory_mib: shape.memory_mib.min((host.memory_mib / 2).max(256)),
    };
    if capped == shape {
        return (shape, None);
    }
    let note = format!(
        "machine_type {name} ({} vCPUs, {} MiB) runs locally with {} vCPUs and {} MiB: \
         the host has {} cores and {} MiB of memory",
        shape.cpus, shape.memory_mib, capped.cpus, capped.memory_mib, host.cores, host.memory_mib
    );
    (capped, Some(note))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(cpus: u32, memory_mib: u64) -> Shape {
        Shape { cpus, memory_mib }
    }

    #[test]
    fn predefined_shapes() {
        assert_eq!(shape("n1-standard-1"), Ok(s(1, 3840)));
        assert_eq!(shape("n1-standard-4"), Ok(s(4, 15360)));
        assert_eq!(shape("n1-highmem-2"), Ok(s(2, 13312)));
        assert_eq!(shape("n1-highcpu-2"), Ok(s(2, 1843)));
        assert_eq!(shape("n2-standard-2"), Ok(s(2, 8192)));
        assert_eq!(shape("n2-highmem-4"), Ok(s(4, 32768)));
        assert_eq!(shape("n2-highcpu-8"), Ok(s(8, 8192)));
        assert_eq!(shape("e2-standard-2"), Ok(s(2, 8192)));
        assert_eq!(shape("e2-highmem-16"), Ok(s(16, 131072)));
        assert_eq!(shape("e2-highcpu-32"), Ok(s(32, 32768)));
        assert_eq!(shape("e2-micro"), Ok(s(2, 1024)));
        assert_eq!(shape("e2-small"), Ok(s(2, 2048)));
        assert_eq!(shape("e2-medium"), Ok(s(2, 4096)));
        assert_eq!(shape("f1-micro"), Ok(s(1, 614)));
        assert_eq!(shape("g1-small"), Ok(s(1, 1740)));
    }

    #[test]
    fn custom_shapes() {
        assert_eq!(shape("custom-2-4096"), Ok(s(2, 4096)));
        assert_eq!(shape("n2-custom-4-10240"), Ok(s(4, 10240)));
        assert_eq!(shape("e2-custom-2-8192-ext"), Ok(s(2, 8192)));
        assert!(shape("custom-0-4096").is_err());
        assert!(shape("custom-2").is_err());
        assert!(shape("custom-x-4096").is_err());
    }

    #[test]
    fn unknown_types_are_named_with_the_known_families() {
        let e = shape("m1-ultramem-40").unwrap_err();
        assert!(e.starts_with("unknown machine type \"m1-ultramem-40\": kiln knows n1-standard-N"));
        assert!(e.contains("g1-small"));
        assert_eq!(
            shape("n1-highmem-1").unwrap_err(),
            "unknown machine type \"n1-highmem-1\": n1-highmem-N comes with N = 2, 4, 8, 16, 32, 64, 96"
        );
        assert!(shape("n1-standard-x").is_err());
        assert!(shape("").is_err());
    }

    #[test]
    fn shapes_are_capped_to_the_host() {
        let host = Host {
            cores: 2,
            memory_mib: 8000,
        };
        assert_eq!(cap("e2-small", s(2, 2048), host), (s(2, 2048), None));
        let (capped, note) = cap("n1-standard-8", s(8, 30720), host);
        assert_eq!(capped, s(2, 4000));
        assert_eq!(
            note.as_deref(),
            Some(
                "machine_type n1-standard-8 (8 vCPUs, 30720 MiB) runs locally with 2 vCPUs and \
                 4000 MiB: the host has 2 cores and 8000 MiB of memory"
            )
        );
        let (capped, note) = cap("n2-highcpu-2", s(2, 2048), Host { cores: 1, ..host });
        assert_eq!(capped, s(1, 2048));
        assert!(note.is_some());
    }

    #[test]
    fn meminfo_is_read() {
        assert_eq!(
            mem_total_mib("MemTotal:       24684544 kB\nMemFree: 1 kB\n"),
            Some(24106)
        );
        assert_eq!(mem_total_mib("MemFree: 1 kB\n"), None);
    }
}
