//! The deployed form end to end on LocalStack: `updraft deploy` creates the CloudFormation stack of
//! `infra/updraft.yaml` with the real Lambda binaries (run as processes by `localstack/executor`),
//! `updraft register` uploads flytekit packages, requests dropped into the bucket (and sent to the
//! launch queue, and given to the launch function) start executions, and the functions drive them —
//! native tasks as pods on the Kubernetes API test server, whose kubelet runs the real `pyflyte-execute`
//! and, for raw containers, the real `updraft-copilot` against LocalStack's S3. The outputs in S3 must
//! equal those of a local run. The first stack is
//! deployed with `FaultInjection=duplicate`, so every transitions-queue message is delivered twice; the
//! second with `crash-before-commit` and short timeouts, for crashes between an effect and its commit,
//! a poison message and a job state change sent through EventBridge by moto (`localstack/lifecycles.py`).
//!
//! Needs `UPDRAFT_TEST_LOCALSTACK`, `UPDRAFT_TEST_PYTHON` and `UPDRAFT_TEST_MOTO` (`scripts/test` sets
//! them).

#![allow(clippy::unwrap_used)]

mod common;
#[path = "../../connectors/batch/tests/support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{root, temp_dir};
use updraft_proto::Message;
use updraft_test_kube::{Node, Server};

fn endpoint() -> String {
    std::env::var("UPDRAFT_TEST_LOCALSTACK").unwrap_or_else(|_| {
        panic!(
            "UPDRAFT_TEST_LOCALSTACK is not set: run the tests with `bash scripts/test`, which starts \
             LocalStack (localstack/up) and passes its endpoint"
        )
    })
}

fn python() -> String {
    std::env::var("UPDRAFT_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("UPDRAFT_TEST_PYTHON is not set: run the tests with `bash scripts/test`")
    })
}

/// The deployment under test and how to reach it.
struct Deployed {
    stack: String,
    endpoint: String,
    /// The settings file it was deployed with.
    settings: PathBuf,
    outputs: serde_json::Value,
    server: Server,
}

impl Deployed {
    /// Runs `updraft <args> --stack S --endpoint-url E` with test credentials.
    fn updraft(&self, args: &[&str]) -> (i32, String, String) {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--stack", &self.stack, "--endpoint-url", &self.endpoint]);
        updraft_aws_env(&all)
    }

    /// Runs `f` with an AWS configuration for LocalStack.
    fn with_sdk<T, F: std::future::Future<Output = T>>(
        &self,
        f: impl FnOnce(aws_config::SdkConfig) -> F,
    ) -> T {
        let endpoint = self.endpoint.clone();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .endpoint_url(endpoint)
                    .region(aws_config::Region::new("us-east-1"))
                    .credentials_provider(aws_credential_types::Credentials::new(
                        "test", "test", None, None, "tests",
                    ))
                    .load()
                    .await;
                f(sdk).await
            })
    }

    /// Runs `f` with the stack's table, bucket and transitions queue.
    fn with_clients<T, F: std::future::Future<Output = T>>(
        &self,
        f: impl FnOnce(updraft_aws::Clients) -> F,
    ) -> T {
        let out = |k: &str| self.outputs[k].as_str().unwrap().to_string();
        let (table, bucket, queue) = (
            out("TableName"),
            out("BucketName"),
            out("TransitionsQueueUrl"),
        );
        self.with_sdk(|sdk| f(updraft_aws::Clients::new(sdk, &table, &bucket, &queue)))
    }

    /// The transitions queue's event source mapping's batch size and batching window (seconds).
    fn transitions_batching(&self) -> (i32, i32) {
        let (function, queue) = (
            format!("{}-transition", self.stack),
            self.outputs["TransitionsQueueUrl"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        self.with_sdk(|sdk| async move {
            let lambda = aws_sdk_lambda::Client::new(&sdk);
            let sqs = aws_sdk_sqs::Client::new(&sdk);
            let arn = sqs
                .get_queue_attributes()
                .queue_url(&queue)
                .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                .send()
                .await
                .unwrap()
                .attributes()
                .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
                .cloned()
                .unwrap();
            let mappings = lambda
                .list_event_source_mappings()
                .function_name(&function)
                .send()
                .await
                .unwrap();
            let m = mappings
                .event_source_mappings()
                .iter()
                .find(|m| m.event_source_arn() == Some(arn.as_str()))
                .expect("no mapping of the transitions queue");
            (
                m.batch_size().unwrap_or_default(),
                m.maximum_batching_window_in_seconds().unwrap_or_default(),
            )
        })
    }

    /// The cluster settings (which hold credentials here: the pods' `AWS_SECRET_ACCESS_KEY`) show in no
    /// function's configuration, which names the secret holding them instead, and the stack shows its
    /// `EksSettings` parameter masked.
    fn settings_stay_secret(&self) {
        let stack = self.stack.clone();
        let (configs, shown) = self.with_sdk(|sdk| async move {
            let lambda = aws_sdk_lambda::Client::new(&sdk);
            let mut configs = Vec::new();
            for f in ["launch", "transition", "events"] {
                let c = lambda
                    .get_function_configuration()
                    .function_name(format!("{stack}-{f}"))
                    .send()
                    .await
                    .unwrap();
                let vars: std::collections::BTreeMap<String, String> = c
                    .environment()
                    .and_then(|e| e.variables())
                    .map(|v| v.clone().into_iter().collect())
                    .unwrap_or_default();
                configs.push(serde_json::to_string(&vars).unwrap());
            }
            let cfn = aws_sdk_cloudformation::Client::new(&sdk);
            let described = cfn
                .describe_stacks()
                .stack_name(&stack)
                .send()
                .await
                .unwrap();
            let shown = described.stacks()[0]
                .parameters()
                .iter()
                .find(|p| p.parameter_key() == Some("EksSettings"))
                .and_then(|p| p.parameter_value().map(str::to_string));
            (configs, shown)
        });
        for c in &configs {
            assert!(!c.contains("SECRET_ACCESS_KEY"), "{c}");
            assert!(!c.contains("UPDRAFT_EKS\""), "{c}");
        }
        assert!(
            configs[..2]
                .iter()
                .all(|c| c.contains("UPDRAFT_EKS_SECRET") && c.contains(":secretsmanager:")),
            "{configs:?}"
        );
        assert_eq!(shown.as_deref(), Some("****"));
    }

    /// Outputs of an execution as the functions wrote them to S3.
    fn s3_outputs(&self, name: &str) -> serde_json::Value {
        let bucket = self.outputs["BucketName"].as_str().unwrap().to_string();
        let key = format!("executions/{name}/outputs.pb");
        let bytes = self.with_sdk(|sdk| async move {
            let s3 = updraft_aws::s3_client(&sdk);
            let out = s3
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap();
            out.body.collect().await.unwrap().into_bytes().to_vec()
        });
        let map = updraft_proto::core::LiteralMap::decode(bytes.as_slice()).unwrap();
        serde_json::Value::Object(
            map.literals
                .iter()
                .map(|(k, v)| (k.clone(), updraft_engine::literal::to_json(v)))
                .collect(),
        )
    }

    /// Launches each `(name, launch arguments, local run arguments)` together, then watches each and
    /// checks its outputs equal a local run's.
    fn launch_together_as_locally(&self, cases: &[(&str, &[&str], &[&str])]) {
        for (name, args, _) in cases {
            let mut all = vec!["launch", "--name", name];
            all.extend(*args);
            let (code, _, err) = self.updraft(&all);
            assert_eq!(code, 0, "launch {name}: {err}");
        }
        for (name, _, local) in cases {
            let (code, _, err) = self.updraft(&["watch", name]);
            assert_eq!(code, 0, "{name}: {err}");
            assert_eq!(self.s3_outputs(name), local_outputs(local), "{name}");
        }
    }

    /// Keys in the stack's bucket under `prefix`.
    fn s3_keys(&self, prefix: &str) -> Vec<String> {
        let bucket = self.outputs["BucketName"].as_str().unwrap().to_string();
        let prefix = prefix.to_string();
        self.with_sdk(|sdk| async move {
            let out = updraft_aws::s3_client(&sdk)
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .send()
                .await
                .unwrap();
            out.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string))
                .collect()
        })
    }

    /// Pods the test cluster ran for execution `name`.
    fn pods_of(&self, name: &str) -> BTreeSet<String> {
        let store = self.server.store.lock().unwrap();
        store
            .logs
            .keys()
            .map(|(k, _)| k.name.clone())
            .filter(|p| p.starts_with(&format!("{name}-")))
            .collect()
    }
}

