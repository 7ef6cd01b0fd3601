//! Quorum certificates (QC) and timeout certificates (TC), and their verification.

use crate::codec;
use crate::crypto::{self, BatchItem, SignKind, SignatureError};
use crate::types::{BlockHash, ChainId, Epoch, Power, PublicKey, Signature, View};
use crate::validators::{ValidatorSet, MAX_VALIDATORS};
use alloc::vec::Vec;
use borsh::{BorshDeserialize, BorshSerialize};

/// A quorum certificate: votes worth more than two thirds of the voting power for one block in
/// one view.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize)]
pub struct QuorumCertificate {
    /// The epoch whose validator set signed it (the certified block's epoch).
    pub epoch: Epoch,
    /// The view the votes were cast in.
    pub view: View,
    /// The certified block.
    pub block: BlockHash,
    /// `(voter, signature)`, strictly ascending by voter. Empty only for the genesis QC.
    pub signatures: Vec<(PublicKey, Signature)>,
}

impl BorshDeserialize for QuorumCertificate {
    /// The derived layout, with at most [`MAX_VALIDATORS`] signatures (no set has more signers),
    /// read by [`codec::read_vec`] so memory follows the input.
    fn deserialize_reader<R: borsh::io::Read>(reader: &mut R) -> borsh::io::Result<Self> {
        Ok(QuorumCertificate {
            epoch: Epoch::deserialize_reader(reader)?,
            view: View::deserialize_reader(reader)?,
            block: BlockHash::deserialize_reader(reader)?,
            signatures: codec::read_vec(reader, MAX_VALIDATORS)?,
        })
    }
}

impl BorshDeserialize for TimeoutCertificate {
    /// The derived layout, with at most [`MAX_VALIDATORS`] signatures, as for a QC.
    fn deserialize_reader<R: borsh::io::Read>(reader: &mut R) -> borsh::io::Result<Self> {
        Ok(TimeoutCertificate {
            epoch: Epoch::deserialize_reader(reader)?,
            view: View::deserialize_reader(reader)?,
            high_qc: QuorumCertificate::deserialize_reader(reader)?,
            signatures: codec::read_vec(reader, MAX_VALIDATORS)?,
        })
    }
}

impl QuorumCertificate {
    /// The QC that certifies the genesis block.
    #[must_use]
    pub fn genesis(genesis: BlockHash) -> Self {
        QuorumCertificate { epoch: Epoch(0), view: View(0), block: genesis, signatures: Vec::new() }
    }

    /// Whether this is the (unsigned) genesis QC.
    #[must_use]
    pub fn is_genesis(&self) -> bool {
        self.view == View(0) && self.signatures.is_empty()
    }

    /// A digest of the whole certificate, used to remember which certificates were verified.
    #[must_use]
    pub fn digest(&self) -> BlockHash {
        crypto::hash(&borsh::to_vec(self).unwrap_or_default())
    }
}

/// A timeout certificate: timeout votes worth more than two thirds of the power for one view.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize)]
pub struct TimeoutCertificate {
    /// The epoch whose validator set signed it.
    pub epoch: Epoch,
    /// The view that timed out.
    pub view: View,
    /// The highest QC among the timeout votes; its view equals the largest `high_qc_view` below.
    pub high_qc: QuorumCertificate,
    /// `(voter, the view of that voter's highest QC, signature)`, strictly ascending by voter.
    pub signatures: Vec<(PublicKey, View, Signature)>,
}

impl TimeoutCertificate {
    /// The largest high-QC view any signer reported (`max(tc.tmo_high_qc_rounds)` in DiemBFT v4).
    #[must_use]
    pub fn max_high_qc_view(&self) -> View {
        self.signatures.iter().map(|(_, v, _)| *v).max().unwrap_or_default()
    }

    /// A digest of the whole certificate, used to remember which certificates were verified.
    #[must_use]
    pub fn digest(&self) -> BlockHash {
        crypto::hash(&borsh::to_vec(self).unwrap_or_default())
    }
}

/// Why a certificate is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// A view-0 QC that is not the genesis QC of this chain.
    #[error("bad genesis certificate")]
    BadGenesis,
    /// Signers not strictly ascending (duplicate or unsorted): not canonical.
    #[error("signers not strictly ascending")]
    NotCanonical,
    /// A signer outside the validator set.
    #[error("signer {0} is not a validator")]
    UnknownSigner(PublicKey),
    /// The signers' power is below the quorum.
    #[error("signers hold {have} power, quorum is {need}")]
    NoQuorum {
        /// Power of the signers.
        have: Power,
        /// Quorum threshold.
        need: Power,
    },
    /// A TC whose high QC does not match the largest reported high-QC view, or whose
    /// reported views are not below the TC's view.
    #[error("timeout certificate's high QC is inconsistent")]
    InconsistentHighQc,
    /// A signature failed.
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

