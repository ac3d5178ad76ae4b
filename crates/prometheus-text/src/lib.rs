//! The Prometheus text exposition format (version 0.0.4), the one writer of
//! `/metrics` for the REST API and the proxy. Each metric family is written
//! whole: `# HELP`, `# TYPE` (counter or gauge, chosen by the method, not a
//! string), then its samples, with label values escaped so a member name or
//! route with a quote, backslash or newline cannot break the scrape.
//!
//! ```
//! let mut out = prometheus_text::Exposition::default();
//! out.gauge("pgwarden_leader", "1 while this member holds the leader key.")
//!     .sample(&[("member", "db1")], true);
//! out.counter("pgwarden_api_requests_total", "REST API requests served.")
//!     .sample(&[("route", "/health"), ("status", "200")], 4u64);
//! let text = out.into_text();
//! assert!(text.contains("# TYPE pgwarden_leader gauge\npgwarden_leader{member=\"db1\"} 1\n"));
//! assert!(text.contains("# TYPE pgwarden_api_requests_total counter\n"));
//! ```

use std::fmt::{self, Write as _};

/// The `Content-Type` of what [`Exposition::into_text`] returns.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A `/metrics` answer being written.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
    /// Family names written so far: a name appears once per scrape.
    names: Vec<String>,
}

impl Exposition {
    /// A total that only grows (back to 0 when the process restarts); its
    /// name ends in `_total`, with the unit before it
    /// (`…_hold_seconds_total`).
    pub fn counter(&mut self, name: &str, help: &str) -> Family<'_> {
        debug_assert!(
            name.ends_with("_total"),
            "counter {name} must end in _total"
        );
        self.family(name, help, "counter")
    }

    /// A value that goes up and down (now, or 1/0 for yes/no); no `_total`.
    pub fn gauge(&mut self, name: &str, help: &str) -> Family<'_> {
        debug_assert!(
            !name.ends_with("_total"),
            "gauge {name} must not end in _total, which marks a counter"
        );
        self.family(name, help, "gauge")
    }

    fn family(&mut self, name: &str, help: &str, kind: &str) -> Family<'_> {
        debug_assert!(is_metric_name(name), "{name:?} is not a metric name");
        debug_assert!(
            !self.names.iter().any(|n| n == name),
            "metric family {name} written twice"
        );
        self.names.push(name.to_string());
        let help = Escaped {
            text: help,
            quoted: false,
        };
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
        Family {
            text: &mut self.text,
            name: name.to_string(),
        }
    }

    pub fn into_text(self) -> String {
        self.text
    }
}

/// The samples of one family, written right after its `# TYPE` line.
#[derive(Debug)]
pub struct Family<'a> {
    text: &'a mut String,
    name: String,
}

impl Family<'_> {
    /// One sample: `name{label="value",…} value`, or `name value` without
    /// labels.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl Into<Value>) -> &mut Self {
        self.text.push_str(&self.name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                debug_assert!(is_label_name(label), "{label:?} is not a label name");
                if i > 0 {
                    self.text.push(',');
                }
                let value = Escaped {
                    text: value,
                    quoted: true,
                };
                let _ = write!(self.text, "{label}=\"{value}\"");
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", value.into());
        self
    }
}

/// A sample's value: integers as they are, floats as Prometheus reads them
/// (`+Inf`, `-Inf`, `NaN`), a yes/no as 1/0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Value {
        Value::Int(v)
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Value {
        Value::Int(v.into())
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Value {
        Value::Int(v as u64)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Int(v.into())
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Value::Int(v) => write!(f, "{v}"),
            Value::Float(v) if v.is_nan() => f.write_str("NaN"),
            Value::Float(v) if v == f64::INFINITY => f.write_str("+Inf"),
            Value::Float(v) if v == f64::NEG_INFINITY => f.write_str("-Inf"),
            Value::Float(v) => write!(f, "{v}"),
        }
    }
}

