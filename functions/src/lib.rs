//! Updraft's serverless runtime: the Lambda functions' logic and the AWS adapters they share.
//!
//! - [`launch`]: an execution request (a JSON object dropped into the bucket, sent to the launch queue or
//!   given directly) is validated against its registered package and becomes an execution item plus a
//!   start message;
//! - [`transition`]: batches of transitions-queue messages drive the engine: each execution's events
//!   are applied under its lease, effects are carried out (idempotently), then the new state is committed;
//! - [`store`], [`queue`], [`blobs`]: DynamoDB, SQS and S3.
//!
//! The binaries in `src/bin/` wrap these in `lambda_runtime`.

pub mod blobs;
pub mod launch;
pub mod logs;
pub mod queue;
pub mod store;
pub mod transition;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use updraft_connector_eks::EksConfig;

/// What went wrong in a function.
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
    /// More than one commit holds.
    #[error("{0}")]
    TooLarge(String),
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

/// The functions' settings, from their environment (the stack sets them).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `UPDRAFT_TABLE`: the DynamoDB table.
    pub table: String,
    /// `UPDRAFT_BUCKET`: the bucket of packages, requests and data.
    pub bucket: String,
    /// `UPDRAFT_TRANSITIONS_URL`: the transitions queue.
    pub transitions_url: String,
    /// `UPDRAFT_EKS`: the cluster settings (JSON, as `updraft run --executor eks` reads them).
    pub eks: Option<EksConfig>,
    /// `UPDRAFT_MAX_CHECK_DELAY`: longest wait between two checks of a running task, in seconds
    /// (default 60, at most 900).
    pub max_check_delay: Duration,
    /// `UPDRAFT_LEASE_SECONDS`: how long a transition holds an execution (default 120; keep it above the
    /// function's timeout).
    pub lease: Duration,
    /// `UPDRAFT_MAX_RECEIVES`: the queue's maxReceiveCount; on a message's last delivery a failure to
    /// process it fails its execution before it goes to the dead-letter queue (default 5).
    pub max_receives: u32,
    /// `UPDRAFT_FAULT`: fault injection for tests: `crash-before-commit` (exit after a transition's
    /// effects, before its commit, on the first delivery of each message that started a task),
    /// `drop-before-commit` (the same without exiting: the transition fails, nothing is committed and
    /// the lease is left to expire, as after a crash) or `duplicate` (send every message twice).
    pub fault: Option<String>,
}

fn var(name: &str) -> Result<String, Error> {
    std::env::var(name).map_err(|_| Error::Setting {
        name: name.into(),
        reason: "not set".into(),
    })
}

fn number(name: &str, default: u64) -> Result<u64, Error> {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().map_err(|_| Error::Setting {
            name: name.into(),
            reason: format!("`{v}` is not a whole number"),
        }),
        Err(_) => Ok(default),
    }
}

impl Settings {
    /// Reads the settings from the environment.
    pub fn from_env() -> Result<Self, Error> {
        let eks = match std::env::var("UPDRAFT_EKS") {
            Ok(text) if !text.trim().is_empty() => {
                Some(serde_json::from_str(&text).map_err(|e| Error::Setting {
                    name: "UPDRAFT_EKS".into(),
                    reason: e.to_string(),
                })?)
            }
            _ => None,
        };
        let fault = std::env::var("UPDRAFT_FAULT")
            .ok()
            .filter(|f| !f.is_empty());
        if let Some(f) = &fault
            && !["crash-before-commit", "drop-before-commit", "duplicate"].contains(&f.as_str())
        {
            return Err(Error::Setting {
                name: "UPDRAFT_FAULT".into(),
                reason: format!(
                    "`{f}` is none of crash-before-commit, drop-before-commit, duplicate"
                ),
            });
        }
        Ok(Self {
            table: var("UPDRAFT_TABLE")?,
            bucket: var("UPDRAFT_BUCKET")?,
            transitions_url: var("UPDRAFT_TRANSITIONS_URL")?,
            eks,
            max_check_delay: Duration::from_secs(number("UPDRAFT_MAX_CHECK_DELAY", 60)?.min(900)),
            lease: Duration::from_secs(number("UPDRAFT_LEASE_SECONDS", 120)?),
            max_receives: number("UPDRAFT_MAX_RECEIVES", 5)? as u32,
            fault,
        })
    }
}

/// The AWS clients, from the environment's configuration (`AWS_ENDPOINT_URL` and the like apply).
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
    /// Clients for `settings`.
    pub async fn new(settings: &Settings) -> Self {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::with_sdk(settings, sdk)
    }

    /// Clients for `settings` from a loaded SDK configuration.
    pub fn with_sdk(settings: &Settings, sdk: aws_config::SdkConfig) -> Self {
        let s3 = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(true)
            .build();
        let mut queue =
            queue::Queue::new(aws_sdk_sqs::Client::new(&sdk), &settings.transitions_url);
        queue.duplicate = settings.fault.as_deref() == Some("duplicate");
        Self {
            store: store::Store::new(aws_sdk_dynamodb::Client::new(&sdk), &settings.table),
            queue,
            blobs: blobs::Blobs::new(aws_sdk_s3::Client::from_conf(s3), &settings.bucket),
            sdk,
        }
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
