//! Literal types: how they print, how Updraft YAML spells them, and which can be bound to which.
//!
//! Compatibility follows Flyte's type checker: equal simple types; `none` into an Optional; a value into a
//! union that has a matching variant; a union into a target every variant of it fits; collections and maps
//! element-wise; blobs by dimensionality (an empty format matches any); structs by kind (the JSON-schema
//! metadata is not compared); enums into strings and strings into enums.

use updraft_proto::core::{
    BlobType, EnumType, Literal, LiteralType, Primitive, Scalar, SimpleType, StructuredDatasetType,
    UnionType, blob_type::BlobDimensionality, literal, literal_type::Type, primitive, scalar,
};

/// Deepest nesting of types accepted (list of list of … ).
pub const MAX_TYPE_DEPTH: usize = 32;

/// A simple type.
pub fn simple(t: SimpleType) -> LiteralType {
    LiteralType {
        r#type: Some(Type::Simple(t as i32)),
        ..Default::default()
    }
}

/// A list of `t`.
pub fn list_of(t: LiteralType) -> LiteralType {
    LiteralType {
        r#type: Some(Type::CollectionType(Box::new(t))),
        ..Default::default()
    }
}

/// A string-keyed map of `t`.
pub fn map_of(t: LiteralType) -> LiteralType {
    LiteralType {
        r#type: Some(Type::MapValueType(Box::new(t))),
        ..Default::default()
    }
}

/// `Optional[t]`: a union of `t` and none (unchanged if `t` already admits none).
pub fn optional(t: LiteralType) -> LiteralType {
    if admits_none(&t) {
        return t;
    }
    let none = LiteralType {
        structure: Some(updraft_proto::core::TypeStructure {
            tag: "none".into(),
            ..Default::default()
        }),
        ..simple(SimpleType::None)
    };
    LiteralType {
        r#type: Some(Type::UnionType(UnionType {
            variants: vec![t, none],
        })),
        ..Default::default()
    }
}

/// A file (`MULTIPART = false`) or directory blob of `format`.
pub fn blob(format: &str, multipart: bool) -> LiteralType {
    LiteralType {
        r#type: Some(Type::Blob(BlobType {
            format: format.to_string(),
            dimensionality: if multipart {
                BlobDimensionality::Multipart as i32
            } else {
                BlobDimensionality::Single as i32
            },
        })),
        ..Default::default()
    }
}

fn simple_of(t: &LiteralType) -> Option<SimpleType> {
    match t.r#type {
        Some(Type::Simple(s)) => SimpleType::try_from(s).ok(),
        _ => None,
    }
}

/// True when `none` can be bound to `t` (none itself, or a union with a none variant).
pub fn admits_none(t: &LiteralType) -> bool {
    match &t.r#type {
        Some(Type::Simple(s)) => *s == SimpleType::None as i32,
        Some(Type::UnionType(u)) => u.variants.iter().any(admits_none),
        _ => false,
    }
}

/// How a type prints in messages and how Updraft YAML spells it: `int`, `list[str]`, `optional[file]`, …
pub fn display(t: &LiteralType) -> String {
    let mut out = String::new();
    write_type(t, &mut out, 0);
    out
}

