//! Test harness for hotstuff-core.
