//! Full disks: each worker's data directory and the checkpoint directory on small file systems
//! of their own (tmpfs, mounted when the harness runs as root), filled to the last byte by a
//! ballast file while the fault lasts, so writes fail with ENOSPC exactly as on a full disk.

use crate::ChaosError;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Size of each small file system.
const SIZE: &str = "256m";

/// The mounts of a run, unmounted when dropped.
pub struct Disks {
    mounts: Vec<PathBuf>,
    checkpoints: PathBuf,
    workers: Vec<PathBuf>,
    ballast: Vec<PathBuf>,
    available: bool,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn mount(path: &Path) -> bool {
    Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={SIZE}"), "tmpfs"])
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

impl Disks {
    /// Creates the checkpoint directory and the workers' data directories under `dir`, on
    /// file systems of their own when `wanted` and the process is root.
    pub fn prepare(dir: &Path, workers: usize, wanted: bool) -> Result<Disks, ChaosError> {
        let checkpoints = dir.join("checkpoints");
        let worker_dirs: Vec<PathBuf> = (0..workers)
            .map(|i| dir.join("cluster").join(format!("w{i}")))
            .collect();
        for d in std::iter::once(&checkpoints).chain(&worker_dirs) {
            std::fs::create_dir_all(d).map_err(|e| ChaosError::io(d, e))?;
        }
        let mut disks = Disks {
            mounts: Vec::new(),
            checkpoints,
            workers: worker_dirs,
            ballast: Vec::new(),
            available: false,
        };
        if wanted && is_root() {
            let all: Vec<PathBuf> = std::iter::once(disks.checkpoints.clone())
                .chain(disks.workers.iter().cloned())
                .collect();
            disks.available = true;
            for d in all {
                if mount(&d) {
                    disks.mounts.push(d);
                } else {
                    tracing::warn!(dir = %d.display(), "cannot mount a tmpfs: disk-full faults are off");
                    disks.available = false;
                }
            }
        }
        Ok(disks)
    }

    /// Whether disk-full faults can be injected.
    pub fn available(&self) -> bool {
        self.available
    }

    /// Where jobs keep their checkpoints.
    pub fn checkpoints(&self) -> &Path {
        &self.checkpoints
    }

    /// Fills worker `worker`'s data file system and the checkpoint file system.
    pub fn fill(&mut self, worker: usize) {
        let Some(dir) = self.workers.get(worker).cloned() else {
            return;
        };
        for d in [dir, self.checkpoints.clone()] {
            let path = d.join(".chaos-ballast");
            if let Ok(mut f) = std::fs::File::create(&path) {
                let chunk = vec![0u8; 1 << 20];
                while f.write_all(&chunk).is_ok() {}
                // The last bytes a partial chunk could not take.
                while f.write_all(&chunk[..4096]).is_ok() {}
                let _ = f.sync_all();
            }
            self.ballast.push(path);
        }
    }

    /// Frees the space again.
    pub fn free(&mut self) {
        for path in self.ballast.drain(..) {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for Disks {
    fn drop(&mut self) {
        self.free();
        for m in self.mounts.drain(..) {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
    }
}

/// Below this much free space on the run directory's file system, the harness's own host is
/// out of disk: outputs and checkpoints fail for a reason no injected fault made, so a run
/// stops there as inconclusive instead of blaming the system under test.
pub const HOST_DISK_MIN_BYTES: u64 = 1 << 30;

/// Free bytes (for an unprivileged user) on the file system holding `dir`; `None` if unknown.
pub fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `stat` a buffer statvfs fills on success.
    let rc = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    // The field types differ between platforms (u32 on some).
    #[allow(clippy::unnecessary_cast)]
    Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// Why the host's disk is too full to go on, if it is.
pub fn host_disk_low(dir: &std::path::Path) -> Option<String> {
    let free = free_bytes(dir)?;
    (free < HOST_DISK_MIN_BYTES).then(|| {
        format!(
            "the host's own disk under {} has {} MiB free (less than {} MiB): not an injected fault; free space and run again",
            dir.display(),
            free >> 20,
            HOST_DISK_MIN_BYTES >> 20
        )
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_free_space_of_the_hosts_disk_is_known() {
        let dir = tempfile::tempdir().unwrap();
        let free = super::free_bytes(dir.path()).expect("statvfs works on a directory");
        assert!(free > 0);
        assert_eq!(
            super::host_disk_low(dir.path()).is_some(),
            free < super::HOST_DISK_MIN_BYTES
        );
        assert!(super::free_bytes(&dir.path().join("none")).is_none());
    }
}
