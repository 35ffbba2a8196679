//! An exclusive lock on a catalogue directory, held across a
//! read-modify-write so that two `strata image` processes never lose each
//! other's updates.
//!
//! It is an advisory `flock(2)` on `<dir>/catalogue.lock`, released when the
//! [`CatalogueLock`] is dropped (or the process dies). `flock` locks belong to
//! an open file description, so two threads of one process that each take a
//! `CatalogueLock` exclude each other too. The lock file is never removed:
//! removing it would let a waiter lock an unlinked file while a newcomer
//! locks a fresh one.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::catalogue::CatalogueError;

/// Name of the lock file inside a catalogue directory.
pub const LOCK_FILE_NAME: &str = "catalogue.lock";

/// Holds the catalogue directory's lock until dropped.
#[derive(Debug)]
pub struct CatalogueLock {
    // Closing this file releases the lock.
    _file: File,
    path: PathBuf,
}

impl CatalogueLock {
    /// Waits for and takes the exclusive lock on the catalogue in `dir`.
    pub fn acquire(dir: &Path) -> Result<Self, CatalogueError> {
        let path = dir.join(LOCK_FILE_NAME);
        let lock_error = |source| CatalogueError::Lock {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(lock_error)?;
        loop {
            // SAFETY: `file` is an open file owned by this function, so its
            // descriptor is valid for the call; flock touches no memory.
            let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if result == 0 {
                break;
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(lock_error(error));
            }
        }
        Ok(CatalogueLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
