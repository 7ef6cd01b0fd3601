//! The bodies of the fuzz targets in `fuzz/` (cargo-fuzz, nightly), kept here so that the stable
//! smoke test `tests/tests/integration/fuzz_smoke.rs` runs exactly the same code on seeded pseudo-random
//! inputs. Every function panics on a finding and returns normally otherwise.
//!
//! - [`decode_envelope`]: bounded decoding of wire frames is canonical and agrees with borsh.
//! - [`decode_records`]: stored records decode canonically.
//! - [`replica_inputs`]: one replica driven by an arbitrary list of [`Op`]s built from correctly
//!   signed messages with arbitrary mutations, checked after every op.
//! - [`sim_schedule`]: a small seeded simulation with an arbitrary schedule is safe.
//!
//! [`samples`] builds valid encodings of every message type and stored record (seed corpus,
//! allocation test).

use crate::scenario::{self, Kind};
use crate::sim::{Params, Report, Sim};
use arbitrary::Arbitrary;
use borsh::{BorshDeserialize, BorshSerialize};
use hotstuff_core::crypto::{block_subject, timeout_subject, vote_subject, SignKind};
use hotstuff_core::message::{SyncRequest, SyncResponse};
use hotstuff_core::{
    Action, AppOutcome, Block, BlockHash, BlockRecord, ChainId, CommittedTip, Config, DefaultPacemaker,
    Envelope, Height, Input, Keypair, LeaderHistory, Limits, Message, Pacemaker, Proposal, PublicKey,
    QuorumCertificate, Recovered, Replica, SafetyState, TimeoutCertificate, TimeoutVote, ValidatorSet, View,
    Vote,
};
use hotstuff_core::{Epoch, EpochProof, EpochState};
use std::collections::BTreeMap;

/// The chain every fuzz target runs.
pub const CHAIN: ChainId = ChainId(0xf022);

/// Number of validators in [`replica_inputs`].
pub const N: usize = 4;

// ------------------------------------------------------------------------------------------
// decode_envelope, decode_records

/// `Envelope::decode` with default limits: whatever decodes re-encodes to exactly the input,
/// and the bounded decoder agrees with plain borsh decoding followed by the limit checks.
pub fn decode_envelope(data: &[u8]) {
    let limits = Limits::default();
    let bounded = Envelope::decode(data, &limits);
    if let Ok(env) = &bounded {
        assert_eq!(env.encode(), data, "a decoded envelope does not re-encode to its input");
    }
    // Differential: borsh + version + limit checks accept exactly the same frames.
    let reference = borsh::from_slice::<Envelope>(data)
        .ok()
        .filter(|e| e.version == hotstuff_core::PROTOCOL_VERSION && e.message.check(&limits).is_ok());
    assert_eq!(bounded.ok(), reference, "bounded decoding disagrees with borsh decoding");
}

fn roundtrip<T: BorshDeserialize + BorshSerialize>(data: &[u8]) {
    if let Ok(value) = borsh::from_slice::<T>(data) {
        let again = borsh::to_vec(&value).expect("encoding into a Vec cannot fail");
        assert_eq!(again, data, "{} does not re-encode to its input", std::any::type_name::<T>());
    }
}

/// Every stored record type decoded from `data` with borsh (the core's records, and the
/// driver's committed-block entry), and the kv app's block payload decoder: whatever decodes
/// re-encodes to exactly the input.
pub fn decode_records(data: &[u8]) {
    roundtrip::<SafetyState>(data);
    roundtrip::<BlockRecord>(data);
    roundtrip::<ValidatorSet>(data);
    roundtrip::<QuorumCertificate>(data);
    roundtrip::<TimeoutCertificate>(data);
    roundtrip::<CommittedTip>(data);
    roundtrip::<EpochState>(data);
    roundtrip::<hotstuff_driver_std::CommittedEntry>(data);
    if let Some(txs) = hotstuff_driver_std::kv::decode_payload(data) {
        assert!(!txs.is_empty() && txs.len() <= hotstuff_driver_std::kv::MAX_BLOCK_TXS);
        assert_eq!(borsh::to_vec(&txs).expect("vec"), data, "a kv payload does not re-encode to its input");
    }
}

// ------------------------------------------------------------------------------------------
// decode_frames, handshake: the driver's connection code

/// The frame limit of [`decode_frames`]: small, so the fuzzer reaches both sides of it.
pub const FRAME_LIMIT: usize = 1 << 16;

/// The driver's inbound path on an authenticated connection: `data` is the byte stream a peer
/// sends. Frames are read by the driver's reader (limit [`FRAME_LIMIT`]) and each body is
/// decoded as the driver decodes it (`Envelope::decode`, default limits). No panic; each frame
/// is exactly the bytes its length prefix names; the stream ends cleanly only between frames;
/// every accepted envelope re-encodes to its frame; a heartbeat (an empty body) never decodes
/// as a message.
pub fn decode_frames(data: &[u8]) {
    use hotstuff_driver_std::net::frame::read_frame;
    use hotstuff_driver_std::FrameError;
    let mut stream = data;
    let mut at = 0usize;
    let mut outcomes = Vec::new();
    loop {
        let before = stream.len();
        let result = read_frame(&mut stream, FRAME_LIMIT);
        outcomes.push(frame_outcome(&result));
        match result {
            Ok(None) => {
                assert!(before == 0, "a clean end only between frames");
                break;
            }
            Ok(Some(body)) => {
                assert!(body.len() <= FRAME_LIMIT);
                let prefix = u32::try_from(body.len()).expect("within the limit").to_le_bytes();
                assert_eq!(data.get(at..at + 4), Some(&prefix[..]), "the frame's length prefix");
                assert_eq!(data.get(at + 4..at + 4 + body.len()), Some(&body[..]), "the frame's body");
                at += 4 + body.len();
                assert_eq!(stream.len(), data.len() - at);
                let decoded = Envelope::decode(&body, &Limits::default());
                if let Ok(env) = &decoded {
                    assert_eq!(env.encode(), body, "a decoded frame does not re-encode to itself");
                }
                // A heartbeat (an empty body) is never a message, so the two cannot be confused.
                if hotstuff_driver_std::net::frame::is_heartbeat(&body) {
                    assert!(decoded.is_err(), "a heartbeat decodes as a message");
                }
            }
            Err(FrameError::TooLarge { len, max }) => {
                assert!(len > max && max == FRAME_LIMIT, "refused a frame within the limit");
                break;
            }
            Err(FrameError::Truncated { expected, got }) => {
                assert!(stream.is_empty() && got < expected, "a truncation only at the end of the stream");
                break;
            }
            Err(e) => panic!("reading from a byte slice failed: {e}"),
        }
    }
    // The tokio driver's reader sees the same frames and ends the same way.
    assert_eq!(tokio_frames(data), outcomes, "the tokio frame reader disagrees with the std one");
}

/// A frame read's outcome, comparable across readers: the body, the end, or the error.
fn frame_outcome(
    r: &Result<Option<Vec<u8>>, hotstuff_driver_std::FrameError>,
) -> Result<Option<Vec<u8>>, String> {
    r.clone().map_err(|e| e.to_string())
}

/// The tokio driver's frame reader over `data` until the stream ends or an error, with
/// [`FRAME_LIMIT`]: each outcome.
#[must_use]
pub fn tokio_frames(data: &[u8]) -> Vec<Result<Option<Vec<u8>>, String>> {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    let rt = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a tokio runtime")
    });
    rt.block_on(async {
        let mut stream = data;
        let mut out = Vec::new();
        loop {
            let r = hotstuff_driver_tokio::net::wire::read_frame(
                &mut stream,
                FRAME_LIMIT,
                std::time::Duration::from_secs(3600),
            )
            .await;
            let more = matches!(r, Ok(Some(_)));
            out.push(frame_outcome(&r));
            if !more {
                return out;
            }
        }
    })
}

/// One handshake, seen from our side: the peer's bytes are an honest peer's (one of the
/// validators, our own key, or a key outside the set) with arbitrary bit flips, a cut and
/// trailing bytes.
#[derive(Arbitrary, Clone, Debug)]
pub struct HandshakeInput {
    /// The peer: `0` is our own key, `1..=N-1` the other validators, anything else an outsider.
    pub peer: u8,
    /// Our nonce.
    pub my_nonce: [u8; 32],
    /// The peer's nonce.
    pub peer_nonce: [u8; 32],
    /// Whether we dialled the peer (and so expect its key).
    pub dialled: bool,
    /// `(position, xor mask)` applied to the peer's hello and signature.
    pub flips: Vec<(u8, u8)>,
    /// Where the peer's bytes end, if before the end.
    pub cut: Option<u8>,
    /// Bytes the peer sends after the handshake (left unread).
    pub extra: Vec<u8>,
}

