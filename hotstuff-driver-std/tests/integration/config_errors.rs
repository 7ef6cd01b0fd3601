//! Invalid settings are refused with an error naming the setting: the builder's, and the
//! `hotstuff-node` binary's config files and flags.

use crate::common;

use common::{key, CHAIN};
use hotstuff_core::{ChainId, ValidatorSet};
use hotstuff_driver_std::kv::{KvApp, Mempool};
use hotstuff_driver_std::{BuildError, Genesis, NodeBuilder, RedbStore, StoreError};
use std::process::Command;
use std::time::Duration;

fn builder(n: usize) -> NodeBuilder<KvApp> {
    let validators = ValidatorSet::new((0..n).map(|i| (key(i).public(), 1))).unwrap();
    NodeBuilder::new(
        key(0),
        Genesis::new(CHAIN, validators),
        KvApp::new(Mempool::new(10), 10),
        RedbStore::in_memory().unwrap(),
    )
}

fn setting_name(r: Result<hotstuff_driver_std::Node, BuildError>) -> String {
    match r {
        Err(BuildError::Setting { name, reason }) => {
            println!("refused: {name}: {reason}");
            name.to_string()
        }
        Err(e) => panic!("expected a setting error, got {e}"),
        Ok(_) => panic!("expected a setting error, the node started"),
    }
}

#[test]
fn builder_names_the_bad_setting() {
    assert_eq!(setting_name(builder(2).start()), "peers", "a genesis validator without a peer entry");
    let b = || builder(1);
    assert_eq!(setting_name(b().idle_block_delay(Duration::from_secs(2)).start()), "idle_block_delay");
    assert_eq!(setting_name(b().base_timeout(Duration::ZERO).start()), "base_timeout");
    assert_eq!(setting_name(b().max_timeout(Duration::from_millis(1)).start()), "max_timeout");
    assert_eq!(setting_name(b().send_queue(0).start()), "send_queue");
    assert_eq!(setting_name(b().max_handshakes(64, 0).start()), "max_handshakes");
    assert_eq!(setting_name(b().inbox_capacity(0).start()), "inbox_capacity");
    assert_eq!(setting_name(b().liveness_timeout(Duration::ZERO).start()), "liveness_timeout");
    assert_eq!(setting_name(b().sync_no_progress(Duration::ZERO).start()), "sync_no_progress");
    assert_eq!(
        setting_name(b().retain_blocks(hotstuff_driver_std::RetainBlocks::Last(3)).start()),
        "retain_blocks"
    );
    assert_eq!(
        setting_name(b().reconnect_backoff(Duration::ZERO, Duration::ZERO).start()),
        "reconnect_backoff"
    );
    match b().max_uncommitted_blocks(1).start() {
        Err(BuildError::Replica(e)) => assert!(e.to_string().contains("max_uncommitted_blocks"), "{e}"),
        other => panic!("expected the core's setting error, got {:?}", other.err()),
    }

    // A store of another chain is refused by name, not reset.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    {
        let store = RedbStore::open(&path).unwrap();
        let node = NodeBuilder::new(
            key(0),
            Genesis::new(ChainId(1), ValidatorSet::new([(key(0).public(), 1)]).unwrap()),
            KvApp::new(Mempool::new(10), 10),
            store,
        )
        .start()
        .unwrap();
        node.shutdown().unwrap();
    }
    let again = NodeBuilder::new(
        key(0),
        Genesis::new(ChainId(2), ValidatorSet::new([(key(0).public(), 1)]).unwrap()),
        KvApp::new(Mempool::new(10), 10),
        RedbStore::open(&path).unwrap(),
    )
    .start();
    assert!(matches!(again, Err(BuildError::Store(StoreError::WrongChain { .. }))), "{:?}", again.err());
}

