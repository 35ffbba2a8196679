//! Carrying out a validated request against a [`Disk`].

use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryMmap};

use crate::disk::Disk;
use crate::request::{ID_LEN, Operation, Request, SECTOR_SIZE, Segment, status};

/// The status to write and the bytes written into guest memory (for the
/// used ring), including the status byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// Status byte.
    pub status: u8,
    /// Bytes the device wrote to the chain.
    pub written: u32,
}

fn each_segment(
    mem: &GuestMemoryMmap,
    segments: &[Segment],
    mut io: impl FnMut(u64, &vm_memory::VolatileSlice) -> std::io::Result<()>,
) -> std::io::Result<u64> {
    let mut done = 0u64;
    for seg in segments {
        let slice = mem
            .get_slice(seg.addr, seg.len as usize)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        io(done, &slice)?;
        done += seg.len;
    }
    Ok(done)
}

/// Executes `request`, writes its status byte, and reports the completion.
pub fn execute(
    mem: &GuestMemoryMmap,
    request: &Request,
    disk: &dyn Disk,
    serial: &[u8],
) -> Completion {
    let result = match &request.operation {
        Operation::Read { offset, data } => {
            each_segment(mem, data, |at, slice| disk.read_to(offset + at, slice)).map(|n| n as u32)
        }
        Operation::Write { offset, data } => {
            each_segment(mem, data, |at, slice| disk.write_from(offset + at, slice)).map(|_| 0)
        }
        Operation::Flush => disk.flush().map(|()| 0),
        Operation::GetId { data } => {
            let mut id = [0u8; ID_LEN];
            let n = serial.len().min(ID_LEN);
            id[..n].copy_from_slice(&serial[..n]);
            let mut done = 0usize;
            let mut result = Ok(0);
            for seg in data {
                let len = seg.len as usize;
                if let Err(e) = mem.write_slice(&id[done..done + len], seg.addr) {
                    result = Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e));
                    break;
                }
                done += len;
            }
            result.map(|_| done as u32)
        }
        Operation::Discard(ranges) => ranges
            .iter()
            .try_for_each(|r| disk.discard(r.sector * SECTOR_SIZE, r.count * SECTOR_SIZE))
            .map(|()| 0),
        Operation::WriteZeroes { ranges, .. } => ranges
            .iter()
            .try_for_each(|r| disk.write_zeroes(r.sector * SECTOR_SIZE, r.count * SECTOR_SIZE))
            .map(|()| 0),
    };
    let (code, written) = match result {
        Ok(written) => (status::OK, written),
        Err(e) => {
            log::warn!("virtio-blk request failed: {e}");
            (status::IOERR, 0)
        }
    };
    // The status address was checked to lie in guest memory when parsing.
    if let Err(e) = mem.write_obj(code, request.status) {
        log::warn!("cannot write a request's status byte: {e}");
    }
    Completion {
        status: code,
        written: written.saturating_add(1),
    }
}
