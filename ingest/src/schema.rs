//! JSON Schema validation, for the keywords Eddy's event schemas use.
//!
//! A schema is compiled once (regexes built, keywords checked) and then validates events on the
//! ingest hot path without allocating unless something is wrong. Supported (draft 2020-12
//! semantics): `type` (one or a list), `properties`, `required`, `additionalProperties` (a
//! boolean), `items`, `minItems`, `maxItems`, `minLength`, `maxLength` (in characters),
//! `pattern` (unanchored, as in ECMA-262), `format: "date-time"` (asserted: RFC 3339),
//! `enum`, `const`, `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`; annotations
//! (`$schema`, `$id`, `title`, `description`, `examples`) are ignored. A schema using any
//! other keyword is refused when it is loaded, so no rule is ever silently skipped.

use regex::Regex;
use serde_json::{Map, Value};

/// A schema that cannot be used: where in it and why.
#[derive(Debug, thiserror::Error)]
#[error("schema `{schema}`, at `{pointer}`: {message}")]
pub struct SchemaError {
    /// The name the schema was compiled under (`click.json`).
    pub schema: String,
    /// JSON Pointer to the offending keyword in the schema; `/` is the root, empty when the
    /// text is not JSON at all.
    pub pointer: String,
    /// What is wrong there.
    pub message: String,
}

/// The JSON types of the `type` keyword.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum JsonType {
    Null,
    Boolean,
    Object,
    Array,
    Number,
    Integer,
    String,
}

impl JsonType {
    fn parse(name: &str) -> Option<JsonType> {
        Some(match name {
            "null" => JsonType::Null,
            "boolean" => JsonType::Boolean,
            "object" => JsonType::Object,
            "array" => JsonType::Array,
            "number" => JsonType::Number,
            "integer" => JsonType::Integer,
            "string" => JsonType::String,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            JsonType::Null => "null",
            JsonType::Boolean => "boolean",
            JsonType::Object => "object",
            JsonType::Array => "array",
            JsonType::Number => "number",
            JsonType::Integer => "integer",
            JsonType::String => "string",
        }
    }

    fn matches(self, value: &Value) -> bool {
        match (self, value) {
            (JsonType::Null, Value::Null)
            | (JsonType::Boolean, Value::Bool(_))
            | (JsonType::Object, Value::Object(_))
            | (JsonType::Array, Value::Array(_))
            | (JsonType::String, Value::String(_))
            | (JsonType::Number, Value::Number(_)) => true,
            (JsonType::Integer, Value::Number(n)) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        }
    }
}

/// The kind of a JSON value, for messages.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A compiled schema node.
#[derive(Debug, Default)]
pub struct Schema {
    types: Vec<JsonType>,
    properties: Vec<(String, Schema)>,
    required: Vec<String>,
    additional_properties: bool,
    items: Option<Box<Schema>>,
    min_items: Option<usize>,
    max_items: Option<usize>,
    min_length: Option<usize>,
    max_length: Option<usize>,
    pattern: Option<Regex>,
    date_time: bool,
    one_of_values: Option<Vec<Value>>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    exclusive_minimum: Option<f64>,
    exclusive_maximum: Option<f64>,
}

const ANNOTATIONS: [&str; 6] = [
    "$schema",
    "$id",
    "title",
    "description",
    "examples",
    "$comment",
];

impl Schema {
    /// Compiles a schema document; `name` identifies it in errors.
    pub fn compile(name: &str, document: &Value) -> Result<Schema, SchemaError> {
        compile_node(name, document, "")
    }

    /// Compiles a schema from JSON text.
    pub fn parse(name: &str, text: &str) -> Result<Schema, SchemaError> {
        let document: Value = serde_json::from_str(text).map_err(|e| SchemaError {
            schema: name.to_string(),
            pointer: String::new(),
            message: format!("not JSON: {e}"),
        })?;
        Schema::compile(name, &document)
    }

    /// The first violation, as `pointer: what is wrong`; `None` when the value is valid.
    pub fn validate(&self, value: &Value) -> Option<String> {
        let mut path = String::new();
        self.check(value, &mut path).err()
    }

