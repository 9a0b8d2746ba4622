//! `updraft run --executor eks` end to end: the fixture workflows' native tasks as Kubernetes objects on the
//! Kubernetes API test server (`tests/kube-server`), whose kubelet runs each container as a process with
//! the real `pyflyte-execute`, and the raw containers' data through the real `updraft-copilot`.
//!
//! Needs `UPDRAFT_TEST_PYTHON` (set by `scripts/test`) and root for the kubelet's mount namespaces.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::{root, spawn_updraft, temp_dir, updraft, updraft_env, wait_for};
use updraft_test_kube::{Node, Server};

fn python() -> String {
    std::env::var("UPDRAFT_TEST_PYTHON").unwrap_or_else(|_| {
        panic!("UPDRAFT_TEST_PYTHON is not set: run the tests with `bash scripts/test`, which prepares a Python environment with flytekit")
    })
}

/// A test cluster: the server, and the `--executor eks` arguments that reach it.
struct TestCluster {
    server: Server,
    state: PathBuf,
    kubeconfig: PathBuf,
    config: PathBuf,
}

impl TestCluster {
    /// A node whose image has the flytekit environment (on PATH and at `/opt/venv`, where flytekit's
    /// default image keeps it), the fixtures' code, `updraft-copilot` and the `mpirun` stand-in.
    fn start(tag: &str, eks_config: &str) -> Self {
        let state = temp_dir(tag);
        let node = Node::python(
            Path::new(&python()),
            &root().join("tests/fixtures/flytekit/src"),
            &[
                updraft_test_kube::programs_dir("updraft-copilot"),
                root().join("tests/node-image/bin"),
            ],
        );
        let server = Server::start_node(0, state.join("kubelet"), node).unwrap();
        let kubeconfig = state.join("kubeconfig");
        server.write_kubeconfig(&kubeconfig).unwrap();
        let config = state.join("eks.yaml");
        std::fs::write(&config, eks_config).unwrap();
        Self {
            server,
            state,
            kubeconfig,
            config,
        }
    }

    fn args<'a>(&'a self, run: &[&'a str]) -> Vec<String> {
        let mut all: Vec<String> = vec!["run".into()];
        all.extend(run.iter().map(|s| s.to_string()));
        all.extend(
            [
                "--executor",
                "eks",
                "--kubeconfig",
                self.kubeconfig.to_str().unwrap(),
                "--eks-config",
                self.config.to_str().unwrap(),
                "--namespace",
                "flyte",
                "--python",
                &python(),
                "--state-dir",
                self.state.join("state").to_str().unwrap(),
            ]
            .map(String::from),
        );
        all
    }

    /// Runs a workflow on the cluster: exit code, outputs, progress.
    fn run(&self, run: &[&str]) -> (i32, serde_json::Value, String) {
        let args = self.args(run);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let src = root().join("tests/fixtures/flytekit/src");
        let (code, out, err) = updraft_env(&args, &[("PYTHONPATH", src.as_os_str())]);
        (
            code,
            serde_json::from_str(&out).unwrap_or(serde_json::Value::Null),
            err,
        )
    }

    /// The objects left on the cluster.
    /// The objects the runs made that are still there (the tests' own Secrets aside).
    fn objects(&self) -> Vec<String> {
        let store = self.server.store.lock().unwrap();
        store
            .objects
            .keys()
            .filter(|k| k.resource.kind != "Secret")
            .map(|k| format!("{}/{}", k.namespace, k.name))
            .collect()
    }

