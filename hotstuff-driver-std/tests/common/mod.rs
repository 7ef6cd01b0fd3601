//! In-process clusters on loopback for the integration tests.
#![allow(dead_code)]

use hotstuff_core::{ChainId, Keypair, PublicKey, ValidatorSet};
use hotstuff_driver_std::kv::{KvApp, Mempool};
use hotstuff_driver_std::{Event, Genesis, Node, NodeBuilder, RedbStore};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const CHAIN: ChainId = ChainId(77);

pub fn secret(i: usize) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    s[31] = 0xd5;
    s
}

pub fn key(i: usize) -> Keypair {
    Keypair::from_secret(&secret(i))
}

/// Events seen by one node, for assertions.
pub type Events = Arc<Mutex<Vec<Event>>>;

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub genesis: Genesis,
    pub addrs: Vec<SocketAddr>,
    /// Extra keys allowed to connect (listeners), by index into `keys`.
    pub extra: Vec<Keypair>,
    pub nodes: Vec<Option<Node>>,
    pub mempools: Vec<Mempool>,
    pub events: Vec<Events>,
    /// Applied to every validator's builder (extra settings of a test).
    pub configure: fn(NodeBuilder<KvApp>) -> NodeBuilder<KvApp>,
}

impl Cluster {
    /// `n` validators with file stores in a temp dir, listening on loopback; `extra` listener
    /// keys are configured as peers without an address.
    pub fn start(n: usize, extra: usize) -> Cluster {
        Self::start_with(n, extra, |b| b)
    }

    /// Like [`Cluster::start`], with `configure` applied to every validator's builder.
    pub fn start_with(
        n: usize,
        extra: usize,
        configure: fn(NodeBuilder<KvApp>) -> NodeBuilder<KvApp>,
    ) -> Cluster {
        let validators = ValidatorSet::new((0..n).map(|i| (key(i).public(), 1))).unwrap();
        let genesis = Genesis::new(CHAIN, validators);
        let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        let addrs = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let mut c = Cluster {
            dir: tempfile::tempdir().unwrap(),
            genesis,
            addrs,
            extra: (0..extra).map(|i| key(100 + i)).collect(),
            nodes: Vec::new(),
            mempools: Vec::new(),
            events: Vec::new(),
            configure,
        };
        for (i, l) in listeners.into_iter().enumerate() {
            c.mempools.push(Mempool::new(100_000));
            c.events.push(Arc::new(Mutex::new(Vec::new())));
            let node = c.build(i, Some(l));
            c.nodes.push(Some(node));
        }
        c
    }

    pub fn store_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node{i}.redb"))
    }

    fn build(&self, i: usize, listener: Option<TcpListener>) -> Node {
        let store = RedbStore::open(self.store_path(i)).unwrap();
        let events = self.events[i].clone();
        let mut b =
            NodeBuilder::new(key(i), self.genesis.clone(), KvApp::new(self.mempools[i].clone(), 1000), store)
                .base_timeout(Duration::from_millis(300))
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
        (self.configure)(b).start().unwrap()
    }

    pub fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("node running")
    }

    pub fn stop(&mut self, i: usize) -> Duration {
        self.nodes[i].take().expect("node running").shutdown().unwrap()
    }

    pub fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none());
        let node = self.build(i, None);
        self.nodes[i] = Some(node);
    }

    pub fn height(&self, i: usize) -> u64 {
        self.node(i).reader().tip().unwrap().height.0
    }

    pub fn min_height(&self) -> u64 {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].is_some()).map(|i| self.height(i)).min().unwrap_or(0)
    }

    /// Waits until every running node's committed height reaches `h`.
    pub fn wait_height(&self, h: u64, timeout: Duration) -> Result<Duration, String> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.min_height() >= h {
                return Ok(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let hs: Vec<u64> =
            (0..self.nodes.len()).filter(|i| self.nodes[*i].is_some()).map(|i| self.height(i)).collect();
        Err(format!("heights {hs:?} did not all reach {h} within {timeout:?}"))
    }

    pub fn public(&self, i: usize) -> PublicKey {
        key(i).public()
    }
}
