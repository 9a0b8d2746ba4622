//! The `emr-serverless` connector: each attempt of an `emr_serverless` task (flytekit's
//! `flytekitplugins-awsemrserverless`) is an EMR Serverless job run, as flytekit's connector starts it;
//! so is each attempt of a `hive` task when the settings choose the `emr-serverless` engine
//! (`hive.engine: emr-serverless`).
//!
//! - **Modes** (from the task's `custom`, flytekit's snake_case config):
//!   - Spark script (`spark_job_driver`): `sparkSubmit` with the entry point, its arguments and the
//!     `sparkSubmitParameters` (the task's `spark_submit_parameters` appended, and — unless
//!     `inject_flyte_env` is false — the attempt's `FLYTE_INTERNAL_*` variables as
//!     `spark.emr-serverless.driverEnv.*` / `spark.executorEnv.*`). Succeeds with no outputs, as
//!     flytekit's connector does (a script-mode task that declares outputs is refused before anything
//!     runs).
//!   - Hive script (`hive_job_driver`): `hive` with the query file, init file and parameters.
//!   - Pythonic (no driver): a Spark job whose entry point is Updraft's entry point
//!     ([`ENTRYPOINT`], uploaded once, content-addressed, under the settings' data prefix) and whose
//!     arguments are the task's rendered container arguments; its outputs are the `outputs.pb` it
//!     writes, its failures the `error.pb`.
//!   - A `hive` task on this engine: the query (`query`, or every query of `query_collection` in
//!     order) rendered with the inputs and the attempt's variables, written to the attempt's folder
//!     (`hive-query.sql`) and run as a Hive job on `emrServerless.applicationId` as
//!     `emrServerless.executionRoleArn`; a `HiveSelectTask`'s `results` point at the attempt's raw
//!     output prefix.
//! - **Application**: `application_id`, an id, or — when it does not look like one, or only
//!   `application_name` is given — the name of an existing application, looked up (`ListApplications`).
//!   Its EMR release (`GetApplication`) is kept in the handle; a task's `release_label` that differs is
//!   logged, not refused (the release belongs to the application). Updraft does not create or change
//!   applications (flytekit's connector can, when allowed).
//! - **Start**: `StartJobRun` with the role (`execution_role_arn`, else `emrServerless.executionRoleArn`),
//!   the configuration overrides (`configuration_overrides` with `application_configuration` added),
//!   tags (the task's, `ManagedBy: updraft`, `updraft:attempt`), `execution_timeout_minutes` (60), the
//!   retry policy, the attempt's name, and a `clientToken` from execution, node and attempt: a start
//!   repeated gets the job run already started.
//! - **Check**: `GetJobRun`. `SUBMITTED`, `PENDING`, `SCHEDULED` are queued; `RUNNING` and `CANCELLING`
//!   running; `SUCCESS` succeeds; `FAILED` is the user's failure with EMR's `stateDetails` (retryable, as
//!   Flyte retries connector failures), `CANCELLED` an abort. Each failure names the run's logs.
//! - **Abort**: `CancelJobRun`; a run already ended is fine.
//! - **Events**: `EMR Serverless Job Run State Change` events name the run
//!   (`emr-serverless:<application>/<job run>`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use updraft_call::{ApiError, Aws, EMR_SERVERLESS, path_segment};
use updraft_connector::query::{
    hive_queries, hive_script, render_query, results, results_type, type_json, type_of_json,
};
use updraft_connector::{
    Attempt, Connector, DataStore, Handle, JobKey, LogPlace, Problem, Transient, attempt_token,
    custom_json, failed, preflight_plan, read_output_files, setup_failed,
};
use updraft_engine::compile::CompiledTask;
use updraft_engine::exec::outcome::from_output_files;
use updraft_engine::exec::{ErrorKind, TaskStatus};
use updraft_engine::plugins::PluginKind;
use updraft_engine::template::render_args;
use updraft_proto::core::LiteralMap;
use updraft_proto::core::task_template::Target;
use updraft_settings::{EmrServerlessSettings, HiveEngine, Settings};

/// The connector's name in handles.
pub const NAME: &str = "emr-serverless";

/// The entry point of Pythonic job runs: runs its arguments (the task's command) and exits with its
/// code.
pub const ENTRYPOINT: &str = include_str!("entrypoint.py");

