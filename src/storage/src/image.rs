//! An open image: a chain of layers read and written as one disk.
//!
//! On open, the chain is resolved into one flat map with an entry per block
//! naming the member that holds it and where, so a read costs one lookup and
//! one `pread` whether the chain is 1 or 1000 layers deep:
//!
//! ```text
//!  map[block] = 0                      → the block reads as zeros
//!  map[block] = (member + 1) << 48 | offset  → pread(member file, offset)
//! ```
//!
//! Memory: 8 bytes of map plus 8 bytes of top-layer table per block, i.e.
//! 256 KiB per GiB of virtual disk at the default 64 KiB block size.
//!
//! Writes land in the top layer: in place if it owns the block, otherwise in
//! a new block (copy-up), whose unwritten part is filled from the block's
//! current contents.
//!
//! An `Image` is shared by the threads serving a disk's queues. The map is a
//! vector of atomics: reads, and writes to blocks the top layer owns, take no
//! lock at all. A copy-up builds and writes its new block without any shared
//! lock, then swaps the map entry under one mutex if the entry is still the
//! one it read (else it retries); zeroing takes the same mutex; a flush takes
//! the top layer's own lock.
//!
//! Opened with [`ChainOptions`], an image may share its read-only members
//! with other images ([`crate::shared`]) and read and write data around the
//! page cache ([`crate::direct`]).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::chain::{ChainError, ChainOptions, Member, open_chain_with};
use crate::direct::AlignedBuf;
use crate::format::{ParentKind, TableEntry};
use crate::layer::{Access, LayerError, LayerFile, ParentSpec};

const MEMBER_SHIFT: u32 = 48;
const OFFSET_MASK: u64 = (1 << MEMBER_SHIFT) - 1;
pub(crate) const ZEROS: u64 = 0;

pub(crate) fn pack(member: usize, offset: u64) -> u64 {
    ((member as u64 + 1) << MEMBER_SHIFT) | offset
}

pub(crate) fn unpack(entry: u64) -> Option<(usize, u64)> {
    (entry != ZEROS).then(|| (((entry >> MEMBER_SHIFT) - 1) as usize, entry & OFFSET_MASK))
}

/// Where a block's current contents come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockSource {
    /// Nothing: the block reads as zeros.
    Zeros,
    /// Member `index` (0 = base) at byte `offset` of its file.
    Member {
        /// Index into the chain, base first.
        index: usize,
        /// Byte offset in that member's file.
        offset: u64,
    },
}

/// Why an I/O request on an image failed.
#[derive(Debug, thiserror::Error)]
pub enum ImageIoError {
    #[error("request at {offset:#x}+{len:#x} lies beyond the end of the {size}-byte disk")]
    OutOfRange { offset: u64, len: u64, size: u64 },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error("the image is open read-only")]
    ReadOnly,
}

/// An open image.
#[derive(Debug)]
pub struct Image {
    members: Vec<Member>,
    map: Vec<AtomicU64>,
    /// Serialises changes of the map (copy-up, zeroing) between threads.
    remap: Mutex<()>,
    block_size: u32,
    virtual_size: u64,
    writable: bool,
    /// Data I/O with O_DIRECT, also for top layers made by snapshots.
    direct: bool,
}

impl Image {
    /// Opens the image whose top layer is `top`.
    pub fn open(top: &Path, access: Access) -> Result<Self, ChainError> {
        Self::open_with(top, access, ChainOptions::default())
    }

    /// Opens the image whose top layer is `top` with `options`: direct I/O,
    /// read-only members shared with other images.
    pub fn open_with(
        top: &Path,
        access: Access,
        options: ChainOptions<'_>,
    ) -> Result<Self, ChainError> {
        let members = open_chain_with(top, access, options)?;
        Ok(Self::from_members(
            members,
            access == Access::ReadWrite,
            options.direct,
        ))
    }

