//! Failsafe answers between simulated agents: what `POST /failsafe` does
//! in a real one, against the simulated world.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use agent::failsafe::FailsafePeers;
use async_trait::async_trait;
use ha::FailsafePromise;

use crate::postgres::lock;
use crate::world::World;

/// What the simulation tells the answering side before each round.
#[derive(Debug, Default)]
pub struct Board {
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
        let mut board = lock(&self.board);
        let mut yes = BTreeSet::new();
        for (name, _) in members {
            let Some(i) = self.names.iter().position(|n| n == name) else {
                continue;
            };
            let node = &world.nodes[i];
            // A crashed agent forgot what it read, so refuses below.
            if !node.host_up || node.frozen {
                continue; // Nobody answers.
            }
            // The real handler's rule, on what this agent knows.
            let (leader_name, leader_term) = board.known_leader[i].clone().unzip();
            let local = api::local::LocalState {
                member: name.clone(),
                primary: world.is_primary(i),
                leader_name,
                leader_term,
                updated_ms: 1,
                ..api::local::LocalState::default()
            };
            let request = api::model::FailsafeRequest {
                leader: leader.to_string(),
                term,
                ttl_ms,
            };
            let reachable = !(world.store_down || node.store_cut);
            if let Ok(hold) = api::failsafe_answer(&local, reachable, &request) {
                board.promises[i] = Some(FailsafePromise {
                    leader: leader.to_string(),
                    until: world.now + hold.as_millis() as u64,
                });
                yes.insert(name.clone());
            }
        }
        yes
    }
}
