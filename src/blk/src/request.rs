//! Parsing and validating virtio-blk requests (virtio 1.2, 5.2.6).
//!
//! A request is a descriptor chain: device-readable bytes, then
//! device-writable bytes. The driver may split them into descriptors any way
//! it likes, so the chain is first flattened into two byte streams:
//!
//! ```text
//!  readable:  [ header: type u32 | reserved u32 | sector u64 ][ OUT data | discard/zeroes segments ]
//!  writable:  [ IN data | GET_ID serial ][ status u8 ]
//! ```
//!
//! Everything here is pure over guest memory: no image, no queue, no socket.

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

/// Sector size of virtio-blk, whatever the disk's block size.
pub const SECTOR_SIZE: u64 = 512;
/// Length of the request header.
pub const HEADER_LEN: u64 = 16;
/// Length of a discard / write-zeroes segment.
pub const SEGMENT_LEN: u64 = 16;
/// Length of the GET_ID answer.
pub const ID_LEN: usize = 20;

/// `virtio_blk_outhdr.type` values.
pub mod kind {
    /// Read.
    pub const IN: u32 = 0;
    /// Write.
    pub const OUT: u32 = 1;
    /// Flush.
    pub const FLUSH: u32 = 4;
    /// Device id.
    pub const GET_ID: u32 = 8;
    /// Discard.
    pub const DISCARD: u32 = 11;
    /// Write zeroes.
    pub const WRITE_ZEROES: u32 = 13;
}

/// Status byte values.
pub mod status {
    /// Success.
    pub const OK: u8 = 0;
    /// The request failed.
    pub const IOERR: u8 = 1;
    /// The request type is not supported.
    pub const UNSUPP: u8 = 2;
}

/// `VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP`: the device may free the range.
pub const WRITE_ZEROES_FLAG_UNMAP: u32 = 1;

/// A run of guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical address.
    pub addr: GuestAddress,
    /// Length in bytes.
    pub len: u64,
}

/// The limits a request is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskLimits {
    /// Disk size in 512-byte sectors.
    pub capacity_sectors: u64,
    /// Writes, discards and write-zeroes are refused.
    pub read_only: bool,
    /// Largest data transfer of one IN or OUT request, in bytes.
    pub max_transfer: u64,
    /// Most segments in one discard or write-zeroes request.
    pub max_zero_segments: u32,
    /// Most sectors in one discard or write-zeroes segment.
    pub max_zero_sectors: u32,
}

/// A range of sectors to discard or zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectorRange {
    /// First sector.
    pub sector: u64,
    /// Number of sectors.
    pub count: u64,
}

/// What a valid request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    /// Read `len` bytes at `offset` into `data`.
    Read {
        /// Byte offset on the disk.
        offset: u64,
        /// Where the bytes go, in order.
        data: Vec<Segment>,
    },
    /// Write the bytes of `data` at `offset`.
    Write {
        /// Byte offset on the disk.
        offset: u64,
        /// Where the bytes come from, in order.
        data: Vec<Segment>,
    },
    /// Make acknowledged writes durable.
    Flush,
    /// Write the disk's serial (up to 20 bytes) into `data`.
    GetId {
        /// Where the id goes.
        data: Vec<Segment>,
    },
    /// Discard the ranges (they read as zeros afterwards).
    Discard(Vec<SectorRange>),
    /// Zero the ranges; `unmap` allows freeing them.
    WriteZeroes {
        /// The ranges.
        ranges: Vec<SectorRange>,
        /// The driver allows freeing the space.
        unmap: bool,
    },
}

/// A valid request: what to do, and where the status byte goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The operation.
    pub operation: Operation,
    /// Guest address of the status byte.
    pub status: GuestAddress,
}

/// What to do with a chain that is not a valid request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Answer with this status (IOERR or UNSUPP); the reason is for the log.
    #[error("{reason}")]
    Status {
        /// Where the status byte goes.
        status: GuestAddress,
        /// `status::IOERR` or `status::UNSUPP`.
        code: u8,
        /// Why.
        reason: String,
    },
    /// The chain cannot even carry a status: drop it (used length 0) and log.
    #[error("malformed descriptor chain: {0}")]
    Drop(String),
}

