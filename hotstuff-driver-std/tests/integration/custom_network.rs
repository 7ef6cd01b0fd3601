//! The `Network` trait is pluggable: three validators over a network written here (no
//! sockets) commit and agree.
//!
//! It follows the trait's contract as a production transport must: `start` starts its own
//! thread, a send only queues (a bounded queue that drops when full, so a slow receiver never
//! holds up the consensus thread), and `shutdown` stops and joins the thread. (The driver
//! ships a simpler in-process network for tests and benchmarks, `net::channel`, which delivers
//! on the sender's thread.)

use hotstuff_core::{ChainId, Keypair, PublicKey, ValidatorSet};
use hotstuff_driver_std::kv::{tx_count, KvApp, Mempool, Tx, TX_COUNT_KEY};
use hotstuff_driver_std::net::{Frame, NetContext};
use hotstuff_driver_std::{Genesis, Inbox, NetError, Network, NodeBuilder, RedbStore};
use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Every started node's inbox, by key.
type Hub = Arc<Mutex<BTreeMap<PublicKey, Inbox>>>;

/// What a node's postman thread is handed.
enum Post {
    To(PublicKey, Frame),
    Everyone(Frame),
    Stop,
}

struct QueuedNetwork {
    hub: Hub,
    queue: Option<SyncSender<Post>>,
    postman: Option<JoinHandle<()>>,
    me: Option<PublicKey>,
}

impl QueuedNetwork {
    fn new(hub: &Hub) -> Self {
        QueuedNetwork { hub: hub.clone(), queue: None, postman: None, me: None }
    }

    /// Best effort: a full queue drops the frame, as a congested link would.
    fn post(&self, post: Post) {
        if let Some(q) = &self.queue {
            // Full: dropped; disconnected: the postman stopped (shutting down).
            let _ = q.try_send(post);
        }
    }
}

impl Network for QueuedNetwork {
    fn start(&mut self, ctx: NetContext) -> Result<(), NetError> {
        let me = ctx.key.public();
        self.hub.lock().unwrap().insert(me, ctx.inbox);
        let (tx, rx) = sync_channel::<Post>(1024);
        let hub = self.hub.clone();
        self.postman = Some(std::thread::spawn(move || {
            let deliver = |to: &PublicKey, frame: &Frame| {
                let inbox = hub.lock().unwrap().get(to).cloned();
                if let Some(inbox) = inbox {
                    // A stopped receiver refuses; like a lost message.
                    let _ = inbox.deliver_frame(me, frame);
                }
            };
            for post in rx {
                match post {
                    Post::To(to, frame) => deliver(&to, &frame),
                    Post::Everyone(frame) => {
                        let peers: Vec<PublicKey> =
                            hub.lock().unwrap().keys().copied().filter(|k| *k != me).collect();
                        for p in peers {
                            deliver(&p, &frame);
                        }
                    }
                    Post::Stop => return,
                }
            }
        }));
        self.queue = Some(tx);
        self.me = Some(me);
        Ok(())
    }

    fn send(&mut self, to: PublicKey, frame: Frame) {
        self.post(Post::To(to, frame));
    }

    fn broadcast(&mut self, frame: Frame) {
        self.post(Post::Everyone(frame));
    }

    fn shutdown(&mut self) {
        if let Some(me) = self.me.take() {
            self.hub.lock().unwrap().remove(&me);
        }
        if let Some(q) = self.queue.take() {
            // Blocks only until the postman takes the next item.
            let _ = q.send(Post::Stop);
        }
        if let Some(t) = self.postman.take() {
            let _ = t.join();
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
            .network(QueuedNetwork::new(&hub))
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
            println!(
                "30 transactions committed on 3 nodes over a queued in-process network in {:?}",
                start.elapsed()
            );
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "committed counts {counts:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    for n in nodes {
        n.shutdown().unwrap();
    }
}
