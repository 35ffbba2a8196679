//! Tests of the store module on real files in temporary directories.

mod catalogue;
mod config_file;
mod location;
mod tier_flags;
mod validate;

use std::path::Path;

use super::StoreConfig;

/// The example config from the module documentation.
const EXAMPLE_CONFIG: &str = r#"# strata.toml
[tiers.fast]
path = "/var/lib/strata/nvme"
class = "fast"

[tiers.capacity]
path = "/var/lib/strata/hdd"
class = "capacity"

[placement]
overlays = "fast"      # where new copy-on-write layers go
bases = "capacity"     # where frozen snapshots and imported golden images go
"#;

/// Writes `text` to `<dir>/strata.toml` and loads it.
fn load_config_text(dir: &Path, text: &str) -> Result<StoreConfig, super::StoreConfigError> {
    let path = dir.join("strata.toml");
    std::fs::write(&path, text).expect("write config");
    StoreConfig::load(&path)
}

/// The example config, parsed.
fn example_config() -> StoreConfig {
    StoreConfig::parse(Path::new("/etc/strata/strata.toml"), EXAMPLE_CONFIG).expect("example")
}
