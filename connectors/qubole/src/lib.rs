//! The `qubole` connector: each attempt of a `hive` task (flytekit's `HiveTask`, `HiveSelectTask`) is a
//! Hive command on Qubole, as Flyte's Qubole plugin drives it — the default engine of `hive` tasks
//! (`hive.engine: qubole`).
//!
//! - **Start**: `POST /api/v1.2/commands` (`command_type: HiveCommand`) with the query — `query`, or
//!   every query of `query_collection` in order, as one command — rendered with the task's inputs and
//!   the attempt's variables (`{{ .PerRetryUniqueKey }}`, `{{ .RawOutputDataPrefix }}`, in any case);
//!   the cluster label (the task's, else `qubole.defaultClusterLabel`, else `default`); the task's tags
//!   with `execution-id:…`, `node-id:…` and `task-name:…` added; the query's `timeout_sec` when set;
//!   and the attempt's name as the command's `name`. Qubole takes no idempotency token, so a start
//!   first looks for a command of that name in the command history (`GET /api/v1.2/commands?name=…`)
//!   and submits only when there is none: a redelivered start finds the command already submitted.
//! - **Token**: `X-AUTH-TOKEN`, from `qubole.token`, or the Secrets Manager secret
//!   `qubole.tokenSecretArn` names (read once); never logged.
//! - **Check**: `GET /api/v1.2/commands/<id>`. `waiting` is queued, `running` running; `done` gives the
//!   `results` output (a schema, or a structured dataset) at the attempt's raw output prefix (where a `HiveSelectTask`'s table
//!   lives), as Flyte does; `error` is the user's failure with the end of the command's log, retryable
//!   as in Flyte; `cancelled` an abort.
//! - **Errors**: a refused token (401, 403) is the user's to fix; Qubole's quota (429) and outages
//!   (5xx, no answer) are the system's and retryable; any other refusal is the user's.
//! - **Abort**: `PUT /api/v1.2/commands/<id>` with `{"status": "kill"}`; a command already ended or
//!   gone is fine.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use updraft_call::{ApiError, Aws, Http, SECRETS_MANAGER, path_segment};
use updraft_connector::query::{
    hive_queries, hive_script, render_query, results, results_type, type_json, type_of_json,
};
use updraft_connector::{
    Attempt, Connector, DataStore, Handle, LogPlace, Problem, Transient, custom_json, failed,
    preflight_plan, setup_failed,
};
use updraft_engine::compile::CompiledTask;
use updraft_engine::exec::{ErrorKind, TaskStatus};
use updraft_engine::plugins::PluginKind;
use updraft_settings::{HiveEngine, QuboleSettings, Settings};

/// The connector's name in handles.
pub const NAME: &str = "qubole";

/// Qubole's API when the settings name none.
pub const DEFAULT_ENDPOINT: &str = "https://api.qubole.com";

/// The commands API.
pub const COMMANDS: &str = "/api/v1.2/commands";

/// The cluster label when neither the task nor the settings name one.
pub const DEFAULT_LABEL: &str = "default";

/// Runs `hive` tasks as Hive commands on Qubole.
pub struct QuboleConnector {
    http: Http,
    aws: Arc<Aws>,
    settings: QuboleSettings,
    enabled: bool,
    /// Why attempts cannot keep their data (the results' location) in S3, if they cannot.
    no_s3: Option<String>,
    token: tokio::sync::Mutex<Option<String>>,
}

/// A Hive command as an attempt submits it.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// The `POST /api/v1.2/commands` request.
    pub request: Value,
    /// The command's name (the attempt's).
    pub name: String,
    /// The `results` output's type, if the task has one.
    pub results: Option<updraft_proto::core::LiteralType>,
    /// Where the results are (the attempt's raw output prefix).
    pub results_uri: String,
}

