//! The 512-byte header slot.
//!
//! ```text
//!  off  size  field
//!    0     8  magic "STRATALY"
//!    8     4  format version (1)
//!   12     4  flags (bit 0: frozen)
//!   16    16  layer id (random UUID)
//!   32     8  virtual size in bytes
//!   40     4  block size in bytes
//!   44     1  parent kind (0 none, 1 layer, 2 raw file)
//!   45     3  zero
//!   48    16  parent layer id (zero unless kind is layer)
//!   64     8  parent virtual size (layer) or file size (raw)
//!   72     4  parent location length
//!   76     4  parent location CRC-32C
//!   80     8  table copy 0 offset
//!   88     8  table copy 1 offset
//!   96     8  table entries
//!  104     8  data offset
//!  112     8  generation (increases with every commit)
//!  120     4  current table copy (0 or 1)
//!  124     4  CRC-32C of the current table copy
//!  128     8  allocated end: data at or beyond it is not referenced
//!  136   372  zero
//!  508     4  CRC-32C of bytes 0..508
//! ```
//! All integers are little-endian.

use uuid::Uuid;

use super::{
    FORMAT_VERSION, Geometry, MAX_FILE_SIZE, MAX_VIRTUAL_SIZE, PARENT_LOCATION_MAX, checksum,
};

/// Size of one header slot.
pub const HEADER_SLOT_SIZE: usize = 512;
/// The first eight bytes of every layer file.
pub const LAYER_MAGIC: &[u8; 8] = b"STRATALY";
const FLAG_FROZEN: u32 = 1;
const CRC_OFFSET: usize = HEADER_SLOT_SIZE - 4;

/// What a layer's parent is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParentKind {
    /// Another layer file.
    Layer,
    /// A raw disk image (the golden image one did not create).
    Raw,
}

/// The parent a header records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parent {
    /// Layer or raw file.
    pub kind: ParentKind,
    /// The parent layer's id (nil for raw parents).
    pub id: Uuid,
    /// The parent's virtual size (layers) or file size (raw).
    pub size: u64,
    /// Length of the parent location string.
    pub location_len: u32,
    /// CRC-32C of the parent location string.
    pub location_crc: u32,
}

/// One decoded, validated header slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// This layer's id.
    pub id: Uuid,
    /// Frozen layers are never written again.
    pub frozen: bool,
    /// Virtual disk size.
    pub virtual_size: u64,
    /// Table and data layout.
    pub geometry: Geometry,
    /// The parent, if any.
    pub parent: Option<Parent>,
    /// Commit counter; the valid slot with the higher value is current.
    pub generation: u64,
    /// Which table copy is current.
    pub active_table: u8,
    /// CRC-32C of the current table copy.
    pub table_crc: u32,
    /// End of referenced data.
    pub allocated_end: u64,
}

/// Why a header slot is not valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("it is not a Strata layer (bad magic)")]
    BadMagic,
    #[error("it has format version {0}, this Strata reads version {FORMAT_VERSION}")]
    UnknownVersion(u32),
    #[error("its header checksum does not match (corrupt or torn header)")]
    BadChecksum,
    #[error("its header is shorter than {HEADER_SLOT_SIZE} bytes (truncated file)")]
    Truncated,
    #[error("its header has unknown flags {0:#x}")]
    UnknownFlags(u32),
    #[error("its virtual size {size} or block size {block_size} is out of range")]
    BadGeometry { size: u64, block_size: u32 },
    #[error("its table or data offsets do not match its geometry")]
    BadLayout,
    #[error("its parent kind {0} is unknown")]
    BadParentKind(u8),
    #[error("its parent location length {0} is out of range")]
    BadParentLocation(u32),
    #[error("its current table copy {0} is not 0 or 1")]
    BadActiveTable(u32),
    #[error("its allocated end {0:#x} lies before the data area or beyond 2^48 bytes")]
    BadAllocatedEnd(u64),
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(raw)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(raw)
}