    fn check(&self, value: &Value, path: &mut String) -> Result<(), String> {
        let at = |path: &str| {
            if path.is_empty() {
                "/".to_string()
            } else {
                path.to_string()
            }
        };
        if !self.types.is_empty() && !self.types.iter().any(|t| t.matches(value)) {
            let expected: Vec<&str> = self.types.iter().map(|t| t.name()).collect();
            return Err(format!(
                "{}: expected {}, found {}",
                at(path),
                expected.join(" or "),
                kind_of(value)
            ));
        }
        if let Some(allowed) = &self.one_of_values {
            if !allowed.iter().any(|a| json_equal(a, value)) {
                let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
                return Err(format!(
                    "{}: {} is not one of {}",
                    at(path),
                    value,
                    list.join(", ")
                ));
            }
        }
        match value {
            Value::Object(object) => self.check_object(object, path)?,
            Value::Array(items) => {
                if let Some(min) = self.min_items.filter(|&m| items.len() < m) {
                    return Err(format!(
                        "{}: {} items, at least {min} needed",
                        at(path),
                        items.len()
                    ));
                }
                if let Some(max) = self.max_items.filter(|&m| items.len() > m) {
                    return Err(format!(
                        "{}: {} items, at most {max} allowed",
                        at(path),
                        items.len()
                    ));
                }
                if let Some(schema) = &self.items {
                    for (i, item) in items.iter().enumerate() {
                        let len = path.len();
                        path.push('/');
                        path.push_str(&i.to_string());
                        schema.check(item, path)?;
                        path.truncate(len);
                    }
                }
            }
            Value::String(s) => {
                if self.min_length.is_some() || self.max_length.is_some() {
                    let n = s.chars().count();
                    if let Some(min) = self.min_length.filter(|&m| n < m) {
                        return Err(format!(
                            "{}: {n} characters, at least {min} needed",
                            at(path)
                        ));
                    }
                    if let Some(max) = self.max_length.filter(|&m| n > m) {
                        return Err(format!(
                            "{}: {n} characters, at most {max} allowed",
                            at(path)
                        ));
                    }
                }
                if let Some(re) = &self.pattern {
                    if !re.is_match(s) {
                        return Err(format!(
                            "{}: {:?} does not match the pattern {}",
                            at(path),
                            s,
                            re.as_str()
                        ));
                    }
                }
                if self.date_time && !is_date_time(s) {
                    return Err(format!(
                        "{}: {:?} is not an RFC 3339 date-time (e.g. 2026-11-26T12:00:00.000Z)",
                        at(path),
                        s
                    ));
                }
            }
            Value::Number(n) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                let fail = |rule: &str, bound: f64| {
                    Err(format!("{}: {} must be {rule} {bound}", at(path), n))
                };
                if let Some(b) = self.minimum.filter(|&b| x < b) {
                    return fail("at least", b);
                }
                if let Some(b) = self.maximum.filter(|&b| x > b) {
                    return fail("at most", b);
                }
                if let Some(b) = self.exclusive_minimum.filter(|&b| x <= b) {
                    return fail("greater than", b);
                }
                if let Some(b) = self.exclusive_maximum.filter(|&b| x >= b) {
                    return fail("less than", b);
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
        Ok(())
    }

    fn check_object(&self, object: &Map<String, Value>, path: &mut String) -> Result<(), String> {
        for name in &self.required {
            if !object.contains_key(name) {
                return Err(format!("{}/{name}: required field missing", path.as_str()));
            }
        }
        for (key, value) in object {
            let len = path.len();
            path.push('/');
            path.push_str(key);
            match self.properties.iter().find(|(name, _)| name == key) {
                Some((_, schema)) => schema.check(value, path)?,
                None if !self.additional_properties => {
                    let known: Vec<&str> =
                        self.properties.iter().map(|(n, _)| n.as_str()).collect();
                    return Err(format!(
                        "{path}: unknown field; the fields are {}",
                        known.join(", ")
                    ));
                }
                None => {}
            }
            path.truncate(len);
        }
        Ok(())
    }
}

/// Equality as JSON Schema defines it for `enum` and `const`: numbers by value.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// RFC 3339 `date-time`: a full date, `T`, a full time with seconds, and an offset.
pub fn is_date_time(s: &str) -> bool {
    let b = s.as_bytes();
    let has_offset = b.last().is_some_and(|c| matches!(c, b'Z' | b'z'))
        || (b.len() > 6 && matches!(b[b.len() - 6], b'+' | b'-') && b[b.len() - 3] == b':');
    b.len() >= 20
        && matches!(b[10], b'T' | b't')
        && has_offset
        && eddy_runtime::types::parse_timestamp(s).is_some()
}

fn compile_node(name: &str, node: &Value, pointer: &str) -> Result<Schema, SchemaError> {
    let err = |at: &str, message: String| SchemaError {
        schema: name.to_string(),
        pointer: if at.is_empty() { "/".into() } else { at.into() },
        message,
    };
    let Value::Object(map) = node else {
        return Err(err(pointer, "a schema must be an object".into()));
    };
    let mut schema = Schema {
        additional_properties: true,
        ..Schema::default()
    };
    let size = |key: &str, v: &Value| {
        v.as_u64().map(|n| n as usize).ok_or_else(|| {
            err(
                &format!("{pointer}/{key}"),
                "must be a non-negative integer".into(),
            )
        })
    };
    let number = |key: &str, v: &Value| {
        v.as_f64()
            .ok_or_else(|| err(&format!("{pointer}/{key}"), "must be a number".into()))
    };
    for (key, value) in map {
        let here = format!("{pointer}/{key}");
        match key.as_str() {
            k if ANNOTATIONS.contains(&k) => {}
            "type" => {
                let names: Vec<&Value> = match value {
                    Value::Array(list) => list.iter().collect(),
                    other => vec![other],
                };
                for n in names {
                    let t = n.as_str().and_then(JsonType::parse).ok_or_else(|| {
                        err(&here, format!("unknown type {n}"))
                    })?;
                    schema.types.push(t);
                }
            }
            "properties" => {
                let Value::Object(props) = value else {
                    return Err(err(&here, "must be an object".into()));
                };
                for (prop, sub) in props {
                    let compiled = compile_node(name, sub, &format!("{here}/{prop}"))?;
                    schema.properties.push((prop.clone(), compiled));
                }
            }
            "required" => {
                let list = value.as_array().ok_or_else(|| err(&here, "must be an array".into()))?;
                for r in list {
                    let field = r.as_str().ok_or_else(|| err(&here, "must list strings".into()))?;
                    schema.required.push(field.to_string());
                }
            }
            "additionalProperties" => {
                schema.additional_properties = value.as_bool().ok_or_else(|| {
                    err(&here, "only true or false is supported".into())
                })?;
            }
            "items" => schema.items = Some(Box::new(compile_node(name, value, &here)?)),
            "minItems" => schema.min_items = Some(size(key, value)?),
            "maxItems" => schema.max_items = Some(size(key, value)?),
            "minLength" => schema.min_length = Some(size(key, value)?),
            "maxLength" => schema.max_length = Some(size(key, value)?),
            "pattern" => {
                let text = value.as_str().ok_or_else(|| err(&here, "must be a string".into()))?;
                schema.pattern = Some(
                    eddy_runtime::expr::bounded_regex(text)
                        .map_err(|e| err(&here, format!("bad pattern: {e}")))?,
                );
            }
            "format" => match value.as_str() {
                Some("date-time") => schema.date_time = true,
                other => {
                    return Err(err(
                        &here,
                        format!("format {other:?} is not supported (only \"date-time\")"),
                    ))
                }
            },
            "enum" => {
                let list = value.as_array().ok_or_else(|| err(&here, "must be an array".into()))?;
                schema.one_of_values = Some(list.clone());
            }
            "const" => schema.one_of_values = Some(vec![value.clone()]),
            "minimum" => schema.minimum = Some(number(key, value)?),
            "maximum" => schema.maximum = Some(number(key, value)?),
            "exclusiveMinimum" => schema.exclusive_minimum = Some(number(key, value)?),
            "exclusiveMaximum" => schema.exclusive_maximum = Some(number(key, value)?),
            other => {
                return Err(err(
                    &here,
                    format!("keyword `{other}` is not supported by Eddy's validator; see the list in ingest/src/schema.rs"),
                ))
            }
        }
    }
    for r in &schema.required {
        if !schema.additional_properties && !schema.properties.iter().any(|(n, _)| n == r) {
            return Err(err(
                pointer,
                format!("`{r}` is required but not among the properties, so nothing validates"),
            ));
        }
    }
    Ok(schema)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::compile(
            "test",
            &json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "properties": {
                    "id": {"type": "string", "minLength": 1, "maxLength": 4},
                    "n": {"type": "integer", "minimum": 1, "maximum": 10},
                    "price": {"type": "number", "exclusiveMinimum": 0},
                    "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
                    "page": {"enum": ["home", "cart"]},
                    "ts": {"type": "string", "format": "date-time"},
                    "ref": {"type": ["string", "null"]},
                    "items": {"type": "array", "minItems": 1, "items": {
                        "type": "object",
                        "properties": {"q": {"type": "integer"}},
                        "required": ["q"],
                        "additionalProperties": false
                    }}
                },
                "required": ["id", "n"],
                "additionalProperties": false
            }),
        )
        .unwrap()
    }

