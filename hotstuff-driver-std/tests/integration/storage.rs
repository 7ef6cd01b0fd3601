//! Storage: round trip, recovery after reopen (a real replica resumes from the file), and
//! corrupt or truncated data giving a typed error instead of a silent reset.

use hotstuff_core::{
    Action, AppOutcome, AppStateUpdates, ChainId, Config, DefaultPacemaker, Height, Input, Keypair, Replica,
    ValidatorSet, ValidatorSetUpdates,
};
use hotstuff_driver_std::{Genesis, RedbStore, Storage, StoreError, WriteBatch};

fn genesis(key: &Keypair) -> Genesis {
    let validators = ValidatorSet::new([(key.public(), 1)]).unwrap();
    Genesis::new(ChainId(9), validators).with_app_state([(b"hello".to_vec(), b"world".to_vec())])
}

/// Runs a single-validator replica on `store` for `steps` inputs, writing every Persist and
/// Commit through the store before acknowledging, as the node loop does. Returns the replica's
/// committed height.
fn run_replica(store: &RedbStore, key: &Keypair, g: &Genesis, steps: usize) -> u64 {
    let stored = store.load().unwrap().expect("initialised");
    let mut replica = Replica::new(
        Config::new(g.chain),
        Keypair::from_secret(&key.secret()),
        DefaultPacemaker::default(),
        stored.recovered(),
    )
    .unwrap();
    let mut n = 0u64;
    for step in 0..=steps {
        let mut inputs = Vec::new();
        while let Some(action) = replica.poll_action() {
            let mut batch = WriteBatch::default();
            match action {
                Action::ProduceBlock { view, parent, .. } => {
                    n += 1;
                    let mut app_updates = AppStateUpdates::default();
                    app_updates.insert(format!("k{n}").into_bytes(), view.0.to_le_bytes().to_vec());
                    // The first block raises this validator's power: a validator-set change, so
                    // the chain moves to epoch 1 when it commits.
                    let mut validator_updates = ValidatorSetUpdates::default();
                    if n == 1 && replica.epoch().0 == 0 {
                        validator_updates.0.insert(replica.id(), 2);
                    }
                    inputs.push(Input::BlockProduced {
                        view,
                        parent,
                        payload: n.to_le_bytes().to_vec(),
                        outcome: AppOutcome { app_updates, validator_updates },
                    });
                }
                Action::Persist { seq, safety, blocks } => {
                    batch.safety = safety;
                    batch.blocks = blocks;
                    store.write(&batch).unwrap();
                    inputs.push(Input::Persisted { seq });
                }
                Action::Commit { blocks } => {
                    batch.commits = blocks;
                    store.write(&batch).unwrap();
                }
                _ => {}
            }
        }
        if step == steps {
            break; // the last round only drains
        }
        for i in inputs {
            replica.handle(i).unwrap();
        }
    }
    replica.committed_height().0
}

