//! bench/failover: host deaths and PostgreSQL crashes on a real
//! three-member cluster in synchronous mode, under a write load that logs
//! every acknowledged id; then, on a cluster in network namespaces, a
//! silent primary (partition, freeze) in quorum and in asynchronous mode,
//! and what quorum commit costs in pgbench TPS. It fails (exit status 1,
//! after the figures) if a round in quorum or synchronous mode lost an
//! acknowledged write or let the old primary acknowledge one after the new
//! primary's first: both modes promise neither happens.

mod silent;
mod tps;

use std::time::Instant;

use lab::{AgentCluster, Workload};
use pgwarden_bench::{
    figure_line, judge_losses, lost_writes, ready, secs, synchronous_cluster_under_load, Args,
    Loss, DEADLINE,
};
use silent::{NetCluster, Silence};
use store::cluster::SynchronousMode;

const BENCH: &str = "bench/failover";
/// Every round runs on [`synchronous_cluster_under_load`].
const SYNCHRONOUS: bool = true;

#[tokio::main]
async fn main() {
    let args = Args::from_env_or_exit(
        BENCH,
        &[
            ("--rounds", 10),
            ("--silent-rounds", 3),
            ("--tps-rounds", 2),
            ("--tps-seconds", 10),
        ],
    );
    pgwarden_bench::exit_on_error(BENCH, run(args).await);
}

async fn run(args: Args) -> Result<(), String> {
    let mut failures = match deaths_and_crashes(&args).await? {
        Ok(()) => Vec::new(),
        Err(failure) => vec![failure],
    };
    failures.extend(silent_primaries(&args).await?);
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

/// Host deaths and PostgreSQL crashes in synchronous mode. The outer error
/// ends the benchmark at once; the inner one is a lost write, reported once
/// every round has run.
async fn deaths_and_crashes(args: &Args) -> Result<Result<(), String>, String> {
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
        if new != old {
            // Not restarted in place: what each agent decided, for the record.
            eprintln!(
                "postgres crash {round} moved the primary:\n{}",
                cluster.logs()
            );
        }
        crash.push(took);
        // The statuses in the store may still be the ones from before the
        // crash: let the agent see its PostgreSQL up again first. Crashes
        // closer together than that add up to one outage of restart_grace
        // and rightly hand over to a standby.
        cluster
            .wait_published_running(&new, DEADLINE)
            .await
            .map_err(|e| format!("{e}\n{}", cluster.logs()))?;
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
    Ok(judge_losses(&losses).map(|allowed| {
        for line in allowed {
            println!("{line}");
        }
    }))
}

/// Partitions and freezes of the primary in quorum mode, pgbench in both
/// modes, then the same faults in asynchronous mode, on one cluster in
/// network namespaces. Returns the broken promises of quorum mode.
async fn silent_primaries(args: &Args) -> Result<Vec<String>, String> {
    let rounds = args.number("--silent-rounds");
    let mut net = NetCluster::start(&args.pgwarden, SynchronousMode::Quorum).await?;
    let mut failures = Vec::new();
    println!(
        "{:<6} {:<10} {:>5} {:>5} {:>5} {:>13} {:>16} {:>13} {:>11} {:>5}",
        "mode",
        "fault",
        "round",
        "old",
        "new",
        "failover (s)",
        "old last ack (s)",
        "after resume",
        "overlapping",
        "lost"
    );
    let mut figures = Vec::new();
    for (mode, label) in [
        (SynchronousMode::Quorum, "quorum"),
        (SynchronousMode::Off, "async"),
    ] {
        if mode == SynchronousMode::Off {
            // What quorum commit costs, measured while the cluster is whole.
            let ratios = tps::tps_ratios(
                &net,
                args.number("--tps-rounds"),
                args.number("--tps-seconds"),
            )
            .await?;
            figures.push(figure_line("quorum_commit_tps_ratio", &ratios, "ratio"));
            net.set_mode(mode).await?;
        }
        for silence in [Silence::Partition, Silence::Freeze] {
            let mut outcomes = Vec::new();
            for round in 1..=rounds {
                let o = net.round(silence).await?;
                println!(
                    "{:<6} {:<10} {:>5} {:>5} {:>5} {:>13.2} {:>16.3} {:>13} {:>11} {:>5}",
                    label,
                    silence.name(),
                    round,
                    o.old,
                    o.new,
                    o.failover,
                    o.old_last_ack,
                    o.acked_after_resume,
                    o.overlapping,
                    o.lost
                );
                if mode != SynchronousMode::Off && (o.lost > 0 || o.overlapping > 0) {
                    failures.push(format!(
                        "{label} {} {round}: {} acknowledged writes lost, {} acknowledged by \
                         the old primary after the new primary's first",
                        silence.name(),
                        o.lost,
                        o.overlapping
                    ));
                }
                outcomes.push(o);
            }
            let series =
                |f: fn(&silent::Outcome) -> f64| outcomes.iter().map(f).collect::<Vec<_>>();
            let name = silence.name();
            if mode == SynchronousMode::Off {
                figures.push(match silence {
                    Silence::Partition => figure_line(
                        "async_partition_ack_window",
                        &series(|o| o.old_last_ack),
                        "s",
                    ),
                    Silence::Freeze => figure_line(
                        "async_freeze_acked_after_resume",
                        &series(|o| o.acked_after_resume as f64),
                        "writes",
                    ),
                });
                figures.push(figure_line(
                    &format!("async_{name}_lost_acked_writes"),
                    &series(|o| o.lost as f64),
                    "rows",
                ));
            } else {
                figures.push(figure_line(
                    &format!("{name}_failover"),
                    &series(|o| o.failover),
                    "s",
                ));
            }
        }
    }
    for figure in figures {
        println!("{figure}");
    }
    Ok(failures)
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
