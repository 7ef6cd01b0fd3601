//! View synchronisation policy: who leads each view, and how long a view may take.
//!
//! The core owns the rules (when to time out, when a TC or QC moves the view); the pacemaker only
//! answers two questions, so users can plug their own policy (for example a reputation-based
//! leader schedule). Every replica of a chain must use the same `leader` function.

use crate::types::{PublicKey, View};
use crate::validators::ValidatorSet;
use core::time::Duration;

/// The pluggable view-synchronisation policy.
pub trait Pacemaker {
    /// The leader of `view` among `validators`. Must be a member of `validators`, and the same on
    /// every replica (a pure function of its arguments).
    fn leader(&self, view: View, validators: &ValidatorSet) -> PublicKey;

    /// How long the replica waits in `view` before it times out, given how many views in a row
    /// have failed (ended by a TC rather than a QC) just before it.
    fn view_timeout(&self, view: View, consecutive_failures: u32) -> Duration;
}

/// The default policy: weighted round-robin leaders and exponential back-off.
///
/// Leaders: with total power `P` and a stride `g` coprime to `P` near `P / phi` (golden ratio),
/// view `v` is led by the validator whose cumulative power range (members in key order) contains
/// `(v * g) mod P`. Since `v -> v * g mod P` is a bijection on `0..P`, every window of `P`
/// consecutive views gives each validator exactly as many views as it has power, and the
/// golden-ratio stride spreads a validator's views out instead of giving them in one run.
///
/// Timeouts: `base * 2^failures`, capped at `max`; reset to `base` by a view that makes progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefaultPacemaker {
    /// Timeout of a view after a view that made progress.
    pub base_timeout: Duration,
    /// Largest timeout, whatever the number of failures.
    pub max_timeout: Duration,
}

impl Default for DefaultPacemaker {
    fn default() -> Self {
        DefaultPacemaker { base_timeout: Duration::from_millis(1000), max_timeout: Duration::from_secs(60) }
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

impl Pacemaker for DefaultPacemaker {
    fn leader(&self, view: View, validators: &ValidatorSet) -> PublicKey {
        let total = validators.total_power();
        let g = wrr_stride(total);
        let slot = ((u128::from(view.0 % total) * u128::from(g)) % u128::from(total)) as u64;
        let mut acc = 0u64;
        for v in validators.members() {
            acc += v.power;
            if slot < acc {
                return v.key;
            }
        }
        // Unreachable: slot < total = sum of powers. Fall back to the first member.
        validators.members().first().map(|v| v.key).unwrap_or_default()
    }

    fn view_timeout(&self, _view: View, consecutive_failures: u32) -> Duration {
        let factor = 1u32 << consecutive_failures.min(20);
        self.base_timeout.saturating_mul(factor).min(self.max_timeout)
    }
}
