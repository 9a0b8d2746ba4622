//! The `athena` connector: each attempt of a `presto` task (flytekit's `AthenaTask`) is an Athena query,
//! as Flyte's Athena plugin runs it; so is each attempt of a `hive` task when the settings choose the
//! `athena` engine (`hive.engine: athena`; the database is the task's cluster label, as in Flyte).
//!
//! - **Start**: `StartQueryExecution` with the statement, database (`schema`), catalog and workgroup
//!   (`routing_group`) each rendered with the task's inputs and the attempt's variables; the workgroup
//!   and catalog default to `athena.workgroup` (`primary`) and `athena.catalog` (`AwsDataCatalog`); the
//!   results go to `athena.outputLocation`, else the attempt's raw output prefix. The request's
//!   `ClientRequestToken` comes from execution, node and attempt, so a start repeated (a redelivered
//!   message, a crash before the commit) gets the query already started and starts none.
//! - **Check**: `GetQueryExecution`. `QUEUED` is queued, `RUNNING` running; `SUCCEEDED` gives the
//!   `results` output (a schema or structured dataset, as declared) pointing at the query's result location (the one Athena reports, which a
//!   workgroup's own setting may have chosen); `FAILED` is a failure with Athena's reason — the system's
//!   when Athena's error category says so, else the user's — retryable as Athena says (Flyte retries
//!   every failure); `CANCELLED` is a retryable failure.
//! - **Abort**: `StopQueryExecution`; a query already ended is fine.
//! - **Events**: `Athena Query State Change` events name the query (`athena:<query execution id>`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use updraft_call::{ATHENA, ApiError, Aws};
use updraft_connector::query::{render_query, results, results_type, type_json, type_of_json};
use updraft_connector::{
    Attempt, Connector, DataStore, Handle, JobKey, Problem, Transient, custom_json, failed,
    preflight_plan, setup_failed,
};
use updraft_engine::compile::CompiledTask;
use updraft_engine::exec::{ErrorKind, TaskLaunch, TaskStatus};
use updraft_engine::plugins::PluginKind;
use updraft_settings::{AthenaSettings, HiveEngine, Settings};

/// The connector's name in handles.
pub const NAME: &str = "athena";

/// Athena's default workgroup.
pub const DEFAULT_WORKGROUP: &str = "primary";

/// Athena's default data catalog.
pub const DEFAULT_CATALOG: &str = "AwsDataCatalog";

/// Runs `presto` tasks (and `hive` tasks on the `athena` engine) as Athena queries.
pub struct AthenaConnector {
    aws: Arc<Aws>,
    settings: AthenaSettings,
    hive: bool,
    /// Why attempts' results cannot go to S3, when no output location is set and data stay local.
    no_s3: Option<String>,
}

/// A query as started.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// The rendered statement.
    pub statement: String,
    /// The database.
    pub database: String,
    /// The data catalog.
    pub catalog: String,
    /// The workgroup.
    pub workgroup: String,
    /// Where results go.
    pub output_location: String,
    /// The idempotency token.
    pub token: String,
    /// The `results` output's type (a schema or a structured dataset), if the task has one.
    pub results: Option<updraft_proto::core::LiteralType>,
}

/// The `ClientRequestToken` of an attempt (32 to 128 characters, as Athena requires).
pub fn token(launch: &TaskLaunch) -> String {
    updraft_connector::attempt_token(launch, 128)
}

impl AthenaConnector {
    /// The connector of `settings` (`athena`, and `hive.engine`), calling Athena with `sdk`'s
    /// credentials under the settings' `aws.region` and `aws.endpoint`.
    pub fn new(sdk: &aws_config::SdkConfig, settings: &Settings) -> Self {
        Self::with_client(Arc::new(Aws::new(sdk, settings)), settings)
    }

    /// The connector of `settings` over an existing client.
    pub fn with_client(aws: Arc<Aws>, settings: &Settings) -> Self {
        Self {
            aws,
            settings: settings.athena.clone(),
            hive: settings.hive.engine == HiveEngine::Athena,
            no_s3: settings.s3_prefix().err(),
        }
    }

