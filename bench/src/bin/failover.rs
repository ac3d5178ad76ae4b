//! bench/failover: host deaths and PostgreSQL crashes on a real
//! three-member cluster in synchronous mode, under a write load that logs
//! every acknowledged id. It fails (exit status 1, after the figures) if a
//! round lost an acknowledged write: synchronous mode promises none is.

use std::time::Instant;

use lab::{AgentCluster, Workload};
use pgwarden_bench::{
    figure_line, judge_losses, lost_writes, ready, secs, synchronous_cluster_under_load, Args,
    Loss, DEADLINE,
};

const BENCH: &str = "bench/failover";
/// Every round runs on [`synchronous_cluster_under_load`].
const SYNCHRONOUS: bool = true;

#[tokio::main]
async fn main() {
    let args = Args::from_env_or_exit(BENCH, &[("--rounds", 10)]);
    pgwarden_bench::exit_on_error(BENCH, run(args).await);
}

async fn run(args: Args) -> Result<(), String> {
    let rounds = args.number("--rounds");
    let (mut cluster, mut load) = synchronous_cluster_under_load(&args.pgwarden).await?;

    let mut host_death = Vec::new();
    let mut crash = Vec::new();
    let mut losses = Vec::new();
    println!(
        "{:<16} {:>5} {:>8} {:>10} {:>12}",
        "fault", "round", "killed", "took (s)", "new primary"
    );
    for round in 1..=rounds {
        let old = ready(&cluster).await?;
        let (took, new) = fault(&mut cluster, &mut load, &old, Fault::HostDeath).await?;
        println!(
            "{:<16} {:>5} {:>8} {:>10.2} {:>12}",
            "host death", round, old, took, new
        );
        host_death.push(took);
        cluster.restart(&old).map_err(|e| e.to_string())?;
        losses.push(loss(&cluster, &load, format!("host death {round}")).await?);
    }
    for round in 1..=rounds {
        let old = ready(&cluster).await?;
        let (took, new) = fault(&mut cluster, &mut load, &old, Fault::PostgresCrash).await?;
        println!(
            "{:<16} {:>5} {:>8} {:>10.2} {:>12}",
            "postgres crash", round, old, took, new
        );
        crash.push(took);
        losses.push(loss(&cluster, &load, format!("postgres crash {round}")).await?);
    }
    let report = load.stop().await;
    println!(
        "{} writes acknowledged, {} with an unknown outcome (in flight at a kill)",
        report.acks.len(),
        report.failed
    );
    println!("{}", figure_line("host_death_failover", &host_death, "s"));
    println!("{}", figure_line("postgres_crash_failover", &crash, "s"));
    let lost: Vec<f64> = losses.iter().map(|l| l.missing as f64).collect();
    println!("{}", figure_line("lost_acked_writes", &lost, "rows"));
    for allowed in judge_losses(&losses)? {
        println!("{allowed}");
    }
    Ok(())
}

/// Once the cluster is ready again after `round`: the acknowledged writes
/// missing on its primary.
async fn loss(cluster: &AgentCluster, load: &Workload, round: String) -> Result<Loss, String> {
    let primary = ready(cluster).await?;
    Ok(Loss {
        round,
        synchronous: SYNCHRONOUS,
        missing: lost_writes(cluster, load, &primary).await?,
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    HostDeath,
    PostgresCrash,
}

/// Kills, then waits for the first write acknowledged after the kill (on
/// another member for a host death). Returns the seconds and the member.
async fn fault(
    cluster: &mut AgentCluster,
    load: &mut Workload,
    primary: &str,
    fault: Fault,
) -> Result<(f64, String), String> {
    let before = load.acked();
    let killed = Instant::now();
    match fault {
        Fault::HostDeath => cluster.kill_host(primary),
        Fault::PostgresCrash => cluster.kill_postmaster(primary),
    }
    // The first write through a new connection after the kill: writes an
    // orphaned backend still acknowledges in the first instant do not count.
    let not_on = (fault == Fault::HostDeath).then_some(primary);
    let mut target = before + 1;
    loop {
        if !load.wait_acks(target, DEADLINE).await {
            return Err(format!(
                "no write acknowledged after the kill\n{}",
                cluster.logs()
            ));
        }
        if let Some(first) = load.first_ack_reconnected_after(killed, not_on) {
            return Ok((secs(first.at - killed), first.member));
        }
        target = load.acked() + 1;
    }
}
