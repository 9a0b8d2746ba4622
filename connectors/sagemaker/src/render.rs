//! A boto3 request from a task's `custom.config`, rendered as flytekit's `Boto3ConnectorMixin._call`
//! renders it: `{inputs.x}` and `{images.x}` placeholders filled from the attempt's inputs (as
//! flytekit's `literal_map_string_repr` shows them) and the task's images, whole-number floats made
//! integers, and `{idempotence_token}` filled with the xxHash64 of the request's sorted text — for
//! SageMaker, cut so the string it sits in keeps within 63 characters.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use updraft_proto::core::{Literal, LiteralMap, literal, primitive, scalar};

use crate::pyfmt::{json_dumps, py_str, sorted_dict_str};

/// The longest SageMaker name a rendered `{idempotence_token}` keeps its string within.
pub const MAX_NAME: usize = 63;

/// Why a request could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A placeholder names a value that is not there (`{inputs.x}` without an input `x`).
    #[error("placeholder {{{placeholder}}}: no `{key}` in {within}")]
    Missing {
        /// The placeholder, without braces.
        placeholder: String,
        /// The key that is missing.
        key: String,
        /// What was looked in (`inputs`, `images`, the arguments).
        within: String,
    },
}

/// A rendered request and the idempotence token it was given (empty when it has no
/// `{idempotence_token}`).
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The request, as boto3 would send it.
    pub request: Value,
    /// The xxHash64 of the request (16 hex digits), or empty.
    pub token: String,
}

/// A literal as flytekit's `literal_string_repr` shows it: primitives as themselves (datetimes in ISO
/// form, durations as seconds), files, directories and datasets as their URI, msgpack dicts as their
/// `json.dumps` text, unions as their value, lists and maps as lists and dicts.
pub fn string_repr(l: &Literal) -> Value {
    use scalar::Value as S;
    match &l.value {
        Some(literal::Value::Scalar(s)) => match &s.value {
            Some(S::Primitive(p)) => match &p.value {
                Some(primitive::Value::Integer(i)) => Value::from(*i),
                Some(primitive::Value::FloatValue(f)) => {
                    serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
                }
                Some(primitive::Value::StringValue(s)) => Value::from(s.clone()),
                Some(primitive::Value::Boolean(b)) => Value::from(*b),
                Some(primitive::Value::Datetime(t)) => Value::from(iso_datetime(t)),
                Some(primitive::Value::Duration(d)) => {
                    let secs = d.seconds as f64 + f64::from(d.nanos) / 1e9;
                    serde_json::Number::from_f64(secs).map_or(Value::Null, Value::Number)
                }
                None => Value::Null,
            },
            Some(S::NoneType(_)) | None => Value::Null,
            Some(S::Error(e)) => Value::from(e.message.clone()),
            Some(S::StructuredDataset(d)) => Value::from(d.uri.clone()),
            Some(S::Schema(s)) => Value::from(s.uri.clone()),
            Some(S::Blob(b)) => Value::from(b.uri.clone()),
            Some(S::Binary(b)) if b.tag == "msgpack" => {
                let lit = updraft_engine::literal::to_json(l);
                let _ = b;
                Value::from(json_dumps(&lit))
            }
            Some(S::Binary(b)) => Value::from(base64_encode(&b.value)),
            Some(S::Generic(g)) => updraft_engine::literal::struct_json(g),
            Some(S::Union(u)) => u.value.as_deref().map_or(Value::Null, string_repr),
        },
        Some(literal::Value::Collection(c)) => {
            Value::Array(c.literals.iter().map(string_repr).collect())
        }
        Some(literal::Value::Map(m)) => Value::Object(
            m.literals
                .iter()
                .map(|(k, v)| (k.clone(), string_repr(v)))
                .collect(),
        ),
        Some(literal::Value::OffloadedMetadata(o)) => {
            Value::from(format!("Offloaded literal metadata: {}", o.uri))
        }
        None => Value::Null,
    }
}

/// The attempt's inputs as flytekit's `literal_map_string_repr` gives them.
pub fn inputs_repr(inputs: &LiteralMap) -> Map<String, Value> {
    inputs
        .literals
        .iter()
        .map(|(k, v)| (k.clone(), string_repr(v)))
        .collect()
}

