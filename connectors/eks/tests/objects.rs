//! The objects native tasks become: golden files for each fixture task (made by the real flytekit, and the
//! YAML fixture), and the rules every object follows.
//!
//! `UPDRAFT_BLESS=1 cargo test -p updraft-connector-eks` rewrites the golden files after a deliberate change;
//! review the diff.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use updraft_connector_eks::{AttemptPaths, BuildError, EksConfig, Object, build, plan_launch};
use updraft_engine::compile::CompiledTask;
use updraft_engine::{CompiledPackage, Limits, Package, compile, yaml};
use updraft_proto::core::LiteralMap;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(name: &str) -> CompiledPackage {
    let path = root().join("tests/fixtures/flytekit").join(name);
    let bytes = std::fs::read(&path).unwrap();
    compile(&Package::from_tgz(name, &bytes, Limits::default()).unwrap()).unwrap()
}

fn yaml_fixture(name: &str) -> CompiledPackage {
    let path = root().join("tests/fixtures/yaml").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    compile(&yaml::load(name, &text).unwrap()).unwrap()
}

fn objects(task: &CompiledTask, index: Option<u32>, config: &EksConfig) -> Vec<Object> {
    let launch = plan_launch(task, LiteralMap::default(), index);
    let paths = AttemptPaths::under("s3://bucket/executions/plan", &launch);
    build(task, &launch, &paths, config).unwrap_or_else(|e| panic!("{}: {e}", task.name))
}