fn write_type(t: &LiteralType, out: &mut String, depth: usize) {
    if depth > MAX_TYPE_DEPTH {
        out.push('…');
        return;
    }
    match &t.r#type {
        None => out.push_str("unset"),
        Some(Type::Simple(s)) => out.push_str(match SimpleType::try_from(*s) {
            Ok(SimpleType::None) => "none",
            Ok(SimpleType::Integer) => "int",
            Ok(SimpleType::Float) => "float",
            Ok(SimpleType::String) => "str",
            Ok(SimpleType::Boolean) => "bool",
            Ok(SimpleType::Datetime) => "datetime",
            Ok(SimpleType::Duration) => "duration",
            Ok(SimpleType::Binary) => "binary",
            Ok(SimpleType::Error) => "error",
            Ok(SimpleType::Struct) => "struct",
            Err(_) => "unknown",
        }),
        Some(Type::Schema(_)) => out.push_str("schema"),
        Some(Type::StructuredDatasetType(s)) => {
            out.push_str("dataset");
            if !s.format.is_empty() {
                out.push_str(&format!("[{}]", s.format));
            }
        }
        Some(Type::CollectionType(inner)) => {
            out.push_str("list[");
            write_type(inner, out, depth + 1);
            out.push(']');
        }
        Some(Type::MapValueType(inner)) => {
            out.push_str("dict[str, ");
            write_type(inner, out, depth + 1);
            out.push(']');
        }
        Some(Type::Blob(b)) => {
            out.push_str(
                if b.dimensionality == BlobDimensionality::Multipart as i32 {
                    "dir"
                } else {
                    "file"
                },
            );
            if !b.format.is_empty() {
                out.push_str(&format!("[{}]", b.format));
            }
        }
        Some(Type::EnumType(e)) => {
            out.push_str("enum[");
            out.push_str(&e.values.join(", "));
            out.push(']');
        }
        Some(Type::UnionType(u)) => {
            let non_none: Vec<&LiteralType> =
                u.variants.iter().filter(|v| !admits_none(v)).collect();
            if non_none.len() == 1 && non_none.len() < u.variants.len() {
                out.push_str("optional[");
                write_type(non_none[0], out, depth + 1);
                out.push(']');
            } else {
                out.push_str("union[");
                for (i, v) in u.variants.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_type(v, out, depth + 1);
                }
                out.push(']');
            }
        }
    }
}

/// Why a type string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad type `{}`: {reason}", shorten(text))]
pub struct TypeParseError {
    /// The text given.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

fn shorten(text: &str) -> String {
    if text.chars().count() <= 60 {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(60).collect::<String>())
    }
}

