//! The node's TOML configuration file, and the key file.

use hotstuff_core::{ChainId, Keypair, PublicKey, ValidatorSet};
use hotstuff_driver_std::kv::{ClientLimits, MempoolLimits, ENTRY_OVERHEAD, MAX_BLOCK_TXS};
use hotstuff_driver_std::{RetainBlocks, TcpSettings};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration problem, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (the message names the key and line).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A field with a bad value.
    #[error("{path}: field `{field}`: {reason}")]
    Field {
        /// The file.
        path: PathBuf,
        /// The field, e.g. `validators[2].key`.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

/// One validator of the genesis set.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatorEntry {
    /// Public key, 64 hex characters.
    pub key: String,
    /// Voting power (default 1).
    #[serde(default = "one")]
    pub power: u64,
    /// Where to reach it (`host:port`); omit for a validator that dials in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// A listener (a non-voting follower) allowed to connect.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerEntry {
    /// Public key, 64 hex characters.
    pub key: String,
    /// Where to reach it, if it listens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// Timing settings; each has the node's default.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timing {
    /// View timeout after progress, in ms (default 1000).
    #[serde(default = "base_timeout")]
    pub base_timeout_ms: u64,
    /// Largest view timeout, in ms (default 60000).
    #[serde(default = "max_timeout")]
    pub max_timeout_ms: u64,
    /// Wait before an empty block, in ms (default 100).
    #[serde(default = "idle_block_delay")]
    pub idle_block_delay_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            base_timeout_ms: base_timeout(),
            max_timeout_ms: max_timeout(),
            idle_block_delay_ms: idle_block_delay(),
        }
    }
}

/// Consensus protocol options (optional section `[consensus]`); each has the node's default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Consensus {
    /// Send votes to every validator, not only to the next leader, and let every validator form
    /// the QC (default false): commits reach every node one one-way network delay sooner, for
    /// `n^2` vote messages per view instead of `n` and a signature check per vote at every
    /// validator. Every validator of a chain should use the same setting.
    pub broadcast_votes: bool,
}

impl Consensus {
    fn is_default(&self) -> bool {
        *self == Consensus::default()
    }
}

/// Limits on what comes in: the mempool, the client port and the consensus port's handshakes.
/// Each field is optional and has the node's default (see the README).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Intake {
    /// Transactions the mempool holds, waiting or in uncommitted blocks (default 100000).
    pub mempool_max_txs: usize,
    /// Bytes the mempool holds: encoded transactions plus 64 bytes each (default 64 MiB).
    pub mempool_max_bytes: usize,
    /// Most transactions per block (default 2000).
    pub block_max_txs: usize,
    /// Most payload bytes per block (default 128 KiB; at most the core's 4 MiB payload limit).
    pub block_max_bytes: usize,
    /// Client connections served at once (default 64).
    pub client_max_connections: usize,
    /// Client connections from one source address (default 16).
    pub client_max_connections_per_ip: usize,
    /// Client connection slots kept for GET and STATUS (default 8).
    pub client_read_reserve: usize,
    /// Time a client request line may take to arrive whole, in ms (default 10000).
    pub client_line_timeout_ms: u64,
    /// Time a client connection may stay without a request, in ms (default 60000).
    pub client_idle_timeout_ms: u64,
    /// Transactions one client connection may hold in the mempool (default 10000).
    pub client_max_pending_txs: usize,
    /// Bytes one client connection may hold in the mempool (default 8 MiB).
    pub client_max_pending_bytes: usize,
    /// Inbound consensus connections in their handshake at once (default 64).
    pub consensus_max_handshakes: usize,
    /// Of those, from one source address (default 8).
    pub consensus_max_handshakes_per_ip: usize,
    /// Time to connect and finish a consensus handshake, in ms (default 2000).
    pub handshake_timeout_ms: u64,
    /// Listeners not named in the config or the validator set (new machines following the
    /// chain before they join) connected at once (default 16; 0 refuses them).
    pub consensus_max_guests: usize,
}

