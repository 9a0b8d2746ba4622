//! Rendering of container arguments and queries: `{{.input}}`, `{{.outputPrefix}}`, `{{.inputs.x}}`, …
//!
//! Each argv element is rendered on its own and never goes through a shell, so values cannot split or
//! inject arguments. Placeholders are case-insensitive, may be written `{{.name}}` or `{{$name}}`, and may
//! have spaces inside the braces. An unknown placeholder, or an input the task does not have, is an error.

use updraft_proto::core::{Literal, LiteralMap, literal, primitive, scalar};

/// The values placeholders stand for.
#[derive(Debug, Clone, Default)]
pub struct Vars<'a> {
    /// `{{.input}}`: URI of inputs.pb.
    pub input: &'a str,
    /// `{{.inputPrefix}}`: the folder of inputs.pb.
    pub input_prefix: &'a str,
    /// `{{.outputPrefix}}`: where the task writes outputs.pb / error.pb / futures.pb.
    pub output_prefix: &'a str,
    /// `{{.rawOutputDataPrefix}}`: unique per attempt, for files and directories the task makes.
    pub raw_output_prefix: &'a str,
    /// `{{.checkpointOutputPrefix}}`: where this attempt writes checkpoints.
    pub checkpoint_prefix: &'a str,
    /// `{{.prevCheckpointPrefix}}`: the previous attempt's checkpoints (`""` on the first attempt).
    pub prev_checkpoint_prefix: Option<&'a str>,
    /// `{{.perRetryUniqueKey}}`.
    pub per_retry_key: &'a str,
    /// `{{.taskTemplatePath}}`: URI of the task template.
    pub task_template_path: &'a str,
    /// `{{.namespace}}`.
    pub namespace: &'a str,
    /// `{{.inputs.<name>}}`: the task's inputs.
    pub inputs: Option<&'a LiteralMap>,
}

/// Why rendering failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("argument {index}: {reason}")]
pub struct TemplateError {
    /// Which argv element.
    pub index: usize,
    /// What is wrong.
    pub reason: String,
}

/// Renders every argument.
pub fn render_args(args: &[String], vars: &Vars<'_>) -> Result<Vec<String>, TemplateError> {
    args.iter()
        .enumerate()
        .map(|(index, a)| render(a, vars).map_err(|reason| TemplateError { index, reason }))
        .collect()
}

