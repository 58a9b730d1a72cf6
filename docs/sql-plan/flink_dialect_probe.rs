// A probe, not built by the workspace: sqlparser 0.64 with a Flink dialect, parsing
// ../shared/flink/queries (see docs/sql-plan.md). Start of the future `sql/` crate.
// Proof of concept: a FlinkDialect (hooks) + a statement driver that parses Flink DDL by hand
// with sqlparser's public Parser API and delegates everything else to parse_statement.
use sqlparser::ast::*;
use sqlparser::dialect::Dialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::Token;

#[derive(Debug)]
struct FlinkDialect;
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
    // `TABLE name` as a table-function argument (TUMBLE(TABLE bid, ...)).
    fn parse_prefix(&self, p: &mut Parser) -> Option<Result<Expr, ParserError>> {
        if p.peek_keyword(Keyword::TABLE) && matches!(p.peek_nth_token(1).token, Token::Word(_)) {
            p.next_token();
            return Some(p.parse_identifier().map(|name| {
                Expr::Function(Function {
                    name: ObjectName::from(vec![Ident::new("TABLE")]),
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
            }));
        }
        None
    }
    // ROW<name TYPE, ...>
    fn parse_data_type(&self, p: &mut Parser) -> Option<Result<DataType, ParserError>> {
        let is_row = matches!(&p.peek_token().token, Token::Word(w) if w.value.eq_ignore_ascii_case("ROW"))
            && p.peek_nth_token(1).token == Token::Lt;
        if !is_row {
            return None;
        }
        p.next_token();
        p.next_token();
        let mut fields = vec![];
        let r = (|| loop {
            let name = p.parse_identifier()?;
            let ty = p.parse_data_type()?;
            fields.push(StructField {
                field_name: Some(name),
                field_type: ty,
                options: None,
            });
            if p.consume_token(&Token::Comma) {
                continue;
            }
            p.expect_token(&Token::Gt)?;
            return Ok(DataType::Struct(
                std::mem::take(&mut fields),
                StructBracketKind::AngleBrackets,
            ));
        })();
        Some(r)
    }
}

fn word_is(p: &Parser, n: usize, w: &str) -> bool {
    matches!(&p.peek_nth_token(n).token, Token::Word(x) if x.value.eq_ignore_ascii_case(w))
}

#[allow(dead_code)]
#[derive(Debug)]
enum Col {
    Physical(String, String),
    Computed(String, String),
    Watermark(String, String),
    Pk(Vec<String>),
}

fn create_table(p: &mut Parser) -> Result<String, ParserError> {
    let name = p.parse_object_name(false)?;
    p.expect_token(&Token::LParen)?;
    let mut cols = vec![];
    loop {
        if word_is(p, 0, "WATERMARK") {
            p.next_token();
            p.expect_keyword(Keyword::FOR)?;
            let c = p.parse_identifier()?;
            p.expect_keyword(Keyword::AS)?;
            cols.push(Col::Watermark(c.value, p.parse_expr()?.to_string()));
        } else if p.parse_keywords(&[Keyword::PRIMARY, Keyword::KEY]) {
            p.expect_token(&Token::LParen)?;
            let k = p.parse_comma_separated(|p| p.parse_identifier())?;
            p.expect_token(&Token::RParen)?;
            p.expect_keyword(Keyword::NOT)?;
            p.expect_keyword(Keyword::ENFORCED)?;
            cols.push(Col::Pk(k.into_iter().map(|i| i.value).collect()));
        } else {
            let c = p.parse_identifier()?;
            if p.parse_keyword(Keyword::AS) {
                let e = p.parse_expr()?;
                cols.push(Col::Computed(c.value, e.to_string()));
            } else {
                cols.push(Col::Physical(c.value, p.parse_data_type()?.to_string()));
            }
        }
        if p.consume_token(&Token::Comma) {
            continue;
        }
        p.expect_token(&Token::RParen)?;
        break;
    }
    let opts = if p.parse_keyword(Keyword::WITH) {
        p.expect_token(&Token::LParen)?;
        let o = p.parse_comma_separated(|p| {
            let k = p.parse_literal_string()?;
            p.expect_token(&Token::Eq)?;
            let v = p.parse_literal_string()?;
            Ok((k, v))
        })?;
        p.expect_token(&Token::RParen)?;
        o
    } else {
        vec![]
    };
    Ok(format!("CREATE TABLE {name} {cols:?} WITH {opts:?}"))
}

fn main() {
    let verbose = std::env::var("SHOW").is_ok();
    for path in std::env::args().skip(1) {
        let text = std::fs::read_to_string(&path).unwrap();
        let d = FlinkDialect;
        let mut p = Parser::new(&d).try_with_sql(&text).unwrap();
        let mut n = 0;
        let res: Result<(), ParserError> = (|| loop {
            while p.consume_token(&Token::SemiColon) {}
            if p.peek_token().token == Token::EOF {
                return Ok(());
            }
            let s = if word_is(&p, 0, "CREATE") && word_is(&p, 1, "TABLE") {
                p.next_token();
                p.next_token();
                create_table(&mut p)?
            } else if word_is(&p, 0, "CREATE") && word_is(&p, 1, "FUNCTION") {
                p.next_token();
                p.next_token();
                let f = p.parse_object_name(false)?;
                p.expect_keyword(Keyword::AS)?;
                let c = p.parse_literal_string()?;
                let lang = if p.parse_keyword(Keyword::LANGUAGE) {
                    Some(p.parse_identifier()?.value)
                } else {
                    None
                };
                format!("CREATE FUNCTION {f} AS {c:?} LANGUAGE {lang:?}")
            } else if word_is(&p, 0, "EXECUTE")
                && word_is(&p, 1, "STATEMENT")
                && word_is(&p, 2, "SET")
                && word_is(&p, 3, "BEGIN")
            {
                for _ in 0..4 {
                    p.next_token();
                }
                let mut v = vec![];
                loop {
                    while p.consume_token(&Token::SemiColon) {}
                    if p.parse_keyword(Keyword::END) {
                        break;
                    }
                    v.push(p.parse_statement()?.to_string());
                }
                format!("STATEMENT SET {v:?}")
            } else {
                let st = p.parse_statement()?;
                if verbose {
                    format!("{st}\n    {st:?}")
                } else {
                    st.to_string()
                }
            };
            n += 1;
            if verbose {
                println!("  {s}");
            }
        })();
        match res {
            Ok(()) => println!("{path}: OK {n} statements"),
            Err(e) => println!("{path}: ERR {e}"),
        }
    }
}
