//! Updraft YAML → flyteidl protos (TaskTemplate, WorkflowTemplate, LaunchPlan), as flytekit would write them.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use updraft_proto::admin::{LaunchPlan, LaunchPlanSpec, WorkflowSpec};
use updraft_proto::core::{
    self as core, Binding, Identifier, Literal, LiteralType, Parameter, ParameterMap, ResourceType,
    TypedInterface, Variable, VariableMap, WorkflowMetadata, WorkflowMetadataDefaults,
    WorkflowTemplate, parameter, workflow_metadata::OnFailurePolicy,
};

use super::infer::infer_ref;
use super::node::{binding, node};
use super::refs::parse_reference;
use super::task::task;
use super::{File, InputDef, OutputDef, WorkflowDef};
use crate::error::{Problem, Problems};
use crate::literal::{from_json, parse_duration};
use crate::package::{Origin, Package};
use crate::types;

/// The task kinds of Updraft YAML, and the flytekit task type each becomes.
pub(super) struct Ctx<'a> {
    pub(super) file: &'a str,
    pub(super) doc: &'a File,
    pub(super) problems: Vec<Problem>,
    pub(super) entity: String,
    /// Inferred workflow output types (memo) and the workflows being inferred (cycle guard).
    pub(super) wf_outputs: BTreeMap<String, Option<BTreeMap<String, LiteralType>>>,
    pub(super) inferring: Vec<String>,
}

impl Ctx<'_> {
    pub(super) fn problem(
        &mut self,
        node: Option<&str>,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) {
        self.problems.push(Problem {
            file: self.file.to_string(),
            entity: self.entity.clone(),
            node: node.map(str::to_string),
            field: field.into(),
            reason: reason.into(),
        });
    }

    pub(super) fn parse_type(
        &mut self,
        node: Option<&str>,
        field: &str,
        text: &str,
    ) -> Option<LiteralType> {
        match types::parse(text) {
            Ok(t) => Some(t),
            Err(e) => {
                self.problem(node, field, e.to_string());
                None
            }
        }
    }

    pub(super) fn vars(
        &mut self,
        m: &BTreeMap<String, String>,
        side: &str,
    ) -> BTreeMap<String, LiteralType> {
        let mut out = BTreeMap::new();
        for (k, t) in m {
            if let Some(t) = self.parse_type(None, &format!("{side}.{k}"), t) {
                out.insert(k.clone(), t);
            }
        }
        out
    }
}

pub(super) fn id(kind: ResourceType, name: &str) -> Option<Identifier> {
    Some(Identifier {
        resource_type: kind as i32,
        name: name.to_string(),
        ..Default::default()
    })
}

pub(super) fn variable_map(m: &BTreeMap<String, LiteralType>) -> Option<VariableMap> {
    Some(VariableMap {
        variables: m
            .iter()
            .map(|(k, t)| {
                (
                    k.clone(),
                    Variable {
                        r#type: Some(t.clone()),
                        description: k.clone(),
                        ..Default::default()
                    },
                )
            })
            .collect(),
    })
}

pub(super) fn duration(v: &Value) -> Result<prost_types::Duration, String> {
    match v {
        Value::String(s) => parse_duration(s),
        Value::Number(n) => parse_duration(&n.to_string()),
        _ => Err(format!("{v} is not a duration (like 90s, 1h30m)")),
    }
}

