//! `check`: verify a chain's headers, tables, checksums and links.
//!
//! Opening a chain already validates every header (magic, version, CRC),
//! every table (CRC, bounds, no shared blocks) and every parent link (id,
//! size, block size, no loops). `check` adds what opening does not look at:
//! whether both header slots are valid, and how much space a crash left
//! unreferenced.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::chain::{ChainError, Member, open_chain};
use crate::format::{HEADER_SLOT_SIZE, Header};
use crate::layer::{Access, read_up_to};

/// What `check` found for one member of a chain.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LayerCheck {
    /// The file.
    pub path: PathBuf,
    /// Layer id, or `None` for a raw base.
    pub id: Option<String>,
    /// Frozen snapshot?
    pub frozen: bool,
    /// Bytes of data blocks referenced.
    pub allocated_bytes: u64,
    /// Bytes the file occupies on disk.
    pub disk_bytes: u64,
    /// Bytes appended after the last commit and never referenced (left by a crash).
    pub unreferenced_bytes: u64,
    /// Warnings that do not make the chain unusable.
    pub warnings: Vec<String>,
}

/// The result of checking a chain, base first.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CheckReport {
    /// One entry per member.
    pub layers: Vec<LayerCheck>,
}

/// Checks the chain whose top is `top`. An `Err` means the chain is unusable.
pub fn check_chain(top: &Path) -> Result<CheckReport, ChainError> {
    let members = open_chain(top, Access::ReadOnly)?;
    let layers = members
        .iter()
        .map(|member| {
            let disk_bytes = member.file().metadata().map_or(0, |m| m.blocks() * 512);
            match member {
                Member::Raw(raw) => LayerCheck {
                    path: raw.path.clone(),
                    id: None,
                    frozen: true,
                    allocated_bytes: raw.size,
                    disk_bytes,
                    unreferenced_bytes: 0,
                    warnings: Vec::new(),
                },
                Member::Layer(layer) => {
                    let header = layer.header();
                    let mut warnings = Vec::new();
                    let mut slots = [0u8; 2 * HEADER_SLOT_SIZE];
                    let valid = match read_up_to(layer.file(), &mut slots, 0) {
                        Ok(n) if n == slots.len() => [
                            Header::decode(&slots[..HEADER_SLOT_SIZE]).is_ok(),
                            Header::decode(&slots[HEADER_SLOT_SIZE..]).is_ok(),
                        ],
                        _ => [true, false],
                    };
                    // A fresh layer has only slot 0; after the first commit both are in use.
                    if header.generation > 1 && valid.contains(&false) {
                        warnings.push(
                            "one header slot is damaged; the other is current and valid"
                                .to_string(),
                        );
                    }
                    let file_len = layer.file().metadata().map_or(0, |m| m.len());
                    LayerCheck {
                        path: layer.path().to_path_buf(),
                        id: Some(header.id.to_string()),
                        frozen: header.frozen,
                        allocated_bytes: layer.allocated_bytes(),
                        disk_bytes,
                        unreferenced_bytes: file_len.saturating_sub(header.allocated_end),
                        warnings,
                    }
                }
            }
        })
        .collect();
    Ok(CheckReport { layers })
}
