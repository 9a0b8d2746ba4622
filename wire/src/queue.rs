//! Transitions-queue bodies: an `updraft.v1.QueueMessage` as base64 protobuf (SQS bodies are text).

use base64::Engine as _;
use updraft_proto::Message;
use updraft_proto::updraft::QueueMessage;

use crate::WireError;

/// A message body: the protobuf, base64.
pub fn encode(m: &QueueMessage) -> String {
    base64::engine::general_purpose::STANDARD.encode(m.encode_to_vec())
}

/// A message from its body.
pub fn decode(body: &str) -> Result<QueueMessage, WireError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|e| WireError(format!("message body is not base64: {e}")))?;
    QueueMessage::decode(bytes.as_slice())
        .map_err(|e| WireError(format!("message body is not a QueueMessage: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use updraft_proto::updraft::{SignalMessage, queue_message::Kind};

    #[test]
    fn bodies_round_trip_and_bad_ones_are_named() {
        let m = QueueMessage {
            execution: "e".into(),
            kind: Some(Kind::Signal(SignalMessage {
                id: "go".into(),
                value: None,
            })),
        };
        assert_eq!(decode(&encode(&m)).unwrap(), m);
        assert!(decode("not base64!").unwrap_err().0.contains("not base64"));
        // Base64 of bytes that are no QueueMessage (a truncated field).
        assert!(decode("Cg==").unwrap_err().0.contains("not a QueueMessage"));
    }
}
