//! bench/switchover: planned switchovers back and forth through the REST API
//! on a real three-member cluster in synchronous mode, under a write load
//! that logs every acknowledged id.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use api::{ApiClient, Call};
use pgwarden_bench::{figure_line, secs};
use testkit::{AgentCluster, ClusterOptions, Workload};

const ALL: [&str; 3] = ["db1", "db2", "db3"];
const DEADLINE: Duration = Duration::from_secs(90);

struct Args {
    pgwarden: PathBuf,
    rounds: usize,
}

fn args() -> Result<Args, String> {
    let mut pgwarden = PathBuf::from("target/release/pgwarden");
    let mut rounds = 10;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--pgwarden" => pgwarden = it.next().ok_or("--pgwarden needs a path")?.into(),
            "--rounds" => {
                rounds = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or("--rounds needs a positive number")?
            }
            other => {
                return Err(format!(
                    "unknown argument {other}; use --pgwarden PATH --rounds N"
                ))
            }
        }
    }
    if !pgwarden.is_file() {
        return Err(format!(
            "{} does not exist: build it with cargo build --release",
            pgwarden.display()
        ));
    }
    Ok(Args { pgwarden, rounds })
}

#[tokio::main]
async fn main() {
    let args = match args() {
        Ok(args) => args,
        Err(err) => {
            eprintln!("bench/switchover: {err}");
            std::process::exit(2);
        }
    };
    if let Err(err) = run(args).await {
        eprintln!("bench/switchover: {err}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), String> {
    let mut options = ClusterOptions {
        fsync: true,
        ..ClusterOptions::default()
    };
    options.config.synchronous_mode = true;
    let cluster = AgentCluster::start(&args.pgwarden, options)
        .await
        .map_err(|e| e.to_string())?;
    let first = ready(&cluster).await?;
    let mut load = cluster.workload();
    if !load.wait_acks(100, DEADLINE).await {
        return Err(format!(
            "the write load made no progress\n{}",
            cluster.logs()
        ));
    }
    let client = ApiClient::new(None).map_err(|e| e.to_string())?;

    let (mut gaps, mut rejoin, mut lost) = (Vec::new(), Vec::new(), Vec::new());
    println!(
        "{:>5} {:>6} {:>6} {:>18} {:>22} {:>6}",
        "round", "from", "to", "writes paused (s)", "old streams again (s)", "lost"
    );
    // Back and forth between the first primary and one standby.
    let mut other = ALL.iter().find(|m| **m != first).unwrap().to_string();
    for round in 1..=args.rounds {
        let old = ready(&cluster).await?;
        let target = std::mem::replace(&mut other, old.clone());
        let asked = Instant::now();
        switchover(&client, &cluster, &old, &target).await?;
        let before = load.acked();
        if !load.wait_acks(before + 50, DEADLINE).await {
            return Err(format!(
                "no writes after the switchover\n{}",
                cluster.logs()
            ));
        }
        let (last, first) = load
            .gap_around(asked, &old, &target)
            .ok_or("no write acknowledged on both sides of the switchover")?;
        let gap = secs(first.at - last.at);
        let streams = old_streams_again(&cluster, &old, &target).await? - asked;
        let missing = lost_so_far(&cluster, &load, &target).await?;
        println!(
            "{:>5} {:>6} {:>6} {:>18.3} {:>22.2} {:>6}",
            round,
            old,
            target,
            gap,
            secs(streams),
            missing
        );
        gaps.push(gap);
        rejoin.push(secs(streams));
        lost.push(missing as f64);
    }
    let report = load.stop().await;
    println!(
        "{} writes acknowledged, {} with an unknown outcome (in flight at a switchover)",
        report.acks.len(),
        report.failed
    );
    println!(
        "{}",
        figure_line("switchover_write_unavailability", &gaps, "s")
    );
    println!(
        "{}",
        figure_line("switchover_old_primary_streaming", &rejoin, "s")
    );
    println!(
        "{}",
        figure_line("switchover_lost_acked_writes", &lost, "rows")
    );
    Ok(())
}

/// `POST /switchover` on the old primary's API; it answers once the target
/// leads.
async fn switchover(
    client: &ApiClient,
    cluster: &AgentCluster,
    old: &str,
    target: &str,
) -> Result<(), String> {
    let status = cluster
        .keys
        .member(old)
        .map_err(|e| e.to_string())?
        .get(cluster.store.as_ref())
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{old} has no status"))?;
    let body = serde_json::json!({ "to": target });
    let mut call = Call::new(hyper::Method::POST, &status.value.api_url, "/switchover");
    call.body = Some(&body);
    call.timeout = Duration::from_secs(60);
    let reply = client.send(call).await.map_err(|e| e.to_string())?;
    if reply.status.as_u16() != 200 {
        return Err(format!(
            "switchover from {old} to {target}: HTTP {}: {}\n{}",
            reply.status,
            reply.error_message(),
            cluster.logs()
        ));
    }
    Ok(())
}

/// When the old primary's status first says it streams from the target.
async fn old_streams_again(
    cluster: &AgentCluster,
    old: &str,
    target: &str,
) -> Result<Instant, String> {
    let key = cluster.keys.member(old).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = key.get(cluster.store.as_ref()).await {
            if status.value.streaming && status.value.upstream.as_deref() == Some(target) {
                return Ok(Instant::now());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!(
        "{old} never streamed from {target}\n{}",
        cluster.logs()
    ))
}

/// Waits until one primary leads, both standbys stream and a synchronous
/// standby is published: the state every round starts from.
async fn ready(cluster: &AgentCluster) -> Result<String, String> {
    let primary = cluster
        .wait_healthy(&ALL, DEADLINE)
        .await
        .map_err(|e| format!("{e}\n{}", cluster.logs()))?;
    cluster
        .wait_synchronous(DEADLINE)
        .await
        .map_err(|e| format!("{e}\n{}", cluster.logs()))?;
    Ok(primary)
}

async fn lost_so_far(
    cluster: &AgentCluster,
    load: &Workload,
    primary: &str,
) -> Result<usize, String> {
    let missing = cluster
        .missing_ids(primary, &load.acked_ids())
        .await
        .map_err(|e| e.to_string())?;
    if !missing.is_empty() {
        eprintln!(
            "LOST {} acknowledged writes, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
    }
    Ok(missing.len())
}
