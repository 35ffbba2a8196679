//! The measuring client: libblkio's `virtio-blk-vhost-user` driver (through
//! the `blkio` crate), the same for every backend.
//!
//! One thread per virtqueue keeps its queue depth of requests in flight,
//! submitting a new one as each completes, and waits for completions on the
//! queue's eventfd (no busy polling: the backends need the two CPUs). Every
//! request gets its own buffer slot in one shared memfd region:
//!
//! ```text
//!   region: | queue 0: slot 0 .. slot MAX_QD-1 | queue 1: ... |
//!             each slot MAX_BLOCK bytes
//! ```

use std::mem::MaybeUninit;
use std::path::Path;
use std::time::{Duration, Instant};

use blkio::{Blkio, Blkioq, Completion, MemoryRegion, ReqFlags};

/// Deepest queue depth a workload may use.
pub const MAX_QD: usize = 32;
/// Largest request a workload may make.
pub const MAX_BLOCK: usize = 128 * 1024;
/// How long to keep trying to connect after the socket appears.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a workload does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    RandRead,
    RandWrite,
    SeqRead,
}

/// One measured workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    pub pattern: Pattern,
    pub block: usize,
    /// Requests in flight per queue.
    pub qd: usize,
}

impl Workload {
    pub fn name(&self) -> String {
        let what = match self.pattern {
            Pattern::RandRead => "rand-read",
            Pattern::RandWrite => "rand-write",
            Pattern::SeqRead => "seq-read",
        };
        format!("{what} {}K", self.block / 1024)
    }
}

/// What one run of one workload measured.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub ops: u64,
    pub seconds: f64,
    /// Latencies of every request, sorted, in ns.
    pub latencies_ns: Vec<u32>,
    pub bytes_per_op: usize,
}

impl RunResult {
    pub fn iops(&self) -> f64 {
        self.ops as f64 / self.seconds
    }

    pub fn mib_per_s(&self) -> f64 {
        self.iops() * self.bytes_per_op as f64 / (1024.0 * 1024.0)
    }

    /// The `p`-th percentile latency in µs (0 without samples).
    pub fn percentile_us(&self, p: f64) -> f64 {
        percentile(&self.latencies_ns, p) as f64 / 1000.0
    }
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Where requests go: a deterministic xorshift stream, the same for every
/// backend in a round.
struct Offsets {
    state: u64,
    cursor: u64,
}

impl Offsets {
    fn new(seed: u64, start: u64) -> Self {
        Self {
            state: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            cursor: start,
        }
    }