/// A stream that reads from a script and records what is written.
struct Duplex<'a> {
    input: &'a [u8],
    output: Vec<u8>,
}

impl std::io::Read for Duplex<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf)
    }
}

impl std::io::Write for Duplex<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Validator 0's side of the driver's handshake reading `peer` as the other side's bytes (our
/// nonce fixed): whether it accepts them. For the allocation test.
#[must_use]
pub fn handshake_reads(peer: &[u8]) -> bool {
    let keys = keys();
    let allowed = |k: &PublicKey| keys.iter().any(|v| v.public() == *k);
    let mut stream = Duplex { input: peer, output: Vec::new() };
    hotstuff_driver_std::net::handshake::run_with_nonce(&mut stream, &keys[0], CHAIN, allowed, None, [7; 32])
        .is_ok()
}

/// Runs the driver's handshake (validator 0's side, allowing the validators) against
/// [`HandshakeInput`]: it succeeds exactly when the peer's bytes are the honest ones, from an
/// allowed key other than ours, and then returns that key; what we send is our hello and a
/// signature the peer can verify.
pub fn handshake(input: &HandshakeInput) {
    use hotstuff_core::crypto::verifying_key;
    use hotstuff_driver_std::net::handshake::{digest, run_with_nonce, Hello, HELLO_LEN};
    let keys = keys();
    let me = &keys[0];
    let outsider = Keypair::from_secret(&[0xee; 32]);
    let peer = keys.get(usize::from(input.peer)).unwrap_or(&outsider);
    let mine = Hello { chain: CHAIN, key: me.public(), nonce: input.my_nonce };
    let theirs = Hello { chain: CHAIN, key: peer.public(), nonce: input.peer_nonce };
    let mut honest = theirs.encode().to_vec();
    honest.extend_from_slice(&peer.sign(CHAIN, SignKind::Handshake, View(0), &digest(&theirs, &mine)).0);
    let mut script = honest.clone();
    for (at, mask) in &input.flips {
        let i = usize::from(*at) % script.len();
        script[i] ^= mask;
    }
    if let Some(cut) = input.cut {
        script.truncate(usize::from(cut));
    }
    script.extend_from_slice(&input.extra);
    // What the handshake reads is the stream's start: a cut made good by the trailing bytes
    // is the honest handshake again (found by the fuzzer: cut at 143, then the missing byte).
    let unchanged = script.get(..honest.len()) == Some(&honest[..]);
    let mut stream = Duplex { input: &script, output: Vec::new() };
    let allowed = |k: &PublicKey| keys.iter().any(|v| v.public() == *k);
    let expect = input.dialled.then(|| peer.public());
    let result = run_with_nonce(&mut stream, me, CHAIN, allowed, expect, input.my_nonce);
    let acceptable = unchanged && peer.public() != me.public() && allowed(&peer.public());
    match &result {
        Ok(key) => {
            assert!(acceptable, "accepted a handshake that is not an allowed peer's honest one");
            assert_eq!(*key, peer.public());
            assert_eq!(stream.output.len(), HELLO_LEN + 64);
            let sig = hotstuff_core::Signature(stream.output[HELLO_LEN..].try_into().expect("64 bytes"));
            let vk = verifying_key(&me.public()).expect("our key");
            hotstuff_core::crypto::verify_one(
                &vk,
                CHAIN,
                SignKind::Handshake,
                View(0),
                &digest(&mine, &theirs),
                &sig,
            )
            .expect("our signature verifies for the peer");
        }
        Err(_) => assert!(!acceptable, "refused an allowed peer's honest handshake: {result:?}"),
    }
    assert_eq!(stream.output.get(..HELLO_LEN), Some(&mine.encode()[..]), "we always send our hello first");
}

// ------------------------------------------------------------------------------------------
// Keys and certificates shared by the targets and the samples

/// The validator keys of the fuzz targets: `Keypair::from_secret(&[i + 1; 32])`, `i` in `0..N`.
#[must_use]
pub fn keys() -> Vec<Keypair> {
    (0..N).map(|i| Keypair::from_secret(&[i as u8 + 1; 32])).collect()
}

/// The validator set of [`keys`], power 1 each.
#[must_use]
pub fn validator_set(keys: &[Keypair]) -> ValidatorSet {
    ValidatorSet::new(keys.iter().map(|k| (k.public(), 1))).expect("fuzz validator set is valid")
}

fn sign_qc(keys: &[Keypair], view: View, block: BlockHash, signers: &[usize]) -> QuorumCertificate {
    let subject = vote_subject(&block, Epoch(0));
    let mut signatures: Vec<_> = signers
        .iter()
        .map(|&i| (keys[i].public(), keys[i].sign(CHAIN, SignKind::Vote, view, &subject)))
        .collect();
    signatures.sort_by_key(|(k, _)| *k);
    QuorumCertificate { epoch: Epoch(0), view, block, signatures }
}

fn sign_tc(keys: &[Keypair], view: View, reports: &[(usize, QuorumCertificate)]) -> TimeoutCertificate {
    let mut signatures: Vec<_> = reports
        .iter()
        .map(|(i, qc)| {
            (
                keys[*i].public(),
                qc.view,
                keys[*i].sign(CHAIN, SignKind::Timeout, view, &timeout_subject(qc.view, Epoch(0))),
            )
        })
        .collect();
    signatures.sort_by_key(|(k, _, _)| *k);
    let high_qc =
        reports.iter().map(|(_, q)| q).max_by_key(|q| q.view).cloned().unwrap_or_else(|| QuorumCertificate {
            epoch: Epoch(0),
            view: View(0),
            block: BlockHash::default(),
            signatures: Vec::new(),
        });
    TimeoutCertificate { epoch: Epoch(0), view, high_qc, signatures }
}

fn sign_proposal(key: &Keypair, block: Block, tc: Option<TimeoutCertificate>) -> Proposal {
    let signature = key.sign(CHAIN, SignKind::Proposal, block.view, &block_subject(&block.hash()));
    Proposal { block, tc, signature }
}

fn sign_vote(key: &Keypair, view: View, block: BlockHash) -> Vote {
    let signature = key.sign(CHAIN, SignKind::Vote, view, &vote_subject(&block, Epoch(0)));
    Vote { epoch: Epoch(0), view, block, voter: key.public(), signature }
}

fn sign_timeout(
    key: &Keypair,
    view: View,
    high_qc: QuorumCertificate,
    last_tc: Option<TimeoutCertificate>,
) -> TimeoutVote {
    let signature = key.sign(CHAIN, SignKind::Timeout, view, &timeout_subject(high_qc.view, Epoch(0)));
    TimeoutVote { epoch: Epoch(0), view, high_qc, voter: key.public(), signature, last_tc, vote: None }
}

/// Valid encodings of every message type and every stored record.
pub mod samples {
    use super::*;

    /// A short certified chain: blocks of views 1..=3 by their leaders, each certified.
    fn chain(keys: &[Keypair], set: &ValidatorSet) -> (Vec<Block>, Vec<QuorumCertificate>) {
        let genesis = hotstuff_core::genesis_hash(CHAIN, set);
        let pm = DefaultPacemaker::round_robin();
        let mut qc = QuorumCertificate::genesis(genesis);
        let (mut blocks, mut qcs) = (Vec::new(), vec![qc.clone()]);
        for v in 1..=3u64 {
            let proposer = pm.leader(View(v), set, &LeaderHistory::default());
            let block = Block {
                epoch: Epoch(0),
                view: View(v),
                height: Height(v),
                justify: qc,
                proposer,
                payload: vec![v as u8; 24],
            };
            qc = sign_qc(keys, View(v), block.hash(), &[0, 1, 2]);
            blocks.push(block);
            qcs.push(qc.clone());
        }
        (blocks, qcs)
    }

