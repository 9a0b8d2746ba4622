//! Updraft's AWS adapters: the DynamoDB store, the SQS transitions queue and the S3 blob store, shared
//! by the Lambda functions (`updraft-functions`) and the `updraft` command.
//!
//! - [`store`]: one table of executions (with a lease), per-node records, the cache and the registry;
//! - [`queue`]: engine events as base64 protobuf messages, delayed checks and timers;
//! - [`blobs`]: packages, inputs, outputs and large records in the bucket;
//! - [`request`]: the JSON request that starts an execution.

pub mod blobs;
pub use updraft_wire::parts;
pub mod queue;
pub use updraft_wire::request;
pub mod store;

use std::time::{SystemTime, UNIX_EPOCH};

/// What went wrong talking to AWS, or with what was read there.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An AWS call failed.
    #[error("{0}")]
    Aws(String),
    /// Input that cannot be processed (a poison message, a bad request).
    #[error("{0}")]
    Invalid(String),
    /// Another transition took the execution's lease while this one ran.
    #[error("execution {0}: the lease was lost before the commit")]
    LostLease(String),
    /// A fault injected for a test (`UPDRAFT_FAULT=drop-before-commit`).
    #[error("execution {0}: fault injected before the commit")]
    Injected(String),
    /// A setting is missing or wrong.
    #[error("setting {name}: {reason}")]
    Setting {
        /// The environment variable.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

impl Error {
    /// An AWS SDK error, with the call it came from and the service's message.
    pub fn aws<E: std::error::Error + 'static>(call: &str, e: E) -> Self {
        let mut text = format!("{call}: {e}");
        let mut source = e.source();
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        Self::Aws(text)
    }
}

/// The clients of one deployment: its table, transitions queue and bucket.
#[derive(Debug, Clone)]
pub struct Clients {
    /// The table.
    pub store: store::Store,
    /// The transitions queue.
    pub queue: queue::Queue,
    /// The bucket.
    pub blobs: blobs::Blobs,
    /// The loaded SDK configuration.
    pub sdk: aws_config::SdkConfig,
}

impl Clients {
    /// Clients for a table, a bucket and a transitions queue (by URL), from a loaded SDK configuration.
    /// S3 is addressed path-style, which AWS and LocalStack both serve.
    pub fn new(sdk: aws_config::SdkConfig, table: &str, bucket: &str, queue_url: &str) -> Self {
        Self {
            store: store::Store::new(aws_sdk_dynamodb::Client::new(&sdk), table),
            queue: queue::Queue::new(aws_sdk_sqs::Client::new(&sdk), queue_url),
            blobs: blobs::Blobs::new(s3_client(&sdk), bucket),
            sdk,
        }
    }

    /// The encoded ExecutionState of execution item `e`, read from the bucket when it is kept there.
    pub async fn state_bytes(&self, e: &store::ExecutionItem) -> Result<Vec<u8>, Error> {
        self.inline_or_blob(&e.state, e.state_blob.as_deref()).await
    }

    /// The encoded inputs of execution item `e`, read from the bucket when they are kept there.
    pub async fn input_bytes(&self, e: &store::ExecutionItem) -> Result<Vec<u8>, Error> {
        self.inline_or_blob(&e.inputs, e.inputs_blob.as_deref())
            .await
    }

    async fn inline_or_blob(&self, inline: &[u8], blob: Option<&str>) -> Result<Vec<u8>, Error> {
        match blob {
            None => Ok(inline.to_vec()),
            Some(key) => self
                .blobs
                .get(&self.blobs.uri(key))
                .await?
                .ok_or_else(|| Error::Invalid(format!("{} is missing", self.blobs.uri(key)))),
        }
    }

    /// Moves a new execution's inputs to the bucket (`executions/<name>/inputs.pb`) when they are too
    /// large for its item ([`store::MAX_INLINE_INPUTS`]).
    pub async fn offload_inputs(&self, e: &mut store::ExecutionItem) -> Result<(), Error> {
        let key = format!("executions/{}/inputs.pb", e.name);
        e.inputs_blob = self
            .offload(&mut e.inputs, store::MAX_INLINE_INPUTS, key)
            .await?;
        Ok(())
    }

    /// The ExecutionState of execution item `e`: its stored record (from the bucket when it is kept
    /// there), with the execution's inputs put back when they are kept in the bucket instead (see
    /// [`Clients::set_state`]). [`Error::Invalid`] when the record cannot be decoded.
    pub async fn execution_state(
        &self,
        e: &store::ExecutionItem,
    ) -> Result<updraft_proto::updraft::ExecutionState, Error> {
        use updraft_proto::Message;
        let bytes = self.state_bytes(e).await?;
        let mut state = updraft_proto::updraft::ExecutionState::decode(bytes.as_slice())
            .map_err(|err| Error::Invalid(format!("execution {}: state: {err}", e.name)))?;
        if state.inputs.is_none() && e.inputs_blob.is_some() {
            let raw = self.input_bytes(e).await?;
            let inputs = updraft_proto::core::LiteralMap::decode(raw.as_slice())
                .map_err(|err| Error::Invalid(format!("execution {}: inputs: {err}", e.name)))?;
            state.inputs = Some(inputs);
        }
        Ok(state)
    }

