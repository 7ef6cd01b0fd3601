//! Connection health end to end: 4 validators on loopback (std threads or tokio tasks), every
//! link between them through the fault-injecting proxy ([`hotstuff_tests::proxy`]), faults
//! injected at run time, and the outcome measured from commit events with timestamps.
//!
//! The figures (issue 11): a node whose links are blackholed for 20 s and then healed commits
//! again within 2 base view timeouts and reaches the others' height within 3; the other three
//! never go longer than 2 base view timeouts without a commit during the fault. A leader whose
//! links are all cut (reset) recovers within the same bounds once they are restored.
//!
//! The tests run one at a time (each starts 4 nodes and times them; on a loaded 2-core machine
//! two at once would measure each other). Each prints its figures and its seed (the proxy's
//! jitter).

use hotstuff_core::{ChainId, Keypair, PublicKey, ValidatorSet};
use hotstuff_driver_std::kv::{KvApp, Mempool};
use hotstuff_driver_std::{Event, Genesis, NodeBuilder, RedbStore, Status};
use hotstuff_tests::proxy::{Fault, Proxy};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Base view timeout of the test clusters.
const BASE: Duration = Duration::from_millis(500);
/// Liveness deadline of every connection: one base view timeout.
const LIVENESS: Duration = BASE;
/// How long the fault lasts in the blackhole tests (the figure).
const BLACKHOLE: Duration = Duration::from_secs(20);
/// Whether to assert that the nodes outside the fault never go longer than 2 base view
/// timeouts without a commit during it (the bound). Connection health alone does not
/// give it: the blackholed validator would keep being elected and each of its views would time
/// out. The default pacemaker's leader reputation skips it once the committed chain shows it
/// inactive (`lag + window` views), so only its first few turns fail. A bound of 4 base view
/// timeouts is asserted too, as a coarser check that holds on a heavily loaded machine.
const ASSERT_OTHERS_GAP: bool = true;

/// One test at a time (see the module docs).
static SERIAL: Mutex<()> = Mutex::new(());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn key(i: usize) -> Keypair {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    s[31] = 0x4e;
    Keypair::from_secret(&s)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Std,
    Tokio,
}

enum AnyNode {
    Std(hotstuff_driver_std::Node),
    Tokio(hotstuff_driver_tokio::Node),
}

impl AnyNode {
    fn status(&self) -> Status {
        match self {
            AnyNode::Std(n) => n.status(),
            AnyNode::Tokio(n) => n.status(),
        }
    }
}

/// A commit: when, and at which height.
type Commits = Arc<Mutex<Vec<(Instant, u64)>>>;
/// A block-sync request: when, and to whom.
type Syncs = Arc<Mutex<Vec<(Instant, PublicKey)>>>;

struct Cluster {
    proxy: Proxy,
    nodes: Vec<Option<AnyNode>>,
    commits: Vec<Commits>,
    syncs: Vec<Syncs>,
    rt: tokio::runtime::Runtime,
}

impl Cluster {
    /// 4 validators of `kind`, each dialling the others through the proxy.
    fn start(kind: Kind, seed: u64) -> Cluster {
        let n = 4;
        let validators = ValidatorSet::new((0..n).map(|i| (key(i).public(), 1))).expect("validators");
        let genesis = Genesis::new(ChainId(4242), validators);
        let listeners: Vec<TcpListener> =
            (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
        let targets: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().expect("addr")).collect();
        let proxy = Proxy::start(&targets, seed).expect("proxy");
        let rt =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
        let mut c = Cluster { proxy, nodes: Vec::new(), commits: Vec::new(), syncs: Vec::new(), rt };
        for (i, listener) in listeners.into_iter().enumerate() {
            let commits: Commits = Arc::default();
            c.commits.push(commits.clone());
            let syncs: Syncs = Arc::default();
            c.syncs.push(syncs.clone());
            let app = KvApp::new(Mempool::new(10_000), 100);
            let store = RedbStore::in_memory().expect("store");
            let mut b = NodeBuilder::new(key(i), genesis.clone(), app, store)
                .base_timeout(BASE)
                // A fixed idle delay (no back-off while idle): the commit gaps measured here
                // are the fault's, not the idle back-off's (up to half the base timeout).
                .max_idle_block_delay(Duration::from_millis(100))
                .liveness_timeout(LIVENESS)
                .reconnect_backoff(Duration::from_millis(50), BASE / 2)
                .listener(listener)
                .on_event(move |e| match e {
                    Event::Core(hotstuff_core::Event::Committed { height, .. }) => {
                        lock(&commits).push((Instant::now(), height.0));
                    }
                    Event::Core(hotstuff_core::Event::SyncRequested { peer, .. }) => {
                        lock(&syncs).push((Instant::now(), *peer));
                    }
                    _ => {}
                });
            for j in (0..n).filter(|j| *j != i) {
                b = b.peer(key(j).public(), Some(c.proxy.addr(i, j)));
            }
            let node = match kind {
                Kind::Std => AnyNode::Std(b.start().expect("start")),
                Kind::Tokio => {
                    AnyNode::Tokio(c.rt.block_on(hotstuff_driver_tokio::Node::start(b)).expect("start"))
                }
            };
            c.nodes.push(Some(node));
        }
        c
    }

