//! Four validators as separate OS processes (the `hotstuff-node` binary) on loopback. One node
//! is killed with SIGKILL (the current leader, repeatedly) and restarted: it recovers from its
//! store, catches up, and every replica keeps every committed transaction. Then all are killed
//! and restarted: the chain continues from where it was. A node stopped with SIGTERM under
//! load exits cleanly and keeps every transaction it acknowledged; the client gets honest answers
//! and specific errors.

use crate::ports;

use hotstuff_core::Keypair;
use hotstuff_driver_std::kv::auth::{Op, SignedTx};
use hotstuff_driver_std::kv::{hex, Client, Receipt, RemoteStatus, Submitted};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hotstuff-node");
const N: usize = 4;

struct Net {
    n: usize,
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

/// Signs a put with `key`'s next committed sequence number (read from the node) and submits it.
/// Right for a client that waits for each write's commit before the next.
fn signed_put(c: &mut Client, key: &Keypair, k: &str, v: &str) -> std::io::Result<Submitted> {
    let (chain, next) = c.seq(&key.public())?;
    let op = Op::Put { key: k.as_bytes().to_vec(), value: v.as_bytes().to_vec() };
    c.submit(&SignedTx::sign(chain, key, next, op))
}

/// Node `i`'s config file: validators first, then listeners (as `testnet` numbers them).
fn config_name(validators: usize, i: usize) -> String {
    match i.checked_sub(validators) {
        Some(l) => format!("listener{l}.toml"),
        None => format!("node{i}.toml"),
    }
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
    /// `n` validators, started.
    fn new(n: usize) -> Net {
        Net::with(n, 0, |c| c)
    }

    /// `n` validators, started, and the configs of `listeners` listeners (nodes `n..`, not
    /// started), every config file passed through `edit`.
    fn with(n: usize, listeners: usize, edit: impl Fn(String) -> String) -> Net {
        let dir = tempfile::tempdir().unwrap();
        let base_port = ports::free_base_port(n + listeners);
        let out = Command::new(BIN)
            .args(["testnet", "--base-timeout-ms", "300", "--validators"])
            .arg(n.to_string())
            .arg("--listeners")
            .arg(listeners.to_string())
            .arg("--base-port")
            .arg(base_port.to_string())
            .arg("--out")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "testnet failed: {}", String::from_utf8_lossy(&out.stderr));
        for i in 0..n + listeners {
            let path = dir.path().join(config_name(n, i));
            std::fs::write(&path, edit(std::fs::read_to_string(&path).unwrap())).unwrap();
        }
        let publics = (0..n)
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
            n,
            dir,
            base_port,
            children: (0..n + listeners).map(|_| None).collect(),
            publics,
            committed: Vec::new(),
            client_key: Keypair::from_secret(&[42; 32]),
            seq: 0,
        };
        for i in 0..n {
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
            .arg(self.dir.path().join(config_name(self.n, i)))
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

    /// Sends SIGTERM to node `i` and waits for it to exit: how long it took, and its status.
    fn terminate(&mut self, i: usize) -> (Duration, std::process::ExitStatus) {
        let mut c = self.children[i].take().expect("running");
        let start = Instant::now();
        let sent = Command::new("kill").args(["-TERM", &c.id().to_string()]).status().unwrap();
        assert!(sent.success(), "kill -TERM failed");
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return (start.elapsed(), status);
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = c.kill();
                self.fail(&format!("node {i} still running 10 s after SIGTERM"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn client_addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.base_port + 100 + i as u16)
    }

    /// Runs `hotstuff-node client` against node `i`: (success, stdout, stderr).
    fn cli(&self, i: usize, args: &[&str]) -> (bool, String, String) {
        // In the test's directory: the client writes its key file (`client.key`) there.
        let out = Command::new(BIN)
            .current_dir(self.dir.path())
            .args(["client", "--addr", &self.client_addr(i)])
            .args(args)
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    }

    fn client(&self, i: usize) -> std::io::Result<Client> {
        Client::connect(("127.0.0.1", self.base_port + 100 + i as u16), Duration::from_secs(2))
    }

    fn status(&self, i: usize) -> Option<RemoteStatus> {
        self.client(i).and_then(|mut c| c.status()).ok()
    }

    fn running(&self) -> Vec<usize> {
        (0..self.n).filter(|i| self.children[*i].is_some()).collect()
    }

    fn heights(&self) -> Vec<u64> {
        self.running().into_iter().map(|i| self.status(i).map_or(0, |s| s.height)).collect()
    }

    /// Fails the test, keeping the nodes' logs and printing their tails.
    fn fail(&self, what: &str) -> ! {
        let keep = std::env::temp_dir().join(format!("hotstuff-processes-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&keep);
        for i in 0..self.children.len() {
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

    /// Puts through node `i` (signed by the test's client key) and waits until node `i` has
    /// committed the block holding it. (Node `i` may lead the view just before a dead leader's:
    /// its block is then certified by the timeout votes, which carry the votes for it.)
    fn put(&mut self, i: usize, key: &str, value: &str) {
        let mut c = self.client(i).unwrap();
        // Like a careful client, first wait until node `i` has committed the client's earlier
        // writes (a node behind refuses the next sequence number as out of order).
        let (me, seq) = (self.client_key.public(), self.seq);
        self.wait(&format!("node {i} has the client's earlier writes"), Duration::from_secs(20), |_| {
            c.seq(&me).is_ok_and(|(_, next)| next >= seq)
        });
        let tx = signed_put(&mut c, &self.client_key, key, value).unwrap();
        self.seq += 1;
        match c.wait(&tx, Duration::from_secs(20)) {
            Ok(Receipt::Committed(_)) => {}
            other => self.fail(&format!("put {key} via node {i}: {other:?}")),
        }
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
    let mut net = Net::new(N);
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

/// SIGTERM under load: the node exits with status 0 within a second, and after a restart every
/// transaction it acknowledged as committed is there.
#[test]
fn sigterm_under_load_exits_cleanly_and_keeps_every_acknowledged_transaction() {
    let mut net = Net::new(1);
    net.wait("the node commits", Duration::from_secs(30), |n| n.heights().iter().all(|h| *h >= 2));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let loaders: Vec<_> = (0..4)
        .map(|t| {
            let (stop, acked) = (stop.clone(), acked.clone());
            let mut c = net.client(0).unwrap();
            let key = Keypair::from_secret(&[t as u8 + 1; 32]);
            std::thread::spawn(move || {
                for seq in 0.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let (k, v) = (format!("load{t}-{seq}"), format!("value {seq}"));
                    // Any error (the node stopping) ends this client.
                    let Ok(tx) = signed_put(&mut c, &key, &k, &v) else { break };
                    match c.wait(&tx, Duration::from_secs(5)) {
                        Ok(Receipt::Committed(_)) => acked.lock().unwrap().push((k, v)),
                        _ => break,
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let (took, status) = net.terminate(0);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in loaders {
        l.join().unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    println!("SIGTERM: exited with {status} after {took:?}; {} transactions acknowledged", acked.len());
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert!(took < Duration::from_secs(1), "took {took:?} to exit after SIGTERM");
    assert!(acked.len() >= 20, "the load was too light to mean anything: {} acknowledged", acked.len());
    let log = std::fs::read_to_string(net.log(0)).unwrap();
    assert!(log.contains("stopped cleanly"), "no clean stop in the log:\n{log}");
    net.start(0);
    net.committed = acked;
    net.wait("the restarted node serves", Duration::from_secs(20), |n| n.status(0).is_some());
    net.check_all_committed(0);
}

/// A put of the value a key already holds is reported committed only when the block holding
/// this new transaction commits; values with spaces, empty and at the limit go through the
/// command-line client, and one over the limit is refused naming the limit.
#[test]
fn client_answers_are_about_the_clients_own_transaction() {
    let net = Net::new(1);
    net.wait("the node commits", Duration::from_secs(30), |n| n.heights().iter().all(|h| *h >= 2));
    let mut c = net.client(0).unwrap();
    let first = signed_put(&mut c, &net.client_key, "k", "same").unwrap();
    let Receipt::Committed(h1) = c.wait(&first, Duration::from_secs(10)).unwrap() else {
        panic!("not committed")
    };
    assert!(h1 > first.since);
    // The key holds "same" already: the old answer (poll GET for equality) would say committed
    // at once. This transaction (the client's next sequence number, so its own id) commits in
    // a block after `since`.
    let second = signed_put(&mut c, &net.client_key, "k", "same").unwrap();
    assert_ne!(second.id, first.id, "a new signed transaction has its own id");
    assert!(second.since >= h1);
    let Receipt::Committed(h2) = c.wait(&second, Duration::from_secs(10)).unwrap() else {
        panic!("not committed")
    };
    assert!(
        h2 > second.since && h2 > h1,
        "reported the old commit: {h2} (first at {h1}, since {})",
        second.since
    );

    let at_limit = "x".repeat(4096);
    for value in ["two words", "", " leading and trailing ", at_limit.as_str()] {
        let (ok, out, err) = net.cli(0, &["put", "spaced", value]);
        assert!(ok && out.contains("committed at height"), "put {value:?}: {out}{err}");
        let (ok, out, _) = net.cli(0, &["get", "spaced"]);
        assert!(ok && out == format!("{value}\n"), "get after put {value:?}: {out:?}");
    }
    let (ok, _, err) = net.cli(0, &["put", "spaced", &format!("{at_limit}y")]);
    assert!(!ok && err.contains("value of 4097 bytes is over the limit of 4096 bytes"), "{err}");
}

/// Every bad input names what and where: a dead address, a consensus port given to the client,
/// a port in use (by its config field, creating nothing), a key outside the chain.
#[test]
fn operator_errors_name_the_field_the_address_or_the_limit() {
    let mut net = Net::new(1);
    net.wait("the node serves", Duration::from_secs(30), |n| n.status(0).is_some());
    let cfg_path = net.dir.path().join("node0.toml");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();

    // A client to an address where nothing listens.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let out = Command::new(BIN).args(["client", "--addr", &dead.to_string(), "status"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&dead.to_string()) && err.contains("client_listen"),
        "{err}"
    );

    // A client to the consensus port.
    let consensus = format!("127.0.0.1:{}", net.base_port);
    let out = Command::new(BIN).args(["client", "--addr", &consensus, "status"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("consensus port"), "{err}");

    // A second node on the same ports: refused by field, and its data directory not created.
    let taken = |field: &str| {
        let other = cfg.replace("node0-data", "other-data");
        let path = net.dir.path().join(format!("other-{field}.toml"));
        // Only `field` keeps the running node's port.
        let other = other
            .lines()
            .map(|l| {
                let name = l.split(" = ").next().unwrap_or("");
                let free = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
                if ["listen", "client_listen", "metrics_listen"].contains(&name) && name != field {
                    format!("{name} = \"{free}\"")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&path, other).unwrap();
        let out = Command::new(BIN).args(["run", "--config"]).arg(&path).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success() && err.contains(&format!("field `{field}`")), "{field}: {err}");
        assert!(!net.dir.path().join("other-data").exists(), "{field}: the data directory was created");
    };
    taken("listen");
    taken("client_listen");
    taken("metrics_listen");

    // A key that is neither a validator nor a listener of the chain.
    let out = Command::new(BIN)
        .args(["keygen", "--out"])
        .arg(net.dir.path().join("stranger.key"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let stranger = net.dir.path().join("stranger.toml");
    std::fs::write(&stranger, cfg.replace("node0.key", "stranger.key").replace("node0-data", "other-data"))
        .unwrap();
    net.terminate(0);
    let out = Command::new(BIN).args(["run", "--config"]).arg(&stranger).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("key_file") && err.contains("neither a validator"),
        "{err}"
    );
    assert!(!net.dir.path().join("other-data").exists());
}

/// `GET /metrics` of node `i`: the body.
fn scrape(net: &Net, i: usize) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", net.base_port + 200 + i as u16)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.0 200 OK"), "{out}");
    out.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default()
}

/// The value of the sample `name` (with its labels, if any) in a scrape.
fn sample(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{body}"))
}

/// The metrics endpoint of a 4-validator cluster under load: the height rises between
/// scrapes, the histograms fill, and the counters move.
#[test]
fn metrics_endpoint_shows_the_cluster_progressing() {
    let mut net = Net::new(N);
    net.wait("all nodes commit", Duration::from_secs(30), |n| n.heights().iter().all(|h| *h >= 3));
    let first = scrape(&net, 0);
    for t in 0..10 {
        net.put(t % N, &format!("m{t}"), "v");
    }
    // The last put committed at node 1; node 0 (scraped) may be a block behind.
    let (me, writes) = (net.client_key.public(), net.seq);
    net.wait("node 0 has every write", Duration::from_secs(20), |n| {
        n.client(0).and_then(|mut c| c.seq(&me)).is_ok_and(|(_, next)| next >= writes)
    });
    let second = scrape(&net, 0);
    println!("{second}");
    let (h1, h2) =
        (sample(&first, "hotstuff_committed_height"), sample(&second, "hotstuff_committed_height"));
    assert!(h2 > h1 && h1 >= 3.0, "height did not rise: {h1} then {h2}");
    assert!(sample(&second, "hotstuff_view") >= h2);
    assert!(sample(&second, "hotstuff_commit_latency_seconds_count") > 0.0);
    assert!(sample(&second, "hotstuff_commit_latency_seconds_sum") > 0.0);
    assert!(sample(&second, "hotstuff_store_write_latency_seconds_count") > 0.0);
    assert!(sample(&second, "hotstuff_views_ended_total{by=\"qc\"}") > 0.0);
    assert!(sample(&second, "hotstuff_peers_connected") >= 3.0);
    assert!(sample(&second, "hotstuff_net_bytes_total{direction=\"in\"}") > 0.0);
    assert!(sample(&second, "hotstuff_net_bytes_total{direction=\"out\"}") > 0.0);
    assert!(sample(&second, "hotstuff_kv_transactions_committed_total") >= 10.0);
    assert!(sample(&second, "hotstuff_kv_mempool_transactions") >= 0.0);
}

/// `hotstuff-node` with bounded storage and snapshots, as an operator configures it: four
/// validators keep 300 blocks, certify the state root and serve snapshots every 50 heights; a
/// listener started once they have pruned far past genesis cannot block-sync from height 1,
/// catches up by snapshot, and then serves a key written before everything it could have
/// block-synced, and every later one.
#[test]
fn a_listener_started_after_pruning_catches_up_by_snapshot() {
    let storage = "[storage]\nretain_blocks = 300\ncertified_state_root = true\nsnapshot_interval = 50\nsnapshot_sync = true\n";
    let mut net = Net::with(N, 1, |c| {
        let at = c.find("[storage]").expect("a [storage] section");
        let end = c[at..].find("\n\n").map_or(c.len(), |e| at + e + 1);
        format!("{}{storage}{}", &c[..at], &c[end..])
    });
    net.wait("all nodes commit", Duration::from_secs(30), |n| n.heights().iter().all(|h| *h >= 3));
    net.put(0, "early", "before the pruning");
    // Load from several clients (each waits for its write's commit), so that most blocks carry
    // a payload, hence a state root certifying the snapshot below them.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loaders: Vec<_> = (0..6u8)
        .map(|t| {
            let (stop, addr) = (stop.clone(), net.client_addr(t as usize % N));
            std::thread::spawn(move || {
                let key = Keypair::from_secret(&[100 + t; 32]);
                let mut written = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let Ok(mut c) = Client::connect(addr.as_str(), Duration::from_secs(2)) else { continue };
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let Ok(tx) = signed_put(&mut c, &key, &format!("load{t}"), &written.to_string())
                        else {
                            break;
                        };
                        if !matches!(c.wait(&tx, Duration::from_secs(10)), Ok(Receipt::Committed(_))) {
                            break;
                        }
                        written += 1;
                    }
                }
                written
            })
        })
        .collect();
    let took = net.wait("validators past 3 windows", Duration::from_secs(120), |n| {
        n.heights().iter().all(|h| *h >= 900)
    });
    println!("validators at {:?} after {took:?}", net.heights());
    let listener = N;
    net.start(listener);
    let took = net.wait("the listener catches up", Duration::from_secs(60), |n| {
        let top = n.heights().into_iter().min().unwrap_or(0);
        n.status(listener).is_some_and(|s| s.height + 20 >= top)
    });
    let log = std::fs::read_to_string(net.log(listener)).unwrap();
    let installed = log.lines().find(|l| l.contains("snapshot installed")).map(str::to_string);
    println!("listener caught up in {took:?}: {installed:?}");
    if installed.is_none() {
        net.fail("the listener caught up without a snapshot");
    }
    for bad in [
        "snapshot offer refused",
        "bad snapshot chunk",
        "snapshot server does not answer",
        "no snapshot server left",
    ] {
        assert!(!log.contains(bad), "the listener logged {bad:?}:\n{log}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written: Vec<u64> = loaders.into_iter().map(|l| l.join().unwrap()).collect();
    println!("load: {written:?} writes per client");
    net.put(1, "late", "after the snapshot");
    let mut c = net.client(listener).unwrap();
    net.wait("the listener has the last write", Duration::from_secs(20), |_| {
        c.get("late").is_ok_and(|v| v.as_deref() == Some("after the snapshot"))
    });
    net.check_all_committed(listener);
    for (t, w) in written.iter().enumerate() {
        let v = c.get(&format!("load{t}")).unwrap();
        let expect = w.checked_sub(1).map(|w| w.to_string());
        assert_eq!(v, expect, "client {t}'s last committed write on the listener");
    }
}
