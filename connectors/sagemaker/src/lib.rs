//! SageMaker for Updraft, as flytekit 1.16's `flytekitplugins-awssagemaker` connectors run it:
//!
//! - [`SageMakerConnector`]: `sagemaker-training-job`, `-processing-job`, `-hyperparameter-tuning-job`
//!   and `-transform-job` (the boto3 `create_*` request in `custom.config`, rendered as flytekit renders
//!   it — see [`render`] — then described until it ends; `result` is the dict flytekit's connector
//!   projects from the describe answer), and `sagemaker-endpoint` (`CreateEndpoint`, described until
//!   `InService`; a name already taken is success; `result` = `{EndpointArn}`).
//! - [`PythonicConnector`]: `sagemaker-training-task` and `sagemaker-processing-task`, whose job runs
//!   the task's own rendered command (`ContainerEntrypoint`) in its image; outputs come from the
//!   `outputs.pb` it writes, failures from its `error.pb`. Attempts' data live in S3.
//! - [`BotoConnector`]: `boto`, one synchronous call of a service and method named in `custom`
//!   (`create_model`, `create_endpoint_config`, `describe_endpoint`, SageMaker Runtime's
//!   `invoke_endpoint_async`, …); outputs `result` (the answer) and `idempotence_token`.
//!
//! Requests are sent as the service's JSON-protocol request, signed with the SDK's credentials, as
//! boto3 sends them ([`api`]). A job's name comes from its request (a Pythonic job's from its attempt),
//! and each job is tagged `updraft:attempt`; a start repeated finds the job already made under its
//! name and makes nothing. An abort stops the job (deletes the endpoint), and a job already ended is
//! fine. Each job is watched as `sagemaker:<training|processing|tuning|transform|endpoint>:<name>`, the
//! key its `SageMaker … State Change` events name.

pub use updraft_call as api;
pub mod jobs;
pub mod legacy;
pub mod pyfmt;
pub mod render;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use updraft_connector::{
    Attempt, Connector, DataStore, Handle, JobKey, Problem, Transient, failed, plan_launch,
    read_output_files,
};
use updraft_engine::compile::CompiledTask;
use updraft_engine::exec::outcome::from_output_files;
use updraft_engine::exec::{ErrorKind, TaskLaunch, TaskStatus};
use updraft_engine::literal::from_json;
use updraft_engine::plugins::PluginKind;
use updraft_engine::template::render_args;
use updraft_proto::Message;
use updraft_proto::core::task_template::Target;
use updraft_proto::core::{LiteralMap, SimpleType};
use updraft_settings::Settings;

use crate::api::{ApiError, Aws, SAGEMAKER};
use crate::jobs::{JobKind, Phase};
use crate::render::{Rendered, arguments, images_for, inputs_repr, render, unfillable};

/// The name of [`SageMakerConnector`] in handles.
pub const NAME: &str = "sagemaker";
/// The name of [`PythonicConnector`] in handles.
pub const PYTHONIC: &str = "sagemaker-pythonic";
/// The name of [`BotoConnector`] in handles.
pub const BOTO: &str = "boto";
/// The task type of an endpoint.
pub const ENDPOINT: &str = "sagemaker-endpoint";
/// The tag every job and endpoint Updraft makes carries: the attempt that made it.
pub const ATTEMPT_TAG: &str = "updraft:attempt";

/// The four SageMaker connectors of `settings`, calling AWS with `sdk`'s configuration under the
/// settings' `aws.region` and `aws.endpoint`.
pub fn connectors(sdk: &aws_config::SdkConfig, settings: &Settings) -> [Arc<dyn Connector>; 4] {
    let aws = Arc::new(Aws::new(sdk, settings));
    let role = settings.sagemaker.role_arn.clone();
    [
        Arc::new(legacy::LegacyConnector {
            aws: aws.clone(),
            role: role.clone(),
            algorithms: settings
                .sagemaker
                .prebuilt_algorithms
                .clone()
                .unwrap_or_else(legacy::default_algorithms),
            no_s3: settings.s3_prefix().err(),
        }),
        Arc::new(SageMakerConnector {
            aws: aws.clone(),
            role: role.clone(),
        }),
        Arc::new(PythonicConnector {
            aws: aws.clone(),
            role,
            no_s3: settings.s3_prefix().err(),
        }),
        Arc::new(BotoConnector { aws }),
    ]
}

fn custom(task: &CompiledTask) -> Map<String, Value> {
    updraft_connector::custom_json(task)
}

fn problem(field: &str, reason: impl Into<String>) -> Problem {
    Problem::new(field, reason)
}

fn setup_failure(problems: Vec<Problem>) -> TaskStatus {
    updraft_connector::setup_failed("SageMakerSetup", &problems)
}

/// A refused call while starting is the user's to fix; a passing one is retryable.
fn start_failure(call: &str, e: &ApiError) -> TaskStatus {
    let message = format!("SageMaker {call}: {e}");
    if e.passing() {
        failed("SageMakerUnavailable", message, ErrorKind::System, true)
    } else {
        failed("SageMakerRefused", message, ErrorKind::User, false)
    }
}

fn transient(call: &str, e: &ApiError) -> Transient {
    Transient(format!("SageMaker {call}: {e}"))
}

/// Whether a create was refused because the name is taken.
fn already_exists(e: &ApiError) -> bool {
    e.code == "ResourceInUse"
        || (e.code == "ValidationException" && e.message.contains("Cannot create already existing"))
}

/// Whether a stop or delete was refused because there is nothing left to stop.
fn nothing_to_stop(e: &ApiError) -> bool {
    e.code == "ResourceNotFound"
        || (e.code == "ValidationException"
            && ["non-running", "in status", "Could not find"]
                .iter()
                .any(|t| e.message.contains(t)))
}

