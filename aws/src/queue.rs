//! The SQS transitions queue: engine events as messages, delayed ones for checks and timers.

use std::time::Duration;

use aws_sdk_sqs::Client;
use updraft_proto::updraft::QueueMessage;

use crate::Error;

/// SQS's longest delay.
pub const MAX_DELAY: Duration = Duration::from_secs(900);

/// SQS's largest message body.
pub const MAX_BODY: usize = 256 * 1024;

/// A message body: the protobuf, base64 (SQS bodies are text).
pub use updraft_wire::queue::encode;

/// A message from its body.
pub fn decode(body: &str) -> Result<QueueMessage, Error> {
    updraft_wire::queue::decode(body).map_err(|e| Error::Invalid(e.0))
}

/// The transitions queue.
#[derive(Debug, Clone)]
pub struct Queue {
    client: Client,
    url: String,
    /// Send every message twice (a fault-injection switch: duplicates must change nothing).
    pub duplicate: bool,
}

impl Queue {
    /// The queue at `url`.
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: url.into(),
            duplicate: false,
        }
    }

    /// Sends `m`, delivered after `delay` (at most [`MAX_DELAY`]). A message over SQS's
    /// [`MAX_BODY`] is refused, naming its execution.
    pub async fn send(&self, m: &QueueMessage, delay: Duration) -> Result<(), Error> {
        let body = encode(m);
        if body.len() > MAX_BODY {
            return Err(Error::Invalid(format!(
                "a message for execution {} is {} KiB; SQS takes at most {} KiB",
                m.execution,
                body.len() / 1024,
                MAX_BODY / 1024
            )));
        }
        let secs = delay.min(MAX_DELAY).as_secs() as i32;
        for _ in 0..if self.duplicate { 2 } else { 1 } {
            self.client
                .send_message()
                .queue_url(&self.url)
                .message_body(&body)
                .delay_seconds(secs)
                .send()
                .await
                .map_err(|e| Error::aws("SQS SendMessage", e))?;
        }
        Ok(())
    }
}
