//! # hotstuff-driver-std
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod error;
pub mod storage;

pub use error::StoreError;
pub use storage::{Genesis, RedbStore, Storage, Stored, WriteBatch};
