//! YAML nodes and bindings → flyteidl Nodes and BindingData.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use updraft_proto::core::{
    self as core, ArrayNode, Binding, BindingData, BindingDataCollection, BindingDataMap,
    BranchNode, GateNode, IfBlock, IfElseBlock, Literal, LiteralType, Node, NodeMetadata,
    OutputReference, ResourceType, RetryStrategy, TaskNode, WorkflowNode, array_node, binding_data,
    gate_node, if_else_block, literal, literal_type::Type, node::Target,
};

use super::NodeDef;
use super::convert::{Ctx, duration, id};
use super::infer::{literal_guess, target_inputs};
use super::refs::{parse_condition, parse_reference};
use crate::literal::from_json;
use crate::types;

pub(super) fn node(ctx: &mut Ctx<'_>, n: &NodeDef, path: &str) -> Option<Node> {
    let nid = n.id.as_str();
    if nid.is_empty()
        || !nid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        ctx.problem(
            Some(nid),
            format!("{path}.id"),
            "node ids are letters, digits, `_` and `-`",
        );
    }
    let kinds = [
        n.task.is_some(),
        n.map.is_some(),
        n.workflow.is_some(),
        n.launch_plan.is_some(),
        n.branch.is_some(),
        n.gate.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() != 1 {
        ctx.problem(
            Some(nid),
            path,
            "a node needs exactly one of task, map, workflow, launch_plan, branch, gate",
        );
        return None;
    }
    let expected = target_inputs(ctx, n);
    let mut upstream: BTreeSet<String> = n.after.iter().cloned().collect();
    let mut inputs = Vec::new();
    for (var, v) in &n.inputs {
        let field = format!("inputs.{var}");
        collect_refs(v, &mut upstream);
        let t = expected.as_ref().and_then(|e| e.get(var));
        if expected.is_some() && t.is_none() {
            ctx.problem(Some(nid), &field, "no such input");
            continue;
        }
        match binding(v, t) {
            Ok(b) => inputs.push(Binding {
                var: var.clone(),
                binding: Some(b),
            }),
            Err(e) => ctx.problem(Some(nid), &field, e),
        }
    }
    let target = if let Some(t) = &n.task {
        Target::TaskNode(TaskNode {
            reference: Some(core::task_node::Reference::ReferenceId(id(
                ResourceType::Task,
                t,
            )?)),
            overrides: None,
        })
    } else if let Some(m) = &n.map {
        let over: BTreeSet<String> = m.over.clone().map_or_else(
            || n.inputs.keys().cloned().collect(),
            |o| o.into_iter().collect(),
        );
        for o in &over {
            if !n.inputs.contains_key(o) {
                ctx.problem(
                    Some(nid),
                    "map.over",
                    format!("`{o}` is not bound in inputs"),
                );
            }
        }
        let success = match (m.min_successes, m.min_success_ratio) {
            (Some(_), Some(_)) => {
                ctx.problem(
                    Some(nid),
                    "map",
                    "give min_successes or min_success_ratio, not both",
                );
                None
            }
            (Some(k), None) => Some(array_node::SuccessCriteria::MinSuccesses(k)),
            (None, Some(r)) => Some(array_node::SuccessCriteria::MinSuccessRatio(r)),
            (None, None) => None,
        };
        let sub = Node {
            id: format!("{nid}-item"),
            metadata: Some(NodeMetadata {
                name: m.task.clone(),
                ..Default::default()
            }),
            inputs: inputs.clone(),
            target: Some(Target::TaskNode(TaskNode {
                reference: Some(core::task_node::Reference::ReferenceId(id(
                    ResourceType::Task,
                    &m.task,
                )?)),
                overrides: None,
            })),
            ..Default::default()
        };
        Target::ArrayNode(Box::new(ArrayNode {
            node: Some(Box::new(sub)),
            parallelism_option: m
                .parallelism
                .map(array_node::ParallelismOption::Parallelism),
            success_criteria: success,
            is_original_sub_node_interface: Some(true),
            bound_inputs: n
                .inputs
                .keys()
                .filter(|k| !over.contains(*k))
                .cloned()
                .collect(),
            ..Default::default()
        }))
    } else if let Some(w) = &n.workflow {
        Target::WorkflowNode(WorkflowNode {
            reference: Some(core::workflow_node::Reference::SubWorkflowRef(id(
                ResourceType::Workflow,
                w,
            )?)),
        })
    } else if let Some(lp) = &n.launch_plan {
        Target::WorkflowNode(WorkflowNode {
            reference: Some(core::workflow_node::Reference::LaunchplanRef(id(
                ResourceType::LaunchPlan,
                lp,
            )?)),
        })
    } else if let Some(b) = &n.branch {
        if b.cases.is_empty() {
            ctx.problem(
                Some(nid),
                "branch.cases",
                "a branch needs at least one case",
            );
            return None;
        }
        let mut blocks = Vec::new();
        let mut seen_vars = BTreeSet::new();
        for (i, c) in b.cases.iter().enumerate() {
            let field = format!("branch.cases[{i}]");
            let (cond, refs) = match parse_condition(&c.when) {
                Ok(x) => x,
                Err(e) => {
                    ctx.problem(Some(nid), format!("{field}.when"), e);
                    continue;
                }
            };
            for r in refs {
                if let Some(node) = &r.node {
                    upstream.insert(node.clone());
                }
                if seen_vars.insert(r.text()) {
                    inputs.push(Binding {
                        var: r.text(),
                        binding: Some(promise(&r)),
                    });
                }
            }
            let then = node(ctx, &c.then, &format!("{field}.then"));
            collect_node_refs(&c.then, &mut upstream);
            if let Some(then) = then {
                blocks.push(IfBlock {
                    condition: Some(cond),
                    then_node: Some(Box::new(then)),
                });
            }
        }
        let default = match (&b.otherwise, &b.else_fail) {
            (Some(_), Some(_)) => {
                ctx.problem(Some(nid), "branch", "give else or else_fail, not both");
                None
            }
            (Some(e), None) => {
                collect_node_refs(e, &mut upstream);
                node(ctx, e, "branch.else").map(|e| if_else_block::Default::ElseNode(Box::new(e)))
            }
            (None, Some(msg)) => Some(if_else_block::Default::Error(core::Error {
                failed_node_id: nid.to_string(),
                message: msg.clone(),
            })),
            (None, None) => None,
        };
        if blocks.is_empty() {
            return None;
        }
        let first = blocks.remove(0);
        Target::BranchNode(Box::new(BranchNode {
            if_else: Some(Box::new(IfElseBlock {
                case: Some(Box::new(first)),
                other: blocks,
                default,
            })),
        }))
    } else {
        let g = n.gate.as_ref()?;
        let set = [g.sleep.is_some(), g.approve.is_some(), g.signal.is_some()]
            .iter()
            .filter(|x| **x)
            .count();
        if set != 1 {
            ctx.problem(
                Some(nid),
                "gate",
                "a gate needs exactly one of sleep, approve, signal",
            );
            return None;
        }
        let condition = if let Some(s) = &g.sleep {
            match duration(s) {
                Ok(d) => gate_node::Condition::Sleep(core::SleepCondition { duration: Some(d) }),
                Err(e) => {
                    ctx.problem(Some(nid), "gate.sleep", e);
                    return None;
                }
            }
        } else if let Some(a) = &g.approve {
            if n.inputs.len() != 1 {
                ctx.problem(
                    Some(nid),
                    "inputs",
                    "an approve gate takes exactly one input: the value to approve",
                );
            }
            gate_node::Condition::Approve(core::ApproveCondition {
                signal_id: a.clone(),
            })
        } else {
            let t = ctx.parse_type(Some(nid), "gate.type", g.r#type.as_deref().unwrap_or("str"))?;
            gate_node::Condition::Signal(core::SignalCondition {
                signal_id: g.signal.clone().unwrap_or_default(),
                r#type: Some(t),
                output_variable_name: "value".into(),
            })
        };
        if g.r#type.is_some() && g.signal.is_none() {
            ctx.problem(
                Some(nid),
                "gate.type",
                "`type` applies only to signal gates",
            );
        }
        Target::GateNode(GateNode {
            condition: Some(condition),
        })
    };
    let timeout = match &n.timeout {
        Some(v) => match duration(v) {
            Ok(d) => Some(d),
            Err(e) => {
                ctx.problem(Some(nid), "timeout", e);
                None
            }
        },
        None => None,
    };
    let mut metadata = NodeMetadata {
        name: n
            .task
            .clone()
            .or_else(|| n.map.as_ref().map(|m| m.task.clone()))
            .unwrap_or_else(|| nid.to_string()),
        timeout,
        retries: n.retries.map(|r| RetryStrategy { retries: r }),
        interruptible_value: n
            .interruptible
            .map(core::node_metadata::InterruptibleValue::Interruptible),
        ..Default::default()
    };
    match &n.cache {
        None => {}
        Some(Value::Bool(b)) => {
            metadata.cacheable_value = Some(core::node_metadata::CacheableValue::Cacheable(*b))
        }
        Some(Value::Object(m)) => {
            metadata.cacheable_value = Some(core::node_metadata::CacheableValue::Cacheable(true));
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("version", Value::String(s)) => {
                        metadata.cache_version_value = Some(
                            core::node_metadata::CacheVersionValue::CacheVersion(s.clone()),
                        )
                    }
                    ("serializable", Value::Bool(b)) => {
                        metadata.cache_serializable_value =
                            Some(core::node_metadata::CacheSerializableValue::CacheSerializable(*b))
                    }
                    _ => ctx.problem(
                        Some(nid),
                        format!("cache.{k}"),
                        "cache takes `version` (a string) and `serializable` (a boolean)",
                    ),
                }
            }
        }
        Some(_) => ctx.problem(
            Some(nid),
            "cache",
            "cache is false, true, or {version, serializable}",
        ),
    }
    upstream.remove(nid);
    upstream.remove("inputs");
    Some(Node {
        id: nid.to_string(),
        metadata: Some(metadata),
        inputs,
        upstream_node_ids: upstream.into_iter().collect(),
        output_aliases: Vec::new(),
        target: Some(target),
    })
}

