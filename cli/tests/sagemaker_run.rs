//! `updraft run --settings` with SageMaker: flytekit's SageMaker fixtures run against moto
//! (`localstack/moto-up`: jobs run through their lifecycles, Pythonic jobs as local processes of the
//! flytekit environment, endpoints go Creating → InService), their data in moto's S3. Every task type
//! flytekit 1.16 emits runs end to end and gives the outputs flytekit's connectors give (the
//! idempotence tokens checked against flytekit's own rendering); failures end with SageMaker's reason
//! or the task's own error. Needs `UPDRAFT_TEST_MOTO` and `UPDRAFT_TEST_PYTHON` (set by `scripts/test`).

#![allow(clippy::unwrap_used)]

mod common;
#[path = "../../connectors/batch/tests/support/mod.rs"]
mod support;

use common::{execution_of, fixture_src, flytekit_python, temp_dir, updraft_env};
use std::path::Path;

fn start_moto() -> support::Moto {
    let bin = flytekit_python().parent().unwrap().to_path_buf();
    support::Moto::start(&[bin], &[fixture_src()])
}

/// Runs a workflow of the SageMaker fixture; (exit code, stdout, stderr).
fn run(moto: &support::Moto, dir: &Path, workflow: &str) -> (i32, String, String) {
    run_package(moto, dir, "sagemaker", workflow, "")
}

/// Runs a workflow of a fixture package with moto's settings and `more` settings after them; (exit
/// code, stdout, stderr).
fn run_package(
    moto: &support::Moto,
    dir: &Path,
    package: &str,
    workflow: &str,
    more: &str,
) -> (i32, String, String) {
    let settings = dir.join("settings.yaml");
    std::fs::write(&settings, format!("{}{more}", moto.settings())).unwrap();
    let state = dir.join("state");
    let pythonpath = fixture_src();
    let package = format!("tests/fixtures/flytekit/{package}.tgz");
    updraft_env(
        &[
            "run",
            &package,
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
            // The workflow's local Python tasks import the fixture module.
            ("PYTHONPATH", pythonpath.as_os_str()),
        ],
    )
}

/// What flytekit's Boto3ConnectorMixin renders `task`'s request as, with these inputs (its own code,
/// on the fixture's own config).
fn flytekit_renders(task: &str, inputs: serde_json::Value) -> serde_json::Value {
    let script = format!(
        r#"
import copy, json, sys, xxhash
import fixtures.sagemaker as f
from flytekit.utils.dict_formatter import format_dict
from flytekitplugins.awssagemaker_inference.boto3_mixin import convert_floats_with_no_fraction_to_ints, sorted_dict_str
t = f.{task}
args = {{"inputs": json.loads(sys.argv[1])}}
if getattr(t, "_images", None):
    args["images"] = t._images
c = convert_floats_with_no_fraction_to_ints(format_dict("sagemaker", copy.deepcopy(t._config), args))
h = xxhash.xxh64(sorted_dict_str(c).encode("utf-8")).hexdigest()
print(json.dumps(format_dict("sagemaker", c, args, idempotence_token=h)))
"#
    );
    let out = std::process::Command::new(flytekit_python())
        .args(["-c", &script, &inputs.to_string()])
        .env("PYTHONPATH", fixture_src())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn every_sagemaker_task_type_runs_with_flytekits_outputs() {
    let moto = start_moto();
    let dir = temp_dir("sagemaker-run");
    let (code, out, err) = run(&moto, &dir, "fixtures.sagemaker.deploy_wf");
    assert_eq!(code, 0, "{err}");
    let outputs: serde_json::Value = serde_json::from_str(&out).unwrap();
    let train_uri = "s3://updraft-fixtures/train/";
    let prep = flytekit_renders("processing_job", serde_json::json!({"raw_uri": train_uri}));
    let tune = flytekit_renders("tuning_job", serde_json::json!({}));
    let score = flytekit_renders(
        "transform_job",
        serde_json::json!({"model_name": "xgb", "data_uri": train_uri}),
    );
    let summary = format!(
        "{} | {} | {} | arn:aws:sagemaker:us-east-1:123456789012:endpoint/xgb | InService",
        prep["ProcessingJobName"].as_str().unwrap(),
        tune["HyperParameterTuningJobName"].as_str().unwrap(),
        score["TransformJobName"].as_str().unwrap(),
    );
    // The Pythonic processing job counted 28 characters and scaled them by its environment's SCALE=3;
    // the Pythonic training job divided them by 1000; describe_endpoint had no token to give.
    assert_eq!(
        outputs,
        serde_json::json!({"o0": summary, "o1": "", "o2": 84, "o3": 0.084}),
        "{err}"
    );
    // The model was made from the training job's artefact, as moto names it.
    let train = flytekit_renders(
        "training_job",
        serde_json::json!({"train_uri": train_uri, "max_depth": "5"}),
    );
    let model = describe(&moto, "describe_model", "ModelName", "xgb");
    assert_eq!(
        model["PrimaryContainer"]["ModelDataUrl"],
        serde_json::json!(format!(
            "s3://updraft-fixtures/models/{}/output/model.tar.gz",
            train["TrainingJobName"].as_str().unwrap()
        ))
    );
    assert_eq!(
        train["HyperParameters"],
        serde_json::json!({"max_depth": "5"})
    );
    // The console reads what the Pythonic training job printed from its CloudWatch log stream.
    let state = dir.join("state");
    let name = common::only_execution(&state);
    let v = common::history_json(&state, &name);
    let trained: Vec<String> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["attempts"].to_string().contains("$252FTrainingJobs"))
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    assert!(!trained.is_empty(), "{v}");
    let console = common::Console::start(
        &[
            "--state-dir",
            state.to_str().unwrap(),
            "--settings",
            dir.join("settings.yaml").to_str().unwrap(),
        ],
        &[
            ("AWS_ACCESS_KEY_ID", "testing".as_ref()),
            ("AWS_SECRET_ACCESS_KEY", "testing".as_ref()),
        ],
    );
    let printed: Vec<String> = trained
        .iter()
        .flat_map(|id| {
            let (code, _, page) = console.get(&format!("/executions/{name}/nodes/{id}"));
            assert_eq!(code, 200, "{page}");
            common::log_sources(&page)
        })
        .map(|(label, src)| {
            assert!(label.starts_with("TrainingJobs "), "{label}");
            console.follow_log(&src)
        })
        .collect();
    assert!(
        printed.iter().any(|t| t.contains("training on 84 rows")),
        "{printed:?}"
    );
}

