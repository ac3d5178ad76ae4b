//! Asynchronous mode: a primary cut off from the store and from every
//! standby stops acknowledging commits long before its lease runs out.
//!
//! Without it a partitioned asynchronous primary acknowledges writes until
//! its lease guard stops it (about TTL − 0.5 s after the cut), and every one
//! of them is lost when a standby takes over. Its standbys' confirmations
//! stop at the cut; the agent then asks the store at once, and if that does
//! not answer either, makes commits wait (a synchronous standby name no
//! standby has) until the store answers again. A slow store alone, or
//! standbys alone going away, never holds commits: only both together, the
//! signature of this primary being the one cut off.

use crate::observation::{Millis, SyncMode};

/// WAL this long unconfirmed by any standby while it grows: the
/// standbys are not hearing from this primary (under a write load a
/// standby confirms every few milliseconds).
pub const UNCONFIRMED_AFTER_MS: Millis = 200;

/// How long the store may take to answer the check that follows.
pub const STORE_CHECK_TIMEOUT_MS: Millis = 250;

/// After the store answered, how long quiet standbys alone do not make
/// the watcher ask again (a standby that is down but still connected
/// would otherwise cost a store read every tick).
pub const ASK_AGAIN_AFTER_MS: Millis = 500;

/// Since when WAL written has gone unconfirmed by every standby.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Confirmations {
    /// The furthest confirmed position seen, and when it last moved.
    confirmed: Option<(Option<u64>, Millis)>,
}

impl Confirmations {
    /// How long the `written` WAL has been unconfirmed at `now`, `None`
    /// when every byte of it is confirmed or no standby is connected
    /// (`confirmed` is `None`: a lone primary has nobody its writes could
    /// be lost to; a cut one's standbys stay connected, silent, until
    /// `wal_sender_timeout`).
    pub fn unconfirmed_for(
        &mut self,
        written: u64,
        confirmed: Option<u64>,
        now: Millis,
    ) -> Option<Millis> {
        if confirmed.is_none_or(|c| c >= written) {
            self.confirmed = Some((confirmed, now));
            return None;
        }
        match self.confirmed {
            Some((seen, since)) if seen == confirmed => Some(now.saturating_sub(since)),
            _ => {
                self.confirmed = Some((confirmed, now));
                Some(0)
            }
        }
    }
}

/// What the primary's commit-hold check sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitSignals {
    pub mode: SyncMode,
    /// This member leads and runs the primary.
    pub leading: bool,
    /// How long WAL written has gone unconfirmed by every standby (none
    /// connected counts as none confirming); `None`: all of it confirmed.
    pub unconfirmed_for_ms: Option<Millis>,
    /// The store answered the last check (`None`: not asked yet).
    pub store_answered: Option<bool>,
}

/// What to do with commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitHold {
    /// Ask the store now: the standbys went quiet.
    CheckStore,
    /// Hold commits (neither the store nor any standby answers).
    Hold,
    /// Acknowledge as usual.
    Release,
}

/// The rule. Only in asynchronous mode: synchronous and quorum commit
/// already wait for a standby, which is the stronger form of the same.
pub fn decide(signals: &CommitSignals) -> CommitHold {
    if signals.mode.on() || !signals.leading {
        return CommitHold::Release;
    }
    match (signals.store_answered, signals.unconfirmed_for_ms) {
        // The store answers: a lease renewal will tell whether this member
        // still leads; standbys that went away are the round's business.
        (Some(true), _) => CommitHold::Release,
        (Some(false), _) => CommitHold::Hold,
        (None, Some(quiet)) if quiet >= UNCONFIRMED_AFTER_MS => CommitHold::CheckStore,
        (None, _) => CommitHold::Release,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unconfirmed_time_counts_from_when_confirmations_stopped_moving() {
        let mut seen = Confirmations::default();
        assert_eq!(seen.unconfirmed_for(100, Some(100), 0), None);
        assert_eq!(seen.unconfirmed_for(200, Some(100), 50), Some(50));
        assert_eq!(seen.unconfirmed_for(300, Some(250), 100), Some(0));
        assert_eq!(seen.unconfirmed_for(400, Some(250), 350), Some(250));
        // No standby connected: nothing to wait for.
        assert_eq!(seen.unconfirmed_for(500, None, 400), None);
        assert_eq!(seen.unconfirmed_for(600, Some(500), 450), Some(0));
    }

    fn signals(unconfirmed: Option<Millis>, store: Option<bool>) -> CommitSignals {
        CommitSignals {
            mode: SyncMode::Off,
            leading: true,
            unconfirmed_for_ms: unconfirmed,
            store_answered: store,
        }
    }

    #[test]
    fn standbys_that_go_quiet_make_the_primary_ask_the_store() {
        assert_eq!(decide(&signals(Some(150), None)), CommitHold::Release);
        assert_eq!(decide(&signals(Some(200), None)), CommitHold::CheckStore);
    }

    #[test]
    fn commits_wait_while_neither_the_store_nor_a_standby_answers() {
        assert_eq!(decide(&signals(Some(400), Some(false))), CommitHold::Hold);
    }

    #[test]
    fn the_store_answering_releases_them_whatever_the_standbys_do() {
        assert_eq!(
            decide(&signals(Some(5_000), Some(true))),
            CommitHold::Release
        );
        assert_eq!(decide(&signals(None, Some(true))), CommitHold::Release);
    }

    #[test]
    fn never_outside_asynchronous_mode_nor_on_a_member_that_does_not_lead() {
        for mode in [SyncMode::First, SyncMode::Quorum] {
            let s = CommitSignals {
                mode,
                ..signals(Some(5_000), Some(false))
            };
            assert_eq!(decide(&s), CommitHold::Release);
        }
        let s = CommitSignals {
            leading: false,
            ..signals(Some(5_000), Some(false))
        };
        assert_eq!(decide(&s), CommitHold::Release);
    }
}
