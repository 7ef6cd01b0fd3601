//! Building a node: required parts up front, every other setting with a documented default.

use super::engine::{Engine, EngineParts, Handler};
use super::run::Loop;
use super::{Node, NodeInfo, Reader, Status};
use crate::app::App;
use crate::error::{NetError, StoreError};
use crate::event::Event;
use crate::metrics::Metrics;
use crate::net::{Inbox, NetContext, Network, TcpNetwork, TcpSettings};
use crate::snapshot::SnapshotSettings;
use crate::storage::{Genesis, Pruner, RetainBlocks, Storage, StoreWriter};
use hotstuff_core::{
    ChainId, Config, ConfigError, DefaultPacemaker, Keypair, LeaderPolicy, Limits, PublicKey, Replica,
    ValidatorSet,
};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A setting out of range, by name.
    #[error("setting `{name}`: {reason}")]
    Setting {
        /// The setting (the builder method's name).
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The store could not be opened, initialised or read.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The core refused the configuration or the recovered state.
    #[error("replica: {0}")]
    Replica(#[from] ConfigError),
    /// The network could not start (for example the listen address is taken).
    #[error("network: {0}")]
    Net(#[from] NetError),
    /// The consensus thread could not be spawned.
    #[error("spawning the consensus thread: {0}")]
    Spawn(std::io::Error),
}

fn setting(name: &'static str, reason: impl Into<String>) -> BuildError {
    BuildError::Setting { name, reason: reason.into() }
}

/// Builds a [`Node`]. Required: the key, the genesis (chain id and initial validator set), the
/// app and the store (in [`NodeBuilder::new`]), and the peers (every other genesis validator must
/// be given with [`NodeBuilder::peer`]). Everything else has the default its method states.
pub struct NodeBuilder<A: App> {
    key: Keypair,
    genesis: Genesis,
    app: A,
    store: Arc<dyn Storage>,
    tcp: TcpSettings,
    network: Option<Box<dyn Network>>,
    limits: Limits,
    view_window: u64,
    max_uncommitted_blocks: usize,
    broadcast_votes: bool,
    pacemaker: DefaultPacemaker,
    idle_block_delay: Duration,
    max_idle_block_delay: Option<Duration>,
    sync_no_progress: Option<Duration>,
    inbox_capacity: usize,
    handlers: Vec<Handler>,
    background_store_writes: bool,
    retain_blocks: RetainBlocks,
    snapshots: SnapshotSettings,
    metrics: Option<Metrics>,
}

/// Jobs queued for the background store writer before the consensus loop waits.
const STORE_QUEUE: usize = 1_024;

/// How often the pruner looks for committed blocks below the retention window.
const PRUNE_PERIOD: Duration = Duration::from_millis(500);

impl<A: App> NodeBuilder<A> {
    /// A builder with the required parts. `store` is initialised from `genesis` on first start
    /// and must belong to the same chain afterwards.
    pub fn new(key: Keypair, genesis: Genesis, app: A, store: impl Storage) -> Self {
        Self::with_shared_store(key, genesis, app, Arc::new(store))
    }

    /// Like [`NodeBuilder::new`] with a store the caller keeps a handle to.
    pub fn with_shared_store(key: Keypair, genesis: Genesis, app: A, store: Arc<dyn Storage>) -> Self {
        NodeBuilder {
            key,
            genesis,
            app,
            store,
            tcp: TcpSettings::default(),
            network: None,
            limits: Limits::default(),
            view_window: 1_000,
            max_uncommitted_blocks: 10_000,
            broadcast_votes: false,
            pacemaker: DefaultPacemaker::default(),
            idle_block_delay: Duration::from_millis(100),
            max_idle_block_delay: None,
            sync_no_progress: None,
            inbox_capacity: 4096,
            handlers: Vec::new(),
            background_store_writes: true,
            retain_blocks: RetainBlocks::Archive,
            snapshots: SnapshotSettings::default(),
            metrics: None,
        }
    }

    /// A peer and the address to dial it at (`None`: it dials us, like a listener behind NAT).
    /// Required for every other genesis validator; listeners that may connect are listed too.
    #[must_use]
    pub fn peer(mut self, key: PublicKey, addr: Option<SocketAddr>) -> Self {
        self.tcp.peers.insert(key, addr);
        self
    }

    /// Several peers at once (see [`NodeBuilder::peer`]).
    #[must_use]
    pub fn peers(mut self, peers: impl IntoIterator<Item = (PublicKey, Option<SocketAddr>)>) -> Self {
        self.tcp.peers.extend(peers);
        self
    }

    /// The address to listen on (default: none; the node only dials out).
    #[must_use]
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.tcp.listen = Some(addr);
        self
    }

    /// An already bound listener (instead of [`NodeBuilder::listen`]).
    #[must_use]
    pub fn listener(mut self, listener: TcpListener) -> Self {
        self.tcp.listener = Some(listener);
        self
    }

    /// Frames queued per peer before new ones are dropped (default 1,024).
    #[must_use]
    pub fn send_queue(mut self, frames: usize) -> Self {
        self.tcp.send_queue = frames;
        self
    }

    /// Reconnect back-off: first delay and largest delay (default 50 ms and 1 s).
    #[must_use]
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.tcp.backoff_min = min;
        self.tcp.backoff_max = max;
        self
    }

    /// Time allowed to connect and finish the whole handshake (default 2 s).
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.tcp.handshake_timeout = timeout;
        self
    }

    /// Time a frame may take to arrive whole once its first byte is in (default 30 s; used by
    /// the tokio driver, see [`TcpSettings::frame_timeout`]).
    #[must_use]
    pub fn frame_timeout(mut self, timeout: Duration) -> Self {
        self.tcp.frame_timeout = timeout;
        self
    }

    /// Liveness deadline of a peer connection (default 1 s, about one base view timeout): a
    /// connection on which nothing arrived for this long is dropped and redialled; heartbeats
    /// keep quiet connections alive (see [`TcpSettings::liveness_timeout`]). Use the same value
    /// on every node of a chain.
    #[must_use]
    pub fn liveness_timeout(mut self, timeout: Duration) -> Self {
        self.tcp.liveness_timeout = timeout;
        self
    }

    /// Inbound connections in their handshake at once: in total (default 64) and from one
    /// source address (default 8). Further connections are closed at once and counted.
    #[must_use]
    pub fn max_handshakes(mut self, total: usize, per_address: usize) -> Self {
        self.tcp.max_handshakes = total;
        self.tcp.max_handshakes_per_ip = per_address;
        self
    }

    /// Listeners outside the allow-list (configured peers and the validator set in force)
    /// accepted at once (default 0); see [`TcpSettings::max_guests`]. A chain that new
    /// machines join without being configured on every node needs a few.
    #[must_use]
    pub fn max_guests(mut self, guests: usize) -> Self {
        self.tcp.max_guests = guests;
        self
    }

    /// A network of your own instead of TCP (the TCP settings above are then unused).
    #[must_use]
    pub fn network(mut self, network: impl Network) -> Self {
        self.network = Some(Box::new(network));
        self
    }

    /// Wire limits (default [`Limits::default`]: 64 MiB frames, 4 MiB payloads, 1,024
    /// signers, 64 blocks per sync response). Every replica of a chain must use the same.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Views ahead of the current one whose messages are accepted (default 1,000).
    #[must_use]
    pub fn view_window(mut self, views: u64) -> Self {
        self.view_window = views;
        self
    }

    /// Most uncommitted blocks kept (default 10,000).
    #[must_use]
    pub fn max_uncommitted_blocks(mut self, blocks: usize) -> Self {
        self.max_uncommitted_blocks = blocks;
        self
    }

    /// Vote broadcast (default off; the core's `Config::broadcast_votes`): votes go to every
    /// validator, not only to the next leader, and every validator forms the QC itself, so each
    /// learns of a commit (and enters the next view) one one-way network delay sooner. It costs
    /// `n^2` instead of `n` vote messages per view and a signature check per vote at every
    /// validator: worth it where the network delay dominates (WAN), rarely on a LAN. Every
    /// validator of a chain should use the same setting (a node with it off refuses the extra
    /// votes, and the gain holds only where both ends have it on).
    #[must_use]
    pub fn broadcast_votes(mut self, on: bool) -> Self {
        self.broadcast_votes = on;
        self
    }

    /// View timeout after progress (default 1 s); doubled per failed view up to
    /// [`NodeBuilder::max_timeout`].
    #[must_use]
    pub fn base_timeout(mut self, timeout: Duration) -> Self {
        self.pacemaker.base_timeout = timeout;
        self
    }

    /// Largest view timeout (default 60 s).
    #[must_use]
    pub fn max_timeout(mut self, timeout: Duration) -> Self {
        self.pacemaker.max_timeout = timeout;
        self
    }

    /// How leaders are picked (default [`LeaderPolicy::REPUTATION`]). Every validator of a
    /// chain must use the same policy, or they disagree about leaders and views time out.
    #[must_use]
    pub fn leader_policy(mut self, policy: LeaderPolicy) -> Self {
        self.pacemaker.leaders = policy;
        self
    }

    /// Block sync asks a peer for blocks when nothing has committed for this long, giving up a
    /// request still unanswered (default: the base view timeout). It is what moves a sync
    /// request off a dead or silent peer while views advance by QCs (when the view timer, the
    /// other retry, never fires): such a request goes to the next peer within twice this. The
    /// core's own default (10 s, `Config::sync_no_progress`) is meant for runs without
    /// connection health; a node detects a silent link within about a view timeout, and its
    /// sync should not wait longer than that.
    #[must_use]
    pub fn sync_no_progress(mut self, period: Duration) -> Self {
        self.sync_no_progress = Some(period);
        self
    }

    /// How long a leader waits before proposing an empty block when the app has nothing to
    /// propose, no uncommitted ancestor carries updates and the latest committed block was
    /// empty too (default 100 ms; must be below half the base timeout). It bounds the block rate,
    /// and so the CPU use, of an idle chain. While the chain stays idle the delay doubles per
    /// committed empty block up to [`NodeBuilder::max_idle_block_delay`]. A waiting leader
    /// proposes at once when its app gets something to propose and wakes it
    /// ([`crate::Node::waker`]).
    #[must_use]
    pub fn idle_block_delay(mut self, delay: Duration) -> Self {
        self.idle_block_delay = delay;
        self
    }

    /// The ceiling of the idle back-off (default a third of the base timeout or of
    /// [`NodeBuilder::sync_no_progress`], whichever is smaller: 333 ms by default, so an idle
    /// chain commits about 3 empty blocks per second instead of 10). Must be below half the
    /// base timeout: the leader of a view stays in it for its own wait and then the next
    /// leader's (it enters the view when it forms the QC, the others when its proposal
    /// arrives), so two waits and a round trip must fit in one view timeout, or every leader
    /// times out its own view once per rotation. Keep it well below `sync_no_progress` too, or
    /// idle replicas start block sync between commits.
    #[must_use]
    pub fn max_idle_block_delay(mut self, delay: Duration) -> Self {
        self.max_idle_block_delay = Some(delay);
        self
    }

    fn max_idle(&self) -> Duration {
        let bound =
            self.sync_no_progress.unwrap_or(self.pacemaker.base_timeout).min(self.pacemaker.base_timeout);
        self.max_idle_block_delay.unwrap_or(bound / 3).max(self.idle_block_delay)
    }

    /// Messages and network events queued for the consensus thread before readers wait
    /// (default 4,096).
    #[must_use]
    pub fn inbox_capacity(mut self, messages: usize) -> Self {
        self.inbox_capacity = messages;
        self
    }

    /// Whether the bulk of the store's writes (committed blocks, app state, other proposers'
    /// blocks) is group-committed by a background writer thread (default `true`). Either way
    /// the safety state and this node's own proposals are fsynced before any message signed
    /// under them is sent, and a crash leaves a consistent store. `false` writes every drain of
    /// the consensus loop in one synchronous, fsynced transaction (slower: see the
    /// `durable_bench` example). With the writer, a store may reopen with its committed tip
    /// above its durable high QC; the node then starts from the tip's certificate (see
    /// [`NodeBuilder::prepare`]), so even a lone validator goes on committing.
    #[must_use]
    pub fn background_store_writes(mut self, on: bool) -> Self {
        self.background_store_writes = on;
        self
    }

    /// Snapshot sync ([`crate::snapshot`]; default off): serve snapshots every
    /// `interval` committed heights, and/or catch up by snapshot when block-sync servers
    /// answer that they pruned the heights asked for. Needs an app whose blocks certify the
    /// state root ([`App::snapshot_root`](crate::App::snapshot_root), such as
    /// [`StateCommitted`](crate::kv::certified::StateCommitted)); with a retention window the
    /// interval must be below half of it.
    #[must_use]
    pub fn snapshots(mut self, settings: SnapshotSettings) -> Self {
        self.snapshots = settings;
        self
    }

    /// How many committed blocks the store keeps for block sync (default
    /// [`RetainBlocks::Archive`]: all). With `Last(n)` (`n` at least
    /// [`crate::storage::prune::MIN_RETAIN_BLOCKS`]) a background thread deletes older
    /// committed blocks in small batches, keeping every epoch's last block with its proof; a
    /// peer asking for a pruned height is told so and asks another peer (see
    /// [`crate::storage::prune`]).
    #[must_use]
    pub fn retain_blocks(mut self, retain: RetainBlocks) -> Self {
        self.retain_blocks = retain;
        self
    }

    /// Records the node's metrics into `metrics` (default: none kept). Serve them with a
    /// [`crate::MetricsServer`], or read them with [`Metrics::encode`].
    #[must_use]
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Registers an event handler. Handlers run on the consensus thread, in registration order.
    #[must_use]
    pub fn on_event(mut self, handler: impl Fn(&Event) + Send + 'static) -> Self {
        self.handlers.push(Box::new(handler));
        self
    }

    fn check(&self) -> Result<(), BuildError> {
        let p = &self.pacemaker;
        if p.base_timeout.is_zero() {
            return Err(setting("base_timeout", "must be above zero"));
        }
        if p.max_timeout < p.base_timeout {
            return Err(setting("max_timeout", "must be at least base_timeout"));
        }
        // A leader's view lasts its own idle wait and the next leader's (see
        // `max_idle_block_delay`).
        if self.idle_block_delay.saturating_mul(2) >= p.base_timeout {
            return Err(setting(
                "idle_block_delay",
                "must be below half of base_timeout, or every leader times out its own view",
            ));
        }
        if self.max_idle().saturating_mul(2) >= p.base_timeout {
            return Err(setting(
                "max_idle_block_delay",
                "must be below half of base_timeout, or every leader times out its own view",
            ));
        }
        if self.sync_no_progress.is_some_and(|d| d.is_zero()) {
            return Err(setting("sync_no_progress", "must be above zero"));
        }
        if self.inbox_capacity == 0 {
            return Err(setting("inbox_capacity", "must be at least 1"));
        }
        self.retain_blocks.check().map_err(|reason| setting("retain_blocks", reason))?;
        if let RetainBlocks::Last(n) = self.retain_blocks {
            if self.snapshots.interval >= n / 2 {
                return Err(setting(
                    "snapshots.interval",
                    format!(
                        "{} must be below half the retention of {n} blocks (a node that installs a snapshot \
                         block-syncs from its height)",
                        self.snapshots.interval
                    ),
                ));
            }
        }
        if self.network.is_none() {
            let t = &self.tcp;
            if t.send_queue == 0 {
                return Err(setting("send_queue", "must be at least 1"));
            }
            if t.backoff_min.is_zero() || t.backoff_max < t.backoff_min {
                return Err(setting("reconnect_backoff", "need 0 < min <= max"));
            }
            if t.handshake_timeout.is_zero() {
                return Err(setting("handshake_timeout", "must be above zero"));
            }
            if t.liveness_timeout < Duration::from_millis(4) {
                return Err(setting("liveness_timeout", "must be at least 4 ms"));
            }
            if t.max_handshakes == 0 || t.max_handshakes_per_ip == 0 {
                return Err(setting("max_handshakes", "need at least 1 in total and per address"));
            }
            if t.frame_timeout.is_zero() {
                return Err(setting("frame_timeout", "must be above zero"));
            }
            let me = self.key.public();
            if let Some(v) = self
                .genesis
                .validators
                .members()
                .iter()
                .find(|v| v.key != me && !t.peers.contains_key(&v.key))
            {
                return Err(setting("peers", format!("genesis validator {} is not among the peers", v.key)));
            }
        }
        Ok(())
    }

    /// Checks the settings, opens (or initialises) the store, recovers the replica from it,
    /// starts the network and the consensus thread.
    pub fn start(self) -> Result<Node, BuildError> {
        let Prepared {
            id,
            chain,
            limits,
            net_key,
            validators,
            tcp,
            network,
            inbox_capacity,
            reader,
            status,
            engine,
            metrics,
        } = self.prepare()?;
        let (tx, rx) = sync_channel(inbox_capacity);
        let mut network = match network {
            Some(n) => n,
            None => Box::new(TcpNetwork::new(tcp)),
        };
        network.start(NetContext {
            key: net_key,
            chain,
            limits,
            validators,
            inbox: Inbox { tx: tx.clone(), chain, limits, metrics },
        })?;
        let local_addr = network.local_addr();
        let run = Loop { engine: Engine::new(engine, network), rx };
        let core = std::thread::Builder::new()
            .name("hotstuff-consensus".into())
            .spawn(move || run.run())
            .map_err(BuildError::Spawn)?;
        Ok(Node { info: NodeInfo::new(id, reader, status, local_addr), tx, core: Some(core) })
    }

    /// Checks the settings, opens (or initialises) the store and recovers the replica from it
    /// (raising its high QC to the committed tip's certificate if that is higher), without
    /// starting anything: the parts a driver on another runtime (such as
    /// `hotstuff-driver-tokio`) runs. [`NodeBuilder::start`] is `prepare` plus std threads.
    pub fn prepare(self) -> Result<Prepared<A>, BuildError> {
        self.check()?;
        let max_idle = self.max_idle();
        let chain = self.genesis.chain;
        let config = Config {
            limits: self.limits,
            view_window: self.view_window,
            max_uncommitted_blocks: self.max_uncommitted_blocks,
            broadcast_votes: self.broadcast_votes,
            sync_no_progress: self.sync_no_progress.unwrap_or(self.pacemaker.base_timeout),
            ..Config::new(chain)
        };
        config.validate()?;
        self.store.initialise(&self.genesis)?;
        let stored = self.store.load()?.ok_or(StoreError::NotInitialised)?;
        let id = self.key.public();
        let net_key = Keypair::from_secret(&self.key.secret());
        // The leader schedule reads the recent committed blocks (leader reputation): the last
        // `LeaderHistory::KEEP_VIEWS` heights cover at least as many views.
        let tip = stored.tip.height.0;
        let from = tip.saturating_sub(hotstuff_core::LeaderHistory::KEEP_VIEWS).max(1);
        let mut recent = Vec::new();
        for h in from..=tip {
            if let Some((block, _, _)) = self.store.committed_block(hotstuff_core::Height(h))? {
                recent.push(block);
            }
        }
        let tip_hash = stored.tip.hash;
        let mut recovered = stored.recovered().with_recent(recent);
        // The committed tip may be above the durable high QC (commits and the safety state are
        // written independently, the commits group-committed by the background writer). A
        // replica with peers learns a higher QC from them; a lone validator has none, and its
        // high QC's block may be gone (at or below the tip), so it could never propose again.
        // The tip's own certificate is a QC like any other: adopt it if it is higher (and the
        // view with it). Safety rests on the vote and lock rules, which this leaves unchanged.
        if let Some((_, cert, _)) = self.store.committed_block(hotstuff_core::Height(tip))? {
            let safety = &mut recovered.safety;
            if cert.block == tip_hash
                && cert.epoch == recovered.epoch.epoch
                && safety.epoch == recovered.epoch.epoch
                && cert.view > safety.high_qc.view
            {
                tracing::info!(from = %safety.high_qc.view, to = %cert.view, "high QC raised to the committed tip's");
                safety.view = safety.view.max(cert.view.next());
                safety.high_qc = cert;
            }
        }
        let rebuild = (Keypair::from_secret(&self.key.secret()), self.pacemaker);
        let replica = Replica::new(config, self.key, self.pacemaker, recovered)?;
        tracing::info!(
            node = %id,
            view = %replica.view(),
            committed = %replica.committed_height(),
            "recovered from the store"
        );
        let status = Arc::new(Mutex::new(Status {
            view: replica.view(),
            leader: replica.leader(replica.view()),
            committed: replica.committed_height(),
            high_qc: replica.high_qc().view,
            running: true,
        }));
        let writer = if self.background_store_writes {
            Some(StoreWriter::start(self.store.clone(), STORE_QUEUE).map_err(BuildError::Spawn)?)
        } else {
            None
        };
        let pruner =
            Pruner::start(self.store.clone(), self.retain_blocks, PRUNE_PERIOD).map_err(BuildError::Spawn)?;
        Ok(Prepared {
            id,
            chain,
            limits: self.limits,
            net_key,
            validators: replica.validators().clone(),
            tcp: self.tcp,
            network: self.network,
            inbox_capacity: self.inbox_capacity,
            reader: Reader::with_unwritten(self.store.clone(), writer.as_ref().map(StoreWriter::unwritten)),
            status: status.clone(),
            engine: EngineParts {
                replica,
                app: self.app,
                store: self.store,
                handlers: self.handlers,
                idle_block_delay: self.idle_block_delay,
                max_idle_block_delay: max_idle,
                status,
                writer,
                pruner,
                metrics: self.metrics.clone(),
                snapshots: self.snapshots,
                rebuild,
            },
            metrics: self.metrics,
        })
    }
}

