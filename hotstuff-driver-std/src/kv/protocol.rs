//! The client protocol's limits and the checks both ends make (see the [module docs](super)).

use super::payload::{MAX_KEY, MAX_VALUE};
use std::time::Duration;

/// Longest request line, in bytes: a `PUT` of a key of [`MAX_KEY`] and a value of
/// [`MAX_VALUE`], or a `TX` of the largest signed transaction in hex.
pub const MAX_LINE: usize = {
    let put = MAX_KEY + MAX_VALUE + 16;
    let tx = 2 * super::auth::MAX_SIGNED_TX + 16;
    if put > tx {
        put
    } else {
        tx
    }
};

/// Longest `WAIT` the node serves; a longer one is cut to this.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// `Err` naming the rule a key breaks: 1 to [`MAX_KEY`] bytes, no whitespace (the protocol
/// splits on it).
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("empty key: a key is 1 to 256 bytes".into());
    }
    if key.len() > MAX_KEY {
        return Err(format!("key of {} bytes is over the limit of {MAX_KEY} bytes", key.len()));
    }
    if key.contains(char::is_whitespace) {
        return Err("a key cannot contain whitespace".into());
    }
    Ok(())
}

/// `Err` naming the rule a value breaks: at most [`MAX_VALUE`] bytes, no line break (a request
/// is one line). Spaces and the empty value are fine.
pub fn check_value(value: &str) -> Result<(), String> {
    if value.len() > MAX_VALUE {
        return Err(format!("value of {} bytes is over the limit of {MAX_VALUE} bytes", value.len()));
    }
    if value.contains(['\n', '\r']) {
        return Err("a value cannot contain a line break (\\n or \\r)".into());
    }
    Ok(())
}

/// Parses 64 hex characters (a transaction id).
pub fn parse_id(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut id = [0u8; 32];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(id)
}
