//! Reading a [`StoreConfig`] from a TOML file.
//!
//! Unknown keys are errors, so a misspelt `[placment]` is reported instead of
//! silently ignored. A relative tier path is taken relative to the directory
//! holding the config file, so a config and its tiers can move together.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::tiers::{ConfigSource, StoreConfig, StoreConfigError, Tier, TierClass};

/// Largest config file read: far more than any real one, small enough that a
/// wrong path (a disk image, say) fails fast.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    tiers: BTreeMap<String, TierTable>,
    #[serde(default)]
    placement: PlacementTable,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TierTable {
    path: PathBuf,
    #[serde(default)]
    class: TierClass,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlacementTable {
    overlays: Option<String>,
    bases: Option<String>,
}

impl StoreConfig {
    /// Reads a TOML store config such as the one in the [module
    /// documentation](super).
    pub fn load(path: &Path) -> Result<Self, StoreConfigError> {
        let read_error = |source| StoreConfigError::ReadFile {
            path: path.to_owned(),
            source,
        };
        let text = read_capped(path).map_err(read_error)?;
        Self::parse(path, &text)
    }

    /// Parses TOML `text` as if read from `path`, which names the source in
    /// errors and anchors relative tier paths.
    pub fn parse(path: &Path, text: &str) -> Result<Self, StoreConfigError> {
        let file: ConfigFile = toml::from_str(text).map_err(|error| {
            let (line, column) = line_and_column(text, error.span().map_or(0, |span| span.start));
            StoreConfigError::ParseFile {
                path: path.to_owned(),
                line,
                column,
                message: error.message().trim_end().to_owned(),
            }
        })?;
        let config_dir = std::path::absolute(path)
            .map_err(|source| StoreConfigError::ReadFile {
                path: path.to_owned(),
                source,
            })?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        let tiers = file
            .tiers
            .into_iter()
            .map(|(name, table)| Tier {
                // An empty path stays empty so that `assemble` reports it.
                path: if table.path.as_os_str().is_empty() {
                    table.path
                } else {
                    config_dir.join(table.path)
                },
                name,
                class: table.class,
            })
            .collect();
        StoreConfig::assemble(
            ConfigSource::File(path.to_owned()),
            tiers,
            file.placement.overlays,
            file.placement.bases,
        )
    }
}

fn read_capped(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_CONFIG_BYTES} bytes: is this really a store config?"
        )));
    }
    Ok(text)
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}
