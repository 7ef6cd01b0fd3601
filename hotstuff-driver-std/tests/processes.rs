//! Four validators as separate OS processes (the `hotstuff-node` binary) on loopback. One node
//! is killed with SIGKILL (the current leader, repeatedly) and restarted: it recovers from its
//! store, catches up, and every replica keeps every committed transaction. Then all are killed
//! and restarted: the chain continues from where it was.

mod ports;

use hotstuff_core::Keypair;
use hotstuff_driver_std::kv::auth::{Op, SignedTx};
use hotstuff_driver_std::kv::{hex, Client, RemoteStatus};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hotstuff-node");
const N: usize = 4;

struct Net {
    dir: tempfile::TempDir,
    base_port: u16,
    children: Vec<Option<Child>>,
    publics: Vec<String>,
    /// Every transaction acknowledged as committed: (key, value).
    committed: Vec<(String, String)>,
    /// The test's client key (the chain accepts only signed writes) and its next sequence number.
    client_key: Keypair,
    seq: u64,
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Net {
    fn new() -> Net {
        let dir = tempfile::tempdir().unwrap();
        let base_port = ports::free_base_port(N);
        let out = Command::new(BIN)
            .args(["testnet", "--validators", "4", "--base-timeout-ms", "300", "--base-port"])
            .arg(base_port.to_string())
            .arg("--out")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "testnet failed: {}", String::from_utf8_lossy(&out.stderr));
        let publics = (0..N)
            .map(|i| {
                let text = std::fs::read_to_string(dir.path().join(format!("node{i}.key"))).unwrap();
                let mut secret = [0u8; 32];
                for (j, b) in secret.iter_mut().enumerate() {
                    *b = u8::from_str_radix(&text.trim()[2 * j..2 * j + 2], 16).unwrap();
                }
                hex(&Keypair::from_secret(&secret).public().0)
            })
            .collect();
        let mut net = Net {
            dir,
            base_port,
            children: (0..N).map(|_| None).collect(),
            publics,
            committed: Vec::new(),
            client_key: Keypair::from_secret(&[42; 32]),
            seq: 0,
        };
        for i in 0..N {
            net.start(i);
        }
        net
    }

    fn log(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node{i}.log"))
    }

