//! Images by name: the operations behind `strata image`.
//!
//! A [`Store`] joins the tier configuration and the catalogue. Layer files
//! are named by their id, `<tier dir>/<id>.layer`, so a layer is the same
//! file name on every tier it has been copied to. A child records its parent
//! as a bare file name when both share a directory, else by absolute path.
//! Raw golden images that lie on no tier are referenced where they are and
//! never copied or deleted by Strata.
//!
//! Every command that changes the catalogue holds its lock for the whole
//! read-modify-write, and saves it only after the layer files it names are
//! complete, so an error never leaves the catalogue pointing at a half-made
//! layer.

mod copy;
mod create;
mod inspect;
mod remove;

use std::path::{Path, PathBuf};

use uuid::Uuid;

pub use copy::CopyReport;
pub use create::{CreateFrom, ImportFormat};
pub use inspect::{ChainEntry, ImageInfo};

use crate::chain::ChainError;
use crate::image::ImageIoError;
use crate::layer::LayerError;
use crate::ops::{DiffError, MergeError, RawIoError};
use crate::store::{
    Catalogue, CatalogueError, CatalogueLock, LayerLocation, ResolveLayerError, StoreConfig,
    StoreConfigError, locate, resolve,
};

/// Why an image command failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Catalogue(#[from] CatalogueError),
    #[error(transparent)]
    Config(#[from] StoreConfigError),
    #[error(transparent)]
    Resolve(#[from] ResolveLayerError),
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Io(#[from] ImageIoError),
    #[error(transparent)]
    Merge(#[from] MergeError),
    #[error(transparent)]
    Raw(#[from] RawIoError),
    #[error(transparent)]
    Diff(#[from] DiffError),
    #[error("layer {layer} is also part of image {other}; {action} would change {other} too")]
    SharedLayer {
        layer: PathBuf,
        other: String,
        action: &'static str,
    },
    #[error("image {0} is a frozen snapshot; create an image from it to write")]
    Frozen(String),
    #[error("{what}: {message}")]
    Tool { what: String, message: String },
    #[error("cannot {op} {path}: {source}")]
    File {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
}

/// The tiers and the catalogue.
pub struct Store {
    config: StoreConfig,
    catalogue_dir: PathBuf,
}

impl Store {
    /// A store whose catalogue lives in `catalogue_dir`.
    pub fn new(config: StoreConfig, catalogue_dir: PathBuf) -> Self {
        Self {
            config,
            catalogue_dir,
        }
    }

    /// The tier configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Locks and reads the catalogue.
    fn catalogue(&self) -> Result<(CatalogueLock, Catalogue), StoreError> {
        Ok(Catalogue::lock_and_open(&self.catalogue_dir)?)
    }

    /// The path of an image's top layer.
    fn top_path(&self, catalogue: &Catalogue, name: &str) -> Result<PathBuf, StoreError> {
        Ok(resolve(&self.config, &catalogue.get(name)?.top)?)
    }

    /// Where a new layer with `id` goes on `tier`.
    fn new_layer(&self, tier: &str, id: Uuid) -> Result<(LayerLocation, PathBuf), StoreError> {
        let location = LayerLocation::new(tier, format!("{id}.layer"));
        let path = resolve(&self.config, &location)?;
        Ok((location, path))
    }

    /// The catalogue location of a layer file.
    fn location_of(&self, path: &Path) -> Result<LayerLocation, StoreError> {
        locate(&self.config, path).ok_or_else(|| StoreError::Tool {
            what: path.display().to_string(),
            message: "lies on no configured tier".to_string(),
        })
    }

    /// The names of all images.
    pub fn names(&self) -> Result<Vec<String>, StoreError> {
        let (_lock, catalogue) = self.catalogue()?;
        Ok(catalogue.list().map(|e| e.name.clone()).collect())
    }
}

/// Fails with the catalogue's own error if `name` is invalid or taken, before
/// any file is made for it.
pub(crate) fn ensure_name_free(catalogue: &Catalogue, name: &str) -> Result<(), StoreError> {
    let mut probe = catalogue.clone();
    probe.insert(crate::store::ImageEntry::new(
        name,
        LayerLocation::new("probe", "probe.layer"),
    ))?;
    Ok(())
}

/// How a child refers to its parent: a bare file name if they share a
/// directory, else the parent's absolute path.
pub(crate) fn parent_location_for(child: &Path, parent: &Path) -> String {
    let same_dir = child.parent().is_some() && child.parent() == parent.parent();
    match (same_dir, parent.file_name()) {
        (true, Some(name)) => name.to_string_lossy().into_owned(),
        _ => std::path::absolute(parent)
            .unwrap_or_else(|_| parent.to_path_buf())
            .display()
            .to_string(),
    }
}

/// The files of the chain under `top`, top first, read without locks.
pub(crate) fn chain_files(top: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut files = vec![top.to_path_buf()];
    let mut current = top.to_path_buf();
    while files.len() <= crate::chain::MAX_CHAIN_DEPTH {
        let (header, location) = crate::layer::peek(&current)?;
        let (Some(parent), Some(location)) = (header.parent, location) else {
            break;
        };
        let next = crate::chain::resolve_location(&current, &location);
        files.push(next.clone());
        if parent.kind == crate::format::ParentKind::Raw {
            break;
        }
        current = next;
    }
    Ok(files)
}

/// Canonical form of a path for comparisons (falls back to the path itself).
pub(crate) fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

/// The first other image whose chain contains `layer`, if any.
pub(crate) fn other_user(
    store: &Store,
    catalogue: &Catalogue,
    except: &str,
    layer: &Path,
) -> Result<Option<String>, StoreError> {
    let layer = canonical(layer);
    for entry in catalogue.list().filter(|e| e.name != except) {
        let top = resolve(&store.config, &entry.top)?;
        let Ok(files) = chain_files(&top) else {
            continue;
        };
        if files.iter().any(|f| canonical(f) == layer) {
            return Ok(Some(entry.name.clone()));
        }
    }
    Ok(None)
}