    /// How many pods ran (each left its log).
    fn pods_ran(&self, containing: &str) -> usize {
        let store = self.server.store.lock().unwrap();
        let pods: std::collections::BTreeSet<&str> = store
            .logs
            .keys()
            .map(|(k, _)| k.name.as_str())
            .filter(|n| n.contains(containing))
            .collect();
        pods.len()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.server.stop();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

#[test]
fn python_pod_and_raw_container_tasks() {
    let c = TestCluster::start("eks-py", "{}");
    let cases: [(&[&str], serde_json::Value); 3] = [
        (
            &[
                "tests/fixtures/flytekit/subworkflows.tgz",
                "-w",
                "fixtures.subworkflows.outer",
                "-i",
                "x=3",
            ],
            serde_json::json!({"o0": 90}),
        ),
        (
            &["tests/fixtures/flytekit/dynamic.tgz", "-i", "n=2"],
            serde_json::json!({"o0": "1,2"}),
        ),
        // A raw container (its data through the copilot), a pod_template task and a legacy Pod task
        // with a sidecar.
        (
            &[
                "tests/fixtures/flytekit/containers.tgz",
                "-w",
                "fixtures.containers.containers_wf",
                "-i",
                "radius=2",
            ],
            serde_json::json!({"o0": 11}),
        ),
    ];
    // A flytekit map task: one pod per element; the failing element is none, within min_success_ratio.
    let (code, out, err) = c.run(&["tests/fixtures/flytekit/maps.tgz"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out["o0"], serde_json::json!([1, 4, 9, 16, 25]));
    assert_eq!(out["o2"], serde_json::json!([101, 102, null, 104, 105]));
    assert_eq!(out["o3"], serde_json::json!(55));
    for (args, want) in cases {
        let (code, out, err) = c.run(args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert_eq!(out, want, "{args:?}");
    }
    // Raw containers of the YAML format (a map, a sum, a branch): the same outputs as a run on this
    // machine.
    let hello = ["examples/hello.yaml", "-i", "numbers=[1,2,3]"];
    let (code, out, err) = c.run(&hello);
    assert_eq!(code, 0, "{err}");
    let local_state = c.state.join("local");
    let mut local = vec!["run"];
    local.extend(hello);
    local.extend(["--state-dir", local_state.to_str().unwrap()]);
    let (lcode, lout, lerr) = updraft(&local);
    assert_eq!(lcode, 0, "{lerr}");
    assert_eq!(
        out,
        serde_json::from_str::<serde_json::Value>(&lout).unwrap()
    );
    assert!(c.objects().is_empty(), "{:?}", c.objects());
    assert!(c.pods_ran("") >= 9, "one pod per task and map element");
}

#[test]
fn secrets_come_from_kubernetes_secrets_as_flyte_injects_them() {
    let c = TestCluster::start("eks-secrets", "{}");
    let args = ["tests/fixtures/flytekit/secrets.tgz"];
    // No such secrets: the container cannot be configured, and the attempt fails naming the secret.
    let (code, _, err) = c.run(&args);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("CreateContainerConfigError"), "{err}");
    assert!(
        err.contains("secret \"db\" not found") || err.contains("secret \"api\" not found"),
        "{err}"
    );
    assert!(c.objects().is_empty(), "{:?}", c.objects());
    // The secrets in the namespace: variables for ENV_VAR requests, files under /etc/flyte/secrets for
    // the rest, each as flytekit reads it.
    let secrets = updraft_test_kube::Resource::named("", "v1", "secrets").unwrap();
    {
        let mut store = c.server.store.lock().unwrap();
        let (status, _) = store.create(
            &secrets,
            "flyte",
            serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
                "data": {"password": "aHVudGVyMi1rOHM="}}),
        );
        assert_eq!(status, 201);
        let (status, _) = store.create(
            &secrets,
            "flyte",
            serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "api"},
                "stringData": {"token": "token-k8s"}}),
        );
        assert_eq!(status, 201);
    }
    let (code, out, err) = c.run(&args);
    assert_eq!(code, 0, "{err}");
    let token = common::secret_digest("token-k8s");
    assert_eq!(
        out,
        serde_json::json!({"o0": common::secret_digest("hunter2-k8s"), "o1": token, "o2": token})
    );
    assert!(c.objects().is_empty(), "{:?}", c.objects());
}

