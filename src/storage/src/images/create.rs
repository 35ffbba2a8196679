//! `create`, `snapshot` and `import`.

use std::path::{Path, PathBuf};
use std::process::Command;

use uuid::Uuid;

use super::{Store, StoreError, ensure_name_free, parent_location_for};
use crate::format::ParentKind;
use crate::image::Image;
use crate::layer::{Access, LayerFile, ParentSpec, peek};
use crate::ops::{Progress, import_raw};
use crate::store::ImageEntry;

/// What a new image starts from.
#[derive(Clone, Debug)]
pub enum CreateFrom {
    /// An empty disk of this many bytes.
    Empty(u64),
    /// Another image: its current contents become the new image's base
    /// (its top is frozen first if it is not already).
    Image(String),
    /// A raw golden image file, used in place as the base.
    Raw(PathBuf),
}

/// The format of a file to import.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportFormat {
    /// Decide from the file's first bytes.
    Auto,
    /// A raw disk image.
    Raw,
    /// A qcow2 image (converted with `qemu-img`).
    Qcow2,
}

impl Store {
    /// Creates image `name` as a new writable layer on the overlays tier.
    pub fn create(&self, name: &str, from: &CreateFrom, block_size: u32) -> Result<(), StoreError> {
        let (_lock, mut catalogue) = self.catalogue()?;
        ensure_name_free(&catalogue, name)?;
        let tier = self.config.placement().overlays.clone();
        let id = Uuid::new_v4();
        let (location, path) = self.new_layer(&tier, id)?;
        let (size, block_size, parent) = match from {
            CreateFrom::Empty(size) => (*size, block_size, None),
            CreateFrom::Raw(raw) => {
                let raw = std::path::absolute(raw).map_err(|source| StoreError::File {
                    path: raw.clone(),
                    op: "resolve",
                    source,
                })?;
                let size = std::fs::metadata(&raw)
                    .map_err(|source| StoreError::File {
                        path: raw.clone(),
                        op: "read",
                        source,
                    })?
                    .len();
                let spec = ParentSpec {
                    kind: ParentKind::Raw,
                    id: Uuid::nil(),
                    size,
                    location: raw.display().to_string(),
                };
                (size, block_size, Some(spec))
            }
            CreateFrom::Image(base) => {
                let base_top = self.frozen_top(&mut catalogue, base)?;
                let (header, _) = peek(&base_top)?;
                let spec = ParentSpec {
                    kind: ParentKind::Layer,
                    id: header.id,
                    size: header.virtual_size,
                    location: parent_location_for(&path, &base_top),
                };
                (header.virtual_size, header.geometry.block_size, Some(spec))
            }
        };
        LayerFile::create_with_id(&path, id, size, block_size, parent.as_ref())?;
        // The new layer's chain must open before the catalogue names it.
        if let Err(e) = Image::open(&path, Access::ReadOnly) {
            let _ = std::fs::remove_file(&path);
            return Err(e.into());
        }
        catalogue.insert(ImageEntry::new(name, location))?;
        catalogue.save()?;
        Ok(())
    }

    /// The top of image `name`, frozen: if it is writable, the image is
    /// snapshotted first (and continues in a new top layer).
    fn frozen_top(
        &self,
        catalogue: &mut crate::store::Catalogue,
        name: &str,
    ) -> Result<PathBuf, StoreError> {
        let top = self.top_path(catalogue, name)?;
        if peek(&top)?.0.frozen {
            return Ok(top);
        }
        self.snapshot_locked(catalogue, name)?;
        Ok(top)
    }

