//! A schema-aware canonical form of protobuf bytes.
//!
//! Encoders may write fields in different orders (prost writes a oneof at its lowest tag, Python at the
//! set field's number) and maps in any order. The canonical form sorts fields by number (stable, so
//! repeated fields keep their order) and map entries by their bytes, recursively through every message
//! field the schema declares. Two encodings of the same message have the same canonical form; a dropped,
//! added or changed field changes it. Fields unknown to the schema are kept verbatim.

use std::collections::HashMap;

use prost::Message;
use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FileDescriptorSet};

/// Why bytes could not be put in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CanonicalError {
    /// The bytes are not a well-formed protobuf encoding.
    Malformed(String),
    /// The message type is not in the descriptor set.
    UnknownType(String),
}

impl std::fmt::Display for CanonicalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "malformed protobuf: {why}"),
            Self::UnknownType(t) => write!(f, "unknown message type {t}"),
        }
    }
}

impl std::error::Error for CanonicalError {}

#[derive(Debug, Clone)]
struct FieldInfo {
    /// Full name (with leading dot) of the message type, for message fields.
    message: Option<String>,
    /// The field is a map (entries sorted).
    map: bool,
}

/// Puts protobuf bytes of any message in this crate's schema into canonical form.
#[derive(Debug, Clone)]
pub struct Canonicalizer {
    messages: HashMap<String, HashMap<u32, FieldInfo>>,
}

impl Canonicalizer {
    /// Builds the canonicalizer from this crate's descriptor set.
    pub fn new() -> Self {
        let set = FileDescriptorSet::decode(crate::DESCRIPTOR_SET)
            .unwrap_or_else(|_| FileDescriptorSet { file: Vec::new() });
        let mut c = Self {
            messages: HashMap::new(),
        };
        for file in &set.file {
            let prefix = format!(".{}", file.package());
            for m in &file.message_type {
                c.add(&prefix, m);
            }
        }
        c
    }

    fn add(&mut self, prefix: &str, m: &DescriptorProto) {
        let name = format!("{prefix}.{}", m.name());
        let map_entries: Vec<String> = m
            .nested_type
            .iter()
            .filter(|n| n.options.as_ref().is_some_and(|o| o.map_entry()))
            .map(|n| format!("{name}.{}", n.name()))
            .collect();
        let mut fields = HashMap::new();
        for f in &m.field {
            let is_msg = f.r#type() == Type::Message;
            let type_name = f.type_name().to_string();
            fields.insert(
                f.number() as u32,
                FieldInfo {
                    map: is_msg && map_entries.contains(&type_name),
                    message: is_msg.then_some(type_name),
                },
            );
        }
        for n in &m.nested_type {
            self.add(&name, n);
        }
        self.messages.insert(name, fields);
    }

    /// The canonical form of `bytes`, an encoding of message `type_name` (e.g. `flyteidl.core.Literal`).
    pub fn canonical(&self, type_name: &str, bytes: &[u8]) -> Result<Vec<u8>, CanonicalError> {
        let full = if type_name.starts_with('.') {
            type_name.to_string()
        } else {
            format!(".{type_name}")
        };
        self.canon(&full, bytes, 0)
    }

