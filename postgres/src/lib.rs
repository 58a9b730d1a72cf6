//! Exactly-once output into PostgreSQL.
//!
//! A sink subtask stages its rows in `eddy_sink_stage` (a regular, logged table) as JSON, tagged
//! with its run (one per subtask instance) and the epoch: the id of the checkpoint whose barrier
//! follows them. Staging is a plain `COPY`, committed at once, so it survives a crash of Eddy or
//! of PostgreSQL but nobody reads it. When checkpoint N completes, [`commit`] moves the run's
//! rows of epochs ≤ N into the target table, deletes them from the stage and records N in
//! `eddy_sink_commits`, all in one transaction. A commit that finds N (or later) recorded does
//! nothing, so the commit after a restore, which repeats the last one, never writes a row twice.
//! Rows staged after the last completed checkpoint are never committed: the replay produces
//! them again under a new run.
//!
//! Rows are mapped to columns by name with `jsonb_populate_record`, so PostgreSQL converts the
//! JSON values to the column types (timestamps as `YYYY-MM-DD HH:MM:SS.sss`, numbers, text).
//! A table with a key is upserted (`INSERT … ON CONFLICT (key) DO UPDATE`), and a deletion of a
//! key deletes its row: that is how an updating result (a KPI per window that is corrected by
//! late events) stays one row per key.
//!
//! The target table must exist: its DDL belongs to the job's schema migrations, not to the sink.

pub mod migrate;
pub mod testing;
pub mod tls;

/// What the server or the connection said: `postgres::Error` shows only "db error" for a
/// server's answer and keeps the message in its causes.
fn detail(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {} ({})", db.severity(), db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

impl PgError {
    /// Whether trying again later may succeed: the server was unreachable, restarting, shutting
    /// down, out of resources, or the connection broke. A missing table or column, a bad query
    /// or data the table refuses is a mistake in the job, which a retry repeats.
    pub fn is_transient(&self) -> bool {
        let query_error = match self {
            // A certificate the client does not trust stays untrusted.
            PgError::Connect { source, .. } => return !eddy_security::tls::is_tls_failure(source),
            PgError::Io { .. } => return true,
            PgError::Config(_)
            | PgError::NoTable { .. }
            | PgError::MissingColumns { .. }
            | PgError::NoNaturalKey { .. } => return false,
            PgError::Query { source, .. } => source,
        };
        match query_error.code() {
            // No SQLSTATE: the connection failed or closed under the query.
            None => true,
            Some(code) => {
                let code = code.code();
                // 08: connection exception; 40: transaction rollback (serialization failure,
                // deadlock); 53: insufficient resources; 57: operator intervention (shutdown,
                // crash recovery); 58: system error.
                ["08", "40", "53", "57", "58"]
                    .iter()
                    .any(|class| code.starts_with(class))
            }
        }
    }
}

use postgres::Client;
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

/// Why PostgreSQL output failed.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("cannot connect to PostgreSQL at `{url}`: {}", detail(source))]
    Connect {
        url: String,
        source: postgres::Error,
    },
    #[error("table `{table}` does not exist at `{url}`; create it first (a job's tables come with its schema migrations)")]
    NoTable { table: String, url: String },
    #[error("table `{table}` has no column{} {}; its columns are: {}", if missing.len() > 1 { "s" } else { "" }, missing.join(", "), columns.join(", "))]
    MissingColumns {
        table: String,
        missing: Vec<String>,
        columns: Vec<String>,
    },
    #[error("PostgreSQL {action} for table `{table}` failed: {}", detail(source))]
    Query {
        action: &'static str,
        table: String,
        source: postgres::Error,
    },
    #[error("dimension table `{table}` needs a unique index on `{column}` (its natural key), e.g. `ALTER TABLE {table} ADD UNIQUE ({column})`")]
    NoNaturalKey { table: String, column: String },
    #[error("{0}")]
    Config(String),
    #[error("PostgreSQL {action} for table `{table}` failed: {source}")]
    Io {
        action: &'static str,
        table: String,
        source: std::io::Error,
    },
}

/// Where a sink writes and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// A libpq connection string or URL.
    pub url: String,
    /// The table, optionally schema-qualified (`warehouse.fact_orders`).
    pub table: String,
    /// The sink's columns, in the order of the JSON rows.
    pub columns: Vec<String>,
    /// Empty: append every row. Else: one row per key, upserted, deleted by a deletion.
    pub key: Vec<String>,
    /// Surrogate keys looked up (and created) in dimension tables at commit.
    pub dimensions: Vec<Dimension>,
}

