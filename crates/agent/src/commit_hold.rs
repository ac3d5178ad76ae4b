//! The commit hold's watcher: asynchronous mode's bound on what a primary
//! cut off from everyone acknowledges (the rule is `ha::commit_hold`).
//! Off the round, like the lease guard: a round comes every heartbeat and
//! waits for the store, the cut must be seen within a fraction of that.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ha::commit_hold::{
    decide, CommitHold, CommitSignals, Confirmations, ASK_AGAIN_AFTER_MS, STORE_CHECK_TIMEOUT_MS,
};
use store::cluster::ClusterKeys;
use store::Store;
use tokio::sync::watch;

use crate::postgres::RealPostgres;

/// How often the primary's WAL confirmations are looked at.
const EVERY: Duration = Duration::from_millis(50);

/// The synchronous mode while this member leads with a valid lease (the
/// round sends it), `None` otherwise.
pub type HoldPolicy = watch::Receiver<Option<ha::SyncMode>>;

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
    let epoch = Instant::now();
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
                    seen.unconfirmed_for(written, confirmed, epoch.elapsed().as_millis() as u64)
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
        let asked_lately =
            answered_at.is_some_and(|at| at.elapsed() < Duration::from_millis(ASK_AGAIN_AFTER_MS));
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
