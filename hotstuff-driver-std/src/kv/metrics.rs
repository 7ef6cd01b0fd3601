//! The kv app's metrics: transactions committed and the mempool's depth, read at each scrape.

use super::mempool::Mempool;
use super::payload::{tx_count, TX_COUNT_KEY};
use crate::metrics::Metrics;
use crate::node::Reader;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

/// Adds `hotstuff_kv_transactions_committed_total` (from the committed state read by `reader`)
/// and `hotstuff_kv_mempool_transactions` / `hotstuff_kv_mempool_bytes` (waiting or in
/// uncommitted blocks of this node) to `metrics`.
pub fn register_metrics(metrics: &Metrics, mempool: Mempool, reader: Reader) {
    let committed = Counter::<u64>::default();
    let (depth, bytes) = (Gauge::<i64>::default(), Gauge::<i64>::default());
    metrics.register(
        "hotstuff_kv_transactions_committed",
        "Transactions in committed blocks (the chain's count, read from the committed state)",
        committed.clone(),
    );
    metrics.register(
        "hotstuff_kv_mempool_transactions",
        "Transactions held by this node's mempool",
        depth.clone(),
    );
    metrics.register("hotstuff_kv_mempool_bytes", "Bytes held by this node's mempool", bytes.clone());
    metrics.on_scrape(move || {
        let (txs, held) = mempool.depth();
        depth.set(i64::try_from(txs).unwrap_or(i64::MAX));
        bytes.set(i64::try_from(held).unwrap_or(i64::MAX));
        match reader.get(TX_COUNT_KEY) {
            Ok(v) => {
                let now = tx_count(v.as_deref());
                committed.inc_by(now.saturating_sub(committed.get()));
            }
            Err(error) => tracing::warn!(%error, "metrics: cannot read the committed transaction count"),
        }
    });
}
