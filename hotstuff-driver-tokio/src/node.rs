//! The node handle and the consensus task.

use crate::net::{Inbound, Outgoing, TcpNetwork};
use hotstuff_driver_std::node::engine::{needs_blocking, Engine, Ready};
use hotstuff_driver_std::{App, BuildError, NodeBuilder, NodeError, NodeInfo, Status};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// A running replica on tokio. Its key, address, reader and status are those of its
/// [`NodeInfo`] (it derefs to it). Dropping it signals every task to stop without waiting; call
/// [`Node::shutdown`] to wait until they have stopped and the store is closed.
pub struct Node {
    info: NodeInfo,
    stop: CancellationToken,
    wake: Arc<Notify>,
    core: Option<JoinHandle<Result<(), NodeError>>>,
}

/// Wakes a node's leader that waits out its idle delay (see
/// [`NodeBuilder::idle_block_delay`]) and sends the app's messages for other nodes
/// ([`App::outgoing`]): call it when the app gets something to propose or to send (the kv app:
/// `Mempool::set_waker`, `PeerForwarder::set_waker`). Cheap, never blocks, any thread, inside
/// or outside the runtime; wakes made while the node is busy coalesce into one.
#[derive(Clone)]
pub struct Waker(Arc<Notify>);

impl Waker {
    /// Asks the node to call its app's `produce_block` again at once if it is waiting to
    /// propose an empty block, and to send the app's outgoing messages.
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

impl std::ops::Deref for Node {
    type Target = NodeInfo;

    fn deref(&self) -> &NodeInfo {
        &self.info
    }
}

impl Node {
    /// Checks `builder`'s settings, opens (or initialises) the store and recovers the replica
    /// from it (on the blocking pool), starts the network and spawns the consensus task. Must
    /// be called within a tokio runtime. A custom [`NodeBuilder::network`] is refused: this
    /// driver runs its own async TCP network with the builder's TCP settings.
    pub async fn start<A: App>(builder: NodeBuilder<A>) -> Result<Node, BuildError> {
        let p = tokio::task::spawn_blocking(move || builder.prepare())
            .await
            .map_err(|e| BuildError::Spawn(std::io::Error::other(e)))??;
        if p.network.is_some() {
            return Err(BuildError::Setting {
                name: "network",
                reason: "a custom Network runs on threads; the tokio driver runs its own TCP network".into(),
            });
        }
        let (tx, rx) = mpsc::channel(p.inbox_capacity);
        let (net, local_addr) =
            TcpNetwork::start(p.tcp, p.net_key, p.chain, p.limits, &p.validators, tx, p.metrics).await?;
        let engine = Engine::new(p.engine, net.outgoing());
        let stop = CancellationToken::new();
        let span = tracing::info_span!("node", id = %p.id);
        let wake = Arc::new(Notify::new());
        let run = run(Box::new(engine), rx, stop.clone(), wake.clone(), net, p.status.clone());
        let core = tokio::spawn(run.instrument(span));
        Ok(Node { info: NodeInfo::new(p.id, p.reader, p.status, local_addr), stop, wake, core: Some(core) })
    }

    /// A [`Waker`] for this node.
    #[must_use]
    pub fn waker(&self) -> Waker {
        Waker(self.wake.clone())
    }