pub(super) fn collect_refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::String(s) => {
            if let Ok(Some(r)) = parse_reference(s)
                && let Some(n) = r.node
            {
                out.insert(n);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        Value::Object(m) => m.values().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

pub(super) fn collect_node_refs(n: &NodeDef, out: &mut BTreeSet<String>) {
    for v in n.inputs.values() {
        collect_refs(v, out);
    }
    if let Some(b) = &n.branch {
        for c in &b.cases {
            collect_node_refs(&c.then, out);
        }
    }
}

pub(super) fn promise(r: &super::Reference) -> BindingData {
    BindingData {
        value: Some(binding_data::Value::Promise(OutputReference {
            node_id: r.node.clone().unwrap_or_default(),
            var: r.var.clone(),
            attr_path: r.path.clone(),
        })),
        union: None,
    }
}

pub(super) fn has_ref(v: &Value) -> bool {
    match v {
        Value::String(s) => matches!(parse_reference(s), Ok(Some(_)) | Err(_)),
        Value::Array(a) => a.iter().any(has_ref),
        Value::Object(m) => m.values().any(has_ref),
        _ => false,
    }
}

pub(super) fn unescape(v: &Value) -> Value {
    match v {
        Value::String(s) if s.trim_start().starts_with("$${") => {
            Value::String(s.replacen("$${", "${", 1))
        }
        Value::Array(a) => Value::Array(a.iter().map(unescape).collect()),
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, x)| (k.clone(), unescape(x))).collect())
        }
        o => o.clone(),
    }
}