impl Drop for Deployed {
    /// Deletes the stack, so its event source mappings stop polling (bucket and table are kept, as the
    /// template says).
    fn drop(&mut self) {
        let stack = self.stack.clone();
        self.with_sdk(|sdk| async move {
            let _ = aws_sdk_cloudformation::Client::new(&sdk)
                .delete_stack()
                .stack_name(stack)
                .send()
                .await;
        });
    }
}

impl Deployed {
    /// Starts `updraft ui` over the deployment, reading pods' logs with the settings it was deployed
    /// with.
    fn console(&self) -> common::Console {
        common::Console::start(
            &[
                "--stack",
                &self.stack,
                "--endpoint-url",
                &self.endpoint,
                "--settings",
                self.settings.to_str().unwrap(),
            ],
            &[
                ("AWS_ACCESS_KEY_ID", OsStr::new("test")),
                ("AWS_SECRET_ACCESS_KEY", OsStr::new("test")),
                ("AWS_REGION", OsStr::new("us-east-1")),
            ],
        )
    }
}

/// Runs `updraft` with LocalStack's test credentials.
fn updraft_aws_env(args: &[&str]) -> (i32, String, String) {
    common::updraft_env(
        args,
        &[
            ("AWS_ACCESS_KEY_ID", OsStr::new("test")),
            ("AWS_SECRET_ACCESS_KEY", OsStr::new("test")),
            ("AWS_REGION", OsStr::new("us-east-1")),
            (
                "PYTHONPATH",
                root().join("tests/fixtures/flytekit/src").as_os_str(),
            ),
        ],
    )
}

