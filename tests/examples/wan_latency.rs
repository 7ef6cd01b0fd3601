//! Submit-to-commit latency with wide-area delays: 4 std validators (kv app, redb files), every
//! link through the fault-injecting proxy ([`hotstuff_tests::proxy`]) with a one-way latency and
//! seeded jitter, under a moderate load spread over the four mempools. A transaction's latency
//! runs from its submission to a node's mempool to that node's commit of the block holding it.
//!
//! `cargo run --release -p hotstuff-tests --example wan_latency -- [LATENCY_MS] [JITTER_MS] [TX_PER_S] [SECONDS] [FORWARD] [BROADCAST_VOTES]`
//! (defaults 50, 10, 200, 20, 1, 0: transactions forwarded to the upcoming leader over the
//! network, as `hotstuff-node` does; 0: each node proposes only what was submitted to it;
//! `BROADCAST_VOTES` 1: every validator sends its votes to every validator and forms the QCs
//! itself, `NodeBuilder::broadcast_votes`).

use hotstuff_core::{ChainId, Keypair, ValidatorSet};
use hotstuff_driver_std::kv::receipt::wait_for_commit;
use hotstuff_driver_std::kv::{tx_id, KvApp, Mempool, Receipt, Tx};
use hotstuff_driver_std::{Event, Genesis, Node, NodeBuilder, RedbStore};
use hotstuff_tests::proxy::Proxy;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Commits = Arc<Mutex<Vec<(u64, Instant)>>>;

/// Per `(node, view)`: when the node entered the view, proposed in it (as its leader), received
/// its proposal, voted in it, and formed its QC (the leader of the next view, or every node with
/// vote broadcast).
#[derive(Clone, Copy, Default)]
struct Stamps {
    entered: Option<Instant>,
    proposed: Option<Instant>,
    received: Option<Instant>,
    voted: Option<Instant>,
    qc: Option<Instant>,
}
type Trace = Arc<Mutex<std::collections::BTreeMap<(usize, u64), Stamps>>>;

/// The mean of `b - a` in ms over the pairs where both are present.
fn mean_ms(pairs: impl Iterator<Item = (Option<Instant>, Option<Instant>)>) -> String {
    let d: Vec<f64> =
        pairs.filter_map(|(a, b)| Some(b?.checked_duration_since(a?)?.as_secs_f64() * 1e3)).collect();
    if d.is_empty() {
        return "-".into();
    }
    format!("{:.1} ms", d.iter().sum::<f64>() / d.len() as f64)
}