    /// One envelope of each message kind (several shapes of each).
    #[must_use]
    pub fn messages() -> Vec<Envelope> {
        let keys = keys();
        let set = validator_set(&keys);
        let (blocks, qcs) = chain(&keys, &set);
        let key_of = |pk: PublicKey| keys.iter().find(|k| k.public() == pk).expect("a fuzz key");
        let tc = sign_tc(&keys, View(4), &[(0, qcs[3].clone()), (1, qcs[2].clone()), (3, qcs[3].clone())]);
        let pm = DefaultPacemaker::round_robin();
        let b5 = Block {
            epoch: Epoch(0),
            view: View(5),
            height: Height(4),
            justify: qcs[3].clone(),
            proposer: pm.leader(View(5), &set, &LeaderHistory::default()),
            payload: b"payload after a timeout".to_vec(),
        };
        let mut out = vec![
            Message::Proposal(sign_proposal(key_of(blocks[0].proposer), blocks[0].clone(), None)),
            Message::Proposal(sign_proposal(key_of(blocks[2].proposer), blocks[2].clone(), None)),
            Message::Proposal(sign_proposal(key_of(b5.proposer), b5.clone(), Some(tc.clone()))),
            Message::Vote(sign_vote(&keys[1], View(2), blocks[1].hash())),
            Message::Timeout(sign_timeout(&keys[2], View(4), qcs[3].clone(), None)),
            Message::Timeout(sign_timeout(&keys[0], View(5), qcs[3].clone(), Some(tc))),
            Message::Timeout(TimeoutVote {
                vote: Some(sign_vote(&keys[1], View(5), b5.hash())),
                ..sign_timeout(&keys[1], View(5), qcs[3].clone(), None)
            }),
            Message::Certificate(qcs[2].clone()),
            Message::SyncRequest(SyncRequest { id: 7, from_height: Height(1), max_blocks: 64 }),
            Message::SyncResponse(SyncResponse {
                id: 7,
                blocks: blocks.clone(),
                certificate: Some(qcs[3].clone()),
            }),
            Message::SyncResponse(SyncResponse { id: 8, blocks: Vec::new(), certificate: None }),
        ];
        out.push(Message::SyncResponse(SyncResponse { id: 9, blocks: vec![b5], certificate: None }));
        out.into_iter().map(|m| Envelope::new(CHAIN, m)).collect()
    }

    /// Encoded stored records: `(type name, bytes)` for every record type.
    #[must_use]
    pub fn records() -> Vec<(&'static str, Vec<u8>)> {
        let keys = keys();
        let set = validator_set(&keys);
        let (blocks, qcs) = chain(&keys, &set);
        let genesis = hotstuff_core::genesis_hash(CHAIN, &set);
        let tc = sign_tc(&keys, View(4), &[(0, qcs[3].clone()), (1, qcs[2].clone()), (3, qcs[3].clone())]);
        let mut safety = SafetyState::genesis(genesis);
        safety.view = View(5);
        safety.highest_voted_view = View(4);
        safety.last_proposed_view = View(3);
        safety.locked_qc = qcs[2].clone();
        safety.high_qc = qcs[3].clone();
        safety.last_tc = Some(tc.clone());
        safety.last_vote = Some(sign_vote(&keys[0], View(3), blocks[2].hash()));
        safety.last_timeout = Some(sign_timeout(&keys[0], View(4), qcs[3].clone(), None));
        let mut outcome = AppOutcome::default();
        outcome.app_updates.insert(b"key".to_vec(), b"value".to_vec());
        outcome.app_updates.delete(b"gone".to_vec());
        outcome.validator_updates.0.insert(keys[3].public(), 0);
        outcome.validator_updates.0.insert(Keypair::from_secret(&[9; 32]).public(), 2);
        let enc = |v: &dyn Fn() -> Vec<u8>| v();
        vec![
            ("SafetyState", borsh::to_vec(&SafetyState::genesis(genesis)).expect("vec")),
            ("SafetyState", borsh::to_vec(&safety).expect("vec")),
            (
                "BlockRecord",
                borsh::to_vec(&BlockRecord { block: blocks[0].clone(), outcome: None }).expect("vec"),
            ),
            (
                "BlockRecord",
                borsh::to_vec(&BlockRecord { block: blocks[1].clone(), outcome: Some(outcome) })
                    .expect("vec"),
            ),
            ("ValidatorSet", enc(&|| borsh::to_vec(&set).expect("vec"))),
            ("QuorumCertificate", borsh::to_vec(&qcs[3]).expect("vec")),
            ("QuorumCertificate", borsh::to_vec(&qcs[0]).expect("vec")),
            ("TimeoutCertificate", borsh::to_vec(&tc).expect("vec")),
            (
                "CommittedTip",
                borsh::to_vec(&CommittedTip { hash: blocks[0].hash(), view: View(1), height: Height(1) })
                    .expect("vec"),
            ),
            (
                "EpochState",
                borsh::to_vec(&EpochState {
                    epoch: Epoch(1),
                    validators: set.clone(),
                    previous: Some(set.clone()),
                    root_qc: qcs[3].clone(),
                })
                .expect("vec"),
            ),
            (
                "CommittedEntry",
                borsh::to_vec(&(blocks[0].clone(), qcs[1].clone(), None::<EpochProof>)).expect("vec"),
            ),
            (
                "CommittedEntry",
                borsh::to_vec(&(
                    blocks[1].clone(),
                    qcs[2].clone(),
                    Some(EpochProof { blocks: blocks[1..].to_vec(), qc: qcs[3].clone() }),
                ))
                .expect("vec"),
            ),
            ("kv payload", borsh::to_vec(&kv_txs()).expect("vec")),
        ]
    }

    /// A few kv transactions of each kind.
    #[must_use]
    pub fn kv_txs() -> Vec<hotstuff_driver_std::kv::Tx> {
        use hotstuff_driver_std::kv::Tx;
        vec![
            Tx::Put { key: b"alpha".to_vec(), value: b"1".to_vec() },
            Tx::Delete { key: b"beta".to_vec() },
            Tx::Put { key: b"gamma".to_vec(), value: Vec::new() },
        ]
    }

    /// Validator 1's honest side of a handshake with validator 0 (whose nonce is `[7; 32]`, as
    /// in [`handshake_reads`]).
    #[must_use]
    pub fn handshake_peer_bytes() -> Vec<u8> {
        use hotstuff_driver_std::net::handshake::{digest, Hello};
        let keys = keys();
        let mine = Hello { chain: CHAIN, key: keys[0].public(), nonce: [7; 32] };
        let theirs = Hello { chain: CHAIN, key: keys[1].public(), nonce: [9; 32] };
        let mut bytes = theirs.encode().to_vec();
        bytes
            .extend_from_slice(&keys[1].sign(CHAIN, SignKind::Handshake, View(0), &digest(&theirs, &mine)).0);
        assert!(handshake_reads(&bytes), "the honest handshake is accepted");
        bytes
    }

    /// A connection's byte stream: every sample message as a length-prefixed frame, in turn.
    #[must_use]
    pub fn frame_stream() -> Vec<u8> {
        // A heartbeat (empty frame) first, as a connection's reader sees between messages.
        let mut out = hotstuff_driver_std::net::frame::HEARTBEAT.to_vec();
        for env in messages() {
            hotstuff_driver_std::net::frame::write_frame(&mut out, &env.encode()).expect("write to a Vec");
        }
        out
    }
}

// ------------------------------------------------------------------------------------------
// store_file: the std driver's database file, damaged

/// A database file in memory: a redb storage backend over a byte vector (clones share it).
#[derive(Clone, Debug)]
pub struct MemFile(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl MemFile {
    /// A file holding `bytes`.
    #[must_use]
    pub fn new(bytes: Vec<u8>) -> Self {
        MemFile(std::sync::Arc::new(std::sync::Mutex::new(bytes)))
    }

    /// The file's bytes.
    #[must_use]
    pub fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn file(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl redb::StorageBackend for MemFile {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.file().len() as u64)
    }
    fn read(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let file = self.file();
        let start = usize::try_from(offset).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        file.get(start..start.saturating_add(len))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| std::io::ErrorKind::UnexpectedEof.into())
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        let len = usize::try_from(len).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        if len > 1 << 30 {
            return Err(std::io::ErrorKind::OutOfMemory.into());
        }
        self.file().resize(len, 0);
        Ok(())
    }
    fn sync_data(&self, _eventual: bool) -> std::io::Result<()> {
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut file = self.file();
        let start = usize::try_from(offset).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        let dest =
            file.get_mut(start..start.saturating_add(data.len())).ok_or(std::io::ErrorKind::InvalidInput)?;
        dest.copy_from_slice(data);
        Ok(())
    }
}

