//! Tests of the expression language: parsing, typing, evaluation and error reporting.

use super::*;
use crate::types::{parse_timestamp, Decimal, Field, Schema};

fn bid_schema() -> Schema {
    Schema::new(vec![
        Field::new("auction", DataType::BigInt),
        Field::new("bidder", DataType::BigInt),
        Field::new("price", DataType::BigInt),
        Field::new("channel", DataType::String),
        Field::new("url", DataType::String),
        Field::new("dateTime", DataType::Timestamp),
        Field::new("extra", DataType::String),
        Field::new("ratio", DataType::Double),
        Field::new(
            "amount",
            DataType::Decimal {
                precision: 10,
                scale: 2,
            },
        ),
        Field::new("flag", DataType::Boolean),
        Field::new("n", DataType::BigInt),
    ])
}

fn ts(text: &str) -> i64 {
    parse_timestamp(text).unwrap()
}

fn bid_row() -> Vec<Value> {
    vec![
        Value::Int(1000),
        Value::Int(2001),
        Value::Int(137_428),
        Value::str("Google"),
        Value::str("https://www.nexmark.com/a/b/item.htm?query=1&channel_id=123"),
        Value::Timestamp(ts("2026-01-01 00:01:39.999")),
        Value::str("abcabc"),
        Value::Float(0.5),
        Value::Decimal(Decimal {
            unscaled: 12_345,
            scale: 2,
        }),
        Value::Bool(true),
        Value::Null,
    ]
}

fn compiled(text: &str) -> Expr {
    let schema = bid_schema();
    let ast = parse_expr(text).unwrap_or_else(|e| panic!("parse {text}: {e:?}"));
    compile(&ast, &Scope::single(&schema)).unwrap_or_else(|e| panic!("compile {text}: {e:?}"))
}

fn eval(text: &str) -> Value {
    compiled(text).eval(&bid_row())
}

fn ty(text: &str) -> DataType {
    compiled(text).data_type()
}

fn err(text: &str) -> ExprError {
    let schema = bid_schema();
    match parse_expr(text) {
        Err(e) => e,
        Ok(ast) => match compile(&ast, &Scope::single(&schema)) {
            Err(e) => e,
            Ok(e) => panic!("{text} compiled to {e:?}"),
        },
    }
}

fn s(text: &str) -> Value {
    Value::str(text)
}

fn dec(unscaled: i64, scale: u8) -> Value {
    Value::Decimal(Decimal { unscaled, scale })
}

fn decimal_type(precision: u8, scale: u8) -> DataType {
    DataType::Decimal { precision, scale }
}

/// Asserts exact equality including the variant (Value's own `==` treats 1.0 and 1.00 alike).
#[track_caller]
fn check(text: &str, expected: Value) {
    let got = eval(text);
    assert_eq!(
        format!("{got:?}"),
        format!("{expected:?}"),
        "evaluating `{text}`"
    );
}

// ---- parsing and precedence -----------------------------------------------------------------

#[test]
fn precedence() {
    check("1 + 2 * 3", Value::Int(7));
    check("(1 + 2) * 3", Value::Int(9));
    check("10 - 4 - 3", Value::Int(3));
    check("2 * 3 % 4", Value::Int(2));
    check("-2 * 3", Value::Int(-6));
    check("- (2 + 3)", Value::Int(-5));
    check("- -1", Value::Int(1));
    check("'a' || 'b' = 'ab'", Value::Bool(true));
    check("NOT 1 = 2", Value::Bool(true));
    check("TRUE OR FALSE AND FALSE", Value::Bool(true));
    check("NOT TRUE AND FALSE", Value::Bool(false));
    check("1 + 1 BETWEEN 2 AND 3 AND TRUE", Value::Bool(true));
    check("1 < 2 = TRUE", Value::Bool(true));
    check(
        "price + 2 > 137429 AND channel LIKE 'G%'",
        Value::Bool(true),
    );
    check("'x' || 'y' || 'z'", s("xyz"));
    // `||` binds looser than `+`, so this is (1 + 2) || 'x': a type error.
    assert!(err("1 + 2 || 'x'").message.contains("`||`"));

    let ast = parse_expr("a OR b AND c").unwrap();
    let AstKind::Binary { op, right, .. } = &ast.kind else {
        panic!("{ast:?}")
    };
    assert_eq!(*op, BinaryOp::Or);
    assert!(matches!(
        right.kind,
        AstKind::Binary {
            op: BinaryOp::And,
            ..
        }
    ));
}

#[test]
fn keywords_are_case_insensitive_identifiers_are_not() {
    check(
        "price between 1 and 200000 and not flag is null",
        Value::Bool(true),
    );
    check("Case When TRUE Then 1 eLsE 2 END", Value::Int(1));
    check("`dateTime` = dateTime", Value::Bool(true));
    check("UPPER(channel)", s("GOOGLE"));
    check("upper(channel)", s("GOOGLE"));
    // A unique case-insensitive match is accepted.
    check("PRICE", Value::Int(137_428));
    check("datetime = dateTime", Value::Bool(true));
}

#[test]
fn literals() {
    check("42", Value::Int(42));
    check("-9223372036854775808", Value::Int(i64::MIN));
    check("0.908", dec(908, 3));
    assert_eq!(ty("0.908"), decimal_type(4, 3));
    assert_eq!(ty("123.45"), decimal_type(5, 2));
    check("1.5e3", Value::Float(1500.0));
    check("2E-1", Value::Float(0.2));
    check("'it''s'", s("it's"));
    check("TRUE", Value::Bool(true));
    check("NULL", Value::Null);
    check("INTERVAL '4' SECOND", Value::Interval(4000));
    check("INTERVAL '4' SECONDS", Value::Interval(4000));
    check("INTERVAL '250' MILLISECOND", Value::Interval(250));
    check("INTERVAL '2' MINUTE", Value::Interval(120_000));
    check("INTERVAL '1' HOUR", Value::Interval(3_600_000));
    check("INTERVAL '1' DAY", Value::Interval(86_400_000));
    check("INTERVAL 10 SECOND", Value::Interval(10_000));
    check(
        "TIMESTAMP '2026-01-01 00:00:00'",
        Value::Timestamp(ts("2026-01-01 00:00:00")),
    );
    check("/* comment */ 1 -- trailing comment", Value::Int(1));
}

#[test]
fn display_round_trips() {
    for text in [
        "price * 2 + 1",
        "(price + 1) * 2",
        "NOT (a OR b) AND c IS NOT NULL",
        "x NOT BETWEEN 1 AND 2",
        "channel IN ('a', 'it''s') OR `weird name` NOT LIKE '%x\\_' ESCAPE '\\'",
        "CASE WHEN a > 0.5 THEN 1.5e3 ELSE -2 END",
        "CASE x WHEN 1 THEN 'a' END",
        "CAST(price AS DECIMAL(10, 2)) - -1",
        "CAST(x AS VARCHAR(3)) || CAST(y AS TIMESTAMP)",
        "count(DISTINCT bidder) FILTER (WHERE price < 10000)",
        "count(*)",
        "A.price + B.`end`",
        "dateTime + INTERVAL '4' SECOND - INTERVAL '1500' MILLISECOND",
        "TIMESTAMP '2026-01-01 00:00:00.000' < dateTime",
    ] {
        let ast = parse_expr(text).unwrap();
        let printed = ast.to_string();
        let reparsed = parse_expr(&printed).unwrap_or_else(|e| panic!("{printed}: {e:?}"));
        assert_eq!(reparsed.to_string(), printed, "from {text}");
        assert_eq!(strip(&reparsed), strip(&ast), "{text} printed as {printed}");
    }
}

