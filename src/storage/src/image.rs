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

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::chain::{ChainError, Member, open_chain};
use crate::format::{ParentKind, TableEntry};
use crate::layer::{Access, LayerError, LayerFile, ParentSpec, read_up_to};

const MEMBER_SHIFT: u32 = 48;
const OFFSET_MASK: u64 = (1 << MEMBER_SHIFT) - 1;
const ZEROS: u64 = 0;

fn pack(member: usize, offset: u64) -> u64 {
    ((member as u64 + 1) << MEMBER_SHIFT) | offset
}

fn unpack(entry: u64) -> Option<(usize, u64)> {
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
    map: Vec<u64>,
    block_size: u32,
    virtual_size: u64,
    writable: bool,
}

impl Image {
    /// Opens the image whose top layer is `top`.
    pub fn open(top: &Path, access: Access) -> Result<Self, ChainError> {
        let members = open_chain(top, access)?;
        Ok(Self::from_members(members, access == Access::ReadWrite))
    }

    fn from_members(members: Vec<Member>, writable: bool) -> Self {
        let top = match members.last() {
            Some(Member::Layer(layer)) => *layer.header(),
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
                            TableEntry::Data(offset) => *slot = pack(index, *offset),
                        }
                    }
                }
            }
        }
        Self {
            members,
            map,
            block_size,
            virtual_size: top.virtual_size,
            writable,
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

    fn top_mut(&mut self) -> &mut LayerFile {
        match self.members.last_mut() {
            Some(Member::Layer(layer)) => layer,
            _ => unreachable_top(),
        }
    }

    /// Where `block`'s contents come from.
    pub fn source(&self, block: u64) -> BlockSource {
        match self.map.get(block as usize).copied().and_then(unpack) {
            None => BlockSource::Zeros,
            Some((index, offset)) => BlockSource::Member { index, offset },
        }
    }

    /// Number of blocks.
    pub fn blocks(&self) -> u64 {
        self.map.len() as u64
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<(), ImageIoError> {
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
        self.check_range(offset, buf.len() as u64)?;
        let bs = u64::from(self.block_size);
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let block = pos / bs;
            let within = pos % bs;
            // Extend the run while following blocks sit contiguously in the same file.
            let mut run = (bs - within).min((buf.len() - done) as u64) as usize;
            let entry = self.map[block as usize];
            let mut next = block + 1;
            while done + run < buf.len() {
                let expected = unpack(entry).map(|(m, o)| pack(m, o + (next - block) * bs));
                if self.map.get(next as usize).copied() != Some(expected.unwrap_or(ZEROS)) {
                    break;
                }
                run += (bs as usize).min(buf.len() - done - run);
                next += 1;
            }
            let chunk = &mut buf[done..done + run];
            match unpack(entry) {
                None => chunk.fill(0),
                Some((index, base)) => self.read_member(index, base + within, chunk)?,
            }
            done += run;
        }
        Ok(())
    }

    fn read_member(&self, index: usize, offset: u64, chunk: &mut [u8]) -> Result<(), ImageIoError> {
        let member = &self.members[index];
        let got =
            read_up_to(member.file(), chunk, offset).map_err(|source| ImageIoError::Read {
                path: member.path().to_path_buf(),
                source,
            })?;
        // Only a raw base may end inside its last block; the rest reads as zeros.
        chunk[got..].fill(0);
        Ok(())
    }

    fn ensure_writable(&self) -> Result<(), ImageIoError> {
        if self.writable {
            Ok(())
        } else {
            Err(ImageIoError::ReadOnly)
        }
    }

    /// Writes `data` at `offset`, copying up partially written blocks.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), ImageIoError> {
        self.ensure_writable()?;
        self.check_range(offset, data.len() as u64)?;
        let bs = u64::from(self.block_size);
        let top_index = self.members.len() - 1;
        let mut done = 0usize;
        while done < data.len() {
            let pos = offset + done as u64;
            let block = pos / bs;
            let within = (pos % bs) as usize;
            let len = (bs as usize - within).min(data.len() - done);
            let chunk = &data[done..done + len];
            match unpack(self.map[block as usize]) {
                Some((index, base)) if index == top_index => {
                    self.top().write_owned(base + within as u64, chunk)?;
                }
                _ => {
                    let new_offset = if len == bs as usize {
                        self.top_mut().append_block(block, chunk)?
                    } else {
                        let mut full = vec![0u8; bs as usize];
                        self.read_at_block(block, &mut full)?;
                        full[within..within + len].copy_from_slice(chunk);
                        self.top_mut().append_block(block, &full)?
                    };
                    self.map[block as usize] = pack(top_index, new_offset);
                }
            }
            done += len;
        }
        Ok(())
    }

    /// Reads a whole block as it currently is (the last block may extend past
    /// the virtual size; that part reads as zeros).
    fn read_at_block(&self, block: u64, buf: &mut [u8]) -> Result<(), ImageIoError> {
        match unpack(self.map[block as usize]) {
            None => {
                buf.fill(0);
                Ok(())
            }
            Some((index, base)) => self.read_member(index, base, buf),
        }
    }

    /// Makes `[offset, offset + len)` read as zeros. Whole blocks become zero
    /// entries in the top layer (freeing any data it held there); the partial
    /// blocks at either end are written with zeros.
    pub fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), ImageIoError> {
        self.zero_range(offset, len, true)
    }

    /// Discards `[offset, offset + len)`: whole blocks are freed and read as
    /// zeros afterwards; partial blocks are left as they are (discard is a hint).
    pub fn discard(&mut self, offset: u64, len: u64) -> Result<(), ImageIoError> {
        self.zero_range(offset, len, false)
    }

    fn zero_range(
        &mut self,
        offset: u64,
        len: u64,
        zero_partial: bool,
    ) -> Result<(), ImageIoError> {
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
        for block in first..last {
            if self.map[block as usize] != ZEROS {
                self.top_mut().set_entry(block, TableEntry::Zero)?;
                self.map[block as usize] = ZEROS;
            }
        }
        if zero_partial && last * bs < end {
            self.write_at(last * bs, &vec![0u8; (end - last * bs) as usize])?;
        }
        Ok(())
    }

    /// Makes every acknowledged write durable.
    pub fn flush(&mut self) -> Result<(), ImageIoError> {
        if !self.writable {
            return Ok(());
        }
        self.top_mut().commit()?;
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
            let top = self.top_mut();
            top.commit()?;
            top.freeze()?;
            top.downgrade_to_shared()?;
            (top.header().id, top.header().virtual_size)
        };
        let spec = ParentSpec {
            kind: ParentKind::Layer,
            id,
            size,
            location: location.to_string(),
        };
        let layer = LayerFile::create_with_id(
            new_top,
            new_id,
            self.virtual_size,
            self.block_size,
            Some(&spec),
        )?;
        self.members.push(Member::Layer(Box::new(layer)));
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