/// Parses an Updraft YAML type: `int`, `float`, `str`, `bool`, `datetime`, `duration`, `binary`, `struct`,
/// `none`, `file`, `file[csv]`, `dir`, `dir[parquet]`, `list[T]`, `dict[str, T]`, `optional[T]`, `T?`,
/// `union[A, B]`, `enum[a, b]`, `dataset`, `dataset[parquet]`, `schema`.
pub fn parse(text: &str) -> Result<LiteralType, TypeParseError> {
    let mut p = Parser {
        src: text,
        pos: 0,
        depth: 0,
    };
    let t = p.parse_type()?;
    p.skip_ws();
    if p.pos != text.len() {
        return Err(p.err(format!("unexpected `{}`", &text[p.pos..])));
    }
    Ok(t)
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn err(&self, reason: String) -> TypeParseError {
        TypeParseError {
            text: self.src.to_string(),
            reason,
        }
    }

    fn skip_ws(&mut self) {
        while self.src[self.pos..].starts_with(char::is_whitespace) {
            self.pos += self.src[self.pos..]
                .chars()
                .next()
                .map_or(1, char::len_utf8);
        }
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        if self.src[self.pos..].starts_with(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn ident(&mut self) -> String {
        self.skip_ws();
        let rest = &self.src[self.pos..];
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'))
            .unwrap_or(rest.len());
        self.pos += len;
        rest[..len].to_string()
    }

    fn args(&mut self) -> Result<Vec<LiteralType>, TypeParseError> {
        let mut out = vec![self.parse_type()?];
        while self.eat(',') {
            out.push(self.parse_type()?);
        }
        if !self.eat(']') {
            return Err(self.err("expected `]`".into()));
        }
        Ok(out)
    }

    fn words(&mut self) -> Result<Vec<String>, TypeParseError> {
        let mut out = vec![self.ident()];
        while self.eat(',') {
            out.push(self.ident());
        }
        if !self.eat(']') {
            return Err(self.err("expected `]`".into()));
        }
        Ok(out)
    }

    fn parse_type(&mut self) -> Result<LiteralType, TypeParseError> {
        self.depth += 1;
        if self.depth > MAX_TYPE_DEPTH {
            return Err(self.err(format!("nested deeper than {MAX_TYPE_DEPTH}")));
        }
        let name = self.ident();
        let open = self.eat('[');
        let t = match (name.to_ascii_lowercase().as_str(), open) {
            ("int" | "integer", false) => simple(SimpleType::Integer),
            ("float", false) => simple(SimpleType::Float),
            ("str" | "string", false) => simple(SimpleType::String),
            ("bool" | "boolean", false) => simple(SimpleType::Boolean),
            ("datetime", false) => simple(SimpleType::Datetime),
            ("duration", false) => simple(SimpleType::Duration),
            ("binary" | "bytes", false) => simple(SimpleType::Binary),
            ("struct" | "json", false) => simple(SimpleType::Struct),
            ("none", false) => simple(SimpleType::None),
            ("schema", false) => LiteralType {
                r#type: Some(Type::Schema(Default::default())),
                ..Default::default()
            },
            ("file", false) => blob("", false),
            ("dir" | "directory", false) => blob("", true),
            ("dataset", false) => dataset(""),
            ("file" | "dir" | "directory" | "dataset", true) => {
                let fmt = self.ident();
                if !self.eat(']') {
                    return Err(self.err("expected `]` after the format".into()));
                }
                match name.as_str() {
                    "file" => blob(&fmt, false),
                    "dataset" => dataset(&fmt),
                    _ => blob(&fmt, true),
                }
            }
            ("list", true) => {
                let mut a = self.args()?;
                if a.len() != 1 {
                    return Err(self.err("list takes one type".into()));
                }
                list_of(a.remove(0))
            }
            ("dict" | "map", true) => {
                let mut a = self.args()?;
                match a.len() {
                    1 => map_of(a.remove(0)),
                    2 if simple_of(&a[0]) == Some(SimpleType::String) => map_of(a.remove(1)),
                    _ => return Err(self.err("dict keys are str: write dict[str, T]".into())),
                }
            }
            ("optional", true) => {
                let mut a = self.args()?;
                if a.len() != 1 {
                    return Err(self.err("optional takes one type".into()));
                }
                optional(a.remove(0))
            }
            ("union", true) => LiteralType {
                r#type: Some(Type::UnionType(UnionType {
                    variants: self.args()?,
                })),
                ..Default::default()
            },
            ("enum", true) => LiteralType {
                r#type: Some(Type::EnumType(EnumType {
                    values: self.words()?,
                })),
                ..Default::default()
            },
            ("", _) => return Err(self.err("expected a type name".into())),
            (other, _) => return Err(self.err(format!("unknown type `{other}`"))),
        };
        self.depth -= 1;
        if self.eat('?') {
            return Ok(optional(t));
        }
        Ok(t)
    }
}

