//! Setup (e): the kv reference app as the `kv_cluster` example runs it (4 validators, loopback
//! TCP, a redb file store each, clients on every node keeping `window` transactions waiting,
//! forwarding on), through the same harness (`hotstuff_driver_std::load`). Rate is committed
//! transactions per second; latency is submit-to-commit at the proposer.

use crate::stats::{CpuWindow, Sample};
use hotstuff_driver_std::load;
use hotstuff_driver_std::Node;
use std::time::Duration;

pub fn run(window: usize, block_txs: usize, warmup: Duration, measure: Duration) -> Sample {
    let _ = warmup; // the harness measures from the first client submission
    let dir = std::env::temp_dir().join(format!(
        "hotstuff-bench-kv-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (builders, mempools) = load::local_cluster(&dir, 4, window, block_txs).expect("cluster");
    let nodes: Vec<Node> = builders.into_iter().map(|b| b.start().expect("start")).collect();
    for (node, pool) in nodes.iter().zip(&mempools) {
        let waker = node.waker();
        pool.set_waker(move || waker.wake());
    }
    let replicas: Vec<load::Replica> = nodes
        .iter()
        .map(|node| load::Replica {
            id: node.id(),
            reader: node.reader(),
            status: Box::new(node.status_handle()),
        })
        .collect();
    let cpu = CpuWindow::start();
    let seconds = measure.as_secs().max(1);
    let report = load::run_with_clients_on(&replicas, &mempools, seconds, window, 0).expect("load run");
    let cpu = cpu.pct();
    drop(replicas);
    for node in nodes {
        let _ = node.shutdown();
    }
    let _ = std::fs::remove_dir_all(&dir);
    if !report.agreed {
        eprintln!("kv window {window}: replicas DISAGREE");
    }
    Sample {
        rate: report.tx_per_sec(),
        p50_ms: report.latency_ms(0.5),
        p99_ms: report.latency_ms(0.99),
        cpu_pct: cpu,
    }
}
