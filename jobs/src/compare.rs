//! Comparing two JSON-lines results as multisets of rows, by the rule of the team's oracle
//! (shared/flink/compare.py): a column holding a non-integer number in either result compares
//! within a relative 1e-9; everything else, integers included, must be equal exactly.

use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::Path;

/// Reads a JSON-lines file (`.gz` decompressed) into rows.
pub fn read_rows(path: &Path) -> Result<Vec<Map<String, Value>>, String> {
    let mut text = String::new();
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let result = if path.extension().is_some_and(|e| e == "gz") {
        flate2::read::MultiGzDecoder::new(file).read_to_string(&mut text)
    } else {
        std::io::BufReader::new(file).read_to_string(&mut text)
    };
    result.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err(format!(
                "{}:{}: not a JSON object: {line}",
                path.display(),
                i + 1
            )),
        })
        .collect()
}

fn is_fuzzy(v: &Value) -> bool {
    matches!(v, Value::Number(n) if n.is_f64())
}

fn close(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) if a.is_number() && b.is_number() => {
            x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs())
        }
        _ => a == b,
    }
}

/// How two multisets of rows differ.
#[derive(Debug, Clone, PartialEq)]
pub struct Diff {
    pub expected: usize,
    pub actual: usize,
    /// Expected rows that `actual` lacks.
    pub missing: Vec<Map<String, Value>>,
    /// Rows of `actual` beyond the expected ones.
    pub extra: Vec<Map<String, Value>>,
    /// How many of `extra` are expected rows seen once too often (duplicates), as opposed to
    /// rows the reference does not have at all.
    pub duplicated: usize,
}

impl Diff {
    pub fn is_equal(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty()
    }
}

impl std::fmt::Display for Diff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_equal() {
            return write!(f, "EQUAL: {} rows", self.expected);
        }
        write!(
            f,
            "DIFFERENT: expected {} rows, actual {} rows; {} missing from actual, {} extra in actual ({} of them duplicates)",
            self.expected,
            self.actual,
            self.missing.len(),
            self.extra.len(),
            self.duplicated
        )?;
        for row in self.missing.iter().take(5) {
            write!(f, "\n  missing: {}", Value::Object(row.clone()))?;
        }
        for row in self.extra.iter().take(5) {
            write!(f, "\n  extra: {}", Value::Object(row.clone()))?;
        }
        Ok(())
    }
}

/// Compares `actual` with `expected` as multisets (see the module for the equality rule).
pub fn diff(expected: &[Map<String, Value>], actual: &[Map<String, Value>]) -> Diff {
    let fuzzy: BTreeSet<&String> = expected
        .iter()
        .chain(actual)
        .flat_map(|row| row.iter().filter(|(_, v)| is_fuzzy(v)).map(|(k, _)| k))
        .collect();
    let exact_key = |row: &Map<String, Value>| -> String {
        let exact: Map<String, Value> = row
            .iter()
            .filter(|(k, _)| !fuzzy.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut keys: Vec<_> = row.keys().cloned().collect();
        keys.sort();
        format!("{}|{}", keys.join(","), Value::Object(exact))
    };
    let mut groups: HashMap<String, Vec<&Map<String, Value>>> = HashMap::new();
    for row in actual {
        groups.entry(exact_key(row)).or_default().push(row);
    }
    let mut expected_keys: BTreeSet<String> = BTreeSet::new();
    let mut missing = Vec::new();
    for row in expected {
        let key = exact_key(row);
        let candidates = groups.entry(key.clone()).or_default();
        expected_keys.insert(key);
        let found = candidates.iter().position(|c| {
            fuzzy.iter().all(|k| match (row.get(*k), c.get(*k)) {
                (Some(a), Some(b)) => close(a, b),
                (None, None) => true,
                _ => false,
            })
        });
        match found {
            Some(i) => {
                candidates.swap_remove(i);
            }
            None => missing.push(row.clone()),
        }
    }
    let mut duplicated = 0;
    let mut extra = Vec::new();
    for (key, rows) in groups {
        if expected_keys.contains(&key) {
            duplicated += rows.len();
        }
        extra.extend(rows.into_iter().cloned());
    }
    Diff {
        expected: expected.len(),
        actual: actual.len(),
        missing,
        extra,
        duplicated,
    }
}

/// Ok when `actual` holds exactly the rows of `expected`; otherwise a report with the counts
/// and the first missing and extra rows.
pub fn compare(
    expected: &[Map<String, Value>],
    actual: &[Map<String, Value>],
) -> Result<(), String> {
    let d = diff(expected, actual);
    if d.is_equal() {
        Ok(())
    } else {
        Err(d.to_string())
    }
}

/// Compares two files (see [`compare`]).
pub fn compare_files(expected: &Path, actual: &Path) -> Result<(), String> {
    compare(&read_rows(expected)?, &read_rows(actual)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(text: &str) -> Vec<Map<String, Value>> {
        text.lines()
            .map(|l| {
                serde_json::from_str::<Value>(l)
                    .unwrap()
                    .as_object()
                    .unwrap()
                    .clone()
            })
            .collect()
    }

    #[test]
    fn multisets_with_float_tolerance() {
        let a =
            rows("{\"a\":1,\"p\":124784.624}\n{\"a\":1,\"p\":124784.624}\n{\"a\":2,\"p\":1000.0}");
        let b = rows("{\"a\":2,\"p\":1000.000}\n{\"a\":1,\"p\":124784.6240000001}\n{\"a\":1,\"p\":124784.624}");
        assert_eq!(compare(&a, &b), Ok(()));
        let c = rows("{\"a\":1,\"p\":124784.624}\n{\"a\":2,\"p\":1000.0}");
        assert!(compare(&a, &c).unwrap_err().contains("1 missing"));
        let d = rows("{\"a\":1}");
        let e = rows("{\"a\":1.5}");
        assert!(compare(&d, &e).is_err());
    }

    #[test]
    fn duplicates_are_told_apart_from_foreign_rows() {
        let expected = rows("{\"a\":1}\n{\"a\":2}");
        let actual = rows("{\"a\":1}\n{\"a\":1}\n{\"a\":3}");
        let d = diff(&expected, &actual);
        assert_eq!((d.missing.len(), d.extra.len(), d.duplicated), (1, 2, 1));
    }
}
