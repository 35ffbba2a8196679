//! The `VhostUserBackend` implementation: one worker thread per queue.
//!
//! Each queue is served by its own thread (the daemon's epoll handler), and
//! shares nothing with the others on the I/O path but the [`Disk`], whose
//! implementations do not serialise queues. With EVENT_IDX the worker
//! re-checks the ring after re-enabling notifications, so no request that
//! arrives meanwhile is missed. With a polling budget the worker spins on
//! the ring for a while after draining it ([`crate::poll`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    EventConsumer, EventFlag, EventNotifier, new_event_consumer_and_notifier,
};

use crate::config::{CONFIG_LEN, DiskConfig, config_space, device_features, read_config};
use crate::disk::Disk;
use crate::exec::execute;
use crate::poll::{PolledRing, RingState, serve};
use crate::request::{Descriptor, Rejection, Request, parse};
use crate::uring::{Aio, Executor, QueueUring};

/// Offset of the `wce` byte in the configuration space.
const WCE_OFFSET: u32 = 32;
/// A batch runs on several threads only if each gets at least this many requests.
const PARALLEL_MIN_PER_THREAD: usize = 4;
/// Requests an asynchronous drain takes off the ring before starting them.
const MAX_TAKEN: usize = 256;

struct Shared {
    disk: Arc<dyn Disk>,
    config: DiskConfig,
    serial: Vec<u8>,
    queue_size: u16,
    event_idx: AtomicBool,
    writeback: AtomicBool,
    memory: RwLock<Option<GuestMemoryAtomic<GuestMemoryMmap>>>,
    exits: Vec<(EventConsumer, EventNotifier)>,
    /// Threads one queue may use for a large batch of requests.
    parallelism: usize,
    /// How long a worker spins on its drained ring before sleeping.
    poll: Duration,
    /// How queues do I/O, as asked for.
    aio: Aio,
    /// Each queue's io_uring (`None` for synchronous I/O), locked by the
    /// queue's worker for as long as it has requests in hand, and by
    /// `stop_vring` to wait for them.
    urings: Vec<Mutex<Option<QueueUring>>>,
}

/// A vhost-user-blk backend serving one disk.
#[derive(Clone)]
pub struct BlkBackend(Arc<Shared>);

impl BlkBackend {
    /// A backend for `disk` described by `config`, with `queue_size`
    /// descriptors per queue, `serial` as its GET_ID answer, and `poll` as
    /// each queue's busy-polling budget (zero: sleep as soon as the ring is
    /// empty), and `aio` as the way queues do I/O.
    pub fn new(
        disk: Arc<dyn Disk>,
        config: DiskConfig,
        queue_size: u16,
        serial: &str,
        poll: Duration,
        aio: Aio,
    ) -> std::io::Result<Self> {
        let writeback = config.writeback;
        Self::build(
            disk,
            config,
            queue_size,
            serial.as_bytes().to_vec(),
            writeback,
            (poll, aio),
        )
    }

    /// A backend for a new vhost-user session on the same disk: fresh worker
    /// exit events (the last session's were used to stop its workers) and no
    /// guest memory yet, with the same disk, configuration and write-cache mode.
    pub fn for_next_session(&self) -> std::io::Result<Self> {
        let writeback = self.0.writeback.load(Ordering::Relaxed);
        Self::build(
            self.0.disk.clone(),
            self.0.config,
            self.0.queue_size,
            self.0.serial.clone(),
            writeback,
            (self.0.poll, self.0.aio),
        )
    }

    fn build(
        disk: Arc<dyn Disk>,
        config: DiskConfig,
        queue_size: u16,
        serial: Vec<u8>,
        writeback: bool,
        (poll, aio): (Duration, Aio),
    ) -> std::io::Result<Self> {
        let exits = (0..config.num_queues)
            .map(|_| new_event_consumer_and_notifier(EventFlag::NONBLOCK))
            .collect::<std::io::Result<Vec<_>>>()?;
        let urings = (0..config.num_queues)
            .map(|_| Mutex::new(QueueUring::for_queue(aio)))
            .collect();
        Ok(Self(Arc::new(Shared {
            disk,
            config,
            serial,
            queue_size,
            event_idx: AtomicBool::new(false),
            writeback: AtomicBool::new(writeback),
            memory: RwLock::new(None),
            exits,
            parallelism: std::thread::available_parallelism().map_or(1, usize::from),
            poll,
            aio,
            urings,
        })))
    }

