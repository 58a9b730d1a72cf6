//! Generic JSON lines with a declared schema: one object per line, columns picked out by key or
//! by a dotted path into nested objects.
//!
//! This uses the same scanner as the Nexmark parser rather than serde_json, because DECIMAL
//! columns must be read exactly from the number's text (serde_json without
//! `arbitrary_precision` only offers an f64), and because walking the line once while skipping
//! unneeded keys is cheaper than building a tree.

use super::scanner::{read_value, unescape, Scanner};
use super::FormatError;
use eddy_runtime::types::{DataType, Field, Row, Schema, Value};
use serde::{Deserialize, Serialize};

/// One declared column: name, type, and an optional dotted path into nested objects (default:
/// the name), so that nested input maps onto a flat schema without a separate unnesting step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonColumn {
    /// The column's name in the schema.
    pub name: String,
    /// The type values are converted to; a JSON value of another type is an error.
    pub data_type: DataType,
    /// Keys separated by '.', e.g. `bid.price`; None means the name is the path.
    #[serde(default)]
    pub path: Option<String>,
}

impl JsonColumn {
    /// A column read from the top-level key of the same name.
    pub fn new(name: impl Into<String>, data_type: DataType) -> Self {
        JsonColumn {
            name: name.into(),
            data_type,
            path: None,
        }
    }

    /// The same column read from a dotted path instead.
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }
}

/// One key of the path tree: the columns whose path ends here, and the keys below it.
#[derive(Debug, Clone, Default)]
struct Node {
    key: Box<[u8]>,
    columns: Vec<usize>,
    children: Vec<Node>,
    /// The array whose elements become rows of their own; its children are read per element.
    unnest: bool,
}

impl Node {
    fn child(&mut self, key: &str) -> &mut Node {
        let pos = match self.children.iter().position(|c| &*c.key == key.as_bytes()) {
            Some(pos) => pos,
            None => {
                self.children.push(Node {
                    key: key.as_bytes().into(),
                    ..Node::default()
                });
                self.children.len() - 1
            }
        };
        &mut self.children[pos]
    }

    /// The first column at or below this node, to name in "expected an object" errors.
    fn first_column(&self) -> Option<usize> {
        self.columns
            .first()
            .copied()
            .or_else(|| self.children.iter().find_map(Node::first_column))
    }
}

/// Parses JSON lines into rows of a declared schema. Only wanted columns are decoded; the others
/// are NULL. Missing keys and JSON null give NULL; a value of the wrong type is an error naming
/// the column. Reusable across lines (keeps a scratch buffer).
#[derive(Debug, Clone)]
pub struct JsonParser {
    columns: Vec<JsonColumn>,
    root: Node,
    scratch: Vec<u8>,
    /// With an unnested array: whether an ordinal column follows the declared ones.
    unnest: Option<Unnest>,
    /// The elements of the unnested array of the line being parsed, one value slot per column.
    elements: Vec<Vec<Value>>,
}

#[derive(Debug, Clone)]
struct Unnest {
    ordinal: bool,
    /// Columns read from the elements (below the array's path).
    element_columns: Vec<usize>,
}

impl JsonParser {
    /// `wanted[i]` says whether column `i` is needed (projection pushdown); entries missing from
    /// a short `wanted` count as needed, so a mistake costs speed, never silently lost data.
    pub fn new(columns: Vec<JsonColumn>, wanted: Vec<bool>) -> Self {
        let mut root = Node::default();
        for (i, column) in columns.iter().enumerate() {
            if !wanted.get(i).copied().unwrap_or(true) {
                continue;
            }
            let path = column.path.as_deref().unwrap_or(&column.name);
            let mut node = &mut root;
            for key in path.split('.') {
                node = node.child(key);
            }
            node.columns.push(i);
        }
        JsonParser {
            columns,
            root,
            scratch: Vec::new(),
            unnest: None,
            elements: Vec::new(),
        }
    }

