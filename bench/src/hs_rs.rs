//! Setup (d): hotstuff_rs 0.4.0 from the registry, with the network stub and in-memory KV store
//! of its own test suite (`tests/common/network.rs` and `tests/common/mem_db.rs`, copied as
//! they are) and its test settings (epoch length 50, block-sync settings as in
//! `tests/common/node.rs`), a 1 s view timeout, no logging event handlers (only replica 0 has a
//! commit handler, which pushes the block hash and the time to a vector). The app puts an
//! 8-byte payload (the produce time) in each block and changes no state; latency is from its
//! produce call to the commit at replica 0.

use crate::stats::{since_stamp, stamp, CpuWindow, Recorder, Sample};
use hotstuff_rs::{
    app::{App, ProduceBlockRequest, ProduceBlockResponse, ValidateBlockRequest, ValidateBlockResponse},
    block_tree::pluggables::{KVGet, KVStore, WriteBatch},
    networking::{messages::Message, network::Network},
    replica::{Configuration, Replica, ReplicaSpec},
    types::{
        crypto_primitives::{CryptoHasher, Digest, SigningKey, VerifyingKey},
        data_types::{BufferSize, ChainID, CryptoHash, Data, Datum, EpochLength, Power},
        update_sets::{AppStateUpdates, ValidatorSetUpdates},
        validator_set::{ValidatorSet, ValidatorSetState},
    },
};
use std::{
    collections::{HashMap, HashSet},
    sync::{
        mpsc::{self, Receiver, Sender, TryRecvError},
        Arc, Mutex, MutexGuard,
    },
    thread,
    time::{Duration, Instant},
};

// ---- tests/common/mem_db.rs of hotstuff_rs 0.4.0 ----

#[derive(Clone)]
pub struct MemDB(Arc<Mutex<HashMap<Vec<u8>, Vec<u8>>>>);

impl MemDB {
    pub fn new() -> MemDB {
        MemDB(Arc::new(Mutex::new(HashMap::new())))
    }
}

impl KVStore for MemDB {
    type WriteBatch = MemWriteBatch;
    type Snapshot<'a> = MemDBSnapshot<'a>;

    fn write(&mut self, wb: Self::WriteBatch) {
        let mut map = self.0.lock().unwrap();
        for (key, value) in wb.insertions {
            map.insert(key, value);
        }
        for key in wb.deletions {
            map.remove(&key);
        }
    }

    fn clear(&mut self) {
        self.0.lock().unwrap().clear();
    }

    fn snapshot<'b>(&'b self) -> MemDBSnapshot<'b> {
        MemDBSnapshot(self.0.lock().unwrap())
    }
}

impl KVGet for MemDB {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.lock().unwrap().get(key).cloned()
    }
}

pub struct MemWriteBatch {
    insertions: HashMap<Vec<u8>, Vec<u8>>,
    deletions: HashSet<Vec<u8>>,
}

impl WriteBatch for MemWriteBatch {
    fn new() -> Self {
        MemWriteBatch { insertions: HashMap::new(), deletions: HashSet::new() }
    }

    fn set(&mut self, key: &[u8], value: &[u8]) {
        let _ = self.deletions.remove(key);
        self.insertions.insert(key.to_vec(), value.to_vec());
    }

    fn delete(&mut self, key: &[u8]) {
        let _ = self.insertions.remove(key);
        self.deletions.insert(key.to_vec());
    }
}

pub struct MemDBSnapshot<'a>(MutexGuard<'a, HashMap<Vec<u8>, Vec<u8>>>);

impl KVGet for MemDBSnapshot<'_> {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.get(key).cloned()
    }
}

// ---- tests/common/network.rs of hotstuff_rs 0.4.0 ----

#[derive(Clone)]
pub struct NetworkStub {
    my_verifying_key: VerifyingKey,
    all_peers: HashMap<VerifyingKey, Sender<(VerifyingKey, Message)>>,
    inbox: Arc<Mutex<Receiver<(VerifyingKey, Message)>>>,
}

impl Network for NetworkStub {
    fn init_validator_set(&mut self, _: ValidatorSet) {}

    fn update_validator_set(&mut self, _: ValidatorSetUpdates) {}

    fn send(&mut self, peer: VerifyingKey, message: Message) {
        if let Some(peer) = self.all_peers.get(&peer) {
            let _ = peer.send((self.my_verifying_key, message));
        }
    }

    fn broadcast(&mut self, message: Message) {
        for peer in self.all_peers.values() {
            let _ = peer.send((self.my_verifying_key, message.clone()));
        }
    }

    fn recv(&mut self) -> Option<(VerifyingKey, Message)> {
        match self.inbox.lock().unwrap().try_recv() {
            Ok(o_m) => Some(o_m),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => panic!(),
        }
    }
}

pub fn mock_network(peers: impl Iterator<Item = VerifyingKey>) -> Vec<NetworkStub> {
    let mut all_peers = HashMap::new();
    let peer_and_inboxes: Vec<(VerifyingKey, Receiver<(VerifyingKey, Message)>)> = peers
        .map(|peer| {
            let (sender, receiver) = mpsc::channel();
            all_peers.insert(peer, sender);
            (peer, receiver)
        })
        .collect();
    peer_and_inboxes
        .into_iter()
        .map(|(my_verifying_key, inbox)| NetworkStub {
            my_verifying_key,
            all_peers: all_peers.clone(),
            inbox: Arc::new(Mutex::new(inbox)),
        })
        .collect()
}

