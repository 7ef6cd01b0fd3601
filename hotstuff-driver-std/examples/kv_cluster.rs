//! Four validators of the replicated key-value store on loopback, each with a durable redb
//! store in a temp dir, under client load for a bounded time. Prints a progress line per
//! second, a summary table, and checks that every replica holds the same app state (exit code
//! 1 if not).
//!
//! `cargo run --release -p hotstuff-driver-std --example kv_cluster -- --seconds 15`

use clap::Parser;
use hotstuff_core::{ChainId, Keypair, ValidatorSet};
use hotstuff_driver_std::kv::{hex, tx_count, KvApp, Mempool, SubmitError, Tx, TX_COUNT_KEY};
use hotstuff_driver_std::{generate_key, Genesis, Node, NodeBuilder, RedbStore};
use std::io::{IsTerminal, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Run a 4-validator replicated key-value store on loopback under client load")]
struct Args {
    /// How long to drive client load, in seconds.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    /// Number of validators.
    #[arg(long, default_value_t = 4)]
    validators: usize,
    /// Transactions a client keeps waiting per node (more: higher throughput and latency).
    #[arg(long, default_value_t = 2000)]
    window: usize,
    /// Most transactions per block.
    #[arg(long, default_value_t = 2000)]
    block_txs: usize,
}

fn main() {
    let args = Args::parse();
    tracing_subscriber::fmt().with_max_level(tracing::Level::WARN).with_target(false).init();
    match run(&args) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn run(args: &Args) -> Result<bool, Box<dyn std::error::Error>> {
    let n = args.validators.max(1);
    let dir = tempfile::tempdir()?;
    let keys: Vec<Keypair> = (0..n).map(|_| generate_key()).collect::<Result<_, _>>()?;
    let publics: Vec<_> = keys.iter().map(Keypair::public).collect();
    let genesis = Genesis::new(ChainId(1), ValidatorSet::new(publics.iter().map(|k| (*k, 1)))?);
    let listeners: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    let addrs: Vec<_> = listeners.iter().map(TcpListener::local_addr).collect::<Result<_, _>>()?;
    let mempools: Vec<Mempool> = (0..n).map(|_| Mempool::new(args.window)).collect();
    let mut nodes: Vec<Node> = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let store = RedbStore::open(dir.path().join(format!("node{i}.redb")))?;
        let app = KvApp::new(mempools[i].clone(), args.block_txs);
        let peers = (0..n).filter(|j| *j != i).map(|j| (publics[j], Some(addrs[j])));
        let node = NodeBuilder::new(Keypair::from_secret(&keys[i].secret()), genesis.clone(), app, store)
            .listener(listener)
            .peers(peers)
            .start()?;
        nodes.push(node);
    }
    println!("{n} validators on {addrs:?}, stores in {}", dir.path().display());

    // Clients: each keeps up to `window` transactions waiting at its node.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = mempools
        .iter()
        .enumerate()
        .map(|(i, pool)| {
            let (pool, stop, window) = (pool.clone(), stop.clone(), args.window);
            std::thread::spawn(move || {
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..window {
                        let key = format!("c{i}-{}", seq % 5000).into_bytes();
                        let tx = if seq % 10 == 9 {
                            Tx::Delete { key }
                        } else {
                            Tx::Put { key, value: format!("{seq}").into_bytes() }
                        };
                        match pool.submit(tx) {
                            Ok(()) => seq += 1,
                            Err(SubmitError::Full | SubmitError::Invalid) => break,
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();

    let tty = std::io::stdout().is_terminal();
    let start = Instant::now();
    let mut all_latencies: Vec<Duration> = Vec::new();
    let mut committed_total = 0u64;
    let mut last = (Instant::now(), 0u64);
    let collect = |all: &mut Vec<Duration>| -> (u64, Vec<Duration>) {
        let mut committed = 0;
        let mut recent = Vec::new();
        for p in &mempools {
            let s = p.take_stats();
            committed += s.committed;
            recent.extend(s.latencies);
        }
        all.extend(recent.iter().copied());
        (committed, recent)
    };
    while start.elapsed() < Duration::from_secs(args.seconds) {
        std::thread::sleep(Duration::from_secs(1));
        let (committed, mut recent) = collect(&mut all_latencies);
        recent.sort();
        let now = Instant::now();
        let tps = (committed - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
        last = (now, committed);
        committed_total = committed;
        let height = nodes.iter().map(|n| n.status().committed.0).min().unwrap_or(0);
        let line = format!(
            "t={:>3}s height={height:>6} tx/s={tps:>8.0} latency p50={:>6.1}ms p99={:>6.1}ms committed={committed}",
            start.elapsed().as_secs(),
            percentile(&recent, 0.5),
            percentile(&recent, 0.99),
        );
        if tty {
            print!("\r{line}   ");
            let _ = std::io::stdout().flush();
        } else {
            println!("{line}");
        }
    }
    let load_time = start.elapsed();
    if tty {
        println!();
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }

    // Let everything submitted commit, then compare the replicas' app states.
    let drain_start = Instant::now();
    while mempools.iter().any(|p| p.take_stats().pending > 0)
        && drain_start.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (committed, _) = collect(&mut all_latencies);
    committed_total = committed_total.max(committed);
    let mut agreed = false;
    let mut rows = Vec::new();
    let check_start = Instant::now();
    while check_start.elapsed() < Duration::from_secs(15) {
        rows = nodes
            .iter()
            .map(|node| {
                let r = node.reader();
                let (tip, digest) = r.app_state_digest()?;
                let txs = tx_count(r.get(TX_COUNT_KEY)?.as_deref());
                Ok((node.id(), tip.height.0, node.status().view.0, txs, digest))
            })
            .collect::<Result<Vec<_>, hotstuff_driver_std::StoreError>>()?;
        if rows.windows(2).all(|w| w[0].3 == w[1].3 && w[0].4 == w[1].4) {
            agreed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    all_latencies.sort();
    println!();
    println!("| replica      | height | view   | committed txs | app state digest |");
    println!("|--------------|--------|--------|---------------|------------------|");
    for (id, height, view, txs, digest) in &rows {
        println!("| {id:<12} | {height:>6} | {view:>6} | {txs:>13} | {:<16} |", &hex(digest)[..16]);
    }
    println!();
    println!(
        "load:        {:.1} s, {n} validators, durable redb stores (fsync per write batch)",
        load_time.as_secs_f64()
    );
    println!(
        "committed:   {committed_total} transactions, {:.0} tx/s",
        committed_total as f64 / load_time.as_secs_f64()
    );
    println!(
        "latency:     p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms (submit to commit at the proposer)",
        percentile(&all_latencies, 0.5),
        percentile(&all_latencies, 0.9),
        percentile(&all_latencies, 0.99),
        percentile(&all_latencies, 1.0)
    );
    let mut slowest = Duration::ZERO;
    for node in nodes {
        slowest = slowest.max(node.shutdown()?);
    }
    println!(
        "shutdown:    every node stopped and joined, slowest in {:.1} ms",
        slowest.as_secs_f64() * 1000.0
    );
    if agreed {
        println!("check:       OK, all {n} replicas hold the same app state");
    } else {
        println!("check:       FAILED, the replicas' app states differ");
    }
    Ok(agreed)
}