/// A binding from a YAML value: references become promises, constants literals of the expected type.
pub(super) fn binding(v: &Value, t: Option<&LiteralType>) -> Result<BindingData, String> {
    if let Value::String(s) = v
        && let Some(r) = parse_reference(s)?
    {
        return Ok(promise(&r));
    }
    if has_ref(v) {
        // A list or map holding references: bind element-wise.
        return match v {
            Value::Array(items) => {
                let el = t.and_then(types::element);
                let bindings = items
                    .iter()
                    .map(|x| binding(x, el))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(BindingData {
                    value: Some(binding_data::Value::Collection(BindingDataCollection {
                        bindings,
                    })),
                    union: None,
                })
            }
            Value::Object(m) => {
                let el = t.and_then(|t| match &t.r#type {
                    Some(Type::MapValueType(e)) => Some(&**e),
                    _ => None,
                });
                let mut bindings = BTreeMap::new();
                for (k, x) in m {
                    bindings.insert(k.clone(), binding(x, el)?);
                }
                Ok(BindingData {
                    value: Some(binding_data::Value::Map(BindingDataMap { bindings })),
                    union: None,
                })
            }
            _ => Err("bad reference".into()),
        };
    }
    let v = unescape(v);
    let lit = match t {
        Some(t) => from_json(&v, t)?,
        None => {
            let guess = literal_guess(&v).ok_or("cannot tell this value's type")?;
            from_json(&v, &guess)?
        }
    };
    Ok(literal_binding(lit))
}

/// A literal as binding data (collections and maps element-wise, since bindings hold only scalars).
pub(super) fn literal_binding(lit: Literal) -> BindingData {
    let value = match lit.value {
        Some(literal::Value::Scalar(s)) => Some(binding_data::Value::Scalar(*s)),
        Some(literal::Value::Collection(c)) => {
            Some(binding_data::Value::Collection(BindingDataCollection {
                bindings: c.literals.into_iter().map(literal_binding).collect(),
            }))
        }
        Some(literal::Value::Map(m)) => Some(binding_data::Value::Map(BindingDataMap {
            bindings: m
                .literals
                .into_iter()
                .map(|(k, l)| (k, literal_binding(l)))
                .collect(),
        })),
        Some(literal::Value::OffloadedMetadata(o)) => {
            Some(binding_data::Value::OffloadedMetadata(o))
        }
        None => None,
    };
    BindingData { value, union: None }
}
