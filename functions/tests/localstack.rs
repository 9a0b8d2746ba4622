//! The serverless runtime's logic against real AWS services (LocalStack: DynamoDB, SQS, S3): requests
//! launched, the transitions queue drained by the transition logic, native tasks on the Kubernetes API
//! test server (whose kubelet runs the real `pyflyte-execute`, reading and writing S3 in LocalStack).
//!
//! Needs `UPDRAFT_TEST_LOCALSTACK` (LocalStack's endpoint; `scripts/test` starts it with
//! `localstack/up`) and `UPDRAFT_TEST_PYTHON` (the flytekit environment).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use updraft_connector_eks::{Cluster, EksConfig};
use updraft_functions::launch::{Packages, Request, launch};
use updraft_functions::transition::{Received, Transition, is_final};
use updraft_functions::{Clients, Settings};
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

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

async fn sdk(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(updraft_aws::timeouts())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_credential_types::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .load()
        .await
}

/// How long a test waits for an outcome before it fails: generous, since LocalStack slows down under
/// the whole suite's load (the deployed-stack tests run beside these); an outcome that comes stops the
/// wait at once.
const PATIENCE: Duration = Duration::from_secs(180);

/// A stack's resources made for one test: table, bucket, transitions queue; a Kubernetes test server
/// whose node has the flytekit environment.
struct Stack {
    settings: Settings,
    clients: Clients,
    sqs: aws_sdk_sqs::Client,
    server: Server,
    work: PathBuf,
    eks: EksConfig,
    /// The attempts whose end signals (checks marked `ended`) the queue delivered.
    ended: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Sweeps the queue delivered.
    sweeps: std::sync::atomic::AtomicUsize,
}

