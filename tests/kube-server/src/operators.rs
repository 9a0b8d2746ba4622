//! The training operator (PyTorchJob, TFJob, MPIJob) and the Spark operator (SparkApplication): each
//! custom resource becomes its pods, and its status follows theirs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::store::{Key, Resource, Store};

/// Reconciles every custom resource, over and over.
pub fn run(store: &Arc<Mutex<Store>>, stop: &Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        if let Ok(mut s) = store.lock() {
            reconcile(&mut s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn reconcile(s: &mut Store) {
    let custom: Vec<(Key, Value)> = s
        .objects
        .iter()
        .filter(|(k, _)| !k.resource.group.is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (key, obj) in custom {
        match key.resource.kind.as_str() {
            "SparkApplication" => spark(s, &key, &obj),
            _ => training(s, &key, &obj),
        }
    }
}

fn pods() -> Resource {
    Resource::named("", "v1", "pods").unwrap_or_else(|| unreachable!("pods are served"))
}

fn owner(obj: &Value) -> Value {
    json!([{
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": true,
    }])
}

fn pod_phase(s: &Store, ns: &str, name: &str) -> Option<(String, String)> {
    let pod = s.objects.get(&Key::new(&pods(), ns, name))?;
    let phase = pod["status"]["phase"]
        .as_str()
        .unwrap_or("Pending")
        .to_string();
    let why = pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|c| {
            let t = &c["state"]["terminated"];
            (t["exitCode"].as_i64().unwrap_or(0) != 0)
                .then(|| format!("container {} exited with code {}", c["name"], t["exitCode"]))
        })
        .unwrap_or_default();
    Some((phase, why))
}

/// The training operator's torchrun settings for an elastic PyTorchJob (`spec.elasticPolicy`): the
/// rendezvous at the first worker (on the `pytorch` container's `pytorchjob-port`, else 23456), its
/// backend (default c10d), the node range `min:max` (else the worker count), restarts and processes
/// per node — each as the `PET_*` variable torchrun reads.
fn elastic_env(
    job: &str,
    spec: &Value,
    specs: &serde_json::Map<String, Value>,
) -> Vec<(String, String)> {
    let p = &spec["elasticPolicy"];
    if !p.is_object() {
        return Vec::new();
    }
    let worker = specs.get("Worker").unwrap_or(&Value::Null);
    let port = worker["template"]["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["name"] == "pytorch")
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .find(|port| port["name"] == "pytorchjob-port")
        .and_then(|port| port["containerPort"].as_u64())
        .unwrap_or(23456);
    let host = p["rdzvHost"]
        .as_str()
        .map_or_else(|| format!("{job}-worker-0"), str::to_string);
    let port = p["rdzvPort"].as_u64().unwrap_or(port);
    let nnodes = match (p["minReplicas"].as_u64(), p["maxReplicas"].as_u64()) {
        (Some(min), Some(max)) => format!("{min}:{max}"),
        _ => worker["replicas"].as_u64().unwrap_or(1).to_string(),
    };
    let mut vars = vec![
        ("PET_RDZV_ENDPOINT".to_string(), format!("{host}:{port}")),
        (
            "PET_RDZV_BACKEND".to_string(),
            p["rdzvBackend"].as_str().unwrap_or("c10d").to_string(),
        ),
        ("PET_NNODES".to_string(), nnodes),
    ];
    for (field, var) in [
        ("maxRestarts", "PET_MAX_RESTARTS"),
        ("nProcPerNode", "PET_NPROC_PER_NODE"),
    ] {
        if let Some(n) = p[field].as_u64() {
            vars.push((var.to_string(), n.to_string()));
        }
    }
    vars
}

fn add_env(spec: &mut Value, vars: &[(String, String)]) {
    for c in spec["containers"].as_array_mut().into_iter().flatten() {
        if !c["env"].is_array() {
            c["env"] = json!([]);
        }
        if let Some(env) = c["env"].as_array_mut() {
            for (k, v) in vars {
                env.push(json!({"name": k, "value": v}));
            }
        }
    }
}

/// A training job: its replica pods, then conditions that follow the decisive pod.
fn training(s: &mut Store, key: &Key, job: &Value) {
    let name = &key.name;
    let (specs_key, decisive): (&str, &[&str]) = match key.resource.kind.as_str() {
        "PyTorchJob" => ("pytorchReplicaSpecs", &["Master", "Worker"]),
        "TFJob" => ("tfReplicaSpecs", &["Chief", "Worker"]),
        _ => ("mpiReplicaSpecs", &["Launcher"]),
    };
    let specs = job["spec"][specs_key]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let pod_name = |role: &str, i: u64| format!("{name}-{}-{i}", role.to_ascii_lowercase());
    let conditions = job["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if conditions.is_empty() {
        let total: u64 = specs
            .values()
            .map(|r| r["replicas"].as_u64().unwrap_or(1))
            .sum();
        let mut cluster = serde_json::Map::new();
        for (role, r) in &specs {
            let n = r["replicas"].as_u64().unwrap_or(1);
            cluster.insert(
                role.to_ascii_lowercase(),
                json!(
                    (0..n)
                        .map(|i| format!("{}:2222", pod_name(role, i)))
                        .collect::<Vec<_>>()
                ),
            );
        }
        let mut rank = 0u64;
        let mut roles: Vec<&String> = specs.keys().collect();
        // The master (or chief, or launcher) first: it has rank 0.
        roles.sort_by_key(|r| decisive.first().is_none_or(|d| d != r));
        for role in roles {
            let r = &specs[role];
            for i in 0..r["replicas"].as_u64().unwrap_or(1) {
                let mut spec = r["template"]["spec"].clone();
                let mut vars = vec![("PYTHONUNBUFFERED".to_string(), "1".to_string())];
                match key.resource.kind.as_str() {
                    "PyTorchJob" => {
                        // With a master: its address, the world size and this replica's rank.
                        if specs.contains_key("Master") {
                            vars.push(("MASTER_ADDR".into(), pod_name("Master", 0)));
                            vars.push(("MASTER_PORT".into(), "23456".into()));
                            vars.push(("WORLD_SIZE".into(), total.to_string()));
                            vars.push(("RANK".into(), rank.to_string()));
                        }
                        vars.extend(elastic_env(name, &job["spec"], &specs));
                    }
                    "TFJob" => {
                        let tf = json!({"cluster": cluster, "task": {"type": role.to_ascii_lowercase(), "index": i}});
                        vars.push(("TF_CONFIG".into(), tf.to_string()));
                    }
                    _ => {}
                }
                rank += 1;
                add_env(&mut spec, &vars);
                if spec["restartPolicy"].is_null() {
                    spec["restartPolicy"] = r["restartPolicy"].clone();
                }
                let mut labels = r["template"]["metadata"]["labels"].clone();
                if !labels.is_object() {
                    labels = json!({});
                }
                labels["training.kubeflow.org/job-name"] = json!(name);
                labels["training.kubeflow.org/replica-type"] = json!(role.to_ascii_lowercase());
                labels["training.kubeflow.org/replica-index"] = json!(i.to_string());
                let pod = json!({
                    "metadata": {
                        "name": pod_name(role, i),
                        "labels": labels,
                        "annotations": r["template"]["metadata"]["annotations"],
                        "ownerReferences": owner(job),
                    },
                    "spec": spec,
                });
                s.create_owned(&pods(), &key.namespace, pod);
            }
        }
        s.set_status(
            key,
            json!({"conditions": [{"type": "Created", "status": "True", "reason": format!("{}Created", key.resource.kind)}]}),
        );
        return;
    }
    let done = conditions.iter().any(|c| {
        matches!(c["type"].as_str(), Some("Succeeded" | "Failed")) && c["status"] == "True"
    });
    if done {
        return;
    }
    // A PyTorchJob without a master (elastic, or workers only) ends when every worker has: it succeeds
    // when all have succeeded and fails when one fails.
    let workers_only = key.resource.kind == "PyTorchJob" && !specs.contains_key("Master");
    // The decisive pod: the first role present (master, chief or launcher; else the first worker).
    let role = decisive
        .iter()
        .find(|r| specs.contains_key(**r))
        .copied()
        .unwrap_or("Worker");
    let all: Vec<(String, String)> = specs
        .iter()
        .flat_map(|(role, r)| {
            (0..r["replicas"].as_u64().unwrap_or(1)).map(move |i| (role.clone(), i))
        })
        .filter_map(|(role, i)| pod_phase(s, &key.namespace, &pod_name(&role, i)))
        .collect();
    let lead = pod_phase(s, &key.namespace, &pod_name(role, 0));
    let kind = &key.resource.kind;
    let every_worker_done = all.len() as u64
        == specs
            .get("Worker")
            .map_or(0, |r| r["replicas"].as_u64().unwrap_or(1))
        && all.iter().all(|(p, _)| p == "Succeeded");
    let lead = if workers_only {
        match all.iter().find(|(p, _)| p == "Failed") {
            Some(failed) => Some(failed.clone()),
            None if every_worker_done => Some(("Succeeded".to_string(), String::new())),
            None => None,
        }
    } else {
        lead
    };
    let next = match lead {
        Some((p, _)) if p == "Succeeded" => {
            Some(("Succeeded", format!("{kind}Succeeded"), String::new()))
        }
        Some((p, why)) if p == "Failed" => Some(("Failed", format!("{kind}Failed"), why)),
        _ => match all.iter().find(|(p, _)| p == "Failed") {
            Some((_, why)) => Some(("Failed", format!("{kind}Failed"), why.clone())),
            None if !all.is_empty() && all.iter().all(|(p, _)| p != "Pending") => {
                Some(("Running", format!("{kind}Running"), String::new()))
            }
            None => None,
        },
    };
    if let Some((ty, reason, message)) = next {
        let already = conditions.last().is_some_and(|c| c["type"] == ty);
        if !already {
            let mut conds: Vec<Value> = conditions
                .into_iter()
                .map(|mut c| {
                    if c["type"] == "Running" {
                        c["status"] = json!("False");
                    }
                    c
                })
                .collect();
            conds.push(json!({"type": ty, "status": "True", "reason": reason, "message": message}));
            s.set_status(key, json!({"conditions": conds}));
        }
    }
}

/// A Spark application: its driver pod, then the application state that follows it.
fn spark(s: &mut Store, key: &Key, app: &Value) {
    let driver = format!("{}-driver", key.name);
    let state = app["status"]["applicationState"]["state"]
        .as_str()
        .unwrap_or("");
    match state {
        "" => {
            let spec = &app["spec"];
            let mut env = spec["driver"]["env"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            env.push(json!({"name": "SPARK_APPLICATION_ID", "value": key.name}));
            let mut labels = spec["driver"]["labels"].clone();
            if !labels.is_object() {
                labels = json!({});
            }
            labels["spark-role"] = json!("driver");
            labels["sparkoperator.k8s.io/app-name"] = json!(key.name);
            let pod = json!({
                "metadata": {"name": driver, "labels": labels, "ownerReferences": owner(app)},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": spec["driver"]["serviceAccount"],
                    "containers": [{
                        "name": "spark-kubernetes-driver",
                        "image": spec["image"],
                        "args": spec["arguments"],
                        "env": env,
                    }],
                },
            });
            s.create_owned(&pods(), &key.namespace, pod);
            s.set_status(
                key,
                json!({"applicationState": {"state": "SUBMITTED"}, "driverInfo": {"podName": driver}}),
            );
        }
        "COMPLETED" | "FAILED" => {}
        _ => {
            let next = match pod_phase(s, &key.namespace, &driver) {
                Some((p, _)) if p == "Succeeded" => Some(("COMPLETED", String::new())),
                Some((p, why)) if p == "Failed" => {
                    Some(("FAILED", format!("driver pod failed: {why}")))
                }
                Some((p, _)) if p == "Running" => Some(("RUNNING", String::new())),
                None => Some(("FAILED", "driver pod not found".to_string())),
                _ => None,
            };
            if let Some((next, msg)) = next.filter(|(n, _)| *n != state) {
                s.set_status(
                    key,
                    json!({"applicationState": {"state": next, "errorMessage": msg}, "driverInfo": {"podName": driver}}),
                );
            }
        }
    }
}
