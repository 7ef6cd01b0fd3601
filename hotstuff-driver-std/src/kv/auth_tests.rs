//! Tests of signed transactions and validator-set changes: the rules, and `validate_block`
//! refusing a block a Byzantine leader filled with bad ones.

use super::auth::{check_submission, genesis_state, Op, Rules, SignedTx, TxError, AUTH_KEY};
use super::governance::{sign_address, Change, ChangeError, PeerRecord, MAX_CHANGES_PER_BLOCK};
use super::{KvApp, Mempool, Tx};
use crate::app::{App, BlockContext};
use crate::error::StoreError;
use crate::node::Reader;
use crate::storage::{Genesis, RedbStore, Storage};
use hotstuff_core::{
    AppStateUpdates, Block, BlockHash, ChainId, Epoch, Height, Keypair, PublicKey, QuorumCertificate,
    ValidatorSet, ValidatorSetError, View,
};
use std::collections::BTreeMap;
use std::sync::Arc;

const CHAIN: u64 = 7;

fn key(i: u8) -> Keypair {
    Keypair::from_secret(&[i; 32])
}

struct World {
    state: BTreeMap<Vec<u8>, Vec<u8>>,
    set: ValidatorSet,
    gov: Keypair,
}

fn world() -> World {
    let gov = key(100);
    let set = ValidatorSet::new((1..=4).map(|i| (key(i).public(), 1))).unwrap();
    let peers: Vec<_> = (1..=4)
        .map(|i| (key(i).public(), PeerRecord::signed(CHAIN, &key(i), &format!("n{i}:7100"))))
        .collect();
    let state = genesis_state(CHAIN, &[gov.public()], &peers).into_iter().collect();
    World { state, set, gov }
}

impl World {
    /// Applies `txs` as one block; on success commits the updates to the state.
    fn block(&mut self, txs: &[Tx]) -> Result<hotstuff_core::ValidatorSetUpdates, (usize, TxError)> {
        let state = self.state.clone();
        let get = move |k: &[u8]| -> Result<Option<Vec<u8>>, StoreError> { Ok(state.get(k).cloned()) };
        let mut rules = Rules::new(&get, &self.set).unwrap();
        let mut updates = AppStateUpdates::default();
        for (i, tx) in txs.iter().enumerate() {
            rules.apply(tx, &mut updates).map_err(|e| (i, e))?;
        }
        for (k, v) in updates.into_map() {
            match v {
                Some(v) => self.state.insert(k, v),
                None => self.state.remove(&k),
            };
        }
        let vu = rules.into_validator_updates();
        self.set = self.set.apply(&vu).unwrap();
        Ok(vu)
    }
}

fn put(client: &Keypair, seq: u64, k: &str) -> Tx {
    let op = Op::Put { key: k.as_bytes().to_vec(), value: b"v".to_vec() };
    Tx::Signed(Box::new(SignedTx::sign(CHAIN, client, seq, op)))
}

fn change(signer: &Keypair, seq: u64, c: Change) -> Tx {
    Tx::Signed(Box::new(SignedTx::sign(CHAIN, signer, seq, Op::Validator(c))))
}

fn add(new: &Keypair, power: u64) -> Change {
    let address = "node9.example:7109".to_string();
    Change::Add { key: new.public(), power, address_sig: sign_address(CHAIN, new, &address), address }
}

