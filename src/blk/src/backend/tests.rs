//! The worker loop on a real vring over guest memory, with this test as the
//! driver: requests served, kicks suppressed while the worker polls and
//! re-armed before it sleeps, and a stopped ring ending the spin.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryAtomic, GuestMemoryMmap, VolatileSlice};
use vmm_sys_util::epoll::EventSet;

use super::*;
use crate::request::{DiskLimits, kind, status};

const QUEUE: u16 = 16;
const DESC: u64 = 0x0;
const AVAIL: u64 = 0x1000;
const USED: u64 = 0x2000;
/// `avail_event`, after the used ring's elements.
const AVAIL_EVENT: u64 = USED + 4 + 8 * QUEUE as u64;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

/// A disk of 32 KiB whose byte at `i` is `i / 512` (the sector number).
struct MemDisk(Mutex<Vec<u8>>);

impl Disk for MemDisk {
    fn size(&self) -> u64 {
        32 * 1024
    }
    fn read_to(&self, offset: u64, dst: &VolatileSlice) -> std::io::Result<()> {
        let data = self.0.lock().unwrap();
        dst.copy_from(&data[offset as usize..offset as usize + dst.len()]);
        Ok(())
    }
    fn write_from(&self, offset: u64, src: &VolatileSlice) -> std::io::Result<()> {
        let mut data = self.0.lock().unwrap();
        src.copy_to(&mut data[offset as usize..offset as usize + src.len()]);
        Ok(())
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
}

/// A backend with one queue of 16 on 1 MiB of guest memory, set up as a
/// frontend would, and that memory.
fn started(poll: Duration, event_idx: bool) -> (BlkBackend, VringRwLock, GuestMemoryMmap) {
    let data = (0..32 * 1024).map(|i| (i / 512) as u8).collect();
    let disk = Arc::new(MemDisk(Mutex::new(data)));
    started_on(disk, Aio::Sync, poll, event_idx)
}

/// As [`started`], serving `disk` (of 32 KiB) with `aio`.
fn started_on(
    disk: Arc<dyn Disk>,
    aio: Aio,
    poll: Duration,
    event_idx: bool,
) -> (BlkBackend, VringRwLock, GuestMemoryMmap) {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let atomic = GuestMemoryAtomic::new(mem.clone());
    let vring = VringRwLock::new(atomic.clone(), QUEUE).unwrap();
    vring.set_queue_size(QUEUE);
    vring.set_queue_info(DESC, AVAIL, USED).unwrap();
    vring.set_queue_event_idx(event_idx);
    vring.set_queue_ready(true);
    vring.set_enabled(true);
    let config = DiskConfig {
        limits: DiskLimits {
            capacity_sectors: 64,
            read_only: false,
            max_transfer: 1 << 20,
            max_zero_segments: 1,
            max_zero_sectors: 64,
        },
        size_max: 1 << 20,
        seg_max: 14,
        blk_size: 512,
        opt_io_size: 4096,
        num_queues: 1,
        writeback: true,
    };
    let backend = BlkBackend::new(disk, config, QUEUE, "test", poll, aio).unwrap();
    backend.update_memory(atomic).unwrap();
    backend.set_event_idx(event_idx);
    (backend, vring, mem)
}

fn request_area(n: u16) -> u64 {
    0x10000 + u64::from(n) * 0x1000
}

/// Writes request `n`, a read of sector `n`, into the descriptor table and
/// the available ring, without publishing it.
fn post_read(mem: &GuestMemoryMmap, n: u16) {
    post(mem, n, kind::IN, u64::from(n));
}

/// Writes request `n`, of type `what` (IN or OUT) on the 512 bytes of
/// `sector` at `data_addr(n)`, into the descriptor table and the available
/// ring, without publishing it.
fn post(mem: &GuestMemoryMmap, n: u16, what: u32, sector: u64) {
    let area = request_area(n);
    let mut header = [0u8; 16];
    header[..4].copy_from_slice(&what.to_le_bytes());
    header[8..].copy_from_slice(&sector.to_le_bytes());
    mem.write_slice(&header, GuestAddress(area)).unwrap();
    mem.write_obj(0xffu8, GuestAddress(area + 0x400)).unwrap();
    let head = n * 3 % QUEUE;
    let data_flags = if what == kind::IN {
        F_NEXT | F_WRITE
    } else {
        F_NEXT
    };
    let chain = [
        (area, 16u32, F_NEXT),
        (data_addr(n), 512, data_flags),
        (area + 0x400, 1, F_WRITE),
    ];
    for (i, (addr, len, flags)) in chain.into_iter().enumerate() {
        let index = head + i as u16;
        let mut desc = [0u8; 16];
        desc[..8].copy_from_slice(&addr.to_le_bytes());
        desc[8..12].copy_from_slice(&len.to_le_bytes());
        desc[12..14].copy_from_slice(&flags.to_le_bytes());
        desc[14..].copy_from_slice(&(index + 1).to_le_bytes());
        mem.write_slice(&desc, GuestAddress(DESC + 16 * u64::from(index)))
            .unwrap();
    }
    let slot = AVAIL + 4 + 2 * u64::from(n % QUEUE);
    mem.write_obj(head.to_le(), GuestAddress(slot)).unwrap();
}

/// Where request `n`'s data lies.
fn data_addr(n: u16) -> u64 {
    request_area(n) + 0x100
}

/// Request `n`'s status byte and the used length the device reported for
/// it (requests complete in any order; `n` is found by its head).
fn outcome(mem: &GuestMemoryMmap, n: u16) -> (u8, u32) {
    let head = u32::from(n * 3 % QUEUE);
    let used = read_u16(mem, USED + 2);
    let len = (0..used)
        .map(|i| USED + 4 + 8 * u64::from(i % QUEUE))
        .find(|at| u32::from_le(mem.read_obj(GuestAddress(*at)).unwrap()) == head)
        .map(|at| u32::from_le(mem.read_obj(GuestAddress(at + 4)).unwrap()))
        .unwrap_or_else(|| panic!("request {n} is not in the used ring"));
    let status = mem.read_obj(GuestAddress(request_area(n) + 0x400)).unwrap();
    (status, len)
}

/// Makes the first `idx` posted requests available, as a driver does.
fn publish(mem: &GuestMemoryMmap, idx: u16) {
    mem.store(idx.to_le(), GuestAddress(AVAIL + 2), Ordering::Release)
        .unwrap();
}

fn read_u16(mem: &GuestMemoryMmap, addr: u64) -> u16 {
    u16::from_le(mem.read_obj(GuestAddress(addr)).unwrap())
}

/// Whether a driver that moved the available index from `old` to `new`
/// must kick (virtio 1.2, 2.7.10: `vring_need_event`).
fn driver_must_kick(mem: &GuestMemoryMmap, event_idx: bool, old: u16, new: u16) -> bool {
    if event_idx {
        let event = read_u16(mem, AVAIL_EVENT);
        new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
    } else {
        read_u16(mem, USED) & 1 == 0
    }
}

/// Checks that request `n` completed and read its sector.
fn assert_served(mem: &GuestMemoryMmap, n: u16) {
    let area = request_area(n);
    let status: u8 = mem.read_obj(GuestAddress(area + 0x400)).unwrap();
    assert_eq!(status, status::OK, "request {n}");
    let mut data = [0u8; 512];
    mem.read_slice(&mut data, GuestAddress(data_addr(n)))
        .unwrap();
    assert!(data.iter().all(|b| *b == n as u8), "request {n} data");
}

fn kick(backend: &BlkBackend, vring: &VringRwLock) {
    backend
        .handle_event(0, EventSet::IN, std::slice::from_ref(vring), 0)
        .unwrap();
}

#[test]
fn requests_are_served_and_kicks_armed_again() {
    for event_idx in [false, true] {
        for poll in [Duration::ZERO, Duration::from_micros(50)] {
            let (backend, vring, mem) = started(poll, event_idx);
            post_read(&mem, 0);
            post_read(&mem, 1);
            publish(&mem, 2);
            kick(&backend, &vring);
            assert_eq!(read_u16(&mem, USED + 2), 2, "used index");
            assert_served(&mem, 0);
            assert_served(&mem, 1);
            assert!(
                driver_must_kick(&mem, event_idx, 2, 3),
                "event_idx {event_idx}, poll {poll:?}: the next request would get no kick"
            );
        }
    }
}

#[test]
fn a_request_made_while_the_worker_polls_is_served_without_a_kick() {
    for event_idx in [false, true] {
        let (backend, vring, mem) = started(Duration::from_millis(300), event_idx);
        post_read(&mem, 0);
        publish(&mem, 1);
        let driver_mem = mem.clone();
        let driver = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            post_read(&driver_mem, 1);
            let must_kick = driver_must_kick(&driver_mem, event_idx, 1, 2);
            publish(&driver_mem, 2);
            must_kick
        });
        let began = Instant::now();
        kick(&backend, &vring);
        let must_kick = driver.join().unwrap();
        assert!(began.elapsed() >= Duration::from_millis(30));
        assert!(
            !must_kick,
            "event_idx {event_idx}: kicks were not suppressed"
        );
        assert_eq!(read_u16(&mem, USED + 2), 2, "both served in one wake-up");
        assert_served(&mem, 1);
        assert!(driver_must_kick(&mem, event_idx, 2, 3), "kicks re-armed");
    }
}

