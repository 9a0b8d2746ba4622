//! The `aws-batch` connector: each attempt of an `aws-batch` task is an AWS Batch job, as Flyte's AWS
//! Batch plugin runs it.
//!
//! - **Job definition**: made from the task's container image, the job role (`batch.jobRoleArn`) and the
//!   platform (`platformCapabilities`, default `EC2`), named by a hash of the three
//!   (`updraft-<repository>-<hash>`), looked up before it is registered, so every task with the same
//!   three shares one definition.
//! - **Start**: `SubmitJob` to the task container's `dynamic_queue` or the settings' `batch.jobQueue`,
//!   named by the attempt (`<execution>-<node>[-<index>]-<attempt>`), with the rendered container
//!   command and arguments, the environment (the task's, flytekit's `FLYTE_INTERNAL_*`), the resources
//!   as `VCPU` / `MEMORY` / `GPU` requirements, and `parameters`, `tags`, `propagateTags`,
//!   `schedulingPriority`, `retryStrategy` and `timeout` from the task's `AWSBatchConfig`. A start
//!   repeated (a redelivered message, a crash before the commit) finds the job already submitted under
//!   its name (`ListJobs` by name) and submits nothing.
//! - **Check**: `DescribeJobs`; on `SUCCEEDED` the outcome is what the task wrote under its output
//!   prefix (`<outputPrefix>/0` when the arguments say so, as flytekit's Batch tasks do); on `FAILED`, an
//!   `error.pb` decides,
//!   else the status reason and the exit code (see [`failure`]).
//! - **Secrets**: a task's `secret_requests` are Secrets Manager secrets — the group names the secret
//!   (name or ARN), the key a key of its JSON `SecretString` (no key: the whole string), the group
//!   version a version id. At start each is found (`DescribeSecret`: its ARN, never its value; a missing
//!   one fails the attempt before any job, naming it) and becomes a variable of the job definition's
//!   `secrets` (`valueFrom`: `<ARN>:<key>::<version>`), which Batch resolves with
//!   `batch.executionRoleArn` when the container starts: flytekit's `_FSEC_<GROUP>_<KEY>`, and the
//!   request's `env_var` when it names one.
//! - **Abort**: `TerminateJob`; a job already gone is fine.
//! - **Events**: `Batch Job State Change` events name the job (`batch:<job id>`).

pub mod job;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_batch::Client;
use aws_sdk_batch::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_batch::types::{
    ArrayProperties, ContainerOverrides, ContainerProperties, JobDefinitionType, JobStatus,
    JobTimeout, KeyValuePair, KeyValuesPair, PlatformCapability, ResourceRequirement, ResourceType,
    RetryStrategy,
};
use serde_json::{Value, json};
use updraft_connector::plan_launch;
use updraft_connector::secrets::SecretRequest;
use updraft_connector::{
    Attempt, Connector, DataStore, Handle, JobKey, Problem, Transient, failed, read_output_files,
};
use updraft_engine::compile::CompiledTask;
use updraft_engine::exec::outcome::from_output_files;
use updraft_engine::exec::{ErrorKind, TaskStatus};
use updraft_engine::plugins::PluginKind;
use updraft_settings::Settings;

/// The connector's name in handles.
pub const NAME: &str = "aws-batch";

/// The reason a job is terminated with when its attempt is aborted.
pub const ABORT_REASON: &str = "aborted by Updraft";

/// Runs `aws-batch` tasks as AWS Batch jobs.
pub struct BatchConnector {
    client: Client,
    settings: updraft_settings::BatchSettings,
    /// Why attempts cannot have their data in S3 here, if they cannot.
    no_s3: Option<String>,
    /// Job definition name → ARN, as found or registered.
    definitions: Mutex<HashMap<String, String>>,
    /// Secrets Manager, where tasks' secrets are found.
    aws: updraft_call::Aws,
    /// Secret (as a task names it) → ARN, as found.
    secret_arns: Mutex<HashMap<String, String>>,
    /// Array job name → id, as found or submitted here: the elements of one array start together, and
    /// the first submits the array job the others' starts must find (before `ListJobs` shows it).
    arrays: tokio::sync::Mutex<HashMap<String, String>>,
}

