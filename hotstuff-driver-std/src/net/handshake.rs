//! The connection handshake: binds a TCP connection to a peer's ed25519 key and to the chain
//! before any message is accepted on it.
//!
//! Both sides send `Hello = magic (8) || chain id (u64 LE) || public key (32) || nonce (32)`,
//! with a fresh nonce drawn from the OS. Each side then signs
//! `blake3(tag || own key || own nonce || peer key || peer nonce)` with
//! [`SignKind::Handshake`] under the chain id, and checks the peer's signature over the same
//! digest from the peer's side. The signature covers the other side's fresh nonce, so a
//! recorded handshake cannot be replayed; it covers both keys, so it cannot be relayed to a
//! third party; and it is domain-separated by chain and kind, so it is never valid as a
//! consensus signature.

use crate::error::HandshakeError;
use hotstuff_core::crypto::{self, SignKind};
use hotstuff_core::{ChainId, Keypair, PublicKey, Signature, View};
use std::io::{ErrorKind, Read, Write};

/// Identifies the protocol and its version.
pub const MAGIC: [u8; 8] = *b"HSDRV\0\x01\0";
/// Size of a hello message.
pub const HELLO_LEN: usize = 8 + 8 + 32 + 32;
const TAG: &[u8] = b"hotstuff-driver-std/handshake/v1";
/// The line a client of the kv client protocol gets from a consensus port (after the port's
/// hello), instead of a wait for the handshake deadline.
pub const NOT_A_CLIENT_PORT: &str =
    "ERR this is the consensus port of a hotstuff node (`listen`), not its client port (`client_listen`)\n";

/// What a hello says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The sender's chain.
    pub chain: ChainId,
    /// The sender's identity.
    pub key: PublicKey,
    /// The sender's fresh nonce.
    pub nonce: [u8; 32],
}

impl Hello {
    /// The wire form.
    #[must_use]
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut out = [0u8; HELLO_LEN];
        let (magic, rest) = out.split_at_mut(8);
        magic.copy_from_slice(&MAGIC);
        let (chain, rest) = rest.split_at_mut(8);
        chain.copy_from_slice(&self.chain.0.to_le_bytes());
        let (key, nonce) = rest.split_at_mut(32);
        key.copy_from_slice(&self.key.0);
        nonce.copy_from_slice(&self.nonce);
        out
    }

    /// Parses the wire form.
    pub fn decode(bytes: &[u8; HELLO_LEN]) -> Result<Self, HandshakeError> {
        let (magic, rest) = bytes.split_first_chunk::<8>().ok_or(HandshakeError::BadHello)?;
        if *magic != MAGIC {
            return Err(HandshakeError::BadHello);
        }
        let (chain, rest) = rest.split_first_chunk::<8>().ok_or(HandshakeError::BadHello)?;
        let (key, rest) = rest.split_first_chunk::<32>().ok_or(HandshakeError::BadHello)?;
        let nonce = rest.first_chunk::<32>().ok_or(HandshakeError::BadHello)?;
        Ok(Hello { chain: ChainId(u64::from_le_bytes(*chain)), key: PublicKey(*key), nonce: *nonce })
    }
}

/// The digest `signer` signs: it binds both keys and both nonces.
#[must_use]
pub fn digest(signer: &Hello, other: &Hello) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(TAG);
    h.update(&signer.key.0);
    h.update(&signer.nonce);
    h.update(&other.key.0);
    h.update(&other.nonce);
    *h.finalize().as_bytes()
}

/// A fresh nonce from the operating system.
pub fn nonce() -> Result<[u8; 32], HandshakeError> {
    let mut n = [0u8; 32];
    getrandom::fill(&mut n).map_err(|e| HandshakeError::Entropy(e.to_string()))?;
    Ok(n)
}

/// Runs the handshake on `stream` (the caller sets its timeouts). `allowed` says which keys
/// may connect; `expect` is the key the dialled address belongs to. Returns the peer's key.
pub fn run(
    stream: &mut (impl Read + Write),
    me: &Keypair,
    chain: ChainId,
    allowed: impl Fn(&PublicKey) -> bool,
    expect: Option<PublicKey>,
) -> Result<PublicKey, HandshakeError> {
    run_with_nonce(stream, me, chain, allowed, expect, nonce()?)
}

/// [`run`] with a given nonce instead of a fresh one from the OS: for deterministic tests and
/// fuzzing only (it runs the same steps: [`answer`], [`verify`]). A reused nonce lets a
/// recorded handshake be replayed; never use it in a node.
pub fn run_with_nonce(
    stream: &mut (impl Read + Write),
    me: &Keypair,
    chain: ChainId,
    allowed: impl Fn(&PublicKey) -> bool,
    expect: Option<PublicKey>,
    nonce: [u8; 32],
) -> Result<PublicKey, HandshakeError> {
    let mine = Hello { chain, key: me.public(), nonce };
    stream.write_all(&mine.encode()).map_err(io)?;
    stream.flush().map_err(io)?;
    let mut buf = [0u8; HELLO_LEN];
    read_hello(stream, &mut buf)?;
    let (theirs, sig) = answer(me, &mine, &buf, allowed, expect)?;
    stream.write_all(&sig.0).map_err(io)?;
    stream.flush().map_err(io)?;
    let mut their_sig = [0u8; 64];
    stream.read_exact(&mut their_sig).map_err(io)?;
    verify(&mine, &theirs, &their_sig)
}