#[test]
fn round_trip_and_recovery_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let key = Keypair::from_secret(&[3; 32]);
    let g = genesis(&key);

    let store = RedbStore::open(&path).unwrap();
    assert!(store.load().unwrap().is_none(), "a new store is empty");
    store.initialise(&g).unwrap();
    store.initialise(&g).unwrap(); // idempotent
    let fresh = store.load().unwrap().unwrap();
    assert_eq!(fresh.recovered(), hotstuff_core::Recovered::genesis(g.chain, g.validators.clone()));
    assert_eq!(store.app_get(b"hello").unwrap().as_deref(), Some(&b"world"[..]));

    let h1 = run_replica(&store, &key, &g, 30);
    assert!(h1 >= 10, "committed {h1}");
    let (tip, validators) = store.tip().unwrap().unwrap();
    assert_eq!(tip.height.0, h1, "the store's tip is the replica's committed height");
    assert_eq!(validators.power(&key.public()), Some(2), "the validator set in force is the new one");
    let epoch = store.load().unwrap().unwrap().epoch.expect("the epoch change is stored");
    assert_eq!(epoch.epoch.0, 1);
    assert_eq!(epoch.previous.as_ref(), Some(&g.validators));
    let mut proofs = 0;
    for h in 1..=h1 {
        let (block, qc, proof) = store.committed_block(Height(h)).unwrap().expect("committed block stored");
        proofs += usize::from(proof.is_some());
        assert_eq!(block.height.0, h);
        assert_eq!(qc.block, block.hash(), "the certificate certifies the block");
        assert!(store.app_get(format!("k{h}").as_bytes()).unwrap().is_some(), "app update of block {h}");
    }
    assert_eq!(proofs, 1, "the epoch's last block is stored with its proof");
    let before = store.load().unwrap().unwrap();
    assert!(before.safety.is_some());
    assert!(before.blocks.iter().all(|b| b.block.height > tip.height), "committed blocks pruned");
    drop(store);

    // Reopen: the same contents, and the replica resumes above its committed height.
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.load().unwrap().unwrap(), before, "contents survive a reopen");
    let h2 = run_replica(&store, &key, &g, 20);
    assert!(h2 > h1, "the resumed replica commits on: {h1} -> {h2}");
    assert_eq!(store.committed_block(Height(h1 + 1)).unwrap().unwrap().0.height.0, h1 + 1);

    // A store of another chain or genesis is refused by name.
    let other = Genesis::new(ChainId(10), g.validators.clone());
    assert!(matches!(store.initialise(&other), Err(StoreError::WrongChain { .. })));
    let v2 = ValidatorSet::new([(Keypair::from_secret(&[4; 32]).public(), 1)]).unwrap();
    assert!(matches!(store.initialise(&Genesis::new(g.chain, v2)), Err(StoreError::WrongGenesis)));
}

#[test]
fn in_memory_store_behaves_like_the_file_store() {
    let key = Keypair::from_secret(&[5; 32]);
    let g = genesis(&key);
    let store = RedbStore::in_memory().unwrap();
    store.initialise(&g).unwrap();
    let h = run_replica(&store, &key, &g, 15);
    assert!(h >= 5);
    assert_eq!(store.tip().unwrap().unwrap().0.height.0, h);
    let mut keys = 0;
    let tip = store.scan_app_state(&mut |_, _| keys += 1).unwrap();
    assert_eq!(tip.height.0, h);
    assert_eq!(keys as u64, h + 1, "one key per block plus the genesis key");

    // The in-memory store keeps its safety state outside redb and commits most writes
    // non-durably: a replica restarted on it resumes from that state, past the store's
    // periodic durable commit (every 64th write).
    let before = store.load().unwrap().unwrap();
    assert!(before.safety.is_some(), "the safety state is loaded back");
    assert!(before.blocks.iter().all(|b| b.block.height.0 > h), "committed blocks pruned");
    // Its own blocks (the uncommitted tail of this lone proposer) are held outside redb until
    // the next transaction: they load the same before and after a sync folds them in.
    assert!(!before.blocks.is_empty(), "the uncommitted tail is loaded back");
    store.sync().unwrap();
    assert_eq!(store.load().unwrap().unwrap(), before, "folding the held blocks into redb changes nothing");
    let h2 = run_replica(&store, &key, &g, 120);
    assert!(h2 >= h + 40, "the restarted replica commits on: {h} -> {h2}");
    let after = store.load().unwrap().unwrap();
    assert_ne!(after.safety, before.safety, "the newer safety state replaced the older");
    assert_eq!(store.tip().unwrap().unwrap().0.height.0, h2);
}

/// Overwrites one value in the database file behind the store's back.
fn overwrite(path: &std::path::Path, table: &str, key: &[u8], value: &[u8]) {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let def: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new(table);
        let mut t = txn.open_table(def).unwrap();
        t.insert(key, value).unwrap();
    }
    txn.commit().unwrap();
}

fn overwrite_meta(path: &std::path::Path, key: &str, value: &[u8]) {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let def: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
        txn.open_table(def).unwrap().insert(key, value).unwrap();
    }
    txn.commit().unwrap();
}