    /// Whether the queues do asynchronous I/O (io_uring was asked for and
    /// the kernel allows it).
    pub fn is_async(&self) -> bool {
        self.0
            .urings
            .iter()
            .all(|u| u.lock().unwrap_or_else(PoisonError::into_inner).is_some())
    }

    /// Tells the disk that a VMM's session ended.
    pub fn session_ended(&self) {
        self.0.disk.session_ended();
    }

    /// Parses and executes one chain; returns the used length to report.
    fn serve_chain(&self, mem: &GuestMemoryMmap, descriptors: &[Descriptor]) -> u32 {
        self.serve_parsed(
            mem,
            parse(mem, descriptors.iter().copied(), &self.0.config.limits),
        )
    }

    /// Executes a parsed chain (or answers its rejection) synchronously;
    /// returns the used length to report.
    fn serve_parsed(&self, mem: &GuestMemoryMmap, parsed: Result<Request, Rejection>) -> u32 {
        match parsed {
            Ok(request) => {
                let done = execute(mem, &request, self.0.disk.as_ref(), &self.0.serial);
                if !self.0.writeback.load(Ordering::Relaxed)
                    && matches!(request.operation, crate::request::Operation::Write { .. })
                    && let Err(e) = self.0.disk.flush()
                {
                    log::warn!("write-through flush failed: {e}");
                }
                done.written
            }
            Err(Rejection::Status {
                status,
                code,
                reason,
            }) => {
                log::warn!("rejected virtio-blk request: {reason}");
                let _ = mem.write_obj(code, status);
                1
            }
            Err(Rejection::Drop(reason)) => {
                log::warn!("dropped virtio-blk request: {reason}");
                0
            }
        }
    }

    /// Serves a batch of chains: in parallel on scoped threads when the
    /// batch is large enough to pay for them (many requests in flight on one
    /// queue), else in order on this thread.
    fn serve_batch(&self, mem: &GuestMemoryMmap, batch: &[(u16, Vec<Descriptor>)]) -> Vec<u32> {
        let threads = self
            .0
            .parallelism
            .min(batch.len() / PARALLEL_MIN_PER_THREAD)
            .max(1);
        if threads == 1 {
            return batch
                .iter()
                .map(|(_, d)| self.serve_chain(mem, d))
                .collect();
        }
        let per_thread = batch.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let workers: Vec<_> = batch
                .chunks(per_thread)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|(_, d)| self.serve_chain(mem, d))
                            .collect::<Vec<u32>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| {
                    w.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        })
    }

    /// Serves `vring` after a kick: drains it, spins on it for the polling
    /// budget, and re-arms kicks before returning (see [`crate::poll`]).
    fn process_queue(&self, vring: &VringRwLock, queue: usize) -> std::io::Result<()> {
        let Some(memory) = self
            .0
            .memory
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        else {
            return Ok(());
        };
        let event_idx = self.0.event_idx.load(Ordering::Relaxed);
        // Held until the worker is done with the ring, notification fields
        // included: `stop_vring` waits for it.
        let mut no_ring = None;
        let mut guard = self
            .0
            .urings
            .get(queue)
            .map(|slot| slot.lock().unwrap_or_else(PoisonError::into_inner));
        let uring = match guard.as_deref_mut() {
            Some(uring) => uring,
            None => &mut no_ring,
        };
        let mut ring = Ring {
            backend: self,
            vring,
            queue,
            uring,
            memory,
            event_idx,
        };
        serve(&mut ring, self.0.poll, event_idx, Instant::now)
    }
}

/// One queue of a backend, as [`serve`] drives it.
struct Ring<'a> {
    backend: &'a BlkBackend,
    vring: &'a VringRwLock,
    /// Its index.
    queue: usize,
    /// Its io_uring, if it does asynchronous I/O (the queue's lock is held).
    uring: &'a mut Option<QueueUring>,
    memory: GuestMemoryAtomic<GuestMemoryMmap>,
    event_idx: bool,
}

