//! Validator-set changes across real `hotstuff-node` processes on loopback (redb stores), driven
//! through the client port with signed transactions:
//! - bad transactions (forged, replayed, out of order, another chain's, unsigned) and bad
//!   changes (unauthorised, an address signed by another key, a zero or oversized power, a
//!   non-member) are refused with a reason, and the chain goes on (a change that would empty
//!   the set is refused in `validate_block`: see the kv unit tests);
//! - a 5th machine `join`s as a listener, is added with power 1, and then proposes blocks (a
//!   write submitted only to it commits: a node proposes its own mempool's transactions);
//! - its power changes; an original validator is removed (it keeps following);
//! - the whole set is replaced by three new validators with powers 1, 2 and 3, and a
//!   validator is killed with SIGKILL in the middle of a change and restarted.
//!
//! The longest commit gap around each change (while it commits and for 2 s after) must stay
//! within three base view timeouts.
//!
//! After every step every acknowledged write is readable on every running node and all of
//! them report the same app-state digest at the same height.

mod ports;

use hotstuff_core::Keypair;
use hotstuff_driver_std::kv::auth::{Op, SignedTx};
use hotstuff_driver_std::kv::governance::{sign_address, Change};
use hotstuff_driver_std::kv::{hex, Client};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hotstuff-node");
/// Nodes the test may run: 4 genesis validators and 4 that join.
const MAX: usize = 8;
const BASE_TIMEOUT_MS: u64 = 400;

struct Node {
    config: PathBuf,
    key: Keypair,
    child: Option<Child>,
}

struct Net {
    dir: tempfile::TempDir,
    base_port: u16,
    nodes: Vec<Node>,
    chain: u64,
    governance: Keypair,
    gov_seq: u64,
    client: Keypair,
    seq: u64,
    /// Every write acknowledged as committed: (key, value).
    committed: Vec<(String, String)>,
    /// The longest commit gap seen around a change.
    max_gap: Duration,
}

impl Drop for Net {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(c) = n.child.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn read_key(path: &Path) -> Keypair {
    hotstuff_driver_std::kv::auth::read_key_file(path).unwrap()
}

impl Net {
    fn new() -> Net {
        let dir = tempfile::tempdir().unwrap();
        let base_port = ports::free_base_port(MAX);
        let out = Command::new(BIN)
            .args(["testnet", "--validators", "4", "--base-timeout-ms", &BASE_TIMEOUT_MS.to_string()])
            .args(["--chain-id", "9", "--base-port", &base_port.to_string(), "--out"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "testnet failed: {}", String::from_utf8_lossy(&out.stderr));
        let nodes = (0..4)
            .map(|i| Node {
                config: dir.path().join(format!("node{i}.toml")),
                key: read_key(&dir.path().join(format!("node{i}.key"))),
                child: None,
            })
            .collect();
        let governance = read_key(&dir.path().join("governance.key"));
        let mut net = Net {
            dir,
            base_port,
            nodes,
            chain: 9,
            governance,
            gov_seq: 0,
            client: Keypair::from_secret(&[42; 32]),
            seq: 0,
            committed: Vec::new(),
            max_gap: Duration::ZERO,
        };
        for i in 0..4 {
            net.start(i);
        }
        net
    }

    fn log(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node{i}.log"))
    }

    fn start(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log(i)).unwrap();
        let child = Command::new(BIN)
            .args(["run", "--log-level", "info", "--config"])
            .arg(&self.nodes[i].config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.nodes[i].child = Some(child);
    }

    fn kill(&mut self, i: usize) {
        let mut c = self.nodes[i].child.take().expect("running");
        c.kill().unwrap(); // SIGKILL
        c.wait().unwrap();
    }

    /// A new machine: `join` writes its key and config from the genesis file (with `peers`
    /// dialled besides the genesis validators); it starts as a listener.
    fn join(&mut self, peers: &[usize]) -> usize {
        let i = self.nodes.len();
        let out_dir = self.dir.path().join(format!("join{i}"));
        let mut cmd = Command::new(BIN);
        cmd.args(["join", "--genesis"])
            .arg(self.dir.path().join("genesis.toml"))
            .arg("--out")
            .arg(&out_dir)
            .args(["--listen", &format!("127.0.0.1:{}", self.base_port + i as u16)])
            .args(["--client-listen", &format!("127.0.0.1:{}", self.base_port + 100 + i as u16)])
            .args(["--base-timeout-ms", &BASE_TIMEOUT_MS.to_string()]);
        for p in peers {
            cmd.arg("--peer").arg(format!(
                "{}=127.0.0.1:{}",
                hex(&self.nodes[*p].key.public().0),
                self.base_port + *p as u16
            ));
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "join failed: {}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("validator add --validator"), "join prints the add command: {stdout}");
        self.nodes.push(Node {
            config: out_dir.join("node.toml"),
            key: read_key(&out_dir.join("node.key")),
            child: None,
        });
        self.start(i);
        i
    }

    fn running(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].child.is_some()).collect()
    }

