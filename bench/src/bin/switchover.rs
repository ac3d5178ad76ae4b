//! bench/switchover: planned switchovers back and forth through the REST API
//! on a real three-member cluster in synchronous mode, under a write load
//! that logs every acknowledged id.

use std::time::{Duration, Instant};

use api::{ApiClient, Call};
use lab::AgentCluster;
use pgwarden_bench::{
    figure_line, lost_writes, ready, secs, synchronous_cluster_under_load, Args, DEADLINE,
};

const BENCH: &str = "bench/switchover";

#[tokio::main]
async fn main() {
    let args = Args::from_env_or_exit(BENCH, &[("--rounds", 10)]);
    pgwarden_bench::exit_on_error(BENCH, run(args).await);
}

async fn run(args: Args) -> Result<(), String> {
    let (cluster, mut load) = synchronous_cluster_under_load(&args.pgwarden).await?;
    let first = ready(&cluster).await?;
    let client = ApiClient::new(None).map_err(|e| e.to_string())?;

    let (mut gaps, mut rejoin, mut lost) = (Vec::new(), Vec::new(), Vec::new());
    println!(
        "{:>5} {:>6} {:>6} {:>18} {:>22} {:>6}",
        "round", "from", "to", "writes paused (s)", "old streams again (s)", "lost"
    );
    // Back and forth between the first primary and one standby.
    let mut other = cluster
        .members
        .iter()
        .map(|m| m.name.clone())
        .find(|m| *m != first)
        .ok_or("the cluster has no standby")?;
    for round in 1..=args.number("--rounds") {
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
        let missing = lost_writes(&cluster, &load, &target).await?;
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