impl Ring<'_> {
    /// Whether the driver has made requests available. An available index
    /// more than a queue's worth ahead cannot come from a working driver;
    /// it is an error, not "pending", or the worker would spin on requests
    /// it can never take.
    fn pending(&self) -> std::io::Result<bool> {
        let state = self.vring.get_ref();
        let queue = state.get_queue();
        let avail = queue
            .avail_idx(&*self.memory.memory(), Ordering::Acquire)
            .map_err(std::io::Error::other)?;
        let ahead = avail.0.wrapping_sub(queue.next_avail());
        if ahead > queue.size() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the driver's available index is {ahead} entries ahead of the device's, \
                     more than the queue's {}: the queue is broken",
                    queue.size()
                ),
            ));
        }
        Ok(ahead != 0)
    }
}

impl PolledRing for Ring<'_> {
    fn suppress_kicks(&mut self) -> std::io::Result<()> {
        self.vring
            .disable_notification()
            .map_err(std::io::Error::other)
    }

    fn drain(&mut self) -> std::io::Result<()> {
        let Some(mut uring) = self.uring.take() else {
            return self.drain_sync();
        };
        match self.drain_async(&mut uring) {
            Ok(Err(e)) => {
                log::error!(
                    "queue {}: io_uring failed ({e}); serving it with synchronous I/O from \
                     now on (requests that were in flight on the ring are lost)",
                    self.queue
                );
                Ok(())
            }
            result => {
                *self.uring = Some(uring);
                result.map(drop)
            }
        }
    }

    fn peek(&self) -> std::io::Result<RingState> {
        if self.stopped() {
            return Ok(RingState::Stopped);
        }
        Ok(if self.pending()? {
            RingState::Pending
        } else {
            RingState::Empty
        })
    }

    fn rearm_kicks(&mut self) -> std::io::Result<bool> {
        let maybe = self
            .vring
            .enable_notification()
            .map_err(std::io::Error::other)?;
        Ok(maybe && self.pending()?)
    }

    fn stopped(&self) -> bool {
        let state = self.vring.get_ref();
        !state.get_queue().ready() || !state.is_enabled()
    }
}

impl Ring<'_> {
    /// Serves the ring with synchronous I/O, batch after batch.
    fn drain_sync(&mut self) -> std::io::Result<()> {
        let mem = self.memory.memory();
        let vring = self.vring;
        loop {
            // Take everything the driver has made available.
            let mut batch = Vec::new();
            while let Some(chain) = vring.get_mut().get_queue_mut().pop_descriptor_chain(&*mem) {
                let head = chain.head_index();
                let descriptors: Vec<Descriptor> = chain
                    .map(|d| Descriptor {
                        addr: d.addr(),
                        len: d.len(),
                        writable: d.is_write_only(),
                    })
                    .collect();
                batch.push((head, descriptors));
            }
            if batch.is_empty() {
                return Ok(());
            }
            let used = self.backend.serve_batch(&mem, &batch);
            for ((head, _), len) in batch.iter().zip(used) {
                vring.add_used(*head, len).map_err(std::io::Error::other)?;
            }
            if !self.event_idx || vring.needs_notification().map_err(std::io::Error::other)? {
                vring.signal_used_queue()?;
            }
        }
    }

    /// Serves the ring with asynchronous I/O: requests go to the kernel as
    /// they are taken and to the used ring as they complete.
    ///
    /// Returns `Ok(Err(e))` if the ring itself failed: the requests taken
    /// after that were served synchronously, and the caller must not use
    /// the ring again.
    fn drain_async(
        &mut self,
        uring: &mut QueueUring,
    ) -> std::io::Result<Result<(), std::io::Error>> {
        let mem = self.memory.memory().into_inner();
        let vring = self.vring;
        let backend = self.backend;
        let shared = &backend.0;
        let writes = shared.writeback.load(Ordering::Relaxed);
        let mut exec = Executor::new(uring, mem.clone(), shared.disk.as_ref());
        let mut descriptors = Vec::new();
        let mut taken = Vec::new();
        let mut failed = None;
        loop {
            while exec.has_room() && taken.len() < MAX_TAKEN {
                let Some(chain) = vring.get_mut().get_queue_mut().pop_descriptor_chain(&*mem)
                else {
                    break;
                };
                let head = chain.head_index();
                descriptors.clear();
                descriptors.extend(chain.map(|d| Descriptor {
                    addr: d.addr(),
                    len: d.len(),
                    writable: d.is_write_only(),
                }));
                let parsed = parse(&*mem, descriptors.iter().copied(), &shared.config.limits);
                taken.push((head, parsed));
            }
            if taken.is_empty() && (exec.idle() || failed.is_some()) {
                return Ok(failed.map_or(Ok(()), Err));
            }
            // A lone request is served on the spot: handing it to the
            // kernel's queue (and maybe its worker threads) would only add
            // a round trip. Two or more go to io_uring together.
            let alone = taken.len() == 1 && exec.idle();
            for (head, parsed) in taken.drain(..) {
                if !alone
                    && failed.is_none()
                    && let Ok(request) = &parsed
                {
                    match exec.start(head, request, writes) {
                        Ok(true) => continue,
                        Ok(false) => {}
                        // The executor has the request (failed, or with
                        // operations the broken ring may still complete).
                        Err(e) => {
                            failed = Some(e);
                            continue;
                        }
                    }
                }
                exec.complete_now(head, backend.serve_parsed(&mem, parsed));
            }
            // Wait for the kernel only when nothing is ready to hand back.
            if failed.is_none()
                && let Err(e) = exec.wait(!exec.has_completed())
            {
                failed = Some(e);
            }
            let mut any = false;
            for (head, len) in exec.take_completed() {
                vring.add_used(head, len).map_err(std::io::Error::other)?;
                any = true;
            }
            if any
                && (!self.event_idx || vring.needs_notification().map_err(std::io::Error::other)?)
            {
                vring.signal_used_queue()?;
            }
        }
    }
}

