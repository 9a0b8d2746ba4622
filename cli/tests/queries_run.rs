//! `updraft run --settings` with the query services: flytekit's `queries` fixtures run against moto
//! (Athena queries and EMR Serverless job runs through their lifecycles, Pythonic job runs as local
//! processes of the flytekit environment) and the Qubole API test server (`tests/qubole-server`), their
//! data in moto's S3. Each test asserts the exact requests (query text after rendering, database,
//! workgroup, cluster label, tags, job driver, application), the outputs flytekit's plugins give, and
//! that failures end with the service's reason. Needs `UPDRAFT_TEST_MOTO` and `UPDRAFT_TEST_PYTHON`
//! (set by `scripts/test`).

#![allow(clippy::unwrap_used)]

mod common;
#[path = "../../connectors/batch/tests/support/mod.rs"]
mod support;

use common::{execution_of, fixture_src, flytekit_python, temp_dir, updraft_env};
use serde_json::{Value, json};
use std::path::Path;
use support::qubole::Qubole;

const EMR_ROLE: &str = "arn:aws:iam::123456789012:role/EMRServerlessRole";

fn start_moto() -> support::Moto {
    let bin = flytekit_python().parent().unwrap().to_path_buf();
    support::Moto::start(&[bin], &[fixture_src()])
}

/// Runs a workflow of the `queries` fixture with moto's settings and `more` after them; (exit code,
/// stdout, stderr).
fn run(moto: &support::Moto, dir: &Path, workflow: &str, more: &str) -> (i32, String, String) {
    run_file(
        moto,
        dir,
        "tests/fixtures/flytekit/queries.tgz",
        &format!("fixtures.queries.{workflow}"),
        more,
    )
}

/// Runs `workflow` of `file` with moto's settings and `more` after them.
fn run_file(
    moto: &support::Moto,
    dir: &Path,
    file: &str,
    workflow: &str,
    more: &str,
) -> (i32, String, String) {
    let settings = dir.join("settings.yaml");
    std::fs::write(&settings, format!("{}{more}", moto.settings())).unwrap();
    let state = dir.join("state");
    updraft_env(
        &[
            "run",
            file,
            "-w",
            workflow,
            "--settings",
            settings.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--python",
            flytekit_python().to_str().unwrap(),
        ],
        &[
            ("AWS_ACCESS_KEY_ID", "testing".as_ref()),
            ("AWS_SECRET_ACCESS_KEY", "testing".as_ref()),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9".as_ref()),
        ],
    )
}

/// `updraft ui` on the local store and settings of `dir` (as `run` wrote them), with moto's identity.
fn console_of(dir: &Path, env: &[(&str, &std::ffi::OsStr)]) -> common::Console {
    let mut all: Vec<(&str, &std::ffi::OsStr)> = vec![
        ("AWS_ACCESS_KEY_ID", "testing".as_ref()),
        ("AWS_SECRET_ACCESS_KEY", "testing".as_ref()),
    ];
    all.extend_from_slice(env);
    common::Console::start(
        &[
            "--state-dir",
            dir.join("state").to_str().unwrap(),
            "--settings",
            dir.join("settings.yaml").to_str().unwrap(),
        ],
        &all,
    )
}

/// The first readable log of `node`'s last attempt on its page: (label, source).
fn node_log(console: &common::Console, exec: &str, node: &str) -> (String, String) {
    let (code, _, page) = console.get(&format!("/executions/{exec}/nodes/{node}"));
    assert_eq!(code, 200, "{page}");
    common::log_sources(&page)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no log to read on {node}'s page: {page}"))
}

fn raw_prefix(exec: &str, node: &str, attempt: u32) -> String {
    format!(
        "s3://{}/runs/executions/{exec}/{node}/{attempt}/raw",
        support::BUCKET
    )
}

