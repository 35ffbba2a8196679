//! A member's data file, optionally read and written with `O_DIRECT`, around
//! the host page cache.
//!
//! A direct member keeps two descriptors of its file: the usual buffered one,
//! which holds the lock and carries all metadata I/O (headers, tables,
//! parent location: small, unaligned, and synced at every commit anyway), and
//! one opened with `O_DIRECT` for data blocks. `O_DIRECT` wants the file
//! offset, the length and the memory address aligned (statx
//! `STATX_DIOALIGN`, typically 512 or 4096 bytes), so each request goes the
//! way its alignment allows:
//!
//! ```text
//!  request                              path
//!  offset, length, memory aligned   ─►  O_DIRECT, straight between the file and the caller
//!  read, anything else              ─►  O_DIRECT into an aligned bounce buffer covering
//!                                       the aligned range around it, then copied out
//!  write, only memory unaligned     ─►  copied into an aligned bounce buffer, O_DIRECT
//!  write, offset or length unaligned ─► the buffered descriptor: the kernel merges the
//!                                       partial block in its page cache, which a
//!                                       read-modify-write here could not do safely
//!                                       against a concurrent write to the same block
//! ```
//!
//! Linux keeps buffered and direct I/O on one file coherent: a direct read
//! or write first writes back cached pages in its range, and a direct write
//! drops them afterwards. A flush (`fdatasync` on either descriptor) makes
//! both kinds durable.

use std::alloc::Layout;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

/// Alignment of every buffer this module allocates: a page, which is at
/// least any memory alignment `O_DIRECT` asks for.
pub const BUFFER_ALIGN: usize = 4096;
/// Largest bounce buffer; longer unaligned requests go in pieces.
const BOUNCE_MAX: usize = 1 << 20;
/// Alignment assumed when the filesystem does not report one.
const FALLBACK_ALIGN: u32 = 4096;

/// The file lives on a filesystem that cannot do direct I/O.
#[derive(Debug, thiserror::Error)]
#[error("{path}: this filesystem does not support direct I/O (O_DIRECT)")]
pub struct DirectIoUnsupported {
    /// The file.
    pub path: PathBuf,
}

/// Why a file could not be opened for direct I/O.
#[derive(Debug)]
pub enum DirectOpenError {
    /// The filesystem cannot do it.
    Unsupported(DirectIoUnsupported),
    /// Opening or probing the file failed.
    Io(io::Error),
}

/// What `O_DIRECT` requires of a request on one file, in bytes (powers of two).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DioAlignment {
    /// Of the memory address.
    pub memory: u32,
    /// Of the file offset and the length.
    pub offset: u32,
}

impl DioAlignment {
    fn offset_fits(self, offset: u64, len: usize) -> bool {
        let mask = u64::from(self.offset) - 1;
        (offset | len as u64) & mask == 0
    }

    fn memory_fits(self, addr: usize) -> bool {
        addr & (self.memory as usize - 1) == 0
    }

    fn fits(self, offset: u64, len: usize, addr: usize) -> bool {
        self.offset_fits(offset, len) && self.memory_fits(addr)
    }
}

#[derive(Debug)]
struct DirectFile {
    file: File,
    align: DioAlignment,
}

/// The file of one chain member as its data is read and written: buffered,
/// or with an `O_DIRECT` twin for data (see the module docs).
#[derive(Debug)]
pub struct DataFile {
    buffered: File,
    direct: Option<DirectFile>,
}

impl DataFile {
    /// Data I/O through `file` and the page cache.
    pub fn buffered(file: File) -> Self {
        Self {
            buffered: file,
            direct: None,
        }
    }

