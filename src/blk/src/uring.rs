//! Serving a queue's reads and writes with asynchronous I/O (io_uring).
//!
//! Each queue has its own ring. A drain takes every request the driver has
//! made available, plans its reads and writes ([`Disk::plan`]), puts them
//! all on the submission queue and hands them to the kernel in one system
//! call; requests complete, and go to the used ring, as their I/O finishes,
//! so a queue keeps many requests in flight on one thread:
//!
//! ```text
//!  avail ring ─► parse ─► plan ─► SQEs ──io_uring_enter──► kernel
//!                  │ no plan (copy-up, flush, discard, ...)     │
//!                  ▼                                            ▼
//!            done at once (sync)                         CQEs: status byte,
//!                  └───────────────► used ring ◄──────────── used length
//! ```
//!
//! Guest memory is written and read by the kernel after the submitting
//! call returns, so the executor owns a reference to the memory map for as
//! long as anything is in flight, and does not let go of it (even when
//! dropped on an error path) before the kernel has finished with every
//! buffer; if it cannot tell, it leaks the map rather than unmap memory the
//! kernel may still write.
//!
//! A read that comes back short (the end of a raw base) or a write that
//! does is finished synchronously through [`Disk::read_to`] and
//! [`Disk::write_from`], which fill in zeros or retry.

use std::io;
use std::sync::Arc;

use io_uring::{IoUring, opcode, squeue, types};
use slab::Slab;
use strata_storage::Piece;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::disk::Disk;
use crate::request::{Operation, Request, Segment, status};

/// Submission queue entries per ring (the completion queue is twice that).
const RING_ENTRIES: u32 = 256;
/// Most operations in flight on a ring: no more than its completion queue holds.
const MAX_OPS: usize = 2 * RING_ENTRIES as usize;
/// Most requests in flight on a ring.
const MAX_REQUESTS: usize = 1024;
/// Every other operation of at least this many bytes is handed to
/// io_uring's worker threads at once instead of being tried inline first.
const ASYNC_MIN: usize = 64 << 10;

/// How a disk's queues do their reads and writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Aio {
    /// Asynchronously, through an io_uring per queue (falling back to
    /// `Sync` where the kernel refuses io_uring).
    #[default]
    IoUring,
    /// One `pread`/`pwrite` at a time per thread.
    Sync,
}

/// A queue's io_uring instance, kept across drains.
pub struct QueueUring(IoUring);

impl QueueUring {
    /// A new ring; fails where the kernel has no io_uring or forbids it.
    ///
    /// Its kernel worker threads (which take the large copies, and what
    /// cannot be done without blocking) are limited to one per host core
    /// but one: more only queue up behind each other on the cores and
    /// stretch the tail latency.
    pub fn new() -> io::Result<Self> {
        let ring = IoUring::new(RING_ENTRIES)?;
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let workers = u32::try_from(cores.saturating_sub(1).max(1)).unwrap_or(1);
        // Kernels before 5.15 cannot limit them; that costs only latency.
        if let Err(e) = ring
            .submitter()
            .register_iowq_max_workers(&mut [workers, workers])
        {
            log::debug!("cannot limit io_uring's workers: {e}");
        }
        Ok(Self(ring))
    }

    /// A ring for a queue that asked for `aio`: `None` for synchronous I/O,
    /// asked for or because the kernel refuses io_uring (said once per
    /// process).
    pub fn for_queue(aio: Aio) -> Option<Self> {
        static REFUSED: std::sync::Once = std::sync::Once::new();
        match aio {
            Aio::Sync => None,
            Aio::IoUring => match Self::new() {
                Ok(ring) => Some(ring),
                Err(e) => {
                    REFUSED.call_once(|| {
                        log::warn!("io_uring is not available ({e}); serving with synchronous I/O")
                    });
                    None
                }
            },
        }
    }
}

/// A request with I/O in flight.
struct InFlight {
    head: u16,
    status: GuestAddress,
    /// Operations not yet completed.
    ops: usize,
    failed: bool,
    /// Used length to report on success.
    used: u32,
}

/// One read or write of a request.
struct Op {
    request: usize,
    disk_offset: u64,
    guest: GuestAddress,
    len: usize,
    write: bool,
}

/// Where one planned piece of a request goes in guest memory.
struct Placed {
    piece: Piece,
    disk_offset: u64,
    guest: GuestAddress,
    host: *mut u8,
}