    #[test]
    fn valid_events_pass() {
        let s = schema();
        let ok = json!({"id": "a", "n": 3, "price": 0.5, "code": "EUR", "page": "home",
            "ts": "2026-11-26T12:00:00.000Z", "ref": null, "items": [{"q": 1}]});
        assert_eq!(s.validate(&ok), None);
        assert_eq!(
            s.validate(&json!({"id": "a", "n": 3.0})),
            None,
            "3.0 is an integer"
        );
        assert_eq!(
            s.validate(&json!({"id": "a", "n": 3, "ts": "2026-11-26T12:00:00+01:00"})),
            None
        );
    }

    #[test]
    fn violations_name_the_field_and_the_rule() {
        let s = schema();
        let cases = [
            (json!({"n": 3}), "/id: required field missing"),
            (
                json!({"id": "", "n": 3}),
                "/id: 0 characters, at least 1 needed",
            ),
            (
                json!({"id": "abcde", "n": 3}),
                "/id: 5 characters, at most 4 allowed",
            ),
            (
                json!({"id": "a", "n": "3"}),
                "/n: expected integer, found a string",
            ),
            (json!({"id": "a", "n": 0}), "/n: 0 must be at least 1"),
            (
                json!({"id": "a", "n": 2.5}),
                "/n: expected integer, found a number",
            ),
            (
                json!({"id": "a", "n": 1, "price": 0}),
                "/price: 0 must be greater than 0",
            ),
            (
                json!({"id": "a", "n": 1, "code": "eur"}),
                "/code: \"eur\" does not match",
            ),
            (
                json!({"id": "a", "n": 1, "page": "x"}),
                "/page: \"x\" is not one of \"home\", \"cart\"",
            ),
            (
                json!({"id": "a", "n": 1, "ts": "yesterday"}),
                "/ts: \"yesterday\" is not an RFC 3339",
            ),
            (
                json!({"id": "a", "n": 1, "ts": "2026-11-26 12:00:00"}),
                "is not an RFC 3339",
            ),
            (
                json!({"id": "a", "n": 1, "items": []}),
                "/items: 0 items, at least 1 needed",
            ),
            (
                json!({"id": "a", "n": 1, "items": [{"q": 1}, {}]}),
                "/items/1/q: required field missing",
            ),
            (
                json!({"id": "a", "n": 1, "coupon": "x"}),
                "/coupon: unknown field; the fields are code, id, items, n,",
            ),
            (json!([1]), "/: expected object, found an array"),
        ];
        for (value, expected) in cases {
            let got = s.validate(&value).unwrap_or_default();
            assert!(
                got.starts_with(expected) || got.contains(expected),
                "{value}: got {got:?}, expected {expected:?}"
            );
        }
    }

    #[test]
    fn unsupported_keywords_are_refused_at_load() {
        let e = Schema::compile("x", &json!({"type": "object", "oneOf": []})).unwrap_err();
        assert!(
            e.to_string().contains("keyword `oneOf` is not supported"),
            "{e}"
        );
        let e =
            Schema::compile("x", &json!({"properties": {"a": {"format": "email"}}})).unwrap_err();
        assert!(e.to_string().contains("/properties/a/format"), "{e}");
        let e = Schema::compile(
            "x",
            &json!({"additionalProperties": false, "required": ["a"]}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("nothing validates"), "{e}");
    }
}
