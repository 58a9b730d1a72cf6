//! From a script's statements to an Eddy job file.
//!
//! The planner binds each query against the catalog (tables, views, functions), building one
//! job operator per relational step, and emits the job as TOML. The TOML goes through the job
//! compiler, which types every expression and derives every schema, so SQL and job files give
//! the same graph and the same answers. Where the planner needs a type (to cast into a sink's
//! declared columns) it asks the compiler for the schema of what it has built so far.

use crate::emit::{quote, Emitter};
use crate::error::{Pos, Sources, SqlError};
use crate::expr::{default_name, same, Converter};
use crate::script::{ColumnKind, Insert, Located, Stmt, TableDef};
use eddy_operators::format::NexmarkTable;
use eddy_runtime::expr::{parse_expr, Ast, AstKind, BinaryOp};
use eddy_runtime::types::{DataType, Schema};
use sqlparser::ast::{
    self as sql, Expr, GroupByExpr, Ident, Query, Select, SelectItem, SetExpr, SetOperator,
    SetQuantifier, Spanned, TableFactor, TableWithJoins,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;

/// A view or common table expression: its query, the names it gives its columns (none: the
/// query's own), and the common table expressions its query may read.
#[derive(Debug)]
struct Named {
    query: Box<Query>,
    columns: Vec<String>,
    pos: Pos,
    visible: Ctes,
}

/// The common table expressions in scope, by lower-case name.
type Ctes = BTreeMap<String, Rc<Named>>;

/// Where the rows of every sink table go instead of its connector (`--sink-dir`).
#[derive(Clone, Debug)]
pub struct SinkDir {
    pub dir: PathBuf,
    /// Part files under `DIR/T/` (a run with checkpoints, exactly once) instead of `DIR/T.jsonl`.
    pub parts: bool,
}

/// What `SET` changed, for the command line to apply (flags given there win).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings {
    /// `parallelism.default`.
    pub parallelism: Option<u32>,
    /// `execution.checkpointing.interval`, in milliseconds.
    pub checkpoint_interval_ms: Option<u64>,
    /// Options accepted and without effect in Eddy, with why, to report.
    pub ignored: Vec<(String, String)>,
}

/// Functions Flink jobs declare with `CREATE FUNCTION` from Java classes that Eddy implements
/// as built-ins.
const KNOWN_FUNCTIONS: &[(&str, &str)] =
    &[("com.github.nexmark.flink.udf.CountChar", "count_char")];

/// A relation being built: the job node (or `source.port`) its rows come from and its columns.
#[derive(Clone, Debug)]
struct Rel {
    input: String,
    columns: Vec<String>,
    /// The name it is known by in the query (`FROM bid B` → `B`, `FROM bid` → `bid`).
    alias: Option<String>,
    /// The column that is its time attribute (watermarked event time), if any: what
    /// deduplication and Top-N tie-breaks order by.
    time: Option<String>,
    /// The window its rows are in, if any.
    window: Option<Windowed>,
}

/// How a relation's rows relate to a window.
#[derive(Clone, Debug)]
enum Windowed {
    /// The output of a window table function (`TABLE(TUMBLE(..))`): the window columns exist
    /// once a GROUP BY on `window_start, window_end` aggregates the rows.
    Assigned(Window),
    /// Rows of windows already computed, with the columns holding their bounds: a GROUP BY or
    /// a join on both keeps to those windows.
    Bounds { start: String, end: String },
}

/// The Nexmark source table of Flink's benchmark DDL, before a view picked an event type.
#[derive(Clone, Debug)]
struct NexmarkRaw {
    source: String,
}

#[derive(Clone, Debug)]
enum From {
    Rel(Rel),
    Nexmark(NexmarkRaw),
    /// Two inputs, joined with the conditions of ON (WHERE adds its own).
    Join(Box<JoinPlan>),
}

/// An inner join of two inputs, before its conditions are placed.
#[derive(Clone, Debug)]
struct JoinPlan {
    sides: [Rel; 2],
    /// What each side is called in the job's join (`left = "bids AS B"`).
    aliases: [String; 2],
    on: Vec<Expr>,
    /// `JOIN versions FOR SYSTEM_TIME AS OF left.time`: an event-time temporal join, with the
    /// left side's time and whether it is a LEFT JOIN.
    temporal: Option<(Expr, bool)>,
}

/// The names a query's expressions can use.
enum Scope<'a> {
    One(&'a Rel),
    /// Both sides of a join: columns resolve to `alias.column`.
    Join(&'a JoinPlan),
    /// A Nexmark event type picked from the raw table: `bid.price` and `dateTime`.
    Nexmark(NexmarkTable),
}

pub struct Planner<'s> {
    sources: &'s Sources,
    tables: BTreeMap<String, Located<TableDef>>,
    views: BTreeMap<String, Rc<Named>>,
    /// Views being expanded, innermost last: a view that reaches itself is refused.
    expanding: Vec<Rc<Named>>,
    functions: BTreeMap<String, String>,
    /// Tables read so far, by name, as the source reference they became.
    read: BTreeMap<String, From>,
    pub settings: Settings,
    sink_dir: Option<SinkDir>,
    /// Where a bare SELECT writes its rows (the `eddy sql` shell); without it, one is an error.
    pub select_to: Option<std::path::PathBuf>,
    pub emitter: Emitter,
    /// Plans printed by EXPLAIN.
    pub explained: Vec<String>,
    pub sinks: usize,
}

