//! The Linux guest kit: built once by `tests/linux/build-guest.sh` into the
//! Cargo target directory and shared by every test process.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::process::require_tool;

/// A built guest: an uncompressed Debian kernel with a PVH entry note and a
/// busybox initramfs whose `/init` runs the routine named by `strata.test=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinuxGuestKit {
    /// The kernel, booted by QEMU's `-kernel` through its PVH note.
    pub vmlinux: PathBuf,
    /// The gzip'd newc cpio given to `-initrd`.
    pub initramfs: PathBuf,
}

impl LinuxGuestKit {
    /// Builds the kit if needed and returns it. The build runs once per
    /// process; across processes (tests run several) an flock on
    /// `<target>/linux-guest.lock` lets one build while the others wait, and
    /// the script itself returns at once when the kit is already there.
    pub fn ensure() -> Result<LinuxGuestKit, String> {
        static KIT: OnceLock<Result<LinuxGuestKit, String>> = OnceLock::new();
        KIT.get_or_init(|| build(&target_dir())).clone()
    }
}

fn build(target: &Path) -> Result<LinuxGuestKit, String> {
    let script = repo_root().join("tests/linux/build-guest.sh");
    if !script.is_file() {
        return Err(format!("{} is missing", script.display()));
    }
    require_tool("bash", "it runs tests/linux/build-guest.sh")?;
    let out = target.join("linux-guest");
    std::fs::create_dir_all(target)
        .map_err(|e| format!("cannot create {}: {e}", target.display()))?;
    let lock_path = target.join("linux-guest.lock");
    let lock = File::create(&lock_path)
        .map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    // SAFETY: flock only takes a file descriptor, which `lock` keeps open
    // for as long as this function runs; closing it releases the lock.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!(
            "cannot lock {}: {}",
            lock_path.display(),
            std::io::Error::last_os_error()
        ));
    }
    let output = Command::new("bash")
        .arg(&script)
        .arg(&out)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    drop(lock);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let reason = stderr.lines().last().unwrap_or("no message");
        return Err(format!(
            "building the Linux guest kit failed ({}): {reason}",
            output.status
        ));
    }
    Ok(LinuxGuestKit {
        vmlinux: out.join("vmlinux"),
        initramfs: out.join("initramfs.cpio.gz"),
    })
}

/// The repository root, two levels above this crate.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Cargo's target directory: the nearest ancestor of the running test
/// binary that Cargo tagged as a cache directory, else an absolute
/// `$CARGO_TARGET_DIR`, else `<repo>/target`.
fn target_dir() -> PathBuf {
    let from_exe = std::env::current_exe().ok().and_then(|exe| {
        exe.ancestors()
            .find(|dir| dir.join("CACHEDIR.TAG").is_file())
            .map(Path::to_path_buf)
    });
    let from_env = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute());
    from_exe
        .or(from_env)
        .unwrap_or_else(|| repo_root().join("target"))
}
