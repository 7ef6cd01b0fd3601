//! What the app tells the core about a block: its effect on app state and on the validator set.

use crate::validators::ValidatorSetUpdates;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use borsh::{BorshDeserialize, BorshSerialize};

/// Changes a block makes to the app's key-value state: key -> `Some(value)` to set, `None` to
/// delete. The core keeps these per uncommitted block, so a driver can present the app a
/// speculative view (committed state overlaid with the updates of a block's uncommitted
/// ancestors, newest first; see [`Replica::pending_updates`](crate::Replica::pending_updates)),
/// and hands them over in [`Action::Commit`](crate::Action::Commit) to apply.
///
/// The map is shared: a clone costs a reference count, not a copy. One block's updates are
/// held at once by the block tree, the record persisted for the block, the committed block
/// and a driver's overlay of commits not yet written (under load, thousands of entries per
/// block); [`AppStateUpdates::insert`] and [`AppStateUpdates::delete`] copy the map only if
/// it is shared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppStateUpdates(pub Arc<BTreeMap<Vec<u8>, Option<Vec<u8>>>>);

impl BorshSerialize for AppStateUpdates {
    /// The map's layout (u32 count, then the keys in ascending order with optional values).
    fn serialize<W: borsh::io::Write>(&self, writer: &mut W) -> borsh::io::Result<()> {
        self.0.as_ref().serialize(writer)
    }
}

impl BorshDeserialize for AppStateUpdates {
    /// The derived layout (u32 count, then strictly ascending keys with optional values), with
    /// keys and values read in chunks so memory follows the input, not the length prefixes.
    fn deserialize_reader<R: borsh::io::Read>(reader: &mut R) -> borsh::io::Result<Self> {
        let invalid = |msg| borsh::io::Error::new(borsh::io::ErrorKind::InvalidData, msg);
        let count = u32::deserialize_reader(reader)?;
        let mut map = BTreeMap::new();
        let mut last: Option<Vec<u8>> = None;
        for _ in 0..count {
            let key = crate::codec::read_bytes(reader, usize::MAX)?;
            let value = match u8::deserialize_reader(reader)? {
                0 => None,
                1 => Some(crate::codec::read_bytes(reader, usize::MAX)?),
                _ => return Err(invalid("invalid option tag")),
            };
            if last.as_ref().is_some_and(|l| *l >= key) {
                return Err(invalid("app state keys not strictly ascending"));
            }
            last = Some(key.clone());
            map.insert(key, value);
        }
        Ok(AppStateUpdates(Arc::new(map)))
    }
}

impl AppStateUpdates {
    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) {
        Arc::make_mut(&mut self.0).insert(key, Some(value));
    }

    /// Deletes `key`.
    pub fn delete(&mut self, key: Vec<u8>) {
        Arc::make_mut(&mut self.0).insert(key, None);
    }

    /// What this update says about `key`: `Some(Some(v))` set, `Some(None)` deleted, `None`
    /// untouched.
    #[must_use]
    pub fn get(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        self.0.get(key).map(|v| v.as_deref())
    }

    /// The map, copied only if it is shared.
    #[must_use]
    pub fn into_map(self) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        Arc::unwrap_or_clone(self.0)
    }

    /// True if nothing changes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The app's verdict on a valid block: what it changes when it commits.
#[derive(Clone, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct AppOutcome {
    /// Changes to the app state.
    pub app_updates: AppStateUpdates,
    /// Changes to the validator set (taking effect on commit; see the crate docs).
    pub validator_updates: ValidatorSetUpdates,
}
