//! Crash test: a writer in a child process is killed with SIGKILL at random
//! points, many times; the image must then open cleanly, hold every write
//! acknowledged by a `flush`, and hold nothing that was never written.
//!
//! The test binary re-executes itself: with `STRATA_CRASH_CHILD` set, the
//! otherwise ignored `crash_child` test becomes the writer (or, for the lock
//! test, a process that just holds the image open). The writer replays a
//! seeded sequence of operations and prints `flushed <op>` after each flush
//! returns; the parent replays the same sequence in memory to know which
//! versions every 512-byte sector may hold after the crash:
//!
//! ```text
//!  ops:  0 1 2 F 4 5 F 7 8 9 …            F = flush, reported by the child
//!                  ▲ last reported flush
//!  sector s may hold: its version after op 5 (durable), or any version a
//!  later op gave it (the child may have got that far before the kill)
//! ```
//!
//! SIGKILL loses nothing in the page cache, so this checks the commit
//! protocol's ordering of writes against a process crash, not against power
//! loss (which would also need the `fdatasync` barriers to be honoured).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use strata_storage::format::ParentKind;
use strata_storage::{Access, Image, LayerFile, ParentSpec};

const BLOCK: u32 = 4096;
const BS: u64 = BLOCK as u64;
/// Not a block multiple, so the short last block is exercised too.
const SIZE: u64 = 96 * BS - 1000;
const SECTOR: usize = 512;
/// Operations per child run.
const OPS: usize = 300;
const ITERATIONS: u64 = 100;

const GOLDEN: &str = "golden.raw";
const MIDDLE: &str = "layer-0.strata";
const TOP: &str = "layer-1.strata";

const CHILD_TEST: &str = "crash_child";
const ENV_MODE: &str = "STRATA_CRASH_CHILD";
const ENV_DIR: &str = "STRATA_CRASH_DIR";
const ENV_SEED: &str = "STRATA_CRASH_SEED";
const ENV_ITERATIONS: &str = "STRATA_CRASH_ITERATIONS";

/// SplitMix64: small, seedable, and the same in parent and child.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Write { offset: u64, len: u64 },
    WriteZeroes { offset: u64, len: u64 },
    Discard { offset: u64, len: u64 },
    Flush,
}

/// A range of up to three blocks: whole aligned blocks, sector-aligned
/// ranges and arbitrary ones (partial blocks force a copy-up).
fn range(rng: &mut Rng) -> (u64, u64) {
    let offset = match rng.below(3) {
        0 => rng.below(SIZE / BS) * BS,
        1 => rng.below(SIZE / SECTOR as u64) * SECTOR as u64,
        _ => rng.below(SIZE),
    };
    let max = (SIZE - offset).min(3 * BS);
    let len = if rng.below(3) == 0 {
        BS.min(max)
    } else {
        1 + rng.below(max)
    };
    (offset, len)
}

/// The operation sequence for `seed`.
fn ops(seed: u64) -> Vec<Op> {
    let mut rng = Rng(seed);
    let mut written = Vec::new();
    (0..OPS)
        .map(|_| match rng.below(100) {
            0..15 => Op::Flush,
            // Rewrite something written before: in place once the top owns it.
            15..30 if !written.is_empty() => {
                let offset = written[rng.below(written.len() as u64) as usize];
                let len = (1 + rng.below(BS)).min(SIZE - offset);
                Op::Write { offset, len }
            }
            30..38 => {
                let (offset, len) = range(&mut rng);
                Op::WriteZeroes { offset, len }
            }
            38..45 => {
                // Discards stop short of the disk's end: a discard that
                // reaches it without covering a whole block leaves the short
                // last block alone, unlike one that covers a whole block
                // (a hint either way; this test is about crashes).
                let (offset, len) = range(&mut rng);
                Op::Discard {
                    offset,
                    len: len.min(SIZE - 1 - offset).max(1),
                }
            }
            _ => {
                let (offset, len) = range(&mut rng);
                written.push(offset);
                Op::Write { offset, len }
            }
        })
        .collect()
}

/// Bytes no other write (or the base) produces: a hash of (key, position).
fn data(key: u64, offset: u64, len: u64) -> Vec<u8> {
    (offset..offset + len)
        .map(|p| mix(key ^ p.wrapping_mul(0x2545_f491_4f6c_dd1d)) as u8)
        .collect()
}

fn write_key(seed: u64, index: usize) -> u64 {
    mix(seed.wrapping_mul(1_000_003) ^ index as u64)
}

fn golden() -> Vec<u8> {
    data(u64::MAX, 0, SIZE)
}

/// Writes made to the middle (frozen) layer before the child starts.
const MIDDLE_WRITES: [(u64, u64); 4] = [
    (0, 2 * BS),
    (5 * BS + 100, 3000),
    (40 * BS, 6 * BS),
    (90 * BS, 3 * BS),
];

