//! `pgwarden demo`: the whole story on this machine, in one command.
//!
//! etcd, three agents (each with its own PostgreSQL, quorum commit) and a
//! `pgwarden proxy` on loopback. A write load goes through the proxy and
//! logs each acknowledged id. The primary's host "dies" (agent and
//! PostgreSQL SIGKILLed together); the agents' events and the proxy's
//! routing changes are shown as they happen. Then: the time to the first
//! acknowledged write, the acknowledged writes lost (none), the old primary
//! back as a standby, and a planned switchover back to it with its write
//! gap. Everything is torn down, or left running with `--keep`.

mod board;
mod feed;
mod keep;
mod proxy;
mod restore_act;
mod terminal;

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use api::{ApiClient, Call};
use lab::{AgentCluster, ClusterOptions, Workload};
use store::ClusterRecords;

use board::Board;
use feed::Feed;
use keep::Kept;
use proxy::ProxyProcess;
use terminal::{wrap, Terminal};

/// Longest any one step may take before the demo calls it failed.
const STEP_DEADLINE: Duration = Duration::from_secs(120);
const CLUSTER: &str = "demo";
/// A standby this close to the primary replays the rest in a moment.
const CAUGHT_UP_BYTES: u64 = 256 << 10;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Acknowledged writes to wait for before the fault.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    writes: u32,
    /// Leave the cluster running at the end and print how to reach it with
    /// `pgwarden ctl` and psql, and how to stop it.
    #[arg(long)]
    keep: bool,
}

/// What the demo measured.
#[derive(Debug)]
struct Outcome {
    /// From the kill to the first write acknowledged on the new primary.
    failover: Duration,
    acknowledged: usize,
    lost: usize,
    /// From the switchover request to the first write on the new primary,
    /// after the last one on the old.
    switchover_gap: Duration,
    /// Rows of the table dropped by mistake that `pgwarden restore` brought
    /// back, of [`restore_act::ROWS`].
    restored: i64,
}

/// The demo's last line.
fn summary(o: &Outcome) -> String {
    format!(
        "failover {}, lost {} of {} acknowledged writes, switchover gap {}, restored {} of {} dropped rows",
        secs(o.failover),
        o.lost,
        o.acknowledged,
        secs(o.switchover_gap),
        o.restored,
        restore_act::ROWS
    )
}

pub fn run(args: DemoArgs) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("start the async runtime")?;
    runtime.block_on(demo(args))
}

/// Everything the demo started.
struct Stage {
    cluster: AgentCluster,
    proxy: ProxyProcess,
    load: Option<Workload>,
    binary: std::path::PathBuf,
    term: Terminal,
    members: Vec<String>,
    /// The backup repository every member archives into.
    repository: lab::ScratchDir,
}

async fn demo(args: DemoArgs) -> Result<()> {
    let term = Terminal::detect();
    let binary = std::env::current_exe().context("find the pgwarden binary")?;
    say(
        &term,
        "pgwarden demo: etcd, three members (db1, db2, db3) with quorum commit (the default) and a proxy, \
         all on this machine's loopback.",
    );
    let mut stage = Stage::start(&binary, term, args.keep).await?;
    let result = stage.story(&args).await;
    if let Some(load) = stage.load.take() {
        load.stop().await;
    }
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(err) => {
            eprintln!("{}", stage.cluster.logs());
            println!();
            let err = err.context("demo FAILED");
            if args.keep {
                stage.leave_running().await?;
            } else {
                stage.tear_down()?;
            }
            return Err(err);
        }
    };
    println!();
    if args.keep {
        stage.leave_running().await?;
    } else {
        stage.tear_down()?;
    }
    println!("demo ok: {}", summary(&outcome));
    Ok(())
}