/// The tree with all spans zeroed, to compare shapes.
fn strip(ast: &Ast) -> String {
    let mut text = format!("{:?}", ast);
    while let Some(start) = text.find("span: ") {
        let end = text[start..]
            .find(['}', ','])
            .map_or(text.len(), |p| start + p);
        text.replace_range(start..end, "");
    }
    text
}

// ---- logic ---------------------------------------------------------------------------------

#[test]
fn three_valued_logic() {
    check("NULL AND FALSE", Value::Bool(false));
    check("FALSE AND NULL", Value::Bool(false));
    check("NULL AND TRUE", Value::Null);
    check("NULL OR TRUE", Value::Bool(true));
    check("TRUE OR NULL", Value::Bool(true));
    check("NULL OR FALSE", Value::Null);
    check("NOT NULL", Value::Null);
    check("n = 1", Value::Null);
    check("n <> 1", Value::Null);
    check("NULL = NULL", Value::Null);
    check("n IS NULL", Value::Bool(true));
    check("n IS NOT NULL", Value::Bool(false));
    check("n + 1", Value::Null);
    check("n > 1 OR price > 0", Value::Bool(true));
    check("n > 1 AND price > 0", Value::Null);
    check("n BETWEEN 1 AND 2", Value::Null);
    check("1 BETWEEN n AND 0", Value::Bool(false));
    check("NOT (1 BETWEEN n AND 0)", Value::Bool(true));
    check("1 IN (2, NULL)", Value::Null);
    check("1 IN (1, NULL)", Value::Bool(true));
    check("1 NOT IN (2, NULL)", Value::Null);
    check("CASE WHEN n > 0 THEN 'pos' ELSE 'other' END", s("other"));

    let schema = bid_schema();
    let row = bid_row();
    let p = compile(&parse_expr("n = 1").unwrap(), &Scope::single(&schema)).unwrap();
    assert!(!p.eval_predicate(&row));
    let p = compile(&parse_expr("NOT (n = 1)").unwrap(), &Scope::single(&schema)).unwrap();
    assert!(!p.eval_predicate(&row));
    let p = compile(&parse_expr("flag").unwrap(), &Scope::single(&schema)).unwrap();
    assert!(p.eval_predicate(&row));
}

#[test]
fn logic_type_errors() {
    let e = err("price AND TRUE");
    assert_eq!(
        e.message,
        "the left operand of AND must be BOOLEAN, found BIGINT"
    );
    assert_eq!(e.span, 0..5);
    assert_eq!(
        err("NOT channel").message,
        "the operand of NOT must be BOOLEAN, found STRING"
    );
}

// ---- arithmetic ----------------------------------------------------------------------------

#[test]
fn decimal_arithmetic() {
    // Nexmark q1: exact, DECIMAL(4,3) * DECIMAL(19,0) = DECIMAL(23,3).
    assert_eq!(ty("0.908 * price"), decimal_type(23, 3));
    check("0.908 * price", dec(124_784_624, 3));
    assert_eq!(eval("0.908 * price").to_string_lossy(), "124784.624");
    check("0.1 + 0.2", dec(3, 1));
    assert_eq!(ty("0.1 + 0.2"), decimal_type(3, 1));
    check("amount + 1", dec(12_445, 2));
    assert_eq!(ty("amount + 1"), decimal_type(22, 2));
    check("amount - 0.005", dec(123_445, 3));
    check("amount * 2", dec(24_690, 2));
    check("1.5 / 2", dec(750_000, 6));
    assert_eq!(ty("1.5 / 2"), decimal_type(7, 6));
    check("10.0 / 3", dec(3_333_333, 6));
    check("2.0 / 3", dec(666_667, 6)); // half up
    check("-2.0 / 3", dec(-666_667, 6));
    check("price / 1.0", dec(137_428_000_000, 6));
    check("2.5 / 0", Value::Null);
    check("7.5 % 2", dec(15, 1));
    check("-amount", dec(-12_345, 2));
    // Overflow of the 64-bit representation is NULL, not a panic or a wrong value.
    check(
        "CAST(9000000000000000000 AS DECIMAL(19, 0)) * 2",
        Value::Null,
    );
    check("0.5 * 1.5e0", Value::Float(0.75));
    check("price > 137427.5", Value::Bool(true));
    check("price = 137428.00", Value::Bool(true));
    check("amount < 123.5", Value::Bool(true));
    check("ratio < amount", Value::Bool(true));
    check("ratio = 0.5", Value::Bool(true));
}

trait Lossy {
    fn to_string_lossy(&self) -> String;
}

impl Lossy for Value {
    fn to_string_lossy(&self) -> String {
        eval::value_to_string(self).unwrap_or_else(|| "NULL".into())
    }
}

#[test]
fn integer_arithmetic() {
    check("7 / 2", Value::Int(3));
    check("-7 / 2", Value::Int(-3));
    check("7 % 3", Value::Int(1));
    check("-7 % 3", Value::Int(-1));
    check("7 / 0", Value::Null);
    check("7 % 0", Value::Null);
    check("MOD(7, 3)", Value::Int(1));
    check("MOD(7, 0)", Value::Null);
    check("9223372036854775807 + 1", Value::Int(i64::MIN));
    check("-9223372036854775808 / -1", Value::Int(i64::MIN));
    check("price / 3", Value::Int(45_809));
    assert_eq!(ty("price * 2"), DataType::BigInt);
    check("price * 1.5e0", Value::Float(206_142.0));
    check("ratio * 2", Value::Float(1.0));
    check("ratio / 0", Value::Null);
    assert_eq!(ty("ratio + amount"), DataType::Double);
    check("NULL + 1", Value::Null);
    assert_eq!(ty("NULL + 1"), DataType::BigInt);
}

#[test]
fn arithmetic_type_errors() {
    let e = err("channel + 1");
    assert_eq!(e.message, "cannot apply `+` to STRING and BIGINT");
    assert_eq!(e.span, 0..11);
    assert!(e.help.unwrap().contains("||"));
    assert_eq!(
        err("flag * 2").message,
        "cannot apply `*` to BOOLEAN and BIGINT"
    );
    assert_eq!(err("-channel").message, "cannot apply unary `-` to STRING");
    assert_eq!(
        err("MOD(channel, 2)").message,
        "cannot apply MOD to STRING and BIGINT"
    );
    let e = err("channel = 1");
    assert_eq!(e.message, "cannot compare STRING with BIGINT (in `=`)");
    assert!(e.help.unwrap().contains("CAST"));
    assert!(err("dateTime > 5")
        .message
        .contains("cannot compare TIMESTAMP(3) with BIGINT"));
}

