//! Wire compatibility: two std nodes and two tokio nodes form one cluster. Every quorum of
//! three holds both kinds, so every commit needs votes across the drivers; with one tokio node
//! stopped, the remaining two std nodes and one tokio node must all take part.

use crate::common;

use common::{key, Cluster, Kind};
use hotstuff_driver_tokio::{Event, NetEvent};

fn connected(c: &Cluster, node: usize, peer: usize) -> bool {
    c.events[node]
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, Event::Net(NetEvent::Connected { peer: p, .. }) if *p == key(peer).public()))
}

#[test]
fn two_std_and_two_tokio_nodes_commit_together() {
    let mut c = Cluster::start(&[Kind::Std, Kind::Tokio, Kind::Std, Kind::Tokio], 0);
    c.wait_height(5);
    c.submit("m", 400);
    let took = c.wait_txs(400);
    println!("400 transactions committed on all four replicas in {took:?}");
    let h = c.wait_agreement();
    println!("mixed cluster agrees at height {h}");
    for (a, b) in [(0, 1), (1, 0), (2, 3), (3, 2), (0, 3), (1, 2)] {
        assert!(connected(&c, a, b), "node {a} has no handshaken connection with node {b}");
    }

    // Without tokio node 3, a commit needs both std nodes and tokio node 1.
    c.stop(3);
    let before = c.min_height();
    c.wait_height(before + 5);
    c.mempools[1]
        .submit(hotstuff_driver_tokio::kv::Tx::Put { key: b"x".to_vec(), value: b"y".to_vec() })
        .unwrap();
    c.wait_txs(401);
    c.restart(3);
    c.wait_txs(401);
    let h = c.wait_agreement();
    println!("after tokio node 3 restarted, all agree at height {h}");
}
