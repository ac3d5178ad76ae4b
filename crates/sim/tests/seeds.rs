//! Seeded runs of the simulation (see docs/simulation.md).
//!
//! * `SIM_SEEDS=n` (default [`DEFAULT_SEEDS`]) seeds from `SIM_SEED_BASE`
//!   (default 0), split over eight tests so nextest runs them in parallel.
//! * `SIM_SEED=n cargo test -p pgwarden-sim --test seeds replay -- --nocapture`
//!   replays one seed and prints its whole history.

use std::time::Instant;

use sim::{run, run_with, Failure, Options, SimConfig};

/// Seeds per CI run: about 75 s on two cores in a debug build.
const DEFAULT_SEEDS: u64 = 2_000;
/// Test functions the seeds are split over (nextest runs them in parallel;
/// each stays well under its slow-test period).
const SHARES: u64 = 8;

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

/// The configuration a seed runs.
fn config(seed: u64) -> SimConfig {
    SimConfig::for_seed(seed)
}

fn run_share(share: u64) {
    if std::env::var_os("SIM_SEED").is_some() {
        return; // replaying one seed: `replay` does it
    }
    let count = env_u64("SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
    let base = env_u64("SIM_SEED_BASE").unwrap_or(0);
    let started = Instant::now();
    let mut failures: Vec<Box<Failure>> = Vec::new();
    let mut ran = 0;
    for seed in (base..base + count).filter(|seed| seed % SHARES == share) {
        ran += 1;
        if let Err(failure) = run_with(seed, config(seed), &Options::default()) {
            failures.push(failure);
        }
    }
    eprintln!(
        "share {share}: {ran} seeds in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if let Some(first) = failures.first() {
        let seeds: Vec<String> = failures
            .iter()
            .map(|f| format!("{} ({})", f.seed, f.invariant))
            .collect();
        panic!(
            "{} of {ran} seeds failed: {}\n\n{first}",
            failures.len(),
            seeds.join(", ")
        );
    }
}

#[test]
fn seeds_share_0() {
    run_share(0);
}

#[test]
fn seeds_share_1() {
    run_share(1);
}

#[test]
fn seeds_share_2() {
    run_share(2);
}

#[test]
fn seeds_share_3() {
    run_share(3);
}

#[test]
fn seeds_share_4() {
    run_share(4);
}

#[test]
fn seeds_share_5() {
    run_share(5);
}

#[test]
fn seeds_share_6() {
    run_share(6);
}

#[test]
fn seeds_share_7() {
    run_share(7);
}

/// `SIM_SEED=n`: one seed with its full history (without it: seed 0,
/// quietly).
#[test]
fn replay() {
    let seed = env_u64("SIM_SEED");
    let options = Options {
        echo: seed.is_some(),
        tail: 60,
    };
    let seed = seed.unwrap_or(0);
    match run_with(seed, config(seed), &options) {
        Ok(report) => println!("{report}"),
        Err(failure) => panic!("{failure}"),
    }
}

#[test]
fn a_seed_replays_exactly() {
    for seed in [3, 17] {
        let first = run(seed, &Options::default());
        let again = run(seed, &Options::default());
        match (first, again) {
            (Ok(a), Ok(b)) => assert_eq!(a.fingerprint, b.fingerprint, "{a} / {b}"),
            (Err(a), Err(b)) => assert_eq!(a.history, b.history),
            (a, b) => panic!("seed {seed} ran differently: {a:?} / {b:?}"),
        }
    }
}
