//! `kill -9` during a snapshot install. Four validators (in this process, TCP on loopback, the
//! kv app with a certified root, 100,000 genesis keys, the last 400 blocks kept) serve
//! snapshots; the new node runs as a separate OS process (this test binary, re-executed in
//! child mode) and is killed with SIGKILL after it staged a few chunks. Its store is then
//! opened: it must hold either the old state with a staging area or the installed snapshot,
//! nothing in between. Restarted, it resumes the staged snapshot (or starts over), is killed
//! once more, and restarted again it ends with the validators' app-state digest.

use crate::common;

use common::{key, CHAIN};
use hotstuff_core::{Height, ValidatorSet};
use hotstuff_driver_std::kv::certified::StateCommitted;
use hotstuff_driver_std::kv::{KvApp, Mempool, Tx};
use hotstuff_driver_std::snapshot::staged_height;
use hotstuff_driver_std::{Genesis, Node, NodeBuilder, RedbStore, RetainBlocks, SnapshotSettings, Storage};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const N: usize = 4;
const KEYS: usize = 100_000;
const JOINER: usize = 100;

fn genesis() -> Genesis {
    let validators = ValidatorSet::new((0..N).map(|i| (key(i).public(), 1))).unwrap();
    Genesis::new(CHAIN, validators).with_app_state(
        (0..KEYS).map(|i| (format!("kv/g{i:07}").into_bytes(), format!("genesis value {i}").into_bytes())),
    )
}

fn app(pool: &Mempool) -> StateCommitted<KvApp> {
    StateCommitted::new(KvApp::new(pool.clone(), 100))
}