/// Converts a parsed file to a package of protos.
pub fn to_package(file: &str, doc: &File) -> Result<Package, Problems> {
    let mut ctx = Ctx {
        file,
        doc,
        problems: Vec::new(),
        entity: String::new(),
        wf_outputs: BTreeMap::new(),
        inferring: Vec::new(),
    };
    let mut pkg = Package::default();
    let origin = Origin {
        file: file.to_string(),
        entry: None,
    };
    if doc.tasks.is_empty() && doc.workflows.is_empty() {
        ctx.problem(None, "", "the file defines no tasks and no workflows");
    }
    for (name, def) in &doc.tasks {
        ctx.entity = format!("task {name}");
        if let Some(t) = task(&mut ctx, name, def)
            && let Err(p) = pkg.add_task(t, origin.clone())
        {
            ctx.problems.push(p);
        }
    }
    for (name, def) in &doc.workflows {
        ctx.entity = format!("workflow {name}");
        if doc.tasks.contains_key(name) {
            ctx.problem(None, "", "a task has the same name");
        }
        let Some((template, lp)) = workflow(&mut ctx, name, def) else {
            continue;
        };
        let spec = WorkflowSpec {
            template: Some(template),
            ..Default::default()
        };
        if let Err(p) = pkg.add_workflow_spec(spec, origin.clone()) {
            ctx.problems.push(p);
        }
        if let Err(p) = pkg.add_launch_plan(lp, origin.clone()) {
            ctx.problems.push(p);
        }
    }
    for (name, def) in &doc.launch_plans {
        ctx.entity = format!("launch plan {name}");
        if doc.workflows.contains_key(name) {
            ctx.problem(
                None,
                "",
                "every workflow has a launch plan of its own name; choose another name",
            );
            continue;
        }
        let Some(wf) = doc.workflows.get(&def.workflow) else {
            ctx.problem(
                None,
                "workflow",
                format!("workflow `{}` is not in the file", def.workflow),
            );
            continue;
        };
        let input_types = workflow_inputs(&mut ctx, wf);
        let mut defaults = BTreeMap::new();
        for (k, v) in &def.defaults {
            match input_types.get(k) {
                Some(t) => match from_json(v, t) {
                    Ok(l) => {
                        defaults.insert(k.clone(), l);
                    }
                    Err(e) => ctx.problem(None, format!("defaults.{k}"), e),
                },
                None => ctx.problem(
                    None,
                    format!("defaults.{k}"),
                    format!("workflow `{}` has no input `{k}`", def.workflow),
                ),
            }
        }
        let mut fixed = BTreeMap::new();
        for (k, v) in &def.fixed {
            match input_types.get(k) {
                Some(t) => match from_json(v, t) {
                    Ok(l) => {
                        fixed.insert(k.clone(), l);
                    }
                    Err(e) => ctx.problem(None, format!("fixed.{k}"), e),
                },
                None => ctx.problem(
                    None,
                    format!("fixed.{k}"),
                    format!("workflow `{}` has no input `{k}`", def.workflow),
                ),
            }
        }
        // Workflow defaults still apply unless overridden.
        for (k, d) in workflow_defaults(&mut ctx, wf, &input_types) {
            defaults.entry(k).or_insert(d);
        }
        let lp = launch_plan(name, &def.workflow, &input_types, &defaults, &fixed);
        if let Err(p) = pkg.add_launch_plan(lp, origin.clone()) {
            ctx.problems.push(p);
        }
    }
    Problems(ctx.problems).into_result(pkg)
}

fn launch_plan(
    name: &str,
    workflow: &str,
    inputs: &BTreeMap<String, LiteralType>,
    defaults: &BTreeMap<String, Literal>,
    fixed: &BTreeMap<String, Literal>,
) -> LaunchPlan {
    let parameters = inputs
        .iter()
        .filter(|(k, _)| !fixed.contains_key(*k))
        .map(|(k, t)| {
            let behavior = match defaults.get(k) {
                Some(d) => parameter::Behavior::Default(d.clone()),
                None => parameter::Behavior::Required(true),
            };
            (
                k.clone(),
                Parameter {
                    var: Some(Variable {
                        r#type: Some(t.clone()),
                        description: k.clone(),
                        ..Default::default()
                    }),
                    behavior: Some(behavior),
                },
            )
        })
        .collect();
    LaunchPlan {
        id: id(ResourceType::LaunchPlan, name),
        spec: Some(LaunchPlanSpec {
            workflow_id: id(ResourceType::Workflow, workflow),
            default_inputs: Some(ParameterMap { parameters }),
            fixed_inputs: Some(core::LiteralMap {
                literals: fixed.clone(),
            }),
            ..Default::default()
        }),
        closure: None,
    }
}

pub(super) fn workflow_inputs(
    ctx: &mut Ctx<'_>,
    def: &WorkflowDef,
) -> BTreeMap<String, LiteralType> {
    let mut out = BTreeMap::new();
    for (k, d) in &def.inputs {
        let text = match d {
            InputDef::Type(t) => t,
            InputDef::Full(f) => &f.r#type,
        };
        if let Some(t) = ctx.parse_type(None, &format!("inputs.{k}"), text) {
            out.insert(k.clone(), t);
        }
    }
    out
}

pub(super) fn workflow_defaults(
    ctx: &mut Ctx<'_>,
    def: &WorkflowDef,
    types: &BTreeMap<String, LiteralType>,
) -> BTreeMap<String, Literal> {
    let mut out = BTreeMap::new();
    for (k, d) in &def.inputs {
        if let (InputDef::Full(f), Some(t)) = (d, types.get(k))
            && let Some(v) = &f.default
        {
            match from_json(v, t) {
                Ok(l) => {
                    out.insert(k.clone(), l);
                }
                Err(e) => ctx.problem(None, format!("inputs.{k}.default"), e),
            }
        }
    }
    out
}

