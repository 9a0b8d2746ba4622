//! Kubeflow training jobs (`kubeflow.org/v1`): PyTorchJob, TFJob, MPIJob, from the task's `custom`
//! (flyteidl's Distributed*TrainingTask, as proto JSON).

use serde_json::{Map, Value, json};
use updraft_engine::plugins::PluginKind;

use crate::pod::Base;
use crate::{BuildError, CustomObject, task_error};

/// The job for a `pytorch`, `tensorflow` or `mpi` task.
pub(crate) fn job(base: &Base<'_>) -> Result<CustomObject, BuildError> {
    let custom = base.custom();
    let name = &base.task.name;
    let (kind, plural, container, specs_key, roles): (_, _, _, _, &[(&str, &str, u64)]) =
        match base.task.plugin {
            PluginKind::PyTorch => (
                "PyTorchJob",
                "pytorchjobs",
                "pytorch",
                "pytorchReplicaSpecs",
                &[
                    ("masterReplicas", "Master", 1),
                    ("workerReplicas", "Worker", 0),
                ],
            ),
            PluginKind::TensorFlow => (
                "TFJob",
                "tfjobs",
                "tensorflow",
                "tfReplicaSpecs",
                &[
                    ("chiefReplicas", "Chief", 0),
                    ("workerReplicas", "Worker", 0),
                    ("psReplicas", "PS", 0),
                    ("evaluatorReplicas", "Evaluator", 0),
                ],
            ),
            _ => (
                "MPIJob",
                "mpijobs",
                "mpi",
                "mpiReplicaSpecs",
                &[
                    ("launcherReplicas", "Launcher", 1),
                    ("workerReplicas", "Worker", 0),
                ],
            ),
        };
    let elastic = custom.get("elasticConfig").filter(|e| e.is_object());
    let mut specs = Map::new();
    for &(field, role, default_replicas) in roles {
        // Elastic PyTorch runs workers only, under the elastic policy.
        if elastic.is_some() && role == "Master" {
            continue;
        }
        let r = &custom[field];
        // Newer flytekit nests the settings in `common`; its fields win.
        let get = |k: &str| {
            r.get("common")
                .and_then(|c| c.get(k))
                .filter(|v| !is_empty(v))
                .or_else(|| r.get(k).filter(|v| !is_empty(v)))
        };
        let replicas = get("replicas")
            .and_then(Value::as_f64)
            .map_or(default_replicas, |n| n.max(0.0) as u64);
        if replicas == 0 {
            continue;
        }
        let mut spec = base.spec.clone();
        let c = &mut spec.containers[base.primary];
        c.name = container.into();
        if let Some(img) = get("image").and_then(Value::as_str) {
            c.image = Some(img.into());
        }
        if let Some(res) = get("resources") {
            let parsed = crate::pod::resources(Some(&resources_json(res)));
            if parsed.is_some() {
                c.resources = parsed;
            }
        }
        // MPI workers run the image's entrypoint; the launcher runs the task's command (mpirun …).
        if role == "Worker" && base.task.plugin == PluginKind::Mpi {
            c.command = None;
            c.args = None;
        }
        let restart = match get("restartPolicy").and_then(Value::as_str) {
            Some("RESTART_POLICY_ON_FAILURE") => "OnFailure",
            Some("RESTART_POLICY_ALWAYS") => "Always",
            _ => "Never",
        };
        spec.restart_policy = None;
        specs.insert(
            role.into(),
            json!({
                "replicas": replicas,
                "restartPolicy": restart,
                "template": {
                    "metadata": template_meta(base),
                    "spec": serde_json::to_value(&spec).unwrap_or(Value::Null),
                },
            }),
        );
    }
    if specs.is_empty() {
        return Err(task_error(
            name,
            "custom",
            format!("the {kind} has no replicas"),
        ));
    }
    let mut spec = Map::new();
    spec.insert(specs_key.into(), Value::Object(specs));
    spec.insert("runPolicy".into(), run_policy(&custom["runPolicy"]));
    if let Some(e) = elastic {
        let int = |k: &str| e.get(k).and_then(Value::as_f64).map(|n| n as i64);
        let mut p = Map::new();
        if let Some(b) = e.get("rdzvBackend").and_then(Value::as_str) {
            p.insert("rdzvBackend".into(), b.into());
        }
        for (from, to) in [
            ("minReplicas", "minReplicas"),
            ("maxReplicas", "maxReplicas"),
            ("nprocPerNode", "nProcPerNode"),
            ("maxRestarts", "maxRestarts"),
        ] {
            if let Some(n) = int(from) {
                p.insert(to.into(), n.into());
            }
        }
        spec.insert("elasticPolicy".into(), Value::Object(p));
    }
    if base.task.plugin == PluginKind::Mpi {
        let slots = custom["slots"].as_f64().map_or(1, |n| n.max(1.0) as u64);
        spec.insert("slotsPerWorker".into(), slots.into());
    }
    Ok(CustomObject {
        group: "kubeflow.org".into(),
        version: "v1".into(),
        kind: kind.into(),
        plural: plural.into(),
        metadata: base.meta.clone(),
        spec: Value::Object(spec),
    })
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Kubeflow's run policy from flyteidl's.
fn run_policy(r: &Value) -> Value {
    let clean = match r["cleanPodPolicy"].as_str() {
        Some("CLEANPOD_POLICY_RUNNING") => "Running",
        Some("CLEANPOD_POLICY_ALL") => "All",
        _ => "None",
    };
    let mut p = Map::new();
    p.insert("cleanPodPolicy".into(), clean.into());
    for k in [
        "ttlSecondsAfterFinished",
        "activeDeadlineSeconds",
        "backoffLimit",
    ] {
        if let Some(n) = r[k].as_f64().filter(|n| *n > 0.0) {
            p.insert(k.into(), (n as i64).into());
        }
    }
    Value::Object(p)
}

/// flyteidl `Resources` from its proto JSON (`{"requests": [{"name": "CPU", "value": "1"}]}`).
fn resources_json(v: &Value) -> updraft_proto::core::Resources {
    use updraft_proto::core::resources::{ResourceEntry, ResourceName};
    let entries = |k: &str| {
        v[k].as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let name = ResourceName::from_str_name(e["name"].as_str()?)?;
                Some(ResourceEntry {
                    name: name as i32,
                    value: e["value"].as_str().unwrap_or("").to_string(),
                })
            })
            .collect()
    };
    updraft_proto::core::Resources {
        requests: entries("requests"),
        limits: entries("limits"),
    }
}

/// Labels and annotations of the replicas' pods (the job's own).
fn template_meta(base: &Base<'_>) -> Value {
    let mut m = Map::new();
    if let Some(l) = &base.meta.labels {
        m.insert("labels".into(), json!(l));
    }
    if let Some(a) = &base.meta.annotations {
        m.insert("annotations".into(), json!(a));
    }
    Value::Object(m)
}