/// Checks signer order, membership and quorum; returns nothing on success.
fn check_signers<'a>(
    signers: impl Iterator<Item = &'a PublicKey>,
    validators: &ValidatorSet,
) -> Result<(), CertificateError> {
    let mut have: u64 = 0;
    let mut prev: Option<&PublicKey> = None;
    for key in signers {
        if prev.is_some_and(|p| p >= key) {
            return Err(CertificateError::NotCanonical);
        }
        prev = Some(key);
        let power = validators.power(key).ok_or(CertificateError::UnknownSigner(*key))?;
        have = have.saturating_add(power);
    }
    let need = validators.quorum();
    if have < need {
        return Err(CertificateError::NoQuorum { have, need });
    }
    Ok(())
}

fn qc_items(
    qc: &QuorumCertificate,
    chain: ChainId,
    validators: &ValidatorSet,
    genesis: &BlockHash,
    out: &mut Vec<BatchItem>,
) -> Result<(), CertificateError> {
    if qc.view == View(0) {
        return if qc.signatures.is_empty() && qc.block == *genesis && qc.epoch == Epoch(0) {
            Ok(())
        } else {
            Err(CertificateError::BadGenesis)
        };
    }
    check_signers(qc.signatures.iter().map(|(k, _)| k), validators)?;
    let subject = crypto::vote_subject(&qc.block, qc.epoch);
    for (key, sig) in &qc.signatures {
        let vk = validators.verifying_key(key).ok_or(CertificateError::UnknownSigner(*key))?;
        out.push(BatchItem {
            key: *vk,
            msg: crypto::signed_bytes(chain, SignKind::Vote, qc.view, &subject),
            sig: *sig,
        });
    }
    Ok(())
}

/// Verifies a QC against the validator set in force for its view: canonical signer order,
/// membership, quorum by power, and all signatures with one batch verification.
pub fn verify_qc(
    qc: &QuorumCertificate,
    chain: ChainId,
    validators: &ValidatorSet,
    genesis: &BlockHash,
) -> Result<(), CertificateError> {
    let mut items = Vec::with_capacity(qc.signatures.len());
    qc_items(qc, chain, validators, genesis, &mut items)?;
    crypto::verify_batch(&items)?;
    Ok(())
}

/// [`verify_qc`] with one more signature (a proposal's, by its proposer) in the same batch: one
/// multiscalar multiplication instead of a strict check plus a batch. An `Err` does not say
/// which signature failed: the caller then checks them one by one for the error to report.
pub(crate) fn verify_qc_with(
    qc: &QuorumCertificate,
    chain: ChainId,
    validators: &ValidatorSet,
    genesis: &BlockHash,
    extra: BatchItem,
) -> Result<(), CertificateError> {
    let mut items = Vec::with_capacity(qc.signatures.len() + 1);
    qc_items(qc, chain, validators, genesis, &mut items)?;
    items.push(extra);
    crypto::verify_batch(&items)?;
    Ok(())
}

/// Verifies a TC: its signers as for a QC, each reported high-QC view below the TC's view, the
/// embedded high QC matching the largest reported view, and all signatures (the TC's and its
/// high QC's) in one batch. If `high_qc_known_valid`, the embedded QC's signatures are skipped.
/// `validators` is the set of the TC's epoch; `qc_validators` the set that certified the high
/// QC's block (the previous epoch's set when that block is the one that ended it).
pub fn verify_tc(
    tc: &TimeoutCertificate,
    chain: ChainId,
    validators: &ValidatorSet,
    qc_validators: &ValidatorSet,
    genesis: &BlockHash,
    high_qc_known_valid: bool,
) -> Result<(), CertificateError> {
    check_signers(tc.signatures.iter().map(|(k, _, _)| k), validators)?;
    if tc.signatures.iter().any(|(_, v, _)| *v >= tc.view) || tc.max_high_qc_view() != tc.high_qc.view {
        return Err(CertificateError::InconsistentHighQc);
    }
    let mut items = Vec::with_capacity(tc.signatures.len() + tc.high_qc.signatures.len());
    for (key, hqc_view, sig) in &tc.signatures {
        let vk = validators.verifying_key(key).ok_or(CertificateError::UnknownSigner(*key))?;
        items.push(BatchItem {
            key: *vk,
            msg: crypto::signed_bytes(
                chain,
                SignKind::Timeout,
                tc.view,
                &crypto::timeout_subject(*hqc_view, tc.epoch),
            ),
            sig: *sig,
        });
    }
    if !high_qc_known_valid {
        qc_items(&tc.high_qc, chain, qc_validators, genesis, &mut items)?;
    }
    crypto::verify_batch(&items)?;
    Ok(())
}

/// Verifies a QC signature by signature (no batching): the baseline the benchmark compares
/// batch verification against.
pub fn verify_qc_unbatched(
    qc: &QuorumCertificate,
    chain: ChainId,
    validators: &ValidatorSet,
    genesis: &BlockHash,
) -> Result<(), CertificateError> {
    let mut items = Vec::with_capacity(qc.signatures.len());
    qc_items(qc, chain, validators, genesis, &mut items)?;
    for item in &items {
        crypto::verify_batch(core::slice::from_ref(item))?;
    }
    Ok(())
}
