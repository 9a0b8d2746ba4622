//! References (`${inputs.x}`, `${node.out}`, `${node.out.key[0]}`) and branch conditions.

use updraft_proto::core::{
    BooleanExpression, ComparisonExpression, ConjunctionExpression, Operand, Primitive,
    PromiseAttribute, boolean_expression, comparison_expression, conjunction_expression, operand,
    primitive, promise_attribute,
};

/// A parsed reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    /// The node, or None for a workflow input.
    pub node: Option<String>,
    /// The output (or input) variable.
    pub var: String,
    /// Keys and indexes into the value.
    pub path: Vec<PromiseAttribute>,
}

impl Reference {
    /// The reference as written, without `${}` (also its variable name in branch conditions).
    pub fn text(&self) -> String {
        let mut s = match &self.node {
            Some(n) => format!("{n}.{}", self.var),
            None => format!("inputs.{}", self.var),
        };
        for p in &self.path {
            match &p.value {
                Some(promise_attribute::Value::StringValue(k)) => s.push_str(&format!(".{k}")),
                Some(promise_attribute::Value::IntValue(i)) => s.push_str(&format!("[{i}]")),
                None => {}
            }
        }
        s
    }
}

/// If `text` is a reference (`${…}`, the whole string), parses it. `Ok(None)` = not a reference
/// (`$${` escapes a literal `${`). A `${` that is not the whole value is an error.
pub fn parse_reference(text: &str) -> Result<Option<Reference>, String> {
    let t = text.trim();
    if t.starts_with("$${") {
        return Ok(None);
    }
    let Some(body) = t.strip_prefix("${").and_then(|r| r.strip_suffix('}')) else {
        if text.contains("${") && !text.contains("$${") {
            return Err(format!(
                "`{text}`: a reference must be the whole value, like ${{node.output}}"
            ));
        }
        return Ok(None);
    };
    parse_body(body.trim())
        .map(Some)
        .map_err(|e| format!("`{text}`: {e}"))
}

fn parse_body(body: &str) -> Result<Reference, String> {
    // Split on '.' and '[i]' while keeping order.
    let mut parts: Vec<PromiseAttribute> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut rest = body;
    let mut first = true;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']').ok_or("unclosed `[`")?;
            let i: i32 = r[..end]
                .trim()
                .parse()
                .map_err(|_| format!("`[{}]` is not an index", &r[..end]))?;
            parts.push(PromiseAttribute {
                value: Some(promise_attribute::Value::IntValue(i)),
            });
            rest = &r[end + 1..];
            continue;
        }
        if !first {
            rest = rest
                .strip_prefix('.')
                .ok_or_else(|| format!("unexpected `{rest}`"))?;
        }
        first = false;
        let end = rest.find(['.', '[']).unwrap_or(rest.len());
        let name = &rest[..end];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!("`{name}` is not a name"));
        }
        if names.len() < 3 && parts.is_empty() {
            names.push(name.to_string());
        } else {
            parts.push(PromiseAttribute {
                value: Some(promise_attribute::Value::StringValue(name.to_string())),
            });
        }
        rest = &rest[end..];
    }
    // names: [inputs, x] | [nodes, n, var] | [n, var]; anything after goes to the path.
    let (node, var, extra): (Option<String>, String, Vec<String>) = match names.as_slice() {
        [a, x, more @ ..] if a == "inputs" => (None, x.clone(), more.to_vec()),
        [a, n, v] if a == "nodes" => (Some(n.clone()), v.clone(), vec![]),
        [a, _] if a == "nodes" => return Err("write ${nodes.<id>.<output>}".into()),
        [n, v, more @ ..] => (Some(n.clone()), v.clone(), more.to_vec()),
        [one] => {
            return Err(format!(
                "`{one}` names no output: write ${{{one}.<output>}} or ${{inputs.{one}}}"
            ));
        }
        [] => return Err("empty reference".into()),
    };
    let mut path: Vec<PromiseAttribute> = extra
        .into_iter()
        .map(|k| PromiseAttribute {
            value: Some(promise_attribute::Value::StringValue(k)),
        })
        .collect();
    path.extend(parts);
    Ok(Reference { node, var, path })
}

