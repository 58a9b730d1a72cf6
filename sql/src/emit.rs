//! The job file the planner writes: TOML in the shape people write by hand, so the plan of a
//! script can be read, diffed against a hand-written job and submitted to a cluster as it is.

use eddy_jobs::{compile_str, CompileOptions};
use eddy_runtime::types::Schema;
use std::collections::BTreeSet;

/// A TOML basic string.
pub fn quote(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// The job being written.
#[derive(Clone, Debug)]
pub struct Emitter {
    name: String,
    sources: Vec<String>,
    operators: Vec<String>,
    sinks: Vec<String>,
    /// The `input` of each sink, as written in its block.
    sink_inputs: Vec<String>,
    names: BTreeSet<String>,
    /// Each operator's name and its fields, to find equal ones.
    bodies: Vec<(String, String)>,
    /// Parameters the job file declares secret (left as placeholders).
    secrets: Vec<String>,
    /// `table.exec.state.ttl` in milliseconds, for the operators added from now on that keep
    /// every key (regular joins, group aggregates, deduplication, continuous top-N).
    pub state_ttl_ms: Option<i64>,
}

/// A node name from `base`: the characters the job compiler accepts, and unique.
fn clean(base: &str) -> String {
    let cleaned: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "node".into()
    } else {
        cleaned
    }
}

fn block(kind: &str, fields: &[(&str, String)]) -> String {
    let mut out = format!("[[{kind}]]\n");
    for (key, value) in fields {
        out.push_str(&format!("{key} = {value}\n"));
    }
    out
}

impl Emitter {
    pub fn new(name: &str) -> Emitter {
        Emitter {
            name: name.to_string(),
            sources: Vec::new(),
            operators: Vec::new(),
            sinks: Vec::new(),
            sink_inputs: Vec::new(),
            names: BTreeSet::new(),
            bodies: Vec::new(),
            secrets: Vec::new(),
            state_ttl_ms: None,
        }
    }

    pub fn secret_params(&mut self, names: &BTreeSet<String>) {
        self.secrets = names.iter().cloned().collect();
    }

    fn unique(&mut self, base: &str) -> String {
        let base = clean(base);
        let mut name = base.clone();
        let mut n = 1;
        while self.names.contains(&name.to_ascii_lowercase()) {
            n += 1;
            name = format!("{base}_{n}");
        }
        self.names.insert(name.to_ascii_lowercase());
        name
    }

    /// Adds a source; its name.
    pub fn source(&mut self, base: &str, fields: &[(&str, String)]) -> String {
        let name = self.unique(base);
        let mut all = vec![("name", quote(&name))];
        all.extend(fields.iter().cloned());
        self.sources.push(block("source", &all));
        name
    }

    /// Adds an operator of `kind`; its name. An operator equal to one already added is that
    /// one: a query that reads the same subquery twice (Nexmark q5) computes it once.
    pub fn operator(&mut self, base: &str, kind: &str, fields: &[(&str, String)]) -> String {
        let ttl = match self.state_ttl_ms {
            Some(ms)
                if matches!(kind, "join" | "group_aggregate" | "deduplicate")
                    || (kind == "top_n" && !fields.iter().any(|(k, _)| *k == "window_end")) =>
            {
                vec![("ttl", quote(&format!("{ms}ms")))]
            }
            _ => Vec::new(),
        };
        let fields = &[fields, &ttl[..]].concat();
        let body = block("", &[&[("type", quote(kind))][..], fields].concat());
        if let Some((name, _)) = self.bodies.iter().find(|(_, b)| *b == body) {
            return name.clone();
        }
        let name = self.unique(base);
        self.bodies.push((name.clone(), body));
        let mut all = vec![("name", quote(&name)), ("type", quote(kind))];
        all.extend(fields.iter().cloned());
        self.operators.push(block("operator", &all));
        name
    }

    pub fn sink(&mut self, base: &str, fields: &[(&str, String)]) {
        let name = self.unique(base);
        let mut all = vec![("name", quote(&name))];
        all.extend(fields.iter().cloned());
        self.sinks.push(block("sink", &all));
        if let Some((_, input)) = fields.iter().find(|(k, _)| *k == "input") {
            self.sink_inputs.push(input.clone());
        }
    }

    /// The whole job file.
    pub fn text(&self) -> String {
        let mut out = format!(
            "# Planned by Eddy's SQL front end.\nname = {}\nparallelism = 1\n",
            quote(&self.name)
        );
        if !self.secrets.is_empty() {
            out.push_str("\n[params]\n");
            for name in &self.secrets {
                out.push_str(&format!(
                    "{} = {{ description = \"given at submission with --secret-param\", secret = true }}\n",
                    quote(name)
                ));
            }
        }
        for b in self
            .sources
            .iter()
            .chain(&self.operators)
            .chain(&self.sinks)
        {
            out.push('\n');
            out.push_str(b);
        }
        out
    }

    /// The schema of `input` (a node, or `source.port`), from the job compiler: the job so far
    /// with a sink on it.
    pub fn schema_of(&self, input: &str) -> Result<Schema, String> {
        // The sinks so far become blackholes (their connectors' settings play no part), so
        // what feeds them stays used.
        let mut probe = self.clone();
        probe.sinks.clear();
        let inputs = std::mem::take(&mut probe.sink_inputs);
        for fed in inputs.into_iter().chain([quote(input)]) {
            probe.sink(
                "schema_probe",
                &[("input", fed), ("connector", quote("blackhole"))],
            );
        }
        // Secrets are filled on the cluster; any value compiles the same graph.
        let options = CompileOptions {
            params: self
                .secrets
                .iter()
                .map(|n| (n.clone(), "secret".to_string()))
                .collect(),
            ..Default::default()
        };
        let graph = compile_str("<plan>", &probe.text(), &options).map_err(|e| e.to_string())?;
        let (node, port) = input.split_once('.').unwrap_or((input, ""));
        graph
            .nodes
            .iter()
            .find(|n| n.name == node)
            .and_then(|n| {
                n.outputs
                    .iter()
                    .find(|p| p.name == port)
                    .or(n.outputs.first())
            })
            .map(|p| (*p.schema).clone())
            .ok_or_else(|| format!("no node `{input}` in the plan"))
    }
}
