//! The query services' connectors (Athena, EMR Serverless, Qubole) against moto and the Qubole API test
//! server, at the connector seam every runtime drives: a start repeated (a redelivered message, a
//! crash before the commit) finds the query, job run or command the first made and starts no second;
//! an abort stops it, a second abort is fine, and the attempt then ends as aborted; nothing is left
//! running. Tasks come from flytekit's `queries` fixture. Needs `UPDRAFT_TEST_MOTO` (set by
//! `scripts/test`).

#![allow(clippy::unwrap_used)]

#[path = "../../batch/tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use support::qubole::Qubole;
use support::{BUCKET, Moto};
use updraft_connector::{Attempt, AttemptPaths, Connector, Handle, Registry};
use updraft_engine::compile::CompiledTask;
use updraft_engine::exec::{TaskLaunch, TaskStatus};
use updraft_engine::{Limits, Package, compile};
use updraft_settings::Settings;

fn task(name: &str) -> CompiledTask {
    let path = support::repo().join("tests/fixtures/flytekit/queries.tgz");
    let pkg = Package::from_tgz(
        "queries.tgz",
        &std::fs::read(path).unwrap(),
        Limits::default(),
    )
    .unwrap();
    compile(&pkg).unwrap().tasks[name].clone()
}

fn launch(t: &CompiledTask, exec: &str) -> TaskLaunch {
    let mut inputs = updraft_proto::core::LiteralMap::default();
    if t.interface.inputs.contains_key("ds") {
        inputs.literals.insert(
            "ds".into(),
            updraft_engine::literal::from_json(&json!("2024-01-01"), &t.interface.inputs["ds"])
                .unwrap(),
        );
    }
    let mut l = updraft_connector::plan_launch(t, inputs, None);
    l.execution = exec.into();
    l.name = format!("{exec}-n0-0");
    l
}

struct Bed {
    moto: Moto,
    registry: Registry,
    data: updraft_aws::blobs::Blobs,
    rt: tokio::runtime::Runtime,
}

impl Bed {
    fn new(more: &str) -> Bed {
        let moto = Moto::start(&[], &[]);
        let settings = Settings::parse("test", &format!("{}{more}", moto.settings())).unwrap();
        let sdk = moto.sdk();
        Bed {
            registry: updraft_connectors::with_services(Registry::new(), &settings, &sdk),
            data: updraft_aws::blobs::Blobs::new(updraft_aws::s3_client(&sdk), BUCKET),
            moto,
            rt: tokio::runtime::Runtime::new().unwrap(),
        }
    }

    fn conn(&self, t: &CompiledTask) -> &Arc<dyn Connector> {
        self.registry.for_task(t).unwrap()
    }

    fn start(&self, t: &CompiledTask, l: &TaskLaunch) -> Handle {
        let paths =
            AttemptPaths::under(&format!("s3://{BUCKET}/runs/executions/{}", l.execution), l);
        let a = Attempt {
            launch: l,
            task: t,
            paths: &paths,
            data: &self.data,
            signal: None,
        };
        self.rt
            .block_on(self.conn(t).start(&a))
            .unwrap_or_else(|s| panic!("{s:?}"))
    }

    /// Aborts twice, then checks until the attempt has ended; its status.
    fn abort_and_end(&self, t: &CompiledTask, h: &Handle) -> TaskStatus {
        let c = self.conn(t);
        self.rt.block_on(c.abort(h)).unwrap();
        self.rt.block_on(c.abort(h)).unwrap();
        for _ in 0..60 {
            match self.rt.block_on(c.check(h, &self.data)).unwrap() {
                TaskStatus::Queued | TaskStatus::Running => {
                    std::thread::sleep(Duration::from_millis(250))
                }
                s => return s,
            }
        }
        panic!("the attempt did not end after its abort")
    }
}

fn aborted(s: &TaskStatus) -> bool {
    matches!(s, TaskStatus::Failed { code, .. } if code == "Aborted")
}

