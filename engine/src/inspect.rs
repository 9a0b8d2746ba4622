//! A summary of a package's entities, for `updraft inspect` (text or JSON).

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::compile::{CompiledPackage, Interface};
use crate::package::Package;
use crate::types;

/// Everything `inspect` shows.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Tasks by name.
    pub tasks: BTreeMap<String, TaskSummary>,
    /// Workflows by name.
    pub workflows: BTreeMap<String, WorkflowSummary>,
    /// Launch plans by name.
    pub launch_plans: BTreeMap<String, LaunchPlanSummary>,
}

/// One task.
#[derive(Debug, Serialize)]
pub struct TaskSummary {
    /// `TaskTemplate.type`.
    pub r#type: String,
    /// The plugin that runs it, or null when no plugin does.
    pub plugin: Option<String>,
    /// Input name → type.
    pub inputs: BTreeMap<String, String>,
    /// Output name → type.
    pub outputs: BTreeMap<String, String>,
    /// Where it came from.
    pub source: String,
}

/// One workflow.
#[derive(Debug, Serialize)]
pub struct WorkflowSummary {
    /// Input name → type.
    pub inputs: BTreeMap<String, String>,
    /// Output name → type.
    pub outputs: BTreeMap<String, String>,
    /// Nodes after compilation (null when it did not compile).
    pub nodes: Option<usize>,
    /// True for workflows packaged only as someone's subworkflow.
    pub subworkflow_only: bool,
    /// Where it came from.
    pub source: String,
}

/// One launch plan.
#[derive(Debug, Serialize)]
pub struct LaunchPlanSummary {
    /// The workflow it launches.
    pub workflow: String,
    /// Inputs that must be given.
    pub required: Vec<String>,
    /// Inputs with defaults.
    pub defaults: Vec<String>,
    /// Inputs that cannot be changed.
    pub fixed: Vec<String>,
    /// Where it came from.
    pub source: String,
}

fn typed(m: &BTreeMap<String, updraft_proto::core::LiteralType>) -> BTreeMap<String, String> {
    m.iter()
        .map(|(k, v)| (k.clone(), types::display(v)))
        .collect()
}

fn iface_of(t: Option<&updraft_proto::core::TypedInterface>) -> Interface {
    let mut scratch = Vec::new();
    let origin = crate::package::Origin {
        file: String::new(),
        entry: None,
    };
    crate::compile::interface_of(t, &origin, "", &mut scratch)
}

/// Summarizes `pkg`, using what compiled of it.
pub fn summarize(pkg: &Package, compiled: &CompiledPackage) -> Summary {
    let tasks = pkg
        .tasks
        .iter()
        .map(|(name, t)| {
            let iface = iface_of(t.template.interface.as_ref());
            let has_pod = matches!(
                t.template.target,
                Some(updraft_proto::core::task_template::Target::K8sPod(_))
            );
            (
                name.clone(),
                TaskSummary {
                    r#type: t.template.r#type.clone(),
                    plugin: crate::plugins::plugin_for(&t.template.r#type, has_pod)
                        .map(|p| p.name().to_string()),
                    inputs: typed(&iface.inputs),
                    outputs: typed(&iface.outputs),
                    source: t.origin.display(),
                },
            )
        })
        .collect();
    let workflows = pkg
        .workflows
        .iter()
        .map(|(name, w)| {
            let iface = iface_of(w.template.interface.as_ref());
            (
                name.clone(),
                WorkflowSummary {
                    inputs: typed(&iface.inputs),
                    outputs: typed(&iface.outputs),
                    nodes: compiled.workflows.get(name).map(|c| c.nodes.len()),
                    subworkflow_only: !pkg.top_level.contains(name),
                    source: w.origin.display(),
                },
            )
        })
        .collect();
    let launch_plans = pkg
        .launch_plans
        .iter()
        .map(|(name, lp)| {
            let c = compiled.launch_plans.get(name);
            (
                name.clone(),
                LaunchPlanSummary {
                    workflow: lp
                        .launch_plan
                        .spec
                        .as_ref()
                        .and_then(|s| s.workflow_id.as_ref())
                        .map(|i| i.name.clone())
                        .unwrap_or_default(),
                    required: c
                        .map(|c| c.required.iter().cloned().collect())
                        .unwrap_or_default(),
                    defaults: c
                        .map(|c| c.defaults.keys().cloned().collect())
                        .unwrap_or_default(),
                    fixed: c
                        .map(|c| c.fixed.keys().cloned().collect())
                        .unwrap_or_default(),
                    source: lp.origin.display(),
                },
            )
        })
        .collect();
    Summary {
        tasks,
        workflows,
        launch_plans,
    }
}

fn sig(inputs: &BTreeMap<String, String>, outputs: &BTreeMap<String, String>) -> String {
    let list = |m: &BTreeMap<String, String>| {
        m.iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("({}) -> ({})", list(inputs), list(outputs))
}

/// The summary as aligned text.
pub fn render_text(s: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Tasks ({}):", s.tasks.len());
    for (name, t) in &s.tasks {
        let plugin = t.plugin.as_deref().unwrap_or("NO PLUGIN");
        let _ = writeln!(
            out,
            "  {name}  [{} → {plugin}]  {}",
            t.r#type,
            sig(&t.inputs, &t.outputs)
        );
    }
    let _ = writeln!(out, "Workflows ({}):", s.workflows.len());
    for (name, w) in &s.workflows {
        let nodes = w
            .nodes
            .map_or_else(|| "does not compile".to_string(), |n| format!("{n} nodes"));
        let sub = if w.subworkflow_only {
            ", subworkflow"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {name}  [{nodes}{sub}]  {}",
            sig(&w.inputs, &w.outputs)
        );
    }
    let _ = writeln!(out, "Launch plans ({}):", s.launch_plans.len());
    for (name, lp) in &s.launch_plans {
        let _ = writeln!(
            out,
            "  {name}  → {}  required: [{}]  defaults: [{}]  fixed: [{}]",
            lp.workflow,
            lp.required.join(", "),
            lp.defaults.join(", "),
            lp.fixed.join(", ")
        );
    }
    out
}
