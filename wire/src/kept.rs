//! Started attempts' handles as the table keeps them: the attempts one transition started, together
//! in one item, as a `KeptStarts` deflated ([`crate::deflated`]: their handles and check messages
//! repeat most of their text, so sixteen starts of a map fit one write unit).

use updraft_proto::Message;
use updraft_proto::updraft::KeptStarts;

use crate::WireError;
use crate::deflated::{deflate, inflate};

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
    use crate::deflated::MAX_INFLATED;
    use std::io::Write;
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
