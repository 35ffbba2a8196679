//! `strata bench guest-disk`: block I/O from inside a Strata guest to
//! `strata blk`, next to what a native host client gets from the same
//! backend, and what attaching a disk costs the VMM in memory.
//!
//! Each round, against one `strata blk serve` on a layered image:
//! 1. the `blkcheck` guest under `strata run --disk` issues `--requests`
//!    4 KiB reads, one at a time, polling for each completion; the rate is
//!    timed from its `bench start` to its `bench done` serial line;
//! 2. the libblkio client does 4 KiB random reads at queue depth 1 for the
//!    same backend, so the two rates sit side by side;
//! 3. `strata run` of `hello` with and without the disk attached gives the
//!    VMM's own memory (peak RSS minus guest RAM resident) both ways.
//!
//! On this project's emulating nested KVM every guest instruction costs
//! about a microsecond, so the guest-side rate says more about the host's
//! KVM than about the disk path; the host-side rate is the backend's.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::blk::client::{Pattern, Session, Workload};
use super::blk::disks::{Layout, StrataStore, write_golden};
use super::blk::servers::{Backend, BackendKind, QsdOptions};
use super::stats::median;
use crate::exit::{ExitStatus, Failure};
use crate::run::RunMetrics;

/// Disk size: small, so that set-up is quick; the reads stay in page cache.
const DISK_SIZE: u64 = 64 << 20;
/// A guest run that takes longer than this is killed and the bench fails.
const GUEST_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, clap::Args)]
pub struct GuestDiskBenchArgs {
    /// Rounds; each runs the guest, the host client and the memory probes once.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,

    /// 4 KiB reads the guest issues per round.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub requests: u32,

    /// Seconds the host client runs per round.
    #[arg(long, default_value_t = 0.5)]
    pub seconds: f64,

    /// Also write the results as a Markdown table to this file.
    #[arg(long, value_name = "PATH")]
    pub markdown: Option<PathBuf>,
}

/// One round's figures.
struct Round {
    guest_iops: f64,
    host_iops: f64,
    overhead_with_disk: f64,
    overhead_without: f64,
}

fn failure(what: &str) -> impl FnOnce(std::io::Error) -> Failure + '_ {
    move |e| Failure(format!("{what}: {e}"))
}

