//! The AWS Batch connector against moto (`localstack/moto-up`), whose Batch jobs run their container's
//! command as a local process: the requests a start makes, a repeated start finding its job, aborts,
//! failures and the pre-flight check. Needs `UPDRAFT_TEST_MOTO` (set by `scripts/test`).

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde_json::json;
use support::{BUCKET, Moto, QUEUE, ROLE};
use updraft_connector::{Attempt, AttemptPaths, Connector, Handle};
use updraft_connector_batch::BatchConnector;
use updraft_engine::compile::{CompiledTask, Interface};
use updraft_engine::exec::{ErrorKind, TaskLaunch, TaskStatus};
use updraft_engine::plugins::PluginKind;
use updraft_proto::core::task_template::Target;
use updraft_proto::core::{Container, TaskTemplate};
use updraft_settings::Settings;

fn task(name: &str, args: &[&str], custom: serde_json::Value) -> CompiledTask {
    CompiledTask {
        name: name.into(),
        template: TaskTemplate {
            r#type: "aws-batch".into(),
            target: Some(Target::Container(Container {
                image: "ghcr.io/example/jobs:7".into(),
                args: args.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            })),
            custom: Some(updraft_engine::yaml::plugins::to_struct(&custom)),
            ..Default::default()
        },
        plugin: PluginKind::Batch,
        interface: Interface::default(),
    }
}

fn launch(exec: &str, attempt: u32) -> TaskLaunch {
    TaskLaunch {
        execution: exec.into(),
        node: 0,
        node_id: "n0".into(),
        index: None,
        attempt,
        task: "t".into(),
        inputs: Default::default(),
        name: format!("{exec}-n0-{attempt}"),
        interruptible: false,
        cache_key: None,
        cache_serializable: false,
        array_size: None,
    }
}

struct Bed {
    moto: Moto,
    conn: BatchConnector,
    data: updraft_aws::blobs::Blobs,
    rt: tokio::runtime::Runtime,
}

impl Bed {
    fn new() -> Bed {
        let moto = Moto::start(&[], &[]);
        let settings = Settings::parse("test", &moto.settings()).unwrap();
        let sdk = moto.sdk();
        Bed {
            conn: BatchConnector::new(&sdk, &settings),
            data: updraft_aws::blobs::Blobs::new(updraft_aws::s3_client(&sdk), BUCKET),
            moto,
            rt: tokio::runtime::Runtime::new().unwrap(),
        }
    }

    fn start(
        &self,
        t: &CompiledTask,
        l: &TaskLaunch,
    ) -> (Result<Handle, TaskStatus>, AttemptPaths) {
        let paths = AttemptPaths::under(&format!("s3://{BUCKET}/runs/{}", l.execution), l);
        let a = Attempt {
            launch: l,
            task: t,
            paths: &paths,
            data: &self.data,
            signal: None,
        };
        (self.rt.block_on(self.conn.start(&a)), paths)
    }

    /// Checks until the attempt ends (at most 60 s).
    fn end(&self, h: &Handle) -> TaskStatus {
        for _ in 0..240 {
            match self.rt.block_on(self.conn.check(h, &self.data)).unwrap() {
                TaskStatus::Queued | TaskStatus::Running => {
                    std::thread::sleep(Duration::from_millis(250))
                }
                end => return end,
            }
        }
        panic!("the job did not end in 60 s");
    }

