//! The catalogue's file format and its crash-safe writing.
//!
//! ```text
//! {
//!   "format": 1,
//!   "images": [
//!     { "name": "debian-12",
//!       "top": { "tier": "fast", "file": "debian-12/top.layer" },
//!       "created_unix": 1767225600,
//!       "description": "optional" }
//!   ]
//! }
//! ```
//!
//! `format` is read first, on its own, so a file from a newer Strata is
//! refused with a version message rather than a confusing field error. A file
//! that cannot be read is reported and left alone: Strata never replaces a
//! catalogue it could not understand.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::error::Category;

use super::catalogue::{CatalogueError, ImageEntry};
use super::name::name_problem;

/// The catalogue format this code reads and writes.
pub const CATALOGUE_FORMAT: u32 = 1;

/// Largest catalogue read: about 200 000 images, and a bound on what a
/// wrong or damaged file can make us allocate.
const MAX_CATALOGUE_BYTES: u64 = 64 << 20;

#[derive(Deserialize)]
struct FormatProbe {
    format: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogueFileV1 {
    #[allow(dead_code, reason = "checked by FormatProbe before this is decoded")]
    format: u32,
    images: Vec<ImageEntry>,
}

#[derive(Serialize)]
struct CatalogueFileV1Out<'a> {
    format: u32,
    images: Vec<&'a ImageEntry>,
}

/// Reads the catalogue at `path`; `None` if there is no such file.
pub(super) fn read_catalogue(
    path: &Path,
) -> Result<Option<BTreeMap<String, ImageEntry>>, CatalogueError> {
    let read_error = |source| CatalogueError::Read {
        path: path.to_owned(),
        source,
    };
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(read_error(error)),
    };
    let mut text = String::new();
    file.take(MAX_CATALOGUE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > MAX_CATALOGUE_BYTES {
        return Err(CatalogueError::TooLarge {
            path: path.to_owned(),
            limit: MAX_CATALOGUE_BYTES,
        });
    }
    decode_catalogue(path, &text).map(Some)
}

/// Decodes catalogue `text` read from `path`.
pub(super) fn decode_catalogue(
    path: &Path,
    text: &str,
) -> Result<BTreeMap<String, ImageEntry>, CatalogueError> {
    let probe: FormatProbe = serde_json::from_str(text).map_err(|e| json_error(path, e))?;
    match probe.format {
        None => {
            return Err(CatalogueError::NoFormat {
                path: path.to_owned(),
            });
        }
        Some(found) if found != u64::from(CATALOGUE_FORMAT) => {
            return Err(CatalogueError::UnsupportedFormat {
                path: path.to_owned(),
                found,
            });
        }
        Some(_) => {}
    }
    let file: CatalogueFileV1 = serde_json::from_str(text).map_err(|e| json_error(path, e))?;
    let mut images = BTreeMap::new();
    for entry in file.images {
        let bad_entry = |problem: String| CatalogueError::BadEntry {
            path: path.to_owned(),
            name: entry.name.clone(),
            problem,
        };
        if let Some(problem) = name_problem(&entry.name) {
            return Err(bad_entry(format!("invalid name: {problem}")));
        }
        if let Err(error) = entry.top.check_file() {
            return Err(bad_entry(error.to_string()));
        }
        if images.contains_key(&entry.name) {
            return Err(bad_entry("the name appears twice".to_owned()));
        }
        images.insert(entry.name.clone(), entry);
    }
    Ok(images)
}

fn json_error(path: &Path, error: serde_json::Error) -> CatalogueError {
    let (line, column) = (error.line(), error.column());
    match error.classify() {
        Category::Syntax | Category::Eof => CatalogueError::NotJson {
            path: path.to_owned(),
            line,
            column,
            source: error,
        },
        Category::Data | Category::Io => CatalogueError::Malformed {
            path: path.to_owned(),
            line,
            column,
            source: error,
        },
    }
}

/// Replaces the catalogue at `path` with `images`, atomically: a temporary
/// file in the same directory is written and fsynced, renamed over `path`,
/// and the directory fsynced so the rename itself survives a crash. If any
/// step fails the old file is untouched and the temporary file removed.
pub(super) fn write_catalogue(
    path: &Path,
    images: &BTreeMap<String, ImageEntry>,
) -> Result<(), CatalogueError> {
    let write_error = |step: &'static str| {
        move |source| CatalogueError::Write {
            path: path.to_owned(),
            step,
            source,
        }
    };
    let contents = CatalogueFileV1Out {
        format: CATALOGUE_FORMAT,
        images: images.values().collect(),
    };
    let mut bytes = serde_json::to_vec_pretty(&contents)
        .map_err(|error| write_error("encode")(io::Error::other(error)))?;
    bytes.push(b'\n');

    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map_or_else(|| "catalogue".into(), |name| name.to_string_lossy());
    let temp_path = dir.join(format!(".{file_name}.{}.tmp", uuid::Uuid::new_v4()));
    let mut temp = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp_path)
        .map_err(write_error("create temporary file"))?;
    let written = temp
        .write_all(&bytes)
        .map_err(write_error("write temporary file"))
        .and_then(|()| temp.sync_all().map_err(write_error("fsync temporary file")))
        .and_then(|()| {
            std::fs::rename(&temp_path, path).map_err(write_error("rename over the old file"))
        });
    if written.is_err() {
        // Best effort: the error that matters is the one returned.
        let _ = std::fs::remove_file(&temp_path);
        return written;
    }
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(write_error("fsync the directory"))
}
