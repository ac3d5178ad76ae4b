//! Rounds where the primary falls silent but lives on (#16): a network
//! partition (its cluster link cut while a client on its own host keeps
//! writing) and a freeze (SIGSTOP of its agent and PostgreSQL, SIGCONT
//! after the failover). The cluster runs in network namespaces (testkit's
//! `NetLab`); one writer sits on the primary's host, one writes to
//! whoever leads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lab::{wait_for, Ack, AgentCluster, ClusterOptions, Host, Network, WorkloadReport};
use pg::{Endpoint, Role};
use pgwarden_bench::{secs, DEADLINE};
use store::cluster::SynchronousMode;
use testkit::agents::SUPERUSER_PASSWORD;
use testkit::NetLab;

/// Each round's writers take ids from `round × ROUND_IDS` on; the one on
/// the leader from there plus `LEADER_IDS`.
const ROUND_IDS: i64 = 10_000_000_000;
const LEADER_IDS: i64 = 5_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Silence {
    Partition,
    Freeze,
}

impl Silence {
    pub fn name(self) -> &'static str {
        match self {
            Silence::Partition => "partition",
            Silence::Freeze => "freeze",
        }
    }
}

/// Three members on a lab network. Fields drop in declaration order: the
/// cluster (and its processes) before the lab's namespaces.
pub struct NetCluster {
    pub cluster: AgentCluster,
    pub lab: Arc<NetLab>,
    rounds: i64,
}

/// What one round showed, in seconds from the fault (negative: before it).
#[derive(Debug)]
pub struct Outcome {
    pub old: String,
    pub new: String,
    /// Fault → first write acknowledged by the new primary.
    pub failover: f64,
    /// Fault → the old primary's last acknowledged write.
    pub old_last_ack: f64,
    /// Writes the old primary acknowledged after SIGCONT (freeze only).
    pub acked_after_resume: usize,
    /// Writes the old primary acknowledged after the new primary's first.
    pub overlapping: usize,
    /// Acknowledged writes of the round missing on the primary afterwards.
    pub lost: usize,
}

impl NetCluster {
    /// Starts the lab and the cluster (fsync on) in `mode`, and waits until
    /// it is healthy.
    pub async fn start(pgwarden: &std::path::Path, mode: SynchronousMode) -> Result<Self, String> {
        let lab = Arc::new(NetLab::new(3).map_err(|e| e.to_string())?);
        let mut options = ClusterOptions {
            fsync: true,
            network: Some(lab.clone()),
            ..ClusterOptions::default()
        };
        options.config.synchronous_mode = mode;
        let cluster = AgentCluster::start(pgwarden, options)
            .await
            .map_err(|e| e.to_string())?;
        let net = NetCluster {
            cluster,
            lab,
            rounds: 0,
        };
        net.ready().await?;
        Ok(net)
    }

    /// Waits until one primary leads, both others stream from it and, in
    /// quorum or synchronous mode, a synchronous standby is published.
    pub async fn ready(&self) -> Result<String, String> {
        let members: Vec<&str> = self
            .cluster
            .members
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        self.cluster
            .wait_healthy(&members, DEADLINE)
            .await
            .map_err(|e| format!("{e}\n{}", self.cluster.logs()))
    }

    /// Cuts or freezes the primary under two writers, waits for a write on
    /// another member and for the old primary to stop taking writes once
    /// reachable again (healed or thawed), then for all three to be healthy.
    pub async fn round(&mut self, silence: Silence) -> Result<Outcome, String> {
        self.rounds += 1;
        let ids = self.rounds * ROUND_IDS;
        let cluster = &self.cluster;
        let old = self.ready().await?;
        let host = cluster.host(&old);
        let local = self
            .lab
            .local_port(host, cluster.member(&old).endpoint().port)
            .map_err(|e| e.to_string())?;
        let on_host_endpoint = Endpoint::new("127.0.0.1", local);
        let mut on_host = cluster.workload_on(
            cluster.address_target(on_host_endpoint.clone(), Duration::from_secs(2)),
            ids,
        );
        let mut on_leader = cluster.workload_on(cluster.leader_target(), ids + LEADER_IDS);
        if !(on_host.wait_acks(100, DEADLINE).await && on_leader.wait_acks(100, DEADLINE).await) {
            return Err(format!(
                "the writers got no writes through\n{}",
                cluster.logs()
            ));
        }

        let fault_at = Instant::now();
        match silence {
            Silence::Partition => self.lab.cut(host).map_err(|e| e.to_string())?,
            Silence::Freeze => cluster.freeze(&old, true),
        }
        let first_new = wait_for(
            "a write acknowledged by another member",
            DEADLINE,
            || async {
                on_leader
                    .first_ack_reconnected_after(fault_at, Some(&old))
                    .ok_or(on_leader.acked())
            },
        )
        .await;
        // Whatever happened, the old primary must be reachable again before
        // this round ends (or fails).
        let resumed_at = Instant::now();
        match silence {
            Silence::Partition => {}
            Silence::Freeze => cluster.freeze(&old, false),
        }
        let first_new = match first_new {
            Ok(ack) => ack,
            Err(e) => {
                if silence == Silence::Partition {
                    let _ = self.lab.heal(host);
                }
                return Err(format!("{e}\n{}", cluster.logs()));
            }
        };
        let stopped = wait_for("the old primary to stop being a primary", DEADLINE, || {
            not_writable(&on_host_endpoint)
        })
        .await;
        if silence == Silence::Partition {
            self.lab.heal(host).map_err(|e| e.to_string())?;
        }
        stopped.map_err(|e| format!("{e}\n{}", cluster.logs()))?;
        let primary = self.ready().await?;
        let on_host = on_host.stop().await;
        let on_leader = on_leader.stop().await;

        let acks: Vec<&Ack> = on_host.acks.iter().chain(&on_leader.acks).collect();
        let ids: Vec<i64> = acks.iter().map(|a| a.id).collect();
        let lost = cluster
            .missing_ids(&primary, &ids)
            .await
            .map_err(|e| e.to_string())?
            .len();
        Ok(Outcome {
            failover: secs(first_new.at - fault_at),
            old_last_ack: last_ack_on(&[&on_host, &on_leader], &old)
                .map_or(f64::NAN, |at| signed_secs(at, fault_at)),
            acked_after_resume: acks_on_after(&acks, &old, resumed_at),
            overlapping: acks_on_after(&acks, &old, first_new.at),
            lost,
            old,
            new: first_new.member,
        })
    }

