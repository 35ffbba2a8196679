//! Fuzzes virtio-blk request handling with guest-controlled bytes: the
//! input becomes guest memory and a descriptor chain; a request the parser
//! accepts is then executed against an in-memory disk. Nothing may panic,
//! and nothing may touch memory outside the guest's.
#![no_main]

use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use strata_blk::disk::Disk;
use strata_blk::exec::execute;
use strata_blk::request::{Descriptor, DiskLimits, parse};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap, VolatileSlice};

const MEM: usize = 64 << 10;
const DISK: usize = 256 << 10;

/// A disk in memory.
struct MemDisk(Mutex<Vec<u8>>);

impl MemDisk {
    fn range(&self, offset: u64, len: usize) -> std::io::Result<std::ops::Range<usize>> {
        let start = usize::try_from(offset).map_err(std::io::Error::other)?;
        let end = start.checked_add(len).filter(|e| *e <= DISK).ok_or_else(|| std::io::Error::other("out of range"))?;
        Ok(start..end)
    }
}

impl Disk for MemDisk {
    fn size(&self) -> u64 {
        DISK as u64
    }
    fn read_to(&self, offset: u64, dst: &VolatileSlice) -> std::io::Result<()> {
        let range = self.range(offset, dst.len())?;
        dst.copy_from(&self.0.lock().unwrap()[range]);
        Ok(())
    }
    fn write_from(&self, offset: u64, src: &VolatileSlice) -> std::io::Result<()> {
        let range = self.range(offset, src.len())?;
        src.copy_to(&mut self.0.lock().unwrap()[range]);
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn discard(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.write_zeroes(offset, len)
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> std::io::Result<()> {
        let range = self.range(offset, len as usize)?;
        self.0.lock().unwrap()[range].fill(0);
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    // The first bytes describe up to 8 descriptors (8 bytes each: address,
    // length, writable); the rest is guest memory.
    let count = usize::from(*data.first().unwrap_or(&0) % 9);
    let table_len = 1 + count * 8;
    if data.len() < table_len {
        return;
    }
    let descriptors: Vec<Descriptor> = data[1..table_len]
        .chunks_exact(8)
        .map(|d| Descriptor {
            // Mostly inside guest memory, sometimes just past it.
            addr: GuestAddress(u64::from(u32::from_le_bytes([d[0], d[1], d[2], 0])) % (MEM as u64 + 4096)),
            len: u32::from_le_bytes([d[3], d[4], d[5], 0]),
            writable: d[6] & 1 == 1,
        })
        .collect();
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
    let contents = &data[table_len..];
    mem.write_slice(&contents[..contents.len().min(MEM)], GuestAddress(0)).unwrap();
    let limits = DiskLimits {
        capacity_sectors: (DISK / 512) as u64,
        read_only: data.len() % 7 == 0,
        max_transfer: 128 << 10,
        max_zero_segments: 8,
        max_zero_sectors: 256,
    };
    if let Ok(request) = parse(&mem, descriptors, &limits) {
        let disk = MemDisk(Mutex::new(vec![0u8; DISK]));
        let done = execute(&mem, &request, &disk, b"fuzz-serial");
                // Descriptors may overlap, so the bound is the transfer limit (plus
        // the status byte), not the size of guest memory.
        assert!(u64::from(done.written) <= limits.max_transfer + 1);
    }
});