impl Default for Intake {
    fn default() -> Self {
        let (m, c, t) = (MempoolLimits::default(), ClientLimits::default(), TcpSettings::default());
        Intake {
            mempool_max_txs: m.max_txs,
            mempool_max_bytes: m.max_bytes,
            block_max_txs: 2000,
            block_max_bytes: m.max_block_bytes,
            client_max_connections: c.max_clients,
            client_max_connections_per_ip: c.max_clients_per_ip,
            client_read_reserve: c.read_reserve,
            client_line_timeout_ms: millis(c.line_timeout),
            client_idle_timeout_ms: millis(c.idle_timeout),
            client_max_pending_txs: c.max_pending_txs,
            client_max_pending_bytes: c.max_pending_bytes,
            consensus_max_handshakes: t.max_handshakes,
            consensus_max_handshakes_per_ip: t.max_handshakes_per_ip,
            handshake_timeout_ms: millis(t.handshake_timeout),
            consensus_max_guests: 16,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Intake {
    /// The mempool's limits.
    pub fn mempool(&self) -> MempoolLimits {
        MempoolLimits {
            max_txs: self.mempool_max_txs,
            max_bytes: self.mempool_max_bytes,
            max_block_bytes: self.block_max_bytes,
        }
    }

    /// The client port's limits.
    pub fn client(&self) -> ClientLimits {
        ClientLimits {
            max_clients: self.client_max_connections,
            max_clients_per_ip: self.client_max_connections_per_ip,
            read_reserve: self.client_read_reserve,
            line_timeout: Duration::from_millis(self.client_line_timeout_ms),
            idle_timeout: Duration::from_millis(self.client_idle_timeout_ms),
            max_pending_txs: self.client_max_pending_txs,
            max_pending_bytes: self.client_max_pending_bytes,
            ..ClientLimits::default()
        }
    }

    /// The first field with a bad value, and why.
    fn check(&self) -> Result<(), (&'static str, String)> {
        // The largest transaction: a signed put of the largest key and value.
        let one_tx = 1 + hotstuff_driver_std::kv::auth::MAX_SIGNED_TX + ENTRY_OVERHEAD;
        let nonzero = [
            ("intake.mempool_max_txs", self.mempool_max_txs as u64),
            ("intake.client_max_connections", self.client_max_connections as u64),
            ("intake.client_max_connections_per_ip", self.client_max_connections_per_ip as u64),
            ("intake.client_line_timeout_ms", self.client_line_timeout_ms),
            ("intake.client_idle_timeout_ms", self.client_idle_timeout_ms),
            ("intake.client_max_pending_txs", self.client_max_pending_txs as u64),
            ("intake.consensus_max_handshakes", self.consensus_max_handshakes as u64),
            ("intake.consensus_max_handshakes_per_ip", self.consensus_max_handshakes_per_ip as u64),
            ("intake.handshake_timeout_ms", self.handshake_timeout_ms),
        ];
        if let Some((name, _)) = nonzero.iter().find(|(_, v)| *v == 0) {
            return Err((name, "must be at least 1".into()));
        }
        if self.mempool_max_bytes < one_tx {
            return Err((
                "intake.mempool_max_bytes",
                format!("must hold at least one transaction ({one_tx} bytes)"),
            ));
        }
        if self.client_max_pending_bytes < one_tx {
            return Err((
                "intake.client_max_pending_bytes",
                format!("must hold at least one transaction ({one_tx} bytes)"),
            ));
        }
        let max_payload = hotstuff_core::Limits::default().max_payload;
        if self.block_max_bytes < one_tx || self.block_max_bytes > max_payload {
            return Err((
                "intake.block_max_bytes",
                format!(
                    "must be between one transaction ({one_tx} bytes) and the payload limit ({max_payload})"
                ),
            ));
        }
        if self.block_max_txs == 0 || self.block_max_txs > MAX_BLOCK_TXS {
            return Err(("intake.block_max_txs", format!("must be between 1 and {MAX_BLOCK_TXS}")));
        }
        if self.client_read_reserve >= self.client_max_connections {
            return Err(("intake.client_read_reserve", "must be below client_max_connections".into()));
        }
        Ok(())
    }
}

fn one() -> u64 {
    1
}
fn base_timeout() -> u64 {
    1000
}
fn max_timeout() -> u64 {
    60_000
}
fn idle_block_delay() -> u64 {
    100
}

/// How the store is kept bounded (optional section `[storage]`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// Committed blocks kept for block sync: a number (at least 257), or `"archive"` to keep
    /// all (the default). Older blocks are pruned in the background, except each epoch's last
    /// block with its proof.
    pub retain_blocks: Retain,
    /// Every block with a payload carries the state root of its parent's state (the
    /// `StateCommitted` kv app), checked by every validator, so a QC certifies it. Needed to
    /// serve or fetch snapshots. A chain-wide setting: every node of a chain must agree (a
    /// node that disagrees rejects every non-empty block). Costs one hash per tree level per
    /// update, the tree in memory, and its build from the whole state at each start.
    pub certified_state_root: bool,
    /// Serve state snapshots taken every this many committed heights (0, the default: serve
    /// none). Needs `certified_state_root`; with a retention window, below half of it.
    pub snapshot_interval: u64,
    /// Catch up by state snapshot when every block-sync server pruned the heights this node
    /// needs (a new node joining an old chain). Needs `certified_state_root`.
    pub snapshot_sync: bool,
}

/// `retain_blocks`: a number of blocks or a name (`"archive"`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Retain {
    /// Keep this many blocks.
    Blocks(u64),
    /// `"archive"`.
    Name(String),
}

impl Default for Retain {
    fn default() -> Self {
        Retain::Name("archive".into())
    }
}

impl Retain {
    fn resolve(&self) -> Result<RetainBlocks, String> {
        match self {
            Retain::Blocks(n) => {
                let r = RetainBlocks::Last(*n);
                r.check().map(|()| r)
            }
            Retain::Name(s) => s.parse(),
        }
    }
}

/// The configuration file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The chain id (all nodes of a chain agree on it).
    pub chain_id: u64,
    /// The secret key file (relative paths are relative to the config file).
    pub key_file: PathBuf,
    /// The data directory (the redb store lives in it).
    pub data_dir: PathBuf,
    /// Consensus listen address.
    pub listen: String,
    /// Client (key-value) listen address.
    pub client_listen: String,
    /// Where to serve Prometheus metrics at `/metrics` (optional; none if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
    /// Timing (optional).
    #[serde(default)]
    pub timing: Timing,
    /// Consensus protocol options (optional).
    #[serde(default, skip_serializing_if = "Consensus::is_default")]
    pub consensus: Consensus,
    /// Limits on what comes in (optional).
    #[serde(default)]
    pub intake: Intake,
    /// Store retention (optional).
    #[serde(default)]
    pub storage: StorageSection,
    /// The genesis file (`genesis.toml`, shared by every node of the chain; relative to this
    /// file). Without it, `chain_id` and `validators` here are the genesis (an open chain:
    /// unsigned writes, no validator-set changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub genesis_file: Option<PathBuf>,
    /// The genesis validator set, with addresses (only without `genesis_file`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validators: Vec<ValidatorEntry>,
    /// More peers to dial (seed peers: validators added after genesis), `key` and `address`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<ListenerEntry>,
    /// Listeners allowed to connect (optional).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<ListenerEntry>,
    /// This node's key is not (yet) a member of the chain: it follows as a guest listener (the
    /// others accept up to `intake.consensus_max_guests` guests) until a validator-set change
    /// adds it. `hotstuff-node join` writes `joining = true`; without it, a key that is
    /// neither a validator nor a listener is refused as a wrong `key_file`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub joining: bool,
}

