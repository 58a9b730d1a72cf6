//! Job files written to break the compiler: each must be refused with a located message, never
//! a panic or an abort (regressions of ../shared/notes/failure-paths.md items 8 and 15).

use eddy_jobs::{compile_str, CompileOptions};

fn compile(text: &str) -> Result<eddy_runtime::graph::JobGraph, String> {
    let options = CompileOptions {
        params: [("input".to_string(), "events.jsonl".to_string())]
            .into_iter()
            .collect(),
        ..CompileOptions::default()
    };
    compile_str("job.toml", text, &options).map_err(|e| e.to_string())
}

fn job(head: &str, condition: &str) -> String {
    format!(
        r#"name = "hostile"
{head}

[params]
input = {{ description = "events" }}

[[source]]
name = "events"
connector = "file"
format = "nexmark"
path = "${{input}}"

[[operator]]
name = "f"
type = "filter"
input = "events.bid"
where = {condition}

[[sink]]
name = "out"
input = "f"
connector = "blackhole"
"#
    )
}

#[test]
fn an_expression_error_after_an_escape_and_a_non_ascii_character_is_located() {
    // The decoded string is shorter than the text in the file: offsets within it do not
    // fall on the file's characters.
    let text = job("", r#""price > \"é\" AND nope(((""#);
    let error = compile(&text).unwrap_err();
    assert!(error.contains("job.toml:"), "{error}");
    assert!(
        error.contains("field `where`") || error.contains("where"),
        "{error}"
    );
    assert!(error.contains("of the expression"), "{error}");
    let multi = job("", "\"\"\"\nprice >\n  é + \"\"\"");
    let error = compile(&multi).unwrap_err();
    assert!(error.contains("job.toml:"), "{error}");
}

#[test]
fn a_huge_max_parallelism_is_refused_not_allocated() {
    let text = job("max_parallelism = 4000000000", "\"price > 10\"");
    let error = compile(&text).unwrap_err();
    assert!(
        error.contains("`max_parallelism` 4000000000 is above the limit of 32768"),
        "{error}"
    );
    assert!(error.contains("job.toml:2:"), "{error}");
    assert!(compile(&job("max_parallelism = 32768", "\"price > 10\"")).is_ok());
}

#[test]
fn node_names_that_could_name_a_path_outside_a_directory_are_refused() {
    for name in ["/etc", "a/b", "..", "a b", "x\\\\y", ""] {
        let text = job("", "\"true\"").replace("name = \"f\"", &format!("name = \"{name}\""));
        let text = text.replace("input = \"f\"", &format!("input = \"{name}\""));
        let e = compile(&text).unwrap_err();
        assert!(
            e.contains("invalid node name") && e.contains("letters, digits"),
            "{name}: {e}"
        );
    }
    assert!(compile(&job("", "\"true\"")).is_ok());
}
