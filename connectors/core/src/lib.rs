//! The connector contract: how every runtime starts, checks and stops a task attempt, whatever runs it.
//!
//! Shaped like Flyte's plugin machinery (`core.Plugin`, `webapi.AsyncPlugin`, `k8s.Plugin`): a
//! [`Connector`] names the task types it serves, reports everything wrong with a task before anything
//! starts ([`Connector::preflight`]), starts an attempt idempotently — the external name comes from
//! execution, node and attempt ([`TaskLaunch::name`]), so a redelivered start finds the job it already
//! made — checks it without blocking, and aborts it, tolerating "already gone". What a start made is a
//! [`Handle`], stored with the attempt: it holds everything a check or an abort needs (what was made,
//! where the outcome will be), so neither rebuilds anything nor needs the task again. A [`Registry`] routes
//! each task to its connector by task type; the runtimes dispatch through it and never match on plugin
//! kinds. The attempt data layout and the template variables live in [`paths`]; the engine's effects
//! are interpreted in [`effects`], for every runtime, each a [`effects::Host`].

mod data;
pub mod effects;
pub mod logs;
pub mod paths;
pub mod query;
mod registry;
pub mod secrets;

pub use data::{DataStore, LocalData, WithOutputs, read_output_files};
pub use logs::LogPlace;
pub use paths::AttemptPaths;
pub use registry::{Registry, RegistryError};

use std::time::Duration;

use serde::{Deserialize, Serialize};
use updraft_engine::compile::CompiledTask;
use updraft_engine::exec::{ErrorKind, TaskLaunch, TaskStatus};

/// One task attempt, as a connector sees it. The runtime has written its inputs to `paths.input`,
/// unless the connector takes them with the start ([`Connector::inline_inputs`]).
#[derive(Clone, Copy)]
pub struct Attempt<'a> {
    /// What to start: execution, node, element, attempt, inputs, the deterministic name.
    pub launch: &'a TaskLaunch,
    /// The task it runs.
    pub task: &'a CompiledTask,
    /// Where its data live.
    pub paths: &'a AttemptPaths,
    /// The store those paths are in (local files, S3).
    pub data: &'a dyn DataStore,
    /// How the attempt can tell the runtime that it ended, when the runtime listens (the serverless
    /// runtime's transitions queue); None where the runtime only polls.
    pub signal: Option<&'a EndSignal>,
}

/// A message the task sends when it ends, so that the runtime checks it at once instead of at its next
/// poll: `body` to the SQS queue at `queue_url` (in `region`), delayed `delay_seconds` (time for the
/// cluster to see the end). The runtime still checks the attempt itself; the message only says when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndSignal {
    /// The queue's URL.
    #[serde(rename = "queue")]
    pub queue_url: String,
    /// Its region.
    pub region: String,
    /// The message body, as the runtime reads it.
    pub body: String,
    /// The message's delay in seconds.
    #[serde(rename = "delay")]
    pub delay_seconds: u32,
}

/// What a start made (a process, Kubernetes objects, a job's id) and where its outcome will be, as the
/// connector needs them to check and abort; stored with the attempt as JSON. A `logs` array of strings
/// in `value` names where the service keeps the attempt's logs; `updraft run` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handle {
    /// The connector that made it ([`Connector::name`]).
    pub connector: String,
    /// The connector's own description of what it made.
    pub value: serde_json::Value,
}

/// What an attempt made outside and where its logs are, as the execution's history keeps them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Described {
    /// The service's name for what it made (a job id, a query's id); empty when that is the attempt's
    /// own name.
    pub external: String,
    /// Where its logs are (log streams, consoles, commands that show them).
    pub logs: Vec<String>,
}

