//! Failsafe answers between simulated agents: what `POST /failsafe` does
//! in a real one, against the simulated world.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use agent::failsafe::FailsafePeers;
use async_trait::async_trait;
use ha::FailsafePromise;

use crate::postgres::lock;
use crate::world::{Millis, World};

/// What the simulation tells the answering side before each round.
#[derive(Debug, Default)]
pub struct Board {
    pub now: Millis,
    /// Whether each member's agent process runs (it serves the API).
    pub agent_up: Vec<bool>,
    /// The promise each agent gave; gone when its process dies.
    pub promises: Vec<Option<FailsafePromise>>,
    /// The leader and term each agent last read from the store.
    pub known_leader: Vec<Option<(String, u64)>>,
}

pub struct SimPeers {
    pub world: Arc<Mutex<World>>,
    pub board: Arc<Mutex<Board>>,
    pub names: Vec<String>,
}

#[async_trait]
impl FailsafePeers for SimPeers {
    async fn confirm(
        &self,
        leader: &str,
        term: u64,
        ttl_ms: u64,
        members: &[(String, String)],
    ) -> BTreeSet<String> {
        let world = lock(&self.world);
        let mut board = self.board.lock().unwrap_or_else(|e| e.into_inner());
        let mut yes = BTreeSet::new();
        for (name, _) in members {
            let Some(i) = self.names.iter().position(|n| n == name) else {
                continue;
            };
            let node = &world.nodes[i];
            // As the real handler: an agent that answers, runs no primary,
            // and cannot reach the store itself either.
            let answers = board.agent_up[i] && node.host_up && !node.frozen;
            let cut_off = world.store_down || node.store_cut;
            let follows = board.known_leader[i] == Some((leader.to_string(), term));
            if answers && cut_off && follows && !world.is_primary(i) && name != leader {
                board.promises[i] = Some(FailsafePromise {
                    leader: leader.to_string(),
                    until: board.now + 2 * ttl_ms,
                });
                yes.insert(name.clone());
            }
        }
        yes
    }
}