    /// Freezes image `name`'s top and continues in a new top layer on the
    /// overlays tier. With `register_as`, the frozen layer is also added to
    /// the catalogue under that name. Returns the frozen layer's id.
    pub fn snapshot(&self, name: &str, register_as: Option<&str>) -> Result<Uuid, StoreError> {
        let (_lock, mut catalogue) = self.catalogue()?;
        if let Some(snap) = register_as {
            ensure_name_free(&catalogue, snap)?;
        }
        let frozen_location = catalogue.get(name)?.top.clone();
        let id = self.snapshot_locked(&mut catalogue, name)?;
        if let Some(snap) = register_as {
            catalogue.insert(ImageEntry::new(snap, frozen_location))?;
        }
        catalogue.save()?;
        Ok(id)
    }

    fn snapshot_locked(
        &self,
        catalogue: &mut crate::store::Catalogue,
        name: &str,
    ) -> Result<Uuid, StoreError> {
        let top = self.top_path(catalogue, name)?;
        if peek(&top)?.0.frozen {
            return Err(StoreError::Frozen(name.to_string()));
        }
        let mut image = Image::open(&top, Access::ReadWrite)?;
        let frozen_id = image.top().header().id;
        let tier = self.config.placement().overlays.clone();
        let new_id = Uuid::new_v4();
        let (location, path) = self.new_layer(&tier, new_id)?;
        image.snapshot_with_id(&path, new_id, &parent_location_for(&path, &top))?;
        catalogue.set_top(name, location)?;
        catalogue.save()?;
        Ok(frozen_id)
    }

    /// Imports `file` as image `name`: a frozen base layer on the bases tier.
    pub fn import(
        &self,
        name: &str,
        file: &Path,
        format: ImportFormat,
        block_size: u32,
        progress: &mut dyn Progress,
    ) -> Result<(), StoreError> {
        let (_lock, mut catalogue) = self.catalogue()?;
        ensure_name_free(&catalogue, name)?;
        let tier = self.config.placement().bases.clone();
        let tier_dir = self.config.tier(&tier)?.path.clone();
        let format = match format {
            ImportFormat::Auto => sniff_format(file)?,
            other => other,
        };
        let converted = tier_dir.join(format!(".import-{}.raw", std::process::id()));
        let raw_source = match format {
            ImportFormat::Qcow2 => {
                qcow2_to_raw(file, &converted)?;
                converted.clone()
            }
            _ => file.to_path_buf(),
        };
        let staging = tier_dir.join(format!(".import-{}.layer", std::process::id()));
        let imported = import_raw(&raw_source, &staging, block_size, progress);
        let _ = std::fs::remove_file(&converted);
        let layer = imported?;
        let id = layer.header().id;
        drop(layer);
        let (location, path) = self.new_layer(&tier, id)?;
        std::fs::rename(&staging, &path).map_err(|source| StoreError::File {
            path: path.clone(),
            op: "rename into",
            source,
        })?;
        catalogue.insert(ImageEntry::new(name, location))?;
        catalogue.save()?;
        Ok(())
    }
}

fn sniff_format(file: &Path) -> Result<ImportFormat, StoreError> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let mut handle = std::fs::File::open(file).map_err(|source| StoreError::File {
        path: file.to_path_buf(),
        op: "open",
        source,
    })?;
    let n = handle.read(&mut magic).map_err(|source| StoreError::File {
        path: file.to_path_buf(),
        op: "read",
        source,
    })?;
    Ok(if n == 4 && &magic == b"QFI\xfb" {
        ImportFormat::Qcow2
    } else {
        ImportFormat::Raw
    })
}

fn qcow2_to_raw(src: &Path, dest: &Path) -> Result<(), StoreError> {
    let output = Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(src)
        .arg(dest)
        .output()
        .map_err(|e| StoreError::Tool {
            what: "qemu-img".to_string(),
            message: format!("cannot run it ({e}); install qemu-utils to import qcow2 images"),
        })?;
    if !output.status.success() {
        let _ = std::fs::remove_file(dest);
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(StoreError::Tool {
            what: format!("qemu-img convert {}", src.display()),
            message: stderr.lines().next().unwrap_or("failed").to_string(),
        });
    }
    Ok(())
}
