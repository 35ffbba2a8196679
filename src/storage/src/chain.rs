//! Opening a chain of layers, from the top down to its base.
//!
//! ```text
//!   top (writable) ──parent──► snapshot (frozen) ──parent──► ... ──► base
//!                                                                   (layer or raw file)
//! ```
//!
//! Each step checks that the parent found is the one the child recorded: the
//! same layer id, the same size, the same block size; a chain that revisits a
//! layer is a loop. Parent locations are absolute or relative to the child's
//! directory. Read-only members may be shared with other images of the
//! process ([`crate::shared`]); data may bypass the page cache
//! ([`crate::direct`]).

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use uuid::Uuid;

use crate::direct::{DataFile, DirectIoUnsupported, DirectOpenError};
use crate::format::ParentKind;
use crate::layer::{Access, LayerError, LayerFile};
use crate::lock::{LockError, LockKind, lock};
use crate::shared::SharedMembers;

/// Deepest chain Strata opens.
pub const MAX_CHAIN_DEPTH: usize = 1024;

/// A raw disk image at the base of a chain, read-only.
#[derive(Debug)]
pub struct RawBase {
    /// Its path.
    pub path: PathBuf,
    /// The open file, as its data is read.
    pub data: DataFile,
    /// Its size in bytes.
    pub size: u64,
}

impl RawBase {
    /// The open file (its buffered descriptor).
    pub fn file(&self) -> &File {
        self.data.file()
    }
}

/// One element of a chain. Read-only members may be shared by several
/// images ([`ChainOptions::shared`]).
#[derive(Debug)]
pub enum Member {
    /// A Strata layer.
    Layer(Arc<LayerFile>),
    /// A raw file (only ever the base).
    Raw(Arc<RawBase>),
}

impl Member {
    /// The member's file path.
    pub fn path(&self) -> &Path {
        match self {
            Member::Layer(l) => l.path(),
            Member::Raw(r) => &r.path,
        }
    }

    /// The open file (its buffered descriptor).
    pub fn file(&self) -> &File {
        self.data().file()
    }

    /// The file as data is read and written.
    pub fn data(&self) -> &DataFile {
        match self {
            Member::Layer(l) => l.data(),
            Member::Raw(r) => &r.data,
        }
    }
}

/// How a chain's files are opened.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChainOptions<'a> {
    /// Read and write data blocks with `O_DIRECT`, around the page cache.
    pub direct: bool,
    /// Share read-only members with the other images opened through this.
    pub shared: Option<&'a SharedMembers>,
}

/// Why a chain could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error("layer {child}: its parent {parent} is missing")]
    MissingParent { child: PathBuf, parent: PathBuf },
    #[error(
        "layer {child}: its parent {parent} has id {found}, but {expected} was recorded (the parent was replaced)"
    )]
    ParentIdMismatch {
        child: PathBuf,
        parent: PathBuf,
        expected: Uuid,
        found: Uuid,
    },
    #[error(
        "layer {child}: its parent {parent} is {found} bytes, but {expected} were recorded (virtual size mismatch)"
    )]
    SizeMismatch {
        child: PathBuf,
        parent: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error(
        "layer {child}: its parent {parent} uses {found}-byte blocks, the child {expected}-byte blocks"
    )]
    BlockSizeMismatch {
        child: PathBuf,
        parent: PathBuf,
        expected: u32,
        found: u32,
    },
    #[error("layer {child}: its virtual size is smaller than its parent {parent}'s")]
    ShrinkingChild { child: PathBuf, parent: PathBuf },
    #[error("the chain of {top} loops back to {again}")]
    Loop { top: PathBuf, again: PathBuf },
    #[error("the chain of {0} is deeper than {MAX_CHAIN_DEPTH} layers")]
    TooDeep(PathBuf),
    #[error("cannot open raw base {path}: {source}")]
    RawOpen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("raw base {path} is in use by a writer{}", pid.map(|p| format!(" (process {p})")).unwrap_or_default())]
    RawInUse { path: PathBuf, pid: Option<u32> },
    #[error(transparent)]
    NoDirectIo(#[from] DirectIoUnsupported),
}

/// Where a parent location points, seen from `child`.
pub fn resolve_location(child: &Path, location: &str) -> PathBuf {
    let location = Path::new(location);
    if location.is_absolute() {
        return location.to_path_buf();
    }
    child.parent().unwrap_or(Path::new(".")).join(location)
}

/// Opens the chain whose top layer is `top`, returning members base first.
/// The top is opened with `top_access`; every other member read-only.
pub fn open_chain(top: &Path, top_access: Access) -> Result<Vec<Member>, ChainError> {
    open_chain_with(top, top_access, ChainOptions::default())
}