/// The failure of a job that ended `Failed` or `Stopped`, as flytekit reports it (a permanent failure
/// with SageMaker's `FailureReason`), except that SageMaker's own trouble (`InternalServerError`, no
/// capacity) is the system's and retryable.
pub fn failure(title: &str, name: &str, status: &str, reason: &str) -> TaskStatus {
    let said = if reason.is_empty() {
        format!("the {title} {name} is {status}")
    } else {
        format!("the {title} {name} is {status}: {reason}")
    };
    let lower = reason.to_lowercase();
    if lower.starts_with("internalservererror")
        || lower.contains("capacityerror")
        || lower.contains("insufficient capacity")
    {
        return failed("SageMakerInternal", said, ErrorKind::System, true);
    }
    if status == "Stopped" {
        return failed("Stopped", said, ErrorKind::User, false);
    }
    failed("SageMakerFailed", said, ErrorKind::User, false)
}

/// The `result` output (a dict) of a connector that answers with JSON.
fn result_outputs(pairs: &[(&str, Value)]) -> LiteralMap {
    let mut out = LiteralMap::default();
    for (k, v) in pairs {
        let t = match v {
            Value::String(_) => updraft_engine::types::simple(SimpleType::String),
            _ => updraft_engine::types::simple(SimpleType::Struct),
        };
        let v = if v.is_object() || v.is_string() {
            v.clone()
        } else {
            json!({})
        };
        if let Ok(l) = from_json(&v, &t) {
            out.literals.insert(k.to_string(), l);
        }
    }
    out
}

/// The region of a call: an input named `region`, else the task's `custom.region`, else the
/// settings' or the SDK's.
fn region_of(
    aws: &Aws,
    custom: &Map<String, Value>,
    inputs: &Map<String, Value>,
) -> Option<String> {
    inputs
        .get("region")
        .and_then(Value::as_str)
        .or_else(|| custom.get("region").and_then(Value::as_str))
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .or_else(|| aws.default_region().map(str::to_string))
}

/// The task's images with their region filled, and a problem for every placeholder of `config` that
/// neither they nor the task's inputs can fill.
fn images_and_gaps(
    task: &CompiledTask,
    custom: &Map<String, Value>,
    config: &Value,
    region: &str,
) -> (Option<Map<String, Value>>, Vec<Problem>) {
    let images = match custom.get("images") {
        Some(Value::Object(i)) => Some(images_for(i, region)),
        _ => None,
    };
    let gaps = unfillable(config, &task.interface.inputs, images.as_ref())
        .into_iter()
        .map(|p| problem("custom.config", p))
        .collect();
    (images, gaps)
}

/// Adds the attempt tag to a request's `Tags`.
fn tag_attempt(request: &mut Value, launch: &TaskLaunch) {
    let tag = json!({"Key": ATTEMPT_TAG, "Value": launch.name});
    match request.get_mut("Tags") {
        Some(Value::Array(a)) => {
            a.retain(|t| t["Key"] != ATTEMPT_TAG);
            a.push(tag);
        }
        _ => request["Tags"] = json!([tag]),
    }
}

/// What a SageMaker job's or endpoint's handle holds.
struct Made {
    /// The task type of the job's kind (`jobs::KINDS`), or of the endpoint.
    kind: String,
    region: String,
    name: String,
    /// Where a job running the task's own command writes `outputs.pb` and `error.pb`.
    output_prefix: Option<String>,
    /// Whether that task has outputs (so its `outputs.pb` must be there).
    has_outputs: bool,
    /// A legacy built-in job's model output: its name, the folder the job's (or best job's) folder is
    /// in, its blob format.
    model: Option<(String, String, String)>,
}

/// A SageMaker attempt's job (or endpoint) and its CloudWatch log streams, for the history: jobs log
/// under `/aws/sagemaker/<kind>` in streams named after the job (a tuning job's training jobs after it),
/// an endpoint under `/aws/sagemaker/Endpoints/<name>`.
pub(crate) fn described(h: &Handle) -> updraft_connector::Described {
    let Ok(m) = Made::of(h) else {
        return updraft_connector::Described::of(h);
    };
    let group = if m.kind == ENDPOINT {
        format!("Endpoints/{}", m.name)
    } else if m.kind.contains("processing") {
        "ProcessingJobs".into()
    } else if m.kind.contains("transform") {
        "TransformJobs".into()
    } else {
        "TrainingJobs".into()
    };
    let place = updraft_connector::LogPlace::CloudWatch {
        region: m.region.clone(),
        group: format!("/aws/sagemaker/{group}"),
        prefix: m.name.clone(),
    };
    updraft_connector::Described {
        logs: vec![place.to_string()],
        external: m.name,
    }
}

impl Made {
    fn handle(&self, connector: &str, token: &str) -> Handle {
        Handle {
            connector: connector.into(),
            value: json!({
                "kind": self.kind,
                "region": self.region,
                "name": self.name,
                "token": token,
                "outputPrefix": self.output_prefix,
                "hasOutputs": self.has_outputs,
                "model": self.model.as_ref().map(|(var, base, format)| json!({
                    "output": var, "base": base, "format": format,
                })),
            }),
        }
    }

    fn of(h: &Handle) -> Result<Self, Transient> {
        let s = |k: &str| {
            h.value[k]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| Transient(format!("not a SageMaker handle (no {k}): {}", h.value)))
        };
        Ok(Self {
            kind: s("kind")?,
            region: s("region")?,
            name: s("name")?,
            output_prefix: h.value["outputPrefix"].as_str().map(str::to_string),
            has_outputs: h.value["hasOutputs"].as_bool().unwrap_or(false),
            model: h.value["model"]["output"].as_str().map(|var| {
                let m = &h.value["model"];
                let text = |k: &str| m[k].as_str().unwrap_or_default().to_string();
                (var.to_string(), text("base"), text("format"))
            }),
        })
    }

    fn key(&self) -> Option<JobKey> {
        let what = if self.kind == ENDPOINT {
            "endpoint"
        } else {
            jobs::kind(&self.kind)?.what
        };
        Some(JobKey(format!("sagemaker:{what}:{}", self.name)))
    }
}

