//! The safety log beside a `RedbStore` on disk (`storage::safety_log`): crash images (process
//! crash, power loss, a torn last record) never lose a safety state or an own proposal that
//! was acknowledged as durable; the log stays small; damaged log bytes give a typed error or
//! end the log, never a panic.

use hotstuff_core::{
    genesis_hash, Action, AppOutcome, BlockRecord, ChainId, Config, DefaultPacemaker, Input, Keypair,
    Replica, SafetyState, ValidatorSet, View,
};
use hotstuff_driver_std::storage::safety_log::{CAPACITY, PAGE};
use hotstuff_driver_std::{Genesis, RedbStore, Storage, StoreError, WriteBatch};
use std::io;
use std::sync::{Arc, Mutex};

/// A backend in memory keeping the bytes written and the bytes as of the last sync.
#[derive(Debug, Clone, Default)]
struct Rec(Arc<Mutex<(Vec<u8>, Vec<u8>)>>);

impl Rec {
    fn image(bytes: Vec<u8>) -> Self {
        Rec(Arc::new(Mutex::new((bytes.clone(), bytes))))
    }
    fn live(&self) -> Vec<u8> {
        self.0.lock().unwrap().0.clone()
    }
    fn synced(&self) -> Vec<u8> {
        self.0.lock().unwrap().1.clone()
    }
}

impl redb::StorageBackend for Rec {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.lock().unwrap().0.len() as u64)
    }
    fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let d = self.0.lock().unwrap();
        let start = offset as usize;
        d.0.get(start..start + len)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.lock().unwrap().0.resize(len as usize, 0);
        Ok(())
    }
    fn sync_data(&self, _: bool) -> io::Result<()> {
        let mut d = self.0.lock().unwrap();
        d.1 = d.0.clone();
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut d = self.0.lock().unwrap();
        let start = offset as usize;
        if d.0.len() < start + data.len() {
            d.0.resize(start + data.len(), 0);
        }
        d.0[start..start + data.len()].copy_from_slice(data);
        Ok(())
    }
}

fn setup() -> (Keypair, Genesis) {
    let key = Keypair::from_secret(&[7; 32]);
    let validators = ValidatorSet::new([(key.public(), 1)]).unwrap();
    (key, Genesis::new(ChainId(31), validators))
}

/// A lone replica on `store`: Persists through `Storage::write` (the safety log), commits
/// deferred, a `sync` every `sync_every` steps (0: never). `after_persist` sees the store and
/// the batch right after each acknowledged Persist, `before_persist` right before.
struct Run<'a> {
    sync_every: usize,
    before_persist: &'a mut dyn FnMut(),
    after_persist: &'a mut dyn FnMut(&RedbStore, &WriteBatch),
}

fn run(store: &RedbStore, steps: usize, r: &mut Run<'_>) -> u64 {
    let (key, g) = setup();
    let stored = store.load().unwrap().expect("initialised");
    let mut replica =
        Replica::new(Config::new(g.chain), key, DefaultPacemaker::default(), stored.recovered()).unwrap();
    for step in 0..steps {
        let mut inputs = Vec::new();
        while let Some(action) = replica.poll_action() {
            match action {
                Action::ProduceBlock { view, parent, height } => inputs.push(Input::BlockProduced {
                    view,
                    parent,
                    payload: height.0.to_le_bytes().to_vec(),
                    outcome: AppOutcome::default(),
                }),
                Action::Persist { seq, safety, blocks } => {
                    let batch = WriteBatch { safety, blocks, commits: Vec::new() };
                    (r.before_persist)();
                    store.write(&batch).unwrap();
                    (r.after_persist)(store, &batch);
                    inputs.push(Input::Persisted { seq });
                }
                Action::Commit { blocks } => {
                    store.write_deferred(&WriteBatch { commits: blocks, ..WriteBatch::default() }).unwrap();
                }
                _ => {}
            }
        }
        for i in inputs {
            replica.handle(i).unwrap();
        }
        if r.sync_every > 0 && step % r.sync_every == 0 {
            store.sync().unwrap();
        }
    }
    replica.committed_height().0
}

fn open(db: Vec<u8>, log: Vec<u8>) -> Result<RedbStore, StoreError> {
    RedbStore::with_backend_and_log(Rec::image(db), Rec::image(log))
}

/// What was acknowledged as durable before an image was taken.
#[derive(Clone)]
struct Acked {
    safety: SafetyState,
    /// Own proposals acknowledged so far.
    blocks: Vec<BlockRecord>,
}

