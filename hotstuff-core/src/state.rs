//! What a replica persists, and what it is rebuilt from after a restart.

use crate::app::AppOutcome;
use crate::block::{genesis_hash, Block};
use crate::certificate::{QuorumCertificate, TimeoutCertificate};
use crate::message::{TimeoutVote, Vote};
use crate::types::{BlockHash, ChainId, Epoch, Height, View};
use crate::validators::ValidatorSet;
use alloc::vec::Vec;
use borsh::{BorshDeserialize, BorshSerialize};

/// The state every signed message depends on. The core emits it in
/// [`Action::Persist`](crate::Action::Persist) whenever it changes and holds back every vote,
/// timeout vote and proposal signed under it until the driver acknowledges it as durable.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct SafetyState {
    /// The epoch the QCs and TC below belong to. Views run on across epochs; the QCs and the TC
    /// of an ended epoch are replaced by the new epoch's root QC when it starts.
    pub epoch: Epoch,
    /// The current view.
    pub view: View,
    /// The highest view this replica voted or sent a timeout vote in
    /// (`highest_vote_round` of DiemBFT v4). It never moves backwards.
    pub highest_voted_view: View,
    /// The highest view this replica proposed in; it never proposes twice in one view.
    pub last_proposed_view: View,
    /// The QC of the parent of the highest block this replica voted for (`highest_qc_round`
    /// of DiemBFT v4, the two-chain lock). Timeout votes never report a QC below it.
    pub locked_qc: QuorumCertificate,
    /// The highest QC known.
    pub high_qc: QuorumCertificate,
    /// The highest TC known.
    pub last_tc: Option<TimeoutCertificate>,
    /// The last vote signed (re-sent as is, never re-signed differently).
    pub last_vote: Option<Vote>,
    /// The last timeout vote signed (re-sent as is while its view lasts).
    pub last_timeout: Option<TimeoutVote>,
}

impl SafetyState {
    /// The state of a replica that has never run: view 1, everything at genesis.
    #[must_use]
    pub fn genesis(genesis: BlockHash) -> Self {
        let qc = QuorumCertificate::genesis(genesis);
        SafetyState {
            epoch: Epoch(0),
            view: View(1),
            highest_voted_view: View(0),
            last_proposed_view: View(0),
            locked_qc: qc.clone(),
            high_qc: qc,
            last_tc: None,
            last_vote: None,
            last_timeout: None,
        }
    }
}

/// A block with the app's verdict on it (`None` until the app has validated it).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct BlockRecord {
    /// The block.
    pub block: Block,
    /// Its app outcome, once validated.
    pub outcome: Option<AppOutcome>,
}

/// The last committed block: the root of the block tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct CommittedTip {
    /// Its hash.
    pub hash: BlockHash,
    /// Its view.
    pub view: View,
    /// Its height.
    pub height: Height,
}

/// The validator set in force and where its epoch began. A driver stores it atomically with
/// each commit that carries an [`EpochChange`](crate::EpochChange), and hands it back in
/// [`Recovered`].
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct EpochState {
    /// The current epoch.
    pub epoch: Epoch,
    /// Its validator set.
    pub validators: ValidatorSet,
    /// The previous epoch's set (`None` in epoch 0): it signed `root_qc`.
    pub previous: Option<ValidatorSet>,
    /// The QC certifying the block the epoch began after (the previous epoch's last block, or
    /// genesis). The epoch's first blocks extend it.
    pub root_qc: QuorumCertificate,
}

impl EpochState {
    /// Epoch 0 of a chain whose genesis is `genesis`.
    #[must_use]
    pub fn genesis(genesis: BlockHash, validators: ValidatorSet) -> Self {
        EpochState {
            epoch: Epoch(0),
            validators,
            previous: None,
            root_qc: QuorumCertificate::genesis(genesis),
        }
    }
}

/// Everything a replica is rebuilt from: a fresh start ([`Recovered::genesis`]) or what the
/// driver's store held after a crash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// The hash of the chain's genesis block (never changes).
    pub genesis: BlockHash,
    /// The durable safety state (the last one acknowledged with `Persisted`).
    pub safety: SafetyState,
    /// The last committed block.
    pub committed: CommittedTip,
    /// The epoch in force after the last committed block.
    pub epoch: EpochState,
    /// Uncommitted blocks that were persisted (any order). Those whose parent is missing (the
    /// driver wrote other proposers' blocks in the background and lost some in the crash) are
    /// kept aside, served to peers by hash and joined to the tree once the parent arrives;
    /// those of another epoch or at or below `committed`'s view are dropped.
    pub blocks: Vec<BlockRecord>,
    /// The last committed blocks, oldest first, up to `committed` (the leader schedule's
    /// history, see [`crate::pacemaker`]): those of the last
    /// [`LeaderHistory::KEEP_VIEWS`](crate::LeaderHistory::KEEP_VIEWS) views are enough. A
    /// driver that passes none still recovers safely; until it commits `lag + window` views
    /// more, its leader schedule may differ from its peers' (a loss of liveness only).
    pub recent: Vec<Block>,
}

impl Recovered {
    /// The starting state of a new chain with the given initial validator set.
    #[must_use]
    pub fn genesis(chain: ChainId, validators: ValidatorSet) -> Self {
        let genesis = genesis_hash(chain, &validators);
        Recovered {
            genesis,
            safety: SafetyState::genesis(genesis),
            committed: CommittedTip { hash: genesis, view: View(0), height: Height(0) },
            epoch: EpochState::genesis(genesis, validators),
            blocks: Vec::new(),
            recent: Vec::new(),
        }
    }

    /// What a driver rebuilds from its store after a restart: the durable safety state (or the
    /// genesis one if none was ever written), the committed tip, the epoch in force (`None` if
    /// the chain never left epoch 0 and none was stored) and the stored uncommitted blocks.
    #[must_use]
    pub fn resume(
        chain: ChainId,
        initial_validators: &ValidatorSet,
        safety: Option<SafetyState>,
        committed: CommittedTip,
        epoch: Option<EpochState>,
        blocks: Vec<BlockRecord>,
    ) -> Self {
        let genesis = genesis_hash(chain, initial_validators);
        Recovered {
            genesis,
            safety: safety.unwrap_or_else(|| SafetyState::genesis(genesis)),
            committed,
            epoch: epoch.unwrap_or_else(|| EpochState::genesis(genesis, initial_validators.clone())),
            blocks,
            recent: Vec::new(),
        }
    }

    /// Adds the last committed blocks, oldest first (see [`Recovered::recent`]).
    #[must_use]
    pub fn with_recent(mut self, recent: Vec<Block>) -> Self {
        self.recent = recent;
        self
    }
}