    /// The query an attempt starts, or everything wrong with it.
    pub fn query(&self, a: &Attempt<'_>) -> Result<Query, Vec<Problem>> {
        let c = custom_json(a.task);
        let mut problems = Vec::new();
        let render = |text: &str, field: &str, problems: &mut Vec<Problem>| {
            render_query(text, a, field).unwrap_or_else(|p| {
                problems.push(p);
                String::new()
            })
        };
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let (statement, database, catalog, workgroup) = if a.task.plugin == PluginKind::Hive {
            let q = text(&c.get("query").cloned().unwrap_or_default()["query"]);
            if q.is_empty() {
                problems.push(Problem::new(
                    "custom.query.query",
                    "a Hive query is required (flytekit 0.3.0 or later writes it)",
                ));
            }
            let label = text(c.get("clusterLabel").unwrap_or(&Value::Null));
            (
                render(&q, "custom.query.query", &mut problems),
                render(&label, "custom.clusterLabel", &mut problems),
                String::new(),
                String::new(),
            )
        } else {
            let get = |k: &str| text(c.get(k).unwrap_or(&Value::Null));
            let statement = get("statement");
            if statement.trim().is_empty() {
                problems.push(Problem::new("custom.statement", "the query is required"));
            }
            (
                render(&statement, "custom.statement", &mut problems),
                render(&get("schema"), "custom.schema", &mut problems),
                render(&get("catalog"), "custom.catalog", &mut problems),
                render(&get("routingGroup"), "custom.routingGroup", &mut problems),
            )
        };
        if database.is_empty() && problems.is_empty() {
            problems.push(Problem::new(
                if a.task.plugin == PluginKind::Hive {
                    "custom.clusterLabel"
                } else {
                    "custom.schema"
                },
                "the Athena database must not be empty (AthenaConfig(database=…))",
            ));
        }
        let results = match results_type(a.task) {
            Ok(r) => r,
            Err(p) => {
                problems.push(p);
                None
            }
        };
        let output_location = match (&self.settings.output_location, &self.no_s3) {
            (Some(l), _) => l.clone(),
            (None, None) => a.paths.raw_output_prefix.clone(),
            (None, Some(why)) => {
                problems.push(Problem::new(
                    "data.prefix",
                    format!("{why} (or set athena.outputLocation)"),
                ));
                String::new()
            }
        };
        if self.aws.default_region().is_none() {
            problems.push(Problem::new(
                "aws.region",
                "no region: set aws.region in the settings, or AWS_REGION",
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let or = |v: String, setting: &Option<String>, default: &str| {
            if v.is_empty() {
                setting.clone().unwrap_or_else(|| default.to_string())
            } else {
                v
            }
        };
        Ok(Query {
            statement,
            database,
            catalog: or(catalog, &self.settings.catalog, DEFAULT_CATALOG),
            workgroup: or(workgroup, &self.settings.workgroup, DEFAULT_WORKGROUP),
            output_location,
            token: token(a.launch),
            results,
        })
    }

    fn region(&self) -> String {
        self.aws.default_region().unwrap_or_default().to_string()
    }
}

/// The `StartQueryExecution` request of a query.
pub fn request(q: &Query) -> Value {
    json!({
        "QueryString": q.statement,
        "ClientRequestToken": q.token,
        "QueryExecutionContext": {"Database": q.database, "Catalog": q.catalog},
        "ResultConfiguration": {"OutputLocation": q.output_location},
        "WorkGroup": q.workgroup,
    })
}

fn start_failure(e: &ApiError) -> TaskStatus {
    let message = format!("Athena StartQueryExecution: {e}");
    if e.passing() {
        failed("AthenaUnavailable", message, ErrorKind::System, true)
    } else {
        failed("AthenaRefused", message, ErrorKind::User, false)
    }
}

/// The failure of a query that ended `FAILED` or `CANCELLED`, from its `Status`: Athena's error category
/// 1 is the system's, anything else the user's; retryable as Athena's `Retryable` says, and, without
/// it, always (as Flyte's Athena plugin retries every failed query).
pub fn failure(id: &str, status: &Value) -> TaskStatus {
    let state = status["State"].as_str().unwrap_or_default();
    let reason = status["StateChangeReason"]
        .as_str()
        .or_else(|| status["AthenaError"]["ErrorMessage"].as_str())
        .filter(|r| !r.is_empty());
    if state == "CANCELLED" {
        return failed(
            "Aborted",
            format!(
                "the Athena query {id} was cancelled: {}",
                reason.unwrap_or("remote execution was aborted")
            ),
            ErrorKind::User,
            true,
        );
    }
    let e = &status["AthenaError"];
    let kind = if e["ErrorCategory"].as_i64() == Some(1) {
        ErrorKind::System
    } else {
        ErrorKind::User
    };
    let code = match e["ErrorType"].as_i64() {
        Some(t) => format!("AthenaFailed{t}"),
        None => "AthenaFailed".into(),
    };
    failed(
        &code,
        format!(
            "the Athena query {id} failed: {}",
            reason.unwrap_or("remote execution failed")
        ),
        kind,
        e["Retryable"].as_bool().unwrap_or(true),
    )
}

struct Made {
    id: String,
    region: String,
    results: Value,
}

impl Made {
    fn of(h: &Handle) -> Result<Self, Transient> {
        let s = |k: &str| {
            h.value[k]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| Transient(format!("not an athena handle (no {k}): {}", h.value)))
        };
        Ok(Self {
            id: s("queryExecutionId")?,
            region: s("region")?,
            results: h.value["results"].clone(),
        })
    }
}

#[async_trait::async_trait]
impl Connector for AthenaConnector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn serves(&self, task: &CompiledTask) -> bool {
        task.plugin == PluginKind::Athena || (self.hive && task.plugin == PluginKind::Hive)
    }

    fn preflight(&self, task: &CompiledTask) -> Vec<Problem> {
        preflight_plan(task, |a| self.query(a).err().unwrap_or_default())
    }

    fn check_interval(&self) -> Duration {
        Duration::from_secs(2)
    }

    fn remote_data(&self) -> bool {
        self.settings.output_location.is_none()
    }

    async fn start(&self, a: &Attempt<'_>) -> Result<Handle, TaskStatus> {
        let q = self.query(a).map_err(|p| setup_failed("AthenaSetup", &p))?;
        let region = self.region();
        let answer = self
            .aws
            .call(&ATHENA, &region, "StartQueryExecution", &request(&q))
            .await
            .map_err(|e| start_failure(&e))?;
        let id = answer["QueryExecutionId"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                failed(
                    "AthenaFailed",
                    "Athena started a query without an id",
                    ErrorKind::System,
                    true,
                )
            })?;
        Ok(Handle {
            connector: NAME.into(),
            value: json!({
                "queryExecutionId": id,
                "region": region,
                "token": q.token,
                "results": type_json(q.results.as_ref()),
            }),
        })
    }

