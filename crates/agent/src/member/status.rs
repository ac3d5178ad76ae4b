//! What this member publishes about itself: its status key in the store,
//! and the local state its REST API shows.

use ha::{Local, Plan};
use store::cluster::{MemberStatus, PgState, Role, Tags};
use store::HaView;

use super::{archive_health, ActionError, Member, Now};

impl Member {
    /// What the REST API shows of this member.
    pub fn local_state(&self, now: Now, store_reachable: bool) -> api::local::LocalState {
        let status = self.last_status.as_ref();
        let (pg_running, primary, streaming, timeline, lsn) = match &self.local {
            Local::Running(r) => (true, r.primary, r.streaming, Some(r.timeline), Some(r.lsn)),
            Local::Stopped(s) => (false, false, false, Some(s.timeline), None),
            _ => (false, false, false, None, None),
        };
        api::local::LocalState {
            member: self.spec.name.clone(),
            pg_running,
            primary,
            leader: self.is_leader(),
            leader_name: self.records.leader_name().map(str::to_string),
            leader_term: self.records.term(),
            streaming,
            timeline,
            lsn,
            lag_bytes: status.and_then(|s| s.lag_bytes),
            lag_ms: status.and_then(|s| s.lag_ms),
            ttl_ms: Some(self.records.settings().ttl_ms),
            lease_remaining_ms: self
                .lease_valid_until()
                .map(|until| until.saturating_sub(now.mono)),
            store_reachable,
            note: self.last_note.clone(),
            activity: self
                .pg
                .clone_progress()
                .map(|(done, total)| api::local::Activity {
                    what: "clone".to_string(),
                    done_bytes: done,
                    total_bytes: (total > 0).then_some(total),
                }),
            archive: status.and_then(|s| s.archive.clone()),
            slots: status.map(|s| s.slots.clone()).unwrap_or_default(),
            reachability: status.and_then(|s| s.reachability.clone()),
            undecodable_keys: self.undecodable_keys(),
            updated_ms: now.wall_ms,
        }
    }

    /// Deletes this member's status key: it was removed from the cluster.
    pub(super) async fn withdraw(&mut self) -> Result<(), ActionError> {
        let key = self.keys.member(&self.spec.name)?;
        key.delete(self.store.as_ref()).await?;
        self.last_status = None;
        Ok(())
    }

    /// This member's status key, bound to its lease.
    pub(super) async fn publish(&mut self, now: Now, plan: &Plan) -> Result<(), ActionError> {
        let lease = self.lease_id()?;
        let local = &self.local;
        let (role, state, timeline, flush, receive, upstream, streaming) = match local {
            Local::Witness => (
                Role::Witness,
                PgState::Unknown,
                None,
                None,
                None,
                None,
                false,
            ),
            Local::Empty => (
                Role::Unknown,
                PgState::Stopped,
                None,
                None,
                None,
                None,
                false,
            ),
            Local::Stopped(s) => (
                Role::Unknown,
                PgState::Stopped,
                Some(s.timeline),
                None,
                None,
                None,
                false,
            ),
            Local::Starting { .. } => (
                Role::Unknown,
                PgState::Starting,
                None,
                None,
                None,
                None,
                false,
            ),
            Local::Running(r) if r.primary => (
                Role::Primary,
                PgState::Running,
                Some(r.timeline),
                Some(r.lsn),
                None,
                None,
                false,
            ),
            Local::Running(r) => (
                Role::Replica,
                PgState::Running,
                Some(r.timeline),
                None,
                Some(r.lsn),
                r.upstream.clone(),
                r.streaming,
            ),
        };
        let lag_bytes = match (&self.records.primary_position, receive) {
            (Some(p), Some(lsn)) => Some(p.value.lsn.saturating_sub(lsn)),
            _ => None,
        };
        let config = self.pg.config_report();
        let status = MemberStatus {
            name: self.spec.name.clone(),
            role,
            state,
            timeline,
            flush_lsn: flush,
            receive_lsn: receive,
            replay_lsn: None,
            lag_bytes,
            lag_ms: if role == Role::Replica {
                self.pg.lag_ms()
            } else {
                None
            },
            api_url: self.spec.api_url.clone(),
            pg_url: format!("postgres://{}/postgres", self.spec.pg_endpoint),
            tags: Tags {
                nofailover: self.spec.nofailover,
                nosync: self.spec.nosync,
                noloadbalance: self.spec.noloadbalance,
                priority: self.spec.priority,
            },
            updated_ms: now.wall_ms,
            upstream,
            streaming,
            term: if role == Role::Primary && self.is_leader() {
                self.records.term()
            } else {
                None
            },
            note: plan.note.clone(),
            can_backup: self.spec.can_backup,
            pending_restart: config.pending_restart,
            config_errors: config.errors,
            archive: match role {
                Role::Primary => self
                    .pg
                    .archiver_report()
                    .as_ref()
                    .map(archive_health::health),
                _ => None,
            },
            slots: match role {
                Role::Primary => self.pg.slots_report(),
                _ => Vec::new(),
            },
            reachability: store::cluster::Reachability::from_ha(
                &self.reach,
                *self.reach_since_ms.get_or_insert(now.wall_ms),
            ),
        };
        if let Some(last) = &self.last_status {
            if (last.role, last.state) != (status.role, status.state) && plan.actions.is_empty() {
                let details = format!(
                    "PostgreSQL is now {:?} as {:?} (was {:?} as {:?})",
                    status.state, status.role, last.state, last.role
                );
                self.event("state", details);
            }
        }
        let before = self.last_status.as_ref().and_then(|s| s.archive.as_ref());
        if let Some((kind, details)) = archive_health::change(before, status.archive.as_ref()) {
            self.event(kind, details);
        }
        let key = self.keys.member(&self.spec.name)?;
        key.put(self.store.as_ref(), &status, Some(lease)).await?;
        self.last_status = Some(status);
        Ok(())
    }
}