/// A configuration checked and resolved.
pub struct NodeConfig {
    pub chain: ChainId,
    pub key: Keypair,
    pub store: PathBuf,
    pub listen: SocketAddr,
    pub client_listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    pub timing: Timing,
    pub consensus: Consensus,
    pub intake: Intake,
    pub retain_blocks: RetainBlocks,
    pub certified_state_root: bool,
    pub snapshots: hotstuff_driver_std::SnapshotSettings,
    pub validators: ValidatorSet,
    pub app_state: Vec<(Vec<u8>, Vec<u8>)>,
    pub peers: Vec<(PublicKey, Option<SocketAddr>)>,
}

pub fn hex_decode<const N: usize>(s: &str) -> Result<[u8; N], String> {
    let s = s.trim();
    if s.len() != 2 * N {
        return Err(format!("expected {} hex characters, found {}", 2 * N, s.len()));
    }
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        let pair = s.get(2 * i..2 * i + 2).ok_or("not ASCII hex")?;
        *b = u8::from_str_radix(pair, 16).map_err(|_| format!("`{pair}` is not hex"))?;
    }
    Ok(out)
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.to_path_buf(), source })
}

/// Reads a key file (64 hex characters of secret seed).
pub fn read_key(path: &Path) -> Result<Keypair, ConfigError> {
    let text = read(path)?;
    let secret = hex_decode::<32>(&text).map_err(|reason| ConfigError::Field {
        path: path.to_path_buf(),
        field: "secret key".into(),
        reason,
    })?;
    Ok(Keypair::from_secret(&secret))
}

