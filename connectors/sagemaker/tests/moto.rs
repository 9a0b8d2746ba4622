//! The SageMaker connectors against moto (`localstack/moto-up`: jobs through their lifecycles, Pythonic
//! jobs as local processes, endpoints Creating → InService): a repeated start makes one job, a name
//! taken by another attempt is refused, aborts stop jobs and delete endpoints (and a second abort is
//! fine), a legacy job is one per attempt and stops on abort, `boto` calls SageMaker Runtime, and the
//! pre-flight check names every problem. Needs `UPDRAFT_TEST_MOTO` (set by `scripts/test`).

#![allow(clippy::unwrap_used)]

#[path = "../../batch/tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use support::{BUCKET, Moto};
use updraft_connector::{Attempt, AttemptPaths, Connector, Handle};
use updraft_engine::compile::{CompiledTask, Interface};
use updraft_engine::exec::{ErrorKind, TaskLaunch, TaskStatus};
use updraft_engine::plugins::PluginKind;
use updraft_proto::core::task_template::Target;
use updraft_proto::core::{Container, LiteralType, SimpleType, TaskTemplate};
use updraft_settings::Settings;

const ROLE: &str = "arn:aws:iam::123456789012:role/SageMakerRole";

fn str_type() -> LiteralType {
    updraft_engine::types::simple(SimpleType::String)
}

fn task(
    task_type: &str,
    custom: Value,
    inputs: &[&str],
    container: Option<Container>,
) -> CompiledTask {
    let mut interface = Interface::default();
    for i in inputs {
        interface.inputs.insert(i.to_string(), str_type());
    }
    CompiledTask {
        name: format!("t-{task_type}"),
        template: TaskTemplate {
            r#type: task_type.into(),
            target: container.map(Target::Container),
            custom: Some(updraft_engine::yaml::plugins::to_struct(&custom)),
            ..Default::default()
        },
        plugin: PluginKind::SageMaker,
        interface,
    }
}

fn launch(exec: &str, attempt: u32, inputs: &[(&str, &str)]) -> TaskLaunch {
    let mut map = updraft_proto::core::LiteralMap::default();
    for (k, v) in inputs {
        map.literals.insert(
            k.to_string(),
            updraft_engine::literal::from_json(&json!(v), &str_type()).unwrap(),
        );
    }
    TaskLaunch {
        execution: exec.into(),
        node: 0,
        node_id: "n0".into(),
        index: None,
        attempt,
        task: "t".into(),
        inputs: Arc::new(map),
        name: format!("{exec}-n0-{attempt}"),
        interruptible: false,
        cache_key: None,
        cache_serializable: false,
        array_size: None,
    }
}

fn training_request(name: &str) -> Value {
    json!({
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": "img:1", "TrainingInputMode": "File"},
        "RoleArn": ROLE,
        "OutputDataConfig": {"S3OutputPath": "s3://b/models/"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1.0, "VolumeSizeInGB": 10.0},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600.0},
    })
}

struct Bed {
    moto: Moto,
    conns: [Arc<dyn Connector>; 4],
    data: updraft_aws::blobs::Blobs,
    rt: tokio::runtime::Runtime,
}

impl Bed {
    fn new() -> Bed {
        let moto = Moto::start(&[], &[]);
        let settings = Settings::parse("test", &moto.settings()).unwrap();
        let sdk = moto.sdk();
        Bed {
            conns: updraft_connector_sagemaker::connectors(&sdk, &settings),
            data: updraft_aws::blobs::Blobs::new(updraft_aws::s3_client(&sdk), BUCKET),
            moto,
            rt: tokio::runtime::Runtime::new().unwrap(),
        }
    }

    fn conn(&self, t: &CompiledTask) -> &dyn Connector {
        let serving: Vec<&Arc<dyn Connector>> = self.conns.iter().filter(|c| c.serves(t)).collect();
        assert_eq!(
            serving.len(),
            1,
            "one connector serves {}",
            t.template.r#type
        );
        serving[0].as_ref()
    }