    /// Writes `mode` into the dynamic configuration and waits until the
    /// primary's PostgreSQL runs by it and the cluster is healthy.
    pub async fn set_mode(&self, mode: SynchronousMode) -> Result<String, String> {
        let store = self.cluster.store.as_ref();
        let key = self.cluster.keys.config();
        let mut config = key
            .get(store)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the store has no dynamic configuration")?
            .value;
        config.synchronous_mode = mode;
        key.put(store, &config, None)
            .await
            .map_err(|e| e.to_string())?;
        let primary = self.ready().await?;
        let member = self.cluster.member(&primary);
        wait_for(
            &format!("{primary} to run in {mode:?} mode"),
            DEADLINE,
            || async {
                let names = member
                    .query_text("SHOW synchronous_standby_names")
                    .await
                    .map_err(|e| e.to_string())?
                    .unwrap_or_default();
                let applied = match mode {
                    SynchronousMode::Off => names.is_empty(),
                    SynchronousMode::First => names.starts_with("FIRST"),
                    SynchronousMode::Quorum => names.starts_with("ANY"),
                };
                if applied {
                    Ok(())
                } else {
                    Err(format!("synchronous_standby_names = '{names}'"))
                }
            },
        )
        .await
        .map_err(|e| format!("{e}\n{}", self.cluster.logs()))?;
        self.ready().await
    }

    /// The address `host` listens on inside the lab, and a command entering
    /// its namespace (a client on that host).
    pub fn on_host(
        &self,
        host: Host,
        command: &mut std::process::Command,
    ) -> Result<String, String> {
        self.lab.enter(host, command).map_err(|e| e.to_string())?;
        Ok(self.lab.address(host))
    }
}

fn last_ack_on(reports: &[&WorkloadReport], member: &str) -> Option<Instant> {
    reports
        .iter()
        .flat_map(|r| &r.acks)
        .filter(|a| a.member == member)
        .map(|a| a.at)
        .max()
}

/// Writes `member` acknowledged at or after `t`.
fn acks_on_after(acks: &[&Ack], member: &str, t: Instant) -> usize {
    acks.iter()
        .filter(|a| a.member == member && a.at >= t)
        .count()
}

/// Seconds from `from` to `at`, negative when `at` came first.
fn signed_secs(at: Instant, from: Instant) -> f64 {
    if at >= from {
        secs(at - from)
    } else {
        -secs(from - at)
    }
}

/// Whether the PostgreSQL behind `endpoint` still takes writes as a
/// primary: `Err` while it does.
async fn not_writable(endpoint: &Endpoint) -> Result<String, String> {
    let role = Role {
        name: "postgres".into(),
        password: SUPERUSER_PASSWORD.into(),
    };
    let connect = tokio::time::timeout(Duration::from_secs(2), pg::connect(endpoint, &role));
    let Ok(Ok(client)) = connect.await else {
        return Ok("down".into());
    };
    match client.query_one("SELECT pg_is_in_recovery()", &[]).await {
        Ok(row) if row.get::<_, bool>(0) => Ok("a standby".into()),
        Ok(_) => Err("still a primary".into()),
        Err(e) => Ok(format!("not answering: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(member: &str, at: Instant) -> Ack {
        Ack {
            id: 1,
            member: member.into(),
            at,
            connection: 1,
        }
    }

    #[test]
    fn counts_and_signed_seconds() {
        let t = Instant::now();
        let later = t + Duration::from_millis(1500);
        let acks = [ack("db1", t), ack("db1", later), ack("db2", later)];
        let refs: Vec<&Ack> = acks.iter().collect();
        assert_eq!(acks_on_after(&refs, "db1", t), 2);
        assert_eq!(acks_on_after(&refs, "db1", later), 1);
        assert_eq!(acks_on_after(&refs, "db3", t), 0);
        assert_eq!(signed_secs(later, t), 1.5);
        assert_eq!(signed_secs(t, later), -1.5);
    }
}
