//! Crashes while the background store writer has queued work: a validator commits kv
//! transactions on a store whose "disk" (the redb file and the store's safety log) is
//! recorded; at random moments the test takes the image a crash would leave, both for a
//! process crash (every write made so far, fsynced or not) and for a power loss (only what was
//! fsynced), and the disk keeps images of power losses in the middle of a safety-log write (a
//! torn last record). Every image keeps what the store acknowledged as durable before it (the
//! safety state: every vote and proposal sent; the own blocks). Every image must reopen to an exact state: the
//! committed chain linked block to block up to the tip, the app state equal to the replay of
//! exactly those blocks, a safety state; and a node restarted from it keeps the chain and goes
//! on committing.

use hotstuff_core::{ChainId, Height, Keypair, ValidatorSet};
use hotstuff_driver_std::kv::{decode_payload, state_key, tx_count, KvApp, Mempool, Tx, TX_COUNT_KEY};
use hotstuff_driver_std::{Genesis, Node, NodeBuilder, RedbStore, Storage, StoreError, WriteBatch};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A machine's disk in memory, holding a redb file and the store's safety log: for each, the
/// bytes written and the bytes as of its last fsync, under one lock (images of both are taken
/// at one instant). While a safety-log record is being written, now and then the image a power
/// loss in the middle of that write would leave is kept: the log with half of the record.
#[derive(Debug, Clone, Default)]
struct RecordedDisk {
    inner: Arc<Mutex<Disks>>,
    /// This handle is the safety log's (not the database's).
    log: bool,
}

#[derive(Debug, Default)]
struct Disk {
    live: Vec<u8>,
    synced: Vec<u8>,
}

#[derive(Debug, Default)]
struct Disks {
    db: Disk,
    log: Disk,
    /// The safety state and own blocks acknowledged as durable so far (see [`Acking`]).
    acked: Acked,
    log_writes: u64,
    /// Power-loss images taken in the middle of a log write: (database, log, acknowledged).
    torn: Vec<(Vec<u8>, Vec<u8>, Acked)>,
}

/// What the store acknowledged as durable.
#[derive(Debug, Default, Clone)]
struct Acked {
    safety: Option<hotstuff_core::SafetyState>,
    blocks: Vec<hotstuff_core::BlockRecord>,
}

/// One instant of a disk: the database and the log, both as a process crash and a power loss
/// would leave them, and what was acknowledged before.
struct Instant2 {
    live: (Vec<u8>, Vec<u8>),
    synced: (Vec<u8>, Vec<u8>),
    acked: Acked,
}

impl RecordedDisk {
    fn from_images(db: Vec<u8>, log: Vec<u8>) -> Self {
        let disks = Disks {
            db: Disk { live: db.clone(), synced: db },
            log: Disk { live: log.clone(), synced: log },
            ..Disks::default()
        };
        RecordedDisk { inner: Arc::new(Mutex::new(disks)), log: false }
    }

    /// The handle of the safety log on the same disk.
    fn log_disk(&self) -> Self {
        RecordedDisk { inner: self.inner.clone(), log: true }
    }

    /// Both files at one instant.
    fn instant(&self) -> Instant2 {
        let d = self.inner.lock().unwrap();
        Instant2 {
            live: (d.db.live.clone(), d.log.live.clone()),
            synced: (d.db.synced.clone(), d.log.synced.clone()),
            acked: d.acked.clone(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Disk) -> T) -> T {
        let mut d = self.inner.lock().unwrap();
        f(if self.log { &mut d.log } else { &mut d.db })
    }
}

impl redb::StorageBackend for RecordedDisk {
    fn len(&self) -> io::Result<u64> {
        Ok(self.with(|d| d.live.len() as u64))
    }

    fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.with(|d| {
            let start = usize::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            d.live
                .get(start..start + len)
                .map(<[u8]>::to_vec)
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(|d| d.live.resize(len as usize, 0));
        Ok(())
    }

    fn sync_data(&self, _eventual: bool) -> io::Result<()> {
        self.with(|d| d.synced = d.live.clone());
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut all = self.inner.lock().unwrap();
        let start = offset as usize;
        if self.log {
            all.log_writes += 1;
            if all.log_writes % 7 == 0 && all.torn.len() < 24 && all.log.synced.len() >= start + data.len() {
                // Half of the record's hashed bytes (header and payload: `32 + len`, the rest
                // is padding), so that the record is really torn.
                let hashed = match data.get(..8) {
                    Some(h) if h[..4] == *b"HSR1" => {
                        32 + u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize
                    }
                    _ => data.len(),
                };
                let half = hashed.min(data.len()) / 2;
                let mut log = all.log.synced.clone();
                log[start..start + half].copy_from_slice(&data[..half]);
                let image = (all.db.synced.clone(), log, all.acked.clone());
                all.torn.push(image);
            }
        }
        let d = if self.log { &mut all.log } else { &mut all.db };
        if d.live.len() < start + data.len() {
            d.live.resize(start + data.len(), 0);
        }
        d.live[start..start + data.len()].copy_from_slice(data);
        Ok(())
    }
}

/// A store that records on its disk what it acknowledged as durable: the safety state and the
/// blocks of every `write` that returned.
struct Acking {
    store: RedbStore,
    disk: RecordedDisk,
}

impl Storage for Acking {
    fn initialise(&self, genesis: &Genesis) -> Result<(), StoreError> {
        self.store.initialise(genesis)
    }
    fn load(&self) -> Result<Option<hotstuff_driver_std::Stored>, StoreError> {
        self.store.load()
    }
    fn write(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        self.store.write(batch)?;
        let mut d = self.disk.inner.lock().unwrap();
        if batch.safety.is_some() {
            d.acked.safety = batch.safety.clone();
        }
        d.acked.blocks.extend(batch.blocks.iter().cloned());
        Ok(())
    }
    fn write_deferred(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        self.store.write_deferred(batch)
    }
    fn sync(&self) -> Result<(), StoreError> {
        self.store.sync()
    }
    fn committed_block(
        &self,
        height: Height,
    ) -> Result<Option<hotstuff_driver_std::CommittedEntry>, StoreError> {
        self.store.committed_block(height)
    }
    fn retained_from(&self) -> Result<Height, StoreError> {
        self.store.retained_from()
    }
    fn prune(&self, below: Height, max_blocks: usize) -> Result<Height, StoreError> {
        self.store.prune(below, max_blocks)
    }
    fn app_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.app_get(key)
    }
    fn tip(&self) -> Result<Option<(hotstuff_core::CommittedTip, ValidatorSet)>, StoreError> {
        self.store.tip()
    }
    fn scan_app_state(
        &self,
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<hotstuff_core::CommittedTip, StoreError> {
        self.store.scan_app_state(visit)
    }
}

/// The store on `disk` with its safety log.
fn logged_store(disk: &RecordedDisk) -> RedbStore {
    RedbStore::with_backend_and_log(disk.clone(), disk.log_disk()).unwrap()
}

/// The recovered safety state is never older than the acknowledged one (every vote and
/// proposal sent is covered; the same vote if it voted in the same view), and every
/// acknowledged own block above the committed tip is there.
fn check_acked(store: &RedbStore, acked: &Acked, what: &str) {
    let stored = store.load().unwrap().unwrap();
    let Some(a) = &acked.safety else { return };
    let s = stored.safety.as_ref().unwrap_or_else(|| panic!("{what}: an acknowledged safety state lost"));
    assert!(s.view >= a.view, "{what}: view {} < acknowledged {}", s.view, a.view);
    assert!(s.highest_voted_view >= a.highest_voted_view, "{what}: a vote sent is not covered");
    assert!(s.last_proposed_view >= a.last_proposed_view, "{what}: a proposal sent is not covered");
    assert!(s.locked_qc.view >= a.locked_qc.view, "{what}: the lock went back");
    if let (Some(v), Some(av)) = (&s.last_vote, &a.last_vote) {
        assert!(v.view > av.view || v == av, "{what}: an older or different last vote");
    }
    for b in acked.blocks.iter().filter(|b| b.block.height > stored.tip.height) {
        assert!(
            stored.blocks.iter().any(|r| r.block.hash() == b.block.hash()),
            "{what}: acknowledged own block at height {} missing",
            b.block.height
        );
    }
}

fn setup() -> (Keypair, Genesis) {
    let key = Keypair::from_secret(&[21; 32]);
    let genesis = Genesis::new(ChainId(12), ValidatorSet::new([(key.public(), 1)]).unwrap());
    (key, genesis)
}

/// A validator on `disk`, its store with a safety log.
fn start(disk: RecordedDisk, mempool: Mempool) -> Node {
    let (key, genesis) = setup();
    let store = Acking { store: logged_store(&disk), disk };
    NodeBuilder::new(key, genesis, KvApp::new(mempool, 50), store)
        // Short, not zero: a lone validator with work always at hand would not read its inbox
        // (and so its shutdown request) until the mempool runs dry.
        .idle_block_delay(Duration::from_millis(1))
        .max_idle_block_delay(Duration::from_millis(1))
        .start()
        .unwrap()
}

/// Checks that `store` holds an exact state and returns its tip height and committed block
/// hashes by height.
fn check_exact(store: &RedbStore, what: &str) -> (u64, Vec<[u8; 32]>) {
    let stored = store.load().unwrap().unwrap_or_else(|| panic!("{what}: not initialised"));
    let tip = stored.tip;
    assert!(stored.safety.is_some() || tip.height.0 == 0, "{what}: commits without a safety state");
    let mut hashes = Vec::new();
    let mut state: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut txs = 0u64;
    let mut parent = None;
    for h in 1..=tip.height.0 {
        let (block, qc, _) = store
            .committed_block(Height(h))
            .unwrap()
            .unwrap_or_else(|| panic!("{what}: committed block {h} missing below the tip {}", tip.height));
        let hash = block.hash();
        assert_eq!(qc.block, hash, "{what}: the certificate of block {h} is for another block");
        if let Some(p) = parent {
            assert_eq!(block.parent(), p, "{what}: block {h} does not extend block {}", h - 1);
        }
        parent = Some(hash);
        hashes.push(hash.0);
        if !block.payload.is_empty() {
            let decoded = decode_payload(&block.payload).unwrap_or_else(|| panic!("{what}: bad payload"));
            txs += decoded.len() as u64;
            for tx in decoded {
                if let Tx::Put { key, value } = tx {
                    state.insert(state_key(&key), value);
                }
            }
        }
    }
    if tip.height.0 > 0 {
        assert_eq!(parent, Some(tip.hash), "{what}: the tip is not the last committed block");
    }
    assert!(
        store.committed_block(Height(tip.height.0 + 1)).unwrap().is_none(),
        "{what}: a block above the tip"
    );
    let mut stored_state = BTreeMap::new();
    let scanned = store
        .scan_app_state(&mut |k, v| {
            stored_state.insert(k.to_vec(), v.to_vec());
        })
        .unwrap();
    assert_eq!(scanned, tip, "{what}: app state of another tip");
    assert_eq!(
        tx_count(stored_state.remove(TX_COUNT_KEY).as_deref()),
        txs,
        "{what}: the app's transaction count is not that of the committed blocks"
    );
    assert_eq!(stored_state, state, "{what}: the app state is not the replay of the committed blocks");
    (tip.height.0, hashes)
}

#[test]
fn a_crash_with_queued_store_writes_recovers_an_exact_state() {
    let started = Instant::now();
    let seed: u64 = std::env::var("SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(12);
    println!("seed {seed}");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let disk = RecordedDisk::default();
    let mempool = Mempool::new(100_000);
    let node = start(disk.clone(), mempool.clone());

    // Clients keep submitting while the images are taken.
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (stop, mempool) = (stop.clone(), mempool.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..20 {
                    let tx =
                        Tx::Put { key: format!("k{i}").into_bytes(), value: format!("v{i}").into_bytes() };
                    if mempool.submit(tx).is_ok() {
                        i += 1;
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let t0 = Instant::now();
    while node.status().committed.0 < 5 {
        assert!(t0.elapsed() < Duration::from_secs(30), "no commits: {:?}", node.status());
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut images = Vec::new();
    for _ in 0..24 {
        std::thread::sleep(Duration::from_millis(rng.gen_range(3..25)));
        let committed = node.status().committed.0;
        images.push((committed, disk.instant()));
    }
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let final_height = node.status().committed.0;
    node.shutdown().unwrap();

    // A clean stop leaves everything durable.
    let last = disk.instant();
    let store = logged_store(&RecordedDisk::from_images(last.synced.0, last.synced.1));
    let (tip, _) = check_exact(&store, "after a clean stop");
    assert!(tip >= final_height, "a clean stop lost commits: tip {tip}, committed {final_height}");
    check_acked(&store, &last.acked, "after a clean stop");

    let mut lagging = 0;
    let mut restart_from = Vec::new();
    for (n, (committed, instant)) in images.into_iter().enumerate() {
        for (kind, (db, log)) in [("process crash", instant.live), ("power loss", instant.synced)] {
            let what = format!("image {n} ({kind}, committed in memory {committed})");
            let disk = RecordedDisk::from_images(db.clone(), log.clone());
            let store = logged_store(&disk);
            let (tip, hashes) = check_exact(&store, &what);
            check_acked(&store, &instant.acked, &what);
            if tip < committed {
                lagging += 1;
            }
            if restart_from.len() < 2 && (kind == "power loss" || n == 23) {
                restart_from.push((what, db, log, tip, hashes));
            }
        }
    }
    println!("{lagging} of 48 images had a committed tip behind the in-memory commit");

    // Power losses in the middle of a safety-log write: the torn record ends the log, and
    // nothing acknowledged before it is lost.
    let torn = std::mem::take(&mut disk.inner.lock().unwrap().torn);
    assert!(torn.len() >= 12, "only {} torn images", torn.len());
    let count = torn.len();
    for (n, (db, log, acked)) in torn.into_iter().enumerate() {
        let what = format!("torn image {n}");
        let disk = RecordedDisk::from_images(db.clone(), log.clone());
        let store = logged_store(&disk);
        let (tip, hashes) = check_exact(&store, &what);
        check_acked(&store, &acked, &what);
        // The torn record (the one after the acknowledged state) ends the log.
        assert_eq!(store.load().unwrap().unwrap().safety, acked.safety, "{what}: not the acknowledged state");
        if n + 1 == count {
            restart_from.push((what, db, log, tip, hashes));
        }
    }

    // A node restarted from a crash image keeps its committed chain and commits on.
    for (what, db, log, tip, hashes) in restart_from {
        let disk = RecordedDisk::from_images(db, log);
        let node = start(disk.clone(), Mempool::new(100));
        let t0 = Instant::now();
        while node.status().committed.0 < tip + 5 {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "{what}: no progress after restart: {:?}",
                node.status()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        node.shutdown().unwrap();
        let after = disk.instant();
        let store = logged_store(&RecordedDisk::from_images(after.synced.0, after.synced.1));
        let (after_tip, now) = check_exact(&store, &format!("{what}, restarted"));
        assert!(after_tip >= tip + 5);
        assert_eq!(now[..hashes.len()], hashes[..], "{what}: the restarted node changed its committed chain");
    }
    println!("test took {:?}", started.elapsed());
}

/// Blocks whose payload is their height; every fifth block sets the validator's power to its
/// height, which ends the epoch.
struct Epochs {
    key: hotstuff_core::PublicKey,
}

fn epoch_outcome(key: hotstuff_core::PublicKey, height: u64) -> hotstuff_core::AppOutcome {
    let mut outcome = hotstuff_core::AppOutcome::default();
    outcome.app_updates.insert(format!("h/{height:08}").into_bytes(), height.to_le_bytes().to_vec());
    if height % 5 == 0 {
        outcome.validator_updates.0.insert(key, height);
    }
    outcome
}

impl hotstuff_driver_std::App for Epochs {
    fn produce_block(
        &mut self,
        ctx: &hotstuff_driver_std::BlockContext<'_>,
    ) -> hotstuff_driver_std::Produced {
        hotstuff_driver_std::Produced {
            payload: ctx.height.0.to_le_bytes().to_vec(),
            outcome: epoch_outcome(self.key, ctx.height.0),
        }
    }

    fn validate_block(
        &mut self,
        _: &hotstuff_driver_std::BlockContext<'_>,
        block: &hotstuff_core::Block,
    ) -> Option<hotstuff_core::AppOutcome> {
        Some(epoch_outcome(self.key, block.height.0))
    }
}

fn start_epochs(disk: RecordedDisk) -> Node {
    let (key, genesis) = setup();
    let app = Epochs { key: key.public() };
    NodeBuilder::new(key, genesis, app, logged_store(&disk))
        .idle_block_delay(Duration::from_millis(1))
        .max_idle_block_delay(Duration::from_millis(1))
        .background_store_writes(std::env::var("SYNC_STORE").is_err())
        .start()
        .unwrap()
}

/// Crash images (database, safety log) of a lone validator changing its epoch every five
/// blocks.
fn epoch_images(seed: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    println!("seed {seed}");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let disk = RecordedDisk::default();
    let node = start_epochs(disk.clone());
    let mut images = Vec::new();
    for _ in 0..16 {
        std::thread::sleep(Duration::from_millis(rng.gen_range(2..15)));
        let instant = disk.instant();
        images.push(instant.live);
        images.push(instant.synced);
    }
    node.shutdown().unwrap();
    images.push(disk.instant().synced);
    images
}

fn seed(default: u64) -> u64 {
    std::env::var("SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// The epoch-changing commits take the synchronous path (after the writer's queue): every crash
/// image has its epoch no older than its safety state's and agrees with its committed blocks.
#[test]
fn crashes_around_epoch_changes_keep_the_epoch_with_the_chain() {
    let started = Instant::now();
    let (key, _) = setup();
    let images = epoch_images(seed(5));
    let mut epochs_seen = 0;
    for (n, image) in images.iter().enumerate() {
        let what = format!("image {n}");
        let store = logged_store(&RecordedDisk::from_images(image.0.clone(), image.1.clone()));
        let stored = store.load().unwrap().unwrap();
        let tip = stored.tip.height.0;
        for h in 1..=tip {
            let (block, _, _) = store.committed_block(Height(h)).unwrap().unwrap();
            assert_eq!(block.height.0, h, "{what}");
            assert_eq!(
                store.app_get(format!("h/{h:08}").as_bytes()).unwrap(),
                Some(h.to_le_bytes().to_vec()),
                "{what}: app state of block {h} missing"
            );
        }
        assert_eq!(
            store.app_get(format!("h/{:08}", tip + 1).as_bytes()).unwrap(),
            None,
            "{what}: above the tip"
        );
        let power = stored.epoch.as_ref().map_or(1, |e| e.validators.members()[0].power);
        let last_change = (1..=tip).rev().find(|h| h % 5 == 0).unwrap_or(0);
        // The epoch in force follows the last committed change (or is still the genesis set).
        assert!(power == last_change || (last_change == 0 && power == 1), "{what}: power {power}, tip {tip}");
        if let (Some(safety), Some(epoch)) = (&stored.safety, &stored.epoch) {
            assert!(safety.epoch <= epoch.epoch, "{what}: safety state of a later epoch than the store's");
            epochs_seen = epochs_seen.max(epoch.epoch.0);
        }
        assert_eq!(store.tip().unwrap().unwrap().1.members()[0].key, key.public());
    }
    assert!(epochs_seen >= 2, "too few epoch changes: {epochs_seen}");
    println!("{epochs_seen} epochs; test took {:?}", started.elapsed());
}

/// A lone validator restarted from such an image commits on. Images where the background
/// writer had made commits durable beyond the durable high QC used to stall it (its high QC's
/// block was gone and it has no peer to learn a higher QC from); the node now starts from the
/// committed tip's certificate. Passes with `SYNC_STORE=1` (no writer) too.
#[test]
fn a_lone_validator_restarted_across_epoch_changes_commits_on() {
    let images = epoch_images(seed(5));
    for n in [0, images.len() / 2, images.len() - 2] {
        let (db, log) = images[n].clone();
        let tip = logged_store(&RecordedDisk::from_images(db.clone(), log.clone()))
            .load()
            .unwrap()
            .unwrap()
            .tip
            .height
            .0;
        let node = start_epochs(RecordedDisk::from_images(db, log));
        let t0 = Instant::now();
        while node.status().committed.0 < tip + 12 {
            assert!(t0.elapsed() < Duration::from_secs(30), "image {n}: no progress: {:?}", node.status());
            std::thread::sleep(Duration::from_millis(5));
        }
        node.shutdown().unwrap();
    }
}

/// Crashes while the pruner deletes old blocks (`storage::prune`): a lone validator with a
/// window of 257 blocks commits past several windows while images are taken. Every image
/// reopens to a contiguous, linked, certified range of committed blocks from its retained
/// height to its tip, at least a window long, nothing below it (no epoch ended here); and a
/// node restarted from one commits on and keeps pruning. With and without the background
/// store writer.
#[test]
fn crashes_while_pruning_keep_a_contiguous_window() {
    // With each store write path: one synchronous transaction per drain, and the background
    // writer's deferred group commits (the pruner's transactions interleave with either).
    for writer in [false, true] {
        crashes_while_pruning(writer);
    }
}

fn crashes_while_pruning(writer: bool) {
    use hotstuff_driver_std::storage::prune::MIN_RETAIN_BLOCKS;
    use hotstuff_driver_std::RetainBlocks;
    let seed = seed(16);
    println!("seed {seed}, background writer {writer}");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let start_pruning = |disk: RecordedDisk| {
        let (key, genesis) = setup();
        NodeBuilder::new(key, genesis, KvApp::new(Mempool::new(10), 50), logged_store(&disk))
            .idle_block_delay(Duration::from_millis(1))
            .max_idle_block_delay(Duration::from_millis(1))
            .retain_blocks(RetainBlocks::Last(MIN_RETAIN_BLOCKS))
            .start()
            .unwrap()
    };
    let check = |store: &RedbStore, what: &str| -> (u64, u64) {
        let tip = store.load().unwrap().unwrap_or_else(|| panic!("{what}: not initialised")).tip.height.0;
        let from = store.retained_from().unwrap().0;
        assert!(from >= 1 && from <= tip.max(1), "{what}: retained from {from}, tip {tip}");
        if from > 1 {
            assert!(tip - from + 1 >= MIN_RETAIN_BLOCKS, "{what}: pruned into the window: {from}..={tip}");
        }
        let mut parent = None;
        for h in from..=tip {
            let (block, qc, _) = store
                .committed_block(Height(h))
                .unwrap()
                .unwrap_or_else(|| panic!("{what}: block {h} missing in the retained range {from}..={tip}"));
            assert_eq!(qc.block, block.hash(), "{what}: the certificate of block {h} is for another block");
            if let Some(p) = parent {
                assert_eq!(block.parent(), p, "{what}: block {h} does not extend block {}", h - 1);
            }
            parent = Some(block.hash());
        }
        for h in 1..from {
            assert!(
                store.committed_block(Height(h)).unwrap().is_none(),
                "{what}: block {h} below {from} kept"
            );
        }
        (from, tip)
    };

    let disk = RecordedDisk::default();
    let node = start_pruning(disk.clone());
    let t0 = Instant::now();
    while node.status().committed.0 < 2 * MIN_RETAIN_BLOCKS {
        assert!(t0.elapsed() < Duration::from_secs(120), "slow commits: {:?}", node.status());
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut images = Vec::new();
    for _ in 0..16 {
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..200)));
        let instant = disk.instant();
        images.push((instant.live, instant.synced));
    }
    node.shutdown().unwrap();
    let mut pruned = 0;
    let mut restart = None;
    for (n, (live, synced)) in images.into_iter().enumerate() {
        for (kind, image) in [("process crash", live), ("power loss", synced)] {
            let what = format!("image {n} ({kind})");
            let store = logged_store(&RecordedDisk::from_images(image.0.clone(), image.1.clone()));
            let (from, tip) = check(&store, &what);
            pruned += usize::from(from > 1);
            if n == 15 && kind == "power loss" {
                restart = Some((image, tip));
            }
        }
    }
    println!("{pruned} of 32 images had pruned blocks");
    assert!(pruned > 0, "no image was taken after pruning started");

    let (image, tip) = restart.unwrap();
    let disk = RecordedDisk::from_images(image.0, image.1);
    let node = start_pruning(disk.clone());
    let t0 = Instant::now();
    while node.status().committed.0 < tip + MIN_RETAIN_BLOCKS {
        assert!(t0.elapsed() < Duration::from_secs(120), "no progress after restart: {:?}", node.status());
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(1200));
    node.shutdown().unwrap();
    let after = disk.instant().synced;
    let store = logged_store(&RecordedDisk::from_images(after.0, after.1));
    let (from, after) = check(&store, "restarted");
    assert!(
        after >= tip + MIN_RETAIN_BLOCKS && from > tip.saturating_sub(MIN_RETAIN_BLOCKS),
        "{from}..={after}"
    );
}
