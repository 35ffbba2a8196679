//! One layer file: its header, its table, its data blocks.
//!
//! Writes go to newly appended blocks or in place to blocks this layer
//! already owns; the table lives in memory and reaches the file only on
//! [`LayerFile::commit`], which makes the update atomic:
//!
//! ```text
//!  1. fdatasync            data blocks are durable before anything refers to them
//!  2. write the table      into the copy that is NOT current (only pages changed
//!                          since that copy was last written), fdatasync
//!  3. write the header     into the slot that is NOT current: generation + 1,
//!                          current copy flipped, table CRC, fdatasync
//! ```
//!
//! A crash before step 3 completes leaves the old header, which names the old
//! table copy, untouched: the layer opens as of the previous commit, and
//! blocks appended since are unreferenced. Blocks are never reused within a
//! layer (freed ones become holes), so no committed entry can ever point at
//! data written for another block.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use uuid::Uuid;

use crate::direct::{DataFile, DirectIoUnsupported, DirectOpenError};
use crate::format::{
    HEADER_SLOT_SIZE, Header, HeaderError, PARENT_LOCATION_MAX, PARENT_LOCATION_OFFSET, Parent,
    ParentKind, TableEntry, TableError, checksum, choose_header, decode_table, encode_entry,
};
use crate::lock::{LockError, LockKind, lock};

/// Table entries per 4 KiB table page: the unit of table writes.
const ENTRIES_PER_PAGE: usize = 512;

/// Read-only or writable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Shared lock; writes refused.
    ReadOnly,
    /// Exclusive lock.
    ReadWrite,
}

/// What went wrong with a layer file; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("cannot open layer {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create layer {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("layer {path}: {source}")]
    Header { path: PathBuf, source: HeaderError },
    #[error("layer {path}: {source}")]
    Table { path: PathBuf, source: TableError },
    #[error("layer {path}: its parent location is corrupt")]
    ParentLocation { path: PathBuf },
    #[error(
        "layer {path}: its data area ends at {allocated_end:#x} but the file is only {file_len:#x} bytes (truncated file)"
    )]
    Truncated {
        path: PathBuf,
        allocated_end: u64,
        file_len: u64,
    },
    #[error("image layer {path} is in use by {}", holder(*.pid))]
    InUse { path: PathBuf, pid: Option<u32> },
    #[error("layer {path} is a frozen snapshot and cannot be written")]
    Frozen { path: PathBuf },
    #[error(
        "layer {path}: virtual size {size} or block size {block_size} is out of range (block size: a power of two from 4 KiB to 2 MiB)"
    )]
    BadGeometry {
        path: PathBuf,
        size: u64,
        block_size: u32,
    },
    #[error("layer {path}: parent location is longer than {PARENT_LOCATION_MAX} bytes")]
    LocationTooLong { path: PathBuf },
    #[error(
        "layer {path} has reached the 256 TiB file limit: commit or copy the image to compact it"
    )]
    Full { path: PathBuf },
    #[error("layer {path}: cannot {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    NoDirectIo(#[from] DirectIoUnsupported),
}

fn holder(pid: Option<u32>) -> String {
    pid.map_or("another process".to_string(), |pid| {
        format!("process {pid}")
    })
}

/// The parent a new layer is created on.
#[derive(Clone, Debug)]
pub struct ParentSpec {
    /// Layer or raw.
    pub kind: ParentKind,
    /// The parent layer's id (nil for raw).
    pub id: Uuid,
    /// The parent's virtual size or raw file size.
    pub size: u64,
    /// Where to find it: absolute, or relative to the new layer's directory.
    pub location: String,
}

/// An open layer file.
///
/// Its table and allocator sit behind one mutex, taken for table changes,
/// allocations and commits; data reads and in-place writes take no lock, so
/// several threads can do I/O on one layer at once. Data may go around the
/// page cache ([`LayerFile::open_with`]); metadata always goes through it.
#[derive(Debug)]
pub struct LayerFile {
    path: PathBuf,
    data: DataFile,
    parent_location: Option<String>,
    /// False once opened read-only or downgraded after freezing.
    writable: AtomicBool,
    state: Mutex<LayerState>,
}

