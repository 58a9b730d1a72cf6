//! Flink SQL as a `sqlparser` dialect.
//!
//! sqlparser has no Flink dialect; it lets a dialect extend the parser through hooks. Two are
//! needed for Flink's syntax: the `ROW<name type, ...>` type of nested columns and the
//! `TABLE name` argument of window table functions (`TUMBLE(TABLE bid, ...)`). The rest of what
//! differs from standard SQL (CREATE TABLE with computed columns and WATERMARK, CREATE FUNCTION,
//! SET 'k' = 'v', EXECUTE STATEMENT SET) is parsed by the statement driver in `script.rs`.

use sqlparser::ast::{
    DataType, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList,
    FunctionArguments, Ident, ObjectName, StructBracketKind, StructField,
};
use sqlparser::dialect::Dialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::Token;

/// The name of the pseudo-function a `TABLE name` argument becomes.
pub const TABLE_ARGUMENT: &str = "TABLE";

/// Flink SQL: backquoted identifiers, `FILTER (WHERE ..)` on aggregates, `FOR SYSTEM_TIME AS OF`,
/// `ROW<..>` types and `TABLE t` arguments.
#[derive(Debug, Default)]
pub struct FlinkDialect;

impl Dialect for FlinkDialect {
    fn is_identifier_start(&self, ch: char) -> bool {
        ch.is_ascii_alphabetic() || ch == '_'
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        ch.is_ascii_alphanumeric() || ch == '_' || ch == '$'
    }

    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        ch == '`'
    }

    fn supports_filter_during_aggregation(&self) -> bool {
        true
    }

    fn supports_table_versioning(&self) -> bool {
        true
    }

    fn supports_group_by_expr(&self) -> bool {
        true
    }

    /// `TABLE name` inside a table function's arguments becomes the call `TABLE(name)`.
    fn parse_prefix(&self, p: &mut Parser) -> Option<Result<Expr, ParserError>> {
        if !(p.peek_keyword(Keyword::TABLE) && matches!(p.peek_nth_token(1).token, Token::Word(_)))
        {
            return None;
        }
        p.next_token();
        Some(p.parse_identifier().map(|name| {
            Expr::Function(Function {
                name: ObjectName::from(vec![Ident::new(TABLE_ARGUMENT)]),
                uses_odbc_syntax: false,
                parameters: FunctionArguments::None,
                args: FunctionArguments::List(FunctionArgumentList {
                    duplicate_treatment: None,
                    args: vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(
                        Expr::Identifier(name),
                    ))],
                    clauses: vec![],
                }),
                filter: None,
                null_treatment: None,
                over: None,
                within_group: vec![],
            })
        }))
    }

    /// `ROW<name type, ...>`, as a struct type with angle brackets.
    fn parse_data_type(&self, p: &mut Parser) -> Option<Result<DataType, ParserError>> {
        let is_row = matches!(&p.peek_token().token,
                Token::Word(w) if w.value.eq_ignore_ascii_case("ROW"))
            && p.peek_nth_token(1).token == Token::Lt;
        if !is_row {
            return None;
        }
        p.next_token();
        p.next_token();
        Some((|| {
            let mut fields = vec![];
            loop {
                let name = p.parse_identifier()?;
                let field_type = p.parse_data_type()?;
                fields.push(StructField {
                    field_name: Some(name),
                    field_type,
                    options: None,
                });
                if p.consume_token(&Token::Comma) {
                    continue;
                }
                p.expect_token(&Token::Gt)?;
                return Ok(DataType::Struct(fields, StructBracketKind::AngleBrackets));
            }
        })())
    }
}