/// A checked configuration with a replica recovered from its store, ready to run
/// ([`NodeBuilder::prepare`]). The network parts are for the driver to start; `engine` becomes
/// an [`Engine`] with the driver's outbound network.
pub struct Prepared<A: App> {
    /// This node's key.
    pub id: PublicKey,
    /// The chain.
    pub chain: ChainId,
    /// Wire limits (`max_frame` bounds every frame).
    pub limits: Limits,
    /// A copy of the node's key, for connection handshakes.
    pub net_key: Keypair,
    /// The validator set in force (its members may connect).
    pub validators: ValidatorSet,
    /// The TCP settings given to the builder.
    pub tcp: TcpSettings,
    /// A custom network, if one was given ([`NodeBuilder::network`]).
    pub network: Option<Box<dyn Network>>,
    /// Capacity of the inbox the network delivers into.
    pub inbox_capacity: usize,
    /// A reader of the node's committed state (the store, and the commits its background
    /// writer has not yet written).
    pub reader: Reader,
    /// The progress the engine publishes.
    pub status: Arc<Mutex<Status>>,
    /// The replica, app, store and handlers.
    pub engine: EngineParts<A>,
    /// The metrics the node records, if any (the network counts the bytes it receives).
    pub metrics: Option<Metrics>,
}

impl<A: App> std::fmt::Debug for NodeBuilder<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBuilder").field("key", &self.key.public()).finish_non_exhaustive()
    }
}