/// Every Athena query moto has, oldest first, as `GetQueryExecution` describes it.
fn athena_queries(moto: &support::Moto) -> Vec<Value> {
    let v = moto.boto(
        "a = boto3.client('athena', **kw)\n\
         ids = a.list_query_executions()['QueryExecutionIds']\n\
         print(json.dumps([a.get_query_execution(QueryExecutionId=i)['QueryExecution'] for i in ids], default=str))",
        &[],
    );
    let mut all = v.as_array().cloned().unwrap();
    all.sort_by_key(|q| {
        q["Status"]["SubmissionDateTime"]
            .as_str()
            .unwrap_or("")
            .to_string()
    });
    all
}

#[test]
fn athena_queries_run_with_flytes_request_and_results() {
    let moto = start_moto();
    let dir = temp_dir("athena-run");
    let (code, out, err) = run(&moto, &dir, "athena_wf", "");
    assert_eq!(code, 0, "{err}");
    let exec = execution_of(&err);
    let queries = athena_queries(&moto);
    assert_eq!(queries.len(), 1, "{queries:?}");
    let q = &queries[0];
    assert_eq!(
        q["Query"],
        "SELECT count(*) FROM events WHERE ds = '2024-01-01'"
    );
    assert_eq!(
        q["QueryExecutionContext"],
        json!({"Database": "analytics", "Catalog": "AwsDataCatalog"})
    );
    assert_eq!(q["WorkGroup"], "primary");
    // The results are where Athena says it wrote them: `<OutputLocation>/<id>.csv`.
    let location = format!(
        "{}/{}.csv",
        raw_prefix(&exec, "n0", 0),
        q["QueryExecutionId"].as_str().unwrap()
    );
    assert_eq!(
        q["ResultConfiguration"]["OutputLocation"],
        location.as_str()
    );
    let outputs: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(outputs["o0"], location.as_str(), "{out}");

    // A failed query ends with Athena's reason, after the task's retry.
    let reason = "SYNTAX_ERROR: line 1:8: Column 'broken' cannot be resolved";
    moto.lifecycle(json!({"failures": [{"match": "SELECT broken", "reason": reason}]}));
    let dir = temp_dir("athena-fail");
    let (code, _, err) = run(&moto, &dir, "athena_failing_wf", "");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(reason), "{err}");
    let failing: Vec<Value> = athena_queries(&moto)
        .into_iter()
        .filter(|q| q["Query"].as_str().unwrap().starts_with("SELECT broken"))
        .collect();
    assert_eq!(failing.len(), 2, "one query per attempt (retries=1)");
    assert!(failing.iter().all(|q| q["Status"]["State"] == "FAILED"));
}

