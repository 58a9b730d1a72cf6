//! Where checkpoints are kept: a small object-store-shaped trait and its directory implementation.
//!
//! The trait speaks in keys (`shared/abc.sst`, `chk-000007/_metadata`) and whole objects, the
//! shape of S3 and `object_store`, so an object-store implementation can follow without touching
//! the checkpoint logic. Writes that must be atomic (the metadata that completes a checkpoint) go
//! through [`CheckpointStorage::put_bytes`], which a directory implements as write, sync, rename.

use std::io;
use std::path::{Path, PathBuf};

/// Durable storage for checkpoint files, addressed by `/`-separated keys.
pub trait CheckpointStorage: Send + Sync + std::fmt::Debug {
    /// Stores the file at `local` under `key` (replacing any object of that key).
    fn put_file(&self, key: &str, local: &Path) -> io::Result<()>;
    /// Stores `bytes` under `key` atomically: readers see the old object or the whole new one.
    fn put_bytes(&self, key: &str, bytes: &[u8]) -> io::Result<()>;
    /// Reads a whole object.
    fn get_bytes(&self, key: &str) -> io::Result<Vec<u8>>;
    /// Materialises the object `key` as the local file `dest` (a hard link where possible, since
    /// checkpointed files are immutable, which makes restores of large state fast).
    fn get_file(&self, key: &str, dest: &Path) -> io::Result<()>;
    /// The keys directly under `prefix` (one level, names only, sorted).
    fn list(&self, prefix: &str) -> io::Result<Vec<String>>;
    /// Deletes one object; deleting a missing object is not an error.
    fn delete(&self, key: &str) -> io::Result<()>;
    /// Deletes every object under `prefix`.
    fn delete_prefix(&self, prefix: &str) -> io::Result<()>;
    /// Where this storage is, for messages.
    fn describe(&self) -> String;
}

/// Checkpoint storage in a local (or mounted) directory.
#[derive(Debug, Clone)]
pub struct DirStorage {
    root: PathBuf,
}

impl DirStorage {
    /// Storage rooted at `root`, created if missing.
    pub fn new(root: impl Into<PathBuf>) -> io::Result<DirStorage> {
        let root = root.into();
        create_dir_all_durable(&root)?;
        Ok(DirStorage { root })
    }

    /// The file of `key`, which must stay under the root: keys come from checkpoint metadata
    /// (files to fetch at restore, to delete when a checkpoint is subsumed), so a corrupt or
    /// forged metadata file naming `../../etc/passwd` or `/etc/passwd` is refused here, before
    /// anything is read or deleted.
    fn path(&self, key: &str) -> io::Result<PathBuf> {
        let plain = key.split('/').all(|part| {
            !matches!(part, "." | "..") && !part.contains('\\') && !part.contains('\0')
        });
        if !plain || key.starts_with('/') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "`{key}` is not a checkpoint file name under {} (corrupt or forged metadata)",
                    self.root.display()
                ),
            ));
        }
        Ok(self.root.join(key))
    }

    fn ensure_parent(path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(parent) => create_dir_all_durable(parent),
            None => Ok(()),
        }
    }
}

/// Syncs a directory so that a rename or new entry in it survives a power loss.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::fs::File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing parents like `create_dir_all`, and syncs the parent of each
/// directory it creates, so that new directories (and the files later synced inside them) do
/// not vanish in a power loss.
pub fn create_dir_all_durable(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_all_durable(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(e),
    }
    match dir.parent() {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

impl CheckpointStorage for DirStorage {
    fn put_file(&self, key: &str, local: &Path) -> io::Result<()> {
        crate::faults::check(crate::faults::Site::Checkpoint)?;
        let dest = self.path(key)?;
        Self::ensure_parent(&dest)?;
        let tmp = dest.with_extension("tmp-upload");
        let _ = std::fs::remove_file(&tmp);
        // Checkpointed files are immutable: on the same file system a hard link is the copy.
        if std::fs::hard_link(local, &tmp).is_err() {
            std::fs::copy(local, &tmp)?;
        }
        crate::faults::before_sync();
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &dest)?;
        // The directory entry too: the metadata published later must not outlive its files.
        match dest.parent() {
            Some(parent) => sync_dir(parent),
            None => Ok(()),
        }
    }

    fn put_bytes(&self, key: &str, bytes: &[u8]) -> io::Result<()> {
        use std::io::Write;
        crate::faults::check(crate::faults::Site::Checkpoint)?;
        let dest = self.path(key)?;
        Self::ensure_parent(&dest)?;
        let tmp = dest.with_extension("tmp-write");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            crate::faults::before_sync();
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &dest)?;
        if let Some(parent) = dest.parent() {
            sync_dir(parent)?;
        }
        Ok(())
    }

    fn get_bytes(&self, key: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.path(key)?)
    }

    fn get_file(&self, key: &str, dest: &Path) -> io::Result<()> {
        let src = self.path(key)?;
        Self::ensure_parent(dest)?;
        match std::fs::hard_link(&src, dest) {
            Ok(()) => Ok(()),
            Err(_) => std::fs::copy(&src, dest).map(|_| ()),
        }
    }

    fn list(&self, prefix: &str) -> io::Result<Vec<String>> {
        let dir = self.path(prefix)?;
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut names = Vec::new();
        for entry in entries {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn delete(&self, key: &str) -> io::Result<()> {
        match std::fs::remove_file(self.path(key)?) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn delete_prefix(&self, prefix: &str) -> io::Result<()> {
        match std::fs::remove_dir_all(self.path(prefix)?) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_leave_the_root_are_refused_before_any_file_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("precious");
        std::fs::write(&outside, b"keep").unwrap();
        let s = DirStorage::new(dir.path().join("ckpt")).unwrap();
        for key in [
            "../precious",
            "chk-1/../../precious",
            "/etc/passwd",
            "a\\..\\b",
        ] {
            let e = s.get_bytes(key).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{key}");
            assert!(e.to_string().contains("forged"), "{e}");
            assert!(
                s.delete(key).is_err() && s.delete_prefix(key).is_err(),
                "{key}"
            );
        }
        assert_eq!(std::fs::read(&outside).unwrap(), b"keep");
        assert!(s.list("").is_ok());
    }

    #[test]
    fn directory_storage_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let s = DirStorage::new(dir.path().join("ckpt")).unwrap();
        s.put_bytes("chk-1/_metadata", b"hello").unwrap();
        assert_eq!(s.get_bytes("chk-1/_metadata").unwrap(), b"hello");
        let local = dir.path().join("f.sst");
        std::fs::write(&local, b"sst").unwrap();
        s.put_file("shared/a.sst", &local).unwrap();
        assert_eq!(s.list("shared").unwrap(), vec!["a.sst".to_string()]);
        let out = dir.path().join("restore/a.sst");
        s.get_file("shared/a.sst", &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"sst");
        s.delete("shared/a.sst").unwrap();
        s.delete("shared/a.sst").unwrap();
        assert!(s.list("shared").unwrap().is_empty());
        s.delete_prefix("chk-1").unwrap();
        assert!(s.list("").unwrap().iter().all(|n| n != "chk-1"));
        assert!(s.list("missing").unwrap().is_empty());
    }
}