    async fn check(&self, h: &Handle, _data: &dyn DataStore) -> Result<TaskStatus, Transient> {
        let m = Made::of(h)?;
        let answer = match self
            .aws
            .call(
                &ATHENA,
                &m.region,
                "GetQueryExecution",
                &json!({"QueryExecutionId": m.id}),
            )
            .await
        {
            Ok(a) => a,
            Err(e) if e.code == "InvalidRequestException" && !e.passing() => {
                return Ok(failed(
                    "QueryGone",
                    format!("Athena has no query {}: {e}", m.id),
                    ErrorKind::System,
                    true,
                ));
            }
            Err(e) => return Err(Transient(format!("Athena GetQueryExecution: {e}"))),
        };
        let exec = &answer["QueryExecution"];
        let status = &exec["Status"];
        Ok(match status["State"].as_str().unwrap_or_default() {
            "QUEUED" => TaskStatus::Queued,
            "RUNNING" => TaskStatus::Running,
            "SUCCEEDED" => {
                let location = exec["ResultConfiguration"]["OutputLocation"]
                    .as_str()
                    .unwrap_or_default();
                TaskStatus::Succeeded {
                    outputs: results(type_of_json(&m.results), location),
                    cached: false,
                }
            }
            "FAILED" | "CANCELLED" => failure(&m.id, status),
            other => {
                return Err(Transient(format!(
                    "the Athena query {} is in an unknown state `{other}`",
                    m.id
                )));
            }
        })
    }