    fn node(&self, i: usize) -> &AnyNode {
        self.nodes[i].as_ref().expect("running")
    }

    fn index_of(&self, key: PublicKey) -> usize {
        (0..self.nodes.len()).find(|i| self::key(*i).public() == key).expect("a validator")
    }

    fn height(&self, i: usize) -> u64 {
        self.node(i).status().committed.0
    }

    /// Waits until every node has committed `h`.
    fn wait_height(&self, h: u64, patience: Duration) {
        let start = Instant::now();
        loop {
            let hs: Vec<u64> = (0..self.nodes.len()).map(|i| self.height(i)).collect();
            if hs.iter().all(|x| *x >= h) {
                return;
            }
            assert!(start.elapsed() < patience, "heights {hs:?} did not all reach {h} within {patience:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn commits(&self, i: usize) -> Vec<(Instant, u64)> {
        lock(&self.commits[i]).clone()
    }

    /// Node `i`'s committed height at `t`, from its commit events.
    fn height_at(&self, i: usize, t: Instant) -> u64 {
        self.commits(i).iter().filter(|(at, _)| *at <= t).map(|(_, h)| *h).max().unwrap_or(0)
    }

    /// The longest stretch of `[from, to]` in which node `i` committed nothing.
    fn longest_gap(&self, i: usize, from: Instant, to: Instant) -> Duration {
        let mut last = from;
        let mut gap = Duration::ZERO;
        for (at, _) in self.commits(i).into_iter().filter(|(at, _)| *at > from && *at <= to) {
            gap = gap.max(at - last);
            last = at;
        }
        gap.max(to.saturating_duration_since(last))
    }

    /// After a fault on `node` healed at `heal`: when it first committed, and when it first
    /// held the height the slowest other node held at the same moment (waits up to
    /// `patience` for both).
    fn recovery(
        &self,
        node: usize,
        heal: Instant,
        patience: Duration,
    ) -> (Option<Duration>, Option<Duration>) {
        let others: Vec<usize> = (0..self.nodes.len()).filter(|j| *j != node).collect();
        let deadline = heal + patience;
        loop {
            let mine: Vec<(Instant, u64)> =
                self.commits(node).into_iter().filter(|(at, _)| *at > heal).collect();
            let first = mine.first().map(|(at, _)| *at - heal);
            let caught = mine
                .iter()
                .find(|(at, h)| others.iter().map(|j| self.height_at(*j, *at)).min().is_some_and(|m| *h >= m))
                .map(|(at, _)| *at - heal);
            if (first.is_some() && caught.is_some()) || Instant::now() > deadline {
                return (first, caught);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        for n in self.nodes.iter_mut() {
            match n.take() {
                Some(AnyNode::Std(n)) => {
                    n.shutdown().expect("shutdown");
                }
                Some(AnyNode::Tokio(n)) => {
                    self.rt.block_on(n.shutdown()).expect("shutdown");
                }
                None => {}
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

fn seed() -> u64 {
    std::env::var("HOTSTUFF_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_0011)
}

/// Blackholes every link of one validator for [`BLACKHOLE`], heals them, and checks the
/// issue's figures.
fn blackhole_one_node(kind: Kind) {
    let _serial = lock(&SERIAL);
    let seed = seed();
    let c = Cluster::start(kind, seed);
    // A little latency and jitter on every link, as on a real network.
    c.proxy.set_latency_all(Duration::from_millis(1), Duration::from_millis(2));
    c.wait_height(5, Duration::from_secs(30));
    let victim = 3;
    let start = Instant::now();
    c.proxy.isolate(victim, Fault::Blackhole);
    std::thread::sleep(BLACKHOLE);
    let heal = Instant::now();
    let during = c.height_at(victim, heal);
    c.proxy.heal(victim);
    let (first, caught) = c.recovery(victim, heal, Duration::from_secs(30));
    let others: Vec<usize> = (0..4).filter(|j| *j != victim).collect();
    let gaps: Vec<Duration> = others.iter().map(|j| c.longest_gap(*j, start, heal)).collect();
    let heights: Vec<u64> = (0..4).map(|i| c.height(i)).collect();
    let stats = c.proxy.node_stats(victim);
    let show = |d: Option<Duration>| d.map_or("never".to_string(), ms);
    println!(
        "{kind:?} blackhole of node {victim} for {} s (seed {seed}, base view timeout {}, liveness {}): \
         healed node's first commit after {}, caught up with the others after {}; \
         longest commit gap of the others during the fault {:?} (limit {}); \
         victim height {during} at the heal, heights now {heights:?}; proxy: {} bytes dropped, \
         {} connections",
        BLACKHOLE.as_secs(),
        ms(BASE),
        ms(LIVENESS),
        show(first),
        show(caught),
        gaps.iter().map(|g| ms(*g)).collect::<Vec<_>>(),
        ms(2 * BASE),
        stats.dropped,
        stats.connections,
    );
    assert!(stats.dropped > 0, "the blackhole dropped nothing (seed {seed})");
    let first = first.unwrap_or_else(|| panic!("the healed node never committed again (seed {seed})"));
    assert!(
        first <= 2 * BASE,
        "the healed node's first commit took {} > {} (seed {seed})",
        ms(first),
        ms(2 * BASE)
    );
    let caught = caught.unwrap_or_else(|| panic!("the healed node never caught up (seed {seed})"));
    assert!(
        caught <= 3 * BASE,
        "the healed node caught up after {} > {} (seed {seed})",
        ms(caught),
        ms(3 * BASE)
    );
    // Always: the fault costs the others at most the views the victim leads (each a view
    // timeout), never a stall; measured 0.7-0.95 s with plain round robin.
    for (j, gap) in others.iter().zip(&gaps) {
        assert!(*gap <= 4 * BASE, "node {j} went {} without a commit (seed {seed})", ms(*gap));
    }
    if ASSERT_OTHERS_GAP {
        for (j, gap) in others.iter().zip(&gaps) {
            assert!(*gap <= 2 * BASE, "node {j} went {} without a commit (seed {seed})", ms(*gap));
        }
    }
}

#[test]
fn std_blackhole_one_node_for_20s_then_heal() {
    blackhole_one_node(Kind::Std);
}

#[test]
fn tokio_blackhole_one_node_for_20s_then_heal() {
    blackhole_one_node(Kind::Tokio);
}

/// Cuts (resets) every link of the current leader for 5 s, then restores them: the others go
/// on committing, and the old leader is back within the same bounds.
#[test]
fn std_cut_the_leaders_links_then_heal() {
    let _serial = lock(&SERIAL);
    let seed = seed();
    let c = Cluster::start(Kind::Std, seed);
    c.wait_height(5, Duration::from_secs(30));
    let leader = c.index_of(c.node(0).status().leader);
    let start = Instant::now();
    c.proxy.isolate(leader, Fault::Cut);
    std::thread::sleep(Duration::from_secs(5));
    let heal = Instant::now();
    c.proxy.heal(leader);
    let (first, caught) = c.recovery(leader, heal, Duration::from_secs(30));
    let others: Vec<usize> = (0..4).filter(|j| *j != leader).collect();
    let gaps: Vec<Duration> = others.iter().map(|j| c.longest_gap(*j, start, heal)).collect();
    let progress: Vec<u64> = others.iter().map(|j| c.height_at(*j, heal) - c.height_at(*j, start)).collect();
    let stats = c.proxy.node_stats(leader);
    let show = |d: Option<Duration>| d.map_or("never".to_string(), ms);
    println!(
        "Std cut of the leader's (node {leader}) links for 5 s (seed {seed}): first commit after the heal {}, \
         caught up after {}; the others committed {progress:?} blocks during the cut, longest gap {:?}; \
         proxy: {} connections reset",
        show(first),
        show(caught),
        gaps.iter().map(|g| ms(*g)).collect::<Vec<_>>(),
        stats.resets,
    );
    assert!(stats.resets > 0, "the cut reset nothing (seed {seed})");
    assert!(progress.iter().all(|p| *p > 0), "the others stalled during the cut: {progress:?} (seed {seed})");
    for (j, gap) in others.iter().zip(&gaps) {
        assert!(*gap <= 4 * BASE, "node {j} went {} without a commit (seed {seed})", ms(*gap));
    }
    let first = first.unwrap_or_else(|| panic!("the old leader never committed again (seed {seed})"));
    assert!(first <= 2 * BASE, "the old leader's first commit took {} (seed {seed})", ms(first));
    let caught = caught.unwrap_or_else(|| panic!("the old leader never caught up (seed {seed})"));
    assert!(caught <= 3 * BASE, "the old leader caught up after {} (seed {seed})", ms(caught));
}

/// A block-sync request to a peer that went silent moves on to another peer quickly: node 3
/// falls behind (blackholed for 3 s; while it sees nothing it asks its peers for blocks in
/// turn), then its links heal except the one to the peer its last request went to, which stays
/// blackholed. The others commit normally (they reach that peer), so node 3's views advance by
/// QCs and its view timer, one of the two retries of an unanswered request, never fires; the
/// other, the no-progress timer (the base view timeout in the drivers), must move the request
/// on. Node 3 must catch up within 3 base view timeouts, as after any heal.
#[test]
fn std_sync_request_to_a_silent_peer_goes_elsewhere() {
    let _serial = lock(&SERIAL);
    let seed = seed();
    let c = Cluster::start(Kind::Std, seed);
    c.wait_height(5, Duration::from_secs(30));
    let victim = 3;
    c.proxy.isolate(victim, Fault::Blackhole);
    std::thread::sleep(Duration::from_secs(3));
    // Heal every link of the victim but the one to the peer its request is out to.
    let (asked_at, asked) =
        *lock(&c.syncs[victim]).last().expect("the victim asked for blocks while cut off");
    let silent = c.index_of(asked);
    let heal = Instant::now();
    for j in (0..4).filter(|j| *j != victim && *j != silent) {
        c.proxy.set(victim, j, Fault::Pass);
        c.proxy.set(j, victim, Fault::Pass);
    }
    let (first, caught) = c.recovery(victim, heal, Duration::from_secs(30));
    let after: Vec<(Duration, usize)> = lock(&c.syncs[victim])
        .iter()
        .filter(|(at, _)| *at > asked_at)
        .map(|(at, p)| (at.saturating_duration_since(heal), c.index_of(*p)))
        .take(3)
        .collect();
    let show = |d: Option<Duration>| d.map_or("never".to_string(), ms);
    println!(
        "Std sync to a silent peer (seed {seed}): node {victim}'s request was out to node {silent} at the heal; \
         next requests (time after the heal, peer): {:?}; first commit after {}, caught up after {}",
        after.iter().map(|(d, p)| (ms(*d), *p)).collect::<Vec<_>>(),
        show(first),
        show(caught),
    );
    let caught = caught.unwrap_or_else(|| panic!("node {victim} never caught up (seed {seed})"));
    assert!(
        caught <= 3 * BASE,
        "node {victim} caught up after {} > {} (seed {seed})",
        ms(caught),
        ms(3 * BASE)
    );
}

/// A one-way fault: the connections node 3 dials to node 0 are blackholed, while node 0's
/// connections to node 3 work. Node 3's own connection goes quiet (node 0's heartbeats on it
/// are lost), so node 3 switches to the connection node 0 opened, and its messages keep
/// reaching node 0 on it: measured as the bytes node 3 sends back on node 0's connection
/// during the fault, against what it sent node 0 on its own connection before.
#[test]
fn std_one_way_blackhole_switches_to_the_peers_connection() {
    let _serial = lock(&SERIAL);
    let seed = seed();
    let c = Cluster::start(Kind::Std, seed);
    c.wait_height(5, Duration::from_secs(30));
    let window = Duration::from_secs(4);
    let before = (c.proxy.stats(3, 0), c.proxy.stats(0, 3));
    std::thread::sleep(window);
    let mid = (c.proxy.stats(3, 0), c.proxy.stats(0, 3));
    let h0 = c.height(0);
    c.proxy.set(3, 0, Fault::Blackhole);
    std::thread::sleep(window);
    let after = (c.proxy.stats(3, 0), c.proxy.stats(0, 3));
    c.proxy.set(3, 0, Fault::Pass);
    // What node 3 sent node 0: on its own connection before, on node 0's during the fault.
    let own_before = (mid.0.to_target - before.0.to_target) + (mid.1.from_target - before.1.from_target);
    let own_during = after.0.to_target - mid.0.to_target;
    let on_peers_during = after.1.from_target - mid.1.from_target;
    let progress = c.height(0) - h0;
    println!(
        "Std one-way blackhole 3 -> 0 for {} s (seed {seed}): node 3 sent node 0 {own_before} bytes in the {} s \
         before; during the fault {on_peers_during} bytes on node 0's connection ({own_during} on its own \
         were lost: {} bytes dropped); node 0 committed {progress} blocks meanwhile",
        window.as_secs(),
        window.as_secs(),
        after.0.dropped - mid.0.dropped,
    );
    assert!(progress > 0, "node 0 stalled (seed {seed})");
    assert!(
        on_peers_during * 2 >= own_before,
        "node 3 sent node 0 only {on_peers_during} bytes on node 0's connection, against {own_before} before (seed {seed})"
    );
}
