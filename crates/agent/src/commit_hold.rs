//! The commit hold's watcher: asynchronous mode's bound on what a primary
//! cut off from everyone acknowledges (the rule is `ha::commit_hold`).
//! Off the round, like the lease guard: a round comes every heartbeat and
//! waits for the store, the cut must be seen within a fraction of that.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ha::commit_hold::{decide, CommitHold, CommitSignals, STORE_CHECK_TIMEOUT_MS};
use store::cluster::ClusterKeys;
use store::Store;
use tokio::sync::watch;

use crate::postgres::RealPostgres;

/// How often the primary's WAL confirmations are looked at.
const EVERY: Duration = Duration::from_millis(50);

/// After the store answered, how long quiet standbys alone do not make
/// the watcher ask again (a standby that is down but still connected
/// would otherwise cost a store read every tick).
const ASK_AGAIN_AFTER: Duration = Duration::from_millis(500);

/// The synchronous mode while this member leads with a valid lease (the
/// round sends it), `None` otherwise.
pub type HoldPolicy = watch::Receiver<Option<ha::SyncMode>>;

/// Since when WAL written has gone unconfirmed by every standby.
#[derive(Default)]
struct Confirmations {
    /// The furthest confirmed position seen, and when it last moved.
    confirmed: Option<(Option<u64>, Instant)>,
}

impl Confirmations {
    /// How long the written WAL has been unconfirmed, `None` when every
    /// byte of it is confirmed or no standby is connected (a lone primary
    /// has nobody its writes could be lost to; a cut one's standbys stay
    /// connected, silent, until `wal_sender_timeout`).
    fn unconfirmed_for(
        &mut self,
        written: u64,
        confirmed: Option<u64>,
        now: Instant,
    ) -> Option<u64> {
        if confirmed.is_none_or(|c| c >= written) {
            self.confirmed = Some((confirmed, now));
            return None;
        }
        match self.confirmed {
            Some((seen, since)) if seen == confirmed => {
                Some(now.duration_since(since).as_millis() as u64)
            }
            _ => {
                self.confirmed = Some((confirmed, now));
                Some(0)
            }
        }
    }
}

pub async fn watch_commits(
    mut policy: HoldPolicy,
    pg: Arc<RealPostgres>,
    store: Arc<dyn Store>,
    keys: ClusterKeys,
    member: String,
) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut held = false;
    let mut seen = Confirmations::default();
    let mut answered_at: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = policy.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let mode = *policy.borrow();
        let unconfirmed_for = match mode {
            Some(ha::SyncMode::Off) => match pg.instance().wal_confirmed().await {
                Ok((written, confirmed)) => {
                    seen.unconfirmed_for(written, confirmed, Instant::now())
                }
                Err(_) => None,
            },
            _ => {
                seen = Confirmations::default();
                None
            }
        };
        let mut signals = CommitSignals {
            mode: mode.unwrap_or(ha::SyncMode::Off),
            leading: mode.is_some(),
            unconfirmed_for_ms: unconfirmed_for,
            store_answered: None,
        };
        let mut verdict = decide(&signals);
        let asked_lately = answered_at.is_some_and(|at| at.elapsed() < ASK_AGAIN_AFTER);
        if mode.is_some() && (held || (verdict == CommitHold::CheckStore && !asked_lately)) {
            let answered = still_leads(store.as_ref(), &keys, &member).await;
            answered_at = answered.then(Instant::now);
            signals.store_answered = Some(answered);
            verdict = decide(&signals);
        }
        match verdict {
            CommitHold::Hold if !held => {
                tracing::warn!(
                    "{member}: no standby has confirmed WAL for {} ms and the store does not answer: \
                     holding commits until the store answers (asynchronous mode: what this primary \
                     acknowledged now would be lost if another member took over)",
                    unconfirmed_for.unwrap_or(0)
                );
                match pg.hold_commits(true).await {
                    Ok(()) => held = true,
                    Err(err) => tracing::error!("{member}: could not hold commits: {err}"),
                }
            }
            CommitHold::Release if held => match pg.hold_commits(false).await {
                Ok(()) => {
                    held = false;
                    tracing::info!("{member}: the store answers again: commits acknowledged again");
                }
                Err(err) => tracing::error!("{member}: could not release the held commits: {err}"),
            },
            _ => {}
        }
    }
}

/// Whether the store answers in time and still names this member leader.
async fn still_leads(store: &dyn Store, keys: &ClusterKeys, member: &str) -> bool {
    let key = keys.leader();
    let read = key.get(store);
    match tokio::time::timeout(Duration::from_millis(STORE_CHECK_TIMEOUT_MS), read).await {
        Ok(Ok(Some(leader))) => leader.value.member == member,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unconfirmed_time_counts_from_when_confirmations_stopped_moving() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut seen = Confirmations::default();
        assert_eq!(seen.unconfirmed_for(100, Some(100), at(0)), None);
        assert_eq!(seen.unconfirmed_for(200, Some(100), at(50)), Some(50));
        assert_eq!(seen.unconfirmed_for(300, Some(250), at(100)), Some(0));
        assert_eq!(seen.unconfirmed_for(400, Some(250), at(350)), Some(250));
        // No standby connected: nothing to wait for.
        assert_eq!(seen.unconfirmed_for(500, None, at(400)), None);
        assert_eq!(seen.unconfirmed_for(600, Some(500), at(450)), Some(0));
    }
}