impl BatchConnector {
    /// The connector of `settings` (its `batch` section; `data.prefix` must be an `s3://` URI), calling
    /// Batch with `sdk`'s configuration under the settings' `aws.region` and `aws.endpoint` (which win
    /// over the environment's, `AWS_ENDPOINT_URL` included).
    pub fn new(sdk: &aws_config::SdkConfig, settings: &Settings) -> Self {
        let mut conf = aws_sdk_batch::config::Builder::from(sdk);
        if let Some(r) = &settings.aws.region {
            conf = conf.region(aws_config::Region::new(r.clone()));
        }
        if let Some(e) = &settings.aws.endpoint {
            conf = conf.endpoint_url(e);
        }
        Self {
            client: Client::from_conf(conf.build()),
            settings: settings.batch.clone(),
            no_s3: settings.s3_prefix().err(),
            definitions: Mutex::default(),
            aws: updraft_call::Aws::new(sdk, settings),
            secret_arns: Mutex::default(),
            arrays: tokio::sync::Mutex::default(),
        }
    }

    /// The definition's ARN: the one registered under its name, else a new registration.
    async fn definition_arn(&self, d: &job::Definition) -> Result<String, TaskStatus> {
        if let Some(arn) = lock(&self.definitions).get(&d.name) {
            return Ok(arn.clone());
        }
        let found = self
            .client
            .describe_job_definitions()
            .job_definition_name(&d.name)
            .status("ACTIVE")
            .send()
            .await
            .map_err(|e| start_error("DescribeJobDefinitions", e))?;
        let arn = match found
            .job_definitions()
            .iter()
            .max_by_key(|j| j.revision())
            .and_then(|j| j.job_definition_arn().map(str::to_string))
        {
            Some(arn) => arn,
            None => {
                let mut props = ContainerProperties::builder()
                    .image(&d.image)
                    .set_job_role_arn(d.job_role_arn.clone())
                    .set_execution_role_arn(d.execution_role_arn.clone());
                for (name, from) in &d.secrets {
                    props = props.secrets(
                        aws_sdk_batch::types::Secret::builder()
                            .name(name)
                            .value_from(from)
                            .build(),
                    );
                }
                // Overridden by every job; a definition needs some.
                for (t, v) in [(ResourceType::Vcpu, "1"), (ResourceType::Memory, "2048")] {
                    props = props.resource_requirements(
                        ResourceRequirement::builder().r#type(t).value(v).build(),
                    );
                }
                let made = self
                    .client
                    .register_job_definition()
                    .job_definition_name(&d.name)
                    .r#type(JobDefinitionType::Container)
                    .container_properties(props.build())
                    .platform_capabilities(PlatformCapability::from(d.platform.as_str()))
                    .tags("updraft:definition", &d.name)
                    .send()
                    .await
                    .map_err(|e| start_error("RegisterJobDefinition", e))?;
                made.job_definition_arn()
                    .ok_or_else(|| setup("RegisterJobDefinition", "no ARN in the answer"))?
                    .to_string()
            }
        };
        lock(&self.definitions).insert(d.name.clone(), arn.clone());
        Ok(arn)
    }

    /// The ARN of the Secrets Manager secret `r` names (a name or an ARN), looked up once.
    async fn secret_arn(&self, task: &str, r: &SecretRequest) -> Result<String, TaskStatus> {
        if let Some(arn) = lock(&self.secret_arns).get(&r.group) {
            return Ok(arn.clone());
        }
        let arn = self.aws.secret_arn(&r.group).await.map_err(|e| {
            let region = self.aws.secret_region(&r.group);
            updraft_connector::secrets::lookup_failed(
                task,
                r,
                e.code.contains("ResourceNotFound"),
                e.passing(),
                format!("{e} (in {region})"),
            )
        })?;
        lock(&self.secret_arns).insert(r.group.clone(), arn.clone());
        Ok(arn)
    }

    /// The task's secrets as the job definition's variables, `(variable, valueFrom)`.
    async fn secrets(&self, task: &CompiledTask) -> Result<Vec<(String, String)>, TaskStatus> {
        let mut vars = Vec::new();
        for r in updraft_connector::secrets::requests(&task.template) {
            let arn = self.secret_arn(&task.name, &r).await?;
            let from = if r.key.is_empty() && r.group_version.is_empty() {
                arn
            } else {
                format!("{arn}:{}::{}", r.key, r.group_version)
            };
            vars.push((
                r.env_name(updraft_connector::secrets::ENV_PREFIX),
                from.clone(),
            ));
            if !r.env_var.is_empty() {
                vars.push((r.env_var.clone(), from));
            }
        }
        Ok(vars)
    }