fn lower(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// A column reference.
fn column(name: &str) -> Ast {
    Ast::new(
        AstKind::Column {
            qualifier: None,
            name: name.to_string(),
        },
        0..0,
    )
}

/// `expr AS name`, or just the column when it already has that name.
fn named(ast: &Ast, name: &str) -> String {
    match ast.as_column() {
        Some((_, n)) if n == name => ast.to_string(),
        _ => format!("{ast} AS {}", column(name)),
    }
}

impl<'s> Planner<'s> {
    pub fn new(sources: &'s Sources, sink_dir: Option<SinkDir>, name: &str) -> Planner<'s> {
        Planner {
            sources,
            tables: BTreeMap::new(),
            views: BTreeMap::new(),
            expanding: Vec::new(),
            functions: BTreeMap::new(),
            read: BTreeMap::new(),
            settings: Settings::default(),
            sink_dir,
            select_to: None,
            emitter: Emitter::new(name),
            explained: Vec::new(),
            sinks: 0,
        }
    }

    /// The tables (as declared) and views (lower case) so far, sorted.
    pub fn declared(&self) -> Vec<String> {
        let tables = self.tables.values().map(|t| t.item.name.clone());
        let mut names: Vec<String> = tables.chain(self.views.keys().cloned()).collect();
        names.sort();
        names
    }

    fn err(&self, pos: Pos, message: impl Into<String>) -> SqlError {
        self.sources.error(pos, message)
    }

    fn pos(&self, file: usize, node: &impl Spanned, fallback: Pos) -> Pos {
        Pos::of(file, node.span(), fallback)
    }

    /// Applies one statement.
    pub fn statement(&mut self, stmt: &Located<Stmt>) -> Result<(), SqlError> {
        let pos = stmt.pos;
        match &stmt.item {
            Stmt::CreateTable(table) => {
                let key = lower(&table.name);
                if table.if_not_exists && self.tables.contains_key(&key) {
                    return Ok(());
                }
                if self.tables.contains_key(&key) || self.views.contains_key(&key) {
                    return Err(self.err(pos, format!("`{}` is defined twice", table.name)));
                }
                self.tables.insert(
                    key,
                    Located {
                        item: (**table).clone(),
                        pos,
                    },
                );
            }
            Stmt::CreateView {
                name,
                columns,
                query,
            } => {
                let key = lower(name);
                if self.tables.contains_key(&key) || self.views.contains_key(&key) {
                    return Err(self.err(pos, format!("`{name}` is defined twice")));
                }
                self.views.insert(
                    key,
                    Rc::new(Named {
                        query: query.clone(),
                        columns: columns.clone(),
                        pos,
                        visible: Ctes::new(),
                    }),
                );
            }
            Stmt::CreateFunction {
                name,
                class,
                language,
            } => {
                if language
                    .as_deref()
                    .is_some_and(|l| !l.eq_ignore_ascii_case("java"))
                {
                    return Err(self.err(
                        pos,
                        format!(
                            "functions in {} are not supported",
                            language.as_deref().unwrap_or_default()
                        ),
                    ));
                }
                let Some((_, builtin)) = KNOWN_FUNCTIONS.iter().find(|(c, _)| c == class) else {
                    let known: Vec<String> = KNOWN_FUNCTIONS
                        .iter()
                        .map(|(c, b)| format!("{c} ({})", b.to_uppercase()))
                        .collect();
                    return Err(self
                        .err(
                            pos,
                            format!("no implementation of the Java class `{class}`"),
                        )
                        .help(format!(
                            "Eddy runs no Java; the classes it implements as built-ins are: {}",
                            known.join(", ")
                        )));
                };
                self.functions.insert(lower(name), builtin.to_string());
            }
            Stmt::Set { key, value } => self.set(pos, key, value)?,
            Stmt::Insert(insert) => self.insert(pos, insert)?,
            Stmt::StatementSet(inserts) => {
                for insert in inserts {
                    self.insert(insert.pos, &insert.item)?;
                }
            }
            Stmt::Explain(inner) => {
                // EXPLAIN plans the statement without adding it to the job.
                let before = (self.emitter.clone(), self.sinks, self.read.clone());
                let planned = self.statement(inner);
                let after = self.emitter.text();
                (self.emitter, self.sinks, self.read) = before;
                planned?;
                self.explained.push(after);
            }
            Stmt::Query(query) if self.select_to.is_some() => {
                let rel = self.query(pos.file, query, pos, &Ctes::new())?;
                // Named as the query names them, without the planner's inner names.
                let items: Vec<String> =
                    rel.columns.iter().map(|c| column(c).to_string()).collect();
                let input = self.emitter.operator(
                    "result_columns",
                    "select",
                    &[("input", quote(&rel.input)), ("columns", list(&items))],
                );
                let path = self.select_to.clone().expect("checked by the guard");
                self.emitter.sink(
                    "result",
                    &[
                        ("input", quote(&input)),
                        ("connector", quote("file")),
                        ("path", quote(&path.display().to_string())),
                    ],
                );
                self.sinks += 1;
            }
            Stmt::Query(query) => {
                return Err(self
                    .err(
                        pos,
                        format!(
                            "`{}` has nowhere to write its rows",
                            crate::script::first_words(&query.to_string())
                        ),
                    )
                    .help("write INSERT INTO a table (e.g. one with 'connector' = 'print')"))
            }
        }
        Ok(())
    }

    fn set(&mut self, pos: Pos, key: &str, value: &str) -> Result<(), SqlError> {
        let bad = |what: &str| self.err(pos, format!("SET '{key}': `{value}` is not {what}"));
        match key {
            "parallelism.default" => {
                let n: u32 = value.parse().ok().filter(|n| *n > 0).ok_or_else(|| bad("a positive number"))?;
                self.settings.parallelism = Some(n);
            }
            "execution.checkpointing.interval" => {
                let ms = eddy_runtime::types::parse_duration(&value.replace(' ', ""))
                    .ok_or_else(|| bad("a duration such as '10 s'"))?;
                self.settings.checkpoint_interval_ms = Some(ms as u64);
            }
            "table.exec.state.ttl" => {
                // Flink reads a bare number as milliseconds; 0 keeps state forever.
                let text = value.replace(' ', "");
                let ms = match text.parse::<i64>() {
                    Ok(ms) => Some(ms),
                    Err(_) => eddy_runtime::types::parse_duration(&text),
                }
                .filter(|ms| *ms >= 0)
                .ok_or_else(|| bad("a duration such as '1 h' (0 keeps state forever)"))?;
                self.emitter.state_ttl_ms = (ms > 0).then_some(ms);
            }
            k if k.starts_with("table.exec.mini-batch.")
                || k == "table.optimizer.distinct-agg.split.enabled" =>
            {
                self.settings.ignored.push((
                    key.to_string(),
                    "Eddy batches rows between operators by itself; the option changes nothing".into(),
                ));
            }
            k if k.starts_with("pipeline.")
                || k.starts_with("state.")
                || k.starts_with("execution.checkpointing.") =>
            {
                self.settings.ignored.push((
                    key.to_string(),
                    "set it with the flags of `eddy run` and `eddy submit` (see --help)".into(),
                ));
            }
            _ => {
                return Err(self
                    .err(pos, format!("unknown option `{key}`"))
                    .help("Eddy takes 'parallelism.default', 'execution.checkpointing.interval' and 'table.exec.state.ttl'; Flink's mini-batch, pipeline and state options are accepted and ignored"))
            }
        }
        Ok(())
    }

    fn insert(&mut self, pos: Pos, insert: &Insert) -> Result<(), SqlError> {
        let Some(table) = self.tables.get(&lower(&insert.table)).cloned() else {
            return Err(self
                .err(pos, format!("no table `{}` to insert into", insert.table))
                .help("declare it first with CREATE TABLE"));
        };
        let rel = self.query(pos.file, &insert.query, pos, &Ctes::new())?;
        let declared: Vec<(&str, &sql::DataType, Pos)> = table
            .item
            .columns
            .iter()
            .filter_map(|c| match &c.kind {
                ColumnKind::Physical(t) => Some((c.name.as_str(), t, c.pos)),
                ColumnKind::Computed(_) => None,
            })
            .collect();
        // Which query column feeds each declared column: all in order, or those listed (the
        // others get NULL, as in Flink).
        let sources: Vec<Option<usize>> = if insert.columns.is_empty() {
            (0..declared.len()).map(Some).collect()
        } else {
            for c in &insert.columns {
                if !declared.iter().any(|(n, _, _)| n.eq_ignore_ascii_case(c)) {
                    return Err(self.err(pos, format!("`{}` has no column `{c}`", table.item.name)));
                }
            }
            declared
                .iter()
                .map(|(n, _, _)| {
                    insert
                        .columns
                        .iter()
                        .position(|c| n.eq_ignore_ascii_case(c))
                })
                .collect()
        };
        let fed = sources.iter().flatten().count();
        if fed != rel.columns.len() {
            return Err(self.err(
                pos,
                format!(
                    "the query gives {} columns and `{}` takes {fed}",
                    rel.columns.len(),
                    table.item.name,
                ),
            ));
        }
        // Columns go in by position, named as the table names them, cast where Flink would.
        let schema = self.schema_of(&rel, pos)?;
        if schema.fields.len() != rel.columns.len() {
            return Err(self.err(
                pos,
                "planning failed: the query's columns and their schema differ (a bug)",
            ));
        }
        let mut items = Vec::new();
        let mut identity = sources.iter().enumerate().all(|(i, s)| *s == Some(i));
        for ((name, ty, at), source) in declared.iter().zip(&sources) {
            let want = sql_type(ty).map_err(|m| self.err(*at, m))?;
            let Some(i) = *source else {
                items.push(format!("CAST(NULL AS {want}) AS {}", column(name)));
                continue;
            };
            let value = column(&rel.columns[i]);
            let have = schema.fields[i].data_type;
            let value = if compatible(have, want) {
                value
            } else if castable(have, want) {
                identity = false;
                parse_expr(&format!("CAST({value} AS {want})"))
                    .map_err(|e| self.err(pos, e.message))?
            } else {
                return Err(self
                    .err(
                        pos,
                        format!(
                            "column {} of the query (`{}`, {have}) cannot go into `{}`.`{name}` ({want})",
                            i + 1,
                            rel.columns[i],
                            table.item.name
                        ),
                    )
                    .help(format!("convert it with CAST(.. AS {want}) if that is what you mean")));
            };
            if rel.columns[i] != *name {
                identity = false;
            }
            items.push(named(&value, name));
        }
        let input = if identity {
            rel.input
        } else {
            self.emitter.operator(
                &format!("{}_columns", table.item.name),
                "select",
                &[("input", quote(&rel.input)), ("columns", list(&items))],
            )
        };
        self.sink(&table, &input)?;
        self.sinks += 1;
        Ok(())
    }

    /// The schema of `rel`, from the job compiler.
    fn schema_of(&self, rel: &Rel, pos: Pos) -> Result<Schema, SqlError> {
        self.emitter
            .schema_of(&rel.input)
            .map_err(|e| self.err(pos, format!("planning failed: {e}")))
    }

    fn sink(&mut self, table: &Located<TableDef>, input: &str) -> Result<(), SqlError> {
        let t = &table.item;
        let name = &t.name;
        let fields: Vec<(&str, String)> = if let Some(dir) = &self.sink_dir {
            if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
                return Err(self
                    .err(
                        table.pos,
                        format!("`{name}` cannot name a file under --sink-dir"),
                    )
                    .help("name sink tables with letters, digits and _"));
            }
            let path = if dir.parts {
                format!("{}/", dir.dir.join(name).display())
            } else {
                dir.dir.join(format!("{name}.jsonl")).display().to_string()
            };
            vec![("connector", quote("file")), ("path", quote(&path))]
        } else {
            self.no_generated_values(table)?;
            let connector = t.option("connector").unwrap_or_default();
            match connector {
                "blackhole" => vec![("connector", quote("blackhole"))],
                "print" => vec![("connector", quote("stdout"))],
                "filesystem" => {
                    self.json_format(table)?;
                    vec![
                        ("connector", quote("file")),
                        ("path", quote(self.required(table, "path")?)),
                    ]
                }
                "jdbc" | "postgres" => {
                    let url = postgres_url(t).map_err(|m| self.err(table.pos, m))?;
                    let mut v = vec![
                        ("connector", quote("postgres")),
                        ("url", quote(&url)),
                        ("table", quote(self.required(table, "table-name")?)),
                    ];
                    if !t.primary_key.is_empty() {
                        v.push(("key", list(&t.primary_key)));
                    }
                    v
                }
                "kafka" | "upsert-kafka" => {
                    return Err(self
                        .err(table.pos, format!("`{name}`: Eddy has no Kafka sink yet"))
                        .help("write to 'filesystem', 'jdbc', 'print' or 'blackhole', or run with --sink-dir"))
                }
                other => {
                    return Err(self
                        .err(table.pos, format!("`{name}`: unknown sink connector '{other}'"))
                        .help("use 'blackhole', 'print', 'filesystem' (format 'json') or 'jdbc' (PostgreSQL)"))
                }
            }
        };
        let mut all = vec![("input", quote(input))];
        all.extend(fields);
        self.emitter.sink(name, &all);
        Ok(())
    }

    /// `--generate` stands in only for the Nexmark table's path: a placeholder without a value
    /// anywhere else is still an error.
    fn no_generated_values(&self, table: &Located<TableDef>) -> Result<(), SqlError> {
        match table.item.options.iter().find(|(_, v)| v.contains(crate::GENERATED)) {
            Some((key, _)) => Err(self
                .err(table.pos, format!("`{}`: '{key}' has a placeholder without a value", table.item.name))
                .help("give it with --param NAME=VALUE (--generate stands in only for the Nexmark table's path)")),
            None => Ok(()),
        }
    }

    fn required<'t>(&self, table: &'t Located<TableDef>, key: &str) -> Result<&'t str, SqlError> {
        table.item.option(key).ok_or_else(|| {
            self.err(
                table.pos,
                format!("`{}` needs the option '{key}'", table.item.name),
            )
        })
    }

    fn json_format(&self, table: &Located<TableDef>) -> Result<(), SqlError> {
        match table.item.option("format") {
            Some("json") => Ok(()),
            other => Err(self
                .err(
                    table.pos,
                    format!(
                        "`{}`: format '{}' is not supported",
                        table.item.name,
                        other.unwrap_or("(none)")
                    ),
                )
                .help("Eddy reads and writes 'format' = 'json'")),
        }
    }

    // ---- queries ------------------------------------------------------------------------

    fn query(
        &mut self,
        file: usize,
        q: &Query,
        fallback: Pos,
        ctes: &Ctes,
    ) -> Result<Rel, SqlError> {
        let pos = self.pos(file, q, fallback);
        let mut ctes = ctes.clone();
        if let Some(with) = &q.with {
            if with.recursive {
                return Err(self.err(pos, "WITH RECURSIVE is not supported"));
            }
            // Each common table expression sees those before it and the outer ones, not itself.
            for cte in &with.cte_tables {
                let named = Named {
                    query: cte.query.clone(),
                    columns: cte
                        .alias
                        .columns
                        .iter()
                        .map(|c| c.name.value.clone())
                        .collect(),
                    pos: Pos::of(file, cte.alias.name.span, pos),
                    visible: ctes.clone(),
                };
                ctes.insert(lower(&cte.alias.name.value), Rc::new(named));
            }
        }
        if q.order_by.is_some() || q.limit_clause.is_some() || q.fetch.is_some() {
            return Err(self
                .err(pos, "ORDER BY and LIMIT have no end on a stream")
                .help("for the top N rows per key use ROW_NUMBER() OVER (PARTITION BY .. ORDER BY ..) and filter on it"));
        }
        self.set_expr(file, &q.body, pos, &ctes)
    }

    fn set_expr(
        &mut self,
        file: usize,
        body: &SetExpr,
        pos: Pos,
        ctes: &Ctes,
    ) -> Result<Rel, SqlError> {
        match body {
            SetExpr::Select(select) => self.select(file, select, pos, ctes),
            SetExpr::Query(q) => self.query(file, q, pos, ctes),
            SetExpr::SetOperation {
                left,
                op: SetOperator::Union,
                set_quantifier: SetQuantifier::All,
                right,
            } => {
                let l = self.set_expr(file, left, pos, ctes)?;
                let r = self.set_expr(file, right, pos, ctes)?;
                if l.columns.len() != r.columns.len() {
                    return Err(self.err(
                        pos,
                        "the two sides of UNION ALL have different numbers of columns",
                    ));
                }
                // The left side names the columns, as in Flink.
                let r = self.rename(r, &l.columns);
                let input = self.emitter.operator(
                    "union",
                    "union",
                    &[("inputs", list(&[l.input.clone(), r.input]))],
                );
                Ok(Rel {
                    input,
                    columns: l.columns,
                    alias: None,
                    time: None,
                    window: None,
                })
            }
            SetExpr::SetOperation { op, .. } => Err(self
                .err(pos, format!("{op} without ALL is not supported"))
                .help("UNION ALL is; for UNION, deduplicate with GROUP BY over the UNION ALL")),
            _ => Err(self.err(pos, "only SELECT and UNION ALL make rows here")),
        }
    }

    /// `rel` with its columns renamed (a select, unless the names already match).
    fn rename(&mut self, rel: Rel, names: &[String]) -> Rel {
        if rel.columns == names {
            return rel;
        }
        let items: Vec<String> = rel
            .columns
            .iter()
            .zip(names)
            .map(|(c, n)| named(&column(c), n))
            .collect();
        let input = self.emitter.operator(
            "renamed",
            "select",
            &[("input", quote(&rel.input)), ("columns", list(&items))],
        );
        let time = rel
            .time
            .as_ref()
            .and_then(|t| rel.columns.iter().position(|c| c == t))
            .map(|i| names[i].clone());
        let renamed = |c: &String| {
            rel.columns
                .iter()
                .position(|x| x == c)
                .map(|i| names[i].clone())
        };
        let window = match &rel.window {
            Some(Windowed::Bounds { start, end }) => match (renamed(start), renamed(end)) {
                (Some(start), Some(end)) => Some(Windowed::Bounds { start, end }),
                _ => None,
            },
            other => other.clone(),
        };
        Rel {
            input,
            columns: names.to_vec(),
            alias: None,
            time,
            window,
        }
    }

    fn read_from(
        &mut self,
        file: usize,
        from: &[TableWithJoins],
        pos: Pos,
        ctes: &Ctes,
    ) -> Result<From, SqlError> {
        let mut left_join = false;
        let (first, second, on) = match from {
            [item] if item.joins.is_empty() => return self.factor(file, &item.relation, pos, ctes),
            [item] => {
                let [join] = item.joins.as_slice() else {
                    return Err(
                        self.err(pos, "joins of more than two inputs are not supported yet")
                    );
                };
                let at = self.pos(file, &join.relation, pos);
                let versioned = matches!(
                    &join.relation,
                    TableFactor::Table {
                        version: Some(sql::TableVersion::ForSystemTimeAsOf(_)),
                        ..
                    }
                );
                let constraint = match &join.join_operator {
                    sql::JoinOperator::Join(c) | sql::JoinOperator::Inner(c) => c,
                    sql::JoinOperator::Left(c) | sql::JoinOperator::LeftOuter(c) if versioned => {
                        left_join = true;
                        c
                    }
                    other => {
                        return Err(self
                            .err(at, format!("`{}` is not supported yet", join_name(other)))
                            .help("inner joins (JOIN .. ON, or a comma and WHERE) are, and LEFT JOIN .. FOR SYSTEM_TIME AS OF"))
                    }
                };
                let on = match constraint {
                    sql::JoinConstraint::On(e) => {
                        let mut v = Vec::new();
                        split_and(e, &mut v);
                        v.into_iter().cloned().collect()
                    }
                    sql::JoinConstraint::None => Vec::new(),
                    _ => {
                        return Err(self.err(
                            at,
                            "JOIN .. USING and NATURAL JOIN are not supported; write ON",
                        ))
                    }
                };
                (&item.relation, &join.relation, on)
            }
            [a, b] if a.joins.is_empty() && b.joins.is_empty() => {
                (&a.relation, &b.relation, Vec::new())
            }
            _ => return Err(self.err(pos, "joins of more than two inputs are not supported yet")),
        };
        // The versioned side of a temporal join is read as the table it names.
        let mut temporal = None;
        let mut second = second.clone();
        if let TableFactor::Table { version, .. } = &mut second {
            match version.take() {
                Some(sql::TableVersion::ForSystemTimeAsOf(e)) => temporal = Some((e, left_join)),
                Some(other) => {
                    return Err(self.err(
                        pos,
                        format!(
                            "`{other}` is not supported; write FOR SYSTEM_TIME AS OF left.time"
                        ),
                    ))
                }
                None => {}
            }
        }
        let mut sides = Vec::new();
        for f in [first, &second] {
            let at = self.pos(file, f, pos);
            match self.factor(file, f, pos, ctes)? {
                From::Rel(r) => sides.push(r),
                _ => return Err(self.err(
                    at,
                    "join a view of the Nexmark table (person, auction, bid), not the table itself",
                )),
            }
        }
        let aliases: Vec<String> = sides
            .iter()
            .enumerate()
            .map(|(i, r)| r.alias.clone().unwrap_or_else(|| ["L", "R"][i].to_string()))
            .collect();
        if aliases[0].eq_ignore_ascii_case(&aliases[1]) {
            return Err(self
                .err(
                    pos,
                    format!("both sides of the join are called `{}`", aliases[0]),
                )
                .help("give them different aliases: FROM t AS a JOIN t AS b ON .."));
        }
        let [l, r] = <[Rel; 2]>::try_from(sides).expect("two sides");
        let [la, ra] = <[String; 2]>::try_from(aliases).expect("two aliases");
        Ok(From::Join(Box::new(JoinPlan {
            sides: [l, r],
            aliases: [la, ra],
            on,
            temporal,
        })))
    }

    /// A join's SELECT: conditions of one side become a filter before the join, the others its
    /// `on`; the join computes the SELECT list itself, or passes on the columns a GROUP BY over it
    /// uses.
    fn join_select(
        &mut self,
        file: usize,
        select: &Select,
        pos: Pos,
        mut plan: JoinPlan,
        conjuncts: Vec<&Expr>,
    ) -> Result<Rel, SqlError> {
        let mut on = Vec::new();
        let mut pushed: [Vec<Ast>; 2] = [Vec::new(), Vec::new()];
        let on_exprs = std::mem::take(&mut plan.on);
        for c in on_exprs.iter().chain(conjuncts.iter().copied()) {
            let ast = self.convert(file, c, pos, &Scope::Join(&plan))?;
            if ast.contains_aggregate() {
                return Err(self.err(
                    self.pos(file, c, pos),
                    format!("an aggregate in a join condition (`{ast}`)"),
                ));
            }
            let used = qualifiers(&ast);
            match (
                used.contains(&plan.aliases[0]),
                used.contains(&plan.aliases[1]),
            ) {
                // Filtering the versions of a temporal join would change which one is in
                // force, and the outer side of a LEFT JOIN keeps its rows: those conditions
                // stay in the join.
                (true, false) if plan.temporal.as_ref().is_none_or(|(_, left)| !left) => {
                    pushed[0].push(unqualified(&ast))
                }
                (false, true) if plan.temporal.is_none() => pushed[1].push(unqualified(&ast)),
                _ => on.push(ast),
            }
        }
        if on.is_empty() {
            return Err(self
                .err(pos, "a join needs a condition relating its two sides")
                .help("e.g. ON A.id = B.auction; cross joins are not supported"));
        }
        for (side, filters) in pushed.iter().enumerate() {
            if !filters.is_empty() {
                let input = plan.sides[side].input.clone();
                plan.sides[side].input = self.filter("filter", &input, filters);
            }
        }
        let scope = Scope::Join(&plan);
        let side_columns = |side: usize| -> Vec<(Ast, String)> {
            plan.sides[side]
                .columns
                .iter()
                .map(|c| {
                    let ast = Ast::new(
                        AstKind::Column {
                            qualifier: Some(plan.aliases[side].clone()),
                            name: c.clone(),
                        },
                        0..0,
                    );
                    (ast, c.clone())
                })
                .collect()
        };
        let star = |q: Option<&str>| match q {
            None => Some([side_columns(0), side_columns(1)].concat()),
            Some(q) => plan
                .aliases
                .iter()
                .position(|a| a.eq_ignore_ascii_case(q))
                .map(side_columns),
        };
        let items = self.items(file, select, pos, &scope, &star)?;
        let grouped = match &select.group_by {
            GroupByExpr::Expressions(g, m) if m.is_empty() => g,
            _ => return Err(self.err(pos, "GROUP BY ALL and GROUP BY modifiers are not supported")),
        };
        let aggregating = !grouped.is_empty() || items.iter().any(|(a, _)| a.contains_aggregate());
        // A bound between the two sides' time attributes (`b.t BETWEEN a.t - INTERVAL .. AND
        // a.t + INTERVAL ..`): an interval join, whose state ends with the bound.
        let interval = match (&plan.temporal, &plan.sides[0].time, &plan.sides[1].time) {
            (None, Some(lt), Some(rt)) => {
                let (lt, rt) = (lt.clone(), rt.clone());
                interval_bounds(&on, (&plan.aliases[0], &lt), (&plan.aliases[1], &rt))
                    // Something beside the bound must relate the sides (an equality).
                    .filter(|(_, _, used)| used.len() < on.len())
                    .map(|(lower, upper, used)| {
                        let mut i = 0;
                        on.retain(|_| {
                            i += 1;
                            !used.contains(&(i - 1))
                        });
                        (lt, rt, (lower, upper))
                    })
            }
            _ => None,
        };
        // Both sides windowed and joined on both bounds: a window join, whose state ends with
        // each window.
        let window_ends = match (&plan.sides[0].window, &plan.sides[1].window) {
            (
                Some(Windowed::Bounds { start: ls, end: le }),
                Some(Windowed::Bounds { start: rs, end: re }),
            ) => {
                let equal = |a: &str, b: &str| {
                    on.iter()
                        .any(|c| equates(c, (&plan.aliases[0], a), (&plan.aliases[1], b)))
                };
                (equal(ls, rs) && equal(le, re)).then(|| (le.clone(), re.clone()))
            }
            _ => None,
        };
        let on_text: Vec<String> = on.iter().map(paren).collect();
        let mut fields = vec![
            (
                "left",
                quote(&format!(
                    "{} AS {}",
                    plan.sides[0].input,
                    column(&plan.aliases[0])
                )),
            ),
            (
                "right",
                quote(&format!(
                    "{} AS {}",
                    plan.sides[1].input,
                    column(&plan.aliases[1])
                )),
            ),
            ("on", quote(&on_text.join(" AND "))),
        ];
        // An event-time temporal join: the left side's time, the versions' time attribute.
        let temporal = plan.temporal.is_some();
        if let Some((left_time, right_time, (lower, upper))) = &interval {
            fields.push(("left_time", quote(left_time)));
            fields.push(("right_time", quote(right_time)));
            fields.push(("lower", quote(&format!("{lower}ms"))));
            fields.push(("upper", quote(&format!("{upper}ms"))));
        }
        if let Some((time, left)) = &plan.temporal {
            let left_time =
                match self.convert(file, time, pos, &scope)?.kind {
                    AstKind::Column {
                        qualifier: Some(q),
                        name,
                    } if q == plan.aliases[0] => name,
                    _ => return Err(self
                        .err(
                            self.pos(file, time, pos),
                            format!(
                                "FOR SYSTEM_TIME AS OF `{time}` is not a column of `{}`",
                                plan.aliases[0]
                            ),
                        )
                        .help(
                            "write FOR SYSTEM_TIME AS OF left.time, the left side's time attribute",
                        )),
                };
            let Some(right_time) = plan.sides[1].time.clone() else {
                return Err(self
                    .err(
                        pos,
                        format!(
                            "`{}` has no time attribute to version it by",
                            plan.aliases[1]
                        ),
                    )
                    .help("declare one with WATERMARK FOR in its CREATE TABLE"));
            };
            fields.push(("left_time", quote(&left_time)));
            fields.push(("right_time", quote(&right_time)));
            fields.push(("join_type", quote(if *left { "left" } else { "inner" })));
        }
        let kind = if temporal {
            "temporal_join"
        } else if interval.is_some() {
            "interval_join"
        } else {
            "join"
        };
        if !aggregating {
            if select.having.is_some() {
                return Err(self.err(pos, "HAVING without GROUP BY or aggregates"));
            }
            let columns: Vec<String> = items.iter().map(|(a, n)| named(a, n)).collect();
            fields.push(("columns", list(&columns)));
            let kind = match &window_ends {
                Some((l, r)) if kind == "join" => {
                    if l != "window_end" {
                        fields.push(("left_window_end", quote(l)));
                    }
                    if r != "window_end" {
                        fields.push(("right_window_end", quote(r)));
                    }
                    "window_join"
                }
                _ => kind,
            };
            let input = self.emitter.operator("join", kind, &fields);
            return Ok(Rel {
                input,
                columns: items.into_iter().map(|(_, n)| n).collect(),
                alias: None,
                time: None,
                window: None,
            });
        }
        // GROUP BY over the join: the join passes on the columns used, named as written where
        // that is unique.
        let keys = grouped
            .iter()
            .map(|g| self.convert(file, g, pos, &scope))
            .collect::<Result<Vec<_>, _>>()?;
        let having = match &select.having {
            Some(h) => Some(self.convert(file, h, pos, &scope)?),
            None => None,
        };
        let mut used: Vec<(String, String)> = Vec::new();
        for a in keys
            .iter()
            .chain(items.iter().map(|(a, _)| a))
            .chain(having.iter())
        {
            collect_columns(a, &mut used);
        }
        let names = unique_names(used.iter().map(|(_, n)| n.clone()).collect());
        let columns: Vec<String> = used
            .iter()
            .zip(&names)
            .map(|((q, n), out)| {
                let col = Ast::new(
                    AstKind::Column {
                        qualifier: Some(q.clone()),
                        name: n.clone(),
                    },
                    0..0,
                );
                named(&col, out)
            })
            .collect();
        fields.push(("columns", list(&columns)));
        let input = self.emitter.operator("join", kind, &fields);
        let rename = |a: &Ast| rename_columns(a, &used, &names);
        let keys: Vec<Ast> = keys.iter().map(rename).collect();
        let items: Vec<(Ast, String)> = items.iter().map(|(a, n)| (rename(a), n.clone())).collect();
        let having = having.as_ref().map(rename);
        self.aggregate(pos, input, keys, None, items, having)
    }

    fn factor(
        &mut self,
        file: usize,
        factor: &TableFactor,
        pos: Pos,
        ctes: &Ctes,
    ) -> Result<From, SqlError> {
        let at = self.pos(file, factor, pos);
        match factor {
            TableFactor::Table {
                name,
                alias,
                args: None,
                version: None,
                ..
            } => {
                let alias = alias.as_ref().map(|a| a.name.value.clone());
                self.table_or_view(&crate::script::name_of(name), alias, at, ctes)
            }
            TableFactor::TableFunction {
                expr: Expr::Function(f),
                alias,
            } => self.window_function(
                file,
                f,
                alias.as_ref().map(|a| a.name.value.clone()),
                at,
                ctes,
            ),
            TableFactor::Derived {
                lateral: false,
                subquery,
                alias,
                ..
            } => {
                let mut rel = self.query(file, subquery, at, ctes)?;
                rel.alias = alias.as_ref().map(|a| a.name.value.clone());
                if let Some(a) = alias.as_ref().filter(|a| !a.columns.is_empty()) {
                    let names: Vec<String> =
                        a.columns.iter().map(|c| c.name.value.clone()).collect();
                    if names.len() != rel.columns.len() {
                        return Err(self.err(at, "the alias names a different number of columns"));
                    }
                    let alias = rel.alias.clone();
                    rel = self.rename(rel, &names);
                    rel.alias = alias;
                }
                Ok(From::Rel(rel))
            }
            TableFactor::Table { args: Some(_), .. }
            | TableFactor::TableFunction { .. }
            | TableFactor::Function { .. } => Err(self
                .err(at, format!("`{factor}` is not supported in FROM"))
                .help("the table functions are TABLE(TUMBLE(..)) and TABLE(HOP(..))")),
            _ => Err(self.err(at, format!("`{factor}` is not supported in FROM"))),
        }
    }

    /// A table or view by name (what it is called in the query: `alias`, else its name).
    fn table_or_view(
        &mut self,
        name: &str,
        alias: Option<String>,
        at: Pos,
        ctes: &Ctes,
    ) -> Result<From, SqlError> {
        let key = lower(name);
        let alias = alias.or_else(|| {
            Some(
                name.rsplit('.')
                    .next()
                    .unwrap_or(name)
                    .trim_matches('`')
                    .to_string(),
            )
        });
        let from = if let Some(view) = ctes.get(&key).or_else(|| self.views.get(&key)).cloned() {
            if self.expanding.iter().any(|v| Rc::ptr_eq(v, &view)) {
                return Err(self
                    .err(at, format!("`{name}` refers to itself"))
                    .help("a view reads tables and views defined before it"));
            }
            self.expanding.push(Rc::clone(&view));
            let rel = self.query(view.pos.file, &view.query, view.pos, &view.visible);
            self.expanding.pop();
            let mut rel = rel?;
            if !view.columns.is_empty() {
                if view.columns.len() != rel.columns.len() {
                    return Err(self.err(
                        view.pos,
                        format!(
                            "`{name}` names {} columns and its query gives {}",
                            view.columns.len(),
                            rel.columns.len()
                        ),
                    ));
                }
                rel = self.rename(rel, &view.columns);
            }
            From::Rel(rel)
        } else if let Some(table) = self.tables.get(&key).cloned() {
            match self.read.get(&key) {
                Some(read) => read.clone(),
                None => {
                    let read = self.source(&table)?;
                    self.read.insert(key, read.clone());
                    read
                }
            }
        } else {
            return Err(self
                .err(at, format!("no table or view `{name}`"))
                .help("declare it with CREATE TABLE or CREATE VIEW before the query"));
        };
        Ok(match from {
            From::Rel(mut r) => {
                r.alias = alias;
                From::Rel(r)
            }
            n => n,
        })
    }

    /// `TABLE(TUMBLE(TABLE t, DESCRIPTOR(time), size))` and `HOP(.., slide, size)`: the rows of
    /// `t` with the window columns, which a GROUP BY on `window_start, window_end` aggregates.
    fn window_function(
        &mut self,
        file: usize,
        f: &sql::Function,
        alias: Option<String>,
        at: Pos,
        ctes: &Ctes,
    ) -> Result<From, SqlError> {
        let kind = f.name.to_string().to_ascii_lowercase();
        let usage = match kind.as_str() {
            "tumble" => "TUMBLE(TABLE t, DESCRIPTOR(time), INTERVAL '10' SECOND)",
            "hop" => "HOP(TABLE t, DESCRIPTOR(time), INTERVAL '2' SECOND, INTERVAL '10' SECOND) (slide, then size)",
            "cumulate" => {
                return Err(self
                    .err(at, "CUMULATE windows are not supported yet")
                    .help("TUMBLE and HOP are"))
            }
            _ => {
                return Err(self
                    .err(at, format!("the table function `{}` is not supported", f.name))
                    .help("the window table functions are TUMBLE and HOP"))
            }
        };
        let bad = || self.err(at, format!("write {usage}"));
        let args: Vec<&Expr> = match &f.args {
            sql::FunctionArguments::List(list) => list
                .args
                .iter()
                .map(|a| match a {
                    sql::FunctionArg::Unnamed(sql::FunctionArgExpr::Expr(x)) => Some(x),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(bad)?,
            _ => return Err(bad()),
        };
        let single = |e: &Expr, wrapper: &str| match e {
            Expr::Function(g) if g.name.to_string().eq_ignore_ascii_case(wrapper) => {
                match crate::expr::plain_args(g).as_slice() {
                    [Expr::Identifier(i)] => Some(i.value.clone()),
                    [Expr::CompoundIdentifier(p)] => Some(
                        p.iter()
                            .map(|i| i.value.as_str())
                            .collect::<Vec<_>>()
                            .join("."),
                    ),
                    _ => None,
                }
            }
            _ => None,
        };
        let want = if kind == "hop" { 4 } else { 3 };
        if args.len() != want {
            return Err(bad());
        }
        let table = single(args[0], crate::dialect::TABLE_ARGUMENT).ok_or_else(bad)?;
        let time = single(args[1], "DESCRIPTOR").ok_or_else(bad)?;
        let mut intervals = Vec::new();
        for a in &args[2..] {
            match parse_expr(&a.to_string()).map(|x| x.kind) {
                Ok(AstKind::Interval(ms)) if ms > 0 => intervals.push(ms),
                _ => {
                    return Err(self.err(
                        self.pos(file, *a, at),
                        format!("`{a}` is not a positive interval"),
                    ))
                }
            }
        }
        let From::Rel(mut rel) = self.table_or_view(&table, alias, at, ctes)? else {
            return Err(self.err(
                at,
                "window a view of the Nexmark table (person, auction, bid), not the table itself",
            ));
        };
        if !rel
            .time
            .as_ref()
            .is_some_and(|t| t.eq_ignore_ascii_case(&time))
        {
            return Err(self
                .err(
                    at,
                    format!("DESCRIPTOR(`{time}`) is not the time attribute of `{table}`"),
                )
                .help(match &rel.time {
                    Some(t) => format!("its time attribute is `{t}`"),
                    None => "declare one with WATERMARK FOR in its CREATE TABLE".to_string(),
                }));
        }
        let time = rel.time.clone().unwrap_or(time);
        let kind = if kind == "hop" { "hop" } else { "tumble" };
        rel.columns
            .extend(["window_start", "window_end", "window_time"].map(String::from));
        rel.window = Some(Windowed::Assigned(Window {
            kind,
            toml: window_toml(kind, &time, &intervals),
            bounds: None,
            args: Vec::new(),
        }));
        Ok(From::Rel(rel))
    }

    fn select(
        &mut self,
        file: usize,
        select: &Select,
        fallback: Pos,
        ctes: &Ctes,
    ) -> Result<Rel, SqlError> {
        let pos = Pos::of(file, select.select_token.0.span, fallback);
        let distinct = match &select.distinct {
            None | Some(sql::Distinct::All) => false,
            Some(sql::Distinct::Distinct) => true,
            Some(_) => return Err(self.err(pos, "SELECT DISTINCT ON is not supported")),
        };
        if let Some(rel) = self.ranked(file, select, pos, ctes)? {
            return Ok(rel);
        }
        let from = self.read_from(file, &select.from, pos, ctes)?;
        let mut conjuncts: Vec<&Expr> = Vec::new();
        if let Some(w) = &select.selection {
            split_and(w, &mut conjuncts);
        }
        // The raw Nexmark table: the event type picks the port.
        let (rel, nexmark) = match from {
            From::Join(plan) => return self.join_select(file, select, pos, *plan, conjuncts),
            From::Rel(rel) => (rel, None),
            From::Nexmark(raw) => {
                let Some(i) = conjuncts.iter().position(|c| event_type_of(c).is_some()) else {
                    return Err(self
                        .err(pos, "a query of the Nexmark table must pick an event type with `WHERE event_type = 0`, `1` or `2`")
                        .help("or read the views person, auction and bid of the benchmark's DDL"));
                };
                let table = event_type_of(conjuncts.remove(i)).unwrap_or(NexmarkTable::Bid);
                let rel = Rel {
                    input: format!("{}.{}", raw.source, table.name()),
                    columns: table
                        .schema()
                        .fields
                        .iter()
                        .map(|f| f.name.to_string())
                        .collect(),
                    alias: None,
                    time: Some(table.schema().fields[table.time_column()].name.to_string()),
                    window: None,
                };
                (rel, Some(table))
            }
        };
        let scope = match nexmark {
            Some(t) => Scope::Nexmark(t),
            None => Scope::One(&rel),
        };
        let mut input = rel.input.clone();
        if !conjuncts.is_empty() {
            let asts = conjuncts
                .iter()
                .map(|c| self.convert(file, c, pos, &scope))
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(a) = asts.iter().find(|a| a.contains_aggregate()) {
                return Err(self
                    .err(pos, format!("an aggregate in WHERE (`{a}`)"))
                    .help("filter groups with HAVING"));
            }
            if matches!(rel.window, Some(Windowed::Assigned(_))) && asts.iter().any(mentions_window)
            {
                return Err(self
                    .err(pos, "the window columns of a window table function exist once GROUP BY window_start, window_end aggregates its rows")
                    .help("filter on them after the aggregation (in an outer query or HAVING)"));
            }
            input = self.filter("filter", &input, &asts);
        }
        let items = self.items(file, select, pos, &scope, &all_columns(&rel))?;
        let grouped = match &select.group_by {
            GroupByExpr::Expressions(g, m) if m.is_empty() => g,
            _ => return Err(self.err(pos, "GROUP BY ALL and GROUP BY modifiers are not supported")),
        };
        if distinct {
            // SELECT DISTINCT: the selected values are the group, with no aggregate.
            if !grouped.is_empty() || items.iter().any(|(a, _)| a.contains_aggregate()) {
                return Err(self
                    .err(
                        pos,
                        "SELECT DISTINCT with GROUP BY or aggregates is not supported",
                    )
                    .help("drop DISTINCT: a GROUP BY gives each group once"));
            }
            let keys = items.iter().map(|(a, _)| a.clone()).collect();
            return self.aggregate(pos, input, keys, None, items, None);
        }
        if !grouped.is_empty() || items.iter().any(|(a, _)| a.contains_aggregate()) {
            let mut keys = Vec::new();
            let mut window = None;
            for g in grouped {
                let key = self.convert(file, g, pos, &scope)?;
                match group_window(&key) {
                    Some(_) if window.is_some() => {
                        return Err(self.err(self.pos(file, g, pos), "GROUP BY has two windows"));
                    }
                    Some(w) => window = Some(w.map_err(|m| self.err(self.pos(file, g, pos), m))?),
                    None => keys.push(key),
                }
            }
            // GROUP BY the bounds of a window table function or of windows computed before.
            let bounds = match &rel.window {
                Some(Windowed::Assigned(w)) => Some((
                    Some(w.clone()),
                    "window_start".to_string(),
                    "window_end".to_string(),
                )),
                Some(Windowed::Bounds { start, end }) => Some((None, start.clone(), end.clone())),
                None => None,
            };
            if let Some((assigned, start, end)) = bounds {
                let position = |name: &str| {
                    keys.iter()
                        .position(|k| k.as_column() == Some((None, name)))
                };
                match (position(&start), position(&end)) {
                    (Some(_), Some(_)) if window.is_none() => {
                        keys.retain(|k| {
                            let c = k.as_column();
                            c != Some((None, start.as_str())) && c != Some((None, end.as_str()))
                        });
                        let mut w = assigned.unwrap_or_else(|| Window {
                            kind: "inherit",
                            toml: format!(
                                "{{ type = \"inherit\", start = {}, end = {} }}",
                                quote(&start),
                                quote(&end)
                            ),
                            bounds: None,
                            args: Vec::new(),
                        });
                        w.bounds = Some((start, end));
                        window = Some(w);
                    }
                    _ if matches!(rel.window, Some(Windowed::Assigned(_))) => {
                        return Err(self
                            .err(pos, "the rows of a window table function are grouped by `window_start, window_end`")
                            .help("add window_start and window_end to GROUP BY"))
                    }
                    _ => {}
                }
            }
            let having = match &select.having {
                Some(h) => Some(self.convert(file, h, pos, &scope)?),
                None => None,
            };
            return self.aggregate(pos, input, keys, window, items, having);
        }
        if select.having.is_some() {
            return Err(self.err(pos, "HAVING without GROUP BY or aggregates"));
        }
        self.project(pos, input, &rel, items)
    }

    /// `SELECT .. FROM (SELECT .., ROW_NUMBER() OVER (PARTITION BY p ORDER BY o) AS rn FROM ..)
    /// WHERE rn <= N`: Flink's Top-N, or its deduplication when N is 1, the order is the time
    /// attribute alone and the rank is not selected. `None` when `select` is not of that shape.
    fn ranked(
        &mut self,
        file: usize,
        select: &Select,
        pos: Pos,
        ctes: &Ctes,
    ) -> Result<Option<Rel>, SqlError> {
        let [TableWithJoins {
            relation:
                TableFactor::Derived {
                    lateral: false,
                    subquery,
                    alias,
                    ..
                },
            joins,
        }] = select.from.as_slice()
        else {
            return Ok(None);
        };
        let SetExpr::Select(inner) = &*subquery.body else {
            return Ok(None);
        };
        let Some((k, call, rn)) =
            inner
                .projection
                .iter()
                .enumerate()
                .find_map(|(i, item)| match item {
                    SelectItem::ExprWithAlias {
                        expr: e @ Expr::Function(f),
                        alias,
                    } if f.over.is_some() => Some((i, e, alias.value.clone())),
                    _ => None,
                })
        else {
            return Ok(None);
        };
        let at = self.pos(file, call, pos);
        let Expr::Function(f) = call else {
            return Ok(None);
        };
        if !joins.is_empty() {
            return Err(self.err(at, "a ranked subquery cannot be joined yet"));
        }
        if subquery.with.is_some()
            || subquery.order_by.is_some()
            || subquery.limit_clause.is_some()
            || alias.as_ref().is_some_and(|a| !a.columns.is_empty())
        {
            return Err(self.err(
                at,
                "a ranked subquery takes no WITH, ORDER BY, LIMIT or column list",
            ));
        }
        let name = f.name.to_string();
        let Some(sql::WindowType::WindowSpec(spec)) = &f.over else {
            return Err(self.err(at, "named windows are not supported"));
        };
        if !name.eq_ignore_ascii_case("row_number") {
            return Err(self
                .err(at, format!("{name}() OVER is not supported"))
                .help("ROW_NUMBER() OVER (PARTITION BY .. ORDER BY ..) filtered with WHERE rn <= N is (Top-N and deduplication)"));
        }
        if spec.window_frame.is_some() || spec.order_by.is_empty() {
            return Err(self.err(at, "ROW_NUMBER() OVER needs ORDER BY and takes no frame"));
        }
        let mut rest = (**inner).clone();
        rest.projection.remove(k);
        let base = self.select(file, &rest, pos, ctes)?;
        // PARTITION BY and ORDER BY name columns of the subquery: an item that is the same
        // expression, or a column it passes on under its own name (`*`, `A.*`).
        let normal = |e: &Expr| e.to_string().replace('`', "").to_ascii_lowercase();
        let column_of = |e: &Expr| -> Result<String, SqlError> {
            for (i, item) in rest.projection.iter().enumerate() {
                let (x, name) = match item {
                    SelectItem::UnnamedExpr(x) => (x, default_name(x, i)),
                    SelectItem::ExprWithAlias { expr, alias } => (expr, alias.value.clone()),
                    _ => continue,
                };
                if normal(x) == normal(e) {
                    return Ok(name);
                }
            }
            // Only `*` and `A.*` pass columns on under their own names.
            let wildcard = rest.projection.iter().any(|item| {
                matches!(
                    item,
                    SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
                )
            });
            let last = match e {
                Expr::Identifier(i) if wildcard => Some(&i.value),
                Expr::CompoundIdentifier(parts) if wildcard => parts.last().map(|i| &i.value),
                _ => None,
            };
            let found: Vec<&String> = base
                .columns
                .iter()
                .filter(|c| last.is_some_and(|l| c.eq_ignore_ascii_case(l)))
                .collect();
            match found.as_slice() {
                [one] => Ok((*one).clone()),
                _ => Err(self
                    .err(
                        self.pos(file, e, at),
                        format!("`{e}` is not a column of the ranked subquery"),
                    )
                    .help("PARTITION BY and ORDER BY take columns the subquery selects")),
            }
        };
        let partition = spec
            .partition_by
            .iter()
            .map(&column_of)
            .collect::<Result<Vec<_>, _>>()?;
        let mut order = Vec::new();
        for o in &spec.order_by {
            let desc = match o.options.sort {
                None | Some(sql::OrderBySort::Asc) => false,
                Some(sql::OrderBySort::Desc) => true,
                Some(_) => return Err(self.err(at, "ORDER BY .. USING is not supported")),
            };
            order.push((column_of(&o.expr)?, desc));
        }
        // The outer WHERE: the rank's bound, and what else it filters on.
        let mut conjuncts: Vec<&Expr> = Vec::new();
        if let Some(w) = &select.selection {
            split_and(w, &mut conjuncts);
        }
        let Some(i) = conjuncts.iter().position(|c| rank_bound(c, &rn).is_some()) else {
            return Err(self
                .err(pos, format!("the rank `{rn}` needs a bound in WHERE"))
                .help(format!(
                    "e.g. WHERE {rn} <= 10 (Top-N) or WHERE {rn} = 1 (deduplication)"
                )));
        };
        let limit = rank_bound(conjuncts.remove(i), &rn).unwrap_or(1);
        if limit < 1 {
            return Err(self.err(pos, format!("`{rn}` bounded below 1 keeps no rows")));
        }
        let mut ranked = Rel {
            input: base.input.clone(),
            columns: base.columns.iter().cloned().chain([rn.clone()]).collect(),
            alias: alias.as_ref().map(|a| a.name.value.clone()),
            time: base.time.clone(),
            window: None,
        };
        let scope = Scope::One(&ranked);
        let filters = conjuncts
            .iter()
            .map(|c| self.convert(file, c, pos, &scope))
            .collect::<Result<Vec<_>, _>>()?;
        let items = self.items(file, select, pos, &scope, &all_columns(&ranked))?;
        if !matches!(&select.group_by, GroupByExpr::Expressions(g, _) if g.is_empty())
            || select.having.is_some()
        {
            return Err(self.err(pos, "GROUP BY over a ranked subquery is not supported yet"));
        }
        let uses_rank = items
            .iter()
            .map(|(a, _)| a)
            .chain(&filters)
            .any(|a| mentions(a, &rn));
        let dedup = limit == 1
            && !uses_rank
            && !partition.is_empty()
            && order.len() == 1
            && base.time.as_deref() == Some(order[0].0.as_str());
        let input = if dedup {
            ranked.columns.pop();
            self.emitter.operator(
                "deduplicate",
                "deduplicate",
                &[
                    ("input", quote(&base.input)),
                    ("key", list(&quoted(&partition))),
                    ("time", quote(&column(&order[0].0).to_string())),
                    ("keep", quote(if order[0].1 { "last" } else { "first" })),
                ],
            )
        } else {
            let mut order_by: Vec<String> = order
                .iter()
                .map(|(c, desc)| format!("{} {}", column(c), if *desc { "DESC" } else { "ASC" }))
                .collect();
            // Flink ranks ties in arrival order; on an append-only stream in event time that is
            // the time attribute ascending, which makes the answer the same at any parallelism.
            if let Some(t) = base
                .time
                .as_ref()
                .filter(|t| order.iter().all(|(c, _)| c != *t))
            {
                order_by.push(format!("{} ASC", column(t)));
            }
            let mut fields = vec![
                ("input", quote(&base.input)),
                ("partition_by", list(&quoted(&partition))),
                ("order_by", list(&order_by)),
                ("limit", limit.to_string()),
            ];
            if uses_rank {
                fields.push(("rank_column", quote(&rn)));
            } else {
                ranked.columns.pop();
            }
            self.emitter.operator("top_n", "top_n", &fields)
        };
        let mut after = input.clone();
        if !filters.is_empty() {
            after = self.filter("filter", &after, &filters);
        }
        ranked.input = input;
        self.project(pos, after, &ranked, items).map(Some)
    }

    /// A `filter` keeping the rows of `input` that meet every condition; its name.
    fn filter(&mut self, base: &str, input: &str, conditions: &[Ast]) -> String {
        let text: Vec<String> = conditions.iter().map(paren).collect();
        self.emitter.operator(
            base,
            "filter",
            &[
                ("input", quote(input)),
                ("where", quote(&text.join(" AND "))),
            ],
        )
    }

    /// The SELECT list: each item's expression and output name.
    fn items(
        &self,
        file: usize,
        select: &Select,
        pos: Pos,
        scope: &Scope,
        star: &Star,
    ) -> Result<Vec<(Ast, String)>, SqlError> {
        let mut items = Vec::new();
        for (i, item) in select.projection.iter().enumerate() {
            match item {
                SelectItem::UnnamedExpr(e) => {
                    items.push((self.convert(file, e, pos, scope)?, default_name(e, i)))
                }
                SelectItem::ExprWithAlias { expr, alias } => {
                    items.push((self.convert(file, expr, pos, scope)?, alias.value.clone()))
                }
                SelectItem::Wildcard(_) => items.extend(star(None).unwrap_or_default()),
                SelectItem::QualifiedWildcard(
                    sql::SelectItemQualifiedWildcardKind::ObjectName(name),
                    _,
                ) => {
                    let q = crate::script::name_of(name);
                    let Some(columns) = star(Some(&q)) else {
                        return Err(self.err(pos, format!("`{q}.*`: no input is called `{q}`")));
                    };
                    items.extend(columns);
                }
                other => {
                    return Err(self.err(
                        self.pos(file, other, pos),
                        format!("`{other}` is not supported in SELECT"),
                    ))
                }
            }
        }
        let names = unique_names(items.iter().map(|(_, n)| n.clone()).collect());
        Ok(items
            .into_iter()
            .zip(names)
            .map(|((a, _), n)| (a, n))
            .collect())
    }

    fn project(
        &mut self,
        pos: Pos,
        input: String,
        rel: &Rel,
        items: Vec<(Ast, String)>,
    ) -> Result<Rel, SqlError> {
        if let Some(Windowed::Assigned(_)) = &rel.window {
            if items.iter().any(|(a, _)| mentions_window(a)) {
                return Err(self
                    .err(pos, "the window columns of a window table function exist once GROUP BY window_start, window_end aggregates its rows")
                    .help("window Top-N, joins and deduplication directly on TUMBLE/HOP are not supported yet"));
            }
        }
        let columns: Vec<String> = items.iter().map(|(_, n)| n.clone()).collect();
        let identity = items.len() == rel.columns.len()
            && items
                .iter()
                .zip(&rel.columns)
                .all(|((a, n), c)| a.as_column() == Some((None, c.as_str())) && n == c);
        if identity {
            return Ok(Rel {
                input,
                columns,
                alias: None,
                time: rel.time.clone(),
                window: rel.window.clone(),
            });
        }
        // Window bounds stay known when passed on as they are.
        let passed = |c: &str| {
            items
                .iter()
                .find(|(a, _)| a.as_column() == Some((None, c)))
                .map(|(_, n)| n.clone())
        };
        let window = match &rel.window {
            Some(Windowed::Bounds { start, end }) => match (passed(start), passed(end)) {
                (Some(start), Some(end)) => Some(Windowed::Bounds { start, end }),
                _ => None,
            },
            _ => None,
        };
        // The time attribute stays one when it is passed on as it is.
        let time = rel.time.as_ref().and_then(|t| {
            items
                .iter()
                .find(|(a, _)| a.as_column() == Some((None, t.as_str())))
                .map(|(_, n)| n.clone())
        });
        let text: Vec<String> = items.iter().map(|(a, n)| named(a, n)).collect();
        let input = self.emitter.operator(
            "select",
            "select",
            &[("input", quote(&input)), ("columns", list(&text))],
        );
        Ok(Rel {
            input,
            columns,
            alias: None,
            time,
            window,
        })
    }

    /// GROUP BY: a `group_aggregate` (keys, then aggregates), then a `select` for whatever the
    /// SELECT list computes over them, and a `filter` for HAVING.
    fn aggregate(
        &mut self,
        pos: Pos,
        input: String,
        keys: Vec<Ast>,
        window: Option<Window>,
        items: Vec<(Ast, String)>,
        having: Option<Ast>,
    ) -> Result<Rel, SqlError> {
        // Keys are named after the SELECT item that is the same expression.
        let mut key_names = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let name = items
                .iter()
                .find(|(a, _)| same(a, k))
                .map(|(_, n)| n.clone())
                .or_else(|| k.as_column().map(|(_, n)| n.to_string()))
                .unwrap_or_else(|| format!("_key{i}"));
            key_names.push(name);
        }
        let mut aggregates: Vec<(Ast, String)> = Vec::new();
        let mut rewritten = Vec::new();
        for (ast, name) in &items {
            let r = self.lift(
                ast,
                &keys,
                &key_names,
                window.as_ref(),
                &mut aggregates,
                Some(name),
                pos,
            )?;
            rewritten.push((r, name.clone()));
        }
        let having = match having {
            Some(h) => Some(self.lift(
                &h,
                &keys,
                &key_names,
                window.as_ref(),
                &mut aggregates,
                None,
                pos,
            )?),
            None => None,
        };
        let group_by: Vec<String> = keys
            .iter()
            .zip(&key_names)
            .map(|(k, n)| named(k, n))
            .collect();
        let aggs: Vec<String> = aggregates
            .iter()
            .map(|(a, n)| format!("{a} AS {}", column(n)))
            .collect();
        let mut fields = vec![("input", quote(&input))];
        if let Some(w) = &window {
            fields.push(("window", w.toml.clone()));
        }
        if !group_by.is_empty() {
            fields.push(("group_by", list(&group_by)));
        }
        fields.push(("aggregates", list(&aggs)));
        let kind = if window.is_some() {
            "window_aggregate"
        } else {
            "group_aggregate"
        };
        let out = self.emitter.operator("aggregate", kind, &fields);
        let window_columns: &[&str] = if window.is_some() {
            &["window_start", "window_end"]
        } else {
            &[]
        };
        let columns: Vec<String> = key_names
            .iter()
            .cloned()
            .chain(window_columns.iter().map(|c| c.to_string()))
            .chain(aggregates.iter().map(|(_, n)| n.clone()))
            .collect();
        let mut after = out;
        if let Some(h) = having {
            after = self.filter("having", &after, std::slice::from_ref(&h));
        }
        let rel = Rel {
            input: after.clone(),
            columns,
            alias: None,
            time: None,
            window: window.map(|_| Windowed::Bounds {
                start: "window_start".into(),
                end: "window_end".into(),
            }),
        };
        self.project(pos, after, &rel, rewritten)
    }

    /// `ast` over the aggregate's output: group keys become their key column and each aggregate
    /// call becomes a column of its own (named `preferred` when it is the whole item).
    #[allow(clippy::too_many_arguments)]
    fn lift(
        &self,
        ast: &Ast,
        keys: &[Ast],
        key_names: &[String],
        window: Option<&Window>,
        aggregates: &mut Vec<(Ast, String)>,
        preferred: Option<&str>,
        pos: Pos,
    ) -> Result<Ast, SqlError> {
        if let Some(i) = keys.iter().position(|k| same(k, ast)) {
            return Ok(column(&key_names[i]));
        }
        if let (Some(w), Some((None, name))) = (window, ast.as_column()) {
            if let Some((start, end)) = &w.bounds {
                if name == start {
                    return Ok(column("window_start"));
                }
                if name == end {
                    return Ok(column("window_end"));
                }
            }
        }
        if let AstKind::Call { name, .. } = &ast.kind {
            if let Some((kind, bound)) = name
                .rsplit_once('_')
                .filter(|(k, _)| WINDOW_FUNCTIONS.contains(k))
            {
                return match (window, bound) {
                    (Some(w), "start") if w.kind == kind && same_args(&w.args, ast) => {
                        Ok(column("window_start"))
                    }
                    (Some(w), "end") if w.kind == kind && same_args(&w.args, ast) => {
                        Ok(column("window_end"))
                    }
                    _ => Err(self
                        .err(pos, format!("`{ast}` needs GROUP BY {}(..) with the same arguments", kind.to_uppercase()))
                        .help("the window bounds are TUMBLE_START/END, HOP_START/END and SESSION_START/END")),
                };
            }
        }
        if ast.is_aggregate_call() {
            if let Some((_, n)) = aggregates.iter().find(|(a, _)| same(a, ast)) {
                return Ok(column(n));
            }
            let taken = |n: &str| {
                key_names
                    .iter()
                    .chain(aggregates.iter().map(|(_, n)| n))
                    .any(|k| k == n)
            };
            let name = match preferred {
                Some(p) if !taken(p) => p.to_string(),
                _ => format!("_agg{}", aggregates.len()),
            };
            aggregates.push((ast.clone(), name.clone()));
            return Ok(column(&name));
        }
        if let Some((_, name)) = ast.as_column() {
            return Err(self
                .err(pos, format!("`{name}` is neither grouped nor aggregated"))
                .help(format!(
                    "add it to GROUP BY or aggregate it, e.g. max({name})"
                )));
        }
        // Rebuild the node with its children lifted.
        let mut copy = ast.clone();
        let mut err = None;
        map_children(&mut copy, &mut |child| {
            if err.is_some() {
                return;
            }
            match self.lift(child, keys, key_names, window, aggregates, None, pos) {
                Ok(c) => *child = c,
                Err(e) => err = Some(e),
            }
        });
        match err {
            Some(e) => Err(e),
            None => Ok(copy),
        }
    }

    fn convert(
        &self,
        file: usize,
        e: &Expr,
        fallback: Pos,
        scope: &Scope,
    ) -> Result<Ast, SqlError> {
        let resolve = |parts: &[Ident], at: Pos| self.resolve(scope, parts, at);
        let functions = |name: &str| self.functions.get(name).cloned();
        let error = |at: Pos, message: String| self.err(at, message);
        let converter = Converter {
            file,
            fallback,
            resolve: &resolve,
            functions: &functions,
            error: &error,
        };
        converter.convert(e)
    }

    fn resolve(&self, scope: &Scope, parts: &[Ident], at: Pos) -> Result<Ast, SqlError> {
        let names: Vec<&str> = parts.iter().map(|p| p.value.as_str()).collect();
        let written = names.join(".");
        match scope {
            Scope::Join(plan) => {
                let side = match names.as_slice() {
                    [q, _] => plan
                        .aliases
                        .iter()
                        .position(|a| a.eq_ignore_ascii_case(q))
                        .ok_or_else(|| {
                            self.err(at, format!("`{written}`: no input is called `{q}` here"))
                                .help(format!(
                                    "the inputs are `{}` and `{}`",
                                    plan.aliases[0], plan.aliases[1]
                                ))
                        })?,
                    [name] => {
                        let has = |r: &Rel| r.columns.iter().any(|c| c.eq_ignore_ascii_case(name));
                        match (has(&plan.sides[0]), has(&plan.sides[1])) {
                            (true, false) => 0,
                            (false, true) => 1,
                            (true, true) => {
                                return Err(self
                                    .err(at, format!("`{name}` is in both inputs"))
                                    .help(format!(
                                        "write `{}.{name}` or `{}.{name}`",
                                        plan.aliases[0], plan.aliases[1]
                                    )))
                            }
                            (false, false) => {
                                return Err(self.err(at, format!("no column `{name}`")))
                            }
                        }
                    }
                    _ => {
                        return Err(self.err(
                            at,
                            format!("`{written}`: nested fields are not supported here"),
                        ))
                    }
                };
                let name = names[names.len() - 1];
                let Ast {
                    kind: AstKind::Column { name, .. },
                    ..
                } = self.resolve(
                    &Scope::One(&Rel {
                        alias: None,
                        ..plan.sides[side].clone()
                    }),
                    &parts[parts.len() - 1..],
                    at,
                )?
                else {
                    return Err(self.err(at, format!("no column `{name}`")));
                };
                Ok(Ast::new(
                    AstKind::Column {
                        qualifier: Some(plan.aliases[side].clone()),
                        name,
                    },
                    0..0,
                ))
            }
            Scope::Nexmark(table) => {
                let schema = table.schema();
                let field = match names.as_slice() {
                    [row, field] if row.eq_ignore_ascii_case(table.name()) => *field,
                    [name] if name.eq_ignore_ascii_case("dateTime") => *name,
                    [row, _] if NexmarkTable::from_name(row).is_some() => {
                        return Err(self.err(
                            at,
                            format!(
                                "`{written}`: in events of this type only `{}` is set",
                                table.name()
                            ),
                        ))
                    }
                    _ => {
                        return Err(
                            self.err(at, format!("no column `{written}` in the Nexmark table"))
                        )
                    }
                };
                let found = schema
                    .fields
                    .iter()
                    .find(|f| f.name.eq_ignore_ascii_case(field))
                    .ok_or_else(|| {
                        self.err(at, format!("`{}` has no field `{field}`", table.name()))
                    })?;
                Ok(column(&found.name))
            }
            Scope::One(rel) => {
                let name = match names.as_slice() {
                    [name] => *name,
                    [q, name]
                        if rel
                            .alias
                            .as_deref()
                            .is_some_and(|a| a.eq_ignore_ascii_case(q)) =>
                    {
                        *name
                    }
                    [q, _] => {
                        return Err(self
                            .err(at, format!("`{written}`: no input is called `{q}` here"))
                            .help(match &rel.alias {
                                Some(a) => format!("the input is `{a}`"),
                                None => "give the input an alias in FROM".to_string(),
                            }))
                    }
                    _ => {
                        return Err(self.err(
                            at,
                            format!("`{written}`: nested fields are not supported here"),
                        ))
                    }
                };
                let exact = rel.columns.iter().find(|c| *c == name);
                let found = match exact {
                    Some(c) => c,
                    None => {
                        let matches: Vec<&String> = rel
                            .columns
                            .iter()
                            .filter(|c| c.eq_ignore_ascii_case(name))
                            .collect();
                        match matches.as_slice() {
                            [one] => *one,
                            _ => {
                                return Err(self
                                    .err(at, format!("no column `{written}`"))
                                    .help(format!("the columns are: {}", rel.columns.join(", "))))
                            }
                        }
                    }
                };
                Ok(column(found))
            }
        }
    }

    /// The source a table becomes when a query first reads it.
    fn source(&mut self, table: &Located<TableDef>) -> Result<From, SqlError> {
        let t = &table.item;
        let connector = t.option("connector").unwrap_or_default();
        if let Some(nexmark) = self.nexmark_source(table, connector)? {
            return Ok(From::Nexmark(nexmark));
        }
        self.no_generated_values(table)?;
        let mut fields: Vec<(&str, String)> = Vec::new();
        match connector {
            "filesystem" => {
                self.json_format(table)?;
                fields.push(("connector", quote("file")));
                fields.push(("format", quote("json")));
                fields.push(("path", quote(self.required(table, "path")?)));
            }
            "kafka" => {
                self.json_format(table)?;
                fields.push(("connector", quote("kafka")));
                fields.push((
                    "brokers",
                    quote(self.required(table, "properties.bootstrap.servers")?),
                ));
                fields.push(("topic", quote(self.required(table, "topic")?)));
                match t.option("scan.startup.mode") {
                    None | Some("earliest-offset") => fields.push(("start", quote("earliest"))),
                    Some("latest-offset") => fields.push(("start", quote("latest"))),
                    Some(other) => {
                        return Err(self
                            .err(
                                table.pos,
                                format!("'scan.startup.mode' = '{other}' is not supported"),
                            )
                            .help("use 'earliest-offset' or 'latest-offset'"))
                    }
                }
            }
            "blackhole" | "print" => {
                return Err(self.err(
                    table.pos,
                    format!("`{}` ('{connector}') can only be written to", t.name),
                ))
            }
            other => {
                return Err(self
                    .err(
                        table.pos,
                        format!("`{}`: unknown source connector '{other}'", t.name),
                    )
                    .help("use 'filesystem' (format 'json'), 'kafka' or 'nexmark'"))
            }
        }
        let mut columns = Vec::new();
        let mut names = Vec::new();
        for c in &t.columns {
            match &c.kind {
                ColumnKind::Physical(ty) => flatten(&c.name, ty, &mut columns, &mut names)
                    .map_err(|m| self.err(c.pos, m))?,
                ColumnKind::Computed(expr) => {
                    return Err(self
                        .err(
                            c.pos,
                            format!(
                                "computed column `{} AS {expr}`: not supported on this table yet",
                                c.name
                            ),
                        )
                        .help("compute it in a view over the table"))
                }
            }
        }
        fields.push(("columns", format!("[\n    {},\n]", columns.join(",\n    "))));
        if let Some(w) = &t.watermark {
            let delay = self.watermark_delay(&w.column, &w.expr, w.pos)?;
            fields.push((
                "watermark",
                format!(
                    "{{ column = {}, delay = {} }}",
                    quote(&w.column),
                    duration(delay)
                ),
            ));
        }
        let name = self.emitter.source(&t.name, &fields);
        Ok(From::Rel(Rel {
            input: name,
            columns: names,
            alias: Some(t.name.clone()),
            time: t.watermark.as_ref().map(|w| w.column.clone()),
            window: None,
        }))
    }

    /// `WATERMARK FOR c AS c - INTERVAL ..`: the delay in milliseconds.
    fn watermark_delay(&self, column_name: &str, expr: &Expr, pos: Pos) -> Result<i64, SqlError> {
        let bad = || {
            self.err(
                pos,
                format!("WATERMARK FOR `{column_name}`: `{expr}` is not supported"),
            )
            .help(format!(
                "write `{column_name}` or `{column_name} - INTERVAL '5' SECOND`"
            ))
        };
        let is_col = |e: &Expr| matches!(e, Expr::Identifier(i) if i.value.eq_ignore_ascii_case(column_name));
        match expr {
            e if is_col(e) => Ok(0),
            Expr::BinaryOp {
                left,
                op: sql::BinaryOperator::Minus,
                right,
            } if is_col(left) => match parse_expr(&right.to_string()).map(|a| a.kind) {
                Ok(AstKind::Interval(ms)) if ms >= 0 => Ok(ms),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }

    /// Flink's Nexmark DDL table (`event_type` and the `person`, `auction` and `bid` rows, with
    /// `dateTime` computed from them) becomes Eddy's Nexmark source, whose three outputs are
    /// the three event types.
    fn nexmark_source(
        &mut self,
        table: &Located<TableDef>,
        connector: &str,
    ) -> Result<Option<NexmarkRaw>, SqlError> {
        let t = &table.item;
        let has = |n: &str| t.columns.iter().any(|c| c.name.eq_ignore_ascii_case(n));
        let shaped = has("event_type") && NexmarkTable::ALL.iter().all(|n| has(n.name()));
        if !shaped {
            return Ok(None);
        }
        for c in &t.columns {
            if let ColumnKind::Physical(sql::DataType::Struct(fields, _)) = &c.kind {
                let Some(n) = NexmarkTable::from_name(&c.name) else {
                    continue;
                };
                let schema = n.schema();
                let names: Vec<String> = fields
                    .iter()
                    .filter_map(|f| f.field_name.as_ref().map(|i| i.value.to_ascii_lowercase()))
                    .collect();
                let want: Vec<String> = schema
                    .fields
                    .iter()
                    .map(|f| f.name.to_ascii_lowercase())
                    .collect();
                if names != want {
                    return Err(self
                        .err(
                            c.pos,
                            format!("`{}` differs from the Nexmark `{}` row", c.name, n.name()),
                        )
                        .help(format!("its fields are: {}", want.join(", "))));
                }
            }
        }
        let watermark = match &t.watermark {
            Some(w) if w.column.eq_ignore_ascii_case("dateTime") => {
                Some(self.watermark_delay(&w.column, &w.expr, w.pos)?)
            }
            Some(w) => {
                return Err(self.err(w.pos, "the Nexmark table's watermark must be on `dateTime`"))
            }
            None => None,
        };
        let mut fields: Vec<(&str, String)> = match connector {
            "filesystem" => {
                self.json_format(table)?;
                vec![
                    ("connector", quote("file")),
                    ("format", quote("nexmark")),
                    ("path", quote(self.required(table, "path")?)),
                ]
            }
            "nexmark" => {
                let mut v = vec![("connector", quote("nexmark-generator"))];
                if let Some(n) = t.option("events.num") {
                    let n: u64 = n
                        .parse()
                        .map_err(|_| self.err(table.pos, "'events.num' must be a number"))?;
                    v.push(("events", n.to_string()));
                }
                if let Some(r) = t.option("first-event.rate") {
                    let r: u64 = r
                        .parse()
                        .map_err(|_| self.err(table.pos, "'first-event.rate' must be a number"))?;
                    v.push(("rate", r.to_string()));
                }
                v
            }
            other => {
                return Err(self
                    .err(
                        table.pos,
                        format!("the Nexmark table's connector '{other}' is not supported"),
                    )
                    .help("use 'filesystem' with 'format' = 'json', or 'nexmark' (the generator)"))
            }
        };
        if let Some(delay) = watermark {
            fields.push((
                "watermark",
                format!("{{ column = \"dateTime\", delay = {} }}", duration(delay)),
            ));
        }
        let source = self.emitter.source(&t.name, &fields);
        Ok(Some(NexmarkRaw { source }))
    }
}

/// The group windows of Flink's legacy syntax (`GROUP BY TUMBLE(t, size)`).
const WINDOW_FUNCTIONS: [&str; 3] = ["tumble", "hop", "session"];

/// A window of a `window_aggregate`, as the job file writes it.
#[derive(Clone, Debug)]
struct Window {
    /// `tumble`, `hop`, `session` or `inherit`.
    kind: &'static str,
    toml: String,
    /// The input's columns that stand for the window's bounds (`window_start`, `window_end`
    /// of a window table function; the bounds of inherited windows). None for the legacy
    /// group windows, whose bounds are TUMBLE_START(..) and the like.
    bounds: Option<(String, String)>,
    /// A legacy group window's arguments, which its TUMBLE_START(..) and the like must repeat.
    args: Vec<Ast>,
}

/// A duration in the job file's syntax.
fn duration(ms: i64) -> String {
    if ms % 1000 == 0 {
        quote(&format!("{}s", ms / 1000))
    } else {
        quote(&format!("{ms}ms"))
    }
}

/// `TUMBLE(t, size)`, `HOP(t, slide, size)` or `SESSION(t, gap)` in GROUP BY, if `key` is one.
fn group_window(key: &Ast) -> Option<Result<Window, String>> {
    let AstKind::Call { name, args, .. } = &key.kind else {
        return None;
    };
    let kind = *WINDOW_FUNCTIONS.iter().find(|k| *k == name)?;
    let upper = kind.to_uppercase();
    let usage = match kind {
        "tumble" => "TUMBLE(time, INTERVAL '10' SECOND)",
        "hop" => "HOP(time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) (slide, then size)",
        _ => "SESSION(time, INTERVAL '10' SECOND)",
    };
    let want = if kind == "hop" { 3 } else { 2 };
    let time = args
        .first()
        .and_then(|a| a.as_column())
        .map(|(_, n)| n.to_string());
    let intervals: Vec<i64> = args
        .iter()
        .skip(1)
        .filter_map(|a| match a.kind {
            AstKind::Interval(ms) if ms > 0 => Some(ms),
            _ => None,
        })
        .collect();
    let (Some(time), true) = (time, args.len() == want && intervals.len() == want - 1) else {
        return Some(Err(format!(
            "{upper} takes a time column and positive intervals: {usage}"
        )));
    };
    Some(Ok(Window {
        kind,
        toml: window_toml(kind, &time, &intervals),
        bounds: None,
        args: args.clone(),
    }))
}

/// A window as the job file writes it; `intervals` as SQL gives them (HOP: slide, then size).
fn window_toml(kind: &str, time: &str, intervals: &[i64]) -> String {
    let time = quote(time);
    match (kind, intervals) {
        ("hop", [slide, size, ..]) => format!(
            "{{ type = \"hop\", time = {time}, size = {}, slide = {} }}",
            duration(*size),
            duration(*slide)
        ),
        ("session", [gap, ..]) => {
            format!(
                "{{ type = \"session\", time = {time}, gap = {} }}",
                duration(*gap)
            )
        }
        (_, [size, ..]) => {
            format!(
                "{{ type = \"tumble\", time = {time}, size = {} }}",
                duration(*size)
            )
        }
        _ => String::new(),
    }
}

/// Calls `f` on each direct child of `ast`, mutably.
fn map_children(ast: &mut Ast, f: &mut dyn FnMut(&mut Ast)) {
    match &mut ast.kind {
        AstKind::Column { .. } | AstKind::Literal(_) | AstKind::Interval(_) => {}
        AstKind::Unary { expr, .. } | AstKind::IsNull { expr, .. } | AstKind::Cast { expr, .. } => {
            f(expr)
        }
        AstKind::Binary { left, right, .. } => {
            f(left);
            f(right);
        }
        AstKind::Between {
            expr, low, high, ..
        } => {
            f(expr);
            f(low);
            f(high);
        }
        AstKind::InList { expr, list, .. } => {
            f(expr);
            list.iter_mut().for_each(f);
        }
        AstKind::Like { expr, pattern, .. } => {
            f(expr);
            f(pattern);
        }
        AstKind::Case {
            operand,
            branches,
            else_,
        } => {
            if let Some(o) = operand {
                f(o);
            }
            for (w, t) in branches {
                f(w);
                f(t);
            }
            if let Some(e) = else_ {
                f(e);
            }
        }
        AstKind::Call { args, filter, .. } => {
            args.iter_mut().for_each(&mut *f);
            if let Some(x) = filter {
                f(x);
            }
        }
    }
}

/// The name of a join operator, for messages.
fn join_name(op: &sql::JoinOperator) -> &'static str {
    use sql::JoinOperator as J;
    match op {
        J::Left(_) | J::LeftOuter(_) => "LEFT JOIN",
        J::Right(_) | J::RightOuter(_) => "RIGHT JOIN",
        J::FullOuter(_) => "FULL JOIN",
        J::CrossJoin(_) => "CROSS JOIN",
        _ => "this join",
    }
}

/// `(lower, upper, conditions)`: the bounds in milliseconds of the right side's time attribute
/// minus the left's that conditions of `on` set, when they set both (`r BETWEEN l + a AND l + b`,
/// or `r >= l + a AND r <= l + b` in any arrangement), with the indexes of those conditions.
fn interval_bounds(
    on: &[Ast],
    left: (&str, &str),
    right: (&str, &str),
) -> Option<(i64, i64, Vec<usize>)> {
    // A time attribute plus a constant interval: which side (0 left, 1 right) and the offset.
    let offset = |a: &Ast| -> Option<(usize, i64)> {
        let side = |a: &Ast| match a.as_column()? {
            (Some(q), n) if (q, n) == left => Some(0),
            (Some(q), n) if (q, n) == right => Some(1),
            _ => None,
        };
        match &a.kind {
            AstKind::Column { .. } => Some((side(a)?, 0)),
            AstKind::Binary { op, left, right } => match (op, &right.kind) {
                (BinaryOp::Add, AstKind::Interval(ms)) => Some((side(left)?, *ms)),
                (BinaryOp::Sub, AstKind::Interval(ms)) => Some((side(left)?, -ms)),
                _ => None,
            },
            _ => None,
        }
    };
    // `x - y` bounded: as a bound on right - left, with `lower` telling which end it is.
    let bound = |x: &Ast, y: &Ast, lower: bool| -> Option<(bool, i64)> {
        let ((sx, cx), (sy, cy)) = (offset(x)?, offset(y)?);
        // x + .. op y + .. with x, y on different sides: (x_time - y_time) op (cy - cx).
        match (sx, sy) {
            (1, 0) => Some((lower, cy - cx)),
            (0, 1) => Some((!lower, cx - cy)),
            _ => None,
        }
    };
    let (mut lower, mut upper, mut used) = (None, None, Vec::new());
    for (i, c) in on.iter().enumerate() {
        let found: Vec<(bool, i64)> = match &c.kind {
            AstKind::Between {
                expr,
                low,
                high,
                negated: false,
            } => match (bound(expr, low, true), bound(expr, high, false)) {
                (Some(a), Some(b)) => vec![a, b],
                _ => continue,
            },
            AstKind::Binary {
                op,
                left: x,
                right: y,
            } => {
                let (is_lower, strict) = match op {
                    BinaryOp::GtEq => (true, false),
                    BinaryOp::Gt => (true, true),
                    BinaryOp::LtEq => (false, false),
                    BinaryOp::Lt => (false, true),
                    _ => continue,
                };
                // A strict bound excludes its end: a millisecond inside it.
                match bound(x, y, is_lower) {
                    Some((l, ms)) => vec![(l, ms + i64::from(strict) * if l { 1 } else { -1 })],
                    None => continue,
                }
            }
            _ => continue,
        };
        for (is_lower, ms) in found {
            let slot = if is_lower { &mut lower } else { &mut upper };
            if slot.is_some() {
                return None;
            }
            *slot = Some(ms);
        }
        used.push(i);
    }
    match (lower, upper) {
        (Some(l), Some(u)) if l <= u => Some((l, u, used)),
        _ => None,
    }
}

/// Whether `ast` is `l = r` (either way round) for the qualified columns `l` and `r`.
fn equates(ast: &Ast, l: (&str, &str), r: (&str, &str)) -> bool {
    let AstKind::Binary {
        op: BinaryOp::Eq,
        left,
        right,
    } = &ast.kind
    else {
        return false;
    };
    let is = |a: &Ast, (q, n): (&str, &str)| a.as_column() == Some((Some(q), n));
    (is(left, l) && is(right, r)) || (is(left, r) && is(right, l))
}

/// The qualifiers of the columns `ast` uses.
fn qualifiers(ast: &Ast) -> Vec<String> {
    let mut columns = Vec::new();
    collect_columns(ast, &mut columns);
    columns.into_iter().map(|(q, _)| q).collect()
}

/// The qualified columns `ast` uses, added to `out` once each, in order.
fn collect_columns(ast: &Ast, out: &mut Vec<(String, String)>) {
    if let AstKind::Column {
        qualifier: Some(q),
        name,
    } = &ast.kind
    {
        if !out.iter().any(|(a, b)| a == q && b == name) {
            out.push((q.clone(), name.clone()));
        }
    }
    ast.children()
        .into_iter()
        .for_each(|c| collect_columns(c, out));
}

/// `ast` with its qualifiers dropped (a condition pushed to one side of a join).
fn unqualified(ast: &Ast) -> Ast {
    let mut copy = ast.clone();
    if let AstKind::Column { qualifier, .. } = &mut copy.kind {
        *qualifier = None;
    }
    map_children(&mut copy, &mut |c| *c = unqualified(c));
    copy
}

/// `ast` with each qualified column of `used` replaced by its output name in `names`.
fn rename_columns(ast: &Ast, used: &[(String, String)], names: &[String]) -> Ast {
    if let AstKind::Column {
        qualifier: Some(q),
        name,
    } = &ast.kind
    {
        if let Some(i) = used.iter().position(|(a, b)| a == q && b == name) {
            return column(&names[i]);
        }
    }
    let mut copy = ast.clone();
    map_children(&mut copy, &mut |c| *c = rename_columns(c, used, names));
    copy
}

/// Names made unique as Flink makes them: a repeated `x` becomes `x0`, then `x1`.
fn unique_names(names: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        let mut candidate = name.clone();
        let mut n = 0;
        while out.iter().any(|o| o.eq_ignore_ascii_case(&candidate)) {
            candidate = format!("{name}{n}");
            n += 1;
        }
        out.push(candidate);
    }
    out
}