#[test]
fn timestamps_and_intervals() {
    let base = ts("2026-01-01 00:01:39.999");
    check(
        "dateTime + INTERVAL '4' SECOND",
        Value::Timestamp(base + 4000),
    );
    check(
        "dateTime - INTERVAL '1' MINUTE",
        Value::Timestamp(base - 60_000),
    );
    check(
        "INTERVAL '1' HOUR + dateTime",
        Value::Timestamp(base + 3_600_000),
    );
    check("INTERVAL '1' SECOND * 3", Value::Interval(3000));
    check(
        "INTERVAL '1' SECOND + INTERVAL '1' MINUTE",
        Value::Interval(61_000),
    );
    assert_eq!(ty("dateTime - INTERVAL '4' SECOND"), DataType::Timestamp);
    check(
        "dateTime BETWEEN TIMESTAMP '2026-01-01 00:00:00' AND TIMESTAMP '2026-01-01 00:02:00'",
        Value::Bool(true),
    );
    check(
        "dateTime NOT BETWEEN TIMESTAMP '2026-01-01 00:00:00' AND TIMESTAMP '2026-01-01 00:01:00'",
        Value::Bool(true),
    );
    check(
        "dateTime BETWEEN dateTime - INTERVAL '10' SECOND AND dateTime",
        Value::Bool(true),
    );
    // A string literal compared with a timestamp is read as a timestamp.
    check("dateTime > '2026-01-01 00:01:00'", Value::Bool(true));
    check("'2026-01-01' < dateTime", Value::Bool(true));
    assert!(err("dateTime > 'yesterday'")
        .message
        .contains("'yesterday', which is not a timestamp"));
    assert_eq!(
        err("dateTime - dateTime").message,
        "cannot apply `-` to TIMESTAMP(3) and TIMESTAMP(3)"
    );
}

// ---- CASE and CAST -------------------------------------------------------------------------

#[test]
fn case_expressions() {
    check(
        "CASE WHEN price > 100 THEN 'big' ELSE 'small' END",
        s("big"),
    );
    check("CASE WHEN price < 100 THEN 'small' END", Value::Null);
    check(
        "CASE channel WHEN 'Apple' THEN 1 WHEN 'Google' THEN 2 ELSE 3 END",
        Value::Int(2),
    );
    check("CASE n WHEN 1 THEN 1 ELSE 0 END", Value::Int(0));
    check("CASE WHEN FALSE THEN NULL ELSE 5 END", Value::Int(5));
    // Common type: BIGINT and DECIMAL(2,1) meet at DECIMAL(20,1); the BIGINT branch is rescaled.
    assert_eq!(
        ty("CASE WHEN price > 100 THEN 1 ELSE 0.5 END"),
        decimal_type(20, 1)
    );
    check("CASE WHEN price > 100 THEN 1 ELSE 0.5 END", dec(10, 1));
    assert_eq!(ty("CASE WHEN flag THEN 1 ELSE 2.5e0 END"), DataType::Double);
    check("CASE WHEN flag THEN 1 ELSE 2.5e0 END", Value::Float(1.0));
    check("CASE WHEN flag THEN NULL END", Value::Null);
    assert_eq!(ty("CASE WHEN flag THEN NULL END"), DataType::Null);
    // Nexmark q14's CASE.
    check(
        "CASE WHEN HOUR(dateTime) >= 8 AND HOUR(dateTime) <= 18 THEN 'dayTime' \
         WHEN HOUR(dateTime) <= 6 OR HOUR(dateTime) >= 20 THEN 'nightTime' \
         ELSE 'otherTime' END",
        s("nightTime"),
    );
    let e = err("CASE WHEN flag THEN 1 ELSE 'x' END");
    assert_eq!(
        e.message,
        "the ELSE branch has type STRING, which does not match BIGINT"
    );
    assert_eq!(e.span, 27..30);
    assert_eq!(
        err("CASE WHEN price THEN 1 END").message,
        "a WHEN condition must be BOOLEAN, found BIGINT"
    );
    assert!(err("CASE channel WHEN 1 THEN 1 END")
        .message
        .contains("cannot compare"));
    assert_eq!(
        err("CASE WHEN flag THEN 1").message,
        "expected END to close CASE, found the end of the expression"
    );
}

#[test]
fn casts() {
    check("CAST('123' AS BIGINT)", Value::Int(123));
    check("CAST(' 12 ' AS INT)", Value::Int(12));
    check("CAST('12.7' AS BIGINT)", Value::Int(12));
    check("CAST('abc' AS BIGINT)", Value::Null);
    check("CAST(1.7e0 AS BIGINT)", Value::Int(1));
    check("CAST(-1.7 AS BIGINT)", Value::Int(-1));
    check("CAST(price AS DOUBLE)", Value::Float(137_428.0));
    check("CAST('2.5' AS DOUBLE)", Value::Float(2.5));
    check("CAST(12.345 AS DECIMAL(5, 2))", dec(1235, 2));
    check("CAST(1.005e0 AS DECIMAL(5, 2))", dec(101, 2));
    check("CAST('3.14159' AS DECIMAL(4, 3))", dec(3142, 3));
    check("CAST(12345.6 AS DECIMAL(4, 1))", Value::Null);
    check("CAST(price AS DECIMAL(10, 2))", dec(13_742_800, 2));
    assert_eq!(ty("CAST(price AS DECIMAL)"), decimal_type(10, 0));
    check("CAST(price AS STRING)", s("137428"));
    check("CAST(price AS VARCHAR)", s("137428"));
    check("CAST(0.908 AS STRING)", s("0.908"));
    check("CAST(amount AS STRING)", s("123.45"));
    check("CAST(1.5e0 AS STRING)", s("1.5"));
    check("CAST(100 * 1.0e0 AS STRING)", s("100.0"));
    check("CAST(1e7 AS STRING)", s("1.0E7"));
    check("CAST(1.25e-5 AS STRING)", s("1.25E-5"));
    check("CAST(dateTime AS STRING)", s("2026-01-01 00:01:39.999"));
    check("CAST(TRUE AS STRING)", s("TRUE"));
    check("CAST(INTERVAL '4' SECOND AS STRING)", s("+0 00:00:04.000"));
    check("CAST('abcdef' AS VARCHAR(3))", s("abc"));
    check("CAST('ab' AS CHAR(4))", s("ab  "));
    check(
        "CAST('2026-01-01 00:00:00' AS TIMESTAMP)",
        Value::Timestamp(ts("2026-01-01 00:00:00")),
    );
    check(
        "CAST('2026-01-01 00:00:00' AS TIMESTAMP(3))",
        Value::Timestamp(ts("2026-01-01 00:00:00")),
    );
    check("CAST('garbage' AS TIMESTAMP)", Value::Null);
    check("CAST('true' AS BOOLEAN)", Value::Bool(true));
    check("CAST('maybe' AS BOOLEAN)", Value::Null);
    check("CAST(NULL AS BIGINT)", Value::Null);
    assert_eq!(ty("CAST(NULL AS BIGINT)"), DataType::BigInt);
    assert_eq!(ty("CAST(price AS SMALLINT)"), DataType::BigInt);
    assert_eq!(ty("CAST(price AS FLOAT)"), DataType::Double);
    assert_eq!(
        err("CAST(dateTime AS DOUBLE)").message,
        "cannot cast TIMESTAMP(3) to DOUBLE"
    );
    let e = err("CAST(price AS MONEY)");
    assert_eq!(e.message, "unknown type `MONEY`");
    assert_eq!(e.span, 14..19);
    assert!(err("CAST(price AS DECIMAL(40, 2))")
        .message
        .contains("between 1 and 38"));
}

