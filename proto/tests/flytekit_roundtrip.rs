//! Every entity in every flytekit fixture decodes with these protos and re-encodes with no field lost.
//!
//! prost writes fields in a different order than Python's protobuf (a oneof at its lowest tag; maps in
//! key order), so bytes are compared in canonical form (fields by number, map entries sorted), and the
//! encoded lengths must match exactly: a field these protos lack would be dropped on decode and change both.

#![allow(clippy::unwrap_used)]

use std::io::Read;

use updraft_proto::Message;
use updraft_proto::admin::{LaunchPlan, TaskSpec, WorkflowSpec};
use updraft_proto::canonical::Canonicalizer;

fn entries() -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/flytekit");
    let mut out = Vec::new();
    for f in std::fs::read_dir(&dir).unwrap() {
        let path = f.unwrap().path();
        if path.extension().is_none_or(|e| e != "tgz") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            if !name.ends_with(".pb") {
                continue;
            }
            let mut buf = Vec::new();
            e.read_to_end(&mut buf).unwrap();
            out.push((
                format!("{}!{name}", path.file_name().unwrap().to_string_lossy()),
                buf,
            ));
        }
    }
    out
}

fn roundtrip<M: Message + Default>(c: &Canonicalizer, type_name: &str, name: &str, bytes: &[u8]) {
    let msg = M::decode(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    let again = msg.encode_to_vec();
    assert_eq!(
        again.len(),
        bytes.len(),
        "{name}: re-encoded length differs (a field was dropped)"
    );
    let a = c.canonical(type_name, bytes).unwrap();
    let b = c.canonical(type_name, &again).unwrap();
    assert!(a == b, "{name}: re-encoded bytes differ in canonical form");
}

#[test]
fn every_fixture_entity_round_trips() {
    let c = Canonicalizer::new();
    let all = entries();
    assert!(all.len() > 60, "only {} entries found", all.len());
    for (name, bytes) in &all {
        match name.rsplit_once('_').map(|(_, k)| k) {
            Some("1.pb") => roundtrip::<TaskSpec>(&c, "flyteidl.admin.TaskSpec", name, bytes),
            Some("2.pb") => {
                roundtrip::<WorkflowSpec>(&c, "flyteidl.admin.WorkflowSpec", name, bytes)
            }
            Some("3.pb") => roundtrip::<LaunchPlan>(&c, "flyteidl.admin.LaunchPlan", name, bytes),
            _ => panic!("{name}: unexpected entry"),
        }
    }
}

#[test]
fn a_dropped_field_is_detected() {
    // Append an unknown field (number 1000, varint 1) to a real entity: decoding drops it, and the
    // comparison must notice.
    let c = Canonicalizer::new();
    let (name, bytes) = entries()
        .into_iter()
        .find(|(n, _)| n.ends_with("_1.pb"))
        .unwrap();
    let mut extended = bytes.clone();
    extended.extend_from_slice(&[0xc0, 0x3e, 0x01]);
    let msg = TaskSpec::decode(&extended[..]).unwrap();
    let again = msg.encode_to_vec();
    assert_ne!(again.len(), extended.len(), "{name}");
    assert_ne!(
        c.canonical("flyteidl.admin.TaskSpec", &extended).unwrap(),
        c.canonical("flyteidl.admin.TaskSpec", &again).unwrap()
    );
}