/// The Spark settings of Pythonic job runs, as flytekit's connector sets them (a task's own win).
const PYTHONIC_SPARK_DEFAULTS: &[(&str, &str)] = &[
    (
        "spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON",
        "/usr/bin/python3",
    ),
    (
        "spark.emr-serverless.driverEnv.PYSPARK_PYTHON",
        "/usr/bin/python3",
    ),
    ("spark.executorEnv.PYSPARK_PYTHON", "/usr/bin/python3"),
];

/// Runs `emr_serverless` tasks (and `hive` tasks on the `emr-serverless` engine) as job runs.
pub struct EmrServerlessConnector {
    aws: Arc<Aws>,
    settings: EmrServerlessSettings,
    hive: bool,
    /// The settings' `s3://` data prefix, or why there is none.
    prefix: Result<String, String>,
    /// Application ids by (region, name), as looked up.
    applications: Mutex<HashMap<(String, String), String>>,
}

/// What kind of job run an attempt is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A Spark or Hive script (`spark_job_driver`, `hive_job_driver`): no outputs.
    Script,
    /// The task's own function, through [`ENTRYPOINT`]: outputs from `outputs.pb`.
    Pythonic,
    /// A `hive` task's query: the `results` output, if declared.
    Hive,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Script => "script",
            Self::Pythonic => "pythonic",
            Self::Hive => "hive",
        }
    }
}

/// A job run as an attempt starts it.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// The region.
    pub region: String,
    /// The application: an id, or a name to look up.
    pub application: String,
    /// The `StartJobRun` request (without the application).
    pub request: Value,
    /// The mode.
    pub mode: Mode,
    /// A Hive query to write before the start: (URI, text).
    pub query_file: Option<(String, String)>,
    /// The entry point to make sure of before the start (Pythonic mode).
    pub entrypoint: Option<String>,
    /// Where the task writes outputs.pb / error.pb (Pythonic mode).
    pub output_prefix: Option<String>,
    /// The `results` output of a `hive` task: its type and location.
    pub results: Option<(Option<updraft_proto::core::LiteralType>, String)>,
    /// The EMR release the task was written for (`release_label`), if it names one.
    pub release_label: Option<String>,
}