fn base64_encode(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Python's `datetime.isoformat()` of a UTC timestamp: `2024-01-02T03:04:05+00:00`, with
/// `.ffffff` when it has microseconds.
pub fn iso_datetime(t: &prost_types::Timestamp) -> String {
    let secs = t.seconds;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil(days);
    let micros = t.nanos / 1000;
    let frac = if micros > 0 {
        format!(".{micros:06}")
    } else {
        String::new()
    };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{frac}+00:00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The ISO form of epoch seconds (as AWS's JSON protocol sends timestamps).
pub fn iso_epoch(secs: f64) -> String {
    let whole = secs.floor();
    iso_datetime(&prost_types::Timestamp {
        seconds: whole as i64,
        nanos: ((secs - whole) * 1e9).round() as i32,
    })
}

/// (year, month, day) of days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The AWS account of SageMaker's Triton images in each region, as flytekit fills `{account_id}` in an
/// image naming `sagemaker-tritonserver`.
const TRITON_ACCOUNTS: &[(&str, &str)] = &[
    ("us-east-1", "785573368785"),
    ("us-east-2", "007439368137"),
    ("us-west-1", "710691900526"),
    ("us-west-2", "301217895009"),
    ("eu-west-1", "802834080501"),
    ("eu-west-2", "205493899709"),
    ("eu-west-3", "254080097072"),
    ("eu-north-1", "601324751636"),
    ("eu-south-1", "966458181534"),
    ("eu-central-1", "746233611703"),
    ("ap-east-1", "110948597952"),
    ("ap-south-1", "763008648453"),
    ("ap-northeast-1", "941853720454"),
    ("ap-northeast-2", "151534178276"),
    ("ap-southeast-1", "324986816169"),
    ("ap-southeast-2", "355873309152"),
    ("cn-northwest-1", "474822919863"),
    ("cn-north-1", "472730292857"),
    ("sa-east-1", "756306329178"),
    ("ca-central-1", "464438896020"),
    ("me-south-1", "836785723513"),
    ("af-south-1", "774647643957"),
];

/// The task's images with a Triton image's `{account_id}`, `{region}` and `{base}` filled for
/// `region`, as flytekit does.
pub fn images_for(images: &Map<String, Value>, region: &str) -> Map<String, Value> {
    let base = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    images
        .iter()
        .map(|(k, v)| {
            let v = match v.as_str() {
                Some(image) if image.contains("sagemaker-tritonserver") => {
                    let account = TRITON_ACCOUNTS
                        .iter()
                        .find(|(r, _)| *r == region)
                        .map_or("", |(_, a)| a);
                    Value::from(
                        image
                            .replace("{account_id}", account)
                            .replace("{region}", region)
                            .replace("{base}", base),
                    )
                }
                _ => v.clone(),
            };
            (k.clone(), v)
        })
        .collect()
}

/// Every `{…}` placeholder in the strings of `config`, in order of appearance.
pub fn placeholders(config: &Value) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.extend(matches(s)),
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Object(m) => m.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(config, &mut out);
    out
}

/// Python's `re.findall(r"\{([^}]+)\}", s)`.
fn matches(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(0) => rest = &after[1..],
            Some(close) => {
                out.push(after[..close].to_string());
                rest = &after[close + 1..];
            }
            None => break,
        }
    }
    out.retain(|m| !m.is_empty());
    out
}

fn nested<'a>(args: &'a Map<String, Value>, placeholder: &str) -> Result<&'a Value, RenderError> {
    let mut keys = placeholder.split('.');
    let first = keys.next().unwrap_or_default();
    let missing = |key: &str, within: &str| RenderError::Missing {
        placeholder: placeholder.into(),
        key: key.into(),
        within: within.into(),
    };
    let mut at = args
        .get(first)
        .ok_or_else(|| missing(first, "the arguments"))?;
    let mut within = first.to_string();
    for k in keys {
        at = at
            .as_object()
            .and_then(|m| m.get(k))
            .ok_or_else(|| missing(k, &within))?;
        within = format!("{within}.{k}");
    }
    Ok(at)
}

/// flytekit's `replace_placeholder`: for SageMaker, a token that would make its string longer than
/// 63 characters is cut to fit.
fn replace(service: &str, original: &str, placeholder: &str, replacement: &str) -> String {
    let braced = format!("{{{placeholder}}}");
    let whole = original.replace(&braced, replacement);
    if service == "sagemaker"
        && matches!(
            placeholder,
            "inputs.idempotence_token" | "idempotence_token"
        )
        && whole.chars().count() > MAX_NAME
    {
        let room = MAX_NAME.saturating_sub(original.replace(&braced, "").chars().count());
        let cut: String = replacement.chars().take(room).collect();
        return original.replace(&braced, &cut);
    }
    whole
}