#[test]
fn stopping_the_ring_ends_the_spin() {
    let (backend, vring, mem) = started(Duration::from_secs(20), true);
    post_read(&mem, 0);
    publish(&mem, 1);
    let frontend = vring.clone();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        // What GET_VRING_BASE does first.
        frontend.set_queue_ready(false);
    });
    let began = Instant::now();
    kick(&backend, &vring);
    stopper.join().unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "the spin outlived the ring"
    );
    assert_served(&mem, 0);
}

#[test]
fn an_available_index_beyond_the_queue_is_an_error_not_a_spin() {
    // A hostile driver claims 0xffff requests on a queue of 16: the worker
    // must report the queue broken instead of spinning on requests it can
    // never take, with polling on or off, with EVENT_IDX or without.
    for (poll, event_idx) in [
        (Duration::ZERO, true),
        (Duration::ZERO, false),
        (Duration::from_millis(5), false),
        (Duration::from_millis(5), true),
    ] {
        let (backend, vring, mem) = started(poll, event_idx);
        post_read(&mem, 0);
        publish(&mem, 0xffff);
        let result = backend.handle_event(0, EventSet::IN, std::slice::from_ref(&vring), 0);
        if poll.is_zero() && !event_idx {
            // This loop never looks at the ring again: returning is enough.
            continue;
        }
        let error = result.expect_err("a broken ring must be an error");
        assert!(error.to_string().contains("queue is broken"), "{error}");
    }
}

mod io_uring;