    fn client(&self, i: usize) -> std::io::Result<Client> {
        Client::connect(("127.0.0.1", self.base_port + 100 + i as u16), Duration::from_secs(2))
    }

    fn height(&self, i: usize) -> u64 {
        self.client(i).and_then(|mut c| c.status()).map_or(0, |s| s.height)
    }

    fn fail(&self, what: &str) -> ! {
        let keep = std::env::temp_dir().join(format!("hotstuff-validator-changes-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&keep);
        for i in 0..self.nodes.len() {
            let log = std::fs::read_to_string(self.log(i)).unwrap_or_default();
            let _ = std::fs::write(keep.join(format!("node{i}.log")), &log);
            let tail: Vec<&str> = log.lines().rev().take(6).collect();
            eprintln!("--- node {i} log tail (newest first):\n{}", tail.join("\n"));
        }
        let heights: Vec<u64> = self.running().iter().map(|i| self.height(*i)).collect();
        panic!("{what}; heights {heights:?}; full logs in {}", keep.display());
    }

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

    /// Submits `tx` through node `i`: `Ok` if queued, the node's reason if refused.
    fn submit(&self, i: usize, tx: &SignedTx) -> Result<(), String> {
        let mut c = self.client(i).map_err(|e| e.to_string())?;
        c.submit(tx).map(drop).map_err(|e| e.to_string())
    }

    /// Waits until node `i` has committed `client`'s transaction number `seq`.
    fn wait_seq(&self, i: usize, client: &Keypair, seq: u64, what: &str) -> Duration {
        self.wait(what, Duration::from_secs(30), |n| {
            n.client(i).and_then(|mut c| c.seq(&client.public())).is_ok_and(|(_, next)| next > seq)
        })
    }

    /// A signed put through node `i`, waited for until committed there. Like a careful client,
    /// it first waits until node `i` has committed the client's earlier writes (a node behind
    /// would refuse the next number as out of order).
    fn put(&mut self, i: usize, key: &str, value: &str) -> Duration {
        if self.seq > 0 {
            self.wait_seq(i, &self.client.clone(), self.seq - 1, &format!("node {i} catches up"));
        }
        let op = Op::Put { key: key.as_bytes().to_vec(), value: value.as_bytes().to_vec() };
        let tx = SignedTx::sign(self.chain, &self.client, self.seq, op);
        self.submit(i, &tx).unwrap_or_else(|e| self.fail(&format!("put {key} via node {i}: {e}")));
        let took = self.wait_seq(i, &self.client.clone(), self.seq, &format!("put {key} via node {i}"));
        self.seq += 1;
        self.committed.push((key.to_string(), value.to_string()));
        took
    }

    /// A change signed by the governance key, through node `via`, waited for until committed.
    fn change(&mut self, via: usize, change: Change) {
        if self.gov_seq > 0 {
            self.wait_seq(via, &self.governance.clone(), self.gov_seq - 1, &format!("node {via} catches up"));
        }
        let tx = SignedTx::sign(self.chain, &self.governance, self.gov_seq, Op::Validator(change.clone()));
        self.submit(via, &tx).unwrap_or_else(|e| self.fail(&format!("{change:?}: {e}")));
        // Until the change commits and for 2 s after (the new epoch's first blocks), the
        // longest time `via`'s committed height stood still.
        let (start, mut last, mut gap, mut done_at) =
            (Instant::now(), (self.height(via), Instant::now()), Duration::ZERO, None);
        while done_at.is_none_or(|t: Instant| t.elapsed() < Duration::from_secs(2)) {
            if start.elapsed() > Duration::from_secs(40) {
                self.fail(&format!("{change:?}: not committed within 40 s"));
            }
            let h = self.height(via);
            if h > last.0 {
                gap = gap.max(last.1.elapsed());
                last = (h, Instant::now());
            }
            if done_at.is_none()
                && self
                    .client(via)
                    .and_then(|mut c| c.seq(&self.governance.public()))
                    .is_ok_and(|(_, n)| n > self.gov_seq)
            {
                done_at = Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        gap = gap.max(last.1.elapsed());
        println!("change {} committed; longest commit gap around it: {gap:?}", self.gov_seq);
        self.max_gap = self.max_gap.max(gap);
        self.gov_seq += 1;
    }

    fn add(&self, i: usize, power: u64) -> Change {
        let key = &self.nodes[i].key;
        let address = format!("127.0.0.1:{}", self.base_port + i as u16);
        Change::Add {
            key: key.public(),
            power,
            address_sig: sign_address(self.chain, key, &address),
            address,
        }
    }

    /// The writes are quiet here (each was waited for), so the app state stands still while
    /// empty blocks go on committing: every running node must report the same app-state digest
    /// (at whatever height it has reached; the digest covers the app state only), and no two
    /// nodes may ever report different digests at the same height. Then every acknowledged
    /// write is readable on each.
    fn check_agree(&self, what: &str) {
        let nodes = self.running();
        let mut at_height: std::collections::BTreeMap<u64, (usize, String)> = Default::default();
        let mut last: Vec<Option<std::io::Result<(u64, String)>>> =
            (0..self.nodes.len()).map(|_| None).collect();
        let deadline = Instant::now() + Duration::from_secs(40);
        self.wait(&format!("{what}: every node's digest"), Duration::from_secs(41), |n| {
            if Instant::now() > deadline {
                n.fail(&format!("{what}: the nodes' digests differ; last answers {last:?}"));
            }
            for i in &nodes {
                let answer = n.client(*i).and_then(|mut c| c.digest());
                if let Ok((height, digest)) = &answer {
                    let (j, other) = at_height.entry(*height).or_insert((*i, digest.clone()));
                    if other != digest {
                        n.fail(&format!(
                            "{what}: nodes {i} and {j} differ at height {height}: {digest} vs {other}"
                        ));
                    }
                }
                last[*i] = Some(answer);
            }
            let digests: Vec<Option<&String>> = nodes
                .iter()
                .map(|i| last[*i].as_ref().and_then(|a| a.as_ref().ok()).map(|(_, d)| d))
                .collect();
            digests.iter().all(|d| d.is_some() && *d == digests[0])
        });
        for i in &nodes {
            let mut c = self.client(*i).unwrap_or_else(|e| self.fail(&format!("connect to node {i}: {e}")));
            for (k, v) in &self.committed {
                let got = c.get(k).unwrap_or_else(|e| self.fail(&format!("get {k} from node {i}: {e}")));
                assert_eq!(got.as_deref(), Some(v.as_str()), "{what}: node {i} lacks committed key {k}");
            }
        }
        println!(
            "{what}: nodes {nodes:?} agree (app-state digest) and hold all {} writes",
            self.committed.len()
        );
    }

    fn is_leader(&self, via: usize, i: usize) -> bool {
        let want = hex(&self.nodes[i].key.public().0);
        self.client(via).and_then(|mut c| c.status()).is_ok_and(|s| s.leader == want)
    }
}

#[test]
fn validators_join_change_power_leave_and_are_replaced_while_clients_write() {
    let started = Instant::now();
    let mut net = Net::new();
    net.wait("genesis validators commit", Duration::from_secs(30), |n| (0..4).all(|i| n.height(i) >= 2));
    for t in 0..4 {
        net.put(t, &format!("warm{t}"), &format!("w{t}"));
    }

    // Bad transactions: each refused with its reason; the chain goes on.
    let (chain, client) = (net.chain, net.client.clone());
    let put = |v: &str| Op::Put { key: b"bad".to_vec(), value: v.as_bytes().to_vec() };
    let mut forged = SignedTx::sign(chain, &client, net.seq, put("a"));
    forged.op = put("forged");
    let e = net.submit(0, &forged).unwrap_err();
    assert!(e.contains("forged transaction"), "{e}");
    let e = net.submit(1, &SignedTx::sign(chain, &client, 0, put("replay"))).unwrap_err();
    assert!(e.contains("replayed transaction: sequence number 0"), "{e}");
    let e = net.submit(2, &SignedTx::sign(chain, &client, net.seq + 5, put("gap"))).unwrap_err();
    assert!(e.contains("out-of-order transaction"), "{e}");
    let e = net.submit(3, &SignedTx::sign(chain + 1, &client, net.seq, put("other-chain"))).unwrap_err();
    assert!(e.contains("forged transaction"), "{e}");
    let e = net.client(0).unwrap().put("k", "unsigned").unwrap_err().to_string();
    assert!(e.contains("unsigned write refused"), "{e}");
    println!("bad transactions refused: forged, replayed, out of order, another chain's, unsigned");

    // A new machine joins as a listener and follows.
    // New machines join as listeners and follow: node 4 (seeded with the genesis validators
    // only), then three more that later replace the whole set (each also seeded with the ones
    // that joined before it, which are not in the genesis file).
    let mut joined = Vec::new();
    for _ in 0..4 {
        let n = net.join(&joined);
        let took = net.wait(&format!("node {n} follows as a listener"), Duration::from_secs(180), |x| {
            x.height(n) >= x.height(0)
        });
        println!("node {n} joined as a listener and caught up in {took:?}");
        joined.push(n);
    }
    let (n4, n5, n6, n7) = (joined[0], joined[1], joined[2], joined[3]);

    // Bad changes: each refused with its reason.
    let mallory = Keypair::from_secret(&[66; 32]);
    let add4 = net.add(n4, 1);
    let e = net.submit(0, &SignedTx::sign(chain, &mallory, 0, Op::Validator(add4.clone()))).unwrap_err();
    assert!(e.contains("unauthorised validator-set change"), "{e}");
    let Change::Add { key, address, .. } = add4.clone() else { unreachable!() };
    let redirect = Change::Add {
        key,
        power: 1,
        address_sig: sign_address(chain, &net.governance, "evil.example:1"),
        address: "evil.example:1".into(),
    };
    let e = net.submit(0, &SignedTx::sign(chain, &net.governance, 0, Op::Validator(redirect))).unwrap_err();
    assert!(e.contains("is not signed by"), "{e}");
    let zero = Change::Add {
        key,
        power: 0,
        address_sig: sign_address(chain, &net.nodes[n4].key, &address),
        address,
    };
    let e = net.submit(0, &SignedTx::sign(chain, &net.governance, 0, Op::Validator(zero))).unwrap_err();
    assert!(e.contains("power 0 is out of range"), "{e}");
    let e = net
        .submit(
            0,
            &SignedTx::sign(
                chain,
                &net.governance,
                0,
                Op::Validator(Change::Remove { key: mallory.public() }),
            ),
        )
        .unwrap_err();
    assert!(e.contains("is not a member"), "{e}");
    let huge = Change::SetPower { key: net.nodes[1].key.public(), power: 1 << 41 };
    let e = net.submit(0, &SignedTx::sign(chain, &net.governance, 0, Op::Validator(huge))).unwrap_err();
    assert!(e.contains("power 2199023255552 is out of range"), "{e}");
    println!(
        "bad changes refused: unauthorised, address signed by another key, zero power, non-member, oversized power"
    );

    // The 5th machine is added with power 1; then it proposes: a write given only to it commits.
    net.change(0, add4);
    net.wait("the new validator is a leader", Duration::from_secs(30), |n| n.is_leader(0, n4));
    let took = net.put(n4, "via-new", "1");
    println!("added node {n4} (power 1); a write through it committed in {took:?}");
    net.check_agree("after the add");
    // Kill -9 the leader of the new epoch's current view (any one of five equal powers may
    // fail), write through another node, restart it.
    let leader = (0..=n4).find(|i| net.is_leader(1, *i)).unwrap_or(n4);
    net.kill(leader);
    let took = net.put((leader + 1) % (n4 + 1), "leader-killed", "k");
    println!("killed the leader, node {leader}: a write committed in {took:?}");
    net.start(leader);
    net.check_agree("after restarting the killed leader");

    // A power change, with writes through it.
    net.change(1, Change::SetPower { key: net.nodes[n4].key.public(), power: 3 });
    net.put(n4, "after-power", "3");
    net.check_agree("after the power change");

    // An original validator is removed: commits go on; it keeps following as a listener.
    net.change(2, Change::Remove { key: net.nodes[0].key.public() });
    for t in 0..3 {
        net.put(1 + t % 3, &format!("after-remove{t}"), "x");
    }
    net.check_agree("after removing node 0");

    // The whole set is replaced by the three listeners, with powers 1, 2, 3. A validator is
    // killed (-9) in the middle of the change and restarted.
    net.change(1, net.add(n5, 1));
    net.change(1, net.add(n6, 2));
    // The add of n7 is submitted; node 2 is killed before it commits.
    net.wait_seq(1, &net.governance.clone(), net.gov_seq - 1, "node 1 catches up");
    let add7 = SignedTx::sign(chain, &net.governance, net.gov_seq, Op::Validator(net.add(n7, 3)));
    net.submit(1, &add7).unwrap_or_else(|e| net.fail(&e));
    net.kill(2);
    net.wait_seq(1, &net.governance.clone(), net.gov_seq, "add n7 with node 2 down");
    net.gov_seq += 1;
    net.start(2);
    for old in [1, 2, 3, n4] {
        net.change(n5, Change::Remove { key: net.nodes[old].key.public() });
    }
    for t in 0..3 {
        net.put([n5, n6, n7][t], &format!("new-set{t}"), "y");
    }
    // Kill -9 the validator of power 1 (the other two hold 5 of 6, a quorum): commits go on;
    // restarted, it catches up.
    net.kill(n5);
    net.put(n6, "n5-killed", "z");
    net.start(n5);
    net.put(n7, "n5-back", "z");
    net.check_agree("after replacing the whole set");
    println!(
        "done in {:?}; longest commit gap around a change {:?} (base view timeout {BASE_TIMEOUT_MS} ms)",
        started.elapsed(),
        net.max_gap
    );
    let bound = Duration::from_millis(3 * BASE_TIMEOUT_MS);
    assert!(net.max_gap <= bound, "a commit gap around a change of {:?}, over {bound:?}", net.max_gap);
}