/// flytekit's `format_dict`.
fn format(
    service: &str,
    v: Value,
    args: &Map<String, Value>,
    token: Option<&str>,
) -> Result<Value, RenderError> {
    Ok(match v {
        Value::String(s) if s.contains('{') && s.contains('}') => {
            let mut s = s;
            for m in matches(&s) {
                if m.contains('.') {
                    let value = nested(args, &m)?;
                    if s == format!("{{{m}}}") {
                        return Ok(value.clone());
                    }
                    s = replace(service, &s, &m, &py_str(value));
                } else if m == "idempotence_token"
                    && let Some(t) = token.filter(|t| !t.is_empty())
                {
                    s = replace(service, &s, &m, t);
                }
            }
            Value::String(s)
        }
        Value::Array(a) => Value::Array(
            a.into_iter()
                .map(|x| format(service, x, args, token))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, x)| Ok((k, format(service, x, args, token)?)))
                .collect::<Result<_, RenderError>>()?,
        ),
        other => other,
    })
}

/// Whole-number floats as integers (`InstanceCount: 1.0` → `1`), as flytekit sends them.
pub fn whole_floats_to_ints(v: Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(a) => Value::Array(a.into_iter().map(whole_floats_to_ints).collect()),
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, x)| (k, whole_floats_to_ints(x)))
                .collect(),
        ),
        other => other,
    }
}

/// The idempotence token of a request: flytekit's xxHash64 of its sorted text, as 16 hex digits.
pub fn token_of(request: &Value) -> String {
    format!(
        "{:016x}",
        xxhash_rust::xxh64::xxh64(sorted_dict_str(request).as_bytes(), 0)
    )
}

/// The arguments placeholders are filled from: `inputs` (when the attempt has inputs) and `images`.
pub fn arguments(
    inputs: Option<Map<String, Value>>,
    images: Option<Map<String, Value>>,
) -> Map<String, Value> {
    let mut args = Map::new();
    if let Some(i) = inputs {
        args.insert("inputs".into(), Value::Object(i));
    }
    if let Some(i) = images {
        args.insert("images".into(), Value::Object(i));
    }
    args
}

/// Renders `config` for `service` with `args` (see [`arguments`]).
pub fn render(
    service: &str,
    config: &Value,
    args: &Map<String, Value>,
) -> Result<Rendered, RenderError> {
    let first = whole_floats_to_ints(format(service, config.clone(), args, None)?);
    if !py_str(&first).contains("idempotence_token") {
        return Ok(Rendered {
            request: first,
            token: String::new(),
        });
    }
    let token = token_of(&first);
    let request = format(service, first, args, Some(&token))?;
    Ok(Rendered { request, token })
}

