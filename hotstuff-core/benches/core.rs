//! How much the core costs beyond the signature checks it cannot avoid.
//!
//! Criterion groups (all in one run):
//! - `ed25519_verify/1`: one raw `VerifyingKey::verify_strict` (the baseline);
//! - `handle_vote/*`: `Replica::handle` of one valid vote on the next view's leader (not yet a
//!   quorum), n = 4 and 64 validators, next to one raw verify of the same signature;
//! - `handle_proposal/*`: `Replica::handle` of one valid proposal whose justify QC carries n
//!   signatures (fresh replica, so the QC is not in the verification cache), n = 4 and 64, next
//!   to the raw checks it must do (1 `verify_strict` + `ed25519_dalek::verify_batch` of n);
//! - `verify_qc/*`: `certificate::verify_qc` (batch) and `verify_qc_unbatched`, next to n raw
//!   `verify_strict` and one raw `verify_batch` of n, for n = 4, 16, 64.
//!
//! Setup (keys, signed messages, replicas) is never timed: inputs that change replica state get a
//! fresh replica per iteration through `iter_batched`. Every timed `handle` must return `Ok`
//! (checked once before timing, with its effect, and asserted on every timed call), so no error
//! path is measured. The raw side of `handle_vote` and `handle_proposal` runs on the very same
//! untimed setup (it builds the replica and drops it unused), so cache and allocator state are
//! alike on both sides: with a different heap layout, dalek's `verify_batch` alone (its ~170 KB
//! of Straus tables for n = 64) can swing by 5% from page faults.
//!
//! After the groups, `main` prints a table of ratios measured in the same run with its own
//! timing, in several child processes (see `summary`): within each, a ratio's two sides are
//! interleaved every ~1 ms and the median per-round ratio is kept; the table shows the median
//! over processes and the min..max across them.

use criterion::{criterion_group, BatchSize, BenchmarkId, Criterion};
use ed25519_dalek::{Signature as DalekSignature, VerifyingKey};
use hotstuff_core::certificate::{verify_qc, verify_qc_unbatched};
use hotstuff_core::crypto::{block_subject, signed_bytes, vote_subject, SignKind, SIGNED_LEN};
use hotstuff_core::Epoch;
use hotstuff_core::{
    genesis_hash, Action, AppOutcome, Block, BlockHash, ChainId, Config, DefaultPacemaker, Height, Input,
    InputError, Keypair, LeaderHistory, Message, Pacemaker, Proposal, PublicKey, QuorumCertificate,
    Recovered, Replica, ValidatorSet, View, Vote,
};
use std::hint::black_box;
use std::time::{Duration, Instant};

const CHAIN: ChainId = ChainId(7);
/// Block payload size used for proposals (small: the bench is about the core, not hashing payloads).
const PAYLOAD: usize = 256;
const VOTE_NS: [usize; 2] = [4, 64];
const PROPOSAL_NS: [usize; 2] = [4, 64];
const QC_NS: [usize; 3] = [4, 16, 64];

// ---------------------------------------------------------------------------------------------
// Fixtures (all untimed)
// ---------------------------------------------------------------------------------------------

/// n validators with power 1 each, and their keys.
struct Net {
    seeds: Vec<([u8; 32], PublicKey)>,
    validators: ValidatorSet,
}

impl Net {
    fn new(n: usize) -> Self {
        let seeds: Vec<([u8; 32], PublicKey)> = (0..n)
            .map(|i| {
                let mut seed = [0xA5u8; 32];
                seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
                (seed, Keypair::from_secret(&seed).public())
            })
            .collect();
        let validators = ValidatorSet::new(seeds.iter().map(|(_, pk)| (*pk, 1))).expect("validator set");
        Net { seeds, validators }
    }

    fn keypair(&self, pk: &PublicKey) -> Keypair {
        let (seed, _) = self.seeds.iter().find(|(_, p)| p == pk).expect("a validator");
        Keypair::from_secret(seed)
    }