/// Whether the call `ast` has the arguments `args`.
fn same_args(args: &[Ast], ast: &Ast) -> bool {
    match &ast.kind {
        AstKind::Call { args: a, .. } => {
            a.len() == args.len() && a.iter().zip(args).all(|(x, y)| same(x, y))
        }
        _ => false,
    }
}

/// What `*` (`None`) and `alias.*` stand for: the items, or `None` for an unknown alias.
type Star<'a> = dyn Fn(Option<&str>) -> Option<Vec<(Ast, String)>> + 'a;

/// What `*` and `alias.*` stand for over one input: its columns.
fn all_columns(rel: &Rel) -> impl Fn(Option<&str>) -> Option<Vec<(Ast, String)>> + '_ {
    move |q| {
        let matches = q.is_none_or(|q| {
            rel.alias
                .as_deref()
                .is_some_and(|a| a.eq_ignore_ascii_case(q))
        });
        matches.then(|| rel.columns.iter().map(|c| (column(c), c.clone())).collect())
    }
}

/// Column names as expressions (quoted where they need it).
fn quoted(names: &[String]) -> Vec<String> {
    names.iter().map(|n| column(n).to_string()).collect()
}

/// Whether `ast` uses a window column of a window table function.
fn mentions_window(ast: &Ast) -> bool {
    ["window_start", "window_end", "window_time"]
        .iter()
        .any(|c| mentions(ast, c))
}