impl QuboleConnector {
    /// The connector of `settings` (`qubole`, `hive.engine`); `sdk` reads the token's secret.
    pub fn new(sdk: &aws_config::SdkConfig, settings: &Settings) -> Self {
        Self {
            http: Http::default(),
            aws: Arc::new(Aws::new(sdk, settings)),
            settings: settings.qubole.clone(),
            enabled: settings.hive.engine == HiveEngine::Qubole,
            no_s3: settings.s3_prefix().err(),
            token: tokio::sync::Mutex::default(),
        }
    }

    fn endpoint(&self) -> &str {
        self.settings
            .endpoint
            .as_deref()
            .unwrap_or(DEFAULT_ENDPOINT)
            .trim_end_matches('/')
    }

    /// The command an attempt submits, or everything wrong with it.
    pub fn command(&self, a: &Attempt<'_>) -> Result<Command, Vec<Problem>> {
        let c = custom_json(a.task);
        let mut problems = Vec::new();
        let queries = hive_queries(&c);
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
        let results = match results_type(a.task) {
            Ok(r) => r,
            Err(p) => {
                problems.push(p);
                None
            }
        };
        if let Some(why) = &self.no_s3 {
            problems.push(Problem::new("data.prefix", why.clone()));
        }
        if self.settings.token.is_none() && self.settings.token_secret_arn.is_none() {
            problems.push(Problem::new(
                "qubole.token",
                "no Qubole token: set qubole.tokenSecretArn (a Secrets Manager secret holding it) \
                 or qubole.token in the settings",
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let label = c
            .get("clusterLabel")
            .and_then(Value::as_str)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .or_else(|| self.settings.default_cluster_label.clone())
            .unwrap_or_else(|| DEFAULT_LABEL.into());
        let l = a.launch;
        let mut tags: Vec<Value> = c
            .get("tags")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for t in [
            format!("execution-id:{}", l.execution),
            format!("node-id:{}", l.node_id),
            format!("task-name:{}", l.task),
        ] {
            tags.push(Value::from(t));
        }
        let query = if rendered.len() == 1 {
            rendered.remove(0)
        } else {
            hive_script(&rendered)
        };
        let mut request = json!({
            "command_type": "HiveCommand",
            "query": query,
            "label": label,
            "tags": tags,
            "name": l.name,
        });
        let timeout = c
            .get("query")
            .and_then(|q| q["timeoutSec"].as_f64())
            .unwrap_or(0.0);
        if timeout > 0.0 {
            request["timeout"] = Value::from(timeout as u64);
        }
        Ok(Command {
            request,
            name: l.name.clone(),
            results,
            results_uri: a.paths.raw_output_prefix.clone(),
        })
    }

    /// The API token: the settings', or the secret's (read once).
    async fn token(&self) -> Result<String, TaskStatus> {
        if let Some(t) = &self.settings.token {
            return Ok(t.clone());
        }
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref() {
            return Ok(t.clone());
        }
        let Some(arn) = &self.settings.token_secret_arn else {
            return Err(failed(
                "QuboleSetup",
                "no Qubole token: set qubole.tokenSecretArn or qubole.token",
                ErrorKind::User,
                false,
            ));
        };
        let region = arn
            .split(':')
            .nth(3)
            .filter(|r| !r.is_empty())
            .or(self.aws.default_region())
            .unwrap_or_default()
            .to_string();
        let answer = self
            .aws
            .call(
                &SECRETS_MANAGER,
                &region,
                "GetSecretValue",
                &json!({"SecretId": arn}),
            )
            .await
            .map_err(|e| {
                let message = format!("reading the Qubole token from {arn}: {e}");
                if e.passing() {
                    failed("QuboleSetup", message, ErrorKind::System, true)
                } else {
                    failed("QuboleSetup", message, ErrorKind::User, false)
                }
            })?;
        let token = answer["SecretString"]
            .as_str()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                failed(
                    "QuboleSetup",
                    format!("the secret {arn} holds no SecretString (the Qubole token)"),
                    ErrorKind::User,
                    false,
                )
            })?
            .to_string();
        *cached = Some(token.clone());
        Ok(token)
    }

    async fn api(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let url = format!("{}{path}", self.endpoint());
        let bytes = body
            .map(|b| serde_json::to_vec(b).unwrap_or_default())
            .unwrap_or_default();
        let a = self
            .http
            .call(
                method,
                &url,
                &[
                    ("x-auth-token", token),
                    ("content-type", "application/json"),
                    ("accept", "application/json"),
                ],
                bytes,
            )
            .await?;
        if (200..300).contains(&a.status) {
            return Ok(a.json());
        }
        Err(refusal(&a))
    }

    /// The id of the command already submitted under `name`, if any.
    async fn submitted(&self, token: &str, name: &str) -> Result<Option<i64>, ApiError> {
        let path = format!("{COMMANDS}?name={}&per_page=100", path_segment(name));
        let page = self.api("GET", &path, token, None).await?;
        Ok(page["commands"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["name"].as_str() == Some(name))
            .filter_map(|c| c["id"].as_i64())
            .min())
    }

    /// The log of command `id` (`GET /api/v1.2/commands/<id>/logs`), as far as it has been written.
    async fn log(&self, token: &str, id: i64) -> Result<String, ApiError> {
        let url = format!("{}{COMMANDS}/{id}/logs", self.endpoint());
        let a = self
            .http
            .call("GET", &url, &[("x-auth-token", token)], Vec::new())
            .await?;
        if (200..300).contains(&a.status) {
            return Ok(String::from_utf8_lossy(&a.body).into_owned());
        }
        Err(refusal(&a))
    }

    async fn log_tail(&self, token: &str, id: i64) -> String {
        match self.log(token, id).await {
            Ok(text) => {
                let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
                lines[lines.len().saturating_sub(5)..].join(" | ")
            }
            Err(_) => String::new(),
        }
    }

    /// The log of the command `id` that ran on `endpoint`, read with the settings' token; refused when
    /// the settings name another endpoint (the token is sent only where the settings send it).
    pub async fn command_log(&self, endpoint: &str, id: i64) -> Result<String, String> {
        if endpoint.trim_end_matches('/') != self.endpoint() {
            return Err(format!(
                "Qubole command {id} ran on {endpoint}, but the settings' qubole.endpoint is {}",
                self.endpoint()
            ));
        }
        let token = self.token().await.map_err(|s| match s {
            TaskStatus::Failed { message, .. } => message,
            other => format!("{other:?}"),
        })?;
        self.log(&token, id)
            .await
            .map_err(|e| format!("reading the log of Qubole command {id}: {e}"))
    }
}

/// Qubole's refusal `a`: its `error.error_message` (or `message`), else the body.
fn refusal(a: &updraft_call::Answer) -> ApiError {
    let parsed = a.json();
    let message = parsed["error"]["error_message"]
        .as_str()
        .or_else(|| parsed["message"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(&a.body).into_owned());
    ApiError {
        code: format!("HTTP{}", a.status),
        message,
        status: a.status,
    }
}

/// A failed submit: a refused token is the user's to fix, Qubole's quota and outages the system's
/// (retryable), any other refusal the user's.
pub fn submit_failure(e: &ApiError) -> TaskStatus {
    let message = format!("Qubole refused the Hive command: {e}");
    match e.status {
        401 | 403 => failed(
            "QuboleAuth",
            format!("Qubole refused the token ({}): {}", e.status, e.message),
            ErrorKind::User,
            false,
        ),
        429 => failed("QuboleQuota", message, ErrorKind::System, true),
        s if s >= 500 || e.passing() => {
            failed("QuboleUnavailable", message, ErrorKind::System, true)
        }
        _ => failed("QuboleRefused", message, ErrorKind::User, false),
    }
}

struct Made {
    id: i64,
    results: Value,
    results_uri: String,
}

impl Made {
    fn of(h: &Handle) -> Result<Self, Transient> {
        let v = &h.value;
        Ok(Self {
            id: v["commandId"]
                .as_i64()
                .ok_or_else(|| Transient(format!("not a qubole handle (no commandId): {v}")))?,
            results: v["results"].clone(),
            results_uri: v["resultsUri"].as_str().unwrap_or_default().to_string(),
        })
    }
}

#[async_trait::async_trait]
impl Connector for QuboleConnector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn serves(&self, task: &CompiledTask) -> bool {
        self.enabled && task.plugin == PluginKind::Hive
    }

    fn preflight(&self, task: &CompiledTask) -> Vec<Problem> {
        preflight_plan(task, |a| self.command(a).err().unwrap_or_default())
    }

    fn check_interval(&self) -> Duration {
        Duration::from_secs(5)
    }

    /// The cluster writes a query's results (a `HiveSelectTask`'s table) to the attempt's raw output
    /// prefix, in S3.
    fn remote_data(&self) -> bool {
        true
    }

    async fn start(&self, a: &Attempt<'_>) -> Result<Handle, TaskStatus> {
        let cmd = self
            .command(a)
            .map_err(|p| setup_failed("QuboleSetup", &p))?;
        let token = self.token().await?;
        let id = match self
            .submitted(&token, &cmd.name)
            .await
            .map_err(|e| submit_failure(&e))?
        {
            Some(id) => id,
            None => {
                let answer = self
                    .api("POST", COMMANDS, &token, Some(&cmd.request))
                    .await
                    .map_err(|e| submit_failure(&e))?;
                answer["id"].as_i64().ok_or_else(|| {
                    failed(
                        "QuboleFailed",
                        format!("Qubole accepted the command without an id: {answer}"),
                        ErrorKind::System,
                        true,
                    )
                })?
            }
        };
        Ok(Handle {
            connector: NAME.into(),
            value: json!({
                "commandId": id,
                "name": cmd.name,
                "uri": LogPlace::QuboleCommand { endpoint: self.endpoint().into(), id }.to_string(),
                "results": type_json(cmd.results.as_ref()),
                "resultsUri": cmd.results_uri,
            }),
        })
    }

    async fn check(&self, h: &Handle, _data: &dyn DataStore) -> Result<TaskStatus, Transient> {
        let m = Made::of(h)?;
        let token = self
            .token()
            .await
            .map_err(|s| Transient(format!("{s:?}")))?;
        let c = match self
            .api("GET", &format!("{COMMANDS}/{}", m.id), &token, None)
            .await
        {
            Ok(c) => c,
            Err(e) if e.status == 401 || e.status == 403 => {
                return Ok(failed(
                    "QuboleAuth",
                    format!(
                        "Qubole refused the token while checking command {}: {e}",
                        m.id
                    ),
                    ErrorKind::User,
                    false,
                ));
            }
            Err(e) if e.status == 404 => {
                return Ok(failed(
                    "CommandGone",
                    format!("Qubole has no command {}: {e}", m.id),
                    ErrorKind::System,
                    true,
                ));
            }
            Err(e) => return Err(Transient(format!("Qubole command {}: {e}", m.id))),
        };
        let status = c["status"]
            .as_str()
            .unwrap_or_default()
            .to_ascii_lowercase();
        Ok(match status.as_str() {
            "waiting" => TaskStatus::Queued,
            "running" => TaskStatus::Running,
            "done" => TaskStatus::Succeeded {
                outputs: results(type_of_json(&m.results), &m.results_uri),
                cached: false,
            },
            "error" => {
                let log = self.log_tail(&token, m.id).await;
                failed(
                    "QuboleQueryFailed",
                    format!(
                        "the Hive command {} failed on Qubole{}",
                        m.id,
                        if log.is_empty() {
                            String::new()
                        } else {
                            format!(": {log}")
                        }
                    ),
                    ErrorKind::User,
                    true,
                )
            }
            "cancelled" => failed(
                "Aborted",
                format!("the Hive command {} was cancelled on Qubole", m.id),
                ErrorKind::User,
                true,
            ),
            other => failed(
                "QuboleFailed",
                format!(
                    "Qubole answered an unknown status `{other}` for command {}",
                    m.id
                ),
                ErrorKind::System,
                true,
            ),
        })
    }

    async fn abort(&self, h: &Handle) -> Result<(), Transient> {
        let m = Made::of(h)?;
        let token = self
            .token()
            .await
            .map_err(|s| Transient(format!("{s:?}")))?;
        match self
            .api(
                "PUT",
                &format!("{COMMANDS}/{}", m.id),
                &token,
                Some(&json!({"status": "kill"})),
            )
            .await
        {
            Ok(_) => Ok(()),
            // Gone, or ended: nothing to stop.
            Err(e) if e.status == 404 || e.status == 422 => Ok(()),
            Err(e) => Err(Transient(format!("Qubole kill of command {}: {e}", m.id))),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use updraft_connector::{AttemptPaths, LocalData, plan_launch};
    use updraft_proto::core::SimpleType;

    fn hive_task(custom: Value) -> CompiledTask {
        let mut interface = updraft_engine::compile::Interface::default();
        interface.inputs.insert(
            "ds".into(),
            updraft_engine::types::simple(SimpleType::String),
        );
        CompiledTask {
            name: "h".into(),
            template: updraft_proto::core::TaskTemplate {
                r#type: "hive".into(),
                custom: Some(updraft_engine::yaml::plugins::to_struct(&custom)),
                ..Default::default()
            },
            plugin: PluginKind::Hive,
            interface,
        }
    }

    fn connector(settings: &str) -> QuboleConnector {
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        QuboleConnector::new(&sdk, &Settings::parse("t", settings).unwrap())
    }

    #[test]
    fn a_query_collection_is_one_command_of_its_rendered_queries() {
        let c =
            connector("data: {prefix: 's3://b/p'}\nqubole: {token: t, defaultClusterLabel: etl}\n");
        let task = hive_task(json!({
            "queryCollection": {"queries": [
                {"query": "ADD JAR s3://b/udf.jar;"},
                {"query": "INSERT INTO t SELECT * FROM raw WHERE ds = '{{ .inputs.ds }}'", "timeoutSec": 0.0},
            ]},
            "tags": ["nightly"],
        }));
        let mut inputs = updraft_proto::core::LiteralMap::default();
        inputs.literals.insert(
            "ds".into(),
            updraft_engine::literal::from_json(&json!("2024-03-03"), &task.interface.inputs["ds"])
                .unwrap(),
        );
        let launch = plan_launch(&task, inputs, None);
        let paths = AttemptPaths::under("s3://b/p/executions/plan", &launch);
        let a = Attempt {
            launch: &launch,
            task: &task,
            paths: &paths,
            data: &LocalData,
            signal: None,
        };
        let cmd = c.command(&a).unwrap();
        assert_eq!(
            cmd.request["query"],
            "ADD JAR s3://b/udf.jar;\nINSERT INTO t SELECT * FROM raw WHERE ds = '2024-03-03';"
        );
        assert_eq!(cmd.request["label"], "etl", "the settings' default label");
        assert_eq!(cmd.request["tags"][0], "nightly");
        assert_eq!(cmd.request["name"], launch.name.as_str());
        assert!(cmd.request.get("timeout").is_none());
        // Nothing to run, or no token: named.
        let none = c.command(&Attempt {
            task: &hive_task(json!({"clusterLabel": "x"})),
            ..a
        });
        assert_eq!(none.unwrap_err()[0].field, "custom.query.query");
        let no_token = connector("data: {prefix: 's3://b/p'}\n")
            .command(&a)
            .unwrap_err();
        assert_eq!(no_token[0].field, "qubole.token");
    }

    #[test]
    fn submit_failures_are_classified() {
        let e = |status: u16| ApiError {
            code: format!("HTTP{status}"),
            message: "m".into(),
            status,
        };
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
            kind(submit_failure(&e(401))),
            ("QuboleAuth".into(), ErrorKind::User, false)
        );
        assert_eq!(
            kind(submit_failure(&e(429))),
            ("QuboleQuota".into(), ErrorKind::System, true)
        );
        assert_eq!(
            kind(submit_failure(&e(503))),
            ("QuboleUnavailable".into(), ErrorKind::System, true)
        );
        assert_eq!(
            kind(submit_failure(&e(422))),
            ("QuboleRefused".into(), ErrorKind::User, false)
        );
    }
}
