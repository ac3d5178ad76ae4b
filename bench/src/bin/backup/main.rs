//! bench/backup: pgwarden's base backups, restores and WAL archive against
//! pgBackRest's, on one PostgreSQL 15 with a pgbench database, in the same
//! run, with the same compression (zstd level 3) and parallelism (2).
//!
//! Every round: pgbench TPS with archiving through `pgwarden wal push` and
//! without; a full backup by each tool; `pgbench -T 20`; an incremental
//! backup by each; pgbench until about `--segments` segments were archived
//! since the full backups; then for each tool a full restore of its full
//! backup, the replay of that WAL through its restore_command until the
//! server accepts writes, and a delta restore of its incremental backup
//! into the directory that replay left. The tool that goes first alternates
//! from round to round.

mod lab;
mod pgbackrest;
mod pgwarden;

use std::future::Future;
use std::time::Instant;

use pgbackrest::PgBackRest;
use pgwarden::Pgwarden;
use pgwarden_bench::{figure_line, summary, Args};

const BENCH: &str = "bench/backup";
const PARALLELISM: u64 = 2;
const MB: f64 = 1_000_000.0;

#[tokio::main]
async fn main() {
    let args = Args::from_env_or_exit(
        BENCH,
        &[
            ("--rounds", 3),
            ("--scale", 100),
            ("--segments", 100),
            ("--seconds", 20),
        ],
    );
    // Interrupted, the run is dropped like a failed one: every server it
    // started is stopped and its directory removed.
    let result = tokio::select! {
        result = run(args) => result,
        _ = interrupted() => Err("interrupted".to_string()),
    };
    pgwarden_bench::exit_on_error(BENCH, result);
}

async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// One measurement for both tools, a value per round.
#[derive(Default)]
struct Pair {
    pgwarden: Vec<f64>,
    pgbackrest: Vec<f64>,
}

impl Pair {
    fn push(&mut self, pgwarden: f64, pgbackrest: f64) {
        self.pgwarden.push(pgwarden);
        self.pgbackrest.push(pgbackrest);
    }

    /// pgBackRest's value / pgwarden's, per round.
    fn ratios(&self) -> Vec<f64> {
        self.pgbackrest
            .iter()
            .zip(&self.pgwarden)
            .map(|(b, w)| b / w)
            .collect()
    }
}

#[derive(Default)]
struct Results {
    full: Pair,
    incremental: Pair,
    restore: Pair,
    delta: Pair,
    replay: Pair,
    full_size: Pair,
    incremental_size: Pair,
    /// The data directory's size (what a backup reads), per round.
    data_bytes: Vec<f64>,
    /// The WAL each replay read, per round.
    wal_bytes: Vec<f64>,
    tps_archiving: Vec<f64>,
    tps_not_archiving: Vec<f64>,
}

/// Writes back dirty pages and drops the page cache, so each tool's
/// restore starts from the same state: without it the tool restoring
/// second in a round ran up to 1.8 times faster. Needs root; without it
/// the figures carry that order effect (the bench alternates the order).
fn cold_cache() {
    let _ = std::process::Command::new("sync").status();
    if let Err(err) = std::fs::write("/proc/sys/vm/drop_caches", "3") {
        eprintln!(
            "bench/backup: cannot drop the page cache ({err}); restores keep the order effect"
        );
    }
}

async fn timed<T, F: Future<Output = Result<T, String>>>(work: F) -> Result<(T, f64), String> {
    let began = Instant::now();
    let value = work.await?;
    Ok((value, began.elapsed().as_secs_f64()))
}