#[test]
fn node_binary_names_the_bad_field() {
    let bin = env!("CARGO_BIN_EXE_hotstuff-node");
    let dir = tempfile::tempdir().unwrap();
    let out =
        Command::new(bin).args(["testnet", "--validators", "2", "--out"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success());
    let good = std::fs::read_to_string(dir.path().join("node0.toml")).unwrap();
    // The genesis file's fields, through a config that names a bad genesis file.
    let genesis = std::fs::read_to_string(dir.path().join("genesis.toml")).unwrap();
    let first_key = genesis.lines().find(|l| l.starts_with("key = ")).unwrap().to_string();
    let first_address = genesis.lines().find(|l| l.starts_with("address = ")).unwrap().to_string();
    let bad_genesis = |text: String| {
        std::fs::write(dir.path().join("bad-genesis.toml"), text).unwrap();
        good.replace("genesis.toml", "bad-genesis.toml")
    };
    let genesis_cases = [
        ("validators[0].key", genesis.replacen(&first_key, "key = \"abc\"", 1)),
        ("pwr", genesis.replacen("power = 1", "pwr = 1", 1)),
        // An address the validator did not sign: nobody can redirect its traffic.
        ("validators[0].address_sig", genesis.replacen(&first_address, "address = \"evil.example:1\"", 1)),
        ("governance[0]", genesis.replacen("governance = [\"", "governance = [\"zz", 1)),
    ];
    for (field, text) in genesis_cases {
        assert_ne!(text, genesis, "case {field} changed nothing");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, bad_genesis(text)).unwrap();
        let out = Command::new(bin).args(["run", "--config"]).arg(&path).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        println!("{field}: {}", err.trim());
        assert!(!out.status.success(), "{field}: a bad genesis must not start");
        assert!(err.contains(field), "{field}: the error does not name the field: {err}");
    }
    let cases = [
        ("listen", good.replace("listen = \"127.0.0.1:7100\"", "listen = \"nowhere\"")),
        ("chain_id", good.replace("chain_id = 1", "chain_id = \"one\"")),
        (
            "timing.idle_block_delay_ms",
            good.replace("idle_block_delay_ms = 100", "idle_block_delay_ms = 5000"),
        ),
        ("key_file", good.replace("node0.key", "missing.key")),
        ("intake.client_read_reserve", good.replace("client_read_reserve = 8", "client_read_reserve = 64")),
        ("intake.block_max_bytes", good.replace("block_max_bytes = 131072", "block_max_bytes = 10")),
        (
            "intake.handshake_timeout_ms",
            good.replace("handshake_timeout_ms = 2000", "handshake_timeout_ms = 0"),
        ),
        // The optional `[consensus]` section: a wrong type, and a misspelt field.
        ("broadcast_votes", format!("{good}\n[consensus]\nbroadcast_votes = \"yes\"\n")),
        ("broadcast_vote", format!("{good}\n[consensus]\nbroadcast_vote = true\n")),
        ("storage.retain_blocks", good.replace("retain_blocks = \"archive\"", "retain_blocks = 10")),
        ("storage.retain_blocks", good.replace("retain_blocks = \"archive\"", "retain_blocks = \"forever\"")),
    ];
    for (field, text) in cases {
        assert_ne!(text, good, "case {field} changed nothing");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(bin).args(["run", "--config"]).arg(&path).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        println!("{field}: {}", err.trim());
        assert!(!out.status.success(), "{field}: a bad config must not start");
        assert!(err.contains(field), "{field}: the error does not name the field: {err}");
    }
    let out =
        Command::new(bin).args(["testnet", "--validators", "0", "--out"]).arg(dir.path()).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--validators"));
}

#[test]
fn testnet_for_several_hosts_writes_a_shared_genesis_with_signed_addresses() {
    let bin = env!("CARGO_BIN_EXE_hotstuff-node");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin)
        .args(["testnet", "--validators", "3", "--hosts", "node-a.example,10.0.0.2", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let genesis = std::fs::read_to_string(dir.path().join("genesis.toml")).unwrap();
    for a in ["node-a.example:7100", "10.0.0.2:7101", "node-a.example:7102"] {
        assert!(genesis.contains(&format!("address = \"{a}\"")), "{a} missing from {genesis}");
    }
    assert_eq!(genesis.matches("address_sig = ").count(), 3);
    let node1 = std::fs::read_to_string(dir.path().join("node1.toml")).unwrap();
    assert!(node1.contains("listen = \"0.0.0.0:7101\"") && node1.contains("genesis_file = \"genesis.toml\""));
    assert!(dir.path().join("governance.key").exists());
    let bad = tempfile::tempdir().unwrap();
    let out = Command::new(bin)
        .args(["testnet", "--hosts", "bad host", "--out"])
        .arg(bad.path().join("net"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--hosts: `bad host` is not a host name"));
    assert!(!bad.path().join("net").exists(), "nothing is written for bad flags");
}
