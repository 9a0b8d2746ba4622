//! The end signal: once the command ended and its outcome is stored, the message the runtime gave the
//! pod (`UPDRAFT_END_SIGNAL`: JSON with `queue`, `region`, `body`, `delay`) goes to its SQS queue, so
//! the runtime checks the attempt at once rather than at its next poll. SQS is reached as S3 is (see
//! [`crate::s3`]), except that flytekit's `FLYTE_AWS_ENDPOINT`, which names a data store, is not its
//! endpoint. A success's outputs of up to [`MAX_SIGNALLED_OUTPUTS`] travel in the signal too (the
//! check it carries, field `outputs`), so the runtime does not read them back from the bucket.

use aws_sdk_sqs::error::ProvideErrorMetadata;
use serde::Deserialize;

use crate::CopilotError;

/// The variable holding the end signal.
pub const SIGNAL_VAR: &str = "UPDRAFT_END_SIGNAL";

/// The variable holding the attempt's inputs (base64 of the `LiteralMap`), when they travel in the
/// pod's environment instead of the bucket.
pub const INPUTS_VAR: &str = "UPDRAFT_INPUTS";

/// The largest outputs.pb an end signal carries (SQS takes 256 KiB a message, and the body is
/// base64).
pub const MAX_SIGNALLED_OUTPUTS: usize = 32 * 1024;

/// An end signal as the runtime writes it.
#[derive(Debug, Deserialize)]
struct EndSignal {
    queue: String,
    #[serde(default)]
    region: String,
    body: String,
    #[serde(default)]
    delay: i32,
}

fn bad(reason: impl std::fmt::Display) -> CopilotError {
    CopilotError::Remote {
        uri: SIGNAL_VAR.into(),
        reason: reason.to_string(),
    }
}

/// Body `body` (a check message, base64) carrying `outputs` (an encoded outputs.pb) as well; the body
/// as it is when the outputs are larger than [`MAX_SIGNALLED_OUTPUTS`] or it is not a check.
pub fn with_outputs(body: &str, outputs: &[u8]) -> String {
    use base64::Engine;
    use updraft_proto::Message;
    use updraft_proto::updraft::QueueMessage;
    use updraft_proto::updraft::queue_message::Kind;
    let b64 = base64::engine::general_purpose::STANDARD;
    if outputs.len() > MAX_SIGNALLED_OUTPUTS {
        return body.to_string();
    }
    let Ok(mut m) = b64
        .decode(body.trim())
        .map_err(|_| ())
        .and_then(|bytes| QueueMessage::decode(bytes.as_slice()).map_err(|_| ()))
    else {
        return body.to_string();
    };
    match &mut m.kind {
        Some(Kind::Check(c)) => c.outputs = outputs.to_vec(),
        _ => return body.to_string(),
    }
    b64.encode(m.encode_to_vec())
}

/// Sends the end signal `json` (the variable's value), with `outputs` (the outputs.pb stored, on
/// success) when they are small enough.
pub fn send(json: &str, outputs: Option<&[u8]>) -> Result<(), CopilotError> {
    let s: EndSignal = serde_json::from_str(json).map_err(|e| bad(format!("not a signal: {e}")))?;
    let body = match outputs {
        Some(o) => with_outputs(&s.body, o),
        None => s.body.clone(),
    };
    let runtime = crate::s3::runtime()?;
    let sdk = crate::s3::environment(&runtime, false);
    let mut conf = aws_sdk_sqs::config::Builder::from(&sdk);
    if !s.region.is_empty() {
        conf = conf.region(aws_sdk_sqs::config::Region::new(s.region.clone()));
    }
    let client = aws_sdk_sqs::Client::from_conf(conf.build());
    runtime
        .block_on(
            client
                .send_message()
                .queue_url(&s.queue)
                .message_body(body)
                .delay_seconds(s.delay)
                .send(),
        )
        .map_err(|e| {
            let reason = match e.code() {
                Some(code) => format!("{code}: {}", e.message().unwrap_or("no message")),
                None => format!("{e:?}"),
            };
            CopilotError::Remote {
                uri: s.queue.clone(),
                reason: format!("SQS SendMessage: {reason}"),
            }
        })?;
    Ok(())
}

/// The inputs the runtime put in the environment (`UPDRAFT_INPUTS`), if it did.
pub fn inline_inputs() -> Result<Option<updraft_proto::core::LiteralMap>, CopilotError> {
    use base64::Engine;
    use updraft_proto::Message;
    let Ok(b64) = std::env::var(INPUTS_VAR) else {
        return Ok(None);
    };
    let decode = |reason: String| CopilotError::Decode {
        path: INPUTS_VAR.into(),
        reason,
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| decode(e.to_string()))?;
    updraft_proto::core::LiteralMap::decode(bytes.as_slice())
        .map(Some)
        .map_err(|e| decode(e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use base64::Engine;
    use updraft_proto::Message;
    use updraft_proto::updraft::queue_message::Kind;
    use updraft_proto::updraft::{CheckMessage, QueueMessage, SignalMessage};

    fn body(kind: Kind) -> String {
        let m = QueueMessage {
            execution: "e".into(),
            kind: Some(kind),
        };
        base64::engine::general_purpose::STANDARD.encode(m.encode_to_vec())
    }

    fn decoded(body: &str) -> QueueMessage {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        QueueMessage::decode(bytes.as_slice()).unwrap()
    }

    #[test]
    fn a_checks_signal_carries_small_outputs_and_keeps_the_rest() {
        let check = CheckMessage {
            name: "e-n0-0".into(),
            ended: true,
            ..Default::default()
        };
        let sent = with_outputs(&body(Kind::Check(check.clone())), b"outputs");
        let Some(Kind::Check(got)) = decoded(&sent).kind else {
            panic!("not a check");
        };
        assert_eq!(
            got,
            CheckMessage {
                outputs: b"outputs".to_vec(),
                ..check
            }
        );
    }

    #[test]
    fn large_outputs_other_messages_and_bad_bodies_go_as_they_are() {
        let check = body(Kind::Check(CheckMessage::default()));
        let large = vec![7u8; MAX_SIGNALLED_OUTPUTS + 1];
        assert_eq!(with_outputs(&check, &large), check);
        let signal = body(Kind::Signal(SignalMessage::default()));
        assert_eq!(with_outputs(&signal, b"o"), signal);
        assert_eq!(with_outputs("not base64!", b"o"), "not base64!");
    }
}
