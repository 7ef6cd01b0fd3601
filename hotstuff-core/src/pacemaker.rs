//! View synchronisation policy: who leads each view, and how long a view may take.
//!
//! The core owns the rules (when to time out, when a TC or QC moves the view); the pacemaker only
//! answers two questions, so users can plug their own policy. Every replica of a chain must use
//! the same `leader` function.
//!
//! # Leader reputation
//!
//! With a plain round robin, a crashed validator keeps being elected: each of its views times
//! out, and the view before it loses its direct QC path too (one validator of four down cut the
//! commit rate about 20 times on loopback). The default policy therefore skips validators that
//! show no sign of life in the committed chain, in the manner of Aptos/DiemBFT's
//! `LeaderReputation` (ProposerAndVoter) and of Carousel (Cohen et al., FC 2022): a validator
//! is *active* for view `v` if it proposed a committed block, or signed the QC a committed
//! block carries, among the committed blocks with views in `(v - lag - window, v - lag]`.
//! View `v` is led by the weighted round robin over the active validators (by power); if none
//! is active (no commits in the window, e.g. the chain's first views or a long outage), over
//! all validators. Every `probe_every`-th view uses the round robin over all validators, so a
//! validator whose votes are always the last to arrive (never in a quorum's first 2f + 1) still
//! gets turns, and proves itself active by getting its block committed.
//!
//! **Agreement.** The schedule of view `v` is a pure function of the committed chain up to
//! view `v - lag`, which is the same on every honest replica (committed blocks never
//! conflict) once it has committed that far. In steady state a replica in view `v` has
//! committed up to `v - 2`, so `lag` (default 10) leaves room for replicas a few views behind.
//! A replica that has not committed that far (or recovered without its recent history) may
//! compute another leader for `v`.
//!
//! **Safety does not depend on agreement.** The leader function only decides which proposal
//! a replica considers in a view and where it sends its vote. The voting rule (one vote per
//! view, `highest_voted_view`), the locking rule and the commit rule never look at who the
//! leader is, and two QCs for one view need two quorums, which share an honest replica that
//! would have voted twice. So replicas that disagree about a view's leader can at worst fail
//! to certify a block in that view (it times out, the TC moves everyone on): they lose
//! liveness for that view, never safety.
//!
//! **Epochs.** While the window reaches back before the current epoch began (the first
//! `lag + window` views of an epoch), every member leads in turn: members added by the epoch
//! have had no chance to show activity yet. The epoch's start is the view of its root QC,
//! which every replica that switched agrees on.
//!
//! **Recovery.** A validator that comes back votes for the next proposals it receives; once a
//! committed block carries a QC it signed and `lag` views have passed, it is active again.
//! A crashed validator stops being elected about `lag + window` views after its last vote.

use crate::block::Block;
use crate::types::{PublicKey, View};
use crate::validators::ValidatorSet;
use alloc::collections::{BTreeSet, VecDeque};
use alloc::vec::Vec;
use core::time::Duration;

/// The pluggable view-synchronisation policy.
pub trait Pacemaker {
    /// The leader of `view` among `validators`, given the recent committed history. Must be a
    /// member of `validators`, and the same on every replica that has the same history (a pure
    /// function of its arguments; see the module docs for why disagreement costs only
    /// liveness).
    fn leader(&self, view: View, validators: &ValidatorSet, history: &LeaderHistory) -> PublicKey;

    /// How long the replica waits in `view` before it times out, given how many views in a row
    /// have failed (ended by a TC rather than a QC) just before it.
    fn view_timeout(&self, view: View, consecutive_failures: u32) -> Duration;
}

/// One committed block as the leader schedule sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The block's view.
    pub view: View,
    /// Who proposed it.
    pub proposer: PublicKey,
    /// Who signed the QC it carries (its `justify`).
    pub signers: Vec<PublicKey>,
}