// ---- functions -----------------------------------------------------------------------------

#[test]
fn numeric_functions() {
    check("ABS(-5)", Value::Int(5));
    check("ABS(-1.25)", dec(125, 2));
    check("ABS(-2.5e0)", Value::Float(2.5));
    check("FLOOR(2.7)", dec(2, 0));
    assert_eq!(ty("FLOOR(2.7)"), decimal_type(2, 0));
    check("FLOOR(-2.5)", dec(-3, 0));
    check("CEIL(2.1)", dec(3, 0));
    check("CEIL(-2.5)", dec(-2, 0));
    check("CEILING(2.5e0)", Value::Float(3.0));
    check("FLOOR(7)", Value::Int(7));
    check("ROUND(2.5)", dec(3, 0));
    check("ROUND(-2.5)", dec(-3, 0));
    check("ROUND(1.2345, 2)", dec(123, 2));
    assert_eq!(ty("ROUND(1.2345, 2)"), decimal_type(4, 2));
    check("ROUND(amount, 1)", dec(1235, 1));
    check("ROUND(amount, 5)", dec(12_345, 2));
    check("ROUND(149.5, -2)", dec(100, 0));
    check("ROUND(150, -2)", Value::Int(200));
    check("ROUND(1.005e0, 2)", Value::Float(1.01));
    check("ROUND(2.5e0)", Value::Float(3.0));
    check("ROUND(1234.5e0, -2)", Value::Float(1200.0));
    assert!(err("ROUND(1.5, price)").message.contains("integer literal"));
    assert_eq!(
        err("ABS('x')").message,
        "argument 1 of ABS must be numeric, found STRING"
    );
}

#[test]
fn string_functions() {
    check("LOWER(channel)", s("google"));
    check("UPPER(channel)", s("GOOGLE"));
    check("CHAR_LENGTH(channel)", Value::Int(6));
    check("LENGTH('héllo')", Value::Int(5));
    check("CONCAT(channel, '-', extra)", s("Google-abcabc"));
    check("CONCAT(channel, CAST(n AS STRING))", Value::Null);
    check("CONCAT(channel, NULL)", Value::Null);
    check("SUBSTRING(channel, 2)", s("oogle"));
    check("SUBSTRING(channel, 2, 3)", s("oog"));
    check("SUBSTRING(channel FROM 2 FOR 3)", s("oog"));
    check("SUBSTRING(channel, 0, 2)", s("Go"));
    check("SUBSTRING(channel, -3)", s("gle"));
    check("SUBSTRING(channel, 10)", s(""));
    check("SUBSTRING(channel, 1, -1)", Value::Null);
    check("SUBSTRING('héllo', 2, 3)", s("éll"));
    check("SUBSTR(channel, 5)", s("le"));
    check("TRIM('  a b  ')", s("a b"));
    check("LTRIM('  a ')", s("a "));
    check("RTRIM('  a ')", s("  a"));
    check("REPLACE(extra, 'b', 'XY')", s("aXYcaXYc"));
    check("REPLACE(extra, 'z', 'XY')", s("abcabc"));
    check("COALESCE(n, price)", Value::Int(137_428));
    check("COALESCE(n, NULL)", Value::Null);
    check("COALESCE(n, 1.5)", dec(15, 1));
    assert_eq!(ty("COALESCE(n, 1.5)"), decimal_type(20, 1));
    check("IF(flag, 'yes', 'no')", s("yes"));
    check("IF(n > 0, 'yes', 'no')", s("no"));
    check("NULLIF(price, 137428)", Value::Null);
    check("NULLIF(price, 1)", Value::Int(137_428));
    check("channel || '!'", s("Google!"));
    check("channel || CAST(n AS STRING)", Value::Null);
    assert_eq!(
        err("CONCAT(channel, price)").message,
        "argument 2 of CONCAT must be STRING, found BIGINT"
    );
    let e = err("COALESCE(channel, price)");
    assert_eq!(
        e.message,
        "argument 2 of COALESCE has type BIGINT, which does not match STRING"
    );
    assert_eq!(e.span, 18..23);
}

#[test]
fn regexp_functions() {
    check(
        "REGEXP_EXTRACT(url, '(&|^)channel_id=([^&]*)', 2)",
        s("123"),
    );
    check("REGEXP_EXTRACT(url, 'query=([0-9]+)')", s("1"));
    check("REGEXP_EXTRACT(url, 'query=[0-9]+', 0)", s("query=1"));
    check("REGEXP_EXTRACT(url, 'nomatch=(x)')", Value::Null);
    check("REGEXP_EXTRACT(url, 'a(x)?', 1)", Value::Null);
    check("REGEXP_EXTRACT(url, channel)", Value::Null);
    check("REGEXP_EXTRACT(channel, 'G(o+)' || 'g')", s("oo"));
    check("REGEXP_REPLACE(extra, 'b(c)', '<$1>')", s("a<c>a<c>"));
    check("REGEXP_REPLACE(extra, 'b', '\\$')", s("a$ca$c"));
    check("REGEXP(channel, '^G')", Value::Bool(true));
    let e = err("REGEXP_EXTRACT(url, '(unclosed', 1)");
    assert!(e.message.starts_with("invalid regular expression"), "{e:?}");
    assert_eq!(e.span, 20..31);
    // Nested a few hundred levels deep, a pattern overflowed the compiling thread's stack.
    let deep = format!("REGEXP_EXTRACT(url, 'k{}', 0)", "+".repeat(300));
    assert!(
        err(&deep).message.contains("maximum number of nested"),
        "{:?}",
        err(&deep)
    );
    let e = err("REGEXP_EXTRACT(url, '(a)(b)', 3)");
    assert_eq!(
        e.message,
        "REGEXP_EXTRACT group 3 does not exist: the pattern has 2 groups"
    );
    assert_eq!(e.span, 30..31);
    assert!(err("REGEXP_REPLACE(extra, 'b', '$2')")
        .message
        .contains("group 2"));
}

