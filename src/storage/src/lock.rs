//! Advisory locks on layer files, and naming the process that holds one.
//!
//! Writers take `flock(LOCK_EX)` and readers `flock(LOCK_SH)`, always
//! non-blocking. `flock` locks belong to the open file and vanish when the
//! process dies, so a crash never leaves a stale lock. When a lock is
//! refused, `/proc/locks` tells which process holds it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

/// Shared (readers) or exclusive (writer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    /// Any number of readers.
    Shared,
    /// One writer, no readers.
    Exclusive,
}

/// The lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds a conflicting lock (its pid, when known).
    Busy(Option<u32>),
    /// `flock` failed for another reason.
    Io(std::io::Error),
}

/// Takes `kind` on `file` without waiting.
pub fn lock(file: &File, kind: LockKind) -> Result<(), LockError> {
    let op = match kind {
        LockKind::Shared => libc::LOCK_SH,
        LockKind::Exclusive => libc::LOCK_EX,
    } | libc::LOCK_NB;
    // SAFETY: flock(2) on a descriptor this `File` owns; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Err(LockError::Busy(holder_of(file)));
    }
    Err(LockError::Io(err))
}

/// The pid of a process holding a `flock` lock on `file`, from `/proc/locks`.
fn holder_of(file: &File) -> Option<u32> {
    let meta = file.metadata().ok()?;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    holder_in(&locks, meta.dev(), meta.ino(), std::process::id())
}

/// Finds, in `/proc/locks` text, a FLOCK on inode `ino` of device `dev` held
/// by a process other than `me`.
fn holder_in(locks: &str, dev: u64, ino: u64, me: u32) -> Option<u32> {
    let major = libc::major(dev);
    let minor = libc::minor(dev);
    let wanted = format!("{major:02x}:{minor:02x}:{ino}");
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let kind_at = fields.iter().position(|f| *f == "FLOCK")?;
        let pid: u32 = fields.get(kind_at + 3)?.parse().ok()?;
        let inode = fields.get(kind_at + 4)?;
        (inode.eq_ignore_ascii_case(&wanted) && pid != me).then_some(pid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_locks_lines() {
        let text = "1: FLOCK  ADVISORY  WRITE 26166 fe:00:10010634 0 EOF\n\
                    2: POSIX  ADVISORY  READ 77 fe:00:10010634 0 EOF\n";
        let dev = libc::makedev(0xfe, 0);
        assert_eq!(holder_in(text, dev, 10010634, 1), Some(26166));
        assert_eq!(holder_in(text, dev, 10010634, 26166), None);
        assert_eq!(holder_in(text, dev, 42, 1), None);
    }

    #[test]
    fn second_exclusive_open_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        let a = File::open(&path).unwrap();
        let b = File::open(&path).unwrap();
        lock(&a, LockKind::Exclusive).unwrap();
        assert!(matches!(
            lock(&b, LockKind::Shared),
            Err(LockError::Busy(_))
        ));
        drop(a);
        lock(&b, LockKind::Shared).unwrap();
    }
}
