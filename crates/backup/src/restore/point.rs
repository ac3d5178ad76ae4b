//! What `--to` and `--timeline` say: where recovery stops, and which
//! timeline it follows.

use std::fmt;

use super::RecoveryTarget;
use pg::Lsn;

/// `--to`: a time, a WAL position, a restore point, or the archive's end.
pub fn parse_target(text: &str) -> Result<RecoveryTarget, String> {
    let text = text.trim();
    if let Some(name) = text.strip_prefix("name:") {
        return restore_point(name);
    }
    if text.eq_ignore_ascii_case("latest") {
        return Ok(RecoveryTarget::Latest);
    }
    if looks_like_lsn(text) {
        return text.parse::<Lsn>().map(RecoveryTarget::Lsn);
    }
    if looks_like_date(text) {
        return parse_time(text).map(RecoveryTarget::Time);
    }
    restore_point(text)
}

fn restore_point(name: &str) -> Result<RecoveryTarget, String> {
    if name.is_empty() {
        return Err("--to name: needs the restore point's name after `name:`".into());
    }
    // PostgreSQL's limit (MAXFNAMELEN - 1).
    if name.len() > 63 {
        return Err(format!(
            "`{name}` is longer than a restore point name can be (63 bytes); give a time \
             (`2026-03-01 14:02:00+01`), a WAL position (`0/3000148`), `latest`, or the name \
             given to pg_create_restore_point"
        ));
    }
    Ok(RecoveryTarget::Name(name.to_string()))
}

fn looks_like_lsn(text: &str) -> bool {
    text.split_once('/').is_some_and(|(high, low)| {
        let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
        hex(high) && hex(low)
    })
}

/// Starts like `YYYY-MM-DD`: meant as a time, so a typo is an error, not
/// a restore point no one made.
fn looks_like_date(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() >= 5 && bytes[..4].iter().all(u8::is_ascii_digit) && bytes[4] == b'-'
}

/// RFC 3339 (`2026-03-01T14:02:00Z`, `…+01:00`) or `YYYY-MM-DD HH:MM:SS`
/// with an optional fraction and offset (`+01`, `+01:00`, `Z`). Without an
/// offset the time is UTC: pgwarden reads no time zone database.
pub fn parse_time(text: &str) -> Result<jiff::Timestamp, String> {
    let bad = |why: String| {
        format!(
            "`{text}` is not a time pgwarden reads ({why}); write RFC 3339 \
             (`2026-03-01T14:02:00+01:00`) or `YYYY-MM-DD HH:MM:SS` with an optional offset \
             (`2026-03-01 14:02:00+01`); without an offset the time is UTC"
        )
    };
    if has_offset(text) {
        return text
            .parse::<jiff::Timestamp>()
            .map_err(|e| bad(e.to_string()));
    }
    let civil: jiff::civil::DateTime = text.parse().map_err(|e: jiff::Error| bad(e.to_string()))?;
    if !text.contains(':') {
        return Err(bad("it has no time of day".into()));
    }
    jiff::tz::Offset::UTC
        .to_timestamp(civil)
        .map_err(|e| bad(e.to_string()))
}

/// Whether the text after the date ends in `Z` or a `+`/`-` offset.
fn has_offset(text: &str) -> bool {
    let time = text.get(10..).unwrap_or("");
    time.ends_with(['Z', 'z']) || time.contains(['+', '-'])
}

/// `--timeline`: the one recovery follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timeline {
    /// The newest in the archive: what a restore after a failover wants.
    Latest,
    /// The backup's own (PostgreSQL's `current`).
    Current,
    Id(u32),
}

impl Timeline {
    /// The value of `recovery_target_timeline`.
    pub fn setting(self) -> String {
        match self {
            Timeline::Latest => "latest".into(),
            Timeline::Current => "current".into(),
            Timeline::Id(id) => id.to_string(),
        }
    }
}

impl fmt::Display for Timeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.setting())
    }
}

pub fn parse_timeline(text: &str) -> Result<Timeline, String> {
    match text.trim() {
        t if t.eq_ignore_ascii_case("latest") => Ok(Timeline::Latest),
        t if t.eq_ignore_ascii_case("current") => Ok(Timeline::Current),
        t => match t.parse::<u32>() {
            Ok(id) if id >= 1 => Ok(Timeline::Id(id)),
            _ => Err(format!(
                "`{t}` is not a timeline: give `latest`, `current` or a timeline number \
                 (1, 2, …; the hex in a WAL file name's first 8 digits)"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(text: &str) -> jiff::Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn each_kind_of_target() {
        assert_eq!(parse_target("latest"), Ok(RecoveryTarget::Latest));
        assert_eq!(
            parse_target("0/3000148"),
            Ok(RecoveryTarget::Lsn(Lsn(0x300_0148)))
        );
        assert_eq!(
            parse_target("before upgrade"),
            Ok(RecoveryTarget::Name("before upgrade".into()))
        );
        assert_eq!(
            parse_target("name:2026-01-01"),
            Ok(RecoveryTarget::Name("2026-01-01".into()))
        );
        assert_eq!(
            parse_target("name:latest"),
            Ok(RecoveryTarget::Name("latest".into()))
        );
        assert_eq!(
            parse_target("2026-03-01T14:02:00Z"),
            Ok(RecoveryTarget::Time(time("2026-03-01T14:02:00Z")))
        );
    }

    #[test]
    fn times_with_and_without_an_offset() {
        assert_eq!(
            parse_time("2026-03-01 14:02:00+01"),
            Ok(time("2026-03-01T13:02:00Z"))
        );
        assert_eq!(
            parse_time("2026-03-01 14:02:00.250-05:00"),
            Ok(time("2026-03-01T19:02:00.25Z"))
        );
        assert_eq!(
            parse_time("2026-03-01T14:02:00+01:00"),
            Ok(time("2026-03-01T13:02:00Z"))
        );
        assert_eq!(
            parse_time("2026-03-01 14:02:00"),
            Ok(time("2026-03-01T14:02:00Z"))
        );
        assert_eq!(
            parse_time("2026-03-01 14:02"),
            Ok(time("2026-03-01T14:02:00Z"))
        );
    }

    #[test]
    fn a_bad_time_is_an_error_not_a_restore_point() {
        for bad in [
            "2026-02-31 14:02:00",
            "2026-03-01 25:00:00",
            "2026-03-01",
            "2026-03-01 14:02:00+99",
        ] {
            let err = parse_target(bad).unwrap_err();
            assert!(err.contains("is not a time"), "{bad}: {err}");
            assert!(err.contains("RFC 3339"), "{bad}: {err}");
        }
        assert!(parse_target("0/XYZ").is_ok_and(|t| t == RecoveryTarget::Name("0/XYZ".into())));
        assert!(parse_target("name:").is_err());
        assert!(parse_target(&"x".repeat(64)).is_err());
    }

    #[test]
    fn timelines() {
        assert_eq!(parse_timeline("latest"), Ok(Timeline::Latest));
        assert_eq!(parse_timeline("3"), Ok(Timeline::Id(3)));
        assert_eq!(Timeline::Id(3).setting(), "3");
        assert!(parse_timeline("0").is_err());
        assert!(parse_timeline("two").unwrap_err().contains("latest"));
    }
}