    /// The job already submitted under `name` to `queue`, if any (the first, if several).
    async fn submitted(&self, queue: &str, name: &str) -> Result<Option<String>, TaskStatus> {
        let mut token = None;
        let mut best: Option<(i64, String)> = None;
        loop {
            let page = self
                .client
                .list_jobs()
                .job_queue(queue)
                .filters(
                    KeyValuesPair::builder()
                        .name("JOB_NAME")
                        .values(name)
                        .build(),
                )
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| start_error("ListJobs", e))?;
            for j in page.job_summary_list() {
                // (An array job's children carry its name; their ids are `<id>:<index>`.)
                if j.job_name() == Some(name)
                    && let Some(id) = j.job_id().filter(|id| !id.contains(':'))
                {
                    let at = j.created_at().unwrap_or(i64::MAX);
                    if best.as_ref().is_none_or(|(b, _)| at < *b) {
                        best = Some((at, id.to_string()));
                    }
                }
            }
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        Ok(best.map(|(_, id)| id))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn setup(what: &str, e: impl std::fmt::Display) -> TaskStatus {
    failed(
        "BatchSetup",
        format!("{what}: {e}"),
        ErrorKind::System,
        false,
    )
}

/// A failed call while starting: a refused request (a missing queue, a bad parameter, no permission)
/// is the user's to fix; anything else may pass, so the attempt is retryable.
fn start_error<E, R>(call: &str, e: aws_sdk_batch::error::SdkError<E, R>) -> TaskStatus
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let code = e.code().unwrap_or_default().to_string();
    let refused = matches!(
        code.as_str(),
        "ClientException" | "AccessDeniedException" | "AccessDenied" | "ValidationException"
    );
    let message = format!("AWS Batch {call}: {}", DisplayErrorContext(&e));
    if refused {
        failed("BatchRefused", message, ErrorKind::User, false)
    } else {
        failed("BatchUnavailable", message, ErrorKind::System, true)
    }
}

fn transient<E, R>(call: &str, e: aws_sdk_batch::error::SdkError<E, R>) -> Transient
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    Transient(format!("AWS Batch {call}: {}", DisplayErrorContext(&e)))
}

/// What a handle holds.
struct Job<'a> {
    id: &'a str,
    outcome_prefix: &'a str,
}

fn job_of_handle(h: &Handle) -> Result<Job<'_>, Transient> {
    let s = |k: &str| {
        h.value[k]
            .as_str()
            .ok_or_else(|| Transient(format!("not an aws-batch handle (no {k}): {}", h.value)))
    };
    Ok(Job {
        id: s("jobId")?,
        outcome_prefix: s("outcomePrefix")?,
    })
}

/// The failure of a job that ended `FAILED` without an `error.pb`: its exit code is the task's own
/// failure (the user's, retryable), an image that cannot be pulled is the user's to fix, capacity
/// taken away (a host or Spot instance terminated) is the system's and retryable, a timeout is the
/// user's and retryable, and any other reason is the system's and retryable.
pub fn failure(reason: &str, exit_code: Option<i32>, container_reason: &str) -> TaskStatus {
    let said = [reason, container_reason]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(": ");
    let lower = said.to_lowercase();
    if reason == ABORT_REASON {
        return failed("Aborted", said, ErrorKind::User, false);
    }
    if lower.contains("cannotpullcontainer") || lower.contains("cannotinspectcontainer") {
        return failed("ImagePull", said, ErrorKind::User, false);
    }
    if lower.contains("timeout") || lower.contains("duration exceeded") {
        return failed("Timeout", said, ErrorKind::User, true);
    }
    if let Some(code) = exit_code.filter(|c| *c != 0) {
        return failed(
            "ExitCode",
            format!("exit code {code}: {said}"),
            ErrorKind::User,
            true,
        );
    }
    if lower.contains("host ec2") || lower.contains("spot") || lower.contains("terminated") {
        return failed("Interrupted", said, ErrorKind::System, true);
    }
    failed(
        "BatchFailed",
        if said.is_empty() {
            "the job failed without a reason".into()
        } else {
            said
        },
        ErrorKind::System,
        true,
    )
}

