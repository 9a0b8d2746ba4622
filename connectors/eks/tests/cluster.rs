//! The kube-rs client against the Kubernetes API test server: idempotent starts, status through real
//! container ends (exit codes, OOMKilled, image pulls), deletes that take every object along.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use updraft_connector_eks::status::Observed;
use updraft_connector_eks::{AttemptPaths, Cluster, EksConfig, Object, build, plan_launch};
use updraft_engine::exec::ErrorKind;
use updraft_engine::{CompiledPackage, compile, yaml};
use updraft_proto::core::LiteralMap;
use updraft_test_kube::Server;

const TASKS: &str = r#"
version: 1
image: busybox:1
tasks:
  ok: {type: container, command: [sh, -c, 'echo fine'], outputs: {}}
  exits: {type: container, command: [sh, -c, 'exit 4'], outputs: {}}
  hungry: {type: container, image: "busybox:oom", command: [sh, -c, 'true'], outputs: {}}
  unpullable: {type: container, image: "registry.example/missing:1", command: [sh, -c, 'true'], outputs: {}}
  train:
    type: pytorch
    module: m
    function: f
    pytorch: {workers: {replicas: 2}}
workflows:
  wf:
    nodes:
      - {id: a, task: ok}
"#;

fn setup(tag: &str) -> (Server, Cluster, tokio::runtime::Runtime, CompiledPackage) {
    let work = std::env::temp_dir().join(format!("updraft-eks-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    // Raw containers' data goes through the copilot, which the node finds on its PATH.
    let mut path = vec![updraft_test_kube::programs_dir("updraft-copilot")];
    path.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    let path = std::env::join_paths(path).unwrap();
    let node = updraft_test_kube::Node {
        env: vec![("PATH".into(), path.to_string_lossy().into_owned())],
        mounts: Vec::new(),
    };
    let server = Server::start_node(0, work.join("kubelet"), node).unwrap();
    let kubeconfig = work.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cluster = rt
        .block_on(Cluster::from_kubeconfig(Some(&kubeconfig)))
        .unwrap();
    let pkg = compile(&yaml::load("t.yaml", TASKS).unwrap()).unwrap();
    (server, cluster, rt, pkg)
}

fn objects(pkg: &CompiledPackage, task: &str) -> Vec<Object> {
    let t = &pkg.tasks[task];
    let launch = plan_launch(t, LiteralMap::default(), None);
    let dir = std::env::temp_dir().join(format!("updraft-eks-data-{}", std::process::id()));
    let paths = AttemptPaths::under(dir.to_str().unwrap(), &launch);
    std::fs::create_dir_all(std::path::Path::new(&paths.input).parent().unwrap()).unwrap();
    std::fs::write(&paths.input, b"").unwrap();
    build(t, &launch, &paths, &EksConfig::default()).unwrap()
}

/// An object's namespace and name.
fn place(o: &Object) -> (String, String) {
    let m = o.metadata();
    (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}

fn until_done(
    rt: &tokio::runtime::Runtime,
    c: &Cluster,
    o: &[Object],
    pending_for: Duration,
) -> Observed {
    let start = Instant::now();
    loop {
        let s = rt.block_on(c.check(o, pending_for)).unwrap();
        if !matches!(s, Observed::Pending { .. } | Observed::Running) {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never ended: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn starts_are_idempotent_and_ends_are_mapped() {
    let (server, cluster, rt, pkg) = setup("ends");
    let ok = objects(&pkg, "ok");
    rt.block_on(cluster.start(&ok)).unwrap();
    // A start delivered again finds the pod it made: still one pod, not replaced.
    let uid = |s: &Server| {
        let st = s.store.lock().unwrap();
        let pods: Vec<_> = st
            .objects
            .values()
            .map(|v| v["metadata"]["uid"].clone())
            .collect();
        pods
    };
    let before = uid(&server);
    rt.block_on(cluster.start(&ok)).unwrap();
    assert_eq!(uid(&server), before);
    assert_eq!(
        until_done(&rt, &cluster, &ok, Duration::ZERO),
        Observed::Succeeded
    );
    // What its primary container printed, whole or its first bytes.
    let (ns, name) = place(&ok[0]);
    let log = |limit| rt.block_on(cluster.pod_log(&ns, &name, limit)).unwrap();
    assert_eq!(log(1 << 20).trim_end(), "fine");
    assert_eq!(log(2), "fi");
    rt.block_on(cluster.delete(&ok)).unwrap();
    // A pod that is gone has no log to read.
    assert!(rt.block_on(cluster.pod_log(&ns, &name, 10)).is_err());

    let mut ends = Vec::new();
    for task in ["exits", "hungry"] {
        let o = objects(&pkg, task);
        rt.block_on(cluster.start(&o)).unwrap();
        ends.push(until_done(&rt, &cluster, &o, Duration::ZERO));
        rt.block_on(cluster.delete(&o)).unwrap();
    }
    let codes: Vec<(String, ErrorKind, bool)> = ends
        .into_iter()
        .map(|e| match e {
            Observed::Failed {
                code,
                kind,
                recoverable,
                ..
            } => (code, kind, recoverable),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        codes,
        [
            ("ContainerFailed".to_string(), ErrorKind::System, true),
            ("OOMKilled".to_string(), ErrorKind::User, true)
        ]
    );
    // An image that never pulls: pending within the grace period, a failure after it.
    let o = objects(&pkg, "unpullable");
    rt.block_on(cluster.start(&o)).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    // A pod whose container has not started has printed nothing yet.
    let (ns, name) = place(&o[0]);
    assert_eq!(rt.block_on(cluster.pod_log(&ns, &name, 10)).unwrap(), "");
    assert!(matches!(
        rt.block_on(cluster.check(&o, Duration::from_secs(5)))
            .unwrap(),
        Observed::Pending { .. }
    ));
    match rt
        .block_on(cluster.check(&o, updraft_connector_eks::status::IMAGE_PULL_GRACE))
        .unwrap()
    {
        Observed::Failed { code, .. } => assert_eq!(code, "ImagePullBackOff"),
        other => panic!("{other:?}"),
    }
    rt.block_on(cluster.delete(&o)).unwrap();
    // Deleting what is already gone is fine.
    rt.block_on(cluster.delete(&o)).unwrap();
    assert!(server.store.lock().unwrap().objects.is_empty());
}

#[test]
fn deleting_a_training_job_takes_its_pods() {
    let (server, cluster, rt, pkg) = setup("train");
    let o = objects(&pkg, "train");
    rt.block_on(cluster.start(&o)).unwrap();
    // The operator stand-in makes the master and two workers.
    let start = Instant::now();
    while server.store.lock().unwrap().objects.len() < 4 {
        assert!(start.elapsed() < Duration::from_secs(10), "no pods");
        std::thread::sleep(Duration::from_millis(20));
    }
    rt.block_on(cluster.delete(&o)).unwrap();
    assert!(server.store.lock().unwrap().objects.is_empty());
}
