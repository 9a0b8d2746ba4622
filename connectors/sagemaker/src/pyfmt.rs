//! Python's text forms of values, as flytekit's SageMaker connectors produce them: `str()` and `repr()`
//! of JSON-like values, `json.dumps` with its default separators, and the sorted form the idempotence
//! token is hashed from (`sorted_dict_str`).

use serde_json::Value;

/// `repr(float)`: the shortest text that reads back as the same number, in exponent form when the
/// exponent is below -4 or at least 16 (`1e-05`, `1e+16`), with `.0` on whole numbers.
pub fn float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let exp = f.abs().log10().floor() as i32;
    if (-4..16).contains(&exp) {
        // Rust's Debug form is the shortest round trip, positional, with `.0` on whole numbers.
        let s = format!("{f:?}");
        if s.contains('e') {
            // Rounding can leave the estimate one off at a power of ten; fall through to Display.
            let d = format!("{f}");
            return if d.contains('.') { d } else { format!("{d}.0") };
        }
        return s;
    }
    // Rust: `1e16`, `1.5e-7`; Python: `1e+16`, `1.5e-07`.
    let s = format!("{f:e}");
    let (mantissa, e) = s.split_once('e').unwrap_or((&s, "0"));
    let (sign, digits) = match e.strip_prefix('-') {
        Some(d) => ('-', d),
        None => ('+', e),
    };
    format!("{mantissa}e{sign}{digits:0>2}")
}

fn number(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        i.to_string()
    } else if let Some(u) = n.as_u64() {
        u.to_string()
    } else {
        float_repr(n.as_f64().unwrap_or(f64::NAN))
    }
}

/// Python's `repr` of a string: single quotes unless the text holds a single quote and no double one.
fn str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `repr()` of the value (as it shows inside a list or dict).
pub fn py_repr(v: &Value) -> String {
    match v {
        Value::String(s) => str_repr(s),
        Value::Array(a) => format!("[{}]", a.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}: {}", str_repr(k), py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => py_str(other),
    }
}

/// Python's `str()` of the value: a string as itself, `None`, `True`, `False`, numbers as Python
/// writes them, lists and dicts as their `repr`.
pub fn py_str(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => number(n),
        Value::String(s) => s.clone(),
        Value::Array(_) | Value::Object(_) => py_repr(v),
    }
}

/// flytekit's `sorted_dict_str`: dicts with their keys sorted, `{k: v, …}`, lists in order, `[a, …]`,
/// every other value as `str()` (strings without quotes).
pub fn sorted_dict_str(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            format!(
                "{{{}}}",
                keys.iter()
                    .map(|k| format!("{k}: {}", sorted_dict_str(&m[k.as_str()])))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(sorted_dict_str).collect::<Vec<_>>().join(", ")
        ),
        other => py_str(other),
    }
}

/// Python's `json.dumps(v)`: `", "` and `": "` separators, non-ASCII escaped as `\uXXXX`.
pub fn json_dumps(v: &Value) -> String {
    fn string(s: &str, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                    let mut buf = [0u16; 2];
                    for u in c.encode_utf16(&mut buf) {
                        out.push_str(&format!("\\u{u:04x}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
    fn one(v: &Value, out: &mut String) {
        match v {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => {
                let t = number(n);
                out.push_str(match t.as_str() {
                    "nan" => "NaN",
                    "inf" => "Infinity",
                    "-inf" => "-Infinity",
                    other => other,
                })
            }
            Value::String(s) => string(s, out),
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    one(x, out);
                }
                out.push(']');
            }
            Value::Object(m) => {
                out.push('{');
                for (i, (k, x)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    string(k, out);
                    out.push_str(": ");
                    one(x, out);
                }
                out.push('}');
            }
        }
    }
    let mut out = String::new();
    one(v, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_read_as_python_writes_them() {
        for (f, text) in [
            (0.1, "0.1"),
            (1.5, "1.5"),
            (2.0, "2.0"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (1234567890123456.0, "1234567890123456.0"),
            (1.5e-7, "1.5e-07"),
            (-2.5e20, "-2.5e+20"),
        ] {
            assert_eq!(float_repr(f), text, "{f}");
        }
    }

    #[test]
    fn str_and_repr_follow_python() {
        assert_eq!(py_str(&json!("a")), "a");
        assert_eq!(py_str(&json!(null)), "None");
        assert_eq!(py_str(&json!(true)), "True");
        assert_eq!(py_str(&json!(["a", 1, 0.5, null])), "['a', 1, 0.5, None]");
        assert_eq!(py_str(&json!({"k": "it's"})), "{'k': \"it's\"}");
    }

    #[test]
    fn sorted_dict_str_sorts_keys_and_keeps_list_order() {
        let v = json!({"b": [2, 1], "a": {"y": "s", "x": true}});
        assert_eq!(sorted_dict_str(&v), "{a: {x: True, y: s}, b: [2, 1]}");
    }

    #[test]
    fn json_dumps_uses_pythons_separators() {
        assert_eq!(
            json_dumps(&json!({"a": [1, "é"], "b": null})),
            "{\"a\": [1, \"\\u00e9\"], \"b\": null}"
        );
    }
}