/// Whether `s` looks like an application id (lower-case letters and digits), as flytekit tells ids
/// from names.
pub fn is_application_id(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

/// The key of the entry point under a data prefix: content-addressed, so each version is its own
/// object and runs started with an older one keep it.
pub fn entrypoint_uri(prefix: &str) -> String {
    let hash = format!("{:x}", Sha256::digest(ENTRYPOINT.as_bytes()));
    format!(
        "{}/updraft/emr-serverless/entrypoint-{}.py",
        prefix.trim_end_matches('/'),
        &hash[..12]
    )
}

/// `--conf` settings as `sparkSubmitParameters` words, skipping values Spark's command line cannot
/// carry (whitespace, `=`, quotes), as flytekit's connector skips them.
fn env_confs(env: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in env {
        if v.is_empty()
            || v.chars()
                .any(|c| c.is_whitespace() || matches!(c, '=' | '\'' | '"'))
        {
            continue;
        }
        out.push(format!("--conf spark.emr-serverless.driverEnv.{k}={v}"));
        out.push(format!("--conf spark.executorEnv.{k}={v}"));
    }
    out
}

/// `user` Spark parameters with flytekit's Pythonic defaults for keys they do not set.
fn with_pythonic_defaults(user: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !user.trim().is_empty() {
        parts.push(user.trim().to_string());
    }
    for (k, v) in PYTHONIC_SPARK_DEFAULTS {
        if !user.contains(k) {
            parts.push(format!("--conf {k}={v}"));
        }
    }
    parts.join(" ")
}

/// A list of Hive tags as EMR tags: `key:value` as key and value, anything else as a key with an
/// empty value.
fn tags_of_list(tags: &[Value]) -> Map<String, Value> {
    let mut out = Map::new();
    for t in tags.iter().filter_map(Value::as_str) {
        match t.split_once(':') {
            Some((k, v)) => out.insert(k.to_string(), Value::from(v)),
            None => out.insert(t.to_string(), Value::from("")),
        };
    }
    out
}

impl EmrServerlessConnector {
    /// The connector of `settings` (`emrServerless`, `hive.engine`, `data.prefix`), calling EMR
    /// Serverless with `sdk`'s credentials under the settings' `aws.region` and `aws.endpoint`.
    pub fn new(sdk: &aws_config::SdkConfig, settings: &Settings) -> Self {
        Self::with_client(Arc::new(Aws::new(sdk, settings)), settings)
    }

    /// The connector of `settings` over an existing client.
    pub fn with_client(aws: Arc<Aws>, settings: &Settings) -> Self {
        Self {
            aws,
            settings: settings.emr_serverless.clone(),
            hive: settings.hive.engine == HiveEngine::EmrServerless,
            prefix: settings.s3_prefix().map(str::to_string),
            applications: Mutex::default(),
        }
    }

    /// The job run an attempt starts, or everything wrong with it.
    pub fn plan(&self, a: &Attempt<'_>) -> Result<Run, Vec<Problem>> {
        let c = custom_json(a.task);
        let mut problems = Vec::new();
        if let Err(why) = &self.prefix {
            problems.push(Problem::new("data.prefix", why.clone()));
        }
        let text = |k: &str| {
            c.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let region = text("region").or_else(|| self.aws.default_region().map(str::to_string));
        if region.is_none() {
            problems.push(Problem::new(
                "custom.region",
                "no region: set it on the task, or aws.region in the settings",
            ));
        }
        let hive = a.task.plugin == PluginKind::Hive;
        let role = if hive {
            self.settings.execution_role_arn.clone()
        } else {
            text("execution_role_arn").or_else(|| self.settings.execution_role_arn.clone())
        };
        if role.is_none() {
            problems.push(Problem::new(
                if hive {
                    "emrServerless.executionRoleArn"
                } else {
                    "custom.execution_role_arn"
                },
                "the role job runs run as is required (or emrServerless.executionRoleArn in the \
                 settings)",
            ));
        }
        let application = if hive {
            self.settings.application_id.clone()
        } else {
            text("application_id").or_else(|| text("application_name"))
        };
        if application.is_none() {
            problems.push(Problem::new(
                if hive {
                    "emrServerless.applicationId"
                } else {
                    "custom.application_id"
                },
                "an existing EMR Serverless application (its id or name) is required; Updraft does \
                 not create applications",
            ));
        }
        let l = a.launch;
        let mut tags = Map::new();
        tags.insert("ManagedBy".into(), Value::from("updraft"));
        let mut mode = Mode::Script;
        let mut query_file = None;
        let mut entrypoint = None;
        let mut output_prefix = None;
        let mut results_out = None;
        let mut overrides = c
            .get("configuration_overrides")
            .cloned()
            .unwrap_or(Value::Null);
        if let Some(Value::Array(conf)) = c.get("application_configuration") {
            if !overrides.is_object() {
                overrides = json!({});
            }
            let merged = overrides
                .get("applicationConfiguration")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .chain(conf.iter().cloned())
                .collect::<Vec<_>>();
            overrides["applicationConfiguration"] = Value::Array(merged);
        }
        let mut timeout = c
            .get("execution_timeout_minutes")
            .and_then(Value::as_f64)
            .map(|m| m as i64)
            .unwrap_or(60);
        let flyte_env = l.flyte_env("updraft", "development");
        let inject = c
            .get("inject_flyte_env")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        let driver = if hive {
            mode = Mode::Hive;
            let job = &c;
            let queries = hive_queries(job);
            if queries.is_empty() {
                problems.push(Problem::new(
                    "custom.query.query",
                    "a Hive query is required (flytekit 0.3.0 or later writes it)",
                ));
            }
            let mut rendered = Vec::new();
            for (field, q) in &queries {
                match render_query(q, a, field) {
                    Ok(t) => rendered.push(t),
                    Err(p) => problems.push(p),
                }
            }
            if let Some(secs) = job
                .get("query")
                .and_then(|q| q["timeoutSec"].as_f64())
                .filter(|s| *s > 0.0)
            {
                timeout = ((secs / 60.0).ceil() as i64).max(5);
            }
            if let Some(Value::Array(t)) = job.get("tags") {
                tags.extend(tags_of_list(t));
            }
            match results_type(a.task) {
                Ok(r) => results_out = Some((r, a.paths.raw_output_prefix.clone())),
                Err(p) => problems.push(p),
            }
            let uri = format!("{}/hive-query.sql", a.paths.dir);
            query_file = Some((uri.clone(), hive_script(&rendered) + "\n"));
            json!({"hive": {"query": uri}})
        } else if let Some(d) = c.get("spark_job_driver").filter(|d| d.is_object()) {
            let mut d = d.clone();
            let mut params: Vec<String> = d["sparkSubmitParameters"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .into_iter()
                .collect();
            if let Some(extra) = text("spark_submit_parameters") {
                params.push(extra);
            }
            if inject {
                params.extend(env_confs(&flyte_env));
            }
            if !params.is_empty() {
                d["sparkSubmitParameters"] = Value::from(params.join(" "));
            }
            if d["entryPoint"].as_str().is_none_or(str::is_empty) {
                problems.push(Problem::new(
                    "custom.spark_job_driver.entryPoint",
                    "the Spark script's S3 location is required",
                ));
            }
            json!({"sparkSubmit": d})
        } else if let Some(d) = c.get("hive_job_driver").filter(|d| d.is_object()) {
            if d["query"].as_str().is_none_or(str::is_empty) {
                problems.push(Problem::new(
                    "custom.hive_job_driver.query",
                    "the Hive query's S3 location is required",
                ));
            }
            json!({"hive": d})
        } else {
            mode = Mode::Pythonic;
            let Some(Target::Container(container)) = &a.task.template.target else {
                problems.push(Problem::new(
                    "container",
                    "a Pythonic EMR Serverless task runs the task's container arguments; it has \
                     none (or give spark_job_driver / hive_job_driver)",
                ));
                return Err(problems);
            };
            let args = match render_args(&container.args, &a.paths.vars(l, "")) {
                Ok(args) => args,
                Err(e) => {
                    problems.push(Problem::new("container.args", e.to_string()));
                    Vec::new()
                }
            };
            let mut env: Vec<(String, String)> = container
                .env
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.clone()))
                .collect();
            if inject {
                env.extend(flyte_env.iter().cloned());
            }
            let mut params = vec![with_pythonic_defaults(
                &text("spark_submit_parameters").unwrap_or_default(),
            )];
            params.extend(env_confs(&env));
            let uri = self
                .prefix
                .as_deref()
                .map(entrypoint_uri)
                .unwrap_or_default();
            entrypoint = Some(uri.clone());
            output_prefix = Some(a.paths.output_prefix.clone());
            json!({"sparkSubmit": {
                "entryPoint": uri,
                "entryPointArguments": args,
                "sparkSubmitParameters": params.join(" "),
            }})
        };
        if mode == Mode::Script
            && let Some(name) = a.task.interface.outputs.keys().next()
        {
            problems.push(Problem::new(
                "interface.outputs",
                format!(
                    "a script-mode EMR Serverless task gives no outputs (as flytekit's connector), \
                     but it declares `{name}`; return nothing, or leave out the job driver to run \
                     the function itself"
                ),
            ));
        }
        if let Some(Value::Object(t)) = c.get("tags") {
            tags.extend(t.clone());
        }
        tags.insert("updraft:attempt".into(), Value::from(l.name.clone()));
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut request = json!({
            "clientToken": attempt_token(l, 64),
            "executionRoleArn": role,
            "jobDriver": driver,
            "tags": tags,
            "executionTimeoutMinutes": timeout,
            "name": l.name,
        });
        if overrides.is_object() {
            request["configurationOverrides"] = overrides;
        }
        if let Some(p) = c.get("retry_policy").filter(|p| p.is_object()) {
            request["retryPolicy"] = p.clone();
        }
        Ok(Run {
            region: region.unwrap_or_default(),
            application: application.unwrap_or_default(),
            request,
            mode,
            query_file,
            entrypoint,
            output_prefix,
            results: results_out,
            release_label: if hive { None } else { text("release_label") },
        })
    }

    /// The application's EMR release, as `GetApplication` reports it (None when it cannot be read:
    /// the start goes on, and `StartJobRun` says what is wrong with the application).
    async fn release_of(&self, region: &str, id: &str) -> Option<String> {
        let path = format!("/applications/{}", path_segment(id));
        let answer = self
            .aws
            .rest(&EMR_SERVERLESS, region, "GET", &path, None)
            .await
            .ok()?;
        answer["application"]["releaseLabel"]
            .as_str()
            .map(str::to_string)
    }

    /// The id of the application `given` names: itself when it is an id, else the id of the
    /// application of that name (not terminated), looked up once.
    async fn application_id(&self, region: &str, given: &str) -> Result<String, TaskStatus> {
        if is_application_id(given) {
            return Ok(given.to_string());
        }
        let key = (region.to_string(), given.to_string());
        if let Some(id) = lock(&self.applications).get(&key) {
            return Ok(id.clone());
        }
        let mut token: Option<String> = None;
        let mut found: Option<(u8, String)> = None;
        loop {
            let mut path = "/applications?maxResults=50".to_string();
            if let Some(t) = &token {
                path.push_str(&format!("&nextToken={}", path_segment(t)));
            }
            let page = self
                .aws
                .rest(&EMR_SERVERLESS, region, "GET", &path, None)
                .await
                .map_err(|e| start_failure("ListApplications", &e))?;
            for app in page["applications"].as_array().into_iter().flatten() {
                if app["name"].as_str() != Some(given) {
                    continue;
                }
                let rank = match app["state"].as_str().unwrap_or_default() {
                    "STARTED" => 0,
                    "CREATED" | "STARTING" | "STOPPED" => 1,
                    "TERMINATED" => continue,
                    _ => 2,
                };
                if let Some(id) = app["id"].as_str()
                    && found.as_ref().is_none_or(|(r, _)| rank < *r)
                {
                    found = Some((rank, id.to_string()));
                }
            }
            token = page["nextToken"]
                .as_str()
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        let Some((_, id)) = found else {
            return Err(failed(
                "EmrServerlessSetup",
                format!(
                    "no EMR Serverless application named `{given}` in {region} (application_id is an \
                     application's id, such as 00fm0lpr3kbcq60p, or the name of an existing one)"
                ),
                ErrorKind::User,
                false,
            ));
        };
        lock(&self.applications).insert(key, id.clone());
        Ok(id)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A refused call while starting is the user's to fix; a passing one is retryable.
fn start_failure(call: &str, e: &ApiError) -> TaskStatus {
    let message = format!("EMR Serverless {call}: {e}");
    if e.passing() {
        failed("EmrServerlessUnavailable", message, ErrorKind::System, true)
    } else {
        failed("EmrServerlessRefused", message, ErrorKind::User, false)
    }
}

/// Where a run's logs are: its CloudWatch log streams (when the run sends its logs to CloudWatch:
/// the group it names, default `/aws/emr-serverless`, streams
/// `[<logStreamNamePrefix>]/applications/<application>/jobs/<run>/…`), its S3 log folder (when it
/// writes them to S3) and its console page.
pub fn log_locations(region: &str, application: &str, run: &str, request: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let monitoring = &request["configurationOverrides"]["monitoringConfiguration"];
    let cloudwatch = &monitoring["cloudWatchLoggingConfiguration"];
    if cloudwatch["enabled"].as_bool() == Some(true) {
        let group = cloudwatch["logGroupName"]
            .as_str()
            .filter(|g| !g.is_empty())
            .unwrap_or("/aws/emr-serverless");
        let prefix = cloudwatch["logStreamNamePrefix"].as_str().unwrap_or("");
        out.push(
            LogPlace::CloudWatch {
                region: region.into(),
                group: group.into(),
                prefix: format!("{prefix}/applications/{application}/jobs/{run}/"),
            }
            .to_string(),
        );
    }
    if let Some(uri) = monitoring["s3MonitoringConfiguration"]["logUri"]
        .as_str()
        .filter(|u| !u.is_empty())
    {
        out.push(format!(
            "{}/applications/{application}/jobs/{run}/",
            uri.trim_end_matches('/')
        ));
    }
    out.push(format!(
        "https://{region}.console.aws.amazon.com/emr/home?region={region}#/serverless/{application}/jobs/{run}"
    ));
    out
}

/// The failure of a run that ended `FAILED` or `CANCELLED`.
pub fn failure(run: &str, state: &str, details: &str, logs: &[String]) -> TaskStatus {
    let said = if details.is_empty() {
        "no details".to_string()
    } else {
        details.to_string()
    };
    let logs = if logs.is_empty() {
        String::new()
    } else {
        format!(" (logs: {})", logs.join(", "))
    };
    if state == "CANCELLED" {
        return failed(
            "Aborted",
            format!("the EMR Serverless job run {run} was cancelled: {said}{logs}"),
            ErrorKind::User,
            true,
        );
    }
    failed(
        "EmrServerlessFailed",
        format!("the EMR Serverless job run {run} failed: {said}{logs}"),
        ErrorKind::User,
        true,
    )
}

struct Made {
    application: String,
    run: String,
    region: String,
    mode: String,
    output_prefix: Option<String>,
    has_outputs: bool,
    results: Value,
    results_uri: String,
    logs: Vec<String>,
}

impl Made {
    fn of(h: &Handle) -> Result<Self, Transient> {
        let v = &h.value;
        let s = |k: &str| {
            v[k].as_str()
                .map(str::to_string)
                .ok_or_else(|| Transient(format!("not an emr-serverless handle (no {k}): {v}")))
        };
        Ok(Self {
            application: s("applicationId")?,
            run: s("jobRunId")?,
            region: s("region")?,
            mode: s("mode")?,
            output_prefix: v["outputPrefix"].as_str().map(str::to_string),
            has_outputs: v["hasOutputs"].as_bool().unwrap_or(false),
            results: v["results"].clone(),
            results_uri: v["resultsUri"].as_str().unwrap_or_default().to_string(),
            logs: v["logs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| l.as_str().map(str::to_string))
                .collect(),
        })
    }

    fn path(&self) -> String {
        format!(
            "/applications/{}/jobruns/{}",
            path_segment(&self.application),
            path_segment(&self.run)
        )
    }
}

#[async_trait::async_trait]
impl Connector for EmrServerlessConnector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn serves(&self, task: &CompiledTask) -> bool {
        task.plugin == PluginKind::EmrServerless || (self.hive && task.plugin == PluginKind::Hive)
    }

    fn preflight(&self, task: &CompiledTask) -> Vec<Problem> {
        preflight_plan(task, |a| self.plan(a).err().unwrap_or_default())
    }

    fn check_interval(&self) -> Duration {
        Duration::from_secs(5)
    }

    fn remote_data(&self) -> bool {
        true
    }

    async fn start(&self, a: &Attempt<'_>) -> Result<Handle, TaskStatus> {
        let run = self
            .plan(a)
            .map_err(|p| setup_failed("EmrServerlessSetup", &p))?;
        let application = self.application_id(&run.region, &run.application).await?;
        // A release label belongs to the application (flytekit uses the task's only to create one):
        // a task written for another release is told, not refused.
        let release = self.release_of(&run.region, &application).await;
        if let (Some(want), Some(have)) = (&run.release_label, &release)
            && want != have
        {
            tracing::warn!(
                attempt = %a.launch.name,
                application = %application,
                "the task names EMR release {want}, its application runs {have}"
            );
        }
        let unreachable = |what: &str, e: Transient| {
            failed(
                "EmrServerlessSetup",
                format!("{what}: {e}"),
                ErrorKind::System,
                true,
            )
        };
        if let Some((uri, text)) = &run.query_file {
            a.data
                .put(uri, text.clone().into_bytes())
                .await
                .map_err(|e| unreachable("writing the Hive query", e))?;
        }
        if let Some(uri) = &run.entrypoint
            && a.data
                .get(uri)
                .await
                .map_err(|e| unreachable("reading the entry point", e))?
                .is_none()
        {
            a.data
                .put(uri, ENTRYPOINT.as_bytes().to_vec())
                .await
                .map_err(|e| unreachable("uploading the entry point", e))?;
        }
        let path = format!("/applications/{}/jobruns", path_segment(&application));
        let answer = self
            .aws
            .rest(
                &EMR_SERVERLESS,
                &run.region,
                "POST",
                &path,
                Some(&run.request),
            )
            .await
            .map_err(|e| start_failure("StartJobRun", &e))?;
        let id = answer["jobRunId"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                failed(
                    "EmrServerlessFailed",
                    "EMR Serverless started a job run without an id",
                    ErrorKind::System,
                    true,
                )
            })?;
        let (results, results_uri) = match &run.results {
            Some((t, uri)) => (type_json(t.as_ref()), uri.clone()),
            None => (Value::Null, String::new()),
        };
        Ok(Handle {
            connector: NAME.into(),
            value: json!({
                "applicationId": application,
                "jobRunId": id,
                "region": run.region,
                "mode": run.mode.name(),
                "outputPrefix": run.output_prefix,
                "hasOutputs": !a.task.interface.outputs.is_empty(),
                "results": results,
                "resultsUri": results_uri,
                "logs": log_locations(&run.region, &application, id, &run.request),
                "releaseLabel": release,
            }),
        })
    }

    async fn check(&self, h: &Handle, data: &dyn DataStore) -> Result<TaskStatus, Transient> {
        let m = Made::of(h)?;
        let answer = match self
            .aws
            .rest(&EMR_SERVERLESS, &m.region, "GET", &m.path(), None)
            .await
        {
            Ok(a) => a,
            Err(e) if e.code == "ResourceNotFoundException" => {
                return Ok(failed(
                    "JobRunGone",
                    format!(
                        "EMR Serverless has no job run {} on application {}: {e}",
                        m.run, m.application
                    ),
                    ErrorKind::System,
                    true,
                ));
            }
            Err(e) => return Err(Transient(format!("EMR Serverless GetJobRun: {e}"))),
        };
        let r = &answer["jobRun"];
        let state = r["state"].as_str().unwrap_or_default();
        let details = r["stateDetails"].as_str().unwrap_or_default();
        let ended = match state {
            "SUBMITTED" | "PENDING" | "SCHEDULED" => return Ok(TaskStatus::Queued),
            "RUNNING" | "CANCELLING" => return Ok(TaskStatus::Running),
            "SUCCESS" => None,
            "FAILED" | "CANCELLED" => Some(failure(&m.run, state, details, &m.logs)),
            other => {
                return Err(Transient(format!(
                    "the EMR Serverless job run {} is in an unknown state `{other}`",
                    m.run
                )));
            }
        };
        if m.mode == Mode::Pythonic.name() {
            let prefix = m.output_prefix.clone().unwrap_or_default();
            let files = read_output_files(data, &prefix).await?;
            if files.error.is_some()
                && let Some(s) = from_output_files(&files)
            {
                return Ok(s);
            }
            if let Some(f) = ended {
                return Ok(f);
            }
            if m.has_outputs && files.outputs.is_none() {
                return Ok(failed(
                    "NoOutputs",
                    format!(
                        "the EMR Serverless job run {} succeeded without writing outputs.pb under \
                         {prefix} (logs: {})",
                        m.run,
                        m.logs.join(", ")
                    ),
                    ErrorKind::User,
                    false,
                ));
            }
            return Ok(from_output_files(&files).unwrap_or(TaskStatus::Succeeded {
                outputs: LiteralMap::default(),
                cached: false,
            }));
        }
        if let Some(f) = ended {
            return Ok(f);
        }
        Ok(TaskStatus::Succeeded {
            outputs: if m.mode == Mode::Hive.name() {
                results(type_of_json(&m.results), &m.results_uri)
            } else {
                LiteralMap::default()
            },
            cached: false,
        })
    }

    async fn abort(&self, h: &Handle) -> Result<(), Transient> {
        let m = Made::of(h)?;
        match self
            .aws
            .rest(&EMR_SERVERLESS, &m.region, "DELETE", &m.path(), None)
            .await
        {
            Ok(_) => Ok(()),
            // Ended (a terminal run cannot be cancelled), or never there: nothing to stop.
            Err(e) if e.code == "ValidationException" || e.code == "ResourceNotFoundException" => {
                Ok(())
            }
            Err(e) => Err(Transient(format!("EMR Serverless CancelJobRun: {e}"))),
        }
    }

    fn watch(&self, h: &Handle) -> Option<JobKey> {
        let m = Made::of(h).ok()?;
        Some(JobKey(format!(
            "emr-serverless:{}/{}",
            m.application, m.run
        )))
    }

    fn job_of(&self, event: &Value) -> Option<JobKey> {
        job_of_event(event)
    }
}

/// The job run an `EMR Serverless Job Run State Change` event is about
/// (`emr-serverless:<application>/<job run>`); a free function, so a runtime that only routes events
/// needs no client.
pub fn job_of_event(event: &Value) -> Option<JobKey> {
    if event["source"] != "aws.emr-serverless"
        || event["detail-type"] != "EMR Serverless Job Run State Change"
    {
        return None;
    }
    let d = &event["detail"];
    let app = d["applicationId"].as_str().filter(|s| !s.is_empty())?;
    let run = d["jobRunId"].as_str().filter(|s| !s.is_empty())?;
    Some(JobKey(format!("emr-serverless:{app}/{run}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_are_told_apart() {
        assert!(is_application_id("00f5abc123def456"));
        assert!(!is_application_id("etl-spark"));
        assert!(!is_application_id("Pythonic"));
        assert!(!is_application_id(""));
    }

    #[test]
    fn pythonic_defaults_yield_to_the_tasks_own() {
        let p = with_pythonic_defaults("--conf spark.executorEnv.PYSPARK_PYTHON=/opt/py");
        assert!(p.starts_with("--conf spark.executorEnv.PYSPARK_PYTHON=/opt/py"));
        assert_eq!(p.matches("spark.executorEnv.PYSPARK_PYTHON").count(), 1);
        assert!(p.contains("driverEnv.PYSPARK_DRIVER_PYTHON=/usr/bin/python3"));
        let confs = env_confs(&[
            ("A".into(), "1".into()),
            ("B".into(), "has space".into()),
            ("C".into(), "x=y".into()),
        ]);
        assert_eq!(
            confs,
            [
                "--conf spark.emr-serverless.driverEnv.A=1",
                "--conf spark.executorEnv.A=1"
            ]
        );
    }

    #[test]
    fn hive_tags_become_emr_tags() {
        let t = tags_of_list(&[json!("daily"), json!("team:ml")]);
        assert_eq!(Value::Object(t), json!({"daily": "", "team": "ml"}));
    }

    #[test]
    fn the_entry_point_is_content_addressed() {
        let a = entrypoint_uri("s3://b/p/");
        assert!(a.starts_with("s3://b/p/updraft/emr-serverless/entrypoint-"));
        assert!(a.ends_with(".py"));
        assert_eq!(a, entrypoint_uri("s3://b/p"));
    }

    #[test]
    fn failures_name_the_logs_and_events_the_run() {
        let logs = log_locations(
            "us-east-1",
            "app1",
            "run1",
            &json!({"configurationOverrides": {"monitoringConfiguration": {"s3MonitoringConfiguration": {"logUri": "s3://b/logs/"}}}}),
        );
        assert_eq!(logs[0], "s3://b/logs/applications/app1/jobs/run1/");
        // With CloudWatch logging on, its streams come first: the default group, or the named one
        // with the streams' prefix.
        let overrides = |cw: Value| json!({"configurationOverrides": {"monitoringConfiguration": {"cloudWatchLoggingConfiguration": cw}}});
        let cw = log_locations(
            "eu-west-1",
            "app1",
            "run1",
            &overrides(json!({"enabled": true})),
        );
        assert_eq!(
            LogPlace::parse(&cw[0]),
            LogPlace::CloudWatch {
                region: "eu-west-1".into(),
                group: "/aws/emr-serverless".into(),
                prefix: "/applications/app1/jobs/run1/".into(),
            }
        );
        let named =
            json!({"enabled": true, "logGroupName": "/etl", "logStreamNamePrefix": "nightly"});
        let cw = log_locations("eu-west-1", "app1", "run1", &overrides(named));
        assert_eq!(
            LogPlace::parse(&cw[0]),
            LogPlace::CloudWatch {
                region: "eu-west-1".into(),
                group: "/etl".into(),
                prefix: "nightly/applications/app1/jobs/run1/".into(),
            }
        );
        let off = log_locations(
            "eu-west-1",
            "app1",
            "run1",
            &overrides(json!({"enabled": false})),
        );
        assert_eq!(off.len(), 1, "{off:?}");
        let TaskStatus::Failed {
            code,
            message,
            kind,
            recoverable,
        } = failure("run1", "FAILED", "Job failed, exit code 1", &logs)
        else {
            panic!()
        };
        assert_eq!(
            (code.as_str(), kind, recoverable),
            ("EmrServerlessFailed", ErrorKind::User, true)
        );
        assert!(
            message.contains("exit code 1")
                && message.contains("s3://b/logs/applications/app1/jobs/run1/")
        );
        let e = json!({"source": "aws.emr-serverless", "detail-type": "EMR Serverless Job Run State Change",
                       "detail": {"applicationId": "app1", "jobRunId": "run1", "state": "SUCCESS"}});
        assert_eq!(
            job_of_event(&e),
            Some(JobKey("emr-serverless:app1/run1".into()))
        );
        assert_eq!(job_of_event(&json!({"source": "aws.athena"})), None);
    }
}