#[test]
fn hive_on_qubole_runs_as_flytes_plugin_submits_it() {
    let moto = start_moto();
    let qubole = Qubole::start("hive-token");
    // Qubole's quota refuses the first submit of the daily query: the attempt fails as the system's,
    // and the retry submits it.
    qubole.configure(json!({"refusals": [
        {"match": "INSERT OVERWRITE TABLE daily", "status": 429, "message": "Too many requests", "times": 1}
    ]}));
    let dir = temp_dir("hive-qubole");
    let (code, out, err) = run(&moto, &dir, "hive_wf", &qubole.settings());
    assert_eq!(code, 0, "{err}");
    let exec = execution_of(&err);
    let commands = qubole.commands();
    assert_eq!(commands.len(), 2, "{commands:?}");
    let daily = &commands[0];
    assert_eq!(
        daily["command"]["query"],
        "INSERT OVERWRITE TABLE daily PARTITION (ds='2024-01-01') SELECT * FROM raw WHERE ds = '2024-01-01'"
    );
    assert_eq!(daily["label"], "etl");
    assert_eq!(daily["command_type"], "HiveCommand");
    assert_eq!(
        daily["name"],
        format!("{exec}-n0-1"),
        "the second attempt's"
    );
    assert_eq!(
        daily["tags"],
        json!([
            "daily",
            format!("execution-id:{exec}"),
            "node-id:n0",
            "task-name:hive_daily"
        ])
    );
    assert_eq!(daily["status"], "done");
    // The select: every `{{ .PerRetryUniqueKey }}` and `{{ .RawOutputDataPrefix }}` rendered.
    let select = &commands[1];
    let key = format!("{exec}-n1-0");
    let raw = raw_prefix(&exec, "n1", 0);
    let query = select["command"]["query"].as_str().unwrap();
    assert!(query.contains("SET hive.execution.engine=tez;"), "{query}");
    assert!(
        query.contains(&format!(
            "CREATE TEMPORARY TABLE {key}_tmp AS SELECT * FROM events WHERE ds = '2024-01-01';"
        )),
        "{query}"
    );
    assert!(
        query.contains(&format!("ALTER TABLE {key} SET LOCATION '{raw}';")),
        "{query}"
    );
    assert!(!query.contains("{{"), "{query}");
    assert_eq!(
        select["label"], "default",
        "flytekit's HiveSelectTask drops its config"
    );
    let outputs: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(outputs["o0"], raw.as_str(), "{out}");

    // The console reads each command's log from Qubole's API with the settings' token; with settings
    // for another Qubole it says why it cannot, and sends no token there.
    let console = console_of(&dir, &[]);
    let (label, src) = node_log(&console, &exec, "n0");
    assert_eq!(label, format!("qubole command {}", daily["id"]));
    let log = console.follow_log(&src);
    assert!(
        log.contains("Starting the Hive query") && log.ends_with("OK\n"),
        "{log}"
    );
    let other = dir.join("other.yaml");
    std::fs::write(
        &other,
        "qubole: {endpoint: 'http://127.0.0.1:9', token: t}\n",
    )
    .unwrap();
    let console = common::Console::start(
        &[
            "--state-dir",
            dir.join("state").to_str().unwrap(),
            "--settings",
            other.to_str().unwrap(),
        ],
        &[],
    );
    let (code, _, said) = console.get(&format!("{src}&offset=0"));
    assert_eq!(code, 502, "{said}");
    assert!(
        said.contains(&format!("ran on {}", qubole.endpoint))
            && said.contains("http://127.0.0.1:9"),
        "{said}"
    );

    // A failed command ends with the end of Qubole's log; retried as Flyte retries it.
    qubole.configure(json!({"refusals": [], "failures": [
        {"match": "SELECT broken", "reason": "SemanticException [Error 10001]: Table not found nowhere"}
    ]}));
    let dir = temp_dir("hive-qubole-fail");
    let (code, _, err) = run(&moto, &dir, "hive_failing_wf", &qubole.settings());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("QuboleQueryFailed"), "{err}");
    assert!(err.contains("Table not found nowhere"), "{err}");

    // A token Qubole refuses is the user's to fix: no retry.
    let before = qubole.commands().len();
    let dir = temp_dir("hive-qubole-token");
    let wrong = format!(
        "qubole: {{endpoint: '{}', token: wrong}}\n",
        qubole.endpoint
    );
    let (code, _, err) = run(&moto, &dir, "hive_wf", &wrong);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("QuboleAuth") && err.contains("Invalid Token"),
        "{err}"
    );
    assert_eq!(qubole.commands().len(), before);

    // No token at all: refused before anything starts, naming the task and the setting.
    let dir = temp_dir("hive-qubole-none");
    let none = format!("qubole: {{endpoint: '{}'}}\n", qubole.endpoint);
    let (code, _, err) = run(&moto, &dir, "hive_wf", &none);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("hive_daily")
            && err.contains("qubole.token")
            && err.contains("nothing was started"),
        "{err}"
    );
}