/// Whether `ast` refers to the column `name`.
fn mentions(ast: &Ast, name: &str) -> bool {
    ast.as_column().is_some_and(|(_, n)| n == name)
        || ast.children().iter().any(|c| mentions(c, name))
}

/// The largest rank that `e` keeps, when it bounds `rank` (`rank <= N`, `rank < N`, `rank = 1`).
fn rank_bound(e: &Expr, rank: &str) -> Option<i64> {
    let Expr::BinaryOp { left, op, right } = e else {
        return None;
    };
    let is_rank = |x: &Expr| match x {
        Expr::Identifier(i) => i.value.eq_ignore_ascii_case(rank),
        Expr::CompoundIdentifier(p) => p.last().is_some_and(|i| i.value.eq_ignore_ascii_case(rank)),
        _ => false,
    };
    let number = |x: &Expr| match x {
        Expr::Value(v) => match &v.value {
            sql::Value::Number(n, _) => n.parse::<i64>().ok(),
            _ => None,
        },
        _ => None,
    };
    use sql::BinaryOperator as B;
    // `N >= rank` is `rank <= N`.
    let (n, op) = match (is_rank(left), is_rank(right)) {
        (true, false) => (number(right)?, op.clone()),
        (false, true) => (
            number(left)?,
            match op {
                B::GtEq => B::LtEq,
                B::Gt => B::Lt,
                other => other.clone(),
            },
        ),
        _ => return None,
    };
    match op {
        B::LtEq => Some(n),
        B::Lt => Some(n - 1),
        B::Eq if n == 1 => Some(1),
        _ => None,
    }
}