/// The undamaged database file of [`store_file`]: genesis with 300 app-state entries, a safety
/// state, and closed cleanly. Built once per process.
#[must_use]
pub fn store_image() -> &'static [u8] {
    use hotstuff_driver_std::{Genesis, RedbStore, Storage, WriteBatch};
    static IMAGE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    IMAGE.get_or_init(|| {
        let file = MemFile::new(Vec::new());
        let keys = keys();
        let set = validator_set(&keys);
        let genesis = Genesis::new(CHAIN, set.clone())
            .with_app_state((0..300u32).map(|i| (format!("key{i}").into_bytes(), vec![i as u8; 40])));
        let store = RedbStore::with_backend(file.clone()).expect("a new store");
        store.initialise(&genesis).expect("initialise");
        let safety = SafetyState::genesis(hotstuff_core::genesis_hash(CHAIN, &set));
        store.write(&WriteBatch { safety: Some(safety), ..WriteBatch::default() }).expect("write");
        drop(store);
        file.bytes()
    })
}

/// Silences the panic messages of the database engine (redb), which the store catches and
/// turns into errors; any other panic goes to the hook installed before (libFuzzer's, which
/// aborts, or the default one). Installed once per process.
pub fn quiet_engine_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.location().is_some_and(|l| l.file().contains("/redb-")) {
                previous(info);
            }
        }));
    });
}

/// Damage to [`store_image`]: bit flips anywhere, and maybe a cut.
#[derive(Arbitrary, Clone, Debug)]
pub struct StoreFileInput {
    /// `(offset, xor mask)`; the offset is taken modulo the file's length, or, when `near` is
    /// set, modulo the first 64 KiB and the last used pages (where the header and records are).
    pub flips: Vec<(u32, u8, bool)>,
    /// Where the file ends, if before its end.
    pub cut: Option<u32>,
}

/// Opens [`store_image`] after the damage in `input` with the std driver's `RedbStore` and
/// reads everything a restarting node reads. No panic escapes (the store turns the engine's
/// own panics into errors); the undamaged image loads as written.
pub fn store_file(input: &StoreFileInput) {
    use hotstuff_driver_std::{RedbStore, Storage};
    quiet_engine_panics();
    let image = store_image();
    let mut bytes = image.to_vec();
    let used = image.iter().rposition(|b| *b != 0).map_or(bytes.len(), |i| i + 1);
    for (at, mask, near) in &input.flips {
        let at = *at as usize;
        let i = if *near {
            let head = at % (64 << 10);
            if at % 2 == 0 {
                head
            } else {
                used.saturating_sub(1 + head)
            }
        } else {
            at % bytes.len()
        };
        if let Some(b) = bytes.get_mut(i) {
            *b ^= mask;
        }
    }
    if let Some(cut) = input.cut {
        bytes.truncate(cut as usize % (bytes.len() + 1));
    }
    let undamaged = bytes == image;
    let file = MemFile::new(bytes);
    let result = RedbStore::with_backend(file).and_then(|store| {
        let stored = store.load()?;
        if let Some(s) = &stored {
            for h in 0..=s.tip.height.0.min(16) {
                store.committed_block(Height(h))?;
            }
        }
        store.tip()?;
        store.app_get(b"key7")?;
        store.scan_app_state(&mut |_, _| {})?;
        Ok(stored)
    });
    if undamaged {
        let stored = result.expect("the undamaged store loads").expect("it is initialised");
        assert_eq!(stored.chain, CHAIN);
        assert!(stored.safety.is_some());
    }
}

// ------------------------------------------------------------------------------------------
// replica_inputs

/// A view, relative to the replica's current view unless absolute.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewSel {
    /// The current view.
    Current,
    /// The next view.
    Next,
    /// The previous view.
    Prev,
    /// `k % 8` views ahead.
    Ahead(u8),
    /// `k % 8` views behind.
    Behind(u8),
    /// Just beyond the view window.
    Far,
    /// View 0.
    Zero,
    /// `u64::MAX`.
    Max,
    /// An absolute view.
    Abs(u16),
}

/// A distortion applied to a correctly built and signed message. Two in three are
/// [`Mutation::None`], so that honest messages make progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// None: the message is as an honest peer would send it.
    None,
    /// The view moved by `d` after signing (stale/future views, bad signature).
    ShiftView(i8),
    /// A block hash replaced by another known one after signing.
    SwapHash(u8),
    /// A certificate's signature list truncated to `k % 4` entries.
    TruncateSigs(u8),
    /// One byte of a signature flipped.
    CorruptSig(u8),
    /// Signed by (or attributed to) another key.
    WrongSigner(u8),
    /// A certificate's first signer duplicated.
    DupSigner,
    /// A certificate's signers reversed (not canonical).
    UnsortSigners,
    /// A block's height moved by `d` before signing.
    BadHeight(i8),
    /// The message signed for another chain.
    WrongChain,
}

impl<'a> Arbitrary<'a> for Mutation {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        if u.ratio(2u8, 3u8)? {
            return Ok(Mutation::None);
        }
        Ok(match u.int_in_range(0u8..=8)? {
            0 => Mutation::ShiftView(u.arbitrary()?),
            1 => Mutation::SwapHash(u.arbitrary()?),
            2 => Mutation::TruncateSigs(u.arbitrary()?),
            3 => Mutation::CorruptSig(u.arbitrary()?),
            4 => Mutation::WrongSigner(u.arbitrary()?),
            5 => Mutation::DupSigner,
            6 => Mutation::UnsortSigners,
            7 => Mutation::BadHeight(u.arbitrary()?),
            _ => Mutation::WrongChain,
        })
    }

    fn size_hint(_depth: usize) -> (usize, Option<usize>) {
        (1, Some(3))
    }
}

/// Which persist sequence number a `Persisted` acknowledges.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckSel {
    /// The latest emitted.
    Latest,
    /// The oldest not yet acknowledged.
    Oldest,
    /// A given number.
    Seq(u8),
    /// Beyond the latest emitted (refused).
    Beyond(u8),
}

/// The app's answer to a pending request.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Valid block / well-formed produced block.
    Valid,
    /// The app rejects the block (produce: empty payload).
    Invalid,
    /// Answer names another block / parent.
    WrongHash,
    /// Answer names another view.
    WrongView,
    /// A payload over the limit.
    TooLarge,
    /// Valid, and the block changes the validator set (key 0's power becomes 2): the replica's
    /// later blocks of the epoch are empty suffix blocks, and its commit ends the epoch (after
    /// which the harness's epoch-0 messages are refused).
    ChangeSet,
}

/// One step of [`replica_inputs`]. Indices pick from what the harness knows (modulo its size).
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A proposal by the leader of its view extending the certified block `parent`.
    Propose {
        /// Index of the QC to extend (counted from the newest).
        parent: u8,
        /// Its view (default: the QC's view + 1).
        view: Option<ViewSel>,
        /// Index of a TC to attach.
        tc: Option<u8>,
        /// Payload.
        payload: Vec<u8>,
        /// Distortion.
        mutation: Mutation,
    },
    /// The harness certifies a known block with the signers in `signers` (bit mask; `None` =
    /// the three other validators). Not delivered: later ops use the QC.
    Certify {
        /// Index of the block (counted from the newest).
        block: u8,
        /// Signer mask.
        signers: Option<u8>,
        /// Distortion.
        mutation: Mutation,
    },
    /// A vote for a known block.
    Vote {
        /// Index of the block.
        block: u8,
        /// The voter.
        voter: u8,
        /// Distortion.
        mutation: Mutation,
    },
    /// A timeout vote.
    Timeout {
        /// Its view.
        view: ViewSel,
        /// The voter.
        voter: u8,
        /// Index of the reported high QC.
        high_qc: u8,
        /// Index of an attached TC.
        last_tc: Option<u8>,
        /// Distortion.
        mutation: Mutation,
    },
    /// The harness forms a TC for `view` (not delivered).
    FormTc {
        /// Its view.
        view: ViewSel,
        /// Signer mask (0 = the three other validators).
        signers: u8,
        /// Per signer, the index of its reported high QC.
        high_qcs: [u8; 4],
        /// Distortion.
        mutation: Mutation,
    },
    /// A block-sync request from a peer.
    SyncRequest {
        /// First height wanted.
        from_height: u8,
        /// Most blocks wanted.
        max_blocks: u8,
    },
    /// A block-sync response, to the replica's outstanding request if any.
    SyncResponse {
        /// 0: from the peer asked; otherwise from another.
        from: u8,
        /// Index of the QC whose chain is sent.
        qc: u8,
        /// Distortion.
        mutation: Mutation,
    },
    /// Raw frame bytes.
    Frame(Vec<u8>),
    /// A message delivered before, re-encoded with one bit flipped.
    FlipFrame {
        /// Index of the message.
        msg: u8,
        /// The bit.
        bit: u16,
    },
    /// A message delivered or seen before, delivered again.
    Replay {
        /// Index of the message.
        msg: u8,
    },
    /// The timer fires.
    Timer {
        /// For this view.
        view: ViewSel,
    },
    /// A durability acknowledgement.
    Persisted {
        /// Which seq.
        which: AckSel,
    },
    /// An answer to a pending app request.
    AppReply {
        /// Index of the request.
        which: u8,
        /// The answer.
        verdict: Verdict,
    },
    /// Acknowledge every persist and answer every app request honestly, until quiet.
    Drive,
    /// Crash and restart from the durable state.
    Restart,
}