#[test]
fn split_index_and_count_char() {
    check("SPLIT_INDEX(url, '/', 3)", s("a"));
    check("SPLIT_INDEX(url, '/', 0)", s("https:"));
    check("SPLIT_INDEX(url, '/', 1)", s(""));
    check("SPLIT_INDEX(url, '/', 99)", Value::Null);
    check("SPLIT_INDEX(url, '/', -1)", Value::Null);
    check("SPLIT_INDEX('a::b', '::', 1)", s("b"));
    check("SPLIT_INDEX('', ',', 0)", Value::Null);
    check("SPLIT_INDEX(CAST(n AS STRING), ',', 0)", Value::Null);
    check("COUNT_CHAR(extra, 'c')", Value::Int(2));
    check("COUNT_CHAR(extra, 'z')", Value::Int(0));
    check("COUNT_CHAR(CAST(n AS STRING), 'c')", Value::Int(0));
    check("COUNT_CHAR('héhé', 'é')", Value::Int(2));
    assert!(err("COUNT_CHAR(extra, 'cc')")
        .message
        .contains("single character"));
}

#[test]
fn date_functions() {
    check(
        "DATE_FORMAT(dateTime, 'yyyy-MM-dd HH:mm:ss.SSS')",
        s("2026-01-01 00:01:39.999"),
    );
    check("DATE_FORMAT(dateTime, 'yyyy-MM-dd')", s("2026-01-01"));
    check("DATE_FORMAT(dateTime, 'HH:mm')", s("00:01"));
    check(
        "DATE_FORMAT(dateTime, 'yyyyMMdd''T''HHmm')",
        s("20260101T0001"),
    );
    check("DATE_FORMAT(dateTime, 'yy/M/d h a')", s("26/1/1 12 AM"));
    check(
        "DATE_FORMAT(dateTime, 'EEE, d MMM yyyy')",
        s("Thu, 1 Jan 2026"),
    );
    check(
        "DATE_FORMAT(dateTime, 'EEEE MMMM S')",
        s("Thursday January 9"),
    );
    check(
        "DATE_FORMAT('2026-03-04 05:06:07', 'dd.MM.yyyy HH-mm-ss')",
        s("04.03.2026 05-06-07"),
    );
    check("DATE_FORMAT(dateTime, channel)", Value::Null);
    let e = err("DATE_FORMAT(dateTime, 'yyyy-MM-ddTHH')");
    assert!(e.message.contains("unsupported letter `T`"), "{e:?}");
    assert_eq!(e.span, 22..37);
    check("HOUR(dateTime)", Value::Int(0));
    check("MINUTE(dateTime)", Value::Int(1));
    check("SECOND(dateTime)", Value::Int(39));
    check("YEAR(dateTime)", Value::Int(2026));
    check("MONTH(dateTime)", Value::Int(1));
    check("DAYOFMONTH(dateTime)", Value::Int(1));
    check("DAYOFWEEK(dateTime)", Value::Int(5));
    check(
        "DAYOFYEAR(TIMESTAMP '2024-12-31 10:00:00')",
        Value::Int(366),
    );
    check(
        "EXTRACT(HOUR FROM dateTime + INTERVAL '5' HOUR)",
        Value::Int(5),
    );
    check("EXTRACT(DAY FROM dateTime)", Value::Int(1));
    check(
        "TO_TIMESTAMP('2026-01-01 00:01:39.999')",
        Value::Timestamp(ts("2026-01-01 00:01:39.999")),
    );
    check(
        "TO_TIMESTAMP('01/02/2026 13:14', 'dd/MM/yyyy HH:mm')",
        Value::Timestamp(ts("2026-02-01 13:14:00")),
    );
    check(
        "TO_TIMESTAMP('20260201T131415.5Z', 'yyyyMMdd''T''HHmmss.SX')",
        Value::Timestamp(ts("2026-02-01 13:14:15.500")),
    );
    check(
        "TO_TIMESTAMP('2026-02-01 01:00 PM +0100', 'yyyy-MM-dd hh:mm a Z')",
        Value::Timestamp(ts("2026-02-01 12:00:00")),
    );
    check(
        "TO_TIMESTAMP('2026-02-30 00:00', 'yyyy-MM-dd HH:mm')",
        Value::Null,
    );
    check("TO_TIMESTAMP('nonsense')", Value::Null);
    check("TO_TIMESTAMP_LTZ(1000, 3)", Value::Timestamp(1000));
    check("TO_TIMESTAMP_LTZ(2, 0)", Value::Timestamp(2000));
    check(
        "DATE_TRUNC('minute', TIMESTAMP '2026-01-01 10:17:42.123')",
        Value::Timestamp(ts("2026-01-01 10:17:00")),
    );
    check(
        "DATE_TRUNC('HOUR', TIMESTAMP '1969-12-31 23:59:59.999')",
        Value::Timestamp(ts("1969-12-31 23:00:00")),
    );
    assert!(err("DATE_TRUNC('week', dateTime)")
        .message
        .contains("unknown unit 'week'"));
    assert_eq!(
        err("HOUR(price)").message,
        "argument 1 of HOUR must be TIMESTAMP, found BIGINT"
    );
    // Formatting and parsing with the same pattern round-trip.
    check(
        "TO_TIMESTAMP(DATE_FORMAT(dateTime, 'yyyy-MM-dd HH:mm:ss.SSS'), 'yyyy-MM-dd HH:mm:ss.SSS') = dateTime",
        Value::Bool(true),
    );
}

#[test]
fn in_lists() {
    check("price IN (1, 137428)", Value::Bool(true));
    check("price NOT IN (1, 2)", Value::Bool(true));
    check("channel IN ('Apple', 'Google')", Value::Bool(true));
    check("price IN (137428.0)", Value::Bool(true));
    check(
        "auction IN (1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008)",
        Value::Bool(true),
    );
    check("auction IN (1, 2, 3, 4, 5, 6, 7, 8, 9)", Value::Bool(false));
    check("auction IN (1, 2, 3, 4, 5, 6, 7, 8, NULL)", Value::Null);
    check(
        "auction NOT IN (1, 2, 3, 4, 5, 6, 7, 8, 9)",
        Value::Bool(true),
    );
    check(
        "channel IN ('a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'Google')",
        Value::Bool(true),
    );
    check("n IN (1, 2, 3, 4, 5, 6, 7, 8, 9)", Value::Null);
    check("dateTime IN ('2026-01-01 00:01:39.999')", Value::Bool(true));
    let e = err("price IN (1, 'x')");
    assert_eq!(e.message, "cannot compare BIGINT with STRING (in `IN`)");
    assert_eq!(e.span, 13..16);
    assert!(err("price IN ()").message.contains("at least one value"));
}

#[test]
fn like() {
    check("channel LIKE 'Go%'", Value::Bool(true));
    check("channel LIKE '%gle'", Value::Bool(true));
    check("channel LIKE '%oog%'", Value::Bool(true));
    check("channel LIKE 'G_ogle'", Value::Bool(true));
    check("channel LIKE 'Google'", Value::Bool(true));
    check("channel LIKE 'google'", Value::Bool(false));
    check("channel LIKE 'G%g%e'", Value::Bool(true));
    check("channel LIKE 'G%x%e'", Value::Bool(false));
    check("channel LIKE '%'", Value::Bool(true));
    check("channel LIKE '_'", Value::Bool(false));
    check("channel LIKE '______'", Value::Bool(true));
    check("channel NOT LIKE 'A%'", Value::Bool(true));
    check("'50%' LIKE '50!%' ESCAPE '!'", Value::Bool(true));
    check("'501' LIKE '50!%' ESCAPE '!'", Value::Bool(false));
    check("'héllo' LIKE 'h_llo'", Value::Bool(true));
    check("'aaa' LIKE '%a%a%a%'", Value::Bool(true));
    check("'aa' LIKE '%a%a%a%'", Value::Bool(false));
    check("channel LIKE extra", Value::Bool(false));
    check(
        "channel LIKE SUBSTRING(channel, 1, 2) || '%'",
        Value::Bool(true),
    );
    check("CAST(n AS STRING) LIKE '%'", Value::Null);
    assert!(err("'x' LIKE 'a!b' ESCAPE '!'")
        .message
        .contains("invalid escape"));
    assert_eq!(
        err("price LIKE '1%'").message,
        "the left side of LIKE must be STRING, found BIGINT"
    );
}