impl VhostUserBackend for BlkBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        usize::from(self.0.config.num_queues)
    }

    fn max_queue_size(&self) -> usize {
        usize::from(self.0.queue_size)
    }

    fn features(&self) -> u64 {
        device_features(&self.0.config) | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
    }

    fn set_event_idx(&self, enabled: bool) {
        self.0.event_idx.store(enabled, Ordering::Relaxed);
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let mut space = config_space(&self.0.config);
        space[WCE_OFFSET as usize] = u8::from(self.0.writeback.load(Ordering::Relaxed));
        read_config(&space, offset, size)
    }

    fn set_config(&self, offset: u32, buf: &[u8]) -> std::io::Result<()> {
        // Only the write-cache byte is writable.
        if offset == WCE_OFFSET && buf.len() == 1 {
            self.0.writeback.store(buf[0] != 0, Ordering::Relaxed);
            return Ok(());
        }
        if (offset as usize) < CONFIG_LEN {
            log::warn!(
                "driver wrote {} bytes at config offset {offset}; ignored",
                buf.len()
            );
        }
        Ok(())
    }

    fn update_memory(&self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> std::io::Result<()> {
        *self
            .0
            .memory
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(mem);
        Ok(())
    }

    /// GET_VRING_BASE: the ring is already marked not ready, so its worker
    /// takes no new request; wait until it has completed those it took, so
    /// that the base index the frontend gets matches the used ring and
    /// nothing is written to the ring after it is handed back.
    fn stop_vring(&self, queue_index: u32) -> std::io::Result<()> {
        if let Some(slot) = self.0.urings.get(queue_index as usize) {
            drop(slot.lock().unwrap_or_else(PoisonError::into_inner));
        }
        Ok(())
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        (0..self.0.config.num_queues).map(|q| 1u64 << q).collect()
    }

    fn exit_event(&self, thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        let (consumer, notifier) = self.0.exits.get(thread_index)?;
        Some((consumer.try_clone().ok()?, notifier.try_clone().ok()?))
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        if evset != EventSet::IN {
            return Err(std::io::Error::other(format!(
                "unexpected event set {evset:?}"
            )));
        }
        match vrings.get(usize::from(device_event)) {
            Some(vring) => self.process_queue(vring, usize::from(device_event)),
            None => Err(std::io::Error::other(format!(
                "event for unknown queue {device_event}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests;
