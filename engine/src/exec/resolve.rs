//! Turning bindings into values, and evaluating branch conditions.

use std::cmp::Ordering;

use updraft_proto::core::{
    BooleanExpression, Literal, LiteralCollection, LiteralMap, Operand, Primitive,
    boolean_expression, comparison_expression::Operator, conjunction_expression::LogicalOperator,
    literal, operand, primitive, promise_attribute, scalar,
};

use crate::compile::{BindingValue, Source};

/// Where a binding's promises find their values.
pub(super) trait Values {
    /// The inputs of the workflow (`None`) or of a subworkflow node.
    fn scope_inputs(&self, scope: Option<u32>) -> Option<&LiteralMap>;
    /// The outputs of a node, once it succeeded.
    fn node_outputs(&self, node: u32) -> Option<&LiteralMap>;
}

/// The value of a binding, or why it has none.
pub(super) fn resolve(v: &BindingValue, values: &impl Values) -> Result<Literal, String> {
    match v {
        BindingValue::Literal(l) => Ok((**l).clone()),
        BindingValue::Collection(items) => Ok(Literal {
            value: Some(literal::Value::Collection(LiteralCollection {
                literals: items
                    .iter()
                    .map(|i| resolve(i, values))
                    .collect::<Result<_, _>>()?,
            })),
            ..Default::default()
        }),
        BindingValue::Map(items) => Ok(Literal {
            value: Some(literal::Value::Map(LiteralMap {
                literals: items
                    .iter()
                    .map(|(k, i)| resolve(i, values).map(|l| (k.clone(), l)))
                    .collect::<Result<_, _>>()?,
            })),
            ..Default::default()
        }),
        BindingValue::Promise {
            source,
            var,
            attr_path,
        } => {
            let map = match source {
                Source::Inputs(scope) => values
                    .scope_inputs(*scope)
                    .ok_or("the scope's inputs are not known yet")?,
                Source::Node(n) => values
                    .node_outputs(*n)
                    .ok_or("the upstream node has no outputs")?,
            };
            let mut lit = map
                .literals
                .get(var)
                .ok_or_else(|| format!("no value for `{var}`"))?;
            for step in attr_path {
                lit = unwrap_union(lit);
                lit = match (&lit.value, &step.value) {
                    (
                        Some(literal::Value::Collection(c)),
                        Some(promise_attribute::Value::IntValue(i)),
                    ) => c
                        .literals
                        .get(usize::try_from(*i).map_err(|_| format!("index {i} is negative"))?)
                        .ok_or_else(|| {
                            format!("index {i} is out of range ({} elements)", c.literals.len())
                        })?,
                    (
                        Some(literal::Value::Map(m)),
                        Some(promise_attribute::Value::StringValue(k)),
                    ) => m.literals.get(k).ok_or_else(|| format!("no key `{k}`"))?,
                    _ => {
                        return Err(format!(
                            "cannot follow `{var}` into this value with {step:?}"
                        ));
                    }
                };
            }
            Ok(lit.clone())
        }
    }
}

/// The value inside a union literal (or the literal itself).
pub(super) fn unwrap_union(l: &Literal) -> &Literal {
    if let Some(literal::Value::Scalar(s)) = &l.value
        && let Some(scalar::Value::Union(u)) = &s.value
        && let Some(inner) = &u.value
    {
        return unwrap_union(inner);
    }
    l
}

fn primitive_of(l: &Literal) -> Option<&primitive::Value> {
    match &unwrap_union(l).value {
        Some(literal::Value::Scalar(s)) => match &s.value {
            Some(scalar::Value::Primitive(Primitive { value })) => value.as_ref(),
            _ => None,
        },
        _ => None,
    }
}

fn is_none(l: &Literal) -> bool {
    matches!(&unwrap_union(l).value, Some(literal::Value::Scalar(s)) if matches!(s.value, Some(scalar::Value::NoneType(_))))
}

fn compare(a: &primitive::Value, b: &primitive::Value) -> Option<Ordering> {
    use primitive::Value as P;
    match (a, b) {
        (P::Integer(x), P::Integer(y)) => Some(x.cmp(y)),
        (P::FloatValue(x), P::FloatValue(y)) => x.partial_cmp(y),
        (P::Integer(x), P::FloatValue(y)) => (*x as f64).partial_cmp(y),
        (P::FloatValue(x), P::Integer(y)) => x.partial_cmp(&(*y as f64)),
        (P::StringValue(x), P::StringValue(y)) => Some(x.cmp(y)),
        (P::Boolean(x), P::Boolean(y)) => Some(x.cmp(y)),
        (P::Datetime(x), P::Datetime(y)) => Some((x.seconds, x.nanos).cmp(&(y.seconds, y.nanos))),
        (P::Duration(x), P::Duration(y)) => Some((x.seconds, x.nanos).cmp(&(y.seconds, y.nanos))),
        _ => None,
    }
}

/// Evaluates a branch condition over the branch node's resolved inputs.
pub(super) fn evaluate(
    e: &BooleanExpression,
    inputs: &LiteralMap,
    depth: usize,
) -> Result<bool, String> {
    if depth > 64 {
        return Err("condition nested too deeply".into());
    }
    match &e.expr {
        None => Err("empty condition".into()),
        Some(boolean_expression::Expr::Conjunction(c)) => {
            let side = |x: &Option<Box<BooleanExpression>>| {
                x.as_deref()
                    .ok_or_else(|| "missing operand".to_string())
                    .and_then(|x| evaluate(x, inputs, depth + 1))
            };
            let left = side(&c.left_expression)?;
            Ok(match c.operator() {
                LogicalOperator::And => left && side(&c.right_expression)?,
                LogicalOperator::Or => left || side(&c.right_expression)?,
            })
        }
        Some(boolean_expression::Expr::Comparison(c)) => {
            let value = |o: &Option<Operand>| -> Result<Option<primitive::Value>, String> {
                match o.as_ref().and_then(|o| o.val.as_ref()) {
                    Some(operand::Val::Primitive(p)) => Ok(p.value.clone()),
                    Some(operand::Val::Var(v)) => {
                        let l = inputs
                            .literals
                            .get(v)
                            .ok_or_else(|| format!("no value for `{v}`"))?;
                        if is_none(l) {
                            return Ok(None);
                        }
                        primitive_of(l)
                            .cloned()
                            .map(Some)
                            .ok_or_else(|| format!("`{v}` is not a primitive value"))
                    }
                    Some(operand::Val::Scalar(s)) => match &s.value {
                        Some(scalar::Value::Primitive(p)) => Ok(p.value.clone()),
                        Some(scalar::Value::NoneType(_)) => Ok(None),
                        _ => Err("only primitive constants can be compared".into()),
                    },
                    None => Err("missing operand".into()),
                }
            };
            let (l, r) = (value(&c.left_value)?, value(&c.right_value)?);
            let ord = match (&l, &r) {
                (None, None) => Some(Ordering::Equal),
                (None, _) | (_, None) => None,
                (Some(a), Some(b)) => compare(a, b),
            };
            Ok(match (c.operator(), ord) {
                (Operator::Eq, o) => o == Some(Ordering::Equal),
                (Operator::Neq, o) => o != Some(Ordering::Equal),
                (_, None) => return Err(format!("cannot compare {l:?} with {r:?}")),
                (Operator::Gt, Some(o)) => o == Ordering::Greater,
                (Operator::Gte, Some(o)) => o != Ordering::Less,
                (Operator::Lt, Some(o)) => o == Ordering::Less,
                (Operator::Lte, Some(o)) => o != Ordering::Greater,
            })
        }
    }
}
