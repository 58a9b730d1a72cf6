//! The dead-letter file: malformed input lines, with where they came from and why they were
//! refused, so that bad data is never silently dropped and never stops the job.
//!
//! The file is only ever appended to, and synced to disk at every checkpoint of a source that
//! wrote to it (and at the end), so what it held before a crash is still there after the
//! restart. Records between the last checkpoint and a crash are read again by the replay and
//! recorded again: dead letters are at-least-once.

use serde::Serialize;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// One refused record, as written to the dead-letter file.
#[derive(Serialize)]
struct Entry<'a> {
    source: &'a str,
    file: &'a str,
    line: u64,
    reason: &'a str,
    raw: &'a str,
}

/// A JSON-lines file of refused records, shared by every source of a run and created on the
/// first one.
pub struct DeadLetters {
    path: PathBuf,
    writer: Mutex<Option<BufWriter<File>>>,
    count: AtomicU64,
}

impl DeadLetters {
    pub fn new(path: PathBuf) -> DeadLetters {
        DeadLetters {
            path,
            writer: Mutex::new(None),
            count: AtomicU64::new(0),
        }
    }

    /// Where the file is (or would be).
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Records seen so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Writes one refused record. Failing to write the dead-letter file fails the job: losing
    /// the evidence of bad input silently is worse than stopping.
    pub fn record(
        &self,
        source: &str,
        file: &str,
        line: u64,
        reason: &str,
        raw: &[u8],
    ) -> std::io::Result<()> {
        self.count.fetch_add(1, Ordering::Relaxed);
        let raw = String::from_utf8_lossy(raw);
        let entry = Entry {
            source,
            file,
            line,
            reason,
            raw: raw.trim_end_matches(['\n', '\r']),
        };
        let mut guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            *guard = Some(BufWriter::new(file));
        }
        let writer = guard.as_mut().expect("just created");
        serde_json::to_writer(&mut *writer, &entry)?;
        writer.write_all(b"\n")
    }

    /// Writes what was recorded through to disk (a checkpoint, or the end of a source).
    pub fn sync(&self) -> std::io::Result<()> {
        let mut guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        match guard.as_mut() {
            Some(w) => {
                w.flush()?;
                w.get_ref().sync_data()
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_appends_to_the_dead_letters_of_the_previous_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.jsonl");
        for run in 0..2 {
            let letters = DeadLetters::new(path.clone());
            letters
                .record("events", "in.jsonl", run + 1, "bad", b"{oops\n")
                .unwrap();
            letters.sync().unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(
            text.contains("\"line\":1") && text.contains("\"line\":2"),
            "{text}"
        );
    }
}