/// EMR Serverless applications in moto, by name: (name, type) → id.
fn make_applications(moto: &support::Moto) -> Value {
    moto.boto(
        "e = boto3.client('emr-serverless', **kw)\n\
         s3 = boto3.client('s3', **kw)\n\
         s3.create_bucket(Bucket='updraft-fixtures')\n\
         s3.put_object(Bucket='updraft-fixtures', Key='scripts/main.py', Body=b'import sys; print(\"main\", sys.argv[1:])')\n\
         ids = {n: e.create_application(name=n, releaseLabel='emr-7.0.0', type=t)['applicationId'] \
                for n, t in [('etl-spark', 'SPARK'), ('etl-hive', 'HIVE'), ('pythonic-app', 'SPARK')]}\n\
         print(json.dumps(ids))",
        &[],
    )
}

/// The job runs of an application, oldest first, as `GetJobRun` describes them.
fn job_runs(moto: &support::Moto, app: &str) -> Vec<Value> {
    let v = moto.boto(
        "e = boto3.client('emr-serverless', **kw)\n\
         runs = e.list_job_runs(applicationId=args[0])['jobRuns']\n\
         print(json.dumps([e.get_job_run(applicationId=args[0], jobRunId=r['id'])['jobRun'] for r in runs], default=str))",
        &[app],
    );
    let mut all = v.as_array().cloned().unwrap();
    all.sort_by_key(|r| r["createdAt"].as_str().unwrap_or("").to_string());
    all
}

fn s3_text(moto: &support::Moto, uri: &str) -> String {
    let (bucket, key) = uri.trim_start_matches("s3://").split_once('/').unwrap();
    moto.boto(
        "o = boto3.client('s3', **kw).get_object(Bucket=args[0], Key=args[1])\n\
         print(json.dumps(o['Body'].read().decode()))",
        &[bucket, key],
    )
    .as_str()
    .unwrap()
    .to_string()
}

