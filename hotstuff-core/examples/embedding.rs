//! Example, run by CI (`cargo run --example embedding`; `cargo test` runs it as a test too):
//! a custom runtime embedding the core, written only against the crate docs (the run loop, the
//! drain rule, each `Action`'s obligation): four replicas in one thread, a virtual clock, an
//! in-memory "disk" acknowledged at once, every message through the wire encoding. It must
//! commit 1,000 blocks on every replica, with the same chain everywhere.

use hotstuff_core::{
    Action, AppOutcome, AppStateUpdates, BlockHash, ChainId, Config, DefaultPacemaker, Envelope, Input,
    Keypair, PublicKey, Recovered, Replica, SyncTimer, ValidatorSet, View,
};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

/// What the runtime schedules, by virtual time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Frame { to: usize, from: PublicKey, bytes: Vec<u8> },
    Timer { node: usize, view: View },
    SyncTimer { node: usize, timer: SyncTimer },
}

struct Runtime {
    chain: ChainId,
    replicas: Vec<Replica>,
    ids: Vec<PublicKey>,
    /// (time ms, sequence) -> event: a min-heap of what is due.
    queue: BinaryHeap<Reverse<(u64, u64, Event)>>,
    seq: u64,
    now: u64,
    /// Per replica: committed hashes by height, and the committed app state.
    chains: Vec<Vec<BlockHash>>,
    states: Vec<BTreeMap<Vec<u8>, Vec<u8>>>,
    /// Per replica: the latest view timer asked for (a timer for an old view is ignored anyway).
    timers: Vec<View>,
}

impl Runtime {
    fn new(n: u8) -> Self {
        let chain = ChainId(42);
        let keys: Vec<Keypair> = (1..=n).map(|i| Keypair::from_secret(&[i; 32])).collect();
        let ids: Vec<PublicKey> = keys.iter().map(Keypair::public).collect();
        let set = ValidatorSet::new(ids.iter().map(|k| (*k, 1))).expect("valid set");
        let replicas = keys
            .into_iter()
            .map(|key| {
                Replica::new(
                    Config::new(chain),
                    key,
                    DefaultPacemaker::default(),
                    Recovered::genesis(chain, set.clone()),
                )
                .expect("genesis is consistent")
            })
            .collect();
        let count = usize::from(n);
        let mut rt = Runtime {
            chain,
            replicas,
            ids,
            queue: BinaryHeap::new(),
            seq: 0,
            now: 0,
            chains: vec![Vec::new(); count],
            states: vec![BTreeMap::new(); count],
            timers: vec![View(0); count],
        };
        // Step 2 of the run loop: a new replica has actions ready (its timer, maybe a proposal).
        for node in 0..count {
            rt.drain(node);
        }
        rt
    }