impl Stage {
    async fn start(binary: &Path, term: Terminal, keep: bool) -> Result<Stage> {
        let run_as = pg::RunAs::detect()?;
        let repository = lab::ScratchDir::with_prefix(&run_as, "pgwarden-demo-")
            .context("create the backup repository")?;
        let options = ClusterOptions {
            backup: Some(format!("repository = \"{}\"", repository.path().display())),
            name: CLUSTER.to_string(),
            dir_prefix: "pgwarden-demo-",
            // Without --keep, etcd dies with the demo even if it is killed.
            detachable: keep,
            // The defaults: quorum commit, no acknowledged write lost.
            config: store::cluster::DynamicConfig::default(),
            ..ClusterOptions::default()
        };
        let cluster = AgentCluster::start(binary, options)
            .await
            .map_err(|e| anyhow!("{e}"))
            .context("start etcd and the agents")?;
        let proxy = ProxyProcess::start(
            binary,
            cluster.dir.path(),
            &cluster.etcd.endpoints(),
            CLUSTER,
        );
        let proxy = match proxy {
            Ok(proxy) => proxy,
            Err(err) => return Err(err.context("start the proxy")),
        };
        println!("  directory {}", cluster.dir.path().display());
        say(
            &term,
            &format!(
                "  proxy: read-write port {}, read-only port {}",
                proxy.read_write.port(),
                proxy.read_only.port()
            ),
        );
        let members = cluster.members.iter().map(|m| m.name.clone()).collect();
        Ok(Stage {
            cluster,
            proxy,
            load: None,
            binary: binary.to_path_buf(),
            term,
            members,
            repository,
        })
    }

    async fn story(&mut self, args: &DemoArgs) -> Result<Outcome> {
        let primary = self.bootstrap().await.context("bootstrap")?;
        self.base_backup(&primary)
            .await
            .context("take a base backup")?;
        self.start_load(args.writes, &primary)
            .await
            .context("write through the proxy")?;
        let (new_primary, failover) = self.failover(&primary).await.context("fail over")?;
        self.check_nothing_lost(&new_primary).await?;
        self.rejoin(&primary, &new_primary)
            .await
            .context("bring the old primary back")?;
        let switchover_gap = self
            .switchover(&new_primary, &primary)
            .await
            .context("switch over back")?;
        let load = self.load.take().context("the write load is gone")?;
        let report = load.stop().await;
        let missing = self
            .cluster
            .missing_ids(&primary, &report.acked_ids())
            .await
            .context("check every acknowledged write on the primary")?;
        let restored = self
            .restore_dropped_table(&primary)
            .await
            .context("restore a dropped table")?;
        println!();
        self.print_table().await;
        let outcome = Outcome {
            failover,
            acknowledged: report.acks.len(),
            lost: missing.len(),
            switchover_gap,
            restored,
        };
        if !missing.is_empty() {
            bail!(
                "{}; missing ids: {:?}",
                summary(&outcome),
                &missing[..missing.len().min(20)]
            );
        }
        Ok(outcome)
    }

