//! The objects as YAML that every reader reads back as the same objects, YAML 1.1 readers included (kubectl's, PyYAML):
//! a string is written plain only when it cannot be read as anything else — letters, digits and `_./-`,
//! starting with a letter, `/` or `_`, and not one of YAML 1.1's booleans or nulls (`yes`, `no`, `on`,
//! `off`, `y`, `n`, `~`, …). Every other string is double-quoted (as JSON writes it, which YAML reads
//! the same). YAML 1.2 emitters leave `yes` plain, and a YAML 1.1 reader then gets a boolean.

use serde_json::Value;

/// `v` as a block-style YAML document (ending in a newline).
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => map(m, 0, false, &mut out),
        Value::Array(a) if !a.is_empty() => seq(a, 0, &mut out),
        _ => {
            out.push_str(&scalar(v));
            out.push('\n');
        }
    }
    out
}

/// YAML 1.1's words for booleans and null, which a plain scalar must not be.
const WORDS: &[&str] = &[
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false",
    "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL",
];

/// Whether `s` reads back as the same string when written plain, in YAML 1.1 and 1.2 alike.
fn plain(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == '/' || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
        && !WORDS.contains(&s)
}

fn string(s: &str) -> String {
    if plain(s) {
        s.to_string()
    } else {
        Value::String(s.to_string()).to_string()
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number(n),
        Value::String(s) => string(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// A number as both YAML versions read it: YAML 1.1 reads a float with an exponent as a float only with
/// a dot and a signed exponent (`1.0e+300`, not `1e300`).
fn number(n: &serde_json::Number) -> String {
    let s = n.to_string();
    let Some(at) = s.find(['e', 'E']) else {
        return s;
    };
    let (mantissa, exponent) = (&s[..at], &s[at + 1..]);
    let dot = if mantissa.contains('.') { "" } else { ".0" };
    let sign = if exponent.starts_with(['+', '-']) {
        ""
    } else {
        "+"
    };
    format!("{mantissa}{dot}e{sign}{exponent}")
}

/// Whether `v` is written on its key's or dash's line.
fn inline(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => true,
    }
}

/// A mapping at `indent`; its first key on the current line when `after_dash`.
fn map(m: &serde_json::Map<String, Value>, indent: usize, after_dash: bool, out: &mut String) {
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 || !after_dash {
            out.push_str(&" ".repeat(indent));
        }
        out.push_str(&string(k));
        out.push(':');
        if inline(v) {
            out.push(' ');
            out.push_str(&scalar(v));
            out.push('\n');
        } else {
            out.push('\n');
            block(v, indent + 2, out);
        }
    }
}

/// A sequence at `indent`.
fn seq(a: &[Value], indent: usize, out: &mut String) {
    for v in a {
        out.push_str(&" ".repeat(indent));
        out.push_str("- ");
        match v {
            Value::Object(m) if !m.is_empty() => map(m, indent + 2, true, out),
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                seq(inner, indent + 2, out);
            }
            _ => {
                out.push_str(&scalar(v));
                out.push('\n');
            }
        }
    }
}

/// A non-empty collection under a key.
fn block(v: &Value, indent: usize, out: &mut String) {
    match v {
        Value::Object(m) => map(m, indent, false, out),
        Value::Array(a) => seq(a, indent, out),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ambiguous_strings_are_quoted_and_plain_ones_are_not() {
        let v = json!({
            "yes": "yes", "on": "off", "n": "y", "tilde": "~", "octal": "0755", "time": "1:30",
            "date": "2024-01-01", "float": "1e3", "inf": ".inf", "empty": "", "space": " x",
            "image": "ghcr.io/x:1", "name": "python-task", "path": "/var/inputs", "int": 3,
            "bool": true, "null": null, "nested": {"list": ["a", "no", 1, {"k": "v", "w": []}, [1]]},
            "multi": "a\nb \"q\"", "big": 1e300, "small": 1.5e-7,
        });
        let y = to_yaml(&v);
        for quoted in [
            "\"yes\": \"yes\"",
            "\"on\": \"off\"",
            "\"n\": \"y\"",
            "tilde: \"~\"",
            "octal: \"0755\"",
            "time: \"1:30\"",
            "date: \"2024-01-01\"",
            "float: \"1e3\"",
            "inf: \".inf\"",
            "empty: \"\"",
            "space: \" x\"",
            "image: \"ghcr.io/x:1\"",
            "- \"no\"",
            "multi: \"a\\nb \\\"q\\\"\"",
            "\"null\": null",
        ] {
            assert!(y.contains(quoted), "{quoted} in\n{y}");
        }
        for plain in [
            "big: 1.0e+300",
            "small: 1.5e-7",
            "name: python-task",
            "path: /var/inputs",
            "int: 3",
            "bool: true",
            "- a",
        ] {
            assert!(y.contains(plain), "{plain} in\n{y}");
        }
        // And it is YAML that reads back as the same value.
        let back: Value = serde_norway::from_str(&y).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn nesting_reads_back() {
        let v = json!([{"a": [{"b": {"c": [[1, 2], []]}}]}, [], {}, "x"]);
        let back: Value = serde_norway::from_str(&to_yaml(&v)).unwrap();
        assert_eq!(back, v);
    }
}
