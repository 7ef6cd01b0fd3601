//! `hotstuff-node`: run a replica of the replicated key-value store, make keys and local test
//! networks, and talk to a node as a client.

mod config;
mod genesis;
mod ops;

use clap::{Parser, Subcommand};
use config::{FileConfig, Intake, ListenerEntry, Timing};
use hotstuff_driver_std::kv::auth::Op;
use hotstuff_driver_std::kv::certified::StateCommitted;
use hotstuff_driver_std::kv::{
    hex, register_metrics, Client, ClientServer, KvApp, Mempool, Receipt, Submitted, MAX_WAIT,
};
use hotstuff_driver_std::{generate_key, Genesis, Metrics, MetricsServer, NodeBuilder, RedbStore};
use signal_hook::consts::{SIGINT, SIGTERM};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "hotstuff-node", version, about = "HotStuff BFT replicated key-value store node")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make a new key: writes the secret to FILE (or prints it) and prints the public key.
    Keygen {
        /// Where to write the secret key (owner-readable only).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write keys and config files for a local test network.
    Testnet {
        /// Number of validators.
        #[arg(long, default_value_t = 4)]
        validators: usize,
        /// Output directory (created).
        #[arg(long)]
        out: PathBuf,
        /// Chain id.
        #[arg(long, default_value_t = 1)]
        chain_id: u64,
        /// Host the nodes listen on.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Consensus port of node 0; node i uses base_port + i, its client port base_port + 100 + i
        /// and its metrics port base_port + 200 + i.
        #[arg(long, default_value_t = 7100)]
        base_port: u16,
        /// View timeout after progress, in ms.
        #[arg(long, default_value_t = 1000)]
        base_timeout_ms: u64,
        /// Also write configs for this many listeners (non-voting followers).
        #[arg(long, default_value_t = 0)]
        listeners: usize,
        /// Hosts of the nodes, comma-separated names or IPs (node i on host i mod their
        /// number; it listens on all interfaces): configs for several machines. Default: `--host`.
        #[arg(long)]
        hosts: Option<String>,
    },
    /// Write a new machine's key and config from a chain's genesis file; prints the command
    /// that adds it as a validator.
    Join(ops::JoinArgs),
    /// Run a node until SIGTERM or SIGINT (a clean stop; a second signal exits at once).
    Run {
        /// The node's config file.
        #[arg(long)]
        config: PathBuf,
        /// Log level: error, warn, info, debug or trace.
        #[arg(long, default_value = "info")]
        log_level: tracing::Level,
    },
    /// Talk to a node's client port.
    Client {
        /// The node's client address.
        #[arg(long, default_value = "127.0.0.1:7200")]
        addr: String,
        /// How long to wait for an answer or for a write to commit, in ms (a commit is waited
        /// for at most 60000 ms).
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
        /// The client's key file, which signs its writes (created if missing).
        #[arg(long, default_value = "client.key")]
        key: PathBuf,
        #[command(subcommand)]
        op: ClientOp,
    },
}