/// A conjunct in parentheses when it is an OR, so that joining conjuncts with AND keeps them.
fn paren(a: &Ast) -> String {
    match &a.kind {
        AstKind::Binary {
            op: BinaryOp::Or, ..
        } => format!("({a})"),
        _ => a.to_string(),
    }
}

fn split_and<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match e {
        Expr::BinaryOp {
            left,
            op: sql::BinaryOperator::And,
            right,
        } => {
            split_and(left, out);
            split_and(right, out);
        }
        Expr::Nested(inner)
            if matches!(
                **inner,
                Expr::BinaryOp {
                    op: sql::BinaryOperator::And,
                    ..
                }
            ) =>
        {
            split_and(inner, out)
        }
        other => out.push(other),
    }
}

/// `event_type = k` (either way round): the Nexmark table of k.
fn event_type_of(e: &Expr) -> Option<NexmarkTable> {
    let Expr::BinaryOp {
        left,
        op: sql::BinaryOperator::Eq,
        right,
    } = e
    else {
        return None;
    };
    let (col, val) = match (&**left, &**right) {
        (Expr::Identifier(i), Expr::Value(v)) | (Expr::Value(v), Expr::Identifier(i)) => (i, v),
        _ => return None,
    };
    if !col.value.eq_ignore_ascii_case("event_type") {
        return None;
    }
    match &val.value {
        sql::Value::Number(n, _) => NexmarkTable::ALL
            .into_iter()
            .find(|t| n.parse::<usize>().ok() == Some(t.index())),
        _ => None,
    }
}