/// The job or endpoint a `SageMaker … State Change` event is about (`sagemaker:<what>:<name>`); a free
/// function, so a runtime that only routes events needs no client.
pub fn job_of_event(event: &Value) -> Option<JobKey> {
    if event["source"] != "aws.sagemaker" {
        return None;
    }
    let (what, field) = match event["detail-type"].as_str()? {
        "SageMaker Training Job State Change" => ("training", "TrainingJobName"),
        "SageMaker Processing Job State Change" => ("processing", "ProcessingJobName"),
        "SageMaker Transform Job State Change" => ("transform", "TransformJobName"),
        "SageMaker HyperParameter Tuning Job State Change" => {
            ("tuning", "HyperParameterTuningJobName")
        }
        "SageMaker Endpoint State Change" => ("endpoint", "EndpointName"),
        _ => return None,
    };
    let name = event["detail"][field].as_str().filter(|s| !s.is_empty())?;
    Some(JobKey(format!("sagemaker:{what}:{name}")))
}

/// Creates a job or endpoint; a name already taken is the job this attempt made when it carries the
/// attempt's tag or was named by `{idempotence_token}` (flytekit's rule), else an error.
async fn create(
    aws: &Aws,
    region: &str,
    kind: &JobKind,
    request: &Value,
    name: &str,
    token: &str,
    launch: &TaskLaunch,
) -> Result<(), TaskStatus> {
    let e = match aws.call(&SAGEMAKER, region, kind.create, request).await {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    if !already_exists(&e) {
        return Err(start_failure(kind.create, &e));
    }
    if !token.is_empty() {
        return Ok(());
    }
    let d = aws
        .call(
            &SAGEMAKER,
            region,
            kind.describe,
            &json!({ kind.name_key: name }),
        )
        .await
        .map_err(|e| start_failure(kind.describe, &e))?;
    let arn_key = format!(
        "{}Arn",
        &kind.name_key[..kind.name_key.len() - "Name".len()]
    );
    let arn = d[&arn_key].as_str().unwrap_or_default();
    let tags = aws
        .call(
            &SAGEMAKER,
            region,
            "ListTags",
            &json!({ "ResourceArn": arn }),
        )
        .await
        .map_err(|e| start_failure("ListTags", &e))?;
    let ours = tags["Tags"].as_array().is_some_and(|t| {
        t.iter()
            .any(|t| t["Key"] == ATTEMPT_TAG && t["Value"] == launch.name.as_str())
    });
    if ours {
        return Ok(());
    }
    Err(failed(
        "NameTaken",
        format!(
            "a SageMaker {} named {name} already exists and this attempt did not make it; name it \
             with {{idempotence_token}} (the same request is then the same job, as in flytekit) or an \
             input",
            kind.title
        ),
        ErrorKind::User,
        false,
    ))
}

/// A job's describe answer; `Err` the status of an attempt whose job SageMaker refuses to describe (gone),
/// and a passing failure to reach it the outer error (look again later).
async fn describe(
    aws: &Aws,
    kind: &JobKind,
    name: &str,
    region: &str,
) -> Result<Result<Value, TaskStatus>, Transient> {
    match aws
        .call(
            &SAGEMAKER,
            region,
            kind.describe,
            &json!({ kind.name_key: name }),
        )
        .await
    {
        Ok(d) => Ok(Ok(d)),
        Err(e) if e.passing() => Err(transient(kind.describe, &e)),
        Err(e) => Ok(Err(failed(
            "JobGone",
            format!("SageMaker {}: {e}", kind.describe),
            ErrorKind::System,
            true,
        ))),
    }
}

/// Calls `op` to stop what a handle names; nothing left to stop is fine.
async fn stop(aws: &Aws, region: &str, op: &str, body: &Value) -> Result<(), Transient> {
    match aws.call(&SAGEMAKER, region, op, body).await {
        Ok(_) => Ok(()),
        Err(e) if nothing_to_stop(&e) => Ok(()),
        Err(e) => Err(transient(op, &e)),
    }
}

/// Stops job `name` of `kind`; one already ended or gone is fine.
async fn stop_job(aws: &Aws, region: &str, kind: &JobKind, name: &str) -> Result<(), Transient> {
    stop(aws, region, kind.stop, &json!({ kind.name_key: name })).await
}

/// Fills a request's role from the settings' `sagemaker.roleArn` where it names none.
fn fill_role(kind: &JobKind, request: &mut Value, role: Option<&str>) {
    let Some(role) = role else { return };
    let at = match kind.what {
        "training" | "processing" => Some(&mut *request),
        "tuning" => request.get_mut("TrainingJobDefinition"),
        _ => None,
    };
    if let Some(Value::Object(m)) = at
        && m.get("RoleArn")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        m.insert("RoleArn".into(), Value::from(role));
    }
}

/// Runs SageMaker jobs from boto3 requests, and endpoints.
pub struct SageMakerConnector {
    aws: Arc<Aws>,
    role: Option<String>,
}