/// [`open_chain`] with `options`.
pub fn open_chain_with(
    top: &Path,
    top_access: Access,
    options: ChainOptions<'_>,
) -> Result<Vec<Member>, ChainError> {
    let mut members = Vec::new();
    let mut seen_ids = HashSet::new();
    let mut seen_paths = HashSet::new();
    let mut path = top.to_path_buf();
    let mut access = top_access;
    // What the previous (child) layer recorded about this one.
    let mut expected: Option<(PathBuf, Uuid, u64, u32)> = None;
    loop {
        if members.len() >= MAX_CHAIN_DEPTH {
            return Err(ChainError::TooDeep(top.to_path_buf()));
        }
        let canonical = match path.canonicalize() {
            Ok(c) => c,
            Err(_) if expected.is_some() => {
                let child = expected.map(|e| e.0).unwrap_or_default();
                return Err(ChainError::MissingParent {
                    child,
                    parent: path,
                });
            }
            Err(source) => return Err(LayerError::Open { path, source }.into()),
        };
        if !seen_paths.insert(canonical) {
            return Err(ChainError::Loop {
                top: top.to_path_buf(),
                again: path,
            });
        }
        let layer = open_layer(&path, access, options)?;
        let header = layer.header();
        if let Some((child, id, size, block_size)) = &expected {
            check_parent(child, &path, (*id, *size, *block_size), &header)?;
        }
        if !seen_ids.insert(header.id) {
            return Err(ChainError::Loop {
                top: top.to_path_buf(),
                again: path,
            });
        }
        let parent = header.parent;
        let location = layer.parent_location().map(str::to_string);
        members.push(Member::Layer(layer));
        let (Some(parent), Some(location)) = (parent, location) else {
            break;
        };
        let parent_path = resolve_location(&path, &location);
        if header.virtual_size < parent.size {
            return Err(ChainError::ShrinkingChild {
                child: path,
                parent: parent_path,
            });
        }
        match parent.kind {
            ParentKind::Raw => {
                let raw = match options.shared {
                    Some(shared) => shared.raw(&parent_path, options.direct, || {
                        open_raw_with(&path, &parent_path, options.direct)
                    })?,
                    None => Arc::new(open_raw_with(&path, &parent_path, options.direct)?),
                };
                check_raw_size(&path, &raw, parent.size)?;
                members.push(Member::Raw(raw));
                break;
            }
            ParentKind::Layer => {
                expected = Some((
                    path.clone(),
                    parent.id,
                    parent.size,
                    header.geometry.block_size,
                ));
                path = parent_path;
                access = Access::ReadOnly;
            }
        }
    }
    members.reverse();
    Ok(members)
}

/// Opens one layer of a chain: from the shared members when it is read-only
/// and `options` has them.
fn open_layer(
    path: &Path,
    access: Access,
    options: ChainOptions<'_>,
) -> Result<Arc<LayerFile>, LayerError> {
    let open = || LayerFile::open_with(path, access, options.direct);
    match options.shared {
        Some(shared) if access == Access::ReadOnly => shared.layer(path, options.direct, open),
        _ => Ok(Arc::new(open()?)),
    }
}

fn check_parent(
    child: &Path,
    parent: &Path,
    (id, size, block_size): (Uuid, u64, u32),
    found: &crate::format::Header,
) -> Result<(), ChainError> {
    let (child, parent_buf) = (child.to_path_buf(), parent.to_path_buf());
    if found.id != id {
        return Err(ChainError::ParentIdMismatch {
            child,
            parent: parent_buf,
            expected: id,
            found: found.id,
        });
    }
    if found.virtual_size != size {
        return Err(ChainError::SizeMismatch {
            child,
            parent: parent_buf,
            expected: size,
            found: found.virtual_size,
        });
    }
    if found.geometry.block_size != block_size {
        return Err(ChainError::BlockSizeMismatch {
            child,
            parent: parent_buf,
            expected: block_size,
            found: found.geometry.block_size,
        });
    }
    Ok(())
}

/// Opens a raw base read-only with a shared lock and checks its size.
pub fn open_raw(child: &Path, path: &Path, expected_size: u64) -> Result<RawBase, ChainError> {
    let raw = open_raw_with(child, path, false)?;
    check_raw_size(child, &raw, expected_size)?;
    Ok(raw)
}

/// The size a child recorded for its raw parent must still be the file's.
fn check_raw_size(child: &Path, raw: &RawBase, expected_size: u64) -> Result<(), ChainError> {
    if raw.size != expected_size {
        return Err(ChainError::SizeMismatch {
            child: child.to_path_buf(),
            parent: raw.path.clone(),
            expected: expected_size,
            found: raw.size,
        });
    }
    Ok(())
}

/// Opens the raw base `path` of `child` read-only with a shared lock, its
/// data with `O_DIRECT` if `direct`.
fn open_raw_with(child: &Path, path: &Path, direct: bool) -> Result<RawBase, ChainError> {
    let file = File::open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ChainError::MissingParent {
                child: child.to_path_buf(),
                parent: path.to_path_buf(),
            }
        } else {
            ChainError::RawOpen {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    lock(&file, LockKind::Shared).map_err(|e| match e {
        LockError::Busy(pid) => ChainError::RawInUse {
            path: path.to_path_buf(),
            pid,
        },
        LockError::Io(source) => ChainError::RawOpen {
            path: path.to_path_buf(),
            source,
        },
    })?;
    let size = file
        .metadata()
        .map_err(|source| ChainError::RawOpen {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    let mut data = DataFile::buffered(file);
    if direct {
        data = data.with_direct(path, false).map_err(|e| match e {
            DirectOpenError::Unsupported(e) => ChainError::NoDirectIo(e),
            DirectOpenError::Io(source) => ChainError::RawOpen {
                path: path.to_path_buf(),
                source,
            },
        })?;
    }
    Ok(RawBase {
        path: path.to_path_buf(),
        data,
        size,
    })
}