/// One descriptor, as the queue hands it over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// Guest address.
    pub addr: GuestAddress,
    /// Length.
    pub len: u32,
    /// Device-writable?
    pub writable: bool,
}

/// The two byte streams of a chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Streams {
    readable: Vec<Segment>,
    writable: Vec<Segment>,
}

fn total(segments: &[Segment]) -> u64 {
    segments.iter().map(|s| s.len).sum()
}

/// The part of `segments` that covers stream bytes `[start, start + len)`.
fn slice_of(segments: &[Segment], start: u64, len: u64) -> Vec<Segment> {
    let mut out = Vec::new();
    let (mut skip, mut want) = (start, len);
    for seg in segments {
        if want == 0 {
            break;
        }
        if skip >= seg.len {
            skip -= seg.len;
            continue;
        }
        let take = (seg.len - skip).min(want);
        out.push(Segment {
            addr: GuestAddress(seg.addr.0 + skip),
            len: take,
        });
        want -= take;
        skip = 0;
    }
    out
}

/// Reads `N` bytes at stream offset `start` from guest memory.
fn read_bytes<const N: usize, M: GuestMemoryBackend>(
    mem: &M,
    segments: &[Segment],
    start: u64,
) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    let mut filled = 0usize;
    for seg in slice_of(segments, start, N as u64) {
        let len = seg.len as usize;
        mem.read_slice(&mut out[filled..filled + len], seg.addr)
            .ok()?;
        filled += len;
    }
    (filled == N).then_some(out)
}

fn split(descriptors: impl IntoIterator<Item = Descriptor>) -> Result<Streams, Rejection> {
    let mut streams = Streams::default();
    for desc in descriptors {
        if desc.len == 0 {
            continue;
        }
        let seg = Segment {
            addr: desc.addr,
            len: u64::from(desc.len),
        };
        if desc.addr.0.checked_add(seg.len).is_none() {
            return Err(Rejection::Drop(format!(
                "descriptor at {:#x} wraps the address space",
                desc.addr.0
            )));
        }
        if desc.writable {
            streams.writable.push(seg);
        } else if streams.writable.is_empty() {
            streams.readable.push(seg);
        } else {
            return Err(Rejection::Drop(
                "a device-readable descriptor follows a writable one".into(),
            ));
        }
    }
    Ok(streams)
}