    /// Adds an `O_DIRECT` descriptor of the same file (reopened through
    /// `/proc/self/fd`, so it is the very inode `buffered` names), for reads
    /// and, if `write`, writes. `path` only names the file in errors.
    pub fn with_direct(self, path: &Path, write: bool) -> Result<Self, DirectOpenError> {
        let unsupported = || {
            DirectOpenError::Unsupported(DirectIoUnsupported {
                path: path.to_path_buf(),
            })
        };
        if memory_backed(&self.buffered).map_err(DirectOpenError::Io)? {
            // tmpfs may accept O_DIRECT (Linux 6.6 and later), but its files
            // live in the page cache: there is nothing to bypass.
            return Err(unsupported());
        }
        let align = match dio_alignment(&self.buffered).map_err(DirectOpenError::Io)? {
            Some(Some(align)) => align,
            Some(None) => return Err(unsupported()),
            None => DioAlignment {
                memory: FALLBACK_ALIGN,
                offset: FALLBACK_ALIGN,
            },
        };
        let proc_path = format!("/proc/self/fd/{}", self.buffered.as_raw_fd());
        let file = match OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(libc::O_DIRECT)
            .open(proc_path)
        {
            Ok(file) => file,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Err(unsupported()),
            Err(e) => return Err(DirectOpenError::Io(e)),
        };
        // Some filesystems accept the flag and refuse the I/O: probe once.
        let mut probe = AlignedBuf::zeroed(align.offset as usize);
        // SAFETY: `probe` is a live, exclusively owned buffer of this length.
        match unsafe { pread_full(&file, 0, probe.as_mut_ptr(), probe.len()) } {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Err(unsupported()),
            Err(e) => return Err(DirectOpenError::Io(e)),
        }
        Ok(Self {
            buffered: self.buffered,
            direct: Some(DirectFile { file, align }),
        })
    }

    /// The buffered descriptor: for metadata, locks, syncs and hole punching.
    pub fn file(&self) -> &File {
        &self.buffered
    }

    /// Whether data goes around the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// The descriptor through which `len` bytes at `offset` can be read
    /// (or, if `write`, written) to or from memory at `addr` by one plain
    /// `pread`/`pwrite` of the caller's own, as [`DataFile::read_raw`] and
    /// [`DataFile::write_raw`] would do them; `None` if only a bounce buffer
    /// can (direct I/O with `addr` out of alignment, or an unaligned read).
    pub fn plain_fd(&self, offset: u64, len: usize, addr: usize, write: bool) -> Option<RawFd> {
        let Some(direct) = &self.direct else {
            return Some(self.buffered.as_raw_fd());
        };
        if write && !direct.align.offset_fits(offset, len) {
            // As `write_raw`: what direct I/O cannot take goes through the cache.
            return Some(self.buffered.as_raw_fd());
        }
        direct
            .align
            .fits(offset, len, addr)
            .then(|| direct.file.as_raw_fd())
    }

