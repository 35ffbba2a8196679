//! Where layer files live and what images are called.
//!
//! A guest disk is a chain of layer files (a golden base shared by many
//! guests, a copy-on-write layer per guest). This module knows nothing of
//! the layer format: to it a layer is a file on a **tier**, a named directory
//! of some class of storage. It provides the store configuration (the tiers
//! and the placement policy) and the **catalogue** that maps image names to
//! their top layers, so users never handle layer paths.
//!
//! ```text
//!  catalogue.json                       tiers (StoreConfig)
//!  ┌─────────────────────────────┐      ┌────────────────────────────────┐
//!  │ "debian-12" ─► top:         │      │ fast     /var/lib/strata/nvme  │
//!  │   { tier: "fast",           │ ───► │ capacity /var/lib/strata/hdd   │
//!  │     file: "debian-12/3.l" } │      └────────────────────────────────┘
//!  └─────────────────────────────┘      resolve() = tier dir + file
//! ```
//!
//! A store config file:
//!
//! ```toml
//! # strata.toml
//! [tiers.fast]
//! path = "/var/lib/strata/nvme"
//! class = "fast"
//!
//! [tiers.capacity]
//! path = "/var/lib/strata/hdd"
//! class = "capacity"
//!
//! [placement]
//! overlays = "fast"      # where new copy-on-write layers go
//! bases = "capacity"     # where frozen snapshots and imported golden images go
//! ```
//!
//! - Unknown keys are errors. A relative tier `path` is relative to the
//!   directory holding the config file. `class` is `fast`, `capacity` or any
//!   other name, and defaults to `capacity`.
//! - `[placement]` may be left out when it is unambiguous: with one tier both
//!   roles go to it; otherwise `overlays` defaults to the first tier of class
//!   `fast` and `bases` to the first of class `capacity`.
//! - The same config can come from `--tier NAME=PATH[:CLASS]` flags
//!   ([`StoreConfig::from_tier_flags`]).
//! - Tier, image and class names are 1 to 64 characters of `A-Za-z0-9._-`,
//!   not starting with `.` or `-`.
//!
//! Files: `tiers` (config type and its checks), `config_file` (TOML),
//! `tier_flags` (`--tier` flags), `location` (tier-relative layer paths),
//! `catalogue` and `catalogue_file` (named images and their JSON file),
//! `lock` (the catalogue's `flock`), `name` (the naming rule).

mod catalogue;
mod catalogue_file;
mod config_file;
mod location;
mod lock;
mod name;
mod tier_flags;
mod tiers;

#[cfg(test)]
mod tests;

pub use catalogue::{CATALOGUE_FILE_NAME, Catalogue, CatalogueError, ImageEntry};
pub use catalogue_file::CATALOGUE_FORMAT;
pub use location::{BadLayerFileError, LayerLocation, ResolveLayerError, locate, resolve};
pub use lock::{CatalogueLock, LOCK_FILE_NAME};
pub use name::{MAX_NAME_LEN, name_problem};
pub use tiers::{
    ConfigSource, Placement, PlacementRole, StoreConfig, StoreConfigError, Tier, TierClass,
};