/// The recovered store keeps `acked`: a safety state no older in any of its monotone parts
/// (the same last vote if it voted in the same view) and every acknowledged block above its
/// committed tip.
fn check_covers(store: &RedbStore, acked: &Acked, what: &str) {
    let stored = store.load().unwrap().unwrap();
    let s = stored.safety.as_ref().unwrap_or_else(|| panic!("{what}: no safety state"));
    let a = &acked.safety;
    assert!(s.view >= a.view, "{what}: view {} < acknowledged {}", s.view, a.view);
    assert!(s.highest_voted_view >= a.highest_voted_view, "{what}: a sent vote is not covered");
    assert!(s.last_proposed_view >= a.last_proposed_view, "{what}: a sent proposal is not covered");
    assert!(s.locked_qc.view >= a.locked_qc.view, "{what}: the lock went back");
    if let (Some(v), Some(av)) = (&s.last_vote, &a.last_vote) {
        assert!(v.view >= av.view, "{what}: older last vote");
        if v.view == av.view {
            assert_eq!(v, av, "{what}: another vote in the same view");
        }
    }
    for b in acked.blocks.iter().filter(|b| b.block.height > stored.tip.height) {
        assert!(
            stored.blocks.iter().any(|r| r.block.hash() == b.block.hash()),
            "{what}: acknowledged own proposal at height {} missing",
            b.block.height
        );
    }
}

