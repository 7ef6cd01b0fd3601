//! A peer that completes the handshake and then never reads: its queue and socket fill up, but
//! the node it stalls keeps committing large blocks with the others (per-peer bounded queues;
//! the consensus thread never waits on a peer).

use crate::common;

use common::{key, Cluster, CHAIN};
use hotstuff_core::crypto::SignKind;
use hotstuff_core::View;
use hotstuff_driver_std::kv::{tx_count, Tx, TX_COUNT_KEY};
use hotstuff_driver_std::net::handshake::{self, Hello, HELLO_LEN};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn a_peer_that_never_reads_does_not_hold_up_the_others() {
    let c = Cluster::start(4, 1);
    c.wait_height(2, Duration::from_secs(20)).unwrap();

    // The configured listener key connects to node 0, authenticates, and never reads again.
    let listener = key(100);
    let mut slow = TcpStream::connect(c.addrs[0]).unwrap();
    let mine = Hello { chain: CHAIN, key: listener.public(), nonce: handshake::nonce().unwrap() };
    slow.write_all(&mine.encode()).unwrap();
    let mut buf = [0u8; HELLO_LEN];
    slow.read_exact(&mut buf).unwrap();
    let theirs = Hello::decode(&buf).unwrap();
    let sig = listener.sign(CHAIN, SignKind::Handshake, View(0), &handshake::digest(&mine, &theirs));
    slow.write_all(&sig.0).unwrap();

    // About 40 MB of proposals, all broadcast to the slow peer too.
    let value = vec![b'x'; 4000];
    let per_node = 2500;
    for t in 0..per_node * 4 {
        let tx = Tx::Put { key: format!("k{t}").into_bytes(), value: value.clone() };
        c.mempools[t % 4].submit(tx).unwrap();
    }
    let start = Instant::now();
    loop {
        let counts: Vec<u64> =
            (0..4).map(|i| tx_count(c.node(i).reader().get(TX_COUNT_KEY).unwrap().as_deref())).collect();
        if counts.iter().all(|n| *n == (per_node * 4) as u64) {
            println!(
                "{} transactions of 4 KB committed on all 4 validators in {:?}",
                per_node * 4,
                start.elapsed()
            );
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "committed {counts:?} of {}", per_node * 4);
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(slow);
}