/// Reads the peer's hello. Bytes that cannot begin one are refused as soon as they arrive
/// ([`check_hello_start`]); a line of text is answered with [`NOT_A_CLIENT_PORT`].
fn read_hello(stream: &mut (impl Read + Write), buf: &mut [u8; HELLO_LEN]) -> Result<(), HandshakeError> {
    let mut got = 0;
    while let Some(rest) = buf.get_mut(got..).filter(|r| !r.is_empty()) {
        let n = match stream.read(rest) {
            Ok(0) => return Err(io(ErrorKind::UnexpectedEof.into())),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        };
        got += n;
        if let Err(e) = check_hello_start(buf.get(..got).unwrap_or_default()) {
            if matches!(e, HandshakeError::ClientOnConsensusPort) {
                // Best effort: the connection is closed either way.
                let _ = stream.write_all(NOT_A_CLIENT_PORT.as_bytes()).and_then(|()| stream.flush());
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Checks the first bytes received of a peer's hello, before the rest arrives: `Ok` while they
/// may still begin one; [`HandshakeError::ClientOnConsensusPort`] for text (a client of the
/// kv client protocol at the wrong port: answer it [`NOT_A_CLIENT_PORT`]); else
/// [`HandshakeError::BadHello`].
pub fn check_hello_start(seen: &[u8]) -> Result<(), HandshakeError> {
    let seen = seen.get(..seen.len().min(MAGIC.len())).unwrap_or_default();
    if MAGIC.starts_with(seen) {
        Ok(())
    } else if seen.iter().all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace()) {
        Err(HandshakeError::ClientOnConsensusPort)
    } else {
        Err(HandshakeError::BadHello)
    }
}

/// Step 1 of [`run`], without I/O: our hello, with a fresh nonce.
pub fn hello(me: &Keypair, chain: ChainId) -> Result<Hello, HandshakeError> {
    Ok(Hello { chain, key: me.public(), nonce: nonce()? })
}

/// Step 2 of [`run`], without I/O: checks the peer's hello `theirs` against ours (chain, not
/// our own key, the `expect`ed key if we dialled, `allowed`, a valid key) and signs the
/// digest. Returns the peer's hello and the signature to send it.
pub fn answer(
    me: &Keypair,
    mine: &Hello,
    theirs: &[u8; HELLO_LEN],
    allowed: impl Fn(&PublicKey) -> bool,
    expect: Option<PublicKey>,
) -> Result<(Hello, Signature), HandshakeError> {
    let theirs = Hello::decode(theirs)?;
    if theirs.chain != mine.chain {
        return Err(HandshakeError::WrongChain { expected: mine.chain, got: theirs.chain });
    }
    if theirs.key == mine.key {
        return Err(HandshakeError::SelfConnection);
    }
    if let Some(expected) = expect.filter(|e| *e != theirs.key) {
        return Err(HandshakeError::UnexpectedKey { expected, got: theirs.key });
    }
    if !allowed(&theirs.key) {
        return Err(HandshakeError::NotAllowed(theirs.key));
    }
    crypto::verifying_key(&theirs.key).map_err(|_| HandshakeError::BadKey(theirs.key))?;
    let sig = me.sign(mine.chain, SignKind::Handshake, View(0), &digest(mine, &theirs));
    Ok((theirs, sig))
}

/// Step 3 of [`run`], without I/O: checks the peer's signature over its digest of both hellos.
/// Returns the peer's key.
pub fn verify(mine: &Hello, theirs: &Hello, their_sig: &[u8; 64]) -> Result<PublicKey, HandshakeError> {
    let vk = crypto::verifying_key(&theirs.key).map_err(|_| HandshakeError::BadKey(theirs.key))?;
    crypto::verify_one(
        &vk,
        mine.chain,
        SignKind::Handshake,
        View(0),
        &digest(theirs, mine),
        &Signature(*their_sig),
    )
    .map_err(|_| HandshakeError::BadSignature(theirs.key))?;
    Ok(theirs.key)
}

/// A handshake I/O error: a clean end of stream is [`HandshakeError::Closed`].
pub fn io(e: std::io::Error) -> HandshakeError {
    if e.kind() == ErrorKind::UnexpectedEof {
        HandshakeError::Closed
    } else {
        HandshakeError::Io(e.into())
    }
}
