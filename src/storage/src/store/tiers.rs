//! Storage tiers, the placement policy, and the checks that keep them sane.
//!
//! A [`StoreConfig`] is built either from a TOML file ([`StoreConfig::load`],
//! in `config_file.rs`) or from `--tier` flags ([`StoreConfig::from_tier_flags`],
//! in `tier_flags.rs`); both end in [`StoreConfig::assemble`], so the same
//! rules hold whatever the source: at least one tier, valid and distinct tier
//! names, absolute tier directories of which none contains another, and a
//! placement that names known tiers.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::name::{list_names, name_problem};

/// What kind of storage a tier sits on. Placement defaults use it; Strata
/// attaches no other meaning to it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum TierClass {
    /// Low-latency storage (NVMe, SSD): where writable overlays belong.
    Fast,
    /// Large, slower storage (HDD, network): where frozen bases belong. A tier
    /// whose class is not given is a capacity tier: nothing is assumed fast
    /// unless someone says so.
    #[default]
    Capacity,
    /// Any other class name, kept (lower-cased) for the operator's own use.
    Other(String),
}

impl TierClass {
    /// Parses a class name, case-insensitively: `fast`, `capacity`, or any
    /// other valid name.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let lower = text.to_ascii_lowercase();
        if let Some(problem) = name_problem(&lower) {
            return Err(problem);
        }
        Ok(match lower.as_str() {
            "fast" => TierClass::Fast,
            "capacity" => TierClass::Capacity,
            _ => TierClass::Other(lower),
        })
    }

    /// The class name as written in a config file.
    pub fn as_str(&self) -> &str {
        match self {
            TierClass::Fast => "fast",
            TierClass::Capacity => "capacity",
            TierClass::Other(name) => name,
        }
    }
}

impl fmt::Display for TierClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for TierClass {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        TierClass::parse(&text).map_err(|problem| format!("tier class {text:?}: {problem}"))
    }
}

impl From<TierClass> for String {
    fn from(class: TierClass) -> Self {
        class.as_str().to_owned()
    }
}

/// A named directory that holds layer files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tier {
    /// The tier's name, as used in the catalogue and in `[placement]`.
    pub name: String,
    /// The tier's directory: absolute, with no `.` or `..` components.
    pub path: PathBuf,
    /// What kind of storage it is.
    pub class: TierClass,
}

/// Which tier new layers go to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Tier for new writable top (copy-on-write) layers.
    pub overlays: String,
    /// Tier for frozen layers and imported golden images.
    pub bases: String,
}

/// What a [`StoreConfig`] was built from, named in error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    /// A TOML file.
    File(PathBuf),
    /// `--tier` command-line flags.
    Flags,
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::File(path) => write!(f, "store config {}", path.display()),
            ConfigSource::Flags => f.write_str("--tier flags"),
        }
    }
}

/// A placement role, for messages: which `[placement]` key is at fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlacementRole {
    /// `placement.overlays`: new writable layers.
    Overlays,
    /// `placement.bases`: frozen layers and imported bases.
    Bases,
}

impl fmt::Display for PlacementRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PlacementRole::Overlays => "overlays",
            PlacementRole::Bases => "bases",
        })
    }
}

/// The store configuration is invalid, or a tier is unusable.
#[derive(Debug, thiserror::Error)]
pub enum StoreConfigError {
    #[error("cannot read store config {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("store config {}:{line}:{column}: {message}", path.display())]
    ParseFile {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("--tier {flag:?}: {problem}; expected NAME=PATH[:CLASS]")]
    BadTierFlag { flag: String, problem: String },
    #[error("{source_of} defines no storage tiers: give at least one")]
    NoTiers { source_of: ConfigSource },
    #[error("{source_of}: tier name {name:?} is invalid: {problem}")]
    InvalidTierName {
        source_of: ConfigSource,
        name: String,
        problem: &'static str,
    },
    #[error("{source_of}: tier {name} is given twice")]
    DuplicateTierName {
        source_of: ConfigSource,
        name: String,
    },
    #[error("{source_of}: tier {tier} has an empty path")]
    EmptyTierPath {
        source_of: ConfigSource,
        tier: String,
    },
    #[error("{source_of}: tier {tier} path {} is relative", path.display())]
    RelativeTierPath {
        source_of: ConfigSource,
        tier: String,
        path: PathBuf,
    },
    #[error("cannot make tier {tier} path {} absolute: {source}", path.display())]
    AbsoluteTierPath {
        tier: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{source_of}: tiers {first} and {second} share the directory {}: each tier needs its own",
        path.display()
    )]
    SharedTierDirectory {
        source_of: ConfigSource,
        first: String,
        second: String,
        path: PathBuf,
    },
    #[error(
        "{source_of}: tier {inner}'s directory {} lies inside tier {outer}'s directory {}: \
         tier directories must not nest",
        inner_path.display(), outer_path.display()
    )]
    NestedTierDirectory {
        source_of: ConfigSource,
        outer: String,
        outer_path: PathBuf,
        inner: String,
        inner_path: PathBuf,
    },
    #[error(
        "{source_of}: placement {role} names tier {tier:?}, which is not defined; known tiers: {known}"
    )]
    UnknownPlacementTier {
        source_of: ConfigSource,
        role: PlacementRole,
        tier: String,
        known: String,
    },
    #[error(
        "{source_of} has several tiers and none of class {class}: \
         say which tier takes {role} under [placement]"
    )]
    PlacementNeeded {
        source_of: ConfigSource,
        role: PlacementRole,
        class: TierClass,
    },
    #[error("no storage tier named {name:?}; known tiers: {known}")]
    UnknownTier { name: String, known: String },
    #[error("tier {tier} directory {} does not exist: create it first", path.display())]
    TierDirectoryMissing { tier: String, path: PathBuf },
    #[error("tier {tier} path {} is not a directory", path.display())]
    TierNotADirectory { tier: String, path: PathBuf },
    #[error("cannot inspect tier {tier} directory {}: {source}", path.display())]
    TierDirectoryUnreadable {
        tier: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("tier {tier} directory {} is not writable: {source}", path.display())]
    TierNotWritable {
        tier: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The storage tiers and where new layers go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    tiers: BTreeMap<String, Tier>,
    placement: Placement,
    source: ConfigSource,
}

