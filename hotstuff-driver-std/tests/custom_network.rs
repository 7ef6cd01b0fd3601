//! The `Network` trait is pluggable: three validators over an in-process channel network (no
//! sockets) commit and agree.

use hotstuff_core::{ChainId, Keypair, PublicKey, ValidatorSet};
use hotstuff_driver_std::kv::{tx_count, KvApp, Mempool, Tx, TX_COUNT_KEY};
use hotstuff_driver_std::net::{Frame, NetContext};
use hotstuff_driver_std::{Genesis, Inbox, NetError, Network, NodeBuilder, RedbStore};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every node's inbox, by key: sending is delivering straight into the receiver's inbox (from
/// the sender's consensus thread, which may wait while that inbox is full: fine for a test, a
/// production transport queues per peer like `TcpNetwork`).
type Hub = Arc<Mutex<BTreeMap<PublicKey, Inbox>>>;

struct ChannelNetwork {
    hub: Hub,
    me: Option<PublicKey>,
}

impl ChannelNetwork {
    fn deliver(&self, to: &PublicKey, frame: &Frame) {
        let inbox = self.hub.lock().unwrap().get(to).cloned();
        if let (Some(inbox), Some(me)) = (inbox, self.me) {
            // A stopped receiver refuses; like a lost message.
            let _ = inbox.deliver_frame(me, frame);
        }
    }
}

impl Network for ChannelNetwork {
    fn start(&mut self, ctx: NetContext) -> Result<(), NetError> {
        self.me = Some(ctx.key.public());
        self.hub.lock().unwrap().insert(ctx.key.public(), ctx.inbox);
        Ok(())
    }

    fn send(&mut self, to: PublicKey, frame: Frame) {
        self.deliver(&to, &frame);
    }

    fn broadcast(&mut self, frame: Frame) {
        let peers: Vec<PublicKey> =
            self.hub.lock().unwrap().keys().copied().filter(|k| Some(*k) != self.me).collect();
        for p in peers {
            self.deliver(&p, &frame);
        }
    }

    fn shutdown(&mut self) {
        if let Some(me) = self.me {
            self.hub.lock().unwrap().remove(&me);
        }
    }
}

#[test]
fn nodes_run_over_a_custom_network() {
    let keys: Vec<Keypair> = (0..3u8).map(|i| Keypair::from_secret(&[i + 1; 32])).collect();
    let validators = ValidatorSet::new(keys.iter().map(|k| (k.public(), 1))).unwrap();
    let genesis = Genesis::new(ChainId(3), validators);
    let hub: Hub = Arc::default();
    let pools: Vec<Mempool> = (0..3).map(|_| Mempool::new(1000)).collect();
    let nodes: Vec<_> = keys
        .iter()
        .zip(&pools)
        .map(|(k, pool)| {
            NodeBuilder::new(
                Keypair::from_secret(&k.secret()),
                genesis.clone(),
                KvApp::new(pool.clone(), 100),
                RedbStore::in_memory().unwrap(),
            )
            .network(ChannelNetwork { hub: hub.clone(), me: None })
            .start()
            .unwrap()
        })
        .collect();
    for t in 0..30 {
        pools[t % 3].submit(Tx::Put { key: format!("k{t}").into_bytes(), value: vec![7] }).unwrap();
    }
    let start = Instant::now();
    loop {
        let counts: Vec<u64> =
            nodes.iter().map(|n| tx_count(n.reader().get(TX_COUNT_KEY).unwrap().as_deref())).collect();
        if counts.iter().all(|c| *c == 30) {
            println!("30 transactions committed on 3 nodes over channels in {:?}", start.elapsed());
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "committed counts {counts:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    for n in nodes {
        n.shutdown().unwrap();
    }
}
