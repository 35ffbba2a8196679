//! `info`, `list`, `check`, `diff` and `export`: commands that only read.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{Store, StoreError};
use crate::chain::Member;
use crate::image::Image;
use crate::layer::Access;
use crate::ops::{BlockRange, CheckReport, Progress, check_chain, diff_images, export_raw};

/// One member of an image's chain, for `info`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ChainEntry {
    /// `layer` or `raw`.
    pub kind: &'static str,
    /// Layer id (none for raw files).
    pub id: Option<String>,
    /// The tier the file lies on, if any.
    pub tier: Option<String>,
    /// The file.
    pub path: PathBuf,
    /// Frozen (read-only) layer?
    pub frozen: bool,
    /// Bytes of data the layer holds.
    pub allocated_bytes: u64,
    /// Bytes the file occupies on disk.
    pub disk_bytes: u64,
}

/// What `info` shows.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ImageInfo {
    /// Image name.
    pub name: String,
    /// Virtual disk size.
    pub virtual_size: u64,
    /// Block size.
    pub block_size: u32,
    /// The chain, top first.
    pub chain: Vec<ChainEntry>,
}

impl Store {
    fn open_image(&self, name: &str) -> Result<Image, StoreError> {
        let (_lock, catalogue) = self.catalogue()?;
        let top = self.top_path(&catalogue, name)?;
        Ok(Image::open(&top, Access::ReadOnly)?)
    }

    /// Describes image `name` and its chain.
    pub fn info(&self, name: &str) -> Result<ImageInfo, StoreError> {
        let image = self.open_image(name)?;
        let chain = image
            .members()
            .iter()
            .rev()
            .map(|member| {
                let disk_bytes = member.file().metadata().map_or(0, |m| m.blocks() * 512);
                let tier = self.config.tier_of(member.path()).map(|t| t.name.clone());
                match member {
                    Member::Layer(l) => ChainEntry {
                        kind: "layer",
                        id: Some(l.header().id.to_string()),
                        tier,
                        path: l.path().to_path_buf(),
                        frozen: l.header().frozen,
                        allocated_bytes: l.allocated_bytes(),
                        disk_bytes,
                    },
                    Member::Raw(r) => ChainEntry {
                        kind: "raw",
                        id: None,
                        tier,
                        path: r.path.clone(),
                        frozen: true,
                        allocated_bytes: r.size,
                        disk_bytes,
                    },
                }
            })
            .collect();
        Ok(ImageInfo {
            name: name.to_string(),
            virtual_size: image.virtual_size(),
            block_size: image.block_size(),
            chain,
        })
    }

    /// Verifies image `name`'s headers, tables, checksums and links.
    pub fn check(&self, name: &str) -> Result<CheckReport, StoreError> {
        let (_lock, catalogue) = self.catalogue()?;
        let top = self.top_path(&catalogue, name)?;
        Ok(check_chain(&top)?)
    }

    /// The blocks in which images `a` and `b` differ.
    pub fn diff(&self, a: &str, b: &str) -> Result<(Vec<BlockRange>, u32), StoreError> {
        let (first, second) = (self.open_image(a)?, self.open_image(b)?);
        Ok((diff_images(&first, &second)?, first.block_size()))
    }

    /// Writes image `name` to a new raw file `dest`.
    pub fn export(
        &self,
        name: &str,
        dest: &Path,
        progress: &mut dyn Progress,
    ) -> Result<u64, StoreError> {
        let image = self.open_image(name)?;
        Ok(export_raw(&image, dest, progress)?)
    }
}