    fn batch(&self) -> aws_sdk_batch::Client {
        aws_sdk_batch::Client::new(&self.moto.sdk())
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
fn a_job_carries_the_task_and_a_repeated_start_finds_it() {
    let bed = Bed::new();
    let t = task(
        "transcode",
        &["sh", "-c", "echo {{.input}} {{ .outputPrefix }}; exit 0"],
        json!({"parameters": {"codec": "mp4"}, "tags": {"team": "video"},
               "schedulingPriority": 3.0, "propagateTags": true, "platformCapabilities": "EC2"}),
    );
    let l = launch("e1", 0);
    let (first, paths) = bed.start(&t, &l);
    let first = first.unwrap();
    let (again, _) = bed.start(&t, &l);
    assert_eq!(
        again.unwrap(),
        first,
        "a repeated start finds the job it made"
    );
    let id = first.value["jobId"].as_str().unwrap().to_string();
    let batch = bed.batch();
    let jobs = bed
        .rt
        .block_on(
            batch
                .list_jobs()
                .job_queue(QUEUE)
                .filters(
                    aws_sdk_batch::types::KeyValuesPair::builder()
                        .name("JOB_NAME")
                        .values("e1-n0-0")
                        .build(),
                )
                .send(),
        )
        .unwrap();
    assert_eq!(
        jobs.job_summary_list().len(),
        1,
        "one job, however many starts"
    );
    let d = bed
        .rt
        .block_on(batch.describe_jobs().jobs(&id).send())
        .unwrap();
    let job = &d.jobs()[0];
    assert_eq!(job.job_name(), Some("e1-n0-0"));
    assert_eq!(job.parameters().unwrap()["codec"], "mp4");
    let tags = job.tags().unwrap();
    assert_eq!(tags["team"], "video");
    assert_eq!(tags["updraft:execution"], "e1");
    let c = job.container().unwrap();
    let command = c.command();
    assert_eq!(&command[..2], ["sh", "-c"]);
    assert_eq!(
        command[2],
        format!("echo {} {}; exit 0", paths.input, paths.output_prefix)
    );
    let env: std::collections::BTreeMap<&str, &str> = c
        .environment()
        .iter()
        .filter_map(|kv| Some((kv.name()?, kv.value()?)))
        .collect();
    assert_eq!(env["FLYTE_INTERNAL_EXECUTION_ID"], "e1");
    assert_eq!(
        env["BATCH_JOB_ARRAY_INDEX_VAR_NAME"],
        "FAKE_JOB_ARRAY_INDEX"
    );
    // The definition: made once from image, role and platform, shared by another task of the same.
    let defs = bed
        .rt
        .block_on(batch.describe_job_definitions().status("ACTIVE").send())
        .unwrap();
    let ours: Vec<_> = defs
        .job_definitions()
        .iter()
        .filter(|d| {
            d.job_definition_name()
                .is_some_and(|n| n.starts_with("updraft-jobs-"))
        })
        .collect();
    assert_eq!(ours.len(), 1);
    let props = ours[0].container_properties().unwrap();
    assert_eq!(props.image(), Some("ghcr.io/example/jobs:7"));
    assert_eq!(props.job_role_arn(), Some(ROLE));
    let other = task("other", &["true"], json!({}));
    let (h2, _) = bed.start(&other, &launch("e2", 0));
    h2.unwrap();
    let defs = bed
        .rt
        .block_on(batch.describe_job_definitions().status("ACTIVE").send())
        .unwrap();
    assert_eq!(defs.job_definitions().len(), 1, "the definition is reused");
    // It ran (a process), and left no outputs: a system error to retry.
    let end = bed.end(&first);
    assert_eq!(code_of(&end), ("NoOutputs", ErrorKind::System, true));
}

#[test]
fn failures_and_aborts() {
    let bed = Bed::new();
    // A non-zero exit without error.pb: the task's own failure, retryable.
    let (h, _) = bed.start(
        &task("fails", &["sh", "-c", "exit 3"], json!({})),
        &launch("f", 0),
    );
    let end = bed.end(&h.unwrap());
    assert_eq!(code_of(&end), ("ExitCode", ErrorKind::User, true));
    match &end {
        TaskStatus::Failed { message, .. } => assert!(message.contains("exit code 3"), "{message}"),
        _ => unreachable!(),
    }
    // error.pb decides over the exit code.
    let l = launch("g", 0);
    let (h, paths) = bed.start(&task("errs", &["sleep", "1"], json!({})), &l);
    let h = h.unwrap();
    let doc =
        updraft_engine::exec::outcome::error_document("Bad", "bad input", ErrorKind::User, false);
    bed.rt
        .block_on(bed.data.put(
            &format!("{}/error.pb", paths.output_prefix),
            updraft_proto::Message::encode_to_vec(&doc),
        ))
        .unwrap();
    let end = bed.end(&h);
    assert_eq!(code_of(&end), ("Bad", ErrorKind::User, false));
    // An abort terminates the job; a second one (the job gone) is fine.
    let (h, _) = bed.start(&task("long", &["sleep", "120"], json!({})), &launch("a", 0));
    let h = h.unwrap();
    for _ in 0..40 {
        if bed.rt.block_on(bed.conn.check(&h, &bed.data)).unwrap() == TaskStatus::Running {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    bed.rt.block_on(bed.conn.abort(&h)).unwrap();
    bed.rt.block_on(bed.conn.abort(&h)).unwrap();
    let end = bed.end(&h);
    assert_eq!(code_of(&end).0, "Aborted", "{end:?}");
    // A failure moto was told to make (a status reason, no exit code of the task's).
    bed.moto.lifecycle(
        json!({"failures": [{"match": "hosted", "reason": "Host EC2 (instance i-0) terminated."}]}),
    );
    let (h, _) = bed.start(&task("t", &["true"], json!({})), &launch("hosted", 0));
    let end = bed.end(&h.unwrap());
    assert_eq!(code_of(&end), ("Interrupted", ErrorKind::System, true));
}

#[test]
fn preflight_names_what_is_missing() {
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .build();
    let conn = BatchConnector::new(&sdk, &Settings::default());
    let t = task(
        "t",
        &["{{.bad}}"],
        json!({"platformCapabilities": "ARM", "tags": {"n": 1.0}}),
    );
    let fields: Vec<String> = conn.preflight(&t).into_iter().map(|p| p.field).collect();
    for want in [
        "batch.jobQueue",
        "batch.jobRoleArn",
        "custom.platformCapabilities",
        "custom.tags.n",
        "container.args",
        "data.prefix",
    ] {
        assert!(
            fields.iter().any(|f| f == want),
            "{want} missing from {fields:?}"
        );
    }
    let settings = Settings::parse(
        "s",
        "data: {prefix: 's3://b/p'}\nbatch: {jobQueue: q, jobRoleArn: r}\n",
    )
    .unwrap();
    let conn = BatchConnector::new(&sdk, &settings);
    assert!(conn.preflight(&task("t", &["true"], json!({}))).is_empty());
}
