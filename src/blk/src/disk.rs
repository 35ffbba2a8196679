//! What the backend needs from a disk image.

use strata_storage::Piece;
use vm_memory::VolatileSlice;

/// A disk the backend serves. Implementations must allow calls from several
/// queue threads at once without a lock shared by all of them on reads and
/// writes.
pub trait Disk: Send + Sync + 'static {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Reads `dst.len()` bytes at `offset` straight into guest memory.
    fn read_to(&self, offset: u64, dst: &VolatileSlice) -> std::io::Result<()>;
    /// Writes `src.len()` bytes from guest memory at `offset`.
    fn write_from(&self, offset: u64, src: &VolatileSlice) -> std::io::Result<()>;
    /// Makes every acknowledged write durable.
    fn flush(&self) -> std::io::Result<()>;
    /// Frees `[offset, offset + len)`; it reads as zeros afterwards.
    fn discard(&self, offset: u64, len: u64) -> std::io::Result<()>;
    /// Zeroes `[offset, offset + len)`.
    fn write_zeroes(&self, offset: u64, len: u64) -> std::io::Result<()>;
    /// A VMM's session with this disk has ended.
    fn session_ended(&self) {}
    /// Resolves a read (or, if `write`, a write) of `len` bytes at `offset`,
    /// to or from host memory at `addr`, into pieces the caller carries out
    /// itself (asynchronously), appended to `out`. `Ok(false)`, leaving
    /// `out` as it was: no plan for this request, so use
    /// [`Disk::read_to`] or [`Disk::write_from`]. The default has none.
    fn plan(
        &self,
        write: bool,
        offset: u64,
        len: usize,
        addr: usize,
        out: &mut Vec<Piece>,
    ) -> std::io::Result<bool> {
        let _ = (write, offset, len, addr, out);
        Ok(false)
    }
}