    fn keys(&self) -> impl Iterator<Item = PublicKey> + '_ {
        self.seeds.iter().map(|(_, pk)| *pk)
    }

    fn leader(&self, view: View) -> PublicKey {
        DefaultPacemaker::round_robin().leader(view, &self.validators, &LeaderHistory::default())
    }

    fn replica(&self, me: &PublicKey) -> Replica {
        Replica::new(
            Config::new(CHAIN),
            self.keypair(me),
            DefaultPacemaker::round_robin(),
            Recovered::genesis(CHAIN, self.validators.clone()),
        )
        .expect("replica")
    }

    /// A QC for `block` in `view` signed by every validator, in canonical (ascending) order.
    fn qc(&self, view: View, block: BlockHash) -> QuorumCertificate {
        let mut signatures: Vec<_> = self
            .keys()
            .map(|pk| {
                (pk, self.keypair(&pk).sign(CHAIN, SignKind::Vote, view, &vote_subject(&block, Epoch(0))))
            })
            .collect();
        signatures.sort_by_key(|(pk, _)| *pk);
        QuorumCertificate { epoch: Epoch(0), view, block, signatures }
    }

    fn proposal(&self, view: View, height: u64, justify: QuorumCertificate) -> Proposal {
        let proposer = self.leader(view);
        let block = Block {
            epoch: hotstuff_core::Epoch(0),
            view,
            height: Height(height),
            justify,
            proposer,
            payload: vec![0x5A; PAYLOAD],
        };
        let signature =
            self.keypair(&proposer).sign(CHAIN, SignKind::Proposal, view, &block_subject(&block.hash()));
        Proposal { block, tc: None, signature }
    }

    fn vk(pk: &PublicKey) -> VerifyingKey {
        VerifyingKey::from_bytes(&pk.0).expect("valid key")
    }
}

/// One raw strict verification, prepared.
struct RawSig {
    vk: VerifyingKey,
    msg: [u8; SIGNED_LEN],
    sig: DalekSignature,
}

impl RawSig {
    #[inline(never)] // a separate symbol for profilers
    fn verify(&self) -> bool {
        black_box(&self.vk).verify_strict(black_box(&self.msg), black_box(&self.sig)).is_ok()
    }
}

/// A raw `verify_batch` of n signatures, prepared.
struct RawBatch {
    msgs: Vec<[u8; SIGNED_LEN]>,
    sigs: Vec<DalekSignature>,
    vks: Vec<VerifyingKey>,
}

impl RawBatch {
    fn of_qc(qc: &QuorumCertificate) -> Self {
        let msg = signed_bytes(CHAIN, SignKind::Vote, qc.view, &vote_subject(&qc.block, Epoch(0)));
        RawBatch {
            msgs: vec![msg; qc.signatures.len()],
            sigs: qc.signatures.iter().map(|(_, s)| DalekSignature::from_bytes(&s.0)).collect(),
            vks: qc.signatures.iter().map(|(pk, _)| Net::vk(pk)).collect(),
        }
    }

    #[inline(never)] // a separate symbol for profilers
    fn verify_batch(&self) -> bool {
        let msgs: Vec<&[u8]> = self.msgs.iter().map(|m| &m[..]).collect();
        ed25519_dalek::verify_batch(black_box(&msgs), black_box(&self.sigs), black_box(&self.vks)).is_ok()
    }

    #[inline(never)] // a separate symbol for profilers
    fn verify_each(&self) -> bool {
        self.msgs
            .iter()
            .zip(&self.sigs)
            .zip(&self.vks)
            .all(|((m, s), vk)| black_box(vk).verify_strict(black_box(m), black_box(s)).is_ok())
    }
}

/// The next view's leader receiving one vote for view 1 from another validator.
struct VoteFixture {
    net: Net,
    leader: PublicKey,
    input: Input,
    raw: RawSig,
}

