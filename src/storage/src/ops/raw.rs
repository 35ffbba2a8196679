//! `export` to and `import` from raw disk images.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::Progress;
use crate::image::{BlockSource, Image, ImageIoError};
use crate::layer::{LayerError, LayerFile, read_up_to, sync_parent_dir};

/// Why an export or import failed.
#[derive(Debug, thiserror::Error)]
pub enum RawIoError {
    #[error("{0} already exists; remove it or choose another name")]
    Exists(PathBuf),
    #[error("cannot {op} {path}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Image(#[from] ImageIoError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error("{path} is empty; a disk image needs at least one byte")]
    Empty { path: PathBuf },
}

fn temp_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// Writes the image's contents to a new raw file at `dest`, leaving holes
/// where the image reads as zeros. The file appears only when complete.
pub fn export_raw(
    image: &Image,
    dest: &Path,
    progress: &mut dyn Progress,
) -> Result<u64, RawIoError> {
    if dest.exists() {
        return Err(RawIoError::Exists(dest.to_path_buf()));
    }
    let temp = temp_beside(dest);
    let result = write_export(image, &temp, progress);
    let finish = result.and_then(|written| {
        std::fs::rename(&temp, dest).map_err(|source| RawIoError::Io {
            path: dest.to_path_buf(),
            op: "rename into",
            source,
        })?;
        sync_parent_dir(dest);
        Ok(written)
    });
    if finish.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    finish
}

fn write_export(
    image: &Image,
    temp: &Path,
    progress: &mut dyn Progress,
) -> Result<u64, RawIoError> {
    let io = |op| {
        move |source| RawIoError::Io {
            path: temp.to_path_buf(),
            op,
            source,
        }
    };
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(temp)
        .map_err(io("create"))?;
    file.set_len(image.virtual_size()).map_err(io("size"))?;
    let bs = u64::from(image.block_size());
    progress.set_total(image.virtual_size());
    let mut buf = vec![0u8; bs as usize];
    let mut written = 0;
    for block in 0..image.blocks() {
        let start = block * bs;
        let len = (image.virtual_size() - start).min(bs) as usize;
        if image.source(block) != BlockSource::Zeros {
            image.read_at(start, &mut buf[..len])?;
            if buf[..len].iter().any(|b| *b != 0) {
                file.write_all_at(&buf[..len], start).map_err(io("write"))?;
                written += len as u64;
            }
        }
        progress.advance(len as u64);
    }
    file.sync_all().map_err(io("sync"))?;
    Ok(written)
}

/// Creates a base layer at `dest` holding the contents of the raw file
/// `src` (all-zero blocks are left out), frozen. Returns the layer.
pub fn import_raw(
    src: &Path,
    dest: &Path,
    block_size: u32,
    progress: &mut dyn Progress,
) -> Result<LayerFile, RawIoError> {
    let io = |op| {
        move |source| RawIoError::Io {
            path: src.to_path_buf(),
            op,
            source,
        }
    };
    let file = File::open(src).map_err(io("open"))?;
    let size = file.metadata().map_err(io("stat"))?.len();
    if size == 0 {
        return Err(RawIoError::Empty {
            path: src.to_path_buf(),
        });
    }
    let mut layer = LayerFile::create(dest, size, block_size, None)?;
    match fill_from(&file, src, &mut layer, size, progress) {
        Ok(()) => Ok(layer),
        Err(e) => {
            drop(layer);
            let _ = std::fs::remove_file(dest);
            Err(e)
        }
    }
}

fn fill_from(
    file: &File,
    src: &Path,
    layer: &mut LayerFile,
    size: u64,
    progress: &mut dyn Progress,
) -> Result<(), RawIoError> {
    let bs = u64::from(layer.header().geometry.block_size);
    progress.set_total(size);
    let mut buf = vec![0u8; bs as usize];
    for block in 0..size.div_ceil(bs) {
        let got = read_up_to(file, &mut buf, block * bs).map_err(|source| RawIoError::Io {
            path: src.to_path_buf(),
            op: "read",
            source,
        })?;
        buf[got..].fill(0);
        if buf.iter().any(|b| *b != 0) {
            layer.append_block(block, &buf)?;
        }
        progress.advance(got as u64);
    }
    layer.commit()?;
    layer.freeze()?;
    Ok(())
}
