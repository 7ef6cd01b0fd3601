//! A 4-validator tokio cluster on loopback commits client transactions and every replica ends
//! with the same app state at the same height.

use crate::common;

use common::{Cluster, Kind};
use hotstuff_driver_tokio::kv::state_key;

#[test]
fn four_tokio_validators_commit_and_agree() {
    let c = Cluster::start(&[Kind::Tokio; 4], 0);
    let took = c.wait_height(5);
    println!("height 5 in {took:?}");
    c.submit("key", 400);
    let took = c.wait_txs(400);
    println!("400 transactions committed on all replicas in {took:?}");
    for i in 0..4 {
        let v = c.node(i).reader().get(&state_key(b"key399")).unwrap();
        assert_eq!(v.as_deref(), Some(&b"v399"[..]), "node {i}");
        assert!(c.node(i).status().running);
    }
    let h = c.wait_agreement();
    println!("all replicas hold the same app state at height {h}");
    assert!(h >= 5);
    // The tokio driver records the same metrics as the std driver.
    let scrape = c.metrics[0].encode();
    let sample = |name: &str| -> f64 {
        let line =
            scrape.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}"));
        line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap()
    };
    assert!(sample("hotstuff_committed_height") >= 5.0, "{scrape}");
    assert!(sample("hotstuff_commit_latency_seconds_count") > 0.0, "{scrape}");
    assert!(sample("hotstuff_store_write_latency_seconds_count") > 0.0, "{scrape}");
    assert!(sample("hotstuff_net_bytes_total{direction=\"in\"}") > 0.0, "{scrape}");
    assert!(sample("hotstuff_net_bytes_total{direction=\"out\"}") > 0.0, "{scrape}");
}