/// The input of [`replica_inputs`].
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct ReplicaInput {
    /// Which of the [`N`] validators the replica is (`me % N`); `me / N` odd runs it with vote
    /// broadcast on (`Config::broadcast_votes`: it counts every validator's votes).
    pub me: u8,
    /// The operations (at most [`MAX_OPS`] are run).
    pub ops: Vec<Op>,
}

/// Most ops run per input (bounds the time per input).
pub const MAX_OPS: usize = 200;

/// What the harness's store holds durably.
#[derive(Clone, Debug)]
struct Store {
    safety: Option<SafetyState>,
    blocks: BTreeMap<BlockHash, BlockRecord>,
    committed: CommittedTip,
    committed_chain: BTreeMap<u64, (Block, QuorumCertificate, Option<EpochProof>)>,
    epoch: Option<EpochState>,
}

enum AppReq {
    Produce { view: View, parent: BlockHash },
    Validate { hash: BlockHash },
}

struct Harness {
    keys: Vec<Keypair>,
    set: ValidatorSet,
    pm: DefaultPacemaker,
    genesis: BlockHash,
    me: usize,
    /// `Config::broadcast_votes` of the replica (kept across restarts).
    broadcast_votes: bool,
    replica: Replica,
    /// Known blocks (by the harness or the replica): hash -> block.
    blocks: BTreeMap<BlockHash, Block>,
    block_list: Vec<BlockHash>,
    qcs: Vec<QuorumCertificate>,
    tcs: Vec<TimeoutCertificate>,
    messages: Vec<Message>,
    // Driver state of this incarnation.
    pending: Vec<(u64, Option<SafetyState>, Vec<BlockRecord>)>,
    last_seq: u64,
    acked: u64,
    app: Vec<AppReq>,
    sync_out: Option<(PublicKey, SyncRequest)>,
    store: Store,
    // Invariant trackers.
    max_voted: View,
    durable_voted: View,
    max_committed: Height,
    stats: Stats,
}

/// What one [`replica_inputs`] run reached (for corpus selection and the smoke test).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Inputs the replica accepted.
    pub accepted: usize,
    /// Inputs it refused with an error.
    pub refused: usize,
    /// Signed messages (votes, timeout votes, proposals) it sent.
    pub signed_sent: usize,
    /// Highest committed height.
    pub committed: u64,
    /// Highest view.
    pub max_view: u64,
}

const CAP: usize = 64;

fn push_capped<T: PartialEq>(v: &mut Vec<T>, x: T, keep_first: bool) {
    if v.contains(&x) {
        return;
    }
    if v.len() >= CAP {
        v.remove(usize::from(keep_first));
    }
    v.push(x);
}

/// Like [`pick`], counted from the newest entry; half of all indices pick the newest.
fn pick_recent<T>(v: &[T], i: u8) -> Option<&T> {
    if v.is_empty() {
        None
    } else {
        let back = if i & 0x80 == 0 { 0 } else { usize::from(i & 0x7f) % v.len() };
        v.get(v.len() - 1 - back)
    }
}

fn pick<T>(v: &[T], i: u8) -> Option<&T> {
    if v.is_empty() {
        None
    } else {
        v.get(usize::from(i) % v.len())
    }
}

impl Harness {
    fn new(me: usize, broadcast_votes: bool) -> Self {
        let keys = keys();
        let set = validator_set(&keys);
        let recovered = Recovered::genesis(CHAIN, set.clone());
        let genesis = recovered.genesis;
        let committed = recovered.committed;
        let replica = Replica::new(
            Config { broadcast_votes, ..Config::new(CHAIN) },
            Keypair::from_secret(&keys[me].secret()),
            DefaultPacemaker::round_robin(),
            recovered,
        )
        .expect("genesis replica");
        let mut h = Harness {
            keys,
            set,
            pm: DefaultPacemaker::round_robin(),
            genesis,
            me,
            broadcast_votes,
            replica,
            blocks: BTreeMap::new(),
            block_list: Vec::new(),
            qcs: vec![QuorumCertificate::genesis(genesis)],
            tcs: Vec::new(),
            messages: Vec::new(),
            pending: Vec::new(),
            last_seq: 0,
            acked: 0,
            app: Vec::new(),
            sync_out: None,
            store: Store {
                safety: None,
                blocks: BTreeMap::new(),
                committed,
                committed_chain: BTreeMap::new(),
                epoch: None,
            },
            max_voted: View(0),
            durable_voted: View(0),
            max_committed: Height(0),
            stats: Stats::default(),
        };
        h.drain();
        h
    }

    fn view_of(&self, sel: ViewSel) -> View {
        let v = self.replica.view().0;
        View(match sel {
            ViewSel::Current => v,
            ViewSel::Next => v.saturating_add(1),
            ViewSel::Prev => v.saturating_sub(1),
            ViewSel::Ahead(k) => v.saturating_add(u64::from(k % 8)),
            ViewSel::Behind(k) => v.saturating_sub(u64::from(k % 8)),
            ViewSel::Far => v.saturating_add(self.replica.config().view_window + 1),
            ViewSel::Zero => 0,
            ViewSel::Max => u64::MAX,
            ViewSel::Abs(x) => u64::from(x),
        })
    }

    fn others(&self) -> Vec<usize> {
        (0..N).filter(|i| *i != self.me).collect()
    }

    fn signers(&self, mask: u8) -> Vec<usize> {
        if mask % 16 == 0 {
            self.others()
        } else {
            (0..N).filter(|i| mask & (1 << i) != 0).collect()
        }
    }

    fn key_index(&self, pk: &PublicKey) -> usize {
        self.keys.iter().position(|k| k.public() == *pk).unwrap_or(0)
    }

    fn position(&self, hash: &BlockHash) -> Option<(View, Height)> {
        if *hash == self.genesis {
            return Some((View(0), Height(0)));
        }
        self.blocks.get(hash).map(|b| (b.view, b.height))
    }

    fn learn_block(&mut self, block: &Block) {
        let hash = block.hash();
        if self.blocks.insert(hash, block.clone()).is_none() {
            push_capped(&mut self.block_list, hash, false);
        }
        if self.blocks.len() > 4 * CAP {
            // Forget blocks no longer listed (keeps memory bounded on long inputs).
            let keep: std::collections::BTreeSet<BlockHash> = self.block_list.iter().copied().collect();
            self.blocks.retain(|h, _| keep.contains(h));
        }
        self.learn_qc(&block.justify);
    }

    fn learn_qc(&mut self, qc: &QuorumCertificate) {
        push_capped(&mut self.qcs, qc.clone(), true);
    }

    fn learn_tc(&mut self, tc: &TimeoutCertificate) {
        self.learn_qc(&tc.high_qc);
        push_capped(&mut self.tcs, tc.clone(), false);
    }

    fn learn_message(&mut self, m: &Message) {
        match m {
            Message::Proposal(p) => {
                self.learn_block(&p.block);
                if let Some(tc) = &p.tc {
                    self.learn_tc(tc);
                }
            }
            Message::Timeout(t) => {
                self.learn_qc(&t.high_qc);
                if let Some(tc) = &t.last_tc {
                    self.learn_tc(tc);
                }
            }
            Message::SyncResponse(r) => {
                for b in &r.blocks {
                    self.learn_block(b);
                }
            }
            Message::Certificate(qc) => self.learn_qc(qc),
            Message::Block(b) => self.learn_block(b),
            Message::Vote(_)
            | Message::SyncRequest(_)
            | Message::SyncPruned(_)
            | Message::SnapshotRequest(_)
            | Message::SnapshotOffer(_)
            | Message::SnapshotChunk(_)
            | Message::App(_)
            | Message::BlockRequest(_) => {}
        }
        if m.view().0 < u64::MAX / 2 || matches!(m, Message::SyncRequest(_) | Message::SyncResponse(_)) {
            push_capped(&mut self.messages, m.clone(), false);
        }
    }

