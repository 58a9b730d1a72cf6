//! From a job file's text to a validated [`JobGraph`].
//!
//! Steps: read the declared parameters, substitute `${param}` placeholders, deserialise the
//! tables with their spans, resolve inputs and order the nodes (refusing cycles), then build each
//! node in order: type-check its expressions against its input schemas, derive its output schema
//! and whether its output carries updates, and choose the partitioning of its input edges.
//! Every error points at the place in the file and says how to fix it.

use crate::error::{suggest, JobError};
use crate::spec::{JobFile, OperatorDecl, SinkDecl, SourceDecl, Str};
use eddy_operators::format::NexmarkTable;
use eddy_runtime::expr::{self, AstKind, BinaryOp, ExprError, Scope};
use eddy_runtime::graph::*;
use eddy_runtime::keygroup::{DEFAULT_MAX_PARALLELISM, MAX_KEY_GROUPS};
use eddy_runtime::types::{parse_duration, parse_timestamp, DataType, Field, Schema, SchemaRef};
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;
use toml::Spanned;

/// What the command line adds to a job file.
#[derive(Clone, Debug, Default)]
pub struct CompileOptions {
    /// `--param name=value`.
    pub params: BTreeMap<String, String>,
    /// `--parallelism N`: replaces the job's default parallelism.
    pub parallelism: Option<u32>,
    /// `--generate N`: the job's Nexmark file sources read the built-in generator instead (its
    /// `input` parameter then needs no value). A job without such a source is refused.
    pub generate: Option<GeneratorSpec>,
    /// `--topics-from DIR`: the job's Kafka sources read files of their topics from DIR
    /// instead (reprocessing history; see [`crate::use_topic_files`]).
    pub topic_files: Option<std::path::PathBuf>,
}

/// The base time of generated Nexmark events when the job does not set one: that of the shared
/// benchmark data, so generated and file inputs can be compared.
const DEFAULT_BASE_TIME: &str = "2026-01-01 00:00:00";

/// Compiles the job file at `path`.
pub fn compile_file(
    path: &std::path::Path,
    options: &CompileOptions,
) -> Result<JobGraph, JobError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        JobError::new(&file, format!("cannot read the job file: {e}"))
            .help("check the path; job files are TOML, e.g. jobs/nexmark/q5.toml")
    })?;
    compile_str(&file, &text, options)
}

/// Compiles job text; `file` names it in errors.
pub fn compile_str(file: &str, text: &str, options: &CompileOptions) -> Result<JobGraph, JobError> {
    let mut graph = compile_generated(file, text, options)?;
    if let Some(dir) = &options.topic_files {
        match crate::use_topic_files(&mut graph, dir) {
            Ok(0) => {
                return Err(JobError::new(
                    file,
                    "--topics-from needs a Kafka source, and this job has none",
                ))
            }
            Ok(_) => {}
            Err(message) => return Err(JobError::new(file, message)),
        }
    }
    Ok(graph)
}

/// The parameters a job file declares `secret = true`.
pub fn secret_params(file: &str, text: &str) -> Result<Vec<String>, JobError> {
    let job: JobFile = parse_toml(file, text)?;
    Ok(job
        .params
        .into_iter()
        .filter(|(_, decl)| decl.get_ref().secret)
        .map(|(name, _)| name)
        .collect())
}

fn compile_generated(
    file: &str,
    text: &str,
    options: &CompileOptions,
) -> Result<JobGraph, JobError> {
    let Some(spec) = &options.generate else {
        return compile_text(file, text, options);
    };
    // The generator replaces the input file; a placeholder keeps `${input}` satisfied (a job
    // planned from SQL has its path written out and declares no `input`).
    let mut params = options.params.clone();
    if parse_toml(file, text)?.params.contains_key("input") {
        params
            .entry("input".into())
            .or_insert_with(|| "<generated>".into());
    }
    let options = CompileOptions {
        params,
        ..options.clone()
    };
    let mut graph = compile_text(file, text, &options)?;
    if crate::use_nexmark_generator(&mut graph, spec.clone()) == 0 {
        return Err(JobError::new(
            file,
            "--generate needs a Nexmark file source, and this job has none",
        ));
    }
    Ok(graph)
}

fn compile_text(file: &str, text: &str, options: &CompileOptions) -> Result<JobGraph, JobError> {
    let first: JobFile = parse_toml(file, text)?;
    let substituted = substitute(file, text, &first, &options.params)?;
    let job: JobFile = parse_toml(file, &substituted)?;
    Compiler {
        file,
        text: &substituted,
        options,
    }
    .compile(job)
}

fn parse_toml(file: &str, text: &str) -> Result<JobFile, JobError> {
    toml::from_str(text).map_err(|e| {
        let message = e.message().trim().to_string();
        let help = if message.contains("unknown field") {
            Some("fields are listed in docs/job-format.md".to_string())
        } else {
            None
        };
        match e.span() {
            Some(span) => JobError::at(file, text, span, message),
            None => JobError::new(file, message),
        }
        .maybe_help(help)
    })
}

/// Replaces `${name}` placeholders with parameter values (escaped for a TOML string).
fn substitute(
    file: &str,
    text: &str,
    job: &JobFile,
    given: &BTreeMap<String, String>,
) -> Result<String, JobError> {
    let declared: Vec<&str> = job.params.keys().map(String::as_str).collect();
    for name in given.keys() {
        if !job.params.contains_key(name) {
            let hint = match suggest(name, declared.iter().copied()) {
                Some(s) => format!(
                    "did you mean `{s}`? The job declares: {}",
                    declared.join(", ")
                ),
                None if declared.is_empty() => "this job declares no parameters".to_string(),
                None => format!("the job declares: {}", declared.join(", ")),
            };
            return Err(
                JobError::new(file, format!("unknown parameter `{name}` in --param")).help(hint),
            );
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut offset = 0;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(JobError::at(
                file,
                text,
                offset + start..offset + start + 2,
                "unclosed `${`",
            )
            .help("write a placeholder as ${name}"));
        };
        let name = &after[..end];
        let span = offset + start..offset + start + 3 + end;
        let value = match (given.get(name), job.params.get(name)) {
            (Some(v), _) => v.clone(),
            (None, Some(decl)) => match &decl.get_ref().default {
                Some(d) => d.clone(),
                None => {
                    let what = decl
                        .get_ref()
                        .description
                        .as_deref()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default();
                    return Err(JobError::at(
                        file,
                        text,
                        span,
                        format!("missing parameter `{name}`{what}"),
                    )
                    .help(format!("pass --param {name}=VALUE")));
                }
            },
            (None, None) => {
                return Err(JobError::at(
                    file,
                    text,
                    span,
                    format!("undeclared parameter `{name}`"),
                )
                .help(format!(
                    "declare it: [params] {name} = {{ description = \"...\" }}"
                )))
            }
        };
        out.push_str(&value.replace('\\', "\\\\").replace('"', "\\\""));
        let consumed = start + 3 + end;
        rest = &rest[consumed..];
        offset += consumed;
    }
    out.push_str(rest);
    Ok(out)
}

/// A declared node before it is built.
enum Decl {
    Source(Box<Spanned<SourceDecl>>),
    Operator(Box<Spanned<OperatorDecl>>),
    Sink(Box<Spanned<SinkDecl>>),
}

impl Decl {
    fn name(&self) -> &Str {
        match self {
            Decl::Source(s) => &s.get_ref().name,
            Decl::Operator(o) => &o.get_ref().name,
            Decl::Sink(s) => &s.get_ref().name,
        }
    }

    /// The input references, in input order.
    fn inputs(&self) -> Vec<&Str> {
        match self {
            Decl::Source(_) => vec![],
            Decl::Sink(s) => vec![&s.get_ref().input],
            Decl::Operator(o) => {
                let o = o.get_ref();
                let mut v = Vec::new();
                if let Some(i) = &o.input {
                    v.push(i);
                }
                if let Some(l) = &o.left {
                    v.push(l);
                }
                if let Some(r) = &o.right {
                    v.push(r);
                }
                if let Some(list) = &o.inputs {
                    v.extend(list.iter());
                }
                v
            }
        }
    }
}

/// Splits `node AS alias`.
fn split_alias(text: &str) -> (&str, Option<&str>) {
    let lower = text.to_ascii_lowercase();
    match lower.find(" as ") {
        Some(i) => (text[..i].trim(), Some(text[i + 4..].trim())),
        None => (text.trim(), None),
    }
}

struct Compiler<'a> {
    file: &'a str,
    text: &'a str,
    options: &'a CompileOptions,
}

/// A built input: which node and port it reads, and what arrives.
struct Input {
    from: NodeId,
    port: usize,
    schema: SchemaRef,
    updating: bool,
    alias: Option<String>,
    /// The name after the last '.', the default join alias.
    short: String,
}