    /// Makes each element of the array at `path` (dotted) a row of its own; columns whose path
    /// lies below it read the element. With `ordinal`, a BIGINT column after the declared ones
    /// holds the element's position from 1.
    pub fn with_unnest(mut self, path: &str, ordinal: bool) -> Result<Self, FormatError> {
        let prefix = format!("{path}.");
        let element_columns: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.path.as_deref().unwrap_or(&c.name).starts_with(&prefix))
            .map(|(i, _)| i)
            .collect();
        if let Some(c) = self
            .columns
            .iter()
            .find(|c| c.path.as_deref().unwrap_or(&c.name) == path)
        {
            return Err(FormatError(format!(
                "column `{}` reads the unnested array `{path}` itself; read its elements' fields (`{path}.field`)",
                c.name
            )));
        }
        let mut node = &mut self.root;
        for key in path.split('.') {
            node = node.child(key);
        }
        node.unnest = true;
        self.unnest = Some(Unnest {
            ordinal,
            element_columns,
        });
        Ok(self)
    }

    /// Parses one line into its rows: one, or with an unnested array one per element.
    pub fn parse_many(&mut self, line: &[u8], rows: &mut Vec<Row>) -> Result<(), FormatError> {
        let Some(unnest) = &self.unnest else {
            rows.push(self.parse(line)?);
            return Ok(());
        };
        let ordinal = unnest.ordinal;
        let row = self.parse(line)?;
        let elements = std::mem::take(&mut self.elements);
        let element_columns = &self.unnest.as_ref().expect("checked above").element_columns;
        for (i, element) in elements.iter().enumerate() {
            let mut values = row.values.clone();
            for &c in element_columns {
                values[c] = element[c].clone();
            }
            if ordinal {
                values.push(Value::Int(i as i64 + 1));
            }
            rows.push(Row::insert(values));
        }
        self.elements = elements;
        Ok(())
    }

    /// The schema of the rows: every declared column, wanted or not, so column indexes in the
    /// plan stay those of the declaration.
    pub fn schema(&self) -> Schema {
        Schema::new(
            self.columns
                .iter()
                .map(|c| Field::new(c.name.clone(), c.data_type))
                .collect(),
        )
    }

    /// Parses one line (a JSON object; a trailing '\n' or "\r\n" is allowed). A blank line is an
    /// error: the caller decides whether to skip those before calling.
    pub fn parse(&mut self, line: &[u8]) -> Result<Row, FormatError> {
        let mut sc = Scanner::new(line);
        if sc.at_end() {
            return Err(FormatError("empty line: expected a JSON object".into()));
        }
        if sc.peek_ws() != Some(b'{') {
            let found = sc.describe()?;
            return Err(FormatError(format!(
                "expected a JSON object, found {found}"
            )));
        }
        let mut values = vec![Value::Null; self.columns.len()];
        self.elements.clear();
        parse_object(
            &mut sc,
            &self.root,
            &self.columns,
            &mut values,
            &mut self.scratch,
            &mut self.elements,
        )?;
        if !sc.at_end() {
            return Err(sc.error("unexpected text after the JSON object").into());
        }
        Ok(Row::insert(values))
    }
}

/// Reads the object at the cursor, filling the columns of `node`'s subtree into `values`.
fn parse_object(
    sc: &mut Scanner<'_>,
    node: &Node,
    columns: &[JsonColumn],
    values: &mut [Value],
    scratch: &mut Vec<u8>,
    elements: &mut Vec<Vec<Value>>,
) -> Result<(), FormatError> {
    sc.expect(b'{', "expected '{'")?;
    if sc.peek_ws() == Some(b'}') {
        sc.advance(1);
        return Ok(());
    }
    loop {
        let (raw, escaped) = sc.string()?;
        let owned;
        let key: &[u8] = if escaped {
            let mut buf = Vec::new();
            unescape(raw, &mut buf).map_err(|what| FormatError::from(sc.error(what)))?;
            owned = buf;
            &owned
        } else {
            raw
        };
        sc.expect(b':', "expected ':' after a key")?;
        match node.children.iter().find(|c| &*c.key == key) {
            None => sc.skip_value()?,
            Some(child) => {
                sc.skip_ws();
                let start = sc.pos();
                for &i in &child.columns {
                    sc.reset(start);
                    let column = &columns[i];
                    values[i] = read_value(sc, column.data_type, scratch)
                        .map_err(|e| e.named(&column.name))?;
                }
                if child.unnest {
                    sc.reset(start);
                    elements.clear();
                    parse_elements(sc, child, columns, scratch, elements, key)?;
                } else if !child.children.is_empty() {
                    sc.reset(start);
                    match sc.peek() {
                        Some(b'{') => parse_object(sc, child, columns, values, scratch, elements)?,
                        _ if sc.null() => {
                            // A null parent leaves everything below it NULL; undo values set
                            // by an earlier duplicate of this key.
                            clear(child, values);
                        }
                        _ => {
                            let name = child
                                .first_column()
                                .map_or("", |i| columns[i].name.as_str());
                            let path = String::from_utf8_lossy(key).into_owned();
                            return Err(sc
                                .mismatch(start, &format!("an object at key '{path}'"))
                                .named(name));
                        }
                    }
                }
            }
        }
        match sc.peek_ws() {
            Some(b',') => sc.advance(1),
            Some(b'}') => {
                sc.advance(1);
                return Ok(());
            }
            _ => return Err(sc.error("expected ',' or '}' after a value").into()),
        }
    }
}