// ---- names ---------------------------------------------------------------------------------

fn join_schemas() -> (Schema, Schema) {
    let a = Schema::new(vec![
        Field::new("id", DataType::BigInt),
        Field::new("name", DataType::String),
    ]);
    let b = Schema::new(vec![
        Field::new("id", DataType::BigInt),
        Field::new("price", DataType::BigInt),
    ]);
    (a, b)
}

#[test]
fn qualified_and_ambiguous_names() {
    let (a, b) = join_schemas();
    let scope = Scope::new(vec![(Some("A"), &a), (Some("B"), &b)]);
    assert_eq!(scope.width(), 4);
    let c = |t: &str| compile(&parse_expr(t).unwrap(), &scope);
    assert_eq!(c("A.id").unwrap().as_column(), Some(0));
    assert_eq!(c("B.id").unwrap().as_column(), Some(2));
    assert_eq!(c("price").unwrap().as_column(), Some(3));
    assert_eq!(c("b.price").unwrap().as_column(), Some(3));
    assert_eq!(c("NAME").unwrap().as_column(), Some(1));
    let row = vec![Value::Int(1), Value::str("x"), Value::Int(1), Value::Int(5)];
    assert!(c("A.id = B.id AND price > 2").unwrap().eval_predicate(&row));

    let e = c("id + 1").unwrap_err();
    assert_eq!(
        e.message,
        "column `id` is ambiguous: it matches `A.id` and `B.id`"
    );
    assert_eq!(e.span, 0..2);
    assert_eq!(e.help.as_deref(), Some("qualify it, e.g. `A.id`"));

    let e = c("C.id").unwrap_err();
    assert_eq!(
        e.message,
        "unknown input `C` in `C.id`; available inputs: A, B"
    );
    let e = c("A.price").unwrap_err();
    assert_eq!(
        e.message,
        "unknown column `A.price`; available columns: A.id, A.name"
    );
    let e = c("prise").unwrap_err();
    assert_eq!(
        e.message,
        "unknown column `prise`; available columns: A.id, A.name, B.id, B.price"
    );
    assert_eq!(e.help.as_deref(), Some("did you mean `price`?"));

    // resolve() directly.
    assert_eq!(
        scope.resolve(Some("B"), "price", 0..1).unwrap(),
        (3, DataType::BigInt)
    );
}

#[test]
fn unknown_column_error() {
    let e = err("prce * 2");
    assert_eq!(e.span, 0..4);
    assert!(e
        .message
        .starts_with("unknown column `prce`; available columns: auction, bidder, price"));
    assert_eq!(e.help.as_deref(), Some("did you mean `price`?"));
    let e = err("1 + zzzzzz");
    assert_eq!(e.span, 4..10);
    assert_eq!(e.help, None);
    let rendered = err("prce * 2").render("prce * 2");
    assert!(rendered.contains("  | prce * 2\n  | ^^^^\n"), "{rendered}");
    assert!(rendered.contains("help: did you mean `price`?"));
}

// ---- errors and robustness -----------------------------------------------------------------

#[test]
fn function_errors() {
    let e = err("uper(channel)");
    assert_eq!(e.message, "unknown function `uper`");
    assert_eq!(e.span, 0..13);
    assert_eq!(e.help.as_deref(), Some("did you mean `UPPER`?"));
    let e = err("frobnicate(channel)");
    assert!(e.help.unwrap().starts_with("known functions: MOD, ABS"));
    let e = err("SUBSTRING(url)");
    assert_eq!(
        e.message,
        "function SUBSTRING expects 2 or 3 arguments, found 1"
    );
    assert_eq!(e.span, 0..14);
    assert_eq!(
        err("UPPER(url, url)").message,
        "function UPPER expects 1 argument, found 2"
    );
    assert_eq!(
        err("COALESCE()").message,
        "function COALESCE expects at least 1 argument, found 0"
    );
    let e = err("SUBSTRING(url, 'x')");
    assert_eq!(
        e.message,
        "argument 2 of SUBSTRING must be BIGINT, found STRING"
    );
    assert_eq!(e.span, 15..18);
    let e = err("count(*) + 1");
    assert_eq!(e.message, "aggregate function COUNT is not allowed here");
    assert_eq!(e.span, 0..8);
    assert_eq!(
        err("upper(DISTINCT url)").message,
        "DISTINCT is only allowed in aggregate calls, not in UPPER"
    );
    assert!(err("upper(url) FILTER (WHERE TRUE)")
        .message
        .contains("FILTER is only allowed"));
}

#[test]
fn parse_errors() {
    let e = err("'abc");
    assert_eq!(e.message, "unterminated string literal");
    assert_eq!(e.span, 0..4);
    assert!(e.help.is_some());
    let e = err("price = 'abc");
    assert_eq!(e.span, 8..12);
    let e = err("price price2");
    assert_eq!(
        e.message,
        "unexpected `price2` after the end of the expression"
    );
    assert_eq!(e.span, 6..12);
    let e = err("price + 1)");
    assert_eq!(e.span, 9..10);
    assert_eq!(e.help.as_deref(), Some("this `)` has no matching `(`"));
    let e = err("(price + 1");
    assert_eq!(e.message, "expected `)`, found the end of the expression");
    assert_eq!(e.span, 10..10);
    let e = err("price +");
    assert_eq!(
        e.message,
        "expected an expression, found the end of the expression"
    );
    let e = err("price + AND");
    assert_eq!(e.message, "expected an expression, found keyword `AND`");
    assert_eq!(e.span, 8..11);
    assert_eq!(err("\"price\"").message, "unexpected character `\"`");
    assert_eq!(err("12abc").message, "invalid number `12abc`");
    assert_eq!(
        err("99999999999999999999").message,
        "integer literal is out of range for BIGINT"
    );
    assert_eq!(
        err("price IS 5").message,
        "expected NULL after IS, found `5`"
    );
    assert!(err("INTERVAL '4' FORTNIGHT")
        .message
        .contains("expected a time unit"));
    assert!(err("INTERVAL 'x' SECOND")
        .message
        .contains("invalid interval value"));
    assert!(err("TIMESTAMP '2026-13-01 00:00:00'")
        .message
        .contains("invalid TIMESTAMP literal"));
    assert!(err("*").help.unwrap().contains("COUNT(*)"));
    assert!(err("a.b.c").message.contains("more than one qualifier"));
    assert_eq!(err("`unclosed").message, "unterminated quoted identifier");
}