#[async_trait::async_trait]
impl Connector for BatchConnector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn serves(&self, task: &CompiledTask) -> bool {
        task.plugin == PluginKind::Batch
    }

    fn preflight(&self, task: &CompiledTask) -> Vec<Problem> {
        let launch = plan_launch(task, Default::default(), None);
        let paths = updraft_connector::AttemptPaths::under("s3://preflight/p", &launch);
        let mut problems = match job::spec(task, &launch, &paths, &self.settings) {
            Ok(_) => Vec::new(),
            Err(p) => p,
        };
        if let Some(why) = &self.no_s3 {
            problems.push(Problem {
                field: "data.prefix".into(),
                reason: why.clone(),
            });
        }
        problems
    }

    fn check_interval(&self) -> Duration {
        Duration::from_secs(2)
    }

    fn remote_data(&self) -> bool {
        true
    }

    async fn start(&self, a: &Attempt<'_>) -> Result<Handle, TaskStatus> {
        let spec = job::spec(a.task, a.launch, a.paths, &self.settings).map_err(|problems| {
            let text: Vec<String> = problems
                .iter()
                .map(|p| format!("{}: {}", p.field, p.reason))
                .collect();
            failed("BatchSetup", text.join("; "), ErrorKind::User, false)
        })?;
        let s = &spec.submit;
        let handle = |id: String| Handle {
            connector: NAME.into(),
            value: json!({
                // An element of an array job is its child `<array job id>:<index>`.
                "jobId": match spec.child {
                    Some(i) => format!("{id}:{i}"),
                    None => id,
                },
                "jobName": s.job_name,
                "jobQueue": s.job_queue,
                "outcomePrefix": spec.outcome_prefix,
            }),
        };
        // The elements of an array start one after another here (and may start together in a local
        // run): one submits, the others find its job.
        let mut arrays = match s.array_size {
            Some(_) => Some(self.arrays.lock().await),
            None => None,
        };
        if let Some(id) = arrays.as_ref().and_then(|a| a.get(&s.job_name)) {
            return Ok(handle(id.clone()));
        }
        if let Some(id) = self.submitted(&s.job_queue, &s.job_name).await? {
            if let Some(a) = arrays.as_mut() {
                a.insert(s.job_name.clone(), id.clone());
            }
            return Ok(handle(id));
        }
        let secrets = self.secrets(a.task).await?;
        let definition = match secrets.is_empty() {
            true => spec.definition.clone(),
            false => spec.definition.clone().with_secrets(secrets),
        };
        let arn = self.definition_arn(&definition).await?;
        let mut overrides = ContainerOverrides::builder().set_command(Some(s.command.clone()));
        for (k, v) in &s.environment {
            overrides = overrides.environment(KeyValuePair::builder().name(k).value(v).build());
        }
        for (t, v) in &s.resources {
            overrides = overrides.resource_requirements(
                ResourceRequirement::builder()
                    .r#type(ResourceType::from(*t))
                    .value(v)
                    .build(),
            );
        }
        let mut req = self
            .client
            .submit_job()
            .job_name(&s.job_name)
            .job_queue(&s.job_queue)
            .job_definition(&arn)
            .container_overrides(overrides.build())
            .set_propagate_tags(s.propagate_tags)
            .set_scheduling_priority_override(s.scheduling_priority);
        for (k, v) in &s.parameters {
            req = req.parameters(k, v);
        }
        for (k, v) in &s.tags {
            req = req.tags(k, v);
        }
        if let Some(n) = s.retry_attempts {
            req = req.retry_strategy(RetryStrategy::builder().attempts(n).build());
        }
        if let Some(n) = s.timeout_seconds {
            req = req.timeout(JobTimeout::builder().attempt_duration_seconds(n).build());
        }
        if let Some(n) = s.array_size {
            req = req.array_properties(ArrayProperties::builder().size(n as i32).build());
        }
        let out = req.send().await.map_err(|e| start_error("SubmitJob", e))?;
        let id = out
            .job_id()
            .ok_or_else(|| setup("SubmitJob", "no job id in the answer"))?;
        if let Some(a) = arrays.as_mut() {
            a.insert(s.job_name.clone(), id.to_string());
        }
        Ok(handle(id.to_string()))
    }

    async fn check(&self, h: &Handle, data: &dyn DataStore) -> Result<TaskStatus, Transient> {
        let j = job_of_handle(h)?;
        let out = self
            .client
            .describe_jobs()
            .jobs(j.id)
            .send()
            .await
            .map_err(|e| transient("DescribeJobs", e))?;
        let Some(detail) = out.jobs().iter().find(|d| d.job_id() == Some(j.id)) else {
            return Ok(failed(
                "JobGone",
                format!(
                    "AWS Batch has no job {} (jobs are kept for a week after they end)",
                    j.id
                ),
                ErrorKind::System,
                true,
            ));
        };
        let Some(status) = detail.status() else {
            return Err(Transient(format!("job {}: no status yet", j.id)));
        };
        match status {
            JobStatus::Submitted
            | JobStatus::Pending
            | JobStatus::Runnable
            | JobStatus::Starting => Ok(TaskStatus::Queued),
            JobStatus::Running => Ok(TaskStatus::Running),
            JobStatus::Succeeded => {
                let files = read_output_files(data, j.outcome_prefix).await?;
                Ok(from_output_files(&files).unwrap_or_else(|| {
                    failed(
                        "NoOutputs",
                        format!(
                            "job {} succeeded but left neither outputs.pb nor error.pb under {}",
                            j.id, j.outcome_prefix
                        ),
                        ErrorKind::System,
                        true,
                    )
                }))
            }
            JobStatus::Failed => {
                let files = read_output_files(data, j.outcome_prefix).await?;
                if files.error.is_some()
                    && let Some(s) = from_output_files(&files)
                {
                    return Ok(s);
                }
                let c = detail.container();
                Ok(failure(
                    detail.status_reason().unwrap_or_default(),
                    c.and_then(|c| c.exit_code()),
                    c.and_then(|c| c.reason()).unwrap_or_default(),
                ))
            }
            other => Err(Transient(format!(
                "job {}: an unknown status {}",
                j.id,
                other.as_str()
            ))),
        }
    }

    async fn abort(&self, h: &Handle) -> Result<(), Transient> {
        let j = job_of_handle(h)?;
        match self
            .client
            .terminate_job()
            .job_id(j.id)
            .reason(ABORT_REASON)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // A job that is gone (or never was) needs no stopping.
            Err(e) if e.code() == Some("ClientException") => Ok(()),
            Err(e) => Err(transient("TerminateJob", e)),
        }
    }

    fn watch(&self, h: &Handle) -> Option<JobKey> {
        job_of_handle(h)
            .ok()
            .map(|j| JobKey(format!("batch:{}", j.id)))
    }

    fn job_of(&self, event: &Value) -> Option<JobKey> {
        job_of_event(event)
    }

    /// The job's id, and its page in the Batch console (which links its CloudWatch log stream once it
    /// runs).
    fn describe(&self, h: &Handle) -> updraft_connector::Described {
        let mut d = updraft_connector::Described::of(h);
        if !d.external.is_empty() {
            let place = updraft_connector::LogPlace::BatchJob {
                region: self.client.config().region().map(|r| r.to_string()),
                job: d.external.clone(),
            };
            d.logs.push(place.to_string());
        }
        d
    }
}