    fn start(&self, t: &CompiledTask, l: &TaskLaunch) -> Result<Handle, TaskStatus> {
        let paths = AttemptPaths::under(&format!("s3://{BUCKET}/runs/{}", l.execution), l);
        let a = Attempt {
            launch: l,
            task: t,
            paths: &paths,
            data: &self.data,
            signal: None,
        };
        self.rt.block_on(self.conn(t).start(&a))
    }

    fn check(&self, t: &CompiledTask, h: &Handle) -> TaskStatus {
        self.rt.block_on(self.conn(t).check(h, &self.data)).unwrap()
    }

    /// Checks until the attempt ends (at most 60 s).
    fn end(&self, t: &CompiledTask, h: &Handle) -> TaskStatus {
        for _ in 0..240 {
            match self.check(t, h) {
                TaskStatus::Queued | TaskStatus::Running => {
                    std::thread::sleep(Duration::from_millis(250))
                }
                end => return end,
            }
        }
        panic!("the job did not end in 60 s");
    }

    /// A SageMaker call through moto's own boto3.
    fn boto(&self, method: &str, args: Value) -> Value {
        let out = std::process::Command::new(std::env::var("UPDRAFT_TEST_MOTO").unwrap())
            .args([
                "-c",
                "import boto3, json, sys; c = boto3.client('sagemaker', endpoint_url=sys.argv[1], \
                 region_name='us-east-1', aws_access_key_id='t', aws_secret_access_key='t'); \
                 print(json.dumps(getattr(c, sys.argv[2])(**json.loads(sys.argv[3])), default=str))",
                &self.moto.endpoint,
                method,
                &args.to_string(),
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
}

fn code_of(s: &TaskStatus) -> (&str, ErrorKind, bool) {
    match s {
        TaskStatus::Failed {
            code,
            kind,
            recoverable,
            ..
        } => (code.as_str(), *kind, *recoverable),
        other => panic!("not a failure: {other:?}"),
    }
}

#[test]
fn a_repeated_start_makes_one_job_and_another_attempt_cannot_take_its_name() {
    let bed = Bed::new();
    bed.moto.lifecycle(json!({"run_seconds": null}));
    let t = task(
        "sagemaker-training-job",
        json!({"config": training_request("static-{inputs.name}"), "region": "us-east-1"}),
        &["name"],
        None,
    );
    let l = launch("e1", 0, &[("name", "xgb")]);
    let first = bed.start(&t, &l).unwrap();
    assert_eq!(
        bed.start(&t, &l).unwrap(),
        first,
        "a repeated start finds its job"
    );
    let jobs = bed.boto("list_training_jobs", json!({}));
    assert_eq!(
        jobs["TrainingJobSummaries"].as_array().unwrap().len(),
        1,
        "{jobs}"
    );
    let d = bed.boto(
        "describe_training_job",
        json!({"TrainingJobName": "static-xgb"}),
    );
    let tags = bed.boto("list_tags", json!({"ResourceArn": d["TrainingJobArn"]}));
    assert_eq!(
        tags["Tags"],
        json!([{"Key": "updraft:attempt", "Value": "e1-n0-0"}])
    );
    // Whole-number floats went as integers.
    assert_eq!(d["ResourceConfig"]["InstanceCount"], json!(1));
    // Another attempt with the same name is refused, not handed this job's outcome.
    let other = bed
        .start(&t, &launch("e2", 0, &[("name", "xgb")]))
        .unwrap_err();
    assert_eq!(code_of(&other), ("NameTaken", ErrorKind::User, false));
    // An abort stops it; a second abort (it has stopped) is fine.
    assert_eq!(bed.check(&t, &first), TaskStatus::Running);
    bed.rt.block_on(bed.conn(&t).abort(&first)).unwrap();
    let end = bed.end(&t, &first);
    assert_eq!(code_of(&end), ("Stopped", ErrorKind::User, false));
    bed.rt.block_on(bed.conn(&t).abort(&first)).unwrap();
}

#[test]
fn a_job_named_by_its_token_is_the_same_job_for_the_same_request() {
    let bed = Bed::new();
    let t = task(
        "sagemaker-training-job",
        json!({"config": training_request("xgb-{idempotence_token}"), "region": "us-east-1"}),
        &[],
        None,
    );
    let a = bed.start(&t, &launch("e1", 0, &[])).unwrap();
    let b = bed.start(&t, &launch("e2", 0, &[])).unwrap();
    assert_eq!(a.value["name"], b.value["name"]);
    assert_eq!(a.value["token"].as_str().unwrap().len(), 16);
    let end = bed.end(&t, &a);
    let TaskStatus::Succeeded { outputs, .. } = end else {
        panic!("{end:?}")
    };
    let result = updraft_engine::literal::to_json(&outputs.literals["result"]);
    assert_eq!(result["TrainingJobName"], a.value["name"]);
    assert!(
        result["ModelArtifacts"]["S3ModelArtifacts"]
            .as_str()
            .unwrap()
            .ends_with("/output/model.tar.gz"),
        "{result}"
    );
}

#[test]
fn a_pythonic_job_is_one_per_attempt_and_its_abort_stops_its_process() {
    let bed = Bed::new();
    let marker = std::env::temp_dir().join(format!("updraft-sm-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let t = task(
        "sagemaker-training-task",
        json!({"execution_role_arn": ROLE, "region": "us-east-1", "environment": {"MARK": marker.to_str().unwrap()}}),
        &[],
        Some(Container {
            image: "img:1".into(),
            args: [
                "sh",
                "-c",
                "echo \"$MARK $FLYTE_FAIL_ON_ERROR {{.outputPrefix}}\" > \"$MARK\"; sleep 60",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            ..Default::default()
        }),
    );
    let l = launch("e1", 0, &[]);
    let h = bed.start(&t, &l).unwrap();
    assert_eq!(bed.start(&t, &l).unwrap(), h);
    let name = h.value["name"].as_str().unwrap();
    assert!(name.starts_with("flyte-") && name.len() == 26, "{name}");
    let jobs = bed.boto("list_training_jobs", json!({}));
    assert_eq!(jobs["TrainingJobSummaries"].as_array().unwrap().len(), 1);
    // The job's process ran the rendered command with the job's environment.
    for _ in 0..80 {
        if marker.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let said = std::fs::read_to_string(&marker).unwrap();
    assert_eq!(
        said.trim(),
        format!("{} true s3://{BUCKET}/runs/e1/n0/0/out", marker.display())
    );
    // A new attempt is a new job.
    let again = bed.start(&t, &launch("e1", 1, &[])).unwrap();
    assert_ne!(again.value["name"], h.value["name"]);
    bed.rt.block_on(bed.conn(&t).abort(&h)).unwrap();
    bed.rt.block_on(bed.conn(&t).abort(&again)).unwrap();
    assert_eq!(code_of(&bed.end(&t, &h)).0, "Stopped");
    bed.rt.block_on(bed.conn(&t).abort(&h)).unwrap();
    let _ = std::fs::remove_file(&marker);
}

#[test]
fn endpoints_wait_for_in_service_and_an_abort_deletes_them() {
    let bed = Bed::new();
    bed.boto(
        "create_model",
        json!({"ModelName": "m", "ExecutionRoleArn": ROLE, "PrimaryContainer": {"Image": "img:1"}}),
    );
    bed.boto(
        "create_endpoint_config",
        json!({"EndpointConfigName": "c", "ProductionVariants": [
            {"VariantName": "v", "ModelName": "m", "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}]}),
    );
    let t = task(
        "sagemaker-endpoint",
        json!({"config": {"EndpointName": "{inputs.name}", "EndpointConfigName": "c"}, "region": "us-east-1"}),
        &["name"],
        None,
    );
    let l = launch("e1", 0, &[("name", "ep")]);
    let h = bed.start(&t, &l).unwrap();
    assert_eq!(bed.check(&t, &h), TaskStatus::Running, "Creating");
    assert_eq!(bed.start(&t, &l).unwrap(), h, "a name taken is success");
    let TaskStatus::Succeeded { outputs, .. } = bed.end(&t, &h) else {
        panic!("not in service")
    };
    assert_eq!(
        updraft_engine::literal::to_json(&outputs.literals["result"]),
        json!({"EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/ep"})
    );
    // boto: SageMaker Runtime's invoke_endpoint_async on it.
    let b = task(
        "boto",
        json!({"service": "sagemaker-runtime", "method": "invoke_endpoint_async", "region": "us-east-1",
               "config": {"EndpointName": "ep", "InputLocation": "s3://b/in.json", "ContentType": "application/json"}}),
        &[],
        None,
    );
    let bh = bed.start(&b, &launch("e1", 0, &[])).unwrap();
    let TaskStatus::Succeeded { outputs, .. } = bed.check(&b, &bh) else {
        panic!("the call failed")
    };
    let result = updraft_engine::literal::to_json(&outputs.literals["result"]);
    assert!(
        result["OutputLocation"]
            .as_str()
            .is_some_and(|s| s.starts_with("s3://")),
        "{result}"
    );
    assert_eq!(
        updraft_engine::literal::to_json(&outputs.literals["idempotence_token"]),
        json!("")
    );
    bed.rt.block_on(bed.conn(&t).abort(&h)).unwrap();
    let gone = bed.boto("list_endpoints", json!({}));
    assert_eq!(gone["Endpoints"], json!([]));
    bed.rt.block_on(bed.conn(&t).abort(&h)).unwrap();
}

#[test]
fn preflight_names_every_problem() {
    let moto_free = Settings::parse("test", "aws: {region: us-east-1}\n").unwrap();
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .build();
    let conns = updraft_connector_sagemaker::connectors(&sdk, &moto_free);
    let problems = |t: &CompiledTask| -> Vec<String> {
        conns
            .iter()
            .filter(|c| c.serves(t))
            .flat_map(|c| c.preflight(t))
            .map(|p| format!("{}: {}", p.field, p.reason))
            .collect()
    };
    let t = task(
        "sagemaker-training-job",
        json!({"config": {"TrainingJobName": "{inputs.nope}", "Image": "{images.x}"}}),
        &[],
        None,
    );
    let p = problems(&t);
    assert_eq!(p.len(), 2, "{p:?}");
    let p = p.join("\n");
    assert!(p.contains("names no input of the task (`nope`)"), "{p}");
    assert!(p.contains("names no image in `images` (`x`)"), "{p}");
    let t = task(
        "sagemaker-processing-task",
        json!({"region": "us-east-1"}),
        &[],
        None,
    );
    let p = problems(&t).join("\n");
    assert!(p.contains("container"), "{p}");
    let t = task(
        "sagemaker-processing-task",
        json!({"region": "us-east-1"}),
        &[],
        Some(Container {
            image: "img".into(),
            args: vec!["pyflyte-execute".into()],
            ..Default::default()
        }),
    );
    let p = problems(&t).join("\n");
    assert!(
        p.contains("custom.execution_role_arn") && p.contains("data.prefix"),
        "{p}"
    );
    let t = task(
        "boto",
        json!({"service": "s3", "method": "list_buckets"}),
        &[],
        None,
    );
    let p = problems(&t).join("\n");
    assert!(p.contains("custom.service: `s3` is not a service"), "{p}");
    let mut t = task(
        "sagemaker-training-job",
        json!({"config": {"TrainingJobName": "n"}}),
        &[],
        None,
    );
    assert_eq!(problems(&t), Vec::<String>::new());
    // Secrets: SageMaker could only put them in the job's environment, in clear; refused, each named.
    t.template.security_context = Some(updraft_proto::core::SecurityContext {
        secrets: vec![updraft_proto::core::Secret {
            group: "db".into(),
            key: "password".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    let p = problems(&t).join("\n");
    assert!(
        p.contains("security_context.secrets[0]: secret db/password: SageMaker gives a job nothing but environment values"),
        "{p}"
    );
}

#[test]
fn a_legacy_job_is_one_per_attempt_and_its_abort_stops_it() {
    use updraft_proto::core::{BlobType, blob_type::BlobDimensionality, literal_type::Type};
    let mut bed = Bed::new();
    let settings = Settings::parse(
        "test",
        &format!("{}sagemaker: {{roleArn: '{ROLE}'}}\n", bed.moto.settings()),
    )
    .unwrap();
    bed.conns = updraft_connector_sagemaker::connectors(&bed.moto.sdk(), &settings);
    bed.moto.lifecycle(json!({"run_seconds": null}));
    let blob = |d: BlobDimensionality| LiteralType {
        r#type: Some(Type::Blob(BlobType {
            format: "csv".into(),
            dimensionality: d as i32,
        })),
        ..Default::default()
    };
    let mut t = task(
        "sagemaker_training_job_task",
        json!({
            "algorithmSpecification": {"algorithmName": "XGBOOST"},
            "trainingJobResourceConfig": {"instanceCount": "1", "instanceType": "ml.m5.large", "volumeSizeInGb": "5"},
        }),
        &[],
        None,
    );
    for name in ["train", "validation"] {
        t.interface
            .inputs
            .insert(name.into(), blob(BlobDimensionality::Multipart));
    }
    let struct_type = updraft_engine::types::simple(SimpleType::Struct);
    t.interface
        .inputs
        .insert("static_hyperparameters".into(), struct_type.clone());
    t.interface
        .outputs
        .insert("model".into(), blob(BlobDimensionality::Single));
    assert_eq!(bed.conn(&t).preflight(&t), vec![]);
    let mut l = launch("lg", 0, &[]);
    let mut inputs = updraft_proto::core::LiteralMap::default();
    for (name, uri) in [("train", "s3://b/train/"), ("validation", "s3://b/valid/")] {
        let lit =
            updraft_engine::literal::from_json(&json!(uri), &blob(BlobDimensionality::Multipart))
                .unwrap();
        inputs.literals.insert(name.into(), lit);
    }
    let hps = updraft_engine::literal::from_json(&json!({"num_round": 10}), &struct_type).unwrap();
    inputs.literals.insert("static_hyperparameters".into(), hps);
    l.inputs = Arc::new(inputs);
    let first = bed.start(&t, &l).unwrap();
    assert_eq!(
        bed.start(&t, &l).unwrap(),
        first,
        "a repeated start finds its job"
    );
    let jobs = bed.boto("list_training_jobs", json!({}));
    assert_eq!(
        jobs["TrainingJobSummaries"].as_array().unwrap().len(),
        1,
        "{jobs}"
    );
    let d = bed.boto(
        "describe_training_job",
        json!({"TrainingJobName": "lg-n0-0"}),
    );
    assert_eq!(d["HyperParameters"], json!({"num_round": "10"}));
    assert_eq!(d["RoleArn"], ROLE);
    assert_eq!(
        d["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"],
        "s3://b/train/"
    );
    // The next attempt is a job of its own.
    l.attempt = 1;
    l.name = "lg-n0-1".into();
    let second = bed.start(&t, &l).unwrap();
    assert_ne!(second, first);
    // An abort stops each; Stopped is a retryable system failure, as in Flyte; a second abort is fine.
    for h in [&first, &second] {
        assert_eq!(bed.check(&t, h), TaskStatus::Running);
        bed.rt.block_on(bed.conn(&t).abort(h)).unwrap();
        let end = bed.end(&t, h);
        assert_eq!(code_of(&end), ("Stopped", ErrorKind::System, true));
        bed.rt.block_on(bed.conn(&t).abort(h)).unwrap();
    }
    // Without its inputs the attempt cannot start, and says which.
    l.inputs = Arc::new(updraft_proto::core::LiteralMap::default());
    l.name = "lg-n0-2".into();
    let refused = bed.start(&t, &l).unwrap_err();
    let TaskStatus::Failed { message, .. } = &refused else {
        panic!("{refused:?}")
    };
    for want in [
        "inputs.train",
        "inputs.validation",
        "inputs.static_hyperparameters",
    ] {
        assert!(message.contains(want), "`{want}` missing from: {message}");
    }
}