fn yaml_text(objects: &[Object]) -> String {
    objects
        .iter()
        .map(|o| updraft_connector_eks::to_yaml(&o.to_json()))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// Compares with (or, blessing, writes) `tests/golden/<file>.yaml`.
fn golden(file: &str, text: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{file}.yaml"));
    if std::env::var_os("UPDRAFT_BLESS").is_some() {
        std::fs::write(&path, text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{}: missing; run with UPDRAFT_BLESS=1", path.display()));
    assert_eq!(text, want, "{} differs", path.display());
}

#[test]
fn every_native_fixture_task_matches_its_golden_objects() {
    let config = EksConfig::default();
    let mut seen = Vec::new();
    for pkg_name in [
        "containers.tgz",
        "training.tgz",
        "spark_tasks.tgz",
        "maps.tgz",
        "secrets.tgz",
    ] {
        let pkg = fixture(pkg_name);
        for task in pkg.tasks.values().filter(|t| t.plugin.is_native()) {
            // Map tasks' elements: the pod of element 2.
            let index = task.name.contains("map_").then_some(2);
            let objs = objects(task, index, &config);
            golden(&task.name, &yaml_text(&objs));
            seen.push(task.name.clone());
        }
    }
    let pkg = yaml_fixture("everything.yaml");
    for task in pkg.tasks.values().filter(|t| t.plugin.is_native()) {
        golden(
            &format!("yaml.{}", task.name),
            &yaml_text(&objects(task, None, &config)),
        );
        seen.push(task.name.clone());
    }
    for want in [
        "calc_area",
        "fixtures.containers.in_pod",
        "fixtures.containers.with_sidecar",
        "fixtures.training.torch_train",
        "fixtures.training.tf_train",
        "fixtures.training.mpi_train",
        "fixtures.spark_tasks.estimate_pi",
        "fixtures.secrets.from_context",
        "fixtures.secrets.from_env_var",
        "fixtures.secrets.from_file",
    ] {
        assert!(
            seen.iter().any(|s| s == want),
            "{want} not covered: {seen:?}"
        );
    }
}

fn pod_json(
    task: &CompiledTask,
    launch_interruptible: bool,
    config: &EksConfig,
) -> serde_json::Value {
    let mut launch = plan_launch(task, LiteralMap::default(), None);
    launch.interruptible = launch_interruptible;
    let paths = AttemptPaths::under("s3://bucket/x", &launch);
    let objs = build(task, &launch, &paths, config).unwrap();
    assert_eq!(objs.len(), 1);
    objs[0].to_json()
}

#[test]
fn pods_carry_names_labels_resources_and_rendered_arguments() {
    let pkg = fixture("containers.tgz");
    let task = &pkg.tasks["calc_area"];
    let mut launch = plan_launch(task, LiteralMap::default(), None);
    launch.execution = "e".repeat(80);
    launch.node_id = "n1-n0".into();
    launch.attempt = 3;
    launch.name = updraft_engine::exec::dns_name(&format!("{}-n1-n0-3", launch.execution));
    let paths = AttemptPaths::under("s3://b/e", &launch);
    let pod = build(task, &launch, &paths, &EksConfig::default()).unwrap()[0].to_json();
    let name = pod["metadata"]["name"].as_str().unwrap();
    assert!(name.len() <= 63, "{name}");
    let labels = &pod["metadata"]["labels"];
    assert!(labels["updraft.run/execution"].as_str().unwrap().len() <= 63);
    assert_eq!(labels["updraft.run/node"], "n1-n0");
    assert_eq!(labels["updraft.run/attempt"], "3");
    let c = &pod["spec"]["containers"][0];
    assert_eq!(c["image"], "python:3.11-slim");
    // `{{.inputs.radius}}` rendered (here the plan's stand-in), the previous checkpoint set after attempt 0.
    assert_eq!(c["command"].as_array().unwrap().last().unwrap(), "<radius>");
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    assert_eq!(
        paths.prev_checkpoint_prefix.as_deref(),
        Some("s3://b/e/n1-n0/2/checkpoint")
    );
}

#[test]
fn interruptible_attempts_get_the_configured_placement() {
    let pkg = fixture("containers.tgz");
    let task = &pkg.tasks["calc_area"];
    let config: EksConfig = serde_norway::from_str(
        r#"
namespace: "{{project}}-{{domain}}"
project: ml
domain: production
serviceAccount: runner
interruptible:
  nodeSelector: {capacity: spot}
  tolerations: [{key: spot, operator: Exists, effect: NoSchedule}]
"#,
    )
    .unwrap();
    let pod = pod_json(task, true, &config);
    assert_eq!(pod["metadata"]["namespace"], "ml-production");
    assert_eq!(pod["spec"]["serviceAccountName"], "runner");
    assert_eq!(pod["spec"]["nodeSelector"]["capacity"], "spot");
    assert_eq!(pod["spec"]["tolerations"][0]["key"], "spot");
    let pod = pod_json(task, false, &config);
    assert!(pod["spec"].get("nodeSelector").is_none(), "{pod}");
    // Unknown settings are refused, naming them.
    let err = serde_norway::from_str::<EksConfig>("namespaces: x").unwrap_err();
    assert!(
        err.to_string().contains("unknown field `namespaces`"),
        "{err}"
    );
}

#[test]
fn pod_templates_underlie_the_task_pod() {
    let pkg = fixture("containers.tgz");
    let mut task = pkg.tasks["fixtures.containers.in_pod"].clone();
    task.template
        .metadata
        .get_or_insert_with(Default::default)
        .pod_template_name = "gpu".into();
    let config: EksConfig = serde_norway::from_str(
        r#"
podTemplates:
  gpu:
    metadata: {labels: {pool: gpu}}
    spec:
      runtimeClassName: nvidia
      tolerations: [{key: nvidia.com/gpu, operator: Exists}]
      containers:
        - name: primary
          env: [{name: CUDA, value: "1"}]
          resources: {limits: {nvidia.com/gpu: "1"}}
        - name: default
          volumeMounts: [{name: cache, mountPath: /cache}]
"#,
    )
    .unwrap();
    let pod = pod_json(&task, false, &config);
    let spec = &pod["spec"];
    assert_eq!(spec["runtimeClassName"], "nvidia");
    assert_eq!(pod["metadata"]["labels"]["pool"], "gpu");
    // The template's toleration and the task's own are both kept.
    let tolerations: Vec<&str> = spec["tolerations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["key"].as_str().unwrap())
        .collect();
    assert_eq!(tolerations, ["nvidia.com/gpu", "gpu"]);
    let primary = &spec["containers"][0];
    assert_eq!(primary["name"], "primary");
    assert_eq!(primary["resources"]["limits"]["nvidia.com/gpu"], "1");
    let env: Vec<&str> = primary["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"CUDA") && env.contains(&"MODE") && env.contains(&"FLYTE_INTERNAL_NODE_ID"),
        "{env:?}"
    );
    assert_eq!(
        spec["containers"].as_array().unwrap().len(),
        1,
        "template containers are not added"
    );

    task.template.metadata.as_mut().unwrap().pod_template_name = "missing".into();
    let launch = plan_launch(&task, LiteralMap::default(), None);
    let err = build(
        &task,
        &launch,
        &AttemptPaths::under("s3://b", &launch),
        &config,
    )
    .unwrap_err();
    assert!(
        matches!(&err, BuildError::Task { field, .. } if field == "metadata.pod_template_name"),
        "{err}"
    );
    assert!(
        err.to_string().contains("no pod template `missing`"),
        "{err}"
    );
}

#[test]
fn only_native_tasks_become_objects() {
    let pkg = fixture("batch.tgz");
    let task = pkg.tasks.values().find(|t| !t.plugin.is_native()).unwrap();
    let launch = plan_launch(task, LiteralMap::default(), None);
    let err = build(
        task,
        &launch,
        &AttemptPaths::under("s3://b", &launch),
        &EksConfig::default(),
    )
    .unwrap_err();
    assert!(matches!(err, BuildError::NotNative { .. }), "{err}");
}

fn pod_of(objects: Vec<Object>) -> k8s_openapi::api::core::v1::Pod {
    match objects.into_iter().next() {
        Some(Object::Pod(p)) => *p,
        other => panic!("not a pod: {other:?}"),
    }
}

fn env_of(c: &k8s_openapi::api::core::v1::Container, name: &str) -> Option<String> {
    c.env
        .iter()
        .flatten()
        .find(|v| v.name == name)
        .and_then(|v| v.value.clone())
}

#[test]
fn python_and_raw_container_pods_take_small_inputs_and_send_the_end_signal() {
    use base64::Engine;
    use updraft_connector::{Attempt, EndSignal, LocalData};
    use updraft_connector_eks::wrap::{
        INPUTS_URI_VAR, INPUTS_VAR, SIGNAL_VAR, WRAPPER, python_primary, wrap,
    };
    use updraft_proto::Message;
    let signal = EndSignal {
        queue_url: "https://sqs.us-east-1.amazonaws.com/1/transitions".into(),
        region: "us-east-1".into(),
        body: "the check".into(),
        delay_seconds: 1,
    };
    let inputs = LiteralMap {
        literals: [(
            "x".to_string(),
            updraft_engine::literal::primitive_lit(updraft_proto::core::primitive::Value::Integer(
                3,
            )),
        )]
        .into(),
    };
    let pkg = fixture("containers.tgz");
    let branches = fixture("branches.tgz");
    let python = branches
        .tasks
        .values()
        .find(|t| t.template.r#type == "python-task")
        .unwrap();
    for (task, is_python) in [
        (python, true),
        (&pkg.tasks["fixtures.containers.in_pod"], true),
        (&pkg.tasks["calc_area"], false),
    ] {
        let launch = plan_launch(task, inputs.clone(), None);
        let paths = AttemptPaths::under("s3://b/e", &launch);
        let a = Attempt {
            launch: &launch,
            task,
            paths: &paths,
            data: &LocalData,
            signal: Some(&signal),
        };
        let plain = pod_of(build(task, &launch, &paths, &EksConfig::default()).unwrap());
        let mut pod = plain.clone();
        assert!(wrap(&mut pod, &a, true, Some(&signal)), "{}", task.name);
        let spec = pod.spec.as_ref().unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(launch.inputs.encode_to_vec());
        let sent: EndSignal = if is_python {
            let i = python_primary(&plain).unwrap();
            let (before, c) = (
                &plain.spec.as_ref().unwrap().containers[i],
                &spec.containers[i],
            );
            // The command as it was, now the wrapper's arguments.
            assert_eq!(
                c.command.as_deref().unwrap(),
                ["python3".to_string(), "-c".into(), WRAPPER.into()]
            );
            let mut was = before.command.clone().unwrap_or_default();
            was.extend(before.args.clone().unwrap_or_default());
            assert_eq!(c.args.as_ref().unwrap(), &was);
            assert!(was.contains(&paths.input), "{was:?}");
            assert_eq!(env_of(c, INPUTS_VAR).unwrap(), b64);
            assert_eq!(env_of(c, INPUTS_URI_VAR).unwrap(), paths.input);
            serde_json::from_str(&env_of(c, SIGNAL_VAR).unwrap()).unwrap()
        } else {
            // The copilot takes the same variables: the command is not wrapped.
            assert!(python_primary(&plain).is_none());
            let c = &spec.containers[0];
            assert_eq!(
                c.command,
                plain.spec.as_ref().unwrap().containers[0].command
            );
            let init = &spec.init_containers.as_ref().unwrap()[0];
            assert_eq!(env_of(init, INPUTS_VAR).unwrap(), b64);
            assert_eq!(env_of(c, INPUTS_VAR), None);
            serde_json::from_str(&env_of(c, SIGNAL_VAR).unwrap()).unwrap()
        };
        assert_eq!(sent, signal);
        // Neither inline inputs nor a signal: the pod stays as built.
        let mut same = plain.clone();
        assert!(!wrap(&mut same, &a, false, None));
        assert_eq!(same, plain);
        // A signal alone: no inputs in the environment.
        let mut only = plain.clone();
        assert!(wrap(&mut only, &a, false, Some(&signal)));
        let spec = only.spec.as_ref().unwrap();
        let all: Vec<_> = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .collect();
        assert!(all.iter().all(|c| env_of(c, INPUTS_VAR).is_none()));
        assert!(all.iter().any(|c| env_of(c, SIGNAL_VAR).is_some()));
    }
}

/// Runs the wrapper with `UPDRAFT_TEST_PYTHON` on `command`, with `env`.
fn run_wrapper(command: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let python = std::env::var("UPDRAFT_TEST_PYTHON")
        .expect("UPDRAFT_TEST_PYTHON is not set: run the tests with `bash scripts/test`");
    std::process::Command::new(&python)
        .arg("-c")
        .arg(updraft_connector_eks::wrap::WRAPPER)
        .args(command)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn the_wrapper_passes_inputs_and_exit_codes_and_survives_an_unsendable_signal() {
    let python = std::env::var("UPDRAFT_TEST_PYTHON")
        .expect("UPDRAFT_TEST_PYTHON is not set: run the tests with `bash scripts/test`");
    // The inputs' URI in the arguments becomes a file holding them.
    let out = run_wrapper(
        &[
            &python,
            "-c",
            "import sys; print(open(sys.argv[2], 'rb').read().decode(), sys.argv[1])",
            "--inputs",
            "s3://b/e/n0/0/inputs.pb",
        ],
        &[
            ("UPDRAFT_INPUTS", "aW5wdXQgYnl0ZXM="),
            ("UPDRAFT_INPUTS_URI", "s3://b/e/n0/0/inputs.pb"),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "input bytes --inputs"
    );
    // The command's exit code, after a signal that could not be sent (logged, not fatal); the
    // wrapper's variables are not in the command's environment.
    let signal =
        r#"{"queue": "http://127.0.0.1:9/q", "region": "us-east-1", "body": "b", "delay": 1}"#;
    let out = run_wrapper(
        &[
            &python,
            "-c",
            "import os, sys; print(sorted(k for k in os.environ if k.startswith(('UPDRAFT_END', 'UPDRAFT_INPUTS')))); sys.exit(3)",
        ],
        &[
            ("UPDRAFT_END_SIGNAL", signal),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_MAX_ATTEMPTS", "1"),
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("could not tell the runtime that the task ended"),
        "{err}"
    );
}