fn dataset(format: &str) -> LiteralType {
    LiteralType {
        r#type: Some(Type::StructuredDatasetType(StructuredDatasetType {
            format: format.to_string(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// True when a value of type `from` may be bound to an input of type `to`.
pub fn castable(from: &LiteralType, to: &LiteralType) -> bool {
    castable_at(from, to, 0)
}

fn castable_at(from: &LiteralType, to: &LiteralType, depth: usize) -> bool {
    if depth > MAX_TYPE_DEPTH {
        return false;
    }
    let d = depth + 1;
    // A union source fits when every variant fits.
    if let Some(Type::UnionType(u)) = &from.r#type {
        if let Some(Type::UnionType(tu)) = &to.r#type
            && u.variants
                .iter()
                .all(|v| tu.variants.iter().any(|t| castable_at(v, t, d)))
        {
            return true;
        }
        return !u.variants.is_empty() && u.variants.iter().all(|v| castable_at(v, to, d));
    }
    if let Some(Type::UnionType(u)) = &to.r#type {
        return u.variants.iter().any(|v| castable_at(from, v, d));
    }
    match (&from.r#type, &to.r#type) {
        (Some(Type::Simple(a)), Some(Type::Simple(b))) => a == b,
        (Some(Type::CollectionType(a)), Some(Type::CollectionType(b)))
        | (Some(Type::MapValueType(a)), Some(Type::MapValueType(b))) => castable_at(a, b, d),
        (Some(Type::Blob(a)), Some(Type::Blob(b))) => {
            a.dimensionality == b.dimensionality
                && (a.format.is_empty() || b.format.is_empty() || a.format == b.format)
        }
        (Some(Type::EnumType(a)), Some(Type::EnumType(b))) => {
            a.values.iter().all(|v| b.values.contains(v))
        }
        (Some(Type::EnumType(_)), Some(Type::Simple(s)))
        | (Some(Type::Simple(s)), Some(Type::EnumType(_))) => *s == SimpleType::String as i32,
        (Some(Type::Schema(_)), Some(Type::Schema(_)))
        | (Some(Type::StructuredDatasetType(_)), Some(Type::StructuredDatasetType(_)))
        | (Some(Type::Schema(_)), Some(Type::StructuredDatasetType(_)))
        | (Some(Type::StructuredDatasetType(_)), Some(Type::Schema(_))) => true,
        // Maps and dataclasses may be carried as a generic struct.
        (Some(Type::MapValueType(_)), Some(Type::Simple(s))) => *s == SimpleType::Struct as i32,
        _ => false,
    }
}

/// True when literal `lit` can be bound to an input of type `expected`.
pub fn literal_fits(lit: &Literal, expected: &LiteralType) -> bool {
    literal_fits_at(lit, expected, 0)
}

fn literal_fits_at(lit: &Literal, expected: &LiteralType, depth: usize) -> bool {
    if depth > MAX_TYPE_DEPTH {
        return false;
    }
    let d = depth + 1;
    if let Some(Type::UnionType(u)) = &expected.r#type {
        if let Some(literal::Value::Scalar(s)) = &lit.value
            && matches!(s.value, Some(scalar::Value::Union(_)))
        {
            return type_of(lit).is_some_and(|t| castable(&t, expected));
        }
        return u.variants.iter().any(|v| literal_fits_at(lit, v, d));
    }
    match (&lit.value, &expected.r#type) {
        (Some(literal::Value::Collection(c)), Some(Type::CollectionType(el))) => {
            c.literals.iter().all(|l| literal_fits_at(l, el, d))
        }
        (Some(literal::Value::Map(m)), Some(Type::MapValueType(el))) => {
            m.literals.values().all(|l| literal_fits_at(l, el, d))
        }
        (Some(literal::Value::Map(_)), Some(Type::Simple(s))) => *s == SimpleType::Struct as i32,
        _ => type_of(lit).is_some_and(|t| castable(&t, expected)),
    }
}

/// The type a literal has, as far as its value shows (collections take their first element's type;
/// an empty collection is a list of none, which fits any list).
pub fn type_of(lit: &Literal) -> Option<LiteralType> {
    type_of_at(lit, 0)
}

fn type_of_at(lit: &Literal, depth: usize) -> Option<LiteralType> {
    if depth > MAX_TYPE_DEPTH {
        return None;
    }
    match lit.value.as_ref()? {
        literal::Value::Scalar(s) => scalar_type(s, depth),
        literal::Value::Collection(c) => Some(list_of(
            c.literals
                .first()
                .map_or(Some(simple(SimpleType::None)), |l| type_of_at(l, depth + 1))?,
        )),
        literal::Value::Map(m) => Some(map_of(
            m.literals
                .values()
                .next()
                .map_or(Some(simple(SimpleType::None)), |l| type_of_at(l, depth + 1))?,
        )),
        literal::Value::OffloadedMetadata(o) => o.inferred_type.clone(),
    }
}

