//! One split virtqueue (virtio 1.2, 2.7) with one request in flight at a
//! time, completed by polling.
//!
//! ```text
//!   QueueMemory (in the driver's static):
//!     +0    descriptors  [addr u64 | len u32 | flags u16 | next u16] x MAX_SIZE
//!     +128  available    flags u16 | idx u16 | ring [u16] x MAX_SIZE
//!     +256  used         flags u16 | idx u16 | ring [id u32 | len u32] x MAX_SIZE
//! ```
//!
//! A request is a chain starting at descriptor 0. The driver writes the
//! descriptors, puts head 0 in the available ring, publishes the new
//! available index and notifies; then it polls the used index. x86 keeps
//! stores in order and loads in order, so the fences only have to stop the
//! compiler from reordering (`fence(Release)` / `fence(Acquire)` compile to
//! no instruction here; a `SeqCst` fence would be an `mfence`, an SSE2
//! instruction the emulating KVM cannot run).

use core::sync::atomic::{Ordering, fence};

use super::{Transport, VirtioError};

/// Ring entries allocated; the queue may be set up smaller.
pub(super) const MAX_SIZE: u16 = 8;
/// The smallest usable queue: a request takes three descriptors.
const MIN_SIZE: u16 = 4;
/// Time-stamp-counter ticks after which a request counts as lost: 2^35,
/// 10 to 35 seconds at 1 to 3.4 GHz. A bound in time rather than in polls,
/// as a poll costs microseconds on an emulating KVM and nanoseconds under
/// TCG.
const TIMEOUT_TICKS: u64 = 1 << 35;
/// The time stamp counter is read every this many polls.
const POLLS_PER_CLOCK_READ: u32 = 256;

const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
/// Available-ring flag: the device need not interrupt (nothing listens).
const AVAIL_F_NO_INTERRUPT: u16 = 1;

#[repr(C)]
#[derive(Clone, Copy)]
struct Descriptor {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

#[repr(C, align(2))]
struct Available {
    flags: u16,
    idx: u16,
    ring: [u16; MAX_SIZE as usize],
    used_event: u16,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct UsedElement {
    id: u32,
    len: u32,
}

#[repr(C, align(4))]
struct Used {
    flags: u16,
    idx: u16,
    ring: [UsedElement; MAX_SIZE as usize],
    avail_event: u16,
}

/// The rings, shared with the device. All-zero is a valid (empty) state.
/// Descriptors need 16-byte alignment, the used ring 4.
#[repr(C, align(16))]
pub(super) struct QueueMemory {
    descriptors: [Descriptor; MAX_SIZE as usize],
    available: Available,
    _pad: [u8; 106],
    used: Used,
}

const _: () = assert!(core::mem::offset_of!(QueueMemory, available) == 128);
const _: () = assert!(core::mem::offset_of!(QueueMemory, used) == 256);

/// Guest-physical addresses of a queue's three parts.
#[derive(Clone, Copy)]
pub(super) struct RingAddresses {
    pub(super) descriptors: u64,
    pub(super) available: u64,
    pub(super) used: u64,
}

/// One buffer of a request: guest-physical address, length, and whether the
/// device writes it (rather than reads it).
#[derive(Clone, Copy)]
pub(super) struct Buffer {
    pub(super) addr: u64,
    pub(super) len: u32,
    pub(super) device_writes: bool,
}

/// The driver's side of queue 0.
pub(super) struct Virtqueue {
    memory: *mut QueueMemory,
    size: u16,
    next_available: u16,
    last_used: u16,
    /// A request timed out and may still be in the device's hands: its
    /// descriptors cannot be reused, so every later request fails too.
    lost: bool,
}

impl Virtqueue {
    /// Sets up queue `index` of `transport` in `memory`, as large as the
    /// device allows up to [`MAX_SIZE`].
    ///
    /// # Safety
    ///
    /// `memory` must be valid, identity-mapped, zero-filled and used for
    /// nothing else while the device runs.
    pub(super) unsafe fn setup(
        transport: &mut Transport,
        index: u16,
        memory: *mut QueueMemory,
    ) -> Result<Virtqueue, VirtioError> {
        let max = transport.queue_max_size(index);
        // Split rings have power-of-two sizes.
        let size = match max.min(MAX_SIZE) {
            0 => 0,
            fitting => 1 << (15 - fitting.leading_zeros()),
        };
        if size < MIN_SIZE {
            return Err(transport.fail(VirtioError::BadQueue));
        }
        let available: *mut Available = field_ptr!(memory, QueueMemory, available);
        let flags: *mut u16 = field_ptr!(available, Available, flags);
        // SAFETY: the caller guarantees that `memory` is valid; the device
        // does not run yet.
        unsafe { flags.write_volatile(AVAIL_F_NO_INTERRUPT) };
        // Physical == virtual: pointers are DMA addresses.
        let used: *mut Used = field_ptr!(memory, QueueMemory, used);
        let rings = RingAddresses {
            descriptors: memory as u64,
            available: available as u64,
            used: used as u64,
        };
        transport
            .setup_queue(index, size, rings)
            .map_err(|error| transport.fail(error))?;
        Ok(Virtqueue {
            memory,
            size,
            next_available: 0,
            last_used: 0,
            lost: false,
        })
    }

