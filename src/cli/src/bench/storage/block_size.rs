//! Choosing the block size: what a small first write costs against how big
//! the tables get.
//!
//! A 4 KiB write into a block the top layer does not hold yet copies the
//! block up: the engine reads the whole block from below, patches it and
//! appends it. Small blocks keep that cheap, but every block costs a table
//! entry on disk (8 bytes, in each of the two table copies) and 16 bytes of
//! memory in an open image (its map entry and its table entry):
//!
//! ```text
//!  block     table / GiB    RAM / GiB    first 4 KiB write moves
//!  4 KiB     2 MiB          4 MiB        4 KiB written
//!  16 KiB    512 KiB        1 MiB        12 KiB read, 16 KiB written
//!  64 KiB    128 KiB        256 KiB      60 KiB read, 64 KiB written
//!  256 KiB   32 KiB         64 KiB       252 KiB read, 256 KiB written
//! ```
//!
//! Measured here: 4 KiB first writes at queue depth 1 into a fresh layer
//! directly over the raw base, for each block size, against a qcow2 overlay
//! with the same cluster size.

use std::path::Path;
use std::time::Duration;

use strata_storage::{Access, Image};

use super::chains::{Content, new_strata_layer};
use super::qemu_img::QemuTools;
use super::workload::{self, Requests, SMALL_REQUEST};

/// The block sizes compared.
pub const BLOCK_SIZES: [u32; 4] = [4 << 10, 16 << 10, 64 << 10, 256 << 10];

const GIB: u64 = 1 << 30;
/// Bytes per table entry.
const ENTRY: u64 = 8;

/// Bytes of one table copy for 1 GiB of virtual disk.
pub fn table_bytes_per_gib(block_size: u32) -> u64 {
    GIB / u64::from(block_size) * ENTRY
}

/// Bytes of memory an open image needs per GiB: a map entry and a table
/// entry per block.
pub fn memory_bytes_per_gib(block_size: u32) -> u64 {
    2 * table_bytes_per_gib(block_size)
}

/// Up to `wanted` writes for `block_size`, no two into the same block, so
/// that each is a copy-up.
pub fn requests(disk_size: u64, block_size: u32, wanted: u64) -> Requests {
    workload::scattered(disk_size, SMALL_REQUEST, u64::from(block_size), wanted)
}

/// Strata: `requests` into a fresh layer of `block_size` blocks over the base.
pub fn strata(content: &Content, block_size: u32, requests: &Requests) -> Result<Duration, String> {
    let path = content.root.join("copy-up.strata");
    new_strata_layer(&path, block_size, &content.base_parent())?;
    let outcome = Image::open(&path, Access::ReadWrite)
        .map_err(|e| e.to_string())
        .and_then(|image| {
            let timing = workload::write(&image, requests, 1, 0x5a).map_err(|e| e.to_string())?;
            Ok(timing.wall)
        });
    remove(&path);
    outcome
}

/// qcow2: the same `requests` into a fresh overlay of `block_size` clusters.
pub fn qcow2(
    content: &Content,
    qemu: &QemuTools,
    block_size: u32,
    requests: &Requests,
) -> Result<Duration, String> {
    let path = content.root.join("copy-up.qcow2");
    remove(&path);
    qemu.create_overlay(&path, "base.raw", "raw", block_size)?;
    let outcome = qemu.bench(&path, requests, 1, Some(0x5a));
    remove(&path);
    outcome
}

fn remove(path: &Path) {
    let _ = std::fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_sizes_per_gib() {
        assert_eq!(table_bytes_per_gib(4 << 10), 2 << 20);
        assert_eq!(table_bytes_per_gib(64 << 10), 128 << 10);
        assert_eq!(memory_bytes_per_gib(64 << 10), 256 << 10);
        assert_eq!(table_bytes_per_gib(256 << 10), 32 << 10);
    }

    #[test]
    fn copy_up_writes_fall_in_distinct_blocks() {
        let r = requests(256 << 20, 256 << 10, 384);
        let blocks: std::collections::HashSet<u64> =
            (0..r.count).map(|i| r.offset(i) / (256 << 10)).collect();
        assert_eq!(blocks.len() as u64, r.count);
        assert_eq!(r.count, 384);
    }
}