/// A parsed condition and the references it reads (each becomes an input of the branch node, named by
/// [`Reference::text`]).
pub fn parse_condition(text: &str) -> Result<(BooleanExpression, Vec<Reference>), String> {
    let tokens = tokenize(text)?;
    let mut p = CondParser {
        tokens,
        pos: 0,
        refs: Vec::new(),
        depth: 0,
    };
    let e = p.or()?;
    if p.pos != p.tokens.len() {
        return Err(format!("unexpected `{}`", p.tokens[p.pos].show()));
    }
    Ok((e, p.refs))
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ref(Reference),
    Num(f64, bool),
    Str(String),
    Bool(bool),
    Op(comparison_expression::Operator),
    And,
    Or,
    Open,
    Close,
}

impl Tok {
    fn show(&self) -> String {
        match self {
            Tok::Ref(r) => format!("${{{}}}", r.text()),
            Tok::Num(n, _) => n.to_string(),
            Tok::Str(s) => format!("'{s}'"),
            Tok::Bool(b) => b.to_string(),
            Tok::Op(o) => format!("{o:?}"),
            Tok::And => "and".into(),
            Tok::Or => "or".into(),
            Tok::Open => "(".into(),
            Tok::Close => ")".into(),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<Tok>, String> {
    use comparison_expression::Operator as O;
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i] as char;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let two = text.get(i..i + 2).unwrap_or("");
        let (tok, len) = match (c, two) {
            (_, "==") => (Tok::Op(O::Eq), 2),
            (_, "!=") => (Tok::Op(O::Neq), 2),
            (_, "<=") => (Tok::Op(O::Lte), 2),
            (_, ">=") => (Tok::Op(O::Gte), 2),
            (_, "&&") => (Tok::And, 2),
            (_, "||") => (Tok::Or, 2),
            ('<', _) => (Tok::Op(O::Lt), 1),
            ('>', _) => (Tok::Op(O::Gt), 1),
            ('(', _) => (Tok::Open, 1),
            (')', _) => (Tok::Close, 1),
            ('$', _) => {
                let end = text[i..].find('}').ok_or("unclosed `${`")? + i + 1;
                let r = parse_reference(&text[i..end])?.ok_or("bad reference")?;
                (Tok::Ref(r), end - i)
            }
            ('\'' | '"', _) => {
                let end = text[i + 1..].find(c).ok_or("unclosed string")? + i + 1;
                (Tok::Str(text[i + 1..end].to_string()), end - i + 1)
            }
            _ if c.is_ascii_digit() || c == '-' => {
                let len = text[i + 1..]
                    .find(|x: char| !(x.is_ascii_digit() || x == '.' || x == 'e'))
                    .map_or(text.len() - i, |l| l + 1);
                let s = &text[i..i + len];
                let n: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
                (Tok::Num(n, !s.contains(['.', 'e'])), len)
            }
            _ if c.is_ascii_alphabetic() => {
                let len = text[i..]
                    .find(|x: char| !x.is_ascii_alphanumeric())
                    .unwrap_or(text.len() - i);
                let word = &text[i..i + len];
                let t = match word.to_ascii_lowercase().as_str() {
                    "and" => Tok::And,
                    "or" => Tok::Or,
                    "true" => Tok::Bool(true),
                    "false" => Tok::Bool(false),
                    _ => {
                        return Err(format!(
                            "unexpected `{word}` (references are written ${{node.output}})"
                        ));
                    }
                };
                (t, len)
            }
            _ => return Err(format!("unexpected `{c}`")),
        };
        out.push(tok);
        i += len;
    }
    Ok(out)
}

struct CondParser {
    tokens: Vec<Tok>,
    pos: usize,
    refs: Vec<Reference>,
    depth: usize,
}

impl CondParser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos)
    }

    fn or(&mut self) -> Result<BooleanExpression, String> {
        self.depth += 1;
        if self.depth > 64 {
            return Err("condition nested too deeply".into());
        }
        let mut left = self.and()?;
        while self.peek() == Some(&Tok::Or) {
            self.pos += 1;
            let right = self.and()?;
            left = conj(conjunction_expression::LogicalOperator::Or, left, right);
        }
        self.depth -= 1;
        Ok(left)
    }

    fn and(&mut self) -> Result<BooleanExpression, String> {
        let mut left = self.factor()?;
        while self.peek() == Some(&Tok::And) {
            self.pos += 1;
            let right = self.factor()?;
            left = conj(conjunction_expression::LogicalOperator::And, left, right);
        }
        Ok(left)
    }

    fn factor(&mut self) -> Result<BooleanExpression, String> {
        if self.peek() == Some(&Tok::Open) {
            self.pos += 1;
            let e = self.or()?;
            if self.peek() != Some(&Tok::Close) {
                return Err("expected `)`".into());
            }
            self.pos += 1;
            return Ok(e);
        }
        let left = self.operand()?;
        let op = match self.peek() {
            Some(Tok::Op(o)) => *o,
            Some(t) => {
                return Err(format!(
                    "expected a comparison operator, got `{}`",
                    t.show()
                ));
            }
            None => return Err("expected a comparison operator".into()),
        };
        self.pos += 1;
        let right = self.operand()?;
        Ok(BooleanExpression {
            expr: Some(boolean_expression::Expr::Comparison(ComparisonExpression {
                operator: op as i32,
                left_value: Some(left),
                right_value: Some(right),
            })),
        })
    }

    fn operand(&mut self) -> Result<Operand, String> {
        let t = self.peek().cloned().ok_or("expected a value")?;
        self.pos += 1;
        let prim = |v| {
            Ok(Operand {
                val: Some(operand::Val::Primitive(Primitive { value: Some(v) })),
            })
        };
        match t {
            Tok::Ref(r) => {
                let name = r.text();
                if !self.refs.contains(&r) {
                    self.refs.push(r);
                }
                Ok(Operand {
                    val: Some(operand::Val::Var(name)),
                })
            }
            Tok::Num(n, true) if n.abs() < 9.0e15 => prim(primitive::Value::Integer(n as i64)),
            Tok::Num(n, _) => prim(primitive::Value::FloatValue(n)),
            Tok::Str(s) => prim(primitive::Value::StringValue(s)),
            Tok::Bool(b) => prim(primitive::Value::Boolean(b)),
            other => Err(format!("expected a value, got `{}`", other.show())),
        }
    }
}