    /// Runs one request: chains `buffers` (at most three) from descriptor 0,
    /// notifies queue `index` and polls until the device returns the chain.
    /// Returns the length the device reports having written.
    pub(super) fn run(
        &mut self,
        transport: &Transport,
        index: u16,
        buffers: &[Buffer],
    ) -> Result<u32, VirtioError> {
        let count = buffers.len();
        if count == 0 || count > usize::from(MIN_SIZE) - 1 {
            return Err(VirtioError::OutOfRange);
        }
        if self.lost {
            return Err(VirtioError::Timeout);
        }
        let memory = self.memory;
        let descriptors: *mut Descriptor = field_ptr!(memory, QueueMemory, descriptors);
        let available: *mut Available = field_ptr!(memory, QueueMemory, available);
        let available_ring: *mut u16 = field_ptr!(available, Available, ring);
        let available_idx: *mut u16 = field_ptr!(available, Available, idx);
        let used: *mut Used = field_ptr!(memory, QueueMemory, used);
        let used_ring: *mut UsedElement = field_ptr!(used, Used, ring);
        let used_idx: *mut u16 = field_ptr!(used, Used, idx);
        for (i, buffer) in buffers.iter().enumerate() {
            let last = i + 1 == count;
            let mut flags = if last { 0 } else { DESC_F_NEXT };
            if buffer.device_writes {
                flags |= DESC_F_WRITE;
            }
            let descriptor = Descriptor {
                addr: buffer.addr,
                len: buffer.len,
                flags,
                next: if last { 0 } else { i as u16 + 1 },
            };
            // SAFETY: `i < count < MIN_SIZE <= size <= MAX_SIZE`, so the
            // descriptor exists; the device does not read descriptors that
            // are not in the available ring, and this chain is not there yet.
            unsafe { descriptors.wrapping_add(i).write_volatile(descriptor) };
        }
        let slot = self.slot(self.next_available);
        // SAFETY: `slot < MAX_SIZE`; the device does not read the slot until
        // the available index below covers it.
        unsafe { available_ring.wrapping_add(slot).write_volatile(0) };
        self.next_available = self.next_available.wrapping_add(1);
        // The descriptors and the ring slot must be visible before the index.
        fence(Ordering::Release);
        // SAFETY: the driver owns the available index.
        unsafe { available_idx.write_volatile(self.next_available) };
        transport.notify(index);

        let started = read_tsc();
        let mut polls: u32 = 0;
        // SAFETY: the used index is in the queue memory; the device writes
        // it, hence volatile.
        while unsafe { used_idx.read_volatile() } == self.last_used {
            polls = polls.wrapping_add(1);
            if polls % POLLS_PER_CLOCK_READ == 0 && read_tsc().wrapping_sub(started) > TIMEOUT_TICKS
            {
                self.lost = true;
                return Err(VirtioError::Timeout);
            }
            core::hint::spin_loop();
        }
        // Whatever the device wrote before the used index is read after it.
        fence(Ordering::Acquire);
        let slot = self.slot(self.last_used);
        self.last_used = self.last_used.wrapping_add(1);
        // SAFETY: `slot < MAX_SIZE`; the device wrote this element before it
        // published the index just read.
        let element = unsafe { used_ring.wrapping_add(slot).read_volatile() };
        if element.id != 0 {
            return Err(VirtioError::BadCompletion);
        }
        Ok(element.len)
    }

    /// The ring slot of free-running index `index`: below `size`, which is
    /// a power of two no larger than [`MAX_SIZE`].
    fn slot(&self, index: u16) -> usize {
        usize::from(index & (self.size - 1))
    }
}

/// Reads the time stamp counter.
fn read_tsc() -> u64 {
    let (low, high): (u32, u32);
    // SAFETY: `rdtsc` only reads the counter into edx:eax; CR4.TSD is clear,
    // so it is allowed at any privilege level.
    unsafe {
        core::arch::asm!("rdtsc", out("eax") low, out("edx") high,
            options(nomem, nostack, preserves_flags));
    }
    (u64::from(high) << 32) | u64::from(low)
}