/// A dimension of a star schema: the sink's `column` holds the natural key of a row of
/// `table` (its column `natural`, which must be unique); the fact table gets that row's
/// warehouse-generated surrogate key `key`. Missing dimension rows are committed just before
/// the facts (see `insert_dimensions`), so a fact never points at a dimension row that is not
/// there, and a repeated commit creates nothing twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dimension {
    /// The sink column with the natural key (it is not written to the fact table).
    pub column: String,
    /// The dimension table.
    pub table: String,
    /// Its natural key column, uniquely indexed (ON CONFLICT needs a whole-column index).
    pub natural: String,
    /// Its surrogate key column, also the fact table's column that receives it.
    pub key: String,
}

impl Target {
    /// Whether `column` carries a dimension's natural key.
    fn is_dimension_column(&self, column: &str) -> bool {
        self.dimensions.iter().any(|d| d.column == column)
    }
}

/// What a staged row does to its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Appends the row, or replaces the row of its key.
    Upsert,
    /// Removes the row of its key (tables with a key only).
    Delete,
}

impl Op {
    fn code(self) -> u8 {
        match self {
            Op::Upsert => b'0',
            Op::Delete => b'1',
        }
    }
}

/// A connection string with every password hidden, for messages, logs and the dashboard: in a
/// URL the `user:password@` part and query parameters such as `?password=` or
/// `&sslpassword=`; in a key-value string `password=…`, also quoted (`password='a b'`) or
/// with spaces around `=`.
pub fn redact(url: &str) -> String {
    let secret = |key: &str| key.to_ascii_lowercase().contains("password");
    if let Some((scheme, rest)) = url.split_once("://") {
        let (main, query) = match rest.split_once('?') {
            Some((m, q)) => (m, Some(q)),
            None => (rest, None),
        };
        // The user information ends at the last `@` (a password may hold one unencoded).
        let main = match main.rsplit_once('@') {
            Some((auth, host)) => match auth.split_once(':') {
                Some((user, _)) => format!("{user}:***@{host}"),
                None => main.to_string(),
            },
            None => main.to_string(),
        };
        let query = query.map(|q| {
            q.split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if secret(k) => format!("{k}=***"),
                    _ => kv.to_string(),
                })
                .collect::<Vec<_>>()
                .join("&")
        });
        return match query {
            Some(q) => format!("{scheme}://{main}?{q}"),
            None => format!("{scheme}://{main}"),
        };
    }
    // key = value pairs; a value may be quoted with `'` and hold `\'` and spaces.
    let mut out = String::new();
    let mut chars = url.chars().peekable();
    while chars.peek().is_some() {
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        let mut between = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                between.push(c);
                chars.next();
                if c == '=' {
                    break;
                }
            } else {
                break;
            }
        }
        if between.contains('=') {
            while let Some(&c) = chars.peek() {
                if !c.is_whitespace() {
                    break;
                }
                between.push(c);
                chars.next();
            }
        }
        let mut value = String::new();
        if between.contains('=') {
            if chars.peek() == Some(&'\'') {
                value.push('\'');
                chars.next();
                while let Some(c) = chars.next() {
                    value.push(c);
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                value.push(n);
                            }
                        }
                        '\'' => break,
                        _ => {}
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        out.push_str(&key);
        out.push_str(&between);
        out.push_str(if secret(&key) && !value.is_empty() {
            "***"
        } else {
            &value
        });
        while let Some(&c) = chars.peek() {
            if !c.is_whitespace() {
                break;
            }
            out.push(c);
            chars.next();
        }
    }
    out
}

