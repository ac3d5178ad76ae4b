//! The store writes of the actions, one named transaction each. Every
//! guard compares against what this round read (`self.records`): a write
//! based on a stale read loses with a conflict instead of overwriting what
//! another member relies on.

use ha::Local;
use store::cluster::{
    FailsafeList, Handoff, History, HistoryEntry, Initialize, Leader, PrimaryPosition, Switchover,
    SyncSet,
};
use store::{Condition, Expect, StoreError, Write};

use super::super::{ActionError, Member};

impl Member {
    /// Claims the right to run initdb: creates the initialize key if absent.
    /// Another member's claim is no failure: the next round follows it.
    pub(super) async fn claim_initialize(&self) -> Result<(), ActionError> {
        let claim = Initialize {
            member: self.spec.name.clone(),
            system_identifier: None,
        };
        match self
            .keys
            .initialize()
            .create(self.store.as_ref(), &claim, None)
            .await
        {
            Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// Writes the system identifier initdb made into the initialize key,
    /// only if nobody changed the key since it was read here.
    pub(super) async fn complete_initialize(&self, system_id: u64) -> Result<(), ActionError> {
        let store = self.store.as_ref();
        let current = self
            .keys
            .initialize()
            .get(store)
            .await?
            .ok_or_else(|| ActionError::Impossible("the initialize key vanished".into()))?;
        let done = Initialize {
            member: self.spec.name.clone(),
            system_identifier: Some(system_id),
        };
        self.keys
            .initialize()
            .compare_and_set(
                store,
                Expect::ModRevision(current.mod_revision),
                &done,
                None,
            )
            .await?;
        Ok(())
    }

    /// Creates the leader key, bound to this member's lease, only if absent;
    /// the term is the revision of that write. Losing names the winner.
    pub(super) async fn acquire_leader(&mut self) -> Result<(), ActionError> {
        let lease = self.lease_id()?;
        let leader = Leader {
            member: self.spec.name.clone(),
        };
        match self
            .keys
            .leader()
            .create(self.store.as_ref(), &leader, Some(lease))
            .await
        {
            Ok(revision) => {
                self.records.leader = Some(store::Versioned {
                    value: leader,
                    mod_revision: revision,
                    create_revision: revision,
                    lease: Some(lease),
                });
                Ok(())
            }
            Err(StoreError::Conflict { current, .. }) => {
                let winner = current
                    .and_then(|kv| store::typed::decode_kv::<Leader>(&kv).ok())
                    .map_or_else(|| "another member".to_string(), |l| l.value.member);
                Err(ActionError::LostRace(winner))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Publishes how far the primary has written, which outlives it — only
    /// while the leader key is as read, so a deposed primary cannot
    /// overwrite its successor's position. (The lease itself was refreshed
    /// at the start of the round.)
    pub(super) async fn publish_primary_position(&self) -> Result<(), ActionError> {
        if let (Local::Running(running), Some(leader)) = (&self.local, &self.records.leader) {
            let position = PrimaryPosition {
                member: self.spec.name.clone(),
                timeline: running.timeline,
                lsn: running.lsn,
                term: self.records.term().unwrap_or(0),
            };
            let condition = unchanged(self.keys.leader().key(), leader.mod_revision);
            let write = put(&self.keys.primary_position(), &position)?;
            self.store.transaction(&[condition], &[write]).await?;
        }
        Ok(())
    }

    /// Deletes the leader key if this member holds it, as read.
    pub(super) async fn release_leader(&self) -> Result<(), ActionError> {
        if let Some(leader) = &self.records.leader {
            if leader.value.member == self.spec.name {
                self.keys
                    .leader()
                    .compare_and_delete(self.store.as_ref(), leader.mod_revision)
                    .await?;
            }
        }
        Ok(())
    }

    /// Publishes the synchronous set the primary now runs with, as the
    /// leader (see [`Member::put_as_leader`]).
    pub(super) async fn publish_sync(
        &self,
        members: &[String],
        quorum: u32,
    ) -> Result<(), ActionError> {
        let sync = SyncSet {
            leader: self.spec.name.clone(),
            members: members.to_vec(),
            term: self.records.term().unwrap_or(0),
            // Written only when it says more than the members: a record an
            // agent without quorum commit reads the same.
            quorum: (quorum as usize != members.len()).then_some(quorum),
        };
        let read = self.records.sync.as_ref().map(|s| s.mod_revision);
        self.put_as_leader(
            "publish the synchronous set",
            &self.keys.sync(),
            read,
            &sync,
        )
        .await
    }

    /// Publishes the members a primary cut off from the store would ask,
    /// with their REST APIs, as the leader (see [`Member::put_as_leader`]).
    /// A member with no status has no API to publish and is left out.
    pub(super) async fn publish_failsafe(&self, members: &[String]) -> Result<(), ActionError> {
        let list = FailsafeList {
            leader: self.spec.name.clone(),
            members: members
                .iter()
                .filter_map(|name| {
                    let status = self.records.members.get(name)?;
                    Some((name.clone(), status.value.api_url.clone()))
                })
                .collect(),
        };
        let read = self.records.failsafe.as_ref().map(|f| f.mod_revision);
        self.put_as_leader(
            "publish the failsafe list",
            &self.keys.failsafe(),
            read,
            &list,
        )
        .await
    }

    /// The fast failover path: deletes the silent `leader`'s key without
    /// waiting for its lease, only while both its key and the synchronous
    /// set are as read — the set this member's right to take over rests on.
    pub(super) async fn depose_leader(&mut self, leader: &str) -> Result<(), ActionError> {
        let current = self
            .records
            .leader
            .as_ref()
            .filter(|l| l.value.member == leader)
            .ok_or_else(|| {
                ActionError::Impossible(format!("{leader} no longer holds the leader key"))
            })?;
        let sync = self.records.sync.as_ref().ok_or_else(|| {
            ActionError::Impossible("no synchronous set to depose against".into())
        })?;
        let conditions = [
            unchanged(self.keys.leader().key(), current.mod_revision),
            unchanged(self.keys.sync().key(), sync.mod_revision),
        ];
        let delete = Write::Delete {
            key: self.keys.leader().key().to_string(),
        };
        self.store.transaction(&conditions, &[delete]).await?;
        tracing::warn!("{}: deposed the silent primary {leader}", self.spec.name);
        self.records.leader = None;
        Ok(())
    }

    /// The old primary's half of a switchover, after its clean shutdown:
    /// releases the leader key and writes the hand-over (`to` may take the
    /// key once it has `final_lsn`) into the request — both or neither,
    /// only while this member's key and the request are as read.
    pub(super) async fn hand_off(
        &mut self,
        to: &str,
        final_lsn: u64,
        timeline: u32,
        released_ms: u64,
    ) -> Result<(), ActionError> {
        let leader = self.own_leader("hand over")?;
        let request = self
            .records
            .switchover
            .as_ref()
            .ok_or_else(|| ActionError::Impossible("the switchover was cancelled".into()))?;
        let mut record = request.value.clone();
        record.handoff = Some(Handoff {
            to: to.to_string(),
            final_lsn,
            timeline,
            released_ms,
        });
        let key = self.keys.switchover();
        let conditions = [
            unchanged(self.keys.leader().key(), leader.mod_revision),
            unchanged(key.key(), request.mod_revision),
        ];
        let writes = [
            Write::Delete {
                key: self.keys.leader().key().to_string(),
            },
            put(&key, &record)?,
        ];
        self.store.transaction(&conditions, &writes).await?;
        self.records.leader = None;
        Ok(())
    }

    /// A switchover from this leader to `to`, asked by the agent itself:
    /// the switchover key created only if there is none (an operator's
    /// request, or another, wins).
    pub(super) async fn ask_switchover(
        &self,
        to: &str,
        reason: &str,
        wall_ms: u64,
    ) -> Result<(), ActionError> {
        self.own_leader("ask for a switchover")?;
        let request = Switchover {
            from: Some(self.spec.name.clone()),
            to: Some(to.to_string()),
            at_ms: None,
            requested_ms: wall_ms,
            handoff: None,
            reason: Some(reason.to_string()),
        };
        match self
            .keys
            .switchover()
            .create(self.store.as_ref(), &request, None)
            .await
        {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict { .. }) => Err(ActionError::Impossible(
                "another switchover was asked for meanwhile".into(),
            )),
            Err(err) => Err(err.into()),
        }
    }

    /// Deletes the switchover request this round read. One changed since
    /// (a new request, or another member cleared it) is left alone.
    pub(super) async fn clear_switchover(&self) -> Result<(), ActionError> {
        if let Some(request) = &self.records.switchover {
            match self
                .keys
                .switchover()
                .compare_and_delete(self.store.as_ref(), request.mod_revision)
                .await
            {
                Ok(_) | Err(StoreError::Conflict { .. }) => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }

    /// Appends this member's promotion (the timeline it started, where its
    /// WAL stood) to the timeline history: read, then compare-and-set on
    /// that read (create-if-absent for the first entry).
    pub(super) async fn record_history(
        &self,
        reason: &str,
        timeline: u32,
        switch_lsn: u64,
        time_ms: u64,
    ) -> Result<(), ActionError> {
        let store = self.store.as_ref();
        let history = self.keys.history().get(store).await?;
        let mut entries = history
            .as_ref()
            .map(|h| h.value.entries.clone())
            .unwrap_or_default();
        let from = self
            .records
            .primary_position
            .as_ref()
            .map(|p| p.value.member.clone())
            .filter(|m| *m != self.spec.name);
        entries.push(HistoryEntry {
            timeline,
            switch_lsn,
            reason: reason.to_string(),
            time_ms,
            from,
            to: Some(self.spec.name.clone()),
            duration_ms: self
                .failover_started_ms()
                .map(|t| time_ms.saturating_sub(t)),
            removed: None,
        });
        let record = History { entries };
        match history {
            Some(h) => {
                self.keys
                    .history()
                    .compare_and_set(store, Expect::ModRevision(h.mod_revision), &record, None)
                    .await?
            }
            None => self.keys.history().create(store, &record, None).await?,
        };
        Ok(())
    }

    /// When the failover or switchover this member just finished began
    /// (unix ms): the request's due time for a switchover, else when it
    /// first saw no leader.
    fn failover_started_ms(&self) -> Option<u64> {
        let request = self.records.switchover.as_ref().map(|s| &s.value);
        match request {
            Some(request) if request.from.is_some() => {
                Some(request.at_ms.unwrap_or(0).max(request.requested_ms))
            }
            _ => self.leaderless_since_ms,
        }
    }

    /// Writes `value` to `key` only while this member still holds the
    /// leader key it read and `key` is as it was read (`read`: its
    /// revision, `None` for absent): a deposed primary must not change what
    /// its successor relies on.
    async fn put_as_leader<T: store::Record>(
        &self,
        doing: &str,
        key: &store::TypedKey<T>,
        read: Option<i64>,
        value: &T,
    ) -> Result<(), ActionError> {
        let leader = self.own_leader(doing)?;
        let conditions = [
            unchanged(self.keys.leader().key(), leader.mod_revision),
            Condition {
                key: key.key().to_string(),
                expect: read.map_or(Expect::Absent, Expect::ModRevision),
            },
        ];
        self.store
            .transaction(&conditions, &[put(key, value)?])
            .await?;
        Ok(())
    }

    /// This member's leader key as this round read it; acting as the leader
    /// without it is refused.
    pub(super) fn own_leader(&self, doing: &str) -> Result<&store::Versioned<Leader>, ActionError> {
        self.records
            .leader
            .as_ref()
            .filter(|l| l.value.member == self.spec.name)
            .ok_or_else(|| {
                ActionError::Impossible(format!(
                    "cannot {doing}: this member no longer holds the leader key"
                ))
            })
    }
}

/// A transaction condition: `key` is still as this round read it.
pub(super) fn unchanged(key: &str, revision: i64) -> Condition {
    Condition {
        key: key.to_string(),
        expect: Expect::ModRevision(revision),
    }
}

/// A transaction write of a record, unleased.
pub(super) fn put<T: store::Record>(
    key: &store::TypedKey<T>,
    value: &T,
) -> Result<Write, StoreError> {
    Ok(Write::Put {
        key: key.key().to_string(),
        value: store::typed::encode(key.key(), value)?,
        lease: None,
    })
}
