//! The catalogue: named images, each pointing at its top layer.
//!
//! Users speak of images by name; the catalogue maps a name to the location
//! of the image's top (newest) layer, from which the layer chain is followed.
//! It lives in `<dir>/catalogue.json` (format in `catalogue_file.rs`).
//!
//! Reading needs no lock: saves replace the file atomically, so a reader sees
//! the old catalogue or the new one, never half of each. Changing it does:
//! take [`Catalogue::lock_and_open`], change, [`Catalogue::save`], then drop
//! the lock.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::catalogue_file::{CATALOGUE_FORMAT, read_catalogue, write_catalogue};
use super::location::{BadLayerFileError, LayerLocation};
use super::lock::CatalogueLock;
use super::name::{list_names, name_problem};

/// Name of the catalogue file inside its directory.
pub const CATALOGUE_FILE_NAME: &str = "catalogue.json";

/// Up to this many known names are listed when a lookup fails.
const NAMES_IN_NOT_FOUND: usize = 10;

/// One named image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageEntry {
    /// The image's name; see the `name` module for the rule.
    pub name: String,
    /// The image's top layer.
    pub top: LayerLocation,
    /// When the image was added, in seconds since the Unix epoch.
    pub created_unix: u64,
    /// Free text from the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl ImageEntry {
    /// An entry created now, with no description.
    pub fn new(name: impl Into<String>, top: LayerLocation) -> Self {
        ImageEntry {
            name: name.into(),
            top,
            created_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_secs()),
            description: None,
        }
    }
}

/// A catalogue operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("catalogue directory {} does not exist or is not a directory", dir.display())]
    DirectoryMissing { dir: PathBuf },
    #[error("cannot read catalogue {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("catalogue {} is larger than {limit} bytes: it is damaged or not a catalogue", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error(
        "catalogue {} is not valid JSON: {source}; it was left as it is: repair it or move it away",
        path.display()
    )]
    NotJson {
        path: PathBuf,
        line: usize,
        column: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("catalogue {} has no \"format\" field: it is not a Strata catalogue", path.display())]
    NoFormat { path: PathBuf },
    #[error(
        "catalogue {} has format {found}, but this Strata reads only format {CATALOGUE_FORMAT}: \
         use the Strata that wrote it",
        path.display()
    )]
    UnsupportedFormat { path: PathBuf, found: u64 },
    #[error(
        "catalogue {} is malformed: {source}; it was left as it is",
        path.display()
    )]
    Malformed {
        path: PathBuf,
        line: usize,
        column: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("catalogue {}: image {name:?}: {problem}; it was left as it is", path.display())]
    BadEntry {
        path: PathBuf,
        name: String,
        problem: String,
    },
    #[error("no image named {name:?} in catalogue {}{hint}", path.display())]
    ImageNotFound {
        name: String,
        path: PathBuf,
        /// `"; known images: a, b"`, `" (the catalogue is empty)"`, or empty
        /// when there are too many to list.
        hint: String,
    },
    #[error("image name {name:?} is invalid: {problem}")]
    InvalidImageName { name: String, problem: &'static str },
    #[error("an image named {name:?} already exists in catalogue {}", path.display())]
    ImageNameTaken { name: String, path: PathBuf },
    #[error("image {name:?}: {source}")]
    BadLayerFile {
        name: String,
        #[source]
        source: BadLayerFileError,
    },
    #[error("cannot save catalogue {}: {step}: {source}", path.display())]
    Write {
        path: PathBuf,
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot lock catalogue lock file {}: {source}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The named images of one catalogue file, in memory.
#[derive(Clone, Debug)]
pub struct Catalogue {
    path: PathBuf,
    images: BTreeMap<String, ImageEntry>,
}

impl Catalogue {
    /// Opens `<dir>/catalogue.json`. A missing file is an empty catalogue;
    /// nothing is written until [`Catalogue::save`], so listing needs no
    /// write access and cannot race with a locked writer.
    pub fn open(dir: &Path) -> Result<Self, CatalogueError> {
        if !dir.is_dir() {
            return Err(CatalogueError::DirectoryMissing {
                dir: dir.to_owned(),
            });
        }
        let path = dir.join(CATALOGUE_FILE_NAME);
        let images = read_catalogue(&path)?.unwrap_or_default();
        Ok(Catalogue { path, images })
    }

    /// Takes the catalogue directory's lock, then opens the catalogue, so
    /// that changes saved before the lock is dropped lose nobody's updates.
    pub fn lock_and_open(dir: &Path) -> Result<(CatalogueLock, Self), CatalogueError> {
        if !dir.is_dir() {
            return Err(CatalogueError::DirectoryMissing {
                dir: dir.to_owned(),
            });
        }
        let lock = CatalogueLock::acquire(dir)?;
        let catalogue = Catalogue::open(dir)?;
        Ok((lock, catalogue))
    }

    /// The image called `name`.
    pub fn get(&self, name: &str) -> Result<&ImageEntry, CatalogueError> {
        self.images.get(name).ok_or_else(|| self.not_found(name))
    }

    /// All images, by name.
    pub fn list(&self) -> impl Iterator<Item = &ImageEntry> {
        self.images.values()
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Adds an image whose name is valid and not yet taken.
    pub fn insert(&mut self, entry: ImageEntry) -> Result<(), CatalogueError> {
        if let Some(problem) = name_problem(&entry.name) {
            return Err(CatalogueError::InvalidImageName {
                name: entry.name,
                problem,
            });
        }
        check_top(&entry.name, &entry.top)?;
        if self.images.contains_key(&entry.name) {
            return Err(CatalogueError::ImageNameTaken {
                name: entry.name,
                path: self.path.clone(),
            });
        }
        self.images.insert(entry.name.clone(), entry);
        Ok(())
    }

    /// Points image `name` at a new top layer.
    pub fn set_top(&mut self, name: &str, top: LayerLocation) -> Result<(), CatalogueError> {
        check_top(name, &top)?;
        match self.images.get_mut(name) {
            Some(entry) => {
                entry.top = top;
                Ok(())
            }
            None => Err(self.not_found(name)),
        }
    }

    /// Removes image `name`, returning its entry. Its layer files are not
    /// touched: other images may share them.
    pub fn remove(&mut self, name: &str) -> Result<ImageEntry, CatalogueError> {
        match self.images.remove(name) {
            Some(entry) => Ok(entry),
            None => Err(self.not_found(name)),
        }
    }

    /// Writes the catalogue atomically; a failed save leaves the old file
    /// intact. Hold the [`CatalogueLock`] from before opening until after
    /// saving, or another process's update may be lost.
    pub fn save(&self) -> Result<(), CatalogueError> {
        write_catalogue(&self.path, &self.images)
    }

    /// The catalogue file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn not_found(&self, name: &str) -> CatalogueError {
        let hint = match self.images.len() {
            0 => " (the catalogue is empty)".to_owned(),
            n if n <= NAMES_IN_NOT_FOUND => format!(
                "; known images: {}",
                list_names(self.images.keys().map(String::as_str), NAMES_IN_NOT_FOUND)
            ),
            _ => String::new(),
        };
        CatalogueError::ImageNotFound {
            name: name.to_owned(),
            path: self.path.clone(),
            hint,
        }
    }
}

fn check_top(name: &str, top: &LayerLocation) -> Result<(), CatalogueError> {
    top.check_file()
        .map_err(|source| CatalogueError::BadLayerFile {
            name: name.to_owned(),
            source,
        })
}