impl Described {
    /// What the common keys of `h` say: the first of `jobId`, `queryExecutionId`, `jobRunId`,
    /// `commandId` and `name` as the external name; a `logs` array and a `uri` as log locations.
    pub fn of(h: &Handle) -> Self {
        let v = &h.value;
        let external = ["jobId", "queryExecutionId", "jobRunId", "commandId", "name"]
            .iter()
            .find_map(|k| match &v[*k] {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .unwrap_or_default();
        let mut logs: Vec<String> = v["logs"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(uri) = v["uri"].as_str() {
            logs.push(uri.to_string());
        }
        Self { external, logs }
    }
}

/// The job a service's state-change event is about (e.g. `batch:<job id>`), as the connector names it
/// when it registers a started job.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobKey(pub String);

/// A passing failure to reach the service: the runtime looks again later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Transient(pub String);

/// One thing wrong with a task's configuration, found before anything starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field, as a path into the task (e.g. `custom.jobQueue`).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

impl Problem {
    /// A problem with `field`.
    pub fn new(field: &str, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The failure of an attempt whose task has `problems` (the user's to fix, not retried), under `code`.
pub fn setup_failed(code: &str, problems: &[Problem]) -> TaskStatus {
    let text: Vec<String> = problems
        .iter()
        .map(|p| format!("{}: {}", p.field, p.reason))
        .collect();
    failed(code, text.join("; "), ErrorKind::User, false)
}

/// A task's `custom` (a `google.protobuf.Struct`) as a JSON object; empty when it has none.
pub fn custom_json(task: &CompiledTask) -> serde_json::Map<String, serde_json::Value> {
    match task
        .template
        .custom
        .as_ref()
        .map(updraft_engine::literal::struct_json)
    {
        Some(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    }
}

/// What `check` finds wrong with the attempt `updraft plan` would show for `task` (see [`plan_launch`]),
/// its data under a placeholder `s3://` prefix: a connector's pre-flight check through the same code
/// its start runs.
pub fn preflight_plan(
    task: &CompiledTask,
    check: impl FnOnce(&Attempt<'_>) -> Vec<Problem>,
) -> Vec<Problem> {
    let launch = plan_launch(task, Default::default(), None);
    let paths = AttemptPaths::under("s3://preflight/p", &launch);
    check(&Attempt {
        launch: &launch,
        task,
        paths: &paths,
        data: &LocalData,
        signal: None,
    })
}

/// Runs task attempts on one system (this machine, a cluster, an AWS service).
#[async_trait::async_trait]
pub trait Connector: Send + Sync {
    /// Its name, recorded in every [`Handle`] it makes.
    fn name(&self) -> &'static str;

    /// Whether it runs `task` (by its type, and for some connectors its target).
    fn serves(&self, task: &CompiledTask) -> bool;

    /// Everything wrong with `task` for this connector; empty when it can run.
    fn preflight(&self, _task: &CompiledTask) -> Vec<Problem> {
        Vec::new()
    }

    /// How long a runtime waits between checks of a running attempt when nothing tells it of a change.
    fn check_interval(&self) -> Duration {
        Duration::from_secs(1)
    }

    /// Starts the attempt, or finds the one already started under its name. `Err` is the status the
    /// attempt ends with at once (a setup error, a refused request).
    async fn start(&self, a: &Attempt<'_>) -> Result<Handle, TaskStatus>;

    /// The attempt's status now, without waiting; on success, with its outputs (read from `data`).
    async fn check(&self, h: &Handle, data: &dyn DataStore) -> Result<TaskStatus, Transient>;

    /// Stops the attempt; what is already gone is fine.
    async fn abort(&self, h: &Handle) -> Result<(), Transient>;

    /// Removes what a finished attempt left (Flyte's `Finalize`), once its end is committed.
    async fn finalize(&self, _h: &Handle) -> Result<(), Transient> {
        Ok(())
    }

    /// Whether attempts' data must live in a remote store (`s3://`) because the service that runs them
    /// reads and writes it there; false for connectors that reach the runtime's local folders.
    fn remote_data(&self) -> bool {
        false
    }

    /// Whether the attempt takes its inputs with its start (for the EKS connector: in the pod's
    /// environment) rather than from `paths.input`; the runtime then writes no inputs file for it (see
    /// [`AttemptPaths::write_inputs`]).
    fn inline_inputs(&self, _a: &Attempt<'_>) -> bool {
        false
    }

    /// The handle a start of `a` will return, when the connector knows it beforehand (the EKS
    /// connector: its objects are named after the attempt), so that a runtime can put it in the
    /// attempt's end signal and check the attempt without looking the handle up.
    fn planned_handle(&self, _a: &Attempt<'_>) -> Option<Handle> {
        None
    }

    /// Whether the attempt `h` started sends the runtime's [`EndSignal`] when it ends, so that polling
    /// it is only a fallback.
    fn signals(&self, _h: &Handle) -> bool {
        false
    }

    /// The job whose state-change events concern the attempt `h` started, so a runtime that receives
    /// such events can check the attempt as soon as one arrives.
    fn watch(&self, _h: &Handle) -> Option<JobKey> {
        None
    }

    /// The job a service's state-change event (an EventBridge event's JSON) is about, if this connector
    /// makes such jobs.
    fn job_of(&self, _event: &serde_json::Value) -> Option<JobKey> {
        None
    }

    /// What the attempt `h` started made outside and where its logs are, for the execution's history
    /// (by default read from `h`'s common keys: [`Described::of`]).
    fn describe(&self, h: &Handle) -> Described {
        Described::of(h)
    }
}

/// An idempotency token of `launch`'s attempt, at most `max_len` (≥ 34) characters: its name (cut to fit)
/// and 32 hex digits of a hash of execution, node, element and attempt — the same for every start of
/// the attempt, different for every other attempt. Services that take a client token (Athena's
/// `ClientRequestToken`, EMR Serverless's `clientToken`) then start an attempt's job once.
pub fn attempt_token(launch: &TaskLaunch, max_len: usize) -> String {
    use sha2::Digest;
    let id = format!(
        "{}/{}/{}/{}",
        launch.execution,
        launch.node_id,
        launch.index.map(|i| i.to_string()).unwrap_or_default(),
        launch.attempt
    );
    let hash = format!("{:x}", sha2::Sha256::digest(id.as_bytes()));
    let keep = max_len.saturating_sub(33);
    let name: String = launch.name.chars().take(keep).collect();
    format!("{name}-{}", &hash[..32])
}

/// A failed status for an attempt that could not start.
pub fn failed(
    code: &str,
    message: impl Into<String>,
    kind: ErrorKind,
    recoverable: bool,
) -> TaskStatus {
    TaskStatus::Failed {
        code: code.into(),
        message: message.into(),
        kind,
        recoverable,
    }
}

/// The attempt `updraft plan` shows: execution `plan`, the task's short name as the node, attempt 0,
/// interruptible as the task says. Inputs not given stand as `<name>` in rendered arguments.
pub fn plan_launch(
    task: &CompiledTask,
    mut inputs: updraft_proto::core::LiteralMap,
    index: Option<u32>,
) -> TaskLaunch {
    for name in task.interface.inputs.keys() {
        inputs.literals.entry(name.clone()).or_insert_with(|| {
            updraft_engine::literal::primitive_lit(
                updraft_proto::core::primitive::Value::StringValue(format!("<{name}>")),
            )
        });
    }
    let execution = "plan".to_string();
    let node_id = "n0".to_string();
    let name = updraft_engine::exec::dns_name(&match index {
        Some(i) => format!("{execution}-{node_id}-{i}-0"),
        None => format!("{execution}-{node_id}-0"),
    });
    let interruptible = task
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.interruptible_value)
        .is_some_and(|updraft_proto::core::task_metadata::InterruptibleValue::Interruptible(i)| i);
    TaskLaunch {
        execution,
        node: 0,
        node_id,
        index,
        attempt: 0,
        task: task.name.clone(),
        inputs: std::sync::Arc::new(inputs),
        name,
        interruptible,
        cache_key: None,
        cache_serializable: false,
        array_size: None,
    }
}

#[cfg(test)]
mod tests {
    use super::{Described, Handle};

    #[test]
    fn a_handle_describes_its_job_and_logs_by_the_common_keys() {
        let h = |value| Handle {
            connector: "x".into(),
            value,
        };
        let d = Described::of(&h(serde_json::json!({
            "jobRunId": "00f1", "applicationId": "app", "logs": ["s3://b/logs/00f1/"],
        })));
        assert_eq!(d.external, "00f1");
        assert_eq!(d.logs, vec!["s3://b/logs/00f1/".to_string()]);
        let d = Described::of(&h(serde_json::json!({
            "commandId": 42, "uri": "https://api.qubole.com/v2/analyze?command_id=42",
        })));
        assert_eq!(d.external, "42");
        assert_eq!(d.logs.len(), 1);
        assert_eq!(
            Described::of(&h(serde_json::json!("r1-n0-0"))),
            Described::default()
        );
    }
}
