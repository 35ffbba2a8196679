//! Queues served through io_uring: requests on a real layered image on
//! real files go to the kernel and complete from its completion queue;
//! what has no plan (copy-ups, a disk without plans) is served on the spot
//! in the same loop; failed and short I/O gets the status it must.

use std::os::fd::AsRawFd;
use std::path::Path;

use strata_storage::format::ParentKind;
use strata_storage::{Access, Image, LayerFile, ParentSpec, Piece};

use super::*;
use crate::image_disk::ImageDisk;

const DISK: usize = 32 * 1024;
const BLOCK: u32 = 4096;

/// A golden raw base whose byte at `i` is `i / 512` (like `MemDisk`), under
/// one empty top layer with 4 KiB blocks.
fn layered(dir: &Path) -> Image {
    let raw = dir.join("golden.raw");
    let data: Vec<u8> = (0..DISK).map(|i| (i / 512) as u8).collect();
    std::fs::write(&raw, data).unwrap();
    let top = dir.join("top.strata");
    let spec = ParentSpec {
        kind: ParentKind::Raw,
        id: uuid::Uuid::nil(),
        size: DISK as u64,
        location: "golden.raw".into(),
    };
    LayerFile::create(&top, DISK as u64, BLOCK, Some(&spec)).unwrap();
    Image::open(&top, Access::ReadWrite).unwrap()
}

fn data_of(mem: &GuestMemoryMmap, n: u16) -> [u8; 512] {
    let mut data = [0u8; 512];
    mem.read_slice(&mut data, GuestAddress(data_addr(n)))
        .unwrap();
    data
}

#[test]
fn a_disk_without_plans_is_served_on_the_spot_by_the_async_loop() {
    for event_idx in [false, true] {
        for poll in [Duration::ZERO, Duration::from_micros(50)] {
            let data = (0..DISK).map(|i| (i / 512) as u8).collect();
            let disk = Arc::new(MemDisk(Mutex::new(data)));
            let (backend, vring, mem) = started_on(disk, Aio::IoUring, poll, event_idx);
            assert!(backend.is_async(), "io_uring is available here");
            for n in 0..3 {
                post_read(&mem, n);
            }
            publish(&mem, 3);
            kick(&backend, &vring);
            assert_eq!(read_u16(&mem, USED + 2), 3);
            (0..3).for_each(|n| assert_served(&mem, n));
            assert!(driver_must_kick(&mem, event_idx, 3, 4), "kicks re-armed");
        }
    }
}

#[test]
fn reads_follow_the_chain_and_writes_land_in_the_top_layer() {
    let dir = tempfile::tempdir().unwrap();
    let image = layered(dir.path());
    // Block 1 (sectors 8-15) now lives in the top layer; block 2 (16-23)
    // reads as zeros.
    image
        .write_at(u64::from(BLOCK), &[0xaa; BLOCK as usize])
        .unwrap();
    image
        .write_zeroes(2 * u64::from(BLOCK), u64::from(BLOCK))
        .unwrap();
    let disk = Arc::new(ImageDisk::new(image));
    let (backend, vring, mem) = started_on(disk.clone(), Aio::IoUring, Duration::ZERO, true);
    assert!(backend.is_async());
    // Reads from the base, the top layer and zeros; a write in place into
    // the top layer (planned) and one that needs a copy-up (not planned),
    // all in one batch.
    for (n, sector) in [(0u16, 3u64), (1, 9), (2, 17)] {
        post(&mem, n, kind::IN, sector);
    }
    mem.write_slice(&[0x11; 512], GuestAddress(data_addr(3)))
        .unwrap();
    post(&mem, 3, kind::OUT, 12);
    mem.write_slice(&[0x22; 512], GuestAddress(data_addr(4)))
        .unwrap();
    post(&mem, 4, kind::OUT, 30);
    publish(&mem, 5);
    kick(&backend, &vring);

    assert_eq!(read_u16(&mem, USED + 2), 5);
    for (n, byte) in [(0u16, 3u8), (1, 0xaa), (2, 0)] {
        assert_eq!(outcome(&mem, n), (status::OK, 513), "read {n}");
        assert!(data_of(&mem, n).iter().all(|b| *b == byte), "read {n} data");
    }
    for n in [3, 4] {
        assert_eq!(outcome(&mem, n), (status::OK, 1), "write {n}");
    }
    let image = disk.image();
    let mut back = [0u8; 512];
    image.read_at(12 * 512, &mut back).unwrap();
    assert_eq!(back, [0x11; 512]);
    image.read_at(30 * 512, &mut back).unwrap();
    assert_eq!(back, [0x22; 512]);
    assert!(
        matches!(
            image.source(3),
            strata_storage::BlockSource::Member { index: 1, .. }
        ),
        "the copy-up moved block 3 into the top layer"
    );
}

