//! Failsafe answers between simulated agents: the core's rule
//! (`ha::failsafe::answer`), which `POST /failsafe` applies in a real one,
//! against the simulated world.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use agent::failsafe::FailsafePeers;
use async_trait::async_trait;
use ha::failsafe::{self, Answerer, Question};
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
    /// The TTL each agent last read from the store.
    pub known_ttl_ms: Vec<u64>,
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
            // A partition stands between the asker and either side of it.
            let apart = node.isolated
                || world
                    .index(leader)
                    .is_some_and(|asker| world.nodes[asker].isolated);
            if !node.host_up || node.frozen || apart {
                continue; // Nobody answers.
            }
            // The core's rule, which the real handler applies too, on what
            // this agent knows.
            let me = Answerer {
                member: name.clone(),
                observed: true,
                primary: world.is_primary(i),
                leader: board.known_leader[i].clone(),
                store_reachable: !(world.store_down || node.store_cut),
                ttl_ms: board.known_ttl_ms[i],
            };
            let question = Question {
                leader: leader.to_string(),
                term,
                ttl_ms,
            };
            if let Ok(hold) = failsafe::answer(&me, &question) {
                // As the real handler: an answer never shortens a promise.
                let until = board.promises[i]
                    .as_ref()
                    .map_or(0, |p| p.until)
                    .max(world.now + hold);
                board.promises[i] = Some(FailsafePromise {
                    leader: leader.to_string(),
                    until,
                });
                yes.insert(name.clone());
            }
        }
        yes
    }
}