    /// Reads up to `len` bytes at `offset` into `dst` and returns how many
    /// were read: fewer only at the end of the file.
    ///
    /// # Safety
    /// `dst` must be valid for writes of `len` bytes for the whole call.
    pub unsafe fn read_raw(&self, offset: u64, dst: *mut u8, len: usize) -> io::Result<usize> {
        let Some(direct) = &self.direct else {
            // SAFETY: forwarded from the caller.
            return unsafe { pread_full(&self.buffered, offset, dst, len) };
        };
        if direct.align.fits(offset, len, dst as usize) {
            // SAFETY: forwarded from the caller.
            return unsafe { self.read_direct(direct, offset, dst, len) };
        }
        let align = u64::from(direct.align.offset);
        let mut done = 0usize;
        while done < len {
            let pos = offset + done as u64;
            let start = pos & !(align - 1);
            let want = (len - done).min(BOUNCE_MAX);
            let end = (pos + want as u64).next_multiple_of(align);
            let mut bounce = AlignedBuf::zeroed((end - start) as usize);
            // SAFETY: `bounce` is a live, exclusively owned buffer of this length.
            let got =
                unsafe { self.read_direct(direct, start, bounce.as_mut_ptr(), bounce.len()) }?;
            let skip = (pos - start) as usize;
            let useful = got.saturating_sub(skip).min(want);
            // SAFETY: `done + useful <= len`, inside the caller's buffer; `bounce`
            // holds `skip + useful <= got` initialised bytes and does not overlap it.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bounce[skip..].as_ptr(),
                    dst.wrapping_add(done),
                    useful,
                )
            };
            done += useful;
            if useful < want {
                break;
            }
        }
        Ok(done)
    }

    /// Direct reads of an aligned request; a short read (the end of the
    /// file) leaves an unaligned rest, which the buffered descriptor reads.
    ///
    /// # Safety
    /// `dst` must be valid for writes of `len` bytes.
    unsafe fn read_direct(
        &self,
        direct: &DirectFile,
        offset: u64,
        dst: *mut u8,
        len: usize,
    ) -> io::Result<usize> {
        let mut got = 0usize;
        while got < len {
            let (pos, at) = (offset + got as u64, dst.wrapping_add(got));
            if !direct.align.fits(pos, len - got, at as usize) {
                // SAFETY: `got < len`: the rest lies inside the caller's buffer.
                return Ok(got + unsafe { pread_full(&self.buffered, pos, at, len - got) }?);
            }
            // SAFETY: as above.
            match unsafe { pread_once(&direct.file, pos, at, len - got) }? {
                0 => break,
                n => got += n,
            }
        }
        Ok(got)
    }

    /// Writes `len` bytes from `src` at `offset`.
    ///
    /// # Safety
    /// `src` must be valid for reads of `len` bytes for the whole call.
    pub unsafe fn write_raw(&self, offset: u64, src: *const u8, len: usize) -> io::Result<()> {
        let direct = match &self.direct {
            Some(direct) if direct.align.offset_fits(offset, len) => direct,
            // SAFETY: forwarded from the caller.
            _ => return unsafe { pwrite_all(&self.buffered, offset, src, len) },
        };
        if direct.align.memory_fits(src as usize) {
            // SAFETY: forwarded from the caller.
            return unsafe { self.write_direct(direct, offset, src, len) };
        }
        let mut done = 0usize;
        while done < len {
            let n = (len - done).min(BOUNCE_MAX);
            let mut bounce = AlignedBuf::zeroed(n);
            // SAFETY: `done + n <= len`, inside the caller's buffer; `bounce` is a
            // separate allocation of `n` bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(src.wrapping_add(done), bounce.as_mut_ptr(), n)
            };
            // SAFETY: `bounce` holds `n` readable bytes.
            unsafe { self.write_direct(direct, offset + done as u64, bounce.as_ptr(), n) }?;
            done += n;
        }
        Ok(())
    }

    /// Direct writes while the request stays aligned; whatever rest a short
    /// write leaves unaligned goes through the buffered descriptor.
    ///
    /// # Safety
    /// `src` must be valid for reads of `len` bytes.
    unsafe fn write_direct(
        &self,
        direct: &DirectFile,
        offset: u64,
        src: *const u8,
        len: usize,
    ) -> io::Result<()> {
        let mut done = 0usize;
        while done < len {
            let (pos, at) = (offset + done as u64, src.wrapping_add(done));
            if !direct.align.fits(pos, len - done, at as usize) {
                // SAFETY: `done < len`: the rest lies inside the caller's buffer.
                return unsafe { pwrite_all(&self.buffered, pos, at, len - done) };
            }
            // SAFETY: as above.
            done += unsafe { pwrite_once(&direct.file, pos, at, len - done) }?;
        }
        Ok(())
    }
}

/// Whether `file` lives on a memory filesystem (tmpfs, ramfs).
#[allow(clippy::unnecessary_cast)] // f_type and the magic numbers differ in type between libcs
fn memory_backed(file: &File) -> io::Result<bool> {
    // SAFETY: an all-zero statfs is a valid value for fstatfs to overwrite.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs(2) on a descriptor `file` owns, writing into `fs`.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut fs) } != 0 {
        return Err(io::Error::last_os_error());
    }
    /// ramfs's magic number (linux/magic.h), which libc does not export.
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    let kind = fs.f_type as i64;
    Ok([libc::TMPFS_MAGIC as i64, RAMFS_MAGIC].contains(&kind))
}

