//! What Flyte's query plugins (Hive on Qubole or EMR Serverless, Athena) share: the query rendered with
//! the attempt's variables, and the `results` output — a schema literal pointing at where the query
//! wrote — which a handle carries as JSON.

use serde_json::Value;
use updraft_engine::compile::CompiledTask;
use updraft_engine::template::render;
use updraft_proto::Message;
use updraft_proto::core::literal_type::Type;
use updraft_proto::core::{
    Literal, LiteralMap, LiteralType, Scalar, Schema, StructuredDataset, StructuredDatasetMetadata,
    literal, scalar,
};

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

/// The queries of a `hive` task's `QuboleHiveJob` (its `custom`, as JSON): `query.query`, else every
/// query of `queryCollection`, in order, each with the field it came from; empty when there is none.
pub fn hive_queries(custom: &serde_json::Map<String, Value>) -> Vec<(String, String)> {
    if let Some(q) = custom
        .get("query")
        .and_then(|q| q["query"].as_str())
        .filter(|q| !q.is_empty())
    {
        return vec![("custom.query.query".into(), q.to_string())];
    }
    custom
        .get("queryCollection")
        .and_then(|qc| qc.get("queries"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, q)| {
            let t = q["query"].as_str().filter(|t| !t.is_empty())?;
            Some((
                format!("custom.queryCollection.queries[{i}].query"),
                t.to_string(),
            ))
        })
        .collect()
}

/// Several rendered Hive queries as one script, in order: each without its trailing `;`, joined by
/// `;` and a line break, ended by `;`.
pub fn hive_script(queries: &[String]) -> String {
    queries
        .iter()
        .map(|q| q.trim().trim_end_matches(';'))
        .collect::<Vec<_>>()
        .join(";\n")
        + ";"
}

/// The type of the task's `results` output, as Flyte's query plugins require it: no output, or one
/// named `results` that is a schema (`FlyteSchema`) or a structured dataset.
pub fn results_type(task: &CompiledTask) -> Result<Option<LiteralType>, Problem> {
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
                Some(Type::Schema(_) | Type::StructuredDatasetType(_)) => Ok(Some(t.clone())),
                _ => Err(problem(format!(
                    "`{RESULTS}` of a query task is a schema or a structured dataset; it is not"
                ))),
            }
        }
        n => Err(problem(format!(
            "a query task has at most one output (`{RESULTS}`); it has {n}"
        ))),
    }
}

/// A results type as a handle keeps it: its protobuf in hex, or null for none.
pub fn type_json(t: Option<&LiteralType>) -> Value {
    match t {
        None => Value::Null,
        Some(t) => Value::from(
            t.encode_to_vec()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>(),
        ),
    }
}

/// The results type [`type_json`] kept; None for null (or anything else).
pub fn type_of_json(v: &Value) -> Option<LiteralType> {
    let hex = v.as_str()?;
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    LiteralType::decode(bytes?.as_slice()).ok()
}

/// The outputs of a finished query: `results` = a schema or structured dataset at `uri`, as the task
/// declares it, or none without one.
pub fn results(t: Option<LiteralType>, uri: &str) -> LiteralMap {
    let mut out = LiteralMap::default();
    let value = match t.and_then(|t| t.r#type) {
        Some(Type::Schema(s)) => scalar::Value::Schema(Schema {
            uri: uri.to_string(),
            r#type: Some(s),
        }),
        Some(Type::StructuredDatasetType(d)) => {
            scalar::Value::StructuredDataset(StructuredDataset {
                uri: uri.to_string(),
                metadata: Some(StructuredDatasetMetadata {
                    structured_dataset_type: Some(d),
                }),
            })
        }
        _ => return out,
    };
    out.literals.insert(
        RESULTS.into(),
        Literal {
            value: Some(literal::Value::Scalar(Box::new(Scalar {
                value: Some(value),
            }))),
            ..Default::default()
        },
    );
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use updraft_proto::core::schema_type::SchemaColumn;
    use updraft_proto::core::{SchemaType, StructuredDatasetType};

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

    fn scalar_of(out: &LiteralMap) -> scalar::Value {
        let Some(literal::Value::Scalar(sc)) = &out.literals["results"].value else {
            panic!("{out:?}")
        };
        sc.value.clone().unwrap()
    }

    #[test]
    fn results_are_one_schema_or_dataset_or_nothing() {
        let schema = Type::Schema(SchemaType {
            columns: vec![SchemaColumn {
                name: "a".into(),
                r#type: 1,
            }],
        });
        assert_eq!(results_type(&task(&[])).unwrap(), None);
        let t = results_type(&task(&[("results", Some(schema.clone()))])).unwrap();
        assert_eq!(
            t.as_ref().and_then(|t| t.r#type.clone()),
            Some(schema.clone())
        );
        let e = results_type(&task(&[("out", Some(schema.clone()))])).unwrap_err();
        assert!(e.reason.contains("`out`"), "{e:?}");
        let e = results_type(&task(&[("results", None)])).unwrap_err();
        assert!(e.reason.contains("schema"), "{e:?}");
        let two = task(&[("results", Some(schema.clone())), ("more", None)]);
        assert!(results_type(&two).unwrap_err().reason.contains("2"));
        let kept = type_json(t.as_ref());
        assert_eq!(type_of_json(&kept), t);
        assert_eq!(type_of_json(&type_json(None)), None);
        let scalar::Value::Schema(s) = scalar_of(&results(t, "s3://b/raw")) else {
            panic!()
        };
        assert_eq!(s.uri, "s3://b/raw");
        assert!(results(None, "x").literals.is_empty());
        let dataset = Type::StructuredDatasetType(StructuredDatasetType {
            format: "parquet".into(),
            ..Default::default()
        });
        let t = results_type(&task(&[("results", Some(dataset))])).unwrap();
        let scalar::Value::StructuredDataset(d) = scalar_of(&results(t, "s3://b/r.csv")) else {
            panic!()
        };
        assert_eq!(d.uri, "s3://b/r.csv");
        assert_eq!(
            d.metadata.unwrap().structured_dataset_type.unwrap().format,
            "parquet"
        );
    }
}
