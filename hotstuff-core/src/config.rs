//! Replica settings.

use crate::error::ConfigError;
use crate::message::Limits;
use crate::types::ChainId;
use core::time::Duration;

/// Settings of one replica. All replicas of a chain must agree on `chain` and `limits`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The chain this replica runs.
    pub chain: ChainId,
    /// Wire size limits (default: 64 MiB frames, 4 MiB payloads, 1024 signers, 64 blocks per
    /// sync response).
    pub limits: Limits,
    /// How many views ahead of the current one votes, timeout votes and proposals are accepted
    /// (default 1,000). Beyond it they are refused as too far ahead.
    pub view_window: u64,
    /// Most uncommitted blocks kept (default 10,000). Beyond it proposals are refused.
    pub max_uncommitted_blocks: usize,
    /// Block sync starts when a certificate arrives for a block this replica lacks whose view
    /// is more than this many views above every block it has (default 0: at once).
    pub sync_margin: u64,
    /// Block sync starts when nothing has committed for this long (default 10 s).
    pub sync_no_progress: Duration,
    /// How long a sync server that sent a bad response (or an empty one while blocks are
    /// missing) is avoided (default 30 s).
    pub sync_avoid: Duration,
    /// How long a replica that holds a QC for a block it lacks waits for the block to arrive
    /// by itself (a late proposal) before it asks the QC's signers for it, and the interval of
    /// the retries, which back off exponentially (default 50 ms).
    pub fetch_delay: Duration,
    /// Vote broadcast (default `false`). Off, a replica sends its vote for view `v` only to the
    /// leader of `v + 1`, which alone forms the QC; the others learn of it from the next
    /// proposal, one one-way network delay later. On, it sends the vote to every validator of
    /// the epoch as well (never to listeners: they count no votes), and every validator counts
    /// the votes it receives and forms the QC itself (Jolteon / DiemBFT v4: a QC is valid
    /// wherever it forms). Each replica then learns that a block is committed (two-chain rule)
    /// and enters the next view one one-way delay sooner, at the price of `n^2` instead of `n`
    /// vote messages per view and every validator verifying every vote (`n` signature checks
    /// per view instead of none at non-leaders). Safety does not depend on it, but all
    /// validators of a chain should use the same setting: a replica with it off refuses the
    /// votes of one with it on that are not addressed to it as the next leader (harmless
    /// `NotNextLeader` errors, and the latency gain only where both ends have it on).
    /// Memory is bounded as without it: a validator keeps the votes of the previous view up to
    /// `view_window` views ahead, at most one per validator and view (the next leader's bound).
    pub broadcast_votes: bool,
}

impl Config {
    /// Defaults for `chain`.
    #[must_use]
    pub fn new(chain: ChainId) -> Self {
        Config {
            chain,
            limits: Limits::default(),
            view_window: 1_000,
            max_uncommitted_blocks: 10_000,
            sync_margin: 0,
            sync_no_progress: Duration::from_secs(10),
            sync_avoid: Duration::from_secs(30),
            fetch_delay: Duration::from_millis(50),
            broadcast_votes: false,
        }
    }

    /// Checks every setting, naming the first one out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.view_window == 0 {
            return Err(ConfigError::Setting { name: "view_window", reason: "must be at least 1" });
        }
        if self.max_uncommitted_blocks < 4 {
            return Err(ConfigError::Setting {
                name: "max_uncommitted_blocks",
                reason: "must be at least 4",
            });
        }
        if self.limits.max_payload >= self.limits.max_frame {
            return Err(ConfigError::Setting {
                name: "limits.max_payload",
                reason: "must be smaller than limits.max_frame",
            });
        }
        if self.limits.max_sync_blocks == 0 {
            return Err(ConfigError::Setting {
                name: "limits.max_sync_blocks",
                reason: "must be at least 1",
            });
        }
        if self.sync_no_progress.is_zero() {
            return Err(ConfigError::Setting { name: "sync_no_progress", reason: "must be above zero" });
        }
        if self.fetch_delay.is_zero() {
            return Err(ConfigError::Setting { name: "fetch_delay", reason: "must be above zero" });
        }
        if self.limits.max_signers == 0 {
            return Err(ConfigError::Setting { name: "limits.max_signers", reason: "must be at least 1" });
        }
        Ok(())
    }
}