#[test]
fn signed_writes_apply_in_sequence_and_forged_replayed_or_out_of_order_ones_are_refused() {
    let mut w = world();
    let alice = key(50);
    // Unsigned writes are refused on an authenticated chain.
    let unsigned = Tx::Put { key: b"k".to_vec(), value: b"v".to_vec() };
    assert!(matches!(w.block(&[unsigned]), Err((0, TxError::Unsigned))));
    // In sequence, several in one block.
    w.block(&[put(&alice, 0, "a"), put(&alice, 1, "b")]).unwrap();
    assert_eq!(w.state.get(&b"kv/b"[..]), Some(&b"v".to_vec()));
    // Replayed: in a later block, and twice in one block.
    let e = w.block(&[put(&alice, 1, "b")]).unwrap_err().1;
    assert!(matches!(e, TxError::Replayed { seq: 1, next: 2, .. }), "{e}");
    assert!(e.to_string().starts_with("replayed transaction: sequence number 1"), "{e}");
    assert!(matches!(
        w.block(&[put(&alice, 2, "c"), put(&alice, 2, "c")]),
        Err((1, TxError::Replayed { .. }))
    ));
    // Out of order: a gap.
    let e = w.block(&[put(&alice, 5, "d")]).unwrap_err().1;
    assert!(matches!(e, TxError::OutOfOrder { seq: 5, next: 2, .. }), "{e}");
    // Forged: the op changed after signing, the client key swapped, another chain's signature.
    let Tx::Signed(mut s) = put(&alice, 2, "e") else { unreachable!() };
    s.op = Op::Put { key: b"e".to_vec(), value: b"evil".to_vec() };
    let e = w.block(&[Tx::Signed(s)]).unwrap_err().1;
    assert!(matches!(e, TxError::BadSignature(k) if k == alice.public()), "{e}");
    let Tx::Signed(mut s) = put(&alice, 2, "e") else { unreachable!() };
    s.client = key(51).public();
    assert!(matches!(w.block(&[Tx::Signed(s)]), Err((0, TxError::BadSignature(_)))));
    let other_chain = SignedTx::sign(CHAIN + 1, &alice, 2, Op::Delete { key: b"a".to_vec() });
    assert!(matches!(w.block(&[Tx::Signed(Box::new(other_chain))]), Err((0, TxError::BadSignature(_)))));
    // Nothing refused changed anything (the refused block with two 2s included): the next is 2.
    w.block(&[put(&alice, 2, "e")]).unwrap();
}

#[test]
fn open_chains_accept_unsigned_writes_and_still_check_signed_ones() {
    let set = ValidatorSet::new([(key(1).public(), 1)]).unwrap();
    let get = |_: &[u8]| -> Result<Option<Vec<u8>>, StoreError> { Ok(None) };
    let mut rules = Rules::new(&get, &set).unwrap();
    let mut updates = AppStateUpdates::default();
    rules.apply(&Tx::Put { key: b"k".to_vec(), value: b"v".to_vec() }, &mut updates).unwrap();
    let forged = SignedTx::sign(CHAIN, &key(50), 0, Op::Delete { key: b"k".to_vec() });
    assert!(matches!(
        rules.apply(&Tx::Signed(Box::new(forged)), &mut updates),
        Err(TxError::BadSignature(_))
    ));
    let ok = SignedTx::sign(0, &key(50), 0, Op::Delete { key: b"k".to_vec() });
    rules.apply(&Tx::Signed(Box::new(ok)), &mut updates).unwrap();
}