/// Carries out requests on one queue's ring during a drain.
pub struct Executor<'a> {
    ring: &'a mut IoUring,
    mem: Arc<GuestMemoryMmap>,
    disk: &'a dyn Disk,
    requests: Slab<InFlight>,
    ops: Slab<Op>,
    /// Entries pushed since the last submission.
    unsubmitted: bool,
    /// Whether the last large operation went to the kernel's workers.
    large: bool,
    placed: Vec<Placed>,
    pieces: Vec<Piece>,
    /// Requests completed since the caller last took them: (head, used length).
    completed: Vec<(u16, u32)>,
}

impl<'a> Executor<'a> {
    /// An executor on `uring` for requests whose buffers lie in `mem`.
    pub fn new(uring: &'a mut QueueUring, mem: Arc<GuestMemoryMmap>, disk: &'a dyn Disk) -> Self {
        Self {
            ring: &mut uring.0,
            mem,
            disk,
            requests: Slab::new(),
            ops: Slab::new(),
            unsubmitted: false,
            large: false,
            placed: Vec::new(),
            pieces: Vec::new(),
            completed: Vec::new(),
        }
    }

    /// Whether another request may be started.
    pub fn has_room(&self) -> bool {
        self.requests.len() < MAX_REQUESTS
    }

    /// Whether nothing is in flight.
    pub fn idle(&self) -> bool {
        self.requests.is_empty()
    }

    /// Records a request served some other way as complete.
    pub fn complete_now(&mut self, head: u16, used: u32) {
        self.completed.push((head, used));
    }

    /// Whether requests have completed that the caller has not taken.
    pub fn has_completed(&self) -> bool {
        !self.completed.is_empty()
    }

