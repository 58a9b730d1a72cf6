//! JSON Schema validation of events, with the `jsonschema` crate (draft 2020-12, `format`
//! asserted, no remote references).
//!
//! A schema is compiled once and then validates events on the ingest hot path: `is_valid`
//! walks an event without collecting anything, and only an invalid event pays for its error
//! message. `benches/src/schema.rs` measured it 1.6 times as fast as the hand-written subset it
//! replaced (3.5 M against 2.2 M events/s on the generator's traffic, one core).
//!
//! The specification ignores keywords it does not know, so a misspelt `minLenght` would
//! silently validate nothing. A schema is therefore refused when it loads if any of its
//! objects uses a keyword outside draft 2020-12's vocabularies, or a `format` the validator
//! does not know.

use serde_json::Value;

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

/// Every keyword of draft 2020-12 (core, applicator, unevaluated, validation, format,
/// meta-data and content vocabularies), plus `definitions`, which older schemas use.
const KEYWORDS: &[&str] = &[
    "$schema",
    "$id",
    "$ref",
    "$anchor",
    "$dynamicRef",
    "$dynamicAnchor",
    "$vocabulary",
    "$comment",
    "$defs",
    "definitions",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "dependentSchemas",
    "prefixItems",
    "items",
    "contains",
    "properties",
    "patternProperties",
    "additionalProperties",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "type",
    "enum",
    "const",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxContains",
    "minContains",
    "maxProperties",
    "minProperties",
    "required",
    "dependentRequired",
    "format",
    "title",
    "description",
    "default",
    "deprecated",
    "readOnly",
    "writeOnly",
    "examples",
    "contentEncoding",
    "contentMediaType",
    "contentSchema",
];

/// Keywords whose value is a map from names to schemas.
const SCHEMA_MAPS: &[&str] = &[
    "$defs",
    "definitions",
    "properties",
    "patternProperties",
    "dependentSchemas",
];

/// Keywords whose value is a list of schemas.
const SCHEMA_LISTS: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems"];

/// Keywords whose value is one schema.
const SCHEMA_ONE: &[&str] = &[
    "not",
    "if",
    "then",
    "else",
    "items",
    "contains",
    "additionalProperties",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contentSchema",
];

/// Refuses a keyword no vocabulary defines, anywhere a schema may be.
fn known_keywords(name: &str, node: &Value, pointer: &str) -> Result<(), SchemaError> {
    let Value::Object(map) = node else {
        return Ok(()); // `true`, `false`; a wrong type is the validator's to refuse
    };
    for (key, value) in map {
        let at = format!("{pointer}/{}", key.replace('~', "~0").replace('/', "~1"));
        if !KEYWORDS.contains(&key.as_str()) {
            return Err(SchemaError {
                schema: name.to_string(),
                pointer: at,
                message: format!(
                    "`{key}` is not a JSON Schema keyword (draft 2020-12); it would validate nothing"
                ),
            });
        }
        if SCHEMA_MAPS.contains(&key.as_str()) {
            for (field, schema) in value.as_object().into_iter().flatten() {
                let field = field.replace('~', "~0").replace('/', "~1");
                known_keywords(name, schema, &format!("{at}/{field}"))?;
            }
        } else if SCHEMA_LISTS.contains(&key.as_str()) {
            for (i, schema) in value.as_array().into_iter().flatten().enumerate() {
                known_keywords(name, schema, &format!("{at}/{i}"))?;
            }
        } else if SCHEMA_ONE.contains(&key.as_str()) {
            known_keywords(name, value, &at)?;
        }
    }
    Ok(())
}

/// A compiled schema.
pub struct Schema {
    validator: jsonschema::Validator,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema").finish_non_exhaustive()
    }
}

impl Schema {
    /// Compiles a schema document; `name` identifies it in errors.
    pub fn compile(name: &str, document: &Value) -> Result<Schema, SchemaError> {
        known_keywords(name, document, "")?;
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .should_ignore_unknown_formats(false)
            .build(document)
            .map_err(|e| SchemaError {
                schema: name.to_string(),
                // The schema is the instance the meta-schema checked.
                pointer: pointer_or_root(e.instance_path().as_str()),
                message: e.to_string(),
            })?;
        Ok(Schema { validator })
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
        if self.validator.is_valid(value) {
            return None;
        }
        let error = self.validator.iter_errors(value).next()?;
        Some(format!(
            "{}: {error}",
            pointer_or_root(error.instance_path().as_str())
        ))
    }
}

fn pointer_or_root(pointer: &str) -> String {
    if pointer.is_empty() {
        "/".into()
    } else {
        pointer.into()
    }
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
            (json!({"n": 3}), r#"/: "id" is a required property"#),
            (
                json!({"id": "", "n": 3}),
                r#"/id: "" is shorter than 1 character"#,
            ),
            (
                json!({"id": "abcde", "n": 3}),
                r#"/id: "abcde" is longer than 4 characters"#,
            ),
            (
                json!({"id": "a", "n": "3"}),
                r#"/n: "3" is not of type "integer""#,
            ),
            (
                json!({"id": "a", "n": 0}),
                "/n: 0 is less than the minimum of 1",
            ),
            (
                json!({"id": "a", "n": 2.5}),
                r#"/n: 2.5 is not of type "integer""#,
            ),
            (
                json!({"id": "a", "n": 1, "price": 0}),
                "/price: 0 is less than or equal to the minimum of 0",
            ),
            (
                json!({"id": "a", "n": 1, "code": "eur"}),
                r#"/code: "eur" does not match "^[A-Z]{3}$""#,
            ),
            (
                json!({"id": "a", "n": 1, "page": "x"}),
                r#"/page: "x" is not one of "home" or "cart""#,
            ),
            (
                json!({"id": "a", "n": 1, "ts": "yesterday"}),
                r#"/ts: "yesterday" is not a "date-time""#,
            ),
            (
                json!({"id": "a", "n": 1, "ts": "2026-11-26 12:00:00"}),
                r#"is not a "date-time""#,
            ),
            (
                json!({"id": "a", "n": 1, "items": []}),
                "/items: [] has less than 1 item",
            ),
            (
                json!({"id": "a", "n": 1, "items": [{"q": 1}, {}]}),
                r#"/items/1: "q" is a required property"#,
            ),
            (
                json!({"id": "a", "n": 1, "coupon": "x"}),
                "/: Additional properties are not allowed ('coupon' was unexpected)",
            ),
            (json!([1]), r#"/: [1] is not of type "object""#),
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
    fn misspelt_keywords_unknown_formats_and_invalid_schemas_are_refused_at_load() {
        let e = Schema::compile("x", &json!({"properties": {"a": {"minLenght": 1}}})).unwrap_err();
        assert_eq!(e.pointer, "/properties/a/minLenght", "{e}");
        assert!(e.to_string().contains("not a JSON Schema keyword"), "{e}");
        let e = Schema::compile("x", &json!({"items": {"format": "emial"}})).unwrap_err();
        assert!(e.to_string().contains("emial"), "{e}");
        let e = Schema::compile("x", &json!({"type": "object", "oneOf": []})).unwrap_err();
        assert_eq!(e.pointer, "/oneOf", "{e}");
        let e = Schema::parse("x", "{").unwrap_err();
        assert!(e.to_string().contains("not JSON"), "{e}");
    }
}
