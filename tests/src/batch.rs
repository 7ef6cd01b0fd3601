//! Runs a batch of seeds and summarises it (shared by the CI tests and the runner).

use crate::scenario::{self, Kind};
use crate::sim::{Params, Report, Sim};
use std::time::Instant;

/// What a batch found.
#[derive(Debug, Default)]
pub struct Summary {
    /// Seeds run.
    pub seeds: u64,
    /// Safety violations.
    pub safety: usize,
    /// Double signs.
    pub double_signs: usize,
    /// Liveness failures.
    pub liveness: usize,
    /// Sum over seeds of the highest committed height.
    pub commits: u64,
    /// Sum over seeds of the highest view reached.
    pub views: u64,
    /// Views each honest replica took after the heal to commit the required blocks.
    pub views_after_heal: Vec<u64>,
    /// Failure lines, each with its seed.
    pub failures: Vec<String>,
    /// Wall-clock seconds.
    pub secs: f64,
}

impl Summary {
    /// The runner's closing line.
    #[must_use]
    pub fn line(&self) -> String {
        format!(
            "seeds: {}, safety violations: {}, double signs: {}, liveness failures: {}, commits: {}",
            self.seeds, self.safety, self.double_signs, self.liveness, self.commits
        )
    }

    /// Simulated views per second of wall-clock time.
    #[must_use]
    pub fn views_per_sec(&self) -> f64 {
        self.views as f64 / self.secs.max(1e-9)
    }

    /// `(p50, p99, max)` of the views taken after the heal.
    #[must_use]
    pub fn view_percentiles(&self) -> (u64, u64, u64) {
        let mut v = self.views_after_heal.clone();
        v.sort_unstable();
        let pick = |p: f64| {
            if v.is_empty() {
                0
            } else {
                v[(((v.len() - 1) as f64) * p).round() as usize]
            }
        };
        (pick(0.5), pick(0.99), v.last().copied().unwrap_or(0))
    }

    fn add(&mut self, r: &Report) {
        self.seeds += 1;
        self.safety += r.safety_violations.len();
        self.double_signs += r.double_signs.len();
        self.liveness += r.liveness_failures.len();
        self.commits += r.max_committed;
        self.views += r.max_view;
        self.views_after_heal.extend(&r.views_after_heal);
        self.failures.extend(r.findings().cloned());
    }
}

/// Runs `params(seed)` for every seed in `seeds`.
pub fn run(seeds: impl IntoIterator<Item = u64>, params: impl Fn(u64) -> Params) -> Summary {
    let started = Instant::now();
    let mut s = Summary::default();
    for seed in seeds {
        s.add(&Sim::new(params(seed)).run());
    }
    s.secs = started.elapsed().as_secs_f64();
    s
}

/// Runs random-fault seeds of `kind`.
#[must_use]
pub fn faults(n: usize, byzantine: usize, kind: Kind, seeds: std::ops::Range<u64>) -> Summary {
    run(seeds, |seed| scenario::params(seed, n, byzantine, kind))
}
