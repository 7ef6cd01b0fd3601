//! Client load on the kv app for a cluster in one process: the harness behind the
//! `kv_cluster` examples of this crate and of `hotstuff-driver-tokio` (so both measure the
//! same way). It keeps up to `window` transactions waiting in each node's [`Mempool`], prints
//! a progress line per second, lets everything submitted commit, checks that every replica
//! holds the same app state and prints a summary table.

use crate::error::StoreError;
use crate::generate_key;
use crate::kv::{hex, tx_count, KvApp, LocalForwarder, Mempool, Tx, TX_COUNT_KEY};
use crate::node::{NodeBuilder, Reader, Status};
use crate::storage::{Genesis, RedbStore};
use hotstuff_core::{ChainId, Keypair, PublicKey, ValidatorSet};
use std::io::{IsTerminal, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Any error of an example run.
pub type Error = Box<dyn std::error::Error>;

/// Client threads, one per mempool, each keeping up to `window` transactions waiting in its
/// mempool (puts and every tenth a delete, over 5,000 keys per client).
pub struct Clients {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Clients {
    /// Starts one client per mempool.
    #[must_use]
    pub fn start(mempools: &[Mempool], window: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = mempools
            .iter()
            .enumerate()
            .map(|(i, pool)| {
                let (pool, stop) = (pool.clone(), stop.clone());
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
                                Err(_) => break,
                            }
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
            })
            .collect();
        Clients { stop, threads }
    }

    /// Stops and joins the clients.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// The settings of a load run, as command-line flags.
#[cfg(feature = "cli")]
#[derive(Clone, Debug, clap::Args)]
pub struct LoadArgs {
    /// How long to drive client load, in seconds.
    #[arg(long, default_value_t = 15)]
    pub seconds: u64,
    /// Number of validators.
    #[arg(long, default_value_t = 4)]
    pub validators: usize,
    /// Transactions a client keeps waiting per node (more: higher throughput and latency).
    #[arg(long, default_value_t = 2000)]
    pub window: usize,
    /// Most transactions per block.
    #[arg(long, default_value_t = 2000)]
    pub block_txs: usize,
    /// Keep each node's transactions for its own turn to lead instead of forwarding them to
    /// the upcoming leader (the behaviour before forwarding, for comparison).
    #[arg(long)]
    pub no_forward: bool,
    /// Run clients on the first this many nodes only (0: on every node), to see where
    /// transactions submitted to one node commit.
    #[arg(long, default_value_t = 0)]
    pub client_nodes: usize,
}

/// Builders for a cluster of `n` kv validators in one process: fresh keys, redb stores under
/// `dir`, listeners on loopback ports, every other validator as a peer. Returns the builders
/// and the validators' mempools (of capacity `window`), in the same order. The mempools
/// forward to each other ([`crate::kv::LocalForwarder`]); [`disconnect_forwarding`] undoes it.
pub fn local_cluster(
    dir: &Path,
    n: usize,
    window: usize,
    block_txs: usize,
) -> Result<(Vec<NodeBuilder<KvApp>>, Vec<Mempool>), Error> {
    let keys: Vec<Keypair> = (0..n).map(|_| generate_key()).collect::<Result<_, _>>()?;
    let publics: Vec<_> = keys.iter().map(Keypair::public).collect();
    let genesis = Genesis::new(ChainId(1), ValidatorSet::new(publics.iter().map(|k| (*k, 1)))?);
    let listeners: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    let addrs: Vec<_> = listeners.iter().map(TcpListener::local_addr).collect::<Result<_, _>>()?;
    println!("{n} validators on {addrs:?}, stores in {}", dir.display());
    let mempools: Vec<Mempool> = (0..n).map(|_| Mempool::new(window)).collect();
    LocalForwarder::connect(publics.iter().copied().zip(mempools.iter().cloned()));
    let mut builders = Vec::new();
    for ((i, listener), key) in listeners.into_iter().enumerate().zip(keys) {
        let store = RedbStore::open(dir.join(format!("node{i}.redb")))?;
        let app = KvApp::new(mempools[i].clone(), block_txs);
        let peers = (0..n).filter(|j| *j != i).map(|j| (publics[j], Some(addrs[j])));
        builders.push(NodeBuilder::new(key, genesis.clone(), app, store).listener(listener).peers(peers));
    }
    Ok((builders, mempools))
}

/// Keeps every mempool's transactions for its own node (no forwarding).
pub fn disconnect_forwarding(mempools: &[Mempool]) {
    for pool in mempools {
        pool.clear_forwarder();
    }
}

/// Exits the process the way the examples do: 0 if the replicas agreed, 1 if not, 2 on error.
pub fn exit(result: Result<bool, Error>) -> ! {
    match result {
        Ok(true) => std::process::exit(0),
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}

/// A running replica as the harness sees it.
pub struct Replica {
    /// Its key.
    pub id: PublicKey,
    /// Its committed state.
    pub reader: Reader,
    /// Its progress.
    pub status: Box<dyn Fn() -> Status>,
}

/// What a load run measured.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// How long load was applied.
    pub load_time: Duration,
    /// Transactions committed (counted at their proposers).
    pub committed: u64,
    /// Submit-to-commit latencies at the proposer, sorted.
    pub latencies: Vec<Duration>,
    /// Whether every replica ended with the same app state.
    pub agreed: bool,
}

impl Report {
    /// Committed transactions per second of load.
    #[must_use]
    pub fn tx_per_sec(&self) -> f64 {
        self.committed as f64 / self.load_time.as_secs_f64().max(1e-9)
    }

    /// The latency at quantile `p` (0..=1), in milliseconds.
    #[must_use]
    pub fn latency_ms(&self, p: f64) -> f64 {
        percentile(&self.latencies, p)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Drives load through `mempools` (one per replica, same order) for `seconds`, then waits for
/// it to commit and compares the replicas. Prints progress and the summary table.
pub fn run(
    replicas: &[Replica],
    mempools: &[Mempool],
    seconds: u64,
    window: usize,
) -> Result<Report, StoreError> {
    run_with_clients_on(replicas, mempools, seconds, window, mempools.len())
}

/// Like [`run`] with clients on the first `client_nodes` nodes only (all of them if 0).
pub fn run_with_clients_on(
    replicas: &[Replica],
    mempools: &[Mempool],
    seconds: u64,
    window: usize,
    client_nodes: usize,
) -> Result<Report, StoreError> {
    let k = if client_nodes == 0 { mempools.len() } else { client_nodes.min(mempools.len()) };
    let clients = Clients::start(&mempools[..k], window);
    let tty = std::io::stdout().is_terminal();
    let start = Instant::now();
    let mut report = Report::default();
    let mut last = (Instant::now(), 0u64);
    let collect = |all: &mut Vec<Duration>| -> (u64, Vec<Duration>) {
        let mut committed = 0;
        let mut recent = Vec::new();
        for p in mempools {
            let s = p.take_stats();
            committed += s.committed;
            recent.extend(s.latencies);
        }
        all.extend(recent.iter().copied());
        (committed, recent)
    };
    while start.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_secs(1));
        let (committed, mut recent) = collect(&mut report.latencies);
        recent.sort();
        let now = Instant::now();
        let tps = (committed - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
        last = (now, committed);
        report.committed = committed;
        let height = replicas.iter().map(|r| (r.status)().committed.0).min().unwrap_or(0);
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
    report.load_time = start.elapsed();
    if tty {
        println!();
    }
    clients.stop();

    // Let everything submitted commit, then compare the replicas' app states.
    let drain_start = Instant::now();
    while mempools.iter().any(|p| p.take_stats().pending > 0)
        && drain_start.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (committed, _) = collect(&mut report.latencies);
    report.committed = report.committed.max(committed);
    let mut rows = Vec::new();
    let check_start = Instant::now();
    while check_start.elapsed() < Duration::from_secs(15) {
        rows = replicas
            .iter()
            .map(|r| {
                let (tip, digest) = r.reader.app_state_digest()?;
                let txs = tx_count(r.reader.get(TX_COUNT_KEY)?.as_deref());
                Ok((r.id, tip.height.0, (r.status)().view.0, txs, digest))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        if rows.windows(2).all(|w| w[0].3 == w[1].3 && w[0].4 == w[1].4) {
            report.agreed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    report.latencies.sort();
    println!();
    println!("| replica      | height | view   | committed txs | app state digest |");
    println!("|--------------|--------|--------|---------------|------------------|");
    for (id, height, view, txs, digest) in &rows {
        println!("| {id:<12} | {height:>6} | {view:>6} | {txs:>13} | {:<16} |", &hex(digest)[..16]);
    }
    println!();
    println!(
        "load:        {:.1} s, {} validators, durable redb stores (fsync per write batch)",
        report.load_time.as_secs_f64(),
        replicas.len()
    );
    println!("committed:   {} transactions, {:.0} tx/s", report.committed, report.tx_per_sec());
    println!(
        "latency:     p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms (submit to commit at the proposer)",
        report.latency_ms(0.5),
        report.latency_ms(0.9),
        report.latency_ms(0.99),
        report.latency_ms(1.0)
    );
    Ok(report)
}

/// Prints the last lines of a run: how long the slowest shutdown took and the verdict.
pub fn print_verdict(report: &Report, replicas: usize, slowest_shutdown: Duration) {
    println!(
        "shutdown:    every node stopped and joined, slowest in {:.1} ms",
        slowest_shutdown.as_secs_f64() * 1000.0
    );
    if report.agreed {
        println!("check:       OK, all {replicas} replicas hold the same app state");
    } else {
        println!("check:       FAILED, the replicas' app states differ");
    }
}