    /// Draws the member table until one member is the primary, the others
    /// stream from it and a synchronous standby is published.
    async fn bootstrap(&mut self) -> Result<String> {
        say(
            &self.term,
            "\n  bootstrapping: one member runs initdb, the others clone it",
        );
        let started = Instant::now();
        let mut board = Board::new(self.term);
        loop {
            let records = self.records().await;
            if let Some(records) = &records {
                board.draw(&board::rows(records, &self.members));
            }
            let ready = records.as_ref().and_then(|r| healthy(r, &self.members));
            if let (Some(leader), Some(records)) = (ready, &records) {
                if !records.sync_members().is_empty() {
                    board.done();
                    say(
                        &self.term,
                        &format!(
                            "  ready in {}: {leader} is the primary; each commit waits until {} of {} has it (quorum commit)",
                            secs(started.elapsed()),
                            records.sync_quorum(),
                            records.sync_members().join(", ")
                        ),
                    );
                    return Ok(leader);
                }
            }
            if started.elapsed() > STEP_DEADLINE {
                bail!(
                    "the cluster was not ready within {} s",
                    STEP_DEADLINE.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn start_load(&mut self, writes: u32, primary: &str) -> Result<()> {
        let endpoint = pg::Endpoint::new("127.0.0.1", self.proxy.read_write.port());
        let mut load = self
            .cluster
            .workload_through(endpoint, Duration::from_secs(30));
        if !load.wait_acks(writes as usize, STEP_DEADLINE).await {
            bail!(
                "only {} of {writes} writes acknowledged within {} s",
                load.acked(),
                STEP_DEADLINE.as_secs()
            );
        }
        say(
            &self.term,
            &format!(
                "\n  write load: one insert at a time through the proxy's read-write port, \
                 each acknowledged id logged; {} acknowledged by {primary} so far",
                load.acked()
            ),
        );
        self.load = Some(load);
        Ok(())
    }

    /// Kills the primary's host and shows what happens until a write is
    /// acknowledged again and the survivors are healthy.
    async fn failover(&mut self, primary: &str) -> Result<(String, Duration)> {
        let mut feed = self.feed().await;
        say(
            &self.term,
            &format!(
                "\n  killing {primary}: its agent and PostgreSQL, with SIGKILL, like a host \
                 that dies. Seconds since the kill:"
            ),
        );
        let killed = Instant::now();
        let origin = api::time::now_ms();
        self.cluster.kill_host(primary);
        let load = self.load.as_ref().context("no write load")?;
        let first = watch_until(
            &mut feed,
            origin,
            &self.term,
            "a write acknowledged after the kill",
            || async { load.first_ack_reconnected_after(killed, Some(primary)) },
        )
        .await?;
        let failover = first.at - killed;
        let survivors: Vec<String> = self
            .members
            .iter()
            .filter(|m| *m != primary)
            .cloned()
            .collect();
        let new_primary = first.member.clone();
        watch_until(
            &mut feed,
            origin,
            &self.term,
            "the surviving members healthy",
            || async {
                self.records()
                    .await
                    .and_then(|r| healthy(&r, &survivors))
                    .filter(|leader| *leader == new_primary)
            },
        )
        .await?;
        say(
            &self.term,
            &format!(
                "\n  first write acknowledged by {new_primary} through the proxy {} after the kill",
                secs(failover)
            ),
        );
        say(
            &self.term,
            "  (a term names one leadership: the store revision its leader key was created at, \
             so the new leader's term is the larger; the gap between two terms counts store \
             writes, not failovers)",
        );
        Ok((new_primary, failover))
    }

    /// `ctl backup run --full`: the leader has a standby take it.
    async fn base_backup(&self, primary: &str) -> Result<()> {
        let api_url = self
            .records()
            .await
            .and_then(|r| r.member(primary).map(|m| m.api_url.clone()))
            .with_context(|| format!("{primary} publishes no API address"))?;
        say(
            &self.term,
            &format!(
                "\n  every member archives its WAL into {}; a base backup: pgwarden ctl backup run --full",
                self.repository.path().display()
            ),
        );
        let done = restore_act::take_backup(&self.binary, &api_url).await?;
        say(&self.term, &format!("  {done}"));
        Ok(())
    }

    /// The last act: a table dropped by mistake on `primary`, restored as
    /// it was just before into a new directory; the rows it has.
    async fn restore_dropped_table(&self, primary: &str) -> Result<i64> {
        let member = self.cluster.member(primary);
        say(
            &self.term,
            &format!(
                "\n  by mistake: CREATE TABLE orders ({} rows) and DROP TABLE orders on {primary}",
                restore_act::ROWS
            ),
        );
        let before = restore_act::drop_by_mistake(member).await?;
        restore_act::archived(member, STEP_DEADLINE).await?;
        let dir = self.cluster.dir.join("restored");
        say(
            &self.term,
            &format!(
                "  pgwarden restore --to '{before}' --target-dir {} --start: the backup from \
                 before the failover, then the archived WAL across both timeline switches",
                dir.display()
            ),
        );
        let started = Instant::now();
        let restored =
            restore_act::restore(&self.binary, &member.config_file, &before, dir).await?;
        let rows = restored
            .rows(&pg::Role {
                name: "postgres".to_string(),
                password: lab::agents::SUPERUSER_PASSWORD.to_string(),
            })
            .await?;
        say(
            &self.term,
            &format!(
                "  restored in {}: orders has {rows} rows in the restored server (port {})",
                secs(started.elapsed()),
                restored.port
            ),
        );
        if rows != i64::from(restore_act::ROWS) {
            bail!(
                "the restored table has {rows} rows, not {}",
                restore_act::ROWS
            );
        }
        Ok(rows)
    }

    async fn check_nothing_lost(&self, primary: &str) -> Result<()> {
        let load = self.load.as_ref().context("no write load")?;
        let acked = load.acked_ids();
        let missing = self
            .cluster
            .missing_ids(primary, &acked)
            .await
            .with_context(|| format!("read the acknowledged ids on {primary}"))?;
        say(
            &self.term,
            &format!(
                "  acknowledged writes missing on {primary}: {} of {}",
                missing.len(),
                acked.len()
            ),
        );
        if !missing.is_empty() {
            bail!(
                "{} acknowledged writes lost, e.g. ids {:?}",
                missing.len(),
                &missing[..missing.len().min(20)]
            );
        }
        Ok(())
    }

    /// Restarts the old primary's agent and waits until it streams from the
    /// new primary.
    async fn rejoin(&mut self, old: &str, new_primary: &str) -> Result<()> {
        let mut feed = self.feed().await;
        say(
            &self.term,
            &format!("\n  restarting {old}'s agent: it must come back as a standby"),
        );
        let restarted = Instant::now();
        let origin = api::time::now_ms();
        self.cluster
            .restart(old)
            .with_context(|| format!("start {old}'s agent"))?;
        let members = self.members.clone();
        watch_until(
            &mut feed,
            origin,
            &self.term,
            &format!("{old} streaming from {new_primary}"),
            || async {
                self.records()
                    .await
                    .and_then(|r| healthy(&r, &members))
                    .filter(|leader| leader == new_primary)
            },
        )
        .await?;
        // A switchover to a member still replaying what it missed would
        // wait for that replay; an operator waits for it to catch up first.
        watch_until(
            &mut feed,
            origin,
            &self.term,
            &format!("{old} caught up with {new_primary}"),
            || async {
                let records = self.records().await?;
                let lag = records.member(old)?.lag_bytes?;
                (lag < CAUGHT_UP_BYTES).then_some(())
            },
        )
        .await?;
        let how = if feed.saw(old, "rewound") {
            "after pg_rewind"
        } else if feed.saw(old, "recloned") {
            "after a fresh clone"
        } else {
            "with nothing to repair"
        };
        say(
            &self.term,
            &format!(
                "  {old} streams from {new_primary} again, {} after its agent started ({how})",
                secs(restarted.elapsed())
            ),
        );
        Ok(())
    }

    /// A planned switchover from `from` to `to` through the REST API, under
    /// the write load; returns the write gap.
    async fn switchover(&mut self, from: &str, to: &str) -> Result<Duration> {
        let mut feed = self.feed().await;
        let api_url = self
            .records()
            .await
            .and_then(|r| r.member(from).map(|m| m.api_url.clone()))
            .with_context(|| format!("{from} publishes no API address"))?;
        say(
            &self.term,
            &format!("\n  planned switchover back to {to}: POST {api_url}/switchover"),
        );
        let client = ApiClient::new(None)?;
        let body = serde_json::json!({ "to": to });
        let mut call = Call::new(hyper::Method::POST, &api_url, "/switchover");
        call.body = Some(&body);
        call.timeout = Duration::from_secs(60);
        let asked = Instant::now();
        let origin = api::time::now_ms();
        let reply = client.send(call).await?;
        feed.print_new(origin, &self.term).await;
        if reply.status.as_u16() != 200 {
            bail!("HTTP {}: {}", reply.status, reply.error_message());
        }
        let load = self.load.as_ref().context("no write load")?;
        let before = load.acked();
        let members = self.members.clone();
        let gap = watch_until(
            &mut feed,
            origin,
            &self.term,
            "writes on the new primary",
            || async {
                if load.acked() < before + 50 {
                    return None;
                }
                load.gap_around(asked, from, to)
                    .map(|(last, first)| first.at - last.at)
            },
        )
        .await?;
        watch_until(
            &mut feed,
            origin,
            &self.term,
            &format!("{from} streaming from {to}"),
            || async {
                self.records()
                    .await
                    .and_then(|r| healthy(&r, &members))
                    .filter(|leader| leader == to)
            },
        )
        .await?;
        say(
            &self.term,
            &format!(
            "  writes paused for {} (last on {from} to first on {to}); {from} streams from {to}",
            secs(gap)
        ),
        );
        Ok(gap)
    }

    async fn print_table(&self) {
        if let Some(records) = self.records().await {
            let mut board = Board::new(Terminal {
                live: false,
                ..self.term
            });
            board.draw(&board::rows(&records, &self.members));
        }
    }

    async fn records(&self) -> Option<ClusterRecords> {
        ClusterRecords::read(self.cluster.store.as_ref(), &self.cluster.keys)
            .await
            .ok()
    }

    async fn feed(&self) -> Feed {
        Feed::starting_now(
            self.cluster.store.clone(),
            self.cluster.keys.clone(),
            self.proxy.log.clone(),
        )
        .await
    }

    fn tear_down(self) -> Result<()> {
        let dir = self.cluster.dir.path().to_path_buf();
        drop(self.proxy);
        drop(self.cluster);
        if dir.exists() {
            bail!("{} was not removed", dir.display());
        }
        say(
            &self.term,
            &format!(
                "  stopped every process the demo started and removed {}",
                dir.display()
            ),
        );
        Ok(())
    }

    /// Lets everything run on after the demo exits, with a `stop` script.
    async fn leave_running(mut self) -> Result<()> {
        let records = self.records().await.unwrap_or_default();
        let api_urls: Vec<String> = records
            .members
            .values()
            .map(|m| m.value.api_url.clone())
            .collect();
        let standby = records
            .members
            .keys()
            .find(|m| Some(m.as_str()) != records.leader_name())
            .cloned()
            .unwrap_or_else(|| "db2".to_string());
        let password_file = self.cluster.dir.join("superuser.pw");
        // The members go on archiving into it.
        let repository = self.repository.keep();
        let proxy = self.proxy.leave_running();
        let kept = Kept {
            left: self.cluster.leave_running(),
            proxy,
            repository,
        };
        let stop = kept.write_stop_script()?;
        for line in keep::instructions(
            &self.binary,
            &api_urls,
            &self.proxy,
            &password_file,
            &standby,
            &stop,
        ) {
            println!("{line}");
        }
        Ok(())
    }
}

/// The leader, when it runs as primary and every other one of `members`
/// streams from it, by what the agents publish.
fn healthy(records: &ClusterRecords, members: &[String]) -> Option<String> {
    let leader = records.healthy_leader()?.name.clone();
    if !members.contains(&leader) {
        return None;
    }
    members
        .iter()
        .filter(|m| **m != leader)
        .all(|m| {
            records.member(m).is_some_and(|s| {
                s.is_streaming_standby() && s.upstream.as_deref() == Some(leader.as_str())
            })
        })
        .then_some(leader)
}

/// Prints the feed until `check` says yes.
async fn watch_until<T, F, Fut>(
    feed: &mut Feed,
    origin_ms: u64,
    term: &Terminal,
    what: &str,
    mut check: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        feed.print_new(origin_ms, term).await;
        if let Some(found) = check().await {
            feed.print_new(origin_ms, term).await;
            return Ok(found);
        }
        if started.elapsed() > STEP_DEADLINE {
            bail!("no {what} within {} s", STEP_DEADLINE.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn say(term: &Terminal, text: &str) {
    let leading = text.len() - text.trim_start_matches('\n').len();
    for _ in 0..leading {
        println!();
    }
    let text = text.trim_start_matches('\n');
    let indent: String = text.chars().take_while(|c| *c == ' ').collect();
    for line in wrap(&indent, text.trim_start(), term.width) {
        println!("{line}");
    }
}

fn secs(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_reads_like_the_readme_says() {
        let outcome = Outcome {
            failover: Duration::from_millis(1_430),
            acknowledged: 5321,
            lost: 0,
            switchover_gap: Duration::from_millis(260),
            restored: 1000,
        };
        assert_eq!(
            summary(&outcome),
            "failover 1.4 s, lost 0 of 5321 acknowledged writes, switchover gap 0.3 s, \
             restored 1000 of 1000 dropped rows"
        );
    }
}