/// Reads the unnested array at the cursor: each element object fills a value slot per column.
fn parse_elements(
    sc: &mut Scanner<'_>,
    node: &Node,
    columns: &[JsonColumn],
    scratch: &mut Vec<u8>,
    elements: &mut Vec<Vec<Value>>,
    key: &[u8],
) -> Result<(), FormatError> {
    let start = sc.pos();
    if sc.null() {
        return Ok(());
    }
    let path = || String::from_utf8_lossy(key).into_owned();
    if sc.peek() != Some(b'[') {
        let name = node.first_column().map_or("", |i| columns[i].name.as_str());
        return Err(sc
            .mismatch(start, &format!("an array at key '{}'", path()))
            .named(name));
    }
    sc.advance(1);
    if sc.peek_ws() == Some(b']') {
        sc.advance(1);
        return Ok(());
    }
    let mut none = Vec::new();
    loop {
        let mut values = vec![Value::Null; columns.len()];
        match sc.peek_ws() {
            Some(b'{') => parse_object(sc, node, columns, &mut values, scratch, &mut none)?,
            _ if sc.null() => {}
            _ => {
                let at = sc.pos();
                let name = node.first_column().map_or("", |i| columns[i].name.as_str());
                return Err(sc
                    .mismatch(at, &format!("an object in the array '{}'", path()))
                    .named(name));
            }
        }
        elements.push(values);
        match sc.peek_ws() {
            Some(b',') => sc.advance(1),
            Some(b']') => {
                sc.advance(1);
                return Ok(());
            }
            _ => return Err(sc.error("expected ',' or ']' in an array").into()),
        }
    }
}

