//! Validator-set changes with the peer book, on the tokio driver and on a mixed std + tokio
//! cluster: a new node that dials nobody and that nobody is configured with is added by a
//! governance transaction; the old validators learn its address from the chain (signed by its
//! own key) and dial it, it syncs and then proposes (a write only its mempool holds commits).
//! Then a power change and the removal of a genesis validator; commits go on and every running
//! replica ends with the same app state.

use hotstuff_core::{ChainId, Keypair, PublicKey, ValidatorSet};
use hotstuff_driver_tokio::kv::auth::{genesis_state, Op, SignedTx};
use hotstuff_driver_tokio::kv::governance::{Change, PeerRecord};
use hotstuff_driver_tokio::kv::{state_key, KvApp, Mempool, Tx};
use hotstuff_driver_tokio::{Genesis, NodeBuilder, Reader, RedbStore};
use std::net::TcpListener;
use std::time::{Duration, Instant};

const CHAIN: u64 = 79;
const PATIENCE: Duration = Duration::from_secs(60);

fn key(i: usize) -> Keypair {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    s[31] = 0x5a;
    Keypair::from_secret(&s)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Std,
    Tokio,
}

enum AnyNode {
    Std(hotstuff_driver_std::Node),
    Tokio(hotstuff_driver_tokio::Node),
}

impl AnyNode {
    fn reader(&self) -> Reader {
        match self {
            AnyNode::Std(n) => n.reader(),
            AnyNode::Tokio(n) => n.reader(),
        }
    }
}

struct Net {
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    nodes: Vec<Option<AnyNode>>,
    mempools: Vec<Mempool>,
    governance: Keypair,
    gov_seq: u64,
    client: Keypair,
    seq: u64,
    written: Vec<String>,
}

impl Net {
    /// Genesis validators `0..genesis.len()` of these kinds, and one more node (`kinds.last()`)
    /// outside the set with a listen address of its own and no configured peers.
    fn start(kinds: &[Kind]) -> (Net, usize) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let n = kinds.len() - 1;
        let listeners: Vec<TcpListener> =
            (0..=n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let governance = Keypair::from_secret(&[9; 32]);
        let records: Vec<(PublicKey, PeerRecord)> = (0..n)
            .map(|i| (key(i).public(), PeerRecord::signed(CHAIN, &key(i), &addrs[i].to_string())))
            .collect();
        let set = ValidatorSet::new((0..n).map(|i| (key(i).public(), 1))).unwrap();
        let genesis = Genesis::new(ChainId(CHAIN), set).with_app_state(genesis_state(
            CHAIN,
            &[governance.public()],
            &records,
        ));
        let mut net = Net {
            rt,
            nodes: Vec::new(),
            mempools: Vec::new(),
            governance,
            gov_seq: 0,
            client: Keypair::from_secret(&[8; 32]),
            seq: 0,
            written: Vec::new(),
            _dir: dir,
        };
        for (i, l) in listeners.into_iter().enumerate() {
            let mempool = Mempool::new(100_000);
            let store = RedbStore::open(net._dir.path().join(format!("node{i}.redb"))).unwrap();
            let mut b = NodeBuilder::new(key(i), genesis.clone(), KvApp::new(mempool.clone(), 1000), store)
                .base_timeout(Duration::from_millis(500))
                .max_guests(4)
                .listener(l);
            // Genesis validators know each other's addresses; nobody is configured with the new
            // node, and it knows the genesis validators' keys but no address (it dials nobody).
            for (j, a) in addrs.iter().enumerate().take(n) {
                if j != i {
                    b = b.peer(key(j).public(), (i < n).then_some(*a));
                }
            }
            let node = match kinds[i] {
                Kind::Tokio => {
                    AnyNode::Tokio(net.rt.block_on(hotstuff_driver_tokio::Node::start(b)).unwrap())
                }
                Kind::Std => AnyNode::Std(b.start().unwrap()),
            };
            net.nodes.push(Some(node));
            net.mempools.push(mempool);
        }
        (net, n)
    }

    fn reader(&self, i: usize) -> Reader {
        self.nodes[i].as_ref().unwrap().reader()
    }