// ---- the app: an 8-byte payload, no state ----

struct StampApp {
    base: Instant,
}

fn data_hash(data: &Data) -> CryptoHash {
    let mut hasher = CryptoHasher::new();
    hasher.update(data.vec()[0].bytes());
    CryptoHash::new(hasher.finalize().into())
}

impl App<MemDB> for StampApp {
    fn produce_block(&mut self, _request: ProduceBlockRequest<MemDB>) -> ProduceBlockResponse {
        let data = Data::new(vec![Datum::new(stamp(self.base).to_vec())]);
        ProduceBlockResponse {
            data_hash: data_hash(&data),
            data,
            app_state_updates: None,
            validator_set_updates: None,
        }
    }

    fn validate_block(&mut self, request: ValidateBlockRequest<MemDB>) -> ValidateBlockResponse {
        self.validate_block_for_sync(request)
    }

    fn validate_block_for_sync(&mut self, request: ValidateBlockRequest<MemDB>) -> ValidateBlockResponse {
        let block = request.proposed_block();
        if block.data.vec().len() != 1 || block.data_hash != data_hash(&block.data) {
            ValidateBlockResponse::Invalid
        } else {
            ValidateBlockResponse::Valid { app_state_updates: None, validator_set_updates: None }
        }
    }
}

type Commits = Arc<Mutex<Vec<(CryptoHash, Instant)>>>;

fn start(
    keypair: SigningKey,
    network: NetworkStub,
    init_vs_updates: &ValidatorSetUpdates,
    base: Instant,
    commits: Option<Commits>,
) -> Replica<MemDB> {
    let kv_store = MemDB::new();
    let mut init_vs = ValidatorSet::new();
    init_vs.apply_updates(init_vs_updates);
    let init_vs_state = ValidatorSetState::new(init_vs.clone(), init_vs, None, true);
    Replica::initialize(kv_store.clone(), AppStateUpdates::new(), init_vs_state);
    let configuration = Configuration::builder()
        .me(keypair)
        .chain_id(ChainID::new(0))
        .block_sync_request_limit(10)
        .block_sync_server_advertise_time(Duration::new(10, 0))
        .block_sync_response_timeout(Duration::new(3, 0))
        .block_sync_blacklist_expiry_time(Duration::new(10, 0))
        .block_sync_trigger_min_view_difference(2)
        .block_sync_trigger_timeout(Duration::new(60, 0))
        .progress_msg_buffer_capacity(BufferSize::new(1024))
        .epoch_length(EpochLength::new(50))
        .max_view_time(Duration::from_secs(1))
        .log_events(false)
        .build();
    let spec = ReplicaSpec::builder()
        .app(StampApp { base })
        .network(network)
        .kv_store(kv_store)
        .configuration(configuration);
    match commits {
        Some(commits) => spec
            .on_commit_block(move |e: &hotstuff_rs::events::CommitBlockEvent| {
                commits.lock().unwrap().push((e.block, Instant::now()))
            })
            .build()
            .start(),
        None => spec.build().start(),
    }
}

pub fn run(n: usize, warmup: Duration, measure: Duration) -> Sample {
    let keypairs: Vec<SigningKey> = (0..n)
        .map(|i| {
            let mut seed = [0x5Au8; 32];
            seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            SigningKey::from_bytes(&seed)
        })
        .collect();
    let stubs = mock_network(keypairs.iter().map(|k| k.verifying_key()));
    let mut vs = ValidatorSetUpdates::new();
    for k in &keypairs {
        vs.insert(k.verifying_key(), Power::new(1));
    }
    let base = Instant::now();
    let commits: Commits = Arc::default();
    let replicas: Vec<Replica<MemDB>> = keypairs
        .into_iter()
        .zip(stubs)
        .enumerate()
        .map(|(i, (k, net))| start(k, net, &vs, base, (i == 0).then(|| commits.clone())))
        .collect();
    thread::sleep(warmup);
    let cpu = CpuWindow::start();
    let from = Instant::now();
    thread::sleep(measure);
    let to = Instant::now();
    let cpu = cpu.pct();
    let seen: Vec<(CryptoHash, Instant)> = commits.lock().unwrap().clone();
    if std::env::var_os("BENCH_DEBUG").is_some() {
        eprintln!("hotstuff_rs: {} commits seen in all", seen.len());
    }
    let mut rec = Recorder::default();
    {
        let camera = replicas[0].block_tree_camera();
        let snapshot = camera.snapshot();
        for (hash, at) in seen.iter().filter(|(_, at)| *at >= from && *at < to) {
            // `block_datum`, not `block_data`: in 0.4.0 `block_data` returns an empty `Data` (its
            // `find` over the datum iterator consumes it before the `collect`).
            if let Some(l) = snapshot.block_datum(hash, 0).and_then(|d| since_stamp(base, *at, d.bytes())) {
                rec.record(*at, l);
            }
        }
    }
    drop(replicas);
    rec.sample(from, to, cpu)
}