fn uuid_at(b: &[u8], at: usize) -> Uuid {
    let mut raw = [0u8; 16];
    raw.copy_from_slice(&b[at..at + 16]);
    Uuid::from_bytes(raw)
}

impl Header {
    /// Decodes and validates one slot.
    pub fn decode(slot: &[u8]) -> Result<Self, HeaderError> {
        let b = slot.get(..HEADER_SLOT_SIZE).ok_or(HeaderError::Truncated)?;
        if &b[..8] != LAYER_MAGIC {
            return Err(HeaderError::BadMagic);
        }
        let version = u32_at(b, 8);
        if version != FORMAT_VERSION {
            return Err(HeaderError::UnknownVersion(version));
        }
        if checksum(&b[..CRC_OFFSET]) != u32_at(b, CRC_OFFSET) {
            return Err(HeaderError::BadChecksum);
        }
        let flags = u32_at(b, 12);
        if flags & !FLAG_FROZEN != 0 {
            return Err(HeaderError::UnknownFlags(flags));
        }
        let virtual_size = u64_at(b, 32);
        let block_size = u32_at(b, 40);
        let geometry = Geometry::new(virtual_size, block_size).ok_or(HeaderError::BadGeometry {
            size: virtual_size,
            block_size,
        })?;
        let stored = (u64_at(b, 80), u64_at(b, 88), u64_at(b, 96), u64_at(b, 104));
        if stored
            != (
                geometry.table_offsets[0],
                geometry.table_offsets[1],
                geometry.entries,
                geometry.data_offset,
            )
        {
            return Err(HeaderError::BadLayout);
        }
        let parent = match b[44] {
            0 => None,
            kind @ (1 | 2) => {
                let location_len = u32_at(b, 72);
                if location_len == 0 || location_len as usize > PARENT_LOCATION_MAX {
                    return Err(HeaderError::BadParentLocation(location_len));
                }
                Some(Parent {
                    kind: if kind == 1 {
                        ParentKind::Layer
                    } else {
                        ParentKind::Raw
                    },
                    id: uuid_at(b, 48),
                    size: u64_at(b, 64),
                    location_len,
                    location_crc: u32_at(b, 76),
                })
            }
            other => return Err(HeaderError::BadParentKind(other)),
        };
        let active = u32_at(b, 120);
        if active > 1 {
            return Err(HeaderError::BadActiveTable(active));
        }
        let allocated_end = u64_at(b, 128);
        if allocated_end < geometry.data_offset || allocated_end > MAX_FILE_SIZE {
            return Err(HeaderError::BadAllocatedEnd(allocated_end));
        }
        Ok(Header {
            id: uuid_at(b, 16),
            frozen: flags & FLAG_FROZEN != 0,
            virtual_size,
            geometry,
            parent,
            generation: u64_at(b, 112),
            active_table: active as u8,
            table_crc: u32_at(b, 124),
            allocated_end,
        })
    }

