//! From the text of a script's files to its statements.
//!
//! `${NAME}` placeholders are filled at the token level, inside string literals only (where
//! Flink's own tooling puts them), so every line and column in an error stays that of the file.
//! Flink's DDL is parsed here; every other statement goes to sqlparser.

use crate::dialect::FlinkDialect;
use crate::error::{Pos, Sources, SqlError};
use sqlparser::ast::{DataType, Expr, Query, Statement};
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};
use std::collections::{BTreeMap, BTreeSet};

/// How deep expressions and queries may nest before the parser refuses them (no stack overflow
/// on hostile input): a level of sqlparser's recursive descent takes tens of kilobytes of stack
/// in a debug build, and planning runs on a thread with [`crate::STACK`] bytes.
const RECURSION_LIMIT: usize = 32;

/// A statement and where it starts.
#[derive(Clone, Debug)]
pub struct Located<T> {
    pub item: T,
    pub pos: Pos,
}

/// The statements Eddy understands.
#[derive(Clone, Debug)]
pub enum Stmt {
    CreateTable(Box<TableDef>),
    CreateView {
        name: String,
        /// `CREATE VIEW v (a, b) AS ..`: the names of its columns.
        columns: Vec<String>,
        query: Box<Query>,
    },
    /// `CREATE [TEMPORARY [SYSTEM]] FUNCTION name AS 'class' [LANGUAGE lang]`.
    CreateFunction {
        name: String,
        class: String,
        language: Option<String>,
    },
    /// `SET 'key' = 'value'`.
    Set {
        key: String,
        value: String,
    },
    Insert(Insert),
    /// `EXECUTE STATEMENT SET BEGIN INSERT ..; INSERT ..; END`: one job with several sinks.
    StatementSet(Vec<Located<Insert>>),
    /// `EXPLAIN` of an INSERT or a query: print the plan, run nothing.
    Explain(Box<Located<Stmt>>),
    /// A bare query: its rows go to the terminal.
    Query(Box<Query>),
}

/// `INSERT INTO table [(columns)] query`.
#[derive(Clone, Debug)]
pub struct Insert {
    pub table: String,
    pub columns: Vec<String>,
    pub query: Box<Query>,
}

/// `CREATE TABLE`.
#[derive(Clone, Debug)]
pub struct TableDef {
    pub name: String,
    /// `CREATE TABLE IF NOT EXISTS`: a second definition of the name is ignored.
    pub if_not_exists: bool,
    pub columns: Vec<ColumnDef>,
    pub watermark: Option<WatermarkDef>,
    pub primary_key: Vec<String>,
    /// `WITH ('key' = 'value', ...)`, keys as written.
    pub options: Vec<(String, String)>,
}

impl TableDef {
    /// The value of option `key` (keys are case-sensitive in Flink).
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Debug)]
pub struct ColumnDef {
    pub name: String,
    pub kind: ColumnKind,
    pub pos: Pos,
}

#[derive(Clone, Debug)]
pub enum ColumnKind {
    Physical(DataType),
    /// `name AS expr`.
    Computed(Box<Expr>),
}

/// `WATERMARK FOR column AS expr`.
#[derive(Clone, Debug)]
pub struct WatermarkDef {
    pub column: String,
    pub expr: Expr,
    pub pos: Pos,
}

