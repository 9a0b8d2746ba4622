//! Deflated table attributes: started attempts' handles as the table keeps them — the attempts one
//! transition started, together in one item, as a `KeptStarts` deflated (their handles and check
//! messages repeat most of their text, so sixteen starts of a map fit one write unit) — and node
//! records' slots, deflated when that makes them smaller (the store's `zstate`).

use std::io::{Read, Write};

use updraft_proto::Message;
use updraft_proto::updraft::KeptStarts;

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

/// `starts` as an item keeps them.
pub fn pack(starts: &KeptStarts) -> Vec<u8> {
    deflate(&starts.encode_to_vec())
}

/// The starts an item keeps ([`pack`]'s bytes), or why `packed` is not such.
pub fn unpack(packed: &[u8]) -> Result<KeptStarts, WireError> {
    let raw = inflate(packed, "kept starts")?;
    KeptStarts::decode(raw.as_slice())
        .map_err(|e| WireError(format!("kept starts: not a KeptStarts: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use updraft_proto::updraft::KeptStart;

    #[test]
    fn kept_starts_unpack_to_what_was_packed_and_other_bytes_are_refused() {
        let starts = KeptStarts {
            starts: vec![
                KeptStart {
                    name: "wf-n0-0".into(),
                    handle: r#"{"connector":"eks","value":{}}"#.into(),
                    check: vec![1, 2, 3],
                    node: 0,
                    index: Some(3),
                    attempt: 1,
                },
                KeptStart::default(),
            ],
        };
        assert_eq!(unpack(&pack(&starts)).unwrap(), starts);
        assert!(unpack(b"not deflated").is_err());
        // Deflated, but no KeptStarts.
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(&[0xff; 8]).unwrap();
        assert!(unpack(&z.finish().unwrap()).is_err());
        // Bytes that inflate past the bound.
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&vec![0u8; MAX_INFLATED as usize + 1]).unwrap();
        let bomb = z.finish().unwrap();
        assert!(unpack(&bomb).unwrap_err().0.contains("more than"));
    }
}
