//! The commands around signed transactions and validator-set changes: signed client writes,
//! `client validator ...`, and `join` (a config for a new machine from a chain's genesis file).

use crate::config::{self, FileConfig, Intake, ListenerEntry, Timing};
use crate::genesis::GenesisFile;
use crate::Result;
use clap::Subcommand;
use hotstuff_core::{Keypair, PublicKey, Signature};
use hotstuff_driver_std::kv::auth::{key_from_hex, load_or_create_key, Op, SignedTx};
use hotstuff_driver_std::kv::governance::{check_address, sign_address, Change};
use hotstuff_driver_std::kv::{hex, Client, Submitted};
use std::path::{Path, PathBuf};

/// Validator-set changes (signed by a governance key of the chain, `--key`).
#[derive(Subcommand)]
pub enum ValidatorOp {
    /// Add a validator. The new machine's `join` prints this command with its key, address
    /// and address signature.
    Add {
        /// The new validator's public key (64 hex characters).
        #[arg(long)]
        validator: String,
        /// Its voting power.
        #[arg(long, default_value_t = 1)]
        power: u64,
        /// Its consensus address, `host:port`.
        #[arg(long)]
        address: String,
        /// Its own signature over the address (128 hex characters, printed by `join`).
        #[arg(long)]
        address_sig: String,
    },
    /// Change a validator's power.
    SetPower {
        /// The validator's public key.
        #[arg(long)]
        validator: String,
        /// Its new power (at least 1).
        #[arg(long)]
        power: u64,
    },
    /// Remove a validator (it may keep following the chain as a listener).
    Remove {
        /// The validator's public key.
        #[arg(long)]
        validator: String,
    },
    /// Move this validator's own address (`--key` is the validator's key).
    SetAddress {
        /// The new address, `host:port`.
        #[arg(long)]
        address: String,
    },
}

/// The client key at `path` (created if missing, with a note on stderr).
pub fn client_key(path: &Path) -> Result<Keypair> {
    let existed = path.exists();
    let key = load_or_create_key(path).map_err(|e| format!("client key {}: {e}", path.display()))?;
    if !existed {
        eprintln!("new client key written to {} (public {})", path.display(), hex(&key.public().0));
    }
    Ok(key)
}

/// Signs `op` with the client's next sequence number and submits it; the node's answer names
/// the transaction (its id, and the committed height when accepted) for a `WAIT`.
pub fn submit_signed(c: &mut Client, key: &Keypair, op: Op) -> std::io::Result<Submitted> {
    op.check().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let (chain, next) = c.seq(&key.public())?;
    c.submit(&SignedTx::sign(chain, key, next, op))
}

fn pubkey(s: &str) -> Result<PublicKey> {
    Ok(key_from_hex(s)?)
}

/// Builds the change of a `client validator` command.
pub fn change(op: ValidatorOp, key: &Keypair) -> Result<Change> {
    Ok(match op {
        ValidatorOp::Add { validator, power, address, address_sig } => {
            let sig = config::hex_decode::<64>(&address_sig).map_err(|e| format!("--address-sig: {e}"))?;
            Change::Add { key: pubkey(&validator)?, power, address, address_sig: Signature(sig) }
        }
        ValidatorOp::SetPower { validator, power } => Change::SetPower { key: pubkey(&validator)?, power },
        ValidatorOp::Remove { validator } => Change::Remove { key: pubkey(&validator)? },
        ValidatorOp::SetAddress { address } => Change::SetAddress {
            key: key.public(),
            address_sig: Signature([0; 64]), // signed below, once the chain id is known
            address,
        },
    })
}

/// Runs a `client validator` command.
pub fn validator(c: &mut Client, key: &Keypair, op: ValidatorOp) -> std::io::Result<Submitted> {
    let mut change =
        change(op, key).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    if let Change::SetAddress { address, address_sig, .. } = &mut change {
        let (chain, _) = c.seq(&key.public())?;
        *address_sig = sign_address(chain, key, address);
    }
    submit_signed(c, key, Op::Validator(change))
}

/// The settings of `join`.
#[derive(clap::Args)]
pub struct JoinArgs {
    /// The chain's genesis file.
    #[arg(long)]
    genesis: PathBuf,
    /// Output directory (created); gets `node.key`, `genesis.toml` and `node.toml`.
    #[arg(long)]
    out: PathBuf,
    /// Consensus listen address of this node.
    #[arg(long)]
    listen: String,
    /// Client listen address of this node.
    #[arg(long)]
    client_listen: String,
    /// The address the other validators reach this node at (`host:port`; default `--listen`).
    #[arg(long)]
    advertise: Option<String>,
    /// More peers to dial, `KEY=host:port` (validators added since genesis).
    #[arg(long = "peer")]
    peers: Vec<String>,
    /// View timeout after progress, in ms (use the chain's).
    #[arg(long, default_value_t = 1000)]
    base_timeout_ms: u64,
}

/// Writes a new machine's key and config from a chain's genesis file, and prints the
/// governance command that adds it.
pub fn join(a: JoinArgs) -> Result<()> {
    let (file, _) = GenesisFile::load(&a.genesis)?;
    let advertise = a.advertise.unwrap_or_else(|| a.listen.clone());
    check_address(&advertise).map_err(|e| format!("--advertise: {e}"))?;
    let peers = a
        .peers
        .iter()
        .map(|p| {
            let (key, address) =
                p.split_once('=').ok_or_else(|| format!("--peer `{p}`: not KEY=host:port"))?;
            pubkey(key)?;
            check_address(address).map_err(|e| format!("--peer `{p}`: {e}"))?;
            Ok(ListenerEntry { key: key.to_string(), address: Some(address.to_string()) })
        })
        .collect::<Result<Vec<_>>>()?;
    std::fs::create_dir_all(&a.out)?;
    let key_path = a.out.join("node.key");
    if key_path.exists() {
        return Err(format!("{} exists: refusing to replace a node's key", key_path.display()).into());
    }
    let key = hotstuff_driver_std::generate_key()?;
    config::write_key(&key_path, &key)?;
    std::fs::write(a.out.join("genesis.toml"), toml::to_string(&file)?)?;
    let cfg = FileConfig {
        chain_id: file.chain_id,
        key_file: "node.key".into(),
        data_dir: "data".into(),
        listen: a.listen,
        client_listen: a.client_listen,
        metrics_listen: None,
        timing: Timing { base_timeout_ms: a.base_timeout_ms, ..Timing::default() },
        consensus: config::Consensus::default(),
        intake: Intake::default(),
        storage: config::StorageSection::default(),
        genesis_file: Some("genesis.toml".into()),
        validators: Vec::new(),
        peers,
        listeners: Vec::new(),
        joining: true,
    };
    let path = a.out.join("node.toml");
    std::fs::write(&path, toml::to_string(&cfg)?)?;
    let sig = sign_address(file.chain_id, &key, &advertise);
    println!("wrote {}; start it with `hotstuff-node run --config {}`", path.display(), path.display());
    println!("public key: {}", hex(&key.public().0));
    println!("to add it, a governance key holder runs:");
    println!(
        "hotstuff-node client --addr <a node's client address> --key <governance key> validator add --validator {} --power 1 --address {advertise} --address-sig {}",
        hex(&key.public().0),
        hex(&sig.0)
    );
    Ok(())
}
