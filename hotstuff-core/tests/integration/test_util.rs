//! The test kit (feature `test-util`) builds certificates the core accepts, and broken ones it
//! refuses.

use hotstuff_core::certificate::{verify_qc, verify_tc};
use hotstuff_core::test_util;
use hotstuff_core::{genesis_hash, BlockHash, ChainId, Epoch, QuorumCertificate, View};

#[test]
fn kit_certificates_verify_and_broken_ones_do_not() {
    let chain = ChainId(9);
    let keys = test_util::keys(4);
    let set = test_util::validator_set(&keys).unwrap();
    let genesis = genesis_hash(chain, &set);
    let block = BlockHash([3; 32]);
    // Signers in any order: the kit sorts them.
    let qc = test_util::qc(chain, Epoch(0), View(1), block, &[&keys[2], &keys[0], &keys[1]]);
    verify_qc(&qc, chain, &set, &genesis).unwrap();
    let short = test_util::qc(chain, Epoch(0), View(1), block, &[&keys[0], &keys[1]]);
    assert!(verify_qc(&short, chain, &set, &genesis).is_err(), "two of four is no quorum");
    let other_chain = test_util::qc(ChainId(10), Epoch(0), View(1), block, &[&keys[0], &keys[1], &keys[2]]);
    assert!(verify_qc(&other_chain, chain, &set, &genesis).is_err());

    let g = QuorumCertificate::genesis(genesis);
    let tc = test_util::tc(
        chain,
        Epoch(0),
        View(2),
        &[(&keys[3], g.clone()), (&keys[1], qc.clone()), (&keys[0], g)],
    )
    .unwrap();
    assert_eq!(tc.high_qc, qc);
    verify_tc(&tc, chain, &set, &set, &genesis, false).unwrap();

    let vote = test_util::vote(&keys[1], chain, Epoch(0), View(1), block);
    assert_eq!(vote.voter, keys[1].public());
    let t = test_util::timeout_vote(&keys[2], chain, View(2), qc);
    assert_eq!(t.high_qc.view, View(1));
}