/// The job a `Batch Job State Change` event is about (`batch:<job id>`); a free function, so a runtime
/// that only routes events needs no Batch client.
pub fn job_of_event(event: &Value) -> Option<JobKey> {
    if event["source"] != "aws.batch" || event["detail-type"] != "Batch Job State Change" {
        return None;
    }
    let id = event["detail"]["jobId"]
        .as_str()
        .filter(|s| !s.is_empty())?;
    Some(JobKey(format!("batch:{id}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_classified() {
        let kind = |s: TaskStatus| match s {
            TaskStatus::Failed {
                code,
                kind,
                recoverable,
                ..
            } => (code, kind, recoverable),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            kind(failure("Essential container in task exited", Some(3), "")),
            ("ExitCode".into(), ErrorKind::User, true)
        );
        assert_eq!(
            kind(failure("", None, "CannotPullContainerError: no such image")),
            ("ImagePull".into(), ErrorKind::User, false)
        );
        assert_eq!(
            kind(failure("Host EC2 (instance i-1) terminated.", None, "")),
            ("Interrupted".into(), ErrorKind::System, true)
        );
        assert_eq!(
            kind(failure("Job attempt duration exceeded timeout", None, "")),
            ("Timeout".into(), ErrorKind::User, true)
        );
        assert_eq!(
            kind(failure(ABORT_REASON, None, "")),
            ("Aborted".into(), ErrorKind::User, false)
        );
        assert_eq!(
            kind(failure("", None, "")),
            ("BatchFailed".into(), ErrorKind::System, true)
        );
    }
}
