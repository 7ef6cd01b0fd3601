//! A validator set shrunk to a single validator over TCP, in one process: three genesis
//! validators add a fourth node (power 3, which nobody is configured with: they dial it from
//! the peer book), then the three are removed one by one. The removed validators must keep
//! following the chain as listeners: 100 blocks later they hold the last write.
//!
//! (A run of `tests/validator_changes.rs` once saw removed validators stop following a set of
//! one about 20 blocks after the change; this reproduces that scenario's shape without the
//! processes, and passes. The README's known gaps say what is left.)

use hotstuff_core::{ChainId, Keypair, PublicKey, ValidatorSet};
use hotstuff_driver_std::kv::auth::{genesis_state, Op, SignedTx};
use hotstuff_driver_std::kv::governance::{Change, PeerRecord};
use hotstuff_driver_std::kv::{state_key, KvApp, Mempool, Tx};
use hotstuff_driver_std::{Genesis, Node, NodeBuilder, Reader, RedbStore};
use std::net::TcpListener;
use std::time::{Duration, Instant};

const CHAIN: u64 = 81;
const N: usize = 4;
/// Node 3 starts outside the set; it is added, then the genesis validators are removed.
const NEW: usize = 3;

fn key(i: usize) -> Keypair {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    s[31] = 0x77;
    Keypair::from_secret(&s)
}

fn wait(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn removed_validators_keep_following_a_set_of_one() {
    let dir = tempfile::tempdir().unwrap();
    let listeners: Vec<TcpListener> = (0..N).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let governance = Keypair::from_secret(&[9; 32]);
    let records: Vec<(PublicKey, PeerRecord)> = (0..NEW)
        .map(|i| (key(i).public(), PeerRecord::signed(CHAIN, &key(i), &addrs[i].to_string())))
        .collect();
    let set = ValidatorSet::new((0..NEW).map(|i| (key(i).public(), 1))).unwrap();
    let genesis = Genesis::new(ChainId(CHAIN), set).with_app_state(genesis_state(
        CHAIN,
        &[governance.public()],
        &records,
    ));
    let mut mempools = Vec::new();
    let nodes: Vec<Node> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let mempool = Mempool::new(10_000);
            mempools.push(mempool.clone());
            let store = RedbStore::open(dir.path().join(format!("node{i}.redb"))).unwrap();
            let mut b = NodeBuilder::new(key(i), genesis.clone(), KvApp::new(mempool, 1000), store)
                .base_timeout(Duration::from_millis(400))
                .max_guests(4)
                .listener(l);
            // The genesis validators know each other; node 3 knows their keys, no address.
            for (j, a) in addrs.iter().enumerate().take(NEW) {
                if j != i {
                    b = b.peer(key(j).public(), (i < NEW).then_some(*a));
                }
            }
            b.start().unwrap()
        })
        .collect();
    let readers: Vec<Reader> = nodes.iter().map(|n| n.reader()).collect();
    let height = |i: usize| readers[i].tip().unwrap().height.0;
    wait("all commit", Duration::from_secs(30), || (0..NEW).all(|i| height(i) >= 3));
    let mut gov_seq = 0;
    let mut change = |via: usize, c: Change, done: &dyn Fn(&ValidatorSet) -> bool| {
        let tx = SignedTx::sign(CHAIN, &governance, gov_seq, Op::Validator(c));
        gov_seq += 1;
        mempools[via].submit(Tx::Signed(Box::new(tx))).unwrap();
        let what = format!("change {gov_seq} takes effect at node {NEW}");
        wait(&what, Duration::from_secs(30), || readers[NEW].validators().is_ok_and(|v| done(&v)));
        println!(
            "{what}: heights {:?}",
            (0..N).map(|i| readers[i].tip().unwrap().height.0).collect::<Vec<_>>()
        );
    };
    let nk = key(NEW);
    let address = nodes[NEW].local_addr().unwrap().to_string();
    let add = Change::Add {
        key: nk.public(),
        power: 3,
        address_sig: hotstuff_driver_std::kv::governance::sign_address(CHAIN, &nk, &address),
        address,
    };
    change(0, add, &|v| v.contains(&key(NEW).public()));
    for i in 0..NEW {
        change(NEW, Change::Remove { key: key(i).public() }, &|v| !v.contains(&key(i).public()));
    }
    println!("set shrunk to node {NEW} at height {}", height(NEW));
    let client = Keypair::from_secret(&[8; 32]);
    for (seq, k) in ["a", "b", "c"].iter().enumerate() {
        let op = Op::Put { key: k.as_bytes().to_vec(), value: b"v".to_vec() };
        mempools[NEW].submit(Tx::Signed(Box::new(SignedTx::sign(CHAIN, &client, seq as u64, op)))).unwrap();
        std::thread::sleep(Duration::from_secs(1));
    }
    let target = height(NEW) + 100;
    wait("the last validator commits on", Duration::from_secs(60), || height(NEW) >= target);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if (0..NEW).all(|i| height(i) >= target && readers[i].get(&state_key(b"c")).unwrap().is_some()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let hs: Vec<u64> = (0..N).map(height).collect();
    println!("heights {hs:?}, target {target}");
    for i in 0..NEW {
        assert!(hs[i] >= target, "removed node {i} stopped following: heights {hs:?}");
        assert!(readers[i].get(&state_key(b"c")).unwrap().is_some(), "removed node {i} lacks the last write");
    }
    for n in nodes {
        n.shutdown().unwrap();
    }
}
