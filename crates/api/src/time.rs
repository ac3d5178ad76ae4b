//! Timestamps as people read and write them, and as the store keeps them:
//! RFC 3339 in (`at` of a scheduled switchover), RFC 3339 in UTC out, unix
//! milliseconds stored. The calendar (which dates exist, offsets) is jiff's;
//! this module only converts.

use jiff::Timestamp;

/// The forms an error shows, so the operator can retype the time.
const EXPECTED: &str =
    "write RFC 3339 with an offset, e.g. 2026-11-21T20:18:09Z or 2026-11-21T22:18:09+02:00, or unix seconds";

/// A time that does not exist or is not written as RFC 3339.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("\"{text}\" is not a valid time ({reason}); {EXPECTED}")]
pub struct BadTime {
    text: String,
    reason: String,
}

/// `2026-11-21T20:18:09Z`, `2026-11-21T20:18:09.250+01:00` (a space for the
/// `T` is accepted) into unix milliseconds. Dates that do not exist
/// (`2026-02-31`) and times before 1970 are refused.
pub fn parse_rfc3339(text: &str) -> Result<u64, BadTime> {
    let bad = |reason: String| BadTime {
        text: text.to_string(),
        reason,
    };
    let at: Timestamp = text.parse().map_err(|e: jiff::Error| bad(e.to_string()))?;
    u64::try_from(at.as_millisecond()).map_err(|_| bad("it is before 1970".to_string()))
}

/// Unix milliseconds as `2026-11-21T20:18:09Z` (UTC, whole seconds).
pub fn format_rfc3339(unix_ms: u64) -> String {
    // Past jiff's range (the year 9999) no date is meaningful: say what
    // was stored instead.
    i64::try_from(unix_ms / 1000)
        .ok()
        .and_then(|seconds| Timestamp::from_second(seconds).ok())
        .map_or_else(|| format!("{unix_ms} ms after 1970"), |at| at.to_string())
}

/// Now, in unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_offsets() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_rfc3339("2026-11-21T20:18:09Z"), Ok(1_795_292_289_000));
        assert_eq!(format_rfc3339(1_795_292_289_000), "2026-11-21T20:18:09Z");
        assert_eq!(
            parse_rfc3339("2026-11-21T21:18:09.25+01:00"),
            Ok(1_795_292_289_250)
        );
        assert_eq!(parse_rfc3339("2000-02-29 12:00:00Z"), Ok(951_825_600_000));
        assert_eq!(format_rfc3339(951_825_600_000), "2000-02-29T12:00:00Z");
        for bad in [
            "",
            "tomorrow",
            "2026-13-01T00:00:00Z",
            "2026-11-21T20:18:09",
            "2026-11-21T20:18:09+1",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_offset_is_converted_to_utc() {
        let east = parse_rfc3339("2026-11-21T22:18:09+02:00").unwrap();
        assert_eq!(east, 1_795_292_289_000);
        assert_eq!(format_rfc3339(east), "2026-11-21T20:18:09Z");
        let west = parse_rfc3339("2026-11-21T15:18:09.5-05:00").unwrap();
        assert_eq!(west, 1_795_292_289_500);
        // Across midnight and a month's end.
        assert_eq!(
            format_rfc3339(parse_rfc3339("2026-03-01T01:30:00+02:00").unwrap()),
            "2026-02-28T23:30:00Z"
        );
    }

    #[test]
    fn dates_that_do_not_exist_are_refused_with_the_expected_form() {
        for text in [
            "2026-02-31T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-04-31T12:00:00+02:00",
            "2026-11-21T24:00:00Z",
            "2026-11-21T20:61:00Z",
        ] {
            let error = parse_rfc3339(text).unwrap_err().to_string();
            assert!(
                error.starts_with(&format!("\"{text}\" is not a valid time")),
                "{error}"
            );
            assert!(error.contains("2026-11-21T20:18:09Z"), "{error}");
        }
        // A leap year has the 29th.
        assert!(parse_rfc3339("2028-02-29T00:00:00Z").is_ok());
        let early = parse_rfc3339("1969-12-31T23:59:59Z").unwrap_err();
        assert!(early.to_string().contains("before 1970"), "{early}");
    }

    #[test]
    fn formatting_round_trips() {
        for ms in [0, 951_825_600_000, 1_795_292_289_000, 4_102_444_799_000] {
            assert_eq!(parse_rfc3339(&format_rfc3339(ms)), Ok(ms), "{ms}");
        }
        for text in [
            "1970-01-01T00:00:00Z",
            "2000-02-29T12:00:00Z",
            "2026-12-31T23:59:59Z",
        ] {
            assert_eq!(format_rfc3339(parse_rfc3339(text).unwrap()), text);
        }
        // Milliseconds are shown as whole seconds.
        assert_eq!(format_rfc3339(1_795_292_289_999), "2026-11-21T20:18:09Z");
        assert_eq!(
            format_rfc3339(u64::MAX),
            format!("{} ms after 1970", u64::MAX)
        );
    }
}
