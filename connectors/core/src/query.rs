//! What Flyte's query plugins (Hive on Qubole or EMR Serverless, Athena) share: the query rendered with
//! the attempt's variables, and the `results` output — a schema literal pointing at where the query
//! wrote — which a handle carries as JSON.

use serde_json::{Value, json};
use updraft_engine::compile::CompiledTask;
use updraft_engine::template::render;
use updraft_proto::core::literal_type::Type;
use updraft_proto::core::schema_type::SchemaColumn;
use updraft_proto::core::{Literal, LiteralMap, Scalar, Schema, SchemaType, literal, scalar};

use crate::{Attempt, Problem};

/// The output a query task declares.
pub const RESULTS: &str = "results";

/// `text` rendered with the attempt's variables (`{{ .inputs.x }}`, `{{ .PerRetryUniqueKey }}`,
/// `{{ .RawOutputDataPrefix }}`, in any case); the problem names `field`.
pub fn render_query(text: &str, a: &Attempt<'_>, field: &str) -> Result<String, Problem> {
    render(text, &a.paths.vars(a.launch, "")).map_err(|reason| Problem {
        field: field.into(),
        reason,
    })
}

/// The schema of the task's `results` output, as Flyte's Hive plugin requires it: no output, or one
/// named `results` of a schema type.
pub fn results_type(task: &CompiledTask) -> Result<Option<SchemaType>, Problem> {
    let outputs = &task.interface.outputs;
    let problem = |reason: String| Problem {
        field: "interface.outputs".into(),
        reason,
    };
    match outputs.len() {
        0 => Ok(None),
        1 => {
            let (name, t) = outputs
                .iter()
                .next()
                .ok_or_else(|| problem(String::new()))?;
            if name != RESULTS {
                return Err(problem(format!(
                    "a query task has at most one output, named `{RESULTS}`; it has `{name}`"
                )));
            }
            match &t.r#type {
                Some(Type::Schema(s)) => Ok(Some(s.clone())),
                _ => Err(problem(format!(
                    "`{RESULTS}` of a query task is a schema (FlyteSchema); it is not"
                ))),
            }
        }
        n => Err(problem(format!(
            "a query task has at most one output (`{RESULTS}`); it has {n}"
        ))),
    }
}

/// A schema type as a handle keeps it: `[[column, type], …]`, or null for no output.
pub fn schema_json(t: Option<&SchemaType>) -> Value {
    match t {
        None => Value::Null,
        Some(t) => Value::Array(
            t.columns
                .iter()
                .map(|c| json!([c.name, c.r#type]))
                .collect(),
        ),
    }
}

/// The schema type [`schema_json`] kept; None for null.
pub fn schema_of_json(v: &Value) -> Option<SchemaType> {
    let columns = v.as_array()?;
    Some(SchemaType {
        columns: columns
            .iter()
            .map(|c| SchemaColumn {
                name: c[0].as_str().unwrap_or_default().to_string(),
                r#type: c[1].as_i64().unwrap_or_default() as i32,
            })
            .collect(),
    })
}

/// The outputs of a finished query: `results` = a schema at `uri` of type `t`, or none without one.
pub fn results(t: Option<SchemaType>, uri: &str) -> LiteralMap {
    let mut out = LiteralMap::default();
    if let Some(t) = t {
        out.literals.insert(
            RESULTS.into(),
            Literal {
                value: Some(literal::Value::Scalar(Box::new(Scalar {
                    value: Some(scalar::Value::Schema(Schema {
                        uri: uri.to_string(),
                        r#type: Some(t),
                    })),
                }))),
                ..Default::default()
            },
        );
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use updraft_proto::core::LiteralType;

    fn task(outputs: &[(&str, Option<Type>)]) -> CompiledTask {
        let mut interface = updraft_engine::compile::Interface::default();
        for (n, t) in outputs {
            interface.outputs.insert(
                n.to_string(),
                LiteralType {
                    r#type: t.clone(),
                    ..Default::default()
                },
            );
        }
        CompiledTask {
            name: "q".into(),
            template: Default::default(),
            plugin: updraft_engine::plugins::PluginKind::Hive,
            interface,
        }
    }

    #[test]
    fn results_are_one_schema_or_nothing() {
        let schema = SchemaType {
            columns: vec![SchemaColumn {
                name: "a".into(),
                r#type: 1,
            }],
        };
        assert_eq!(results_type(&task(&[])).unwrap(), None);
        let t = results_type(&task(&[("results", Some(Type::Schema(schema.clone())))])).unwrap();
        assert_eq!(t.as_ref(), Some(&schema));
        let e = results_type(&task(&[("out", Some(Type::Schema(schema.clone())))])).unwrap_err();
        assert!(e.reason.contains("`out`"), "{e:?}");
        let e = results_type(&task(&[("results", None)])).unwrap_err();
        assert!(e.reason.contains("schema"), "{e:?}");
        let two = task(&[
            ("results", Some(Type::Schema(schema.clone()))),
            ("more", None),
        ]);
        assert!(results_type(&two).unwrap_err().reason.contains("2"));
        let kept = schema_json(t.as_ref());
        assert_eq!(schema_of_json(&kept).as_ref(), Some(&schema));
        assert_eq!(schema_of_json(&schema_json(None)), None);
        let out = results(t, "s3://b/raw");
        let Some(literal::Value::Scalar(sc)) = &out.literals["results"].value else {
            panic!("{out:?}")
        };
        let Some(scalar::Value::Schema(s)) = &sc.value else {
            panic!("{out:?}")
        };
        assert_eq!(s.uri, "s3://b/raw");
        assert!(results(None, "x").literals.is_empty());
    }
}
