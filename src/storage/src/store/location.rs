//! Where a layer file is, as the catalogue records it: a tier name and a path
//! relative to that tier's directory, never an absolute path. Moving a tier
//! then means changing one line of config, and a catalogue entry can never
//! point outside the store's tiers.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::tiers::{StoreConfig, lexically_normal};

/// A layer file: a tier and a path relative to that tier's directory.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerLocation {
    /// The tier's name.
    pub tier: String,
    /// The file, relative to the tier's directory, with no `.` or `..`.
    pub file: PathBuf,
}

/// A [`LayerLocation`]'s file is not a plain relative path inside its tier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "layer file {} on tier {tier} {problem}: a layer file must be a relative path inside its tier",
    file.display()
)]
pub struct BadLayerFileError {
    /// The tier named by the location.
    pub tier: String,
    /// The offending file path.
    pub file: PathBuf,
    /// What is wrong with it.
    pub problem: &'static str,
}

/// A [`LayerLocation`] cannot be turned into a path on this host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveLayerError {
    #[error(
        "layer file {} is on tier {tier}, which the store config does not define; known tiers: {known}",
        file.display()
    )]
    UnknownTier {
        tier: String,
        file: PathBuf,
        known: String,
    },
    #[error(transparent)]
    BadFile(#[from] BadLayerFileError),
}

impl LayerLocation {
    /// A location; see [`LayerLocation::check_file`] for what `file` may be.
    pub fn new(tier: impl Into<String>, file: impl Into<PathBuf>) -> Self {
        LayerLocation {
            tier: tier.into(),
            file: file.into(),
        }
    }

    /// Checks that `file` is non-empty, UTF-8 (the catalogue is JSON), and
    /// made only of plain names: not absolute, no `.` or `..`.
    pub fn check_file(&self) -> Result<(), BadLayerFileError> {
        let bad = |problem| BadLayerFileError {
            tier: self.tier.clone(),
            file: self.file.clone(),
            problem,
        };
        if self.file.as_os_str().is_empty() {
            return Err(bad("is empty"));
        }
        if self.file.to_str().is_none() {
            return Err(bad("is not valid UTF-8"));
        }
        for component in self.file.components() {
            match component {
                Component::Normal(_) => {}
                Component::RootDir | Component::Prefix(_) => return Err(bad("is absolute")),
                Component::ParentDir => return Err(bad("contains '..'")),
                Component::CurDir => return Err(bad("contains '.'")),
            }
        }
        Ok(())
    }
}

/// The absolute path of the layer file at `location`: its tier's directory
/// joined with its file. Refuses files that could point outside the tier.
pub fn resolve(
    config: &StoreConfig,
    location: &LayerLocation,
) -> Result<PathBuf, ResolveLayerError> {
    location.check_file()?;
    let tier = config
        .tier(&location.tier)
        .map_err(|_| ResolveLayerError::UnknownTier {
            tier: location.tier.clone(),
            file: location.file.clone(),
            known: config.known_tiers(),
        })?;
    Ok(tier.path.join(&location.file))
}

/// The location of the file at `path` (made absolute and compared lexically),
/// or `None` if it lies on no tier or is a tier's directory itself.
pub fn locate(config: &StoreConfig, path: &Path) -> Option<LayerLocation> {
    let path = lexically_normal(&std::path::absolute(path).ok()?);
    let tier = config.tier_of(&path)?;
    let file = path.strip_prefix(&tier.path).ok()?;
    let location = LayerLocation::new(tier.name.clone(), file);
    location.check_file().ok()?;
    Some(location)
}
