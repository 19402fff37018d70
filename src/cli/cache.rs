//! `kiln cache list` and `kiln cache prune`: what kiln keeps between builds
//! (downloaded source images), and removing it.

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};

use super::args::{CacheArgs, CacheCommand, PruneArgs};
use super::session::Report;
use crate::cache::{Cache, Entry, PruneRule};

/// `kiln cache ...`.
pub(super) fn run(args: &CacheArgs, machine_readable: bool) -> ExitCode {
    let report = Report::new(machine_readable);
    let rule = match &args.command {
        CacheCommand::List => None,
        CacheCommand::Prune(prune) => match rule(prune) {
            Ok(rule) => Some(rule),
            Err(err) => return report.usage_error(&err),
        },
    };
    let result = Cache::from_env()
        .context("finding the cache")
        .and_then(|cache| match &rule {
            None => list(&cache, &report),
            Some(rule) => prune(&cache, rule, &report),
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("Error: {}", crate::error::error_chain(err.as_ref()));
            super::exit::code(super::exit::FAILURE)
        }
    }
}

fn list(cache: &Cache, report: &Report) -> anyhow::Result<()> {
    let entries = cache
        .list()
        .with_context(|| format!("reading the cache {}", cache.root().display()))?;
    if entries.is_empty() {
        report.say(&format!("The cache {} is empty.", cache.root().display()));
        return Ok(());
    }
    let now = SystemTime::now();
    let total: u64 = entries.iter().map(|e| e.size).sum();
    report.text(&table(&entries, now));
    for entry in &entries {
        report.record(
            "",
            &[
                "cache-entry",
                entry.kind.as_str(),
                &entry.key,
                &entry.size.to_string(),
                &age(entry, now).as_secs().to_string(),
                entry.origin.as_deref().unwrap_or(""),
            ],
        );
    }
    report.say(&format!(
        "{} {} in {}, {} in all.",
        entries.len(),
        if entries.len() == 1 {
            "entry"
        } else {
            "entries"
        },
        cache.root().display(),
        crate::human::bytes(total)
    ));
    Ok(())
}

fn prune(cache: &Cache, rule: &PruneRule, report: &Report) -> anyhow::Result<()> {
    let removed = cache
        .prune(rule, SystemTime::now())
        .with_context(|| format!("pruning the cache {}", cache.root().display()))?;
    for entry in &removed {
        report.record(
            "",
            &[
                "cache-removed",
                entry.kind.as_str(),
                &entry.key,
                &entry.size.to_string(),
            ],
        );
        report.say(&format!(
            "Removed {} {} ({})",
            entry.kind.as_str(),
            entry.origin.as_deref().unwrap_or(&entry.key),
            crate::human::bytes(entry.size)
        ));
    }
    let freed: u64 = removed.iter().map(|e| e.size).sum();
    report.say(&format!(
        "Removed {} {}, {} freed.",
        removed.len(),
        if removed.len() == 1 {
            "entry"
        } else {
            "entries"
        },
        crate::human::bytes(freed)
    ));
    Ok(())
}

fn rule(args: &PruneArgs) -> anyhow::Result<PruneRule> {
    if !args.all && args.older_than.is_none() && args.max_size.is_none() {
        bail!("kiln cache prune: say what to remove with -older-than, -max-size or -all");
    }
    Ok(PruneRule {
        all: args.all,
        older_than: args
            .older_than
            .as_deref()
            .map(parse_age)
            .transpose()
            .context("-older-than")?,
        max_size: args
            .max_size
            .as_deref()
            .map(parse_size)
            .transpose()
            .context("-max-size")?,
    })
}

fn age(entry: &Entry, now: SystemTime) -> Duration {
    now.duration_since(entry.used).unwrap_or_default()
}

fn table(entries: &[Entry], now: SystemTime) -> String {
    let mut text = format!(
        "{:<8}  {:>10}  {:>5}  {}\n",
        "KIND", "SIZE", "AGE", "ORIGIN"
    );
    for entry in entries {
        text.push_str(&format!(
            "{:<8}  {:>10}  {:>5}  {}\n",
            entry.kind.as_str(),
            crate::human::bytes(entry.size),
            short_age(age(entry, now)),
            entry.origin.as_deref().unwrap_or(&entry.key)
        ));
    }
    text
}

/// The largest whole unit: `45s`, `12m`, `5h`, `3d`.
fn short_age(age: Duration) -> String {
    let secs = age.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

/// `90s`, `30m`, `12h`, `7d`, `2w`, or several together (`1d12h`).
fn parse_age(text: &str) -> anyhow::Result<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        bail!("expected a duration such as 7d, 12h or 30m, got {text:?}");
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let unit_len = rest[digits..]
            .bytes()
            .take_while(u8::is_ascii_alphabetic)
            .count();
        let (number, unit) = (&rest[..digits], &rest[digits..digits + unit_len]);
        let seconds = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            _ => bail!("expected a duration such as 7d, 12h or 30m, got {text:?}"),
        };
        let n: u64 = number.parse().map_err(|_| {
            anyhow::anyhow!("expected a duration such as 7d, 12h or 30m, got {text:?}")
        })?;
        total += Duration::from_secs(n.saturating_mul(seconds));
        rest = &rest[digits + unit_len..];
    }
    Ok(total)
}

/// `500M`, `10G`, `1T` (powers of 1024; `MB`, `MiB` too) or bytes.
fn parse_size(text: &str) -> anyhow::Result<u64> {
    let trimmed = text.trim();
    let digits = trimmed.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = trimmed.split_at(digits);
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => bail!("expected a size such as 500M or 10G, got {text:?}"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| anyhow::anyhow!("expected a size such as 500M or 10G, got {text:?}"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| anyhow::anyhow!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(parse_age("7d").unwrap(), Duration::from_secs(7 * 86_400));
        assert_eq!(parse_age("1d12h").unwrap(), Duration::from_secs(129_600));
        assert_eq!(parse_age("2w").unwrap(), Duration::from_secs(14 * 86_400));
        assert_eq!(parse_age("90s").unwrap(), Duration::from_secs(90));
        for bad in ["", "7", "d", "7y", "-1d"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
        assert_eq!(short_age(Duration::from_secs(59)), "59s");
        assert_eq!(short_age(Duration::from_secs(7200)), "2h");
        assert_eq!(short_age(Duration::from_secs(3 * 86_400 + 5)), "3d");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("500MiB").unwrap(), 500 << 20);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("2kb").unwrap(), 2048);
        for bad in ["", "G", "10X", "1.5G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prune_needs_a_rule() {
        let none = PruneArgs {
            older_than: None,
            max_size: None,
            all: false,
        };
        assert!(rule(&none).unwrap_err().to_string().contains("-older-than"));
        let args = PruneArgs {
            older_than: Some("1d".into()),
            max_size: Some("1G".into()),
            all: false,
        };
        let got = rule(&args).unwrap();
        assert_eq!(got.older_than, Some(Duration::from_secs(86_400)));
        assert_eq!(got.max_size, Some(1 << 30));
        let bad = PruneArgs {
            older_than: Some("soon".into()),
            ..args
        };
        let err = rule(&bad).unwrap_err();
        assert!(
            crate::error::error_chain(err.as_ref()).starts_with("-older-than: expected a duration"),
            "{err:#}"
        );
    }
}