/// The type of a scalar value.
pub fn scalar_type(s: &Scalar, depth: usize) -> Option<LiteralType> {
    Some(match s.value.as_ref()? {
        scalar::Value::Primitive(Primitive { value: Some(v) }) => simple(match v {
            primitive::Value::Integer(_) => SimpleType::Integer,
            primitive::Value::FloatValue(_) => SimpleType::Float,
            primitive::Value::StringValue(_) => SimpleType::String,
            primitive::Value::Boolean(_) => SimpleType::Boolean,
            primitive::Value::Datetime(_) => SimpleType::Datetime,
            primitive::Value::Duration(_) => SimpleType::Duration,
        }),
        scalar::Value::Primitive(Primitive { value: None }) => return None,
        scalar::Value::Blob(b) => LiteralType {
            r#type: Some(Type::Blob(
                b.metadata
                    .as_ref()
                    .and_then(|m| m.r#type.clone())
                    .unwrap_or_default(),
            )),
            ..Default::default()
        },
        scalar::Value::Binary(b) if b.tag == "msgpack" => simple(SimpleType::Struct),
        scalar::Value::Binary(_) => simple(SimpleType::Binary),
        scalar::Value::Schema(_) => LiteralType {
            r#type: Some(Type::Schema(Default::default())),
            ..Default::default()
        },
        scalar::Value::NoneType(_) => simple(SimpleType::None),
        scalar::Value::Error(_) => simple(SimpleType::Error),
        scalar::Value::Generic(_) => simple(SimpleType::Struct),
        scalar::Value::StructuredDataset(_) => dataset(""),
        scalar::Value::Union(u) => match &u.r#type {
            Some(t) => t.clone(),
            None => type_of_at(u.value.as_deref()?, depth + 1)?,
        },
    })
}

/// "expected T, got U" for a literal that does not fit.
pub fn mismatch(expected: &LiteralType, lit: &Literal) -> String {
    format!(
        "expected {}, got {}",
        display(expected),
        type_of(lit).map_or_else(|| "an empty value".to_string(), |t| display(&t))
    )
}

/// The element type of a list type, if it is one.
pub fn element(t: &LiteralType) -> Option<&LiteralType> {
    match &t.r#type {
        Some(Type::CollectionType(inner)) => Some(inner),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        for text in [
            "int",
            "list[str]",
            "dict[str, list[float]]",
            "optional[file]",
            "dir[parquet]",
            "union[int, str]",
            "enum[a, b]",
            "struct",
            "dataset[parquet]",
        ] {
            assert_eq!(display(&parse(text).unwrap()), text);
        }
        assert_eq!(display(&parse("int?").unwrap()), "optional[int]");
        assert_eq!(display(&parse("map[str, int]").unwrap()), "dict[str, int]");
    }

    #[test]
    fn parse_errors_say_why() {
        assert!(
            parse("lst[int]")
                .unwrap_err()
                .reason
                .contains("unknown type `lst`")
        );
        assert!(
            parse("list[int")
                .unwrap_err()
                .reason
                .contains("expected `]`")
        );
        assert!(
            parse("dict[int, str]")
                .unwrap_err()
                .reason
                .contains("dict keys are str")
        );
        assert!(
            parse("int extra")
                .unwrap_err()
                .reason
                .contains("unexpected")
        );
        let deep = "list[".repeat(100) + "int" + &"]".repeat(100);
        assert!(parse(&deep).unwrap_err().reason.contains("nested deeper"));
    }

    #[test]
    fn castability_follows_flyte() {
        let p = |s| parse(s).unwrap();
        assert!(castable(&p("int"), &p("int")));
        assert!(castable(&p("int"), &p("optional[int]")));
        assert!(castable(&p("none"), &p("optional[int]")));
        assert!(!castable(&p("none"), &p("int")));
        assert!(!castable(&p("str"), &p("int")));
        assert!(castable(&p("list[int]"), &p("list[optional[int]]")));
        assert!(!castable(&p("list[str]"), &p("list[int]")));
        assert!(castable(&p("file[csv]"), &p("file")));
        assert!(!castable(&p("file[csv]"), &p("file[parquet]")));
        assert!(!castable(&p("file"), &p("dir")));
        assert!(castable(
            &p("union[int, str]"),
            &p("union[str, int, float]")
        ));
        assert!(!castable(&p("union[int, str]"), &p("int")));
        assert!(castable(&p("optional[int]"), &p("optional[int]")));
        assert!(!castable(&p("optional[int]"), &p("int")));
        assert!(castable(&p("enum[a]"), &p("str")));
    }
}
