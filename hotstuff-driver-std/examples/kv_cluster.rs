//! Four validators of the replicated key-value store on loopback, each with a durable redb
//! store in a temp dir, under client load for a bounded time. Prints a progress line per
//! second, a summary table, and checks that every replica holds the same app state (exit code
//! 1 if not). The harness is [`hotstuff_driver_std::load`], shared with the tokio driver's
//! `kv_cluster_tokio` example.
//!
//! `cargo run --release -p hotstuff-driver-std --example kv_cluster -- --seconds 15`

use clap::Parser;
use hotstuff_driver_std::load::{self, LoadArgs};
use hotstuff_driver_std::Node;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Run a 4-validator replicated key-value store on loopback under client load")]
struct Args {
    #[command(flatten)]
    load: LoadArgs,
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
    load::exit(run(&args.load));
}

fn run(args: &LoadArgs) -> Result<bool, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let (builders, mempools) =
        load::local_cluster(dir.path(), args.validators.max(1), args.window, args.block_txs)?;
    let nodes: Vec<Node> = builders.into_iter().map(|b| b.start()).collect::<Result<_, _>>()?;
    if args.no_forward {
        load::disconnect_forwarding(&mempools);
    }
    for (node, pool) in nodes.iter().zip(&mempools) {
        let waker = node.waker();
        pool.set_waker(move || waker.wake());
    }
    println!("driver: std threads");
    let replicas: Vec<load::Replica> = nodes
        .iter()
        .map(|node| load::Replica {
            id: node.id(),
            reader: node.reader(),
            status: Box::new(node.status_handle()),
        })
        .collect();
    let report =
        load::run_with_clients_on(&replicas, &mempools, args.seconds, args.window, args.client_nodes)?;
    let mut slowest = Duration::ZERO;
    for node in nodes {
        slowest = slowest.max(node.shutdown()?);
    }
    load::print_verdict(&report, replicas.len(), slowest);
    Ok(report.agreed)
}