/// Child mode: the joiner, until killed. It prints its committed height and app-state digest.
fn child(addrs: &str, store: &Path) -> ! {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
    let addrs: Vec<SocketAddr> = addrs.split(',').map(|a| a.parse().unwrap()).collect();
    let node =
        NodeBuilder::new(key(JOINER), genesis(), app(&Mempool::new(10)), RedbStore::open(store).unwrap())
            .peers((0..N).map(|i| (key(i).public(), Some(addrs[i]))))
            .base_timeout(Duration::from_millis(500))
            .snapshots(SnapshotSettings { interval: 0, fetch: true })
            .start()
            .unwrap();
    loop {
        let (tip, digest) = node.reader().app_state_digest().unwrap();
        let mut out = std::io::stdout();
        let _ = writeln!(out, "STATUS {} {}", tip.height.0, hotstuff_driver_std::kv::hex(&digest));
        let _ = out.flush();
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn child_mode() {
    if let (Ok(addrs), Ok(store)) =
        (std::env::var("SNAPSHOT_CHILD_ADDRS"), std::env::var("SNAPSHOT_CHILD_STORE"))
    {
        child(&addrs, Path::new(&store));
    }
}

struct Joiner {
    child: Option<Child>,
    log: std::path::PathBuf,
    out: std::path::PathBuf,
}

impl Joiner {
    fn start(dir: &Path, addrs: &str, store: &Path, run: usize) -> Joiner {
        let log = dir.join(format!("joiner{run}.log"));
        let out = dir.join(format!("joiner{run}.out"));
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "snapshot_crash::child_mode", "--nocapture", "--test-threads=1"])
            .env("SNAPSHOT_CHILD_ADDRS", addrs)
            .env("SNAPSHOT_CHILD_STORE", store)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Joiner { child: Some(child), log, out }
    }

    fn log_has(&self, what: &str) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|l| l.contains(what))
    }

    fn wait_log(&self, what: &str, timeout: Duration) {
        let start = Instant::now();
        while !self.log_has(what) {
            assert!(start.elapsed() < timeout, "joiner never logged `{what}`; log: {}", self.tail());
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn tail(&self) -> String {
        let l = std::fs::read_to_string(&self.log).unwrap_or_default();
        l.lines().filter(|x| x.contains("snapshot")).collect::<Vec<_>>().join("\n")
    }

    /// The last `(height, digest)` the child printed.
    fn status(&self) -> Option<(u64, String)> {
        let text = std::fs::read_to_string(&self.out).ok()?;
        let line = text.lines().rev().find(|l| l.starts_with("STATUS "))?;
        let mut parts = line.split_whitespace().skip(1);
        Some((parts.next()?.parse().ok()?, parts.next()?.to_string()))
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }
}

impl Drop for Joiner {
    fn drop(&mut self) {
        self.kill();
    }
}

/// After a kill: the store holds the old state (genesis tip, genesis state) with a staging
/// area, or the installed snapshot (no staging area). Returns the staged height, if any.
fn check_clean(store: &Path) -> Option<(Height, usize)> {
    let s = RedbStore::open(store).unwrap();
    let (tip, _) = s.tip().unwrap().unwrap();
    let staged = staged_height(&s).unwrap().map(|h| (h, s.staged().unwrap().map_or(0, |(_, c)| c.len())));
    let mut entries = 0usize;
    s.scan_app_state(&mut |_, _| entries += 1).unwrap();
    match staged {
        Some((h, _)) => {
            assert_eq!(tip.height, Height(0), "a staged snapshot (at {h}) beside a moved tip");
            assert_eq!(entries, KEYS, "the old state was touched before the install");
        }
        None => assert!(tip.height.0 > 0, "neither staged nor installed"),
    }
    println!("after the kill: tip {}, staged {:?}, {entries} entries", tip.height, staged);
    staged
}

#[test]
fn a_kill_during_snapshot_sync_leaves_a_clean_store_and_recovers() {
    if std::env::var_os("SNAPSHOT_CHILD_ADDRS").is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let listeners: Vec<TcpListener> = (0..N).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let pools: Vec<Mempool> = (0..N).map(|_| Mempool::new(100_000)).collect();
    let g = genesis();
    let mut stores: Vec<Arc<dyn Storage>> = Vec::new();
    let validators: Vec<Node> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let store: Arc<dyn Storage> =
                Arc::new(RedbStore::open(dir.path().join(format!("v{i}.redb"))).unwrap());
            stores.push(store.clone());
            NodeBuilder::with_shared_store(key(i), g.clone(), app(&pools[i]), store)
                .listener(l)
                .peers((0..N).filter(|j| *j != i).map(|j| (key(j).public(), Some(addrs[j]))))
                .peer(key(JOINER).public(), None)
                .base_timeout(Duration::from_millis(500))
                .retain_blocks(RetainBlocks::Last(400))
                .snapshots(SnapshotSettings { interval: 100, fetch: false })
                .start()
                .unwrap()
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let load = std::thread::spawn(move || {
        let mut t = 0u64;
        while !flag.load(Ordering::Relaxed) {
            let tx =
                Tx::Put { key: format!("k{}", t % 500).into_bytes(), value: format!("v{t}").into_bytes() };
            let _ = pools[(t % N as u64) as usize].submit(tx);
            t += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let start = Instant::now();
    while stores.iter().any(|s| s.retained_from().unwrap().0 < 2) {
        assert!(start.elapsed() < Duration::from_secs(40), "validators did not prune in time");
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("validators pruned after {:?}", start.elapsed());
    let addr_list = addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    let store = dir.path().join("joiner.redb");

    // Run 1: killed after a few chunks are staged.
    let mut j = Joiner::start(dir.path(), &addr_list, &store, 1);
    j.wait_log("staged=3", Duration::from_secs(30));
    j.kill();
    let staged = check_clean(&store);
    // Run 2: resumes (or, if the first run got through, follows the chain); killed again.
    let mut j = Joiner::start(dir.path(), &addr_list, &store, 2);
    if let Some((height, chunks)) = staged {
        assert!(chunks >= 3, "the chunks staged before the kill are kept: {chunks}");
        j.wait_log(&format!("resuming height={height} chunks={chunks}"), Duration::from_secs(10));
        j.wait_log("fetching a snapshot", Duration::from_secs(20));
        println!("run 2: {}", j.tail());
    }
    std::thread::sleep(Duration::from_millis(300));
    j.kill();
    check_clean(&store);
    // Run 3: to the end.
    let j = Joiner::start(dir.path(), &addr_list, &store, 3);
    let t = Instant::now();
    loop {
        let h = validators[0].status().committed.0;
        if j.status().is_some_and(|(jh, _)| jh + 5 >= h) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "joiner at {:?}, validators at {h}: {}",
            j.status(),
            j.tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let t = Instant::now();
    loop {
        let (_, d) = validators[0].reader().app_state_digest().unwrap();
        let d = hotstuff_driver_std::kv::hex(&d);
        if j.status().is_some_and(|(_, jd)| jd == d) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "digests differ: joiner {:?}", j.status());
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "the restarted joiner ends with the validators' app-state digest at {:?}",
        j.status().map(|s| s.0)
    );
    drop(j);
    for v in validators {
        v.shutdown().unwrap();
    }
}
