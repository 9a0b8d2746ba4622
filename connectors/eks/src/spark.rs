//! Spark applications (`sparkoperator.k8s.io/v1beta2`) from the task's `custom` (flyteidl's SparkJob).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::pod::Base;
use crate::{BuildError, CustomObject, task_error};

/// The SparkApplication for a `spark` task: driver and executors sized from `sparkConf`, the container's
/// rendered arguments as the application's arguments.
pub(crate) fn application(base: &Base<'_>) -> Result<CustomObject, BuildError> {
    let custom = base.custom();
    let name = &base.task.name;
    let main = custom["mainApplicationFile"].as_str().unwrap_or("");
    if main.is_empty() {
        return Err(task_error(
            name,
            "custom.mainApplicationFile",
            "a Spark task needs its main application file",
        ));
    }
    let strings = |k: &str| -> BTreeMap<String, String> {
        custom[k]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect()
    };
    let mut spark_conf = strings("sparkConf");
    let hadoop_conf = strings("hadoopConf");
    let c = base.primary();
    let mut env: Vec<Value> = c
        .env
        .iter()
        .flatten()
        .map(|e| json!({"name": e.name, "value": e.value}))
        .collect();
    if let Some(py) = custom["executorPath"].as_str().filter(|p| !p.is_empty()) {
        spark_conf
            .entry("spark.pyspark.python".into())
            .or_insert_with(|| py.into());
        spark_conf
            .entry("spark.pyspark.driver.python".into())
            .or_insert_with(|| py.into());
        env.push(json!({"name": "PYSPARK_PYTHON", "value": py}));
    }
    let kind = match custom["applicationType"].as_str() {
        Some("JAVA") => "Java",
        Some("SCALA") => "Scala",
        Some("R") => "R",
        _ => "Python",
    };
    let cores = |k: &str| {
        spark_conf
            .get(k)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(1)
    };
    let mem = |k: &str| spark_conf.get(k).cloned();
    let labels = base.meta.labels.clone().unwrap_or_default();
    let annotations = base.meta.annotations.clone().unwrap_or_default();
    let mut driver = json!({
        "cores": cores("spark.driver.cores"),
        "env": env,
        "labels": labels,
        "annotations": annotations,
    });
    if let Some(m) = mem("spark.driver.memory") {
        driver["memory"] = m.into();
    }
    if let Some(sa) = &base.spec.service_account_name {
        driver["serviceAccount"] = sa.clone().into();
    }
    let mut executor = json!({
        "cores": cores("spark.executor.cores"),
        "instances": spark_conf
            .get("spark.executor.instances")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(1),
        "env": env,
        "labels": labels,
        "annotations": annotations,
    });
    if let Some(m) = mem("spark.executor.memory") {
        executor["memory"] = m.into();
    }
    // Interruptible capacity goes to the executors; the driver stays on regular nodes.
    if let Some(sel) = &base.spec.node_selector {
        executor["nodeSelector"] = json!(sel);
    }
    if let Some(t) = &base.spec.tolerations {
        executor["tolerations"] = serde_json::to_value(t).unwrap_or(Value::Null);
    }
    let mut spec = Map::new();
    spec.insert("type".into(), kind.into());
    spec.insert("mode".into(), "cluster".into());
    spec.insert("image".into(), json!(c.image));
    spec.insert("imagePullPolicy".into(), "IfNotPresent".into());
    spec.insert("mainApplicationFile".into(), main.into());
    if let Some(m) = custom["mainClass"].as_str().filter(|m| !m.is_empty()) {
        spec.insert("mainClass".into(), m.into());
    }
    let mut arguments: Vec<String> = c.command.clone().unwrap_or_default();
    arguments.extend(c.args.clone().unwrap_or_default());
    spec.insert("arguments".into(), json!(arguments));
    if kind == "Python" {
        spec.insert("pythonVersion".into(), "3".into());
    }
    spec.insert("sparkVersion".into(), base.spark_version.clone().into());
    spec.insert("sparkConf".into(), json!(spark_conf));
    spec.insert("hadoopConf".into(), json!(hadoop_conf));
    spec.insert("restartPolicy".into(), json!({"type": "Never"}));
    spec.insert("driver".into(), driver);
    spec.insert("executor".into(), executor);
    Ok(CustomObject {
        group: "sparkoperator.k8s.io".into(),
        version: "v1beta2".into(),
        kind: "SparkApplication".into(),
        plural: "sparkapplications".into(),
        metadata: base.meta.clone(),
        spec: Value::Object(spec),
    })
}