    /// Encodes this header into one slot.
    pub fn encode(&self) -> [u8; HEADER_SLOT_SIZE] {
        let mut b = [0u8; HEADER_SLOT_SIZE];
        let mut put = |at: usize, bytes: &[u8]| b[at..at + bytes.len()].copy_from_slice(bytes);
        put(0, LAYER_MAGIC);
        put(8, &FORMAT_VERSION.to_le_bytes());
        put(
            12,
            &(if self.frozen { FLAG_FROZEN } else { 0 }).to_le_bytes(),
        );
        put(16, self.id.as_bytes());
        put(32, &self.virtual_size.to_le_bytes());
        put(40, &self.geometry.block_size.to_le_bytes());
        if let Some(p) = &self.parent {
            put(
                44,
                &[match p.kind {
                    ParentKind::Layer => 1,
                    ParentKind::Raw => 2,
                }],
            );
            put(48, p.id.as_bytes());
            put(64, &p.size.to_le_bytes());
            put(72, &p.location_len.to_le_bytes());
            put(76, &p.location_crc.to_le_bytes());
        }
        put(80, &self.geometry.table_offsets[0].to_le_bytes());
        put(88, &self.geometry.table_offsets[1].to_le_bytes());
        put(96, &self.geometry.entries.to_le_bytes());
        put(104, &self.geometry.data_offset.to_le_bytes());
        put(112, &self.generation.to_le_bytes());
        put(120, &u32::from(self.active_table).to_le_bytes());
        put(124, &self.table_crc.to_le_bytes());
        put(128, &self.allocated_end.to_le_bytes());
        let crc = checksum(&b[..CRC_OFFSET]);
        b[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// A fresh header for a new, empty layer.
    pub fn new(virtual_size: u64, block_size: u32, parent: Option<Parent>) -> Option<Self> {
        if virtual_size > MAX_VIRTUAL_SIZE {
            return None;
        }
        let geometry = Geometry::new(virtual_size, block_size)?;
        Some(Header {
            id: Uuid::new_v4(),
            frozen: false,
            virtual_size,
            geometry,
            parent,
            generation: 1,
            active_table: 0,
            table_crc: checksum(&vec![0u8; geometry.table_len()]),
            allocated_end: geometry.data_offset,
        })
    }
}

/// Picks the current header from the two slots: the valid one with the
/// higher generation. If neither is valid, returns the first slot's error
/// (the one a user most needs to see, e.g. "bad magic").
pub fn choose_header(slot0: &[u8], slot1: &[u8]) -> Result<(Header, usize), HeaderError> {
    match (Header::decode(slot0), Header::decode(slot1)) {
        (Ok(a), Ok(b)) => Ok(if b.generation > a.generation {
            (b, 1)
        } else {
            (a, 0)
        }),
        (Ok(a), Err(_)) => Ok((a, 0)),
        (Err(_), Ok(b)) => Ok((b, 1)),
        (Err(e), Err(_)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        let parent = Parent {
            kind: ParentKind::Layer,
            id: Uuid::new_v4(),
            size: 1 << 30,
            location_len: 12,
            location_crc: 0xdead_beef,
        };
        Header::new(1 << 30, 64 << 10, Some(parent)).unwrap()
    }

    #[test]
    fn encode_decode_round_trip() {
        let h = sample();
        assert_eq!(Header::decode(&h.encode()), Ok(h));
        let frozen = Header {
            frozen: true,
            generation: 9,
            active_table: 1,
            ..h
        };
        assert_eq!(Header::decode(&frozen.encode()), Ok(frozen));
    }

    #[test]
    fn corruption_is_detected() {
        let mut b = sample().encode();
        b[33] ^= 1;
        assert_eq!(Header::decode(&b), Err(HeaderError::BadChecksum));
        let mut b = sample().encode();
        b[0] = b'X';
        assert_eq!(Header::decode(&b), Err(HeaderError::BadMagic));
        let mut b = sample().encode();
        b[8] = 7;
        assert_eq!(Header::decode(&b), Err(HeaderError::UnknownVersion(7)));
        assert_eq!(
            Header::decode(&sample().encode()[..100]),
            Err(HeaderError::Truncated)
        );
    }

    #[test]
    fn newer_valid_slot_wins_and_torn_slot_is_skipped() {
        let old = sample();
        let new = Header {
            generation: old.generation + 1,
            active_table: 1,
            ..old
        };
        let (chosen, slot) = choose_header(&old.encode(), &new.encode()).unwrap();
        assert_eq!((chosen.generation, slot), (new.generation, 1));
        let mut torn = new.encode();
        torn[300] = 0xff;
        let (chosen, slot) = choose_header(&old.encode(), &torn).unwrap();
        assert_eq!((chosen.generation, slot), (old.generation, 0));
    }
}
