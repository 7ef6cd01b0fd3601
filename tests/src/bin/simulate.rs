//! Runs many seeded simulations and reports what the oracles found.

use clap::Parser;
use hotstuff_tests::scenario::{self, Kind};
use hotstuff_tests::snapshot_batch;
use hotstuff_tests::Sim;
use std::process::ExitCode;
use std::time::Instant;

/// Deterministic HotStuff simulator: seeded faults, Byzantine replicas, safety and liveness oracles.
#[derive(Parser, Debug)]
#[command(name = "simulate")]
struct Args {
    /// Number of validators.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    validators: u64,
    /// Number of seeds to run (seeds 0..S, offset by --first-seed).
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// First seed of the range.
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Number of Byzantine validators (default: f = (n-1)/3 when --kind is given, else 0).
    #[arg(long)]
    byzantine: Option<u64>,
    /// Misbehaviour of the Byzantine validators.
    #[arg(long, default_value = "mixed")]
    kind: Kind,
    /// Run this one seed and print its trace.
    #[arg(long)]
    seed: Option<u64>,
    /// Run Twins scenarios instead of random fault seeds: --byzantine keys are twinned, and each
    /// seed scripts partitions and leaders for the first views, then heals.
    #[arg(long)]
    twins_scenarios: bool,
    /// Validator-set changes per seed (0-16): two listeners may join; keys are added, removed
    /// and re-weighted, always keeping the Byzantine keys below a third of the power.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=16))]
    set_changes: u64,
    /// Run the snapshot catch-up scenarios instead (`hotstuff_tests::snapshot_batch`: four
    /// validators on the kv app with pruning and snapshots, a late listener and a lagging
    /// validator catching up by snapshot through the std driver's client, Byzantine snapshot
    /// and sync servers, crashes mid-fetch); --validators, --kind and --byzantine do not apply.
    #[arg(long)]
    snapshots: bool,
    /// With --snapshots: the negative control's planted bug (install the first chunk received,
    /// verified or not); the oracles should fail (each run stops at its first safety violation).
    #[arg(long)]
    plant_unverified: bool,
    /// Every node runs with vote broadcast on (`Config::broadcast_votes`: votes go to every
    /// validator, and every validator forms the QCs).
    #[arg(long)]
    broadcast_votes: bool,
    /// End each seed at its first safety violation (for negative controls: a forked run would
    /// otherwise go on to the liveness bound).
    #[arg(long)]
    stop_at_violation: bool,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> ExitCode {
    let args = Args::parse();
    let n = args.validators as usize;
    let f = (n - 1) / 3;
    let byz = args.byzantine.map_or(f, |b| b as usize);
    if byz > n {
        eprintln!("error: --byzantine {byz} exceeds --validators {n}");
        return ExitCode::from(2);
    }
    let kind = if byz == 0 { Kind::None } else { args.kind };
    let seeds: Vec<u64> = match args.seed {
        Some(s) => vec![s],
        None => (args.first_seed..args.first_seed + args.seeds).collect(),
    };
    if args.snapshots {
        return snapshots(&args, &seeds);
    }
    let started = Instant::now();
    let (mut v, mut d, mut l, mut commits, mut views) = (0usize, 0usize, 0usize, 0u64, 0u64);
    let mut epochs = 0u64;
    let (mut worst_gap_change, mut worst_gap_epoch) = (0u64, 0u64);
    let mut view_counts = Vec::new();
    let mut last_progress = Instant::now();
    for (i, &seed) in seeds.iter().enumerate() {
        let mut p = if args.twins_scenarios {
            scenario::twins(seed, n, byz)
        } else {
            scenario::params(seed, n, byz, kind)
        };
        if args.set_changes > 0 {
            scenario::add_set_changes(&mut p, seed, args.set_changes as usize);
        }
        p.broadcast_votes = args.broadcast_votes;
        p.trace = args.seed.is_some();
        p.stop_on_safety_violation = args.stop_at_violation;
        let report = Sim::new(p).run();
        if args.seed.is_some() {
            for line in &report.trace {
                println!("{line}");
            }
        }
        v += report.safety_violations.len();
        d += report.double_signs.len();
        l += report.liveness_failures.len();
        commits += report.max_committed;
        views += report.max_view;
        epochs += report.max_epoch;
        worst_gap_change = worst_gap_change.max(report.epoch_gaps.iter().copied().max().unwrap_or(0));
        worst_gap_epoch = worst_gap_epoch.max(report.max_gap_within_epoch);
        view_counts.extend(report.views_after_heal.iter().copied());
        if !report.ok() {
            for line in
                report.safety_violations.iter().chain(&report.double_signs).chain(&report.liveness_failures)
            {
                eprintln!("FAIL {line}");
            }
            eprintln!(
                "replay: cargo run --release -p hotstuff-tests --bin simulate -- --validators {n} --byzantine {byz} --kind {}{}{}{} --seed {seed}",
                format!("{kind:?}").to_lowercase(),
                if args.twins_scenarios { " --twins-scenarios" } else { "" },
                if args.broadcast_votes { " --broadcast-votes" } else { "" },
                if args.set_changes > 0 { format!(" --set-changes {}", args.set_changes) } else { String::new() }
            );
        }
        if last_progress.elapsed().as_secs() >= 5 {
            last_progress = Instant::now();
            eprintln!("progress: {}/{} seeds, {:.0} s", i + 1, seeds.len(), started.elapsed().as_secs_f64());
        }
    }
    let secs = started.elapsed().as_secs_f64();
    view_counts.sort_unstable();
    eprintln!(
        "rate: {:.0} simulated views/s ({views} views in {secs:.1} s); views to commit after heal: p50 {}, p99 {}, max {}",
        views as f64 / secs.max(1e-9),
        percentile(&view_counts, 0.5),
        percentile(&view_counts, 0.99),
        view_counts.last().copied().unwrap_or(0)
    );
    if args.set_changes > 0 {
        eprintln!(
            "set changes: {epochs} epochs reached in all; longest commit gap across a change {worst_gap_change} views, within an epoch (after the heal) {worst_gap_epoch} views"
        );
    }
    println!(
        "seeds: {}, safety violations: {v}, double signs: {d}, liveness failures: {l}, commits: {commits}",
        seeds.len()
    );
    if v + d + l == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `--snapshots`: the snapshot catch-up scenarios.
fn snapshots(args: &Args, seeds: &[u64]) -> ExitCode {
    let started = Instant::now();
    let (mut failed, mut installs, mut laggard, mut bad, mut avoided, mut resumed) =
        (0usize, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut last_progress = Instant::now();
    for (i, &seed) in seeds.iter().enumerate() {
        let o = if args.seed.is_some() {
            let (mut p, plan, setup) = snapshot_batch::params(seed, args.plant_unverified);
            p.trace = true;
            let mut o = snapshot_batch::run_params(p, plan);
            for line in &o.report.trace {
                println!("{line}");
            }
            o.setup = setup;
            o
        } else {
            snapshot_batch::run_seed(seed, args.plant_unverified)
        };
        let r = &o.report;
        installs += u64::from(o.joiner_installed);
        laggard += u64::from(r.snapshot_installs.iter().any(|(n, _, _)| *n == snapshot_batch::LAGGARD));
        bad += r.bad_snapshot_answers.values().sum::<u64>();
        avoided += r.avoided_snapshot_servers;
        resumed += r.staged_at_restart;
        let agreement = r.agreement().err();
        if !r.ok() || agreement.is_some() {
            failed += 1;
            for line in r
                .safety_violations
                .iter()
                .chain(&r.double_signs)
                .chain(&r.liveness_failures)
                .chain(&r.invariant_violations)
                .chain(agreement.iter())
            {
                eprintln!("FAIL {line}");
            }
            eprintln!("setup: {}", o.setup);
            eprintln!(
                "replay: cargo run --release -p hotstuff-tests --bin simulate -- --snapshots{} --seed {seed}",
                if args.plant_unverified { " --plant-unverified" } else { "" }
            );
        }
        if last_progress.elapsed().as_secs() >= 5 {
            last_progress = Instant::now();
            eprintln!("progress: {}/{} seeds, {:.0} s", i + 1, seeds.len(), started.elapsed().as_secs_f64());
        }
    }
    println!(
        "snapshot seeds: {}, failed: {failed}, the late listener installed a snapshot in {installs}, the lagging validator in {laggard}, {bad} bad snapshot answers, {avoided} servers avoided, {resumed} restarts resumed a staged fetch, {:.1} s",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