#[test]
fn validator_changes_need_a_governance_signature_and_a_self_signed_address() {
    let mut w = world();
    let gov = key(100);
    let (new, mallory) = (key(9), key(60));
    // Not a governance key.
    let e = w.block(&[change(&mallory, 0, add(&new, 1))]).unwrap_err().1;
    assert!(matches!(e, TxError::Change(ChangeError::NotGovernance(k)) if k == mallory.public()), "{e}");
    // The address signed by another key than the new validator's.
    let address = "evil.example:1".to_string();
    let redirected = Change::Add {
        key: new.public(),
        power: 1,
        address_sig: sign_address(CHAIN, &gov, &address),
        address,
    };
    let e = w.block(&[change(&gov, 0, redirected)]).unwrap_err().1;
    assert!(matches!(e, TxError::Change(ChangeError::AddressNotSigned { .. })), "{e}");
    // Malformed: no port, zero power, a bad key, a non-member.
    let bad_addr = Change::Add {
        key: new.public(),
        power: 1,
        address_sig: sign_address(CHAIN, &new, "nohost"),
        address: "nohost".into(),
    };
    assert!(matches!(
        w.block(&[change(&gov, 0, bad_addr)]),
        Err((0, TxError::Change(ChangeError::BadAddress(_))))
    ));
    assert!(matches!(
        w.block(&[change(&gov, 0, add(&new, 0))]),
        Err((0, TxError::Change(ChangeError::BadPower(0))))
    ));
    let stranger = Change::SetPower { key: key(70).public(), power: 3 };
    assert!(matches!(
        w.block(&[change(&gov, 0, stranger)]),
        Err((0, TxError::Change(ChangeError::NotMember(_))))
    ));
    // Authorised: added with its own address in the peer book, in the validator updates.
    let vu = w.block(&[change(&gov, 0, add(&new, 1))]).unwrap();
    assert_eq!(vu.0.get(&new.public()), Some(&1));
    assert!(w.set.contains(&new.public()));
    let record = PeerRecord::decode(&w.state[&super::governance::peer_key(&new.public())]).unwrap();
    assert_eq!(record.address, "node9.example:7109");
    assert!(record.verify(CHAIN, &new.public()));
    // Added twice: refused.
    let e = w.block(&[change(&gov, 1, add(&new, 1))]).unwrap_err().1;
    assert!(matches!(e, TxError::Change(ChangeError::AlreadyMember(_))), "{e}");
    // A power change and an address move by the validator itself; nobody else may move it.
    w.block(&[change(&gov, 1, Change::SetPower { key: new.public(), power: 5 })]).unwrap();
    assert_eq!(w.set.power(&new.public()), Some(5));
    let moved = "10.0.0.9:7100".to_string();
    let by_gov = Change::SetAddress {
        key: new.public(),
        address_sig: sign_address(CHAIN, &new, &moved),
        address: moved.clone(),
    };
    assert!(matches!(
        w.block(&[change(&gov, 2, by_gov.clone())]),
        Err((0, TxError::Change(ChangeError::NotOwnAddress { .. })))
    ));
    w.block(&[change(&new, 0, by_gov)]).unwrap();
    // Emptying the set: removing every member in one block is refused, the set unchanged.
    let members: Vec<PublicKey> = w.set.members().iter().map(|v| v.key).collect();
    let removes: Vec<Tx> = members
        .iter()
        .enumerate()
        .map(|(i, k)| change(&gov, 2 + i as u64, Change::Remove { key: *k }))
        .collect();
    let (at, e) = w.block(&removes).unwrap_err();
    assert_eq!(at, members.len() - 1);
    assert!(matches!(e, TxError::Change(ChangeError::BadSet(ValidatorSetError::Empty))), "{e}");
    assert_eq!(w.set.len(), 5);
    // Removing one: its peer-book entry goes too.
    w.block(&[change(&gov, 2, Change::Remove { key: key(1).public() })]).unwrap();
    assert!(!w.set.contains(&key(1).public()));
    assert!(!w.state.contains_key(&super::governance::peer_key(&key(1).public())));
    // Oversized: more than the per-block limit of changes.
    let many: Vec<Tx> = (0..=MAX_CHANGES_PER_BLOCK as u64)
        .map(|i| change(&gov, 3 + i, add(&key(120 + i as u8), 1)))
        .collect();
    let (at, e) = w.block(&many).unwrap_err();
    assert_eq!(at, MAX_CHANGES_PER_BLOCK);
    assert!(matches!(e, TxError::Change(ChangeError::TooManyChanges)), "{e}");
}