#[test]
fn corrupt_or_truncated_data_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let key = Keypair::from_secret(&[6; 32]);
    let g = genesis(&key);
    {
        let store = RedbStore::open(&path).unwrap();
        store.initialise(&g).unwrap();
        run_replica(&store, &key, &g, 10);
    }

    // A truncated pending block record.
    let (pending_key, pending_value) = {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let def: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("pending");
        let t = txn.open_table(def).unwrap();
        let mut it = redb::ReadableTable::iter(&t).unwrap();
        let (k, v) = it.next().expect("a pending block").unwrap();
        (k.value().to_vec(), v.value().to_vec())
    };
    overwrite(&path, "pending", &pending_key, &pending_value[..pending_value.len() / 2]);
    let err = RedbStore::open(&path).unwrap().load().unwrap_err();
    println!("truncated block record: {err}");
    assert!(matches!(&err, StoreError::Corrupt { what, .. } if what == "pending block"), "{err:?}");

    // A block record stored under another block's key.
    let mut other_key = pending_key.clone();
    other_key[39] ^= 1;
    overwrite(&path, "pending", &pending_key, &pending_value);
    overwrite(&path, "pending", &other_key, &pending_value);
    let err = RedbStore::open(&path).unwrap().load().unwrap_err();
    assert!(matches!(&err, StoreError::Corrupt { what, .. } if what == "pending block"), "{err:?}");

    // Garbage in the safety state.
    let dir2 = tempfile::tempdir().unwrap();
    let path2 = dir2.path().join("store.redb");
    {
        let store = RedbStore::open(&path2).unwrap();
        store.initialise(&g).unwrap();
        run_replica(&store, &key, &g, 10);
    }
    overwrite_meta(&path2, "safety", b"\x07garbage");
    let err = RedbStore::open(&path2).unwrap().load().unwrap_err();
    println!("corrupt safety state: {err}");
    assert!(matches!(&err, StoreError::Corrupt { what, .. } if what == "safety"), "{err:?}");

    // A missing record is corrupt too, not a fresh start.
    overwrite_meta(&path2, "tip", b"");
    let err = RedbStore::open(&path2).unwrap().load().unwrap_err();
    assert!(matches!(&err, StoreError::Corrupt { what, .. } if what == "tip"), "{err:?}");

    // A file that is not a database at all.
    let path3 = dir2.path().join("junk.redb");
    std::fs::write(&path3, vec![0x5a; 10_000]).unwrap();
    let err = RedbStore::open(&path3).unwrap_err();
    println!("junk file: {err}");
    assert!(matches!(err, StoreError::Db(_)), "{err:?}");
}

/// Pruning (`storage::prune`): batches of at most the asked size, oldest first; the epoch's
/// last block kept with its proof; the window's blocks, the app state, the tip and the safety
/// state untouched; the tip itself never pruned; the retained range survives a reopen and the
/// replica resumes on the pruned store.
#[test]
fn pruning_keeps_the_window_and_the_epoch_proofs() {
    use hotstuff_driver_std::storage::prune::prune_step;
    use hotstuff_driver_std::RetainBlocks;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let key = Keypair::from_secret(&[7; 32]);
    let g = genesis(&key);
    let store = RedbStore::open(&path).unwrap();
    store.initialise(&g).unwrap();
    let tip = run_replica(&store, &key, &g, 120);
    assert!(tip >= 40, "committed {tip}");
    let epoch_end = (1..=tip)
        .find(|h| store.committed_block(Height(*h)).unwrap().unwrap().2.is_some())
        .expect("the first block ends epoch 0");
    assert_eq!(store.retained_from().unwrap(), Height(1), "nothing pruned yet");
    let before = store.load().unwrap().unwrap();

    // Keep the last 10 blocks, in batches of 4 heights.
    let retain = RetainBlocks::Last(10);
    let keep_from = tip - 9;
    let mut steps = 0;
    let mut last = 1;
    while prune_step(&store, retain, 4).unwrap() {
        let now = store.retained_from().unwrap().0;
        assert!(now > last && now - last <= 4, "a batch pruned {last}..{now}");
        last = now;
        steps += 1;
        assert!(steps < 100, "pruning does not end");
    }
    assert_eq!(store.retained_from().unwrap(), Height(keep_from));
    assert!(!prune_step(&store, retain, 4).unwrap(), "nothing left to prune");
    for h in 1..=tip {
        let entry = store.committed_block(Height(h)).unwrap();
        if h >= keep_from {
            assert_eq!(entry.expect("a block of the window").0.height.0, h);
        } else if h == epoch_end {
            assert!(entry.expect("the epoch's last block is kept").2.is_some(), "with its proof");
        } else {
            assert!(entry.is_none(), "height {h} below the window is pruned");
        }
        assert!(store.app_get(format!("k{h}").as_bytes()).unwrap().is_some(), "app state of block {h} kept");
    }
    assert_eq!(store.load().unwrap().unwrap(), before, "tip, epoch, safety, pending blocks untouched");

    // Asked to prune everything, it still keeps the tip.
    assert_eq!(store.prune(Height(u64::MAX), usize::MAX).unwrap(), Height(tip));
    assert!(store.committed_block(Height(tip)).unwrap().is_some());
    drop(store);

    // Reopen: the retained range is durable, and the replica commits on.
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.retained_from().unwrap(), Height(tip));
    let tip2 = run_replica(&store, &key, &g, 20);
    assert!(tip2 > tip, "the resumed replica commits on: {tip} -> {tip2}");
    assert!(store.committed_block(Height(tip2)).unwrap().is_some());
    assert!(store.committed_block(Height(tip - 1)).unwrap().is_none());
}