    fn next(&mut self, pattern: Pattern, block: u64, span: u64) -> u64 {
        match pattern {
            Pattern::SeqRead => {
                let offset = self.cursor;
                self.cursor = (self.cursor + block) % (span - span % block);
                offset
            }
            Pattern::RandRead | Pattern::RandWrite => {
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
                (self.state % (span / block)) * block
            }
        }
    }
}

/// A connected client with its queues and buffer region.
pub struct Session {
    // Queues before the Blkio: they hold the region registry alive and must
    // be dropped first (the crate frees regions when both are gone).
    queues: Vec<Blkioq>,
    blkio: Blkio,
    region: MemoryRegion,
    pub capacity: u64,
}

/// A buffer address that may cross into a worker thread: the slots of
/// different queues never overlap, and the region outlives the threads.
#[derive(Clone, Copy)]
struct SlotBase(usize);

impl Session {
    /// Connects to `socket` and starts `queues` virtqueues.
    pub fn connect(socket: &Path, queues: usize) -> Result<Self, String> {
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let mut blkio = loop {
            let mut blkio = Blkio::new("virtio-blk-vhost-user").map_err(|e| e.to_string())?;
            blkio
                .set_str("path", &socket.to_string_lossy())
                .map_err(|e| e.to_string())?;
            match blkio.connect() {
                Ok(()) => break blkio,
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!("cannot connect to {}: {e}", socket.display()));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        let queue_count = i32::try_from(queues).map_err(|_| "too many queues".to_string())?;
        blkio
            .set_i32("num-queues", queue_count)
            .map_err(|e| format!("num-queues={queues}: {e}"))?;
        let capacity = blkio.get_u64("capacity").map_err(|e| e.to_string())?;
        let started = blkio.start().map_err(|e| format!("cannot start: {e}"))?;
        let align = blkio
            .get_u64("mem-region-alignment")
            .map_err(|e| e.to_string())?
            .max(1) as usize;
        let len = (queues * MAX_QD * MAX_BLOCK).div_ceil(align) * align;
        let region = blkio
            .alloc_mem_region(len)
            .map_err(|e| format!("cannot allocate buffers: {e}"))?;
        blkio
            .map_mem_region(&region)
            .map_err(|e| format!("cannot map buffers: {e}"))?;
        Ok(Self {
            queues: started.queues,
            blkio,
            region,
            capacity,
        })
    }

    /// Runs `workload` on every queue for `warmup + duration` and measures
    /// the requests submitted after the warm-up. `span` bounds the offsets
    /// (the disk, or its write region); `seed` makes the offsets.
    pub fn run(
        &mut self,
        workload: Workload,
        span: u64,
        seed: u64,
        warmup: Duration,
        duration: Duration,
    ) -> Result<RunResult, String> {
        if workload.qd > MAX_QD || workload.block > MAX_BLOCK || span < workload.block as u64 {
            return Err(format!("{workload:?} does not fit the client"));
        }
        let base = self.region.addr;
        let queue_count = self.queues.len() as u64;
        if workload.pattern == Pattern::RandWrite {
            // Non-zero data, so that no backend can take a zero-write shortcut.
            // SAFETY: the region is `len` bytes of our own writable mapping
            // and no request is in flight now.
            unsafe { std::ptr::write_bytes(base as *mut u8, 0xa5, self.region.len) };
        }
        let start = Instant::now() + Duration::from_millis(1);
        let results = std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .queues
                .iter_mut()
                .enumerate()
                .map(|(index, queue)| {
                    let slots = SlotBase(base + index * MAX_QD * MAX_BLOCK);
                    let block = workload.block as u64;
                    let stripe = span / queue_count * index as u64 / block * block;
                    let offsets = Offsets::new(seed ^ ((index as u64 + 1) << 32), stripe);
                    scope.spawn(move || {
                        drive(
                            queue,
                            slots,
                            offsets,
                            workload,
                            span,
                            start + warmup,
                            duration,
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| "a client thread panicked".to_string())?
                })
                .collect::<Result<Vec<_>, String>>()
        })?;
        let mut total = RunResult {
            ops: 0,
            seconds: 0.0,
            latencies_ns: Vec::new(),
            bytes_per_op: workload.block,
        };
        for result in results {
            total.ops += result.ops;
            total.seconds = total.seconds.max(result.seconds);
            total.latencies_ns.extend(result.latencies_ns);
        }
        total.latencies_ns.sort_unstable();
        Ok(total)
    }

    /// Reads the first `len` bytes of the disk in `chunk`-sized requests on
    /// queue 0, QD `MAX_QD`, handing each chunk to `check` in order.
    pub fn read_all(
        &mut self,
        len: u64,
        chunk: usize,
        mut check: impl FnMut(u64, &[u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        let base = self.region.addr;
        let queue = self.queues.first_mut().ok_or("no queue")?;
        let chunk = chunk.min(MAX_BLOCK);
        let count = len.div_ceil(chunk as u64);
        let mut completions = uninit_completions(MAX_QD);
        let mut next = 0u64;
        let mut done = [false; MAX_QD];
        let mut expected_next = 0u64;
        // Chunk i lives in slot i % MAX_QD; it is checked and its slot
        // reused strictly in order, so the data is never overwritten early.
        while expected_next < count {
            while next < count && next < expected_next + MAX_QD as u64 {
                let slot = (next % MAX_QD as u64) as usize;
                let offset = next * chunk as u64;
                let size = (len - offset).min(chunk as u64) as usize;
                queue.read(
                    offset,
                    (base + slot * MAX_BLOCK) as *mut u8,
                    size,
                    next as usize,
                    ReqFlags::empty(),
                );
                next += 1;
            }
            let n = queue
                .do_io(&mut completions, 1, None, None)
                .map_err(|e| e.to_string())?;
            for c in &completions[..n] {
                // SAFETY: do_io initialised the first `n` completions.
                let c = unsafe { c.assume_init_ref() };
                if c.ret != 0 {
                    return Err(format!("read of chunk {} failed: {}", c.user_data, c.ret));
                }
                done[c.user_data % MAX_QD] = true;
            }
            while expected_next < count && done[(expected_next % MAX_QD as u64) as usize] {
                let slot = (expected_next % MAX_QD as u64) as usize;
                done[slot] = false;
                let offset = expected_next * chunk as u64;
                let size = (len - offset).min(chunk as u64) as usize;
                // SAFETY: the slot lies inside our mapped region, its read
                // has completed and no new request uses it until the check
                // returns.
                let data = unsafe {
                    std::slice::from_raw_parts((base + slot * MAX_BLOCK) as *const u8, size)
                };
                check(offset, data)?;
                expected_next += 1;
            }
        }
        Ok(())
    }

    /// Disconnects (the backend sees the socket close).
    pub fn close(mut self) {
        self.queues.clear();
        self.blkio.unmap_mem_region(&self.region);
    }
}

fn uninit_completions(n: usize) -> Vec<MaybeUninit<Completion>> {
    (0..n).map(|_| MaybeUninit::uninit()).collect()
}

/// One queue's loop: keep `qd` requests in flight until the deadline.
fn drive(
    queue: &mut Blkioq,
    slots: SlotBase,
    mut offsets: Offsets,
    workload: Workload,
    span: u64,
    measure_from: Instant,
    duration: Duration,
) -> Result<RunResult, String> {
    let block = workload.block as u64;
    let mut submitted_at = vec![measure_from; workload.qd];
    let mut completions = uninit_completions(workload.qd);
    let mut latencies = Vec::with_capacity(1 << 16);
    let submit = |queue: &mut Blkioq, slot: usize, offsets: &mut Offsets| {
        let offset = offsets.next(workload.pattern, block, span);
        let buf = slots.0 + slot * MAX_BLOCK;
        match workload.pattern {
            Pattern::RandWrite => queue.write(
                offset,
                buf as *const u8,
                workload.block,
                slot,
                ReqFlags::empty(),
            ),
            Pattern::RandRead | Pattern::SeqRead => queue.read(
                offset,
                buf as *mut u8,
                workload.block,
                slot,
                ReqFlags::empty(),
            ),
        }
    };
    let deadline = measure_from + duration;
    for (slot, at) in submitted_at.iter_mut().enumerate() {
        *at = Instant::now();
        submit(queue, slot, &mut offsets);
    }
    let mut in_flight = workload.qd;
    let mut ops = 0u64;
    let mut last = measure_from;
    let mut stopping = false;
    while in_flight > 0 {
        let n = queue
            .do_io(&mut completions, 1, None, None)
            .map_err(|e| format!("do_io: {e}"))?;
        let now = Instant::now();
        if now >= deadline {
            stopping = true;
        }
        for c in &completions[..n] {
            // SAFETY: do_io initialised the first `n` completions.
            let c = unsafe { c.assume_init_ref() };
            if c.ret != 0 {
                return Err(format!("a {} request failed: {}", workload.name(), c.ret));
            }
            let slot = c.user_data;
            let began = submitted_at[slot];
            if began >= measure_from && now <= deadline {
                ops += 1;
                last = now;
                let ns = now.duration_since(began).as_nanos();
                latencies.push(u32::try_from(ns).unwrap_or(u32::MAX));
            }
            if stopping {
                in_flight -= 1;
            } else {
                submitted_at[slot] = Instant::now();
                submit(queue, slot, &mut offsets);
            }
        }
    }
    Ok(RunResult {
        ops,
        seconds: last
            .saturating_duration_since(measure_from)
            .as_secs_f64()
            .max(1e-9),
        latencies_ns: latencies,
        bytes_per_op: workload.block,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let samples: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&samples, 50.0), 50);
        assert_eq!(percentile(&samples, 99.0), 99);
        assert_eq!(percentile(&samples, 100.0), 100);
        assert_eq!(percentile(&[], 50.0), 0);
        assert_eq!(percentile(&[7], 99.0), 7);
    }

    #[test]
    fn offsets_are_aligned_in_range_and_repeatable() {
        let (mut a, mut b) = (Offsets::new(5, 0), Offsets::new(5, 0));
        for _ in 0..1000 {
            let x = a.next(Pattern::RandRead, 4096, 1 << 20);
            assert_eq!(x % 4096, 0);
            assert!(x < 1 << 20);
            assert_eq!(x, b.next(Pattern::RandRead, 4096, 1 << 20));
        }
        let mut seq = Offsets::new(1, 3 * 131072);
        let got: Vec<u64> = (0..3)
            .map(|_| seq.next(Pattern::SeqRead, 131072, 4 * 131072))
            .collect();
        assert_eq!(got, vec![3 * 131072, 0, 131072]);
    }
}