#[test]
fn emr_serverless_tasks_run_in_every_mode() {
    let moto = start_moto();
    let apps = make_applications(&moto);
    let dir = temp_dir("emr-run");
    let (code, out, err) = run(&moto, &dir, "emr_wf", "");
    assert_eq!(code, 0, "{err}");
    let exec = execution_of(&err);
    let outputs: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(outputs["o0"], 42, "{out}");
    // Where each run keeps its logs, printed as it starts: its CloudWatch streams, its S3 folder.
    let logs = format!(
        "updraft: {exec}-n0-0 logs: https://us-east-1.console.aws.amazon.com/cloudwatch/home?\
         region=us-east-1#logsV2:log-groups/log-group/$252Faws$252Femr-serverless$3F\
         logStreamNameFilter$3Detl$252Fapplications$252F{}$252Fjobs$252F",
        apps["etl-spark"].as_str().unwrap()
    );
    assert!(err.contains(&logs), "{err}");
    let folder = format!(
        " s3://updraft-fixtures/emr-logs/applications/{}/jobs/",
        apps["etl-spark"].as_str().unwrap()
    );
    assert!(err.contains(&folder), "{err}");
    let (code, kept, lerr) = updraft_env(
        &[
            "logs",
            &exec,
            "n0",
            "--state-dir",
            dir.join("state").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{lerr}");
    assert!(
        kept.contains("service-logs.txt")
            && kept.contains("s3://updraft-fixtures/emr-logs/applications/"),
        "{kept}"
    );

    // Spark script: the task's driver, parameters with the attempt's Flyte variables, tags, timeout.
    let spark = job_runs(&moto, apps["etl-spark"].as_str().unwrap());
    assert_eq!(spark.len(), 1, "{spark:?}");
    let s = &spark[0];
    assert_eq!(s["state"], "SUCCESS");
    assert_eq!(s["name"], format!("{exec}-n0-0"));
    assert_eq!(s["executionRole"], EMR_ROLE);
    let submit = &s["jobDriver"]["sparkSubmit"];
    assert_eq!(
        submit["entryPoint"],
        "s3://updraft-fixtures/scripts/main.py"
    );
    assert_eq!(
        submit["entryPointArguments"],
        json!(["--date", "2024-01-01"])
    );
    let params = submit["sparkSubmitParameters"].as_str().unwrap();
    assert!(
        params.starts_with("--conf spark.executor.memory=4g"),
        "{params}"
    );
    for want in [
        format!("--conf spark.emr-serverless.driverEnv.FLYTE_INTERNAL_EXECUTION_ID={exec}"),
        format!("--conf spark.executorEnv.FLYTE_INTERNAL_EXECUTION_ID={exec}"),
        "--conf spark.emr-serverless.driverEnv.FLYTE_INTERNAL_NODE_ID=n0".into(),
    ] {
        assert!(params.contains(&want), "`{want}` missing from {params}");
    }
    assert_eq!(s["tags"]["team"], "ml");
    assert_eq!(s["tags"]["ManagedBy"], "updraft");
    assert_eq!(s["tags"]["updraft:attempt"], format!("{exec}-n0-0"));
    assert_eq!(s["executionTimeoutMinutes"], 30);
    assert_eq!(
        s["configurationOverrides"]["monitoringConfiguration"]["s3MonitoringConfiguration"]["logUri"],
        "s3://updraft-fixtures/emr-logs/"
    );
    let log = std::fs::read_dir(&moto.job_logs)
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .any(|t| t.contains("main ['--date', '2024-01-01']"));
    assert!(log, "the Spark script ran with its arguments");
    // The run sends its driver's output to CloudWatch (the default group, the task's stream prefix):
    // the console reads it from there, and names the S3 log folder too.
    assert_eq!(
        s["configurationOverrides"]["monitoringConfiguration"]["cloudWatchLoggingConfiguration"],
        json!({"enabled": true, "logStreamNamePrefix": "etl"})
    );
    let console = console_of(&dir, &[]);
    let (label, src) = node_log(&console, &exec, "n0");
    assert_eq!(
        label,
        format!(
            "emr-serverless etl/applications/{}/jobs/{}/",
            s["applicationId"].as_str().unwrap(),
            s["jobRunId"].as_str().unwrap()
        )
    );
    let printed = console.follow_log(&src);
    assert!(
        printed.contains("main ['--date', '2024-01-01']"),
        "{printed}"
    );
    // Streams that grow after a read — the driver's stderr appears, its stdout goes on — are read
    // on from where the last read stopped: the text only grows (offsets stay true), each stream's
    // events under its name once there are several.
    let driver = format!(
        "etl/applications/{}/jobs/{}/SPARK_DRIVER/",
        s["applicationId"].as_str().unwrap(),
        s["jobRunId"].as_str().unwrap()
    );
    let put = |stream: &str, message: &str| {
        moto.boto(
            "import time\n\
             l = boto3.client('logs', **kw)\n\
             g, s = '/aws/emr-serverless', args[0]\n\
             if not l.describe_log_streams(logGroupName=g, logStreamNamePrefix=s)['logStreams']: \
             l.create_log_stream(logGroupName=g, logStreamName=s)\n\
             l.put_log_events(logGroupName=g, logStreamName=s, \
             logEvents=[{'timestamp': int(time.time() * 1000), 'message': args[1]}])\n\
             print('{}')",
            &[stream, message],
        )
    };
    let from_of = |src: &str, offset: usize| {
        let (code, headers, text) = console.get(&format!("{src}&offset={offset}"));
        assert_eq!(code, 200, "{text}");
        let next: usize = headers
            .iter()
            .find(|(k, _)| k == "x-offset")
            .map(|(_, v)| v.parse().unwrap())
            .unwrap();
        (text, next)
    };
    let from = |offset: usize| from_of(&src, offset);
    let (rest, at) = from(printed.len());
    assert_eq!(rest, "");
    put(&format!("{driver}stderr"), "late on stderr");
    let (rest, at) = from(at);
    assert_eq!(rest, format!("== {driver}stderr ==\nlate on stderr\n"));
    put(&format!("{driver}stdout"), "late on stdout");
    let (rest, _) = from(at);
    assert_eq!(rest, format!("== {driver}stdout ==\nlate on stdout\n"));
    // And from the S3 log folder, where the run left its driver's output gzipped when it ended.
    let (code, _, page) = console.get(&format!("/executions/{exec}/nodes/n0"));
    assert_eq!(code, 200, "{page}");
    let folder = format!(
        "s3://updraft-fixtures/emr-logs/applications/{}/jobs/{}/",
        s["applicationId"].as_str().unwrap(),
        s["jobRunId"].as_str().unwrap()
    );
    let sources = common::log_sources(&page);
    let (_, src) = sources
        .iter()
        .find(|(label, _)| *label == folder)
        .unwrap_or_else(|| panic!("no S3 log folder {folder} among {sources:?}"));
    let printed = console.follow_log(src);
    assert!(
        printed.contains("main ['--date', '2024-01-01']"),
        "{printed}"
    );
    // Files that appear or grow after a read (EMR Serverless uploads a running driver's logs again
    // as they grow) are read on the same way: only what is new, under the file's name.
    let key = folder.strip_prefix("s3://updraft-fixtures/").unwrap();
    let upload = |file: &str, line: &str| {
        moto.boto(
            "import gzip\n\
             s3 = boto3.client('s3', **kw)\n\
             b, k, line = args\n\
             try: old = gzip.decompress(s3.get_object(Bucket=b, Key=k)['Body'].read())\n\
             except s3.exceptions.NoSuchKey: old = b''\n\
             s3.put_object(Bucket=b, Key=k, Body=gzip.compress(old + line.encode() + b'\\n'))\n\
             print('{}')",
            &["updraft-fixtures", &format!("{key}{file}"), line],
        )
    };
    let (rest, at) = from_of(src, printed.len());
    assert_eq!(rest, "");
    upload("SPARK_DRIVER/stderr.gz", "late in stderr.gz");
    let (rest, at) = from_of(src, at);
    assert_eq!(rest, "== SPARK_DRIVER/stderr.gz ==\nlate in stderr.gz\n");
    upload("SPARK_DRIVER/stdout.gz", "late in stdout.gz");
    let (rest, _) = from_of(src, at);
    assert_eq!(rest, "== SPARK_DRIVER/stdout.gz ==\nlate in stdout.gz\n");

    // Hive script: the task's driver as given.
    let hive = job_runs(&moto, apps["etl-hive"].as_str().unwrap());
    assert_eq!(hive.len(), 1);
    assert_eq!(
        hive[0]["jobDriver"]["hive"],
        json!({"query": "s3://updraft-fixtures/queries/daily.sql", "parameters": "--hiveconf ds=2024-01-01"})
    );

    // Pythonic: Updraft's entry point with the task's command as its arguments.
    let py = job_runs(&moto, apps["pythonic-app"].as_str().unwrap());
    assert_eq!(py.len(), 1);
    let submit = &py[0]["jobDriver"]["sparkSubmit"];
    let entry = submit["entryPoint"].as_str().unwrap();
    assert!(
        entry.starts_with(&format!(
            "s3://{}/runs/updraft/emr-serverless/entrypoint-",
            support::BUCKET
        )),
        "{entry}"
    );
    assert!(s3_text(&moto, entry).contains("subprocess.Popen(sys.argv[1:])"));
    let args: Vec<&str> = submit["entryPointArguments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "pyflyte-execute", "{args:?}");
    assert!(args.contains(&"emr_double"), "{args:?}");
    let params = submit["sparkSubmitParameters"].as_str().unwrap();
    assert!(
        params.contains("--conf spark.emr-serverless.driverEnv.PYSPARK_PYTHON=/usr/bin/python3"),
        "{params}"
    );

    // The task's own error ends the run (error.pb), named.
    let dir = temp_dir("emr-fail");
    let (code, _, err) = run(&moto, &dir, "emr_failing_wf", "");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("n must be even, got 3"), "{err}");
}

#[test]
fn hive_on_emr_serverless_writes_the_query_and_runs_a_hive_job() {
    let moto = start_moto();
    let apps = make_applications(&moto);
    let dir = temp_dir("hive-emr");
    let engine = format!(
        "hive: {{engine: emr-serverless}}\nemrServerless: {{applicationId: etl-hive, executionRoleArn: '{EMR_ROLE}'}}\n"
    );
    let (code, out, err) = run(&moto, &dir, "hive_wf", &engine);
    assert_eq!(code, 0, "{err}");
    let exec = execution_of(&err);
    let runs = job_runs(&moto, apps["etl-hive"].as_str().unwrap());
    assert_eq!(runs.len(), 2, "{runs:?}");
    let daily = &runs[0];
    let uri = format!(
        "s3://{}/runs/executions/{exec}/n0/0/hive-query.sql",
        support::BUCKET
    );
    assert_eq!(daily["jobDriver"]["hive"], json!({"query": uri}));
    assert_eq!(
        s3_text(&moto, &uri),
        "INSERT OVERWRITE TABLE daily PARTITION (ds='2024-01-01') SELECT * FROM raw WHERE ds = '2024-01-01';\n"
    );
    assert_eq!(daily["tags"]["daily"], "");
    assert_eq!(daily["executionRole"], EMR_ROLE);
    let select = s3_text(
        &moto,
        &format!(
            "s3://{}/runs/executions/{exec}/n1/0/hive-query.sql",
            support::BUCKET
        ),
    );
    let raw = raw_prefix(&exec, "n1", 0);
    assert!(
        select.contains(&format!("SET LOCATION '{raw}'")),
        "{select}"
    );
    let outputs: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(outputs["o0"], raw.as_str(), "{out}");

    // Without its application the hive task is refused before anything starts.
    let dir = temp_dir("hive-emr-none");
    let (code, _, err) = run(&moto, &dir, "hive_wf", "hive: {engine: emr-serverless}\n");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("emrServerless.applicationId")
            && err.contains("emrServerless.executionRoleArn"),
        "{err}"
    );
}

#[test]
fn query_tasks_written_in_yaml_run_the_same_way() {
    let moto = start_moto();
    let qubole = Qubole::start("yaml-token");
    let apps = make_applications(&moto);
    let dir = temp_dir("queries-yaml");
    let (code, out, err) = run_file(
        &moto,
        &dir,
        "tests/fixtures/yaml/queries.yaml",
        "queries",
        &qubole.settings(),
    );
    assert_eq!(code, 0, "{err}");
    let outputs: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(outputs["doubled"], 8, "{out}");
    let q = &athena_queries(&moto)[0];
    assert_eq!(q["Query"], "SELECT * FROM events WHERE ds = '2024-02-02'");
    assert_eq!(q["QueryExecutionContext"]["Database"], "analytics");
    assert_eq!(q["WorkGroup"], "primary");
    // A dataset output: the query's result file.
    assert_eq!(
        outputs["events"], q["ResultConfiguration"]["OutputLocation"],
        "{out}"
    );
    let commands = qubole.commands();
    assert_eq!(commands.len(), 1);
    assert_eq!(
        commands[0]["command"]["query"],
        "LOAD DATA INPATH 's3://raw/2024-02-02' INTO TABLE raw"
    );
    assert_eq!(commands[0]["label"], "etl");
    assert_eq!(commands[0]["tags"][0], "yaml");
    let spark = job_runs(&moto, apps["etl-spark"].as_str().unwrap());
    assert_eq!(
        spark[0]["jobDriver"]["sparkSubmit"]["entryPointArguments"],
        json!(["--from-yaml"])
    );
}