    fn running(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].is_some()).collect()
    }

    fn wait(&self, what: &str, mut cond: impl FnMut(&Net) -> bool) -> Duration {
        let start = Instant::now();
        while start.elapsed() < PATIENCE {
            if cond(self) {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let heights: Vec<_> =
            self.running().iter().map(|i| self.reader(*i).tip().unwrap().height.0).collect();
        panic!("{what}: not within {PATIENCE:?}; heights {heights:?}");
    }

    fn committed_at(&self, i: usize, k: &str) -> bool {
        self.reader(i).get(&state_key(k.as_bytes())).unwrap().is_some()
    }

    /// A signed put into node `i`'s mempool, waited for until node `i` committed it.
    fn put(&mut self, i: usize, k: &str) -> Duration {
        let op = Op::Put { key: k.as_bytes().to_vec(), value: b"v".to_vec() };
        self.mempools[i]
            .submit(Tx::Signed(Box::new(SignedTx::sign(CHAIN, &self.client, self.seq, op))))
            .unwrap();
        self.seq += 1;
        self.written.push(k.to_string());
        self.wait(&format!("{k} commits at node {i}"), |n| n.committed_at(i, k))
    }

    /// A governance change into node `i`'s mempool, waited for until the set reflects it.
    fn change(&mut self, i: usize, change: Change, done: impl Fn(&ValidatorSet) -> bool) -> Duration {
        let tx = SignedTx::sign(CHAIN, &self.governance, self.gov_seq, Op::Validator(change));
        self.mempools[i].submit(Tx::Signed(Box::new(tx))).unwrap();
        self.gov_seq += 1;
        self.wait("the change takes effect", |n| n.reader(i).validators().is_ok_and(|v| done(&v)))
    }

    /// Every running replica reaches the same app state, holding every write. The writes are
    /// waited for, so the state stands still while empty blocks go on committing and the tips
    /// differ by a block or so (the next leader commits first, then waits out its idle delay):
    /// the digests must be equal, and no two replicas may hold different states at one height.
    fn agree(&self, what: &str) {
        let nodes = self.running();
        let mut at_height = std::collections::BTreeMap::new();
        self.wait(&format!("{what}: same app state"), |n| {
            let d: Vec<_> = nodes.iter().map(|i| n.reader(*i).app_state_digest().unwrap()).collect();
            for (tip, digest) in &d {
                let first = at_height.entry(tip.height).or_insert(*digest);
                assert_eq!(first, digest, "{what}: two replicas hold different states at {:?}", tip.height);
            }
            d.iter().all(|x| x.1 == d[0].1)
        });
        for i in &nodes {
            for k in &self.written {
                assert!(self.committed_at(*i, k), "{what}: node {i} lacks {k}");
            }
        }
        println!("{what}: nodes {nodes:?} agree and hold all {} writes", self.written.len());
    }
}

fn scenario(kinds: &[Kind]) {
    let (mut net, new) = Net::start(kinds);
    net.wait("genesis validators commit", |n| (0..new).all(|i| n.reader(i).tip().unwrap().height.0 >= 2));
    net.put(0, "before");
    // The new node's address, signed by its own key, goes in with the add.
    let address = match &net.nodes[new] {
        Some(AnyNode::Std(n)) => n.local_addr(),
        Some(AnyNode::Tokio(n)) => n.local_addr(),
        None => None,
    }
    .unwrap()
    .to_string();
    let nk = key(new);
    let add = Change::Add {
        key: nk.public(),
        power: 1,
        address_sig: hotstuff_driver_tokio::kv::governance::sign_address(CHAIN, &nk, &address),
        address,
    };
    let took = net.change(1, add, |v| v.contains(&nk.public()));
    println!("{kinds:?}: node {new} added in {took:?}");
    // Nobody was configured with it: the old validators dial it from the peer book.
    let took = net.wait("the new validator syncs", |n| {
        n.reader(new).tip().unwrap().height.0 >= n.reader(0).tip().unwrap().height.0
    });
    println!("{kinds:?}: node {new} dialled from the peer book and synced in {took:?}");
    let took = net.put(new, "via-new");
    println!("{kinds:?}: a write only node {new}'s mempool held committed in {took:?}: it proposes");
    net.agree("after the add");

    net.change(2, Change::SetPower { key: nk.public(), power: 2 }, |v| v.power(&nk.public()) == Some(2));
    net.put(2, "after-power");
    net.change(2, Change::Remove { key: key(0).public() }, |v| !v.contains(&key(0).public()));
    net.put(new, "after-remove");
    net.put(1, "after-remove-2");
    net.agree("after removing node 0");
}

#[test]
fn tokio_validators_add_a_node_from_the_peer_book_change_power_and_remove_one() {
    scenario(&[Kind::Tokio, Kind::Tokio, Kind::Tokio, Kind::Tokio, Kind::Tokio]);
}

#[test]
fn mixed_std_and_tokio_validators_do_the_same() {
    scenario(&[Kind::Std, Kind::Tokio, Kind::Std, Kind::Tokio, Kind::Std]);
}