    fn canon(&self, type_name: &str, bytes: &[u8], depth: u32) -> Result<Vec<u8>, CanonicalError> {
        if depth > 100 {
            return Err(CanonicalError::Malformed("nesting deeper than 100".into()));
        }
        let fields = self
            .messages
            .get(type_name)
            .ok_or_else(|| CanonicalError::UnknownType(type_name.to_string()))?;
        let mut out: Vec<(u32, Vec<u8>)> = Vec::new();
        let mut maps: HashMap<u32, Vec<Vec<u8>>> = HashMap::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let key = read_varint(&mut rest)?;
            let number = (key >> 3) as u32;
            let wire = (key & 7) as u8;
            let mut encoded = Vec::new();
            encode_varint(key, &mut encoded);
            match wire {
                0 => encode_varint(read_varint(&mut rest)?, &mut encoded),
                1 => encoded.extend_from_slice(take(&mut rest, 8)?),
                5 => encoded.extend_from_slice(take(&mut rest, 4)?),
                2 => {
                    let len = usize::try_from(read_varint(&mut rest)?)
                        .map_err(|_| CanonicalError::Malformed("length overflow".into()))?;
                    let payload = take(&mut rest, len)?;
                    let info = fields.get(&number);
                    let body = match info.and_then(|i| i.message.as_deref()) {
                        Some(msg) => self.canon(msg, payload, depth + 1)?,
                        None => payload.to_vec(),
                    };
                    encode_varint(body.len() as u64, &mut encoded);
                    encoded.extend_from_slice(&body);
                    if info.is_some_and(|i| i.map) {
                        maps.entry(number).or_default().push(encoded);
                        continue;
                    }
                }
                w => return Err(CanonicalError::Malformed(format!("wire type {w}"))),
            }
            out.push((number, encoded));
        }
        for (number, mut entries) in maps {
            entries.sort();
            out.extend(entries.into_iter().map(|e| (number, e)));
        }
        out.sort_by_key(|(n, _)| *n);
        Ok(out.into_iter().flat_map(|(_, b)| b).collect())
    }
}

impl Default for Canonicalizer {
    fn default() -> Self {
        Self::new()
    }
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], CanonicalError> {
    if rest.len() < n {
        return Err(CanonicalError::Malformed("truncated".into()));
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

fn read_varint(rest: &mut &[u8]) -> Result<u64, CanonicalError> {
    let mut value = 0u64;
    for shift in (0..70).step_by(7) {
        let (&byte, tail) = rest
            .split_first()
            .ok_or_else(|| CanonicalError::Malformed("truncated varint".into()))?;
        *rest = tail;
        if shift == 63 && byte > 1 {
            return Err(CanonicalError::Malformed("varint overflow".into()));
        }
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(CanonicalError::Malformed("varint too long".into()))
}

fn encode_varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Literal, LiteralMap, Primitive, Scalar, literal, primitive, scalar};

    fn int(i: i64) -> Literal {
        Literal {
            value: Some(literal::Value::Scalar(Box::new(Scalar {
                value: Some(scalar::Value::Primitive(Primitive {
                    value: Some(primitive::Value::Integer(i)),
                })),
            }))),
            ..Default::default()
        }
    }

    #[test]
    fn map_order_does_not_matter_but_values_do() {
        let c = Canonicalizer::new();
        let m = LiteralMap {
            literals: [("a".to_string(), int(1)), ("b".to_string(), int(2))].into(),
        };
        let bytes = m.encode_to_vec();
        // Swap the two entries by hand: entry bytes are each `0a <len> …`.
        let first_len = bytes[1] as usize + 2;
        let swapped = [&bytes[first_len..], &bytes[..first_len]].concat();
        assert_ne!(bytes, swapped);
        assert_eq!(
            c.canonical("flyteidl.core.LiteralMap", &bytes).unwrap(),
            c.canonical("flyteidl.core.LiteralMap", &swapped).unwrap()
        );
        let other = LiteralMap {
            literals: [("a".to_string(), int(1)), ("b".to_string(), int(3))].into(),
        };
        assert_ne!(
            c.canonical("flyteidl.core.LiteralMap", &bytes).unwrap(),
            c.canonical("flyteidl.core.LiteralMap", &other.encode_to_vec())
                .unwrap()
        );
    }

    #[test]
    fn malformed_and_unknown_are_errors() {
        let c = Canonicalizer::new();
        assert!(matches!(
            c.canonical("flyteidl.core.LiteralMap", &[0x0a, 0x05, 0x01]),
            Err(CanonicalError::Malformed(_))
        ));
        assert!(matches!(
            c.canonical("no.Such", &[]),
            Err(CanonicalError::UnknownType(_))
        ));
    }
}
