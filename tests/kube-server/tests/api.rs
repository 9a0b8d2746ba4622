//! The test server behaves as the Kubernetes API documents: status codes, Status bodies, resourceVersion
//! conflicts, label selectors, the status subresource, and status that advances as a cluster's would.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use updraft_test_kube::Server;

fn server(tag: &str) -> Server {
    let work = std::env::temp_dir().join(format!("updraft-kube-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    Server::start(0, work).unwrap()
}

/// One HTTP/1.1 request: (status code, body as JSON or as a string).
fn call(s: &Server, method: &str, path: &str, body: Option<&Value>, ctype: &str) -> (u16, Value) {
    let addr = s.url.trim_start_matches("http://");
    let mut tcp = TcpStream::connect(addr).unwrap();
    let text = body.map(Value::to_string).unwrap_or_default();
    write!(
        tcp,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )
    .unwrap();
    let mut resp = String::new();
    tcp.read_to_string(&mut resp).unwrap();
    let code: u16 = resp[9..12].parse().unwrap();
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let v = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()));
    (code, v)
}

fn get(s: &Server, path: &str) -> (u16, Value) {
    call(s, "GET", path, None, "application/json")
}

fn post(s: &Server, path: &str, body: &Value) -> (u16, Value) {
    call(s, "POST", path, Some(body), "application/json")
}

fn pod(name: &str, labels: Value, command: &[&str], image: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "main", "image": image, "command": command,
            "env": [{"name": "GREETING", "value": "hi"}]}]},
    })
}

