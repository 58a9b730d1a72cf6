//! Exclusive use of a directory by one process: checkpoints, keyed state and output that two
//! runs would otherwise overwrite, prune or delete under each other.
//!
//! The lock is an advisory `flock` on a hidden file in the directory, taken without waiting and
//! released by the kernel when the process ends, however it ends: a run killed with SIGKILL
//! never leaves a stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// The lock file's name inside a locked directory.
pub const LOCK_FILE: &str = ".eddy-lock";

/// A directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{what} `{}` is in use by another eddy process (pid {holder}); give this run a directory of its own", dir.display())]
    Busy {
        what: String,
        dir: PathBuf,
        holder: String,
    },
    #[error("cannot lock {what} `{}`: {source}", dir.display())]
    Io {
        what: String,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An exclusive lock on a directory, held until dropped (or the process ends).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    dir: PathBuf,
}

impl DirLock {
    /// Locks `dir` (created if missing) for this process; `what` names it in errors
    /// ("checkpoint directory").
    pub fn acquire(dir: &Path, what: &str) -> Result<DirLock, LockError> {
        let io = |source| LockError::Io {
            what: what.to_string(),
            dir: dir.to_path_buf(),
            source,
        };
        crate::checkpoint::storage::create_dir_all_durable(dir).map_err(io)?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                return Err(LockError::Busy {
                    what: what.to_string(),
                    dir: dir.to_path_buf(),
                    holder: if holder.trim().is_empty() {
                        "unknown".into()
                    } else {
                        holder.trim().to_string()
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        // Who holds it, for the message another process shows.
        use std::io::{Seek, Write};
        let _ = file.set_len(0);
        let _ = file.seek(std::io::SeekFrom::Start(0));
        let _ = write!(file, "{}", std::process::id());
        Ok(DirLock {
            _file: file,
            dir: dir.to_path_buf(),
        })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path(), "checkpoint directory").unwrap();
        let second = DirLock::acquire(dir.path(), "checkpoint directory").unwrap_err();
        let message = second.to_string();
        assert!(
            message.contains("in use by another eddy process"),
            "{message}"
        );
        assert!(
            message.contains(&std::process::id().to_string()),
            "{message}"
        );
        drop(first);
        DirLock::acquire(dir.path(), "checkpoint directory").unwrap();
    }
}