    /// Stores `state` in execution item `e`, about to be committed at version `version`: without
    /// its inputs when the bucket keeps them (written once at launch; an item's every lease and
    /// commit is billed by its size), and in the bucket itself when it is still too large (see
    /// [`Clients::offload_state`]).
    pub async fn set_state(
        &self,
        e: &mut store::ExecutionItem,
        state: &updraft_proto::updraft::ExecutionState,
        version: u64,
    ) -> Result<(), Error> {
        use updraft_proto::Message;
        e.state = if e.inputs_blob.is_some() && state.inputs.is_some() {
            let mut lean = state.clone();
            lean.inputs = None;
            lean.encode_to_vec()
        } else {
            state.encode_to_vec()
        };
        self.offload_state(e, version).await
    }

    /// Moves the ExecutionState an execution is about to commit at version `version` to the bucket
    /// (`state/<name>/exec-v<version>.pb`) when it is too large for its item
    /// ([`store::MAX_INLINE_STATE`]); keeps it in the item otherwise.
    pub async fn offload_state(
        &self,
        e: &mut store::ExecutionItem,
        version: u64,
    ) -> Result<(), Error> {
        let key = format!("state/{}/exec-v{version}.pb", e.name);
        e.state_blob = self
            .offload(&mut e.state, store::MAX_INLINE_STATE, key)
            .await?;
        Ok(())
    }

    /// Moves `bytes` to `key` in the bucket when they are over `max` bytes and returns the key;
    /// leaves them (None) otherwise.
    async fn offload(
        &self,
        bytes: &mut Vec<u8>,
        max: usize,
        key: String,
    ) -> Result<Option<String>, Error> {
        if bytes.len() <= max {
            return Ok(None);
        }
        self.blobs
            .put(&self.blobs.uri(&key), std::mem::take(bytes))
            .await?;
        Ok(Some(key))
    }

    /// The node records of execution `name` at its version `version`: each whole (its parts joined,
    /// those kept in the bucket read from it), each part's bytes, and the parts as read (which slot
    /// holds each, and which hold writes never committed).
    pub async fn node_records(&self, name: &str, version: u64) -> Result<NodeRecords, Error> {
        let records = self.store.nodes(name, version).await?;
        let mut by_node: std::collections::BTreeMap<u32, std::collections::BTreeMap<u32, Vec<u8>>> =
            Default::default();
        let mut parts = std::collections::HashMap::new();
        for r in &records {
            let raw = match &r.bytes {
                None => continue,
                Some(store::NodeBytes::Inline(v)) => v.clone(),
                Some(store::NodeBytes::Blob(key)) => self
                    .blobs
                    .get(&self.blobs.uri(key))
                    .await?
                    .ok_or_else(|| Error::Invalid(format!("node record {key} is missing")))?,
            };
            parts.insert((r.index, r.part), raw.clone());
            // An emptied part (see `parts`) is no part.
            if r.part == 0 || !raw.is_empty() {
                by_node.entry(r.index).or_default().insert(r.part, raw);
            }
        }
        let mut joined = Vec::with_capacity(by_node.len());
        for (index, p) in by_node {
            joined.push((
                index,
                parts::join(index, p).map_err(|e| Error::Invalid(e.0))?,
            ));
        }
        Ok(NodeRecords {
            joined,
            parts,
            records,
        })
    }
}

/// An execution's node records as read (see [`Clients::node_records`]).
#[derive(Debug, Default)]
pub struct NodeRecords {
    /// Each node's record, whole, by node index.
    pub joined: Vec<(u32, Vec<u8>)>,
    /// The bytes of each stored part, by node index and part.
    pub parts: std::collections::HashMap<(u32, u32), Vec<u8>>,
    /// The parts as read.
    pub records: Vec<store::NodeRecord>,
}

/// The SDK's timeouts for the runtime's calls: a connection within 3.1 s, and no wait of more than 20
/// s for the next bytes of an answer (the SDK retries such an attempt). Without them a request whose
/// answer never comes holds its caller until the function times out.
pub fn timeouts() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_millis(3100))
        .read_timeout(std::time::Duration::from_secs(20))
        .build()
}

/// The SDK's configuration from the environment, with [`timeouts`].
pub async fn load_sdk() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(timeouts())
        .load()
        .await
}

/// An S3 client addressing buckets path-style.
pub fn s3_client(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(true)
            .build(),
    )
}

pub use updraft_wire::short_digest;

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
