//! Launch-queue bodies: S3 event notifications naming request objects dropped in the bucket (as S3
//! sends them through SQS), or an execution request itself.

use serde_json::Value;

use crate::WireError;
use crate::request::Request;

/// Where a request came from, which decides what happens to a bad one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An object in a bucket (an S3 event): a bad request's error is written next to it, as
    /// `<key>.error.txt`, and the event is done with.
    Object {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// ETag (with the key, names a request that has no name).
        etag: String,
    },
    /// A message or a direct invocation: the error goes back to the sender.
    Message {
        /// Message id (names a request that has no name).
        id: String,
    },
}

/// The requests an event holds: S3 event notifications (as SQS delivers them) name objects; any other
/// body is a request itself. S3's test events hold none.
pub fn requests_in(
    body: &str,
    message_id: &str,
) -> Result<Vec<(Source, Option<Request>)>, WireError> {
    let v: Value = serde_json::from_str(body)
        .map_err(|e| WireError(format!("launch message {message_id}: not JSON: {e}")))?;
    if v.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Vec::new());
    }
    if let Some(records) = v.get("Records").and_then(Value::as_array) {
        let mut out = Vec::new();
        for r in records {
            let s3 = &r["s3"];
            let bucket = s3["bucket"]["name"].as_str().unwrap_or_default();
            let key = s3["object"]["key"].as_str().unwrap_or_default();
            if bucket.is_empty() || key.is_empty() {
                return Err(WireError(format!(
                    "launch message {message_id}: an S3 record without bucket or key"
                )));
            }
            out.push((
                Source::Object {
                    bucket: bucket.into(),
                    key: url_decode(key),
                    etag: s3["object"]["eTag"].as_str().unwrap_or_default().into(),
                },
                None,
            ));
        }
        return Ok(out);
    }
    let req: Request = serde_json::from_value(v)
        .map_err(|e| WireError(format!("launch message {message_id}: {e}")))?;
    Ok(vec![(
        Source::Message {
            id: message_id.into(),
        },
        Some(req),
    )])
}

/// Decodes an S3 event's object key (`+` for spaces, `%XX` escapes).
pub fn url_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push(h * 16 + l);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn s3_events_name_objects_and_other_bodies_are_requests() {
        let event = r#"{"Records": [{"s3": {"bucket": {"name": "b"},
            "object": {"key": "requests/a+b%2Fc%zz.json", "eTag": "e1"}}}]}"#;
        assert_eq!(
            requests_in(event, "m").unwrap(),
            [(
                Source::Object {
                    bucket: "b".into(),
                    key: "requests/a b/c%zz.json".into(),
                    etag: "e1".into(),
                },
                None
            )]
        );
        assert!(
            requests_in(r#"{"Event": "s3:TestEvent"}"#, "m")
                .unwrap()
                .is_empty()
        );
        let found = requests_in(r#"{"name": "n1", "workflow": "w"}"#, "m").unwrap();
        assert_eq!(found[0].0, Source::Message { id: "m".into() });
        assert_eq!(found[0].1.as_ref().unwrap().name.as_deref(), Some("n1"));
        let no_key = r#"{"Records": [{"s3": {"bucket": {"name": "b"}, "object": {}}}]}"#;
        assert!(
            requests_in(no_key, "m")
                .unwrap_err()
                .0
                .contains("without bucket or key")
        );
        let unknown = requests_in(r#"{"workflow": "w", "flavour": 1}"#, "m").unwrap_err();
        assert!(unknown.0.contains("flavour"), "{unknown}");
        assert!(requests_in("[1", "m").unwrap_err().0.contains("not JSON"));
        assert!(crate::request::valid_name("a-1") && !crate::request::valid_name("-a"));
    }
}