#[derive(Subcommand)]
enum ClientOp {
    /// Set KEY to VALUE and wait until the block holding this transaction commits at that node.
    /// VALUE may hold spaces (quote it) or be empty.
    Put { key: String, value: String },
    /// Read the committed value of KEY.
    Get { key: String },
    /// Delete KEY and wait until the block holding this transaction commits at that node.
    Delete { key: String },
    /// Wait again for a transaction by its id (as printed by put or delete).
    Wait {
        /// The transaction's id.
        id: String,
        /// The committed height printed when it was accepted.
        #[arg(long)]
        since: u64,
    },
    /// Show the node's view, leader, committed height and transaction count.
    Status,
    /// Change the validator set (signed by a governance key, `--key`).
    Validator {
        #[command(subcommand)]
        op: ops::ValidatorOp,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen { out } => keygen(out),
        Command::Testnet {
            validators,
            out,
            chain_id,
            host,
            base_port,
            base_timeout_ms,
            listeners,
            hosts,
        } => {
            let hosts: Vec<String> =
                hosts.as_deref().unwrap_or(&host).split(',').map(str::to_string).collect();
            testnet(validators, listeners, &out, chain_id, &hosts, base_port, base_timeout_ms)
        }
        Command::Join(args) => ops::join(args),
        Command::Run { config, log_level } => run(&config, log_level),
        Command::Client { addr, timeout_ms, key, op } => {
            client(&addr, Duration::from_millis(timeout_ms), &key, op)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn keygen(out: Option<PathBuf>) -> Result<()> {
    let key = generate_key()?;
    match out {
        Some(path) => {
            config::write_key(&path, &key)?;
            println!("secret key written to {}", path.display());
        }
        None => println!("secret key: {}", hex(&key.secret())),
    }
    println!("public key: {}", hex(&key.public().0));
    Ok(())
}

fn testnet(
    n: usize,
    listeners: usize,
    out: &std::path::Path,
    chain_id: u64,
    hosts: &[String],
    base_port: u16,
    base_timeout_ms: u64,
) -> Result<()> {
    if n == 0 || n > 100 {
        return Err("--validators must be between 1 and 100".into());
    }
    let total = n + listeners;
    if usize::from(base_port) + 200 + total > usize::from(u16::MAX) || total > 100 {
        return Err("--base-port too high (or too many nodes) for the ports to fit".into());
    }
    for h in hosts {
        hotstuff_driver_std::kv::governance::check_address(&format!("{h}:1"))
            .map_err(|e| format!("--hosts: {e}"))?;
    }
    std::fs::create_dir_all(out)?;
    let keys: Vec<_> = (0..total).map(|_| generate_key()).collect::<std::result::Result<_, _>>()?;
    let host = |i: usize| hosts.get(i % hosts.len().max(1)).map_or("127.0.0.1", String::as_str);
    let port = |i: usize, offset: usize| format!("{}:{}", host(i), usize::from(base_port) + offset + i);
    // On several machines a node listens on all interfaces; the others reach it by its host.
    let bind = |i: usize, offset: usize| {
        if hosts.len() > 1 {
            format!("0.0.0.0:{}", usize::from(base_port) + offset + i)
        } else {
            port(i, offset)
        }
    };
    let governance = generate_key()?;
    config::write_key(&out.join("governance.key"), &governance)?;
    let genesis = genesis::GenesisFile {
        chain_id,
        governance: vec![hex(&governance.public().0)],
        validators: (0..n)
            .map(|i| genesis::GenesisValidator::signed(chain_id, &keys[i], 1, &port(i, 0)))
            .collect(),
    };
    std::fs::write(out.join("genesis.toml"), toml::to_string(&genesis)?)?;
    println!("{}: the chain's genesis; governance key in governance.key", out.join("genesis.toml").display());
    let listener_entries: Vec<ListenerEntry> =
        (n..total).map(|i| ListenerEntry { key: hex(&keys[i].public().0), address: None }).collect();
    for (i, key) in keys.iter().enumerate() {
        let name = if i < n { format!("node{i}") } else { format!("listener{}", i - n) };
        config::write_key(&out.join(format!("{name}.key")), key)?;
        let cfg = FileConfig {
            chain_id,
            key_file: format!("{name}.key").into(),
            data_dir: format!("{name}-data").into(),
            listen: bind(i, 0),
            client_listen: bind(i, 100),
            metrics_listen: Some(bind(i, 200)),
            timing: Timing { base_timeout_ms, ..Timing::default() },
            consensus: config::Consensus::default(),
            intake: Intake::default(),
            storage: config::StorageSection::default(),
            genesis_file: Some("genesis.toml".into()),
            validators: Vec::new(),
            peers: Vec::new(),
            listeners: listener_entries.clone(),
            joining: false,
        };
        let path = out.join(format!("{name}.toml"));
        std::fs::write(&path, toml::to_string(&cfg)?)?;
        println!(
            "{}: consensus {}, client {}, metrics http://{}/metrics",
            path.display(),
            cfg.listen,
            cfg.client_listen,
            port(i, 200)
        );
    }
    Ok(())
}

fn run(path: &std::path::Path, level: tracing::Level) -> Result<()> {
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cfg = FileConfig::load(path)?;
    // Every port is bound before anything is created on disk; a failure names its field.
    let bind = |field: &str, addr: SocketAddr| {
        TcpListener::bind(addr)
            .map_err(|e| format!("{}: field `{field}`: cannot listen on {addr}: {e}", path.display()))
    };
    let consensus_listener = bind("listen", cfg.listen)?;
    let client_listener = bind("client_listen", cfg.client_listen)?;
    let metrics_listener = cfg.metrics_listen.map(|a| bind("metrics_listen", a)).transpose()?;
    // The first SIGTERM or SIGINT asks for a clean stop; a second one exits at once (status 1).
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGTERM, SIGINT] {
        signal_hook::flag::register_conditional_shutdown(signal, 1, stop.clone())?;
        signal_hook::flag::register(signal, stop.clone())?;
    }
    if let Some(dir) = cfg.store.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let store = RedbStore::open(&cfg.store)?;
    let intake = &cfg.intake;
    let mempool = Mempool::with_limits(intake.mempool());
    let metrics = Metrics::new();
    let mut app = KvApp::new(mempool.clone(), intake.block_max_txs);
    // Clients' transactions go to the upcoming leader, whichever node they were sent to.
    let forwarder = app.forward_to_peers(cfg.key.public());
    let node = if cfg.certified_state_root {
        start_node(&cfg, StateCommitted::new(app), store, consensus_listener, &metrics)?
    } else {
        start_node(&cfg, app, store, consensus_listener, &metrics)?
    };
    // A transaction wakes the node: a leader waiting out its idle delay proposes it at once,
    // and one to forward leaves at once.
    let waker = node.waker();
    mempool.set_waker(move || waker.wake());
    let waker = node.waker();
    forwarder.set_waker(move || waker.wake());
    register_metrics(&metrics, mempool.clone(), node.reader());
    let _metrics_server = metrics_listener.map(|l| MetricsServer::start(l, metrics)).transpose()?;
    let clients = ClientServer::start_with(
        client_listener,
        mempool,
        node.reader(),
        node.status_handle(),
        intake.client(),
    )?;
    tracing::info!(
        id = %hex(&node.id().0),
        consensus = %cfg.listen,
        client = %cfg.client_listen,
        metrics = ?cfg.metrics_listen,
        "node running; stop it with SIGTERM or SIGINT"
    );
    loop {
        std::thread::sleep(Duration::from_millis(20));
        if stop.load(Ordering::Acquire) {
            tracing::info!("signal received: stopping (a second signal exits at once)");
            // No new clients; then the consensus loop writes what is pending, makes the store
            // durable and the network stops.
            drop(clients);
            let took = node.shutdown()?;
            tracing::info!(?took, "stopped cleanly");
            return Ok(());
        }
        if !node.status().running {
            node.shutdown()?;
            return Err("the consensus loop stopped".into());
        }
    }
}

fn client(addr: &str, timeout: Duration, key: &std::path::Path, op: ClientOp) -> Result<()> {
    let mut c = Client::connect(addr, timeout)?;
    // A refusal by the node is an `Other` error with its reason.
    let rejected = |e: std::io::Error| -> Box<dyn std::error::Error> {
        match e.kind() {
            std::io::ErrorKind::Other => format!("rejected: {e}").into(),
            _ => e.into(),
        }
    };
    let wait = |c: &mut Client, tx: Submitted| -> Result<()> {
        let start = Instant::now();
        let limit = timeout.min(MAX_WAIT);
        match c.wait(&tx, limit)? {
            Receipt::Committed(height) => {
                println!("committed at height {height} ({} ms)", start.elapsed().as_millis());
                Ok(())
            }
            Receipt::Unknown { scanned } => Err(format!(
                "not committed after {} ms: unknown (in no block of heights {}..={scanned}); it may still \
                 commit: `hotstuff-node client --addr {addr} wait {} --since {}` asks again. Retry is safe: \
                 the same request again is the same transaction (same id) with the same effect",
                limit.as_millis(),
                tx.since + 1,
                tx.id,
                tx.since
            )
            .into()),
        }
    };
    let accepted = |tx: &Submitted| println!("accepted: id {} (committed height then {})", tx.id, tx.since);
    match op {
        ClientOp::Put { key: k, value } => {
            let op = Op::Put { key: k.into_bytes(), value: value.into_bytes() };
            let tx = ops::submit_signed(&mut c, &ops::client_key(key)?, op).map_err(rejected)?;
            accepted(&tx);
            wait(&mut c, tx)
        }
        ClientOp::Delete { key: k } => {
            let op = Op::Delete { key: k.into_bytes() };
            let tx = ops::submit_signed(&mut c, &ops::client_key(key)?, op).map_err(rejected)?;
            accepted(&tx);
            wait(&mut c, tx)
        }
        ClientOp::Validator { op } => {
            let tx = ops::validator(&mut c, &ops::client_key(key)?, op).map_err(rejected)?;
            accepted(&tx);
            wait(&mut c, tx)
        }
        ClientOp::Wait { id, since } => wait(&mut c, Submitted { id, since }),
        ClientOp::Get { key } => {
            match c.get(&key)? {
                Some(v) => println!("{v}"),
                None => println!("(none)"),
            }
            Ok(())
        }
        ClientOp::Status => {
            let s = c.status()?;
            println!("view {} leader {} height {} txs {}", s.view, s.leader, s.height, s.txs);
            Ok(())
        }
    }
}

/// Starts the node with `app` (the kv app, with or without a certified state root).
fn start_node<A: hotstuff_driver_std::App>(
    cfg: &config::NodeConfig,
    app: A,
    store: RedbStore,
    consensus_listener: std::net::TcpListener,
    metrics: &Metrics,
) -> Result<hotstuff_driver_std::Node> {
    let intake = &cfg.intake;
    Ok(NodeBuilder::new(
        hotstuff_core::Keypair::from_secret(&cfg.key.secret()),
        Genesis::new(cfg.chain, cfg.validators.clone()).with_app_state(cfg.app_state.clone()),
        app,
        store,
    )
    .listener(consensus_listener)
    .peers(cfg.peers.clone())
    .base_timeout(Duration::from_millis(cfg.timing.base_timeout_ms))
    .max_timeout(Duration::from_millis(cfg.timing.max_timeout_ms))
    .idle_block_delay(Duration::from_millis(cfg.timing.idle_block_delay_ms))
    .broadcast_votes(cfg.consensus.broadcast_votes)
    .retain_blocks(cfg.retain_blocks)
    .snapshots(cfg.snapshots)
    .handshake_timeout(Duration::from_millis(intake.handshake_timeout_ms))
    .max_handshakes(intake.consensus_max_handshakes, intake.consensus_max_handshakes_per_ip)
    .metrics(metrics.clone())
    .max_guests(intake.consensus_max_guests)
    .start()?)
}
