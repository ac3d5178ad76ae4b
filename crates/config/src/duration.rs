//! Durations as operators write them: `"500ms"`, `"3s"`, `"1m"`, `"1h"`, `"7d"`.

use std::time::Duration;

const UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Parses an integer followed by one unit: `ms`, `s`, `m`, `h` or `d`.
///
/// Whole numbers only, so that every value has one obvious spelling and
/// round-trips through [`format_duration`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err("the duration is empty".to_owned());
    }
    let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (number, unit) = text.split_at(digits);
    if number.is_empty() {
        return Err(format!("\"{text}\" does not start with a whole number"));
    }
    if unit.starts_with('.') {
        return Err(format!(
            "\"{text}\" has a fraction; use a smaller unit instead"
        ));
    }
    if unit.is_empty() {
        return Err(format!("\"{text}\" has no unit"));
    }
    let Some(&(_, millis_per_unit)) = UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(format!("\"{text}\" has an unknown unit `{unit}`"));
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(millis_per_unit))
        .map(Duration::from_millis)
        .ok_or_else(|| format!("\"{text}\" is too large"))
}

/// The shortest exact spelling of `d` that [`parse_duration`] reads back.
/// Sub-millisecond parts cannot be written and are dropped.
pub fn format_duration(d: Duration) -> String {
    let millis = d.as_millis();
    for (unit, per) in UNITS {
        let per = u128::from(per);
        if millis != 0 && millis % per == 0 {
            return format!("{}{unit}", millis / per);
        }
    }
    "0ms".to_owned()
}

pub(crate) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_what_is_not_integer_plus_unit() {
        assert_eq!(parse_duration(""), Err("the duration is empty".to_owned()));
        assert_eq!(parse_duration("5"), Err("\"5\" has no unit".to_owned()));
        assert_eq!(
            parse_duration("5x"),
            Err("\"5x\" has an unknown unit `x`".to_owned())
        );
        assert_eq!(
            parse_duration("5 s"),
            Err("\"5 s\" has an unknown unit ` s`".to_owned())
        );
        assert_eq!(
            parse_duration("-1s"),
            Err("\"-1s\" does not start with a whole number".to_owned())
        );
        assert_eq!(
            parse_duration("1.5s"),
            Err("\"1.5s\" has a fraction; use a smaller unit instead".to_owned())
        );
        assert_eq!(
            parse_duration("99999999999999999999h"),
            Err("\"99999999999999999999h\" is too large".to_owned())
        );
    }

    #[test]
    fn formats_with_the_largest_exact_unit() {
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_duration(Duration::from_secs(2 * 86_400)), "2d");
        assert_eq!(format_duration(Duration::ZERO), "0ms");
    }
}