    fn from_members(members: Vec<Member>, writable: bool, direct: bool) -> Self {
        let top = match members.last() {
            Some(Member::Layer(layer)) => layer.header(),
            _ => unreachable_top(),
        };
        let block_size = top.geometry.block_size;
        let bs = u64::from(block_size);
        let mut map = vec![ZEROS; top.geometry.entries as usize];
        for (index, member) in members.iter().enumerate() {
            match member {
                Member::Raw(raw) => {
                    let blocks = raw.size.div_ceil(bs) as usize;
                    for (block, slot) in map.iter_mut().enumerate().take(blocks) {
                        *slot = pack(index, block as u64 * bs);
                    }
                }
                Member::Layer(layer) => {
                    for (slot, entry) in map.iter_mut().zip(layer.entries()) {
                        match entry {
                            TableEntry::Absent => {}
                            TableEntry::Zero => *slot = ZEROS,
                            TableEntry::Data(offset) => *slot = pack(index, offset),
                        }
                    }
                }
            }
        }
        Self {
            members,
            map: map.into_iter().map(AtomicU64::new).collect(),
            remap: Mutex::new(()),
            block_size,
            virtual_size: top.virtual_size,
            writable,
            direct,
        }
    }

    /// Virtual disk size in bytes.
    pub fn virtual_size(&self) -> u64 {
        self.virtual_size
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// The chain, base first.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The top layer.
    pub fn top(&self) -> &LayerFile {
        match self.members.last() {
            Some(Member::Layer(layer)) => layer,
            _ => unreachable_top(),
        }
    }

    pub(crate) fn entry(&self, block: u64) -> u64 {
        self.map
            .get(block as usize)
            .map_or(ZEROS, |e| e.load(Ordering::Acquire))
    }

    /// Where `block`'s contents come from.
    pub fn source(&self, block: u64) -> BlockSource {
        match unpack(self.entry(block)) {
            None => BlockSource::Zeros,
            Some((index, offset)) => BlockSource::Member { index, offset },
        }
    }

    /// Number of blocks.
    pub fn blocks(&self) -> u64 {
        self.map.len() as u64
    }

    pub(crate) fn check_range(&self, offset: u64, len: u64) -> Result<(), ImageIoError> {
        if offset
            .checked_add(len)
            .is_none_or(|end| end > self.virtual_size)
        {
            return Err(ImageIoError::OutOfRange {
                offset,
                len,
                size: self.virtual_size,
            });
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `offset`.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ImageIoError> {
        // SAFETY: `buf` is a live, exclusively borrowed buffer of exactly this length.
        unsafe { self.read_raw(offset, buf.as_mut_ptr(), buf.len()) }
    }

    /// Reads `len` bytes at `offset` into the memory at `dst`, for callers
    /// whose buffers are not Rust slices (guest memory).
    ///
    /// # Safety
    /// `dst` must be valid for writes of `len` bytes for the whole call.
    pub unsafe fn read_raw(
        &self,
        offset: u64,
        dst: *mut u8,
        len: usize,
    ) -> Result<(), ImageIoError> {
        self.check_range(offset, len as u64)?;
        for run in self.runs(offset, len) {
            // SAFETY: runs cover `0..len` exactly, so the range lies inside
            // the caller's buffer.
            let chunk = unsafe { dst.add(run.done) };
            match run.source {
                // SAFETY: as above, `run.len` bytes at `chunk` are the caller's to write.
                None => unsafe { std::ptr::write_bytes(chunk, 0, run.len) },
                // SAFETY: as above.
                Some((index, at)) => unsafe { self.read_member(index, at, chunk, run.len)? },
            }
        }
        Ok(())
    }

    /// Reads `len` bytes of member `index` at `offset` into `dst`; what lies
    /// past the member's end (only a raw base may end inside a block) reads
    /// as zeros.
    ///
    /// # Safety
    /// `dst` must be valid for writes of `len` bytes.
    unsafe fn read_member(
        &self,
        index: usize,
        offset: u64,
        dst: *mut u8,
        len: usize,
    ) -> Result<(), ImageIoError> {
        let member = &self.members[index];
        // SAFETY: forwarded from the caller.
        let got = unsafe { member.data().read_raw(offset, dst, len) }.map_err(|source| {
            ImageIoError::Read {
                path: member.path().to_path_buf(),
                source,
            }
        })?;
        // SAFETY: `got <= len`, so the pointer stays inside (or one past) the buffer.
        let tail = unsafe { dst.add(got) };
        // SAFETY: the tail `got..len` lies inside the caller's buffer.
        unsafe { std::ptr::write_bytes(tail, 0, len - got) };
        Ok(())
    }

    pub(crate) fn ensure_writable(&self) -> Result<(), ImageIoError> {
        if self.writable {
            Ok(())
        } else {
            Err(ImageIoError::ReadOnly)
        }
    }

    /// Writes `data` at `offset`, copying up partially written blocks.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), ImageIoError> {
        // SAFETY: `data` is a live slice of exactly this length.
        unsafe { self.write_raw(offset, data.as_ptr(), data.len()) }
    }

    /// Writes `len` bytes from the memory at `src` at `offset`.
    ///
    /// # Safety
    /// `src` must be valid for reads of `len` bytes for the whole call.
    pub unsafe fn write_raw(
        &self,
        offset: u64,
        src: *const u8,
        len: usize,
    ) -> Result<(), ImageIoError> {
        self.ensure_writable()?;
        self.check_range(offset, len as u64)?;
        let bs = u64::from(self.block_size);
        let top_index = self.members.len() - 1;
        let mut done = 0usize;
        while done < len {
            let pos = offset + done as u64;
            let block = pos / bs;
            let within = (pos % bs) as usize;
            let n = (bs as usize - within).min(len - done);
            // SAFETY: `done + n <= len`, inside the caller's buffer.
            let chunk = unsafe { src.add(done) };
            match unpack(self.entry(block)) {
                // SAFETY: as above.
                Some((index, base)) if index == top_index => unsafe {
                    self.write_owned(base + within as u64, chunk, n)?
                },
                // SAFETY: as above.
                _ => unsafe { self.copy_up(block, within, chunk, n)? },
            }
            done += n;
        }
        Ok(())
    }

    /// # Safety
    /// `src` must be valid for reads of `len` bytes.
    unsafe fn write_owned(
        &self,
        offset: u64,
        src: *const u8,
        len: usize,
    ) -> Result<(), ImageIoError> {
        // SAFETY: forwarded from the caller.
        unsafe { self.top().write_owned_raw(offset, src, len) }?;
        Ok(())
    }

    /// The first write to `block` in the top layer: a whole new block made of
    /// the block's current contents with `len` bytes from `src` at `within`.
    ///
    /// # Safety
    /// `src` must be valid for reads of `len` bytes.
    unsafe fn copy_up(
        &self,
        block: u64,
        within: usize,
        src: *const u8,
        len: usize,
    ) -> Result<(), ImageIoError> {
        let top_index = self.members.len() - 1;
        let bs = self.block_size as usize;
        loop {
            let seen = self.entry(block);
            if let Some((index, base)) = unpack(seen)
                && index == top_index
            {
                // Another thread copied the block up meanwhile: write in place.
                // SAFETY: forwarded from the caller.
                return unsafe { self.write_owned(base + within as u64, src, len) };
            }
            // Build and store the new block without holding any shared lock,
            // in a buffer direct I/O can use as it is.
            let mut full = AlignedBuf::zeroed(bs);
            if len < bs {
                self.read_block(block, &mut full)?;
            }
            // SAFETY: `src` is readable for `len` bytes, `within + len <= bs`, and
            // `full` is a separate allocation, so the ranges do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(src, full[within..].as_mut_ptr(), len) };
            let top = self.top();
            let new_offset = top.reserve_block()?;
            if let Err(e) = top.write_owned(new_offset, &full) {
                top.release_block(new_offset);
                return Err(e.into());
            }
            // Publish it only if the block still reads as it did: lower layers
            // never change and zeros stay zeros, so an unchanged entry means
            // the bytes merged above are still the block's contents.
            let _remap = self.remap.lock().unwrap_or_else(PoisonError::into_inner);
            if self.entry(block) == seen {
                top.set_entry(block, TableEntry::Data(new_offset))?;
                self.map[block as usize].store(pack(top_index, new_offset), Ordering::Release);
                return Ok(());
            }
            drop(_remap);
            top.release_block(new_offset);
        }
    }

    /// Reads a whole block as it currently is (the last block may extend past
    /// the virtual size; that part reads as zeros).
    fn read_block(&self, block: u64, buf: &mut [u8]) -> Result<(), ImageIoError> {
        match unpack(self.entry(block)) {
            None => {
                buf.fill(0);
                Ok(())
            }
            // SAFETY: `buf` is a live, exclusively borrowed buffer of this length.
            Some((index, base)) => unsafe {
                self.read_member(index, base, buf.as_mut_ptr(), buf.len())
            },
        }
    }

    /// Makes `[offset, offset + len)` read as zeros. Whole blocks become zero
    /// entries in the top layer (freeing any data it held there); the partial
    /// blocks at either end are written with zeros.
    pub fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), ImageIoError> {
        self.zero_range(offset, len, true)
    }

    /// Discards `[offset, offset + len)`: whole blocks are freed and read as
    /// zeros afterwards; partial blocks are left as they are (discard is a hint).
    pub fn discard(&self, offset: u64, len: u64) -> Result<(), ImageIoError> {
        self.zero_range(offset, len, false)
    }

    fn zero_range(&self, offset: u64, len: u64, zero_partial: bool) -> Result<(), ImageIoError> {
        self.ensure_writable()?;
        self.check_range(offset, len)?;
        let bs = u64::from(self.block_size);
        let end = offset + len;
        // Whole blocks: those the range covers entirely; the disk's last
        // block, if shorter than a block, is whole as far as the disk goes.
        let first = offset.div_ceil(bs);
        let last = if end == self.virtual_size {
            end.div_ceil(bs)
        } else {
            end / bs
        };
        if first >= last {
            if zero_partial && len > 0 {
                self.write_at(offset, &vec![0u8; len as usize])?;
            }
            return Ok(());
        }
        if zero_partial && offset < first * bs {
            self.write_at(offset, &vec![0u8; (first * bs - offset) as usize])?;
        }
        {
            let _remap = self.remap.lock().unwrap_or_else(PoisonError::into_inner);
            for block in first..last {
                if self.entry(block) != ZEROS {
                    self.top().set_entry(block, TableEntry::Zero)?;
                    self.map[block as usize].store(ZEROS, Ordering::Release);
                }
            }
        }
        if zero_partial && last * bs < end {
            self.write_at(last * bs, &vec![0u8; (end - last * bs) as usize])?;
        }
        Ok(())
    }

    /// Makes every acknowledged write durable.
    pub fn flush(&self) -> Result<(), ImageIoError> {
        if !self.writable {
            return Ok(());
        }
        self.top().commit()?;
        Ok(())
    }

    /// Freezes the current top layer and continues in a new, empty top layer
    /// at `new_top`, whose parent location is `location` (absolute, or
    /// relative to `new_top`'s directory). Reads are unchanged; the image
    /// stays open and writable throughout.
    pub fn snapshot(&mut self, new_top: &Path, location: &str) -> Result<(), ImageIoError> {
        self.snapshot_with_id(new_top, uuid::Uuid::new_v4(), location)
    }

    /// [`Image::snapshot`], giving the new top layer the id `new_id`.
    pub fn snapshot_with_id(
        &mut self,
        new_top: &Path,
        new_id: uuid::Uuid,
        location: &str,
    ) -> Result<(), ImageIoError> {
        self.ensure_writable()?;
        let (id, size) = {
            let top = self.top();
            top.commit()?;
            top.freeze()?;
            top.downgrade_to_shared()?;
            let header = top.header();
            (header.id, header.virtual_size)
        };
        let spec = ParentSpec {
            kind: ParentKind::Layer,
            id,
            size,
            location: location.to_string(),
        };
        let mut layer = LayerFile::create_with_id(
            new_top,
            new_id,
            self.virtual_size,
            self.block_size,
            Some(&spec),
        )?;
        if self.direct {
            layer = layer.with_direct()?;
        }
        self.members.push(Member::Layer(Arc::new(layer)));
        Ok(())
    }

    /// Consumes the image, handing back its members (base first).
    pub fn into_members(self) -> Vec<Member> {
        self.members
    }

    /// The file of member `index`.
    pub fn member_file(&self, index: usize) -> Option<&File> {
        self.members.get(index).map(Member::file)
    }
}

/// `open_chain` always ends its list with the layer it was asked to open.
fn unreachable_top() -> ! {
    panic!("an image's top member is always a layer")
}
