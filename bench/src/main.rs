//! Side-by-side benchmark of this project and hotstuff_rs 0.4.0 (issue 12).
//!
//! `cargo run --release --manifest-path bench/Cargo.toml -- [--rounds 3] [--seconds 5]
//! [--only a,d] [--svg bench/results/latency_throughput.svg] [--table bench/results/latest.md]
//! [--windows 100,500,1000,1500,2000] [--block-txs 2000]` (the last two: setup (e) only)
//!
//! Every round runs every setup once, in the same order, so the setups are interleaved; the
//! table shows per-setup medians over the rounds, and each ratio is the median over rounds of
//! the ratio within that round.

mod core_direct;
mod driver;
mod hs_rs;
mod kv;
mod plot;
mod stats;

use stats::{median, Sample};
use std::time::Duration;

struct Setup {
    /// Letter of the setup in issue 12.
    group: char,
    label: String,
    /// Label in the plot.
    short: String,
    /// The hotstuff_rs setup with the same n, for the ratio column.
    baseline: Option<usize>,
    /// Unit of `rate`.
    unit: &'static str,
    run: Box<dyn Fn(Duration, Duration) -> Sample>,
}

struct Args {
    rounds: usize,
    seconds: f64,
    warmup: f64,
    only: String,
    svg: Option<String>,
    table: Option<String>,
    /// Client windows of setup (e).
    windows: Vec<usize>,
    /// Most transactions per block in setup (e).
    block_txs: usize,
}

