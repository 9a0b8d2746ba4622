//! Typed values from JSON/YAML (workflow defaults, `--input k=v`, `--inputs file.json`) to literals.
//!
//! Conversion is directed by the target type, producing what flytekit produces: Optional/union values
//! wrapped in `Scalar.union`, files and directories as blobs, dicts and dataclasses (`struct`) as msgpack
//! binaries, datetimes as RFC 3339 timestamps and durations as `1h30m`-style strings or seconds.

use prost_types::{Duration, Timestamp};
use serde_json::Value;
use updraft_proto::core::{
    Binary, Blob, BlobMetadata, Literal, LiteralCollection, LiteralMap, LiteralType, Primitive,
    Scalar, SimpleType, Union, Void, literal, literal_type::Type, primitive, scalar,
};

use crate::types::{self, MAX_TYPE_DEPTH};

/// Converts `v` to a literal of type `t`; the error says what was expected and what was given.
pub fn from_json(v: &Value, t: &LiteralType) -> Result<Literal, String> {
    convert(v, t, 0)
}

fn scalar_lit(value: scalar::Value) -> Literal {
    Literal {
        value: Some(literal::Value::Scalar(Box::new(Scalar {
            value: Some(value),
        }))),
        ..Default::default()
    }
}

/// A primitive literal.
pub fn primitive_lit(p: primitive::Value) -> Literal {
    scalar_lit(scalar::Value::Primitive(Primitive { value: Some(p) }))
}

/// The none literal.
pub fn none_lit() -> Literal {
    scalar_lit(scalar::Value::NoneType(Void {}))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn convert(v: &Value, t: &LiteralType, depth: usize) -> Result<Literal, String> {
    if depth > MAX_TYPE_DEPTH {
        return Err("value nested too deeply".into());
    }
    let want = || format!("expected {}, got {}", types::display(t), kind(v));
    match &t.r#type {
        None => Err("the target type is unset".into()),
        Some(Type::UnionType(u)) => {
            let mut errors = Vec::new();
            for variant in &u.variants {
                match convert(v, variant, depth + 1) {
                    Ok(inner) => {
                        return Ok(scalar_lit(scalar::Value::Union(Box::new(Union {
                            value: Some(Box::new(inner)),
                            r#type: Some(variant.clone()),
                        }))));
                    }
                    Err(e) => errors.push(e),
                }
            }
            Err(format!("{} ({})", want(), errors.join("; ")))
        }
        Some(Type::Simple(s)) => {
            let s = SimpleType::try_from(*s).map_err(|_| "unknown simple type".to_string())?;
            simple(v, s).ok_or_else(want)?
        }
        Some(Type::CollectionType(el)) => match v {
            Value::Array(items) => {
                let literals = items
                    .iter()
                    .enumerate()
                    .map(|(i, x)| convert(x, el, depth + 1).map_err(|e| format!("[{i}]: {e}")))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Literal {
                    value: Some(literal::Value::Collection(LiteralCollection { literals })),
                    ..Default::default()
                })
            }
            _ => Err(want()),
        },
        Some(Type::MapValueType(el)) => match v {
            Value::Object(items) => {
                let mut literals = std::collections::BTreeMap::new();
                for (k, x) in items {
                    literals.insert(
                        k.clone(),
                        convert(x, el, depth + 1).map_err(|e| format!("{k}: {e}"))?,
                    );
                }
                Ok(Literal {
                    value: Some(literal::Value::Map(LiteralMap { literals })),
                    ..Default::default()
                })
            }
            _ => Err(want()),
        },
        Some(Type::Blob(b)) => match v {
            Value::String(uri) if !uri.is_empty() => Ok(scalar_lit(scalar::Value::Blob(Blob {
                metadata: Some(BlobMetadata {
                    r#type: Some(b.clone()),
                }),
                uri: uri.clone(),
            }))),
            _ => Err(format!("{} (give its URI or path)", want())),
        },
        Some(Type::EnumType(e)) => match v {
            Value::String(s) if e.values.contains(s) => {
                Ok(primitive_lit(primitive::Value::StringValue(s.clone())))
            }
            _ => Err(format!(
                "expected one of [{}], got {v}",
                e.values.join(", ")
            )),
        },
        Some(Type::Schema(st)) => match v {
            Value::String(uri) => Ok(scalar_lit(scalar::Value::Schema(
                updraft_proto::core::Schema {
                    uri: uri.clone(),
                    r#type: Some(st.clone()),
                },
            ))),
            _ => Err(want()),
        },
        Some(Type::StructuredDatasetType(sd)) => match v {
            Value::String(uri) => Ok(scalar_lit(scalar::Value::StructuredDataset(
                updraft_proto::core::StructuredDataset {
                    uri: uri.clone(),
                    metadata: Some(updraft_proto::core::StructuredDatasetMetadata {
                        structured_dataset_type: Some(sd.clone()),
                    }),
                },
            ))),
            _ => Err(want()),
        },
    }
}