/// Writes a key file readable by its owner only.
pub fn write_key(path: &Path, key: &Keypair) -> Result<(), ConfigError> {
    let io = |source| ConfigError::Io { path: path.to_path_buf(), source };
    std::fs::write(path, format!("{}\n", hotstuff_driver_std::kv::hex(&key.secret()))).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    Ok(())
}

impl FileConfig {
    /// Parses and checks the file at `path`.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = read(path)?;
        let file: FileConfig = toml::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        file.resolve(path)
    }

    fn resolve(self, path: &Path) -> Result<NodeConfig, ConfigError> {
        let field =
            |field: String, reason: String| ConfigError::Field { path: path.to_path_buf(), field, reason };
        let base = path.parent().unwrap_or(Path::new("."));
        let addr = |name: String, s: &str| {
            s.parse::<SocketAddr>().map_err(|e| field(name, format!("`{s}` is not a host:port address: {e}")))
        };
        // A peer's address may be a DNS name, resolved when the node starts.
        let peer_addr = |name: String, s: &str| {
            use std::net::ToSocketAddrs;
            s.to_socket_addrs()
                .map_err(|e| field(name.clone(), format!("`{s}` does not resolve: {e}")))?
                .next()
                .ok_or_else(|| field(name, format!("`{s}` resolves to no address")))
        };
        let pubkey = |name: String, s: &str| hex_decode::<32>(s).map(PublicKey).map_err(|r| field(name, r));
        let mut members = Vec::new();
        let mut peers = Vec::new();
        let mut chain = ChainId(self.chain_id);
        let mut app_state = Vec::new();
        let mut genesis_set = None;
        if let Some(file) = &self.genesis_file {
            if !self.validators.is_empty() {
                return Err(field("validators".into(), "must be empty with `genesis_file`".into()));
            }
            let gpath = base.join(file);
            let (_, g) = crate::genesis::GenesisFile::load(&gpath)?;
            if g.chain.0 != self.chain_id {
                return Err(field(
                    "chain_id".into(),
                    format!("{} differs from the genesis file's {}", self.chain_id, g.chain.0),
                ));
            }
            for (i, (key, a)) in g.addresses.iter().enumerate() {
                // An unreachable genesis validator (gone since) must not stop a joining node.
                match peer_addr(format!("{}: validators[{i}].address", gpath.display()), a) {
                    Ok(a) => peers.push((*key, Some(a))),
                    Err(e) => {
                        eprintln!("warning: {e}");
                        peers.push((*key, None));
                    }
                }
            }
            (chain, app_state, genesis_set) = (g.chain, g.app_state, Some(g.validators));
        } else if self.validators.is_empty() {
            return Err(field("validators".into(), "at least one validator is needed".into()));
        }
        for (i, v) in self.validators.iter().enumerate() {
            let key = pubkey(format!("validators[{i}].key"), &v.key)?;
            if v.power == 0 {
                return Err(field(format!("validators[{i}].power"), "must be at least 1".into()));
            }
            let a = v.address.as_deref().map(|a| addr(format!("validators[{i}].address"), a)).transpose()?;
            members.push((key, v.power));
            peers.push((key, a));
        }
        for (i, l) in self.listeners.iter().enumerate() {
            let key = pubkey(format!("listeners[{i}].key"), &l.key)?;
            let a = l.address.as_deref().map(|a| addr(format!("listeners[{i}].address"), a)).transpose()?;
            peers.push((key, a));
        }
        for (i, p) in self.peers.iter().enumerate() {
            let key = pubkey(format!("peers[{i}].key"), &p.key)?;
            let a = p.address.as_deref().map(|a| peer_addr(format!("peers[{i}].address"), a)).transpose()?;
            peers.retain(|(k, _)| *k != key);
            peers.push((key, a));
        }
        let validators = match genesis_set {
            Some(set) => set,
            None => ValidatorSet::new(members).map_err(|e| field("validators".into(), e.to_string()))?,
        };
        let t = &self.timing;
        if t.base_timeout_ms == 0 {
            return Err(field("timing.base_timeout_ms".into(), "must be above 0".into()));
        }
        if t.max_timeout_ms < t.base_timeout_ms {
            return Err(field("timing.max_timeout_ms".into(), "must be at least base_timeout_ms".into()));
        }
        if t.idle_block_delay_ms.saturating_mul(2) >= t.base_timeout_ms {
            return Err(field(
                "timing.idle_block_delay_ms".into(),
                "must be below half of base_timeout_ms (a leader's view lasts its own wait and the next leader's)"
                    .into(),
            ));
        }
        self.intake.check().map_err(|(name, reason)| field(name.into(), reason))?;
        let retain_blocks =
            self.storage.retain_blocks.resolve().map_err(|r| field("storage.retain_blocks".into(), r))?;
        let snapshots = hotstuff_driver_std::SnapshotSettings {
            interval: self.storage.snapshot_interval,
            fetch: self.storage.snapshot_sync,
        };
        if (snapshots.interval > 0 || snapshots.fetch) && !self.storage.certified_state_root {
            return Err(field(
                "storage.certified_state_root".into(),
                "must be true to serve or fetch snapshots (a snapshot is verified against a certified root)"
                    .into(),
            ));
        }
        if let RetainBlocks::Last(n) = retain_blocks {
            if snapshots.interval >= n / 2 {
                return Err(field(
                    "storage.snapshot_interval".into(),
                    format!("{} must be below half of retain_blocks ({n})", snapshots.interval),
                ));
            }
        }
        let key = read_key(&base.join(&self.key_file)).map_err(|e| match e {
            ConfigError::Io { source, .. } => field("key_file".into(), source.to_string()),
            other => other,
        })?;
        let me = key.public();
        // A key outside the chain's members is a wrong key file, unless the node is joining
        // (`joining = true`): then the others take it as a guest listener until a set change
        // adds it.
        if !peers.iter().any(|(k, _)| *k == me) && !self.joining {
            return Err(field(
                "key_file".into(),
                format!(
                    "the key {} is neither a validator (`validators`) nor a listener (`listeners`) of \
                     chain {}: the other nodes would refuse its connections (a new machine that is to \
                     be added writes its config with `hotstuff-node join`, which sets `joining = true`)",
                    hotstuff_driver_std::kv::hex(&me.0),
                    self.chain_id
                ),
            ));
        }
        let data_dir = base.join(&self.data_dir);
        Ok(NodeConfig {
            chain,
            app_state,
            store: data_dir.join("store.redb"),
            listen: addr("listen".into(), &self.listen)?,
            client_listen: addr("client_listen".into(), &self.client_listen)?,
            metrics_listen: self
                .metrics_listen
                .as_deref()
                .map(|a| addr("metrics_listen".into(), a))
                .transpose()?,
            timing: self.timing,
            consensus: self.consensus,
            intake: self.intake,
            retain_blocks,
            certified_state_root: self.storage.certified_state_root,
            snapshots,
            validators,
            peers,
            key,
        })
    }
}
