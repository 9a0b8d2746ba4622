//! Bindings: converting proto bindings to [`BindingValue`]s, resolving promises, checking their types,
//! and checking branch conditions.

use std::collections::{BTreeMap, BTreeSet};

use updraft_proto::core::{
    BindingData, BooleanExpression, Literal, LiteralType, Operand, binding_data,
    boolean_expression, literal, literal_type::Type, operand, promise_attribute,
};

use super::workflow::{Builder, PendingCheck, PendingValue, Scope};
use super::{BindingValue, NodeIdx, NodeKind, Source};
use crate::types;

const MAX_BINDING_DEPTH: usize = 64;

impl Builder<'_> {
    /// Converts a binding of node `idx` (field `field`), resolving promises in `scope`.
    pub(super) fn convert(
        &mut self,
        data: &BindingData,
        scope: &Scope,
        refs: &mut BTreeSet<NodeIdx>,
        idx: NodeIdx,
        field: &str,
        depth: usize,
    ) -> Option<BindingValue> {
        self.convert_at(data, scope, refs, Some(idx), field, depth)
    }

    /// Converts a binding that belongs to no node (a workflow output).
    pub(super) fn convert_unowned(
        &mut self,
        data: &BindingData,
        scope: &Scope,
        refs: &mut BTreeSet<NodeIdx>,
        field: &str,
    ) -> Option<BindingValue> {
        self.convert_at(data, scope, refs, None, field, 0)
    }

    fn convert_at(
        &mut self,
        data: &BindingData,
        scope: &Scope,
        refs: &mut BTreeSet<NodeIdx>,
        idx: Option<NodeIdx>,
        field: &str,
        depth: usize,
    ) -> Option<BindingValue> {
        if depth > MAX_BINDING_DEPTH {
            self.problem(
                idx,
                field,
                format!("binding nested deeper than {MAX_BINDING_DEPTH}"),
            );
            return None;
        }
        match &data.value {
            None => {
                self.problem(idx, field, "the binding has no value");
                None
            }
            Some(binding_data::Value::Scalar(s)) => {
                Some(BindingValue::Literal(Box::new(Literal {
                    value: Some(literal::Value::Scalar(Box::new(s.clone()))),
                    ..Default::default()
                })))
            }
            Some(binding_data::Value::Collection(c)) => {
                let mut out = Vec::with_capacity(c.bindings.len());
                for (i, b) in c.bindings.iter().enumerate() {
                    out.push(self.convert_at(
                        b,
                        scope,
                        refs,
                        idx,
                        &format!("{field}[{i}]"),
                        depth + 1,
                    )?);
                }
                Some(fold_collection(out))
            }
            Some(binding_data::Value::Map(m)) => {
                let mut out = BTreeMap::new();
                for (k, b) in &m.bindings {
                    out.insert(
                        k.clone(),
                        self.convert_at(b, scope, refs, idx, &format!("{field}.{k}"), depth + 1)?,
                    );
                }
                Some(fold_map(out))
            }
            Some(binding_data::Value::OffloadedMetadata(_)) => {
                self.problem(
                    idx,
                    field,
                    "offloaded literals cannot be bound in a workflow definition",
                );
                None
            }
            Some(binding_data::Value::Promise(p)) => {
                let source = if p.node_id.is_empty() {
                    if !scope.input_types.contains_key(&p.var) {
                        self.problem(idx, field, format!("the workflow has no input `{}`", p.var));
                        return None;
                    }
                    scope.inputs.clone()
                } else {
                    match scope.ids.get(&p.node_id) {
                        Some(&n) => {
                            refs.insert(n);
                            Source::Node(n)
                        }
                        None => {
                            self.problem(
                                idx,
                                field,
                                format!(
                                    "refers to node `{}`, which does not exist in this workflow",
                                    p.node_id
                                ),
                            );
                            return None;
                        }
                    }
                };
                Some(BindingValue::Promise {
                    source,
                    var: p.var.clone(),
                    attr_path: p.attr_path.clone(),
                })
            }
        }
    }

    /// Records that approve gate `idx` passes its inputs through as outputs (typed in [`Self::run_checks`]).
    pub(super) fn pending_passthrough(&mut self, idx: NodeIdx, vars: Vec<String>) {
        if vars.is_empty() {
            self.problem(
                Some(idx),
                "inputs",
                "an approve gate needs the value it approves as an input",
            );
        }
        for v in vars {
            self.nodes[idx as usize]
                .outputs
                .insert(v, LiteralType::default());
        }
    }

    /// The type a binding produces, or None when it cannot be known (unknown node, attribute path into a
    /// struct). Reports promises to outputs that do not exist.
    fn binding_type(
        &mut self,
        v: &BindingValue,
        scope: &Scope,
        owner: Option<NodeIdx>,
        field: &str,
    ) -> Option<LiteralType> {
        match v {
            BindingValue::Literal(l) => types::type_of(l),
            BindingValue::Collection(_) | BindingValue::Map(_) => None,
            BindingValue::Promise {
                source,
                var,
                attr_path,
            } => {
                let base = match source {
                    Source::Inputs(_) => scope.input_types.get(var).cloned(),
                    Source::Node(n) => {
                        if self.unknown_outputs.contains(n) {
                            return None;
                        }
                        let node = &self.nodes[*n as usize];
                        match node.outputs.get(var) {
                            Some(t) if t.r#type.is_none() => return None,
                            Some(t) => Some(t.clone()),
                            None => {
                                let (id, have) = (
                                    node.id.clone(),
                                    node.outputs.keys().cloned().collect::<Vec<_>>().join(", "),
                                );
                                self.problem(
                                    owner,
                                    field,
                                    format!(
                                        "node `{id}` has no output `{var}` (it has: {})",
                                        if have.is_empty() { "none" } else { &have }
                                    ),
                                );
                                return None;
                            }
                        }
                    }
                };
                let mut t = base?;
                for step in attr_path {
                    t = match (&t.r#type, &step.value) {
                        (
                            Some(Type::CollectionType(el)),
                            Some(promise_attribute::Value::IntValue(_)),
                        ) => (**el).clone(),
                        (
                            Some(Type::MapValueType(el)),
                            Some(promise_attribute::Value::StringValue(_)),
                        ) => (**el).clone(),
                        _ => return None,
                    };
                }
                Some(t)
            }
        }
    }

    /// Checks every pending binding of a scope once all its nodes are built.
    pub(super) fn run_checks(&mut self, scope: &Scope, pending: Vec<PendingCheck>) {
        self.type_passthroughs(scope);
        for p in pending {
            match (p.value, p.node) {
                (PendingValue::Input(i), Some(n)) => {
                    // Take the binding out while checking it (the checker borrows the arena), then put it back.
                    let value = std::mem::replace(
                        &mut self.nodes[n as usize].inputs[i].1,
                        BindingValue::Collection(Vec::new()),
                    );
                    self.check(&value, &p.expected, scope, p.node, &p.field, 0);
                    self.nodes[n as usize].inputs[i].1 = value;
                }
                (PendingValue::Owned(value), _) => {
                    self.check(&value, &p.expected, scope, p.node, &p.field, 0)
                }
                (PendingValue::Input(_), None) => {}
            }
        }
    }

    fn type_passthroughs(&mut self, scope: &Scope) {
        // Approve gates in this scope: outputs take their inputs' types (chains resolve in a few rounds).
        let gates: Vec<NodeIdx> = scope
            .ids
            .values()
            .copied()
            .filter(|&i| {
                matches!(
                    self.nodes[i as usize].kind,
                    NodeKind::Gate(super::Gate::Approve { .. })
                )
            })
            .collect();
        for _ in 0..=gates.len() {
            let mut changed = false;
            for &g in &gates {
                for (var, value) in self.nodes[g as usize].inputs.clone() {
                    let known = self.nodes[g as usize]
                        .outputs
                        .get(&var)
                        .is_some_and(|t| t.r#type.is_some());
                    if known {
                        continue;
                    }
                    if let Some(t) =
                        self.binding_type(&value, scope, Some(g), &format!("inputs.{var}"))
                    {
                        self.nodes[g as usize]
                            .outputs
                            .insert(var.clone(), t.clone());
                        self.nodes[g as usize].input_types.insert(var, t);
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        for g in gates {
            if self.nodes[g as usize]
                .outputs
                .values()
                .any(|t| t.r#type.is_none())
            {
                self.unknown_outputs.insert(g);
            }
        }
    }

    fn check(
        &mut self,
        v: &BindingValue,
        expected: &LiteralType,
        scope: &Scope,
        owner: Option<NodeIdx>,
        field: &str,
        depth: usize,
    ) {
        if depth > MAX_BINDING_DEPTH {
            return;
        }
        match v {
            BindingValue::Literal(l) => {
                if !types::literal_fits(l, expected) {
                    self.problem(owner, field, types::mismatch(expected, l));
                }
            }
            BindingValue::Collection(items) => {
                let el = list_target(expected);
                match el {
                    Some(el) => {
                        for (i, item) in items.iter().enumerate() {
                            self.check(
                                item,
                                &el,
                                scope,
                                owner,
                                &format!("{field}[{i}]"),
                                depth + 1,
                            );
                        }
                    }
                    None => self.problem(
                        owner,
                        field,
                        format!("expected {}, got a list", types::display(expected)),
                    ),
                }
            }
            BindingValue::Map(items) => match map_target(expected) {
                Some(Some(el)) => {
                    for (k, item) in items {
                        self.check(item, &el, scope, owner, &format!("{field}.{k}"), depth + 1);
                    }
                }
                Some(None) => {}
                None => self.problem(
                    owner,
                    field,
                    format!("expected {}, got a map", types::display(expected)),
                ),
            },
            BindingValue::Promise { .. } => {
                if let Some(actual) = self.binding_type(v, scope, owner, field)
                    && !types::castable(&actual, expected)
                {
                    self.problem(
                        owner,
                        field,
                        format!(
                            "expected {}, got {}",
                            types::display(expected),
                            types::display(&actual)
                        ),
                    );
                }
            }
        }
    }

    /// Checks a branch condition: operands are constants or the branch node's own inputs.
    pub(super) fn check_condition(
        &mut self,
        idx: NodeIdx,
        field: &str,
        e: &BooleanExpression,
        vars: &BTreeSet<String>,
        depth: usize,
    ) {
        if depth > MAX_BINDING_DEPTH {
            self.problem(Some(idx), field, "condition nested too deeply");
            return;
        }
        match &e.expr {
            None => self.problem(Some(idx), field, "empty condition"),
            Some(boolean_expression::Expr::Conjunction(c)) => {
                for (side, sub) in [
                    ("left_expression", &c.left_expression),
                    ("right_expression", &c.right_expression),
                ] {
                    match sub {
                        Some(s) => self.check_condition(
                            idx,
                            &format!("{field}.{side}"),
                            s,
                            vars,
                            depth + 1,
                        ),
                        None => {
                            self.problem(Some(idx), format!("{field}.{side}"), "missing operand")
                        }
                    }
                }
            }
            Some(boolean_expression::Expr::Comparison(c)) => {
                for (side, op) in [
                    ("left_value", &c.left_value),
                    ("right_value", &c.right_value),
                ] {
                    match op {
                        Some(Operand {
                            val: Some(operand::Val::Var(v)),
                        }) if !vars.contains(v) => self.problem(
                            Some(idx),
                            format!("{field}.{side}"),
                            format!("`{v}` is not an input of the branch node"),
                        ),
                        Some(Operand { val: Some(_) }) => {}
                        _ => self.problem(Some(idx), format!("{field}.{side}"), "missing operand"),
                    }
                }
            }
        }
    }
}

/// A list of constants becomes one collection literal; otherwise the bindings stay element-wise.
fn fold_collection(items: Vec<BindingValue>) -> BindingValue {
    if !items.iter().all(|b| matches!(b, BindingValue::Literal(_))) {
        return BindingValue::Collection(items);
    }
    let literals = items
        .into_iter()
        .filter_map(|b| match b {
            BindingValue::Literal(l) => Some(*l),
            _ => None,
        })
        .collect();
    BindingValue::Literal(Box::new(Literal {
        value: Some(literal::Value::Collection(
            updraft_proto::core::LiteralCollection { literals },
        )),
        ..Default::default()
    }))
}

/// A map of constants becomes one map literal; otherwise the bindings stay entry-wise.
fn fold_map(items: BTreeMap<String, BindingValue>) -> BindingValue {
    if !items
        .values()
        .all(|b| matches!(b, BindingValue::Literal(_)))
    {
        return BindingValue::Map(items);
    }
    let literals = items
        .into_iter()
        .filter_map(|(k, b)| match b {
            BindingValue::Literal(l) => Some((k, *l)),
            _ => None,
        })
        .collect();
    BindingValue::Literal(Box::new(Literal {
        value: Some(literal::Value::Map(updraft_proto::core::LiteralMap {
            literals,
        })),
        ..Default::default()
    }))
}

/// The element type a list binding must produce for `expected` (through unions and structs).
fn list_target(expected: &LiteralType) -> Option<LiteralType> {
    match &expected.r#type {
        Some(Type::CollectionType(el)) => Some((**el).clone()),
        Some(Type::UnionType(u)) => u.variants.iter().find_map(list_target),
        _ => None,
    }
}

/// The value type a map binding must produce: Some(Some(t)) for a typed map, Some(None) for a struct.
fn map_target(expected: &LiteralType) -> Option<Option<LiteralType>> {
    match &expected.r#type {
        Some(Type::MapValueType(el)) => Some(Some((**el).clone())),
        Some(Type::Simple(s)) if *s == updraft_proto::core::SimpleType::Struct as i32 => Some(None),
        Some(Type::UnionType(u)) => u.variants.iter().find_map(map_target),
        _ => None,
    }
}