/// Text escaped for the exposition: `\` and a line feed always, `"` in a
/// label value (between quotes) but not in HELP text.
struct Escaped<'a> {
    text: &'a str,
    quoted: bool,
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.text.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '"' if self.quoted => f.write_str("\\\"")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// The families of an exposition text and their types, in order: what a
/// test compares to say each metric is there once with the right type.
pub fn types(text: &str) -> Vec<(&str, &str)> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.split_once(' '))
        .collect()
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Names starting with `__` are Prometheus's own.
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    !name.starts_with("__")
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_with_quotes_backslashes_and_newlines_are_escaped() {
        let mut out = Exposition::default();
        out.gauge("m", "h")
            .sample(&[("member", "db\"1"), ("path", "C:\\data\nx")], 1u64);
        assert_eq!(
            out.into_text().lines().last(),
            Some(r#"m{member="db\"1",path="C:\\data\nx"} 1"#)
        );
    }

    #[test]
    fn help_text_escapes_backslashes_and_newlines_but_not_quotes() {
        let mut out = Exposition::default();
        out.counter("m_total", "a \"b\" \\ c\nd");
        assert_eq!(
            out.into_text().lines().next(),
            Some(r#"# HELP m_total a "b" \\ c\nd"#)
        );
    }

    #[test]
    fn each_family_has_its_type_and_values_read_as_prometheus_reads_them() {
        let mut out = Exposition::default();
        out.counter("c_total", "counted")
            .sample(&[], 3u64)
            .sample(&[("k", "v")], 0.25);
        out.gauge("g", "measured")
            .sample(&[("x", "inf")], f64::INFINITY)
            .sample(&[("x", "-inf")], f64::NEG_INFINITY)
            .sample(&[("x", "nan")], f64::NAN)
            .sample(&[("x", "yes")], true)
            .sample(&[("x", "whole")], 2048.0);
        out.gauge("empty", "no samples yet");
        assert_eq!(
            out.into_text(),
            "# HELP c_total counted\n\
             # TYPE c_total counter\n\
             c_total 3\n\
             c_total{k=\"v\"} 0.25\n\
             # HELP g measured\n\
             # TYPE g gauge\n\
             g{x=\"inf\"} +Inf\n\
             g{x=\"-inf\"} -Inf\n\
             g{x=\"nan\"} NaN\n\
             g{x=\"yes\"} 1\n\
             g{x=\"whole\"} 2048\n\
             # HELP empty no samples yet\n\
             # TYPE empty gauge\n"
        );
    }

    #[test]
    fn types_lists_the_families_in_order() {
        let mut out = Exposition::default();
        out.gauge("g", "# TYPE not a line start").sample(&[], 1u64);
        out.counter("c_total", "h");
        assert_eq!(
            types(&out.into_text()),
            [("g", "gauge"), ("c_total", "counter")]
        );
    }

    #[test]
    #[should_panic(expected = "must end in _total")]
    #[cfg(debug_assertions)]
    fn a_counter_without_total_is_a_bug() {
        Exposition::default().counter("pgwarden_requests", "h");
    }

    #[test]
    #[should_panic(expected = "must not end in _total")]
    #[cfg(debug_assertions)]
    fn a_gauge_named_like_a_counter_is_a_bug() {
        Exposition::default().gauge("pgwarden_requests_total", "h");
    }

    #[test]
    #[should_panic(expected = "written twice")]
    #[cfg(debug_assertions)]
    fn a_family_is_written_once() {
        let mut out = Exposition::default();
        out.gauge("g", "h");
        out.gauge("g", "h");
    }

    #[test]
    fn names_follow_the_data_model() {
        assert!(is_metric_name("pgwarden_proxy_hold_seconds_total"));
        assert!(!is_metric_name("9lives"));
        assert!(!is_metric_name("a-b"));
        assert!(is_label_name("member"));
        assert!(!is_label_name("__name__"));
        assert!(!is_label_name("a.b"));
    }
}