pub(super) fn workflow(
    ctx: &mut Ctx<'_>,
    name: &str,
    def: &WorkflowDef,
) -> Option<(WorkflowTemplate, LaunchPlan)> {
    let inputs = workflow_inputs(ctx, def);
    let defaults = workflow_defaults(ctx, def, &inputs);
    if def.nodes.is_empty() {
        ctx.problem(None, "nodes", "the workflow has no nodes");
    }
    let mut ids = BTreeSet::new();
    let mut nodes = Vec::new();
    for (i, n) in def.nodes.iter().enumerate() {
        if !ids.insert(n.id.clone()) {
            ctx.problem(Some(&n.id), "id", "duplicate node id");
            continue;
        }
        if let Some(node) = node(ctx, n, &format!("nodes[{i}]")) {
            nodes.push(node);
        }
    }
    let mut outputs = Vec::new();
    let mut output_types = BTreeMap::new();
    for (k, o) in &def.outputs {
        let field = format!("outputs.{k}");
        let (value, t) = match o {
            OutputDef::Value(s) => (Value::String(s.clone()), None),
            OutputDef::Full(f) => (f.value.clone(), ctx.parse_type(None, &field, &f.r#type)),
        };
        let t = t.or_else(|| match &value {
            Value::String(s) => match parse_reference(s) {
                Ok(Some(r)) => infer_ref(ctx, def, &r, &field),
                _ => None,
            },
            _ => None,
        });
        let Some(t) = t else {
            if !matches!(&value, Value::String(s) if parse_reference(s).is_err()) {
                let why = match &value {
                    Value::String(s) => match parse_reference(s) {
                        Ok(Some(r)) => match &r.node {
                            Some(n) if !def.nodes.iter().any(|x| &x.id == n) => {
                                format!("there is no node `{n}`")
                            }
                            Some(n) => format!(
                                "the outputs of node `{n}` are not known in this file (does its task, workflow or launch plan exist here?)"
                            ),
                            None if !def.inputs.contains_key(&r.var) => {
                                format!("there is no input `{}`", r.var)
                            }
                            None => "its type is not known".to_string(),
                        },
                        _ => "it is a constant".to_string(),
                    },
                    _ => "it is a constant".to_string(),
                };
                if ctx
                    .problems
                    .iter()
                    .all(|p| p.field != field || p.entity != ctx.entity)
                {
                    ctx.problem(None, &field, format!("cannot tell this output's type: {why}; or write it as {{value: …, type: …}}"));
                }
            } else if let Value::String(s) = &value {
                let e = parse_reference(s).err().unwrap_or_default();
                ctx.problem(None, &field, e);
            }
            continue;
        };
        match binding(&value, Some(&t)) {
            Ok(b) => outputs.push(Binding {
                var: k.clone(),
                binding: Some(b),
            }),
            Err(e) => ctx.problem(None, &field, e),
        }
        output_types.insert(k.clone(), t);
    }
    let failure_node = def.on_failure.as_ref().and_then(|f| {
        if f.task.is_none() {
            ctx.problem(
                Some(&f.id),
                "on_failure",
                "the failure node must run a task",
            );
        }
        node(ctx, f, "on_failure")
    });
    let policy = match def.failure_policy.as_deref() {
        None | Some("fail_immediately") => OnFailurePolicy::FailImmediately,
        Some("fail_after_executable_nodes_complete") => {
            OnFailurePolicy::FailAfterExecutableNodesComplete
        }
        Some(o) => {
            ctx.problem(
                None,
                "failure_policy",
                format!("`{o}` is not fail_immediately or fail_after_executable_nodes_complete"),
            );
            OnFailurePolicy::FailImmediately
        }
    };
    let template = WorkflowTemplate {
        id: id(ResourceType::Workflow, name),
        metadata: Some(WorkflowMetadata {
            on_failure: policy as i32,
            ..Default::default()
        }),
        interface: Some(TypedInterface {
            inputs: variable_map(&inputs),
            outputs: variable_map(&output_types),
        }),
        nodes,
        outputs,
        failure_node,
        metadata_defaults: Some(WorkflowMetadataDefaults {
            interruptible: def.interruptible.unwrap_or(false),
        }),
    };
    let lp = launch_plan(name, name, &inputs, &defaults, &BTreeMap::new());
    Some((template, lp))
}
