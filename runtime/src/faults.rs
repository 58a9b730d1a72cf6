//! Storage faults injected from outside the process, for the chaos harness: I/O errors on the
//! checkpoint, state or output directories, and slow syncs.
//!
//! With `EDDY_FAULTS_FILE=PATH` set, a background thread reads PATH every 50 ms; each line turns
//! a fault on while it is there:
//!
//! ```text
//! io_error=checkpoint,state,output   writes there fail with EIO (also: commit, the
//!                                    publishing of a completed checkpoint's output)
//! slow_sync_ms=500                   every sync there first waits this long
//! ```
//! A missing or empty file means no faults. Without the variable nothing is read and every
//! check is one relaxed atomic load, so production code keeps its fault points.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The environment variable naming the fault file.
pub const FAULTS_ENV: &str = "EDDY_FAULTS_FILE";

/// Where an I/O fault applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    /// Checkpoint storage (snapshot uploads, metadata).
    Checkpoint = 0,
    /// Local keyed state (RocksDB snapshots).
    State = 1,
    /// Sink output (part files).
    Output = 2,
    /// Publishing what a completed checkpoint covers (a sink's commit).
    Commit = 3,
}

const SITES: [(&str, Site); 4] = [
    ("checkpoint", Site::Checkpoint),
    ("state", Site::State),
    ("output", Site::Output),
    ("commit", Site::Commit),
];

#[derive(Default)]
struct Faults {
    io_error: [AtomicBool; 4],
    slow_sync_ms: AtomicU64,
}

impl Faults {
    fn load(&self, text: &str) {
        let mut errors = [false; 4];
        let mut slow = 0;
        for line in text.lines() {
            match line.trim().split_once('=') {
                Some(("io_error", sites)) => {
                    for (name, site) in SITES {
                        if sites.split(',').any(|s| s.trim() == name) {
                            errors[site as usize] = true;
                        }
                    }
                }
                Some(("slow_sync_ms", ms)) => slow = ms.trim().parse().unwrap_or(0),
                _ => {}
            }
        }
        for (flag, on) in self.io_error.iter().zip(errors) {
            flag.store(on, Ordering::Relaxed);
        }
        self.slow_sync_ms.store(slow, Ordering::Relaxed);
    }
}

fn faults() -> Option<&'static Faults> {
    static FAULTS: OnceLock<Option<&'static Faults>> = OnceLock::new();
    *FAULTS.get_or_init(|| {
        let path = PathBuf::from(std::env::var_os(FAULTS_ENV)?);
        let faults: &'static Faults = Box::leak(Box::default());
        faults.load(&std::fs::read_to_string(&path).unwrap_or_default());
        let _ = std::thread::Builder::new()
            .name("eddy-faults".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(50));
                faults.load(&std::fs::read_to_string(&path).unwrap_or_default());
            });
        Some(faults)
    })
}

/// An injected I/O error for a write at `site`, if one is on.
pub fn check(site: Site) -> io::Result<()> {
    match faults() {
        Some(f) if f.io_error[site as usize].load(Ordering::Relaxed) => Err(io::Error::other(
            format!("injected I/O error ({FAULTS_ENV})"),
        )),
        _ => Ok(()),
    }
}

/// Waits before a sync when slow syncs are injected.
pub fn before_sync() {
    if let Some(f) = faults() {
        let ms = f.slow_sync_ms.load(Ordering::Relaxed);
        if ms > 0 {
            std::thread::sleep(Duration::from_millis(ms));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fault_file_turns_faults_on_and_off() {
        let f = Faults::default();
        f.load("io_error=state, output\nslow_sync_ms=25\n");
        assert!(!f.io_error[Site::Checkpoint as usize].load(Ordering::Relaxed));
        assert!(f.io_error[Site::State as usize].load(Ordering::Relaxed));
        assert!(f.io_error[Site::Output as usize].load(Ordering::Relaxed));
        assert_eq!(f.slow_sync_ms.load(Ordering::Relaxed), 25);
        f.load("");
        assert!(f.io_error.iter().all(|e| !e.load(Ordering::Relaxed)));
        assert_eq!(f.slow_sync_ms.load(Ordering::Relaxed), 0);
    }
}
