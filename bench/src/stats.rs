//! What one run of one setup measured, and the helpers every setup shares.

use std::time::{Duration, Instant};

/// One run of one setup.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// Committed blocks per second (transactions per second for the kv setups).
    pub rate: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// Process CPU over the measured window, percent of one core.
    pub cpu_pct: f64,
}

/// Commits seen at replica 0: when, and how long after the produce call.
#[derive(Default)]
pub struct Recorder {
    commits: Vec<(Instant, Duration)>,
}

impl Recorder {
    pub fn record(&mut self, at: Instant, latency: Duration) {
        self.commits.push((at, latency));
    }

    /// Blocks/s and latency percentiles of the commits inside `[from, to)`.
    pub fn sample(&self, from: Instant, to: Instant, cpu_pct: f64) -> Sample {
        let mut lat: Vec<Duration> =
            self.commits.iter().filter(|(at, _)| *at >= from && *at < to).map(|(_, l)| *l).collect();
        lat.sort();
        let secs = (to - from).as_secs_f64();
        Sample {
            rate: lat.len() as f64 / secs,
            p50_ms: percentile(&lat, 0.50),
            p99_ms: percentile(&lat, 0.99),
            cpu_pct,
        }
    }
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// The 8-byte payload: nanoseconds from `base` to now.
pub fn stamp(base: Instant) -> [u8; 8] {
    (base.elapsed().as_nanos() as u64).to_le_bytes()
}

/// How long ago (from `now`) the payload was stamped.
pub fn since_stamp(base: Instant, now: Instant, payload: &[u8]) -> Option<Duration> {
    let bytes: [u8; 8] = payload.get(..8)?.try_into().ok()?;
    let at = base + Duration::from_nanos(u64::from_le_bytes(bytes));
    Some(now.saturating_duration_since(at))
}

/// CPU time (user + system) this process has used so far.
pub fn cpu_time() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return Duration::ZERO };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { return Duration::ZERO };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 11 and 12 after the name.
    let ticks: u64 = f.get(11).and_then(|s| s.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Measures CPU use over a window.
pub struct CpuWindow {
    cpu: Duration,
    at: Instant,
}

impl CpuWindow {
    pub fn start() -> Self {
        CpuWindow { cpu: cpu_time(), at: Instant::now() }
    }

    pub fn pct(&self) -> f64 {
        let cpu = cpu_time().saturating_sub(self.cpu).as_secs_f64();
        100.0 * cpu / self.at.elapsed().as_secs_f64()
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}
