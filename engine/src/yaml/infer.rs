//! Types of YAML references: what a node outputs, what a target expects, what a constant is.

use std::collections::BTreeMap;

use serde_json::Value;
use updraft_proto::core::{self as core, LiteralType, literal_type::Type};

use super::convert::{Ctx, workflow_inputs};
use super::refs::parse_reference;
use super::{InputDef, NodeDef, OutputDef, WorkflowDef};
use crate::types;

/// The declared or inferable output types of a node (None = unknown).
pub(super) fn node_outputs(
    ctx: &mut Ctx<'_>,
    wf: &WorkflowDef,
    n: &NodeDef,
) -> Option<BTreeMap<String, LiteralType>> {
    let doc = ctx.doc;
    let task_outputs =
        |ctx: &mut Ctx<'_>, t: &str| doc.tasks.get(t).map(|d| ctx.vars(&d.outputs, "outputs"));
    if let Some(t) = &n.task {
        return task_outputs(ctx, t);
    }
    if let Some(m) = &n.map {
        let partial = m.min_success_ratio.is_some_and(|r| r < 1.0) || m.min_successes.is_some();
        return task_outputs(ctx, &m.task).map(|o| {
            o.into_iter()
                .map(|(k, t)| {
                    (
                        k,
                        types::list_of(if partial { types::optional(t) } else { t }),
                    )
                })
                .collect()
        });
    }
    if let Some(w) = &n.workflow {
        return workflow_outputs(ctx, w);
    }
    if let Some(lp) = &n.launch_plan {
        let wf_name = doc
            .launch_plans
            .get(lp)
            .map(|d| d.workflow.clone())
            .unwrap_or_else(|| lp.clone());
        return workflow_outputs(ctx, &wf_name);
    }
    if let Some(g) = &n.gate {
        if g.signal.is_some() {
            let t = types::parse(g.r#type.as_deref().unwrap_or("str")).ok()?;
            return Some([("value".to_string(), t)].into());
        }
        if g.approve.is_some() {
            let (var, v) = n.inputs.iter().next()?;
            let t = match v {
                Value::String(s) => match parse_reference(s) {
                    Ok(Some(r)) => infer_ref(ctx, wf, &r, "")?,
                    _ => types::simple(core::SimpleType::String),
                },
                other => literal_guess(other)?,
            };
            return Some([(var.clone(), t)].into());
        }
        return Some(BTreeMap::new());
    }
    if let Some(b) = &n.branch {
        return node_outputs(ctx, wf, &b.cases.first()?.then);
    }
    None
}

pub(super) fn workflow_outputs(
    ctx: &mut Ctx<'_>,
    name: &str,
) -> Option<BTreeMap<String, LiteralType>> {
    if let Some(memo) = ctx.wf_outputs.get(name) {
        return memo.clone();
    }
    if ctx.inferring.iter().any(|w| w == name) {
        return None;
    }
    let doc = ctx.doc;
    let def = doc.workflows.get(name)?;
    ctx.inferring.push(name.to_string());
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (k, o) in &def.outputs {
        let t = match o {
            OutputDef::Full(f) => types::parse(&f.r#type).ok(),
            OutputDef::Value(s) => match parse_reference(s) {
                Ok(Some(r)) => infer_ref(ctx, def, &r, ""),
                _ => None,
            },
        };
        match t {
            Some(t) => {
                out.insert(k.clone(), t);
            }
            None => ok = false,
        }
    }
    ctx.inferring.pop();
    let result = ok.then_some(out);
    ctx.wf_outputs.insert(name.to_string(), result.clone());
    result
}

pub(super) fn infer_ref(
    ctx: &mut Ctx<'_>,
    wf: &WorkflowDef,
    r: &super::Reference,
    field: &str,
) -> Option<LiteralType> {
    let base = match &r.node {
        None => {
            let inputs = wf.inputs.get(&r.var)?;
            types::parse(match inputs {
                InputDef::Type(t) => t,
                InputDef::Full(f) => &f.r#type,
            })
            .ok()?
        }
        Some(n) => {
            let node = wf.nodes.iter().find(|x| &x.id == n)?;
            let outs = node_outputs(ctx, wf, node)?;
            match outs.get(&r.var) {
                Some(t) => t.clone(),
                None => {
                    if !field.is_empty() {
                        let have: Vec<&String> = outs.keys().collect();
                        ctx.problem(
                            None,
                            field,
                            format!("node `{n}` has no output `{}` (it has: {have:?})", r.var),
                        );
                    }
                    return None;
                }
            }
        }
    };
    let mut t = base;
    for p in &r.path {
        t = match (&t.r#type, &p.value) {
            (Some(Type::CollectionType(el)), Some(core::promise_attribute::Value::IntValue(_))) => {
                (**el).clone()
            }
            (
                Some(Type::MapValueType(el)),
                Some(core::promise_attribute::Value::StringValue(_)),
            ) => (**el).clone(),
            _ => return None,
        };
    }
    Some(t)
}

/// The type a constant written without a declared type most likely has.
pub(super) fn literal_guess(v: &Value) -> Option<LiteralType> {
    use core::SimpleType as S;
    Some(match v {
        Value::Null => types::simple(S::None),
        Value::Bool(_) => types::simple(S::Boolean),
        Value::Number(n) if n.is_i64() => types::simple(S::Integer),
        Value::Number(_) => types::simple(S::Float),
        Value::String(_) => types::simple(S::String),
        Value::Array(a) => types::list_of(
            a.first()
                .map_or(Some(types::simple(S::None)), literal_guess)?,
        ),
        Value::Object(m) => types::map_of(
            m.values()
                .next()
                .map_or(Some(types::simple(S::None)), literal_guess)?,
        ),
    })
}

/// The input types a node's target expects, when the target is defined in this file.
pub(super) fn target_inputs(
    ctx: &mut Ctx<'_>,
    n: &NodeDef,
) -> Option<BTreeMap<String, LiteralType>> {
    let doc = ctx.doc;
    if let Some(t) = &n.task {
        return doc.tasks.get(t).map(|d| ctx.vars(&d.inputs, "inputs"));
    }
    if let Some(m) = &n.map {
        let inputs = doc
            .tasks
            .get(&m.task)
            .map(|d| ctx.vars(&d.inputs, "inputs"))?;
        return Some(
            inputs
                .into_iter()
                .map(|(k, t)| {
                    let mapped = m.over.as_ref().is_none_or(|o| o.contains(&k));
                    (k, if mapped { types::list_of(t) } else { t })
                })
                .collect(),
        );
    }
    let wf_name = n.workflow.clone().or_else(|| {
        n.launch_plan.as_ref().map(|lp| {
            doc.launch_plans
                .get(lp)
                .map_or_else(|| lp.clone(), |d| d.workflow.clone())
        })
    })?;
    let wf = doc.workflows.get(&wf_name)?;
    Some(workflow_inputs(ctx, wf))
}