    async fn abort(&self, h: &Handle) -> Result<(), Transient> {
        let m = Made::of(h)?;
        match self
            .aws
            .call(
                &ATHENA,
                &m.region,
                "StopQueryExecution",
                &json!({"QueryExecutionId": m.id}),
            )
            .await
        {
            Ok(_) => Ok(()),
            // Ended, or never there: nothing to stop.
            Err(e) if e.code == "InvalidRequestException" => Ok(()),
            Err(e) => Err(Transient(format!("Athena StopQueryExecution: {e}"))),
        }
    }

    fn watch(&self, h: &Handle) -> Option<JobKey> {
        Made::of(h).ok().map(|m| JobKey(format!("athena:{}", m.id)))
    }

    fn job_of(&self, event: &Value) -> Option<JobKey> {
        job_of_event(event)
    }

    /// The query's id, and its page in the Athena console.
    fn describe(&self, h: &Handle) -> updraft_connector::Described {
        let mut d = updraft_connector::Described::of(h);
        if let (Some(r), false) = (h.value["region"].as_str(), d.external.is_empty()) {
            d.logs.push(format!(
                "https://{r}.console.aws.amazon.com/athena/home?region={r}#/query-editor/history/{}",
                d.external
            ));
        }
        d
    }
}

/// The query an `Athena Query State Change` event is about (`athena:<id>`); a free function, so a
/// runtime that only routes events needs no client.
pub fn job_of_event(event: &Value) -> Option<JobKey> {
    if event["source"] != "aws.athena" || event["detail-type"] != "Athena Query State Change" {
        return None;
    }
    let id = event["detail"]["queryExecutionId"]
        .as_str()
        .filter(|s| !s.is_empty())?;
    Some(JobKey(format!("athena:{id}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use updraft_connector::plan_launch;

    #[test]
    fn tokens_are_per_attempt_and_within_athenas_bounds() {
        let mut l = plan_launch(&task(), Default::default(), None);
        let a = token(&l);
        assert!((32..=128).contains(&a.len()), "{a}");
        assert_eq!(a, token(&l));
        l.attempt = 1;
        assert_ne!(a, token(&l));
        l.name = "x".repeat(300);
        assert!(token(&l).len() <= 128);
    }

    fn task() -> CompiledTask {
        CompiledTask {
            name: "q".into(),
            template: Default::default(),
            plugin: PluginKind::Athena,
            interface: Default::default(),
        }
    }

    #[test]
    fn failures_follow_athenas_error() {
        let kind = |s: TaskStatus| match s {
            TaskStatus::Failed {
                code,
                kind,
                recoverable,
                message,
            } => (code, kind, recoverable, message),
            other => panic!("{other:?}"),
        };
        let (code, k, r, m) = kind(failure(
            "q1",
            &json!({"State": "FAILED", "StateChangeReason": "SYNTAX_ERROR: line 1"}),
        ));
        assert_eq!(
            (code.as_str(), k, r),
            ("AthenaFailed", ErrorKind::User, true)
        );
        assert!(m.contains("SYNTAX_ERROR") && m.contains("q1"), "{m}");
        let (_, k, r, _) = kind(failure(
            "q1",
            &json!({"State": "FAILED", "AthenaError": {"ErrorCategory": 1, "ErrorType": 401, "Retryable": false}}),
        ));
        assert_eq!((k, r), (ErrorKind::System, false));
        let (code, _, r, _) = kind(failure("q1", &json!({"State": "CANCELLED"})));
        assert_eq!((code.as_str(), r), ("Aborted", true));
    }

    #[test]
    fn events_name_the_query() {
        let e = json!({"source": "aws.athena", "detail-type": "Athena Query State Change",
                       "detail": {"queryExecutionId": "abc", "currentState": "SUCCEEDED"}});
        assert_eq!(job_of_event(&e), Some(JobKey("athena:abc".into())));
        let other = json!({"source": "aws.batch", "detail-type": "Batch Job State Change",
                           "detail": {"queryExecutionId": "abc"}});
        assert_eq!(job_of_event(&other), None);
    }
}
