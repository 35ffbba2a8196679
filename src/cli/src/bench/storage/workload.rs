//! The requests both engines run, and running them on a Strata image.
//!
//! `qemu-img bench` can only step: request `i` is at `i * step mod size`.
//! So "random" offsets here are that same Weyl sequence, with a step near
//! `size / φ` and coprime to the number of 4 KiB units, which spreads the
//! requests evenly over the disk and visits no unit twice before all have
//! been visited. Strata runs exactly the offsets `qemu-img` runs.
//!
//! Queue depth on the Strata side is that many threads sharing one `&Image`
//! and taking the next request from a shared counter, as a block backend's
//! queue workers would. The engine itself takes no lock for reads and for
//! writes to blocks the top layer owns; copy-ups take one mutex.

use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use strata_storage::{Image, ImageIoError};

/// Small requests.
pub const SMALL_REQUEST: usize = 4 << 10;
/// Sequential-read requests.
pub const LARGE_REQUEST: usize = 128 << 10;

/// What one measurement does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// 4 KiB reads at scattered offsets.
    RandRead,
    /// 128 KiB reads, one pass from offset 0.
    SeqRead,
    /// 4 KiB writes, each into a block the (fresh, empty) top layer does
    /// not hold yet: every request is a copy-up.
    FirstWrite,
    /// The same 4 KiB writes again: now in place.
    Rewrite,
}

impl Workload {
    /// Every workload, in report order.
    pub const ALL: [Workload; 4] = [
        Workload::RandRead,
        Workload::SeqRead,
        Workload::FirstWrite,
        Workload::Rewrite,
    ];

    /// Name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Workload::RandRead => "rand-read 4K",
            Workload::SeqRead => "seq-read 128K",
            Workload::FirstWrite => "first-write 4K",
            Workload::Rewrite => "rewrite 4K",
        }
    }
}

/// A run of same-sized requests at `i * step mod disk_size`, `i < count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requests {
    /// Number of requests.
    pub count: u64,
    /// Bytes per request.
    pub len: usize,
    /// Distance between consecutive requests, in bytes.
    pub step: u64,
    /// The disk size, where offsets wrap.
    pub disk_size: u64,
}

impl Requests {
    /// Offset of request `i`, as `qemu-img bench` computes it.
    pub fn offset(&self, i: u64) -> u64 {
        (u128::from(i) * u128::from(self.step) % u128::from(self.disk_size)) as u64
    }
}

/// One sequential pass over the disk in `len`-byte requests.
pub fn sequential(disk_size: u64, len: usize) -> Requests {
    Requests {
        count: disk_size / len as u64,
        len,
        step: len as u64,
        disk_size,
    }
}

/// Up to `wanted` scattered `len`-byte requests, no two in the same
/// `cluster`-byte block (pass `cluster == len` when blocks do not matter).
/// Fewer are returned when no step near `size / φ` keeps that many apart.
pub fn scattered(disk_size: u64, len: usize, cluster: u64, wanted: u64) -> Requests {
    let unit = len as u64;
    let units = disk_size / unit;
    let mut count = wanted.min(disk_size / cluster).max(1);
    loop {
        if let Some(step_units) = scattered_step(units, cluster / unit, count) {
            return Requests {
                count,
                len,
                step: step_units * unit,
                disk_size,
            };
        }
        if count == 1 {
            return Requests {
                count,
                len,
                step: unit,
                disk_size,
            };
        }
        count /= 2;
    }
}

/// How many steps either side of `units / φ` are tried.
const STEP_SEARCH: u64 = 512;

/// A step (in units) coprime to `units`, as near `units / φ` as possible,
/// whose first `count` positions lie in distinct groups of `per_cluster`
/// units.
fn scattered_step(units: u64, per_cluster: u64, count: u64) -> Option<u64> {
    const INV_PHI: f64 = 0.618_033_988_749_895;
    let ideal = (units as f64 * INV_PHI).round() as u64;
    let clusters = units.div_ceil(per_cluster.max(1)) as usize;
    let mut seen = vec![false; clusters];
    let candidates = (0..=STEP_SEARCH).flat_map(|d| [ideal + d, ideal.wrapping_sub(d)]);
    for step in candidates {
        if step == 0 || step >= units || gcd(step, units) != 1 {
            continue;
        }
        seen.fill(false);
        let mut position = 0u64;
        let spread = (0..count).all(|_| {
            let cluster = (position / per_cluster.max(1)) as usize;
            position = (position + step) % units;
            !std::mem::replace(&mut seen[cluster], true)
        });
        if spread {
            return Some(step);
        }
    }
    (units == 1).then_some(1)
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Reads `requests` from `image` with `queue_depth` threads; returns the
/// time from the first request to the last completion.
pub fn read(image: &Image, requests: &Requests, queue_depth: u32) -> Result<Timing, ImageIoError> {
    drive(requests, queue_depth, 0, |offset, buf| {
        image.read_at(offset, buf)
    })
}

/// Writes `requests` of bytes `fill` to `image` with `queue_depth` threads.
pub fn write(
    image: &Image,
    requests: &Requests,
    queue_depth: u32,
    fill: u8,
) -> Result<Timing, ImageIoError> {
    drive(requests, queue_depth, fill, |offset, buf| {
        image.write_at(offset, buf)
    })
}

/// How long a run took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// From the first worker's start to the last worker's end.
    pub wall: Duration,
    /// CPU time the workers spent, summed: unlike `wall`, it does not grow
    /// while other processes hold the CPUs.
    pub cpu: Duration,
}