fn args() -> Args {
    let mut a = Args {
        rounds: 3,
        seconds: 5.0,
        warmup: 1.0,
        only: "abcde".into(),
        svg: None,
        table: None,
        windows: vec![100, 500, 1000, 1500, 2000],
        block_txs: 2000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--rounds" => a.rounds = value().parse().expect("--rounds N"),
            "--seconds" => a.seconds = value().parse().expect("--seconds S"),
            "--warmup" => a.warmup = value().parse().expect("--warmup S"),
            "--only" => a.only = value().replace(',', ""),
            "--svg" => a.svg = Some(value()),
            "--table" => a.table = Some(value()),
            "--windows" => {
                a.windows = value().split(',').map(|w| w.parse().expect("--windows 100,1000")).collect()
            }
            "--block-txs" => a.block_txs = value().parse().expect("--block-txs N"),
            "-h" | "--help" => {
                println!(
                    "usage: compare [--rounds 3] [--seconds 5] [--warmup 1] [--only abcde] [--svg PATH] [--windows 100,500,1000,1500,2000] [--block-txs 2000]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn setups(only: &str, windows: &[usize], block_txs: usize) -> Vec<Setup> {
    let mut v: Vec<Setup> = Vec::new();
    for n in [4usize, 7] {
        v.push(Setup {
            group: 'd',
            label: format!("(d) hotstuff_rs 0.4.0, test stub + MemDB, n={n}"),
            short: format!("hotstuff_rs n={n}"),
            baseline: None,
            unit: "blocks/s",
            run: Box::new(move |w, m| hs_rs::run(n, w, m)),
        });
        v.push(Setup {
            group: 'a',
            label: format!("(a) core driven directly, n={n}"),
            short: format!("(a) core n={n}"),
            baseline: Some(n),
            unit: "blocks/s",
            run: Box::new(move |w, m| core_direct::run(n, w, m)),
        });
    }
    for n in [4usize, 7] {
        v.push(Setup {
            group: 'b',
            label: format!("(b) std driver, in-memory channels, RedbStore::in_memory(), n={n}"),
            short: format!("(b) driver mem n={n}"),
            baseline: Some(n),
            unit: "blocks/s",
            run: Box::new(move |w, m| driver::run(n, driver::Transport::Memory, w, m)),
        });
    }
    v.push(Setup {
        group: 'c',
        label: "(c) std driver, loopback TCP, redb on disk (fsync), empty blocks, n=4".into(),
        short: "(c) TCP+redb n=4".into(),
        baseline: Some(4),
        unit: "blocks/s",
        run: Box::new(|w, m| driver::run(4, driver::Transport::TcpDisk, w, m)),
    });
    for &window in windows {
        v.push(Setup {
            group: 'e',
            label: format!("(e) kv_cluster, 4 validators, window {window}"),
            short: format!("w={window}"),
            baseline: None,
            unit: "tx/s",
            run: Box::new(move |w, m| kv::run(window, block_txs, w, m)),
        });
    }
    v.retain(|s| only.contains(s.group));
    v
}

fn main() {
    let a = args();
    let setups = setups(&a.only, &a.windows, a.block_txs);
    let warmup = Duration::from_secs_f64(a.warmup);
    let measure = Duration::from_secs_f64(a.seconds);
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); setups.len()];
    for round in 0..a.rounds {
        for (i, s) in setups.iter().enumerate() {
            let r = (s.run)(warmup, measure);
            eprintln!(
                "round {}: {:<55} {:>9.0} {} p50 {:>7.2} ms p99 {:>7.2} ms cpu {:>4.0}%",
                round + 1,
                s.label,
                r.rate,
                s.unit,
                r.p50_ms,
                r.p99_ms,
                r.cpu_pct
            );
            samples[i].push(r);
        }
    }
    let mut table = String::new();
    let mut line = |l: String| {
        println!("{l}");
        table.push_str(&l);
        table.push('\n');
    };
    println!();
    line(format!(
        "{} rounds of {:.0} s (+{:.0} s warm-up), interleaved; medians over rounds; ratio = median of per-round ratios",
        a.rounds, a.seconds, a.warmup
    ));
    line(
        "| setup | rate | p50 ms | p99 ms | CPU % | × hotstuff_rs (same n) | of core (a), same n |\n|---|---|---|---|---|---|---|"
            .into(),
    );
    for (i, s) in setups.iter().enumerate() {
        let col = |f: fn(&Sample) -> f64| median(samples[i].iter().map(f).collect());
        let ratio = s
            .baseline
            .and_then(|n| setups.iter().position(|b| b.group == 'd' && b.label.ends_with(&format!("n={n}"))))
            .map(|b| {
                let r: Vec<f64> = samples[i].iter().zip(&samples[b]).map(|(x, y)| x.rate / y.rate).collect();
                format!("{:.1}×", median(r))
            })
            .unwrap_or_default();
        let core = (s.group == 'b' || s.group == 'c')
            .then(|| {
                let n = if s.label.ends_with("n=7") { 7 } else { 4 };
                setups.iter().position(|b| b.group == 'a' && b.label.ends_with(&format!("n={n}")))
            })
            .flatten()
            .map(|b| {
                let r: Vec<f64> = samples[i].iter().zip(&samples[b]).map(|(x, y)| x.rate / y.rate).collect();
                format!("{:.2}", median(r))
            })
            .unwrap_or_default();
        line(format!(
            "| {} | {:.0} {} | {:.2} | {:.2} | {:.0} | {} | {} |",
            s.label,
            col(|x| x.rate),
            s.unit,
            col(|x| x.p50_ms),
            col(|x| x.p99_ms),
            col(|x| x.cpu_pct),
            ratio,
            core
        ));
    }
    let mut rounds = String::new();
    for (i, s) in setups.iter().enumerate() {
        for (r, x) in samples[i].iter().enumerate() {
            rounds.push_str(&format!(
                "round {}: {} | {:.0} {} | p50 {:.2} ms | p99 {:.2} ms | cpu {:.0}%\n",
                r + 1,
                s.label,
                x.rate,
                s.unit,
                x.p50_ms,
                x.p99_ms,
                x.cpu_pct
            ));
        }
    }
    let md = a.table.unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/results/latest.md").into());
    if let Some(dir) = std::path::Path::new(&md).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    match std::fs::write(&md, format!("{table}\nEvery run:\n\n```\n{rounds}```\n")) {
        Ok(()) => println!("table: {md}"),
        Err(e) => eprintln!("table {md}: {e}"),
    }
    let svg = a
        .svg
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/results/latency_throughput.svg").into());
    let points: Vec<plot::Point> = setups
        .iter()
        .enumerate()
        .map(|(i, s)| plot::Point {
            group: s.group,
            label: s.short.clone(),
            sample: Sample {
                rate: median(samples[i].iter().map(|x| x.rate).collect()),
                p50_ms: median(samples[i].iter().map(|x| x.p50_ms).collect()),
                p99_ms: median(samples[i].iter().map(|x| x.p99_ms).collect()),
                cpu_pct: median(samples[i].iter().map(|x| x.cpu_pct).collect()),
            },
        })
        .collect();
    let title = format!("medians of {} interleaved rounds of {:.0} s, 2-core machine", a.rounds, a.seconds);
    match plot::write(std::path::Path::new(&svg), &title, &points) {
        Ok(()) => println!("\nplot: {svg}"),
        Err(e) => eprintln!("plot {svg}: {e}"),
    }
}