/// Renders one string.
pub fn render(text: &str, vars: &Vars<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let inner = after[..end].trim();
        match inner.strip_prefix('.').or_else(|| inner.strip_prefix('$')) {
            Some(name) => out.push_str(&value(name.trim(), vars)?),
            // Not a placeholder of ours (e.g. a Go or Jinja template in user text): keep it.
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn value(name: &str, v: &Vars<'_>) -> Result<String, String> {
    let lower = name.to_ascii_lowercase();
    if let Some(input) = lower.strip_prefix("inputs.") {
        let map = v
            .inputs
            .ok_or_else(|| format!("`{{{{.{name}}}}}` but the task has no inputs"))?;
        let lit = map
            .literals
            .iter()
            .find(|(k, _)| k.to_ascii_lowercase() == input)
            .map(|(_, l)| l)
            .ok_or_else(|| format!("`{{{{.{name}}}}}`: the task has no input `{}`", &name[7..]))?;
        return Ok(literal_text(lit));
    }
    Ok(match lower.as_str() {
        "input" => v.input.to_string(),
        "inputprefix" => v.input_prefix.to_string(),
        "outputprefix" => v.output_prefix.to_string(),
        "rawoutputdataprefix" => v.raw_output_prefix.to_string(),
        "checkpointoutputprefix" => v.checkpoint_prefix.to_string(),
        "prevcheckpointprefix" => v.prev_checkpoint_prefix.unwrap_or("\"\"").to_string(),
        "perretryuniquekey" => v.per_retry_key.to_string(),
        "tasktemplatepath" => v.task_template_path.to_string(),
        "namespace" => v.namespace.to_string(),
        _ => return Err(format!("unknown placeholder `{{{{.{name}}}}}`")),
    })
}

/// A value as text: primitives as written, blobs as their URI, lists as `[a,b]`, none as empty.
pub fn literal_text(l: &Literal) -> String {
    match &l.value {
        Some(literal::Value::Scalar(s)) => match &s.value {
            Some(scalar::Value::Primitive(p)) => match &p.value {
                Some(primitive::Value::Integer(i)) => i.to_string(),
                Some(primitive::Value::FloatValue(f)) => f.to_string(),
                Some(primitive::Value::StringValue(s)) => s.clone(),
                Some(primitive::Value::Boolean(b)) => b.to_string(),
                Some(primitive::Value::Datetime(t)) => datetime_text(t),
                Some(primitive::Value::Duration(d)) => {
                    if d.nanos == 0 {
                        format!("{}s", d.seconds)
                    } else {
                        format!("{}s", d.seconds as f64 + d.nanos as f64 / 1e9)
                    }
                }
                None => String::new(),
            },
            Some(scalar::Value::Blob(b)) => b.uri.clone(),
            Some(scalar::Value::Schema(s)) => s.uri.clone(),
            Some(scalar::Value::StructuredDataset(d)) => d.uri.clone(),
            Some(scalar::Value::Union(u)) => {
                u.value.as_deref().map(literal_text).unwrap_or_default()
            }
            Some(scalar::Value::NoneType(_)) | None => String::new(),
            Some(scalar::Value::Error(e)) => e.message.clone(),
            Some(scalar::Value::Binary(_)) | Some(scalar::Value::Generic(_)) => "<struct>".into(),
        },
        Some(literal::Value::Collection(c)) => {
            format!(
                "[{}]",
                c.literals
                    .iter()
                    .map(literal_text)
                    .collect::<Vec<_>>()
                    .join(",")
            )
        }
        Some(literal::Value::Map(m)) => format!(
            "{{{}}}",
            m.literals
                .iter()
                .map(|(k, v)| format!("{k}:{}", literal_text(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
        Some(literal::Value::OffloadedMetadata(o)) => o.uri.clone(),
        None => String::new(),
    }
}

/// A timestamp as RFC 3339 in UTC (`2026-11-24T13:00:00Z`, fractions of a second only when there are any).
pub fn datetime_text(t: &prost_types::Timestamp) -> String {
    let days = t.seconds.div_euclid(86_400);
    let secs = t.seconds.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let frac = if t.nanos > 0 {
        format!(".{:09}", t.nanos).trim_end_matches('0').to_string()
    } else {
        String::new()
    };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{frac}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::literal::{from_json, parse_datetime};
    use crate::types::parse;
    use serde_json::json;

    fn vars(inputs: &LiteralMap) -> Vars<'_> {
        Vars {
            input: "s3://b/e/n0/inputs.pb",
            input_prefix: "s3://b/e/n0",
            output_prefix: "s3://b/e/n0/0",
            raw_output_prefix: "s3://b/raw/e-n0-0",
            checkpoint_prefix: "s3://b/e/n0/0/_flytecheckpoints",
            prev_checkpoint_prefix: None,
            per_retry_key: "e-n0-0",
            task_template_path: "s3://b/e/n0/task.pb",
            namespace: "flyte",
            inputs: Some(inputs),
        }
    }

    fn map(pairs: &[(&str, serde_json::Value, &str)]) -> LiteralMap {
        LiteralMap {
            literals: pairs
                .iter()
                .map(|(k, v, t)| (k.to_string(), from_json(v, &parse(t).unwrap()).unwrap()))
                .collect(),
        }
    }

    #[test]
    fn renders_flytekit_args_per_element() {
        let inputs = map(&[("x", json!(3), "int")]);
        let args: Vec<String> = [
            "pyflyte-execute",
            "--inputs",
            "{{.input}}",
            "--output-prefix",
            "{{ .OutputPrefix }}/0",
            "--prev-checkpoint",
            "{{$prevCheckpointPrefix}}",
            "",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let out = render_args(&args, &vars(&inputs)).unwrap();
        assert_eq!(out[2], "s3://b/e/n0/inputs.pb");
        assert_eq!(out[4], "s3://b/e/n0/0/0");
        assert_eq!(out[6], "\"\"", "two quote characters on the first attempt");
        assert_eq!(out[7], "", "empty elements stay");
        assert_eq!(out.len(), args.len());
    }

    #[test]
    fn inputs_render_as_text_without_a_shell() {
        let inputs = map(&[
            ("r", json!(2.5), "float"),
            ("name", json!("a b; rm -rf /"), "str"),
            ("xs", json!([1, 2]), "list[int]"),
            ("f", json!("s3://b/k.csv"), "file"),
            ("maybe", json!(null), "optional[int]"),
            ("when", json!("2024-01-02T03:04:05Z"), "datetime"),
        ]);
        let v = vars(&inputs);
        assert_eq!(render("{{.inputs.r}}", &v).unwrap(), "2.5");
        assert_eq!(
            render("{{.Inputs.NAME}}", &v).unwrap(),
            "a b; rm -rf /",
            "one argument, whatever it holds"
        );
        assert_eq!(render("[{{.inputs.xs}}]", &v).unwrap(), "[[1,2]]");
        assert_eq!(render("{{.inputs.f}}", &v).unwrap(), "s3://b/k.csv");
        assert_eq!(render("{{.inputs.maybe}}", &v).unwrap(), "");
        assert_eq!(
            render("{{.inputs.when}}", &v).unwrap(),
            "2024-01-02T03:04:05Z"
        );
        assert_eq!(
            render("ds='{{ .inputs.name }}'", &v).unwrap(),
            "ds='a b; rm -rf /'"
        );
    }

    #[test]
    fn unknown_placeholders_are_errors_and_foreign_templates_stay() {
        let inputs = map(&[("x", json!(1), "int")]);
        let v = vars(&inputs);
        assert!(
            render("{{.nope}}", &v)
                .unwrap_err()
                .contains("unknown placeholder `{{.nope}}`")
        );
        assert!(
            render("{{.inputs.y}}", &v)
                .unwrap_err()
                .contains("no input `y`")
        );
        assert_eq!(
            render("{{ user_template }}", &v).unwrap(),
            "{{ user_template }}"
        );
        assert_eq!(
            render("unclosed {{.input", &v).unwrap(),
            "unclosed {{.input"
        );
        let err = render_args(&["ok".into(), "{{.bad}}".into()], &v).unwrap_err();
        assert_eq!(err.index, 1);
    }

    #[test]
    fn datetimes_round_trip() {
        for s in [
            "1970-01-01T00:00:00Z",
            "2024-02-29T23:59:59Z",
            "1999-12-31T12:00:00.5Z",
        ] {
            assert_eq!(datetime_text(&parse_datetime(s).unwrap()), s);
        }
    }
}