/// Parses every file of a script, in order, filling `${NAME}` from `params`. A placeholder
/// without a value is an error, unless `placeholder` stands in for it (the Nexmark generator
/// replaces the input file, which then needs no name). A parameter no placeholder uses is an
/// error too, as it is for job files: it is most likely misspelt.
/// Names in `deferred` stay placeholders: the job file declares them, so that a cluster fills
/// them (sealed secrets) when it compiles the job.
pub fn parse(
    sources: &Sources,
    params: &BTreeMap<String, String>,
    deferred: &BTreeSet<String>,
    placeholder: Option<&str>,
) -> Result<Vec<Located<Stmt>>, SqlError> {
    let mut used = BTreeSet::new();
    let mut statements = Vec::new();
    for (file, (_, text)) in sources.files().iter().enumerate() {
        let dialect = FlinkDialect;
        let mut tokens = Tokenizer::new(&dialect, text)
            .tokenize_with_location()
            .map_err(|e| sources.error(Pos::at(file, e.location), e.message))?;
        too_long(&tokens).map_or(Ok(()), |at| {
            Err(sources
                .error(
                    Pos::at(file, at),
                    format!("the statement has more than {MAX_OPERATORS} operators"),
                )
                .help("split it up, e.g. with views"))
        })?;
        for token in &mut tokens {
            if let Token::SingleQuotedString(s) = &mut token.token {
                if s.contains("${") {
                    let pos = Pos::at(file, token.span.start);
                    *s = substitute(s, params, deferred, placeholder, &mut used)
                        .map_err(|(message, help)| sources.error(pos, message).help(help))?;
                }
            }
        }
        let mut parser = Parser::new(&dialect)
            .with_recursion_limit(RECURSION_LIMIT)
            .with_tokens_with_locations(tokens);
        loop {
            while parser.consume_token(&Token::SemiColon) {}
            if parser.peek_token().token == Token::EOF {
                break;
            }
            let pos = Pos::at(file, parser.peek_token().span.start);
            let item =
                statement(&mut parser, file).map_err(|e| parse_error(sources, file, pos, e))?;
            statements.push(Located { item, pos });
            if !matches!(parser.peek_token().token, Token::SemiColon | Token::EOF) {
                let found = parser.peek_token();
                return Err(sources
                    .error(
                        Pos::at(file, found.span.start),
                        format!("expected `;` after the statement, found {}", found.token),
                    )
                    .help("end each statement with a semicolon"));
            }
        }
    }
    if let Some(unused) = params.keys().find(|k| !used.contains(*k)) {
        return Err(SqlError::general(format!(
            "--param {unused}: the script has no ${{{unused}}} placeholder"
        ))
        .help("check the name (placeholders are case-sensitive), or drop the --param"));
    }
    Ok(statements)
}

/// How many operators (`+`, `AND`, `=`, ...) a statement may hold. A chain of them parses into
/// a tree as deep as it is long, which every later step walks recursively; the nesting limit of
/// the parser does not count them.
const MAX_OPERATORS: usize = 2000;

/// Where a statement first exceeds [`MAX_OPERATORS`].
fn too_long(tokens: &[TokenWithSpan]) -> Option<sqlparser::tokenizer::Location> {
    let mut n = 0;
    for t in tokens {
        let operator = match &t.token {
            Token::SemiColon => {
                n = 0;
                false
            }
            Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod
            | Token::StringConcat
            | Token::Eq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq => true,
            Token::Word(w) => matches!(w.keyword, Keyword::AND | Keyword::OR | Keyword::UNION),
            _ => false,
        };
        if operator {
            n += 1;
            if n > MAX_OPERATORS {
                return Some(t.span.start);
            }
        }
    }
    None
}

fn parse_error(sources: &Sources, file: usize, pos: Pos, e: ParserError) -> SqlError {
    match e {
        ParserError::RecursionLimitExceeded => sources
            .error(pos, "the statement nests too deeply")
            .help(format!(
                "at most {RECURSION_LIMIT} levels of nesting are accepted"
            )),
        other => sources.parser_error(file, &other.to_string()),
    }
}

