//! # hotstuff-driver-tokio
//!
//! The tokio driver for [`hotstuff_core`]: `hotstuff-driver-std` on async tasks. It reuses
//! everything of that crate that does not depend on the runtime — the builder and its checks
//! ([`NodeBuilder`], whose [`NodeBuilder::prepare`] opens the store and recovers the replica),
//! the turn of the consensus loop ([`hotstuff_driver_std::node::engine::Engine`]: it performs
//! the replica's actions), the [`App`] trait and the kv app, [`Storage`] and [`RedbStore`],
//! [`Event`], the errors, and the wire (handshake steps and frame format) — and adds only the
//! async parts: the consensus task, the TCP network and the [`Node`] handle.
//!
//! ## Tasks
//! - **One consensus task** owns the replica. Each turn it performs the replica's actions, then
//!   takes one input: a local acknowledgement or app reply first, then a due timer (view timer,
//!   block-sync timers, the idle-block delay), then a message from the network, waiting in a
//!   `select!` on the inbox, the next timer, the node's [`Waker`] and the stop signal.
//! - **Network tasks** ([`net`]): an acceptor; per peer a writer that owns the peer's bounded
//!   queue (the consensus task never waits on it: a full queue drops the frame) and dials with
//!   exponential back-off; a reader per connection. Wire-compatible with `hotstuff-driver-std`:
//!   a cluster may mix both drivers.
//!
//! ## Persist before send
//! A drain's Persists and Commits are written in **one redb transaction with fsync** before
//! `Input::Persisted` is fed back; the core holds every vote, timeout vote and proposal signed
//! under that state until then. Every action that touches the store or calls the app (see
//! [`needs_blocking`](hotstuff_driver_std::node::engine::needs_blocking)) runs on tokio's
//! blocking pool (`spawn_blocking`, the engine moves there and back), so the runtime's threads
//! never wait for the disk, and any runtime flavour works, `current_thread` included. Sends,
//! timers and events are performed inline.
//!
//! ## Choices that differ from the std driver
//! - Frames are read into a buffer that grows with the bytes received (not allocated at the
//!   announced length), and a frame must arrive whole within `frame_timeout` (default 30 s)
//!   once its first byte is in. A connection may stay idle between frames.
//! - A writer flushes several queued frames at once.
//! - A custom [`hotstuff_driver_std::Network`] (thread-based) is refused by [`Node::start`].
//!
//! ## Example
//! ```no_run
//! use hotstuff_core::{ChainId, ValidatorSet};
//! use hotstuff_driver_tokio::kv::{KvApp, Mempool, Tx};
//! use hotstuff_driver_tokio::{generate_key, Genesis, Node, NodeBuilder, RedbStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let key = generate_key()?;
//! let validators = ValidatorSet::new([(key.public(), 1)])?;
//! let mempool = Mempool::new(10_000);
//! let builder = NodeBuilder::new(
//!     key,
//!     Genesis::new(ChainId(1), validators),
//!     KvApp::new(mempool.clone(), 1_000),
//!     RedbStore::open("node.redb")?,
//! )
//! .listen("127.0.0.1:7100".parse()?);
//! let node = Node::start(builder).await?;
//! // A new transaction wakes a leader that waits out its idle delay.
//! let waker = node.waker();
//! mempool.set_waker(move || waker.wake());
//! mempool.submit(Tx::Put { key: b"k".to_vec(), value: b"v".to_vec() })?;
//! tokio::time::sleep(std::time::Duration::from_secs(1)).await;
//! println!("{:?}", node.reader().get(&hotstuff_driver_tokio::kv::state_key(b"k"))?);
//! node.shutdown().await?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod net;
mod node;

pub use hotstuff_driver_std::{
    generate_key, kv, App, BlockContext, BuildError, Event, FrameError, Genesis, HandshakeError, NetError,
    NetEvent, NodeBuilder, NodeError, Produced, Reader, RedbStore, Status, Storage, StoreError, TcpSettings,
};
pub use node::{Node, Waker};