    fn mutate_qc(&self, qc: &mut QuorumCertificate, m: Mutation) {
        match m {
            Mutation::TruncateSigs(k) => qc.signatures.truncate(usize::from(k % 4)),
            Mutation::DupSigner => {
                if let Some(first) = qc.signatures.first().copied() {
                    qc.signatures.insert(0, first);
                }
            }
            Mutation::UnsortSigners => qc.signatures.reverse(),
            Mutation::SwapHash(i) => {
                if let Some(h) = pick(&self.block_list, i) {
                    qc.block = *h;
                }
            }
            Mutation::CorruptSig(i) => {
                if let Some((_, s)) = qc.signatures.first_mut() {
                    s.0[usize::from(i) % 64] ^= 1;
                }
            }
            Mutation::ShiftView(d) => qc.view = View(qc.view.0.saturating_add_signed(i64::from(d))),
            _ => {}
        }
    }

    fn mutate_tc(&self, tc: &mut TimeoutCertificate, m: Mutation) {
        match m {
            Mutation::TruncateSigs(k) => tc.signatures.truncate(usize::from(k % 4)),
            Mutation::DupSigner => {
                if let Some(first) = tc.signatures.first().copied() {
                    tc.signatures.insert(0, first);
                }
            }
            Mutation::UnsortSigners => tc.signatures.reverse(),
            Mutation::CorruptSig(i) => {
                if let Some((_, _, s)) = tc.signatures.first_mut() {
                    s.0[usize::from(i) % 64] ^= 1;
                }
            }
            Mutation::ShiftView(d) => tc.view = View(tc.view.0.saturating_add_signed(i64::from(d))),
            Mutation::SwapHash(_) => self.mutate_qc(&mut tc.high_qc, m),
            _ => {}
        }
    }

    fn chain(&self, m: Mutation) -> ChainId {
        if m == Mutation::WrongChain {
            ChainId(CHAIN.0 + 1)
        } else {
            CHAIN
        }
    }

    fn signer(&self, default: usize, m: Mutation) -> usize {
        match m {
            Mutation::WrongSigner(k) => usize::from(k) % N,
            _ => default,
        }
    }

    fn deliver(&mut self, from: usize, message: Message) -> Result<(), hotstuff_core::InputError> {
        self.learn_message(&message);
        let from = self.keys[from].public();
        self.replica.handle(Input::Message { from, message })
    }

    /// Runs one op; returns the replica's verdict (`None` if the op fed it nothing).
    fn op(&mut self, op: Op) -> Option<Result<(), hotstuff_core::InputError>> {
        match op {
            Op::Propose { parent, view, tc, payload, mutation } => {
                let qc = pick_recent(&self.qcs, parent)?.clone();
                let view = view.map_or(qc.view.next(), |s| self.view_of(s));
                let (_, parent_height) = self.position(&qc.block).unwrap_or((View(0), Height(0)));
                let mut height = Height(parent_height.0.saturating_add(1));
                if let Mutation::BadHeight(d) = mutation {
                    height = Height(height.0.saturating_add_signed(i64::from(d)));
                }
                let leader = self.pm.leader(view, &self.set, &LeaderHistory::default());
                let signer = self.signer(self.key_index(&leader), mutation);
                let mut tc = tc.and_then(|i| pick(&self.tcs, i).cloned());
                let mut justify = qc;
                if matches!(
                    mutation,
                    Mutation::TruncateSigs(_) | Mutation::DupSigner | Mutation::UnsortSigners
                ) {
                    match &mut tc {
                        Some(tc) if mutation == Mutation::DupSigner => self.mutate_tc(tc, mutation),
                        _ => self.mutate_qc(&mut justify, mutation),
                    }
                }
                let mut payload = payload;
                payload.truncate(64);
                let block = Block {
                    epoch: Epoch(0),
                    view,
                    height,
                    justify,
                    proposer: self.keys[signer].public(),
                    payload,
                };
                let hash = block.hash();
                let mut signature = self.keys[signer].sign(
                    self.chain(mutation),
                    SignKind::Proposal,
                    view,
                    &block_subject(&hash),
                );
                let mut block = block;
                match mutation {
                    Mutation::CorruptSig(i) => signature.0[usize::from(i) % 64] ^= 1,
                    Mutation::ShiftView(d) => block.view = View(view.0.saturating_add_signed(i64::from(d))),
                    Mutation::SwapHash(i) => self.mutate_qc(&mut block.justify, Mutation::SwapHash(i)),
                    _ => {}
                }
                let from = self.signer(self.key_index(&leader), mutation);
                Some(self.deliver(from, Message::Proposal(Proposal { block, tc, signature })))
            }
            Op::Certify { block, signers, mutation } => {
                let hash = *pick_recent(&self.block_list, block)?;
                let b = self.blocks.get(&hash)?;
                let mut qc = sign_qc(&self.keys, b.view, hash, &self.signers(signers.unwrap_or(0)));
                if mutation == Mutation::WrongChain {
                    let subject = vote_subject(&hash, Epoch(0));
                    for (k, s) in &mut qc.signatures {
                        let i = self.key_index(k);
                        *s = self.keys[i].sign(self.chain(mutation), SignKind::Vote, qc.view, &subject);
                    }
                }
                self.mutate_qc(&mut qc, mutation);
                self.learn_qc(&qc);
                None
            }
            Op::Vote { block, voter, mutation } => {
                let hash = *pick(&self.block_list, block)?;
                let view = self.blocks.get(&hash)?.view;
                let voter = usize::from(voter) % N;
                let key = &self.keys[voter];
                let signature =
                    key.sign(self.chain(mutation), SignKind::Vote, view, &vote_subject(&hash, Epoch(0)));
                let mut vote = Vote { epoch: Epoch(0), view, block: hash, voter: key.public(), signature };
                match mutation {
                    Mutation::ShiftView(d) => vote.view = View(view.0.saturating_add_signed(i64::from(d))),
                    Mutation::SwapHash(i) => {
                        vote.block = pick(&self.block_list, i).copied().unwrap_or_default()
                    }
                    Mutation::CorruptSig(i) => vote.signature.0[usize::from(i) % 64] ^= 1,
                    Mutation::WrongSigner(k) => vote.voter = self.keys[usize::from(k) % N].public(),
                    _ => {}
                }
                Some(self.deliver(voter, Message::Vote(vote)))
            }
            Op::Timeout { view, voter, high_qc, last_tc, mutation } => {
                let view = self.view_of(view);
                let voter = usize::from(voter) % N;
                let mut high_qc = pick(&self.qcs, high_qc)?.clone();
                let mut last_tc = last_tc.and_then(|i| pick(&self.tcs, i).cloned());
                if let Some(tc) = &mut last_tc {
                    self.mutate_tc(tc, mutation);
                }
                let key = &self.keys[voter];
                let signature = key.sign(
                    self.chain(mutation),
                    SignKind::Timeout,
                    view,
                    &timeout_subject(high_qc.view, Epoch(0)),
                );
                let mut t = TimeoutVote {
                    epoch: Epoch(0),
                    view,
                    high_qc: high_qc.clone(),
                    voter: key.public(),
                    signature,
                    last_tc,
                    vote: None,
                };
                match mutation {
                    Mutation::ShiftView(d) => t.view = View(view.0.saturating_add_signed(i64::from(d))),
                    Mutation::CorruptSig(i) => t.signature.0[usize::from(i) % 64] ^= 1,
                    Mutation::WrongSigner(k) => t.voter = self.keys[usize::from(k) % N].public(),
                    Mutation::TruncateSigs(_) | Mutation::SwapHash(_) | Mutation::UnsortSigners => {
                        self.mutate_qc(&mut high_qc, mutation);
                        t.high_qc = high_qc;
                    }
                    _ => {}
                }
                Some(self.deliver(voter, Message::Timeout(t)))
            }
            Op::FormTc { view, signers, high_qcs, mutation } => {
                let view = self.view_of(view);
                let reports: Vec<(usize, QuorumCertificate)> = self
                    .signers(signers)
                    .into_iter()
                    .filter_map(|i| pick(&self.qcs, high_qcs[i]).map(|q| (i, q.clone())))
                    .collect();
                let mut tc = sign_tc(&self.keys, view, &reports);
                self.mutate_tc(&mut tc, mutation);
                self.learn_tc(&tc);
                None
            }
            Op::SyncRequest { from_height, max_blocks } => {
                let from = self.others()[usize::from(from_height) % (N - 1)];
                let req = SyncRequest {
                    id: u64::from(from_height),
                    from_height: Height(u64::from(from_height)),
                    max_blocks: u32::from(max_blocks),
                };
                Some(self.deliver(from, Message::SyncRequest(req)))
            }
            Op::SyncResponse { from, qc, mutation } => {
                let (peer, req) = self.sync_out.clone()?;
                let qc = pick(&self.qcs, qc)?.clone();
                // The certified chain ending at the QC's block, down to the requested height.
                let mut chain = Vec::new();
                let mut at = qc.block;
                while let Some(b) = self.blocks.get(&at) {
                    if b.height < req.from_height || chain.len() > 80 {
                        break;
                    }
                    chain.push(b.clone());
                    at = b.parent();
                }
                chain.reverse();
                let max = (req.max_blocks as usize).min(self.replica.config().limits.max_sync_blocks);
                let certificate = if chain.len() > max {
                    let cert = chain[max].justify.clone();
                    chain.truncate(max);
                    Some(cert)
                } else if chain.is_empty() {
                    None
                } else {
                    Some(qc)
                };
                let mut resp = SyncResponse { id: req.id, blocks: chain, certificate };
                match mutation {
                    Mutation::ShiftView(d) => resp.id = resp.id.wrapping_add_signed(i64::from(d)),
                    Mutation::TruncateSigs(k) => resp.blocks.truncate(usize::from(k % 4)),
                    Mutation::SwapHash(_) | Mutation::UnsortSigners | Mutation::CorruptSig(_) => {
                        if let Some(c) = &mut resp.certificate {
                            self.mutate_qc(c, mutation);
                        }
                    }
                    Mutation::DupSigner => {
                        if let Some(b) = resp.blocks.first().cloned() {
                            resp.blocks.push(b);
                        }
                    }
                    _ => {}
                }
                let sender = if from == 0 {
                    self.key_index(&peer)
                } else {
                    self.others()[usize::from(from) % (N - 1)]
                };
                Some(self.deliver(sender, Message::SyncResponse(resp)))
            }
            Op::Frame(bytes) => {
                let from = self.keys[self.others()[0]].public();
                Some(self.replica.handle_frame(from, &bytes))
            }
            Op::FlipFrame { msg, bit } => {
                let m = pick(&self.messages, msg)?.clone();
                let mut bytes = Envelope::new(CHAIN, m).encode();
                let bit = usize::from(bit) % (bytes.len() * 8);
                bytes[bit / 8] ^= 1 << (bit % 8);
                let from = self.keys[self.others()[0]].public();
                Some(self.replica.handle_frame(from, &bytes))
            }
            Op::Replay { msg } => {
                let m = pick(&self.messages, msg)?.clone();
                let from = self.others()[usize::from(msg) % (N - 1)];
                Some(self.deliver(from, m))
            }
            Op::Timer { view } => {
                let view = self.view_of(view);
                Some(self.replica.handle(Input::TimerFired { view }))
            }
            Op::Persisted { which } => {
                let seq = match which {
                    AckSel::Latest => self.last_seq,
                    AckSel::Oldest => self.pending.first().map_or(self.acked, |(s, _, _)| *s),
                    AckSel::Seq(k) => u64::from(k),
                    AckSel::Beyond(k) => self.last_seq.saturating_add(1 + u64::from(k)),
                };
                Some(self.ack(seq))
            }
            Op::AppReply { which, verdict } => {
                if self.app.is_empty() {
                    return None;
                }
                let req = self.app.remove(usize::from(which) % self.app.len());
                Some(self.answer(req, verdict))
            }
            Op::Drive => {
                for _ in 0..8 {
                    if self.app.is_empty() && self.acked >= self.last_seq {
                        break;
                    }
                    let _ = self.step(|h| h.ack(h.last_seq));
                    while !self.app.is_empty() {
                        let req = self.app.remove(0);
                        let _ = self.step(|h| h.answer(req, Verdict::Valid));
                    }
                }
                None
            }
            Op::Restart => {
                self.restart();
                None
            }
        }
    }