#[test]
fn a_read_the_kernel_cuts_short_is_finished_with_the_files_end_as_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let image = layered(dir.path());
    let disk = Arc::new(ImageDisk::new(image));
    // Someone truncates the golden base under the running backend: reads
    // past its new end come back short (here: empty).
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("golden.raw"))
        .unwrap()
        .set_len(20 * 512 + 100)
        .unwrap();
    let (backend, vring, mem) = started_on(disk, Aio::IoUring, Duration::ZERO, false);
    assert!(backend.is_async());
    post(&mem, 0, kind::IN, 20);
    post(&mem, 1, kind::IN, 40);
    publish(&mem, 2);
    kick(&backend, &vring);
    assert_eq!(outcome(&mem, 0), (status::OK, 513));
    let data = data_of(&mem, 0);
    assert!(data[..100].iter().all(|b| *b == 20) && data[100..].iter().all(|b| *b == 0));
    assert_eq!(outcome(&mem, 1), (status::OK, 513));
    assert_eq!(data_of(&mem, 1), [0; 512]);
}

/// A memory disk whose plans come from `F` (offset, length, pieces out;
/// false: no plan), so a test can send requests wherever it likes.
struct Planned<F>(MemDisk, F);

impl<F> Disk for Planned<F>
where
    F: Fn(u64, usize, &mut Vec<Piece>) -> bool + Send + Sync + 'static,
{
    fn size(&self) -> u64 {
        self.0.size()
    }
    fn read_to(&self, offset: u64, dst: &VolatileSlice) -> std::io::Result<()> {
        self.0.read_to(offset, dst)
    }
    fn write_from(&self, offset: u64, src: &VolatileSlice) -> std::io::Result<()> {
        self.0.write_from(offset, src)
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn discard(&self, _: u64, _: u64) -> std::io::Result<()> {
        Ok(())
    }
    fn write_zeroes(&self, _: u64, _: u64) -> std::io::Result<()> {
        Ok(())
    }
    fn plan(
        &self,
        _write: bool,
        offset: u64,
        len: usize,
        _addr: usize,
        out: &mut Vec<Piece>,
    ) -> std::io::Result<bool> {
        Ok((self.1)(offset, len, out))
    }
}

#[test]
fn a_failed_operation_fails_its_request_only() {
    let dir = tempfile::tempdir().unwrap();
    let data = (0..DISK).map(|i| (i / 512) as u8).collect();
    // Sector 1 is planned onto a descriptor that cannot be read (a
    // directory); the rest has no plan and is served on the spot.
    let unreadable = std::fs::File::open(dir.path()).unwrap();
    let disk = Arc::new(Planned(
        MemDisk(Mutex::new(data)),
        move |offset, len, out: &mut Vec<Piece>| {
            if offset != 512 {
                return false;
            }
            out.push(Piece::Io {
                fd: unreadable.as_raw_fd(),
                offset: 0,
                len,
            });
            true
        },
    ));
    let (backend, vring, mem) = started_on(disk, Aio::IoUring, Duration::ZERO, true);
    assert!(backend.is_async());
    for n in 0..3 {
        post_read(&mem, n);
    }
    publish(&mem, 3);
    kick(&backend, &vring);
    assert_eq!(read_u16(&mem, USED + 2), 3);
    assert_eq!(outcome(&mem, 1), (status::IOERR, 1));
    assert_served(&mem, 0);
    assert_served(&mem, 2);
}

#[test]
fn stopping_a_ring_waits_for_the_requests_in_flight() {
    use std::io::Write;

    let (reader, mut writer) = std::io::pipe().unwrap();
    // Every read is planned onto the pipe (which has no offsets: io_uring
    // reads it from where it is), so it stays in flight until the test
    // writes.
    let disk = Arc::new(Planned(
        MemDisk(Mutex::new(vec![0; DISK])),
        move |_, len, out: &mut Vec<Piece>| {
            out.push(Piece::Io {
                fd: reader.as_raw_fd(),
                offset: 0,
                len,
            });
            true
        },
    ));
    let (backend, vring, mem) = started_on(disk, Aio::IoUring, Duration::ZERO, true);
    assert!(backend.is_async());
    // Two requests: a lone one would be served on the spot, not by io_uring.
    post_read(&mem, 0);
    post_read(&mem, 1);
    publish(&mem, 2);
    let worker = {
        let (backend, vring) = (backend.clone(), vring.clone());
        std::thread::spawn(move || kick(&backend, &vring))
    };
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(read_u16(&mem, USED + 2), 0, "the reads wait for the pipe");
    // What GET_VRING_BASE does.
    vring.set_queue_ready(false);
    let (stopped_tx, stopped) = std::sync::mpsc::channel();
    let stopper = {
        let (backend, mem) = (backend.clone(), mem.clone());
        std::thread::spawn(move || {
            backend.stop_vring(0).unwrap();
            // What the frontend would find in the used ring now.
            stopped_tx.send(read_u16(&mem, USED + 2)).unwrap();
        })
    };
    assert!(
        stopped.recv_timeout(Duration::from_millis(100)).is_err(),
        "stop_vring returned with a request in flight"
    );
    writer.write_all(&[0x5a; 1024]).unwrap();
    assert_eq!(
        stopped.recv_timeout(Duration::from_secs(10)).unwrap(),
        2,
        "the requests completed before the ring was handed back"
    );
    stopper.join().unwrap();
    worker.join().unwrap();
    for n in 0..2 {
        assert_eq!(outcome(&mem, n), (status::OK, 513));
        assert_eq!(data_of(&mem, n), [0x5a; 512]);
    }
}