impl VoteFixture {
    fn new(n: usize) -> Self {
        let net = Net::new(n);
        let view = View(1);
        let leader = net.leader(view.next());
        let voter = net.keys().find(|k| *k != leader).expect("a second validator");
        let block = BlockHash([0x11; 32]);
        let signature =
            net.keypair(&voter).sign(CHAIN, SignKind::Vote, view, &vote_subject(&block, Epoch(0)));
        let raw = RawSig {
            vk: Net::vk(&voter),
            msg: signed_bytes(CHAIN, SignKind::Vote, view, &vote_subject(&block, Epoch(0))),
            sig: DalekSignature::from_bytes(&signature.0),
        };
        let input = Input::Message {
            from: voter,
            message: Message::Vote(Vote { epoch: Epoch(0), view, block, voter, signature }),
        };
        let f = VoteFixture { net, leader, input, raw };
        f.sanity();
        f
    }

    fn setup(&self) -> (Replica, Input) {
        let mut r = self.net.replica(&self.leader);
        while r.poll_action().is_some() {}
        (r, self.input.clone())
    }

    /// The timed part: one `handle`.
    #[inline(never)] // a separate symbol for profilers
    fn run((mut r, input): (Replica, Input)) -> (Replica, Result<(), InputError>) {
        let res = r.handle(input);
        assert!(res.is_ok(), "timed vote refused: {res:?}");
        (r, res)
    }

    /// The raw side of the comparison, on exactly the same (untimed) setup as `run`, so the
    /// cache and allocator state match: only the signature check it must do.
    #[inline(never)] // a separate symbol for profilers
    fn run_raw(&self, (r, input): (Replica, Input)) -> (Replica, Input) {
        assert!(self.raw.verify());
        (r, input)
    }

    /// The vote is accepted, counted (a second copy is a duplicate) and forms no QC.
    fn sanity(&self) {
        assert!(self.raw.verify(), "raw vote signature must verify");
        let (r, res) = Self::run(self.setup());
        let mut r = black_box(r);
        assert_eq!(res, Ok(()));
        assert!(r.poll_action().is_none(), "one vote must not reach a quorum");
        assert_eq!(r.handle(self.input.clone()), Err(InputError::Duplicate), "the vote was counted");
        assert_eq!(r.view(), View(1));
    }
}

/// A replica (not the leader of views 1 or 2) that has b1 (view 1) validated and voted for,
/// receiving the proposal of b2 (view 2) whose justify QC for b1 carries all n signatures.
struct ProposalFixture {
    net: Net,
    receiver: PublicKey,
    first: Input,
    b1: BlockHash,
    second: Input,
    b2: BlockHash,
    raw_sig: RawSig,
    raw_batch: RawBatch,
}

impl ProposalFixture {
    fn new(n: usize) -> Self {
        let net = Net::new(n);
        let (l1, l2) = (net.leader(View(1)), net.leader(View(2)));
        let receiver = net.keys().find(|k| *k != l1 && *k != l2).expect("a third validator");
        let genesis = genesis_hash(CHAIN, &net.validators);
        let p1 = net.proposal(View(1), 1, QuorumCertificate::genesis(genesis));
        let b1 = p1.block.hash();
        let qc = net.qc(View(1), b1);
        let p2 = net.proposal(View(2), 2, qc.clone());
        let b2 = p2.block.hash();
        let raw_sig = RawSig {
            vk: Net::vk(&l2),
            msg: signed_bytes(CHAIN, SignKind::Proposal, View(2), &block_subject(&b2)),
            sig: DalekSignature::from_bytes(&p2.signature.0),
        };
        let raw_batch = RawBatch::of_qc(&qc);
        let f = ProposalFixture {
            receiver,
            first: Input::Message { from: l1, message: Message::Proposal(p1) },
            b1,
            second: Input::Message { from: l2, message: Message::Proposal(p2) },
            b2,
            raw_sig,
            raw_batch,
            net,
        };
        f.sanity();
        f
    }

