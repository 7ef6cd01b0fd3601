//! How fast a node's store grows: four validators of the kv app on loopback, each with a redb
//! store file in a temp dir, first idle (empty blocks at the idle delay), then under client
//! load (full blocks). Prints for each phase the committed blocks, the mean store file size and
//! its growth per committed block and per hour, and the encoded size of the committed entries
//! (block, certificate, epoch proof: what the store keeps per height, before redb's own
//! overhead). redb grows its file in regions, so file growth is lumpy over short phases.
//!
//! `cargo run --release -p hotstuff-driver-std --example store_growth -- --idle-seconds 60 --load-seconds 30`

use clap::Parser;
use hotstuff_driver_std::load::{self, Clients};
use hotstuff_driver_std::{Node, RetainBlocks};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Measure store growth per committed block, idle and loaded")]
struct Args {
    /// Seconds of the idle phase (no client).
    #[arg(long, default_value_t = 30)]
    idle_seconds: u64,
    /// Seconds of the loaded phase.
    #[arg(long, default_value_t = 20)]
    load_seconds: u64,
    /// Number of validators.
    #[arg(long, default_value_t = 4)]
    validators: usize,
    /// Most transactions per block (and each client's window).
    #[arg(long, default_value_t = 2000)]
    block_txs: usize,
    /// The idle delay before an empty block, in milliseconds (0 accelerates an idle chain).
    #[arg(long, default_value_t = 100)]
    idle_delay_ms: u64,
    /// Committed blocks each store keeps (`archive` keeps all).
    #[arg(long, default_value = "archive")]
    retain: RetainBlocks,
}

/// One observation: the lowest committed height and the mean store file size.
#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    height: u64,
    bytes: u64,
}

fn sample(nodes: &[Node], paths: &[PathBuf]) -> Result<Sample, load::Error> {
    let height = nodes.iter().map(|n| n.status().committed.0).min().unwrap_or(0);
    let bytes = paths.iter().map(|p| file_size(p)).sum::<u64>() / paths.len().max(1) as u64;
    Ok(Sample { at: Instant::now(), height, bytes })
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The mean encoded size of node 0's committed entries in `from..to`.
fn entry_bytes(node: &Node, from: u64, to: u64) -> Result<f64, load::Error> {
    let reader = node.reader();
    let (mut total, mut n) = (0usize, 0usize);
    for h in from..to {
        if let Some(entry) = reader.block(hotstuff_core::Height(h))? {
            total += borsh::to_vec(&entry).map_or(0, |b| b.len());
            n += 1;
        }
    }
    Ok(total as f64 / n.max(1) as f64)
}

fn report(phase: &str, a: Sample, b: Sample, txs: Option<u64>) {
    let blocks = b.height.saturating_sub(a.height);
    let secs = b.at.duration_since(a.at).as_secs_f64();
    let grown = b.bytes as f64 - a.bytes as f64;
    let per_block = grown / (blocks.max(1) as f64);
    let per_hour = grown / secs.max(1e-9) * 3600.0;
    print!(
        "{phase:<7} {secs:>6.1} s  {blocks:>6} blocks ({:>6.1}/s)  store {:>10} -> {:>10} B  {per_block:>9.0} B/block  {:>8.1} MB/hour",
        blocks as f64 / secs.max(1e-9),
        a.bytes,
        b.bytes,
        per_hour / 1e6,
    );
    if let Some(txs) = txs {
        print!("  {txs} txs ({:.0}/block)", txs as f64 / blocks.max(1) as f64);
    }
    println!();
}

fn run(args: &Args) -> Result<(), load::Error> {
    let dir = tempfile::tempdir()?;
    let n = args.validators.max(1);
    let (builders, mempools) = load::local_cluster(dir.path(), n, args.block_txs, args.block_txs)?;
    let paths: Vec<PathBuf> = (0..n).map(|i| dir.path().join(format!("node{i}.redb"))).collect();
    let nodes: Vec<Node> = builders
        .into_iter()
        .map(|b| {
            b.idle_block_delay(Duration::from_millis(args.idle_delay_ms)).retain_blocks(args.retain).start()
        })
        .collect::<Result<_, _>>()?;
    println!("retention: {}", args.retain);
    std::thread::sleep(Duration::from_secs(2));
    let start = sample(&nodes, &paths)?;
    let mut last = start;
    let mut peak = start.bytes;
    while last.at.duration_since(start.at) < Duration::from_secs(args.idle_seconds) {
        std::thread::sleep(Duration::from_secs(1));
        last = sample(&nodes, &paths)?;
        peak = peak.max(last.bytes);
    }
    report("idle", start, last, None);
    println!("idle    entry {:.0} B/block (encoded)", entry_bytes(&nodes[0], start.height, last.height)?);

    // The mempools count committed transactions since they started (at their proposers).
    let committed = || mempools.iter().map(|p| p.take_stats().committed).sum::<u64>();
    let before = committed();
    let clients = Clients::start(&mempools, args.block_txs);
    let load_start = sample(&nodes, &paths)?;
    let mut now = load_start;
    while now.at.duration_since(load_start.at) < Duration::from_secs(args.load_seconds) {
        std::thread::sleep(Duration::from_secs(1));
        now = sample(&nodes, &paths)?;
        peak = peak.max(now.bytes);
    }
    clients.stop();
    report("loaded", load_start, now, Some(committed() - before));
    println!("loaded  entry {:.0} B/block (encoded)", entry_bytes(&nodes[0], load_start.height, now.height)?);
    let retained = nodes[0].reader().block(hotstuff_core::Height(1))?.is_some();
    println!("height 1 still stored: {retained}");
    println!("peak mean store size: {peak} B");
    for node in nodes {
        node.shutdown()?;
    }
    Ok(())
}

fn main() {
    let args = Args::parse();
    tracing_subscriber::fmt().with_max_level(tracing::Level::WARN).with_target(false).init();
    if let Err(e) = run(&args) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}
