//! A test kit (feature `test-util`): keys, validator sets, and correctly signed votes, timeout
//! votes, QCs and TCs built from keys, so a test of a driver or an app can hand the core valid
//! (or deliberately broken) certificates without re-deriving the signing rules. Nothing here is
//! needed to run a replica.

use crate::certificate::{QuorumCertificate, TimeoutCertificate};
use crate::crypto::{self, Keypair, SignKind};
use crate::message::{TimeoutVote, Vote};
use crate::types::{BlockHash, ChainId, Epoch, PublicKey, View};
use crate::validators::{ValidatorSet, ValidatorSetError};
use alloc::vec::Vec;

/// `n` deterministic keys (the secret of the `i`-th, from 1, starts with `i` in little endian),
/// sorted by public key.
#[must_use]
pub fn keys(n: usize) -> Vec<Keypair> {
    let mut keys: Vec<Keypair> = (1..=n as u64)
        .map(|i| {
            let mut secret = [0x7e; 32];
            for (s, b) in secret.iter_mut().zip(i.to_le_bytes()) {
                *s = b;
            }
            Keypair::from_secret(&secret)
        })
        .collect();
    keys.sort_by_key(Keypair::public);
    keys
}

/// The validator set of `keys` with power 1 each.
pub fn validator_set(keys: &[Keypair]) -> Result<ValidatorSet, ValidatorSetError> {
    ValidatorSet::new(keys.iter().map(|k| (k.public(), 1)))
}

/// `key`'s vote for `block` in `view` of `epoch`.
#[must_use]
pub fn vote(key: &Keypair, chain: ChainId, epoch: Epoch, view: View, block: BlockHash) -> Vote {
    let signature = key.sign(chain, SignKind::Vote, view, &crypto::vote_subject(&block, epoch));
    Vote { epoch, view, block, voter: key.public(), signature }
}

/// A QC for `block` in `view` of `epoch` signed by `signers` (any order: sorted here, as the
/// core requires). It verifies if the signers hold a quorum of the epoch's set.
#[must_use]
pub fn qc(
    chain: ChainId,
    epoch: Epoch,
    view: View,
    block: BlockHash,
    signers: &[&Keypair],
) -> QuorumCertificate {
    let mut signatures: Vec<(PublicKey, crate::types::Signature)> =
        signers.iter().map(|k| (k.public(), vote(k, chain, epoch, view, block).signature)).collect();
    signatures.sort_by_key(|(pk, _)| *pk);
    QuorumCertificate { epoch, view, block, signatures }
}

/// `key`'s timeout vote for `view`, reporting `high_qc` (no last TC, no vote in the view).
#[must_use]
pub fn timeout_vote(key: &Keypair, chain: ChainId, view: View, high_qc: QuorumCertificate) -> TimeoutVote {
    let epoch = high_qc.epoch;
    let subject = crypto::timeout_subject(high_qc.view, epoch);
    let signature = key.sign(chain, SignKind::Timeout, view, &subject);
    TimeoutVote { epoch, view, high_qc, voter: key.public(), signature, last_tc: None, vote: None }
}

/// A TC for `view` from `(signer, the high QC it reports)` pairs (any order: sorted here); its
/// high QC is the highest reported, as the core requires. Every QC must be of `epoch`.
#[must_use]
pub fn tc(
    chain: ChainId,
    epoch: Epoch,
    view: View,
    votes: &[(&Keypair, QuorumCertificate)],
) -> Option<TimeoutCertificate> {
    let high_qc = votes.iter().map(|(_, q)| q).max_by_key(|q| q.view)?.clone();
    let mut signatures: Vec<_> = votes
        .iter()
        .map(|(k, q)| {
            let sig = k.sign(chain, SignKind::Timeout, view, &crypto::timeout_subject(q.view, epoch));
            (k.public(), q.view, sig)
        })
        .collect();
    signatures.sort_by_key(|(pk, _, _)| *pk);
    Some(TimeoutCertificate { epoch, view, high_qc, signatures })
}