/// The disk as the child finds it: golden base plus the middle layer.
fn initial_disk() -> Vec<u8> {
    let mut disk = golden();
    for (k, &(offset, len)) in MIDDLE_WRITES.iter().enumerate() {
        let bytes = data(mix(0xba5e ^ k as u64), offset, len);
        disk[offset as usize..(offset + len) as usize].copy_from_slice(&bytes);
    }
    disk
}

/// golden.raw ← layer-0 (frozen, some data) ← layer-1 (empty, writable).
fn create_image(dir: &Path) -> PathBuf {
    std::fs::write(dir.join(GOLDEN), golden()).unwrap();
    let middle = dir.join(MIDDLE);
    let spec = ParentSpec {
        kind: ParentKind::Raw,
        id: uuid::Uuid::nil(),
        size: SIZE,
        location: GOLDEN.into(),
    };
    LayerFile::create(&middle, SIZE, BLOCK, Some(&spec)).unwrap();
    let mut image = Image::open(&middle, Access::ReadWrite).unwrap();
    for (k, &(offset, len)) in MIDDLE_WRITES.iter().enumerate() {
        image
            .write_at(offset, &data(mix(0xba5e ^ k as u64), offset, len))
            .unwrap();
    }
    let top = dir.join(TOP);
    image.snapshot(&top, MIDDLE).unwrap();
    image.flush().unwrap();
    top
}

/// Applies `op` to the in-memory disk; returns the byte range it changed.
fn apply(disk: &mut [u8], seed: u64, index: usize, op: Op) -> Option<(u64, u64)> {
    let (start, end) = match op {
        Op::Flush => return None,
        Op::Write { offset, len } => {
            let bytes = data(write_key(seed, index), offset, len);
            disk[offset as usize..(offset + len) as usize].copy_from_slice(&bytes);
            return Some((offset, offset + len));
        }
        Op::WriteZeroes { offset, len } => (offset, offset + len),
        // Discard frees whole blocks only (and the short last block when the
        // range reaches the end of the disk); partial blocks keep their data.
        Op::Discard { offset, len } => {
            let start = offset.next_multiple_of(BS);
            let end = if offset + len == SIZE {
                SIZE
            } else {
                (offset + len) / BS * BS
            };
            if start >= end {
                return None;
            }
            (start, end)
        }
    };
    disk[start as usize..end as usize].fill(0);
    Some((start, end))
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// The child process: does nothing unless the parent set `STRATA_CRASH_CHILD`.
#[test]
#[ignore = "run by the other tests of this file, in a child process"]
fn crash_child() {
    let Ok(mode) = std::env::var(ENV_MODE) else {
        return;
    };
    let top = PathBuf::from(std::env::var(ENV_DIR).unwrap()).join(TOP);
    let image = Image::open(&top, Access::ReadWrite).unwrap();
    say("opened");
    if mode == "hold" {
        // Keep the image open until the parent closes our stdin.
        std::io::stdin().read_to_end(&mut Vec::new()).unwrap();
        return;
    }
    let seed: u64 = std::env::var(ENV_SEED).unwrap().parse().unwrap();
    for (index, op) in ops(seed).into_iter().enumerate() {
        match op {
            Op::Write { offset, len } => image
                .write_at(offset, &data(write_key(seed, index), offset, len))
                .unwrap(),
            Op::WriteZeroes { offset, len } => image.write_zeroes(offset, len).unwrap(),
            Op::Discard { offset, len } => image.discard(offset, len).unwrap(),
            Op::Flush => {
                image.flush().unwrap();
                say(&format!("flushed {index}"));
            }
        }
    }
    say("done");
}

fn spawn_child(mode: &str, dir: &Path, seed: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            CHILD_TEST,
            "--nocapture",
            "--include-ignored",
            "--test-threads=1",
        ])
        .env(ENV_MODE, mode)
        .env(ENV_DIR, dir)
        .env(ENV_SEED, seed.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// What the child has said so far. libtest may put its own text before
/// ours on a line, so markers are looked for anywhere in it.
#[derive(Default)]
struct ChildReport {
    opened: bool,
    done: bool,
    flushes: usize,
    last_flush: Option<usize>,
}

impl ChildReport {
    /// Reads one line; false at end of output.
    fn read_line(&mut self, out: &mut BufReader<ChildStdout>) -> bool {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            return false;
        }
        self.opened |= line.contains("opened");
        self.done |= line.contains("done");
        if let Some((_, rest)) = line.split_once("flushed ") {
            let index: usize = rest.trim().parse().unwrap();
            self.flushes += 1;
            self.last_flush = Some(index);
        }
        true
    }
}

