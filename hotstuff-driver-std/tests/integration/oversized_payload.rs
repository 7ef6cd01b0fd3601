//! Nothing an app produces can wedge a leader: an app that returns a payload over the core's
//! limit gets an empty block proposed in its place (the core would refuse the oversized one and
//! the view would time out, every time this node leads), and the chain keeps committing.

use hotstuff_core::{AppOutcome, Block, ChainId, Keypair, Limits, ValidatorSet};
use hotstuff_driver_std::{App, BlockContext, Genesis, NodeBuilder, Produced, RedbStore};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Every block it produces is one byte over the limit it is told.
struct Oversized {
    asked: Arc<AtomicU64>,
}

impl App for Oversized {
    fn produce_block(&mut self, ctx: &BlockContext<'_>) -> Produced {
        self.asked.fetch_add(1, Ordering::Relaxed);
        Produced { payload: vec![0; ctx.max_payload + 1], outcome: AppOutcome::default() }
    }

    fn validate_block(&mut self, _: &BlockContext<'_>, _: &Block) -> Option<AppOutcome> {
        Some(AppOutcome::default())
    }
}

#[test]
fn an_oversized_payload_is_replaced_by_an_empty_block_and_the_chain_goes_on() {
    let key = Keypair::from_secret(&[0x31; 32]);
    let genesis = Genesis::new(ChainId(9), ValidatorSet::new([(key.public(), 1)]).unwrap());
    let asked = Arc::new(AtomicU64::new(0));
    let limits = Limits { max_payload: 64 << 10, ..Limits::default() };
    let node =
        NodeBuilder::new(key, genesis, Oversized { asked: asked.clone() }, RedbStore::in_memory().unwrap())
            .limits(limits)
            .base_timeout(Duration::from_millis(500))
            .idle_block_delay(Duration::from_millis(1))
            .max_idle_block_delay(Duration::from_millis(1))
            .start()
            .unwrap();
    let start = Instant::now();
    let reader = node.reader();
    while reader.tip().unwrap().height.0 < 20 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the chain stalled at height {} (the app was asked {} times)",
            reader.tip().unwrap().height.0,
            asked.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = start.elapsed();
    for h in 1..=20 {
        let (block, _, _) = reader.block(hotstuff_core::Height(h)).unwrap().unwrap();
        assert!(block.payload.is_empty(), "block {h} carries a payload");
    }
    println!(
        "20 blocks committed in {:.0} ms, each empty in place of a {}-byte payload (limit {})",
        took.as_secs_f64() * 1000.0,
        limits.max_payload + 1,
        limits.max_payload
    );
    assert!(took < Duration::from_secs(5), "no view timed out: 20 blocks well within 10 view timeouts");
    node.shutdown().unwrap();
}
