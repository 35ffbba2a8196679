//! Copying frozen layers and raw bases to another tier.
//!
//! A copied layer keeps its id, so children created on the original still
//! recognise it, and a later copy to the same tier finds it there and skips
//! it: the second copy of an image moves only the layers frozen since.
//! Only allocated blocks are copied, each with `copy_file_range`.

use std::fs::{File, OpenOptions};
use std::path::Path;

use super::Progress;
use super::raw::RawIoError;
use crate::format::TableEntry;
use crate::layer::{LayerError, LayerFile, ParentSpec, copy_range, sync_parent_dir};

/// What a copy moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CopyStats {
    /// Bytes of block data copied.
    pub bytes: u64,
}

/// Copies the frozen layer `src` to a new file `dest`, with `parent` as its
/// parent (the same parent, located where the copy should look for it).
pub fn copy_layer(
    src: &LayerFile,
    dest: &Path,
    parent: Option<&ParentSpec>,
    progress: &mut dyn Progress,
) -> Result<CopyStats, LayerError> {
    let header = src.header();
    let copy = LayerFile::create_with_id(
        dest,
        header.id,
        header.virtual_size,
        header.geometry.block_size,
        parent,
    )?;
    let result = (|| {
        let bs = u64::from(header.geometry.block_size);
        let mut stats = CopyStats::default();
        for (block, entry) in (0u64..).zip(src.entries()) {
            match entry {
                TableEntry::Absent => {}
                TableEntry::Zero => copy.set_entry(block, TableEntry::Zero)?,
                TableEntry::Data(offset) => {
                    copy.append_block_from(block, src.file(), offset)?;
                    stats.bytes += bs;
                    progress.advance(bs);
                }
            }
        }
        copy.commit()?;
        if header.frozen {
            copy.freeze()?;
        }
        Ok(stats)
    })();
    if result.is_err() {
        drop(copy);
        let _ = std::fs::remove_file(dest);
    }
    result
}

/// Copies a raw base to `dest`, skipping holes.
pub fn copy_raw(
    src: &Path,
    dest: &Path,
    progress: &mut dyn Progress,
) -> Result<CopyStats, RawIoError> {
    let io = |path: &Path, op| {
        let path = path.to_path_buf();
        move |source| RawIoError::Io { path, op, source }
    };
    let input = File::open(src).map_err(io(src, "open"))?;
    let size = input.metadata().map_err(io(src, "stat"))?.len();
    let temp = dest.with_extension("partial");
    let output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .map_err(io(&temp, "create"))?;
    let result = (|| {
        output.set_len(size).map_err(io(&temp, "size"))?;
        let mut stats = CopyStats::default();
        for (start, len) in data_extents(&input, size) {
            copy_range(&input, start, &output, start, len).map_err(io(src, "copy"))?;
            stats.bytes += len;
            progress.advance(len);
        }
        output.sync_all().map_err(io(&temp, "sync"))?;
        std::fs::rename(&temp, dest).map_err(io(dest, "rename into"))?;
        sync_parent_dir(dest);
        Ok(stats)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// The `(offset, len)` extents of `file` that hold data, by SEEK_DATA/SEEK_HOLE;
/// the whole file if the filesystem cannot tell.
fn data_extents(file: &File, size: u64) -> Vec<(u64, u64)> {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    let mut extents = Vec::new();
    let mut pos: i64 = 0;
    while (pos as u64) < size {
        // SAFETY: lseek(2) on a descriptor owned by `file`; no memory is passed.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::ENXIO) {
                break; // no more data
            }
            return vec![(0, size)];
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let end = if hole < 0 {
            size as i64
        } else {
            hole.min(size as i64)
        };
        extents.push((data as u64, (end - data) as u64));
        pos = end;
    }
    extents
}