impl SageMakerConnector {
    /// The rendered request of an attempt, its region, and its job's name.
    fn rendered(
        &self,
        task: &CompiledTask,
        launch: &TaskLaunch,
    ) -> Result<(Rendered, String, String), Vec<Problem>> {
        let custom = custom(task);
        let mut problems = Vec::new();
        let Some(config) = custom.get("config").filter(|c| c.is_object()) else {
            return Err(vec![problem(
                "custom.config",
                "the boto3 request is missing (an object is expected)",
            )]);
        };
        let inputs = inputs_repr(&launch.inputs);
        let Some(region) = region_of(&self.aws, &custom, &inputs) else {
            return Err(vec![problem(
                "custom.region",
                "no region: set it on the task, or aws.region in the settings",
            )]);
        };
        let (images, gaps) = images_and_gaps(task, &custom, config, &region);
        problems.extend(gaps);
        if !problems.is_empty() {
            return Err(problems);
        }
        let r = render("sagemaker", config, &arguments(Some(inputs), images))
            .map_err(|e| vec![problem("custom.config", e.to_string())])?;
        let key = if task.template.r#type == ENDPOINT {
            "EndpointName"
        } else {
            jobs::kind(&task.template.r#type).map_or("", |k| k.name_key)
        };
        let name = match &r.request[key] {
            Value::String(s) if !s.is_empty() => s.clone(),
            other => {
                return Err(vec![problem(
                    &format!("custom.config.{key}"),
                    format!("the name is required as text, got {other}"),
                )]);
            }
        };
        Ok((r, region, name))
    }
}

/// Why SageMaker tasks other than Pythonic ones cannot ask for secrets.
const NO_SECRETS: &str = "SageMaker gives a job nothing but environment values, which its description \
     shows in clear, and this job does not run flytekit, which could read them itself: let the job's \
     role read the secret and read it in the job, or make the task a Pythonic one \
     (SageMakerTrainingTask, SageMakerProcessingTask)";

/// The variable of a Pythonic job's environment that names its secrets (JSON: each one's variable,
/// secret, key, version and region; never a value).
pub const SECRETS_VAR: &str = "UPDRAFT_SECRETS";

/// What a Pythonic job with secrets runs before its entrypoint (`python3 -c FETCH_SECRETS <entrypoint…>`):
/// each secret of [`SECRETS_VAR`] read from Secrets Manager with the job's role (botocore, which every
/// flytekit image has), the JSON key's value put in its variable; then the entrypoint, in its place. A
/// secret it cannot read ends the job, naming it, before the task starts.
pub const FETCH_SECRETS: &str = r#"import json, os, sys
import botocore.session
session = botocore.session.get_session()
for s in json.loads(os.environ.pop("UPDRAFT_SECRETS")):
    try:
        client = session.create_client("secretsmanager", region_name=s["region"] or None)
        ask = {"SecretId": s["secret"]}
        if s["version"]:
            ask["VersionId"] = s["version"]
        value = client.get_secret_value(**ask)["SecretString"]
        if s["key"]:
            value = json.loads(value)[s["key"]]
    except Exception as e:
        sys.exit(f"updraft: cannot read secret {s['label']} ({s['secret']}): {type(e).__name__}: {e}")
    os.environ[s["var"]] = value if isinstance(value, str) else json.dumps(value)
os.execvp(sys.argv[1], sys.argv[1:])
"#;

/// The secrets of a Pythonic job, as [`SECRETS_VAR`] names them: flytekit's `_FSEC_…` variable of each,
/// and its request's `env_var` when it names one.
fn secret_refs(secrets: &[updraft_connector::secrets::SecretRequest], region: &str) -> Value {
    let mut refs = Vec::new();
    for r in secrets {
        let mut vars = vec![r.env_name(updraft_connector::secrets::ENV_PREFIX)];
        if !r.env_var.is_empty() {
            vars.push(r.env_var.clone());
        }
        for var in vars {
            refs.push(json!({
                "var": var,
                "secret": r.group,
                "key": r.key,
                "version": r.group_version,
                "region": r
                    .group
                    .strip_prefix("arn:")
                    .and_then(|a| a.split(':').nth(2))
                    .unwrap_or(region),
                "label": r.label(),
            }));
        }
    }
    Value::Array(refs)
}

/// A SageMaker task's secret requests, refused (see [`NO_SECRETS`]).
pub(crate) fn no_secrets(task: &CompiledTask) -> Vec<Problem> {
    updraft_connector::secrets::unsupported(&task.template, NO_SECRETS)
}

