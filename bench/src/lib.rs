//! Shared pieces of the benchmarks: the command line, figures and their
//! machine-readable lines, and the cluster under a write load that the
//! failover and switchover benchmarks start from.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::PathBuf;
use std::time::Duration;

use lab::{AgentCluster, ClusterOptions, Workload};

/// How long any awaited cluster state may take.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// A benchmark's command line: `--pgwarden PATH` and the positive numbers
/// the benchmark takes (`--rounds N`, …).
#[derive(Debug)]
pub struct Args {
    pub pgwarden: PathBuf,
    numbers: BTreeMap<&'static str, u64>,
}

impl Args {
    /// Parses `args` (without the program name); `numbers` lists each
    /// numeric flag with its default.
    pub fn parse(
        args: impl IntoIterator<Item = String>,
        numbers: &[(&'static str, u64)],
    ) -> Result<Args, String> {
        let mut parsed = Args {
            pgwarden: PathBuf::from("target/release/pgwarden"),
            numbers: numbers.iter().copied().collect(),
        };
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            if arg == "--pgwarden" {
                parsed.pgwarden = it.next().ok_or("--pgwarden needs a path")?.into();
            } else if let Some((flag, value)) = parsed.numbers.iter_mut().find(|(f, _)| **f == arg)
            {
                *value = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or(format!("{flag} needs a positive number"))?;
            } else {
                let usage: Vec<String> = std::iter::once("--pgwarden PATH".to_string())
                    .chain(numbers.iter().map(|(flag, _)| format!("{flag} N")))
                    .collect();
                return Err(format!("unknown argument {arg}; use {}", usage.join(" ")));
            }
        }
        Ok(parsed)
    }

    /// The value of a numeric flag named to [`Args::parse`].
    pub fn number(&self, flag: &str) -> u64 {
        self.numbers[flag]
    }

    /// This process's arguments; on a mistake or a missing pgwarden binary,
    /// says so and exits with status 2.
    pub fn from_env_or_exit(bench: &str, numbers: &[(&'static str, u64)]) -> Args {
        let args = Args::parse(std::env::args().skip(1), numbers).and_then(|args| {
            if args.pgwarden.is_file() {
                Ok(args)
            } else {
                Err(format!(
                    "{} does not exist: build it with cargo build --release",
                    args.pgwarden.display()
                ))
            }
        });
        args.unwrap_or_else(|err| {
            eprintln!("{bench}: {err}");
            std::process::exit(2)
        })
    }
}

/// Ends the process with status 1 if the benchmark failed, saying why.
pub fn exit_on_error<E: Display>(bench: &str, result: Result<(), E>) {
    if let Err(err) = result {
        eprintln!("{bench}: {err}");
        std::process::exit(1);
    }
}

/// A three-member cluster in synchronous mode with fsync on, under a write
/// load that has had its first 100 writes acknowledged.
pub async fn synchronous_cluster_under_load(
    pgwarden: &std::path::Path,
) -> Result<(AgentCluster, Workload), String> {
    let mut options = ClusterOptions {
        fsync: true,
        ..ClusterOptions::default()
    };
    options.config.synchronous_mode = store::cluster::SynchronousMode::First;
    let cluster = AgentCluster::start(pgwarden, options)
        .await
        .map_err(|e| e.to_string())?;
    ready(&cluster).await?;
    let mut load = cluster.workload();
    if !load.wait_acks(100, DEADLINE).await {
        return Err(format!(
            "the write load made no progress\n{}",
            cluster.logs()
        ));
    }
    Ok((cluster, load))
}

/// Waits until one primary leads, every other member streams from it and a
/// synchronous standby is published: the state every round starts from.
/// Returns the primary.
pub async fn ready(cluster: &AgentCluster) -> Result<String, String> {
    let members: Vec<&str> = cluster.members.iter().map(|m| m.name.as_str()).collect();
    let primary = cluster
        .wait_healthy(&members, DEADLINE)
        .await
        .map_err(|e| format!("{e}\n{}", cluster.logs()))?;
    cluster
        .wait_synchronous(DEADLINE)
        .await
        .map_err(|e| format!("{e}\n{}", cluster.logs()))?;
    Ok(primary)
}

/// How many acknowledged writes are missing on `primary`; names a few on
/// stderr when any are.
pub async fn lost_writes(
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

/// Acknowledged writes missing on the primary after one round.
#[derive(Clone, Debug, PartialEq)]
pub struct Loss {
    /// The round as the table names it, e.g. `host death 3`.
    pub round: String,
    /// The cluster ran in synchronous mode, which promises that no
    /// acknowledged write is lost.
    pub synchronous: bool,
    /// Every acknowledged write so far missing on the primary after the
    /// round (a write lost in one round stays missing in the next).
    pub missing: usize,
}

/// The rule on lost writes: a synchronous round that lost an acknowledged
/// write fails the benchmark (`Err`, naming each); an asynchronous round
/// may lose what the standby had not received (within the lag limit), so
/// its losses only come back as lines for the report (`Ok`).
pub fn judge_losses(losses: &[Loss]) -> Result<Vec<String>, String> {
    let (mut failed, mut allowed) = (Vec::new(), Vec::new());
    let mut before = 0;
    for loss in losses {
        if loss.missing > before {
            let line = format!(
                "{}: {} acknowledged writes lost",
                loss.round,
                loss.missing - before
            );
            if loss.synchronous {
                failed.push(line);
            } else {
                allowed.push(format!("{line} (asynchronous mode allows it)"));
            }
        }
        before = loss.missing;
    }
    if failed.is_empty() {
        Ok(allowed)
    } else {
        Err(format!(
            "synchronous mode lost acknowledged writes, which it must never do: {}",
            failed.join("; ")
        ))
    }
}

/// min / median / max of a series.
pub fn summary(values: &[f64]) -> (f64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    if sorted.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mid = sorted.len() / 2;
    let median = if sorted.len() % 2 == 0 {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    };
    (sorted[0], median, sorted[sorted.len() - 1])
}

/// `figure <name> <min> <median> <max> <unit>`
pub fn figure_line(name: &str, values: &[f64], unit: &str) -> String {
    let (min, median, max) = summary(values);
    // Seconds and ratios want hundredths; counts (rows, tps) are whole.
    let precision = if matches!(unit, "s" | "ratio") { 2 } else { 0 };
    format!("figure {name} {min:.precision$} {median:.precision$} {max:.precision$} {unit}")
}

pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_lines() {
        assert_eq!(summary(&[3.0, 1.0, 2.0]), (1.0, 2.0, 3.0));
        assert_eq!(summary(&[4.0, 1.0, 2.0, 3.0]), (1.0, 2.5, 4.0));
        assert_eq!(
            figure_line("x", &[1.0, 1.5, 2.0], "s"),
            "figure x 1.00 1.50 2.00 s"
        );
        assert_eq!(
            figure_line("r", &[0.7, 0.81], "ratio"),
            "figure r 0.70 0.76 0.81 ratio"
        );
        assert_eq!(
            figure_line("lost", &[0.0, 0.0], "rows"),
            "figure lost 0 0 0 rows"
        );
    }

    fn loss(round: &str, synchronous: bool, missing: usize) -> Loss {
        Loss {
            round: round.to_string(),
            synchronous,
            missing,
        }
    }

    #[test]
    fn a_synchronous_round_that_loses_a_write_fails_an_asynchronous_one_is_reported() {
        assert_eq!(judge_losses(&[]), Ok(vec![]));
        assert_eq!(
            judge_losses(&[loss("host death 1", true, 0), loss("crash 1", true, 0)]),
            Ok(vec![])
        );
        assert_eq!(
            judge_losses(&[loss("async 1", false, 2), loss("async 2", false, 2)]),
            Ok(vec![
                "async 1: 2 acknowledged writes lost (asynchronous mode allows it)".to_string()
            ])
        );
        // Counted once, in the round that lost them, not again in the
        // rounds after (the count is of every write missing so far).
        assert_eq!(
            judge_losses(&[
                loss("async 1", false, 2),
                loss("host death 1", true, 2),
                loss("host death 2", true, 5),
                loss("host death 3", true, 5),
            ]),
            Err(
                "synchronous mode lost acknowledged writes, which it must never do: \
                 host death 2: 3 acknowledged writes lost"
                    .to_string()
            )
        );
    }

    fn parse(args: &[&str]) -> Result<Args, String> {
        Args::parse(
            args.iter().map(|a| a.to_string()),
            &[("--rounds", 10), ("--seconds", 5)],
        )
    }

    #[test]
    fn arguments_with_defaults_and_mistakes() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.pgwarden, PathBuf::from("target/release/pgwarden"));
        assert_eq!((args.number("--rounds"), args.number("--seconds")), (10, 5));

        let args = parse(&["--rounds", "3", "--pgwarden", "/bin/pgwarden"]).unwrap();
        assert_eq!(args.pgwarden, PathBuf::from("/bin/pgwarden"));
        assert_eq!((args.number("--rounds"), args.number("--seconds")), (3, 5));

        assert_eq!(
            parse(&["--rounds", "0"]).unwrap_err(),
            "--rounds needs a positive number"
        );
        assert_eq!(
            parse(&["--seconds"]).unwrap_err(),
            "--seconds needs a positive number"
        );
        assert_eq!(
            parse(&["--pgwarden"]).unwrap_err(),
            "--pgwarden needs a path"
        );
        assert_eq!(
            parse(&["--fast"]).unwrap_err(),
            "unknown argument --fast; use --pgwarden PATH --rounds N --seconds N"
        );
    }
}
