//! # hotstuff-driver-std
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod error;
pub mod storage;

pub use error::StoreError;
pub use storage::{CommittedEntry, Genesis, RedbStore, Storage, Stored, WriteBatch};
pub mod net;
pub use error::{FrameError, HandshakeError, NetError};
pub use net::{Inbox, NetEvent, Network, TcpNetwork, TcpSettings};
pub mod app;
pub mod event;
pub mod node;
pub use app::{App, BlockContext, Produced};
pub use event::Event;
pub use node::{BuildError, Node, NodeBuilder, NodeError, Reader, Status};
pub mod kv;

/// A new keypair from the operating system's randomness.
pub fn generate_key() -> Result<hotstuff_core::Keypair, std::io::Error> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(std::io::Error::other)?;
    Ok(hotstuff_core::Keypair::from_secret(&secret))
}