/// Parses and validates the chain `descriptors` against `limits`.
pub fn parse<M: GuestMemoryBackend>(
    mem: &M,
    descriptors: impl IntoIterator<Item = Descriptor>,
    limits: &DiskLimits,
) -> Result<Request, Rejection> {
    let streams = split(descriptors)?;
    // The status byte is the last writable byte.
    let writable_len = total(&streams.writable);
    if writable_len == 0 {
        return Err(Rejection::Drop(
            "no device-writable byte for the status".into(),
        ));
    }
    let status = slice_of(&streams.writable, writable_len - 1, 1)[0].addr;
    let reject = |code: u8, reason: String| Rejection::Status {
        status,
        code,
        reason,
    };
    if !mem.check_range(status, 1) {
        return Err(Rejection::Drop(format!(
            "status byte at {:#x} is outside guest memory",
            status.0
        )));
    }
    let Some(header) = read_bytes::<16, M>(mem, &streams.readable, 0) else {
        return Err(reject(
            status::IOERR,
            "request header is missing, short or outside guest memory".into(),
        ));
    };
    let request_type = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let mut sector_bytes = [0u8; 8];
    sector_bytes.copy_from_slice(&header[8..16]);
    let sector = u64::from_le_bytes(sector_bytes);
    let readable_len = total(&streams.readable);
    let in_data = slice_of(&streams.writable, 0, writable_len - 1);
    let out_data = slice_of(&streams.readable, HEADER_LEN, readable_len - HEADER_LEN);
    let data_in_memory =
        |segs: &[Segment]| segs.iter().all(|s| mem.check_range(s.addr, s.len as usize));

    let operation = match request_type {
        kind::IN | kind::OUT => {
            let (data, writing) = if request_type == kind::IN {
                (in_data, false)
            } else {
                (out_data, true)
            };
            if writing && limits.read_only {
                return Err(reject(status::IOERR, "write to a read-only disk".into()));
            }
            let len = total(&data);
            if len % SECTOR_SIZE != 0 {
                return Err(reject(
                    status::IOERR,
                    format!("data length {len} is not a multiple of 512"),
                ));
            }
            if len > limits.max_transfer {
                return Err(reject(
                    status::IOERR,
                    format!(
                        "{len}-byte request exceeds the {}-byte limit",
                        limits.max_transfer
                    ),
                ));
            }
            check_range(sector, len / SECTOR_SIZE, limits).map_err(|r| reject(status::IOERR, r))?;
            if !data_in_memory(&data) {
                return Err(reject(
                    status::IOERR,
                    "data buffer lies outside guest memory".into(),
                ));
            }
            let offset = sector * SECTOR_SIZE;
            if writing {
                Operation::Write { offset, data }
            } else {
                Operation::Read { offset, data }
            }
        }
        kind::FLUSH => Operation::Flush,
        kind::GET_ID => {
            if !data_in_memory(&in_data) {
                return Err(reject(
                    status::IOERR,
                    "id buffer lies outside guest memory".into(),
                ));
            }
            Operation::GetId {
                data: slice_of(&in_data, 0, ID_LEN as u64),
            }
        }
        kind::DISCARD | kind::WRITE_ZEROES => {
            if limits.read_only {
                return Err(reject(
                    status::IOERR,
                    "discard or write-zeroes on a read-only disk".into(),
                ));
            }
            let discard = request_type == kind::DISCARD;
            let bytes = total(&out_data);
            if bytes == 0 || bytes % SEGMENT_LEN != 0 {
                return Err(reject(
                    status::IOERR,
                    format!("{bytes} bytes of segments is not a multiple of 16"),
                ));
            }
            let count = bytes / SEGMENT_LEN;
            if count > u64::from(limits.max_zero_segments) {
                return Err(reject(
                    status::IOERR,
                    format!(
                        "{count} segments exceed the limit of {}",
                        limits.max_zero_segments
                    ),
                ));
            }
            let mut ranges = Vec::with_capacity(count as usize);
            let mut unmap = true;
            for i in 0..count {
                let Some(raw) = read_bytes::<16, M>(mem, &out_data, i * SEGMENT_LEN) else {
                    return Err(reject(
                        status::IOERR,
                        "segment lies outside guest memory".into(),
                    ));
                };
                let mut sector_raw = [0u8; 8];
                sector_raw.copy_from_slice(&raw[0..8]);
                let sector = u64::from_le_bytes(sector_raw);
                let sectors = u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]);
                let flags = u32::from_le_bytes([raw[12], raw[13], raw[14], raw[15]]);
                let allowed = if discard { 0 } else { WRITE_ZEROES_FLAG_UNMAP };
                if flags & !allowed != 0 {
                    return Err(reject(
                        status::UNSUPP,
                        format!("segment flags {flags:#x} are not supported"),
                    ));
                }
                unmap &= flags & WRITE_ZEROES_FLAG_UNMAP != 0;
                if sectors > limits.max_zero_sectors {
                    return Err(reject(
                        status::IOERR,
                        format!(
                            "segment of {sectors} sectors exceeds the limit of {}",
                            limits.max_zero_sectors
                        ),
                    ));
                }
                check_range(sector, u64::from(sectors), limits)
                    .map_err(|r| reject(status::IOERR, r))?;
                ranges.push(SectorRange {
                    sector,
                    count: u64::from(sectors),
                });
            }
            if discard {
                Operation::Discard(ranges)
            } else {
                Operation::WriteZeroes { ranges, unmap }
            }
        }
        other => {
            return Err(reject(
                status::UNSUPP,
                format!("request type {other} is not supported"),
            ));
        }
    };
    Ok(Request { operation, status })
}

fn check_range(sector: u64, count: u64, limits: &DiskLimits) -> Result<(), String> {
    match sector.checked_add(count) {
        Some(end) if end <= limits.capacity_sectors => Ok(()),
        _ => Err(format!(
            "sectors {sector}+{count} lie beyond the end of the {}-sector disk",
            limits.capacity_sectors
        )),
    }
}

#[cfg(test)]
mod tests;
