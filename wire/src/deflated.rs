//! Table attributes kept deflated (an item is billed by its size): started attempts' handles
//! ([`crate::kept`]) and node records' slots (the store's `zstate`), inflated within a bound.

use std::io::{Read, Write};

use crate::WireError;

/// The most bytes deflated table attributes (kept starts, node records) inflate to: far above what
/// an item (400 KB) holds of real ones, and a bound on what bytes that inflate without end can take.
pub const MAX_INFLATED: u64 = 16 * 1024 * 1024;

/// `raw` deflated.
pub fn deflate(raw: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing into a Vec cannot fail.
    let _ = z.write_all(raw);
    z.finish().unwrap_or_default()
}

/// What `packed` ([`deflate`]'s bytes) inflates to, or why it does not (`what` names it).
pub fn inflate(packed: &[u8], what: &str) -> Result<Vec<u8>, WireError> {
    let mut raw = Vec::new();
    flate2::read::DeflateDecoder::new(packed)
        .take(MAX_INFLATED + 1)
        .read_to_end(&mut raw)
        .map_err(|e| WireError(format!("{what}: not deflated: {e}")))?;
    if raw.len() as u64 > MAX_INFLATED {
        return Err(WireError(format!(
            "{what}: inflates to more than {MAX_INFLATED} bytes"
        )));
    }
    Ok(raw)
}