#[test]
fn retention_settings_parse_and_check() {
    use hotstuff_driver_std::storage::prune::MIN_RETAIN_BLOCKS;
    use hotstuff_driver_std::RetainBlocks;
    assert_eq!("archive".parse::<RetainBlocks>(), Ok(RetainBlocks::Archive));
    assert_eq!("100000".parse::<RetainBlocks>(), Ok(RetainBlocks::Last(100_000)));
    assert!("10".parse::<RetainBlocks>().unwrap_err().contains(&MIN_RETAIN_BLOCKS.to_string()));
    assert!("lots".parse::<RetainBlocks>().is_err());
    assert_eq!(RetainBlocks::Last(100).keep_from(Height(50)), Some(Height(1)));
    assert_eq!(RetainBlocks::Last(100).keep_from(Height(1000)), Some(Height(901)));
    assert_eq!(RetainBlocks::Archive.keep_from(Height(1000)), None);
    assert_eq!(RetainBlocks::Last(300).to_string().parse::<RetainBlocks>(), Ok(RetainBlocks::Last(300)));
}

/// redb's in-memory backend, counting fsyncs.
#[derive(Debug, Default)]
struct CountingDisk {
    inner: redb::backends::InMemoryBackend,
    syncs: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl redb::StorageBackend for CountingDisk {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        self.inner.read(offset, len)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self, eventual: bool) -> std::io::Result<()> {
        self.syncs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.sync_data(eventual)
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.inner.write(offset, data)
    }
}

#[test]
fn sync_fsyncs_only_while_a_deferred_write_is_not_yet_durable() {
    let key = Keypair::from_secret(&[6; 32]);
    let g = genesis(&key);
    let disk = CountingDisk::default();
    let syncs = disk.syncs.clone();
    let count = || syncs.load(std::sync::atomic::Ordering::SeqCst);
    let store = RedbStore::with_backend(disk).unwrap();
    store.initialise(&g).unwrap();
    let safety = |view: u64| WriteBatch {
        safety: Some(hotstuff_core::SafetyState {
            view: hotstuff_core::View(view),
            ..hotstuff_core::SafetyState::genesis(hotstuff_core::genesis_hash(g.chain, &g.validators))
        }),
        ..WriteBatch::default()
    };

    let before = count();
    store.sync().unwrap();
    assert_eq!(count(), before, "nothing written since the last durable commit: no fsync");

    store.write_deferred(&safety(1)).unwrap();
    store.sync().unwrap();
    assert!(count() > before, "a deferred write is made durable by sync");
    let after = count();
    store.sync().unwrap();
    assert_eq!(count(), after, "a second sync has nothing to do");

    // A durable write makes the deferred writes before it durable: no sync needed after it.
    store.write_deferred(&safety(2)).unwrap();
    store.write(&safety(3)).unwrap();
    let after = count();
    store.sync().unwrap();
    assert_eq!(count(), after, "the durable write covered the deferred one");
    assert_eq!(store.load().unwrap().unwrap().safety.unwrap().view.0, 3);
}