    fn schedule(&mut self, after_ms: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((self.now + after_ms, self.seq, event)));
    }

    /// A fixed, small network delay that still varies by link, so messages interleave.
    fn delay(from: usize, to: usize) -> u64 {
        1 + ((from * 7 + to * 3) % 5) as u64
    }

    /// Drains the replica and performs every action in order; app requests and persists are
    /// answered at once (the "disk" is memory), each answer followed by another drain.
    fn drain(&mut self, node: usize) {
        let mut inputs = Vec::new();
        loop {
            while let Some(action) = self.replicas[node].poll_action() {
                self.perform(node, action, &mut inputs);
            }
            if inputs.is_empty() {
                break;
            }
            for input in inputs.drain(..) {
                // Our own answers are never stale here except an app reply overtaken by a view
                // change or a commit; anything else is a bug in this runtime.
                if let Err(e) = self.replicas[node].handle(input) {
                    assert!(e.is_stale(), "node {node}: own input refused: {e}");
                }
            }
        }
        assert!(!self.replicas[node].has_actions());
    }

    fn perform(&mut self, node: usize, action: Action, inputs: &mut Vec<Input>) {
        match action {
            Action::Persist { seq, .. } => inputs.push(Input::Persisted { seq }),
            Action::Send { to, message } => {
                let bytes = Envelope::new(self.chain, message).encode();
                if let Some(to) = self.ids.iter().position(|k| *k == to) {
                    let from = self.ids[node];
                    self.schedule(Self::delay(node, to), Event::Frame { to, from, bytes });
                }
            }
            Action::Broadcast { message } => {
                let bytes = Envelope::new(self.chain, message).encode();
                let peers: Vec<PublicKey> = self.replicas[node].broadcast_peers(&[]).collect();
                for peer in peers {
                    let Some(to) = self.ids.iter().position(|k| *k == peer) else { continue };
                    let from = self.ids[node];
                    self.schedule(Self::delay(node, to), Event::Frame { to, from, bytes: bytes.clone() });
                }
            }
            Action::SetTimer { view, after } => {
                self.timers[node] = view;
                self.schedule(millis(after), Event::Timer { node, view });
            }
            Action::SetSyncTimer { timer, after } => {
                self.schedule(millis(after), Event::SyncTimer { node, timer })
            }
            Action::ProduceBlock { view, parent, height } => {
                // The app: one "transaction" per block, a counter under its height.
                let payload = height.0.to_le_bytes().to_vec();
                inputs.push(Input::BlockProduced { view, parent, outcome: outcome(&payload), payload });
            }
            Action::ValidateBlock { hash, block, .. } => {
                let valid = block.payload.len() == 8 && block.payload == block.height.0.to_le_bytes();
                inputs.push(Input::BlockValidated { hash, outcome: valid.then(|| outcome(&block.payload)) });
            }
            Action::ServeSync { to, request } => {
                // Nobody lags in this network; a real runtime reads its store here.
                let response = self.replicas[node].sync_response(&request, |_| None);
                let bytes =
                    Envelope::new(self.chain, hotstuff_core::Message::SyncResponse(response)).encode();
                if let Some(to) = self.ids.iter().position(|k| *k == to) {
                    let from = self.ids[node];
                    self.schedule(Self::delay(node, to), Event::Frame { to, from, bytes });
                }
            }
            Action::Commit { blocks } => {
                for b in blocks {
                    assert_eq!(
                        b.block.height.0 as usize,
                        self.chains[node].len() + 1,
                        "commits are in order"
                    );
                    self.chains[node].push(b.hash);
                    for (k, v) in b.outcome.app_updates.into_map() {
                        match v {
                            Some(v) => self.states[node].insert(k, v),
                            None => self.states[node].remove(&k),
                        };
                    }
                }
            }
            Action::Event(_) => {}
        }
    }

    /// Runs events until every replica committed `height` blocks or `limit_ms` passes.
    fn run(&mut self, height: usize, limit_ms: u64) {
        while self.chains.iter().any(|c| c.len() < height) {
            let Some(Reverse((at, _, event))) = self.queue.pop() else { panic!("nothing left to do") };
            assert!(at <= limit_ms, "not done by {limit_ms} ms: heights {:?}", self.heights());
            self.now = at;
            let node = match event {
                Event::Frame { to, from, bytes } => {
                    // Stale traffic is normal; invalid input cannot happen between honest replicas.
                    if let Err(e) = self.replicas[to].handle_frame(from, &bytes) {
                        assert!(!e.is_invalid(), "node {to} refused honest input: {e}");
                    }
                    to
                }
                Event::Timer { node, view } => {
                    if view != self.timers[node] {
                        continue; // superseded by a later timer
                    }
                    self.replicas[node].handle(Input::TimerFired { view }).expect("timer input");
                    node
                }
                Event::SyncTimer { node, timer } => {
                    if let Err(e) = self.replicas[node].handle(Input::SyncTimerFired { timer }) {
                        assert!(e.is_stale(), "{e}");
                    }
                    node
                }
            };
            // The drain rule: after every input, whatever it returned.
            self.drain(node);
        }
    }

    fn heights(&self) -> Vec<usize> {
        self.chains.iter().map(Vec::len).collect()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn outcome(payload: &[u8]) -> AppOutcome {
    let mut app_updates = AppStateUpdates::default();
    app_updates.insert(b"last".to_vec(), payload.to_vec());
    AppOutcome { app_updates, ..AppOutcome::default() }
}

fn main() {
    four_replicas_in_one_thread_commit_1000_blocks();
}

#[test]
fn embedding_commits_1000_blocks() {
    four_replicas_in_one_thread_commit_1000_blocks();
}

fn four_replicas_in_one_thread_commit_1000_blocks() {
    let started = std::time::Instant::now();
    let mut rt = Runtime::new(4);
    rt.run(1_000, 600_000);
    let shortest = rt.chains.iter().map(Vec::len).min().unwrap_or(0);
    for (i, chain) in rt.chains.iter().enumerate() {
        assert_eq!(chain[..shortest], rt.chains[0][..shortest], "replica {i} diverged");
    }
    // Each replica's app state is its own chain's last block.
    for (i, state) in rt.states.iter().enumerate() {
        let last = state.get(b"last".as_slice()).expect("a committed block set it");
        assert_eq!(last.as_slice(), (rt.chains[i].len() as u64).to_le_bytes(), "replica {i}");
    }
    println!(
        "embedding: 4 replicas committed {:?} blocks in {} ms of virtual time ({:.2} s wall), last hash {:#}",
        rt.heights(),
        rt.now,
        started.elapsed().as_secs_f64(),
        rt.chains[0][shortest - 1]
    );
}