/// One crash: run the writer for `seed`, kill it after a random number of
/// reported flushes plus a random delay, and check the image.
fn crash_once(seed: u64) -> String {
    let dir = tempfile::tempdir().unwrap();
    create_image(dir.path());
    let ops = ops(seed);
    let mut kill_rng = Rng(mix(seed ^ 0x6b69_6c6c));
    let total_flushes = ops.iter().filter(|op| matches!(op, Op::Flush)).count() as u64;
    let kill_after = kill_rng.below(total_flushes + 1) as usize;
    let delay = Duration::from_micros(kill_rng.below(3000));

    let mut child = spawn_child("write", dir.path(), seed);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut report = ChildReport::default();
    while (!report.opened || report.flushes < kill_after) && report.read_line(&mut out) {}
    std::thread::sleep(delay);
    child.kill().unwrap();
    let status = child.wait().unwrap();
    while report.read_line(&mut out) {}
    assert!(
        report.opened && (status.success() || status.signal() == Some(libc::SIGKILL)),
        "seed {seed}: the writer failed on its own ({status}); run it alone with \
         {ENV_MODE}=write {ENV_DIR}=<dir> {ENV_SEED}={seed}"
    );
    verify_after_crash(dir.path(), seed, &ops, report.last_flush);
    format!(
        "seed {seed}: killed after {} flushes + {delay:?}, {}",
        report.flushes, status
    )
}

fn sector(disk: &[u8], s: usize) -> &[u8] {
    &disk[s * SECTOR..((s + 1) * SECTOR).min(disk.len())]
}

fn verify_after_crash(dir: &Path, seed: u64, ops: &[Op], last_flush: Option<usize>) {
    // Every op before the last reported flush is durable.
    let durable = last_flush.map_or(0, |f| f + 1);
    let mut disk = initial_disk();
    for (index, op) in ops.iter().enumerate().take(durable) {
        apply(&mut disk, seed, index, *op);
    }
    let sectors = disk.len().div_ceil(SECTOR);
    let mut allowed: Vec<Vec<Vec<u8>>> = (0..sectors)
        .map(|s| vec![sector(&disk, s).to_vec()])
        .collect();
    for (index, op) in ops.iter().enumerate().skip(durable) {
        if let Some((start, end)) = apply(&mut disk, seed, index, *op) {
            let (first, last) = (start as usize / SECTOR, (end as usize).div_ceil(SECTOR));
            for (s, versions) in allowed.iter_mut().enumerate().take(last).skip(first) {
                let version = sector(&disk, s);
                if !versions.iter().any(|v| v == version) {
                    versions.push(version.to_vec());
                }
            }
        }
    }

    let top = dir.join(TOP);
    let image = Image::open(&top, Access::ReadWrite)
        .unwrap_or_else(|e| panic!("seed {seed}: the image does not open after the crash: {e}"));
    let mut found = vec![0u8; SIZE as usize];
    image.read_at(0, &mut found).unwrap();
    for (s, versions) in allowed.iter().enumerate() {
        let got = sector(&found, s);
        assert!(
            versions.iter().any(|v| v == got),
            "seed {seed}: sector {s} (block {}) after a crash following the flush at op {last_flush:?} \
             holds data that is neither its flushed version nor any later one ({} versions allowed; \
             reads as zeros: {})",
            s * SECTOR / BS as usize,
            versions.len(),
            got.iter().all(|b| *b == 0),
        );
    }

    // The crashed image still takes writes, commits them and reopens.
    let mut rng = Rng(seed ^ 0x00c0_ffee);
    let (offset, len) = range(&mut rng);
    let bytes = data(mix(seed ^ 0xaf7e_0007), offset, len);
    image.write_at(offset, &bytes).unwrap();
    image.flush().unwrap();
    drop(image);
    found[offset as usize..(offset + len) as usize].copy_from_slice(&bytes);
    let image = Image::open(&top, Access::ReadOnly).unwrap();
    let mut again = vec![0u8; SIZE as usize];
    image.read_at(0, &mut again).unwrap();
    assert!(
        again == found,
        "seed {seed}: a write flushed after the crash did not survive a reopen"
    );
}

#[test]
fn flushed_writes_survive_a_killed_writer() {
    let base_seed = std::env::var(ENV_SEED)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0000);
    let iterations = std::env::var(ENV_ITERATIONS)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(ITERATIONS);
    let started = Instant::now();
    for seed in base_seed..base_seed + iterations {
        let summary = crash_once(seed);
        eprintln!("{summary}");
    }
    eprintln!("{iterations} crashes checked in {:?}", started.elapsed());
}

#[test]
fn second_writer_is_refused_with_the_holders_pid() {
    let dir = tempfile::tempdir().unwrap();
    let top = create_image(dir.path());
    let mut child = spawn_child("hold", dir.path(), 0);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut report = ChildReport::default();
    while !report.opened && report.read_line(&mut out) {}
    assert!(report.opened, "the holding child did not open the image");

    let wanted = format!("in use by process {}", child.id());
    for access in [Access::ReadWrite, Access::ReadOnly] {
        let err = Image::open(&top, access).unwrap_err().to_string();
        assert!(
            err.contains(&wanted),
            "{access:?} open while a writer holds the image: {err}"
        );
        assert!(
            err.contains(&top.display().to_string()),
            "error does not name the layer: {err}"
        );
    }

    // The lock goes with the holder.
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    Image::open(&top, Access::ReadWrite).unwrap();
}