/// A SageMaker describe call through moto's boto3.
fn describe(moto: &support::Moto, method: &str, key: &str, name: &str) -> serde_json::Value {
    let out = std::process::Command::new(std::env::var("UPDRAFT_TEST_MOTO").unwrap())
        .args([
            "-c",
            "import boto3, json, sys; c = boto3.client('sagemaker', endpoint_url=sys.argv[1], \
             region_name='us-east-1', aws_access_key_id='t', aws_secret_access_key='t'); \
             print(json.dumps(getattr(c, sys.argv[2])(**{sys.argv[3]: sys.argv[4]}), default=str))",
            &moto.endpoint,
            method,
            key,
            name,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn failures_end_with_sagemakers_reason_or_the_tasks_own_error() {
    let moto = start_moto();
    moto.lifecycle(serde_json::json!({"failures": [
        {"match": "xgb-fail-", "reason": "AlgorithmError: the training data has no label column"}
    ]}));
    let dir = temp_dir("sagemaker-fail");
    let (code, _, err) = run(&moto, &dir, "fixtures.sagemaker.failing_job_wf");
    assert_eq!(code, 1, "{err}");
    for want in [
        "SageMakerFailed",
        "AlgorithmError: the training data has no label column",
        "training job xgb-fail-",
    ] {
        assert!(err.contains(want), "`{want}` missing from: {err}");
    }
    let dir = temp_dir("sagemaker-fail-task");
    let (code, _, err) = run(&moto, &dir, "fixtures.sagemaker.failing_task_wf");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("rows must not be negative, got -1"),
        "the task's own error (error.pb): {err}"
    );
}

const LEGACY_ROLE: &str = "sagemaker: {roleArn: 'arn:aws:iam::123456789012:role/legacy'}\n";

/// One object of moto's S3, through boto3: its size.
fn object_size(moto: &support::Moto, uri: &str) -> u64 {
    let (bucket, key) = uri.trim_start_matches("s3://").split_once('/').unwrap();
    let out = std::process::Command::new(std::env::var("UPDRAFT_TEST_MOTO").unwrap())
        .args([
            "-c",
            "import boto3, sys; c = boto3.client('s3', endpoint_url=sys.argv[1], \
             region_name='us-east-1', aws_access_key_id='t', aws_secret_access_key='t'); \
             print(c.head_object(Bucket=sys.argv[2], Key=sys.argv[3])['ContentLength'])",
            &moto.endpoint,
            bucket,
            key,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{uri}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn the_legacy_sagemaker_types_run_as_flytes_plugin_runs_them() {
    let moto = start_moto();
    let dir = temp_dir("sagemaker-legacy");
    let (code, out, err) = run_package(
        &moto,
        &dir,
        "sagemaker_legacy",
        "fixtures.sagemaker_legacy.legacy_wf",
        LEGACY_ROLE,
    );
    assert_eq!(code, 0, "{err}");
    let exec = execution_of(&err);
    let outputs: serde_json::Value = serde_json::from_str(&out).unwrap();
    let data = format!("s3://{}/runs", support::BUCKET);
    let raw = |node: &str| format!("{data}/executions/{exec}/{node}/0/raw");
    // The built-in algorithm's model is where Flyte's plugin says: the job is the attempt's name.
    let model = format!(
        "{}/training_outputs/{exec}-n0-0/output/model.tar.gz",
        raw("n0")
    );
    assert_eq!(outputs["o0"], serde_json::json!(model), "{out}");
    // The tuning job's output is its best training job's model.
    let tuning = describe(
        &moto,
        "describe_hyper_parameter_tuning_job",
        "HyperParameterTuningJobName",
        &format!("{exec}-n1-0"),
    );
    let best = tuning["BestTrainingJob"]["TrainingJobName"]
        .as_str()
        .unwrap();
    assert_eq!(
        outputs["o1"],
        serde_json::json!(format!(
            "{}/hyperparameter_tuning_outputs/{best}/output/model.tar.gz",
            raw("n1")
        ))
    );
    // The custom training job ran the task's own function (1200 rows × SCALE=2, its environment
    // carried as hyperparameters); a Python task read the model the training left in S3.
    assert_eq!(outputs["o2"], serde_json::json!(2.4));
    assert_eq!(outputs["o3"], serde_json::json!(object_size(&moto, &model)));
    // The requests carry what Flyte's plugin sends: the algorithm's image for the region, the role of
    // the settings, the ranges of the inputs, and no static hyperparameter that is also tuned.
    let config = &tuning["HyperParameterTuningJobConfig"];
    assert_eq!(config["Strategy"], "Bayesian");
    assert_eq!(
        config["ResourceLimits"],
        serde_json::json!({"MaxNumberOfTrainingJobs": 10, "MaxParallelTrainingJobs": 2})
    );
    assert_eq!(
        config["ParameterRanges"]["IntegerParameterRanges"],
        serde_json::json!([{"Name": "max_depth", "MinValue": "2", "MaxValue": "8", "ScalingType": "Linear"}])
    );
    assert_eq!(
        config["ParameterRanges"]["ContinuousParameterRanges"][0]["MinValue"],
        "0.100000"
    );
    let definition = &tuning["TrainingJobDefinition"];
    assert_eq!(
        definition["StaticHyperParameters"],
        serde_json::json!({"num_round": "10", "objective": "binary:logistic"})
    );
    assert_eq!(
        definition["RoleArn"],
        "arn:aws:iam::123456789012:role/legacy"
    );
    assert_eq!(
        definition["AlgorithmSpecification"]["TrainingImage"],
        "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:0.90-2-cpu-py3"
    );
    let trained = describe(
        &moto,
        "describe_training_job",
        "TrainingJobName",
        &format!("{exec}-n0-0"),
    );
    assert_eq!(
        trained["HyperParameters"],
        serde_json::json!({"max_depth": "5", "num_round": "10", "objective": "binary:logistic"})
    );
    assert_eq!(trained["InputDataConfig"][1]["ChannelName"], "validation");
    let custom = describe(
        &moto,
        "describe_training_job",
        "TrainingJobName",
        &format!("{exec}-n2-0"),
    );
    let hps = &custom["HyperParameters"];
    assert_eq!(
        hps["__FLYTE_CMD_0_pyflyte-execute__"],
        "__FLYTE_CMD_DUMMY_VALUE__"
    );
    assert_eq!(hps["__FLYTE_ENV_VAR_SCALE__"], "2");
    assert_eq!(hps["__FLYTE_ENV_VAR_FLYTE_STATSD_DISABLED__"], "true");
    assert_eq!(hps["sagemaker_mpi_enabled"], "false");
    assert_eq!(
        custom["OutputDataConfig"]["S3OutputPath"],
        serde_json::json!(format!("{data}/executions/{exec}/n2/0/out"))
    );
}

#[test]
fn legacy_failures_are_refused_early_or_end_with_their_reason() {
    let moto = start_moto();
    // No role anywhere: refused before anything starts, naming the file, the task and the field.
    let dir = temp_dir("sagemaker-legacy-norole");
    let (code, _, err) = run_package(
        &moto,
        &dir,
        "sagemaker_legacy",
        "fixtures.sagemaker_legacy.legacy_wf",
        "",
    );
    assert_ne!(code, 0, "{err}");
    for want in [
        "sagemaker_legacy.tgz",
        "xgboost_train",
        "security_context.run_as.iam_role",
        "sagemaker.roleArn",
    ] {
        assert!(err.contains(want), "`{want}` missing from: {err}");
    }
    assert!(
        describe_list(&moto).is_empty(),
        "a refused run started a job"
    );
    // The task's own error, from the error.pb its job wrote.
    let dir = temp_dir("sagemaker-legacy-task");
    let (code, _, err) = run_package(
        &moto,
        &dir,
        "sagemaker_legacy",
        "fixtures.sagemaker_legacy.failing_custom_wf",
        LEGACY_ROLE,
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("rows must not be negative, got -1"),
        "the task's own error (error.pb): {err}"
    );
    // A built-in algorithm's job that fails ends with SageMaker's reason, not retried.
    moto.lifecycle(serde_json::json!({"failures": [
        {"match": "-n0-", "reason": "ClientError: the train channel has no label column"}
    ]}));
    let dir = temp_dir("sagemaker-legacy-fail");
    let (code, _, err) = run_package(
        &moto,
        &dir,
        "sagemaker_legacy",
        "fixtures.sagemaker_legacy.legacy_wf",
        LEGACY_ROLE,
    );
    assert_eq!(code, 1, "{err}");
    for want in [
        "ClientError: the train channel has no label column",
        "training job",
        "-n0-0 failed",
    ] {
        assert!(err.contains(want), "`{want}` missing from: {err}");
    }
}

/// The names of every SageMaker training job moto has.
fn describe_list(moto: &support::Moto) -> Vec<String> {
    let out = std::process::Command::new(std::env::var("UPDRAFT_TEST_MOTO").unwrap())
        .args([
            "-c",
            "import boto3, sys; c = boto3.client('sagemaker', endpoint_url=sys.argv[1], \
             region_name='us-east-1', aws_access_key_id='t', aws_secret_access_key='t'); \
             [print(j['TrainingJobName']) for j in c.list_training_jobs()['TrainingJobSummaries']]",
            &moto.endpoint,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn pythonic_jobs_read_their_secrets_from_secrets_manager() {
    let moto = start_moto();
    moto.boto(
        "c = boto3.client('secretsmanager', **kw)\n\
         c.create_secret(Name='db', SecretString=json.dumps({'password': 'hunter2-sm'}))\n\
         c.create_secret(Name='api', SecretString=json.dumps({'token': 'token-sm'}))\n\
         print('{}')",
        &[],
    );
    let dir = temp_dir("sagemaker-secrets");
    let (code, out, err) = run(&moto, &dir, "fixtures.sagemaker.sagemaker_secrets_wf");
    assert_eq!(code, 0, "{err}");
    let outputs: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        outputs,
        serde_json::json!({
            "o0": common::secret_digest("hunter2-sm"),
            "o1": common::secret_digest("token-sm"),
        })
    );
    // The job's description names the secrets (which variable, which secret and key), never a value.
    let jobs = moto.boto(
        "sm = boto3.client('sagemaker', **kw)\n\
         names = [j['TrainingJobName'] for j in sm.list_training_jobs()['TrainingJobSummaries']]\n\
         print(json.dumps([sm.describe_training_job(TrainingJobName=n) for n in names], default=str))",
        &[],
    );
    let text = jobs.to_string();
    assert!(
        text.contains("UPDRAFT_SECRETS") && text.contains("_FSEC_DB_PASSWORD"),
        "{text}"
    );
    for (what, text) in [("jobs", text.as_str()), ("output", &format!("{out}{err}"))] {
        assert!(
            !text.contains("hunter2") && !text.contains("token-sm"),
            "a value in the {what}: {text}"
        );
    }
    // A missing secret fails the attempt before any job, naming it.
    moto.boto(
        "boto3.client('secretsmanager', **kw).delete_secret(SecretId='api', ForceDeleteWithoutRecovery=True)\nprint('{}')",
        &[],
    );
    let dir = temp_dir("sagemaker-secrets-missing");
    let (code, _, err) = run(&moto, &dir, "fixtures.sagemaker.sagemaker_secrets_wf");
    assert_eq!(code, 1);
    for want in [
        "SecretMissing",
        "api/token",
        "no Secrets Manager secret `api`",
    ] {
        assert!(err.contains(want), "`{want}` missing from: {err}");
    }
    let after = moto.boto(
        "print(len(boto3.client('sagemaker', **kw).list_training_jobs()['TrainingJobSummaries']))",
        &[],
    );
    assert_eq!(
        after,
        serde_json::json!(jobs.as_array().unwrap().len()),
        "no new job"
    );
}
