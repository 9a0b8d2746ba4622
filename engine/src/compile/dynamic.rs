//! The sub-workflow a dynamic task returns at run time (its `futures.pb`, a `DynamicJobSpec`), compiled
//! like any workflow so the engine can run it as a child execution.

use std::collections::BTreeMap;

use updraft_proto::core::{
    DynamicJobSpec, Identifier, LiteralType, ResourceType, TypedInterface, Variable, VariableMap,
    WorkflowTemplate,
};

use super::{CompiledPackage, tasks, workflow};
use crate::error::{Problem, Problems};
use crate::package::{Origin, Package, WorkflowEntity};

/// Compiles the sub-workflow that the dynamic task of node `node_id` returned. Its outputs must have the
/// types of the task's outputs (`outputs`). Tasks the spec carries are compiled from it; tasks it only
/// names, and launch plans, come from `parent`. Returns the package and the name of its workflow.
pub fn compile_dynamic(
    parent: &CompiledPackage,
    node_id: &str,
    outputs: &BTreeMap<String, LiteralType>,
    spec: &DynamicJobSpec,
) -> Result<(CompiledPackage, String), Problems> {
    let origin = Origin {
        file: format!("futures.pb of node {node_id}"),
        entry: None,
    };
    let name = format!("{node_id}-dynamic");
    let mut problems: Vec<Problem> = Vec::new();
    let mut pkg = Package::default();
    for t in &spec.tasks {
        // flytekit lists a task once per use: identical copies are one task.
        let same =
            t.id.as_ref()
                .and_then(|id| pkg.tasks.get(&id.name))
                .is_some_and(|prev| prev.template == *t);
        if !same && let Err(p) = pkg.add_task(t.clone(), origin.clone()) {
            problems.push(p);
        }
    }
    for w in &spec.subworkflows {
        let sub = w.id.as_ref().map(|i| i.name.clone()).unwrap_or_default();
        pkg.workflows.entry(sub).or_insert_with(|| WorkflowEntity {
            template: w.clone(),
            origin: origin.clone(),
        });
    }
    let variables = outputs
        .iter()
        .map(|(k, t)| {
            let var = Variable {
                r#type: Some(t.clone()),
                ..Default::default()
            };
            (k.clone(), var)
        })
        .collect();
    let template = WorkflowTemplate {
        id: Some(Identifier {
            resource_type: ResourceType::Workflow as i32,
            name: name.clone(),
            ..Default::default()
        }),
        interface: Some(TypedInterface {
            inputs: Some(VariableMap::default()),
            outputs: Some(VariableMap { variables }),
        }),
        nodes: spec.nodes.clone(),
        outputs: spec.outputs.clone(),
        ..Default::default()
    };
    pkg.workflows.insert(
        name.clone(),
        WorkflowEntity {
            template,
            origin: origin.clone(),
        },
    );
    pkg.top_level.push(name.clone());
    let mut out = CompiledPackage {
        tasks: parent.tasks.clone(),
        workflows: BTreeMap::new(),
        launch_plans: parent.launch_plans.clone(),
    };
    for (task, entity) in &pkg.tasks {
        match tasks::compile_task(task, &entity.template, &entity.origin) {
            Ok(t) => {
                out.tasks.insert(task.clone(), t);
            }
            Err(mut p) => problems.append(&mut p),
        }
    }
    if problems.is_empty() {
        match workflow::compile_workflow(&pkg, &out, &name) {
            Ok(w) => {
                out.workflows.insert(name.clone(), w);
            }
            Err(mut p) => problems.append(&mut p),
        }
    }
    problems.sort();
    problems.dedup();
    Problems(problems).into_result((out, name))
}
