//! What happens, as it happens: the agents' events from the store and the
//! proxy's routing changes from its log, merged in time order, each stamped
//! with the time since the fault.

use std::path::PathBuf;
use std::sync::Arc;

use store::cluster::{ClusterKeys, Event};
use store::Store;

use super::terminal::{wrap, Terminal};

/// One thing that happened, from an agent or the proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Happening {
    pub time_ms: u64,
    pub who: String,
    pub what: String,
}

impl From<&Event> for Happening {
    fn from(e: &Event) -> Happening {
        Happening {
            time_ms: e.time_ms,
            who: e.member.clone(),
            what: format!("{}: {}", e.kind, e.details),
        }
    }
}

/// The proxy's routing change in a line of its log, if it is one, in
/// short: where writes and reads go, without addresses, terms and the
/// reasons members are left out (`ctl list` and the proxy's log have them).
pub fn routing_change(log_line: &str) -> Option<Happening> {
    let (stamp, rest) = log_line.split_once(' ')?;
    let what = rest.strip_prefix("proxy routing: ")?;
    let mut parts = what.split("; ");
    let (writes, reads) = (parts.next()?, parts.next()?);
    Some(Happening {
        time_ms: api::time::parse_rfc3339(stamp).ok()?,
        who: "proxy".into(),
        what: format!(
            "{}, {}",
            without_addresses(writes),
            without_addresses(reads)
        )
        .replace(" to held", " held")
        .replace(" to refused", " refused"),
    })
}

/// "writes to db2 at 127.0.0.1:5433 (term 9)" → "writes to db2".
fn without_addresses(text: &str) -> String {
    let mut kept: Vec<String> = Vec::new();
    let mut words = text.split(' ');
    while let Some(word) = words.next() {
        match word {
            "at" | "(term" => {
                let skipped = words.next().unwrap_or_default();
                if skipped.ends_with(',') {
                    if let Some(last) = kept.last_mut() {
                        last.push(',');
                    }
                }
            }
            _ => kept.push(word.to_string()),
        }
    }
    kept.join(" ")
}

/// `h` as lines for the screen, its time relative to `origin_ms`.
pub fn lines(h: &Happening, origin_ms: u64, term: &Terminal) -> Vec<String> {
    let offset = h.time_ms as f64 - origin_ms as f64;
    let first = format!("  {:>+7.2} s  {:<5} ", offset / 1000.0, h.who);
    wrap(&first, &h.what, term.width)
}

pub struct Feed {
    store: Arc<dyn Store>,
    keys: ClusterKeys,
    proxy_log: PathBuf,
    last_event: u64,
    proxy_lines: usize,
    last_routing: Option<String>,
    /// Everything shown so far.
    pub seen: Vec<Happening>,
}

impl Feed {
    /// A feed that shows only what happens from now on.
    pub async fn starting_now(
        store: Arc<dyn Store>,
        keys: ClusterKeys,
        proxy_log: PathBuf,
    ) -> Feed {
        let mut feed = Feed {
            store,
            keys,
            proxy_log,
            last_event: 0,
            proxy_lines: 0,
            last_routing: None,
            seen: Vec::new(),
        };
        feed.take_new().await;
        feed
    }

    /// Prints what happened since the last call, times relative to
    /// `origin_ms`.
    pub async fn print_new(&mut self, origin_ms: u64, term: &Terminal) {
        let new = self.take_new().await;
        for h in &new {
            for line in lines(h, origin_ms, term) {
                println!("{line}");
            }
        }
        self.seen.extend(new);
    }

    /// Whether `who` reported something starting with `what` (an event kind).
    pub fn saw(&self, who: &str, what: &str) -> bool {
        self.seen
            .iter()
            .any(|h| h.who == who && h.what.starts_with(what))
    }

    async fn take_new(&mut self) -> Vec<Happening> {
        let mut new = Vec::new();
        // A store that does not answer for a moment only delays the lines.
        if let Ok(events) = self.keys.events().list(self.store.as_ref()).await {
            for event in events.entries.values().map(|v| &v.value) {
                if event.seq > self.last_event {
                    self.last_event = event.seq;
                    new.push(Happening::from(event));
                }
            }
        }
        if let Ok(log) = std::fs::read_to_string(&self.proxy_log) {
            // Only whole lines: the last one may be half written.
            let complete = &log[..log.rfind('\n').map_or(0, |i| i + 1)];
            let lines: Vec<&str> = complete.lines().collect();
            for change in lines
                .iter()
                .skip(self.proxy_lines)
                .filter_map(|l| routing_change(l))
            {
                // Routes the proxy recomputed to the same effect.
                if self.last_routing.as_deref() != Some(change.what.as_str()) {
                    self.last_routing = Some(change.what.clone());
                    new.push(change);
                }
            }
            self.proxy_lines = lines.len();
        }
        new.sort_by_key(|h| h.time_ms);
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_routing_line_of_the_proxy_log_is_a_happening() {
        let h = routing_change(
            "2026-11-22T08:00:01.500Z proxy routing: writes to db2 at 127.0.0.1:5433 (term 9); reads to the primary",
        )
        .unwrap();
        assert_eq!(h.who, "proxy");
        assert_eq!(h.what, "writes to db2, reads to the primary");
        let both = routing_change(
            "2026-11-22T08:00:01.500Z proxy routing: writes to held (no primary); reads to db1 at 127.0.0.1:1, db3 at 127.0.0.1:2; db2 is not streaming",
        )
        .unwrap();
        assert_eq!(both.what, "writes held (no primary), reads to db1, db3");
        assert_eq!(
            h.time_ms,
            api::time::parse_rfc3339("2026-11-22T08:00:01.5Z").unwrap()
        );
        assert_eq!(
            routing_change("2026-11-22T08:00:01.500Z proxy for cluster demo"),
            None
        );
        assert_eq!(routing_change("garbage"), None);
    }

    #[test]
    fn times_are_shown_from_the_fault_and_lines_fit() {
        let h = Happening {
            time_ms: 10_840,
            who: "db2".into(),
            what: "promoted: took over from db1, which stopped answering".into(),
        };
        let term = Terminal::plain(40);
        let shown = lines(&h, 10_000, &term);
        assert_eq!(shown[0], "    +0.84 s  db2   promoted: took over");
        assert!(shown.iter().all(|l| l.chars().count() <= 40), "{shown:?}");
        let before = Happening {
            time_ms: 9_900,
            ..h
        };
        assert!(lines(&before, 10_000, &term)[0].starts_with("    -0.10 s"));
    }
}
