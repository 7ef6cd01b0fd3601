//! In-process clusters on loopback for the integration tests: tokio nodes run on a
//! multi-threaded runtime, std nodes on their threads; the test itself is synchronous and
//! polls for outcomes with generous deadlines (a loaded 2-core machine is slow, not wrong).
#![allow(dead_code)]

use hotstuff_core::{ChainId, Keypair, PublicKey, ValidatorSet};
use hotstuff_driver_tokio::kv::{tx_count, KvApp, Mempool, Tx, TX_COUNT_KEY};
use hotstuff_driver_tokio::{Event, Genesis, NodeBuilder, Reader, RedbStore, Status};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const CHAIN: ChainId = ChainId(78);
/// How long any outcome may take before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn key(i: usize) -> Keypair {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    s[31] = 0x7e;
    Keypair::from_secret(&s)
}

/// Which driver runs a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Tokio,
    Std,
}

pub enum AnyNode {
    Tokio(hotstuff_driver_tokio::Node),
    Std(hotstuff_driver_std::Node),
}

impl AnyNode {
    pub fn reader(&self) -> Reader {
        match self {
            AnyNode::Tokio(n) => n.reader(),
            AnyNode::Std(n) => n.reader(),
        }
    }

    pub fn status(&self) -> Status {
        match self {
            AnyNode::Tokio(n) => n.status(),
            AnyNode::Std(n) => n.status(),
        }
    }
}

/// Events seen by one node, for assertions.
pub type Events = Arc<Mutex<Vec<Event>>>;

pub struct Cluster {
    pub rt: tokio::runtime::Runtime,
    pub dir: tempfile::TempDir,
    pub genesis: Genesis,
    pub kinds: Vec<Kind>,
    pub addrs: Vec<SocketAddr>,
    /// Extra keys allowed to connect (listeners without an address).
    pub extra: Vec<Keypair>,
    pub nodes: Vec<Option<AnyNode>>,
    pub mempools: Vec<Mempool>,
    pub events: Vec<Events>,
    /// Each node's metrics.
    pub metrics: Vec<hotstuff_driver_std::Metrics>,
}

impl Cluster {
    /// One validator per entry of `kinds`, with redb file stores in a temp dir, listening on
    /// loopback; `extra` listener keys are configured as peers without an address.
    pub fn start(kinds: &[Kind], extra: usize) -> Cluster {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let n = kinds.len();
        let validators = ValidatorSet::new((0..n).map(|i| (key(i).public(), 1))).unwrap();
        let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        let mut c = Cluster {
            rt,
            dir: tempfile::tempdir().unwrap(),
            genesis: Genesis::new(CHAIN, validators),
            kinds: kinds.to_vec(),
            addrs: listeners.iter().map(|l| l.local_addr().unwrap()).collect(),
            extra: (0..extra).map(|i| key(100 + i)).collect(),
            nodes: Vec::new(),
            mempools: Vec::new(),
            events: Vec::new(),
            metrics: (0..n).map(|_| hotstuff_driver_std::Metrics::new()).collect(),
        };
        for (i, l) in listeners.into_iter().enumerate() {
            c.mempools.push(Mempool::new(1_000_000));
            c.events.push(Arc::new(Mutex::new(Vec::new())));
            let node = c.build(i, Some(l));
            c.nodes.push(Some(node));
        }
        c
    }

