#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::os::fd::AsRawFd;

use super::*;

/// A scratch directory on a filesystem that does direct I/O: the system's
/// temporary directory, or, if that is a memory filesystem, the directory
/// of this test binary (inside the target directory).
fn direct_capable_dir() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let probe = File::open(tmp.path()).unwrap();
    if !memory_backed(&probe).unwrap() {
        return tmp;
    }
    let exe = std::env::current_exe().unwrap();
    tempfile::tempdir_in(exe.parent().unwrap()).unwrap()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
}

fn direct_file(dir: &Path, contents: &[u8]) -> (PathBuf, DataFile) {
    let path = dir.join("data");
    File::create(&path).unwrap().write_all(contents).unwrap();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let data = DataFile::buffered(file).with_direct(&path, true).unwrap();
    assert!(data.is_direct());
    (path, data)
}

fn read(data: &DataFile, offset: u64, len: usize, misalign: usize) -> Vec<u8> {
    let mut buf = AlignedBuf::zeroed(len + misalign);
    // SAFETY: the buffer holds `misalign + len` bytes.
    let got = unsafe { data.read_raw(offset, buf[misalign..].as_mut_ptr(), len) }.unwrap();
    buf[misalign..misalign + got].to_vec()
}

fn write(data: &DataFile, offset: u64, bytes: &[u8], misalign: usize) {
    let mut buf = AlignedBuf::zeroed(bytes.len() + misalign);
    buf[misalign..].copy_from_slice(bytes);
    // SAFETY: the buffer holds `misalign + bytes.len()` bytes.
    unsafe { data.write_raw(offset, buf[misalign..].as_ptr(), bytes.len()) }.unwrap();
}

/// Pages of `file` in the page cache (mincore over a mapping of it).
fn resident_pages(file: &File, len: usize) -> usize {
    // SAFETY: a fresh shared read-only mapping of `len` bytes of `file`; no
    // Rust reference into it is made, and it is unmapped below.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED);
    let pages = len.div_ceil(4096);
    let mut vec = vec![0u8; pages];
    // SAFETY: `map` is a mapping of `len` bytes; `vec` has one byte per page.
    assert_eq!(unsafe { libc::mincore(map, len, vec.as_mut_ptr()) }, 0);
    // SAFETY: unmapping the mapping made above.
    unsafe { libc::munmap(map, len) };
    vec.iter().filter(|b| *b & 1 == 1).count()
}

#[test]
fn aligned_and_unaligned_reads_return_the_files_bytes() {
    let dir = direct_capable_dir();
    let contents = pattern(64 * 1024 + 700);
    let (_path, data) = direct_file(dir.path(), &contents);
    for (offset, len, misalign) in [
        (0u64, 8192usize, 0usize),
        (4096, 4096, 512),
        (512, 1024, 0),
        (100, 333, 3),
        (60 * 1024, 4096, 1),
    ] {
        let at = offset as usize;
        assert_eq!(
            read(&data, offset, len, misalign),
            contents[at..at + len],
            "read of {len} at {offset}, memory off by {misalign}"
        );
    }
    // Past the end of the file: a short read, whatever the alignment.
    assert_eq!(read(&data, 64 * 1024, 8192, 0), contents[64 * 1024..]);
    assert_eq!(
        read(&data, 64 * 1024 + 10, 8192, 5),
        contents[64 * 1024 + 10..]
    );
    assert!(read(&data, 1 << 20, 4096, 0).is_empty());
}

#[test]
fn writes_of_any_alignment_land_and_read_back() {
    let dir = direct_capable_dir();
    let mut model = vec![0u8; 256 * 1024];
    let (path, data) = direct_file(dir.path(), &model);
    for (i, (offset, len, misalign)) in [
        (0u64, 65536usize, 0usize), // aligned: straight from memory
        (65536, 8192, 7),           // memory unaligned: bounce buffer
        (4096 + 512, 1536, 0),      // offset unaligned for 4 KiB sectors
        (100_000, 77, 1),           // nothing aligned: buffered descriptor
        (200_704, 2 << 20, 0),      // extends the file
    ]
    .into_iter()
    .enumerate()
    {
        let bytes: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8 | 1).collect();
        write(&data, offset, &bytes, misalign);
        let end = offset as usize + len;
        if model.len() < end {
            model.resize(end, 0);
        }
        model[offset as usize..end].copy_from_slice(&bytes);
    }
    assert_eq!(read(&data, 0, model.len(), 0), model);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        model,
        "the buffered view agrees"
    );
}

#[test]
fn direct_reads_leave_the_page_cache_alone() {
    let dir = direct_capable_dir();
    let len = 1 << 20;
    let (_path, data) = direct_file(dir.path(), &pattern(len));
    data.file().sync_all().unwrap();
    // SAFETY: posix_fadvise on a descriptor `data` owns; it reads no memory.
    unsafe { libc::posix_fadvise(data.file().as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(resident_pages(data.file(), len), 0, "the cache was dropped");
    assert_eq!(read(&data, 0, len, 0), pattern(len));
    assert_eq!(
        resident_pages(data.file(), len),
        0,
        "direct reads went through the page cache"
    );
}

#[test]
fn memory_filesystems_are_refused_with_the_files_name() {
    let shm = Path::new("/dev/shm");
    let Ok(dir) = tempfile::tempdir_in(shm) else {
        eprintln!("skipping: no /dev/shm");
        return;
    };
    if !memory_backed(&File::open(dir.path()).unwrap()).unwrap() {
        eprintln!("skipping: /dev/shm is not a memory filesystem here");
        return;
    }
    let path = dir.path().join("x.layer");
    std::fs::write(&path, [0u8; 4096]).unwrap();
    let err = DataFile::buffered(File::open(&path).unwrap())
        .with_direct(&path, false)
        .unwrap_err();
    let DirectOpenError::Unsupported(err) = err else {
        panic!("expected Unsupported, got {err:?}");
    };
    assert_eq!(
        err.to_string(),
        format!(
            "{}: this filesystem does not support direct I/O (O_DIRECT)",
            path.display()
        )
    );
}

#[test]
fn alignment_checks() {
    let align = DioAlignment {
        memory: 512,
        offset: 4096,
    };
    assert!(align.fits(8192, 4096, 0x1000_0200));
    assert!(!align.fits(8192 + 512, 4096, 0x1000_0000));
    assert!(!align.fits(8192, 512, 0x1000_0000));
    assert!(!align.fits(8192, 4096, 0x1000_0001));
    let buf = AlignedBuf::zeroed(10);
    assert_eq!(buf.as_ptr() as usize % BUFFER_ALIGN, 0);
    assert!(buf.iter().all(|b| *b == 0));
    assert!(AlignedBuf::zeroed(0).is_empty());
}