/// Sets every column below `node` back to NULL.
fn clear(node: &Node, values: &mut [Value]) {
    for child in &node.children {
        for &i in &child.columns {
            values[i] = Value::Null;
        }
        clear(child, values);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_runtime::types::Decimal;

    fn parser() -> JsonParser {
        JsonParser::new(
            vec![
                JsonColumn::new("id", DataType::BigInt),
                JsonColumn::new(
                    "price",
                    DataType::Decimal {
                        precision: 10,
                        scale: 2,
                    },
                ),
                JsonColumn::new("ratio", DataType::Double),
                JsonColumn::new("name", DataType::String),
                JsonColumn::new("ok", DataType::Boolean),
                JsonColumn::new("ts", DataType::Timestamp),
                JsonColumn::new("city", DataType::String).with_path("address.city"),
                JsonColumn::new("zip", DataType::BigInt).with_path("address.geo.zip"),
                JsonColumn::new("skipped", DataType::String),
            ],
            vec![true, true, true, true, true, true, true, true, false],
        )
    }

    #[test]
    fn parses_declared_columns() {
        let mut p = parser();
        assert_eq!(
            p.schema().names(),
            "id, price, ratio, name, ok, ts, city, zip, skipped"
        );
        let row = p
            .parse(
                br#" { "zzz": [1, {"a": null}], "ts": "2026-01-01T00:00:01.5Z", "name": "a\u00e9\"",
                "address": {"geo": {"zip": 12345}, "city": "bend"}, "id": -7, "price": 0.125,
                "ratio": 1e-3, "ok": false, "skipped": "x" }
"#,
            )
            .unwrap();
        assert_eq!(
            row.values,
            vec![
                Value::Int(-7),
                Value::Decimal(Decimal {
                    unscaled: 13,
                    scale: 2
                }),
                Value::Float(0.001),
                Value::str("aé\""),
                Value::Bool(false),
                Value::Timestamp(1_767_225_601_500),
                Value::str("bend"),
                Value::Int(12345),
                Value::Null,
            ]
        );
    }

    #[test]
    fn missing_and_null_give_null() {
        let mut p = parser();
        let row = p
            .parse(br#"{"id":1,"name":null,"address":null,"price":"12.5"}"#)
            .unwrap();
        assert_eq!(row.values[0], Value::Int(1));
        assert_eq!(
            row.values[1],
            Value::Decimal(Decimal {
                unscaled: 1250,
                scale: 2
            })
        );
        assert!(row.values[2..].iter().all(Value::is_null));
        let row = p
            .parse(br#"{"address":{"city":"x"},"address":null,"ts":1000}"#)
            .unwrap();
        assert_eq!(row.values[6], Value::Null);
        assert_eq!(row.values[5], Value::Timestamp(1000));
        assert!(p.parse(b"{}").unwrap().values.iter().all(Value::is_null));
    }

    #[test]
    fn errors_name_the_column() {
        let mut p = parser();
        let err = |p: &mut JsonParser, line: &str| p.parse(line.as_bytes()).unwrap_err().0;
        assert_eq!(
            err(&mut p, r#"{"id":"12"}"#),
            r#"id: expected an integer, found "12""#
        );
        assert_eq!(
            err(&mut p, r#"{"id":1.5}"#),
            "id: expected an integer, found 1.5"
        );
        assert_eq!(
            err(&mut p, r#"{"name":3}"#),
            "name: expected a string, found 3"
        );
        assert_eq!(
            err(&mut p, r#"{"ok":"yes"}"#),
            r#"ok: expected true or false, found "yes""#
        );
        assert_eq!(
            err(&mut p, r#"{"price":123456789.5}"#),
            "price: expected a number or numeric string that fits DECIMAL(10, 2) (out of range), found 123456789.5"
        );
        assert_eq!(
            err(&mut p, r#"{"address":5}"#),
            "city: expected an object at key 'address', found 5"
        );
        assert!(err(&mut p, r#"{"ts":"noon"}"#).starts_with("ts: expected a timestamp"));
        assert_eq!(err(&mut p, ""), "empty line: expected a JSON object");
        assert_eq!(err(&mut p, "[1]"), "expected a JSON object, found an array");
        assert_eq!(
            err(&mut p, r#"{"id":1} x"#),
            "invalid JSON at byte 9: unexpected text after the JSON object"
        );
        assert!(err(&mut p, r#"{"id":1"#).starts_with("invalid JSON"));
        assert!(err(&mut p, r#"{"id":1,"name":"abc}"#).contains("unterminated string"));
    }

    #[test]
    fn unwanted_columns_are_not_decoded() {
        let mut p = JsonParser::new(
            vec![
                JsonColumn::new("a", DataType::BigInt),
                JsonColumn::new("b", DataType::BigInt),
            ],
            vec![false, true],
        );
        // "a" has the wrong type, but nobody reads it.
        let row = p.parse(br#"{"a":"text","b":2}"#).unwrap();
        assert_eq!(row.values, vec![Value::Null, Value::Int(2)]);
    }

    #[test]
    fn columns_deserialize_from_config() {
        let cols: Vec<JsonColumn> = serde_json::from_str(
            r#"[{"name":"a","data_type":"BigInt"},{"name":"b","data_type":"String","path":"x.y"}]"#,
        )
        .unwrap();
        assert_eq!(cols[0], JsonColumn::new("a", DataType::BigInt));
        assert_eq!(
            cols[1],
            JsonColumn::new("b", DataType::String).with_path("x.y")
        );
    }

    #[test]
    fn an_unnested_array_gives_a_row_per_element() {
        let columns = vec![
            JsonColumn::new("order_id", DataType::String).with_path("event_id"),
            JsonColumn::new("product_id", DataType::String).with_path("items.product_id"),
            JsonColumn::new("quantity", DataType::BigInt).with_path("items.quantity"),
            JsonColumn::new("currency", DataType::String),
        ];
        let mut p = JsonParser::new(columns, vec![true; 4])
            .with_unnest("items", true)
            .unwrap();
        let mut rows = Vec::new();
        p.parse_many(
            br#"{"event_id":"o1","items":[{"product_id":"a","quantity":2},{"quantity":1,"product_id":"b","x":[1]}],"currency":"EUR"}"#,
            &mut rows,
        )
        .unwrap();
        let text = |r: &Row| format!("{:?}", r.values);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            text(&rows[0]),
            format!(
                "{:?}",
                vec![
                    Value::str("o1"),
                    Value::str("a"),
                    Value::Int(2),
                    Value::str("EUR"),
                    Value::Int(1)
                ]
            )
        );
        assert_eq!(rows[1].values[1], Value::str("b"));
        assert_eq!(rows[1].values[4], Value::Int(2));
        rows.clear();
        p.parse_many(br#"{"event_id":"o2","items":[]}"#, &mut rows)
            .unwrap();
        p.parse_many(br#"{"event_id":"o3","items":null}"#, &mut rows)
            .unwrap();
        assert!(rows.is_empty(), "no items, no rows");
        let e = p
            .parse_many(br#"{"event_id":"o4","items":{"a":1}}"#, &mut rows)
            .unwrap_err();
        assert!(
            e.to_string().contains("expected an array at key 'items'"),
            "{e}"
        );
        let e = p
            .parse_many(
                br#"{"event_id":"o5","items":[{"quantity":"x"}]}"#,
                &mut rows,
            )
            .unwrap_err();
        assert!(e.to_string().contains("quantity"), "{e}");
        let bad = JsonParser::new(vec![JsonColumn::new("items", DataType::String)], vec![true])
            .with_unnest("items", false);
        assert!(bad.is_err());
    }
}