    pub fn store_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node{i}.redb"))
    }

    fn build(&self, i: usize, listener: Option<TcpListener>) -> AnyNode {
        let store = RedbStore::open(self.store_path(i)).unwrap();
        let events = self.events[i].clone();
        let app = KvApp::new(self.mempools[i].clone(), 1000);
        let mut b = NodeBuilder::new(key(i), self.genesis.clone(), app, store)
            .base_timeout(Duration::from_millis(500))
            .metrics(self.metrics[i].clone())
            .on_event(move |e| {
                if !matches!(e, Event::Core(_)) {
                    events.lock().unwrap().push(e.clone());
                }
            });
        b = match listener {
            Some(l) => b.listener(l),
            None => b.listen(self.addrs[i]),
        };
        for (j, a) in self.addrs.iter().enumerate() {
            if j != i {
                b = b.peer(key(j).public(), Some(*a));
            }
        }
        for k in &self.extra {
            b = b.peer(k.public(), None);
        }
        match self.kinds[i] {
            Kind::Tokio => AnyNode::Tokio(self.rt.block_on(hotstuff_driver_tokio::Node::start(b)).unwrap()),
            Kind::Std => AnyNode::Std(b.start().unwrap()),
        }
    }

    pub fn node(&self, i: usize) -> &AnyNode {
        self.nodes[i].as_ref().expect("node running")
    }

    /// Shuts node `i` down; returns how long it took.
    pub fn stop(&mut self, i: usize) -> Duration {
        match self.nodes[i].take().expect("node running") {
            AnyNode::Tokio(n) => self.rt.block_on(n.shutdown()).unwrap(),
            AnyNode::Std(n) => n.shutdown().unwrap(),
        }
    }

    /// Starts node `i` again from its store, on its address.
    pub fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none());
        let node = self.build(i, None);
        self.nodes[i] = Some(node);
    }

    fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].is_some())
    }

    pub fn height(&self, i: usize) -> u64 {
        self.node(i).reader().tip().unwrap().height.0
    }

    pub fn txs(&self, i: usize) -> u64 {
        tx_count(self.node(i).reader().get(TX_COUNT_KEY).unwrap().as_deref())
    }

    pub fn min_height(&self) -> u64 {
        self.running().map(|i| self.height(i)).min().unwrap_or(0)
    }

    /// Waits until every running node's committed height reaches `h`.
    pub fn wait_height(&self, h: u64) -> Duration {
        let start = Instant::now();
        while self.min_height() < h {
            let hs: Vec<u64> = self.running().map(|i| self.height(i)).collect();
            assert!(start.elapsed() < PATIENCE, "heights {hs:?} did not all reach {h} within {PATIENCE:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        start.elapsed()
    }

    /// Waits until every running node has committed exactly `n` transactions.
    pub fn wait_txs(&self, n: u64) -> Duration {
        let start = Instant::now();
        loop {
            let counts: Vec<u64> = self.running().map(|i| self.txs(i)).collect();
            if counts.iter().all(|c| *c == n) {
                return start.elapsed();
            }
            assert!(start.elapsed() < PATIENCE, "committed transaction counts {counts:?}, expected {n}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until every running node holds the same app state (load stopped, the state stands
    /// still while empty blocks go on committing, so the nodes' tips may differ by a block or
    /// two); no two nodes may ever hold different states at the same height. Returns the lowest
    /// of their heights.
    pub fn wait_agreement(&self) -> u64 {
        let start = Instant::now();
        let mut at_height: std::collections::BTreeMap<u64, [u8; 32]> = Default::default();
        loop {
            let snaps: Vec<(u64, [u8; 32])> = self
                .running()
                .map(|i| {
                    let (tip, digest) = self.node(i).reader().app_state_digest().unwrap();
                    (tip.height.0, digest)
                })
                .collect();
            for (height, digest) in &snaps {
                let first = at_height.entry(*height).or_insert(*digest);
                assert_eq!(first, digest, "two replicas hold different states at height {height}");
            }
            if snaps.windows(2).all(|w| w[0].1 == w[1].1) {
                return snaps.iter().map(|s| s.0).min().unwrap_or(0);
            }
            assert!(start.elapsed() < PATIENCE, "replicas disagree: {snaps:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn public(&self, i: usize) -> PublicKey {
        key(i).public()
    }

    /// `n` puts of distinct keys `{prefix}{t}`, spread over the nodes' mempools.
    pub fn submit(&self, prefix: &str, n: usize) {
        for t in 0..n {
            let tx =
                Tx::Put { key: format!("{prefix}{t}").into_bytes(), value: format!("v{t}").into_bytes() };
            self.mempools[t % self.mempools.len()].submit(tx).unwrap();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].is_some() {
                self.stop(i);
            }
        }
    }
}
