//! `updraft run --settings` with AWS Batch: flytekit's `aws-batch` fixture runs as a Batch job on moto
//! (`localstack/moto-up`, the job's `pyflyte-execute` a local process of the flytekit environment), its
//! data in moto's S3, and gives flytekit's outputs; a workflow whose settings cannot run it is refused
//! before anything starts, naming what is missing. Needs `UPDRAFT_TEST_MOTO` and `UPDRAFT_TEST_PYTHON`
//! (set by `scripts/test`).

#![allow(clippy::unwrap_used)]

mod common;
#[path = "../../connectors/batch/tests/support/mod.rs"]
mod support;

use common::{root, temp_dir, updraft, updraft_env};
use std::path::PathBuf;

fn python() -> PathBuf {
    PathBuf::from(std::env::var("UPDRAFT_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("UPDRAFT_TEST_PYTHON is not set: run the tests with `bash scripts/test`")
    }))
}

#[test]
fn a_flytekit_batch_task_runs_as_a_batch_job() {
    let bin = python().parent().unwrap().to_path_buf();
    let moto = support::Moto::start(&[bin], &[root().join("tests/fixtures/flytekit/src")]);
    let dir = temp_dir("batch-run");
    let settings = dir.join("settings.yaml");
    std::fs::write(&settings, moto.settings()).unwrap();
    let state = dir.join("state");
    let (code, out, err) = updraft_env(
        &[
            "run",
            "tests/fixtures/flytekit/batch.tgz",
            "-w",
            "fixtures.batch.batch_wf",
            "--settings",
            settings.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "-i",
            "name=film",
        ],
        &[
            ("AWS_ACCESS_KEY_ID", "testing".as_ref()),
            ("AWS_SECRET_ACCESS_KEY", "testing".as_ref()),
            // The settings' aws.endpoint wins over the environment's.
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9".as_ref()),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let outputs: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(outputs, serde_json::json!({"o0": "film.mp4"}));
    // The outputs came from the job, through S3: flytekit wrote them under the attempt's prefix.
    let name = common::only_execution(&state);
    let key = format!("runs/executions/{}/n0/0/out/0/outputs.pb", name);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s3 = updraft_aws::s3_client(&moto.sdk());
    rt.block_on(s3.head_object().bucket(support::BUCKET).key(&key).send())
        .unwrap_or_else(|e| panic!("no {key}: {e:?}"));
    // The history names the job Batch made and where its logs are.
    let v = common::history_json(&state, &name);
    let attempt = &v["nodes"][0]["attempts"][0];
    assert_eq!(attempt["phase"], "Succeeded", "{v}");
    let job = attempt["external"].as_str().unwrap();
    assert!(!job.is_empty(), "{attempt}");
    assert!(
        attempt["logs"][0]
            .as_str()
            .unwrap()
            .ends_with(&format!("/batch/home?region=us-east-1#jobs/detail/{job}")),
        "{attempt}"
    );
    // The console reads what the job printed from its CloudWatch log stream (named by DescribeJobs).
    let console = common::Console::start(
        &[
            "--state-dir",
            state.to_str().unwrap(),
            "--settings",
            settings.to_str().unwrap(),
        ],
        &[
            ("AWS_ACCESS_KEY_ID", "testing".as_ref()),
            ("AWS_SECRET_ACCESS_KEY", "testing".as_ref()),
        ],
    );
    let (code, _, page) = console.get(&format!("/executions/{name}/nodes/n0"));
    assert_eq!(code, 200, "{page}");
    let logs = common::log_sources(&page);
    assert_eq!(logs.len(), 1, "{page}");
    assert_eq!(logs[0].0, format!("batch job {job}"));
    let text = console.follow_log(&logs[0].1);
    assert!(text.contains("transcoding film at 240 frames"), "{text}");
}

#[test]
fn a_map_over_a_batch_task_is_one_array_job() {
    let bin = python().parent().unwrap().to_path_buf();
    let moto = support::Moto::start(&[bin], &[root().join("tests/fixtures/flytekit/src")]);
    let dir = temp_dir("batch-map");
    let settings = dir.join("settings.yaml");
    std::fs::write(&settings, moto.settings()).unwrap();
    let state = dir.join("state");
    let (code, out, err) = updraft_env(
        &[
            "run",
            "tests/fixtures/flytekit/batch.tgz",
            "-w",
            "fixtures.batch.batch_map_wf",
            "--settings",
            settings.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
        &[
            ("AWS_ACCESS_KEY_ID", "testing".as_ref()),
            ("AWS_SECRET_ACCESS_KEY", "testing".as_ref()),
        ],
    );
    assert_eq!(code, 0, "{err}");
    // Element 1 (x = -2) failed with the task's own error; min_success_ratio 0.5 lets the map succeed,
    // its output None.
    let outputs: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(outputs, serde_json::json!({"o0": [1, null, 27, 64]}));
    // One array job of four children ran them, named for the array's first attempt.
    let name = common::only_execution(&state);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let batch = aws_sdk_batch::Client::new(&moto.sdk());
    let array = format!("{name}-n0-array-0");
    let all = rt
        .block_on(
            batch
                .list_jobs()
                .job_queue(support::QUEUE)
                .filters(
                    aws_sdk_batch::types::KeyValuesPair::builder()
                        .name("JOB_NAME")
                        .values("r*")
                        .build(),
                )
                .send(),
        )
        .unwrap();
    // (moto lists an array job's children, `<id>:<index>`, beside it.)
    let jobs: Vec<(&str, &str)> = all
        .job_summary_list()
        .iter()
        .filter_map(|j| Some((j.job_name()?, j.job_id()?)))
        .collect();
    let parents: Vec<&(&str, &str)> = jobs.iter().filter(|j| !j.1.contains(':')).collect();
    let names: Vec<&str> = parents.iter().map(|j| j.0).collect();
    assert_eq!(names, vec![array.as_str()], "{jobs:?}");
    assert_eq!(
        jobs.len(),
        5,
        "the array job and its four children: {jobs:?}"
    );
    let id = parents[0].1.to_string();
    let d = rt.block_on(batch.describe_jobs().jobs(&id).send()).unwrap();
    let job = &d.jobs()[0];
    assert_eq!(job.array_properties().and_then(|a| a.size()), Some(4));
    let command = job.container().unwrap().command();
    assert_eq!(command[0], "pyflyte-map-execute");
    assert!(
        command
            .iter()
            .any(|a| a == "flytekit.core.legacy_map_task.MapTaskResolver")
    );
}

#[test]
fn settings_that_cannot_run_batch_are_refused_before_anything_starts() {
    let dir = temp_dir("batch-refused");
    let state = dir.join("state");
    let (code, _, err) = updraft(&[
        "run",
        "tests/fixtures/flytekit/batch.tgz",
        "-w",
        "fixtures.batch.batch_wf",
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    for want in [
        "fixtures.batch.transcode",
        "batch.jobQueue",
        "batch.jobRoleArn",
        "data.prefix",
        "nothing was started",
    ] {
        assert!(err.contains(want), "`{want}` missing from: {err}");
    }
    assert!(!state.join("executions").exists(), "nothing was started");
    // An unknown key in the settings names the file and the key.
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "batch: {jobQeue: q}\n").unwrap();
    let (code, _, err) = updraft(&[
        "run",
        "tests/fixtures/flytekit/batch.tgz",
        "--settings",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "{}: batch.jobQeue: unknown field `jobQeue`",
            bad.display()
        )),
        "{err}"
    );
}

#[test]
fn a_batch_tasks_secrets_come_from_secrets_manager_and_stay_there() {
    let bin = python().parent().unwrap().to_path_buf();
    let moto = support::Moto::start(&[bin], &[root().join("tests/fixtures/flytekit/src")]);
    // The secrets, as JSON key/value secrets in moto's Secrets Manager.
    moto.boto(
        "c = boto3.client('secretsmanager', **kw)\n\
         c.create_secret(Name='db', SecretString=json.dumps({'password': 'hunter2-batch'}))\n\
         c.create_secret(Name='api', SecretString=json.dumps({'token': 'token-batch'}))\n\
         print('{}')",
        &[],
    );
    let dir = temp_dir("batch-secrets");
    let with_role = moto.settings().replace(
        &format!("jobRoleArn: '{}'}}", support::ROLE),
        &format!(
            "jobRoleArn: '{0}', executionRoleArn: '{0}'}}",
            support::ROLE
        ),
    );
    assert_ne!(with_role, moto.settings());
    let settings = dir.join("settings.yaml");
    std::fs::write(&settings, &with_role).unwrap();
    let run = |wf: &str, settings: &std::path::Path, state: &str| {
        updraft_env(
            &[
                "run",
                "tests/fixtures/flytekit/batch.tgz",
                "-w",
                wf,
                "--settings",
                settings.to_str().unwrap(),
                "--state-dir",
                dir.join(state).to_str().unwrap(),
            ],
            &[
                ("AWS_ACCESS_KEY_ID", "testing".as_ref()),
                ("AWS_SECRET_ACCESS_KEY", "testing".as_ref()),
            ],
        )
    };
    // flytekit's lookup (`_FSEC_DB_PASSWORD`) and the request's own variable, from Batch.
    let (code, out, err) = run("fixtures.batch.batch_secrets_wf", &settings, "ok");
    assert_eq!(code, 0, "{err}");
    let outputs: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        outputs,
        serde_json::json!({
            "o0": common::secret_digest("hunter2-batch"),
            "o1": common::secret_digest("token-batch"),
        })
    );
    // The job definition names the secrets by ARN and key; no value is in it, in the job, in what the
    // run printed or in its state.
    let defs = moto.boto(
        "print(json.dumps(boto3.client('batch', **kw).describe_job_definitions(status='ACTIVE')['jobDefinitions'], default=str))",
        &[],
    );
    let with = defs
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["containerProperties"]["secrets"].is_array())
        .unwrap_or_else(|| panic!("no definition with secrets: {defs}"));
    let secrets = with["containerProperties"]["secrets"].to_string();
    for want in [
        "_FSEC_DB_PASSWORD",
        "API_TOKEN",
        ":secret:db",
        ":password::",
        ":token::",
    ] {
        assert!(secrets.contains(want), "{want} not in {secrets}");
    }
    assert_eq!(
        with["containerProperties"]["executionRoleArn"],
        support::ROLE
    );
    let jobs = moto.boto(
        "b = boto3.client('batch', **kw)\n\
         ids = [j['jobId'] for j in b.list_jobs(jobQueue='updraft-jobs', filters=[{'name': 'JOB_NAME', 'values': ['*']}])['jobSummaryList']]\n\
         print(json.dumps(b.describe_jobs(jobs=ids)['jobs'], default=str))",
        &[],
    );
    for (what, text) in [
        ("job definitions", defs.to_string()),
        ("jobs", jobs.to_string()),
        ("output", format!("{out}{err}")),
    ] {
        assert!(
            !text.contains("hunter2") && !text.contains("token-batch"),
            "a value in the {what}: {text}"
        );
    }
    let leak = std::process::Command::new("grep")
        .args(["-rl", "hunter2"])
        .arg(dir.join("ok"))
        .output()
        .unwrap();
    assert!(
        leak.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&leak.stdout)
    );
    // A missing secret fails the attempt before any job is submitted, naming it.
    moto.boto(
        "boto3.client('secretsmanager', **kw).delete_secret(SecretId='db', ForceDeleteWithoutRecovery=True)\nprint('{}')",
        &[],
    );
    let (code, _, err) = run("fixtures.batch.batch_secrets_wf", &settings, "missing");
    assert_eq!(code, 1);
    for want in [
        "SecretMissing",
        "db/password",
        "no Secrets Manager secret `db`",
    ] {
        assert!(err.contains(want), "`{want}` missing from: {err}");
    }
    let after = moto.boto(
        "print(json.dumps(len(boto3.client('batch', **kw).list_jobs(jobQueue='updraft-jobs', filters=[{'name': 'JOB_NAME', 'values': ['*']}])['jobSummaryList'])))",
        &[],
    );
    assert_eq!(
        after,
        serde_json::json!(jobs.as_array().unwrap().len()),
        "no new job"
    );
    // What Batch cannot do is refused before anything starts: a secret as a file, secrets without the
    // role that reads them.
    let (code, _, err) = run("fixtures.batch.batch_secret_file_wf", &settings, "file");
    assert_eq!(code, 1);
    for want in [
        "security_context.secrets[0]",
        "variables only",
        "nothing was started",
    ] {
        assert!(err.contains(want), "`{want}` missing from: {err}");
    }
    let no_role = dir.join("no-role.yaml");
    std::fs::write(&no_role, moto.settings()).unwrap();
    let (code, _, err) = run("fixtures.batch.batch_secrets_wf", &no_role, "no-role");
    assert_eq!(code, 1);
    assert!(err.contains("batch.executionRoleArn"), "{err}");
}