/// Columns of a JSON source: a ROW's fields become columns named and read by their dotted path.
fn flatten(
    name: &str,
    ty: &sql::DataType,
    columns: &mut Vec<String>,
    names: &mut Vec<String>,
) -> Result<(), String> {
    if let sql::DataType::Struct(fields, _) = ty {
        for f in fields {
            let Some(field) = &f.field_name else {
                return Err(format!("a field of `{name}` has no name"));
            };
            flatten(
                &format!("{name}.{}", field.value),
                &f.field_type,
                columns,
                names,
            )?;
        }
        return Ok(());
    }
    let t = sql_type(ty)?;
    let path = if name.contains('.') {
        format!(", path = {}", quote(name))
    } else {
        String::new()
    };
    columns.push(format!(
        "{{ name = {}, type = {}{path} }}",
        quote(name),
        quote(&t.to_string())
    ));
    names.push(name.to_string());
    Ok(())
}

/// Eddy's type for a declared SQL type.
fn sql_type(ty: &sql::DataType) -> Result<DataType, String> {
    crate::expr::eddy_type(ty).map(|(t, _)| t)
}

/// Whether a value of type `have` goes into a column of type `want` as it is.
fn compatible(have: DataType, want: DataType) -> bool {
    have == want || have == DataType::Null
}