/// CPU time the calling thread has used.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        now.tv_sec.max(0) as u64,
        now.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// What one worker measured: wall-clock start and end, CPU time used.
type WorkerSpan = (Instant, Instant, Duration);

/// Runs `io` on every request from `queue_depth` threads at once.
fn drive<F>(requests: &Requests, queue_depth: u32, fill: u8, io: F) -> Result<Timing, ImageIoError>
where
    F: Fn(u64, &mut [u8]) -> Result<(), ImageIoError> + Sync,
{
    let next = AtomicU64::new(0);
    let threads = queue_depth.max(1) as usize;
    // Buffers are allocated and threads spawned before anyone starts. Each
    // worker times itself: with more threads than CPUs, this thread may not
    // run again until the workers are done.
    let start_line = Barrier::new(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<WorkerSpan, ImageIoError> {
                    let mut buf = vec![fill; requests.len];
                    start_line.wait();
                    let (started, cpu_before) = (Instant::now(), thread_cpu_time());
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= requests.count {
                            let cpu = thread_cpu_time().saturating_sub(cpu_before);
                            return Ok((started, Instant::now(), cpu));
                        }
                        if let Err(e) = io(requests.offset(i), &mut buf) {
                            next.store(u64::MAX / 2, Ordering::Relaxed);
                            return Err(e);
                        }
                    }
                })
            })
            .collect();
        let mut span: Option<(Instant, Instant)> = None;
        let mut cpu = Duration::ZERO;
        let mut failure = None;
        for worker in workers {
            match worker.join() {
                Ok(Ok((start, end, used))) => {
                    span = Some(span.map_or((start, end), |(s, e)| (s.min(start), e.max(end))));
                    cpu += used;
                }
                Ok(Err(e)) => {
                    failure.get_or_insert(e);
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        match (failure, span) {
            (Some(e), _) => Err(e),
            (None, Some((start, end))) => Ok(Timing {
                wall: end - start,
                cpu,
            }),
            (None, None) => Ok(Timing {
                wall: Duration::ZERO,
                cpu,
            }),
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn offsets_wrap_like_qemu_img_bench() {
        // Observed with `qemu-img bench -w -c 5 -S 41480192` on a 64 MiB disk:
        // the clusters written were 0, 632, 241, 874 and 483.
        let r = Requests {
            count: 5,
            len: 4096,
            step: 4096 * 10127,
            disk_size: 64 * MIB,
        };
        let clusters: Vec<u64> = (0..5).map(|i| r.offset(i) / 65536).collect();
        assert_eq!(clusters, [0, 632, 241, 874, 483]);
    }

    #[test]
    fn scattered_reads_visit_distinct_aligned_units() {
        let r = scattered(256 * MIB, SMALL_REQUEST, 4096, 20_000);
        assert_eq!(r.count, 20_000);
        let offsets: HashSet<u64> = (0..r.count).map(|i| r.offset(i)).collect();
        assert_eq!(offsets.len(), 20_000);
        assert!(
            offsets
                .iter()
                .all(|o| o % 4096 == 0 && o + 4096 <= 256 * MIB)
        );
    }

    #[test]
    fn scattered_writes_hit_distinct_clusters() {
        for (size, cluster, wanted) in [
            (256 * MIB, 64 << 10, 1024),
            (256 * MIB, 256 << 10, 512),
            (16 * MIB, 64 << 10, 64),
        ] {
            let r = scattered(size, SMALL_REQUEST, cluster, wanted);
            assert!(r.count >= wanted / 4, "only {} of {wanted}", r.count);
            let clusters: HashSet<u64> = (0..r.count).map(|i| r.offset(i) / cluster).collect();
            assert_eq!(clusters.len() as u64, r.count);
        }
    }

    #[test]
    fn scattered_works_for_sizes_that_are_not_powers_of_two() {
        let r = scattered(100 * MIB, SMALL_REQUEST, 4096, 1000);
        assert_eq!(gcd(r.step / 4096, 100 * MIB / 4096), 1);
        let r = scattered(MIB, SMALL_REQUEST, MIB, 10);
        assert_eq!(r.count, 1);
    }

    #[test]
    fn every_request_is_done_once_from_many_threads() {
        use strata_storage::{Access, LayerFile};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("top.strata");
        LayerFile::create(&path, 4 * MIB, 64 << 10, None).unwrap();
        let image = Image::open(&path, Access::ReadWrite).unwrap();
        let r = scattered(4 * MIB, SMALL_REQUEST, 64 << 10, 32);
        assert_eq!(r.count, 32);
        write(&image, &r, 8, 0xab).unwrap();
        let mut all = vec![0u8; 4 * MIB as usize];
        image.read_at(0, &mut all).unwrap();
        let written = all
            .chunks(SMALL_REQUEST)
            .filter(|c| c.iter().all(|&b| b == 0xab))
            .count();
        assert_eq!(written, 32);
        let timing = read(&image, &r, 8).unwrap();
        assert!(timing.wall > Duration::ZERO && timing.cpu > Duration::ZERO);
    }

    #[test]
    fn sequential_is_one_pass() {
        let r = sequential(16 * MIB, LARGE_REQUEST);
        assert_eq!(r.count, 128);
        assert_eq!(r.offset(127), 16 * MIB - LARGE_REQUEST as u64);
    }
}
