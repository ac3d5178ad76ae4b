//! The event log: events leave the round through a channel and are written
//! to the store, and announced by the hooks, on a task of their own, so a
//! slow store write or hook never delays a decision.

use std::sync::Arc;

use store::cluster::{ClusterKeys, Event};
use store::Store;
use tokio::sync::mpsc;

use crate::hooks::Hooks;
use crate::member::MemberEvent;

use store::cluster::EVENTS_KEPT;

/// The sending side; dropping it ends the writer task.
#[derive(Clone)]
pub struct EventLog {
    tx: mpsc::UnboundedSender<MemberEvent>,
}

impl EventLog {
    pub fn spawn(
        store: Arc<dyn Store>,
        keys: ClusterKeys,
        member: String,
        hooks: Hooks,
    ) -> EventLog {
        let (tx, mut rx) = mpsc::unbounded_channel::<MemberEvent>();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                let time_ms = api::time::now_ms();
                tracing::info!("{member} event {}: {}", event.kind, event.details);
                let stored = keys
                    .append_event(
                        store.as_ref(),
                        time_ms,
                        &member,
                        event.kind,
                        &event.details,
                        EVENTS_KEPT,
                    )
                    .await;
                let stored = match stored {
                    Ok(stored) => stored,
                    Err(err) => {
                        tracing::warn!("could not write event {} to the store: {err}", event.kind);
                        // The hooks still hear of it: a failover is exactly
                        // when the store may be in trouble.
                        Event {
                            seq: 0,
                            time_ms,
                            member: member.clone(),
                            kind: event.kind.to_string(),
                            details: event.details.clone(),
                        }
                    }
                };
                if !hooks.is_empty() {
                    hooks.spawn_announce(stored);
                }
            }
        });
        EventLog { tx }
    }

    pub fn send(&self, events: Vec<MemberEvent>) {
        for event in events {
            // The writer ends only with the agent.
            let _ = self.tx.send(event);
        }
    }
}
