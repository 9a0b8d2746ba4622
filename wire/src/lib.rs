//! What reaches the serverless runtime from outside, parsed without any AWS SDK: transitions-queue
//! bodies ([`queue`]), execution requests and execution names ([`request`]), launch-queue bodies
//! ([`launch`]: S3 event notifications or requests) and events-queue bodies ([`events`]: EventBridge
//! events); and node records ([`parts`]) and started attempts' handles ([`kept`]) as the table stores them (both [`deflated`]). Each parser answers bad input with a [`WireError`] naming what is wrong, and never panics.

pub mod deflated;
pub mod events;
pub mod kept;
pub mod launch;
pub mod parts;
pub mod queue;
pub mod request;

/// Input that is not what it should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WireError(pub String);

/// The first 16 hex digits of the SHA-256 of `bytes`: content-addressed names (uploaded code and
/// packages) and made-up execution names.
pub fn short_digest(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}