fn simple(v: &Value, s: SimpleType) -> Option<Result<Literal, String>> {
    use primitive::Value as P;
    Some(Ok(match (s, v) {
        (SimpleType::None, Value::Null) => none_lit(),
        (SimpleType::Integer, Value::Number(n)) => primitive_lit(P::Integer(n.as_i64()?)),
        (SimpleType::Integer, Value::String(s)) => {
            primitive_lit(P::Integer(s.trim().parse().ok()?))
        }
        (SimpleType::Float, Value::Number(n)) => primitive_lit(P::FloatValue(n.as_f64()?)),
        (SimpleType::Float, Value::String(s)) => {
            primitive_lit(P::FloatValue(s.trim().parse().ok()?))
        }
        (SimpleType::String, Value::String(s)) => primitive_lit(P::StringValue(s.clone())),
        (SimpleType::String, Value::Number(n)) => primitive_lit(P::StringValue(n.to_string())),
        (SimpleType::String, Value::Bool(b)) => primitive_lit(P::StringValue(b.to_string())),
        (SimpleType::Boolean, Value::Bool(b)) => primitive_lit(P::Boolean(*b)),
        (SimpleType::Boolean, Value::String(s)) => {
            primitive_lit(P::Boolean(match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => true,
                "false" | "no" | "0" => false,
                _ => return None,
            }))
        }
        (SimpleType::Datetime, Value::String(s)) => match parse_datetime(s) {
            Ok(ts) => primitive_lit(P::Datetime(ts)),
            Err(e) => return Some(Err(e)),
        },
        (SimpleType::Duration, Value::String(s)) => match parse_duration(s) {
            Ok(d) => primitive_lit(P::Duration(d)),
            Err(e) => return Some(Err(e)),
        },
        (SimpleType::Duration, Value::Number(n)) => {
            let secs = n.as_f64()?;
            if !secs.is_finite() || secs.abs() > 1e15 {
                return None;
            }
            primitive_lit(P::Duration(Duration {
                seconds: secs.trunc() as i64,
                nanos: ((secs.fract()) * 1e9) as i32,
            }))
        }
        (SimpleType::Struct, Value::Object(_) | Value::Array(_)) => {
            scalar_lit(scalar::Value::Binary(Binary {
                value: msgpack(v),
                tag: "msgpack".into(),
            }))
        }
        _ => return None,
    }))
}