    /// Stops the consensus task and the network and waits for every task (the store is
    /// closed once the last [`hotstuff_driver_std::Reader`] is dropped). Returns how long it took, or the error the
    /// loop stopped on if it stopped on its own.
    pub async fn shutdown(mut self) -> Result<Duration, NodeError> {
        let started = Instant::now();
        let Some(core) = self.core.take() else { return Ok(Duration::ZERO) };
        self.stop.cancel();
        let result = core.await.map_err(|_| NodeError::Panicked)?;
        let took = started.elapsed();
        tracing::info!(node = %self.id(), ?took, "node stopped");
        result.map(|()| took)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

type Boxed<A> = Box<Engine<A, Outgoing>>;

/// The consensus task: runs turns until told to stop, then stops the network.
async fn run<A: App>(
    engine: Boxed<A>,
    mut rx: mpsc::Receiver<Inbound>,
    stop: CancellationToken,
    wake: Arc<Notify>,
    net: TcpNetwork,
    status: Arc<Mutex<Status>>,
) -> Result<(), NodeError> {
    let mut slot = Some(engine);
    let mut result = turns(&mut slot, &mut rx, &stop, &wake).await;
    if result.is_ok() && slot.is_some() {
        // A clean stop leaves everything durable (the background writer's queue included).
        result = match blocking(&mut slot, Engine::close).await {
            Ok(closed) => closed.map_err(NodeError::from),
            Err(e) => Err(e),
        };
    }
    match (&slot, &result) {
        (Some(engine), Err(NodeError::Store(e))) => engine.stopped(Some(e)),
        (Some(engine), _) => engine.stopped(None),
        (None, _) => status.lock().unwrap_or_else(PoisonError::into_inner).running = false,
    }
    // Readers may be waiting to deliver into a full inbox: close it so they end.
    rx.close();
    net.shutdown().await;
    result
}

/// Runs `f` on the engine on the blocking pool (store writes with fsync, store reads, app
/// calls), so the async threads never wait for the disk.
async fn blocking<A: App, T: Send + 'static>(
    slot: &mut Option<Boxed<A>>,
    f: impl FnOnce(&mut Engine<A, Outgoing>) -> T + Send + 'static,
) -> Result<T, NodeError> {
    let mut engine = slot.take().ok_or(NodeError::Panicked)?;
    let span = tracing::Span::current();
    let (engine, out) = tokio::task::spawn_blocking(move || {
        let out = span.in_scope(|| f(&mut engine));
        (engine, out)
    })
    .await
    .map_err(|_| NodeError::Panicked)?;
    *slot = Some(engine);
    Ok(out)
}

async fn turns<A: App>(
    slot: &mut Option<Boxed<A>>,
    rx: &mut mpsc::Receiver<Inbound>,
    stop: &CancellationToken,
    wake: &Notify,
) -> Result<(), NodeError> {
    loop {
        let engine = slot.as_mut().ok_or(NodeError::Panicked)?;
        let actions = engine.poll_actions();
        // SAFETY RULE: `perform` fsyncs what the drain's Persists need for safety (the safety
        // state, this node's own proposal) before it queues `Persisted`; only then does the
        // core release the messages signed under that state. The bulk goes to the store's
        // background writer.
        if actions.iter().any(needs_blocking) || engine.wants_blocking() {
            blocking(slot, move |e| e.perform(actions)).await??;
        } else if !actions.is_empty() {
            engine.perform(actions)?;
        }
        let engine = slot.as_mut().ok_or(NodeError::Panicked)?;
        engine.publish_status();
        let deadline = match engine.ready(Instant::now()) {
            // A node that always has local work (a lone validator with a full mempool) still
            // stops when asked.
            Ready::Handled if stop.is_cancelled() => return Ok(()),
            Ready::Handled => continue,
            Ready::ProduceDue => {
                blocking(slot, |e| e.produce_due()).await?;
                continue;
            }
            Ready::SnapshotDue => {
                blocking(slot, |e| e.snapshot_tick()).await?;
                continue;
            }
            Ready::Wait(deadline) => deadline,
        };
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let snapshot_msg = tokio::select! {
            biased;
            () = stop.cancelled() => return Ok(()),
            msg = rx.recv() => match msg {
                // Snapshot sync reads and writes the store: off the async threads.
                Some(Inbound::Message { from, message }) if Engine::<A, Outgoing>::message_blocks(&message) => {
                    Some((from, message))
                }
                Some(Inbound::Message { from, message }) => {
                    engine.handle_message(from, message);
                    None
                }
                Some(Inbound::Net(event)) => {
                    engine.on_net(event);
                    None
                }
                None => return Ok(()),
            },
            () = wake.notified() => {
                engine.wake();
                None
            }
            () = timer => None,
        };
        if let Some((from, message)) = snapshot_msg {
            blocking(slot, move |e| e.handle_message(from, message)).await?;
        }
    }
}