#[test]
fn an_athena_query_starts_once_and_stops_on_abort() {
    let bed = Bed::new("");
    bed.moto.lifecycle(json!({"run_seconds": null}));
    let t = task("athena_count");
    let l = launch(&t, "dup1");
    let first = bed.start(&t, &l);
    let second = bed.start(&t, &l);
    assert_eq!(first, second, "a repeated start gets the same query");
    let ids = bed.moto.boto(
        "print(json.dumps(boto3.client('athena', **kw).list_query_executions()['QueryExecutionIds']))",
        &[],
    );
    assert_eq!(ids.as_array().unwrap().len(), 1, "{ids}");
    assert_eq!(ids[0], first.value["queryExecutionId"]);
    let end = bed.abort_and_end(&t, &first);
    assert!(aborted(&end), "{end:?}");
    let state = bed.moto.boto(
        "print(json.dumps(boto3.client('athena', **kw).get_query_execution(QueryExecutionId=args[0])['QueryExecution']['Status']['State']))",
        &[first.value["queryExecutionId"].as_str().unwrap()],
    );
    assert_eq!(state, "CANCELLED");
    // Another attempt is another query.
    let mut retry = l.clone();
    retry.attempt = 1;
    retry.name = "dup1-n0-1".into();
    assert_ne!(bed.start(&t, &retry), first);
}

#[test]
fn an_emr_serverless_job_run_starts_once_and_is_cancelled_on_abort() {
    let bed = Bed::new("");
    bed.moto.lifecycle(json!({"run_seconds": null}));
    // The task's Spark script runs (as a local process) until the run is cancelled.
    let app = bed.moto.boto(
        "s3 = boto3.client('s3', **kw)\n\
         s3.create_bucket(Bucket='updraft-fixtures')\n\
         s3.put_object(Bucket='updraft-fixtures', Key='scripts/main.py', Body=b'import time; time.sleep(120)')\n\
         print(json.dumps(boto3.client('emr-serverless', **kw).create_application(name='etl-spark', releaseLabel='emr-7.0.0', type='SPARK')['applicationId']))",
        &[],
    );
    let t = task("fixtures.queries.emr_spark_named");
    let l = launch(&t, "dup2");
    let first = bed.start(&t, &l);
    assert_eq!(
        first,
        bed.start(&t, &l),
        "a repeated start gets the same job run"
    );
    assert_eq!(
        first.value["applicationId"], app,
        "the application, found by name"
    );
    let runs = bed.moto.boto(
        "print(json.dumps([r['id'] for r in boto3.client('emr-serverless', **kw).list_job_runs(applicationId=args[0])['jobRuns']]))",
        &[app.as_str().unwrap()],
    );
    assert_eq!(runs, json!([first.value["jobRunId"]]));
    let end = bed.abort_and_end(&t, &first);
    assert!(aborted(&end), "{end:?}");
    let state = bed.moto.boto(
        "print(json.dumps(boto3.client('emr-serverless', **kw).get_job_run(applicationId=args[0], jobRunId=args[1])['jobRun']['state']))",
        &[app.as_str().unwrap(), first.value["jobRunId"].as_str().unwrap()],
    );
    assert_eq!(state, "CANCELLED");
}

#[test]
fn a_qubole_command_is_submitted_once_and_killed_on_abort() {
    let qubole = Qubole::start("tok");
    qubole.configure(json!({"run_seconds": null}));
    let bed = Bed::new(&qubole.settings());
    let t = task("hive_daily");
    let l = launch(&t, "dup3");
    let first = bed.start(&t, &l);
    assert_eq!(
        first,
        bed.start(&t, &l),
        "a repeated start finds the command by name"
    );
    let commands: Vec<Value> = qubole.commands();
    assert_eq!(commands.len(), 1, "{commands:?}");
    let end = bed.abort_and_end(&t, &first);
    assert!(aborted(&end), "{end:?}");
    assert_eq!(qubole.commands()[0]["status"], "cancelled");
}
