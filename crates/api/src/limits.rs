//! What clients of the API may take from the agent that serves it: the API
//! runs in the agent's process and its long polls watch the etcd that
//! renews the leader lease, so a flood of idle connections or watchers must
//! not starve either. docs/api.md ("Limits") says what a client sees.

use std::time::{Duration, Instant};

/// The limits; [`Limits::default`] is what the agent uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// How long a client has to send a request's head. hyper starts this
    /// timer whenever it waits for a head: on a new connection and after
    /// each answer on a kept-alive one, so it is the idle timeout too.
    pub header_read: Duration,
    /// How long a request's body may take to arrive after its head.
    pub body_read: Duration,
    /// Connections served at once.
    pub connections: usize,
    /// Connections over `connections` still answered, one request each and
    /// with `overflow_header_read`: health checks are served (they are
    /// cheap and load balancers depend on them), anything else gets a 503.
    /// Beyond these a connection is closed at once.
    pub overflow: usize,
    pub overflow_header_read: Duration,
    /// Long polls (`GET /events?wait=`) held at once: each is a store watch.
    pub long_polls: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            // A client sends its head at once; 10 s is slow networks plus
            // margin, and frees a slot held by an idle client soon.
            header_read: Duration::from_secs(10),
            body_read: Duration::from_secs(10),
            // ctl, the other members, load balancers and Prometheus need a
            // handful each; 256 leaves room for many of each while keeping
            // the file descriptors and memory the API can take bounded.
            connections: 256,
            overflow: 64,
            overflow_header_read: Duration::from_secs(2),
            // `ctl events --follow` holds one; 32 is many operators and
            // scripts, while a few watch streams cost etcd nothing.
            long_polls: 32,
        }
    }
}

/// Warns about refusals at most once a minute, with how many there were:
/// a flood must not flood the log too.
#[derive(Debug, Default)]
pub(crate) struct RefusalLog {
    last: Option<Instant>,
    unreported: u64,
}

impl RefusalLog {
    const EVERY: Duration = Duration::from_secs(60);

    /// Counts one refusal; the count to report now, if it is time.
    pub(crate) fn refused(&mut self, now: Instant) -> Option<u64> {
        self.unreported += 1;
        if self.last.is_some_and(|last| now < last + Self::EVERY) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_reported_once_a_minute_with_their_count() {
        let mut log = RefusalLog::default();
        let start = Instant::now();
        assert_eq!(log.refused(start), Some(1));
        assert_eq!(log.refused(start + Duration::from_secs(1)), None);
        assert_eq!(log.refused(start + Duration::from_secs(59)), None);
        assert_eq!(log.refused(start + Duration::from_secs(60)), Some(3));
        assert_eq!(log.refused(start + Duration::from_secs(61)), None);
    }
}