    fn setup(&self) -> (Replica, Input) {
        let mut r = self.net.replica(&self.receiver);
        r.handle(self.first.clone()).expect("proposal of b1 accepted");
        r.handle(Input::BlockValidated { hash: self.b1, outcome: Some(AppOutcome::default()) })
            .expect("b1 validated");
        // Act as the driver: acknowledge persists so the vote for b1 is released; drain all.
        while let Some(action) = r.poll_action() {
            if let Action::Persist { seq, .. } = action {
                r.handle(Input::Persisted { seq }).expect("persisted");
            }
        }
        (r, self.second.clone())
    }

    #[inline(never)] // a separate symbol for profilers
    fn run((mut r, input): (Replica, Input)) -> (Replica, Result<(), InputError>) {
        let res = r.handle(input);
        assert!(res.is_ok(), "timed proposal refused: {res:?}");
        (r, res)
    }

    #[inline(never)] // a separate symbol for profilers
    fn raw(&self) -> bool {
        self.raw_sig.verify() & self.raw_batch.verify_batch()
    }

    /// The raw side of the comparison, on exactly the same (untimed) setup as `run` (see
    /// `VoteFixture::run_raw`).
    #[inline(never)] // a separate symbol for profilers
    fn run_raw(&self, (r, input): (Replica, Input)) -> (Replica, Input) {
        assert!(self.raw());
        (r, input)
    }

    /// The proposal is accepted: the QC moves the replica to view 2 and b2 goes to the app.
    fn sanity(&self) {
        assert!(self.raw(), "raw proposal checks must pass");
        let (setup, _) = self.setup();
        assert_eq!(setup.view(), View(1));
        assert_eq!(setup.safety().highest_voted_view, View(1), "receiver voted for b1");
        let (mut r, res) = Self::run(self.setup());
        assert_eq!(res, Ok(()));
        assert_eq!(r.view(), View(2));
        assert_eq!(r.high_qc().view, View(1));
        let mut validate = false;
        while let Some(action) = r.poll_action() {
            validate |= matches!(action, Action::ValidateBlock { hash, .. } if hash == self.b2);
        }
        assert!(validate, "b2 must be sent to the app for validation");
    }
}

/// A QC of view 1 signed by all n validators.
struct QcFixture {
    net: Net,
    genesis: BlockHash,
    qc: QuorumCertificate,
    raw: RawBatch,
}

impl QcFixture {
    fn new(n: usize) -> Self {
        let net = Net::new(n);
        let genesis = genesis_hash(CHAIN, &net.validators);
        let qc = net.qc(View(1), BlockHash([0x22; 32]));
        let raw = RawBatch::of_qc(&qc);
        let f = QcFixture { net, genesis, qc, raw };
        assert!(f.batch() && f.unbatched() && f.raw.verify_batch() && f.raw.verify_each());
        f
    }

    #[inline(never)] // a separate symbol for profilers
    fn batch(&self) -> bool {
        verify_qc(black_box(&self.qc), CHAIN, &self.net.validators, &self.genesis).is_ok()
    }

    #[inline(never)] // a separate symbol for profilers
    fn unbatched(&self) -> bool {
        verify_qc_unbatched(black_box(&self.qc), CHAIN, &self.net.validators, &self.genesis).is_ok()
    }
}

// ---------------------------------------------------------------------------------------------
// Criterion groups
// ---------------------------------------------------------------------------------------------

fn bench_ed25519(c: &mut Criterion) {
    let f = VoteFixture::new(4);
    let mut g = c.benchmark_group("ed25519_verify");
    g.bench_function("1", |b| b.iter(|| assert!(f.raw.verify())));
    g.finish();
}

fn bench_handle_vote(c: &mut Criterion) {
    let mut g = c.benchmark_group("handle_vote");
    for n in VOTE_NS {
        let f = VoteFixture::new(n);
        g.bench_function(BenchmarkId::new("core", n), |b| {
            b.iter_batched(|| f.setup(), VoteFixture::run, BatchSize::SmallInput)
        });
        if n == VOTE_NS[0] {
            g.bench_function("raw_verify", |b| {
                b.iter_batched(|| f.setup(), |x| f.run_raw(x), BatchSize::SmallInput)
            });
        }
    }
    g.finish();
}

