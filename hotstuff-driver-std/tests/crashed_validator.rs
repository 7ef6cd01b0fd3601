//! One of four validators crashes for good under client load: the other three keep most of the
//! chain's transaction rate (issue 11: at least 60% of the healthy rate, in one run).
//!
//! Four kv validators on loopback with durable redb stores. Clients keep transactions waiting
//! at validators 0-2 throughout (the same offered load in both phases); after a healthy phase,
//! validator 3 stops abruptly and is not restarted. Without leader reputation each of its
//! views would time out (one view in four); with it, the schedule skips it once the committed
//! chain shows it inactive. The test prints both rates and the ratio.

use hotstuff_driver_std::load::{self, Clients};
use hotstuff_driver_std::Node;
use std::time::{Duration, Instant};

const N: usize = 4;
const WINDOW: usize = 500;
const BLOCK_TXS: usize = 500;
/// Each measured phase.
const PHASE: Duration = Duration::from_secs(10);
/// After the crash, before the second phase: the schedule needs `lag + window` views of
/// committed history to skip the dead validator.
const SETTLE: Duration = Duration::from_secs(3);

#[test]
fn one_of_four_validators_crashed_for_good_keeps_60_percent_of_the_tx_rate() {
    let dir = tempfile::tempdir().unwrap();
    let (builders, mempools) = load::local_cluster(dir.path(), N, WINDOW, BLOCK_TXS).unwrap();
    let mut nodes: Vec<Option<Node>> = builders.into_iter().map(|b| Some(b.start().unwrap())).collect();
    let live = &mempools[..N - 1];
    let clients = Clients::start(live, WINDOW);
    let committed = || -> u64 { live.iter().map(|p| p.take_stats().committed).sum() };
    // Warm up, then measure the healthy cluster.
    std::thread::sleep(Duration::from_secs(2));
    let _ = committed();
    let t0 = Instant::now();
    std::thread::sleep(PHASE);
    let healthy = committed() as f64 / t0.elapsed().as_secs_f64();

    // Validator 3 stops for good.
    let dead = nodes[N - 1].take().unwrap();
    dead.shutdown().unwrap();
    std::thread::sleep(SETTLE);
    let _ = committed();
    let t1 = Instant::now();
    std::thread::sleep(PHASE);
    let crashed = committed() as f64 / t1.elapsed().as_secs_f64();
    clients.stop();

    let ratio = crashed / healthy;
    println!(
        "kv cluster, 4 validators, clients at 0-2: healthy {healthy:.0} tx/s, one validator crashed for good {crashed:.0} tx/s, ratio {ratio:.2}"
    );
    // The survivors agree on the app state.
    let digests: Vec<_> = {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let d: Vec<_> =
                nodes.iter().flatten().map(|n| n.reader().app_state_digest().unwrap().1).collect();
            if d.windows(2).all(|w| w[0] == w[1]) || Instant::now() > deadline {
                break d;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    for node in nodes.into_iter().flatten() {
        node.shutdown().unwrap();
    }
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "the surviving replicas' app states differ");
    assert!(healthy > 100.0, "the healthy cluster committed only {healthy:.0} tx/s");
    assert!(ratio >= 0.6, "one crashed validator left {ratio:.2} of the healthy tx rate (< 0.60)");
}