#[test]
fn signed_transactions_round_trip_through_hex_and_bad_encodings_are_refused() {
    let tx = SignedTx::sign(CHAIN, &key(50), 3, Op::Validator(add(&key(9), 2)));
    assert_eq!(SignedTx::from_hex(&tx.to_hex()).unwrap(), tx);
    let mut long = tx.to_hex();
    long.push_str("00");
    assert!(SignedTx::from_hex(&long).unwrap_err().contains("trailing"));
    assert!(SignedTx::from_hex("zz").unwrap_err().contains("not hex"));
    let empty_key = SignedTx::sign(CHAIN, &key(50), 0, Op::Put { key: vec![], value: vec![] });
    assert!(SignedTx::from_hex(&empty_key.to_hex()).unwrap_err().contains("invalid"));
}

/// A Byzantine leader's block: every honest replica's `validate_block` refuses it (forged,
/// replayed or unauthorised), and accepts the honest version; submissions are refused with the
/// reason.
#[test]
fn validate_block_refuses_blocks_with_bad_transactions() {
    let w = world();
    let genesis = Genesis::new(ChainId(CHAIN), w.set.clone()).with_app_state(w.state.clone());
    let store = RedbStore::in_memory().unwrap();
    store.initialise(&genesis).unwrap();
    let store: Arc<dyn Storage> = Arc::new(store);
    let mut app = KvApp::new(Mempool::new(16), 100);
    let alice = key(50);
    let proposer = key(1).public();
    let leader = move |_: View| proposer;
    let verdict = |app: &mut KvApp, txs: Vec<Tx>| {
        let ctx = BlockContext {
            waits_if_empty: false,
            schedule: crate::app::Schedule::Fn(&leader),
            view: View(1),
            height: Height(1),
            parent: BlockHash([0; 32]),
            me: key(1).public(),
            validators: &w.set,
            max_payload: 1 << 20,
            committed: crate::app::Committed::Store(&*store),
            pending: Vec::new(),
        };
        let block = Block {
            epoch: Epoch(0),
            view: View(1),
            height: Height(1),
            justify: QuorumCertificate::genesis(BlockHash([0; 32])),
            proposer: key(1).public(),
            payload: borsh::to_vec(&txs).unwrap(),
        };
        app.validate_block(&ctx, &block)
    };
    let ok = verdict(&mut app, vec![put(&alice, 0, "a")]).expect("an honest block is valid");
    assert_eq!(ok.app_updates.get(b"kv/a"), Some(Some(&b"v"[..])));
    let Tx::Signed(mut forged) = put(&alice, 0, "a") else { unreachable!() };
    forged.op = Op::Put { key: b"a".to_vec(), value: b"forged".to_vec() };
    assert!(verdict(&mut app, vec![Tx::Signed(forged)]).is_none());
    assert!(verdict(&mut app, vec![put(&alice, 0, "a"), put(&alice, 0, "a")]).is_none());
    assert!(verdict(&mut app, vec![put(&alice, 1, "a")]).is_none());
    assert!(verdict(&mut app, vec![Tx::Delete { key: b"a".to_vec() }]).is_none());
    assert!(verdict(&mut app, vec![change(&alice, 0, add(&key(9), 1))]).is_none());
    let added = verdict(&mut app, vec![change(&w.gov, 0, add(&key(9), 1))]).expect("governance may add");
    assert_eq!(added.validator_updates.0.get(&key(9).public()), Some(&1));

    // Submissions are checked against the committed state, with a reason.
    let reader = Reader::new(store.clone());
    assert!(check_submission(&reader, &put(&alice, 0, "a")).is_ok());
    assert!(check_submission(&reader, &put(&alice, 4, "a")).is_ok(), "ahead: earlier ones may be pending");
    let e = check_submission(&reader, &Tx::Put { key: b"a".to_vec(), value: vec![] }).unwrap_err();
    assert!(e.to_string().starts_with("unsigned write refused"), "{e}");
    let e = check_submission(&reader, &change(&alice, 0, add(&key(9), 1))).unwrap_err();
    assert!(e.to_string().starts_with("unauthorised validator-set change"), "{e}");
    assert!(reader.get(AUTH_KEY).unwrap().is_some());
}