/// The filesystem's direct I/O alignment for `file`: `None` if it does not
/// say, `Some(None)` if it says direct I/O is not supported.
fn dio_alignment(file: &File) -> io::Result<Option<Option<DioAlignment>>> {
    // SAFETY: an all-zero statx is a valid value for statx to overwrite.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: statx(2) on a descriptor `file` owns (AT_EMPTY_PATH with an
    // empty, NUL-terminated path), writing into `stx`.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        // Kernels before 4.11 have no statx at all.
        return if e.raw_os_error() == Some(libc::ENOSYS) {
            Ok(None)
        } else {
            Err(e)
        };
    }
    if stx.stx_mask & libc::STATX_DIOALIGN == 0 {
        return Ok(None);
    }
    let (memory, offset) = (stx.stx_dio_mem_align, stx.stx_dio_offset_align);
    if memory == 0 || offset == 0 {
        return Ok(Some(None));
    }
    Ok(Some(Some(DioAlignment {
        memory: memory.next_power_of_two(),
        offset: offset.next_power_of_two(),
    })))
}

/// One `pread`, retried on EINTR.
///
/// # Safety
/// `dst` must be valid for writes of `len` bytes.
unsafe fn pread_once(file: &File, offset: u64, dst: *mut u8, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: the caller guarantees `dst..dst+len` is writable.
        let n = unsafe { libc::pread(file.as_raw_fd(), dst.cast(), len, offset as libc::off_t) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Reads until `len` bytes or the end of the file; returns the count.
///
/// # Safety
/// `dst` must be valid for writes of `len` bytes.
pub(crate) unsafe fn pread_full(
    file: &File,
    offset: u64,
    dst: *mut u8,
    len: usize,
) -> io::Result<usize> {
    let mut got = 0usize;
    while got < len {
        let at = dst.wrapping_add(got);
        // SAFETY: `got < len`: `at` and the rest lie inside the caller's buffer.
        match unsafe { pread_once(file, offset + got as u64, at, len - got) }? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// One `pwrite`, retried on EINTR; a write of nothing is an error.
///
/// # Safety
/// `src` must be valid for reads of `len` bytes.
unsafe fn pwrite_once(file: &File, offset: u64, src: *const u8, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: the caller guarantees `src..src+len` is readable.
        let n = unsafe { libc::pwrite(file.as_raw_fd(), src.cast(), len, offset as libc::off_t) };
        if n > 0 {
            return Ok(n as usize);
        }
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Writes all `len` bytes.
///
/// # Safety
/// `src` must be valid for reads of `len` bytes.
unsafe fn pwrite_all(file: &File, offset: u64, src: *const u8, len: usize) -> io::Result<()> {
    let mut done = 0usize;
    while done < len {
        let at = src.wrapping_add(done);
        // SAFETY: `done < len`: `at` and the rest lie inside the caller's buffer.
        done += unsafe { pwrite_once(file, offset + done as u64, at, len - done) }?;
    }
    Ok(())
}

/// A zeroed heap buffer aligned to [`BUFFER_ALIGN`], usable for `O_DIRECT`
/// I/O of any length the filesystem accepts.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

impl AlignedBuf {
    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> Self {
        if len == 0 {
            return Self {
                ptr: NonNull::dangling(),
                len,
            };
        }
        let layout = Self::layout(len);
        // SAFETY: `layout` has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            std::alloc::handle_alloc_error(layout)
        };
        Self { ptr, len }
    }

    fn layout(len: usize) -> Layout {
        Layout::from_size_align(len, BUFFER_ALIGN)
            .unwrap_or_else(|_| panic!("buffer of {len} bytes is too large"))
    }

    /// Its length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Its start, for reading.
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// Its start, for writing.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `len` initialised (zeroed, then written)
        // bytes, or dangling and well aligned with `len == 0`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `deref`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: allocated in `zeroed` with this very layout.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.len)) };
        }
    }
}

// SAFETY: the buffer owns its allocation exclusively, like a `Vec<u8>`.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only reads, like `&Vec<u8>`.
unsafe impl Sync for AlignedBuf {}

#[cfg(test)]
mod tests;
