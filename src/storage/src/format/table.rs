//! The block table: one little-endian u64 per block of the virtual disk.
//!
//! | value | meaning |
//! |---|---|
//! | 0 | absent: read the block from the parent |
//! | 1 | zero: the block reads as zeros, whatever the parent holds |
//! | other | byte offset of the block's data in this file (block-aligned) |

use super::Geometry;

/// A decoded table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableEntry {
    /// Look in the parent.
    Absent,
    /// Reads as zeros.
    Zero,
    /// Data at this offset of the layer file.
    Data(u64),
}

const ABSENT: u64 = 0;
const ZERO: u64 = 1;

/// Encodes one entry.
pub fn encode_entry(entry: TableEntry) -> u64 {
    match entry {
        TableEntry::Absent => ABSENT,
        TableEntry::Zero => ZERO,
        TableEntry::Data(offset) => offset,
    }
}

/// Why a table is not valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("its table is {got} bytes, expected {expected} (truncated file)")]
    Truncated { got: usize, expected: usize },
    #[error("its table checksum does not match (corrupt table)")]
    BadChecksum,
    #[error(
        "table entry {block} points at {offset:#x}, outside the data area [{start:#x}, {end:#x})"
    )]
    OutOfBounds {
        block: u64,
        offset: u64,
        start: u64,
        end: u64,
    },
    #[error("table entry {block} points at {offset:#x}, which is not block-aligned")]
    Misaligned { block: u64, offset: u64 },
    #[error("table entries {first} and {second} both point at {offset:#x}")]
    Shared {
        first: u64,
        second: u64,
        offset: u64,
    },
}

/// Decodes and validates a table: its checksum, and every data entry lying
/// block-aligned inside `[data_offset, allocated_end)` with no two entries
/// sharing a block.
pub fn decode_table(
    bytes: &[u8],
    geometry: &Geometry,
    expected_crc: u32,
    allocated_end: u64,
) -> Result<Vec<TableEntry>, TableError> {
    let expected = geometry.table_len();
    let bytes = bytes.get(..expected).ok_or(TableError::Truncated {
        got: bytes.len(),
        expected,
    })?;
    if super::checksum(bytes) != expected_crc {
        return Err(TableError::BadChecksum);
    }
    let block_size = u64::from(geometry.block_size);
    let mut entries = Vec::with_capacity(geometry.entries as usize);
    let mut owners = std::collections::HashMap::new();
    for (block, raw) in (0u64..).zip(bytes.chunks_exact(8)) {
        let mut word = [0u8; 8];
        word.copy_from_slice(raw);
        let entry = match u64::from_le_bytes(word) {
            ABSENT => TableEntry::Absent,
            ZERO => TableEntry::Zero,
            offset => {
                if offset % block_size != 0 {
                    return Err(TableError::Misaligned { block, offset });
                }
                let in_bounds = offset >= geometry.data_offset
                    && offset
                        .checked_add(block_size)
                        .is_some_and(|end| end <= allocated_end);
                if !in_bounds {
                    return Err(TableError::OutOfBounds {
                        block,
                        offset,
                        start: geometry.data_offset,
                        end: allocated_end,
                    });
                }
                if let Some(first) = owners.insert(offset, block) {
                    return Err(TableError::Shared {
                        first,
                        second: block,
                        offset,
                    });
                }
                TableEntry::Data(offset)
            }
        };
        entries.push(entry);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(entries: &[u64]) -> Vec<u8> {
        entries.iter().flat_map(|e| e.to_le_bytes()).collect()
    }

    #[test]
    fn decodes_every_kind_of_entry() {
        let g = Geometry::new(3 * 4096, 4096).unwrap();
        let bytes = encode(&[0, 1, g.data_offset]);
        let crc = super::super::checksum(&bytes);
        let table = decode_table(&bytes, &g, crc, g.data_offset + 4096).unwrap();
        assert_eq!(
            table,
            vec![
                TableEntry::Absent,
                TableEntry::Zero,
                TableEntry::Data(g.data_offset)
            ]
        );
    }

    #[test]
    fn rejects_bad_tables() {
        let g = Geometry::new(2 * 4096, 4096).unwrap();
        let end = g.data_offset + 2 * 4096;
        let check = |entries: &[u64]| {
            let bytes = encode(entries);
            decode_table(&bytes, &g, super::super::checksum(&bytes), end)
        };
        assert!(matches!(
            check(&[g.data_offset + 2 * 4096, 0]),
            Err(TableError::OutOfBounds { .. })
        ));
        assert!(matches!(
            check(&[4096, 0]),
            Err(TableError::OutOfBounds { .. })
        ));
        assert!(matches!(
            check(&[g.data_offset + 8, 0]),
            Err(TableError::Misaligned { .. })
        ));
        assert!(matches!(
            check(&[g.data_offset, g.data_offset]),
            Err(TableError::Shared { .. })
        ));
        let bytes = encode(&[0, 0]);
        assert_eq!(
            decode_table(&bytes, &g, 1234, end),
            Err(TableError::BadChecksum)
        );
        assert!(matches!(
            decode_table(&bytes[..8], &g, 0, end),
            Err(TableError::Truncated { .. })
        ));
    }
}