/// The Lambda binaries, built (debug) beside the `updraft` under test.
fn bundle() -> PathBuf {
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", "updraft-functions", "--bins"])
        .current_dir(root())
        .status()
        .unwrap();
    assert!(status.success(), "cannot build the functions");
    Path::new(env!("CARGO_BIN_EXE_updraft"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn cluster(work: &Path) -> Server {
    let node = Node::python(
        Path::new(&python()),
        &root().join("tests/fixtures/flytekit/src"),
        &[updraft_test_kube::programs_dir("updraft-copilot")],
    );
    Server::start_node(0, work.join("kubelet"), node).unwrap()
}

/// Deploys a stack named after `tag` with the test cluster and the parameters given (`-p K=V`).
fn deploy(tag: &str, params: &[&str]) -> Deployed {
    deploy_with(tag, params, serde_json::json!({}))
}

/// As [`deploy`], with more sections of the settings file (`aws`, `batch`, …) beside the cluster's.
fn deploy_with(tag: &str, params: &[&str], more: serde_json::Value) -> Deployed {
    let ep = endpoint();
    let work = temp_dir(tag);
    let server = cluster(&work);
    // The functions reach the test cluster as they reach EKS: by name, endpoint and CA (no CA: it
    // speaks plain HTTP), with a token from their role.
    let eks = serde_json::json!({
        "namespace": "flyte",
        "cluster": {"name": "test", "endpoint": server.url, "certificateAuthorityData": ""},
        "env": {
            "FLYTE_AWS_ENDPOINT": ep,
            "FLYTE_AWS_ACCESS_KEY_ID": "test",
            "FLYTE_AWS_SECRET_ACCESS_KEY": "test",
            "AWS_ENDPOINT_URL": ep,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    });
    let mut settings = serde_json::json!({ "eks": eks });
    for (k, v) in more.as_object().unwrap() {
        settings[k] = v.clone();
    }
    // JSON is YAML: the settings file as --settings reads it.
    let settings_file = work.join("settings.yaml");
    std::fs::write(&settings_file, settings.to_string()).unwrap();
    let bundle = bundle();
    let stack = format!("{tag}{}", std::process::id());
    let mut d = Deployed {
        stack,
        endpoint: ep,
        settings: settings_file.clone(),
        outputs: serde_json::Value::Null,
        server,
    };
    let mut args = vec![
        "deploy",
        "--bundle",
        bundle.to_str().unwrap(),
        "--settings",
        settings_file.to_str().unwrap(),
        "-p",
        "MaxCheckDelaySeconds=2",
    ];
    for p in params {
        args.extend(["-p", p]);
    }
    let (code, out, err) = d.updraft(&args);
    assert_eq!(code, 0, "deploy: {err}");
    assert!(err.contains("CREATE_COMPLETE"), "{err}");
    d.outputs = serde_json::from_str(&out).unwrap();
    d.settings_stay_secret();
    d
}

/// Outputs of a local run of `args`, in a state folder of its own (the tests run side by side).
fn local_outputs(args: &[&str]) -> serde_json::Value {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let state = temp_dir(&format!("stack-local-{n}"));
    let mut all: Vec<&str> = vec!["run"];
    all.extend(args);
    let python = python();
    all.extend(["--python", &python, "--state-dir", state.to_str().unwrap()]);
    let (code, out, err) = updraft_aws_env(&all);
    assert_eq!(code, 0, "local run: {err}");
    serde_json::from_str(&out).unwrap()
}

/// `updraft launch` of the branch workflow as `br` (x=3), by a request dropped into the bucket, waiting.
const LAUNCH_BR: &[&str] = &[
    "launch",
    "-w",
    "fixtures.branches.branch_wf",
    "-i",
    "x=3",
    "--name",
    "br",
    "--wait",
];

/// Launches the branch workflow as `br` (x=3) by a request dropped into the bucket and waits for it;
/// its outputs in S3 must equal a local run's. Returns what `launch` printed and those outputs.
fn launch_br(d: &Deployed) -> (String, serde_json::Value) {
    let (code, out, err) = d.updraft(LAUNCH_BR);
    assert_eq!(code, 0, "launch br: {err}");
    let local = local_outputs(&["tests/fixtures/flytekit/branches.tgz", "-i", "x=3"]);
    assert_eq!(d.s3_outputs("br"), local);
    (out, local)
}

#[test]
fn a_deployed_stack_runs_flytekit_workflows_as_a_local_run_does() {
    // Messages delivered twice, and gathered for a second into batches of up to 100.
    let d = deploy(
        "e2e",
        &["FaultInjection=duplicate", "TransitionBatchWindowSeconds=1"],
    );
    assert_eq!(d.transitions_batching(), (100, 1));
    for key in [
        "BucketName",
        "TableName",
        "TransitionsQueueUrl",
        "LaunchQueueUrl",
        "LaunchFunctionName",
        "TransitionFunctionName",
        "EventsFunctionName",
    ] {
        assert!(d.outputs[key].is_string(), "no output {key}: {}", d.outputs);
    }
    // Deploying again changes nothing: the same code, and the parameters not given keep their values.
    let bundle = bundle();
    let (code, _, err) = d.updraft(&["deploy", "--bundle", bundle.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("up to date"), "{err}");

    let (code, out, err) = d.updraft(&[
        "register",
        "tests/fixtures/flytekit/branches.tgz",
        "tests/fixtures/flytekit/maps.tgz",
        "tests/fixtures/flytekit/failures.tgz",
    ]);
    assert_eq!(code, 0, "register: {err}");
    assert!(
        out.lines().any(|l| l == "fixtures.branches.branch_wf"),
        "{out}"
    );

    // A branch between real tasks, launched by a request dropped into the bucket.
    let (out, local) = launch_br(&d);
    let printed: serde_json::Value = serde_json::from_str(out.split_once('\n').unwrap().1).unwrap();
    assert_eq!(printed, local);
    let pods = d.pods_of("br");
    assert!(!pods.is_empty());

    // A map task, launched through the launch queue.
    let (code, _, err) = d.updraft(&[
        "launch",
        "-w",
        "fixtures.maps.maps_wf",
        "--name",
        "mp",
        "--via",
        "queue",
        "--wait",
    ]);
    assert_eq!(code, 0, "launch mp: {err}");
    let local = local_outputs(&["tests/fixtures/flytekit/maps.tgz"]);
    assert_eq!(d.s3_outputs("mp"), local);

    // Reference tasks and launch plans resolve against what the stack registered, by version; the
    // reference launch plan runs as a child execution.
    let refs = "tests/fixtures/flytekit/references.tgz";
    let (code, _, err) = d.updraft(&["register", refs]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("task `fixtures.subworkflows.add` (version v1) is not in the package (or the packages given with it), and nothing registered has it"),
        "{err}"
    );
    let (code, _, err) = d.updraft(&[
        "register",
        "tests/fixtures/flytekit/subworkflows.tgz",
        "tests/fixtures/flytekit/launchplans.tgz",
        "--version",
        "v1",
    ]);
    assert_eq!(code, 0, "register: {err}");
    let (code, out, err) = d.updraft(&["register", refs]);
    assert_eq!(code, 0, "register: {err}");
    assert!(
        err.contains("launch plan `greet_twice` (version v1) resolved from the stack's registry"),
        "{err}"
    );
    assert!(out.contains("fixtures.references.references_wf"), "{out}");
    let (code, _, err) = d.updraft(&[
        "launch",
        "-w",
        "fixtures.references.references_wf",
        "--name",
        "rf",
        "--wait",
    ]);
    assert_eq!(code, 0, "launch rf: {err}");
    let local = local_outputs(&[
        refs,
        "tests/fixtures/flytekit/subworkflows.tgz",
        "tests/fixtures/flytekit/launchplans.tgz",
        "-w",
        "fixtures.references.references_wf",
    ]);
    assert_eq!(local, serde_json::json!({"o0": "Hey, ref! Hey, ref!"}));
    assert_eq!(d.s3_outputs("rf"), local);

    // Dynamic tasks: the sub-workflow each returns runs as a child execution, compiled again by
    // every transition from the spec kept in the bucket; nested ones as children of a child.
    let (code, _, err) = d.updraft(&[
        "register",
        "tests/fixtures/flytekit/dynamic.tgz",
        "tests/fixtures/flytekit/dynamic_nested.tgz",
    ]);
    assert_eq!(code, 0, "register: {err}");
    for (name, args) in [
        ("dy", ["fixtures.dynamic.dynamic_wf", "n=3"]),
        ("dn", ["fixtures.dynamic_nested.nested_wf", "m=3"]),
    ] {
        let (code, _, err) = d.updraft(&[
            "launch", "-w", args[0], "-i", args[1], "--name", name, "--wait",
        ]);
        assert_eq!(code, 0, "launch {name}: {err}");
    }
    assert_eq!(d.s3_outputs("dy"), serde_json::json!({"o0": "1,2,3"}));
    assert_eq!(
        d.s3_outputs("dy"),
        local_outputs(&["tests/fixtures/flytekit/dynamic.tgz", "-i", "n=3"])
    );
    assert_eq!(d.s3_outputs("dn"), serde_json::json!({"o0": [1, 5, 14]}));

    // Gates in a launch-plan node's child: the sleep ends by a timer, and signals sent to the parent
    // reach the child's gates (a value, then an approval).
    let (code, _, err) = d.updraft(&["register", "tests/fixtures/flytekit/gates_child.tgz"]);
    assert_eq!(code, 0, "register: {err}");
    let (code, _, err) = d.updraft(&[
        "launch",
        "-w",
        "fixtures.gates_child.gated_parent_wf",
        "-i",
        "x=7",
        "--name",
        "gt",
    ]);
    assert_eq!(code, 0, "launch gt: {err}");
    let gate_running = |node: &str| {
        let (_, out, err) = d.updraft(&["status", "gt-n0"]);
        let waiting = out
            .lines()
            .any(|l| l.trim_start().starts_with(&format!("{node} ")) && l.ends_with("Running"));
        waiting
            .then_some(())
            .ok_or(format!("gate {node} of gt-n0 is not waiting: {out}{err}"))
    };
    poll(Duration::from_secs(180), || gate_running("n2"));
    let (code, _, err) = d.updraft(&["signal", "gt", "review-note", "lgtm"]);
    assert_eq!(code, 0, "signal: {err}");
    poll(Duration::from_secs(120), || gate_running("n3"));
    let (code, _, err) = d.updraft(&["signal", "gt", "publish-report", "true"]);
    assert_eq!(code, 0, "signal: {err}");
    let (code, _, err) = d.updraft(&["watch", "gt"]);
    assert_eq!(code, 0, "gt: {err}");
    assert_eq!(
        d.s3_outputs("gt"),
        serde_json::json!({"o0": "report 7 (lgtm)"})
    );

    // Caching: a miss runs the tasks and stores their outputs; the same inputs again run nothing
    // (the outputs carry the computing process's token, so a hit shows the same one);
    // --overwrite-cache runs them again and stores the new outputs; other inputs miss.
    let (code, _, err) = d.updraft(&["register", "tests/fixtures/flytekit/caching.tgz"]);
    assert_eq!(code, 0, "register: {err}");
    let cached = |name: &str, x: &str, overwrite: bool| {
        let input = format!("x={x}");
        let mut args = vec![
            "launch",
            "-w",
            "fixtures.caching.cached_wf",
            "-i",
            &input,
            "--name",
            name,
            "--wait",
        ];
        if overwrite {
            args.push("--overwrite-cache");
        }
        let (code, _, err) = d.updraft(&args);
        assert_eq!(code, 0, "launch {name}: {err}");
        d.s3_outputs(name)
    };
    let first = cached("ca", "3", false);
    assert_eq!(
        (first["o0"].as_i64(), first["o2"].as_i64()),
        (Some(9), Some(27))
    );
    assert_eq!(d.pods_of("ca").len(), 2, "a miss runs both tasks");
    assert_eq!(cached("cb", "3", false), first, "a hit");
    assert!(d.pods_of("cb").is_empty(), "a hit runs nothing");
    let again = cached("cc", "3", true);
    assert_eq!(d.pods_of("cc").len(), 2, "an overwrite runs both tasks");
    assert_ne!(again["o1"], first["o1"]);
    assert_ne!(again["o3"], first["o3"]);
    assert_eq!(
        cached("cd", "3", false),
        again,
        "the overwrite stored its outputs"
    );
    let other = cached("ce", "4", false);
    assert_eq!(
        (other["o0"].as_i64(), other["o2"].as_i64()),
        (Some(16), Some(64))
    );
    assert_eq!(d.pods_of("ce").len(), 2, "other inputs miss");
    // cache_serialize: three nodes of one execution and three of another reach one key at once; one
    // pod computes it, the other attempts wait for its result (the same process token everywhere).
    for name in ["sa", "sb"] {
        let (code, _, err) = d.updraft(&[
            "launch",
            "-w",
            "fixtures.caching.serialized_wf",
            "-i",
            "x=7",
            "--name",
            name,
        ]);
        assert_eq!(code, 0, "launch {name}: {err}");
    }
    let mut tokens = Vec::new();
    for name in ["sa", "sb"] {
        let (code, _, err) = d.updraft(&["watch", name]);
        assert_eq!(code, 0, "{name}: {err}");
        let out = d.s3_outputs(name);
        tokens.extend(["o0", "o1", "o2"].map(|k| out[k].clone()));
    }
    assert!(
        tokens.iter().all(|t| *t == tokens[0] && t.is_string()),
        "{tokens:?}"
    );
    assert_eq!(
        d.pods_of("sa").len() + d.pods_of("sb").len(),
        1,
        "one attempt computed the key"
    );

    // flytekit-only plugins: SQLite3Task (its template read from S3 at {{.taskTemplatePath}}) and a
    // papermill NotebookTask, their outputs equal to a local run's.
    common::shop_db(&python());
    let (code, _, err) = d.updraft(&[
        "register",
        "tests/fixtures/flytekit/sqlite.tgz",
        "tests/fixtures/flytekit/notebook.tgz",
    ]);
    assert_eq!(code, 0, "register: {err}");
    let plugins: [(&str, &[&str], &[&str]); 2] = [
        (
            "sq",
            &["-w", "fixtures.sqlite.sqlite_wf", "-i", "limit=5"],
            &["tests/fixtures/flytekit/sqlite.tgz", "-i", "limit=5"],
        ),
        (
            "nb",
            &["-w", "fixtures.notebook.notebook_wf", "-i", "x=6"],
            &["tests/fixtures/flytekit/notebook.tgz", "-i", "x=6"],
        ),
    ];
    d.launch_together_as_locally(&plugins);
    assert!(
        d.s3_keys("executions/sq/")
            .iter()
            .any(|k| k.ends_with("/task.pb")),
        "the SQLite task's template is in S3"
    );

    // Raw containers, their data moved through S3 by the copilot in their pods: flytekit's
    // ContainerTask beside pod tasks, and YAML containers in a map and a branch, and passing a folder and
    // a file. Launched together, then watched.
    let (code, _, err) = d.updraft(&[
        "register",
        "tests/fixtures/flytekit/containers.tgz",
        "examples/hello.yaml",
        "tests/fixtures/yaml/files.yaml",
    ]);
    assert_eq!(code, 0, "register: {err}");
    let raw: [(&str, &[&str], &[&str]); 3] = [
        (
            "ct",
            &["-w", "fixtures.containers.containers_wf", "-i", "radius=2"],
            &["tests/fixtures/flytekit/containers.tgz", "-i", "radius=2"],
        ),
        (
            "hi",
            &["-w", "hello", "-i", "numbers=[1,2,3]"],
            &["examples/hello.yaml", "-i", "numbers=[1,2,3]"],
        ),
        ("wd", &["-w", "words"], &["tests/fixtures/yaml/files.yaml"]),
    ];
    d.launch_together_as_locally(&raw);
    let keys = d.s3_keys("executions/wd/");
    for file in [
        "/raw/words/more/1.txt",
        "/raw/words/more/3.txt",
        "/raw/report",
    ] {
        assert!(
            keys.iter().any(|k| k.ends_with(file)),
            "no {file} in {keys:?}"
        );
    }

    // Every message was delivered twice, yet each task attempt ran once: the same request again
    // starts nothing new.
    let (code, _, err) = d.updraft(LAUNCH_BR);
    assert_eq!(code, 0, "relaunch: {err}");
    assert_eq!(d.pods_of("br"), pods);

    let (code, out, err) = d.updraft(&["status", "br"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("br (fixtures.branches.branch_wf): SUCCEEDED"),
        "{out}"
    );
    assert!(out.contains("Succeeded"), "{out}");
    // Its history as JSON: the branch's nodes with their attempts, each with its times and its pod.
    let (code, out, err) = d.updraft(&["status", "br", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["phase"], "Succeeded", "{v}");
    let attempts: Vec<&serde_json::Value> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|n| n["attempts"].as_array().into_iter().flatten())
        .collect();
    assert!(!attempts.is_empty(), "{v}");
    for a in attempts {
        assert!(
            a["queued_ms"].as_u64().unwrap() <= a["ended_ms"].as_u64().unwrap(),
            "{a}"
        );
        assert!(
            a["logs"][0].as_str().unwrap().starts_with("kubectl logs"),
            "{a}"
        );
    }
    // The console over the stack: its executions, an execution's graph coloured by phase, the
    // launch plans registered on it, and a clear page for an execution it does not have.
    let console = d.console();
    let (code, _, page) = console.get("/");
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains(r#"data-execution="br" data-phase="Succeeded""#),
        "{page}"
    );
    let (code, _, page) = console.get("/executions/br");
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains(r#"<div id="live" data-running="0" data-phase="Succeeded">"#),
        "{page}"
    );
    assert!(page.contains(r#"<svg class="graph""#) && page.contains(r#"data-phase="Succeeded""#));
    let (code, _, page) = console.get("/workflows");
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains(r#"data-launch-plan="fixtures.branches.branch_wf""#),
        "{page}"
    );
    let (code, _, page) = console.get("/executions/nope");
    assert_eq!(code, 404);
    assert!(page.contains("no execution nope"), "{page}");
    drop(console);
    let (code, out, _) = d.updraft(&["list"]);
    assert_eq!(code, 0);
    assert!(out.contains("br ") && out.contains("mp "), "{out}");
    let (code, out, err) = d.updraft(&["logs", "br"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("launched"), "{out}");

    // A bad request dropped into the bucket is refused, with the reason next to it.
    let (code, _, err) = d.updraft(&["launch", "-w", "no.such.workflow", "--name", "bad"]);
    assert_eq!(code, 1);
    assert!(err.contains("not registered"), "{err}");

    // Abort mid-run: started by invoking the launch function, stopped once its pod runs.
    let (code, out, err) = d.updraft(&[
        "launch",
        "-w",
        "fixtures.failures.slow_wf",
        "--name",
        "stop",
        "--via",
        "invoke",
    ]);
    assert_eq!(code, 0, "launch stop: {err}");
    assert_eq!(out.trim(), "stop");
    poll(Duration::from_secs(120), || {
        let started = !d.server.store.lock().unwrap().objects.is_empty();
        started.then_some(()).ok_or("no pod started")
    });
    let (code, _, err) = d.updraft(&["abort", "stop", "--reason", "enough"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = d.updraft(&["watch", "stop"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("ABORTED"), "{err}");
    let left = d.server.store.lock().unwrap().names();
    assert!(left.is_empty(), "objects left running: {left:?}");
    let (code, _, err) = d.updraft(&["abort", "stop"]);
    assert_eq!(code, 1);
    assert!(err.contains("nothing to steer"), "{err}");

    // A running pod's log, followed by the console through the cluster's API, and printed by `logs`.
    let talker = d.settings.with_file_name("talker.yaml");
    std::fs::write(&talker, TALKER).unwrap();
    let (code, _, err) = d.updraft(&["register", talker.to_str().unwrap()]);
    assert_eq!(code, 0, "register: {err}");
    let (code, _, err) = d.updraft(&["launch", "-w", "talker", "--name", "talk"]);
    assert_eq!(code, 0, "launch talk: {err}");
    let console = d.console();
    let src = poll(Duration::from_secs(120), || {
        let (code, _, page) = console.get("/executions/talk/nodes/t");
        let logs = common::log_sources(&page);
        match logs.first() {
            Some((label, src)) if code == 200 && label == "pod talk-t-0" => Ok(src.clone()),
            _ => Err(format!("no pod log on the node's page: {page}")),
        }
    });
    let at = poll(Duration::from_secs(120), || {
        let (code, headers, text) = console.get(&format!("{src}&offset=0"));
        let running = headers.iter().any(|(k, v)| k == "x-running" && v == "1");
        match text.find("talking while it runs\n") {
            Some(at) if code == 200 && running => Ok(at),
            _ => Err(format!("{code} {headers:?}: {text}")),
        }
    });
    // from an offset on: the rest
    let (code, _, text) = console.get(&format!("{src}&offset={}", at + 8));
    assert_eq!(code, 200, "{text}");
    assert!(text.starts_with("while it runs\n"), "{text}");
    drop(console);
    let settings = d.settings.to_str().unwrap().to_string();
    let (code, out, err) = d.updraft(&["logs", "talk", "t", "--settings", &settings]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("==> t attempt 0 pod talk-t-0 <==\n"),
        "{out}"
    );
    assert!(out.contains("talking while it runs\n"), "{out}");
    let (code, _, err) = d.updraft(&["abort", "talk"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = d.updraft(&["watch", "talk"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("ABORTED"), "{err}");
}

/// A workflow whose one task prints a line and then runs until aborted.
const TALKER: &str = r#"
version: 1
image: busybox
tasks:
  talk:
    type: container
    outputs: {}
    command: [sh, -c, 'echo "talking while it runs"; sleep 600']
workflows:
  talker:
    nodes:
      - {id: t, task: talk}
"#;

/// Starts a SageMaker training job on `moto` (boto3, as a user's script would).
fn training_job(moto: &support::Moto, name: &str) {
    moto.boto(
        "boto3.client('sagemaker', **kw).create_training_job(\n\
             TrainingJobName=args[0],\n\
             AlgorithmSpecification={'TrainingImage': 'trainer:1', 'TrainingInputMode': 'File'},\n\
             RoleArn='arn:aws:iam::123456789012:role/trainer',\n\
             OutputDataConfig={'S3OutputPath': 's3://models/out'},\n\
             ResourceConfig={'InstanceType': 'ml.m5.large', 'InstanceCount': 1, 'VolumeSizeInGB': 1},\n\
             StoppingCondition={'MaxRuntimeInSeconds': 60})\n\
         print('{}')\n",
        &[name],
    );
}

/// Calls `f` every 200 ms until it gives a value; after `limit`, fails with its last complaint.
fn poll<T, E: std::fmt::Display>(limit: Duration, mut f: impl FnMut() -> Result<T, E>) -> T {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) => assert!(start.elapsed() < limit, "{e}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the stack shows execution `name` aborted: the abort's commit comes after the transition
/// that stopped its jobs, so a job seen stopped does not yet mean the execution shows it.
fn aborted(d: &Deployed, name: &str) {
    poll(Duration::from_secs(120), || {
        let (_, out, _) = d.updraft(&["status", name]);
        out.contains("ABORTED")
            .then_some(())
            .ok_or(format!("{name} is not aborted: {out}"))
    });
}

/// Names of the objects on the test cluster that start with `prefix`.
fn objects_of(d: &Deployed, prefix: &str) -> Vec<String> {
    let mut names = d.server.store.lock().unwrap().names();
    names.retain(|n| n.starts_with(prefix));
    names
}

/// Messages waiting in the queue at `url`.
fn queue_depth(d: &Deployed, url: &str) -> u64 {
    let url = url.to_string();
    d.with_sdk(|sdk| async move {
        let out = aws_sdk_sqs::Client::new(&sdk)
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .unwrap();
        out.attributes()
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    })
}

#[test]
fn a_deployed_stack_keeps_going_through_crashes_fails_poisoned_executions_and_hears_job_events() {
    // Every transition that starts a task exits between its effects and its commit on the message's
    // first delivery; the message comes back after the visibility timeout (35 s), once the crashed
    // transition's lease (10 s) has expired. A message fails its execution on its second delivery.
    // Every transition of an execution named die-… dies (`die`).
    let d = deploy(
        "crash",
        &[
            "FaultInjection=crash-before-commit,die",
            "TransitionTimeoutSeconds=5",
            "MaxReceiveCount=2",
        ],
    );
    // As deployed by default: batches of up to 10, handed over at once.
    assert_eq!(d.transitions_batching(), (10, 0));
    let (code, _, err) = d.updraft(&[
        "register",
        "tests/fixtures/flytekit/branches.tgz",
        "tests/fixtures/flytekit/failures.tgz",
        "tests/fixtures/flytekit/processes.tgz",
    ]);
    assert_eq!(code, 0, "register: {err}");

    // Crashes between effect and commit: the outputs are a local run's, and every task ran once.
    let (_, local) = launch_br(&d);
    {
        let store = d.server.store.lock().unwrap();
        let created: Vec<_> = store
            .creations
            .iter()
            .filter(|(k, _)| k.name.starts_with("br-"))
            .collect();
        assert!(!created.is_empty());
        assert!(
            created.iter().all(|(_, n)| **n == 1),
            "a task was launched twice: {created:?}"
        );
    }
    let (_, logs, _) = d.updraft(&["logs", "br"]);
    assert!(
        logs.contains("fault injection: exiting between the effects and the commit"),
        "no transition crashed: {logs}"
    );

    // A job state change through EventBridge's rule: the events function sends the check of the
    // task attempt that watches the job. Here the watcher is a late check of br's finished first
    // task, which must change nothing.
    let job = format!("updraft-e2e-{}", std::process::id());
    let check = updraft_proto::updraft::QueueMessage {
        execution: "br".into(),
        kind: Some(updraft_proto::updraft::queue_message::Kind::Check(
            updraft_proto::updraft::CheckMessage {
                node: 1,
                name: "br-late".into(),
                handle: r#"{"connector": "eks", "value": {"objects": [], "started_ms": 0, "output_prefix": "s3://nowhere/late"}}"#.into(),
                output_prefix: "s3://nowhere/late".into(),
                ..Default::default()
            },
        )),
    };
    let key = format!("sagemaker:training:{job}");
    let watched = key.clone();
    d.with_clients(|clients| async move {
        clients
            .store
            .watch(&watched, &check.encode_to_vec(), updraft_aws::now_ms())
            .await
            .unwrap();
    });
    // moto's jobs' state changes published to LocalStack's EventBridge.
    let moto = support::Moto::start(&[], &[]);
    moto.lifecycle(serde_json::json!({
        "queue_seconds": 0.2, "run_seconds": 0.5, "run_commands": false,
        "events_endpoint": d.endpoint,
    }));
    training_job(&moto, &job);
    poll(Duration::from_secs(60), || {
        let (_, logs, _) = d.updraft(&["logs", "br"]);
        let sent = logs.contains("check sent") && logs.contains(&key);
        sent.then_some(()).ok_or(format!(
            "the events function sent no check for {key}: {logs}"
        ))
    });
    drop(moto);

    // A poison message: a timer of a kind no transition knows, sent to a running execution (a task
    // that runs for minutes, with no timeout to end it first). Its second delivery fails the execution
    // with the reason and it goes to the dead-letter queue. The execution must be running first: its
    // start crashes on its first delivery (the injection), and on a loaded machine its second delivery
    // can outlive the 5 s timeout too, which fails the execution as a dead letter before the poison
    // message arrives; then another one is launched.
    let pids = std::env::temp_dir().join(format!("updraft-poison-{}.pids", std::process::id()));
    let pidfile = format!("pidfile={}", pids.display());
    let poisoned = (1..=3)
        .find_map(|n| {
            let name = format!("poison{n}");
            let (code, _, err) = d.updraft(&[
                "launch",
                "-w",
                "fixtures.processes.abort_wf",
                "-i",
                &pidfile,
                "--name",
                &name,
                "--via",
                "invoke",
            ]);
            assert_eq!(code, 0, "launch {name}: {err}");
            let running = poll(Duration::from_secs(180), || {
                let (_, out, err) = d.updraft(&["status", &name, "--json"]);
                let v: serde_json::Value =
                    serde_json::from_str(&out).map_err(|e| format!("{e}: {out}{err}"))?;
                let committed = v["nodes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|n| n["attempts"].as_array().is_some_and(|a| !a.is_empty()));
                match v["phase"].as_str() {
                    Some("Running") if committed => Ok(true),
                    Some("Failed") => Ok(false),
                    _ => Err(format!("{name} has not started its task: {v}")),
                }
            });
            if !running {
                let (_, out, _) = d.updraft(&["status", &name]);
                eprintln!("{name} failed before its task started; another is launched: {out}");
            }
            running.then_some(name)
        })
        .expect("no execution got its task started in three launches");
    let name = poisoned.as_str();
    poll(Duration::from_secs(120), || {
        let started = !objects_of(&d, &format!("{name}-")).is_empty();
        started.then_some(()).ok_or("no pod started")
    });
    let poison = updraft_proto::updraft::QueueMessage {
        execution: name.into(),
        kind: Some(updraft_proto::updraft::queue_message::Kind::Timer(
            updraft_proto::updraft::TimerMessage {
                kind: 99,
                ..Default::default()
            },
        )),
    };
    d.with_clients(|clients| async move {
        clients.queue.send(&poison, Duration::ZERO).await.unwrap();
    });
    let out = poll(Duration::from_secs(120), || {
        let (_, out, err) = d.updraft(&["status", name]);
        if out.contains("FAILED") {
            Ok(out)
        } else {
            Err(format!("{name} never showed FAILED: {out}{err}"))
        }
    });
    assert!(out.contains("PoisonMessage"), "{out}");
    assert!(out.contains("unknown timer kind 99"), "{out}");
    // The message went to the dead-letter queue, whose consumer keeps it (the execution was over).
    poll(Duration::from_secs(120), || {
        let kept = d.s3_keys(&format!("dead-letters/transitions/{name}/"));
        (kept.len() == 1)
            .then_some(())
            .ok_or(format!("the poison message is not kept: {kept:?}"))
    });
    // The failed execution's task is stopped, and the finished one is untouched by the late check.
    poll(Duration::from_secs(60), || {
        let left = objects_of(&d, &format!("{name}-"));
        left.is_empty()
            .then_some(())
            .ok_or(format!("objects left running: {left:?}"))
    });
    let (_, out, _) = d.updraft(&["status", "br"]);
    assert!(
        out.starts_with("br (fixtures.branches.branch_wf): SUCCEEDED"),
        "{out}"
    );
    assert_eq!(d.s3_outputs("br"), local);

    // Each way to die on every delivery: the function times out, exits, runs out of memory (the
    // executor enforces the function's 512 MB as Lambda does) or is throttled. Each start message goes
    // to the dead-letter queue after its two deliveries, and the dead-letter consumer fails its
    // execution with the reason. One at a time: a death takes the whole batch it is in with it.
    for (name, said) in [
        (
            "die-hang",
            "fault injection: hanging past the function's timeout",
        ),
        ("die-exit", "fault injection: exiting mid-transition"),
        ("die-oom", "fault injection: taking memory until killed"),
        ("die-throttle", "fault injection: ThrottlingException"),
    ] {
        let (code, _, err) = d.updraft(&[
            "launch",
            "-w",
            "fixtures.failures.slow_wf",
            "--name",
            name,
            "--via",
            "invoke",
        ]);
        assert_eq!(code, 0, "launch {name}: {err}");
        let out = poll(Duration::from_secs(300), || {
            let (_, out, err) = d.updraft(&["status", name]);
            if out.contains("FAILED") {
                Ok(out)
            } else {
                Err(format!("{name} never showed FAILED: {out}{err}"))
            }
        });
        assert!(out.contains("DeadLetter"), "{name}: {out}");
        assert!(
            out.contains("a start message was not processed in 2 deliveries"),
            "{name}: {out}"
        );
        assert_eq!(
            d.s3_keys(&format!("dead-letters/transitions/{name}/"))
                .len(),
            1,
            "{name}: its dead letter is not kept"
        );
        assert!(objects_of(&d, &format!("{name}-")).is_empty(), "{name}");
        // (the functions' lines reach CloudWatch Logs some time after the execution's end)
        poll(Duration::from_secs(120), || {
            let (_, logs, _) = d.updraft(&["logs", name]);
            if logs.contains(said) && logs.contains("execution failed by a dead-lettered message") {
                Ok(())
            } else {
                Err(format!("{name}: no transition said `{said}`: {logs}"))
            }
        });
    }
    let _ = std::fs::remove_file(&pids);
    // A launch whose every delivery made the execution but died before its start was sent leaves it
    // QUEUED; its request's dead letter, consumed by the launch function, fails it with the reason.
    let launch_dlq = d.outputs["LaunchDeadLetterQueueUrl"]
        .as_str()
        .unwrap()
        .to_string();
    d.with_clients(|clients| async move {
        let item = updraft_aws::store::ExecutionItem {
            name: "stuck".into(),
            phase: "QUEUED".into(),
            workflow: "fixtures.failures.slow_wf".into(),
            created: updraft_aws::now_ms(),
            ..Default::default()
        };
        assert!(clients.store.create_execution(&item).await.unwrap());
    });
    d.with_sdk(|sdk| async move {
        aws_sdk_sqs::Client::new(&sdk)
            .send_message()
            .queue_url(&launch_dlq)
            .message_body(r#"{"name": "stuck", "workflow": "fixtures.failures.slow_wf"}"#)
            .send()
            .await
            .unwrap();
    });
    let out = poll(Duration::from_secs(120), || {
        let (_, out, err) = d.updraft(&["status", "stuck"]);
        if out.contains("FAILED") {
            Ok(out)
        } else {
            Err(format!("stuck never showed FAILED: {out}{err}"))
        }
    });
    assert!(
        out.contains("DeadLetter") && out.contains("the launch request could not be processed"),
        "{out}"
    );
    assert_eq!(d.s3_keys("dead-letters/launch/").len(), 1);
    // Every dead letter was handled: none is left waiting.
    let dlq = d.outputs["TransitionsDeadLetterQueueUrl"].as_str().unwrap();
    poll(Duration::from_secs(120), || {
        let left = queue_depth(&d, dlq);
        (left == 0)
            .then_some(())
            .ok_or(format!("{left} dead letters left unhandled"))
    });
}

/// The job names moto's Batch has for attempt `name` (on the test queue).
fn batch_jobs(moto: &support::Moto, name: &str) -> Vec<(String, String, String)> {
    let sdk = moto.sdk();
    let name = name.to_string();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async move {
            let batch = aws_sdk_batch::Client::new(&sdk);
            let listed = batch
                .list_jobs()
                .job_queue(support::QUEUE)
                .filters(
                    aws_sdk_batch::types::KeyValuesPair::builder()
                        .name("JOB_NAME")
                        .values(&name)
                        .build(),
                )
                .send()
                .await
                .unwrap();
            let mut out = Vec::new();
            for j in listed.job_summary_list() {
                let id = j.job_id().unwrap().to_string();
                let d = batch.describe_jobs().jobs(&id).send().await.unwrap();
                let job = &d.jobs()[0];
                out.push((
                    id,
                    job.status()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                    job.status_reason().unwrap_or_default().to_string(),
                ));
            }
            out
        })
}

#[test]
fn a_deployed_stack_runs_aws_batch_tasks_as_batch_jobs() {
    // moto's Batch runs each job's pyflyte-execute as a local process, against LocalStack's S3 (the
    // stack's bucket), and publishes the jobs' state changes to LocalStack's EventBridge.
    let ls = endpoint();
    let bin = Path::new(&python()).parent().unwrap().to_path_buf();
    let moto = support::Moto::start_with(
        &[bin],
        &[root().join("tests/fixtures/flytekit/src")],
        &[("FLYTE_AWS_ENDPOINT", &ls), ("AWS_ENDPOINT_URL", &ls)],
    );
    moto.lifecycle(serde_json::json!({ "events_endpoint": ls }));
    // Every transitions-queue message is delivered twice.
    let d = deploy_with(
        "batch",
        &["FaultInjection=duplicate"],
        serde_json::json!({
            "aws": {"endpoint": moto.endpoint},
            "batch": {"jobQueue": support::QUEUE, "jobRoleArn": support::ROLE},
        }),
    );
    let (code, _, err) = d.updraft(&["register", "tests/fixtures/flytekit/batch.tgz"]);
    assert_eq!(code, 0, "register: {err}");
    let (code, _, err) = d.updraft(&[
        "launch",
        "-w",
        "fixtures.batch.batch_wf",
        "-i",
        "name=film",
        "--name",
        "bj",
        "--wait",
    ]);
    assert_eq!(code, 0, "launch bj: {err}");
    assert_eq!(d.s3_outputs("bj"), serde_json::json!({"o0": "film.mp4"}));
    // One job, however often its start was delivered.
    let jobs = batch_jobs(&moto, "bj-n0-0");
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].1, "SUCCEEDED");
    // Its state changes came through EventBridge to the events function, which checked the attempt.
    let key = format!("batch:{}", jobs[0].0);
    poll(Duration::from_secs(60), || {
        let (_, logs, _) = d.updraft(&["logs", "bj"]);
        (logs.contains("check sent") && logs.contains(&key))
            .then_some(())
            .ok_or(format!("no check sent for {key}: {logs}"))
    });
    // `updraft logs` with the node prints what the job printed, from its CloudWatch log stream.
    let settings = d.settings.to_str().unwrap().to_string();
    let (code, out, err) = d.updraft(&["logs", "bj", "n0", "--settings", &settings]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!("==> n0 attempt 0 batch job {} <==", jobs[0].0)),
        "{out}"
    );
    assert!(out.contains("transcoding film at 240 frames"), "{out}");

    // An abort stops the job through the handle its start kept.
    moto.lifecycle(serde_json::json!({ "queue_seconds": 120.0 }));
    let (code, _, err) = d.updraft(&["launch", "-w", "fixtures.batch.batch_wf", "--name", "held"]);
    assert_eq!(code, 0, "launch held: {err}");
    poll(Duration::from_secs(60), || {
        let jobs = batch_jobs(&moto, "held-n0-0");
        (jobs.len() == 1).then_some(()).ok_or(format!("{jobs:?}"))
    });
    let (code, _, err) = d.updraft(&["abort", "held", "--reason", "not needed"]);
    assert_eq!(code, 0, "abort: {err}");
    poll(Duration::from_secs(60), || {
        let jobs = batch_jobs(&moto, "held-n0-0");
        let stopped = jobs.len() == 1
            && jobs[0].1 == "FAILED"
            && jobs[0].2 == updraft_connector_batch::ABORT_REASON;
        stopped
            .then_some(())
            .ok_or(format!("the job was not terminated: {jobs:?}"))
    });
    aborted(&d, "held");
}

#[test]
fn a_deployed_stack_runs_sagemaker_tasks() {
    // moto's SageMaker runs the Pythonic jobs' pyflyte-execute as local processes against LocalStack's
    // S3 (the stack's bucket), and publishes every job's and endpoint's state changes to LocalStack's
    // EventBridge.
    let ls = endpoint();
    let bin = Path::new(&python()).parent().unwrap().to_path_buf();
    let moto = support::Moto::start_with(
        &[bin],
        &[root().join("tests/fixtures/flytekit/src")],
        &[("FLYTE_AWS_ENDPOINT", &ls), ("AWS_ENDPOINT_URL", &ls)],
    );
    moto.lifecycle(serde_json::json!({ "events_endpoint": ls }));
    // Each transition that starts a task exits between the start and its commit on the message's
    // first delivery: the redelivered start must find the job, not make another.
    let d = deploy_with(
        "sagemaker",
        &[
            "FaultInjection=crash-before-commit",
            "TransitionTimeoutSeconds=5",
            "BotoActions=sagemaker:CreateModel,sagemaker:CreateEndpointConfig,sagemaker:DescribeEndpoint",
        ],
        serde_json::json!({
            "aws": {"endpoint": moto.endpoint},
            "sagemaker": {"roleArn": "arn:aws:iam::123456789012:role/SageMakerRole"},
        }),
    );
    let (code, _, err) = d.updraft(&["register", "tests/fixtures/flytekit/sagemaker.tgz"]);
    assert_eq!(code, 0, "register: {err}");
    let (code, _, err) = d.updraft(&[
        "launch",
        "-w",
        "fixtures.sagemaker.services_wf",
        "--name",
        "sm",
        "--wait",
    ]);
    assert_eq!(code, 0, "launch sm: {err}");
    let out = d.s3_outputs("sm");
    let trained = &out["o0"];
    assert!(
        trained["ModelArtifacts"]["S3ModelArtifacts"]
            .as_str()
            .is_some_and(|s| s.ends_with("/output/model.tar.gz")),
        "{out}"
    );
    assert_eq!(
        out["o1"],
        serde_json::json!({"EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/svc"})
    );
    assert_eq!(
        (&out["o2"], &out["o3"], &out["o4"]),
        (
            &serde_json::json!(""),
            &serde_json::json!(84),
            &serde_json::json!(0.084)
        ),
        "{out}"
    );
    // One job per task, however often its start ran: each carries the attempt that made it.
    let jobs = sagemaker_jobs(&moto);
    let ours: Vec<_> = jobs
        .iter()
        .filter(|j| j["attempt"].as_str().is_some_and(|a| a.starts_with("sm-")))
        .collect();
    let mut attempts: Vec<&str> = ours
        .iter()
        .map(|j| j["attempt"].as_str().unwrap())
        .collect();
    attempts.sort();
    let before = attempts.len();
    attempts.dedup();
    assert_eq!(before, attempts.len(), "an attempt made two jobs: {jobs:?}");
    assert_eq!(
        attempts.len(),
        5,
        "processing, training, tuning and two Pythonic jobs: {jobs:?}"
    );
    let (_, logs, _) = d.updraft(&["logs", "sm"]);
    assert!(
        logs.contains("fault injection: exiting between the effects and the commit"),
        "no transition crashed: {logs}"
    );
    // State changes came through EventBridge to the events function, which checked the attempts.
    poll(Duration::from_secs(60), || {
        let (_, logs, _) = d.updraft(&["logs", "sm"]);
        (logs.contains("check sent") && logs.contains("sagemaker:endpoint:svc"))
            .then_some(())
            .ok_or(format!("no check sent for the endpoint: {logs}"))
    });

    // The legacy types too: a built-in algorithm's model, and a custom job that ran the task's own
    // function from its hyperparameters, each started once through the crashing transitions.
    let (code, _, err) = d.updraft(&["register", "tests/fixtures/flytekit/sagemaker_legacy.tgz"]);
    assert_eq!(code, 0, "register legacy: {err}");
    let (code, _, err) = d.updraft(&[
        "launch",
        "-w",
        "fixtures.sagemaker_legacy.legacy_services_wf",
        "--name",
        "lg",
        "--wait",
    ]);
    assert_eq!(code, 0, "launch lg: {err}");
    let out = d.s3_outputs("lg");
    assert!(
        out["o0"]
            .as_str()
            .is_some_and(|s| s.ends_with("/raw/training_outputs/lg-n0-0/output/model.tar.gz")),
        "{out}"
    );
    assert_eq!(out["o1"], serde_json::json!(1.2), "{out}");
    let legacy: Vec<_> = sagemaker_jobs(&moto)
        .into_iter()
        .filter(|j| j["attempt"].as_str().is_some_and(|a| a.starts_with("lg-")))
        .collect();
    let mut names: Vec<&str> = legacy.iter().map(|j| j["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, ["lg-n0-0", "lg-n1-0"], "{legacy:?}");

    // An abort stops the running jobs through the handles their starts kept. (The token-named jobs
    // are the first run's — the same request is the same job — so only the Pythonic ones run.)
    moto.lifecycle(serde_json::json!({ "queue_seconds": 300.0 }));
    let (code, _, err) = d.updraft(&[
        "launch",
        "-w",
        "fixtures.sagemaker.services_wf",
        "--name",
        "held",
    ]);
    assert_eq!(code, 0, "launch held: {err}");
    poll(Duration::from_secs(90), || {
        let held: Vec<_> = sagemaker_jobs(&moto)
            .into_iter()
            .filter(|j| {
                j["attempt"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("held-"))
            })
            .collect();
        (held.len() == 1).then_some(()).ok_or(format!("{held:?}"))
    });
    let (code, _, err) = d.updraft(&["abort", "held", "--reason", "not needed"]);
    assert_eq!(code, 0, "abort: {err}");
    poll(Duration::from_secs(60), || {
        let held: Vec<_> = sagemaker_jobs(&moto)
            .into_iter()
            .filter(|j| {
                j["attempt"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("held-"))
            })
            .collect();
        held.iter()
            .all(|j| j["status"] == "Stopped")
            .then_some(())
            .ok_or(format!("a job was not stopped: {held:?}"))
    });
    aborted(&d, "held");
}

/// Every SageMaker training, processing and tuning job moto has: name, status and `updraft:attempt`
/// tag.
fn sagemaker_jobs(moto: &support::Moto) -> Vec<serde_json::Value> {
    let script = r#"
import boto3, json, sys
c = boto3.client("sagemaker", endpoint_url=sys.argv[1], region_name="us-east-1",
                 aws_access_key_id="t", aws_secret_access_key="t")
out = []
for kind, key in (("training", "TrainingJob"), ("processing", "ProcessingJob"),
                  ("hyper_parameter_tuning", "HyperParameterTuningJob")):
    for s in getattr(c, f"list_{kind}_jobs")()[f"{key}Summaries"]:
        tags = {t["Key"]: t["Value"] for t in c.list_tags(ResourceArn=s[f"{key}Arn"])["Tags"]}
        out.append({"name": s[f"{key}Name"], "status": s[f"{key}Status"], "attempt": tags.get("updraft:attempt")})
print(json.dumps(out))
"#;
    let out = std::process::Command::new(std::env::var("UPDRAFT_TEST_MOTO").unwrap())
        .args(["-c", script, &moto.endpoint])
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
fn a_deployed_stack_runs_query_tasks_once_each() {
    // moto serves Athena, EMR Serverless and Secrets Manager (the Qubole token's secret); its Pythonic
    // EMR runs read their entry point from, and write their outputs to, LocalStack's S3 (the stack's
    // bucket); its state changes go to LocalStack's EventBridge. Hive runs on the Qubole API test
    // server.
    let ls = endpoint();
    let bin = Path::new(&python()).parent().unwrap().to_path_buf();
    let moto = support::Moto::start_with(
        &[bin],
        &[root().join("tests/fixtures/flytekit/src")],
        &[("FLYTE_AWS_ENDPOINT", &ls), ("AWS_ENDPOINT_URL", &ls)],
    );
    moto.lifecycle(serde_json::json!({ "events_endpoint": ls }));
    let qubole = support::qubole::Qubole::start("stack-token");
    let made = moto.boto(
        "sm = boto3.client('secretsmanager', **kw)\n\
         arn = sm.create_secret(Name='qubole-token', SecretString=args[1])['ARN']\n\
         s3 = boto3.client('s3', **dict(kw, endpoint_url=args[0]))\n\
         s3.create_bucket(Bucket='updraft-fixtures')\n\
         s3.put_object(Bucket='updraft-fixtures', Key='scripts/main.py', Body=b'print(\"main\")')\n\
         e = boto3.client('emr-serverless', **kw)\n\
         apps = {n: e.create_application(name=n, releaseLabel='emr-7.0.0', type=t)['applicationId'] \
                 for n, t in [('etl-spark', 'SPARK'), ('etl-hive', 'HIVE'), ('pythonic-app', 'SPARK')]}\n\
         print(json.dumps({'secret': arn, 'apps': apps}))",
        &[&ls, &qubole.token],
    );
    let emr_role = "arn:aws:iam::123456789012:role/EMRServerlessRole";
    // Each transition that starts a task exits between the start and its commit on the message's
    // first delivery: the redelivered start must find the query, command or job run, not make another.
    let d = deploy_with(
        "queries",
        &[
            "FaultInjection=crash-before-commit",
            "TransitionTimeoutSeconds=5",
        ],
        serde_json::json!({
            "aws": {"endpoint": moto.endpoint},
            "athena": {"workgroup": "primary"},
            "qubole": {"endpoint": qubole.endpoint, "tokenSecretArn": made["secret"]},
            "emrServerless": {"executionRoleArn": emr_role},
        }),
    );
    let (code, _, err) = d.updraft(&["register", "tests/fixtures/flytekit/queries.tgz"]);
    assert_eq!(code, 0, "register: {err}");
    for (wf, name) in [("athena_wf", "aq"), ("hive_wf", "hq"), ("emr_wf", "eq")] {
        let (code, _, err) = d.updraft(&[
            "launch",
            "-w",
            &format!("fixtures.queries.{wf}"),
            "--name",
            name,
            "--wait",
        ]);
        assert_eq!(code, 0, "launch {name}: {err}");
    }
    let bucket = d.outputs["BucketName"].as_str().unwrap().to_string();
    // Athena: one query, its results where Athena wrote them.
    let queries = moto.boto(
        "a = boto3.client('athena', **kw)\n\
         print(json.dumps([a.get_query_execution(QueryExecutionId=i)['QueryExecution'] \
                           for i in a.list_query_executions()['QueryExecutionIds']], default=str))",
        &[],
    );
    let queries = queries.as_array().unwrap();
    assert_eq!(
        queries.len(),
        1,
        "one query, however often its start ran: {queries:?}"
    );
    let location = queries[0]["ResultConfiguration"]["OutputLocation"]
        .as_str()
        .unwrap();
    assert!(
        location.starts_with(&format!("s3://{bucket}/")) && location.ends_with(".csv"),
        "{location}"
    );
    assert_eq!(d.s3_outputs("aq"), serde_json::json!({"o0": location}));
    // Qubole: one command per task, the token read from the secret.
    let commands = qubole.commands();
    let names: Vec<&str> = commands
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hq-n0-0", "hq-n1-0"], "{commands:?}");
    let raw = d.s3_outputs("hq")["o0"].as_str().unwrap().to_string();
    assert!(
        raw.starts_with(&format!("s3://{bucket}/")) && raw.ends_with("/n1/0/raw"),
        "{raw}"
    );
    assert!(
        commands[1]["command"]["query"]
            .as_str()
            .unwrap()
            .contains(&format!("SET LOCATION '{raw}'"))
    );
    // `updraft logs` with the node prints the command's log from Qubole's API (the token read from
    // the secret the settings name).
    let settings = d.settings.to_str().unwrap().to_string();
    let (code, out, err) = d.updraft(&["logs", "hq", "n0", "--settings", &settings]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!(
            "==> n0 attempt 0 qubole command {} <==",
            commands[0]["id"]
        )) && out.contains("Starting the Hive query"),
        "{out}"
    );
    // EMR Serverless: one run per task; the Pythonic one doubled 21.
    assert_eq!(d.s3_outputs("eq"), serde_json::json!({"o0": 42}));
    // The Spark script's run sends its driver's output to CloudWatch: `updraft logs` prints it. Its
    // S3 log folder is in LocalStack's S3 here, not in the settings' AWS (moto): that one log cannot be
    // read, which it says, and the exit code shows.
    let (code, out, err) = d.updraft(&["logs", "eq", "n0", "--settings", &settings]);
    assert!(
        out.starts_with("==> n0 attempt 0 emr-serverless etl/applications/")
            && out.contains("\nmain\n"),
        "{out}"
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "cannot read n0 attempt 0's logs at s3://updraft-fixtures/emr-logs/applications/"
        ),
        "{err}"
    );
    for app in ["etl-spark", "etl-hive", "pythonic-app"] {
        let runs = moto.boto(
            "e = boto3.client('emr-serverless', **kw)\n\
             print(json.dumps([r['name'] for r in e.list_job_runs(applicationId=args[0])['jobRuns']]))",
            &[made["apps"][app].as_str().unwrap()],
        );
        assert_eq!(runs.as_array().unwrap().len(), 1, "{app}: {runs}");
    }
    let (_, logs, _) = d.updraft(&["logs", "eq"]);
    assert!(
        logs.contains("fault injection: exiting between the effects and the commit"),
        "no transition crashed: {logs}"
    );
    // State changes came through EventBridge to the events function, which checked the attempts.
    let pythonic = made["apps"]["pythonic-app"].as_str().unwrap().to_string();
    poll(Duration::from_secs(60), || {
        let (_, logs, _) = d.updraft(&["logs", "eq"]);
        (logs.contains("check sent") && logs.contains(&format!("emr-serverless:{pythonic}/")))
            .then_some(())
            .ok_or(format!("no check sent for the EMR run: {logs}"))
    });
    let query = queries[0]["QueryExecutionId"].as_str().unwrap().to_string();
    poll(Duration::from_secs(60), || {
        let (_, logs, _) = d.updraft(&["logs", "aq"]);
        (logs.contains("check sent") && logs.contains(&format!("athena:{query}")))
            .then_some(())
            .ok_or(format!("no check sent for the query: {logs}"))
    });

    // An abort cancels the running job run through the handle its start kept.
    moto.lifecycle(serde_json::json!({ "queue_seconds": 300.0 }));
    let (code, _, err) = d.updraft(&[
        "launch",
        "-w",
        "fixtures.queries.emr_failing_wf",
        "--name",
        "held",
    ]);
    assert_eq!(code, 0, "launch held: {err}");
    // The held run, once there: its states (one per run of that name).
    let runs = |state: Option<&str>| {
        let states = moto.boto(
            "e = boto3.client('emr-serverless', **kw)\n\
             print(json.dumps([r['state'] for r in e.list_job_runs(applicationId=args[0])['jobRuns'] \
                               if r['name'] == 'held-n0-0']))",
            &[&pythonic],
        );
        let states = states.as_array().unwrap().clone();
        states.len() == 1 && state.is_none_or(|s| states[0] == s)
    };
    poll(Duration::from_secs(60), || {
        runs(None).then_some(()).ok_or("no held run yet")
    });
    let (code, _, err) = d.updraft(&["abort", "held", "--reason", "not needed"]);
    assert_eq!(code, 0, "abort: {err}");
    poll(Duration::from_secs(60), || {
        runs(Some("CANCELLED"))
            .then_some(())
            .ok_or("the run was not cancelled")
    });
    aborted(&d, "held");
}

#[test]
fn a_deployed_stack_runs_hive_on_emr_serverless() {
    // The settings choose EMR Serverless for hive tasks: the same queries, as Hive job runs on the
    // application they name (moto's), their query files in the stack's bucket (LocalStack's S3).
    let ls = endpoint();
    let moto = support::Moto::start_with(&[], &[], &[("AWS_ENDPOINT_URL", &ls)]);
    moto.lifecycle(serde_json::json!({ "events_endpoint": ls }));
    let app = moto.boto(
        "e = boto3.client('emr-serverless', **kw)\n\
         print(json.dumps(e.create_application(name='etl-hive', releaseLabel='emr-7.0.0', type='HIVE')['applicationId']))",
        &[],
    );
    let d = deploy_with(
        "hiveemr",
        &["FaultInjection=duplicate"],
        serde_json::json!({
            "aws": {"endpoint": moto.endpoint},
            "hive": {"engine": "emr-serverless"},
            "emrServerless": {"applicationId": "etl-hive",
                              "executionRoleArn": "arn:aws:iam::123456789012:role/EMRServerlessRole"},
        }),
    );
    let (code, _, err) = d.updraft(&["register", "tests/fixtures/flytekit/queries.tgz"]);
    assert_eq!(code, 0, "register: {err}");
    let (code, _, err) = d.updraft(&[
        "launch",
        "-w",
        "fixtures.queries.hive_wf",
        "--name",
        "he",
        "--wait",
    ]);
    assert_eq!(code, 0, "launch he: {err}");
    let runs = moto.boto(
        "e = boto3.client('emr-serverless', **kw)\n\
         print(json.dumps(sorted(r['name'] for r in e.list_job_runs(applicationId=args[0])['jobRuns'])))",
        &[app.as_str().unwrap()],
    );
    assert_eq!(
        runs,
        serde_json::json!(["he-n0-0", "he-n1-0"]),
        "one Hive job run per task, every message delivered twice"
    );
    let raw = d.s3_outputs("he")["o0"].as_str().unwrap().to_string();
    let bucket = d.outputs["BucketName"].as_str().unwrap();
    assert_eq!(raw, format!("s3://{bucket}/executions/he/n1/0/raw"));
}