    fn ack(&mut self, seq: u64) -> Result<(), hotstuff_core::InputError> {
        let r = self.replica.handle(Input::Persisted { seq });
        if r.is_ok() && seq > self.acked {
            // The driver made everything up to `seq` durable before answering.
            self.acked = seq;
            let (done, rest): (Vec<_>, Vec<_>) =
                std::mem::take(&mut self.pending).into_iter().partition(|p| p.0 <= seq);
            self.pending = rest;
            for (_, safety, blocks) in done {
                if let Some(s) = safety {
                    assert!(
                        s.highest_voted_view >= self.durable_voted,
                        "durable highest_voted_view moved backwards: {:?} -> {:?}",
                        self.durable_voted,
                        s.highest_voted_view
                    );
                    self.durable_voted = s.highest_voted_view;
                    self.store.safety = Some(s);
                }
                for rec in blocks {
                    self.store.blocks.insert(rec.block.hash(), rec);
                }
            }
        }
        r
    }

    fn answer(&mut self, req: AppReq, verdict: Verdict) -> Result<(), hotstuff_core::InputError> {
        let limits = self.replica.config().limits;
        let outcome = if verdict == Verdict::ChangeSet {
            let mut o = AppOutcome::default();
            o.validator_updates.0.insert(self.keys[0].public(), 2);
            o
        } else {
            AppOutcome::default()
        };
        let input = match req {
            AppReq::Produce { view, parent } => {
                let payload = match verdict {
                    Verdict::Invalid => Vec::new(),
                    Verdict::TooLarge => vec![0; limits.max_payload + 1],
                    _ => vec![7; 24],
                };
                Input::BlockProduced {
                    view: if verdict == Verdict::WrongView { view.next() } else { view },
                    parent: if verdict == Verdict::WrongHash { BlockHash([1; 32]) } else { parent },
                    payload,
                    outcome,
                }
            }
            AppReq::Validate { hash } => Input::BlockValidated {
                hash: if matches!(verdict, Verdict::WrongHash | Verdict::WrongView) {
                    BlockHash([2; 32])
                } else {
                    hash
                },
                outcome: (verdict != Verdict::Invalid).then_some(outcome),
            },
        };
        self.replica.handle(input)
    }

    fn restart(&mut self) {
        let recovered = Recovered::resume(
            CHAIN,
            &self.set,
            self.store.safety.clone(),
            self.store.committed,
            self.store.epoch.clone(),
            self.store.blocks.values().cloned().collect(),
        );
        debug_assert_eq!(recovered.genesis, self.genesis);
        let replica = Replica::new(
            Config { broadcast_votes: self.broadcast_votes, ..Config::new(CHAIN) },
            Keypair::from_secret(&self.keys[self.me].secret()),
            DefaultPacemaker::round_robin(),
            recovered,
        );
        self.replica = match replica {
            Ok(r) => r,
            Err(e) => panic!("the durable state does not recover: {e}"),
        };
        self.pending.clear();
        self.last_seq = 0;
        self.acked = 0;
        self.app.clear();
        self.sync_out = None;
        assert!(
            self.replica.safety().highest_voted_view >= self.durable_voted,
            "restarted below the durable highest_voted_view"
        );
        self.max_voted = self.replica.safety().highest_voted_view;
        assert!(self.replica.committed_height() >= self.max_committed, "restart lost committed blocks");
        self.drain();
    }

    /// Feeds one input through `f` and checks the invariants around it.
    fn step(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<(), hotstuff_core::InputError>,
    ) -> Result<(), hotstuff_core::InputError> {
        let before = (self.replica.safety().clone(), *self.replica.committed(), self.replica.view());
        let result = f(self);
        if result.is_ok() {
            self.stats.accepted += 1;
        } else {
            self.stats.refused += 1;
        }
        if let Err(e) = &result {
            assert_eq!(self.replica.safety(), &before.0, "Err({e}) changed the safety state");
            assert_eq!(self.replica.committed(), &before.1, "Err({e}) changed the committed tip");
            assert_eq!(self.replica.view(), before.2, "Err({e}) changed the view");
            if let Some(a) = self.replica.poll_action() {
                panic!("Err({e}) emitted an action: {a:?}");
            }
        }
        self.drain();
        result
    }

