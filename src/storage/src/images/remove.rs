//! `rm` and `commit`: commands that delete layers.

use std::path::PathBuf;

use super::{Store, StoreError, chain_files, other_user};
use crate::layer::peek;
use crate::ops::{Progress, merge_top_into_parent};

impl Store {
    /// Removes image `name` from the catalogue and deletes the layers of its
    /// chain that no other image uses and that lie on a tier. Returns the
    /// files deleted.
    pub fn remove(&self, name: &str) -> Result<Vec<PathBuf>, StoreError> {
        let (_lock, mut catalogue) = self.catalogue()?;
        let top = self.top_path(&catalogue, name)?;
        // Fails if a writer has the image open.
        drop(crate::layer::LayerFile::open(
            &top,
            crate::layer::Access::ReadOnly,
        )?);
        let files = chain_files(&top).unwrap_or_else(|_| vec![top.clone()]);
        catalogue.remove(name)?;
        catalogue.save()?;
        let mut deleted = Vec::new();
        for file in files {
            let on_tier = self.config.tier_of(&file).is_some();
            let is_layer = peek(&file).is_ok();
            if !on_tier || !is_layer || other_user(self, &catalogue, name, &file)?.is_some() {
                break;
            }
            if std::fs::remove_file(&file).is_ok() {
                deleted.push(file);
            }
        }
        Ok(deleted)
    }

    /// Merges image `name`'s top layer into its parent, which becomes the top.
    pub fn commit(&self, name: &str, progress: &mut dyn Progress) -> Result<(), StoreError> {
        let (_lock, mut catalogue) = self.catalogue()?;
        let top = self.top_path(&catalogue, name)?;
        // The parent changes and the top goes away: neither may belong to
        // another image's chain.
        for layer in chain_files(&top)?.iter().take(2) {
            if let Some(other) = other_user(self, &catalogue, name, layer)? {
                return Err(StoreError::SharedLayer {
                    layer: layer.clone(),
                    other,
                    action: "commit",
                });
            }
        }
        let parent = merge_top_into_parent(&top, progress)?;
        catalogue.set_top(name, self.location_of(&parent)?)?;
        catalogue.save()?;
        let _ = std::fs::remove_file(&top);
        Ok(())
    }
}