impl<'a> Compiler<'a> {
    fn err(&self, span: Range<usize>, message: impl Into<String>) -> JobError {
        JobError::at(self.file, self.text, span, message)
    }

    /// An expression error inside a string field, positioned within the string when the
    /// string is written as its plain value; a string with escapes or on several lines is
    /// marked whole, with the position within its value in the message.
    fn expr_err(&self, field: &Str, what: &str, e: ExprError) -> JobError {
        let span = field.span();
        let raw = self.text.get(span.start + 1..span.end.saturating_sub(1));
        if raw == Some(field.get_ref().as_str()) {
            let base = span.start + 1;
            let span = base + e.span.start..base + e.span.end.max(e.span.start + 1);
            return self
                .err(span, format!("{what}: {}", e.message))
                .maybe_help(e.help);
        }
        let value = field.get_ref();
        let column = value
            .get(..e.span.start.min(value.len()))
            .map_or(0, |before| before.chars().count())
            + 1;
        self.err(
            span,
            format!(
                "{what}: {} (at character {column} of the expression)",
                e.message
            ),
        )
        .maybe_help(e.help)
    }

    fn compile(&self, job: JobFile) -> Result<JobGraph, JobError> {
        let max_parallelism = match &job.max_parallelism {
            Some(m) => {
                let v = self.positive(m, "max_parallelism")?;
                if v > MAX_KEY_GROUPS {
                    return Err(self
                        .err(
                            m.span(),
                            format!("`max_parallelism` {v} is above the limit of {MAX_KEY_GROUPS}"),
                        )
                        .help(format!(
                            "use at most {MAX_KEY_GROUPS} key groups (the default is {DEFAULT_MAX_PARALLELISM})"
                        )));
                }
                v
            }
            None => DEFAULT_MAX_PARALLELISM,
        };
        let default_parallelism = match (self.options.parallelism, &job.parallelism) {
            (Some(p), _) => p,
            (None, Some(p)) => self.positive(p, "parallelism")?,
            (None, None) => 1,
        };
        if default_parallelism == 0 || default_parallelism > max_parallelism {
            return Err(JobError::new(
                self.file,
                format!("parallelism {default_parallelism} is outside 1..={max_parallelism}"),
            )
            .help("use --parallelism between 1 and the job's max_parallelism (default 128)"));
        }
        let name = job
            .name
            .as_ref()
            .map(|n| n.get_ref().clone())
            .unwrap_or_else(|| {
                std::path::Path::new(self.file)
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "job".into())
            });

        let mut decls: Vec<Decl> = Vec::new();
        decls.extend(job.source.into_iter().map(|d| Decl::Source(Box::new(d))));
        decls.extend(
            job.operator
                .into_iter()
                .map(|d| Decl::Operator(Box::new(d))),
        );
        decls.extend(job.sink.into_iter().map(|d| Decl::Sink(Box::new(d))));
        if !decls.iter().any(|d| matches!(d, Decl::Source(_))) {
            return Err(JobError::new(self.file, "the job has no [[source]]")
                .help("add a [[source]] table; see jobs/nexmark/q0.toml"));
        }
        if !decls.iter().any(|d| matches!(d, Decl::Sink(_))) {
            return Err(JobError::new(self.file, "the job has no [[sink]]").help(
                "add a [[sink]] table with connector = \"file\", \"stdout\" or \"blackhole\"",
            ));
        }
        let mut by_name: HashMap<String, usize> = HashMap::new();
        for (i, d) in decls.iter().enumerate() {
            let n = d.name();
            // Node names name files (state directories, metrics labels): no `/`, `.` or other
            // characters that could reach outside a directory.
            let plain = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
            if n.get_ref().is_empty() || !n.get_ref().chars().all(plain) {
                return Err(self
                    .err(n.span(), format!("invalid node name `{}`", n.get_ref()))
                    .help("use letters, digits, '_' or '-'"));
            }
            if by_name.insert(n.get_ref().clone(), i).is_some() {
                return Err(self
                    .err(
                        n.span(),
                        format!("a node named `{}` already exists", n.get_ref()),
                    )
                    .help("give every source, operator and sink a unique name"));
            }
        }
        // Resolve input references to declarations, then order topologically.
        let mut deps: Vec<Vec<usize>> = Vec::new();
        for d in &decls {
            let mut list = Vec::new();
            for input in d.inputs() {
                let (reference, _) = split_alias(input.get_ref());
                let node_name = reference.split('.').next().unwrap_or("");
                match by_name.get(node_name) {
                    Some(&i) if matches!(decls[i], Decl::Sink(_)) => {
                        return Err(self.err(
                            input.span(),
                            format!("`{node_name}` is a sink and has no output"),
                        ))
                    }
                    Some(&i) => list.push(i),
                    None => {
                        let names: Vec<&str> = by_name.keys().map(String::as_str).collect();
                        return Err(self
                            .err(input.span(), format!("unknown input `{node_name}`"))
                            .maybe_help(
                                suggest(node_name, names).map(|s| format!("did you mean `{s}`?")),
                            ));
                    }
                }
            }
            deps.push(list);
        }
        let order = self.topological_order(&decls, &deps)?;

