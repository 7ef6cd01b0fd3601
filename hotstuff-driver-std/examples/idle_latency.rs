//! The idle back-off and the first transaction after idle: four kv validators on loopback
//! (durable redb stores, transactions forwarded to the upcoming leaders), left idle, then one
//! transaction submitted to one node; then the same under light load. Per run it prints the
//! empty blocks per second while idle and the submit-to-commit latency of the probe
//! transaction (until the node it was submitted to has committed it), with the idle back-off
//! and without it (a fixed `idle_block_delay` of 100 ms, the behaviour before it), runs
//! interleaved, and the medians.
//!
//! `cargo run --release -p hotstuff-driver-std --example idle_latency -- --idle-seconds 30 --rounds 3`

use clap::Parser;
use hotstuff_driver_std::kv::{state_key, Mempool, Tx};
use hotstuff_driver_std::load::{self, Clients};
use hotstuff_driver_std::{Node, Reader};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Empty blocks per second while idle, and the latency of the first transaction after idle")]
struct Args {
    /// Idle time before the probe, in seconds.
    #[arg(long, default_value_t = 30)]
    idle_seconds: u64,
    /// Runs of each mode (interleaved).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Transactions each client keeps waiting during the busy probe (the mempool capacity).
    #[arg(long, default_value_t = 100)]
    busy_window: usize,
}

struct Run {
    idle_blocks_per_s: f64,
    idle_probe: Duration,
    busy_probe: Duration,
}

/// Submits one put to `pool` and waits until `reader` (the same node) has it committed.
fn probe(pool: &Mempool, reader: &Reader, tag: &str) -> Result<Duration, load::Error> {
    let key = format!("probe-{tag}").into_bytes();
    let mut start = Instant::now();
    // Under load the pool may be full: submit as soon as it takes it, timed from then.
    while let Err(e) = pool.submit(Tx::Put { key: key.clone(), value: b"1".to_vec() }) {
        if !e.is_busy() || start.elapsed() > Duration::from_secs(30) {
            return Err(e.into());
        }
        std::thread::sleep(Duration::from_micros(100));
        start = Instant::now();
    }
    let state_key = state_key(&key);
    while reader.get(&state_key)?.is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            return Err("the probe did not commit within 30 s".into());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(start.elapsed())
}

fn run(args: &Args, backoff: bool, round: usize) -> Result<Run, load::Error> {
    let dir = tempfile::tempdir()?;
    let (builders, mempools) = load::local_cluster(dir.path(), 4, args.busy_window, 2_000)?;
    let nodes: Vec<Node> = builders
        .into_iter()
        .map(|b| if backoff { b } else { b.max_idle_block_delay(Duration::from_millis(100)) })
        .map(|b| b.start())
        .collect::<Result<_, _>>()?;
    for (node, pool) in nodes.iter().zip(&mempools) {
        let waker = node.waker();
        pool.set_waker(move || waker.wake());
    }
    let at = round % nodes.len();
    let reader = nodes[at].reader();
    // Let the cluster connect and settle, then measure the idle block rate.
    std::thread::sleep(Duration::from_secs(2));
    let (h0, t0) = (reader.tip()?.height.0, Instant::now());
    std::thread::sleep(Duration::from_secs(args.idle_seconds));
    let idle_blocks_per_s = (reader.tip()?.height.0 - h0) as f64 / t0.elapsed().as_secs_f64();
    let idle_probe = probe(&mempools[at], &reader, &format!("idle-{round}"))?;
    let clients = Clients::start(&mempools, args.busy_window);
    std::thread::sleep(Duration::from_secs(2));
    let busy_probe = probe(&mempools[at], &reader, &format!("busy-{round}"))?;
    clients.stop();
    for node in nodes {
        node.shutdown()?;
    }
    Ok(Run { idle_blocks_per_s, idle_probe, busy_probe })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    let args = Args::parse();
    tracing_subscriber::fmt().with_max_level(tracing::Level::WARN).with_target(false).init();
    let mut runs: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
    for round in 0..args.rounds {
        for (i, backoff) in [true, false].into_iter().enumerate() {
            match run(&args, backoff, round) {
                Ok(r) => {
                    println!(
                        "round {round} back-off {backoff:5}: idle {:.2} blocks/s, first tx after idle {:.1} ms, \
                         tx under load {:.1} ms",
                        r.idle_blocks_per_s,
                        r.idle_probe.as_secs_f64() * 1e3,
                        r.busy_probe.as_secs_f64() * 1e3
                    );
                    runs[i].push(r);
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::exit(2);
                }
            }
        }
    }
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    let summary = |runs: &[Run]| {
        (
            median(runs.iter().map(|r| r.idle_blocks_per_s).collect()),
            median(runs.iter().map(|r| ms(&r.idle_probe)).collect()),
            median(runs.iter().map(|r| ms(&r.busy_probe)).collect()),
        )
    };
    let (b, f) = (summary(&runs[0]), summary(&runs[1]));
    println!("\nmedians of {} runs each ({} s idle):", args.rounds, args.idle_seconds);
    println!("| mode | idle blocks/s | first tx after idle | tx under load | after idle / under load |");
    println!("|---|---|---|---|---|");
    for (name, s) in [("back-off (default)", b), ("fixed 100 ms", f)] {
        println!("| {name} | {:.2} | {:.1} ms | {:.1} ms | {:.2} |", s.0, s.1, s.2, s.1 / s.2);
    }
    println!("idle block rate, back-off / fixed: {:.2}", b.0 / f.0);
}
