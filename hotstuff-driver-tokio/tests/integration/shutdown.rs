//! Shutdown under load: with clients submitting continuously, every node stops in bounded
//! time, and its redb store is closed (it can be opened again at once).

use crate::common;

use common::{Cluster, Kind};
use hotstuff_driver_std::load;
use hotstuff_driver_tokio::RedbStore;
use std::time::Duration;

#[test]
fn nodes_shut_down_promptly_under_load_and_close_their_stores() {
    let mut c = Cluster::start(&[Kind::Tokio; 4], 0);
    c.wait_height(3);
    let clients = load::Clients::start(&c.mempools, 2000);
    // Under load: transactions are committing.
    let start = std::time::Instant::now();
    while c.txs(0) < 2000 {
        assert!(start.elapsed() < common::PATIENCE, "load does not commit: {} txs", c.txs(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("{} transactions committed under load", c.txs(0));
    for i in 0..4 {
        let took = c.stop(i);
        println!("node {i} shut down in {took:?} under load");
        assert!(took < Duration::from_secs(10), "node {i} took {took:?} to shut down");
        let reopened = RedbStore::open(c.store_path(i));
        assert!(reopened.is_ok(), "node {i}'s store is still held after shutdown: {:?}", reopened.err());
    }
    clients.stop();
}