fn wait_for(s: &Server, path: &str, what: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let (code, v) = get(s, path);
        if code == 200 && what(&v) {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{path} never got there: {v}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

const PODS: &str = "/api/v1/namespaces/ns/pods";

#[test]
fn create_get_conflicts_and_delete() {
    let s = server("crud");
    let p = pod("a", json!({"app": "x"}), &["sleep", "30"], "busybox");
    let (code, created) = post(&s, PODS, &p);
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["metadata"]["namespace"], "ns");
    assert!(created["metadata"]["uid"].is_string());
    let (code, v) = post(&s, PODS, &p);
    assert_eq!(code, 409);
    assert_eq!(v["kind"], "Status");
    assert_eq!(v["reason"], "AlreadyExists");
    assert_eq!(v["message"], "pods \"a\" already exists");
    let (code, v) = get(&s, &format!("{PODS}/nope"));
    assert_eq!((code, v["reason"].as_str()), (404, Some("NotFound")));
    // A stale resourceVersion is a conflict; the current one is accepted (once the kubelet, which
    // bumps it too, has the pod running).
    wait_for(&s, &format!("{PODS}/a"), |v| {
        v["status"]["phase"] == "Running"
    });
    let mut stale = created.clone();
    stale["metadata"]["labels"]["app"] = json!("y");
    let (_, current) = get(&s, &format!("{PODS}/a"));
    let (code, v) = call(
        &s,
        "PUT",
        &format!("{PODS}/a"),
        Some(&json!({"metadata": {"name": "a", "resourceVersion": "0"}, "spec": created["spec"]})),
        "application/json",
    );
    assert_eq!((code, v["reason"].as_str()), (409, Some("Conflict")));
    stale["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
    let (code, v) = call(
        &s,
        "PUT",
        &format!("{PODS}/a"),
        Some(&stale),
        "application/json",
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["metadata"]["labels"]["app"], "y");
    assert_ne!(
        v["metadata"]["resourceVersion"],
        current["metadata"]["resourceVersion"]
    );
    // Invalid names and labels, and a namespace that differs from the path's.
    let (code, v) = post(&s, PODS, &pod("Bad_Name", json!({}), &["true"], "x"));
    assert_eq!((code, v["reason"].as_str()), (422, Some("Invalid")));
    let (code, _) = post(&s, PODS, &pod("b", json!({"k": "not ok!"}), &["true"], "x"));
    assert_eq!(code, 422);
    let mut other = pod("c", json!({}), &["true"], "x");
    other["metadata"]["namespace"] = json!("elsewhere");
    assert_eq!(post(&s, PODS, &other).0, 400);
    let (code, v) = call(&s, "DELETE", &format!("{PODS}/a"), None, "application/json");
    assert_eq!((code, v["metadata"]["name"].as_str()), (200, Some("a")));
    assert_eq!(
        call(&s, "DELETE", &format!("{PODS}/a"), None, "application/json").0,
        404
    );
    assert_eq!(get(&s, "/apis/nope.io/v1/namespaces/ns/things").0, 404);
}

#[test]
fn label_selectors_and_status_subresource() {
    let s = server("sel");
    for (n, team, tier) in [("p1", "ml", "a"), ("p2", "ml", "b"), ("p3", "data", "a")] {
        let (code, _) = post(
            &s,
            PODS,
            &pod(
                n,
                json!({"team": team, "tier": tier}),
                &["sleep", "30"],
                "x",
            ),
        );
        assert_eq!(code, 201);
    }
    let names = |sel: &str| -> Vec<String> {
        let (code, v) = get(&s, &format!("{PODS}?labelSelector={sel}"));
        assert_eq!(code, 200, "{v}");
        assert_eq!(v["kind"], "PodList");
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("team%3Dml"), ["p1", "p2"]);
    assert_eq!(names("team%3Dml%2Ctier%21%3Db"), ["p1"]);
    assert_eq!(names("tier+in+%28b%2Cc%29"), ["p2"]);
    assert_eq!(names("team"), ["p1", "p2", "p3"]);
    assert_eq!(names("%21team").len(), 0);
    // Status changes only through the subresource; a merge patch changes labels.
    let (code, v) = call(
        &s,
        "PATCH",
        &format!("{PODS}/p1"),
        Some(&json!({"metadata": {"labels": {"tier": "z"}}, "status": {"phase": "Bogus"}})),
        "application/merge-patch+json",
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["metadata"]["labels"]["tier"], "z");
    assert_ne!(v["status"]["phase"], "Bogus");
    let (code, v) = call(
        &s,
        "PATCH",
        &format!("{PODS}/p1/status"),
        Some(&json!({"status": {"message": "set"}})),
        "application/merge-patch+json",
    );
    assert_eq!((code, v["status"]["message"].as_str()), (200, Some("set")));
    assert_eq!(
        call(
            &s,
            "PATCH",
            &format!("{PODS}/p1"),
            Some(&json!({})),
            "application/json-patch+json"
        )
        .0,
        415
    );
}

#[test]
fn the_kubelet_runs_containers_and_reports_their_ends() {
    let s = server("kubelet");
    post(
        &s,
        PODS,
        &pod(
            "ok",
            json!({}),
            &["sh", "-c", "echo $GREETING from the pod"],
            "x",
        ),
    );
    post(
        &s,
        PODS,
        &pod("bad", json!({}), &["sh", "-c", "exit 3"], "x"),
    );
    post(&s, PODS, &pod("oom", json!({}), &["true"], "x:oom"));
    post(
        &s,
        PODS,
        &pod("pull", json!({}), &["true"], "registry/missing:1"),
    );
    post(&s, PODS, &pod("long", json!({}), &["sleep", "60"], "x"));
    post(
        &s,
        PODS,
        &pod(
            "talks",
            json!({}),
            &["sh", "-c", "echo started; sleep 60"],
            "x",
        ),
    );
    let done = |p: &Value| matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
    let ok = wait_for(&s, &format!("{PODS}/ok"), done);
    assert_eq!(ok["status"]["phase"], "Succeeded");
    let (code, log) = get(&s, &format!("{PODS}/ok/log"));
    assert_eq!((code, log.as_str()), (200, Some("hi from the pod\n")));
    let (code, log) = get(&s, &format!("{PODS}/ok/log?limitBytes=2"));
    assert_eq!((code, log.as_str()), (200, Some("hi")));
    // A running container's log is readable as it prints.
    let started = Instant::now();
    loop {
        let (code, log) = get(&s, &format!("{PODS}/talks/log"));
        if (code, log.as_str()) == (200, Some("started\n")) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{code} {log}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let bad = wait_for(&s, &format!("{PODS}/bad"), done);
    assert_eq!(bad["status"]["phase"], "Failed");
    assert_eq!(
        bad["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        3
    );
    let oom = wait_for(&s, &format!("{PODS}/oom"), done);
    assert_eq!(
        oom["status"]["containerStatuses"][0]["state"]["terminated"]["reason"],
        "OOMKilled"
    );
    wait_for(&s, &format!("{PODS}/pull"), |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ImagePullBackOff"
    });
    wait_for(&s, &format!("{PODS}/long"), |p| {
        p["status"]["phase"] == "Running"
    });
    // Deleting a running pod stops its process.
    assert_eq!(
        call(
            &s,
            "DELETE",
            &format!("{PODS}/long"),
            None,
            "application/json"
        )
        .0,
        200
    );
}

#[test]
fn operators_turn_jobs_into_pods_and_follow_them() {
    let s = server("ops");
    let replica = |n: u64, cmd: &[&str]| {
        json!({
        "replicas": n, "restartPolicy": "Never",
        "template": {"spec": {"containers": [{"name": "pytorch", "image": "x", "command": cmd}]}}})
    };
    let job = json!({
        "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
        "metadata": {"name": "train"},
        "spec": {"pytorchReplicaSpecs": {
            "Master": replica(1, &["sh", "-c", "echo rank $RANK of $WORLD_SIZE"]),
            "Worker": replica(2, &["sh", "-c", "echo worker $RANK"])}},
    });
    let path = "/apis/kubeflow.org/v1/namespaces/ns/pytorchjobs";
    assert_eq!(post(&s, path, &job).0, 201);
    let v = wait_for(&s, &format!("{path}/train"), |j| {
        j["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Succeeded"))
    });
    assert_eq!(v["status"]["conditions"][0]["type"], "Created");
    let (_, log) = get(&s, &format!("{PODS}/train-master-0/log"));
    assert_eq!(log.as_str(), Some("rank 0 of 3\n"));
    let (_, pods) = get(
        &s,
        &format!("{PODS}?labelSelector=training.kubeflow.org%2Fjob-name%3Dtrain"),
    );
    assert_eq!(pods["items"].as_array().unwrap().len(), 3);
    // Deleting the job deletes its pods.
    call(
        &s,
        "DELETE",
        &format!("{path}/train"),
        None,
        "application/json",
    );
    let (_, pods) = get(
        &s,
        &format!("{PODS}?labelSelector=training.kubeflow.org%2Fjob-name%3Dtrain"),
    );
    assert_eq!(pods["items"].as_array().unwrap().len(), 0);

    // Elastic: workers only, each with torchrun's rendezvous settings and no master's; the job
    // succeeds when every worker has, and fails when one fails.
    let elastic = |name: &str, cmd: &[&str]| {
        json!({
            "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
            "metadata": {"name": name},
            "spec": {
                "elasticPolicy": {"rdzvBackend": "c10d", "minReplicas": 2, "maxReplicas": 4, "maxRestarts": 3, "nProcPerNode": 2},
                "pytorchReplicaSpecs": {"Worker": replica(2, cmd)}},
        })
    };
    let show = "echo $PET_RDZV_ENDPOINT $PET_RDZV_BACKEND $PET_NNODES $PET_MAX_RESTARTS $PET_NPROC_PER_NODE master=${MASTER_ADDR:-none}";
    assert_eq!(post(&s, path, &elastic("grow", &["sh", "-c", show])).0, 201);
    let v = wait_for(&s, &format!("{path}/grow"), |j| {
        j["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| matches!(c["type"].as_str(), Some("Succeeded" | "Failed")))
        })
    });
    assert_eq!(
        v["status"]["conditions"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()["type"],
        "Succeeded"
    );
    for i in 0..2 {
        let (_, log) = get(&s, &format!("{PODS}/grow-worker-{i}/log"));
        assert_eq!(
            log.as_str(),
            Some("grow-worker-0:23456 c10d 2:4 3 2 master=none\n")
        );
    }
    assert_eq!(get(&s, &format!("{PODS}/grow-master-0")).0, 404);
    assert_eq!(
        post(&s, path, &elastic("fall", &["sh", "-c", "exit 3"])).0,
        201
    );
    let v = wait_for(&s, &format!("{path}/fall"), |j| {
        j["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| matches!(c["type"].as_str(), Some("Succeeded" | "Failed")))
        })
    });
    let last = v["status"]["conditions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["type"], "Failed");
    assert!(
        last["message"].as_str().unwrap().contains("code 3"),
        "{last}"
    );

    let app = json!({
        "apiVersion": "sparkoperator.k8s.io/v1beta2", "kind": "SparkApplication",
        "metadata": {"name": "pi"},
        "spec": {"type": "Python", "image": "x", "mainApplicationFile": "local:///app.py",
                 "arguments": ["sh", "-c", "exit 1"], "driver": {"cores": 1}, "executor": {"instances": 1}},
    });
    let path = "/apis/sparkoperator.k8s.io/v1beta2/namespaces/ns/sparkapplications";
    assert_eq!(post(&s, path, &app).0, 201);
    let v = wait_for(&s, &format!("{path}/pi"), |a| {
        matches!(
            a["status"]["applicationState"]["state"].as_str(),
            Some("COMPLETED" | "FAILED")
        )
    });
    assert_eq!(v["status"]["applicationState"]["state"], "FAILED");
    assert!(
        v["status"]["applicationState"]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("code 1")
    );
}
