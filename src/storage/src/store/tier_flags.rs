//! Building a [`StoreConfig`] from `--tier NAME=PATH[:CLASS]` flags.
//!
//! The class is whatever follows the last `:`, so a path that itself
//! contains `:` must be followed by an explicit class
//! (`--tier a=/mnt/x:y:capacity`). A relative path is taken relative to the
//! current directory and stored absolute.

use std::path::PathBuf;

use super::tiers::{ConfigSource, StoreConfig, StoreConfigError, Tier, TierClass};

impl StoreConfig {
    /// Builds a config from `--tier` flag values, in the order given, and
    /// optional placement tier names. With one tier both placements default
    /// to it; with several, overlays default to the first tier of class
    /// `fast` and bases to the first of class `capacity`, else to the first
    /// tier given.
    pub fn from_tier_flags(
        tiers: &[String],
        overlays: Option<&str>,
        bases: Option<&str>,
    ) -> Result<Self, StoreConfigError> {
        let tiers = tiers
            .iter()
            .map(|flag| parse_tier_flag(flag))
            .collect::<Result<Vec<_>, _>>()?;
        StoreConfig::assemble(
            ConfigSource::Flags,
            tiers,
            overlays.map(str::to_owned),
            bases.map(str::to_owned),
        )
    }
}

/// Parses one `NAME=PATH[:CLASS]` value.
fn parse_tier_flag(flag: &str) -> Result<Tier, StoreConfigError> {
    let bad = |problem: &str| StoreConfigError::BadTierFlag {
        flag: flag.to_owned(),
        problem: problem.to_owned(),
    };
    let (name, rest) = flag
        .split_once('=')
        .ok_or_else(|| bad("no '=' after the tier name"))?;
    if name.is_empty() {
        return Err(bad("the tier name before '=' is empty"));
    }
    let (path, class) = match rest.rsplit_once(':') {
        Some((path, class)) => {
            let class = TierClass::parse(class).map_err(|problem| {
                bad(&format!("class {class:?} after ':' is invalid: {problem}"))
            })?;
            (path, class)
        }
        None => (rest, TierClass::default()),
    };
    if path.is_empty() {
        return Err(bad("the path after '=' is empty"));
    }
    let path = std::path::absolute(PathBuf::from(path)).map_err(|source| {
        StoreConfigError::AbsoluteTierPath {
            tier: name.to_owned(),
            path: PathBuf::from(path),
            source,
        }
    })?;
    Ok(Tier {
        name: name.to_owned(),
        path,
        class,
    })
}