/// The mutable part of a layer.
#[derive(Debug)]
struct LayerState {
    header: Header,
    current_slot: usize,
    table: Vec<TableEntry>,
    /// Table pages changed since table copy 0 / copy 1 was last written.
    dirty: [BTreeSet<usize>; 2],
    /// The header must be rewritten at the next commit even with no table change.
    header_dirty: bool,
    next_alloc: u64,
}

impl LayerFile {
    /// Creates a new, empty layer at `path` (which must not exist).
    pub fn create(
        path: &Path,
        virtual_size: u64,
        block_size: u32,
        parent: Option<&ParentSpec>,
    ) -> Result<Self, LayerError> {
        Self::create_with_id(path, Uuid::new_v4(), virtual_size, block_size, parent)
    }

    /// Creates a new, empty layer with a given id: used when copying a layer
    /// to another tier, where children must still recognise it.
    pub fn create_with_id(
        path: &Path,
        id: Uuid,
        virtual_size: u64,
        block_size: u32,
        parent: Option<&ParentSpec>,
    ) -> Result<Self, LayerError> {
        let err_path = || path.to_path_buf();
        let location = parent.map(|p| p.location.clone());
        if location
            .as_ref()
            .is_some_and(|l| l.is_empty() || l.len() > PARENT_LOCATION_MAX)
        {
            return Err(LayerError::LocationTooLong { path: err_path() });
        }
        let header_parent = parent.map(|p| Parent {
            kind: p.kind,
            id: p.id,
            size: p.size,
            location_len: p.location.len() as u32,
            location_crc: checksum(p.location.as_bytes()),
        });
        let header = Header::new(virtual_size, block_size, header_parent)
            .map(|h| Header { id, ..h })
            .ok_or(LayerError::BadGeometry {
                path: err_path(),
                size: virtual_size,
                block_size,
            })?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|source| LayerError::Create {
                path: err_path(),
                source,
            })?;
        lock_or_busy(&file, path, Access::ReadWrite)?;
        let io = |op| {
            move |source| LayerError::Io {
                path: path.to_path_buf(),
                op,
                source,
            }
        };
        // Sparse: the zeroed tables and the empty slot 1 cost no disk space.
        file.set_len(header.geometry.data_offset)
            .map_err(io("size the new layer"))?;
        if let Some(location) = &location {
            file.write_all_at(location.as_bytes(), PARENT_LOCATION_OFFSET)
                .map_err(io("write the parent location"))?;
        }
        file.write_all_at(&header.encode(), 0)
            .map_err(io("write the header"))?;
        file.sync_all().map_err(io("sync the new layer"))?;
        sync_parent_dir(path);
        Ok(Self {
            path: path.to_path_buf(),
            data: DataFile::buffered(file),
            parent_location: location,
            writable: AtomicBool::new(true),
            state: Mutex::new(LayerState {
                table: vec![TableEntry::Absent; header.geometry.entries as usize],
                next_alloc: header.allocated_end,
                header,
                current_slot: 0,
                dirty: [BTreeSet::new(), BTreeSet::new()],
                header_dirty: false,
            }),
        })
    }

    /// Opens and validates an existing layer.
    pub fn open(path: &Path, access: Access) -> Result<Self, LayerError> {
        Self::open_inner(path, access, false)
    }

    /// [`LayerFile::open`], with data blocks read and written with
    /// `O_DIRECT` if `direct` (see [`crate::direct`]).
    pub fn open_with(path: &Path, access: Access, direct: bool) -> Result<Self, LayerError> {
        let layer = Self::open_inner(path, access, false)?;
        if direct {
            layer.with_direct()
        } else {
            Ok(layer)
        }
    }

    /// Moves data I/O to an `O_DIRECT` descriptor of the same file.
    pub fn with_direct(mut self) -> Result<Self, LayerError> {
        let write = self.writable.load(Ordering::Relaxed);
        self.data = self
            .data
            .with_direct(&self.path, write)
            .map_err(|e| match e {
                DirectOpenError::Unsupported(e) => LayerError::NoDirectIo(e),
                DirectOpenError::Io(source) => LayerError::Open {
                    path: self.path.clone(),
                    source,
                },
            })?;
        Ok(self)
    }

    /// Opens a frozen layer for writing, to merge its child into it
    /// (`commit`). It stays frozen on disk until the next commit.
    pub fn open_to_merge_into(path: &Path) -> Result<Self, LayerError> {
        let layer = Self::open_inner(path, Access::ReadWrite, true)?;
        {
            let mut state = layer.lock();
            state.header.frozen = false;
            state.header_dirty = true;
        }
        Ok(layer)
    }

    fn open_inner(path: &Path, access: Access, allow_frozen: bool) -> Result<Self, LayerError> {
        let err_path = || path.to_path_buf();
        let file = OpenOptions::new()
            .read(true)
            .write(access == Access::ReadWrite)
            .open(path)
            .map_err(|source| LayerError::Open {
                path: err_path(),
                source,
            })?;
        let mut slots = [0u8; 2 * HEADER_SLOT_SIZE];
        let got = read_up_to(&file, &mut slots, 0).map_err(|source| LayerError::Io {
            path: err_path(),
            op: "read the header",
            source,
        })?;
        let (header, current_slot) = if got < HEADER_SLOT_SIZE {
            Err(HeaderError::Truncated)
        } else {
            choose_header(&slots[..HEADER_SLOT_SIZE], &slots[HEADER_SLOT_SIZE..got])
        }
        .map_err(|source| LayerError::Header {
            path: err_path(),
            source,
        })?;
        if access == Access::ReadWrite && header.frozen && !allow_frozen {
            return Err(LayerError::Frozen { path: err_path() });
        }
        lock_or_busy(&file, path, access)?;
        let file_len = file
            .metadata()
            .map_err(|source| LayerError::Io {
                path: err_path(),
                op: "stat",
                source,
            })?
            .len();
        if file_len < header.allocated_end {
            return Err(LayerError::Truncated {
                path: err_path(),
                allocated_end: header.allocated_end,
                file_len,
            });
        }
        let parent_location = read_parent_location(&file, &header, path)?;
        let geometry = header.geometry;
        let mut table_bytes = vec![0u8; geometry.table_len()];
        let table_at = geometry.table_offsets[usize::from(header.active_table)];
        let got =
            read_up_to(&file, &mut table_bytes, table_at).map_err(|source| LayerError::Io {
                path: err_path(),
                op: "read the table",
                source,
            })?;
        let table = decode_table(
            &table_bytes[..got],
            &geometry,
            header.table_crc,
            header.allocated_end,
        )
        .map_err(|source| LayerError::Table {
            path: err_path(),
            source,
        })?;
        // The copy that is not current may be any number of commits old: the
        // first commit that needs it rewrites it whole.
        let pages = table.len().div_ceil(ENTRIES_PER_PAGE);
        let mut dirty = [BTreeSet::new(), BTreeSet::new()];
        dirty[1 - usize::from(header.active_table)] = (0..pages).collect();
        Ok(Self {
            path: path.to_path_buf(),
            data: DataFile::buffered(file),
            parent_location,
            writable: AtomicBool::new(access == Access::ReadWrite),
            state: Mutex::new(LayerState {
                table,
                next_alloc: header.allocated_end,
                header,
                current_slot,
                dirty,
                header_dirty: false,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, LayerState> {
        // The state is updated in whole steps; after a panic elsewhere it is
        // still as consistent as the last step left it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current header.
    pub fn header(&self) -> Header {
        self.lock().header
    }

    /// The parent location as stored, if the layer has a parent.
    pub fn parent_location(&self) -> Option<&str> {
        self.parent_location.as_deref()
    }

    /// The open file (its buffered descriptor), for metadata and reads by offset.
    pub fn file(&self) -> &File {
        self.data.file()
    }

    /// The file as data blocks are read and written.
    pub fn data(&self) -> &DataFile {
        &self.data
    }

    pub(crate) fn writable(&self) -> bool {
        self.writable.load(Ordering::Relaxed)
    }

    /// This layer's entry for `block`.
    pub fn entry(&self, block: u64) -> TableEntry {
        self.lock()
            .table
            .get(block as usize)
            .copied()
            .unwrap_or(TableEntry::Absent)
    }

    /// All entries, in block order (a copy).
    pub fn entries(&self) -> Vec<TableEntry> {
        self.lock().table.clone()
    }

    /// Bytes of data blocks this layer references.
    pub fn allocated_bytes(&self) -> u64 {
        let state = self.lock();
        let data_blocks = state
            .table
            .iter()
            .filter(|e| matches!(e, TableEntry::Data(_)))
            .count();
        data_blocks as u64 * u64::from(state.header.geometry.block_size)
    }

    fn ensure_writable(&self) -> Result<(), LayerError> {
        if !self.writable() || self.lock().header.frozen {
            return Err(LayerError::Frozen {
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    fn io_err(&self, op: &'static str) -> impl FnOnce(std::io::Error) -> LayerError + '_ {
        move |source| LayerError::Io {
            path: self.path.clone(),
            op,
            source,
        }
    }

    /// Writes `data` at `offset` of the file. The caller guarantees the range
    /// lies inside a block this layer owns. Takes no lock.
    pub fn write_owned(&self, offset: u64, data: &[u8]) -> Result<(), LayerError> {
        // SAFETY: `data` is a live slice of exactly this length.
        unsafe { self.write_owned_raw(offset, data.as_ptr(), data.len()) }
    }

    /// [`LayerFile::write_owned`] from memory that is not a Rust slice.
    ///
    /// # Safety
    /// `src` must be valid for reads of `len` bytes for the whole call.
    pub unsafe fn write_owned_raw(
        &self,
        offset: u64,
        src: *const u8,
        len: usize,
    ) -> Result<(), LayerError> {
        if !self.writable() {
            return Err(LayerError::Frozen {
                path: self.path.clone(),
            });
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.data.write_raw(offset, src, len) }.map_err(self.io_err("write data"))
    }

    /// Stores a whole new block for `block` at a freshly appended offset and
    /// points the table at it. Returns the data offset.
    pub fn append_block(&self, block: u64, data: &[u8]) -> Result<u64, LayerError> {
        self.ensure_writable()?;
        let mut state = self.lock();
        let offset = allocate(&mut state, &self.path)?;
        // SAFETY: `data` is a live slice of exactly this length.
        unsafe { self.data.write_raw(offset, data.as_ptr(), data.len()) }
            .map_err(self.io_err("append a block"))?;
        self.set_entry_locked(&mut state, block, TableEntry::Data(offset));
        Ok(offset)
    }

    /// Appends a block whose data is copied inside the kernel from `src` at
    /// `src_offset` (`copy_file_range`: a reflink where the filesystem can,
    /// otherwise no trip through user space), and points `block` at it.
    pub fn append_block_from(
        &self,
        block: u64,
        src: &File,
        src_offset: u64,
    ) -> Result<u64, LayerError> {
        self.ensure_writable()?;
        let mut state = self.lock();
        let offset = allocate(&mut state, &self.path)?;
        let len = u64::from(state.header.geometry.block_size);
        copy_range(src, src_offset, self.file(), offset, len)
            .map_err(self.io_err("copy a block"))?;
        self.set_entry_locked(&mut state, block, TableEntry::Data(offset));
        Ok(offset)
    }

    /// Reserves a block at the end of the data area for the caller to fill
    /// with [`LayerFile::write_owned`] before pointing an entry at it with
    /// [`LayerFile::set_entry`]. Until then nothing refers to it.
    pub fn reserve_block(&self) -> Result<u64, LayerError> {
        self.ensure_writable()?;
        allocate(&mut self.lock(), &self.path)
    }

    /// Gives back the disk space of a reserved block that was never used.
    pub fn release_block(&self, offset: u64) {
        let block_size = u64::from(self.lock().header.geometry.block_size);
        punch_hole(self.file(), offset, block_size);
    }

    /// Changes the entry of `block`; a data block it replaces becomes a hole.
    pub fn set_entry(&self, block: u64, entry: TableEntry) -> Result<(), LayerError> {
        self.ensure_writable()?;
        let mut state = self.lock();
        self.set_entry_locked(&mut state, block, entry);
        Ok(())
    }

    fn set_entry_locked(&self, state: &mut LayerState, block: u64, entry: TableEntry) {
        let index = block as usize;
        let block_size = u64::from(state.header.geometry.block_size);
        let Some(slot) = state.table.get_mut(index) else {
            return;
        };
        let old = std::mem::replace(slot, entry);
        if old == entry {
            return;
        }
        if let TableEntry::Data(old_offset) = old {
            punch_hole(self.file(), old_offset, block_size);
        }
        for dirty in &mut state.dirty {
            dirty.insert(index / ENTRIES_PER_PAGE);
        }
    }

    /// Makes every write so far durable and the table change atomic (see the
    /// module docs). Does nothing but sync if the table did not change.
    pub fn commit(&self) -> Result<(), LayerError> {
        let mut state = self.lock();
        self.commit_locked(&mut state)
    }

    fn commit_locked(&self, state: &mut LayerState) -> Result<(), LayerError> {
        if !self.writable() {
            return Ok(());
        }
        let file = self.file();
        file.sync_data().map_err(self.io_err("sync data"))?;
        if state.dirty.iter().all(BTreeSet::is_empty) && !state.header_dirty {
            return Ok(());
        }
        let current = usize::from(state.header.active_table);
        // If the table has not changed since the current copy was written,
        // only the header changes; otherwise the other copy takes the table.
        let target = if state.dirty[current].is_empty() {
            current
        } else {
            1 - current
        };
        let encoded: Vec<u8> = state
            .table
            .iter()
            .flat_map(|e| encode_entry(*e).to_le_bytes())
            .collect();
        if target != current {
            let table_at = state.header.geometry.table_offsets[target];
            for page in &state.dirty[target] {
                let start = page * ENTRIES_PER_PAGE * 8;
                let end = (start + ENTRIES_PER_PAGE * 8).min(encoded.len());
                file.write_all_at(&encoded[start..end], table_at + start as u64)
                    .map_err(self.io_err("write the table"))?;
            }
            file.sync_data().map_err(self.io_err("sync the table"))?;
        }
        let header = Header {
            generation: state.header.generation + 1,
            active_table: target as u8,
            table_crc: checksum(&encoded),
            allocated_end: state.next_alloc,
            ..state.header
        };
        let slot = 1 - state.current_slot;
        file.write_all_at(&header.encode(), (slot * HEADER_SLOT_SIZE) as u64)
            .map_err(self.io_err("write the header"))?;
        file.sync_data().map_err(self.io_err("sync the header"))?;
        state.header = header;
        state.current_slot = slot;
        state.dirty[target].clear();
        state.header_dirty = false;
        Ok(())
    }

    /// Marks the layer frozen (read-only for good) and commits twice, so that
    /// both header slots say so: a damaged newest slot must not make the
    /// layer writable again through the older one.
    pub fn freeze(&self) -> Result<(), LayerError> {
        self.ensure_writable()?;
        let mut state = self.lock();
        let before = state.header;
        state.header.frozen = true;
        state.header_dirty = true;
        let result = self.commit_locked(&mut state).and_then(|()| {
            state.header_dirty = true;
            self.commit_locked(&mut state)
        });
        if result.is_err() {
            state.header = before;
        }
        result
    }

    /// Takes a writable layer's lock down to shared, after freezing it.
    pub fn downgrade_to_shared(&self) -> Result<(), LayerError> {
        lock_or_busy(self.file(), &self.path, Access::ReadOnly)?;
        self.writable.store(false, Ordering::Relaxed);
        Ok(())
    }
}

/// Reserves the next block of the data area.
fn allocate(state: &mut LayerState, path: &Path) -> Result<u64, LayerError> {
    let offset = state.next_alloc;
    let end = offset + u64::from(state.header.geometry.block_size);
    if end > crate::format::MAX_FILE_SIZE {
        return Err(LayerError::Full {
            path: path.to_path_buf(),
        });
    }
    state.next_alloc = end;
    Ok(offset)
}

/// Reads a layer's current header and parent location without locking it,
/// to walk chains that may be in use (e.g. to see which images share a layer).
pub fn peek(path: &Path) -> Result<(Header, Option<String>), LayerError> {
    let file = File::open(path).map_err(|source| LayerError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let mut slots = [0u8; 2 * HEADER_SLOT_SIZE];
    let got = read_up_to(&file, &mut slots, 0).map_err(|source| LayerError::Io {
        path: path.to_path_buf(),
        op: "read the header",
        source,
    })?;
    let (header, _) = if got < HEADER_SLOT_SIZE {
        Err(HeaderError::Truncated)
    } else {
        choose_header(&slots[..HEADER_SLOT_SIZE], &slots[HEADER_SLOT_SIZE..got])
    }
    .map_err(|source| LayerError::Header {
        path: path.to_path_buf(),
        source,
    })?;
    let location = read_parent_location(&file, &header, path)?;
    Ok((header, location))
}

fn lock_or_busy(file: &File, path: &Path, access: Access) -> Result<(), LayerError> {
    let kind = match access {
        Access::ReadOnly => LockKind::Shared,
        Access::ReadWrite => LockKind::Exclusive,
    };
    lock(file, kind).map_err(|e| match e {
        LockError::Busy(pid) => LayerError::InUse {
            path: path.to_path_buf(),
            pid,
        },
        LockError::Io(source) => LayerError::Io {
            path: path.to_path_buf(),
            op: "lock",
            source,
        },
    })
}

fn read_parent_location(
    file: &File,
    header: &Header,
    path: &Path,
) -> Result<Option<String>, LayerError> {
    let Some(parent) = header.parent else {
        return Ok(None);
    };
    let mut buf = vec![0u8; parent.location_len as usize];
    file.read_exact_at(&mut buf, PARENT_LOCATION_OFFSET)
        .map_err(|_| LayerError::ParentLocation {
            path: path.to_path_buf(),
        })?;
    if checksum(&buf) != parent.location_crc {
        return Err(LayerError::ParentLocation {
            path: path.to_path_buf(),
        });
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| LayerError::ParentLocation {
            path: path.to_path_buf(),
        })
}

/// Reads as much of `buf` as the file holds from `offset`; returns the count.
pub(crate) fn read_up_to(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Copies `len` bytes between files with `copy_file_range`, falling back to
/// reads and writes where the kernel cannot (e.g. across some filesystems).
/// Bytes past the end of `src` are written as zeros.
pub(crate) fn copy_range(
    src: &File,
    mut src_off: u64,
    dst: &File,
    mut dst_off: u64,
    len: u64,
) -> std::io::Result<()> {
    let mut left = len;
    while left > 0 {
        let (mut i, mut o) = (src_off as i64, dst_off as i64);
        // SAFETY: both descriptors are owned by live `File`s; `i` and `o` are valid
        // i64 locations that the kernel updates during the call.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut i,
                dst.as_raw_fd(),
                &mut o,
                left as usize,
                0,
            )
        };
        if n > 0 {
            src_off += n as u64;
            dst_off += n as u64;
            left -= n as u64;
            continue;
        }
        if n == 0 {
            // End of the source: the rest is zeros.
            return dst.write_all_at(&vec![0u8; left as usize], dst_off);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL) => {
                let mut buf = vec![0u8; left as usize];
                let got = read_up_to(src, &mut buf, src_off)?;
                buf[got..].fill(0);
                return dst.write_all_at(&buf, dst_off);
            }
            _ => return Err(err),
        }
    }
    Ok(())
}

/// Frees a data block's disk space; the file keeps its size. Filesystems
/// without hole punching keep the bytes, which is only a space cost.
fn punch_hole(file: &File, offset: u64, len: u64) {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: fallocate(2) on a descriptor this `File` owns; no memory is passed.
    unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )
    };
}

/// Makes a new file's directory entry durable.
pub(crate) fn sync_parent_dir(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(handle) = File::open(dir)
    {
        let _ = handle.sync_all();
    }
}