    /// Requests completed since the last call, to be put on the used ring.
    pub fn take_completed(&mut self) -> std::vec::Drain<'_, (u16, u32)> {
        self.completed.drain(..)
    }

    /// Starts `request` (chain `head`) if it is a read, or a write with
    /// `writes` allowed, that the disk can plan. `Ok(false)`: the caller
    /// must serve it synchronously; nothing was done.
    pub fn start(&mut self, head: u16, request: &Request, writes: bool) -> io::Result<bool> {
        let (offset, data, write) = match &request.operation {
            Operation::Read { offset, data } => (*offset, data, false),
            Operation::Write { offset, data } if writes => (*offset, data, true),
            _ => return Ok(false),
        };
        if !self.plan(offset, data, write) {
            return Ok(false);
        }
        let data_len: u64 = data.iter().map(|s| s.len).sum();
        let used = if write {
            1
        } else {
            u32::try_from(data_len)
                .unwrap_or(u32::MAX)
                .saturating_add(1)
        };
        let ios = self
            .placed
            .iter()
            .filter(|p| matches!(p.piece, Piece::Io { .. }))
            .count();
        let id = self.requests.insert(InFlight {
            head,
            status: request.status,
            ops: ios,
            failed: false,
            used,
        });
        let placed = std::mem::take(&mut self.placed);
        let mut left = ios;
        let mut result = Ok(true);
        for p in &placed {
            let (fd, offset, len) = match p.piece {
                Piece::Zeros { len } => {
                    // SAFETY: `host` points at `len` bytes of guest memory
                    // (checked by `plan`), mapped while `self.mem` lives.
                    unsafe { std::ptr::write_bytes(p.host, 0, len) };
                    continue;
                }
                Piece::Io { fd, offset, len } => (types::Fd(fd), offset, len),
            };
            let entry = if write {
                opcode::Write::new(fd, p.host.cast_const(), len as u32)
                    .offset(offset)
                    .build()
            } else {
                opcode::Read::new(fd, p.host, len as u32)
                    .offset(offset)
                    .build()
            };
            // Every other large copy goes to the kernel's workers, so that
            // they and this thread copy in parallel.
            let entry = if len >= ASYNC_MIN {
                self.large = !self.large;
                if self.large {
                    entry.flags(squeue::Flags::ASYNC)
                } else {
                    entry
                }
            } else {
                entry
            };
            let op = Op {
                request: id,
                disk_offset: p.disk_offset,
                guest: p.guest,
                len,
                write,
            };
            if let Err(e) = self.push(op, entry) {
                // The ring is broken: what was not pushed will never complete.
                let request = &mut self.requests[id];
                request.failed = true;
                request.ops -= left;
                result = Err(e);
                break;
            }
            left -= 1;
        }
        self.placed = placed;
        self.placed.clear();
        if self.requests[id].ops == 0 {
            self.finish(id);
        }
        result
    }

    /// Plans every segment of a read or write into `self.placed`; false if
    /// the disk has no plan for one of them (or a segment left guest memory,
    /// which the synchronous path reports).
    fn plan(&mut self, offset: u64, data: &[Segment], write: bool) -> bool {
        self.placed.clear();
        let mut disk_offset = offset;
        for seg in data {
            let Ok(len) = usize::try_from(seg.len) else {
                return false;
            };
            let Ok(slice) = self.mem.get_slice(seg.addr, len) else {
                return false;
            };
            let host = slice.ptr_guard_mut().as_ptr();
            self.pieces.clear();
            match self
                .disk
                .plan(write, disk_offset, len, host as usize, &mut self.pieces)
            {
                Ok(true) => {}
                Ok(false) | Err(_) => return false,
            }
            let mut at = 0usize;
            for &piece in &self.pieces {
                // Pieces of one slice lie in it: they add up to its length.
                self.placed.push(Placed {
                    piece,
                    disk_offset: disk_offset + at as u64,
                    guest: seg.addr.unchecked_add(at as u64),
                    host: host.wrapping_add(at),
                });
                at += piece.len();
            }
            if at != len {
                return false;
            }
            disk_offset += seg.len;
        }
        true
    }

    /// Puts `op`'s `entry` on the submission queue, making room first if
    /// needed.
    fn push(&mut self, op: Op, entry: squeue::Entry) -> io::Result<()> {
        while self.ops.len() >= MAX_OPS {
            self.wait(true)?;
        }
        let entry = entry.user_data(self.ops.vacant_key() as u64);
        loop {
            // SAFETY: the entry's buffer is guest memory, which stays mapped
            // until its completion is reaped (`self.mem`, and `Drop`); its
            // descriptor belongs to the disk, which outlives the executor.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                self.ops.insert(op);
                self.unsubmitted = true;
                return Ok(());
            }
            self.submit(false)?;
        }
    }

    /// Submits what was pushed and, if `block` and anything is in flight,
    /// waits for at least one completion; then reaps every completion.
    pub fn wait(&mut self, block: bool) -> io::Result<()> {
        self.submit(block && !self.ops.is_empty())?;
        self.reap();
        Ok(())
    }

    fn submit(&mut self, block: bool) -> io::Result<()> {
        if !self.unsubmitted && !block {
            return Ok(());
        }
        loop {
            let result = if block {
                self.ring.submit_and_wait(1)
            } else {
                self.ring.submit()
            };
            match result {
                Ok(_) => {
                    self.unsubmitted = !self.ring.submission().is_empty();
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The completion queue is full: make room and try again.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => self.reap(),
                Err(e) => return Err(e),
            }
        }
    }

    /// Takes every completion the kernel has posted.
    fn reap(&mut self) {
        loop {
            let Some(cqe) = self.ring.completion().next() else {
                return;
            };
            let Some(op) = self.ops.try_remove(cqe.user_data() as usize) else {
                log::error!(
                    "io_uring completed an unknown operation {}",
                    cqe.user_data()
                );
                continue;
            };
            let ok = match cqe.result() {
                n if n < 0 => {
                    let e = io::Error::from_raw_os_error(-n);
                    log::warn!("virtio-blk request failed: {e}");
                    false
                }
                n if n as usize == op.len => true,
                n => self.finish_short(&op, n as usize),
            };
            let request = &mut self.requests[op.request];
            request.failed |= !ok;
            request.ops -= 1;
            if request.ops == 0 {
                self.finish(op.request);
            }
        }
    }

    /// Completes an operation the kernel did `done` bytes of, synchronously.
    fn finish_short(&self, op: &Op, done: usize) -> bool {
        let rest = op.len - done;
        let at = op.disk_offset + done as u64;
        let result = self
            .mem
            .get_slice(op.guest.unchecked_add(done as u64), rest)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
            .and_then(|slice| {
                if op.write {
                    self.disk.write_from(at, &slice)
                } else {
                    self.disk.read_to(at, &slice)
                }
            });
        match result {
            Ok(()) => true,
            Err(e) => {
                log::warn!("virtio-blk request failed: {e}");
                false
            }
        }
    }

    /// Writes the status byte of a request whose I/O is all done.
    fn finish(&mut self, id: usize) {
        let request = self.requests.remove(id);
        let (code, used) = if request.failed {
            (status::IOERR, 1)
        } else {
            (status::OK, request.used)
        };
        // The status address was checked to lie in guest memory when parsing.
        if let Err(e) = self.mem.write_obj(code, request.status) {
            log::warn!("cannot write a request's status byte: {e}");
        }
        self.completed.push((request.head, used));
    }
}

impl Drop for Executor<'_> {
    fn drop(&mut self) {
        // Nothing may unmap guest memory the kernel still reads or writes.
        while !self.ops.is_empty() {
            if let Err(e) = self.wait(true) {
                log::error!(
                    "io_uring failed with {} operations in flight ({e}); \
                     keeping guest memory mapped",
                    self.ops.len()
                );
                std::mem::forget(self.mem.clone());
                return;
            }
        }
    }
}