    fn start(&mut self, i: usize) {
        assert!(self.children[i].is_none());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log(i)).unwrap();
        let child = Command::new(BIN)
            .args(["run", "--log-level", "info", "--config"])
            .arg(self.dir.path().join(format!("node{i}.toml")))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children[i] = Some(child);
    }

    fn kill(&mut self, i: usize) {
        let mut c = self.children[i].take().expect("running");
        c.kill().unwrap(); // SIGKILL
        c.wait().unwrap();
    }

    fn client(&self, i: usize) -> std::io::Result<Client> {
        Client::connect(("127.0.0.1", self.base_port + 100 + i as u16), Duration::from_secs(2))
    }

    fn status(&self, i: usize) -> Option<RemoteStatus> {
        self.client(i).and_then(|mut c| c.status()).ok()
    }

    fn running(&self) -> Vec<usize> {
        (0..N).filter(|i| self.children[*i].is_some()).collect()
    }

    fn heights(&self) -> Vec<u64> {
        self.running().into_iter().map(|i| self.status(i).map_or(0, |s| s.height)).collect()
    }

    /// Fails the test, keeping the nodes' logs and printing their tails.
    fn fail(&self, what: &str) -> ! {
        let keep = std::env::temp_dir().join(format!("hotstuff-processes-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&keep);
        for i in 0..N {
            let log = std::fs::read_to_string(self.log(i)).unwrap_or_default();
            let _ = std::fs::write(keep.join(format!("node{i}.log")), &log);
            let tail: Vec<&str> = log.lines().rev().take(8).collect();
            eprintln!("--- node {i} log tail (newest first):\n{}", tail.join("\n"));
        }
        panic!("{what}; heights {:?}; full logs in {}", self.heights(), keep.display());
    }

    /// Waits until `cond` holds, or fails with `what` and the nodes' logs' tails.
    fn wait(&self, what: &str, timeout: Duration, mut cond: impl FnMut(&Net) -> bool) -> Duration {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if cond(self) {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        self.fail(&format!("{what}: not within {timeout:?}"))
    }

    /// Puts through node `i` and waits until node `i` has committed it. (Node `i` may lead the
    /// view just before a dead leader's: its block is then certified by the timeout votes,
    /// which carry the votes for it.)
    /// Like a careful client, it first waits until node `i` has committed the client's earlier
    /// writes (a node behind would refuse the next sequence number as out of order).
    fn put(&mut self, i: usize, key: &str, value: &str) {
        let mut c = self.client(i).unwrap();
        let (me, seq) = (self.client_key.public(), self.seq);
        self.wait(&format!("node {i} has the client's earlier writes"), Duration::from_secs(20), |_| {
            c.seq(&me).is_ok_and(|(_, next)| next >= seq)
        });
        let (chain, _) = c.seq(&self.client_key.public()).unwrap();
        let op = Op::Put { key: key.as_bytes().to_vec(), value: value.as_bytes().to_vec() };
        c.submit(&SignedTx::sign(chain, &self.client_key, self.seq, op)).unwrap();
        self.seq += 1;
        self.wait(&format!("put {key} via node {i}"), Duration::from_secs(20), |_| {
            c.get(key).ok().flatten().as_deref() == Some(value)
        });
        self.committed.push((key.to_string(), value.to_string()));
    }

    /// Every acknowledged transaction is readable on node `i`.
    fn check_all_committed(&self, i: usize) {
        let mut c = self.client(i).unwrap_or_else(|e| self.fail(&format!("connect to node {i}: {e}")));
        for (k, v) in &self.committed {
            let got = c.get(k).unwrap_or_else(|e| self.fail(&format!("get {k} from node {i}: {e}")));
            assert_eq!(got.as_deref(), Some(v.as_str()), "node {i} lost committed key {k}");
        }
    }

    fn leader(&self, via: usize) -> usize {
        let s = self.status(via).expect("status");
        self.publics.iter().position(|p| *p == s.leader).expect("the leader is a validator")
    }
}

#[test]
fn kill_restart_and_full_restart_keep_every_committed_transaction() {
    let started = Instant::now();
    let mut net = Net::new();
    net.wait("all nodes commit", Duration::from_secs(30), |n| n.heights().iter().all(|h| *h >= 3));
    for t in 0..4 {
        net.put(t % N, &format!("warm{t}"), &format!("w{t}"));
    }

    // Kill -9 one node, then the current leader five times in a row; restart each.
    for round in 0..6 {
        let alive = (round + 1) % N;
        // Let the view move on by a varying amount, so the leader killed is not always the same.
        std::thread::sleep(Duration::from_millis(170 * round as u64));
        let victim = if round == 0 { 3 } else { net.leader(alive) };
        let via = (victim + 1) % N;
        net.kill(victim);
        println!("round {round}: killed node {victim} (-9){}", if round > 0 { ", the leader" } else { "" });
        for t in 0..3 {
            net.put(via, &format!("r{round}-{t}"), &format!("v{round}-{t}"));
        }
        assert!(net.dir.path().join(format!("node{victim}-data/store.redb")).exists());
        net.start(victim);
        let target =
            (0..N).filter(|i| *i != victim).filter_map(|i| net.status(i)).map(|s| s.height).max().unwrap();
        let took = net.wait(&format!("node {victim} catches up to {target}"), Duration::from_secs(30), |n| {
            n.status(victim).is_some_and(|s| s.height >= target)
        });
        println!("round {round}: node {victim} restarted and caught up to height {target} in {took:?}");
        net.put(victim, &format!("after{round}"), "x");
        net.check_all_committed(victim);
    }

    // Stop every node at once, restart them all: the chain continues where it was.
    let before: Vec<u64> = net.heights();
    for i in 0..N {
        net.kill(i);
    }
    println!("killed all; heights were {before:?}");
    for i in 0..N {
        net.start(i);
    }
    let max_before = *before.iter().max().unwrap();
    let took = net.wait("the restarted chain commits past its old height", Duration::from_secs(30), |n| {
        n.heights().iter().all(|h| *h > max_before)
    });
    println!("full restart: every node above height {max_before} after {took:?}");
    net.put(0, "final", "done");

    // Every replica holds every committed transaction and the same count.
    net.wait("replicas agree on the transaction count", Duration::from_secs(15), |n| {
        let counts: Vec<u64> = (0..N).filter_map(|i| n.status(i)).map(|s| s.txs).collect();
        counts.len() == N && counts.iter().all(|c| *c == counts[0])
    });
    for i in 0..N {
        net.check_all_committed(i);
    }
    // ... and the same app state, digest for digest.
    let digests: Vec<String> = (0..N)
        .map(|i| net.client(i).and_then(|mut c| c.digest()).map(|(_, d)| d).unwrap_or_default())
        .collect();
    assert!(
        !digests[0].is_empty() && digests.iter().all(|d| *d == digests[0]),
        "app-state digests differ: {digests:?}"
    );
    let txs = net.status(0).unwrap().txs;
    assert_eq!(txs, net.committed.len() as u64, "committed count equals acknowledged transactions");
    println!("{} transactions committed and kept on all 4 replicas; test took {:?}", txs, started.elapsed());
}
