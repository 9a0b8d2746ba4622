//! docs/updraft-workflow.schema.json describes the YAML format the engine reads: the example files validate
//! against it, and every object in it has exactly the keys the engine accepts.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;
use serde_json::Value;
use updraft_engine::yaml::{self, plugins};

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn schema() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(root().join("docs/updraft-workflow.schema.json")).unwrap(),
    )
    .unwrap()
}

fn yaml_files() -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for dir in ["examples", "tests/fixtures/yaml"] {
        for e in std::fs::read_dir(root().join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                out.push(p);
            }
        }
    }
    assert!(out.len() >= 3);
    out
}

#[test]
fn every_yaml_file_validates_against_the_schema() {
    let validator = jsonschema::validator_for(&schema()).unwrap();
    for path in yaml_files() {
        let doc: Value = serde_norway::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&doc)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
    }
}

#[test]
fn the_schema_rejects_what_the_engine_rejects() {
    let validator = jsonschema::validator_for(&schema()).unwrap();
    let bad: Value = serde_norway::from_str(
        "version: 1\ntasks:\n  t: {type: python, modul: m}\nworkflows:\n  w: {nodes: [{id: a, task: t, workflow: w}]}\n",
    )
    .unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&bad)
        .map(|e| e.instance_path().to_string())
        .collect();
    assert!(errors.iter().any(|p| p == "/tasks/t"), "{errors:?}");
    assert!(
        errors.iter().any(|p| p == "/workflows/w/nodes/0"),
        "{errors:?}"
    );
}

/// The field names serde accepts for `T`, read from its unknown-field error.
fn fields<T: DeserializeOwned + std::fmt::Debug>() -> BTreeSet<String> {
    let err = serde_norway::from_str::<T>("__probe__: 1")
        .unwrap_err()
        .to_string();
    let list = err
        .split("expected ")
        .nth(1)
        .unwrap_or_else(|| panic!("{err}"));
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn schema_fields(schema: &Value, def: &str) -> BTreeSet<String> {
    let props = if def.is_empty() {
        &schema["properties"]
    } else {
        &schema["$defs"][def]["properties"]
    };
    props
        .as_object()
        .unwrap_or_else(|| panic!("no $defs/{def}"))
        .keys()
        .cloned()
        .collect()
}

#[test]
fn schema_keys_match_the_engine() {
    let s = schema();
    let checks: Vec<(&str, BTreeSet<String>)> = vec![
        ("", fields::<yaml::File>()),
        ("TaskDef", fields::<yaml::TaskDef>()),
        ("ResourcesDef", fields::<yaml::ResourcesDef>()),
        ("CacheDef", fields::<yaml::CacheDef>()),
        ("PodDef", fields::<yaml::PodDef>()),
        ("DataDef", fields::<yaml::DataDef>()),
        ("WorkflowDef", fields::<yaml::WorkflowDef>()),
        ("InputFull", fields::<yaml::InputFull>()),
        ("OutputFull", fields::<yaml::OutputFull>()),
        ("NodeDef", fields::<yaml::NodeDef>()),
        ("MapDef", fields::<yaml::MapDef>()),
        ("BranchDef", fields::<yaml::BranchDef>()),
        ("CaseDef", fields::<yaml::CaseDef>()),
        ("GateDef", fields::<yaml::GateDef>()),
        ("LaunchPlanDef", fields::<yaml::LaunchPlanDef>()),
        ("BatchDef", fields::<plugins::BatchDef>()),
        ("ReplicaDef", fields::<plugins::ReplicaDef>()),
        ("RunPolicyDef", fields::<plugins::RunPolicyDef>()),
        ("PyTorchDef", fields::<plugins::PyTorchDef>()),
        ("ElasticDef", fields::<plugins::ElasticDef>()),
        ("TensorFlowDef", fields::<plugins::TensorFlowDef>()),
        ("MpiDef", fields::<plugins::MpiDef>()),
        ("SparkDef", fields::<plugins::SparkDef>()),
        ("HiveDef", fields::<plugins::HiveDef>()),
        ("AthenaDef", fields::<plugins::AthenaDef>()),
        ("EmrServerlessDef", fields::<plugins::EmrServerlessDef>()),
        ("SparkDriverDef", fields::<plugins::SparkDriverDef>()),
        ("HiveDriverDef", fields::<plugins::HiveDriverDef>()),
        ("SageMakerDef", fields::<plugins::SageMakerDef>()),
        ("SageMakerJobDef", fields::<plugins::SageMakerJobDef>()),
        ("BotoDef", fields::<plugins::BotoDef>()),
    ];
    for (def, engine) in checks {
        assert!(
            engine.len() >= 2,
            "{def}: could not read the engine's fields"
        );
        assert_eq!(
            schema_fields(&s, def),
            engine,
            "schema $defs/{def} differs from the engine"
        );
    }
}
