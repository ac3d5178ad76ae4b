//! Runs many seeds and lists the failing ones by invariant, for hunting
//! beyond what CI runs:
//!
//! ```text
//! cargo run -p pgwarden-sim --release --example explore -- [FROM] [COUNT]
//! ```

use std::collections::BTreeMap;
use std::time::Instant;

use sim::{run, Options};

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("FROM and COUNT are numbers"))
        .collect();
    let from = args.first().copied().unwrap_or(0);
    let count = args.get(1).copied().unwrap_or(1_000);
    let started = Instant::now();
    let mut failed: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut first = BTreeMap::new();
    let mut figures = Figures::default();
    for seed in from..from + count {
        match run(seed, &Options::default()) {
            Ok(report) => figures.add(&report),
            Err(failure) => {
                failed
                    .entry(failure.invariant.clone())
                    .or_default()
                    .push(seed);
                first
                    .entry(failure.invariant.clone())
                    .or_insert_with(|| failure.detail.clone());
            }
        }
    }
    println!(
        "{count} seeds from {from} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    figures.print();
    for (invariant, seeds) in &failed {
        let shown: Vec<String> = seeds.iter().take(20).map(u64::to_string).collect();
        println!(
            "{invariant}: {} seeds: {}{}",
            seeds.len(),
            shown.join(" "),
            if seeds.len() > 20 { " …" } else { "" }
        );
        println!(
            "    first: {}",
            first[invariant].lines().next().unwrap_or("")
        );
    }
}

/// What the passing seeds measured on clients' writes.
#[derive(Default)]
struct Figures {
    stale: u64,
    stale_seeds: u64,
    unguarded: u64,
    two_writer_ticks: u64,
    takeovers: u64,
    windows: Vec<u64>,
    /// The seed with the longest loss window.
    longest: Option<(u64, u64)>,
    /// Switchovers asked because a leader's reachability check failed, and
    /// the seeds with any.
    reach_switchovers: u64,
    reach_seeds: u64,
}

impl Figures {
    fn add(&mut self, report: &sim::Report) {
        self.stale += report.async_stale_acks;
        self.stale_seeds += u64::from(report.async_stale_acks > report.unguarded_stale_acks);
        self.unguarded += report.unguarded_stale_acks;
        self.two_writer_ticks += report.two_writer_ticks;
        self.takeovers += report.async_cut_takeovers;
        self.windows.extend(report.async_loss_window_ms);
        self.reach_switchovers += report.reach_switchovers;
        self.reach_seeds += u64::from(report.reach_switchovers > 0);
        if let Some(window) = report.async_loss_window_ms {
            if self.longest.is_none_or(|(w, _)| window > w) {
                self.longest = Some((window, report.seed));
            }
        }
    }

    fn print(&mut self) {
        println!(
            "asynchronous: {} writes acknowledged after a later timeline's ({} without a lease guard; {} seeds with one under a guard); {} ticks with two writers",
            self.stale, self.unguarded, self.stale_seeds, self.two_writer_ticks
        );
        println!(
            "reachability: {} switchovers asked because the leader's check failed, in {} seeds",
            self.reach_switchovers, self.reach_seeds
        );
        self.windows.sort_unstable();
        if let (Some(max), false) = (self.windows.last(), self.windows.is_empty()) {
            let median = self.windows[self.windows.len() / 2];
            println!(
                "asynchronous loss window (cut off → the replaced primary's last acknowledged write), {} seeds with {} such takeovers: median {} ms, max {} ms (seed {})",
                self.windows.len(),
                self.takeovers,
                median,
                max,
                self.longest.map_or(0, |(_, seed)| seed)
            );
        }
    }
}