impl StoreConfig {
    /// Checks and assembles a config. `tiers` are in the order the user gave
    /// them; their paths must already be absolute. A missing placement
    /// defaults to the only tier, else to the first tier of class `fast`
    /// (overlays) or `capacity` (bases), else — for flags only, whose order
    /// is meaningful — to the first tier given.
    pub(super) fn assemble(
        source: ConfigSource,
        tiers: Vec<Tier>,
        overlays: Option<String>,
        bases: Option<String>,
    ) -> Result<Self, StoreConfigError> {
        if tiers.is_empty() {
            return Err(StoreConfigError::NoTiers { source_of: source });
        }
        let mut by_name: BTreeMap<String, Tier> = BTreeMap::new();
        for mut tier in tiers.iter().cloned() {
            check_tier(&source, &tier)?;
            tier.path = lexically_normal(&tier.path);
            if by_name.contains_key(&tier.name) {
                return Err(StoreConfigError::DuplicateTierName {
                    source_of: source,
                    name: tier.name,
                });
            }
            if let Some(clash) = by_name.values().find_map(|t| overlap(&source, t, &tier)) {
                return Err(clash);
            }
            by_name.insert(tier.name.clone(), tier);
        }
        let overlays =
            choose_placement(&source, &tiers, &by_name, PlacementRole::Overlays, overlays)?;
        let bases = choose_placement(&source, &tiers, &by_name, PlacementRole::Bases, bases)?;
        Ok(StoreConfig {
            tiers: by_name,
            placement: Placement { overlays, bases },
            source,
        })
    }

    /// Checks that every tier directory exists, is a directory and is
    /// writable (a file is created and removed in it), and that no two tiers
    /// reach the same directory through symbolic links.
    pub fn validate(&self) -> Result<(), StoreConfigError> {
        let mut real_tiers: Vec<Tier> = Vec::new();
        for tier in self.tiers.values() {
            check_tier_directory(tier)?;
            let real_path = tier.path.canonicalize().map_err(|source| {
                StoreConfigError::TierDirectoryUnreadable {
                    tier: tier.name.clone(),
                    path: tier.path.clone(),
                    source,
                }
            })?;
            let real_tier = Tier {
                path: real_path,
                ..tier.clone()
            };
            if let Some(clash) = real_tiers
                .iter()
                .find_map(|other| overlap(&self.source, other, &real_tier))
            {
                return Err(clash);
            }
            real_tiers.push(real_tier);
        }
        Ok(())
    }

    /// The tier called `name`.
    pub fn tier(&self, name: &str) -> Result<&Tier, StoreConfigError> {
        self.tiers
            .get(name)
            .ok_or_else(|| StoreConfigError::UnknownTier {
                name: name.to_owned(),
                known: self.known_tiers(),
            })
    }

    /// All tiers, by name.
    pub fn tiers(&self) -> impl Iterator<Item = &Tier> {
        self.tiers.values()
    }

    /// Where new layers go.
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// What this config was built from.
    pub fn source(&self) -> &ConfigSource {
        &self.source
    }

    /// The tier whose directory contains `path` (or is `path`), compared
    /// lexically after making `path` absolute; `None` if it lies on no tier.
    pub fn tier_of(&self, path: &Path) -> Option<&Tier> {
        let path = lexically_normal(&std::path::absolute(path).ok()?);
        self.tiers
            .values()
            .find(|tier| path.starts_with(&tier.path))
    }