/// The recent committed blocks (oldest first), kept by the core for the pacemaker: the data
/// every honest replica agrees on. The core keeps the blocks of the last
/// [`LeaderHistory::KEEP_VIEWS`] views below its committed tip.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderHistory {
    entries: VecDeque<HistoryEntry>,
    /// The view of the block after which the current epoch began (its root QC's view).
    epoch_start: View,
}

impl LeaderHistory {
    /// How many views of history below the committed tip are kept (enough for any `lag +
    /// window` up to this).
    pub const KEEP_VIEWS: u64 = 256;

    /// A history built from committed blocks, oldest first.
    #[must_use]
    pub fn from_blocks<'a>(blocks: impl IntoIterator<Item = &'a Block>) -> Self {
        let mut h = LeaderHistory::default();
        for b in blocks {
            h.push(b);
        }
        h
    }

    /// Records a newly committed block (blocks come in commit order) and forgets what is older
    /// than [`Self::KEEP_VIEWS`] views below it.
    pub fn push(&mut self, block: &Block) {
        if self.entries.back().is_some_and(|e| e.view >= block.view) {
            return;
        }
        self.entries.push_back(HistoryEntry {
            view: block.view,
            proposer: block.proposer,
            signers: block.justify.signatures.iter().map(|(k, _)| *k).collect(),
        });
        let floor = block.view.0.saturating_sub(Self::KEEP_VIEWS);
        while self.entries.front().is_some_and(|e| e.view.0 < floor) {
            self.entries.pop_front();
        }
    }

    /// Records that the current epoch began after the block of view `view` (its root QC's).
    pub fn set_epoch_start(&mut self, view: View) {
        self.epoch_start = view;
    }

    /// The view of the block after which the current epoch began.
    #[must_use]
    pub fn epoch_start(&self) -> View {
        self.epoch_start
    }

    /// The entries with views in `lo..=hi`.
    pub fn between(&self, lo: View, hi: View) -> impl Iterator<Item = &HistoryEntry> {
        self.entries.iter().filter(move |e| e.view >= lo && e.view <= hi)
    }

    /// Number of entries kept.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if nothing is kept.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// How the default pacemaker picks leaders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaderPolicy {
    /// Weighted round robin over all validators, whatever they did.
    RoundRobin,
    /// Weighted round robin over the validators active in the committed history (see the
    /// module docs).
    Reputation {
        /// View `v` looks at committed blocks up to view `v - lag` (default 10).
        lag: u64,
        /// ... and down to view `v - lag - window + 1` (default 30).
        window: u64,
        /// Every `probe_every`-th view is led by the round robin over all validators (default
        /// 256; 0 never).
        probe_every: u64,
    },
}

impl LeaderPolicy {
    /// The default reputation settings.
    pub const REPUTATION: LeaderPolicy = LeaderPolicy::Reputation { lag: 10, window: 30, probe_every: 256 };
}

/// The default policy: leader reputation (or plain weighted round robin) and exponential
/// back-off.
///
/// Leaders: with total power `P` and a stride `g` coprime to `P` near `P / phi` (golden ratio),
/// slot `s` is led by the validator whose cumulative power range (members in key order) contains
/// `(s * g) mod P`. Since `s -> s * g mod P` is a bijection on `0..P`, every window of `P`
/// consecutive slots gives each validator exactly as many slots as it has power, and the
/// golden-ratio stride spreads a validator's slots out instead of giving them in one run. Under
/// [`LeaderPolicy::Reputation`] the same rule runs over the active validators only.
///
/// Timeouts: `base * 2^failures`, capped at `max`; reset to `base` by a view that makes progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefaultPacemaker {
    /// Timeout of a view after a view that made progress.
    pub base_timeout: Duration,
    /// Largest timeout, whatever the number of failures.
    pub max_timeout: Duration,
    /// How leaders are picked.
    pub leaders: LeaderPolicy,
}