    /// Performs every action and checks persist-before-send.
    fn drain(&mut self) {
        let mut persist_in_drain: Option<u64> = None;
        while let Some(action) = self.replica.poll_action() {
            match action {
                Action::SetSyncTimer { .. } => {}
                Action::Persist { seq, safety, blocks } => {
                    assert!(seq > self.last_seq, "persist seq {seq} not above {}", self.last_seq);
                    self.last_seq = seq;
                    persist_in_drain = Some(seq);
                    self.pending.push((seq, safety, blocks));
                }
                Action::Send { to, message } => self.sent(Some(to), message, persist_in_drain),
                Action::Broadcast { message } => self.sent(None, message, persist_in_drain),
                Action::SetTimer { .. } | Action::Event(_) => {}
                Action::ProduceBlock { view, parent, .. } => self.app.push(AppReq::Produce { view, parent }),
                Action::ValidateBlock { hash, block, .. } => {
                    self.learn_block(&block);
                    self.app.push(AppReq::Validate { hash });
                }
                Action::ServeSync { request, .. } => {
                    let chain = &self.store.committed_chain;
                    let resp = self.replica.sync_response(&request, |h| chain.get(&h.0).cloned());
                    let limits = self.replica.config().limits;
                    let message = Message::SyncResponse(resp);
                    if let Err(e) = message.check(&limits) {
                        panic!("sync_response built a response over the limits: {e}");
                    }
                }
                Action::Commit { blocks } => {
                    for cb in blocks {
                        assert_eq!(
                            cb.block.height.0,
                            self.store.committed.height.0 + 1,
                            "commit skipped a height"
                        );
                        self.store.committed =
                            CommittedTip { hash: cb.hash, view: cb.block.view, height: cb.block.height };
                        if let Some(change) = &cb.epoch_change {
                            self.store.epoch = Some(change.state.clone());
                        }
                        let proof = cb.epoch_change.map(|c| c.proof);
                        self.store
                            .committed_chain
                            .insert(cb.block.height.0, (cb.block, cb.certificate, proof));
                    }
                }
            }
        }
        let voted = self.replica.safety().highest_voted_view;
        assert!(
            voted >= self.max_voted,
            "highest_voted_view moved backwards: {:?} -> {voted:?}",
            self.max_voted
        );
        self.max_voted = voted;
        let committed = self.replica.committed_height();
        assert!(committed >= self.max_committed, "committed height moved backwards");
        self.max_committed = committed;
        self.stats.committed = committed.0;
        self.stats.max_view = self.stats.max_view.max(self.replica.view().0);
    }
}

impl Harness {
    /// Checks a message the replica sends: a signed message is its own and leaves only once the
    /// state it was signed under is durable.
    fn sent(&mut self, to: Option<PublicKey>, message: Message, persist_in_drain: Option<u64>) {
        let me = self.keys[self.me].public();
        if let Some(seq) = persist_in_drain {
            if matches!(message, Message::Vote(_) | Message::Timeout(_) | Message::Proposal(_)) {
                assert!(
                    self.acked >= seq,
                    "signed message sent after Persist {seq} but only {} acknowledged: {message:?}",
                    self.acked
                );
            }
        }
        let durable = self.store.safety.clone().unwrap_or_else(|| SafetyState::genesis(self.genesis));
        if matches!(message, Message::Vote(_) | Message::Timeout(_) | Message::Proposal(_)) {
            self.stats.signed_sent += 1;
        }
        match &message {
            Message::Vote(v) => {
                assert_eq!(v.voter, me, "the replica sent someone else's vote");
                assert!(
                    v.view <= durable.highest_voted_view,
                    "vote for {} sent before it was durable",
                    v.view
                );
            }
            Message::Timeout(t) => {
                assert_eq!(t.voter, me, "the replica sent someone else's timeout vote");
                assert!(
                    t.view <= durable.highest_voted_view,
                    "timeout for {} sent before it was durable",
                    t.view
                );
            }
            Message::Proposal(p) => {
                assert_eq!(p.block.proposer, me, "the replica sent someone else's proposal");
                assert!(
                    p.block.view <= durable.last_proposed_view,
                    "proposal for {} sent before it was durable",
                    p.block.view
                );
            }
            Message::SyncRequest(r) => {
                if let Some(to) = to {
                    self.sync_out = Some((to, r.clone()));
                }
            }
            Message::SyncResponse(_)
            | Message::SyncPruned(_)
            | Message::SnapshotRequest(_)
            | Message::SnapshotOffer(_)
            | Message::SnapshotChunk(_)
            | Message::App(_)
            | Message::Certificate(_)
            | Message::BlockRequest(_)
            | Message::Block(_) => {}
        }
        self.learn_message(&message);
    }
}

/// Runs [`ReplicaInput`]: one replica (validator `me % N` of [`N`]) fed the ops; after each, the
/// invariants are checked (see the module docs of `fuzz/README.md`). Panics on a violation.
pub fn replica_inputs(input: &ReplicaInput) -> Stats {
    let mut h = Harness::new(usize::from(input.me) % N, usize::from(input.me) / N % 2 == 1);
    for op in input.ops.iter().take(MAX_OPS) {
        let op = op.clone();
        if matches!(op, Op::Certify { .. } | Op::FormTc { .. } | Op::Drive | Op::Restart) {
            h.op(op);
            h.drain();
        } else {
            let _ = h.step(|h| h.op(op).unwrap_or(Ok(())));
        }
    }
    h.stats
}

// ------------------------------------------------------------------------------------------
// sim_schedule

/// The input of [`sim_schedule`]: a seed and a schedule for a 4-validator simulation with at
/// most one Byzantine key (f = 1), so safety must hold.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct SimInput {
    /// The seed (network delays, faults, crashes).
    pub seed: u64,
    /// Byzantine kind: 0 none, 1 twins, 2 equivocate, 3 silent, 4 withhold, 5 replay (mod 6);
    /// `kind / 6` odd runs every node with vote broadcast on (`Config::broadcast_votes`).
    pub kind: u8,
    /// Use the Twins scenario generator (one twin) instead of the random-fault one.
    pub twins_scenario: bool,
    /// Per view, each node's side (bit i = node i) until the heal; overrides the scenario's.
    pub partitions: Vec<u8>,
    /// Per view, the leader (key index mod 4); overrides the scenario's.
    pub leaders: Vec<u8>,
    /// Heal time in units of 250 ms (capped at 10 s).
    pub heal: u8,
    /// How many validator-set changes to make (mod 5): a listener joins, powers change, the
    /// listener leaves.
    pub changes: u8,
}

/// Runs [`SimInput`] and asserts that no two honest replicas committed different blocks and no
/// honest key signed twice in a view. Liveness is not asserted. Returns the report.
pub fn sim_schedule(input: &SimInput) -> Report {
    const KINDS: [Kind; 6] =
        [Kind::None, Kind::Twins, Kind::Equivocate, Kind::Silent, Kind::Withhold, Kind::Replay];
    let n = N;
    let kind = KINDS[usize::from(input.kind) % KINDS.len()];
    let mut p: Params = if input.twins_scenario {
        scenario::twins(input.seed, n, 1)
    } else {
        scenario::params(input.seed, n, usize::from(kind != Kind::None), kind)
    };
    p.broadcast_votes = input.kind / 6 % 2 == 1;
    let changes = usize::from(input.changes % 5);
    if changes > 0 {
        p.listeners = 1;
        let all = [
            crate::SetChange { at_height: 2, updates: vec![(n, 1)] },
            crate::SetChange { at_height: 0, updates: vec![(0, 2)] },
            crate::SetChange { at_height: 0, updates: vec![(n, 0), (1, 3)] },
            crate::SetChange { at_height: 0, updates: vec![(0, 1)] },
        ];
        p.set_changes = all[..changes].to_vec();
    }
    let nodes = n + p.twins.len() + p.listeners;
    if !input.partitions.is_empty() {
        p.view_partitions = input
            .partitions
            .iter()
            .take(scenario::TWINS_VIEWS)
            .map(|mask| (0..nodes).map(|i| (mask >> (i % 8)) & 1).collect())
            .collect();
    }
    if !input.leaders.is_empty() {
        p.leaders = input.leaders.iter().take(scenario::TWINS_VIEWS).map(|l| usize::from(*l) % n).collect();
    }
    p.heal_at_ms = p.heal_at_ms.min(u64::from(input.heal.min(40)) * 250);
    p.commits_after_heal = 3;
    p.max_timeout_ms = p.max_timeout_ms.min(4_000);
    let report = Sim::new(p).run();
    assert!(
        report.safety_violations.is_empty() && report.double_signs.is_empty(),
        "seed {}: safety {:?}, double signs {:?}",
        input.seed,
        report.safety_violations,
        report.double_signs
    );
    report
}
