//! Launching: which launch plan a request means, its inputs from JSON values, and what it reaches.
//! Shared by every runtime, so `updraft run` and the serverless launch function accept the same requests.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use updraft_proto::core::LiteralMap;

use crate::CompiledPackage;
use crate::compile::{CompiledTask, NodeKind};
use crate::literal::from_json;

/// The launch plan to run: the one named, else the default one of the workflow named, else of
/// `fallback` (e.g. the last workflow of the files given).
pub fn choose_launch_plan(
    pkg: &CompiledPackage,
    launch_plan: Option<&str>,
    workflow: Option<&str>,
    fallback: Option<&str>,
) -> Result<String, String> {
    if let Some(lp) = launch_plan {
        if !pkg.launch_plans.contains_key(lp) {
            return Err(format!(
                "no launch plan `{lp}`; the package defines: {:?}",
                pkg.launch_plans.keys().collect::<Vec<_>>()
            ));
        }
        return Ok(lp.to_string());
    }
    let wf = workflow
        .or(fallback)
        .ok_or("the package defines no workflow")?;
    if !pkg.workflows.contains_key(wf) {
        return Err(format!(
            "no workflow `{wf}`; the package defines: {:?}",
            pkg.workflows.keys().collect::<Vec<_>>()
        ));
    }
    pkg.launch_plans
        .iter()
        .find(|(name, lp)| *name == wf && lp.workflow == wf)
        .or_else(|| pkg.launch_plans.iter().find(|(_, lp)| lp.workflow == wf))
        .map(|(n, _)| n.clone())
        .ok_or_else(|| format!("workflow `{wf}` has no launch plan"))
}

/// The inputs launch plan `lp_name` starts its workflow with: its defaults, then the `given` JSON values
/// (converted to the declared types), then its fixed inputs. Overriding a fixed input, an unknown name, a
/// value of the wrong type and a missing required input are errors naming the input.
pub fn launch_inputs(
    pkg: &CompiledPackage,
    lp_name: &str,
    given: BTreeMap<String, Value>,
) -> Result<LiteralMap, String> {
    let lp = pkg
        .launch_plans
        .get(lp_name)
        .ok_or_else(|| format!("no launch plan `{lp_name}`"))?;
    let mut out = lp.defaults.clone();
    for (k, v) in given {
        if lp.fixed.contains_key(&k) {
            return Err(format!("input `{k}` is fixed by launch plan `{lp_name}`"));
        }
        let t = lp.interface.inputs.get(&k).ok_or_else(|| {
            format!(
                "`{k}` is not an input of `{}` (inputs: {:?})",
                lp.workflow,
                lp.interface.inputs.keys().collect::<Vec<_>>()
            )
        })?;
        let lit = from_json(&v, t).map_err(|e| format!("input `{k}`: {e}"))?;
        out.insert(k, lit);
    }
    out.extend(lp.fixed.clone());
    let missing: Vec<&String> = lp
        .required
        .iter()
        .filter(|r| !out.contains_key(*r))
        .collect();
    if !missing.is_empty() {
        return Err(format!("missing required input(s) {missing:?}"));
    }
    Ok(LiteralMap { literals: out })
}

/// Every workflow `workflow` reaches through launch-plan nodes (itself included).
pub fn reachable_workflows(pkg: &CompiledPackage, workflow: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![workflow.to_string()];
    while let Some(w) = stack.pop() {
        if !seen.insert(w.clone()) {
            continue;
        }
        for n in pkg.workflows.get(&w).map(|w| &w.nodes[..]).unwrap_or(&[]) {
            if let NodeKind::LaunchPlan { launch_plan } = &n.kind
                && let Some(lp) = pkg.launch_plans.get(launch_plan)
            {
                stack.push(lp.workflow.clone());
            }
        }
    }
    seen
}

/// Every task the nodes of `workflow` and the workflows it reaches call, each once, by name (the tasks
/// of dynamic sub-workflows are known only when they run).
pub fn reachable_tasks<'a>(
    pkg: &'a CompiledPackage,
    workflow: &str,
) -> BTreeMap<&'a str, &'a CompiledTask> {
    reachable_workflows(pkg, workflow)
        .iter()
        .flat_map(|w| &pkg.workflows[w].nodes)
        .filter_map(|n| match &n.kind {
            NodeKind::Task { task } => pkg.tasks.get(task),
            _ => None,
        })
        .map(|t| (t.name.as_str(), t))
        .collect()
}

/// Where a task is called from a workflow and the workflows it reaches: each workflow with the ids of
/// its nodes that run the task, for errors that must name them.
pub fn task_nodes(pkg: &CompiledPackage, workflow: &str, task: &str) -> Vec<(String, Vec<String>)> {
    reachable_workflows(pkg, workflow)
        .into_iter()
        .filter_map(|w| {
            let nodes: Vec<String> = pkg.workflows[&w]
                .nodes
                .iter()
                .filter(|n| matches!(&n.kind, NodeKind::Task { task: t } if t == task))
                .map(|n| n.id.clone())
                .collect();
            (!nodes.is_empty()).then_some((w, nodes))
        })
        .collect()
}

/// [`task_nodes`] as text: `workflow W node n0; workflow V nodes n1, n2` (empty when none).
pub fn task_nodes_text(pkg: &CompiledPackage, workflow: &str, task: &str) -> String {
    task_nodes(pkg, workflow, task)
        .into_iter()
        .map(|(w, nodes)| {
            let s = if nodes.len() > 1 { "s" } else { "" };
            format!("workflow {w} node{s} {}", nodes.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}