        let mut nodes: Vec<Node> = Vec::new();
        let mut id_of: HashMap<String, NodeId> = HashMap::new();
        let mut slots: Vec<Option<Decl>> = decls.into_iter().map(Some).collect();
        for i in order {
            let decl = slots[i].take().expect("each declaration is built once");
            let id = nodes.len();
            let node = self.build(
                id,
                decl,
                &nodes,
                &id_of,
                default_parallelism,
                max_parallelism,
            )?;
            id_of.insert(node.name.clone(), id);
            nodes.push(node);
        }
        // Every non-sink output should be used; an unused operator is most likely a mistake.
        for node in &nodes {
            if matches!(node.kind, NodeKind::Sink(_) | NodeKind::Source(_)) {
                continue;
            }
            let used = nodes
                .iter()
                .any(|n| n.inputs.iter().any(|e| e.from == node.id));
            if !used {
                return Err(JobError::new(
                    self.file,
                    format!(
                        "the output of operator `{}` is not used by any operator or sink",
                        node.name
                    ),
                )
                .help(
                    "connect it to a [[sink]] (connector = \"blackhole\" discards) or remove it",
                ));
            }
        }
        Ok(JobGraph {
            name,
            max_parallelism,
            nodes,
        })
    }

    fn positive(&self, value: &Spanned<i64>, field: &str) -> Result<u32, JobError> {
        let v = *value.get_ref();
        if v < 1 || v > u32::MAX as i64 {
            return Err(self.err(
                value.span(),
                format!("`{field}` must be a positive integer, found {v}"),
            ));
        }
        Ok(v as u32)
    }

    fn topological_order(
        &self,
        decls: &[Decl],
        deps: &[Vec<usize>],
    ) -> Result<Vec<usize>, JobError> {
        // Kahn's algorithm, preferring declaration order among ready nodes.
        let n = decls.len();
        let mut indegree: Vec<usize> = deps.iter().map(Vec::len).collect();
        let mut order = Vec::with_capacity(n);
        let mut done = vec![false; n];
        while order.len() < n {
            let Some(next) = (0..n).find(|&i| !done[i] && indegree[i] == 0) else {
                let stuck: Vec<&str> = (0..n)
                    .filter(|&i| !done[i])
                    .map(|i| decls[i].name().get_ref().as_str())
                    .collect();
                let first = (0..n).find(|&i| !done[i]).expect("some node is stuck");
                return Err(self
                    .err(
                        decls[first].name().span(),
                        format!("the job graph has a cycle through: {}", stuck.join(" -> ")),
                    )
                    .help("a node cannot consume its own output, directly or through others"));
            };
            done[next] = true;
            order.push(next);
            for (i, d) in deps.iter().enumerate() {
                for &dep in d {
                    if dep == next {
                        indegree[i] -= 1;
                    }
                }
            }
        }
        Ok(order)
    }

    fn node_parallelism(
        &self,
        own: &Option<Spanned<i64>>,
        default: u32,
        max: u32,
    ) -> Result<u32, JobError> {
        match own {
            Some(p) => {
                let v = self.positive(p, "parallelism")?;
                if v > max {
                    return Err(self.err(
                        p.span(),
                        format!("parallelism {v} exceeds max_parallelism {max}"),
                    ));
                }
                Ok(v)
            }
            None => Ok(default),
        }
    }

    /// Resolves an input reference (`node`, `node.port`, optionally `AS alias`).
    fn input(
        &self,
        reference: &Str,
        nodes: &[Node],
        id_of: &HashMap<String, NodeId>,
    ) -> Result<Input, JobError> {
        let (target, alias) = split_alias(reference.get_ref());
        let (node_name, port_name) = match target.split_once('.') {
            Some((n, p)) => (n, Some(p)),
            None => (target, None),
        };
        let id = *id_of
            .get(node_name)
            .ok_or_else(|| self.err(reference.span(), format!("unknown input `{node_name}`")))?;
        let node = &nodes[id];
        let port = match port_name {
            Some(p) => node
                .outputs
                .iter()
                .position(|o| o.name == p)
                .ok_or_else(|| {
                    let ports: Vec<&str> = node.outputs.iter().map(|o| o.name.as_str()).collect();
                    self.err(
                        reference.span(),
                        format!("`{node_name}` has no output `{p}`"),
                    )
                    .help(format!("its outputs are: {}", ports.join(", ")))
                })?,
            // A node's main output is its unnamed port (a window's late rows are `NAME.late`).
            None if node.outputs.len() > 1 && node.outputs[0].name.is_empty() => 0,
            None if node.outputs.len() > 1 => {
                let ports: Vec<&str> = node.outputs.iter().map(|o| o.name.as_str()).collect();
                return Err(self
                    .err(
                        reference.span(),
                        format!("`{node_name}` has several outputs"),
                    )
                    .help(format!(
                        "name one: {}",
                        ports
                            .iter()
                            .map(|p| format!("{node_name}.{p}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
            }
            None => 0,
        };
        let out = &node.outputs[port];
        Ok(Input {
            from: id,
            port,
            schema: out.schema.clone(),
            updating: out.updating,
            alias: alias.map(str::to_string),
            short: port_name.unwrap_or(node_name).to_string(),
        })
    }

    fn build(
        &self,
        id: NodeId,
        decl: Decl,
        nodes: &[Node],
        id_of: &HashMap<String, NodeId>,
        default_parallelism: u32,
        max_parallelism: u32,
    ) -> Result<Node, JobError> {
        match decl {
            Decl::Source(s) => self.build_source(id, *s, default_parallelism, max_parallelism),
            Decl::Sink(s) => {
                self.build_sink(id, *s, nodes, id_of, default_parallelism, max_parallelism)
            }
            Decl::Operator(o) => {
                self.build_operator(id, *o, nodes, id_of, default_parallelism, max_parallelism)
            }
        }
    }

    fn duration(&self, value: &Str, field: &str) -> Result<i64, JobError> {
        let text = value.get_ref().trim();
        let (negative, body) = match text.strip_prefix('-') {
            Some(b) => (true, b),
            None => (false, text),
        };
        let ms = parse_duration(body).ok_or_else(|| {
            self.err(
                value.span(),
                format!("`{field}`: `{text}` is not a duration"),
            )
            .help("write a number and a unit: 500ms, 4s, 10min, 1h, 1d")
        })?;
        Ok(if negative { -ms } else { ms })
    }

    fn positive_duration(&self, value: &Str, field: &str) -> Result<i64, JobError> {
        let ms = self.duration(value, field)?;
        if ms <= 0 {
            return Err(self.err(value.span(), format!("`{field}` must be positive")));
        }
        Ok(ms)
    }

    fn build_source(
        &self,
        id: NodeId,
        decl: Spanned<SourceDecl>,
        default_parallelism: u32,
        max_parallelism: u32,
    ) -> Result<Node, JobError> {
        let span = decl.span();
        let s = decl.into_inner();
        let name = s.name.get_ref().clone();
        let parallelism =
            self.node_parallelism(&s.parallelism, default_parallelism, max_parallelism)?;
        let nexmark_ports = || -> Vec<Port> {
            NexmarkTable::ALL
                .iter()
                .map(|t| Port {
                    name: t.name().to_string(),
                    schema: Arc::new(t.schema()),
                    updating: false,
                })
                .collect()
        };
        let require = |field: &Option<Str>, what: &str| -> Result<Str, JobError> {
            field
                .clone()
                .ok_or_else(|| self.err(span.clone(), format!("source `{name}` needs `{what}`")))
        };
        let (connector, outputs) = match s.connector.get_ref().as_str() {
            "file" => {
                let path = require(&s.path, "path")?;
                let format = s
                    .format
                    .clone()
                    .unwrap_or_else(|| Spanned::new(0..0, "json".into()));
                match format.get_ref().as_str() {
                    "nexmark" => (
                        SourceConnector::File {
                            path: path.into_inner(),
                            format: FileFormat::Nexmark,
                        },
                        nexmark_ports(),
                    ),
                    "json" => {
                        let (format, port) = self.json_format(&s, &span, &name)?;
                        (
                            SourceConnector::File {
                                path: path.into_inner(),
                                format,
                            },
                            vec![port],
                        )
                    }
                    other => {
                        return Err(self
                            .err(format.span(), format!("unknown format `{other}`"))
                            .help("use \"nexmark\" or \"json\""))
                    }
                }
            }
            "nexmark-generator" => {
                let rate = match &s.rate {
                    Some(r) => self.positive(r, "rate")? as u64,
                    None => 1000,
                };
                let events = match &s.events {
                    Some(e) => Some(self.positive(e, "events").map(|_| *e.get_ref() as u64)?),
                    None => None,
                };
                let base_text = s
                    .base_time
                    .as_ref()
                    .map(|b| b.get_ref().as_str())
                    .unwrap_or(DEFAULT_BASE_TIME);
                let base_time = parse_timestamp(base_text).ok_or_else(|| {
                    let at = s
                        .base_time
                        .as_ref()
                        .map(|b| b.span())
                        .unwrap_or(span.clone());
                    self.err(at, format!("`base_time`: `{base_text}` is not a timestamp"))
                        .help("write it as \"2026-01-01 00:00:00\"")
                })?;
                (
                    SourceConnector::NexmarkGenerator(GeneratorSpec {
                        events,
                        rate,
                        base_time,
                        throttle: s.throttle.unwrap_or(false),
                    }),
                    nexmark_ports(),
                )
            }
            "kafka" => {
                let format = s
                    .format
                    .clone()
                    .unwrap_or_else(|| Spanned::new(0..0, "json".into()));
                if format.get_ref() != "json" {
                    return Err(self
                        .err(format.span(), format!("Kafka source `{name}`: format `{}` is not supported", format.get_ref()))
                        .help("Kafka records are read as JSON with declared `columns` (format = \"json\")"));
                }
                let (format, port) = self.json_format(&s, &span, &name)?;
                let start = match s.start.as_ref().map(|v| (v.get_ref().as_str(), v.span())) {
                    None | Some(("earliest", _)) => KafkaStart::Earliest,
                    Some(("latest", _)) => KafkaStart::Latest,
                    Some((other, at)) => {
                        return Err(self
                            .err(at, format!("`start`: unknown position `{other}`"))
                            .help("use \"earliest\" (the oldest record kept) or \"latest\" (only new records)"))
                    }
                };
                let end_when_idle = s
                    .end_when_idle
                    .as_ref()
                    .filter(|d| d.get_ref() != "never")
                    .map(|d| self.positive_duration(d, "end_when_idle"))
                    .transpose()?;
                (
                    SourceConnector::Kafka(KafkaSourceSpec {
                        brokers: require(&s.brokers, "brokers")?.into_inner(),
                        topic: require(&s.topic, "topic")?.into_inner(),
                        format,
                        start,
                        end_when_idle,
                    }),
                    vec![port],
                )
            }
            other => {
                return Err(self
                    .err(
                        s.connector.span(),
                        format!("unknown source connector `{other}`"),
                    )
                    .help("use \"file\", \"kafka\" or \"nexmark-generator\""))
            }
        };
        if s.connector.get_ref() != "kafka" {
            let kafka_only = [
                ("brokers", s.brokers.as_ref().map(|v| v.span())),
                ("topic", s.topic.as_ref().map(|v| v.span())),
                ("start", s.start.as_ref().map(|v| v.span())),
                ("end_when_idle", s.end_when_idle.as_ref().map(|v| v.span())),
            ];
            if let Some((field, Some(at))) = kafka_only.into_iter().find(|(_, at)| at.is_some()) {
                return Err(self
                    .err(
                        at,
                        format!("source `{name}`: `{field}` is a setting of connector \"kafka\""),
                    )
                    .help("remove it, or set connector = \"kafka\""));
            }
        }
        let watermark = match &s.watermark {
            Some(w) => {
                let w = w.get_ref();
                let column = w.column.get_ref();
                for port in &outputs {
                    match port.schema.index_of(column) {
                        Some(i) if port.schema.fields[i].data_type == DataType::Timestamp => {}
                        Some(_) => {
                            return Err(self.err(w.column.span(), format!("watermark column `{column}` is not a TIMESTAMP")))
                        }
                        None => {
                            return Err(self
                                .err(w.column.span(), format!("watermark column `{column}` is not in every output of `{name}`"))
                                .help(format!("columns: {}", port.schema.names())))
                        }
                    }
                }
                Some(WatermarkSpec {
                    column: column.clone(),
                    delay: match &w.delay {
                        Some(d) => self.duration(d, "delay")?.max(0),
                        None => 0,
                    },
                    idle_timeout: w
                        .idle_timeout
                        .as_ref()
                        .map(|d| self.positive_duration(d, "idle_timeout"))
                        .transpose()?,
                })
            }
            None => None,
        };
        Ok(Node {
            id,
            name,
            parallelism,
            inputs: vec![],
            outputs,
            kind: NodeKind::Source(SourceSpec {
                connector,
                watermark,
            }),
        })
    }

    /// The `json` format of a source: its declared columns, an optional unnested array, and
    /// the schema of its one output port.
    fn json_format(
        &self,
        s: &SourceDecl,
        span: &Range<usize>,
        name: &str,
    ) -> Result<(FileFormat, Port), JobError> {
        let columns = s.columns.as_ref().ok_or_else(|| {
            self.err(
                span.clone(),
                format!("source `{name}` with format \"json\" needs `columns`"),
            )
            .help("columns = [{ name = \"user_id\", type = \"BIGINT\" }, ...]")
        })?;
        let mut specs = Vec::new();
        let mut fields = Vec::new();
        for c in columns {
            let c = c.get_ref();
            let data_type = parse_type(c.data_type.get_ref()).ok_or_else(|| {
                self.err(
                    c.data_type.span(),
                    format!("unknown type `{}`", c.data_type.get_ref()),
                )
                .help("use BIGINT, DOUBLE, DECIMAL(p, s), STRING, BOOLEAN or TIMESTAMP")
            })?;
            fields.push(Field::new(c.name.get_ref().clone(), data_type));
            specs.push(JsonColumnSpec {
                name: c.name.get_ref().clone(),
                data_type,
                path: c.path.as_ref().map(|p| p.get_ref().clone()),
            });
        }
        let unnest = match &s.unnest {
            Some(u) => {
                let u = u.get_ref();
                let path = u.path.get_ref().clone();
                let prefix = format!("{path}.");
                let reads_element = specs
                    .iter()
                    .any(|c| c.path.as_deref().unwrap_or(&c.name).starts_with(&prefix));
                if !reads_element {
                    return Err(self
                        .err(
                            u.path.span(),
                            format!("source `{name}`: no column reads the elements of `{path}`"),
                        )
                        .help(format!("give a column path = \"{path}.field\"")));
                }
                if let Some(c) = specs
                    .iter()
                    .find(|c| c.path.as_deref().unwrap_or(&c.name) == path)
                {
                    return Err(self
                        .err(
                            u.path.span(),
                            format!(
                                "source `{name}`: column `{}` reads the array `{path}` itself",
                                c.name
                            ),
                        )
                        .help(format!(
                            "read the elements' fields instead (path = \"{path}.field\")"
                        )));
                }
                if let Some(ordinal) = &u.ordinal {
                    if fields.iter().any(|f| &f.name == ordinal.get_ref()) {
                        return Err(self.err(
                            ordinal.span(),
                            format!(
                                "source `{name}`: `{}` is already a column",
                                ordinal.get_ref()
                            ),
                        ));
                    }
                    fields.push(Field::new(ordinal.get_ref().clone(), DataType::BigInt));
                }
                Some(UnnestSpec {
                    path,
                    ordinal: u.ordinal.as_ref().map(|o| o.get_ref().clone()),
                })
            }
            None => None,
        };
        Ok((
            FileFormat::Json {
                columns: specs,
                unnest,
            },
            Port {
                name: String::new(),
                schema: Arc::new(Schema::new(fields)),
                updating: false,
            },
        ))
    }

    fn build_sink(
        &self,
        id: NodeId,
        decl: Spanned<SinkDecl>,
        nodes: &[Node],
        id_of: &HashMap<String, NodeId>,
        default_parallelism: u32,
        max_parallelism: u32,
    ) -> Result<Node, JobError> {
        let span = decl.span();
        let s = decl.into_inner();
        let name = s.name.get_ref().clone();
        let parallelism =
            self.node_parallelism(&s.parallelism, default_parallelism, max_parallelism)?;
        let input = self.input(&s.input, nodes, id_of)?;
        let connector = match s.connector.get_ref().as_str() {
            "file" => SinkConnector::File {
                path: s
                    .path
                    .as_ref()
                    .ok_or_else(|| self.err(span.clone(), format!("sink `{name}` needs `path`")))?
                    .get_ref()
                    .clone(),
            },
            "stdout" => SinkConnector::Stdout,
            "blackhole" => SinkConnector::Blackhole,
            "postgres" => {
                let needs = |field: &Option<Str>, what: &str| {
                    field.as_ref().map(|v| v.get_ref().clone()).ok_or_else(|| {
                        self.err(
                            span.clone(),
                            format!("sink `{name}` needs `{what}` (connector \"postgres\")"),
                        )
                    })
                };
                let key = s
                    .key
                    .as_ref()
                    .map(|k| k.get_ref().clone())
                    .unwrap_or_default();
                if let Some(k) = &s.key {
                    for column in k.get_ref() {
                        if input.schema.index_of(column).is_none() {
                            return Err(self
                                .err(
                                    k.span(),
                                    format!(
                                        "sink `{name}`: key column `{column}` is not in its input"
                                    ),
                                )
                                .help(format!(
                                    "the input's columns: {}",
                                    input
                                        .schema
                                        .fields
                                        .iter()
                                        .map(|f| f.name.as_str())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                )));
                        }
                    }
                }
                if input.updating && key.is_empty() {
                    return Err(self
                        .err(span.clone(), format!("sink `{name}`: its input is an updating result, so the table needs `key`"))
                        .help("e.g. key = [\"window_start\", \"product_id\"]: the columns that identify a result row"));
                }
                let mut dimensions = Vec::new();
                for d in s.dimensions.iter().flatten() {
                    let d = d.get_ref();
                    let column = d.column.get_ref();
                    if input.schema.index_of(column).is_none() {
                        return Err(self
                            .err(d.column.span(), format!("sink `{name}`: dimension column `{column}` is not in its input"))
                            .help(format!("the input's columns: {}", input.schema.names())));
                    }
                    dimensions.push(DimensionSpec {
                        column: column.clone(),
                        table: d.table.get_ref().clone(),
                        natural: d.natural.as_ref().unwrap_or(&d.column).get_ref().clone(),
                        key: d.key.get_ref().clone(),
                    });
                }
                SinkConnector::Postgres {
                    url: needs(&s.url, "url")?,
                    table: needs(&s.table, "table")?,
                    key,
                    dimensions,
                }
            }
            other => {
                return Err(self
                    .err(
                        s.connector.span(),
                        format!("unknown sink connector `{other}`"),
                    )
                    .help("use \"file\", \"stdout\", \"blackhole\" or \"postgres\""))
            }
        };
        if let (Some(d), false) = (
            s.dimensions.as_ref().and_then(|d| d.first()),
            matches!(connector, SinkConnector::Postgres { .. }),
        ) {
            return Err(self
                .err(
                    d.span(),
                    format!("sink `{name}`: `dimensions` is a setting of connector \"postgres\""),
                )
                .help("remove it, or write to PostgreSQL"));
        }
        // Rows of one key must reach one subtask, in order.
        let keyed_columns = match &connector {
            SinkConnector::Postgres { key, .. } if !key.is_empty() => Some(key.clone()),
            _ => None,
        };
        // A retraction must reach the subtask that holds the row it retracts.
        let partitioning = if let (Some(key), true) = (&keyed_columns, parallelism > 1) {
            Partitioning::Hash(key.iter().map(|c| quote(c)).collect())
        } else if input.updating && parallelism > 1 {
            Partitioning::Hash(input.schema.fields.iter().map(|f| quote(&f.name)).collect())
        } else {
            forward(nodes, &input, parallelism)
        };
        Ok(Node {
            id,
            name,
            parallelism,
            inputs: vec![Edge {
                from: input.from,
                port: input.port,
                partitioning,
            }],
            outputs: vec![],
            kind: NodeKind::Sink(SinkSpec { connector }),
        })
    }

    fn build_operator(
        &self,
        id: NodeId,
        decl: Spanned<OperatorDecl>,
        nodes: &[Node],
        id_of: &HashMap<String, NodeId>,
        default_parallelism: u32,
        max_parallelism: u32,
    ) -> Result<Node, JobError> {
        let span = decl.span();
        let o = decl.into_inner();
        let name = o.name.get_ref().clone();
        let kind = o.kind.get_ref().as_str();
        let parallelism =
            self.node_parallelism(&o.parallelism, default_parallelism, max_parallelism)?;
        let allowed: &[&str] = match kind {
            "filter" => &["input", "where"],
            "select" => &["input", "columns"],
            "key_by" => &["input", "key"],
            "union" => &["inputs"],
            "window_aggregate" => &["input", "window", "group_by", "aggregates"],
            "group_aggregate" => &["input", "group_by", "aggregates", "ttl"],
            "join" => &["left", "right", "on", "columns", "ttl"],
            "window_join" => &[
                "left",
                "right",
                "on",
                "columns",
                "left_window_end",
                "right_window_end",
            ],
            "interval_join" => &[
                "left",
                "right",
                "on",
                "columns",
                "left_time",
                "right_time",
                "lower",
                "upper",
            ],
            "top_n" => &[
                "input",
                "partition_by",
                "order_by",
                "limit",
                "rank_column",
                "window_end",
                "ttl",
            ],
            "deduplicate" => &["input", "key", "time", "keep", "ttl"],
            "temporal_join" => &[
                "left",
                "right",
                "on",
                "columns",
                "left_time",
                "right_time",
                "retention",
                "join_type",
            ],
            "anomaly" => &[
                "input",
                "key",
                "time",
                "value",
                "every",
                "history",
                "min_history",
                "threshold",
                "min_spread",
            ],
            other => {
                const TYPES: [&str; 13] = [
                    "filter",
                    "select",
                    "key_by",
                    "union",
                    "window_aggregate",
                    "group_aggregate",
                    "join",
                    "window_join",
                    "interval_join",
                    "top_n",
                    "deduplicate",
                    "temporal_join",
                    "anomaly",
                ];
                return Err(self
                    .err(o.kind.span(), format!("unknown operator type `{other}`"))
                    .help(match suggest(other, TYPES) {
                        Some(s) => format!("did you mean `{s}`? Types: {}", TYPES.join(", ")),
                        None => format!("types: {}", TYPES.join(", ")),
                    }));
            }
        };
        self.check_fields(&o, kind, allowed)?;
        let ctx = OpCtx {
            c: self,
            name: &name,
            span: span.clone(),
            nodes,
            id_of,
            parallelism,
        };
        let (kind, inputs, outputs) = match kind {
            "filter" => ctx.filter(&o)?,
            "select" => ctx.select(&o)?,
            "key_by" => ctx.key_by(&o)?,
            "union" => ctx.union(&o)?,
            "window_aggregate" => ctx.aggregate(&o, true)?,
            "group_aggregate" => ctx.aggregate(&o, false)?,
            "join" | "window_join" | "interval_join" | "temporal_join" => ctx.join(&o, kind)?,
            "top_n" => ctx.top_n(&o)?,
            "deduplicate" => ctx.deduplicate(&o)?,
            "anomaly" => ctx.anomaly(&o)?,
            _ => unreachable!("checked above"),
        };
        let mut ports = vec![outputs];
        // Windows that drop late rows offer them on a second output, `NAME.late`, with the
        // input's columns (Flink's side output for late data).
        if let NodeKind::WindowAggregate { window, .. } = &kind {
            if !matches!(window, WindowSpec::Session { .. }) {
                let input = &inputs[0];
                ports.push(Port {
                    name: "late".into(),
                    schema: nodes[input.from].outputs[input.port].schema.clone(),
                    updating: false,
                });
            }
        }
        Ok(Node {
            id,
            name,
            parallelism,
            inputs,
            outputs: ports,
            kind,
        })
    }

    /// Refuses fields that the operator type does not use (they would be silently ignored).
    fn check_fields(&self, o: &OperatorDecl, kind: &str, allowed: &[&str]) -> Result<(), JobError> {
        fn one<T>(field: &Option<Spanned<T>>) -> Option<Range<usize>> {
            field.as_ref().map(Spanned::span)
        }
        // A list is located at its first item (or at `type` when empty).
        let list = |field: &Option<Vec<Str>>| -> Option<Range<usize>> {
            field
                .as_ref()
                .map(|v| v.first().map_or_else(|| o.kind.span(), Spanned::span))
        };
        let present = [
            ("input", one(&o.input)),
            ("inputs", list(&o.inputs)),
            ("left", one(&o.left)),
            ("right", one(&o.right)),
            ("where", one(&o.where_)),
            ("columns", list(&o.columns)),
            ("key", list(&o.key)),
            ("group_by", list(&o.group_by)),
            ("aggregates", list(&o.aggregates)),
            ("window", one(&o.window)),
            ("on", one(&o.on)),
            ("left_time", one(&o.left_time)),
            ("right_time", one(&o.right_time)),
            ("lower", one(&o.lower)),
            ("upper", one(&o.upper)),
            ("left_window_end", one(&o.left_window_end)),
            ("right_window_end", one(&o.right_window_end)),
            ("partition_by", list(&o.partition_by)),
            ("order_by", list(&o.order_by)),
            ("limit", one(&o.limit)),
            ("rank_column", one(&o.rank_column)),
            ("window_end", one(&o.window_end)),
            ("time", one(&o.time)),
            ("keep", one(&o.keep)),
            ("retention", one(&o.retention)),
            ("ttl", one(&o.ttl)),
            ("join_type", one(&o.join_type)),
            ("value", one(&o.value)),
            ("every", one(&o.every)),
            ("history", one(&o.history)),
            ("min_history", one(&o.min_history)),
            ("threshold", one(&o.threshold)),
            ("min_spread", one(&o.min_spread)),
        ];
        for (field, at) in present {
            if let Some(at) = at.filter(|_| !allowed.contains(&field)) {
                return Err(self
                    .err(
                        at,
                        format!("field `{field}` does not apply to a `{kind}` operator"),
                    )
                    .help(format!("`{kind}` takes: {}", allowed.join(", "))));
            }
        }
        Ok(())
    }
}

/// Context for building one operator.
struct OpCtx<'c, 'a> {
    c: &'c Compiler<'a>,
    name: &'c str,
    span: Range<usize>,
    nodes: &'c [Node],
    id_of: &'c HashMap<String, NodeId>,
    parallelism: u32,
}

type Built = (NodeKind, Vec<Edge>, Port);

/// A forward edge if parallelism matches (chainable), else round-robin.
fn forward(nodes: &[Node], input: &Input, parallelism: u32) -> Partitioning {
    if nodes[input.from].parallelism == parallelism {
        Partitioning::Forward
    } else {
        Partitioning::Rebalance
    }
}

/// A column name as an expression (quoted when it is not a plain identifier).
fn quote(name: &str) -> String {
    if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
    {
        name.to_string()
    } else {
        format!("`{name}`")
    }
}

/// Parses a SQL type name.
fn parse_type(text: &str) -> Option<DataType> {
    let t = text.trim().to_ascii_uppercase();
    Some(match t.as_str() {
        "BIGINT" | "INT" | "INTEGER" | "SMALLINT" | "TINYINT" => DataType::BigInt,
        "DOUBLE" | "FLOAT" | "REAL" => DataType::Double,
        "STRING" | "VARCHAR" | "TEXT" => DataType::String,
        "BOOLEAN" | "BOOL" => DataType::Boolean,
        "TIMESTAMP" | "TIMESTAMP(3)" => DataType::Timestamp,
        _ => {
            let inner = t.strip_prefix("DECIMAL(")?.strip_suffix(')')?;
            let (p, s) = inner.split_once(',')?;
            let precision: u8 = p.trim().parse().ok()?;
            let scale: u8 = s.trim().parse().ok()?;
            if precision == 0 || precision > 38 || scale > precision {
                return None;
            }
            DataType::Decimal { precision, scale }
        }
    })
}

impl OpCtx<'_, '_> {
    fn need<'x, T>(
        &self,
        field: &'x Option<T>,
        what: &str,
        example: &str,
    ) -> Result<&'x T, JobError> {
        field.as_ref().ok_or_else(|| {
            self.c
                .err(
                    self.span.clone(),
                    format!("operator `{}` needs `{what}`", self.name),
                )
                .help(format!("for example: {what} = {example}"))
        })
    }

    fn single_input(&self, o: &OperatorDecl) -> Result<Input, JobError> {
        let input = self.need(&o.input, "input", "\"events.bid\"")?;
        self.c.input(input, self.nodes, self.id_of)
    }

    fn append_only(&self, input: &Input, at: &Str, what: &str) -> Result<(), JobError> {
        if input.updating {
            return Err(self
                .c
                .err(at.span(), format!("{what} `{}` needs an append-only input, but its input carries updates", self.name))
                .help("updates come from group_aggregate, top_n without window_end and deduplicate; feed this operator before them"));
        }
        Ok(())
    }

    /// Parses and type-checks `expr [AS name]` in `scope`; returns the named expression and type.
    fn named(
        &self,
        item: &Str,
        scope: &Scope,
        field: &str,
    ) -> Result<(NamedExpr, DataType), JobError> {
        let what = format!("operator `{}`, field `{field}`", self.name);
        let text = item.get_ref();
        let (ast, alias) =
            expr::parse_select_item(text).map_err(|e| self.c.expr_err(item, &what, e))?;
        let compiled = expr::compile(&ast, scope).map_err(|e| self.c.expr_err(item, &what, e))?;
        let name = match alias.or_else(|| expr::default_name(&ast)) {
            Some(n) => n,
            None => {
                return Err(self
                    .c
                    .err(item.span(), format!("{what}: `{text}` needs a name"))
                    .help(format!("write `{text} AS some_name`")))
            }
        };
        Ok((
            NamedExpr {
                expr: text[ast.span.clone()].to_string(),
                name,
            },
            compiled.data_type(),
        ))
    }

    fn named_list(
        &self,
        items: &[Str],
        scope: &Scope,
        field: &str,
    ) -> Result<Vec<(NamedExpr, DataType)>, JobError> {
        items
            .iter()
            .enumerate()
            .map(|(i, item)| self.named(item, scope, &format!("{field}[{i}]")))
            .collect()
    }

    fn schema_of(
        &self,
        items: &[(NamedExpr, DataType)],
        at: &Range<usize>,
    ) -> Result<SchemaRef, JobError> {
        let mut fields: Vec<Field> = Vec::new();
        for (n, t) in items {
            if fields.iter().any(|f| f.name == n.name) {
                return Err(self
                    .c
                    .err(
                        at.clone(),
                        format!(
                            "operator `{}` produces the column `{}` twice",
                            self.name, n.name
                        ),
                    )
                    .help("rename one with AS"));
            }
            fields.push(Field::new(n.name.clone(), *t));
        }
        Ok(Arc::new(Schema::new(fields)))
    }

    fn edge(&self, input: &Input, partitioning: Partitioning) -> Edge {
        Edge {
            from: input.from,
            port: input.port,
            partitioning,
        }
    }

    fn filter(&self, o: &OperatorDecl) -> Result<Built, JobError> {
        let input = self.single_input(o)?;
        let predicate = self.need(&o.where_, "where", "\"price > 100\"")?;
        let what = format!("operator `{}`, field `where`", self.name);
        let ast = expr::parse_expr(predicate.get_ref())
            .map_err(|e| self.c.expr_err(predicate, &what, e))?;
        let compiled = expr::compile(&ast, &Scope::single(&input.schema))
            .map_err(|e| self.c.expr_err(predicate, &what, e))?;
        if !matches!(compiled.data_type(), DataType::Boolean | DataType::Null) {
            return Err(self
                .c
                .err(
                    predicate.span(),
                    format!(
                        "{what}: the condition is {}, not BOOLEAN",
                        compiled.data_type()
                    ),
                )
                .help("compare it, e.g. `x > 0`"));
        }
        let port = Port {
            name: String::new(),
            schema: input.schema.clone(),
            updating: input.updating,
        };
        let edge = self.edge(&input, forward(self.nodes, &input, self.parallelism));
        Ok((
            NodeKind::Filter {
                predicate: predicate.get_ref().clone(),
            },
            vec![edge],
            port,
        ))
    }

    fn select(&self, o: &OperatorDecl) -> Result<Built, JobError> {
        let input = self.single_input(o)?;
        let items = self.need(
            &o.columns,
            "columns",
            "[\"auction\", \"0.908 * price AS price\"]",
        )?;
        let named = self.named_list(items, &Scope::single(&input.schema), "columns")?;
        let schema = self.schema_of(&named, &self.span)?;
        let edge = self.edge(&input, forward(self.nodes, &input, self.parallelism));
        Ok((
            NodeKind::Select {
                columns: named.into_iter().map(|(n, _)| n).collect(),
            },
            vec![edge],
            Port {
                name: String::new(),
                schema,
                updating: input.updating,
            },
        ))
    }

    fn key_by(&self, o: &OperatorDecl) -> Result<Built, JobError> {
        let input = self.single_input(o)?;
        let keys = self.need(&o.key, "key", "[\"auction\"]")?;
        let named = self.named_list(keys, &Scope::single(&input.schema), "key")?;
        let key: Vec<String> = named.into_iter().map(|(n, _)| n.expr).collect();
        Ok((
            NodeKind::KeyBy { key: key.clone() },
            vec![self.edge(&input, Partitioning::Hash(key))],
            Port {
                name: String::new(),
                schema: input.schema.clone(),
                updating: input.updating,
            },
        ))
    }

    fn union(&self, o: &OperatorDecl) -> Result<Built, JobError> {
        let list = self.need(&o.inputs, "inputs", "[\"a\", \"b\"]")?;
        if list.len() < 2 {
            return Err(self.c.err(
                self.span.clone(),
                format!("union `{}` needs at least two inputs", self.name),
            ));
        }
        let inputs: Vec<Input> = list
            .iter()
            .map(|r| self.c.input(r, self.nodes, self.id_of))
            .collect::<Result<_, _>>()?;
        let first = &inputs[0].schema;
        for (i, input) in inputs.iter().enumerate().skip(1) {
            let same = input.schema.fields.len() == first.fields.len()
                && input
                    .schema
                    .fields
                    .iter()
                    .zip(&first.fields)
                    .all(|(a, b)| a.data_type == b.data_type);
            if !same {
                return Err(self
                    .c
                    .err(
                        list[i].span(),
                        format!(
                            "union `{}`: input `{}` has columns ({}) but the first input has ({})",
                            self.name,
                            list[i].get_ref(),
                            input.schema.names(),
                            first.names()
                        ),
                    )
                    .help("make the inputs' column types match with a select first"));
            }
        }
        let edges = inputs
            .iter()
            .map(|i| self.edge(i, forward(self.nodes, i, self.parallelism)))
            .collect();
        Ok((
            NodeKind::Union,
            edges,
            Port {
                name: String::new(),
                schema: first.clone(),
                updating: inputs.iter().any(|i| i.updating),
            },
        ))
    }

    fn aggregate(&self, o: &OperatorDecl, windowed: bool) -> Result<Built, JobError> {
        let input = self.single_input(o)?;
        let scope = Scope::single(&input.schema);
        let group = self.named_list(o.group_by.as_deref().unwrap_or(&[]), &scope, "group_by")?;
        // No aggregates means distinct rows per group (SELECT DISTINCT / GROUP BY only).
        let aggs_decl: &[Str] = o.aggregates.as_deref().unwrap_or(&[]);
        let mut aggregates = Vec::new();
        for (i, item) in aggs_decl.iter().enumerate() {
            let what = format!("operator `{}`, field `aggregates[{i}]`", self.name);
            let text = item.get_ref();
            let (ast, alias) =
                expr::parse_select_item(text).map_err(|e| self.c.expr_err(item, &what, e))?;
            let call = expr::compile_aggregate(&ast, &scope)
                .map_err(|e| self.c.expr_err(item, &what, e))?;
            let Some(name) = alias else {
                return Err(self
                    .c
                    .err(item.span(), format!("{what}: the aggregate needs a name"))
                    .help(format!("write `{text} AS some_name`")));
            };
            aggregates.push((
                NamedExpr {
                    expr: text[ast.span.clone()].to_string(),
                    name,
                },
                call.result_type,
            ));
        }
        let mut fields: Vec<(NamedExpr, DataType)> = group.clone();
        let (kind, updating) = if windowed {
            let window_decl = self.need(
                &o.window,
                "window",
                "{ type = \"tumble\", time = \"dateTime\", size = \"10s\" }",
            )?;
            let at = o.input.as_ref().expect("checked by single_input");
            self.append_only(&input, at, "window aggregate")?;
            let window = self.window(window_decl, &input.schema)?;
            for col in ["window_start", "window_end"] {
                fields.push((
                    NamedExpr {
                        expr: col.into(),
                        name: col.into(),
                    },
                    DataType::Timestamp,
                ));
            }
            (
                NodeKind::WindowAggregate {
                    window,
                    group_by: group.iter().map(|(n, _)| n.clone()).collect(),
                    aggregates: aggregates.iter().map(|(n, _)| n.clone()).collect(),
                },
                false,
            )
        } else {
            (
                NodeKind::GroupAggregate {
                    group_by: group.iter().map(|(n, _)| n.clone()).collect(),
                    aggregates: aggregates.iter().map(|(n, _)| n.clone()).collect(),
                    ttl: self.ttl(o)?,
                },
                true,
            )
        };
        fields.extend(aggregates);
        let schema = self.schema_of(&fields, &self.span)?;
        let key = group.iter().map(|(n, _)| n.expr.clone()).collect();
        Ok((
            kind,
            vec![self.edge(&input, Partitioning::Hash(key))],
            Port {
                name: String::new(),
                schema,
                updating,
            },
        ))
    }

    fn time_column(&self, field: &Str, schema: &Schema, what: &str) -> Result<String, JobError> {
        let name = field.get_ref();
        match schema.index_of(name) {
            Some(i) if schema.fields[i].data_type == DataType::Timestamp => Ok(name.clone()),
            Some(i) => Err(self.c.err(
                field.span(),
                format!(
                    "{what} `{name}` of operator `{}` is {}, not TIMESTAMP",
                    self.name, schema.fields[i].data_type
                ),
            )),
            None => Err(self
                .c
                .err(
                    field.span(),
                    format!(
                        "{what}: operator `{}` has no input column `{name}`",
                        self.name
                    ),
                )
                .help(
                    match suggest(name, schema.fields.iter().map(|f| f.name.as_str())) {
                        Some(s) => format!("did you mean `{s}`? Columns: {}", schema.names()),
                        None => format!("columns: {}", schema.names()),
                    },
                )),
        }
    }

    fn window(
        &self,
        decl: &Spanned<crate::spec::WindowDecl>,
        schema: &Schema,
    ) -> Result<WindowSpec, JobError> {
        let w = decl.get_ref();
        let need = |f: &Option<Str>, what: &str| -> Result<Str, JobError> {
            f.clone().ok_or_else(|| {
                self.c.err(
                    decl.span(),
                    format!("a `{}` window needs `{what}`", w.kind.get_ref()),
                )
            })
        };
        Ok(match w.kind.get_ref().as_str() {
            "tumble" => WindowSpec::Tumble {
                time: self.time_column(&need(&w.time, "time")?, schema, "window time")?,
                size: self.c.positive_duration(&need(&w.size, "size")?, "size")?,
            },
            "hop" => {
                let size = self.c.positive_duration(&need(&w.size, "size")?, "size")?;
                let slide_decl = need(&w.slide, "slide")?;
                let slide = self.c.positive_duration(&slide_decl, "slide")?;
                if size % slide != 0 {
                    return Err(self
                        .c
                        .err(
                            slide_decl.span(),
                            "a hop window's size must be a multiple of its slide",
                        )
                        .help("e.g. size = \"10s\", slide = \"2s\""));
                }
                WindowSpec::Hop {
                    time: self.time_column(&need(&w.time, "time")?, schema, "window time")?,
                    size,
                    slide,
                }
            }
            "session" => WindowSpec::Session {
                time: self.time_column(&need(&w.time, "time")?, schema, "window time")?,
                gap: self.c.positive_duration(&need(&w.gap, "gap")?, "gap")?,
            },
            "inherit" => {
                let start = w
                    .start
                    .clone()
                    .unwrap_or_else(|| Spanned::new(decl.span(), "window_start".into()));
                let end = w
                    .end
                    .clone()
                    .unwrap_or_else(|| Spanned::new(decl.span(), "window_end".into()));
                WindowSpec::Inherit {
                    start: self.time_column(&start, schema, "window start")?,
                    end: self.time_column(&end, schema, "window end")?,
                }
            }
            other => {
                return Err(self
                    .c
                    .err(w.kind.span(), format!("unknown window type `{other}`"))
                    .help("use \"tumble\", \"hop\", \"session\" or \"inherit\""))
            }
        })
    }

    fn join(&self, o: &OperatorDecl, kind: &str) -> Result<Built, JobError> {
        let left_ref = self.need(&o.left, "left", "\"auctions AS A\"")?;
        let right_ref = self.need(&o.right, "right", "\"bids AS B\"")?;
        let left = self.c.input(left_ref, self.nodes, self.id_of)?;
        let right = self.c.input(right_ref, self.nodes, self.id_of)?;
        self.append_only(&left, left_ref, "join")?;
        self.append_only(&right, right_ref, "join")?;
        let left_alias = left.alias.clone().unwrap_or_else(|| left.short.clone());
        let right_alias = right.alias.clone().unwrap_or_else(|| right.short.clone());
        if left_alias == right_alias {
            return Err(self
                .c
                .err(
                    right_ref.span(),
                    format!(
                        "both sides of join `{}` are called `{left_alias}`",
                        self.name
                    ),
                )
                .help("give them aliases: left = \"x AS A\", right = \"y AS B\""));
        }
        let scope = Scope::new(vec![
            (Some(left_alias.as_str()), &*left.schema),
            (Some(right_alias.as_str()), &*right.schema),
        ]);
        let on = self.need(&o.on, "on", "\"A.id = B.auction\"")?;
        let what = format!("operator `{}`, field `on`", self.name);
        let ast = expr::parse_expr(on.get_ref()).map_err(|e| self.c.expr_err(on, &what, e))?;
        let compiled = expr::compile(&ast, &scope).map_err(|e| self.c.expr_err(on, &what, e))?;
        if compiled.data_type() != DataType::Boolean {
            return Err(self.c.err(
                on.span(),
                format!("{what}: the join condition is not BOOLEAN"),
            ));
        }
        let (mut left_key, mut right_key, mut residual) = (Vec::new(), Vec::new(), Vec::new());
        let left_width = left.schema.len();
        for conjunct in ast.conjuncts() {
            if let AstKind::Binary {
                op: BinaryOp::Eq,
                left: a,
                right: b,
            } = &conjunct.kind
            {
                if let (Some((qa, na)), Some((qb, nb))) = (a.as_column(), b.as_column()) {
                    let ra = scope.resolve(qa, na, a.span.clone());
                    let rb = scope.resolve(qb, nb, b.span.clone());
                    if let (Ok((ia, ta)), Ok((ib, tb))) = (ra, rb) {
                        let (l, r, tl, tr) = if ia < left_width && ib >= left_width {
                            (ia, ib - left_width, ta, tb)
                        } else if ib < left_width && ia >= left_width {
                            (ib, ia - left_width, tb, ta)
                        } else {
                            residual.push(conjunct);
                            continue;
                        };
                        if tl != tr {
                            return Err(self
                                .c
                                .err(on.span(), format!("{what}: join keys `{}` ({tl}) and `{}` ({tr}) have different types", left.schema.fields[l].name, right.schema.fields[r].name))
                                .help("CAST one side in a select before the join"));
                        }
                        left_key.push(quote(&left.schema.fields[l].name));
                        right_key.push(quote(&right.schema.fields[r].name));
                        continue;
                    }
                }
            }
            residual.push(conjunct);
        }
        if left_key.is_empty() {
            return Err(self
                .c
                .err(
                    on.span(),
                    format!("{what}: no equality between a left and a right column"),
                )
                .help(format!(
                    "a join needs a key, e.g. `{left_alias}.id = {right_alias}.id`"
                )));
        }
        let text = on.get_ref();
        let condition = (!residual.is_empty()).then(|| {
            residual
                .iter()
                .map(|c| format!("({})", &text[c.span.clone()]))
                .collect::<Vec<_>>()
                .join(" AND ")
        });
        let join_kind = match kind {
            "join" => JoinKind::Regular { ttl: self.ttl(o)? },
            "window_join" => {
                let default_end = |f: &Option<Str>| {
                    f.clone()
                        .unwrap_or_else(|| Spanned::new(self.span.clone(), "window_end".into()))
                };
                JoinKind::Window {
                    left_end: self.time_column(
                        &default_end(&o.left_window_end),
                        &left.schema,
                        "left window end",
                    )?,
                    right_end: self.time_column(
                        &default_end(&o.right_window_end),
                        &right.schema,
                        "right window end",
                    )?,
                }
            }
            "temporal_join" => {
                let lt = self.need(&o.left_time, "left_time", "\"ts\"")?;
                let rt = self.need(&o.right_time, "right_time", "\"ts\"")?;
                let retention = match &o.retention {
                    Some(r) => self.c.positive_duration(r, "retention")?,
                    None => 3_600_000,
                };
                let left_outer = match o.join_type.as_ref().map(|j| (j.get_ref().as_str(), j.span())) {
                    None | Some(("inner", _)) => false,
                    Some(("left", _)) => true,
                    Some((other, at)) => {
                        return Err(self
                            .c
                            .err(at, format!("`join_type`: unknown join type `{other}`"))
                            .help("use \"inner\" (drop left rows without a version) or \"left\" (keep them with NULLs)"))
                    }
                };
                JoinKind::Temporal {
                    left_time: self.time_column(lt, &left.schema, "left_time")?,
                    right_time: self.time_column(rt, &right.schema, "right_time")?,
                    retention,
                    left_outer,
                }
            }
            _ => {
                let lt = self.need(&o.left_time, "left_time", "\"dateTime\"")?;
                let rt = self.need(&o.right_time, "right_time", "\"dateTime\"")?;
                let lower = self
                    .c
                    .duration(self.need(&o.lower, "lower", "\"-10s\"")?, "lower")?;
                let upper_decl = self.need(&o.upper, "upper", "\"0s\"")?;
                let upper = self.c.duration(upper_decl, "upper")?;
                if lower > upper {
                    return Err(self
                        .c
                        .err(upper_decl.span(), "`upper` must not be below `lower`"));
                }
                JoinKind::Interval {
                    left_time: self.time_column(lt, &left.schema, "left_time")?,
                    right_time: self.time_column(rt, &right.schema, "right_time")?,
                    lower,
                    upper,
                }
            }
        };
        let columns = match &o.columns {
            Some(items) => self.named_list(items, &scope, "columns")?,
            None => {
                let mut all = Vec::new();
                for (alias, schema) in [(&left_alias, &left.schema), (&right_alias, &right.schema)]
                {
                    for f in &schema.fields {
                        all.push((
                            NamedExpr {
                                expr: format!("{}.{}", quote(alias), quote(&f.name)),
                                name: f.name.clone(),
                            },
                            f.data_type,
                        ));
                    }
                }
                all
            }
        };
        let schema = self.schema_of(&columns, &self.span).map_err(|e| {
            e.help("list the output with `columns = [\"A.x\", \"B.x AS other_x\"]`")
        })?;
        Ok((
            NodeKind::Join(JoinSpec {
                kind: join_kind,
                left_alias,
                right_alias,
                left_key: left_key.clone(),
                right_key: right_key.clone(),
                condition,
                columns: columns.into_iter().map(|(n, _)| n).collect(),
            }),
            vec![
                self.edge(&left, Partitioning::Hash(left_key)),
                self.edge(&right, Partitioning::Hash(right_key)),
            ],
            Port {
                name: String::new(),
                schema,
                updating: false,
            },
        ))
    }

    fn anomaly(&self, o: &OperatorDecl) -> Result<Built, JobError> {
        let input = self.single_input(o)?;
        self.append_only(&input, o.input.as_ref().expect("checked"), "anomaly")?;
        let scope = Scope::single(&input.schema);
        let keys = self.need(&o.key, "key", "[\"metric\"]")?;
        let key = self.named_list(keys, &scope, "key")?;
        let time_decl = o
            .time
            .clone()
            .unwrap_or_else(|| Spanned::new(self.span.clone(), "window_end".into()));
        let time = self.time_column(&time_decl, &input.schema, "window end")?;
        let value_decl = self.need(&o.value, "value", "\"revenue\"")?;
        let (value, value_type) = self.named(value_decl, &scope, "value")?;
        if !matches!(
            value_type,
            DataType::BigInt | DataType::Double | DataType::Decimal { .. }
        ) {
            return Err(self.c.err(
                value_decl.span(),
                format!(
                    "anomaly `{}`: `value` is {value_type}, not a number",
                    self.name
                ),
            ));
        }
        let every = self
            .c
            .positive_duration(self.need(&o.every, "every", "\"1min\"")?, "every")?;
        let count =
            |v: &Option<Spanned<i64>>, field: &str, default: i64| -> Result<usize, JobError> {
                match v {
                    Some(n) => Ok(self.c.positive(n, field)? as usize),
                    None => Ok(default as usize),
                }
            };
        let history = count(&o.history, "history", 30)?;
        let min_history = count(&o.min_history, "min_history", 10)?;
        if min_history > history {
            let at = o
                .min_history
                .as_ref()
                .map_or(self.span.clone(), |m| m.span());
            return Err(self.c.err(
                at,
                format!(
                    "anomaly `{}`: `min_history` ({min_history}) exceeds `history` ({history})",
                    self.name
                ),
            ));
        }
        let positive =
            |v: &Option<Spanned<f64>>, field: &str, default: f64| -> Result<f64, JobError> {
                match v {
                    Some(x) if *x.get_ref() >= 0.0 && x.get_ref().is_finite() => Ok(*x.get_ref()),
                    Some(x) => Err(self
                        .c
                        .err(x.span(), format!("`{field}` must be a non-negative number"))),
                    None => Ok(default),
                }
            };
        let threshold = positive(&o.threshold, "threshold", 3.5)?;
        let min_spread = positive(&o.min_spread, "min_spread", 0.01)?;
        let mut fields = key.clone();
        for (name, t) in [
            ("window_start", DataType::Timestamp),
            ("window_end", DataType::Timestamp),
            ("observed", DataType::Double),
            ("expected", DataType::Double),
            ("deviation", DataType::Double),
            ("score", DataType::Double),
        ] {
            fields.push((
                NamedExpr {
                    expr: name.into(),
                    name: name.into(),
                },
                t,
            ));
        }
        let schema = self.schema_of(&fields, &self.span)?;
        let partition = key.iter().map(|(n, _)| n.expr.clone()).collect();
        Ok((
            NodeKind::Anomaly(AnomalySpec {
                key: key.into_iter().map(|(n, _)| n).collect(),
                time,
                value: value.expr,
                every,
                history,
                min_history,
                threshold,
                min_spread,
            }),
            vec![self.edge(&input, Partitioning::Hash(partition))],
            Port {
                name: String::new(),
                schema,
                updating: false,
            },
        ))
    }

    fn top_n(&self, o: &OperatorDecl) -> Result<Built, JobError> {
        let input = self.single_input(o)?;
        self.append_only(&input, o.input.as_ref().expect("checked"), "top_n")?;
        let scope = Scope::single(&input.schema);
        let partition = self.named_list(
            o.partition_by.as_deref().unwrap_or(&[]),
            &scope,
            "partition_by",
        )?;
        let order_items = self.need(&o.order_by, "order_by", "[\"price DESC\"]")?;
        let mut order_by = Vec::new();
        for (i, item) in order_items.iter().enumerate() {
            let text = item.get_ref().trim();
            let upper = text.to_ascii_uppercase();
            let (expr_text, descending) = if upper.ends_with(" DESC") {
                (&text[..text.len() - 5], true)
            } else if upper.ends_with(" ASC") {
                (&text[..text.len() - 4], false)
            } else {
                (text, false)
            };
            let what = format!("operator `{}`, field `order_by[{i}]`", self.name);
            let ast = expr::parse_expr(expr_text).map_err(|e| self.c.expr_err(item, &what, e))?;
            expr::compile(&ast, &scope).map_err(|e| self.c.expr_err(item, &what, e))?;
            order_by.push(OrderBy {
                expr: expr_text.trim().to_string(),
                descending,
            });
        }
        let limit_decl = self.need(&o.limit, "limit", "10")?;
        let limit = self.c.positive(limit_decl, "limit")? as usize;
        let window_end = o
            .window_end
            .as_ref()
            .map(|w| self.time_column(w, &input.schema, "window_end"))
            .transpose()?;
        let ttl = self.ttl(o)?;
        if let (Some(at), Some(_)) = (&o.ttl, &window_end) {
            return Err(self
                .c
                .err(at.span(), "`ttl` does not apply to a top-N per window")
                .help("its state ends with each window; remove `ttl`, or `window_end` for a continuous top-N"));
        }
        let mut fields = input.schema.fields.clone();
        if let Some(rank) = &o.rank_column {
            if input.schema.index_of(rank.get_ref()).is_some() {
                return Err(self.c.err(
                    rank.span(),
                    format!("the input already has a column `{}`", rank.get_ref()),
                ));
            }
            fields.push(Field::new(rank.get_ref().clone(), DataType::BigInt));
        }
        let partition_by: Vec<String> = partition.iter().map(|(n, _)| n.expr.clone()).collect();
        Ok((
            NodeKind::TopN(TopNSpec {
                partition_by: partition_by.clone(),
                order_by,
                limit,
                rank_column: o.rank_column.as_ref().map(|r| r.get_ref().clone()),
                window_end: window_end.clone(),
                ttl,
            }),
            vec![self.edge(&input, Partitioning::Hash(partition_by))],
            Port {
                name: String::new(),
                schema: Arc::new(Schema::new(fields)),
                updating: window_end.is_none(),
            },
        ))
    }

    /// The state TTL of a join, group aggregate or deduplication, if it has one.
    fn ttl(&self, o: &OperatorDecl) -> Result<Option<i64>, JobError> {
        o.ttl
            .as_ref()
            .map(|t| self.c.positive_duration(t, "ttl"))
            .transpose()
    }

    fn deduplicate(&self, o: &OperatorDecl) -> Result<Built, JobError> {
        let input = self.single_input(o)?;
        self.append_only(&input, o.input.as_ref().expect("checked"), "deduplicate")?;
        let keys = self.need(&o.key, "key", "[\"bidder\", \"auction\"]")?;
        let named = self.named_list(keys, &Scope::single(&input.schema), "key")?;
        let time = self.time_column(
            self.need(&o.time, "time", "\"dateTime\"")?,
            &input.schema,
            "time",
        )?;
        let keep_decl = self.need(&o.keep, "keep", "\"last\"")?;
        let keep = match keep_decl.get_ref().as_str() {
            "first" => Keep::First,
            "last" => Keep::Last,
            other => {
                return Err(self.c.err(
                    keep_decl.span(),
                    format!("`keep` must be \"first\" or \"last\", found \"{other}\""),
                ))
            }
        };
        let key: Vec<String> = named.into_iter().map(|(n, _)| n.expr).collect();
        Ok((
            NodeKind::Deduplicate(DeduplicateSpec {
                key: key.clone(),
                time,
                keep,
                ttl: self.ttl(o)?,
            }),
            vec![self.edge(&input, Partitioning::Hash(key))],
            Port {
                name: String::new(),
                schema: input.schema.clone(),
                updating: true,
            },
        ))
    }
}