/// Runs the benchmark and prints (and optionally writes) the report.
pub fn run(args: &GuestDiskBenchArgs) -> Result<ExitStatus, Failure> {
    if !(0.05..=60.0).contains(&args.seconds) {
        return Err(Failure("--seconds must be from 0.05 to 60".into()));
    }
    let exe = std::env::current_exe().map_err(failure("cannot find the strata binary"))?;
    let dir = tempfile::tempdir().map_err(failure("cannot create a temporary directory"))?;
    let blkcheck = dir.path().join("blkcheck.elf");
    let hello = dir.path().join("hello.elf");
    std::fs::write(&blkcheck, strata_guest_images::BLKCHECK_ELF)
        .map_err(failure("cannot write blkcheck.elf"))?;
    std::fs::write(&hello, strata_guest_images::HELLO_ELF)
        .map_err(failure("cannot write hello.elf"))?;

    let store = StrataStore::new(exe.clone(), dir.path())?;
    let golden = dir.path().join("golden.raw");
    write_golden(&golden, DISK_SIZE)?;
    let layout = Layout {
        size: DISK_SIZE,
        depth: 1,
        write_region: 0,
    };
    store.build("disk", &golden, &layout)?;
    let socket = dir.path().join("disk.sock");
    let qsd = QsdOptions {
        binary: PathBuf::from("qemu-storage-daemon"),
        aio: "threads".into(),
    };
    let mut backend = Backend::start(
        &BackendKind::Strata {
            image: "disk".into(),
        },
        &store,
        &qsd,
        &socket,
        1,
        &dir.path().join("backend.log"),
    )?;

    let mut rounds = Vec::new();
    for round in 1..=args.rounds {
        let fail = |e: String| Failure(format!("round {round}: {e}"));
        let guest_iops = guest_rate(&exe, &blkcheck, &socket, args.requests).map_err(fail)?;
        backend.check_alive()?;
        let host_iops = host_rate(&socket, args.seconds, u64::from(round)).map_err(fail)?;
        let metrics = dir.path().join("metrics.json");
        let with_disk = vmm_overhead(&exe, &hello, Some(&socket), &metrics).map_err(fail)?;
        let without = vmm_overhead(&exe, &hello, None, &metrics).map_err(fail)?;
        rounds.push(Round {
            guest_iops,
            host_iops,
            overhead_with_disk: with_disk,
            overhead_without: without,
        });
    }
    drop(backend);

    let text = report(&rounds, args);
    print!("{text}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &text)
            .map_err(|e| Failure(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(ExitStatus::Success)
}

/// Reads per second inside the guest, timed between its serial lines.
fn guest_rate(exe: &Path, image: &Path, socket: &Path, requests: u32) -> Result<f64, String> {
    let mut child = Command::new(exe)
        .args(["run", "--memory", "64", "--serial", "stdout", "--kernel"])
        .arg(image)
        .arg("--disk")
        .arg(format!("socket={}", socket.display()))
        .args([
            "--cmdline",
            &format!("blkcheck.ranges=0+4096 blkcheck.bench={requests}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start strata run: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let deadline = Instant::now() + GUEST_TIMEOUT;
    let (mut start, mut done) = (None, None);
    let mut transcript = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("reading the guest's output: {e}"))?;
        let now = Instant::now();
        if line.starts_with("blkcheck: bench start") {
            start = Some(now);
        } else if line.starts_with("blkcheck: bench done") {
            done = Some(now);
        }
        transcript.push_str(&line);
        transcript.push('\n');
        if now > deadline {
            let _ = child.kill();
            break;
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for strata run: {e}"))?;
    match (start, done, out.status.success()) {
        (Some(start), Some(done), true) if done > start => {
            Ok(f64::from(requests) / done.duration_since(start).as_secs_f64())
        }
        _ => Err(format!(
            "the blkcheck guest did not finish its bench ({}): {}{}",
            out.status,
            transcript.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

/// 4 KiB random reads per second at queue depth 1 from the libblkio client.
fn host_rate(socket: &Path, seconds: f64, seed: u64) -> Result<f64, String> {
    let mut session = Session::connect(socket, 1)?;
    let workload = Workload {
        pattern: Pattern::RandRead,
        block: 4096,
        qd: 1,
    };
    let span = session.capacity;
    let result = session.run(
        workload,
        span,
        seed,
        Duration::from_secs_f64(seconds / 5.0),
        Duration::from_secs_f64(seconds),
    )?;
    session.close();
    Ok(result.iops())
}

/// The VMM's own memory in MiB for a `hello` run: peak RSS minus guest RAM.
fn vmm_overhead(
    exe: &Path,
    hello: &Path,
    socket: Option<&Path>,
    metrics: &Path,
) -> Result<f64, String> {
    let mut cmd = Command::new(exe);
    cmd.args(["run", "--memory", "64", "--serial", "none", "--kernel"])
        .arg(hello)
        .arg("--metrics-file")
        .arg(metrics);
    if let Some(socket) = socket {
        cmd.arg("--disk")
            .arg(format!("socket={}", socket.display()));
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot start strata run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "strata run of hello failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = std::fs::read_to_string(metrics).map_err(|e| format!("metrics: {e}"))?;
    let m: RunMetrics = serde_json::from_str(&text).map_err(|e| format!("metrics: {e}"))?;
    let peak = m.peak_rss_bytes.ok_or("no peak RSS in the metrics")?;
    Ok(peak.saturating_sub(m.guest_resident_bytes) as f64 / f64::from(1u32 << 20))
}

fn report(rounds: &[Round], args: &GuestDiskBenchArgs) -> String {
    let pick = |f: fn(&Round) -> f64| median(rounds.iter().map(f).collect());
    let ratios = median(rounds.iter().map(|r| r.guest_iops / r.host_iops).collect());
    let (guest, host) = (pick(|r| r.guest_iops), pick(|r| r.host_iops));
    let (with, without) = (pick(|r| r.overhead_with_disk), pick(|r| r.overhead_without));
    format!(
        "strata bench guest-disk: {} rounds, medians\n\n\
         | 4 KiB reads, one at a time, from `strata blk` | reads/s |\n\
         |---|---|\n\
         | inside a Strata guest (blkcheck, {} reads, polled) | {guest:.0} |\n\
         | host libblkio client, random, QD1 | {host:.0} |\n\
         | guest / host (median of per-round ratios) | {ratios:.3} |\n\n\
         | VMM overhead (peak RSS minus guest RAM, `hello`, 64 MiB) | MiB |\n\
         |---|---|\n\
         | without a disk | {without:.2} |\n\
         | with one vhost-user-blk disk | {with:.2} |\n\
         | cost of the disk | {:.2} |\n",
        rounds.len(),
        args.requests,
        with - without
    )
}