/// Names every placeholder of `config` that the interface's `inputs` and the task's `images` cannot
/// fill, and why (for the pre-flight check).
pub fn unfillable<T>(
    config: &Value,
    inputs: &BTreeMap<String, T>,
    images: Option<&Map<String, Value>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for p in placeholders(config) {
        let mut parts = p.splitn(2, '.');
        let (head, rest) = (parts.next().unwrap_or_default(), parts.next());
        match (head, rest) {
            ("inputs", Some(name)) => {
                let name = name.split('.').next().unwrap_or_default();
                if name != "idempotence_token" && !inputs.contains_key(name) {
                    out.push(format!("{{{p}}} names no input of the task (`{name}`)"));
                }
            }
            ("images", Some(name)) if !images.is_some_and(|i| i.contains_key(name)) => {
                out.push(format!("{{{p}}} names no image in `images` (`{name}`)"));
            }
            ("images", Some(_)) => {}
            (_, Some(_)) => out.push(format!(
                "{{{p}}}: placeholders are `{{inputs.<name>}}`, `{{images.<name>}}` and `{{idempotence_token}}`"
            )),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(inputs: Value, images: Value) -> Map<String, Value> {
        arguments(inputs.as_object().cloned(), images.as_object().cloned())
    }

    #[test]
    fn whole_string_placeholders_keep_the_values_type() {
        let a = args(
            json!({"depth": 5, "uri": "s3://b/k"}),
            json!({"x": "img:1"}),
        );
        let r = render(
            "sagemaker",
            &json!({"A": "{inputs.depth}", "B": "d={inputs.depth}", "C": ["{images.x}"], "N": 2.0}),
            &a,
        )
        .unwrap();
        assert_eq!(
            r.request,
            json!({"A": 5, "B": "d=5", "C": ["img:1"], "N": 2})
        );
        assert_eq!(r.token, "");
    }

    #[test]
    fn a_missing_input_is_named() {
        let e = render(
            "sagemaker",
            &json!({"A": "{inputs.nope}"}),
            &args(json!({}), json!(null)),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "placeholder {inputs.nope}: no `nope` in inputs"
        );
    }

    #[test]
    fn the_token_is_the_hash_of_the_sorted_request_and_names_keep_within_63() {
        let config = json!({
            "TrainingJobName": "a-rather-long-training-job-name-prefix-for-the-job-{idempotence_token}",
            "HyperParameters": {"max_depth": "{inputs.depth}"},
        });
        let r = render(
            "sagemaker",
            &config,
            &args(json!({"depth": "5"}), json!(null)),
        )
        .unwrap();
        let first = json!({
            "TrainingJobName": "a-rather-long-training-job-name-prefix-for-the-job-{idempotence_token}",
            "HyperParameters": {"max_depth": "5"},
        });
        assert_eq!(r.token, token_of(&first));
        assert_eq!(r.token.len(), 16);
        let name = r.request["TrainingJobName"].as_str().unwrap();
        assert_eq!(name.len(), 63);
        assert!(name.starts_with("a-rather-long-training-job-name-prefix-for-the-job-"));
        assert!(r.token.starts_with(&name[51..]));
        // Other services keep the whole token.
        let r = render("s3", &config, &args(json!({"depth": "5"}), json!(null))).unwrap();
        assert!(
            r.request["TrainingJobName"]
                .as_str()
                .unwrap()
                .ends_with(&r.token)
        );
    }

    #[test]
    fn the_token_is_flytekits() {
        // What flytekit 1.16's Boto3ConnectorMixin gives this request (computed with it).
        let config = json!({
            "TrainingJobName": "xgb-{idempotence_token}",
            "ResourceConfig": {"InstanceCount": 1.0, "VolumeSizeInGB": 10.5},
            "HyperParameters": {"max_depth": "{inputs.max_depth}", "eta": "{inputs.eta}"},
            "Flags": [true, null, "a"],
        });
        let r = render(
            "sagemaker",
            &config,
            &args(json!({"max_depth": 5, "eta": 0.3}), json!(null)),
        )
        .unwrap();
        assert_eq!(r.token, "18a1a8d13c4ada64");
        assert_eq!(r.request["TrainingJobName"], json!("xgb-18a1a8d13c4ada64"));
        assert_eq!(
            r.request["HyperParameters"],
            json!({"max_depth": 5, "eta": 0.3})
        );
    }

    #[test]
    fn xxhash_matches_the_reference() {
        assert_eq!(
            format!("{:016x}", xxhash_rust::xxh64::xxh64(b"", 0)),
            "ef46db3751d8e999"
        );
    }

    #[test]
    fn literals_show_as_flytekit_shows_them() {
        use updraft_engine::literal::{from_json, primitive_lit};
        let dt = primitive_lit(primitive::Value::Datetime(prost_types::Timestamp {
            seconds: 1_704_164_645,
            nanos: 500_000_000,
        }));
        assert_eq!(string_repr(&dt), json!("2024-01-02T03:04:05.500000+00:00"));
        let t = updraft_engine::types::parse("struct").unwrap();
        let d = from_json(&json!({"b": 1, "a": [true]}), &t).unwrap();
        assert_eq!(string_repr(&d), json!("{\"a\": [true], \"b\": 1}"));
        assert_eq!(iso_epoch(0.25), "1970-01-01T00:00:00.250000+00:00");
    }

    #[test]
    fn unfillable_placeholders_are_named() {
        let inputs: BTreeMap<String, ()> = [("a".to_string(), ())].into();
        let images = json!({"x": "i"});
        let out = unfillable(
            &json!({"A": "{inputs.a}{inputs.b}", "B": "{images.y}", "C": "{idempotence_token}", "D": "{other.z}"}),
            &inputs,
            images.as_object(),
        );
        assert_eq!(out.len(), 3, "{out:?}");
        assert!(out[0].contains("`b`"));
        assert!(out[1].contains("`y`"));
    }

    #[test]
    fn triton_images_get_their_account() {
        let i = json!({"t": "{account_id}.dkr.ecr.{region}.{base}/sagemaker-tritonserver:23", "o": "{region}"});
        let out = images_for(i.as_object().unwrap(), "cn-north-1");
        assert_eq!(
            out["t"],
            json!("472730292857.dkr.ecr.cn-north-1.amazonaws.com.cn/sagemaker-tritonserver:23")
        );
        assert_eq!(out["o"], json!("{region}"));
    }
}