#[test]
fn hostile_input_does_not_panic() {
    let deep_parens = format!("{}1{}", "(".repeat(5000), ")".repeat(5000));
    assert!(err(&deep_parens).message.contains("nested too deeply"));
    let unclosed = "(".repeat(100_000);
    assert!(parse_expr(&unclosed).is_err());
    let long_chain = vec!["1"; 20_000].join(" + ");
    assert!(err(&long_chain).message.contains("nested too deeply"));
    let chain_in_parens = format!("({}", vec!["1"; 20_000].join(" + "));
    assert!(parse_expr(&chain_in_parens).is_err());
    let nots = "NOT ".repeat(10_000) + "TRUE";
    assert!(parse_expr(&nots).is_err());
    let negs = "-".repeat(10_000) + "1";
    assert!(parse_expr(&negs).is_err());
    // A long but shallow expression is fine.
    let wide = format!(
        "price IN ({})",
        (0..5000)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    check(&wide, Value::Bool(false));
    let moderate = vec!["1"; 200].join(" + ");
    check(&moderate, Value::Int(200));

    let samples = [
        "",
        " ",
        "(",
        ")",
        "'",
        "`",
        "``",
        "1 +",
        "CASE",
        "CASE WHEN",
        "CAST(",
        "CAST(1 AS",
        "CAST(1 AS DECIMAL(",
        "INTERVAL",
        "INTERVAL '",
        "TIMESTAMP",
        "x IN (",
        "x BETWEEN 1",
        "x LIKE",
        "x LIKE 'a' ESCAPE",
        "count(",
        "count(*",
        "f(,)",
        "a..b",
        "a.",
        ".",
        "1.2.3",
        "1e",
        "1e+",
        "é",
        "😀",
        "a = = b",
        "NOT",
        "IS NULL",
        "x IS",
        "EXTRACT(",
        "EXTRACT(HOUR",
        "SUBSTRING(x FROM",
        "/*",
        "-- only a comment",
        "a ||",
        "||",
        "x NOT",
        "x NOT y",
        "CASE x END",
        "TIMESTAMP 'x'",
        "INTERVAL -",
        "INTERVAL - x SECOND",
        "\u{0}",
    ];
    let schema = bid_schema();
    for text in samples {
        if let Ok(ast) = parse_expr(text) {
            let _ = compile(&ast, &Scope::single(&schema));
        }
        let _ = parse_select_item(text);
        // Every prefix of a valid expression must fail gracefully too.
    }
    let full = "CASE WHEN REGEXP_EXTRACT(url, '(&|^)x=([^&]*)', 2) LIKE '1%' THEN CAST(price AS DECIMAL(10,2)) / 3 ELSE -amount END";
    for end in 0..=full.len() {
        if full.is_char_boundary(end) {
            if let Ok(ast) = parse_expr(&full[..end]) {
                let _ = compile(&ast, &Scope::single(&schema)).map(|e| e.eval(&bid_row()));
            }
        }
    }
}

#[test]
fn eval_never_panics_on_odd_rows() {
    let e = compiled("CAST(price * 2 + CHAR_LENGTH(channel) AS STRING) || 'x' = 'y' OR dateTime > TIMESTAMP '2020-01-01 00:00:00'");
    // Decimals with scales no schema would declare still give values or NULL, never a panic.
    let d = compiled("amount * amount + amount / 3 - amount % 2");
    let mut row = bid_row();
    row[8] = Value::Decimal(Decimal {
        unscaled: 1,
        scale: 250,
    });
    let _ = d.eval(&row);
    row[8] = Value::Decimal(Decimal {
        unscaled: i64::MIN,
        scale: 18,
    });
    let _ = d.eval(&row);
    // Short row, wrong variants, all NULL.
    assert_eq!(e.eval(&[]), Value::Null);
    let odd: Vec<Value> = (0..11).map(|_| Value::str("?")).collect();
    let _ = e.eval(&odd);
    let nulls = vec![Value::Null; 11];
    assert_eq!(e.eval(&nulls), Value::Null);
    let all = [
        "ABS(price)",
        "ROUND(amount, 1)",
        "SUBSTRING(channel, price)",
        "DATE_FORMAT(dateTime, 'yyyy')",
        "HOUR(dateTime)",
        "SPLIT_INDEX(url, channel, price)",
        "REGEXP_EXTRACT(url, channel)",
        "CAST(channel AS DECIMAL(5,2))",
        "amount / ratio",
        "dateTime + INTERVAL '1' DAY",
    ];
    for text in all {
        let e = compiled(text);
        assert_eq!(e.eval(&nulls), Value::Null, "{text}");
        let _ = e.eval(&odd);
        let _ = e.eval(&[]);
    }
}

// ---- select items, aggregates and AST helpers ----------------------------------------------

#[test]
fn select_items() {
    let (ast, alias) = parse_select_item("price * 2 AS doubled").unwrap();
    assert_eq!(alias.as_deref(), Some("doubled"));
    assert_eq!(default_name(&ast), None);
    let (ast, alias) = parse_select_item("dateTime AS `date Time`").unwrap();
    assert_eq!(alias.as_deref(), Some("date Time"));
    assert_eq!(default_name(&ast).as_deref(), Some("dateTime"));
    let (_, alias) = parse_select_item("price p").unwrap();
    assert_eq!(alias.as_deref(), Some("p"));
    let (ast, alias) = parse_select_item("B.price").unwrap();
    assert_eq!(alias, None);
    assert_eq!(ast.as_column(), Some((Some("B"), "price")));
    assert_eq!(default_name(&ast).as_deref(), Some("price"));
    let (_, alias) = parse_select_item("count(*) AS total").unwrap();
    assert_eq!(alias.as_deref(), Some("total"));
    assert!(parse_select_item("price AS")
        .unwrap_err()
        .message
        .contains("alias"));
    assert!(parse_select_item("price AS a b").is_err());
}

#[test]
fn aggregates() {
    let schema = bid_schema();
    let scope = Scope::single(&schema);
    let agg = |t: &str| compile_aggregate(&parse_expr(t).unwrap(), &scope);

    let c = agg("count(*)").unwrap();
    assert_eq!(c.function, AggregateFunction::Count);
    assert!(c.arg.is_none() && !c.distinct && c.filter.is_none());
    assert_eq!(c.result_type, DataType::BigInt);

    let c = agg("count(distinct bidder) filter (where price < 10000)").unwrap();
    assert!(c.distinct);
    assert_eq!(c.arg.as_ref().unwrap().as_column(), Some(1));
    let f = c.filter.unwrap();
    assert!(!f.eval_predicate(&bid_row()));

    let c = agg("MAX(price)").unwrap();
    assert_eq!(
        (c.function, c.result_type),
        (AggregateFunction::Max, DataType::BigInt)
    );
    assert_eq!(agg("avg(price)").unwrap().result_type, DataType::BigInt);
    assert_eq!(agg("avg(ratio)").unwrap().result_type, DataType::Double);
    assert_eq!(agg("avg(amount)").unwrap().result_type, decimal_type(38, 6));
    assert_eq!(agg("sum(amount)").unwrap().result_type, decimal_type(38, 2));
    assert_eq!(agg("sum(price)").unwrap().result_type, DataType::BigInt);
    assert_eq!(
        agg("sum(0.908 * price)").unwrap().result_type,
        decimal_type(38, 3)
    );
    assert_eq!(agg("min(channel)").unwrap().result_type, DataType::String);
    assert_eq!(
        agg("max(dateTime)").unwrap().result_type,
        DataType::Timestamp
    );
    assert_eq!(agg("count(channel)").unwrap().result_type, DataType::BigInt);

    let e = agg("sum(count(*))").unwrap_err();
    assert!(e.message.contains("cannot be nested"), "{e:?}");
    assert_eq!(e.span, 4..12);
    assert!(agg("count(*) filter (where max(price) > 1)")
        .unwrap_err()
        .message
        .contains("nested"));
    assert_eq!(
        agg("sum(channel)").unwrap_err().message,
        "SUM needs a numeric argument, found STRING"
    );
    assert!(agg("price")
        .unwrap_err()
        .message
        .contains("expected an aggregate call"));
    assert_eq!(
        agg("upper(channel)").unwrap_err().message,
        "UPPER is not an aggregate function"
    );
    assert!(agg("sum(*)")
        .unwrap_err()
        .message
        .contains("only COUNT accepts"));
    assert!(agg("count(price, bidder)")
        .unwrap_err()
        .message
        .contains("expects 1 argument"));
    assert!(agg("count(*) filter (where price)")
        .unwrap_err()
        .message
        .contains("must be BOOLEAN"));
}

#[test]
fn ast_helpers() {
    let ast = parse_expr("a = 1 AND (b > 2 AND c) AND NOT (d OR e)").unwrap();
    let parts: Vec<String> = ast.conjuncts().iter().map(|c| c.to_string()).collect();
    assert_eq!(parts, ["a = 1", "b > 2", "c", "NOT (d OR e)"]);
    assert_eq!(parse_expr("a OR b").unwrap().conjuncts().len(), 1);
    assert_eq!(
        parse_expr("A.x").unwrap().as_column(),
        Some((Some("A"), "x"))
    );
    assert_eq!(parse_expr("x + 1").unwrap().as_column(), None);
    assert!(parse_expr("1 + sum(x)").unwrap().contains_aggregate());
    assert!(!parse_expr("1 + upper(x)").unwrap().contains_aggregate());
    let ast = parse_expr("price * 2").unwrap();
    assert_eq!(ast.span, 0..9);
    let AstKind::Binary { left, right, .. } = &ast.kind else {
        panic!()
    };
    assert_eq!((left.span.clone(), right.span.clone()), (0..5, 8..9));
    let ast = parse_expr("count(*)").unwrap();
    assert!(matches!(&ast.kind, AstKind::Call { name, star: true, .. } if name == "count"));
    assert_eq!(
        parse_expr("COUNT(x)").unwrap().kind,
        AstKind::Call {
            name: "count".into(),
            args: vec![Ast::new(
                AstKind::Column {
                    qualifier: None,
                    name: "x".into()
                },
                6..7
            )],
            distinct: false,
            star: false,
            filter: None
        }
    );
}

#[test]
fn constants_are_folded_and_columns_recognised() {
    assert_eq!(compiled("price").as_column(), Some(2));
    assert_eq!(compiled("(price)").as_column(), Some(2));
    assert_eq!(compiled("price + 0").as_column(), None);
    assert_eq!(
        compiled("INTERVAL '2' SECOND * 3").as_literal(),
        Some(&Value::Interval(6000))
    );
    assert_eq!(compiled("UPPER('a') || 'b'").as_literal(), Some(&s("Ab")));
    assert_eq!(compiled("price + 1").as_literal(), None);
}

#[test]
fn expressions_are_thread_safe() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Expr>();
    assert_send_sync::<AggregateCall>();
}

