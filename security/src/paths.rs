//! Where jobs may read and write: the roots an operator allows (`--allow-path`). A job whose
//! input, output, checkpoint or savepoint path lies outside them is refused at submission,
//! after `..` and symbolic links are resolved, so neither `/data/../etc/passwd` nor a link
//! under `/data` that points to `/etc` gets out.

use crate::SecurityError;
use std::path::{Component, Path, PathBuf};

/// The allowed roots, each resolved to its real path.
#[derive(Clone, Debug)]
pub struct AllowedPaths {
    roots: Vec<PathBuf>,
}

impl AllowedPaths {
    /// Roots that exist (a typo would otherwise allow nothing, silently); created if missing
    /// is not done here: the operator names directories that exist.
    pub fn new(roots: &[PathBuf]) -> Result<AllowedPaths, SecurityError> {
        let roots = roots
            .iter()
            .map(|r| {
                std::fs::canonicalize(r).map_err(|source| SecurityError::Io {
                    action: "use the allowed path",
                    path: r.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AllowedPaths { roots })
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Checks that `path` (what a job calls `what`, e.g. `the output of sink out`) lies under
    /// an allowed root once resolved; returns the resolved path.
    pub fn check(&self, what: &str, path: &str) -> Result<PathBuf, SecurityError> {
        let resolved = resolve(Path::new(path)).map_err(|e| {
            SecurityError::Invalid(format!("{what}: `{path}` cannot be resolved: {e}"))
        })?;
        if self.roots.iter().any(|r| resolved.starts_with(r)) {
            return Ok(resolved);
        }
        let roots: Vec<String> = self.roots.iter().map(|r| r.display().to_string()).collect();
        Err(SecurityError::Invalid(format!(
            "{what}: `{path}` is outside the allowed paths ({}); use a path under one of them, or allow its directory with --allow-path",
            roots.join(", ")
        )))
    }
}

/// Checks that `name` (what the caller calls `what`: a job id, a file name from a request or
/// a checkpoint) can be one component of a path: letters, digits, `-`, `_`, `.`, not `.` or
/// `..`, at most 128 bytes. Such a name joined to a directory stays in that directory.
pub fn check_component(what: &str, name: &str) -> Result<(), SecurityError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(SecurityError::Invalid(format!(
            "{what} `{}` cannot name a file (letters, digits, `-`, `_`, `.`; not `.` or `..`)",
            name.escape_debug()
        )))
    }
}

/// The real path `path` names: absolute, `.` and `..` applied, and every symbolic link among
/// its existing ancestors followed. What does not exist yet (an output to be made) is
/// appended to the deepest ancestor that does.
fn resolve(path: &Path) -> std::io::Result<PathBuf> {
    let absolute = std::path::absolute(path)?;
    let mut existing = PathBuf::new();
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    for component in absolute.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => existing.push(component.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => {
                if rest.pop().is_none() {
                    // Resolve what exists so far first: `..` after a link leaves the link's
                    // target, not its name.
                    existing = std::fs::canonicalize(&existing)?;
                    existing.pop();
                }
            }
            Component::Normal(name) => {
                if rest.is_empty() && existing.join(name).exists() {
                    existing.push(name);
                } else {
                    rest.push(name.to_os_string());
                }
            }
        }
    }
    let mut real = std::fs::canonicalize(&existing)?;
    real.extend(rest);
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_are_path_components() {
        for ok in ["job-1", "a.b_c", "7"] {
            assert!(check_component("job id", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a\\b",
            "x\0",
            &"a".repeat(129),
        ] {
            let e = check_component("job id", bad).unwrap_err().to_string();
            assert!(e.starts_with("job id `"), "{e}");
        }
    }

    #[test]
    fn paths_inside_are_allowed_and_dots_and_links_do_not_get_out() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("in")).unwrap();
        std::fs::create_dir_all(dir.path().join("secret")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), data.join("link")).unwrap();
        let allowed = AllowedPaths::new(std::slice::from_ref(&data)).unwrap();
        let ok = |p: &Path| allowed.check("input", p.to_str().unwrap());
        ok(&data.join("in/events.jsonl")).unwrap();
        ok(&data.join("out/new/dir/")).unwrap();
        ok(&data.join("in/../in/x")).unwrap();
        let e = ok(&data.join("../secret/x")).unwrap_err().to_string();
        assert!(e.contains("outside the allowed paths"), "{e}");
        assert!(e.contains("--allow-path"), "{e}");
        assert!(ok(&data.join("link/x")).is_err());
        assert!(ok(&data.join("new/../../secret")).is_err());
        assert!(ok(Path::new("/etc/passwd")).is_err());
        let e = AllowedPaths::new(&[dir.path().join("missing")]).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