async fn run(args: Args) -> Result<(), String> {
    let mut server = lab::Server::new()?;
    let run_as = server.cluster.run_as.clone();
    let spec = server.source().instance.spec().clone();
    let pgwarden = Pgwarden::configure(server.dir(), &args.pgwarden, PARALLELISM, &run_as)?;
    let pgbackrest = PgBackRest::configure(
        server.dir(),
        &spec.data_dir,
        server.dir(),
        spec.endpoint.port,
        PARALLELISM,
        &run_as,
    )?;
    let both = format!("{} && {}", pgwarden.wal_push(), pgbackrest.archive_push());
    server.bootstrap(both.clone()).await?;
    pgbackrest.stanza_create().await?;
    let scale = args.number("--scale");
    eprintln!("{BENCH}: pgbench -i -s {scale}");
    server
        .pgbench(&["-i", "-q", "-s", &scale.to_string()].map(String::from))
        .await?;
    server.archive_all().await?;

    let mut results = Results::default();
    for round in 1..=args.number("--rounds") {
        eprintln!("{BENCH}: round {round}");
        // The archive's cost, measured first or second in turn.
        let seconds = args.number("--seconds");
        for archiving in if round % 2 == 1 {
            [true, false]
        } else {
            [false, true]
        } {
            let command = if archiving {
                pgwarden.wal_push()
            } else {
                "true".to_string()
            };
            server.set_archive_command(command).await?;
            server.archive_all().await?;
            let tps = server.tps(seconds).await?;
            if archiving {
                results.tps_archiving.push(tps);
            } else {
                results.tps_not_archiving.push(tps);
            }
        }
        server.set_archive_command(both.clone()).await?;
        server.archive_all().await?;
        one_round(&server, &pgwarden, &pgbackrest, &args, round, &mut results).await?;
    }
    print_results(&results, args.number("--scale"));
    Ok(())
}

async fn one_round(
    server: &lab::Server,
    pgwarden: &Pgwarden,
    pgbackrest: &PgBackRest,
    args: &Args,
    round: u64,
    results: &mut Results,
) -> Result<(), String> {
    let source = server.source();
    let data_dir = source.instance.data_dir().to_path_buf();
    let client = source.instance.connect().await.map_err(|e| e.to_string())?;

    // Who goes first alternates: the second finds the page cache warmer.
    let pgwarden_first = round % 2 == 1;
    let (full, pw_full, br_full) = if pgwarden_first {
        let (full, pw) = timed(pgwarden.backup(&client, &data_dir, None)).await?;
        let ((), br) = timed(pgbackrest.backup("full")).await?;
        (full, pw, br)
    } else {
        let ((), br) = timed(pgbackrest.backup("full")).await?;
        let (full, pw) = timed(pgwarden.backup(&client, &data_dir, None)).await?;
        (full, pw, br)
    };
    let br_full_backup = pgbackrest.last().await?;
    results.full.push(pw_full, br_full);
    results.full_size.push(
        pgwarden.stored_bytes(&full.id) as f64,
        br_full_backup.stored_bytes as f64,
    );
    results.data_bytes.push(full.totals.bytes as f64);

    server.pgbench(&lab::load(20)).await?;
    let incremental_backup = || pgwarden.backup(&client, &data_dir, Some(&full));
    let (incremental, pw_incr, br_incr) = if pgwarden_first {
        let (incremental, pw) = timed(incremental_backup()).await?;
        let ((), br) = timed(pgbackrest.backup("incr")).await?;
        (incremental, pw, br)
    } else {
        let ((), br) = timed(pgbackrest.backup("incr")).await?;
        let (incremental, pw) = timed(incremental_backup()).await?;
        (incremental, pw, br)
    };
    let br_incr_backup = pgbackrest.last().await?;
    results.incremental.push(pw_incr, br_incr);
    results.incremental_size.push(
        pgwarden.stored_bytes(&incremental.id) as f64,
        br_incr_backup.stored_bytes as f64,
    );

    // WAL written after the full backups, for the replay.
    let since =
        |lsn: String| format!("SELECT (pg_current_wal_lsn() - '{lsn}'::pg_lsn)::bigint::text");
    let segment = full.wal_segment_size as f64;
    loop {
        let written: f64 = server
            .text(&since(full.start.lsn.to_string()))
            .await?
            .parse()
            .map_err(|e| format!("WAL position: {e}"))?;
        if written / segment >= args.number("--segments") as f64 {
            results.wal_bytes.push(written);
            break;
        }
        server.pgbench(&lab::load(5)).await?;
    }
    server.archive_all().await?;

    // Each tool's restores in a directory of its own, removed afterwards.
    let mut restore = [0.0; 2];
    let mut replay = [0.0; 2];
    let mut delta = [0.0; 2];
    let order = if pgwarden_first { [0, 1] } else { [1, 0] };
    for tool in order {
        let name = ["pgwarden", "pgbackrest"][tool];
        cold_cache();
        let node = server.restored_node(&format!("{name}-{round}"))?;
        let target = node.instance.data_dir().to_path_buf();
        let run_as = &server.cluster.run_as;
        let ((), took) = if tool == 0 {
            timed(pgwarden.restore(&full.id, &target, false, run_as)).await?
        } else {
            timed(async {
                std::fs::create_dir(&target).map_err(|e| e.to_string())?;
                run_as.chown(&target).map_err(|e| e.to_string())?;
                pgbackrest
                    .restore(&br_full_backup.label, &target, false)
                    .await
            })
            .await?
        };
        restore[tool] = took;
        replay[tool] = lab::replay(&node).await?.as_secs_f64();

        let ((), took) = if tool == 0 {
            timed(pgwarden.restore(&incremental.id, &target, true, run_as)).await?
        } else {
            timed(pgbackrest.restore(&br_incr_backup.label, &target, true)).await?
        };
        delta[tool] = took;
        drop(node);
        std::fs::remove_dir_all(&target).map_err(|e| format!("{}: {e}", target.display()))?;
    }
    results.restore.push(restore[0], restore[1]);
    results.replay.push(replay[0], replay[1]);
    results.delta.push(delta[0], delta[1]);
    eprintln!(
        "{BENCH}: round {round}: pgwarden / pgBackRest seconds: full {pw_full:.2} / {br_full:.2}, \
         incremental {pw_incr:.2} / {br_incr:.2}, restore {:.2} / {:.2}, replay {:.2} / {:.2}, \
         delta restore {:.2} / {:.2}",
        restore[0], restore[1], replay[0], replay[1], delta[0], delta[1]
    );
    Ok(())
}