/// `name` or `schema.name` as a quoted SQL identifier.
fn quote_ident(name: &str) -> String {
    name.split('.')
        .map(|part| format!("\"{}\"", part.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

/// A connection whose string literals follow the SQL standard: the queries here quote names
/// inside literals by doubling `'`, which is only safe with `standard_conforming_strings` on
/// (a server or role that turns it off would read a backslash as an escape).
///
/// Over TLS when the URL asks for it ([`tls`]).
pub fn connect(url: &str) -> Result<Client, PgError> {
    let (config, tls) = tls::config(url)?;
    let mut client = postgres::Config::from(config)
        .connect(tls)
        .map_err(|source| PgError::Connect {
            url: redact(url),
            source,
        })?;
    client
        .batch_execute("SET standard_conforming_strings = on")
        .map_err(|source| PgError::Query {
            action: "session setup",
            table: String::new(),
            source,
        })?;
    Ok(client)
}

/// Creates Eddy's own tables once per database, under an advisory lock so that subtasks
/// starting together do not race on `CREATE TABLE`.
fn ensure_eddy_tables(client: &mut Client, table: &str) -> Result<(), PgError> {
    let query = |source| PgError::Query {
        action: "setup of eddy_sink_stage",
        table: table.to_string(),
        source,
    };
    let mut tx = client.transaction().map_err(query)?;
    tx.batch_execute(
        "SELECT pg_advisory_xact_lock(7231837465);
         CREATE TABLE IF NOT EXISTS eddy_sink_stage (
             sink text NOT NULL,
             run text NOT NULL,
             epoch bigint NOT NULL,
             seq bigserial,
             op \"char\" NOT NULL,
             row jsonb NOT NULL);
         CREATE INDEX IF NOT EXISTS eddy_sink_stage_run ON eddy_sink_stage (sink, run, epoch);
         CREATE TABLE IF NOT EXISTS eddy_sink_commits (
             sink text NOT NULL,
             run text NOT NULL,
             epoch bigint NOT NULL,
             committed_at timestamptz NOT NULL DEFAULT now(),
             PRIMARY KEY (sink, run));",
    )
    .map_err(query)?;
    tx.commit().map_err(query)
}

/// The columns of a table, in order; empty if it does not exist.
fn table_columns(
    client: &mut impl postgres::GenericClient,
    table: &str,
) -> Result<Vec<String>, PgError> {
    let rows = client
        .query(
            "SELECT attname FROM pg_attribute
             WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped
             ORDER BY attnum",
            &[&quote_ident(table)],
        )
        .map_err(|source| PgError::Query {
            action: "lookup",
            table: table.to_string(),
            source,
        })?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The columns of `table`, failing when it does not exist or lacks one of `needed`.
fn require_columns(
    client: &mut Client,
    url: &str,
    table: &str,
    needed: &[&String],
) -> Result<Vec<String>, PgError> {
    let columns = table_columns(client, table)?;
    if columns.is_empty() {
        return Err(PgError::NoTable {
            table: table.to_string(),
            url: redact(url),
        });
    }
    let missing: Vec<String> = needed
        .iter()
        .filter(|c| !columns.contains(c))
        .map(|c| c.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(PgError::MissingColumns {
            table: table.to_string(),
            missing,
            columns,
        });
    }
    Ok(columns)
}

/// Checks that the target table exists with every sink column (a dimension's natural key
/// column is optional there) and the surrogate keys, and that every dimension table has its
/// natural key, uniquely indexed, and its surrogate key.
fn check_table(client: &mut Client, target: &Target) -> Result<(), PgError> {
    let needed: Vec<&String> = target
        .columns
        .iter()
        .filter(|c| !target.is_dimension_column(c))
        .chain(&target.key)
        .chain(target.dimensions.iter().map(|d| &d.key))
        .collect();
    require_columns(client, &target.url, &target.table, &needed)?;
    for d in &target.dimensions {
        require_columns(client, &target.url, &d.table, &[&d.natural, &d.key])?;
        let unique = client
            .query(
                "SELECT 1 FROM pg_index i
                 JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                 WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indnkeyatts = 1
                   AND i.indpred IS NULL AND i.indexprs IS NULL AND a.attname = $2",
                &[&quote_ident(&d.table), &d.natural],
            )
            .map_err(|source| PgError::Query {
                action: "lookup",
                table: d.table.clone(),
                source,
            })?;
        if unique.is_empty() {
            return Err(PgError::NoNaturalKey {
                table: d.table.clone(),
                column: d.natural.clone(),
            });
        }
    }
    Ok(())
}

/// One sink subtask's connection: stages rows under its run.
pub struct Stager {
    client: Client,
    target: Target,
    sink: String,
    run: String,
    /// Rows waiting for the next `flush`, in `COPY` text format without the epoch column.
    buffer: Vec<u8>,
    rows: usize,
}

impl Stager {
    /// Connects for sink `sink` (unique per job and sink node) as run `run` (unique per subtask
    /// instance), checking that the target table fits.
    pub fn connect(target: Target, sink: &str, run: &str) -> Result<Stager, PgError> {
        let mut client = connect(&target.url)?;
        ensure_eddy_tables(&mut client, &target.table)?;
        check_table(&mut client, &target)?;
        Ok(Stager {
            client,
            target,
            sink: sink.to_string(),
            run: run.to_string(),
            buffer: Vec::with_capacity(1 << 20),
            rows: 0,
        })
    }

    /// Rows buffered since the last flush.
    pub fn buffered(&self) -> usize {
        self.rows
    }

    /// Bytes buffered since the last flush.
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// Buffers one row, given as a JSON object.
    pub fn push(&mut self, op: Op, json: &[u8]) {
        self.buffer.push(op.code());
        self.buffer.push(b'\t');
        for &b in json {
            match b {
                b'\\' => self.buffer.extend_from_slice(b"\\\\"),
                b'\n' => self.buffer.extend_from_slice(b"\\n"),
                b'\r' => self.buffer.extend_from_slice(b"\\r"),
                b'\t' => self.buffer.extend_from_slice(b"\\t"),
                _ => self.buffer.push(b),
            }
        }
        self.buffer.push(b'\n');
        self.rows += 1;
    }

    /// Stages the buffered rows as part of `epoch` (durable when this returns).
    pub fn flush(&mut self, epoch: u64) -> Result<(), PgError> {
        if self.rows == 0 {
            return Ok(());
        }
        let io = |source| PgError::Io {
            action: "staging",
            table: self.target.table.clone(),
            source,
        };
        // Constant columns by defaults of a temporary view would be neater; a prefix per line
        // is simple and cheap next to the JSON.
        let prefix = format!(
            "{}\t{}\t{epoch}\t",
            copy_text(&self.sink),
            copy_text(&self.run)
        );
        let mut data = Vec::with_capacity(self.buffer.len() + self.rows * prefix.len());
        for line in self.buffer.split_inclusive(|&b| b == b'\n') {
            data.extend_from_slice(prefix.as_bytes());
            data.extend_from_slice(line);
        }
        let mut writer = self
            .client
            .copy_in("COPY eddy_sink_stage (sink, run, epoch, op, row) FROM STDIN")
            .map_err(|source| PgError::Query {
                action: "staging",
                table: self.target.table.clone(),
                source,
            })?;
        writer.write_all(&data).map_err(io)?;
        writer.finish().map_err(|source| PgError::Query {
            action: "staging",
            table: self.target.table.clone(),
            source,
        })?;
        self.buffer.clear();
        self.rows = 0;
        Ok(())
    }

    /// Commits this run's staged rows up to `epoch` on this connection (no checkpoints: the
    /// end of a batch is the commit).
    pub fn commit(&mut self, epoch: u64) -> Result<(), PgError> {
        commit_on(&mut self.client, &self.target, &self.sink, &self.run, epoch)
    }
}

/// Text for a `COPY` text-format field.
fn copy_text(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
}

/// Publishes the rows run `run` of sink `sink` staged up to `epoch` into the target, once:
/// a repeated commit of the same or an older epoch changes nothing. Connections are kept per
/// URL between commits.
pub fn commit(target: &Target, sink: &str, run: &str, epoch: u64) -> Result<(), PgError> {
    static CLIENTS: OnceLock<Mutex<HashMap<String, Client>>> = OnceLock::new();
    let clients = CLIENTS.get_or_init(Mutex::default);
    let cached = clients
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&target.url);
    let mut client = match cached {
        Some(c) if !c.is_closed() => c,
        _ => connect(&target.url)?,
    };
    let result = commit_on(&mut client, target, sink, run, epoch);
    if result.is_ok() {
        clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(target.url.clone(), client);
    }
    result
}

/// Inserts the dimension rows that the rows staged up to `epoch` need and that are missing,
/// before the facts' transaction and each table in a transaction of its own. Every fact sink
/// (and each of its subtasks) inserts into the same dimensions: inside the facts' transaction,
/// a commit waited for every other commit that had inserted a key it needed, until that one's
/// facts were written, and the commits of all fact sinks ran one after another. A dimension row
/// committed first is never wrong: its natural key is unique, a repeated commit inserts nothing,
/// and a fact can still only point at a row that is there. Tables in one order, and keys sorted
/// within each, so that two commits never wait for each other crosswise.
fn insert_dimensions(
    client: &mut Client,
    target: &Target,
    sink: &str,
    run: &str,
    epoch: i64,
) -> Result<(), PgError> {
    let mut in_order: Vec<&Dimension> = target.dimensions.iter().collect();
    in_order.sort_by(|a, b| a.table.cmp(&b.table));
    for d in in_order {
        let (t, n) = (quote_ident(&d.table), quote_ident(&d.natural));
        client
            .execute(
                &format!(
                    "INSERT INTO {t} ({n})
                     SELECT DISTINCT k.{n} FROM eddy_sink_stage s
                     CROSS JOIN LATERAL jsonb_populate_record(NULL::{t},
                         jsonb_build_object('{natural}', s.row -> '{column}')) k
                     WHERE s.sink = $1 AND s.run = $2 AND s.epoch <= $3 AND s.op = '0'
                       AND k.{n} IS NOT NULL
                     ORDER BY 1
                     ON CONFLICT ({n}) DO NOTHING",
                    natural = d.natural.replace('\'', "''"),
                    column = d.column.replace('\'', "''"),
                ),
                &[&sink, &run, &epoch],
            )
            .map_err(|source| PgError::Query {
                action: "dimension insert",
                table: d.table.clone(),
                source,
            })?;
    }
    Ok(())
}

fn commit_on(
    client: &mut Client,
    target: &Target,
    sink: &str,
    run: &str,
    epoch: u64,
) -> Result<(), PgError> {
    let query = |source| PgError::Query {
        action: "commit",
        table: target.table.clone(),
        source,
    };
    let epoch = epoch as i64;
    insert_dimensions(client, target, sink, run, epoch)?;
    let mut tx = client.transaction().map_err(query)?;
    tx.execute(
        "INSERT INTO eddy_sink_commits (sink, run, epoch) VALUES ($1, $2, 0)
         ON CONFLICT (sink, run) DO NOTHING",
        &[&sink, &run],
    )
    .map_err(query)?;
    let done: i64 = tx
        .query_one(
            "SELECT epoch FROM eddy_sink_commits WHERE sink = $1 AND run = $2 FOR UPDATE",
            &[&sink, &run],
        )
        .map_err(query)?
        .get(0);
    if done >= epoch {
        return tx.commit().map_err(query);
    }
    let table = quote_ident(&target.table);
    // A dimension's natural key is written only where the fact table has a column for it.
    let fact_columns = table_columns(&mut tx, &target.table)?;
    let mut columns: Vec<String> = target
        .columns
        .iter()
        .filter(|c| !target.is_dimension_column(c) || fact_columns.contains(c))
        .map(|c| quote_ident(c))
        .collect();
    let mut values: Vec<String> = columns.iter().map(|c| format!("r.{c}")).collect();
    for (i, d) in target.dimensions.iter().enumerate() {
        columns.push(quote_ident(&d.key));
        values.push(format!("d{i}.{}", quote_ident(&d.key)));
    }
    let cols = columns.join(", ");
    let values = values.join(", ");
    let staged = "s.sink = $1 AND s.run = $2 AND s.epoch <= $3";
    // Rows to publish: every staged row, or with a key the last change of each key. The
    // latter is worked out once, into a temporary table that every statement below reads (each
    // dimension, the deletions and the upsert): de-duplicating by a jsonb expression is what
    // costs most.
    let stage_params: [&(dyn postgres::types::ToSql + Sync); 3] = [&sink, &run, &epoch];
    let (rows, row, wanted, params): (&str, &str, &str, &[&(dyn postgres::types::ToSql + Sync)]) =
        if target.key.is_empty() {
            ("eddy_sink_stage s", "s.row", staged, &stage_params)
        } else {
            let key_json = target
                .key
                .iter()
                .map(|k| format!("s.row -> '{}'", k.replace('\'', "''")))
                .collect::<Vec<_>>()
                .join(", ");
            tx.batch_execute(
                "CREATE TEMP TABLE IF NOT EXISTS eddy_publish (op \"char\", row jsonb)
                 ON COMMIT DELETE ROWS",
            )
            .map_err(query)?;
            tx.execute(
                &format!(
                    "INSERT INTO eddy_publish SELECT DISTINCT ON ({key_json}) s.op, s.row
                     FROM eddy_sink_stage s WHERE {staged} ORDER BY {key_json}, s.seq DESC"
                ),
                &stage_params,
            )
            .map_err(query)?;
            ("eddy_publish l", "l.row", "l.op = '0'", &[])
        };
    // Each dimension's natural key, typed as its table's column.
    let natural = |i: usize, d: &Dimension| {
        format!(
            "CROSS JOIN LATERAL jsonb_populate_record(NULL::{t}, jsonb_build_object('{n}', {row} -> '{c}')) n{i}",
            t = quote_ident(&d.table),
            n = d.natural.replace('\'', "''"),
            c = d.column.replace('\'', "''"),
        )
    };
    let joins: String = target
        .dimensions
        .iter()
        .enumerate()
        .map(|(i, d)| {
            format!(
                " {} LEFT JOIN {t} d{i} ON d{i}.{n} = n{i}.{n}",
                natural(i, d),
                t = quote_ident(&d.table),
                n = quote_ident(&d.natural),
            )
        })
        .collect();
    let select = format!(
        "SELECT {values} FROM {rows}
         CROSS JOIN LATERAL jsonb_populate_record(NULL::{table}, {row}) r{joins}
         WHERE {wanted}"
    );
    if target.key.is_empty() {
        tx.execute(
            &format!("INSERT INTO {table} ({cols}) {select} ORDER BY s.seq"),
            params,
        )
        .map_err(query)?;
    } else {
        let keys: Vec<String> = target.key.iter().map(|c| quote_ident(c)).collect();
        let key_match = keys
            .iter()
            .map(|k| format!("t.{k} IS NOT DISTINCT FROM r.{k}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        tx.execute(
            &format!(
                "DELETE FROM {table} t USING {rows}
                 CROSS JOIN LATERAL jsonb_populate_record(NULL::{table}, {row}) r
                 WHERE l.op = '1' AND {key_match}"
            ),
            params,
        )
        .map_err(query)?;
        let updates = columns
            .iter()
            .filter(|c| !keys.contains(c))
            .map(|c| format!("{c} = EXCLUDED.{c}"))
            .collect::<Vec<_>>();
        let on_conflict = if updates.is_empty() {
            "DO NOTHING".to_string()
        } else {
            format!("DO UPDATE SET {}", updates.join(", "))
        };
        tx.execute(
            &format!(
                "INSERT INTO {table} ({cols}) {select}
                 ON CONFLICT ({}) {on_conflict}",
                keys.join(", ")
            ),
            params,
        )
        .map_err(query)?;
    }
    // Dashboards listening on `eddy_commit` refresh when a table changes.
    tx.execute("SELECT pg_notify('eddy_commit', $1)", &[&target.table])
        .map_err(query)?;
    tx.execute(
        "DELETE FROM eddy_sink_stage s WHERE s.sink = $1 AND s.run = $2 AND s.epoch <= $3",
        &[&sink, &run, &epoch],
    )
    .map_err(query)?;
    tx.execute(
        "UPDATE eddy_sink_commits SET epoch = $3, committed_at = now() WHERE sink = $1 AND run = $2",
        &[&sink, &run, &epoch],
    )
    .map_err(query)?;
    tx.commit().map_err(query)
}

#[cfg(test)]
mod redact_tests {
    use super::redact;

    #[test]
    fn every_form_of_a_password_is_hidden() {
        for (given, shown) in [
            ("postgres://u:pw@h:5432/db", "postgres://u:***@h:5432/db"),
            ("postgres://u:p@ss@h/db", "postgres://u:***@h/db"),
            (
                "postgres://u@h/db?password=pw&sslmode=require",
                "postgres://u@h/db?password=***&sslmode=require",
            ),
            (
                "postgresql://h/db?user=u&sslpassword=x",
                "postgresql://h/db?user=u&sslpassword=***",
            ),
            (
                "host=h password=pw dbname=d",
                "host=h password=*** dbname=d",
            ),
            (
                "host=h password='a b\\' c' dbname=d",
                "host=h password=*** dbname=d",
            ),
            (
                "host=h password = pw user=u",
                "host=h password = *** user=u",
            ),
            ("host=h PASSWORD=pw", "host=h PASSWORD=***"),
            ("host=h dbname=d", "host=h dbname=d"),
        ] {
            assert_eq!(redact(given), shown, "{given}");
            assert!(!redact(given).contains("pw"), "{given}");
        }
    }
}