#[async_trait::async_trait]
impl Connector for SageMakerConnector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn serves(&self, task: &CompiledTask) -> bool {
        task.plugin == PluginKind::SageMaker
            && (task.template.r#type == ENDPOINT
                || jobs::kind(&task.template.r#type).is_some_and(|k| !k.pythonic))
    }

    fn preflight(&self, task: &CompiledTask) -> Vec<Problem> {
        let launch = plan_launch(task, Default::default(), None);
        let mut problems = match self.rendered(task, &launch) {
            Ok(_) => Vec::new(),
            // Plan inputs stand as `<name>`, which no name check should refuse.
            Err(p) => p,
        };
        problems.extend(no_secrets(task));
        problems
    }

    fn check_interval(&self) -> Duration {
        Duration::from_secs(5)
    }

    async fn start(&self, a: &Attempt<'_>) -> Result<Handle, TaskStatus> {
        let (r, region, name) = self.rendered(a.task, a.launch).map_err(setup_failure)?;
        let mut request = r.request;
        tag_attempt(&mut request, a.launch);
        let task_type = a.task.template.r#type.as_str();
        let made = Made {
            kind: task_type.into(),
            region: region.clone(),
            name: name.clone(),
            output_prefix: None,
            has_outputs: true,
            model: None,
        };
        if task_type == ENDPOINT {
            return match self
                .aws
                .call(&SAGEMAKER, &region, "CreateEndpoint", &request)
                .await
            {
                Ok(_) => Ok(made.handle(NAME, &r.token)),
                Err(e) if already_exists(&e) => Ok(made.handle(NAME, &r.token)),
                Err(e) => Err(start_failure("CreateEndpoint", &e)),
            };
        }
        let kind = jobs::kind(task_type)
            .ok_or_else(|| setup_failure(vec![problem("type", "not a SageMaker job")]))?;
        fill_role(kind, &mut request, self.role.as_deref());
        create(
            &self.aws, &region, kind, &request, &name, &r.token, a.launch,
        )
        .await?;
        Ok(made.handle(NAME, &r.token))
    }

    async fn check(&self, h: &Handle, _data: &dyn DataStore) -> Result<TaskStatus, Transient> {
        let m = Made::of(h)?;
        if m.kind == ENDPOINT {
            return check_endpoint(&self.aws, &m).await;
        }
        let kind = jobs::kind(&m.kind)
            .ok_or_else(|| Transient(format!("an unknown SageMaker job kind {}", m.kind)))?;
        let d = match describe(&self.aws, kind, &m.name, &m.region).await? {
            Ok(d) => d,
            Err(gone) => return Ok(gone),
        };
        let status = d[kind.status_key].as_str().unwrap_or_default();
        match jobs::phase(status) {
            Phase::Running => Ok(TaskStatus::Running),
            Phase::Failed => Ok(failure(
                kind.title,
                &m.name,
                status,
                &jobs::message(kind, &d),
            )),
            Phase::Succeeded => {
                // A tuning job's best training job holds its model artefacts; one SageMaker no longer
                // describes leaves them empty rather than stall the attempt.
                let best = match d["BestTrainingJob"]["TrainingJobName"].as_str() {
                    Some(best) if kind.what == "tuning" => match self
                        .aws
                        .call(
                            &SAGEMAKER,
                            &m.region,
                            "DescribeTrainingJob",
                            &json!({ "TrainingJobName": best }),
                        )
                        .await
                    {
                        Ok(t) => Some(t["ModelArtifacts"]["S3ModelArtifacts"].clone()),
                        Err(e) if e.passing() => return Err(transient("DescribeTrainingJob", &e)),
                        Err(_) => None,
                    },
                    _ => None,
                };
                Ok(TaskStatus::Succeeded {
                    outputs: result_outputs(&[("result", jobs::result(kind, &d, best.as_ref()))]),
                    cached: false,
                })
            }
        }
    }

    async fn abort(&self, h: &Handle) -> Result<(), Transient> {
        let m = Made::of(h)?;
        if m.kind == ENDPOINT {
            let body = json!({"EndpointName": m.name});
            return stop(&self.aws, &m.region, "DeleteEndpoint", &body).await;
        }
        let kind = jobs::kind(&m.kind)
            .ok_or_else(|| Transient(format!("an unknown SageMaker job kind {}", m.kind)))?;
        stop_job(&self.aws, &m.region, kind, &m.name).await
    }

    fn watch(&self, h: &Handle) -> Option<JobKey> {
        Made::of(h).ok()?.key()
    }

    fn describe(&self, h: &Handle) -> updraft_connector::Described {
        described(h)
    }

    fn job_of(&self, event: &Value) -> Option<JobKey> {
        job_of_event(event)
    }
}

/// An endpoint's status: `Creating` and other passing states run, `InService` succeeds with its ARN,
/// `Failed` (and `OutOfService`, `Deleting`) fail with SageMaker's reason.
async fn check_endpoint(aws: &Aws, m: &Made) -> Result<TaskStatus, Transient> {
    let d = match aws
        .call(
            &SAGEMAKER,
            &m.region,
            "DescribeEndpoint",
            &json!({"EndpointName": m.name}),
        )
        .await
    {
        Ok(d) => d,
        Err(e) if e.passing() => return Err(transient("DescribeEndpoint", &e)),
        Err(e) => {
            return Ok(failed(
                "EndpointGone",
                format!(
                    "SageMaker DescribeEndpoint: {e} (the endpoint may not have been made: check \
                     your endpoint quota)"
                ),
                ErrorKind::User,
                false,
            ));
        }
    };
    let status = d["EndpointStatus"].as_str().unwrap_or_default();
    Ok(match status {
        "InService" => TaskStatus::Succeeded {
            outputs: result_outputs(&[("result", json!({"EndpointArn": d["EndpointArn"]}))]),
            cached: false,
        },
        "Failed" | "OutOfService" | "Deleting" | "UpdateRollbackFailed" => failure(
            "endpoint",
            &m.name,
            status,
            d["FailureReason"].as_str().unwrap_or_default(),
        ),
        _ => TaskStatus::Running,
    })
}

/// Runs Pythonic SageMaker jobs: the task's own command in its image, as a training or processing job.
pub struct PythonicConnector {
    aws: Arc<Aws>,
    role: Option<String>,
    no_s3: Option<String>,
}

impl PythonicConnector {
    fn request(&self, a: &Attempt<'_>) -> Result<(Value, String, String), Vec<Problem>> {
        let task = a.task;
        let kind = jobs::kind(&task.template.r#type)
            .filter(|k| k.pythonic)
            .ok_or_else(|| vec![problem("type", "not a Pythonic SageMaker task")])?;
        let mut config = custom(task);
        if config
            .get("execution_role_arn")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
            && let Some(role) = &self.role
        {
            config.insert("execution_role_arn".into(), Value::from(role.clone()));
        }
        let Some(Target::Container(container)) = &task.template.target else {
            return Err(vec![problem(
                "container",
                "a Pythonic SageMaker task runs in a container image; it has none",
            )]);
        };
        let mut problems = Vec::new();
        if container.image.is_empty() {
            problems.push(problem("container.image", "is required"));
        }
        let vars = a.paths.vars(a.launch, "");
        let entrypoint = match render_args(&container.args, &vars) {
            Ok(e) => e,
            Err(e) => {
                problems.push(problem("container.args", e.to_string()));
                Vec::new()
            }
        };
        for (f, r) in jobs::pythonic_problems(&config, &entrypoint) {
            problems.push(problem(&f, r));
        }
        let secrets = updraft_connector::secrets::requests(&task.template);
        problems.extend(updraft_connector::secrets::file_paths_refused(
            &task.template,
            "a SageMaker job",
        ));
        let inputs = inputs_repr(&a.launch.inputs);
        let region = region_of(&self.aws, &config, &inputs);
        if region.is_none() {
            problems.push(problem(
                "custom.region",
                "no region: set it on the task, or aws.region in the settings",
            ));
        }
        if let Some(why) = &self.no_s3 {
            problems.push(problem("data.prefix", why.clone()));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut environment: Map<String, Value> = container
            .env
            .iter()
            .map(|kv| (kv.key.clone(), Value::from(kv.value.clone())))
            .collect();
        for (k, v) in a.launch.flyte_env("updraft", "development") {
            environment.insert(k, Value::from(v));
        }
        if let Some(Value::Object(extra)) = config.get("environment") {
            for (k, v) in extra {
                let v = v.as_str().map_or_else(|| pyfmt::py_str(v), str::to_string);
                environment.insert(k.clone(), Value::from(v));
            }
        }
        environment.insert("FLYTE_FAIL_ON_ERROR".into(), Value::from("true"));
        // Secrets: the job's environment names them (never their values); the container reads them from
        // Secrets Manager with the job's role before the task's command starts.
        let entrypoint = if secrets.is_empty() {
            entrypoint
        } else {
            let region = region.clone().unwrap_or_default();
            environment.insert(
                SECRETS_VAR.into(),
                Value::from(secret_refs(&secrets, &region).to_string()),
            );
            let mut wrapped = vec!["python3".to_string(), "-c".into(), FETCH_SECRETS.into()];
            wrapped.extend(entrypoint);
            wrapped
        };
        let l = a.launch;
        let node = match l.index {
            Some(i) => format!("{}-{i}", l.node_id),
            None => l.node_id.clone(),
        };
        let attempt = if l.attempt > 0 {
            l.attempt.to_string()
        } else {
            String::new()
        };
        let prefix = config
            .get("job_name_prefix")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
            .unwrap_or("flyte-");
        let job_name = jobs::pythonic_job_name(
            prefix,
            &[
                &a.paths.output_prefix,
                &l.execution,
                &node,
                &attempt,
                &l.task,
            ],
        );
        let request = jobs::pythonic_request(
            kind,
            &jobs::Pythonic {
                config: &config,
                image: &container.image,
                entrypoint,
                environment,
                job_name: job_name.clone(),
                output_prefix: &a.paths.output_prefix,
            },
        );
        Ok((request, region.unwrap_or_default(), job_name))
    }
}

#[async_trait::async_trait]
impl Connector for PythonicConnector {
    fn name(&self) -> &'static str {
        PYTHONIC
    }

    fn serves(&self, task: &CompiledTask) -> bool {
        task.plugin == PluginKind::SageMaker
            && jobs::kind(&task.template.r#type).is_some_and(|k| k.pythonic)
    }

    fn preflight(&self, task: &CompiledTask) -> Vec<Problem> {
        updraft_connector::preflight_plan(task, |a| self.request(a).err().unwrap_or_default())
    }

    fn check_interval(&self) -> Duration {
        Duration::from_secs(5)
    }

    fn remote_data(&self) -> bool {
        true
    }

    async fn start(&self, a: &Attempt<'_>) -> Result<Handle, TaskStatus> {
        let (mut request, region, name) = self.request(a).map_err(setup_failure)?;
        // A secret that is not there fails the attempt before any job (found, not read).
        for r in updraft_connector::secrets::requests(&a.task.template) {
            if let Err(e) = self.aws.secret_arn(&r.group).await {
                return Err(updraft_connector::secrets::lookup_failed(
                    &a.task.name,
                    &r,
                    e.code.contains("ResourceNotFound"),
                    e.passing(),
                    format!("{e} (in {})", self.aws.secret_region(&r.group)),
                ));
            }
        }
        tag_attempt(&mut request, a.launch);
        let kind = jobs::kind(&a.task.template.r#type)
            .ok_or_else(|| setup_failure(vec![problem("type", "not a SageMaker job")]))?;
        match self
            .aws
            .call(&SAGEMAKER, &region, kind.create, &request)
            .await
        {
            // The name is the attempt's own: a name taken is this attempt's job.
            Ok(_) => {}
            Err(e) if already_exists(&e) => {}
            Err(e) => return Err(start_failure(kind.create, &e)),
        }
        Ok(Made {
            kind: kind.task_type.into(),
            region,
            name,
            output_prefix: Some(a.paths.output_prefix.clone()),
            has_outputs: !a.task.interface.outputs.is_empty(),
            model: None,
        }
        .handle(PYTHONIC, ""))
    }

    async fn check(&self, h: &Handle, data: &dyn DataStore) -> Result<TaskStatus, Transient> {
        let m = Made::of(h)?;
        let kind = jobs::kind(&m.kind)
            .ok_or_else(|| Transient(format!("an unknown SageMaker job kind {}", m.kind)))?;
        let prefix = m.output_prefix.clone().ok_or_else(|| {
            Transient(format!(
                "a Pythonic handle without its output prefix: {}",
                h.value
            ))
        })?;
        let d = match describe(&self.aws, kind, &m.name, &m.region).await? {
            Ok(d) => d,
            Err(gone) => return Ok(gone),
        };
        let status = d[kind.status_key].as_str().unwrap_or_default();
        let phase = jobs::phase(status);
        if phase == Phase::Running {
            return Ok(TaskStatus::Running);
        }
        // flytekit's pyflyte-execute writes error.pb (and exits 1, FLYTE_FAIL_ON_ERROR): it decides.
        let files = read_output_files(data, &prefix).await?;
        if files.error.is_some()
            && let Some(s) = from_output_files(&files)
        {
            return Ok(s);
        }
        if phase == Phase::Failed {
            return Ok(failure(
                kind.title,
                &m.name,
                status,
                &jobs::message(kind, &d),
            ));
        }
        if m.has_outputs && files.outputs.is_none() {
            return Ok(failed(
                "NoOutputs",
                format!(
                    "the SageMaker {} {} completed without writing outputs.pb under {prefix}",
                    kind.title, m.name
                ),
                ErrorKind::User,
                false,
            ));
        }
        Ok(from_output_files(&files).unwrap_or(TaskStatus::Succeeded {
            outputs: LiteralMap::default(),
            cached: false,
        }))
    }

    async fn abort(&self, h: &Handle) -> Result<(), Transient> {
        let m = Made::of(h)?;
        let kind = jobs::kind(&m.kind)
            .ok_or_else(|| Transient(format!("an unknown SageMaker job kind {}", m.kind)))?;
        stop_job(&self.aws, &m.region, kind, &m.name).await
    }

    fn watch(&self, h: &Handle) -> Option<JobKey> {
        Made::of(h).ok()?.key()
    }

    fn describe(&self, h: &Handle) -> updraft_connector::Described {
        described(h)
    }
}

/// Runs `boto` tasks: one call of any service and method a task names, as flytekit's BotoConnector.
pub struct BotoConnector {
    aws: Arc<Aws>,
}

/// flytekit's pattern for the ARN in an "already existing" message.
fn arn_in(message: &str) -> Option<&str> {
    let start = message.find("arn:aws")?;
    let rest = &message[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '/')))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Numbers under keys that name a time (`…Time`, `…Timestamp`, `…Date`) as ISO text, as a JSON
/// rendering of boto3's datetimes.
fn times_as_text(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, x)| {
                    let timed =
                        k.ends_with("Time") || k.ends_with("Timestamp") || k.ends_with("Date");
                    let x = if timed && x.is_number() {
                        jobs::iso(&x)
                    } else {
                        times_as_text(x)
                    };
                    (k, x)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(times_as_text).collect()),
        other => other,
    }
}

impl BotoConnector {
    fn call_of(
        &self,
        task: &CompiledTask,
        launch: &TaskLaunch,
    ) -> Result<(&'static api::Service, String, String, Rendered), Vec<Problem>> {
        let custom = custom(task);
        let text = |k: &str| custom.get(k).and_then(Value::as_str).unwrap_or_default();
        let mut problems = Vec::new();
        let service = api::service(text("service"));
        if service.is_none() {
            let known: Vec<&str> = api::SERVICES.iter().map(|s| s.name).collect();
            problems.push(problem(
                "custom.service",
                format!(
                    "`{}` is not a service a boto task can call here (one of {})",
                    text("service"),
                    known.join(", ")
                ),
            ));
        }
        let method = text("method");
        if method.is_empty() {
            problems.push(problem(
                "custom.method",
                "is required (a boto3 method name)",
            ));
        }
        let config = custom.get("config").cloned().unwrap_or(json!({}));
        if !config.is_object() {
            problems.push(problem(
                "custom.config",
                "must be an object (the method's arguments)",
            ));
        }
        let inputs = inputs_repr(&launch.inputs);
        let region = region_of(&self.aws, &custom, &inputs);
        if region.is_none() {
            problems.push(problem(
                "custom.region",
                "no region: set it on the task, or aws.region in the settings",
            ));
        }
        let region = region.unwrap_or_default();
        let (images, gaps) = images_and_gaps(task, &custom, &config, &region);
        problems.extend(gaps);
        let Some(service) = service.filter(|_| problems.is_empty()) else {
            return Err(problems);
        };
        let r = render(service.name, &config, &arguments(Some(inputs), images))
            .map_err(|e| vec![problem("custom.config", e.to_string())])?;
        Ok((service, region, api::operation(method), r))
    }
}

#[async_trait::async_trait]
impl Connector for BotoConnector {
    fn name(&self) -> &'static str {
        BOTO
    }