#[test]
fn every_crash_image_keeps_what_was_acknowledged_even_with_a_torn_last_record() {
    let (_, g) = setup();
    let (db, log) = (Rec::default(), Rec::default());
    let store = RedbStore::with_backend_and_log(db.clone(), log.clone()).unwrap();
    store.initialise(&g).unwrap();
    let mut acked: Option<Acked> = None;
    let mut images = Vec::new();
    let mut torn = Vec::new();
    let before: std::cell::RefCell<Option<(Vec<u8>, Vec<u8>)>> = Default::default();
    let mut persists = 0usize;
    {
        let (acked, images, torn) = (&mut acked, &mut images, &mut torn);
        let mut before_persist = || *before.borrow_mut() = Some((db.synced(), log.synced()));
        let mut after_persist = |_: &RedbStore, batch: &WriteBatch| {
            persists += 1;
            let prior = acked.clone();
            let a = acked
                .get_or_insert_with(|| Acked { safety: batch.safety.clone().unwrap(), blocks: Vec::new() });
            if let Some(s) = &batch.safety {
                a.safety = s.clone();
            }
            a.blocks.extend(batch.blocks.iter().cloned());
            if persists % 3 != 0 {
                return;
            }
            images.push(("process crash", db.live(), log.live(), a.clone()));
            images.push(("power loss", db.synced(), log.synced(), a.clone()));
            // The same power loss, but in the middle of writing this record: the log as
            // before it, with the first half of the bytes it changed.
            let (db_before, log_before) = before.borrow_mut().take().unwrap();
            let log_after = log.synced();
            if db_before != db.synced() || prior.is_none() {
                return; // the record went to redb (the log was full), or nothing was acknowledged
            }
            // The record starts on the page of the first byte it changed (its seq is new);
            // its header and payload end `32 + len` bytes further (the padding is not hashed).
            let first = (0..log_after.len()).find(|&i| log_after[i] != log_before[i]).unwrap();
            let start = first / PAGE as usize * PAGE as usize;
            let len = u32::from_le_bytes(log_after[start + 4..start + 8].try_into().unwrap()) as usize;
            let cut = first + (start + 32 + len - first) / 2;
            let mut image = log_before.clone();
            image[first..cut].copy_from_slice(&log_after[first..cut]);
            torn.push((db_before, image, prior.unwrap(), a.safety.clone()));
        };
        let mut r =
            Run { sync_every: 5, before_persist: &mut before_persist, after_persist: &mut after_persist };
        assert!(run(&store, 300, &mut r) > 100);
    }
    assert!(images.len() > 100 && torn.len() > 50, "{} images, {} torn", images.len(), torn.len());
    for (n, (kind, db, log, acked)) in images.into_iter().enumerate() {
        check_covers(&open(db, log).unwrap(), &acked, &format!("image {n} ({kind})"));
    }
    let count = torn.len();
    let mut exact = 0;
    for (n, (db, log, acked, unacked)) in torn.into_iter().enumerate() {
        let what = format!("torn image {n}");
        let store = open(db.clone(), log.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
        check_covers(&store, &acked, &what);
        // The torn record ends the log: the state before it (or, if the half not written
        // happened to hold the same bytes already, the whole record).
        let got = store.load().unwrap().unwrap().safety;
        assert!(got.as_ref() == Some(&acked.safety) || got == Some(unacked), "{what}: another safety state");
        exact += usize::from(got.as_ref() == Some(&acked.safety));
        // A replica resumes from it and commits on (the last one and a few others).
        if n % 20 == 0 || n + 1 == count {
            let tip = store.load().unwrap().unwrap().tip.height.0;
            let mut none = || {};
            let mut nothing = |_: &RedbStore, _: &WriteBatch| {};
            let mut r = Run { sync_every: 5, before_persist: &mut none, after_persist: &mut nothing };
            assert!(run(&store, 40, &mut r) > tip + 10, "{what}: no progress after the restart");
        }
    }
    assert!(exact * 10 >= count * 9, "only {exact} of {count} torn images ended the log at the torn record");
}

#[test]
fn the_log_starts_over_and_never_grows() {
    let (_, g) = setup();
    // With redb's durable commits (the background writer's) every few steps, and without any:
    // then the full log falls back to a durable redb write and starts over.
    for sync_every in [10, 0] {
        let (db, log) = (Rec::default(), Rec::default());
        let store = RedbStore::with_backend_and_log(db.clone(), log.clone()).unwrap();
        store.initialise(&g).unwrap();
        let (mut max_used, mut rewinds, mut last_used, mut persists) = (0, 0, 0, 0);
        let mut last_acked = None;
        let mut none = || {};
        let mut after = |s: &RedbStore, b: &WriteBatch| {
            let used = s.safety_log_used().unwrap();
            max_used = max_used.max(used);
            rewinds += usize::from(used < last_used);
            last_used = used;
            persists += 1;
            last_acked = b.safety.clone();
        };
        let mut r = Run { sync_every, before_persist: &mut none, after_persist: &mut after };
        run(&store, 2500, &mut r);
        let what = format!("sync every {sync_every}");
        assert!(persists as u64 > CAPACITY / PAGE, "{what}: only {persists} records");
        assert!(rewinds > 0, "{what}: the log never started over");
        assert!(max_used <= CAPACITY, "{what}: {max_used} bytes used");
        if sync_every > 0 {
            // About two records a step: never more than a few syncs' worth.
            assert!(max_used <= PAGE * (1 + 4 * sync_every as u64), "{what}: {max_used} bytes used");
        }
        assert_eq!(log.live().len() as u64, CAPACITY, "{what}: the log file changed size");
        let reopened = open(db.synced(), log.synced()).unwrap();
        assert_eq!(reopened.load().unwrap().unwrap().safety, last_acked, "{what}");
    }
}

/// A store with three safety states written through the log, one record each (pages 1-3).
fn three_records() -> (Vec<u8>, Vec<u8>, Vec<SafetyState>) {
    let (_, g) = setup();
    let (db, log) = (Rec::default(), Rec::default());
    let store = RedbStore::with_backend_and_log(db.clone(), log.clone()).unwrap();
    store.initialise(&g).unwrap();
    let mut states = Vec::new();
    for v in 2..5 {
        let mut s = SafetyState::genesis(genesis_hash(g.chain, &g.validators));
        s.view = View(v);
        s.highest_voted_view = View(v - 1);
        store.write(&WriteBatch { safety: Some(s.clone()), ..WriteBatch::default() }).unwrap();
        states.push(s);
    }
    assert_eq!(store.safety_log_used(), Some(4 * PAGE));
    let log = log.synced();
    for page in 1..4 {
        assert_eq!(&log[(page * PAGE) as usize..][..4], b"HSR1", "record on page {page}");
    }
    (db.synced(), log, states)
}

#[test]
fn damaged_log_bytes_end_the_log_or_are_a_typed_error() {
    let (db, log, states) = three_records();
    let safety = |log: Vec<u8>| open(db.clone(), log).map(|s| s.load().unwrap().unwrap().safety);
    assert_eq!(safety(log.clone()).unwrap().as_ref(), Some(&states[2]));

    // The last record damaged (a torn write): the log ends before it.
    let mut torn = log.clone();
    torn[(3 * PAGE + 40) as usize] ^= 1;
    assert_eq!(safety(torn).unwrap().as_ref(), Some(&states[1]));
    // Its length field absurd: the same, without reading (or allocating) that much.
    let mut long = log.clone();
    long[(3 * PAGE + 4) as usize..][..4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(safety(long).unwrap().as_ref(), Some(&states[1]));
    // Zeros where the last record was: it was never written.
    let mut zeros = log.clone();
    zeros[(3 * PAGE) as usize..(4 * PAGE) as usize].fill(0);
    assert_eq!(safety(zeros).unwrap().as_ref(), Some(&states[1]));

    // A damaged record followed by a whole one: durable records would be lost.
    let mut middle = log.clone();
    middle[(2 * PAGE + 40) as usize] ^= 1;
    match safety(middle) {
        Err(StoreError::Corrupt { what, reason }) => {
            assert_eq!(what, "safety log");
            assert!(reason.contains("record 2 is damaged"), "{reason}");
        }
        other => panic!("a damaged middle record gave {other:?}"),
    }
    // A damaged header.
    let mut header = log.clone();
    header[3] ^= 1;
    assert!(matches!(safety(header), Err(StoreError::Corrupt { .. })));
    // A log too short to be one.
    assert!(matches!(safety(vec![1; 100]), Err(StoreError::Corrupt { .. })));
    // Random bytes in every record page: no panic, an error or a shorter log.
    for seed in 0..64u64 {
        let mut noisy = log.clone();
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for _ in 0..8 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = PAGE as usize + (x as usize % (3 * PAGE as usize));
            noisy[at] = (x >> 32) as u8;
        }
        let _ = safety(noisy);
    }
}

#[test]
fn a_store_on_disk_keeps_its_log_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.redb");
    let (_, g) = setup();
    let mut s = SafetyState::genesis(genesis_hash(g.chain, &g.validators));
    s.view = View(9);
    s.highest_voted_view = View(8);
    let crashed = dir.path().join("crashed.redb");
    {
        let store = RedbStore::open(&path).unwrap();
        store.initialise(&g).unwrap();
        store.write(&WriteBatch { safety: Some(s.clone()), ..WriteBatch::default() }).unwrap();
        assert_eq!(store.safety_log_used(), Some(2 * PAGE), "the write went to the log");
        // The files as a crash now would leave them: redb never got the write.
        std::fs::copy(&path, &crashed).unwrap();
        std::fs::copy(RedbStore::log_path(&path), RedbStore::log_path(&crashed)).unwrap();
    }
    let log = RedbStore::log_path(&path);
    assert_eq!(std::fs::metadata(&log).unwrap().len(), CAPACITY);
    // redb alone has the state before the write (opened without the log)...
    let alone = dir.path().join("alone.redb");
    std::fs::copy(&crashed, &alone).unwrap();
    assert_eq!(RedbStore::open(&alone).unwrap().load().unwrap().unwrap().safety, None);
    // ... and with the log the write is read back from it.
    let store = RedbStore::open(&crashed).unwrap();
    assert_eq!(store.load().unwrap().unwrap().safety, Some(s.clone()));
    drop(store);
    // A clean close left the write in redb.
    assert_eq!(RedbStore::open(&path).unwrap().load().unwrap().unwrap().safety, Some(s.clone()));
    // A log left beside a database never initialised (a crash after the database was created
    // in place of a deleted one, before the log was): its records are ignored, now and later.
    {
        let (db, log) = (Rec::default(), Rec::default());
        let store = RedbStore::with_backend_and_log(db.clone(), log.clone()).unwrap();
        store.initialise(&g).unwrap();
        store.write(&WriteBatch { safety: Some(s.clone()), ..WriteBatch::default() }).unwrap();
        let stale_log = log.synced();
        drop(store);
        let (fresh, stale) = (Rec::default(), Rec::image(stale_log));
        let store = RedbStore::with_backend_and_log(fresh.clone(), stale.clone()).unwrap();
        store.initialise(&g).unwrap();
        assert_eq!(store.load().unwrap().unwrap().safety, None, "a stale log read over a new store");
        let reopened = open(fresh.synced(), stale.synced()).unwrap();
        assert_eq!(reopened.load().unwrap().unwrap().safety, None, "a stale log read after a reopen");
    }
    // A new database next to an old log starts a new log: nothing of the old one is replayed.
    std::fs::remove_file(&path).unwrap();
    let store = RedbStore::open(&path).unwrap();
    store.initialise(&g).unwrap();
    assert_eq!(store.load().unwrap().unwrap().safety, None);
    assert_eq!(store.safety_log_used(), Some(PAGE));
}