/// Parses an RFC 3339 timestamp (`2024-01-02T03:04:05Z`, offsets and fractions allowed; a bare date
/// means midnight UTC).
pub fn parse_datetime(text: &str) -> Result<Timestamp, String> {
    let bad = || format!("`{text}` is not an RFC 3339 datetime (like 2024-01-02T03:04:05Z)");
    let s = text.trim();
    let (date, time) = match s.find(['T', 't', ' ']) {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, "00:00:00Z"),
    };
    let d: Vec<&str> = date.split('-').collect();
    if d.len() != 3 {
        return Err(bad());
    }
    let (y, mo, da): (i64, i64, i64) = (
        d[0].parse().map_err(|_| bad())?,
        d[1].parse().map_err(|_| bad())?,
        d[2].parse().map_err(|_| bad())?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || !(1..=9999).contains(&y) {
        return Err(bad());
    }
    let (clock, offset) = if let Some(c) = time.strip_suffix(['Z', 'z']) {
        (c, 0i64)
    } else if let Some(i) = time.rfind(['+', '-']) {
        let (c, off) = time.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let hm: Vec<&str> = off[1..].split(':').collect();
        let h: i64 = hm.first().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
        let m: i64 = hm
            .get(1)
            .map_or(Some(0), |x| x.parse().ok())
            .ok_or_else(bad)?;
        (c, sign * (h * 3600 + m * 60))
    } else {
        (time, 0)
    };
    let parts: Vec<&str> = clock.split(':').collect();
    if parts.len() < 2 || parts.len() > 3 {
        return Err(bad());
    }
    let h: i64 = parts[0].parse().map_err(|_| bad())?;
    let mi: i64 = parts[1].parse().map_err(|_| bad())?;
    let (sec, nanos) = match parts.get(2) {
        None => (0, 0),
        Some(sf) => match sf.split_once('.') {
            None => (sf.parse::<i64>().map_err(|_| bad())?, 0),
            Some((a, f)) => {
                let frac: String = f.chars().chain(std::iter::repeat('0')).take(9).collect();
                (
                    a.parse().map_err(|_| bad())?,
                    frac.parse::<i32>().map_err(|_| bad())?,
                )
            }
        },
    };
    if h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    let days = days_from_civil(y, mo, da);
    Ok(Timestamp {
        seconds: days * 86_400 + h * 3600 + mi * 60 + sec - offset,
        nanos,
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses a duration: `90`, `1.5` (seconds), or units `h`, `m`, `s`, `ms`, `us`, `ns`, `d` (`1h30m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is not a duration (like 90s, 1h30m, 250ms)");
    let s = text.trim();
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs.abs() < 1e15 {
            return Ok(Duration {
                seconds: secs.trunc() as i64,
                nanos: (secs.fract() * 1e9) as i32,
            });
        }
        return Err(bad());
    }
    let mut total_nanos: i128 = 0;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let scale: f64 = match &rest[..unit_len] {
            "d" => 86_400e9,
            "h" => 3_600e9,
            "m" => 60e9,
            "s" => 1e9,
            "ms" => 1e6,
            "us" | "µs" => 1e3,
            "ns" => 1.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        let add = n * scale;
        if !add.is_finite() || add > 1e27 {
            return Err(bad());
        }
        total_nanos += add as i128;
    }
    let seconds = i64::try_from(total_nanos / 1_000_000_000).map_err(|_| bad())?;
    Ok(Duration {
        seconds,
        nanos: (total_nanos % 1_000_000_000) as i32,
    })
}

/// A protobuf duration as a std duration (negative parts count as zero).
pub fn std_duration(d: &Duration) -> std::time::Duration {
    std::time::Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32)
}

/// Encodes a JSON value as msgpack (how flytekit carries dicts and dataclasses).
pub fn msgpack(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_msgpack(v, &mut out);
    out
}

fn write_len(out: &mut Vec<u8>, len: usize, fix: u8, fix_max: usize, m16: u8, m32: u8) {
    if len <= fix_max {
        out.push(fix | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(m16);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(m32);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

fn write_msgpack(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.push(0xc0),
        Value::Bool(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push(0xd3);
                out.extend_from_slice(&i.to_be_bytes());
            } else if let Some(u) = n.as_u64() {
                out.push(0xcf);
                out.extend_from_slice(&u.to_be_bytes());
            } else {
                out.push(0xcb);
                out.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_be_bytes());
            }
        }
        Value::String(s) => {
            if s.len() <= 31 {
                out.push(0xa0 | s.len() as u8);
            } else if s.len() <= u8::MAX as usize {
                out.push(0xd9);
                out.push(s.len() as u8);
            } else {
                write_len(out, s.len(), 0xa0, 31, 0xda, 0xdb);
            }
            out.extend_from_slice(s.as_bytes());
        }
        Value::Array(a) => {
            write_len(out, a.len(), 0x90, 15, 0xdc, 0xdd);
            for x in a {
                write_msgpack(x, out);
            }
        }
        Value::Object(m) => {
            write_len(out, m.len(), 0x80, 15, 0xde, 0xdf);
            for (k, x) in m {
                write_msgpack(&Value::String(k.clone()), out);
                write_msgpack(x, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::parse;
    use serde_json::json;

    #[test]
    fn converts_by_type() {
        let lit = from_json(&json!([1, 2]), &parse("list[int]").unwrap()).unwrap();
        assert!(types::literal_fits(&lit, &parse("list[int]").unwrap()));
        let opt = from_json(&json!(null), &parse("optional[int]").unwrap()).unwrap();
        assert!(types::literal_fits(&opt, &parse("optional[int]").unwrap()));
        let f = from_json(&json!("s3://b/k.csv"), &parse("file[csv]").unwrap()).unwrap();
        assert!(types::literal_fits(&f, &parse("file").unwrap()));
        assert!(
            from_json(&json!("x"), &parse("int").unwrap())
                .unwrap_err()
                .contains("expected int, got a string")
        );
        assert!(
            from_json(&json!({"a": "x"}), &parse("dict[str, int]").unwrap())
                .unwrap_err()
                .starts_with("a: ")
        );
    }

    #[test]
    fn datetimes_and_durations() {
        assert_eq!(
            parse_datetime("1970-01-02T00:00:01Z").unwrap().seconds,
            86_401
        );
        assert_eq!(
            parse_datetime("2024-01-02T03:04:05+01:00").unwrap().seconds,
            1_704_164_645 - 3600
        );
        assert_eq!(parse_datetime("2024-01-02").unwrap().seconds, 1_704_153_600);
        assert!(parse_datetime("2024-13-02").is_err());
        assert_eq!(parse_duration("1h30m").unwrap().seconds, 5400);
        assert_eq!(parse_duration("250ms").unwrap().nanos, 250_000_000);
        assert_eq!(parse_duration("90").unwrap().seconds, 90);
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn msgpack_matches_the_spec() {
        assert_eq!(
            msgpack(&json!({"a": 1})),
            vec![0x81, 0xa1, b'a', 0xd3, 0, 0, 0, 0, 0, 0, 0, 1]
        );
        assert_eq!(msgpack(&json!([true, null])), vec![0x92, 0xc3, 0xc0]);
    }
}

/// A literal as JSON, for printing outputs: primitives as themselves, datetimes and durations as text,
/// blobs as their URI, lists and maps as arrays and objects, msgpack structs decoded.
pub fn to_json(l: &Literal) -> Value {
    use updraft_proto::core::scalar::Value as S;
    match &l.value {
        Some(literal::Value::Scalar(s)) => match &s.value {
            Some(S::Primitive(p)) => match &p.value {
                Some(primitive::Value::Integer(i)) => Value::from(*i),
                Some(primitive::Value::FloatValue(f)) => {
                    serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
                }
                Some(primitive::Value::StringValue(s)) => Value::from(s.clone()),
                Some(primitive::Value::Boolean(b)) => Value::from(*b),
                Some(primitive::Value::Datetime(_)) | Some(primitive::Value::Duration(_)) => {
                    Value::from(crate::template::literal_text(l))
                }
                None => Value::Null,
            },
            Some(S::Union(u)) => u.value.as_deref().map_or(Value::Null, to_json),
            Some(S::NoneType(_)) | None => Value::Null,
            Some(S::Binary(b)) if b.tag == "msgpack" => unmsgpack(&b.value).unwrap_or(Value::Null),
            Some(S::Generic(g)) => struct_json(g),
            _ => Value::from(crate::template::literal_text(l)),
        },
        Some(literal::Value::Collection(c)) => {
            Value::Array(c.literals.iter().map(to_json).collect())
        }
        Some(literal::Value::Map(m)) => Value::Object(
            m.literals
                .iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect(),
        ),
        Some(literal::Value::OffloadedMetadata(o)) => Value::from(o.uri.clone()),
        None => Value::Null,
    }
}

/// A protobuf Struct (plugin configs, pod specs) as JSON.
pub fn struct_json(s: &prost_types::Struct) -> Value {
    use prost_types::value::Kind;
    fn one(v: &prost_types::Value) -> Value {
        match &v.kind {
            Some(Kind::NullValue(_)) | None => Value::Null,
            Some(Kind::NumberValue(n)) => {
                serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number)
            }
            Some(Kind::StringValue(s)) => Value::from(s.clone()),
            Some(Kind::BoolValue(b)) => Value::from(*b),
            Some(Kind::StructValue(s)) => struct_json(s),
            Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(one).collect()),
        }
    }
    Value::Object(s.fields.iter().map(|(k, v)| (k.clone(), one(v))).collect())
}

/// Decodes msgpack (the subset JSON values need); None on anything else.
fn unmsgpack(bytes: &[u8]) -> Option<Value> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (h, t) = b.split_at(n);
        *b = t;
        Some(h)
    }
    fn uint(b: &mut &[u8], n: usize) -> Option<u64> {
        Some(
            take(b, n)?
                .iter()
                .fold(0u64, |a, x| (a << 8) | u64::from(*x)),
        )
    }
    fn read(b: &mut &[u8], depth: usize) -> Option<Value> {
        if depth > 64 {
            return None;
        }
        let t = *take(b, 1)?.first()?;
        let s = |b: &mut &[u8], n: usize| {
            take(b, n).map(|x| Value::from(String::from_utf8_lossy(x).into_owned()))
        };
        let arr = |b: &mut &[u8], n: usize| {
            (0..n)
                .map(|_| read(b, depth + 1))
                .collect::<Option<Vec<_>>>()
                .map(Value::Array)
        };
        let map = |b: &mut &[u8], n: usize| {
            let mut m = serde_json::Map::new();
            for _ in 0..n {
                let k = match read(b, depth + 1)? {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                m.insert(k, read(b, depth + 1)?);
            }
            Some(Value::Object(m))
        };
        Some(match t {
            0x00..=0x7f => Value::from(t),
            0x80..=0x8f => map(b, (t & 0x0f) as usize)?,
            0x90..=0x9f => arr(b, (t & 0x0f) as usize)?,
            0xa0..=0xbf => s(b, (t & 0x1f) as usize)?,
            0xc0 => Value::Null,
            0xc2 => Value::from(false),
            0xc3 => Value::from(true),
            0xca => Value::from(f64::from(f32::from_bits(uint(b, 4)? as u32))),
            0xcb => serde_json::Number::from_f64(f64::from_bits(uint(b, 8)?))
                .map_or(Value::Null, Value::Number),
            0xcc => Value::from(uint(b, 1)?),
            0xcd => Value::from(uint(b, 2)?),
            0xce => Value::from(uint(b, 4)?),
            0xcf => Value::from(uint(b, 8)?),
            0xd0 => Value::from(uint(b, 1)? as u8 as i8),
            0xd1 => Value::from(uint(b, 2)? as u16 as i16),
            0xd2 => Value::from(uint(b, 4)? as u32 as i32),
            0xd3 => Value::from(uint(b, 8)? as i64),
            0xd9 => {
                let n = uint(b, 1)? as usize;
                s(b, n)?
            }
            0xda => {
                let n = uint(b, 2)? as usize;
                s(b, n)?
            }
            0xdb => {
                let n = uint(b, 4)? as usize;
                s(b, n)?
            }
            0xdc => {
                let n = uint(b, 2)? as usize;
                arr(b, n)?
            }
            0xdd => {
                let n = uint(b, 4)? as usize;
                arr(b, n)?
            }
            0xde => {
                let n = uint(b, 2)? as usize;
                map(b, n)?
            }
            0xdf => {
                let n = uint(b, 4)? as usize;
                map(b, n)?
            }
            0xe0..=0xff => Value::from(t as i8),
            _ => return None,
        })
    }
    let mut b = bytes;
    let v = read(&mut b, 0)?;
    b.is_empty().then_some(v)
}

#[cfg(test)]
mod json_tests {
    use super::*;
    use crate::types::parse;
    use serde_json::json;

    #[test]
    fn literals_print_as_json() {
        for (v, t) in [
            (json!([1, 2]), "list[int]"),
            (json!({"a": "x"}), "dict[str, str]"),
            (
                json!({"depth": 3, "tags": ["a"], "ok": true, "w": 1.5, "none": null}),
                "struct",
            ),
            (json!(null), "optional[int]"),
            (json!("s3://b/k"), "file"),
        ] {
            assert_eq!(
                to_json(&from_json(&v, &parse(t).unwrap()).unwrap()),
                v,
                "{t}"
            );
        }
    }
}
