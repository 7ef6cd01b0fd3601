//! Four validators of the replicated key-value store on loopback, on one tokio runtime, each
//! with a durable redb store in a temp dir, under client load for a bounded time. The harness
//! is `hotstuff_driver_std::load`, the same as the std `kv_cluster` example's, so the two
//! drivers' figures compare directly. Prints a progress line per second, a summary table, and
//! checks that every replica holds the same app state (exit code 1 if not).
//!
//! `cargo run --release -p hotstuff-driver-tokio --example kv_cluster_tokio -- --seconds 15`

use clap::Parser;
use hotstuff_driver_std::load::{self, LoadArgs};
use hotstuff_driver_tokio::Node;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Run a 4-validator replicated key-value store on tokio, on loopback, under client load")]
struct Args {
    #[command(flatten)]
    load: LoadArgs,
    /// Worker threads of the runtime (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
}

fn main() {
    let args = Args::parse();
    // Logs go to stderr, in colour only on a terminal: the summary on stdout stays plain.
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    load::exit(run(&args));
}

fn run(args: &Args) -> Result<bool, Box<dyn std::error::Error>> {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(w) = args.workers {
        rt.worker_threads(w.max(1));
    }
    let rt = rt.enable_all().build()?;
    let dir = tempfile::tempdir()?;
    let a = &args.load;
    let (builders, mempools) = load::local_cluster(dir.path(), a.validators.max(1), a.window, a.block_txs)?;
    let mut nodes = Vec::new();
    for b in builders {
        nodes.push(rt.block_on(Node::start(b))?);
    }
    println!("driver: tokio tasks on {} worker threads", rt.metrics().num_workers());
    let replicas: Vec<load::Replica> = nodes
        .iter()
        .map(|node| load::Replica {
            id: node.id(),
            reader: node.reader(),
            status: Box::new(node.status_handle()),
        })
        .collect();
    let report = load::run(&replicas, &mempools, a.seconds, a.window)?;
    let mut slowest = Duration::ZERO;
    for node in nodes {
        slowest = slowest.max(rt.block_on(node.shutdown())?);
    }
    load::print_verdict(&report, replicas.len(), slowest);
    Ok(report.agreed)
}