fn median(values: &[f64]) -> f64 {
    summary(values).1
}

fn print_results(results: &Results, scale: u64) {
    let data = median(&results.data_bytes);
    let wal = median(&results.wal_bytes);
    println!(
        "pgbench -s {scale}: {:.0} MB of data; replay of {:.0} MB of WAL ({:.0} segments); medians of {} rounds",
        data / MB,
        wal / MB,
        wal / 16_777_216.0,
        results.data_bytes.len()
    );
    println!(
        "{:<20} {:>12} {:>10} {:>14} {:>10} {:>8}",
        "", "pgwarden (s)", "MB/s", "pgBackRest (s)", "MB/s", "ratio"
    );
    for (name, pair, bytes) in [
        ("full backup", &results.full, data),
        ("incremental backup", &results.incremental, data),
        ("full restore", &results.restore, data),
        ("delta restore", &results.delta, data),
        ("replay", &results.replay, wal),
    ] {
        let (w, b) = (median(&pair.pgwarden), median(&pair.pgbackrest));
        println!(
            "{name:<20} {w:>12.2} {:>10.0} {b:>14.2} {:>10.0} {:>8.2}",
            bytes / MB / w,
            bytes / MB / b,
            median(&pair.ratios())
        );
    }
    println!(
        "{:<20} {:>12} {:>10} {:>14} {:>10} {:>8}",
        "repository", "pgwarden (MB)", "", "pgBackRest (MB)", "", "ratio"
    );
    for (name, pair) in [
        ("full backup", &results.full_size),
        ("incremental backup", &results.incremental_size),
    ] {
        let (w, b) = (median(&pair.pgwarden), median(&pair.pgbackrest));
        println!(
            "{name:<20} {:>12.1} {:>10} {:>14.1} {:>10} {:>8.2}",
            w / MB,
            "",
            b / MB,
            "",
            w / b
        );
    }
    println!(
        "pgbench TPS: {:.0} archiving through pgwarden wal push, {:.0} without archiving",
        median(&results.tps_archiving),
        median(&results.tps_not_archiving)
    );
    let inverse = |pair: &Pair| -> Vec<f64> {
        pair.pgwarden
            .iter()
            .zip(&pair.pgbackrest)
            .map(|(w, b)| w / b)
            .collect()
    };
    let tps: Vec<f64> = results
        .tps_archiving
        .iter()
        .zip(&results.tps_not_archiving)
        .map(|(with, without)| with / without)
        .collect();
    for (name, values) in [
        ("backup_full_ratio", results.full.ratios()),
        ("restore_full_ratio", results.restore.ratios()),
        ("backup_incremental_ratio", results.incremental.ratios()),
        ("restore_delta_ratio", results.delta.ratios()),
        ("replay_ratio", results.replay.ratios()),
        ("repo_size_ratio", inverse(&results.full_size)),
        ("archive_tps_ratio", tps),
    ] {
        println!("{}", figure_line(name, &values, "ratio"));
    }
}
