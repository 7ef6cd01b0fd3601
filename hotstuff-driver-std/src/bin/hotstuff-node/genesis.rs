//! The genesis file: what every node of a chain must agree on, shared as one file
//! (`genesis.toml`, written by `testnet` and copied by `join`).
//!
//! A chain started from a genesis file is *authenticated* (see `hotstuff_driver_std::kv::auth`):
//! every write is signed by a client key, and the governance keys it names may change the
//! validator set. Each validator's address is signed by its own key (`address_sig`), so the
//! file cannot redirect a validator's traffic either.

use crate::config::{hex_decode, ConfigError};
use hotstuff_core::{ChainId, Keypair, PublicKey, Signature, ValidatorSet};
use hotstuff_driver_std::kv::governance::{check_address, PeerRecord};
use hotstuff_driver_std::kv::{auth, hex};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The genesis file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisFile {
    /// The chain id.
    pub chain_id: u64,
    /// Keys allowed to change the validator set (64 hex characters each).
    #[serde(default)]
    pub governance: Vec<String>,
    /// The genesis validators.
    pub validators: Vec<GenesisValidator>,
}

/// A genesis validator.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisValidator {
    /// Public key, 64 hex characters.
    pub key: String,
    /// Voting power (at least 1).
    pub power: u64,
    /// Where it listens for consensus connections (`host:port`, a DNS name or an IP).
    pub address: String,
    /// Its own signature over the address (128 hex characters).
    pub address_sig: String,
}

/// A genesis file checked: the set, the initial app state, the validators' addresses.
pub struct Resolved {
    pub chain: ChainId,
    pub validators: ValidatorSet,
    pub app_state: Vec<(Vec<u8>, Vec<u8>)>,
    pub addresses: Vec<(PublicKey, String)>,
}

impl GenesisValidator {
    /// An entry for `key` at `address`, signed by `key`.
    pub fn signed(chain: u64, key: &Keypair, power: u64, address: &str) -> Self {
        let record = PeerRecord::signed(chain, key, address);
        GenesisValidator {
            key: hex(&key.public().0),
            power,
            address: address.to_string(),
            address_sig: hex(&record.sig.0),
        }
    }
}

impl GenesisFile {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<(GenesisFile, Resolved), ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Io { path: path.to_path_buf(), source })?;
        let file: GenesisFile = toml::from_str(&text)
            .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        let resolved = file.resolve(path)?;
        Ok((file, resolved))
    }

    fn resolve(&self, path: &Path) -> Result<Resolved, ConfigError> {
        let field =
            |field: String, reason: String| ConfigError::Field { path: path.to_path_buf(), field, reason };
        let pubkey = |name: String, s: &str| hex_decode::<32>(s).map(PublicKey).map_err(|r| field(name, r));
        let governance = self
            .governance
            .iter()
            .enumerate()
            .map(|(i, g)| pubkey(format!("governance[{i}]"), g))
            .collect::<Result<Vec<_>, _>>()?;
        let mut members = Vec::new();
        let mut records = Vec::new();
        let mut addresses = Vec::new();
        for (i, v) in self.validators.iter().enumerate() {
            let key = pubkey(format!("validators[{i}].key"), &v.key)?;
            if v.power == 0 {
                return Err(field(format!("validators[{i}].power"), "must be at least 1".into()));
            }
            check_address(&v.address).map_err(|r| field(format!("validators[{i}].address"), r))?;
            let sig = hex_decode::<64>(&v.address_sig)
                .map(Signature)
                .map_err(|r| field(format!("validators[{i}].address_sig"), r))?;
            let record = PeerRecord { address: v.address.clone(), sig };
            if !record.verify(self.chain_id, &key) {
                return Err(field(
                    format!("validators[{i}].address_sig"),
                    format!("not {}'s signature over `{}` on chain {}", v.key, v.address, self.chain_id),
                ));
            }
            members.push((key, v.power));
            addresses.push((key, v.address.clone()));
            records.push((key, record));
        }
        let validators = ValidatorSet::new(members).map_err(|e| field("validators".into(), e.to_string()))?;
        Ok(Resolved {
            chain: ChainId(self.chain_id),
            validators,
            app_state: auth::genesis_state(self.chain_id, &governance, &records),
            addresses,
        })
    }
}
