//! What reaches the serverless runtime from outside never panics its parsers: transitions-queue bodies
//! (and the check handles they carry), launch-queue bodies (S3 event notifications and requests),
//! events-queue bodies (EventBridge events) and the files a task leaves (`outputs.pb`, `error.pb`,
//! `futures.pb`), and node records (a wide array's in parts) and started attempts' handles as the
//! table stores them. A transitions
//! body that decodes encodes back to the same message. The first byte chooses what the rest is.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use updraft_connector::Handle;
use updraft_engine::exec::outcome::{OutputFiles, from_output_files};
use updraft_proto::updraft::QueueMessage;
use updraft_proto::updraft::queue_message::Kind;
use updraft_wire::{events, launch, queue, request};

/// A transitions body: decodes and encodes back the same; a check's handle parses or is refused.
fn transitions_body(body: &str) {
    let Ok(m) = queue::decode(body) else {
        return;
    };
    let again: QueueMessage = queue::decode(&queue::encode(&m)).expect("an encoded message decodes");
    assert_eq!(again, m);
    if let Some(Kind::Check(c)) = &m.kind {
        let _ = serde_json::from_str::<Handle>(&c.handle);
    }
}

/// A node record as the table stores it, in parts: `raw` split joins back to the same record
/// (always, when its array's size is its elements' count), and `raw` cut into parts at `|` bytes
/// (each numbered by its first byte) joins or is refused.
fn stored_parts(raw: &[u8]) {
    use std::collections::BTreeMap;
    use updraft_proto::Message;
    use updraft_proto::updraft::NodeState;
    use updraft_wire::parts;
    let split = parts::split(raw);
    let whole = split.len() == 1;
    let joined = parts::join(1, split.into_iter().collect::<BTreeMap<_, _>>());
    match (joined, NodeState::decode(raw)) {
        (Ok(j), _) if whole => assert_eq!(j, raw),
        (Ok(j), Ok(rec)) => assert_eq!(NodeState::decode(j.as_slice()).ok(), Some(rec)),
        (Err(e), Ok(rec)) => {
            let a = rec.array.unwrap_or_default();
            assert!(
                !whole && a.size as usize != a.elements.len(),
                "a record split did not join back: {e}"
            );
        }
        (j, Err(_)) => assert!(whole && j.is_ok(), "bytes that are no record were split"),
    }
    let stored: BTreeMap<u32, Vec<u8>> = raw
        .split(|&b| b == b'|')
        .filter_map(|p| p.split_first().map(|(&n, bytes)| (u32::from(n % 8), bytes.to_vec())))
        .collect();
    let _ = parts::join(1, stored);
}

/// Started attempts' handles as the table keeps them: any bytes unpack or are refused, and what
/// unpacks packs back to starts that unpack the same.
fn kept_starts(packed: &[u8]) {
    use updraft_wire::kept;
    if let Ok(starts) = kept::unpack(packed) {
        assert_eq!(kept::unpack(&kept::pack(&starts)).ok(), Some(starts));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match which % 8 {
        0 => transitions_body(&text),
        // Any bytes as the protobuf inside a well-formed body.
        1 => transitions_body(&base64::engine::general_purpose::STANDARD.encode(rest)),
        2 => {
            if let Ok(found) = launch::requests_in(&text, "m") {
                for (_, req) in found {
                    if let Some(name) = req.and_then(|r| r.name) {
                        let _ = request::valid_name(&name);
                    }
                }
            }
            let _ = launch::url_decode(&text);
            let _ = request::made_up_name(&text);
        }
        3 => {
            if let Ok(e) = events::event_of(&text, "m") {
                let _ = events::state_of(&e);
            }
        }
        6 => stored_parts(rest),
        7 => kept_starts(rest),
        n => {
            // The files a task leaves: `rest` as each of them.
            let file = Some(rest.to_vec());
            let files = match n {
                4 => OutputFiles {
                    outputs: file,
                    ..Default::default()
                },
                _ => OutputFiles {
                    error: file.clone(),
                    futures: file,
                    ..Default::default()
                },
            };
            let _ = from_output_files(&files);
        }
    }
});