/// Whether Flink would insert a value of `have` into `want` with an implicit cast: numbers
/// widen (BIGINT to DECIMAL and DOUBLE, DECIMAL to DECIMAL and DOUBLE), never narrow.
fn castable(have: DataType, want: DataType) -> bool {
    matches!(
        (have, want),
        (
            DataType::BigInt,
            DataType::Decimal { .. } | DataType::Double
        ) | (
            DataType::Decimal { .. },
            DataType::Decimal { .. } | DataType::Double
        )
    )
}

/// `jdbc:postgresql://host:port/db` with 'username' and 'password' as a PostgreSQL URL.
fn postgres_url(t: &TableDef) -> Result<String, String> {
    let url = t
        .option("url")
        .ok_or_else(|| format!("`{}` needs the option 'url'", t.name))?;
    let rest = url
        .strip_prefix("jdbc:postgresql://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .or_else(|| url.strip_prefix("postgres://"))
        .ok_or_else(|| {
            format!(
                "`{}`: 'url' = '{url}' is not a PostgreSQL URL (jdbc:postgresql://host:port/db)",
                t.name
            )
        })?;
    let credentials = match (t.option("username"), t.option("password")) {
        (Some(u), Some(p)) => format!("{}:{}@", userinfo(u), userinfo(p)),
        (Some(u), None) => format!("{}@", userinfo(u)),
        _ => String::new(),
    };
    Ok(format!("postgresql://{credentials}{rest}"))
}

/// A user name or password percent-encoded for a URL; a `${NAME}` placeholder (a secret the
/// cluster fills) stays as it is.
fn userinfo(text: &str) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    // RFC 3986's unreserved characters stay; everything else is encoded.
    const SET: &percent_encoding::AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    let mut out = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        let plain = rest.find("${").unwrap_or(rest.len());
        out.extend(utf8_percent_encode(&rest[..plain], SET));
        rest = &rest[plain..];
        match rest.find('}') {
            Some(end) if !rest.is_empty() => {
                out.push_str(&rest[..=end]);
                rest = &rest[end + 1..];
            }
            _ => {
                out.extend(utf8_percent_encode(rest, SET));
                rest = "";
            }
        }
    }
    out
}

/// A TOML array of strings.
fn list(items: &[String]) -> String {
    let one_line = items
        .iter()
        .map(|i| quote(i))
        .collect::<Vec<_>>()
        .join(", ");
    if one_line.len() <= 80 {
        format!("[{one_line}]")
    } else {
        format!(
            "[\n    {},\n]",
            items
                .iter()
                .map(|i| quote(i))
                .collect::<Vec<_>>()
                .join(",\n    ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::userinfo;

    #[test]
    fn credentials_are_percent_encoded_and_placeholders_kept() {
        assert_eq!(userinfo("p@ss/w:rd"), "p%40ss%2Fw%3Ard");
        assert_eq!(userinfo("a-b.c_d~e"), "a-b.c_d~e");
        assert_eq!(userinfo("x${PW}y@"), "x${PW}y%40");
        assert_eq!(userinfo("${open"), "%24%7Bopen");
    }
}