fn main() {
    let arg =
        |i: usize, default: u64| std::env::args().nth(i).map_or(default, |a| a.parse().expect("a number"));
    let (latency, jitter, rate, seconds) = (arg(1, 50), arg(2, 10), arg(3, 200), arg(4, 20));
    // Forwarding to the upcoming leader over the network (as `hotstuff-node` does); `0` turns
    // it off: each node then proposes only its own clients' transactions.
    let forward = arg(5, 1) == 1;
    // Vote broadcast: each node forms the QCs itself, one one-way delay sooner.
    let broadcast_votes = arg(6, 0) == 1;
    let mut forwarders = Vec::new();
    let n = 4;
    let keys: Vec<Keypair> = (0..n).map(|i| Keypair::from_secret(&[i as u8 + 31; 32])).collect();
    let genesis =
        Genesis::new(ChainId(505), ValidatorSet::new(keys.iter().map(|k| (k.public(), 1))).unwrap());
    let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let targets: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let proxy = Proxy::start(&targets, 7).unwrap();
    proxy.set_latency_all(Duration::from_millis(latency), Duration::from_millis(jitter));
    let dir = std::env::temp_dir().join(format!("hotstuff-wan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut mempools = Vec::new();
    let mut commits: Vec<Commits> = Vec::new();
    let trace: Trace = Arc::default();
    // When each height was proposed (by its leader): splits a transaction's latency into the
    // wait for a block and the consensus on it.
    let proposed_at: Commits = Arc::default();
    let nodes: Vec<Node> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let pool = Mempool::new(100_000);
            mempools.push(pool.clone());
            let seen: Commits = Arc::default();
            commits.push(seen.clone());
            let stamps = trace.clone();
            let proposals = proposed_at.clone();
            let store = RedbStore::open(dir.join(format!("node{i}.redb"))).unwrap();
            let mut app = KvApp::new(pool, 2000);
            if forward {
                forwarders.push(app.forward_to_peers(keys[i].public()));
            }
            let mut b =
                NodeBuilder::new(Keypair::from_secret(&keys[i].secret()), genesis.clone(), app, store)
                    .base_timeout(Duration::from_millis(1000))
                    .broadcast_votes(broadcast_votes)
                    .listener(l)
                    .on_event(move |e| {
                        use hotstuff_core::Event as E;
                        let Event::Core(e) = e else { return };
                        let now = Some(Instant::now());
                        let mut t = stamps.lock().unwrap();
                        match e {
                            E::Committed { height, .. } => {
                                seen.lock().unwrap().push((height.0, Instant::now()))
                            }
                            E::ViewEntered { view, .. } => t.entry((i, view.0)).or_default().entered = now,
                            E::Proposed { view, height, .. } => {
                                proposals.lock().unwrap().push((height.0, Instant::now()));
                                t.entry((i, view.0)).or_default().proposed = now
                            }
                            E::ReceivedProposal { view, .. } => {
                                t.entry((i, view.0)).or_default().received = now
                            }
                            E::Voted { view, .. } => t.entry((i, view.0)).or_default().voted = now,
                            E::QcFormed { view, .. } => t.entry((i, view.0)).or_default().qc = now,
                            _ => {}
                        }
                    });
            for j in (0..n).filter(|j| *j != i) {
                b = b.peer(keys[j].public(), Some(proxy.addr(i, j)));
            }
            b.start().unwrap()
        })
        .collect();
    for (i, node) in nodes.iter().enumerate() {
        let waker = node.waker();
        mempools[i].set_waker(move || waker.wake());
        if let Some(f) = forwarders.get(i) {
            let waker = node.waker();
            f.set_waker(move || waker.wake());
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    println!(
        "one-way latency {latency} ms ± {jitter} ms, {rate} tx/s for {seconds} s, forwarding {forward}, \
         vote broadcast {broadcast_votes}"
    );
    // Submit at a steady rate, round robin over the nodes; each transaction is followed by a
    // thread of its own that waits for its commit at that node.
    let start = Instant::now();
    let mut waiters = Vec::new();
    let mut t = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        let due = start + Duration::from_secs_f64(t as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let i = (t % n as u64) as usize;
        let tx = Tx::Put { key: format!("k{t}").into_bytes(), value: b"v".to_vec() };
        let id = tx_id(&tx);
        let reader = nodes[i].reader();
        let since = reader.tip().unwrap().height.0;
        let submitted = Instant::now();
        mempools[i].submit(tx).unwrap();
        let seen = commits[i].clone();
        waiters.push(std::thread::spawn(move || {
            match wait_for_commit(&reader, &id, since, Duration::from_secs(30)) {
                Ok(Receipt::Committed(h)) => {
                    let at = seen.lock().unwrap().iter().find(|(ch, _)| *ch == h).map(|(_, at)| *at);
                    at.map(|at| (submitted, h, at.saturating_duration_since(submitted)))
                }
                _ => None,
            }
        }));
        t += 1;
    }
    let done: Vec<(Instant, u64, Duration)> = waiters.into_iter().filter_map(|w| w.join().unwrap()).collect();
    let mut lat: Vec<Duration> = done.iter().map(|d| d.2).collect();
    // Submit to proposed (at the leader of the block that holds it), and proposed to committed.
    let (mut waits, mut consensus) = (Vec::new(), Vec::new());
    {
        let proposed = proposed_at.lock().unwrap();
        for (submitted, h, total) in &done {
            // The last proposal of that height (a height re-proposed after a failed view).
            if let Some((_, at)) = proposed.iter().rev().find(|(ph, _)| ph == h) {
                let wait = at.saturating_duration_since(*submitted);
                waits.push(wait);
                consensus.push(total.saturating_sub(wait));
            }
        }
    }
    waits.sort();
    consensus.sort();
    lat.sort();
    let q = |p: f64| lat.get(((lat.len() as f64 - 1.0) * p) as usize).copied().unwrap_or_default();
    println!(
        "{} of {t} committed: submit to commit p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        lat.len(),
        q(0.5),
        q(0.9),
        q(0.99),
        q(1.0)
    );
    let pct = |v: &[Duration], p: f64| {
        v.get(((v.len() as f64 - 1.0) * p) as usize).copied().unwrap_or_default().as_millis()
    };
    println!(
        "split: submit to proposed p10/p50/p90 {}/{}/{} ms, proposed to committed p10/p50/p90 {}/{}/{} ms",
        pct(&waits, 0.1),
        pct(&waits, 0.5),
        pct(&waits, 0.9),
        pct(&consensus, 0.1),
        pct(&consensus, 0.5),
        pct(&consensus, 0.9),
    );
    // Where a view's time goes, averaged over the nodes and the views of the run.
    {
        let t = trace.lock().unwrap();
        let st = |n: usize, v: u64| t.get(&(n, v)).copied().unwrap_or_default();
        // The views of the loaded run only (the idle chain before it waits out idle delays).
        let loaded = start + Duration::from_secs(1);
        let keys: Vec<(usize, u64)> =
            t.iter().filter(|(_, s)| s.entered.is_some_and(|e| e >= loaded)).map(|(k, _)| *k).collect();
        let proposer = |v: u64| (0..n).find(|m| st(*m, v).proposed.is_some());
        println!(
            "per view (means): view {} | leader: entered to proposed {} | proposed (leader) to received {} | \
             received to voted {} | voted to QC formed here {} | QC formed to next view entered {}",
            mean_ms(keys.iter().map(|&(m, v)| (st(m, v).entered, st(m, v + 1).entered))),
            mean_ms(keys.iter().map(|&(m, v)| (st(m, v).entered, st(m, v).proposed))),
            mean_ms(keys.iter().filter_map(|&(m, v)| {
                let p = proposer(v)?;
                (p != m).then(|| (st(p, v).proposed, st(m, v).received))
            })),
            mean_ms(keys.iter().map(|&(m, v)| (st(m, v).received, st(m, v).voted))),
            mean_ms(keys.iter().map(|&(m, v)| (st(m, v).voted, st(m, v).qc))),
            mean_ms(keys.iter().map(|&(m, v)| (st(m, v).qc, st(m, v + 1).entered))),
        );
    }
    for node in nodes {
        node.shutdown().unwrap();
    }
    drop(proxy);
    let _ = std::fs::remove_dir_all(&dir);
}
