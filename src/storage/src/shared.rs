//! Read-only chain members shared by the images one process opens.
//!
//! Images made from one golden base have the same lower layers. Opening their
//! chains through one [`SharedMembers`] opens each read-only member once:
//! one descriptor (holding the one shared lock), one table in memory, one
//! stream of reads to the kernel, however many images use it.
//!
//! ```text
//!  image web1:  top (own, writable) ─┐
//!  image web2:  top (own, writable) ─┼─► Arc<LayerFile> golden ─► Arc<RawBase> debian.raw
//!  image web3:  top (own, writable) ─┘      (one fd, LOCK_SH)        (one fd, LOCK_SH)
//! ```
//!
//! Files are known by device and inode, so two paths to one file (a symlink,
//! a relative parent location) are one member. A member opened with
//! `O_DIRECT` and one opened without are kept apart. The registry holds only
//! weak references: a member closes when the last image using it does, as it
//! would without sharing. Writable members are never shared: a writer owns
//! its layer alone, under an exclusive lock.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use crate::chain::{ChainError, RawBase};
use crate::layer::{LayerError, LayerFile};

/// A file as the registry knows it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct FileKey {
    dev: u64,
    ino: u64,
    direct: bool,
}

impl FileKey {
    fn of(meta: &std::fs::Metadata, direct: bool) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            direct,
        }
    }
}

#[derive(Debug, Default)]
struct Registry {
    layers: HashMap<FileKey, Weak<LayerFile>>,
    raws: HashMap<FileKey, Weak<RawBase>>,
}

/// The read-only members open in this process, for images to share.
#[derive(Debug, Default)]
pub struct SharedMembers(Mutex<Registry>);

impl SharedMembers {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        // Every update is a single map operation: a panic leaves no half-done state.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The read-only layer at `path`: the one already open, or `open()`'s.
    pub(crate) fn layer(
        &self,
        path: &Path,
        direct: bool,
        open: impl FnOnce() -> Result<LayerFile, LayerError>,
    ) -> Result<Arc<LayerFile>, LayerError> {
        let mut registry = self.registry();
        if let Some(layer) = std::fs::metadata(path)
            .ok()
            .and_then(|meta| registry.layers.get(&FileKey::of(&meta, direct)))
            .and_then(Weak::upgrade)
        {
            return Ok(layer);
        }
        let layer = Arc::new(open()?);
        // Key by what was opened: the path may have changed since the stat.
        if let Ok(meta) = layer.file().metadata() {
            registry.layers.retain(|_, weak| weak.strong_count() > 0);
            let key = FileKey::of(&meta, direct);
            registry.layers.insert(key, Arc::downgrade(&layer));
        }
        Ok(layer)
    }

    /// The raw base at `path`: the one already open, or `open()`'s.
    pub(crate) fn raw(
        &self,
        path: &Path,
        direct: bool,
        open: impl FnOnce() -> Result<RawBase, ChainError>,
    ) -> Result<Arc<RawBase>, ChainError> {
        let mut registry = self.registry();
        if let Some(raw) = std::fs::metadata(path)
            .ok()
            .and_then(|meta| registry.raws.get(&FileKey::of(&meta, direct)))
            .and_then(Weak::upgrade)
        {
            return Ok(raw);
        }
        let raw = Arc::new(open()?);
        if let Ok(meta) = raw.file().metadata() {
            registry.raws.retain(|_, weak| weak.strong_count() > 0);
            let key = FileKey::of(&meta, direct);
            registry.raws.insert(key, Arc::downgrade(&raw));
        }
        Ok(raw)
    }

    /// How many members are open through this registry now.
    pub fn open_members(&self) -> usize {
        let registry = self.registry();
        registry
            .layers
            .values()
            .map(Weak::strong_count)
            .chain(registry.raws.values().map(Weak::strong_count))
            .filter(|n| *n > 0)
            .count()
    }
}
