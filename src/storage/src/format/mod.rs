//! The layer file format: byte layouts, encoding and validation.
//!
//! Everything here is a pure function over byte slices, so it is unit-tested
//! and fuzzed without files. `docs/storage-format.md` is the specification;
//! this module is its implementation.
//!
//! ```text
//!  0x0000 ┌──────────────────────────┐
//!         │ header slot 0 (512 B)    │  two slots, written alternately;
//!  0x0200 │ header slot 1 (512 B)    │  the valid one with the higher
//!  0x0400 │ parent location (≤3 KiB) │  generation is current
//!  0x1000 ├──────────────────────────┤
//!         │ table copy 0             │  8 bytes per block; the header
//!         ├──────────────────────────┤  names the copy that is current
//!         │ table copy 1             │
//!         ├──────────────────────────┤  data_offset (block-aligned)
//!         │ data blocks, appended    │
//!         └──────────────────────────┘
//! ```

mod header;
mod table;

pub use header::{
    HEADER_SLOT_SIZE, Header, HeaderError, LAYER_MAGIC, Parent, ParentKind, choose_header,
};
pub use table::{TableEntry, TableError, decode_table, encode_entry};

/// Format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes reserved at the start of a layer file for headers and parent location.
pub const HEADER_AREA_SIZE: u64 = 4096;
/// Where the parent location (a UTF-8 path) is stored.
pub const PARENT_LOCATION_OFFSET: u64 = 2 * HEADER_SLOT_SIZE as u64;
/// Longest parent location, in bytes.
pub const PARENT_LOCATION_MAX: usize = (HEADER_AREA_SIZE - PARENT_LOCATION_OFFSET) as usize;
/// Smallest and largest block sizes.
pub const MIN_BLOCK_SIZE: u32 = 4096;
/// See [`MIN_BLOCK_SIZE`].
pub const MAX_BLOCK_SIZE: u32 = 2 << 20;
/// Default block size: see `docs/storage-format.md` for the trade-off.
pub const DEFAULT_BLOCK_SIZE: u32 = 64 << 10;
/// Largest virtual disk: 2^48 bytes keeps every offset in a table entry.
pub const MAX_VIRTUAL_SIZE: u64 = 1 << 48;
/// Largest layer file: data offsets must stay below 2^48, which an open
/// image's block map relies on (it packs offsets into 48 bits).
pub const MAX_FILE_SIZE: u64 = 1 << 48;

/// Where the tables and the data area of a layer start, given its geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Bytes per block.
    pub block_size: u32,
    /// Number of table entries (blocks of the virtual disk).
    pub entries: u64,
    /// Offset of table copy 0.
    pub table_offsets: [u64; 2],
    /// Offset of the first data block.
    pub data_offset: u64,
}

impl Geometry {
    /// The layout for a disk of `virtual_size` bytes in blocks of `block_size`.
    /// Returns `None` if the sizes are out of range.
    pub fn new(virtual_size: u64, block_size: u32) -> Option<Self> {
        if !block_size.is_power_of_two()
            || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size)
            || virtual_size == 0
            || virtual_size > MAX_VIRTUAL_SIZE
        {
            return None;
        }
        let entries = virtual_size.div_ceil(u64::from(block_size));
        let table_bytes = (entries * 8).next_multiple_of(4096);
        let table0 = HEADER_AREA_SIZE;
        let table1 = table0 + table_bytes;
        let data_offset = (table1 + table_bytes).next_multiple_of(u64::from(block_size));
        Some(Self {
            block_size,
            entries,
            table_offsets: [table0, table1],
            data_offset,
        })
    }

    /// Bytes of one table copy as stored (entries × 8, not rounded).
    pub fn table_len(&self) -> usize {
        (self.entries * 8) as usize
    }
}

/// CRC-32C, the checksum used for headers, parent locations and tables.
pub fn checksum(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_aligns_data_to_blocks() {
        let g = Geometry::new(1 << 30, 64 << 10).unwrap();
        assert_eq!(g.entries, 16384);
        assert_eq!(g.table_offsets, [4096, 4096 + 131072]);
        assert_eq!(g.data_offset % (64 << 10), 0);
        assert!(g.data_offset >= 4096 + 2 * 131072);
    }

    #[test]
    fn geometry_rejects_bad_sizes() {
        assert!(Geometry::new(1 << 20, 3000).is_none());
        assert!(Geometry::new(1 << 20, 1024).is_none());
        assert!(Geometry::new(1 << 20, 4 << 20).is_none());
        assert!(Geometry::new(0, 4096).is_none());
        assert!(Geometry::new(MAX_VIRTUAL_SIZE + 1, 4096).is_none());
        let partial = Geometry::new(10_000, 4096).unwrap();
        assert_eq!(partial.entries, 3);
    }
}