#[test]
fn deepest_accepted_expressions_fit_a_default_thread_stack() {
    // Spawned threads get 2 MiB by default; the limits must keep parsing, binding and
    // evaluating within that even in debug builds.
    let n = 60;
    let cases = [
        format!("{}1{}", "(".repeat(n), ")".repeat(n)),
        format!("{}channel{}", "UPPER(".repeat(n), ")".repeat(n)),
        format!("{}1{}", "CASE WHEN flag THEN ".repeat(n), " END".repeat(n)),
        format!("{}1{}", "CAST(".repeat(n), " AS BIGINT)".repeat(n)),
        format!("{}flag", "NOT ".repeat(n)),
        vec!["price"; 250].join(" + "),
        vec!["flag"; 250].join(" AND "),
        format!("({}) + 1", vec!["price"; 200].join(" * ")),
    ];
    let handle = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let schema = bid_schema();
            for text in cases {
                let ast = parse_expr(&text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
                let e = compile(&ast, &Scope::single(&schema)).unwrap();
                let _ = e.eval(&bid_row());
                let _ = ast.to_string();
            }
        })
        .unwrap();
    handle.join().unwrap();
}

/// Rough per-row cost of typical Nexmark expressions; run with
/// `cargo test --release -p eddy-runtime --lib expr::tests::throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn throughput() {
    let rows: Vec<Vec<Value>> = (0..100_000)
        .map(|i| {
            let mut r = bid_row();
            r[2] = Value::Int(i * 7 % 20_000);
            r[5] = Value::Timestamp(ts("2026-01-01 00:00:00") + i * 977);
            r
        })
        .collect();
    for text in [
        "price",
        "0.908 * price",
        "price > 10000 AND channel = 'Google'",
        "price > 10000",
        "channel = 'Google'",
        "flag AND flag",
        "auction IN (1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008)",
        "channel LIKE '%oo%'",
        "CASE WHEN HOUR(dateTime) >= 8 AND HOUR(dateTime) <= 18 THEN 'dayTime' WHEN HOUR(dateTime) <= 6 OR HOUR(dateTime) >= 20 THEN 'nightTime' ELSE 'otherTime' END",
        "REGEXP_EXTRACT(url, '(&|^)channel_id=([^&]*)', 2)",
        "SPLIT_INDEX(url, '/', 3)",
        "DATE_FORMAT(dateTime, 'yyyy-MM-dd HH:mm')",
        "COUNT_CHAR(extra, 'c')",
        "dateTime BETWEEN TIMESTAMP '2026-01-01 00:00:00' AND TIMESTAMP '2026-01-01 00:10:00'",
    ] {
        let e = compiled(text);
        let start = std::time::Instant::now();
        let mut nulls = 0usize;
        for _ in 0..10 {
            for r in &rows {
                nulls += e.eval(r).is_null() as usize;
            }
        }
        let per_row = start.elapsed().as_nanos() as f64 / (10.0 * rows.len() as f64);
        eprintln!("{per_row:8.1} ns/row  {:6.1} M rows/s  {text} ({nulls})", 1000.0 / per_row);
    }
}