fn bench_handle_proposal(c: &mut Criterion) {
    let mut g = c.benchmark_group("handle_proposal");
    for n in PROPOSAL_NS {
        let f = ProposalFixture::new(n);
        g.bench_function(BenchmarkId::new("core", n), |b| {
            b.iter_batched(|| f.setup(), ProposalFixture::run, BatchSize::SmallInput)
        });
        g.bench_function(BenchmarkId::new("raw_verify_plus_batch", n), |b| {
            b.iter_batched(|| f.setup(), |x| f.run_raw(x), BatchSize::SmallInput)
        });
    }
    g.finish();
}

fn bench_verify_qc(c: &mut Criterion) {
    let mut g = c.benchmark_group("verify_qc");
    for n in QC_NS {
        let f = QcFixture::new(n);
        g.bench_function(BenchmarkId::new("batch", n), |b| b.iter(|| assert!(f.batch())));
        g.bench_function(BenchmarkId::new("unbatched", n), |b| b.iter(|| assert!(f.unbatched())));
        g.bench_function(BenchmarkId::new("raw_verify_batch", n), |b| {
            b.iter(|| assert!(f.raw.verify_batch()))
        });
        g.bench_function(BenchmarkId::new("raw_verify_strict_x_n", n), |b| {
            b.iter(|| assert!(f.raw.verify_each()))
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(400))
        .measurement_time(Duration::from_millis(1500))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_ed25519, bench_handle_vote, bench_handle_proposal, bench_verify_qc
}

// ---------------------------------------------------------------------------------------------
// Same-run summary
// ---------------------------------------------------------------------------------------------

/// Times `k` runs of `routine`, each on an input made by `setup` beforehand (untimed); outputs
/// are dropped after the clock stops. Inputs are made and timed in chunks of `CHUNK`, like
/// criterion's small batches, so the replicas being handled stay in cache and the allocator
/// reuses memory instead of faulting in fresh pages inside the timed loop.
fn timed<I, O>(k: usize, mut setup: impl FnMut() -> I, mut routine: impl FnMut(I) -> O) -> Duration {
    const CHUNK: usize = 16;
    let mut elapsed = Duration::ZERO;
    let mut left = k;
    while left > 0 {
        let m = left.min(CHUNK);
        left -= m;
        let inputs: Vec<I> = (0..m).map(|_| setup()).collect();
        let mut outputs = Vec::with_capacity(m);
        let start = Instant::now();
        for input in inputs {
            outputs.push(routine(black_box(input)));
        }
        elapsed += start.elapsed();
        drop(black_box(outputs));
    }
    elapsed
}

/// A measurable case: `run(k)` times k iterations.
type Case<'a> = Box<dyn FnMut(usize) -> Duration + 'a>;

struct Timing {
    /// Rounds per ratio; each gives one ratio sample.
    rounds: usize,
    /// Time per side per round.
    round_target: Duration,
    /// Time per slice: within a round the two sides alternate slice by slice.
    slice_target: Duration,
}

impl Timing {
    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    /// Iterations per slice and slices per round for `case`.
    fn plan(&self, case: &mut Case) -> (usize, usize) {
        case(1); // warm up
        let one = (0..3).map(|_| case(1)).min().unwrap_or_default().max(Duration::from_nanos(100));
        let per_slice = (self.slice_target.as_nanos() / one.as_nanos()).clamp(1, 64) as usize;
        let slice = one * per_slice as u32;
        let slices = (self.round_target.as_nanos() / slice.as_nanos()).clamp(1, 10_000) as usize;
        (per_slice, slices)
    }

    /// Times `a` and `b` interleaved slice by slice (a slice is ~1 ms), so load from other
    /// processes (this machine has 2 cores, possibly SMT siblings) hits both sides of each
    /// ratio alike. Returns the median nanoseconds per iteration of each side and the median of
    /// the per-round ratios `a / b`.
    fn pair(&self, mut a: Case, mut b: Case) -> (f64, f64, f64) {
        let (ka, slices_a) = self.plan(&mut a);
        let (kb, slices_b) = self.plan(&mut b);
        let slices = slices_a.max(slices_b);
        let (mut ta, mut tb, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..self.rounds {
            let (mut da, mut db) = (Duration::ZERO, Duration::ZERO);
            let (mut na, mut nb) = (0usize, 0usize);
            for slice in 0..slices {
                // Alternate which side goes first, so neither always follows the other.
                let a_first = (round + slice) % 2 == 0;
                if a_first && slice < slices_a {
                    da += a(ka);
                    na += ka;
                }
                if slice < slices_b {
                    db += b(kb);
                    nb += kb;
                }
                if !a_first && slice < slices_a {
                    da += a(ka);
                    na += ka;
                }
            }
            let (x, y) = (da.as_nanos() as f64 / na as f64, db.as_nanos() as f64 / nb as f64);
            ta.push(x);
            tb.push(y);
            ratios.push(x / y);
        }
        (Self::median(ta), Self::median(tb), Self::median(ratios))
    }
}

/// One ratio: median times of both sides (ns per iteration) and the median per-round ratio.
struct Row {
    label: String,
    a: f64,
    b: f64,
    ratio: f64,
    /// The largest acceptable ratio, for rows the 15% goal applies to.
    goal: Option<f64>,
}

/// The goal: the core adds at most 15% beyond the signature checks it must do.
const GOAL: Option<f64> = Some(1.15);

/// Measures every ratio of the summary table in this process.
fn measure(t: &Timing) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut add = |label: String, (a, b, ratio): (f64, f64, f64), goal| {
        rows.push(Row { label, a, b, ratio, goal });
    };
    for n in VOTE_NS {
        let f = VoteFixture::new(n);
        let r = t.pair(
            Box::new(|k| timed(k, || f.setup(), VoteFixture::run)),
            Box::new(|k| timed(k, || f.setup(), |x| f.run_raw(x))),
        );
        add(format!("handle_vote n={n} / raw verify"), r, GOAL);
    }
    for n in PROPOSAL_NS {
        let f = ProposalFixture::new(n);
        let r = t.pair(
            Box::new(|k| timed(k, || f.setup(), ProposalFixture::run)),
            Box::new(|k| timed(k, || f.setup(), |x| f.run_raw(x))),
        );
        add(format!("handle_proposal n={n} / (verify + batch verify {n})"), r, GOAL);
    }
    let qcs: Vec<QcFixture> = QC_NS.iter().map(|n| QcFixture::new(*n)).collect();
    for (n, f) in QC_NS.iter().zip(&qcs) {
        let r = t.pair(
            Box::new(|k| timed(k, || (), |()| assert!(f.batch()))),
            Box::new(|k| timed(k, || (), |()| assert!(f.unbatched()))),
        );
        add(format!("verify_qc batch n={n} / unbatched"), r, None);
    }
    for (n, f) in QC_NS.iter().zip(&qcs) {
        let r = t.pair(
            Box::new(|k| timed(k, || (), |()| assert!(f.batch()))),
            Box::new(|k| timed(k, || (), |()| assert!(f.raw.verify_batch()))),
        );
        add(format!("verify_qc batch n={n} / raw verify_batch {n}"), r, GOAL);
        let r = t.pair(
            Box::new(|k| timed(k, || (), |()| assert!(f.unbatched()))),
            Box::new(|k| timed(k, || (), |()| assert!(f.raw.verify_each()))),
        );
        add(format!("verify_qc_unbatched n={n} / raw {n} x verify"), r, GOAL);
    }
    rows
}

/// Set in the child processes that measure the summary.
const CHILD_ENV: &str = "HOTSTUFF_CORE_BENCH_SUMMARY_CHILD";
/// How many processes measure the summary.
const PROCESSES: usize = 7;

/// The summary is measured in several fresh processes and the medians across them are
/// reported: ed25519 verification speed here varies by up to +-15% from one process to the
/// next with the address-space layout (ASLR; it disappears under `setarch -R`), for the raw
/// calls as much as for the core's, so a single process can show the core 15% faster or slower
/// than the raw checks by luck of layout.
fn summary(quick: bool) {
    let started = Instant::now();
    let per_process: Vec<Vec<Row>> = if quick {
        vec![measure(&Timing {
            rounds: 1,
            round_target: Duration::from_micros(1),
            slice_target: Duration::from_micros(1),
        })]
    } else {
        let exe = std::env::current_exe().expect("current exe");
        (0..PROCESSES)
            .map(|_| {
                let out = std::process::Command::new(&exe)
                    .env(CHILD_ENV, "1")
                    .stderr(std::process::Stdio::inherit())
                    .output()
                    .expect("run the summary child");
                assert!(out.status.success(), "summary child failed");
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter_map(|line| {
                        let f: Vec<&str> = line.split('\t').collect();
                        let num = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok());
                        Some(Row {
                            label: f.get(1)?.to_string(),
                            a: num(2)?,
                            b: num(3)?,
                            ratio: num(4)?,
                            goal: num(5),
                        })
                        .filter(|_| f.first() == Some(&"ROW"))
                    })
                    .collect()
            })
            .collect()
    };
    let first = per_process.first().expect("one process");
    println!();
    println!(
        "== hotstuff-core summary (same run): median over {} processes of each one's median over \
         {} rounds (both sides interleaved every ~1 ms); goal: core <= 1.15 x the signature checks \
         it must do ==",
        per_process.len(),
        if quick { 1 } else { CHILD_ROUNDS }
    );
    if quick {
        println!("(quick check only, one iteration per side: run `cargo bench` for real numbers)");
    }
    println!("{:<52}   {:>5}  {:>13}  {:>10} {:>10}", "ratio", "", "min..max", "core us", "raw us");
    for (i, row) in first.iter().enumerate() {
        let col = |pick: fn(&Row) -> f64| {
            Timing::median(per_process.iter().filter_map(|rows| rows.get(i)).map(pick).collect())
        };
        let ratios: Vec<f64> = per_process.iter().filter_map(|rows| rows.get(i)).map(|r| r.ratio).collect();
        let (lo, hi) = ratios.iter().fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
        let ratio = col(|r| r.ratio);
        let note = match row.goal {
            _ if quick => String::new(),
            Some(max) => format!(
                "core overhead {:+.1}%{}",
                (ratio - 1.0) * 100.0,
                if ratio <= max { "" } else { "  ABOVE THE 15% GOAL" }
            ),
            None => format!("{:+.1}%", (ratio - 1.0) * 100.0),
        };
        println!(
            "{:<52} = {ratio:5.3}  ({lo:5.3}..{hi:5.3})  {:10.1} {:10.1}  {note}",
            row.label,
            col(|r| r.a) / 1e3,
            col(|r| r.b) / 1e3,
        );
    }
    println!("(summary took {:.1} s)", started.elapsed().as_secs_f64());
}

/// Rounds per ratio in each summary process.
const CHILD_ROUNDS: usize = 15;

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        let timing = Timing {
            rounds: CHILD_ROUNDS,
            round_target: Duration::from_millis(10),
            slice_target: Duration::from_millis(1),
        };
        for r in measure(&timing) {
            let goal = r.goal.map_or_else(|| "-".to_string(), |g| g.to_string());
            println!("ROW\t{}\t{}\t{}\t{}\t{goal}", r.label, r.a, r.b, r.ratio);
        }
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    benches();
    Criterion::default().configure_from_args().final_summary();
    if args.iter().any(|a| a == "--list" || a == "--profile-time") {
        return; // listing, or profiling one routine: no summary
    }
    // `cargo bench` passes `--bench`; without it (`cargo test --benches`), or with criterion's
    // `--test`, only check that the summary's cases run.
    let has = |flag: &str| args.iter().any(|a| a == flag);
    summary(!has("--bench") || has("--test"));
}
