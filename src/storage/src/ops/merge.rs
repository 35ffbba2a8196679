//! `commit`: merge a top layer into its parent layer.
//!
//! Every block the top holds (data or zero) is written into the parent; the
//! parent then becomes the top of the image and the old top can be deleted.
//! While this runs, the image read through the old top is unchanged, because
//! the parent only changes in blocks the top masks; so a crash half-way
//! loses nothing. The parent is locked exclusively: if any other chain has it
//! open, the merge is refused.

use std::path::{Path, PathBuf};

use super::Progress;
use crate::chain::resolve_location;
use crate::format::{ParentKind, TableEntry};
use crate::layer::{Access, LayerError, LayerFile};

/// Why a merge was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error("layer {0} has no parent to merge into")]
    NoParent(PathBuf),
    #[error(
        "layer {top}: its parent {parent} is a raw file; export the image instead of merging into it"
    )]
    RawParent { top: PathBuf, parent: PathBuf },
    #[error("layer {top}: its parent {parent} is not the layer it was created on")]
    ParentMismatch { top: PathBuf, parent: PathBuf },
}

/// Merges `top` into its parent and returns the parent's path. The caller
/// deletes `top` afterwards and makes the parent the image's top.
pub fn merge_top_into_parent(
    top: &Path,
    progress: &mut dyn Progress,
) -> Result<PathBuf, MergeError> {
    let child = LayerFile::open(top, Access::ReadOnly)?;
    let header = child.header();
    let (Some(parent), Some(location)) = (header.parent, child.parent_location()) else {
        return Err(MergeError::NoParent(top.to_path_buf()));
    };
    let parent_path = resolve_location(top, location);
    if parent.kind == ParentKind::Raw {
        return Err(MergeError::RawParent {
            top: top.to_path_buf(),
            parent: parent_path,
        });
    }
    let target = LayerFile::open_to_merge_into(&parent_path)?;
    if target.header().id != parent.id
        || target.header().geometry.block_size != header.geometry.block_size
    {
        return Err(MergeError::ParentMismatch {
            top: top.to_path_buf(),
            parent: parent_path,
        });
    }
    let bs = u64::from(header.geometry.block_size);
    progress.set_total(child.allocated_bytes());
    let mut buf = vec![0u8; bs as usize];
    for (block, entry) in (0u64..).zip(child.entries()) {
        match entry {
            TableEntry::Absent => {}
            TableEntry::Zero => target.set_entry(block, TableEntry::Zero)?,
            TableEntry::Data(offset) => {
                match target.entry(block) {
                    TableEntry::Data(own) => {
                        crate::layer::read_up_to(child.file(), &mut buf, offset).map_err(
                            |source| LayerError::Io {
                                path: top.to_path_buf(),
                                op: "read a block",
                                source,
                            },
                        )?;
                        target.write_owned(own, &buf)?;
                    }
                    _ => {
                        target.append_block_from(block, child.file(), offset)?;
                    }
                }
                progress.advance(bs);
            }
        }
    }
    target.commit()?;
    Ok(parent_path)
}