    fn serves(&self, task: &CompiledTask) -> bool {
        task.template.r#type == "boto"
    }

    fn preflight(&self, task: &CompiledTask) -> Vec<Problem> {
        let launch = plan_launch(task, Default::default(), None);
        let mut problems = self.call_of(task, &launch).err().unwrap_or_default();
        problems.extend(no_secrets(task));
        problems
    }

    async fn start(&self, a: &Attempt<'_>) -> Result<Handle, TaskStatus> {
        let (service, region, op, r) = self.call_of(a.task, a.launch).map_err(setup_failure)?;
        let result = match self.aws.call(service, &region, &op, &r.request).await {
            Ok(answer) => {
                let answer = times_as_text(answer);
                match op.as_str() {
                    "CreateModel" => json!({"ModelArn": answer["ModelArn"]}),
                    "CreateEndpointConfig" => {
                        json!({"EndpointConfigArn": answer["EndpointConfigArn"]})
                    }
                    _ if answer.as_object().is_some_and(|m| m.is_empty()) => {
                        json!({"result": null})
                    }
                    _ => answer,
                }
            }
            Err(e)
                if e.code == "ValidationException"
                    && e.message.contains("Cannot create already existing") =>
            {
                match (arn_in(&e.message), op.as_str()) {
                    (Some(arn), "CreateModel") => json!({"ModelArn": arn}),
                    (Some(arn), "CreateEndpointConfig") => json!({"EndpointConfigArn": arn}),
                    (Some(arn), _) => json!({"result": format!("Entity already exists {arn}.")}),
                    (None, _) => json!({"result": "Entity already exists."}),
                }
            }
            Err(e) => {
                return Err(start_failure(&format!("{} {op}", service.name), &e).renamed_for_boto());
            }
        };
        let outputs = result_outputs(&[
            ("result", result),
            ("idempotence_token", Value::from(r.token)),
        ]);
        let uri = format!("{}/outputs.pb", a.paths.output_prefix.trim_end_matches('/'));
        a.data
            .put(&uri, outputs.encode_to_vec())
            .await
            .map_err(|e| failed("OutputsUnwritten", e.0, ErrorKind::System, true))?;
        Ok(Handle {
            connector: BOTO.into(),
            value: json!({"outputPrefix": a.paths.output_prefix}),
        })
    }