impl Default for DefaultPacemaker {
    fn default() -> Self {
        DefaultPacemaker {
            base_timeout: Duration::from_millis(1000),
            max_timeout: Duration::from_secs(60),
            leaders: LeaderPolicy::REPUTATION,
        }
    }
}

impl DefaultPacemaker {
    /// The default timeouts with the plain weighted round robin (no reputation).
    #[must_use]
    pub fn round_robin() -> Self {
        DefaultPacemaker { leaders: LeaderPolicy::RoundRobin, ..DefaultPacemaker::default() }
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
}

/// The stride of the weighted round robin for total power `total`.
#[must_use]
pub fn wrr_stride(total: u64) -> u64 {
    if total <= 2 {
        return 1;
    }
    // floor(total / phi), via the 64-bit fixed-point golden ratio.
    let mut g = ((u128::from(total) * 0x9E37_79B9_7F4A_7C15_u128) >> 64) as u64;
    g = g.max(1);
    while gcd(g, total) != 1 {
        g += 1;
    }
    g
}

/// The weighted round robin's pick for `slot` among the members `keep` accepts; `None` if it
/// accepts none.
fn weighted_round_robin(
    slot: u64,
    validators: &ValidatorSet,
    keep: impl Fn(&PublicKey) -> bool,
) -> Option<PublicKey> {
    let total: u64 = validators.members().iter().filter(|v| keep(&v.key)).map(|v| v.power).sum();
    if total == 0 {
        return None;
    }
    let g = wrr_stride(total);
    let point = ((u128::from(slot % total) * u128::from(g)) % u128::from(total)) as u64;
    let mut acc = 0u64;
    for v in validators.members().iter().filter(|v| keep(&v.key)) {
        acc += v.power;
        if point < acc {
            return Some(v.key);
        }
    }
    None
}

/// Plain weighted round robin over all of `validators` (the first member if the set is empty,
/// which a validated set never is).
#[must_use]
pub fn round_robin_leader(view: View, validators: &ValidatorSet) -> PublicKey {
    weighted_round_robin(view.0, validators, |_| true)
        .or_else(|| validators.members().first().map(|v| v.key))
        .unwrap_or_default()
}

/// The reputation-based leader of `view` (see the module docs).
#[must_use]
pub fn reputation_leader(
    view: View,
    validators: &ValidatorSet,
    history: &LeaderHistory,
    lag: u64,
    window: u64,
    probe_every: u64,
) -> PublicKey {
    if probe_every > 0 && view.0 % probe_every == 0 {
        return weighted_round_robin(view.0 / probe_every, validators, |_| true)
            .unwrap_or_else(|| round_robin_leader(view, validators));
    }
    let Some(hi) = view.0.checked_sub(lag) else { return round_robin_leader(view, validators) };
    let lo = View(hi.saturating_sub(window.saturating_sub(1)));
    if lo <= history.epoch_start() {
        // The window reaches back before the current epoch: its new members have had no
        // chance to show activity yet, so nobody is judged.
        return round_robin_leader(view, validators);
    }
    let mut active = BTreeSet::new();
    for e in history.between(lo, View(hi)) {
        active.insert(e.proposer);
        active.extend(e.signers.iter().copied());
    }
    weighted_round_robin(view.0, validators, |k| active.contains(k))
        .unwrap_or_else(|| round_robin_leader(view, validators))
}

impl Pacemaker for DefaultPacemaker {
    fn leader(&self, view: View, validators: &ValidatorSet, history: &LeaderHistory) -> PublicKey {
        match self.leaders {
            LeaderPolicy::RoundRobin => round_robin_leader(view, validators),
            LeaderPolicy::Reputation { lag, window, probe_every } => {
                reputation_leader(view, validators, history, lag, window, probe_every)
            }
        }
    }

    fn view_timeout(&self, _view: View, consecutive_failures: u32) -> Duration {
        let factor = 1u32 << consecutive_failures.min(20);
        self.base_timeout.saturating_mul(factor).min(self.max_timeout)
    }
}
