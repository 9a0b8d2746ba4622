//! A node record as stored parts: a wide array's record is split so a transition rewrites only what
//! changed — part 0 the node's progress (phase, counts, errors), part 1 its inputs (the node's and the
//! array's shared ones, written once), and from part 2 on its elements' attempts, [`ARRAY_CHUNK`] a
//! part. Any other record is one part, 0. A map of 100,000 elements whose transition starts a hundred
//! of them writes two or three small parts instead of its whole multi-megabyte record. A part stored
//! empty is no part (a runtime empties a part that a transition which never committed left behind).

use std::collections::BTreeMap;

use updraft_proto::Message;
use updraft_proto::updraft::{ArrayProgress, NodeState};

use crate::WireError;

/// Elements a part of an array's record holds; arrays with no more than this are not split.
/// Small parts keep a write cheap: a stored part's item holds two versions of it (its outputs and
/// attempt histories, once its elements ended), and DynamoDB bills a write unit per KB of the item.
/// (Measured on a map of 1,000 pods: 1.02 write units a pod for the parts at 16, 1.4 at 64.)
pub const ARRAY_CHUNK: usize = 16;

/// The first part that holds elements.
const FIRST_CHUNK: u32 = 2;

/// The parts of encoded node record `raw`, by part number (a record that cannot be decoded, or is not
/// a wide array's, is its own part 0).
pub fn split(raw: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let Ok(mut rec) = NodeState::decode(raw) else {
        return vec![(0, raw.to_vec())];
    };
    let Some(array) = rec.array.as_mut() else {
        return vec![(0, raw.to_vec())];
    };
    if array.elements.len() <= ARRAY_CHUNK {
        return vec![(0, raw.to_vec())];
    }
    let elements = std::mem::take(&mut array.elements);
    let shared = array.shared_inputs.take();
    let inputs = NodeState {
        index: rec.index,
        inputs: rec.inputs.take(),
        array: Some(ArrayProgress {
            shared_inputs: shared,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut out = vec![(0, rec.encode_to_vec()), (1, inputs.encode_to_vec())];
    for (k, chunk) in elements.chunks(ARRAY_CHUNK).enumerate() {
        let part = NodeState {
            index: rec.index,
            array: Some(ArrayProgress {
                elements: chunk.to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        };
        out.push((FIRST_CHUNK + k as u32, part.encode_to_vec()));
    }
    out
}

/// Node record `index` whole again from its stored `parts` (by part number); a record of one part
/// is that part as it is.
pub fn join(index: u32, mut parts: BTreeMap<u32, Vec<u8>>) -> Result<Vec<u8>, WireError> {
    let Some(head) = parts.remove(&0) else {
        return Err(WireError(format!(
            "node record {index}: parts {:?} without their first",
            parts.keys().collect::<Vec<_>>()
        )));
    };
    if parts.is_empty() {
        return Ok(head);
    }
    let bad = |what: &str| WireError(format!("node record {index}: {what}"));
    let decode = |bytes: &[u8], part: u32| {
        NodeState::decode(bytes).map_err(|e| bad(&format!("part {part}: {e}")))
    };
    let mut rec = decode(&head, 0)?;
    let inputs = parts
        .remove(&1)
        .ok_or_else(|| bad("the part of its inputs is missing"))?;
    let inputs = decode(&inputs, 1)?;
    let size = {
        let array = rec
            .array
            .as_mut()
            .ok_or_else(|| bad("stored in parts, but not an array's"))?;
        array.shared_inputs = inputs.array.and_then(|a| a.shared_inputs);
        array.size as usize
    };
    rec.inputs = inputs.inputs;
    // (the stored size is not trusted with an allocation: at most what the parts can hold)
    let mut elements = Vec::with_capacity(size.min(parts.len() * ARRAY_CHUNK));
    for (n, (part, bytes)) in parts.into_iter().enumerate() {
        // Parts past the array's last element are what a layout of larger parts (an earlier
        // version's) left behind: every element is read already.
        if elements.len() == size && n > 0 {
            break;
        }
        if part != FIRST_CHUNK + n as u32 {
            return Err(bad(&format!("part {} is missing", FIRST_CHUNK + n as u32)));
        }
        elements.extend(decode(&bytes, part)?.array.unwrap_or_default().elements);
    }
    if elements.len() != size {
        return Err(bad(&format!(
            "{} elements stored, the array has {size}",
            elements.len()
        )));
    }
    if let Some(a) = rec.array.as_mut() {
        a.elements = elements;
    }
    Ok(rec.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use updraft_proto::core::LiteralMap;
    use updraft_proto::updraft::AttemptsState;

    fn record(elements: usize) -> NodeState {
        NodeState {
            index: 7,
            id: "squares".into(),
            phase: 3,
            inputs: Some(LiteralMap::default()),
            array: Some(ArrayProgress {
                size: elements as u32,
                next: 5,
                running: 2,
                elements: (0..elements)
                    .map(|i| AttemptsState {
                        attempt: i as u32,
                        ..Default::default()
                    })
                    .collect(),
                shared_inputs: Some(LiteralMap::default()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_wide_arrays_record_splits_into_parts_that_join_back() {
        let raw = record(200).encode_to_vec();
        let parts = split(&raw);
        // progress, inputs, and 200 elements 16 a part: 12 parts of 16 and one of 8
        assert_eq!(
            parts.iter().map(|p| p.0).collect::<Vec<_>>(),
            (0..15).collect::<Vec<_>>()
        );
        assert_eq!(parts.len(), 2 + 200usize.div_ceil(ARRAY_CHUNK));
        let joined = join(7, parts.into_iter().collect()).unwrap();
        assert_eq!(NodeState::decode(joined.as_slice()).unwrap(), record(200));
    }

    #[test]
    fn an_element_changes_one_part() {
        let before = split(&record(200).encode_to_vec());
        let mut rec = record(200);
        rec.array.as_mut().unwrap().elements[70].attempt = 99;
        rec.array.as_mut().unwrap().running = 3;
        let after = split(&rec.encode_to_vec());
        let changed: Vec<u32> = before
            .iter()
            .zip(&after)
            .filter(|(a, b)| a != b)
            .map(|(a, _)| a.0)
            .collect();
        assert_eq!(changed, [0, FIRST_CHUNK + (70 / ARRAY_CHUNK) as u32]);
    }

    #[test]
    fn other_records_are_one_part() {
        for rec in [record(ARRAY_CHUNK), NodeState::default()] {
            let raw = rec.encode_to_vec();
            assert_eq!(split(&raw), vec![(0, raw.clone())]);
            assert_eq!(join(0, [(0, raw.clone())].into()).unwrap(), raw);
        }
        assert_eq!(split(b"\xff\xff"), vec![(0, b"\xff\xff".to_vec())]);
    }

    #[test]
    fn a_stored_size_past_the_parts_is_refused_without_allocating_it() {
        let mut rec = record(200);
        rec.array.as_mut().unwrap().size = u32::MAX;
        let parts: BTreeMap<u32, Vec<u8>> = split(&rec.encode_to_vec()).into_iter().collect();
        let err = join(7, parts).unwrap_err().to_string();
        assert!(err.contains("200 elements stored"), "{err}");
    }

    #[test]
    fn parts_past_the_last_element_are_left_unread() {
        // As a layout of smaller parts leaves them behind once one of larger parts is written.
        let mut parts: BTreeMap<u32, Vec<u8>> =
            split(&record(200).encode_to_vec()).into_iter().collect();
        let stray = parts[&2].clone();
        let last = *parts.keys().last().unwrap();
        parts.insert(last + 1, stray.clone());
        parts.insert(last + 4, stray);
        let joined = join(7, parts).unwrap();
        assert_eq!(NodeState::decode(joined.as_slice()).unwrap(), record(200));
    }

    #[test]
    fn missing_or_stray_parts_are_errors() {
        let mut parts: BTreeMap<u32, Vec<u8>> =
            split(&record(200).encode_to_vec()).into_iter().collect();
        parts.remove(&3);
        assert!(
            join(7, parts.clone())
                .unwrap_err()
                .to_string()
                .contains("part 3 is missing")
        );
        parts.remove(&0);
        assert!(
            join(7, parts)
                .unwrap_err()
                .to_string()
                .contains("without their first")
        );
        let mut parts: BTreeMap<u32, Vec<u8>> =
            split(&record(200).encode_to_vec()).into_iter().collect();
        let last = *parts.keys().last().unwrap();
        parts.remove(&last);
        assert!(
            join(7, parts)
                .unwrap_err()
                .to_string()
                .contains("192 elements stored")
        );
    }
}
