//! The `?lag=` of `/replica`: bytes of WAL (`1048576`, `16MB`) or time
//! (`5s`, `500ms`).

/// How far behind a replica may be and still answer 200.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaxLag {
    Bytes(u64),
    Millis(u64),
}

const BYTE_UNITS: [(&str, u64); 5] = [
    ("kb", 1 << 10),
    ("mb", 1 << 20),
    ("gb", 1 << 30),
    ("tb", 1 << 40),
    ("b", 1),
];

/// Parses a lag limit. Byte units are PostgreSQL's (1024-based, `kB`,
/// `MB`, `GB`, `TB`, case-insensitive); a plain number is bytes; anything
/// else is a duration (`ms`, `s`, `m`, `h`).
pub fn parse_max_lag(text: &str) -> Result<MaxLag, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map(MaxLag::Bytes)
            .map_err(|_| format!("lag \"{text}\" is too large"));
    }
    let lower = text.to_ascii_lowercase();
    for (unit, factor) in BYTE_UNITS {
        if let Some(number) = lower.strip_suffix(unit) {
            let number = number.trim();
            if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) {
                return number
                    .parse::<u64>()
                    .ok()
                    .and_then(|n| n.checked_mul(factor))
                    .map(MaxLag::Bytes)
                    .ok_or_else(|| format!("lag \"{text}\" is too large"));
            }
        }
    }
    config::parse_duration(text)
        .map(|d| MaxLag::Millis(d.as_millis() as u64))
        .map_err(|e| {
            format!("bad lag limit: {e}; give bytes (1048576, 16MB) or a duration (5s, 500ms)")
        })
}

impl MaxLag {
    /// Whether a replica with this lag is within the limit. An unknown lag
    /// is not within any limit: the check is for a load balancer, which
    /// should rather skip a replica than send reads to one far behind.
    pub fn allows(self, lag_bytes: Option<u64>, lag_ms: Option<u64>) -> bool {
        match self {
            MaxLag::Bytes(max) => lag_bytes.is_some_and(|lag| lag <= max),
            MaxLag::Millis(max) => lag_ms.is_some_and(|lag| lag <= max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_durations() {
        assert_eq!(parse_max_lag("1048576"), Ok(MaxLag::Bytes(1 << 20)));
        assert_eq!(parse_max_lag("16MB"), Ok(MaxLag::Bytes(16 << 20)));
        assert_eq!(parse_max_lag("8kB"), Ok(MaxLag::Bytes(8192)));
        assert_eq!(parse_max_lag("100B"), Ok(MaxLag::Bytes(100)));
        assert_eq!(parse_max_lag("5s"), Ok(MaxLag::Millis(5000)));
        assert_eq!(parse_max_lag("500ms"), Ok(MaxLag::Millis(500)));
        assert_eq!(parse_max_lag("1m"), Ok(MaxLag::Millis(60_000)));
        assert!(parse_max_lag("fast").unwrap_err().contains("16MB"));
        assert!(parse_max_lag("").is_err());
        assert!(parse_max_lag("99999999999999999999MB").is_err());
    }

    #[test]
    fn unknown_lag_is_never_allowed() {
        assert!(MaxLag::Bytes(10).allows(Some(10), None));
        assert!(!MaxLag::Bytes(10).allows(Some(11), None));
        assert!(!MaxLag::Bytes(10).allows(None, Some(0)));
        assert!(MaxLag::Millis(500).allows(None, Some(499)));
        assert!(!MaxLag::Millis(500).allows(Some(0), None));
    }
}
