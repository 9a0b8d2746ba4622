//! Updraft's serverless runtime: the Lambda functions' logic and the AWS adapters they share.
//!
//! - [`launch`]: an execution request (a JSON object dropped into the bucket, sent to the launch queue or
//!   given directly) is validated against its registered package and becomes an execution item plus a
//!   start message;
//! - [`transition`]: batches of transitions-queue messages drive the engine: each execution's events
//!   are applied under its lease, effects are carried out (idempotently), then the new state is committed;
//! - [`store`], [`queue`], [`blobs`]: DynamoDB, SQS and S3 (from `updraft-aws`).
//!
//! The binaries in `src/bin/` wrap these in `lambda_runtime`.

pub mod events;
pub mod launch;
pub mod logs;
pub mod transition;

use std::time::Duration;

pub use updraft_aws::{Clients, Error, blobs, now_ms, queue, store};
use updraft_connector_eks::EksConfig;

/// The functions' settings, from their environment (the stack sets them).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `UPDRAFT_TABLE`: the DynamoDB table.
    pub table: String,
    /// `UPDRAFT_BUCKET`: the bucket of packages, requests and data.
    pub bucket: String,
    /// `UPDRAFT_TRANSITIONS_URL`: the transitions queue.
    pub transitions_url: String,
    /// The cluster settings (JSON, as `updraft run --executor eks` reads them): the `SecretString` of
    /// the Secrets Manager secret `UPDRAFT_EKS_SECRET` names (the stack's: they may hold credentials),
    /// else `UPDRAFT_EKS`; with `UPDRAFT_EKS_CLUSTER` (the EKS cluster's name) and
    /// `UPDRAFT_EKS_NAMESPACE` over them. None set: no cluster, and native tasks are refused.
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
    /// `UPDRAFT_MAX_STARTS`: most task attempts one transition starts (default 100); the rest are
    /// started by the transitions that follow (`TimerKind::Continue`), so a transition's work stays
    /// within the function's timeout however wide a fan-out or a map is.
    pub max_starts: u32,
    /// `UPDRAFT_SETTINGS`: the settings file's sections for the AWS services' connectors (`aws`,
    /// `batch`, `sagemaker`) as JSON, as `updraft deploy --settings` passes them; `data.prefix` is
    /// always the stack's bucket.
    pub services: updraft_settings::Settings,
    /// `UPDRAFT_FAULT`: fault injection for tests, a comma-separated list of: `crash-before-commit`
    /// (exit after a transition's effects, before its commit, on the first delivery of a message that
    /// started a task for the first time: once per attempt), `drop-before-commit` (the same without
    /// exiting: the transition fails, nothing is committed and the lease is left to expire, as after
    /// a crash), `duplicate` (send every message twice), `die` (every transition of an execution
    /// named `die-hang…`, `die-exit…`, `die-oom…` or `die-throttle…` times out, exits, runs out of
    /// memory or fails as throttled: its messages end in the dead-letter queue) and `slow-commit` (a
    /// transition waits 2 s before its first commit try, so other events reach its inbox meanwhile).
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