    async fn check(&self, h: &Handle, data: &dyn DataStore) -> Result<TaskStatus, Transient> {
        let prefix = h.value["outputPrefix"]
            .as_str()
            .ok_or_else(|| Transient(format!("not a boto handle: {}", h.value)))?;
        let files = read_output_files(data, prefix).await?;
        Ok(from_output_files(&files).unwrap_or_else(|| {
            failed(
                "NoOutputs",
                format!("the call's outputs are not at {prefix}/outputs.pb"),
                ErrorKind::System,
                true,
            )
        }))
    }

    async fn abort(&self, _h: &Handle) -> Result<(), Transient> {
        // The call is over when the start returns.
        Ok(())
    }
}

trait Renamed {
    fn renamed_for_boto(self) -> Self;
}

impl Renamed for TaskStatus {
    /// A boto call's failure is named for the call, not for SageMaker.
    fn renamed_for_boto(self) -> Self {
        match self {
            TaskStatus::Failed {
                code,
                message,
                kind,
                recoverable,
            } => TaskStatus::Failed {
                code: code.replacen("SageMaker", "Boto", 1),
                message: message.replacen("SageMaker ", "", 1),
                kind,
                recoverable,
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_is_described_by_its_name_and_its_log_streams() {
        let made = |kind: &str| Made {
            kind: kind.into(),
            region: "eu-west-1".into(),
            name: "job-1".into(),
            output_prefix: None,
            has_outputs: false,
            model: None,
        };
        let d = described(&made("sagemaker-processing-job").handle(NAME, "t"));
        assert_eq!(d.external, "job-1");
        assert_eq!(
            d.logs,
            vec!["https://eu-west-1.console.aws.amazon.com/cloudwatch/home?region=eu-west-1#logsV2:log-groups/log-group/$252Faws$252Fsagemaker$252FProcessingJobs$3FlogStreamNameFilter$3Djob-1".to_string()]
        );
        let d = described(&made(ENDPOINT).handle(NAME, "t"));
        assert!(
            d.logs[0].contains("$252FEndpoints$252Fjob-1$3F"),
            "{:?}",
            d.logs
        );
        let d = described(&made("sagemaker-training-job").handle(NAME, "t"));
        assert!(d.logs[0].contains("TrainingJobs"), "{:?}", d.logs);
    }

    #[test]
    fn events_name_the_jobs_they_are_about() {
        let e = json!({"source": "aws.sagemaker", "detail-type": "SageMaker Endpoint State Change",
            "detail": {"EndpointName": "xgb", "EndpointStatus": "InService"}});
        assert_eq!(
            job_of_event(&e),
            Some(JobKey("sagemaker:endpoint:xgb".into()))
        );
        let e = json!({"source": "aws.sagemaker", "detail-type": "SageMaker HyperParameter Tuning Job State Change",
            "detail": {"HyperParameterTuningJobName": "t"}});
        assert_eq!(job_of_event(&e), Some(JobKey("sagemaker:tuning:t".into())));
        let e =
            json!({"source": "aws.batch", "detail-type": "Batch Job State Change", "detail": {}});
        assert_eq!(job_of_event(&e), None);
    }

    #[test]
    fn failures_are_the_users_unless_sagemaker_failed() {
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
            kind(failure(
                "training job",
                "t",
                "Failed",
                "AlgorithmError: exit 1"
            )),
            ("SageMakerFailed".into(), ErrorKind::User, false)
        );
        assert_eq!(
            kind(failure(
                "training job",
                "t",
                "Failed",
                "InternalServerError: oops"
            )),
            ("SageMakerInternal".into(), ErrorKind::System, true)
        );
        assert_eq!(
            kind(failure("training job", "t", "Stopped", "")),
            ("Stopped".into(), ErrorKind::User, false)
        );
    }

    #[test]
    fn an_arn_is_found_in_an_already_existing_message() {
        assert_eq!(
            arn_in(
                "Cannot create already existing model \"arn:aws:sagemaker:us-east-1:1:model/m\"."
            ),
            Some("arn:aws:sagemaker:us-east-1:1:model/m")
        );
        assert_eq!(arn_in("nothing"), None);
    }

    #[test]
    fn times_become_text_and_the_rest_stays() {
        let v = times_as_text(json!({"CreationTime": 0, "Count": 1, "Nested": [{"EndTime": 0.5}]}));
        assert_eq!(v["CreationTime"], json!("1970-01-01T00:00:00+00:00"));
        assert_eq!(v["Count"], json!(1));
        assert_eq!(
            v["Nested"][0]["EndTime"],
            json!("1970-01-01T00:00:00.500000+00:00")
        );
    }

    #[test]
    fn the_attempt_tag_is_added_once() {
        let launch = TaskLaunch {
            execution: "e".into(),
            node: 0,
            node_id: "n0".into(),
            index: None,
            attempt: 0,
            task: "t".into(),
            inputs: Default::default(),
            name: "e-n0-0".into(),
            interruptible: false,
            cache_key: None,
            cache_serializable: false,
            array_size: None,
        };
        let mut r = json!({"Tags": [{"Key": "team", "Value": "ml"}]});
        tag_attempt(&mut r, &launch);
        tag_attempt(&mut r, &launch);
        assert_eq!(r["Tags"].as_array().map(Vec::len), Some(2));
        let mut r = json!({});
        tag_attempt(&mut r, &launch);
        assert_eq!(r["Tags"][0]["Key"], json!(ATTEMPT_TAG));
    }
}