    /// The tier names, comma-separated, for error messages.
    pub(super) fn known_tiers(&self) -> String {
        list_names(self.tiers.keys().map(String::as_str), usize::MAX)
    }
}

fn check_tier(source: &ConfigSource, tier: &Tier) -> Result<(), StoreConfigError> {
    if let Some(problem) = name_problem(&tier.name) {
        return Err(StoreConfigError::InvalidTierName {
            source_of: source.clone(),
            name: tier.name.clone(),
            problem,
        });
    }
    if tier.path.as_os_str().is_empty() {
        return Err(StoreConfigError::EmptyTierPath {
            source_of: source.clone(),
            tier: tier.name.clone(),
        });
    }
    if !tier.path.is_absolute() {
        return Err(StoreConfigError::RelativeTierPath {
            source_of: source.clone(),
            tier: tier.name.clone(),
            path: tier.path.clone(),
        });
    }
    Ok(())
}

/// The error if `a` and `b` share a directory or one's lies inside the other's.
fn overlap(source: &ConfigSource, a: &Tier, b: &Tier) -> Option<StoreConfigError> {
    if a.path == b.path {
        return Some(StoreConfigError::SharedTierDirectory {
            source_of: source.clone(),
            first: a.name.clone(),
            second: b.name.clone(),
            path: a.path.clone(),
        });
    }
    let (outer, inner) = if b.path.starts_with(&a.path) {
        (a, b)
    } else if a.path.starts_with(&b.path) {
        (b, a)
    } else {
        return None;
    };
    Some(StoreConfigError::NestedTierDirectory {
        source_of: source.clone(),
        outer: outer.name.clone(),
        outer_path: outer.path.clone(),
        inner: inner.name.clone(),
        inner_path: inner.path.clone(),
    })
}

fn choose_placement(
    source: &ConfigSource,
    in_order: &[Tier],
    by_name: &BTreeMap<String, Tier>,
    role: PlacementRole,
    given: Option<String>,
) -> Result<String, StoreConfigError> {
    if let Some(name) = given {
        if !by_name.contains_key(&name) {
            return Err(StoreConfigError::UnknownPlacementTier {
                source_of: source.clone(),
                role,
                tier: name,
                known: list_names(by_name.keys().map(String::as_str), usize::MAX),
            });
        }
        return Ok(name);
    }
    let class = match role {
        PlacementRole::Overlays => TierClass::Fast,
        PlacementRole::Bases => TierClass::Capacity,
    };
    let chosen = match in_order {
        [only] => Some(only),
        _ => in_order
            .iter()
            .find(|tier| tier.class == class)
            .or_else(|| {
                // A file's tiers are a TOML table, whose order is not the user's
                // to rely on, so only flags fall back to "the first one given".
                (*source == ConfigSource::Flags).then(|| &in_order[0])
            }),
    };
    chosen
        .map(|tier| tier.name.clone())
        .ok_or_else(|| StoreConfigError::PlacementNeeded {
            source_of: source.clone(),
            role,
            class,
        })
}

fn check_tier_directory(tier: &Tier) -> Result<(), StoreConfigError> {
    let metadata = match std::fs::metadata(&tier.path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Err(StoreConfigError::TierDirectoryMissing {
                tier: tier.name.clone(),
                path: tier.path.clone(),
            });
        }
        Err(source) => {
            return Err(StoreConfigError::TierDirectoryUnreadable {
                tier: tier.name.clone(),
                path: tier.path.clone(),
                source,
            });
        }
    };
    if !metadata.is_dir() {
        return Err(StoreConfigError::TierNotADirectory {
            tier: tier.name.clone(),
            path: tier.path.clone(),
        });
    }
    // Permission bits do not tell the whole story (read-only mounts, root,
    // ACLs), so try the real thing.
    let probe = tier
        .path
        .join(format!(".strata-write-probe-{}", uuid::Uuid::new_v4()));
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe);
    match created {
        Ok(file) => {
            drop(file);
            std::fs::remove_file(&probe)
        }
        Err(error) => Err(error),
    }
    .map_err(|source| StoreConfigError::TierNotWritable {
        tier: tier.name.clone(),
        path: tier.path.clone(),
        source,
    })
}

/// `path` without `.` components, with each `..` removing the component
/// before it, so that prefix tests on tier directories cannot be fooled by
/// `/tier/../elsewhere`. Symbolic links are not followed.
pub(super) fn lexically_normal(path: &Path) -> PathBuf {
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => match normal.components().next_back() {
                Some(Component::Normal(_)) => {
                    normal.pop();
                }
                // `/..` is `/`.
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => normal.push(component),
            },
            other => normal.push(other),
        }
    }
    normal
}