fn set(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The cluster settings from `text` (JSON, read from `source`), with `UPDRAFT_EKS_CLUSTER` and
/// `UPDRAFT_EKS_NAMESPACE` over them.
fn eks_config(text: Option<&str>, source: &str) -> Result<Option<EksConfig>, Error> {
    let mut eks: Option<EksConfig> = match text {
        Some(text) => Some(serde_json::from_str(text).map_err(|e| Error::Setting {
            name: source.into(),
            reason: e.to_string(),
        })?),
        None => None,
    };
    if let Some(cluster) = set("UPDRAFT_EKS_CLUSTER") {
        let config = eks.get_or_insert_with(EksConfig::default);
        match &mut config.cluster {
            Some(c) => c.name = cluster,
            None => {
                config.cluster = Some(updraft_connector_eks::auth::EksCluster {
                    name: cluster,
                    region: None,
                    endpoint: None,
                    certificate_authority_data: None,
                })
            }
        }
    }
    if let (Some(config), Some(ns)) = (eks.as_mut(), set("UPDRAFT_EKS_NAMESPACE")) {
        config.namespace = ns;
    }
    Ok(eks)
}

impl Settings {
    /// Reads the settings from the environment, the cluster settings from their secret when
    /// `UPDRAFT_EKS_SECRET` names one (read once, as the function starts).
    pub async fn load() -> Result<Self, Error> {
        let mut settings = Self::from_env()?;
        let Some(arn) = set("UPDRAFT_EKS_SECRET") else {
            return Ok(settings);
        };
        let sdk = updraft_aws::load_sdk().await;
        // The functions' own AWS (the services' settings may point their connectors elsewhere).
        let aws = updraft_call::Aws::new(&sdk, &updraft_settings::Settings::default());
        let region = arn
            .split(':')
            .nth(3)
            .filter(|r| !r.is_empty())
            .or(aws.default_region())
            .unwrap_or_default()
            .to_string();
        let answer = aws
            .call(
                &updraft_call::SECRETS_MANAGER,
                &region,
                "GetSecretValue",
                &serde_json::json!({"SecretId": arn}),
            )
            .await
            .map_err(|e| Error::Setting {
                name: "UPDRAFT_EKS_SECRET".into(),
                reason: format!("cannot read the cluster settings from {arn}: {e}"),
            })?;
        let text = answer["SecretString"]
            .as_str()
            .ok_or_else(|| Error::Setting {
                name: "UPDRAFT_EKS_SECRET".into(),
                reason: format!("the secret {arn} holds no SecretString"),
            })?;
        settings.eks = eks_config(Some(text), "UPDRAFT_EKS_SECRET")?;
        Ok(settings)
    }

    /// Reads the settings from the environment (`UPDRAFT_EKS` for the cluster settings; see
    /// [`Settings::load`] for the stack's secret).
    pub fn from_env() -> Result<Self, Error> {
        let eks = eks_config(set("UPDRAFT_EKS").as_deref(), "UPDRAFT_EKS")?;
        let fault = std::env::var("UPDRAFT_FAULT")
            .ok()
            .filter(|f| !f.trim().is_empty());
        for f in fault.iter().flat_map(|f| f.split(',')).map(str::trim) {
            if !FAULTS.contains(&f) {
                return Err(Error::Setting {
                    name: "UPDRAFT_FAULT".into(),
                    reason: format!("`{f}` is none of {}", FAULTS.join(", ")),
                });
            }
        }
        let bucket = var("UPDRAFT_BUCKET")?;
        let mut services =
            match set("UPDRAFT_SETTINGS") {
                Some(text) => updraft_settings::Settings::parse("UPDRAFT_SETTINGS", &text)
                    .map_err(|e| Error::Setting {
                        name: "UPDRAFT_SETTINGS".into(),
                        reason: e.reason,
                    })?,
                None => updraft_settings::Settings::default(),
            };
        services.data.prefix = Some(format!("s3://{bucket}/executions"));
        Ok(Self {
            table: var("UPDRAFT_TABLE")?,
            bucket,
            services,
            transitions_url: var("UPDRAFT_TRANSITIONS_URL")?,
            eks,
            max_check_delay: Duration::from_secs(number("UPDRAFT_MAX_CHECK_DELAY", 60)?.min(900)),
            lease: Duration::from_secs(number("UPDRAFT_LEASE_SECONDS", 120)?),
            max_receives: number("UPDRAFT_MAX_RECEIVES", 5)? as u32,
            max_starts: number("UPDRAFT_MAX_STARTS", 100)?.clamp(1, u32::MAX as u64) as u32,
            fault,
        })
    }
}

/// The faults `UPDRAFT_FAULT` may list.
const FAULTS: [&str; 5] = [
    "crash-before-commit",
    "drop-before-commit",
    "duplicate",
    "die",
    "slow-commit",
];

impl Settings {
    /// True when `UPDRAFT_FAULT` lists fault `name`.
    pub fn has_fault(&self, name: &str) -> bool {
        self.fault
            .as_deref()
            .is_some_and(|f| f.split(',').any(|f| f.trim() == name))
    }

    /// The connectors of this deployment: the cluster's, when one is given, and the AWS services'.
    pub fn registry(
        &self,
        eks: Option<std::sync::Arc<updraft_connector_eks::EksConnector>>,
        sdk: &aws_config::SdkConfig,
    ) -> updraft_connector::Registry {
        let mut registry = updraft_connector::Registry::new();
        if let Some(e) = eks {
            registry = registry.with(e);
        }
        updraft_connectors::with_services(registry, &self.services, sdk)
    }

    /// The deployment's clients, from the environment's AWS configuration (`AWS_ENDPOINT_URL` and the
    /// like apply).
    pub async fn clients(&self) -> Clients {
        self.clients_with(updraft_aws::load_sdk().await)
    }

    /// The deployment's clients from a loaded SDK configuration.
    pub fn clients_with(&self, sdk: aws_config::SdkConfig) -> Clients {
        let mut clients = Clients::new(sdk, &self.table, &self.bucket, &self.transitions_url);
        clients.queue.duplicate = self.has_fault("duplicate");
        clients
    }
}
