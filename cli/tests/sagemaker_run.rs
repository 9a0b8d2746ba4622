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

use common::{root, temp_dir, updraft_env};
use std::path::{Path, PathBuf};

fn python() -> PathBuf {
    PathBuf::from(std::env::var("UPDRAFT_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("UPDRAFT_TEST_PYTHON is not set: run the tests with `bash scripts/test`")
    }))
}

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/flytekit/src")
}

fn start_moto() -> support::Moto {
    let bin = python().parent().unwrap().to_path_buf();
    support::Moto::start(&[bin], &[fixtures()])
}

/// Runs a workflow of the SageMaker fixture; (exit code, stdout, stderr).
fn run(moto: &support::Moto, dir: &Path, workflow: &str) -> (i32, String, String) {
    let settings = dir.join("settings.yaml");
    std::fs::write(&settings, moto.settings()).unwrap();
    let state = dir.join("state");
    let pythonpath = fixtures();
    updraft_env(
        &[
            "run",
            "tests/fixtures/flytekit/sagemaker.tgz",
            "-w",
            workflow,
            "--settings",
            settings.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--python",
            python().to_str().unwrap(),
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
    let out = std::process::Command::new(python())
        .args(["-c", &script, &inputs.to_string()])
        .env("PYTHONPATH", fixtures())
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