impl Stack {
    async fn new(tag: &str) -> Self {
        let ep = endpoint();
        let sdk = sdk(&ep).await;
        let id = format!(
            "{tag}-{}-{}",
            std::process::id(),
            updraft_functions::now_ms() % 100_000
        );
        let ddb = aws_sdk_dynamodb::Client::new(&sdk);
        let key = |n: &str, t| {
            KeySchemaElement::builder()
                .attribute_name(n)
                .key_type(t)
                .build()
                .unwrap()
        };
        let attr = |n: &str| {
            AttributeDefinition::builder()
                .attribute_name(n)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap()
        };
        ddb.create_table()
            .table_name(&id)
            .key_schema(key("pk", KeyType::Hash))
            .key_schema(key("sk", KeyType::Range))
            .attribute_definitions(attr("pk"))
            .attribute_definitions(attr("sk"))
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .unwrap_or_else(|e| panic!("LocalStack at {ep}: cannot create a table: {e:?}"));
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&sdk)
                .force_path_style(true)
                .build(),
        );
        s3.create_bucket().bucket(&id).send().await.unwrap();
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let url = sqs
            .create_queue()
            .queue_name(&id)
            // Short, so messages of a transition that failed come back soon.
            .attributes(
                aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
                "2",
            )
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        let settings = Settings {
            table: id.clone(),
            bucket: id.clone(),
            transitions_url: url,
            eks: None,
            services: Default::default(),
            max_check_delay: Duration::from_secs(2),
            lease: Duration::from_secs(30),
            max_receives: 3,
            max_starts: 100,
            fault: None,
        };
        let clients = settings.clients_with(sdk);
        let work = std::env::temp_dir().join(format!("updraft-fn-test-{id}"));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).unwrap();
        let node = Node::python(
            Path::new(&python()),
            &root().join("tests/fixtures/flytekit/src"),
            &[updraft_test_kube::programs_dir("updraft-copilot")],
        );
        let server = Server::start_node(0, work.join("kubelet"), node).unwrap();
        server.write_kubeconfig(&work.join("kubeconfig")).unwrap();
        let eks: EksConfig = serde_json::from_value(eks_json(&ep)).unwrap();
        Self {
            settings,
            clients,
            sqs,
            server,
            work,
            eks,
            ended: Default::default(),
            sweeps: Default::default(),
        }
    }

    /// The stack's settings with its test cluster (what a launch of native tasks needs).
    fn cluster_settings(&self) -> Settings {
        let mut settings = self.settings.clone();
        settings.eks = Some(self.eks.clone());
        settings
    }

    async fn transition(&self) -> Transition {
        self.transition_with(self.clients.clone()).await
    }

    /// A transition that reaches AWS through `clients`.
    async fn transition_with(&self, mut clients: Clients) -> Transition {
        let cluster = Cluster::from_kubeconfig(Some(&self.work.join("kubeconfig")))
            .await
            .unwrap();
        let settings = self.cluster_settings();
        clients.queue.duplicate = settings.fault.as_deref() == Some("duplicate");
        Transition::with_cluster(settings, clients, Some((cluster, self.eks.clone())))
    }

    /// The ARN of the queue at `url`.
    async fn queue_arn(&self, url: &str) -> String {
        let arn = aws_sdk_sqs::types::QueueAttributeName::QueueArn;
        self.sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(arn.clone())
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap()[&arn]
            .clone()
    }

    /// Pods that ran (each left its log), by name.
    fn pods_ran(&self) -> std::collections::BTreeSet<String> {
        let store = self.server.store.lock().unwrap();
        store.logs.keys().map(|(k, _)| k.name.clone()).collect()
    }

    /// Stores a package and registers its workflows and launch plans by name.
    async fn register(&self, file: &str) -> String {
        let bytes = std::fs::read(root().join(file)).unwrap();
        let key = format!(
            "packages/{}",
            Path::new(file).file_name().unwrap().to_str().unwrap()
        );
        self.clients
            .blobs
            .put(&self.clients.blobs.uri(&key), bytes.clone())
            .await
            .unwrap();
        let pkg = updraft_functions::launch::decode_package(&key, &bytes).unwrap();
        let compiled = updraft_engine::compile(&pkg).unwrap();
        for name in compiled
            .workflows
            .keys()
            .chain(compiled.launch_plans.keys())
        {
            self.clients.store.register(name, &key, 0).await.unwrap();
        }
        key
    }

    /// Registers Updraft YAML `text`, written as `name` in the stack's work folder.
    async fn register_yaml(&self, name: &str, text: &str) {
        let file = self.work.join(name);
        std::fs::write(&file, text).unwrap();
        self.register(file.to_str().unwrap()).await;
    }

    /// Drains the transitions queue through `t` until execution `name` exists and `ready` holds for
    /// its item (or a minute passes: `what` says what never happened); returns the item.
    async fn drive_until(
        &self,
        t: &Transition,
        name: &str,
        what: &str,
        ready: impl Fn(&updraft_aws::store::ExecutionItem) -> bool,
    ) -> updraft_aws::store::ExecutionItem {
        let start = Instant::now();
        loop {
            if let Some(item) = self.clients.store.execution(name).await.unwrap()
                && ready(&item)
            {
                return item;
            }
            assert!(start.elapsed() < PATIENCE, "{name}: {what}");
            self.drive_once(t).await;
        }
    }

    /// Drains the transitions queue through `t` until execution `name` ends (or `limit` passes);
    /// returns its phase and how many deliveries failed.
    async fn drive_counting(&self, t: &Transition, name: &str, limit: Duration) -> (String, usize) {
        let start = Instant::now();
        let mut failures = 0;
        loop {
            let item = self.clients.store.execution(name).await.unwrap().unwrap();
            if is_final(&item.phase) {
                return (item.phase, failures);
            }
            assert!(
                start.elapsed() < limit,
                "execution {name} still {} after {limit:?}",
                item.phase
            );
            failures += self.drive_once(t).await;
        }
    }

    /// Receives one batch from the transitions queue and hands it to `t`; deletes what it handled and
    /// returns how many deliveries failed.
    async fn drive_once(&self, t: &Transition) -> usize {
        let got = self
            .sqs
            .receive_message()
            .queue_url(&self.settings.transitions_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(
                aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount,
            )
            .send()
            .await
            .unwrap();
        let msgs = got.messages.unwrap_or_default();
        let batch: Vec<Received> = msgs
            .iter()
            .map(|m| Received {
                id: m.message_id.clone().unwrap_or_default(),
                body: m.body.clone().unwrap_or_default(),
                receive_count: m
                    .attributes
                    .as_ref()
                    .and_then(|a| {
                        a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
                    })
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1),
                dead_letter: false,
            })
            .collect();
        for r in &batch {
            use updraft_proto::updraft::queue_message::Kind;
            match updraft_functions::queue::decode(&r.body).map(|m| m.kind) {
                Ok(Some(Kind::Check(c))) if c.ended => {
                    self.ended.lock().unwrap().insert(c.name);
                }
                Ok(Some(Kind::Timer(t)))
                    if t.kind == updraft_functions::transition::SWEEP_TIMER =>
                {
                    self.sweeps
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                _ => {}
            }
        }
        let failed = t.handle(batch).await;
        for m in &msgs {
            if !failed.contains(m.message_id.as_ref().unwrap()) {
                self.sqs
                    .delete_message()
                    .queue_url(&self.settings.transitions_url)
                    .receipt_handle(m.receipt_handle.clone().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
        failed.len()
    }

    /// Hands `t` what is left in the transitions queue, delayed messages included, until it is empty
    /// (at most half a minute).
    async fn drain(&self, t: &Transition) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            let left = queued(self).await;
            if left == 0 {
                return;
            }
            self.drive_once(t).await;
        }
    }

    /// [`Self::drive_counting`]'s phase.
    async fn drive(&self, t: &Transition, name: &str, limit: Duration) -> String {
        self.drive_counting(t, name, limit).await.0
    }

    /// The execution's outputs as JSON.
    async fn outputs(&self, name: &str) -> serde_json::Value {
        let uri = self
            .clients
            .blobs
            .uri(&format!("executions/{name}/outputs.pb"));
        let bytes = self.clients.blobs.get(&uri).await.unwrap().unwrap();
        let map = updraft_proto::core::LiteralMap::decode(bytes.as_slice()).unwrap();
        serde_json::Value::Object(
            map.literals
                .iter()
                .map(|(k, v)| (k.clone(), updraft_engine::literal::to_json(v)))
                .collect(),
        )
    }

    /// How many items keep the handles of execution `name`'s attempts.
    async fn handle_items(&self, name: &str) -> usize {
        let out = aws_sdk_dynamodb::Client::new(&sdk(&endpoint()).await)
            .query()
            .table_name(&self.settings.table)
            .key_condition_expression("pk = :p")
            .expression_attribute_values(
                ":p",
                aws_sdk_dynamodb::types::AttributeValue::S(format!("handles#{name}")),
            )
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        out.items().len()
    }

    /// The names of the attempts of execution `name` whose handles the table keeps.
    async fn kept_handles(&self, name: &str) -> Vec<String> {
        let kept = self.clients.store.handles(name).await.unwrap();
        kept.into_iter().map(|h| h.name).collect()
    }

    /// The execution's history, from its records as the stack holds them.
    async fn history(&self, name: &str) -> updraft_engine::exec::history::ExecutionView {
        use updraft_proto::updraft::{ExecutionState, NodeState};
        let item = self.clients.store.execution(name).await.unwrap().unwrap();
        let state =
            ExecutionState::decode(self.clients.state_bytes(&item).await.unwrap().as_slice())
                .unwrap();
        let nodes: Vec<NodeState> = self
            .clients
            .node_records(name, item.version)
            .await
            .unwrap()
            .joined
            .into_iter()
            .map(|(_, raw)| NodeState::decode(raw.as_slice()).unwrap())
            .collect();
        updraft_engine::exec::history::ExecutionView::new(&state, &nodes)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.server.stop();
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// The cluster settings of the tests: the deployment's variables reach every container, where flytekit
/// and the copilot find S3 (LocalStack) through them.
fn eks_json(ep: &str) -> serde_json::Value {
    serde_json::json!({
        "namespace": "flyte",
        "env": {
            "FLYTE_AWS_ENDPOINT": ep,
            "FLYTE_AWS_ACCESS_KEY_ID": "test",
            "FLYTE_AWS_SECRET_ACCESS_KEY": "test",
            "AWS_ENDPOINT_URL": ep,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    })
}

fn request(workflow: &str, name: &str, inputs: serde_json::Value) -> Request {
    Request {
        name: Some(name.into()),
        workflow: Some(workflow.into()),
        inputs: serde_json::from_value(inputs).unwrap(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flytekit_workflows_run_through_the_queue() {
    let stack = Stack::new("flow").await;
    stack.register("tests/fixtures/flytekit/branches.tgz").await;
    stack.register("tests/fixtures/flytekit/maps.tgz").await;
    let t = stack.transition().await;
    let settings = stack.cluster_settings();
    let packages = Packages::default();
    // A branch between real tasks.
    let req = request(
        "fixtures.branches.branch_wf",
        "br",
        serde_json::json!({"x": 3}),
    );
    let name = launch(&settings, &stack.clients, &packages, &req, "")
        .await
        .unwrap();
    assert_eq!(name, "br");
    let phase = stack.drive(&t, "br", Duration::from_secs(120)).await;
    assert_eq!(phase, "SUCCEEDED");
    assert_eq!(
        stack.outputs("br").await,
        serde_json::json!({"o0": "10->6"})
    );
    // Each Python task's pod said when it ended (its wrapper's end signal), and took its inputs from
    // its environment: no attempt's inputs are in the bucket. (A poll may see an end first: what is
    // left in the queue is handled before counting.)
    stack.drain(&t).await;
    let pods = stack.pods_ran();
    assert!(!pods.is_empty());
    assert_eq!(*stack.ended.lock().unwrap(), pods, "end signals");
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk(&endpoint()).await)
            .force_path_style(true)
            .build(),
    );
    let keys: Vec<String> = s3
        .list_objects_v2()
        .bucket(&stack.settings.bucket)
        .prefix("executions/br/")
        .send()
        .await
        .unwrap()
        .contents
        .unwrap_or_default()
        .into_iter()
        .filter_map(|o| o.key)
        .collect();
    assert!(keys.iter().any(|k| k.ends_with("/outputs.pb")), "{keys:?}");
    assert!(!keys.iter().any(|k| k.ends_with("/inputs.pb")), "{keys:?}");
    // So do a raw container (through the copilot), a pod_template task and a Pod task with a sidecar.
    stack
        .register("tests/fixtures/flytekit/containers.tgz")
        .await;
    let req = request(
        "fixtures.containers.containers_wf",
        "ct",
        serde_json::json!({"radius": 2}),
    );
    launch(&settings, &stack.clients, &packages, &req, "")
        .await
        .unwrap();
    assert_eq!(
        stack.drive(&t, "ct", Duration::from_secs(120)).await,
        "SUCCEEDED"
    );
    assert_eq!(stack.outputs("ct").await, serde_json::json!({"o0": 11}));
    stack.drain(&t).await;
    let of = |names: &std::collections::BTreeSet<String>| -> std::collections::BTreeSet<String> {
        names
            .iter()
            .filter(|n| n.starts_with("ct-"))
            .cloned()
            .collect()
    };
    let pods = of(&stack.pods_ran());
    assert_eq!(pods.len(), 3, "{pods:?}");
    assert_eq!(of(&stack.ended.lock().unwrap()), pods, "end signals");
    // A flytekit map task: one pod per element; the failing element none, within min_success_ratio.
    let req = request("fixtures.maps.maps_wf", "mp", serde_json::json!({}));
    launch(&settings, &stack.clients, &packages, &req, "")
        .await
        .unwrap();
    let phase = stack.drive(&t, "mp", Duration::from_secs(180)).await;
    assert_eq!(phase, "SUCCEEDED");
    let out = stack.outputs("mp").await;
    assert_eq!(out["o0"], serde_json::json!([1, 4, 9, 16, 25]));
    assert_eq!(out["o2"], serde_json::json!([101, 102, null, 104, 105]));
    assert_eq!(out["o3"], serde_json::json!(55));
    // Its history, from the records the transitions wrote: every element's attempt with its times, its
    // pod's logs and, for the one that failed, its error.
    let view = stack.history("mp").await;
    assert_eq!(view.phase, "Succeeded");
    let (start, end) = (view.started_ms.unwrap(), view.ended_ms.unwrap());
    let arrays: Vec<_> = view.nodes.iter().filter_map(|n| n.array.as_ref()).collect();
    assert!(!arrays.is_empty(), "{view:?}");
    let mut failed = 0;
    for a in &arrays {
        assert_eq!(a.elements.len() as u32, a.size, "{a:?}");
        for e in &a.elements {
            let r = e.attempts.last().unwrap_or_else(|| panic!("{e:?}"));
            assert_eq!(r.phase.as_deref(), Some(e.phase.as_str()), "{e:?}");
            let ended = r.ended_ms.unwrap();
            assert!(
                start <= r.queued_ms && r.queued_ms <= ended && ended <= end,
                "{e:?}"
            );
            assert!(
                r.logs
                    .iter()
                    .any(|l| l.starts_with("kubectl logs") && l.ends_with(&r.name)),
                "{r:?}"
            );
            if e.phase == "Failed" {
                failed += 1;
                assert!(r.error.is_some(), "{r:?}");
            }
        }
    }
    assert_eq!(
        failed, 1,
        "the element that failed within min_success_ratio"
    );
    // Launching the same name again starts nothing new.
    launch(&settings, &stack.clients, &packages, &req, "")
        .await
        .unwrap();
    let phase = stack.drive(&t, "mp", Duration::from_secs(10)).await;
    assert_eq!(phase, "SUCCEEDED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_and_crashes_change_nothing() {
    let mut stack = Stack::new("faults").await;
    stack.register("tests/fixtures/flytekit/branches.tgz").await;
    stack.settings.lease = Duration::from_secs(2);
    let settings = stack.cluster_settings();
    let packages = Packages::default();
    // Every message sent twice.
    stack.settings.fault = Some("duplicate".into());
    let t = stack.transition().await;
    let req = request(
        "fixtures.branches.branch_wf",
        "dup",
        serde_json::json!({"x": 12}),
    );
    launch(&settings, &stack.clients, &packages, &req, "")
        .await
        .unwrap();
    // The launch itself delivered twice.
    launch(&settings, &stack.clients, &packages, &req, "")
        .await
        .unwrap();
    assert_eq!(
        stack.drive(&t, "dup", Duration::from_secs(120)).await,
        "SUCCEEDED"
    );
    assert_eq!(
        stack.outputs("dup").await,
        serde_json::json!({"o0": "10->400"})
    );
    let dup_pods = stack.pods_ran();
    assert_eq!(dup_pods.len(), 3, "each task attempt once: {dup_pods:?}");
    // Every transition that started a task stops between its effects and its commit on the first
    // delivery; the redelivered message, after the lease expired, steps the old state again.
    stack.settings.fault = Some("drop-before-commit".into());
    // A message handled with others for the same execution (a start with a task's end signal, say)
    // takes part in each of their faults: deliveries enough for every task's.
    stack.settings.max_receives = 10;
    let t = stack.transition().await;
    let req = request(
        "fixtures.branches.branch_wf",
        "crash",
        serde_json::json!({"x": -5}),
    );
    launch(&settings, &stack.clients, &packages, &req, "")
        .await
        .unwrap();
    let (phase, failures) = stack
        .drive_counting(&t, "crash", Duration::from_secs(180))
        .await;
    let item = stack
        .clients
        .store
        .execution("crash")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(phase, "SUCCEEDED", "{:?}", item.error);
    assert!(
        failures >= 3,
        "a fault before each task's commit: {failures}"
    );
    assert_eq!(
        stack.outputs("crash").await,
        serde_json::json!({"o0": "10->5"})
    );
    let crash_pods: Vec<String> = stack
        .pods_ran()
        .into_iter()
        .filter(|p| p.starts_with("crash-"))
        .collect();
    assert_eq!(
        crash_pods.len(),
        3,
        "each task attempt once: {crash_pods:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_fail_their_execution_and_aborts_stop_work() {
    let mut stack = Stack::new("poison").await;
    stack.register("tests/fixtures/flytekit/failures.tgz").await;
    stack.register("tests/fixtures/flytekit/gates.tgz").await;
    // A dead-letter queue behind the transitions queue, after max_receives deliveries.
    let dlq = stack
        .sqs
        .create_queue()
        .queue_name(format!("{}-dlq", stack.settings.table))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let dlq_arn = stack.queue_arn(&dlq).await;
    stack
        .sqs
        .set_queue_attributes()
        .queue_url(&stack.settings.transitions_url)
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
            serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": stack.settings.max_receives}).to_string(),
        )
        .send()
        .await
        .unwrap();
    // A lease long enough for a step on a loaded machine: a step that outlives its lease loses its
    // commit, and the last delivery's failing of the execution with it.
    stack.settings.lease = Duration::from_secs(20);
    let settings = stack.cluster_settings();
    let packages = Packages::default();
    let t = stack.transition().await;
    // An execution that waits for a signal, and a check message that can never be processed.
    let req = request("fixtures.gates.gates_wf", "bad", serde_json::json!({}));
    launch(&settings, &stack.clients, &packages, &req, "")
        .await
        .unwrap();
    // Its handle kept (as a start keeps it) but unreadable: failing the execution stops nothing
    // through it, and fails all the same.
    stack
        .clients
        .store
        .keep_starts(
            "bad",
            "1#bad-poison#test",
            &[updraft_functions::store::KeptHandle {
                name: "bad-poison".into(),
                handle: "not json".into(),
                check: None,
                unit: Some((99, None, 0)),
            }],
            updraft_aws::now_ms(),
        )
        .await
        .unwrap();
    let poison = updraft_proto::updraft::QueueMessage {
        execution: "bad".into(),
        kind: Some(updraft_proto::updraft::queue_message::Kind::Check(
            updraft_proto::updraft::CheckMessage {
                name: "bad-poison".into(),
                handle: "not json".into(),
                ..Default::default()
            },
        )),
    };
    stack
        .clients
        .queue
        .send(&poison, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(stack.drive(&t, "bad", PATIENCE).await, "FAILED");
    let item = stack.clients.store.execution("bad").await.unwrap().unwrap();
    let error = item.error.unwrap();
    assert!(
        error.contains("PoisonMessage") && error.contains("bad handle"),
        "{error}"
    );
    // The message itself is in the dead-letter queue (SQS moves it on its next receive).
    let mut dead = 0;
    for _ in 0..20 {
        let _ = stack
            .sqs
            .receive_message()
            .queue_url(&stack.settings.transitions_url)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        let got = stack
            .sqs
            .receive_message()
            .queue_url(&dlq)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        dead += got.messages.unwrap_or_default().len();
        if dead > 0 {
            break;
        }
    }
    assert_eq!(dead, 1, "the poison message is in the dead-letter queue");
    // Nothing of the failed execution runs.
    let objects = stack.server.store.lock().unwrap().objects.len();
    assert_eq!(objects, 0);

    // Abort mid-run: the running pod is deleted, the execution ends ABORTED.
    let req = request("fixtures.failures.slow_wf", "stop", serde_json::json!({}));
    launch(&settings, &stack.clients, &packages, &req, "")
        .await
        .unwrap();
    let start = Instant::now();
    while stack.server.store.lock().unwrap().objects.is_empty() {
        assert!(start.elapsed() < PATIENCE, "the task never started");
        let _ = stack.drive_once(&t).await;
    }
    let abort = abort("stop", "no longer needed");
    stack
        .clients
        .queue
        .send(&abort, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(stack.drive(&t, "stop", PATIENCE).await, "ABORTED");
    let item = stack
        .clients
        .store
        .execution("stop")
        .await
        .unwrap()
        .unwrap();
    assert!(item.error.unwrap().contains("no longer needed"));
    let objects = stack.server.store.lock().unwrap().names();
    assert!(objects.is_empty(), "{objects:?}");
}

/// An Updraft YAML workflow `wide`: `width` echo nodes at once, then two gates one after the other,
/// waiting for signals `go1` and `go2` (ints), and an echo of the second's value. Outputs: the first
/// echo's `x` (`o`) and the last's (`v`).
fn wide_yaml(width: usize) -> String {
    let mut y = String::from(
        "version: 1\nimage: ghcr.io/updraft-run/fixtures:1\ntasks:\n  echo: {type: echo, inputs: {x: int}, outputs: {x: int}}\nworkflows:\n  wide:\n    inputs: {x: int}\n    outputs: {o: \"${e0.x}\", v: \"${last.x}\"}\n    nodes:\n",
    );
    for i in 0..width {
        y.push_str(&format!(
            "      - {{id: e{i}, task: echo, inputs: {{x: \"${{inputs.x}}\"}}}}\n"
        ));
    }
    y.push_str("      - {id: g1, gate: {signal: go1, type: int}}\n");
    y.push_str("      - {id: g2, gate: {signal: go2, type: int}, after: [g1]}\n");
    y.push_str("      - {id: last, task: echo, inputs: {x: \"${g2.value}\"}}\n");
    y
}

/// The message that aborts execution `exec` for `reason`.
fn abort(exec: &str, reason: &str) -> updraft_proto::updraft::QueueMessage {
    updraft_proto::updraft::QueueMessage {
        execution: exec.into(),
        kind: Some(updraft_proto::updraft::queue_message::Kind::Abort(
            updraft_proto::updraft::AbortMessage {
                reason: reason.into(),
            },
        )),
    }
}

fn signal(exec: &str, id: &str, value: i64) -> updraft_proto::updraft::QueueMessage {
    updraft_proto::updraft::QueueMessage {
        execution: exec.into(),
        kind: Some(updraft_proto::updraft::queue_message::Kind::Signal(
            updraft_proto::updraft::SignalMessage {
                id: id.into(),
                value: Some(updraft_engine::literal::primitive_lit(
                    updraft_proto::core::primitive::Value::Integer(value),
                )),
            },
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_of_any_size_stay_whole_across_transitions_that_died() {
    use updraft_aws::store::{ExecutionItem, Lease, NodeBytes, NodeWrite};
    let mut stack = Stack::new("wide").await;
    let store = &stack.clients.store;

    // The store alone: a commit of 250 records (more than a DynamoDB transaction could hold) is
    // whole.
    let item = ExecutionItem {
        name: "raw".into(),
        phase: "RUNNING".into(),
        ..Default::default()
    };
    assert!(store.create_execution(&item).await.unwrap());
    let now = updraft_functions::now_ms();
    let far = now + 600_000;
    let take = |owner: &'static str| async move {
        match store
            .lease("raw", owner, updraft_functions::now_ms(), far)
            .await
            .unwrap()
        {
            Lease::Taken(item) => *item,
            other => panic!("{other:?}"),
        }
    };
    let writes = |tag: &str, records: &[updraft_aws::store::NodeRecord]| -> Vec<NodeWrite> {
        (0..250u32)
            .map(|i| NodeWrite {
                index: i,
                part: 0,
                bytes: NodeBytes::Inline(format!("{tag}-{i}").into_bytes()),
                committed: records
                    .iter()
                    .find(|r| r.index == i)
                    .and_then(updraft_aws::store::NodeRecord::committed),
            })
            .collect()
    };
    let read = |version: u64| async move {
        let mut got: Vec<(u32, String, bool)> = store
            .nodes("raw", version)
            .await
            .unwrap()
            .into_iter()
            .map(|r| {
                let text = match r.bytes {
                    Some(NodeBytes::Inline(v)) => String::from_utf8(v).unwrap(),
                    Some(NodeBytes::Blob(k)) => k,
                    None => "-".into(),
                };
                (r.index, text, r.stale)
            })
            .collect();
        got.sort();
        got
    };
    // No event ever waits in this execution's inbox.
    let quiet = updraft_aws::store::Drained {
        seen: 0,
        exact: true,
    };
    let one = take("a").await;
    store
        .commit(&one, "a", false, &writes("one", &[]), quiet, now, far)
        .await
        .unwrap();
    let at1 = read(1).await;
    assert_eq!(at1.len(), 250);
    assert!(
        at1.iter()
            .all(|(i, t, stale)| *t == format!("one-{i}") && !stale)
    );
    // A transition that loses its lease after writing its records: nothing of it is read at the
    // version it never reached, and the records it wrote say so.
    let item1 = take("b").await;
    let records = store.nodes("raw", 1).await.unwrap();
    let lost = store
        .commit(
            &item1,
            "zombie",
            false,
            &writes("lost", &records),
            quiet,
            now,
            far,
        )
        .await;
    assert!(
        matches!(lost, Err(updraft_aws::Error::LostLease(_))),
        "{lost:?}"
    );
    let after = read(1).await;
    assert!(
        after.iter().all(|(i, t, _)| *t == format!("one-{i}")),
        "{after:?}"
    );
    let stale: Vec<u32> = after.iter().filter(|r| r.2).map(|r| r.0).collect();
    assert_eq!(stale.len(), 250, "{stale:?}");
    // The next commit writes one record; read at its version, every record a stale slot could
    // shadow is still the committed one when the commit writes the stale records again too, as a
    // transition does.
    let mut two = writes("two", &records);
    two.retain(|w| w.index == 0 || stale.contains(&w.index));
    for w in &mut two {
        if w.index != 0 {
            w.bytes = NodeBytes::Inline(format!("one-{}", w.index).into_bytes());
        }
    }
    store
        .commit(&item1, "b", false, &two, quiet, now, far)
        .await
        .unwrap();
    let at2 = read(2).await;
    assert_eq!(at2[0].1, "two-0");
    assert!(
        at2[1..]
            .iter()
            .all(|(i, t, stale)| *t == format!("one-{i}") && !stale),
        "{at2:?}"
    );
    // A commit past its deadline writes nothing.
    let item2 = take("c").await;
    let late = store
        .commit(
            &item2,
            "c",
            false,
            &writes("late", &[]),
            quiet,
            now,
            now - 1,
        )
        .await;
    assert!(
        matches!(late, Err(updraft_aws::Error::LostLease(_))),
        "{late:?}"
    );
    assert_eq!(read(3).await, read(2).await);

    // Through the transition (no start budget to speak of): 300 echo nodes finish in the start's
    // transition (one commit of 300+ records), the gates wait. A transition that died after writing records it could not commit
    // (planted: the first echo's record, succeeded with another value, tagged with the version the
    // next commit reaches) changes nothing: the next transition (the first signal) writes that record
    // again, so the one after it (the second signal) reads the committed value.
    stack.register_yaml("wide.yaml", &wide_yaml(300)).await;
    stack.settings.max_starts = 1000;
    let settings = stack.settings.clone();
    let packages = Packages::default();
    let t = stack.transition().await;
    let req = request("wide", "wide", serde_json::json!({"x": 3}));
    launch(&settings, &stack.clients, &packages, &req, "")
        .await
        .unwrap();
    let item = stack
        .drive_until(&t, "wide", "never started", |i| i.version >= 1)
        .await;
    assert_eq!(item.phase, "RUNNING");
    let read = stack
        .clients
        .node_records("wide", item.version)
        .await
        .unwrap();
    let (raws, records) = (read.joined, read.records);
    assert!(raws.len() > 300, "{} records", raws.len());
    let mut bogus = updraft_proto::updraft::NodeState::decode(raws[0].1.as_slice()).unwrap();
    assert_eq!(bogus.id, "e0");
    let x =
        updraft_engine::literal::primitive_lit(updraft_proto::core::primitive::Value::Integer(99));
    bogus
        .outputs
        .as_mut()
        .unwrap()
        .literals
        .insert("x".into(), x.clone());
    if let Some(outputs) = bogus.task.as_mut().and_then(|t| t.outputs.as_mut()) {
        outputs.literals.insert("x".into(), x);
    }
    match store
        .lease("wide", "dead", updraft_functions::now_ms(), far)
        .await
        .unwrap()
    {
        Lease::Taken(_) => {}
        other => panic!("{other:?}"),
    }
    let committed = |i: u32| {
        records
            .iter()
            .find(|r| r.index == i)
            .and_then(updraft_aws::store::NodeRecord::committed)
    };
    // 120 records as they are (the first 99 go in the transaction, which fails), then the planted one.
    let mut planted: Vec<NodeWrite> = (1..=120)
        .map(|i| NodeWrite {
            index: i,
            part: 0,
            bytes: NodeBytes::Inline(raws[i as usize].1.clone()),
            committed: committed(i),
        })
        .collect();
    planted.push(NodeWrite {
        index: 0,
        part: 0,
        bytes: NodeBytes::Inline(bogus.encode_to_vec()),
        committed: committed(0),
    });
    let dead = store
        .commit(
            &item,
            "not-the-holder",
            false,
            &planted,
            quiet,
            updraft_functions::now_ms(),
            far,
        )
        .await;
    assert!(
        matches!(dead, Err(updraft_aws::Error::LostLease(_))),
        "{dead:?}"
    );
    store.release("wide", "dead").await.unwrap();
    assert!(
        store
            .nodes("wide", item.version)
            .await
            .unwrap()
            .iter()
            .any(|r| r.index == 0 && r.stale),
        "the planted record is not there"
    );
    stack
        .clients
        .queue
        .send(&signal("wide", "go1", 1), Duration::ZERO)
        .await
        .unwrap();
    stack
        .drive_until(&t, "wide", "the first signal was not taken", |i| {
            i.version > item.version
        })
        .await;
    stack
        .clients
        .queue
        .send(&signal("wide", "go2", 7), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(stack.drive(&t, "wide", PATIENCE).await, "SUCCEEDED");
    assert_eq!(
        stack.outputs("wide").await,
        serde_json::json!({"o": 3, "v": 7})
    );

    // With at most 40 starts a transition: the start's transition starts 40, each that follows 40
    // more (a message to go on with the rest after each), the gates are reached after 8 commits,
    // however the queue batches the messages.
    stack.settings.max_starts = 40;
    let t = stack.transition().await;
    // A transition that applies several messages still starts at most 40: three copies of the
    // message to go on, in one batch, start the next 40 with one commit.
    let req = request("wide", "wide-c", serde_json::json!({"x": 5}));
    launch(&settings, &stack.clients, &packages, &req, "")
        .await
        .unwrap();
    let waiting = |i: &updraft_aws::store::ExecutionItem| {
        updraft_proto::updraft::ExecutionState::decode(i.state.as_slice())
            .unwrap()
            .waiting
            .len()
    };
    let first = stack
        .drive_until(&t, "wide-c", "never started", |i| i.version > 0)
        .await;
    assert_eq!(first.version, 1);
    let go_on = timer_now("wide-c", 5);
    let batch: Vec<Received> = ["c1", "c2", "c3"]
        .into_iter()
        .map(|id| received(id, &go_on))
        .collect();
    assert!(t.handle(batch).await.is_empty());
    let second = stack
        .clients
        .store
        .execution("wide-c")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.version, 2);
    assert_eq!(waiting(&first) - waiting(&second), 40);

    let req = request("wide", "wide-b", serde_json::json!({"x": 5}));
    launch(&settings, &stack.clients, &packages, &req, "")
        .await
        .unwrap();
    let item = stack
        .drive_until(&t, "wide-b", "never reached the gates", |i| {
            let state = updraft_proto::updraft::ExecutionState::decode(i.state.as_slice()).unwrap();
            state.signal_waiters.contains_key("go1") && state.waiting.is_empty()
        })
        .await;
    assert!(item.version >= 8, "{} commits", item.version);
    for (id, v) in [("go1", 1), ("go2", 8)] {
        stack
            .clients
            .queue
            .send(&signal("wide-b", id, v), Duration::ZERO)
            .await
            .unwrap();
    }
    assert_eq!(stack.drive(&t, "wide-b", PATIENCE).await, "SUCCEEDED");
    assert_eq!(
        stack.outputs("wide-b").await,
        serde_json::json!({"o": 5, "v": 8})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batchs_messages_for_one_execution_share_one_transition() {
    let stack = Stack::new("batch").await;
    stack.register_yaml("narrow.yaml", &wide_yaml(3)).await;
    let packages = Packages::default();
    let t = stack.transition().await;
    let req = request("wide", "narrow", serde_json::json!({"x": 2}));
    launch(&stack.settings, &stack.clients, &packages, &req, "")
        .await
        .unwrap();
    let before = stack
        .drive_until(&t, "narrow", "never started", |i| i.version > 0)
        .await;
    // Both signals in one batch (the second's gate opens only once the first has passed): one
    // transition, one commit, and the execution is over.
    let batch = [("s1", "go1", 1), ("s2", "go2", 9)]
        .into_iter()
        .map(|(id, signal_id, v)| received(id, &signal("narrow", signal_id, v)))
        .collect();
    assert!(t.handle(batch).await.is_empty());
    let after = stack
        .clients
        .store
        .execution("narrow")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.phase, "SUCCEEDED");
    assert_eq!(after.version, before.version + 1, "more than one commit");
    assert_eq!(
        stack.outputs("narrow").await,
        serde_json::json!({"o": 2, "v": 9})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transition_starts_its_pods_several_at_once_and_its_abort_finds_them_all() {
    // Each creation is held 300 ms at the cluster: a transition that starts eight pods one after
    // another has one under way at a time.
    let stack = Stack::new("together").await;
    *stack.server.creations.delay.lock().unwrap() = Some(Duration::from_millis(300));
    stack
        .register_yaml(
            "sleepers.yaml",
            "version: 1
image: busybox
tasks:
  nap:
    type: container
    inputs: {x: int}
    outputs: {y: int}
    command: [sh, -c, 'sleep 60; echo {{.inputs.x}} > /var/outputs/y']
workflows:
  naps:
    inputs: {xs: \"list[int]\"}
    outputs: {ys: \"${m.y}\"}
    nodes:
      - {id: m, map: {task: nap}, inputs: {x: \"${inputs.xs}\"}}
",
        )
        .await;
    let xs: Vec<i64> = (0..8).collect();
    let req = request("naps", "together", serde_json::json!({ "xs": xs }));
    let settings = stack.cluster_settings();
    launch(&settings, &stack.clients, &Packages::default(), &req, "")
        .await
        .unwrap();
    // The start and an abort in one batch: one transition starts the eight pods, then aborts them.
    let start = updraft_proto::updraft::QueueMessage {
        execution: "together".into(),
        kind: Some(updraft_proto::updraft::queue_message::Kind::Start(
            Default::default(),
        )),
    };
    let abort = abort("together", "changed my mind");
    let t = stack.transition().await;
    let failed = t
        .handle(vec![received("a", &start), received("b", &abort)])
        .await;
    assert!(failed.is_empty(), "{failed:?}");
    let item = stack
        .clients
        .store
        .execution("together")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.phase, "ABORTED");
    let store = stack.server.store.lock().unwrap();
    // How many times each of the execution's pods was created (or deleted).
    let per_pod = |counts: &std::collections::BTreeMap<updraft_test_kube::Key, u32>| {
        counts
            .iter()
            .filter(|(k, _)| k.name.starts_with("together-"))
            .map(|(_, n)| *n)
            .collect::<Vec<u32>>()
    };
    let created = per_pod(&store.creations);
    assert_eq!(
        created, [1; 8],
        "each pod created once: {:?}",
        store.creations
    );
    let left = store.names();
    assert!(
        left.is_empty(),
        "pods left running after the abort: {left:?}"
    );
    // Each stopped once: the stopping of what the aborted execution may have left skips what its
    // abort stopped.
    let deleted = per_pod(&store.deletions);
    assert_eq!(
        deleted, [1; 8],
        "each pod deleted once: {:?}",
        store.deletions
    );
    drop(store);
    let peak = stack.server.creations.peak();
    assert!(peak > 1, "the pods were created one at a time");
    assert!(
        peak <= 16,
        "{peak} creations at once: more than a transition makes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_containers_end_signal_carries_its_outputs_which_are_read_from_it() {
    use updraft_proto::updraft::queue_message::Kind;
    let stack = Stack::new("carried").await;
    stack
        .register_yaml(
            "square.yaml",
            "version: 1
image: busybox
tasks:
  square:
    type: container
    inputs: {x: int}
    outputs: {y: int}
    command: [sh, -c, 'echo $(( {{.inputs.x}} * {{.inputs.x}} )) > /var/outputs/y']
workflows:
  sq:
    inputs: {x: int}
    outputs: {y: \"${s.y}\"}
    nodes:
      - {id: s, task: square, inputs: {x: \"${inputs.x}\"}}
",
        )
        .await;
    let t = stack.transition().await;
    let req = request("sq", "carried", serde_json::json!({"x": 7}));
    let settings = stack.cluster_settings();
    launch(&settings, &stack.clients, &Packages::default(), &req, "")
        .await
        .unwrap();
    stack
        .drive_until(&t, "carried", "never started", |i| i.version > 0)
        .await;
    // The pod's own end signal, taken off the queue as the function would receive it (a sweep's
    // check of the ended pod, which carries nothing, is put aside).
    let start = Instant::now();
    let (check, message) = 'found: loop {
        assert!(start.elapsed() < PATIENCE, "no end signal came");
        let got = stack
            .sqs
            .receive_message()
            .queue_url(&stack.settings.transitions_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        for m in got.messages.unwrap_or_default() {
            let decoded =
                updraft_aws::queue::decode(m.body.as_deref().unwrap_or_default()).unwrap();
            stack
                .sqs
                .delete_message()
                .queue_url(&stack.settings.transitions_url)
                .receipt_handle(m.receipt_handle.unwrap_or_default())
                .send()
                .await
                .unwrap();
            if let Some(Kind::Check(c)) = &decoded.kind
                && c.ended
                && !c.outputs.is_empty()
            {
                break 'found (c.clone(), decoded);
            }
        }
    };
    let sent = updraft_proto::core::LiteralMap::decode(check.outputs.as_slice()).unwrap();
    let y =
        |m: &updraft_proto::core::LiteralMap| updraft_engine::literal::to_json(&m.literals["y"]);
    assert_eq!(y(&sent), serde_json::json!(49));
    // The bucket's outputs.pb now says otherwise: the outcome comes from the signal, unread.
    let other = updraft_proto::core::LiteralMap {
        literals: [(
            "y".to_string(),
            updraft_engine::literal::primitive_lit(updraft_proto::core::primitive::Value::Integer(
                999,
            )),
        )]
        .into_iter()
        .collect(),
    };
    let stored = format!("{}/outputs.pb", check.output_prefix);
    stack
        .clients
        .blobs
        .put(&stored, other.encode_to_vec())
        .await
        .unwrap();
    assert!(t.handle(one("signal", &message)).await.is_empty());
    assert_eq!(stack.drive(&t, "carried", PATIENCE).await, "SUCCEEDED");
    assert_eq!(stack.outputs("carried").await, serde_json::json!({"y": 49}));
}

/// How many messages the stack's transitions queue holds, delayed and in flight included.
async fn queued(stack: &Stack) -> u64 {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let attrs = stack
        .sqs
        .get_queue_attributes()
        .queue_url(&stack.settings.transitions_url)
        .attribute_names(A::All)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default();
    [
        A::ApproximateNumberOfMessages,
        A::ApproximateNumberOfMessagesDelayed,
        A::ApproximateNumberOfMessagesNotVisible,
    ]
    .iter()
    .filter_map(|a| attrs.get(a).and_then(|v| v.parse::<u64>().ok()))
    .sum()
}

/// A batch of one message.
fn one(id: &str, m: &updraft_proto::updraft::QueueMessage) -> Vec<Received> {
    vec![received(id, m)]
}

/// Message `m` as the transitions queue hands it over the first time, under id `id`.
fn received(id: &str, m: &updraft_proto::updraft::QueueMessage) -> Received {
    Received {
        id: id.into(),
        body: updraft_aws::queue::encode(m),
        receive_count: 1,
        dead_letter: false,
    }
}

/// A timer message of kind `kind` for execution `exec`, due now.
fn timer_now(exec: &str, kind: u32) -> updraft_proto::updraft::QueueMessage {
    updraft_proto::updraft::QueueMessage {
        execution: exec.into(),
        kind: Some(updraft_proto::updraft::queue_message::Kind::Timer(
            updraft_proto::updraft::TimerMessage {
                kind,
                due_ms: updraft_functions::now_ms(),
                ..Default::default()
            },
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_a_busy_execution_wait_in_its_inbox_for_the_lease_holder() {
    use updraft_aws::store::{Committed, Drained, Lease};
    let stack = Stack::new("inbox").await;
    let store = &stack.clients.store;
    stack.register_yaml("narrow.yaml", &wide_yaml(3)).await;
    let packages = Packages::default();
    let t = stack.transition().await;
    let started = |name: &'static str| {
        let (stack, packages, t) = (&stack, &packages, &t);
        async move {
            let req = request("wide", name, serde_json::json!({"x": 2}));
            launch(&stack.settings, &stack.clients, packages, &req, "")
                .await
                .unwrap();
            let item = stack
                .drive_until(t, name, "never started", |i| i.version > 0)
                .await;
            stack.drain(t).await;
            item
        }
    };

    // Another transition holds the execution: a signal is left in its inbox (counted on the item),
    // not sent again; the holder's commit that did not take it in is refused, the lease kept.
    let before = started("held").await;
    let now = updraft_functions::now_ms();
    let Lease::Taken(held) = store
        .lease("held", "holder", now, now + 600_000)
        .await
        .unwrap()
    else {
        panic!("the lease was not free");
    };
    assert!(
        t.handle(one("s1", &signal("held", "go1", 1)))
            .await
            .is_empty()
    );
    assert_eq!(
        queued(&stack).await,
        0,
        "a busy execution's event was sent again"
    );
    assert_eq!(store.inbox("held").await.unwrap().len(), 1);
    let item = store.execution("held").await.unwrap().unwrap();
    assert_eq!(
        (item.inbox, item.drained, item.version),
        (1, 0, before.version)
    );
    let quiet = Drained {
        seen: 0,
        exact: true,
    };
    let refused = store
        .commit(&held, "holder", false, &[], quiet, now, now + 600_000)
        .await
        .unwrap();
    assert_eq!(refused, Committed::InboxMoved(1));
    assert!(
        t.handle(one("s2", &signal("held", "go2", 9)))
            .await
            .is_empty()
    );
    assert_eq!(store.inbox("held").await.unwrap().len(), 2);
    // A holder that commits without them (its lease nearly over) leaves them for the next: a drain
    // takes both in, in one transition; the inbox is empty after it.
    let late = Drained {
        seen: 0,
        exact: false,
    };
    let done = store
        .commit(&held, "holder", false, &[], late, now, now + 600_000)
        .await
        .unwrap();
    assert_eq!(done, Committed::Done);
    let drain = timer_now("held", updraft_functions::transition::DRAIN_TIMER);
    assert!(t.handle(one("d", &drain)).await.is_empty());
    let item = store.execution("held").await.unwrap().unwrap();
    assert_eq!(item.phase, "SUCCEEDED");
    assert_eq!((item.inbox, item.drained), (2, 2));
    assert_eq!(item.version, before.version + 2);
    assert!(store.inbox("held").await.unwrap().is_empty());
    assert_eq!(
        stack.outputs("held").await,
        serde_json::json!({"o": 2, "v": 9})
    );

    // Two transitions at once: the one holding the lease (slow to commit) takes in the event that
    // reached the inbox meanwhile before its commit; the execution ends with one commit.
    let before = started("raced").await;
    let mut settings = stack.cluster_settings();
    settings.fault = Some("slow-commit".into());
    let cluster = Cluster::from_kubeconfig(Some(&stack.work.join("kubeconfig")))
        .await
        .unwrap();
    let slow = Transition::with_cluster(
        settings,
        stack.clients.clone(),
        Some((cluster, stack.eks.clone())),
    );
    let first = slow.handle(one("r1", &signal("raced", "go1", 1)));
    let second = async {
        tokio::time::sleep(Duration::from_millis(700)).await;
        t.handle(one("r2", &signal("raced", "go2", 4))).await
    };
    let (a, b) = tokio::join!(first, second);
    assert!(a.is_empty() && b.is_empty(), "{a:?} {b:?}");
    let item = store.execution("raced").await.unwrap().unwrap();
    assert_eq!(item.phase, "SUCCEEDED");
    assert_eq!(item.version, before.version + 1, "more than one commit");
    assert_eq!((item.inbox, item.drained), (1, 1));
    assert!(store.inbox("raced").await.unwrap().is_empty());
    assert_eq!(queued(&stack).await, 0, "an event was sent again");
    assert_eq!(
        stack.outputs("raced").await,
        serde_json::json!({"o": 2, "v": 4})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wide_maps_record_is_stored_in_parts_each_written_when_it_changes() {
    use updraft_aws::store::{Lease, NodeBytes, NodeWrite};
    let mut stack = Stack::new("parts").await;
    stack.settings.max_starts = 50;
    stack
        .register_yaml(
            "map.yaml",
            "version: 1
image: ghcr.io/updraft-run/fixtures:1
tasks:
  echo: {type: echo, inputs: {x: int}, outputs: {x: int}}
workflows:
  map:
    inputs: {xs: \"list[int]\"}
    outputs: {ys: \"${m.x}\"}
    nodes:
      - {id: m, map: {task: echo}, inputs: {x: \"${inputs.xs}\"}}
",
        )
        .await;
    let xs: Vec<i64> = (0..300).map(|i| i * 3).collect();
    let t = stack.transition().await;
    let req = request("map", "parts", serde_json::json!({ "xs": xs }));
    launch(
        &stack.settings,
        &stack.clients,
        &Packages::default(),
        &req,
        "",
    )
    .await
    .unwrap();
    let first = stack
        .drive_until(&t, "parts", "never started", |i| i.version > 0)
        .await;
    let store = &stack.clients.store;
    let parts_of = |version: u64| async move {
        let mut by: std::collections::BTreeMap<(u32, u32), u64> = Default::default();
        for r in store.nodes("parts", version).await.unwrap() {
            if r.bytes
                .as_ref()
                .is_some_and(|b| *b != NodeBytes::Inline(Vec::new()))
            {
                by.insert((r.index, r.part), r.version);
            }
        }
        by
    };
    let at_start = parts_of(first.version).await;
    let node = at_start
        .keys()
        .find(|(_, part)| *part > 0)
        .map(|(i, _)| *i)
        .expect("the map's record is not in parts");
    // Progress, inputs, and 300 elements in parts of `ARRAY_CHUNK` (19 of 16).
    let chunks = 300u32.div_ceil(updraft_aws::parts::ARRAY_CHUNK as u32);
    let parts: Vec<u32> = at_start
        .keys()
        .filter(|(i, _)| *i == node)
        .map(|(_, p)| *p)
        .collect();
    assert_eq!(parts, (0..2 + chunks).collect::<Vec<_>>());

    // A transition that died after writing a part no record has (planted, tagged with the version the
    // next commit reaches): the next commit empties it, so the record still reads whole.
    let now = updraft_functions::now_ms();
    let Lease::Taken(_) = store
        .lease("parts", "dead", now, now + 600_000)
        .await
        .unwrap()
    else {
        panic!("the lease was not free");
    };
    let junk = NodeWrite {
        index: node,
        part: 40,
        bytes: NodeBytes::Inline(b"junk".to_vec()),
        committed: None,
    };
    let quiet = updraft_aws::store::Drained {
        seen: 0,
        exact: true,
    };
    let item = store.execution("parts").await.unwrap().unwrap();
    let dead = store
        .commit(
            &item,
            "not-the-holder",
            false,
            &[junk],
            quiet,
            now,
            now + 600_000,
        )
        .await;
    assert!(
        matches!(dead, Err(updraft_aws::Error::LostLease(_))),
        "{dead:?}"
    );
    store.release("parts", "dead").await.unwrap();

    assert_eq!(stack.drive(&t, "parts", PATIENCE).await, "SUCCEEDED");
    assert_eq!(
        stack.outputs("parts").await,
        serde_json::json!({ "ys": xs })
    );
    let last = store.execution("parts").await.unwrap().unwrap().version;
    assert!(
        last >= first.version + 5,
        "{last}: fewer transitions than starts allow"
    );
    let at_end = parts_of(last).await;
    // The inputs were written once, at the map's start; each part of elements when its elements ran
    // or ended (50 a transition: in different transitions); the last commit wrote the progress and
    // only the parts whose elements ended in it (the array keeps its elements' history once done).
    assert_eq!(at_end[&(node, 1)], at_start[&(node, 1)]);
    assert_eq!(at_end[&(node, 0)], last);
    let elements = 2..2 + chunks;
    let versions: std::collections::BTreeSet<u64> =
        elements.clone().map(|p| at_end[&(node, p)]).collect();
    let rewritten_last = elements.filter(|p| at_end[&(node, *p)] == last).count();
    assert!(
        versions.len() >= 4 && rewritten_last < chunks as usize,
        "{at_end:?}"
    );
    assert!(!at_end.contains_key(&(node, 40)), "{at_end:?}");
    // Every part written expires (DynamoDB TTL) after the finished execution's item does.
    use aws_sdk_dynamodb::types::AttributeValue;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk(&endpoint()).await);
    let items = ddb
        .query()
        .table_name(&stack.settings.table)
        .key_condition_expression("pk = :p AND begins_with(sk, :n)")
        .expression_attribute_values(":p", AttributeValue::S("exec#parts".into()))
        .expression_attribute_values(":n", AttributeValue::S("node#".into()))
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    let ttl_of = |i: &std::collections::HashMap<String, AttributeValue>| {
        i.get("ttl")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<i64>().ok())
    };
    let finished = ddb
        .get_item()
        .table_name(&stack.settings.table)
        .key("pk", AttributeValue::S("exec#parts".into()))
        .key("sk", AttributeValue::S("#".into()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let item_ttl = ttl_of(&finished).expect("a finished execution expires");
    assert!(items.len() > 20, "{} node items", items.len());
    // The elements' parts are kept deflated (they repeat most of their text): smaller items, fewer
    // write and read units.
    let deflated = items
        .iter()
        .filter(|i| i.contains_key("zstate") || i.contains_key("zstate1"))
        .count();
    assert!(
        deflated >= chunks as usize,
        "{deflated} of {} node items deflated",
        items.len()
    );
    for i in &items {
        let ttl = ttl_of(i).unwrap_or_else(|| panic!("a node record that never expires: {i:?}"));
        assert!(
            ttl > item_ttl,
            "a node record expires before its execution: {i:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_kept_in_the_bucket_stay_out_of_the_leased_item() {
    // A thousand-element list (about 9 KB): written once at launch to the bucket, and left out of
    // the state the execution's item holds, which every lease and commit rewrites (and DynamoDB
    // bills by its size); put back on each restore, so a node that starts later still reads them.
    let stack = Stack::new("lean").await;
    stack
        .register_yaml(
            "lean.yaml",
            r#"version: 1
image: ghcr.io/updraft-run/fixtures:1
tasks:
  echo: {type: echo, inputs: {xs: "list[int]"}, outputs: {xs: "list[int]"}}
workflows:
  held:
    inputs: {xs: "list[int]"}
    outputs: {o: "${e.xs}"}
    nodes:
      - {id: g, gate: {signal: go, type: int}}
      - {id: e, task: echo, inputs: {xs: "${inputs.xs}"}, after: [g]}
"#,
        )
        .await;
    let packages = Packages::default();
    let t = stack.transition().await;
    let xs: Vec<i64> = (0..1000).map(|i| i * 7919).collect();
    let req = request("held", "lean", serde_json::json!({ "xs": xs }));
    launch(&stack.settings, &stack.clients, &packages, &req, "")
        .await
        .unwrap();
    let item = stack
        .drive_until(&t, "lean", "never reached its gate", |i| {
            updraft_proto::updraft::ExecutionState::decode(i.state.as_slice())
                .is_ok_and(|s| s.signal_waiters.contains_key("go"))
        })
        .await;
    assert!(item.inputs.is_empty() && item.inputs_blob.is_some());
    assert!(item.state_blob.is_none(), "state kept in the bucket");
    let stored = updraft_proto::updraft::ExecutionState::decode(item.state.as_slice()).unwrap();
    assert_eq!(stored.inputs, None, "the item's state holds the inputs");
    assert!(
        item.state.len() < 1024,
        "{} bytes of state",
        item.state.len()
    );
    // Read back whole: the inputs put back from the bucket.
    let state = stack.clients.execution_state(&item).await.unwrap();
    let inputs = state.inputs.expect("no inputs");
    assert_eq!(
        updraft_engine::literal::to_json(&inputs.literals["xs"]),
        serde_json::json!(xs)
    );
    stack
        .clients
        .queue
        .send(&signal("lean", "go", 1), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(stack.drive(&t, "lean", PATIENCE).await, "SUCCEEDED");
    assert_eq!(stack.outputs("lean").await, serde_json::json!({ "o": xs }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn literals_of_any_size_pass_through_the_table_and_the_queue() {
    // A 600 KB string through an echo and a child execution: the execution's inputs and state, the
    // node records, the child's inputs and its end all outgrow a table item or a queue message.
    let stack = Stack::new("big").await;
    stack
        .register_yaml(
            "big.yaml",
            r#"version: 1
image: ghcr.io/updraft-run/fixtures:1
tasks:
  echo: {type: echo, inputs: {s: str}, outputs: {s: str}}
workflows:
  echo_wf:
    inputs: {s: str}
    outputs: {s: "${e.s}"}
    nodes:
      - {id: e, task: echo, inputs: {s: "${inputs.s}"}}
  big:
    inputs: {s: str}
    outputs: {o: "${child.s}", p: "${e.s}"}
    nodes:
      - {id: e, task: echo, inputs: {s: "${inputs.s}"}}
      - {id: child, launch_plan: echo_wf, inputs: {s: "${e.s}"}}
"#,
        )
        .await;
    let packages = Packages::default();
    let t = stack.transition().await;
    let text: String = (0..600 * 1024)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    let req = request("big", "big", serde_json::json!({ "s": text }));
    launch(&stack.settings, &stack.clients, &packages, &req, "")
        .await
        .unwrap();
    let item = stack.clients.store.execution("big").await.unwrap().unwrap();
    assert!(
        item.inputs.is_empty() && item.inputs_blob.is_some(),
        "inputs kept inline"
    );
    assert_eq!(
        stack.drive(&t, "big", Duration::from_secs(120)).await,
        "SUCCEEDED"
    );
    assert_eq!(
        stack.outputs("big").await,
        serde_json::json!({ "o": text, "p": text })
    );
    let item = stack.clients.store.execution("big").await.unwrap().unwrap();
    assert!(
        item.state.is_empty() && item.state_blob.is_some(),
        "state kept inline"
    );
    let child = updraft_engine::exec::dns_name("big-child");
    let child = stack
        .clients
        .store
        .execution(&child)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(child.phase, "SUCCEEDED");
    assert!(
        child.inputs_blob.is_some(),
        "the child's inputs kept inline"
    );
    // A message SQS would refuse is refused before it is sent, naming its execution.
    let huge = updraft_proto::updraft::QueueMessage {
        execution: "big".into(),
        kind: Some(updraft_proto::updraft::queue_message::Kind::Signal(
            updraft_proto::updraft::SignalMessage {
                id: "x".into(),
                value: Some(updraft_engine::literal::primitive_lit(
                    updraft_proto::core::primitive::Value::StringValue(text.clone()),
                )),
            },
        )),
    };
    let err = stack
        .clients
        .queue
        .send(&huge, Duration::ZERO)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("execution big") && err.contains("256 KiB"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_server_errors_latency_and_dropped_connections_change_no_outcome() {
    // Every AWS request of the transitions goes through the fault proxy: one in four meets
    // throttling, a server error, latency or a dropped connection (before the request, or after it
    // with its answer lost). The outcome is the fault-free run's, and no task runs twice.
    use updraft_test_faults::{Fault, FaultProxy, Faults};
    let mut stack = Stack::new("chaos").await;
    stack.register("tests/fixtures/flytekit/branches.tgz").await;
    stack.settings.lease = Duration::from_secs(5);
    let proxy = FaultProxy::start(
        &endpoint(),
        Faults {
            throttle: 0.08,
            server_error: 0.05,
            latency: 0.05,
            drop_request: 0.03,
            drop_answer: 0.04,
            seed: 20_261_201,
        },
    )
    .unwrap();
    let t = stack
        .transition_with(stack.settings.clients_with(sdk(&proxy.url).await))
        .await;
    let settings = stack.cluster_settings();
    let packages = Packages::default();
    for (name, x, want) in [
        ("chaos-a", 12, "10->400"),
        ("chaos-b", 3, "10->6"),
        ("chaos-c", -5, "10->5"),
    ] {
        let req = request(
            "fixtures.branches.branch_wf",
            name,
            serde_json::json!({ "x": x }),
        );
        launch(&settings, &stack.clients, &packages, &req, "")
            .await
            .unwrap();
        assert_eq!(
            stack.drive(&t, name, Duration::from_secs(240)).await,
            "SUCCEEDED",
            "{name}"
        );
        assert_eq!(stack.outputs(name).await, serde_json::json!({ "o0": want }));
        let pods: Vec<String> = stack
            .pods_ran()
            .into_iter()
            .filter(|p| p.starts_with(&format!("{name}-")))
            .collect();
        assert_eq!(pods.len(), 3, "{name}: each task attempt once: {pods:?}");
    }
    let injected = proxy.injected();
    eprintln!(
        "fault proxy: {} requests, faults injected: {injected:?}",
        proxy.requests()
    );
    for fault in [
        Fault::Throttle,
        Fault::ServerError,
        Fault::Latency,
        Fault::DropRequest,
        Fault::DropAnswer,
    ] {
        assert!(
            injected.keys().any(|(f, _)| *f == fault),
            "no {fault:?} was injected in {} requests: {injected:?}",
            proxy.requests()
        );
    }
    for service in ["dynamodb", "sqs", "s3"] {
        assert!(
            injected.keys().any(|(_, s)| s == service),
            "no fault met {service}: {injected:?}"
        );
    }
}

/// A message of execution `exec`, as the dead-letter queue hands it over.
fn dead_letter(id: &str, exec: &str) -> Received {
    let m = updraft_proto::updraft::QueueMessage {
        execution: exec.into(),
        kind: Some(updraft_proto::updraft::queue_message::Kind::Timer(
            updraft_proto::updraft::TimerMessage {
                kind: 1,
                ..Default::default()
            },
        )),
    };
    Received {
        dead_letter: true,
        ..received(id, &m)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_fail_their_executions_with_or_without_the_engine() {
    let stack = Stack::new("deadletter").await;
    stack.register("tests/fixtures/flytekit/failures.tgz").await;
    stack.register("tests/fixtures/flytekit/gates.tgz").await;
    stack
        .register("tests/fixtures/flytekit/gates_child.tgz")
        .await;
    let settings = stack.cluster_settings();
    let packages = Packages::default();
    let t = stack.transition().await;
    let pods_of = |exec: &str| {
        let prefix = format!("{exec}-");
        stack
            .server
            .store
            .lock()
            .unwrap()
            .names()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .count()
    };
    let failed_by = |item: updraft_aws::store::ExecutionItem, id: &str| {
        assert_eq!(item.phase, "FAILED", "{item:?}");
        let error = item.error.unwrap_or_default();
        assert!(error.starts_with("[DeadLetter] a timer message"), "{error}");
        assert!(error.contains(&format!("/{id}.json")), "{error}");
    };

    // Each way: the first handling fails the execution through the engine; a handling after one that
    // died with the message fails it without the engine. Either way its running task is stopped.
    for (exec, earlier_handlings) in [("dl-engine", 0), ("dl-bare", 1)] {
        let req = request("fixtures.failures.slow_wf", exec, serde_json::json!({}));
        launch(&settings, &stack.clients, &packages, &req, "")
            .await
            .unwrap();
        let start = Instant::now();
        while pods_of(exec) == 0 {
            assert!(start.elapsed() < PATIENCE, "{exec}: no pod");
            stack.drive_once(&t).await;
        }
        let id = format!("{exec}-letter");
        for _ in 0..earlier_handlings {
            stack
                .clients
                .store
                .dead_letter_tries(&id, updraft_functions::now_ms())
                .await
                .unwrap();
        }
        let failures = t.handle(vec![dead_letter(&id, exec)]).await;
        assert!(failures.is_empty(), "{exec}: {failures:?}");
        let item = stack.clients.store.execution(exec).await.unwrap().unwrap();
        failed_by(item.clone(), &id);
        // The state agrees with the item.
        let state = updraft_proto::updraft::ExecutionState::decode(item.state.as_slice()).unwrap();
        assert_eq!(
            updraft_engine::exec::exec_phase(state.phase),
            Some(updraft_engine::exec::ExecPhase::Failed)
        );
        assert_eq!(state.error.unwrap().code, "DeadLetter");
        assert_eq!(pods_of(exec), 0, "{exec}: its pod still runs");
        // The letter is kept in the bucket.
        let kept = stack
            .clients
            .blobs
            .get(
                &stack
                    .clients
                    .blobs
                    .uri(&updraft_functions::transition::dead_letter_key(
                        Some(exec),
                        &id,
                    )),
            )
            .await
            .unwrap()
            .expect("the dead letter is kept");
        let kept: serde_json::Value = serde_json::from_slice(&kept).unwrap();
        assert_eq!(kept["execution"], exec);
        assert_eq!(kept["kind"], "timer");
        // The same letter again (a second delivery) changes nothing.
        assert!(t.handle(vec![dead_letter(&id, exec)]).await.is_empty());
        let again = stack.clients.store.execution(exec).await.unwrap().unwrap();
        assert_eq!(again.version, item.version, "{exec}: changed again");
    }

    // Without the engine, a parent's running child is aborted.
    let req = request(
        "fixtures.gates_child.gated_parent_wf",
        "dl-parent",
        serde_json::json!({}),
    );
    launch(&settings, &stack.clients, &packages, &req, "")
        .await
        .unwrap();
    let child = updraft_engine::exec::dns_name("dl-parent-n0");
    stack
        .drive_until(&t, &child, "the child never ran", |c| c.phase == "RUNNING")
        .await;
    stack
        .clients
        .store
        .dead_letter_tries("dl-parent-letter", updraft_functions::now_ms())
        .await
        .unwrap();
    assert!(
        t.handle(vec![dead_letter("dl-parent-letter", "dl-parent")])
            .await
            .is_empty()
    );
    failed_by(
        stack
            .clients
            .store
            .execution("dl-parent")
            .await
            .unwrap()
            .unwrap(),
        "dl-parent-letter",
    );
    assert_eq!(stack.drive(&t, &child, PATIENCE).await, "ABORTED");

    // A letter that is no message is kept, and done with; so is one of an execution that does not
    // exist.
    let junk = Received {
        id: "junk".into(),
        body: "not a message".into(),
        receive_count: 1,
        dead_letter: true,
    };
    assert!(
        t.handle(vec![junk, dead_letter("ghost-letter", "ghost")])
            .await
            .is_empty()
    );
    assert!(
        stack
            .clients
            .blobs
            .get(
                &stack
                    .clients
                    .blobs
                    .uri(&updraft_functions::transition::dead_letter_key(
                        None, "junk"
                    ))
            )
            .await
            .unwrap()
            .is_some()
    );
}

/// A zip holding `binary` as `bootstrap`, as a `provided.al2023` function wants it.
fn bootstrap_zip(binary: &Path) -> Vec<u8> {
    use std::io::Write;
    let mut out = std::io::Cursor::new(Vec::new());
    let mut z = zip::ZipWriter::new(&mut out);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o755);
    z.start_file("bootstrap", opts).unwrap();
    z.write_all(&std::fs::read(binary).unwrap()).unwrap();
    z.finish().unwrap();
    out.into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transition_binary_runs_as_a_lambda_function_fed_by_sqs() {
    let stack = Stack::new("lambda").await;
    stack.register("tests/fixtures/flytekit/branches.tgz").await;
    let sdk = sdk(&endpoint()).await;
    let lambda = aws_sdk_lambda::Client::new(&sdk);
    let name = format!("transition-{}", stack.settings.table);
    let env = aws_sdk_lambda::types::Environment::builder()
        .variables("UPDRAFT_TABLE", &stack.settings.table)
        .variables("UPDRAFT_BUCKET", &stack.settings.bucket)
        .variables("UPDRAFT_TRANSITIONS_URL", &stack.settings.transitions_url)
        .variables(
            "UPDRAFT_EKS",
            serde_json::to_string(&eks_json(&endpoint())).unwrap(),
        )
        .variables("UPDRAFT_MAX_CHECK_DELAY", "2")
        .variables("UPDRAFT_LEASE_SECONDS", "10")
        // The test server is reached with a kubeconfig (no EKS control plane runs here).
        .variables(
            "KUBECONFIG",
            stack.work.join("kubeconfig").display().to_string(),
        )
        .variables("RUST_LOG", "info")
        .build();
    lambda
        .create_function()
        .function_name(&name)
        .runtime(aws_sdk_lambda::types::Runtime::Providedal2023)
        .role("arn:aws:iam::000000000000:role/updraft-transition")
        .handler("bootstrap")
        .timeout(30)
        .environment(env)
        .code(
            aws_sdk_lambda::types::FunctionCode::builder()
                .zip_file(aws_sdk_lambda::primitives::Blob::new(bootstrap_zip(
                    Path::new(env!("CARGO_BIN_EXE_transition")),
                )))
                .build(),
        )
        .send()
        .await
        .unwrap();
    for _ in 0..100 {
        let f = lambda
            .get_function()
            .function_name(&name)
            .send()
            .await
            .unwrap();
        let state = f.configuration.and_then(|c| c.state);
        if state == Some(aws_sdk_lambda::types::State::Active) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let arn = stack.queue_arn(&stack.settings.transitions_url).await;
    lambda
        .create_event_source_mapping()
        .function_name(&name)
        .event_source_arn(arn)
        .batch_size(10)
        .function_response_types(
            aws_sdk_lambda::types::FunctionResponseType::ReportBatchItemFailures,
        )
        .send()
        .await
        .unwrap();
    let settings = stack.cluster_settings();
    let req = request(
        "fixtures.branches.branch_wf",
        "fn",
        serde_json::json!({"x": 3}),
    );
    launch(&settings, &stack.clients, &Packages::default(), &req, "")
        .await
        .unwrap();
    let start = Instant::now();
    let phase = loop {
        let item = stack.clients.store.execution("fn").await.unwrap().unwrap();
        if is_final(&item.phase) {
            break item.phase;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the function left the execution {}",
            item.phase
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let _ = lambda.delete_function().function_name(&name).send().await;
    assert_eq!(phase, "SUCCEEDED");
    assert_eq!(
        stack.outputs("fn").await,
        serde_json::json!({"o0": "10->6"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_dead_letters_fail_queued_executions_and_note_their_requests() {
    use updraft_functions::launch::{launch_dead_letter, launch_dead_letter_key};
    let stack = Stack::new("launchdl").await;
    stack.register("tests/fixtures/flytekit/branches.tgz").await;
    let settings = stack.cluster_settings();
    let packages = Packages::default();
    let body = |name: &str| {
        serde_json::json!({"name": name, "workflow": "fixtures.branches.branch_wf", "inputs": {"x": 3}})
            .to_string()
    };
    // A launch that made its execution but could not send its start (every delivery: the queue
    // refused): the execution waits QUEUED until its dead letter fails it.
    let mut broken = settings.clone();
    broken.transitions_url = format!("{}-gone", settings.transitions_url);
    let broken_clients = broken.clients_with(sdk(&endpoint()).await);
    let req = request(
        "fixtures.branches.branch_wf",
        "lost",
        serde_json::json!({"x": 3}),
    );
    let err = launch(&broken, &broken_clients, &packages, &req, "")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("SQS"), "{err}");
    let item = stack
        .clients
        .store
        .execution("lost")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.phase, "QUEUED");
    let failed = launch_dead_letter(&stack.clients, "m-lost", &body("lost"), 5)
        .await
        .unwrap();
    assert_eq!(failed, ["lost"]);
    let item = stack
        .clients
        .store
        .execution("lost")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.phase, "FAILED");
    let error = item.error.unwrap();
    assert!(
        error.contains("[DeadLetter]") && error.contains("after 5 deliveries"),
        "{error}"
    );
    let kept = stack
        .clients
        .blobs
        .get(&stack.clients.blobs.uri(&launch_dead_letter_key("m-lost")))
        .await
        .unwrap()
        .unwrap();
    let kept: serde_json::Value = serde_json::from_slice(&kept).unwrap();
    assert_eq!(kept["body"], body("lost"));
    // Handled again (its handling died before the message was deleted): nothing changes.
    let again = launch_dead_letter(&stack.clients, "m-lost", &body("lost"), 5)
        .await
        .unwrap();
    assert!(again.is_empty());
    // A late start finds the execution over and starts nothing.
    let t = stack.transition().await;
    let start = updraft_proto::updraft::QueueMessage {
        execution: "lost".into(),
        kind: Some(updraft_proto::updraft::queue_message::Kind::Start(
            Default::default(),
        )),
    };
    stack
        .clients
        .queue
        .send(&start, Duration::ZERO)
        .await
        .unwrap();
    stack.drain(&t).await;
    assert!(!stack.pods_ran().iter().any(|p| p.starts_with("lost-")));
    assert_eq!(
        stack
            .clients
            .store
            .execution("lost")
            .await
            .unwrap()
            .unwrap()
            .phase,
        "FAILED"
    );

    // An execution that started is left alone.
    let req = request(
        "fixtures.branches.branch_wf",
        "going",
        serde_json::json!({"x": 3}),
    );
    launch(&settings, &stack.clients, &packages, &req, "")
        .await
        .unwrap();
    stack
        .drive_until(&t, "going", "never started", |i| i.phase != "QUEUED")
        .await;
    let failed = launch_dead_letter(&stack.clients, "m-going", &body("going"), 5)
        .await
        .unwrap();
    assert!(failed.is_empty());
    assert_eq!(
        stack.drive(&t, "going", Duration::from_secs(120)).await,
        "SUCCEEDED"
    );

    // A request dropped in the bucket: its reason is written beside it.
    let key = "requests/nightly.json";
    let uri = stack.clients.blobs.uri(key);
    stack
        .clients
        .blobs
        .put(&uri, body("nightly").into_bytes())
        .await
        .unwrap();
    let event = serde_json::json!({"Records": [{"s3": {
        "bucket": {"name": stack.settings.bucket},
        "object": {"key": key, "eTag": "e1"},
    }}]});
    let failed = launch_dead_letter(&stack.clients, "m-s3", &event.to_string(), 5)
        .await
        .unwrap();
    assert!(failed.is_empty(), "never created: {failed:?}");
    let note = stack
        .clients
        .blobs
        .get(&format!("{uri}.error.txt"))
        .await
        .unwrap()
        .unwrap();
    let note = String::from_utf8(note).unwrap();
    assert!(note.contains("after 5 deliveries"), "{note}");
    // A body that is no request is kept, and done with.
    assert!(
        launch_dead_letter(&stack.clients, "m-junk", "not json", 5)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        stack
            .clients
            .blobs
            .get(&stack.clients.blobs.uri(&launch_dead_letter_key("m-junk")))
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeps_see_the_ends_of_pods_whose_signals_never_came() {
    let mut stack = Stack::new("sweep").await;
    // The pods cannot reach SQS: each one's wrapper says so, and the task goes on as if it had.
    let env = stack.eks.env.clone();
    let mut eks = stack.eks.clone();
    eks.env = env
        .into_iter()
        .chain([
            (
                "AWS_ENDPOINT_URL_SQS".to_string(),
                "http://127.0.0.1:9".to_string(),
            ),
            ("AWS_MAX_ATTEMPTS".to_string(), "1".to_string()),
        ])
        .collect();
    stack.eks = eks;
    stack.register("tests/fixtures/flytekit/branches.tgz").await;
    let t = stack.transition().await;
    let settings = stack.cluster_settings();
    let packages = Packages::default();
    let req = request(
        "fixtures.branches.branch_wf",
        "sw",
        serde_json::json!({"x": 3}),
    );
    launch(&settings, &stack.clients, &packages, &req, "")
        .await
        .unwrap();
    assert_eq!(
        stack.drive(&t, "sw", Duration::from_secs(120)).await,
        "SUCCEEDED"
    );
    assert_eq!(
        stack.outputs("sw").await,
        serde_json::json!({"o0": "10->6"})
    );
    // Each task's end was found by a sweep (one timer for the execution, no poll of its own), each
    // task ran once.
    assert!(
        stack.sweeps.load(std::sync::atomic::Ordering::Relaxed) >= 3,
        "sweeps: {:?}",
        stack.sweeps
    );
    let store = stack.server.store.lock().unwrap();
    let logs: Vec<(&String, &String)> = store
        .logs
        .iter()
        .map(|((k, _), log)| (&k.name, log))
        .collect();
    assert_eq!(logs.len(), 3, "{logs:?}");
    for (pod, log) in logs {
        assert!(
            log.contains("could not tell the runtime that the task ended"),
            "{pod}: {log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_attempt_keeps_its_handle_which_neither_sweeps_nor_a_failure_act_on() {
    // Finished pods stay (for their logs): nothing but an abort or a failure may delete one.
    let mut stack = Stack::new("kept").await;
    stack.eks.delete_on_finish = false;
    stack
        .register_yaml(
            "pair.yaml",
            "version: 1
image: busybox
tasks:
  quick:
    type: container
    inputs: {x: int}
    outputs: {y: int}
    command: [sh, -c, 'echo {{.inputs.x}} > /var/outputs/y']
  slow:
    type: container
    inputs: {x: int}
    outputs: {y: int}
    command: [sh, -c, 'sleep 60; echo {{.inputs.x}} > /var/outputs/y']
workflows:
  pair:
    inputs: {x: int}
    outputs: {a: \"${q.y}\", b: \"${s.y}\"}
    nodes:
      - {id: q, task: quick, inputs: {x: \"${inputs.x}\"}}
      - {id: s, task: slow, inputs: {x: \"${inputs.x}\"}}
",
        )
        .await;
    let settings = stack.cluster_settings();
    let req = request("pair", "kept", serde_json::json!({"x": 7}));
    launch(&settings, &stack.clients, &Packages::default(), &req, "")
        .await
        .unwrap();
    let t = stack.transition().await;
    // Until the quick task's end is committed (its pod's own end signal), the slow one running.
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the quick task did not end"
        );
        stack.drive_once(&t).await;
        let history = stack.history("kept").await;
        if history
            .nodes
            .iter()
            .any(|n| n.id == "q" && n.phase == "Succeeded")
        {
            break;
        }
    }
    let kept = stack.kept_handles("kept").await;
    let pods = stack.server.store.lock().unwrap().names();
    let quick = pods
        .iter()
        .find(|p| p.starts_with("kept-q"))
        .expect("the quick task's pod")
        .clone();
    let slow = pods
        .iter()
        .find(|p| p.starts_with("kept-s"))
        .expect("the slow task's pod")
        .clone();
    // Its end did not forget its handle (a write the table's TTL saves).
    assert!(kept.contains(&quick) && kept.contains(&slow), "{kept:?}");

    // Sweeps now (every 2 s here) look at the slow task only: the quick one's end, though its pod
    // has ended and its handle is kept, is not sent again. (A sweep that read the records before
    // the quick task's end was committed may have sent it: its message is let through first.)
    let drive_for = |d: Duration| {
        let (stack, t) = (&stack, &t);
        async move {
            let start = Instant::now();
            while start.elapsed() < d {
                stack.drive_once(t).await;
            }
        }
    };
    drive_for(Duration::from_secs(3)).await;
    stack.ended.lock().unwrap().clear();
    let swept = stack.sweeps.load(std::sync::atomic::Ordering::Relaxed);
    let item = stack
        .clients
        .store
        .execution("kept")
        .await
        .unwrap()
        .unwrap();
    let mut sweep = timer_now("kept", updraft_functions::transition::SWEEP_TIMER);
    if let Some(updraft_proto::updraft::queue_message::Kind::Timer(timer)) = &mut sweep.kind {
        timer.due_ms = item.sweep_due.expect("a sweep is armed");
    }
    assert!(t.handle(one("sweep", &sweep)).await.is_empty());
    drive_for(Duration::from_secs(5)).await;
    let sent = stack.ended.lock().unwrap().clone();
    assert!(sent.is_empty(), "a sweep sent the ends of {sent:?}");
    assert!(
        stack.sweeps.load(std::sync::atomic::Ordering::Relaxed) > swept,
        "no sweep came"
    );

    // An abort stops the slow task; the quick task's finished pod stays.
    assert!(
        t.handle(one("abort", &abort("kept", "enough")))
            .await
            .is_empty()
    );
    let item = stack
        .clients
        .store
        .execution("kept")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item.phase, "ABORTED");
    let left = stack.server.store.lock().unwrap().names();
    assert!(
        left.contains(&quick),
        "the finished pod was deleted: {left:?}"
    );
    assert!(
        !left.contains(&slow),
        "the running pod was not stopped: {left:?}"
    );
    // Both handles stay kept (the table's TTL deletes them): the records say which attempt ended and
    // which was stopped.
    let kept = stack.kept_handles("kept").await;
    assert!(
        kept.contains(&quick) && kept.contains(&slow),
        "kept after the abort: {kept:?}"
    );
    // Kept together: the two tasks started in one transition, one item for both.
    let items = stack.handle_items("kept").await;
    assert_eq!(items, 1, "items kept for two starts");
}