/// Replaces each `${NAME}` in `text`.
fn substitute(
    text: &str,
    params: &BTreeMap<String, String>,
    deferred: &BTreeSet<String>,
    placeholder: Option<&str>,
    used: &mut BTreeSet<String>,
) -> Result<String, (String, String)> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err((
                "an unclosed `${` placeholder".into(),
                "write placeholders as ${NAME}".into(),
            ));
        };
        let name = &after[..end];
        if deferred.contains(name) {
            out.push_str(&rest[start..start + 3 + end]);
            rest = &after[end + 1..];
            continue;
        }
        match params.get(name) {
            Some(value) => {
                used.insert(name.to_string());
                out.push_str(value);
            }
            None => match placeholder {
                Some(p) => out.push_str(p),
                None => {
                    return Err((
                        format!("no value for ${{{name}}}"),
                        format!("give it with --param {name}=VALUE"),
                    ))
                }
            },
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A (possibly qualified) name as written, without quotes: `\`db\`.t` is `db.t`.
pub fn name_of(name: &sqlparser::ast::ObjectName) -> String {
    name.0
        .iter()
        .map(|part| match part.as_ident() {
            Some(ident) => ident.value.clone(),
            None => part.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

fn word_is(p: &Parser, n: usize, word: &str) -> bool {
    matches!(&p.peek_nth_token(n).token, Token::Word(w) if w.value.eq_ignore_ascii_case(word))
}

/// Consumes `words` if they come next.
fn parse_words(p: &mut Parser, words: &[&str]) -> bool {
    if words.iter().enumerate().all(|(i, w)| word_is(p, i, w)) {
        for _ in words {
            p.next_token();
        }
        true
    } else {
        false
    }
}

fn statement(p: &mut Parser, file: usize) -> Result<Stmt, ParserError> {
    if parse_words(p, &["CREATE", "TABLE"]) || parse_words(p, &["CREATE", "TEMPORARY", "TABLE"]) {
        return create_table(p, file).map(|t| Stmt::CreateTable(Box::new(t)));
    }
    if parse_words(p, &["CREATE", "FUNCTION"])
        || parse_words(p, &["CREATE", "TEMPORARY", "FUNCTION"])
        || parse_words(p, &["CREATE", "TEMPORARY", "SYSTEM", "FUNCTION"])
    {
        let _if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
        let name = name_of(&p.parse_object_name(false)?);
        p.expect_keyword(Keyword::AS)?;
        let class = p.parse_literal_string()?;
        let language = if p.parse_keyword(Keyword::LANGUAGE) {
            Some(p.parse_identifier()?.value)
        } else {
            None
        };
        return Ok(Stmt::CreateFunction {
            name,
            class,
            language,
        });
    }
    if word_is(p, 0, "SET") && matches!(p.peek_nth_token(1).token, Token::SingleQuotedString(_)) {
        p.next_token();
        let key = p.parse_literal_string()?;
        p.expect_token(&Token::Eq)?;
        let value = p.parse_literal_string()?;
        return Ok(Stmt::Set { key, value });
    }
    if parse_words(p, &["EXECUTE", "STATEMENT", "SET", "BEGIN"])
        || parse_words(p, &["BEGIN", "STATEMENT", "SET"])
    {
        let mut inserts = Vec::new();
        loop {
            while p.consume_token(&Token::SemiColon) {}
            if p.parse_keyword(Keyword::END) {
                break;
            }
            let pos = Pos::at(file, p.peek_token().span.start);
            match statement(p, file)? {
                Stmt::Insert(insert) => inserts.push(Located { item: insert, pos }),
                _ => {
                    return Err(ParserError::ParserError(format!(
                        "a statement set holds only INSERT INTO statements at Line: {}, Column: {}",
                        pos.line, pos.column
                    )))
                }
            }
        }
        return Ok(Stmt::StatementSet(inserts));
    }
    if word_is(p, 0, "EXPLAIN") {
        p.next_token();
        // Flink's EXPLAIN takes details, which change nothing here, or `PLAN FOR`.
        while [
            "ESTIMATED_COST",
            "CHANGELOG_MODE",
            "PLAN_ADVICE",
            "JSON_EXECUTION_PLAN",
        ]
        .iter()
        .any(|w| word_is(p, 0, w))
        {
            p.next_token();
            let _comma = p.consume_token(&Token::Comma);
        }
        parse_words(p, &["PLAN", "FOR"]);
        let pos = Pos::at(file, p.peek_token().span.start);
        let inner = statement(p, file)?;
        return Ok(Stmt::Explain(Box::new(Located { item: inner, pos })));
    }
    let start = p.peek_token();
    match p.parse_statement()? {
        Statement::Insert(insert) => {
            let Some(query) = insert.source else {
                return unsupported(&start, "INSERT without a query");
            };
            let sqlparser::ast::TableObject::TableName(table) = &insert.table else {
                return unsupported(&start, "INSERT INTO a table function");
            };
            Ok(Stmt::Insert(Insert {
                table: name_of(table),
                columns: insert.columns.iter().map(name_of).collect(),
                query,
            }))
        }
        Statement::CreateView(view) => Ok(Stmt::CreateView {
            name: name_of(&view.name),
            columns: view.columns.iter().map(|c| c.name.value.clone()).collect(),
            query: view.query,
        }),
        Statement::Query(query) => Ok(Stmt::Query(query)),
        other => unsupported(&start, &first_words(&other.to_string())),
    }
}

pub fn first_words(text: &str) -> String {
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn unsupported<T>(at: &TokenWithSpan, what: &str) -> Result<T, ParserError> {
    Err(ParserError::ParserError(format!(
        "`{what}` is not supported; a script holds CREATE TABLE, CREATE VIEW, CREATE FUNCTION, SET, \
         INSERT INTO, EXECUTE STATEMENT SET, EXPLAIN and SELECT at Line: {}, Column: {}",
        at.span.start.line, at.span.start.column
    )))
}

fn create_table(p: &mut Parser, file: usize) -> Result<TableDef, ParserError> {
    let if_not_exists = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = name_of(&p.parse_object_name(false)?);
    p.expect_token(&Token::LParen)?;
    let mut table = TableDef {
        name,
        if_not_exists,
        columns: Vec::new(),
        watermark: None,
        primary_key: Vec::new(),
        options: Vec::new(),
    };
    loop {
        let pos = Pos::at(file, p.peek_token().span.start);
        if word_is(p, 0, "WATERMARK") && word_is(p, 1, "FOR") {
            p.next_token();
            p.next_token();
            let column = p.parse_identifier()?.value;
            p.expect_keyword(Keyword::AS)?;
            let expr = p.parse_expr()?;
            table.watermark = Some(WatermarkDef { column, expr, pos });
        } else if p.parse_keywords(&[Keyword::PRIMARY, Keyword::KEY]) {
            p.expect_token(&Token::LParen)?;
            let key = p.parse_comma_separated(|p| p.parse_identifier())?;
            p.expect_token(&Token::RParen)?;
            p.expect_keywords(&[Keyword::NOT, Keyword::ENFORCED])?;
            table.primary_key = key.into_iter().map(|i| i.value).collect();
        } else {
            let name = p.parse_identifier()?.value;
            let kind = if p.parse_keyword(Keyword::AS) {
                ColumnKind::Computed(Box::new(p.parse_expr()?))
            } else {
                let ty = p.parse_data_type()?;
                // Column constraints Flink accepts and Eddy has no use for.
                let _not_null = p.parse_keywords(&[Keyword::NOT, Keyword::NULL]);
                if p.parse_keywords(&[Keyword::PRIMARY, Keyword::KEY]) {
                    p.expect_keywords(&[Keyword::NOT, Keyword::ENFORCED])?;
                    table.primary_key = vec![name.clone()];
                }
                ColumnKind::Physical(ty)
            };
            table.columns.push(ColumnDef { name, kind, pos });
        }
        if p.consume_token(&Token::Comma) {
            continue;
        }
        p.expect_token(&Token::RParen)?;
        break;
    }
    if p.parse_keyword(Keyword::WITH) {
        p.expect_token(&Token::LParen)?;
        table.options = p.parse_comma_separated(|p| {
            let key = p.parse_literal_string()?;
            p.expect_token(&Token::Eq)?;
            let value = p.parse_literal_string()?;
            Ok((key, value))
        })?;
        p.expect_token(&Token::RParen)?;
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_one(text: &str) -> Result<Vec<Located<Stmt>>, SqlError> {
        let sources = Sources::new(vec![("t.sql".into(), text.into())]);
        parse(&sources, &BTreeMap::new(), &BTreeSet::new(), None)
    }

    #[test]
    fn placeholders_are_filled_inside_strings_only() {
        let params = BTreeMap::from([("IN".to_string(), "a.json".to_string())]);
        let mut used = BTreeSet::new();
        let none = BTreeSet::new();
        assert_eq!(
            substitute("x/${IN}/y", &params, &none, None, &mut used).unwrap(),
            "x/a.json/y"
        );
        assert!(substitute("${OUT}", &params, &none, None, &mut used).is_err());
        assert_eq!(
            substitute("${OUT}", &params, &none, Some("?"), &mut used).unwrap(),
            "?"
        );
        let secret = BTreeSet::from(["PW".to_string()]);
        assert_eq!(
            substitute("u:${PW}@h", &params, &secret, None, &mut used).unwrap(),
            "u:${PW}@h"
        );
    }

    #[test]
    fn a_missing_semicolon_points_at_what_follows() {
        let e = parse_one("SET 'a' = 'b'\nSET 'c' = 'd'").unwrap_err();
        assert_eq!((e.line, e.column), (2, 1), "{e}");
    }

    #[test]
    fn parser_errors_carry_line_and_column() {
        let e = parse_one("CREATE VIEW v AS\nSELECT a FROM WHERE").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.to_string().contains("t.sql:2:"), "{e}");
    }
}