fn conj(
    op: conjunction_expression::LogicalOperator,
    l: BooleanExpression,
    r: BooleanExpression,
) -> BooleanExpression {
    BooleanExpression {
        expr: Some(boolean_expression::Expr::Conjunction(Box::new(
            ConjunctionExpression {
                operator: op as i32,
                left_expression: Some(Box::new(l)),
                right_expression: Some(Box::new(r)),
            },
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = parse_reference("${inputs.x}").unwrap().unwrap();
        assert_eq!((r.node, r.var.as_str()), (None, "x"));
        let r = parse_reference("${sq.out.key[2]}").unwrap().unwrap();
        assert_eq!(r.node.as_deref(), Some("sq"));
        assert_eq!(r.path.len(), 2);
        assert_eq!(r.text(), "sq.out.key[2]");
        let r = parse_reference("${nodes.a.b}").unwrap().unwrap();
        assert_eq!((r.node.as_deref(), r.var.as_str()), (Some("a"), "b"));
        assert_eq!(parse_reference("plain").unwrap(), None);
        assert_eq!(parse_reference("$${not.a.ref}").unwrap(), None);
        assert!(
            parse_reference("x ${a.b}")
                .unwrap_err()
                .contains("whole value")
        );
        assert!(
            parse_reference("${a}")
                .unwrap_err()
                .contains("names no output")
        );
    }

    #[test]
    fn conditions() {
        let (e, refs) =
            parse_condition("(${inputs.x} > 0 and ${inputs.x} < 10) or ${a.b} == 'z'").unwrap();
        assert_eq!(refs.len(), 2);
        assert!(matches!(
            e.expr,
            Some(boolean_expression::Expr::Conjunction(_))
        ));
        assert!(parse_condition("${inputs.x} >").is_err());
        assert!(
            parse_condition("x > 1")
                .unwrap_err()
                .contains("references are written")
        );
        assert!(
            parse_condition("(${inputs.x} > 1")
                .unwrap_err()
                .contains("expected `)`")
        );
        let deep = "(".repeat(200) + "${inputs.x} > 1" + &")".repeat(200);
        assert!(parse_condition(&deep).is_err());
    }
}
