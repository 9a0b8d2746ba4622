//! The local connector through the connector contract: a real process started, checked to its end with
//! its outputs, a second start of a running attempt finding it, an abort killing it, and the registry
//! refusing what it does not serve before anything starts.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use updraft_connector::{
    Attempt, AttemptPaths, Connector, DataStore, LocalData, Registry, RegistryError,
};
use updraft_connector_local::{Containers, LocalConnector};
use updraft_engine::compile::CompiledPackage;
use updraft_engine::exec::{TaskLaunch, TaskStatus};
use updraft_engine::literal::from_json;
use updraft_proto::Message;
use updraft_proto::core::{LiteralMap, LiteralType, SimpleType, literal_type::Type};

const YAML: &str = r#"
version: 1
image: busybox:1
tasks:
  double:
    type: container
    inputs: {x: int}
    outputs: {y: int}
    command: [sh, -c, 'echo $(( {{.inputs.x}} * 2 )) > /var/outputs/y']
  nap:
    type: container
    outputs: {}
    command: [sleep, '30']
  remote:
    type: aws-batch
    image: i:1
    module: m
    function: f
    outputs: {}
workflows:
  wf:
    nodes:
      - {id: a, task: double, inputs: {x: 21}}
      - {id: b, task: nap}
      - {id: c, task: remote}
"#;

fn package() -> CompiledPackage {
    let pkg = updraft_engine::yaml::load("connector.yaml", YAML).unwrap();
    updraft_engine::compile(&pkg).unwrap()
}

fn launch(node: &str, task: &str, inputs: LiteralMap) -> TaskLaunch {
    TaskLaunch {
        execution: "e".into(),
        node: 0,
        node_id: node.into(),
        index: None,
        attempt: 0,
        task: task.into(),
        inputs: Arc::new(inputs),
        name: format!("e-{node}-0-{}", std::process::id()),
        interruptible: false,
        cache_key: None,
        cache_serializable: false,
        array_size: None,
    }
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fn dir(name: &str) -> String {
    let d = std::env::temp_dir().join(format!("updraft-local-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d.display().to_string()
}

/// Writes the inputs as a runtime does before a start.
fn prepare(a: &Attempt<'_>) {
    block_on(LocalData.put(&a.paths.input, a.launch.inputs.encode_to_vec())).unwrap();
}

fn wait(c: &LocalConnector, a: &Attempt<'_>, h: &updraft_connector::Handle) -> TaskStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match block_on(c.check(h, a.data)).unwrap() {
            TaskStatus::Running | TaskStatus::Queued => {}
            end => return end,
        }
        assert!(Instant::now() < deadline, "the attempt did not end");
        std::thread::sleep(c.check_interval());
    }
}

#[test]
fn a_process_runs_to_its_outputs_and_a_second_start_finds_it() {
    let pkg = package();
    let task = &pkg.tasks["double"];
    let int = LiteralType {
        r#type: Some(Type::Simple(SimpleType::Integer as i32)),
        ..Default::default()
    };
    let inputs = LiteralMap {
        literals: [(
            "x".to_string(),
            from_json(&serde_json::json!(21), &int).unwrap(),
        )]
        .into(),
    };
    let l = launch("a", "double", inputs);
    let paths = AttemptPaths::under(&dir("run"), &l);
    let a = Attempt {
        launch: &l,
        task,
        paths: &paths,
        data: &LocalData,
        signal: None,
    };
    let c = LocalConnector::new(None, Containers::Process);
    assert!(c.serves(task));
    prepare(&a);
    let h = block_on(c.start(&a)).unwrap();
    // A redelivered start finds the running attempt instead of starting a second process.
    assert_eq!(block_on(c.start(&a)).unwrap(), h);
    match wait(&c, &a, &h) {
        TaskStatus::Succeeded { outputs, cached } => {
            assert!(!cached);
            assert_eq!(
                updraft_engine::literal::to_json(&outputs.literals["y"]),
                serde_json::json!(42)
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(std::path::Path::new(&paths.dir).join("stdout.log").exists());
}

#[test]
fn an_abort_kills_the_process_and_tolerates_a_second_abort() {
    let pkg = package();
    let l = launch("b", "nap", LiteralMap::default());
    let paths = AttemptPaths::under(&dir("abort"), &l);
    let a = Attempt {
        launch: &l,
        task: &pkg.tasks["nap"],
        paths: &paths,
        data: &LocalData,
        signal: None,
    };
    let c = LocalConnector::new(None, Containers::Process);
    prepare(&a);
    let h = block_on(c.start(&a)).unwrap();
    assert_eq!(
        block_on(c.check(&h, &LocalData)).unwrap(),
        TaskStatus::Running
    );
    let started = Instant::now();
    block_on(c.abort(&h)).unwrap();
    block_on(c.abort(&h)).unwrap();
    match block_on(c.check(&h, &LocalData)).unwrap() {
        TaskStatus::Failed { code, .. } => assert_eq!(code, "Aborted"),
        other => panic!("{other:?}"),
    }
    // `sleep 30` did not run out: it was killed.
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn the_registry_refuses_what_no_connector_serves_before_anything_starts() {
    let pkg = package();
    let registry = Registry::new().with(Arc::new(LocalConnector::new(None, Containers::Process)));
    let problems = registry.preflight(pkg.tasks.values());
    assert_eq!(
        problems,
        vec![RegistryError::Unserved {
            task: "remote".into(),
            task_type: "aws-batch".into(),
        }]
    );
    assert_eq!(
        registry.for_task(&pkg.tasks["double"]).map(|c| c.name()),
        Some("local")
    );
    assert!(registry.named("local").is_some() && registry.named("eks").is_none());
}