#[test]
fn training_and_spark_tasks() {
    let c = TestCluster::start("eks-train", "{}");
    // PyTorchJob (master and workers), TFJob (chief, ps, workers), MPIJob (launcher and workers; the
    // launcher's mpirun runs the ranks).
    let (code, out, err) = c.run(&["tests/fixtures/flytekit/training.tgz", "-i", "epochs=3"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, serde_json::json!({"o0": 0.25}));
    for role in ["-master-0", "-worker-1", "-chief-0", "-ps-0", "-launcher-0"] {
        assert!(c.pods_ran(role) >= 1, "no {role} pod ran");
    }
    // A SparkApplication: its driver runs the task in a Spark session.
    let (code, out, err) = c.run(&[
        "tests/fixtures/flytekit/spark_tasks.tgz",
        "-i",
        "partitions=4",
    ]);
    assert_eq!(code, 0, "{err}");
    let pi = out["o0"].as_f64().unwrap();
    assert!((2.8..3.5).contains(&pi), "{pi}");
    assert!(c.pods_ran("-driver") == 1);
    assert!(c.objects().is_empty(), "{:?}", c.objects());
}

#[test]
fn flytekit_only_plugins_run_in_pods() {
    let c = TestCluster::start("eks-plugins", "{}");
    // SQLite3Task's pod reads its template from the attempt's folder ({{.taskTemplatePath}}).
    common::shop_db(&python());
    let (code, out, err) = c.run(&["tests/fixtures/flytekit/sqlite.tgz", "-i", "limit=4"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, serde_json::json!({"o0": 1, "o1": "tea"}));
    let (code, out, err) = c.run(&["tests/fixtures/flytekit/notebook.tgz", "-i", "x=5"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, serde_json::json!({"o0": 25, "o1": true, "o2": true}));
    assert!(c.objects().is_empty(), "{:?}", c.objects());
}

#[test]
fn elastic_pytorch_runs_workers_under_the_elastic_policy() {
    let c = TestCluster::start("eks-elastic", "{}");
    // Two to three workers, no master: every worker (the task writes its outputs from each) is told
    // where to meet (the first worker), how many nodes may join and how often to restart.
    let (code, out, err) = c.run(&["tests/fixtures/yaml/elastic.yaml", "-i", "epochs=2"]);
    assert_eq!(code, 0, "{err}");
    let job = |n: &str| {
        c.server
            .store
            .lock()
            .unwrap()
            .logs
            .keys()
            .map(|(k, _)| k.name.clone())
            .find(|p| p.ends_with(n))
            .unwrap_or_else(|| panic!("no pod ending {n}"))
    };
    let first = job("-worker-0");
    let name = first.trim_end_matches("-worker-0");
    assert_eq!(
        out,
        serde_json::json!({"o0": format!(
            "epochs=2 PET_RDZV_ENDPOINT={name}-worker-0:23456 PET_RDZV_BACKEND=c10d PET_NNODES=2:3 \
             PET_NPROC_PER_NODE=2 PET_MAX_RESTARTS=1 MASTER_ADDR=-"
        )})
    );
    assert_eq!(c.pods_ran("-worker-"), 2, "two workers");
    assert_eq!(c.pods_ran("-master-"), 0, "no master");
    assert!(c.objects().is_empty(), "{:?}", c.objects());
}

#[test]
fn failures_map_to_retries() {
    let c = TestCluster::start("eks-fail", "imagePullGraceSeconds: 1\n");
    // A recoverable error in error.pb: retried until it works.
    let (code, out, err) = c.run(&[
        "tests/fixtures/flytekit/failures.tgz",
        "-w",
        "fixtures.failures.flaky_wf",
        "-i",
        "x=4",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, serde_json::json!({"o0": 40}));
    assert_eq!(c.pods_ran("-n0-"), 3, "three attempts");
    // A crashing process: the container's exit code, a system failure retried once.
    let (code, _, err) = c.run(&[
        "tests/fixtures/flytekit/failures.tgz",
        "-w",
        "fixtures.failures.crash_wf",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("exited with code 3"), "{err}");
    // OOMKilled and an image that never pulls: retried, then the execution fails with the reason.
    let yaml = c.state.join("broken.yaml");
    std::fs::write(
        &yaml,
        "version: 1\ntasks:\n  hungry: {type: container, image: 'busybox:oom', command: [sh, -c, 'true'], outputs: {}, retries: 1}\n  unpullable: {type: container, image: 'registry.example/missing:1', command: [sh, -c, 'true'], outputs: {}, retries: 1}\nworkflows:\n  oom: {nodes: [{id: eat, task: hungry}]}\n  pull: {nodes: [{id: fetch, task: unpullable}]}\n",
    )
    .unwrap();
    let y = yaml.to_str().unwrap();
    let (code, _, err) = c.run(&[y, "-w", "oom"]);
    assert_eq!(code, 1);
    assert!(err.contains("OOMKilled"), "{err}");
    assert_eq!(c.pods_ran("-eat-"), 2, "retried once");
    let (code, _, err) = c.run(&[y, "-w", "pull"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("ImagePullBackOff") || err.contains("ErrImagePull"),
        "{err}"
    );
    assert!(c.objects().is_empty(), "{:?}", c.objects());
}

#[test]
fn abort_deletes_every_object() {
    let c = TestCluster::start("eks-abort", "{}");
    let yaml = c.state.join("sleepy.yaml");
    std::fs::write(
        &yaml,
        "version: 1\nimage: python:3.11-slim\ntasks:\n  nap: {type: container, command: [sleep, '60'], outputs: {}}\nworkflows:\n  wf: {nodes: [{id: a, task: nap}, {id: b, task: nap}]}\n",
    )
    .unwrap();
    let args = c.args(&[yaml.to_str().unwrap()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let child = spawn_updraft(&args, &[]);
    let state = c.state.join("state");
    let (name, _) = wait_for(&state, |v| {
        v["nodes"]["a"] == "Running" && v["nodes"]["b"] == "Running"
    });
    // Both pods exist and run.
    for _ in 0..200 {
        if c.objects().len() == 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(c.objects().len(), 2, "{:?}", c.objects());
    let (code, _, _) = updraft(&["abort", &name, "--state-dir", state.to_str().unwrap()]);
    assert_eq!(code, 0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(c.objects().is_empty(), "{:?}", c.objects());
}
