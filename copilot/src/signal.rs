//! The end signal: once the command ended and its outcome is stored, the message the runtime gave the
//! pod (`UPDRAFT_END_SIGNAL`: JSON with `queue`, `region`, `body`, `delay`) goes to its SQS queue, so
//! the runtime checks the attempt at once rather than at its next poll. SQS is reached as S3 is (see
//! [`crate::s3`]), except that flytekit's `FLYTE_AWS_ENDPOINT`, which names a data store, is not its
//! endpoint.

use aws_sdk_sqs::error::ProvideErrorMetadata;
use serde::Deserialize;

use crate::CopilotError;

/// The variable holding the end signal.
pub const SIGNAL_VAR: &str = "UPDRAFT_END_SIGNAL";

/// The variable holding the attempt's inputs (base64 of the `LiteralMap`), when they travel in the
/// pod's environment instead of the bucket.
pub const INPUTS_VAR: &str = "UPDRAFT_INPUTS";

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

/// Sends the end signal `json` (the variable's value).
pub fn send(json: &str) -> Result<(), CopilotError> {
    let s: EndSignal = serde_json::from_str(json).map_err(|e| bad(format!("not a signal: {e}")))?;
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
                .message_body(&s.body)
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
