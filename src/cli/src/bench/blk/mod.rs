//! `strata bench blk`: `strata blk serve` against `qemu-storage-daemon`,
//! both driven over vhost-user-blk by the same native client (libblkio).
//!
//! Both serve chains of the same depth with the same bytes over one raw
//! golden base (see [`disks`]); `qemu-storage-daemon` with `null-co` gives
//! the protocol's ceiling. Each round starts every backend afresh for each
//! (depth, queues) group, in alternating order, and runs every workload on
//! it; the report gives medians over rounds and per-round ratios.
//! `--compare-options` adds a second `strata blk serve` with other `--disk`
//! keys (a *variant*, e.g. `poll=50`) to the same rotation, for side-by-side
//! figures of one option.

pub(crate) mod client;
pub(crate) mod disks;
mod report;
pub(crate) mod servers;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use client::{MAX_BLOCK, Pattern, Session, Workload};
use disks::{BLOCK, Layout, StrataStore};
use report::{Cell, Summary};
use servers::{Backend, BackendKind, QsdOptions};

use crate::exit::{ExitStatus, Failure};

const EXAMPLES: &str = "\
Examples:
  strata bench blk                          full run, about 4 minutes
  strata bench blk --quick                  smoke test, under 30 seconds
  strata bench blk --depths 16 --queues 2 --rounds 5 --markdown blk.md
  strata bench blk --depths 4 --queues 1 --compare-options poll=50
  strata bench blk --strata-options direct --compare-options direct,poll=50";

#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct BlkBenchArgs {
    /// Rounds; each round runs every backend once per cell, interleaved.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,

    /// Seconds measured per workload and backend, after a warm-up of a fifth
    /// of that (at most 0.1 s).
    #[arg(long, default_value_t = 0.5)]
    pub seconds: f64,

    /// Virtual disk size (a multiple of 64K).
    #[arg(long, default_value = "512M", value_parser = crate::args::parse_bytes)]
    pub size: u64,

    /// Chain depths: layers over the golden base.
    #[arg(long, value_delimiter = ',', default_values_t = [1u32, 4, 16])]
    pub depths: Vec<u32>,

    /// Virtqueue counts (the client drives each with its own thread).
    #[arg(long, value_delimiter = ',', default_values_t = [1u16, 2])]
    pub queues: Vec<u16>,

    /// Smoke test: 64 MiB disk, depths 1 and 4, one queue, 2 rounds of
    /// 0.15 s runs. Its figures mean little.
    #[arg(long)]
    pub quick: bool,

    /// The qemu-storage-daemon binary to compare against.
    #[arg(long, value_name = "PATH", default_value = "qemu-storage-daemon")]
    pub qsd: PathBuf,

    /// qemu-storage-daemon's file I/O: `io_uring` or `threads`.
    #[arg(long, default_value = "io_uring", value_parser = ["io_uring", "threads"])]
    pub qsd_aio: String,

    /// Scratch directory for the disks (default: $TMPDIR).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Also write the results as a Markdown table to this file.
    #[arg(long, value_name = "PATH")]
    pub markdown: Option<PathBuf>,

    /// Extra `--disk` keys for `strata blk serve`, e.g. `poll=50` or
    /// `direct` (image, socket and queues are the bench's).
    #[arg(long, value_name = "KEYS", default_value = "")]
    pub strata_options: String,

    /// Also measure a variant: `strata blk serve` with these `--disk` keys
    /// instead of --strata-options, in the same rounds, with its figures and
    /// its ratio to strata in extra columns.
    #[arg(long, value_name = "KEYS")]
    pub compare_options: Option<String>,
}

/// Checks extra `--disk` keys given to the bench.
fn check_options(flag: &str, options: &str) -> Result<(), Failure> {
    let reserved = options
        .split(',')
        .map(|part| part.split_once('=').map_or(part, |(key, _)| key))
        .find(|key| ["image", "path", "socket", "queues"].contains(key));
    match reserved {
        Some(key) => Err(Failure(format!(
            "{flag}: {key}= is set by the bench; give other --disk keys such as poll=50 or direct"
        ))),
        None => Ok(()),
    }
}

/// The run's shape after `--quick` and checks.
struct Plan {
    rounds: u32,
    warmup: Duration,
    duration: Duration,
    size: u64,
    write_region: u64,
    depths: Vec<u32>,
    queues: Vec<u16>,
    workloads: Vec<Workload>,
}

fn plan(args: &BlkBenchArgs) -> Result<Plan, Failure> {
    let (rounds, seconds, size, depths, queues) = if args.quick {
        (2, 0.15, 64 << 20, vec![1, 4], vec![1])
    } else {
        (
            args.rounds,
            args.seconds,
            args.size,
            args.depths.clone(),
            args.queues.clone(),
        )
    };
    if !(0.01..=600.0).contains(&seconds) {
        return Err(Failure("--seconds: give 0.01 to 600".into()));
    }
    if size < 16 * BLOCK || size % BLOCK != 0 {
        return Err(Failure(
            "--size: give a multiple of 64K, at least 1M".into(),
        ));
    }
    if depths.is_empty() || depths.iter().any(|d| !(1..=64).contains(d)) {
        return Err(Failure("--depths: give depths from 1 to 64".into()));
    }
    if queues.is_empty() || queues.iter().any(|q| !(1..=8).contains(q)) {
        return Err(Failure("--queues: give queue counts from 1 to 8".into()));
    }
    let duration = Duration::from_secs_f64(seconds);
    let workload = |pattern, block, qd| Workload { pattern, block, qd };
    Ok(Plan {
        rounds,
        warmup: (duration / 5).min(Duration::from_millis(100)),
        duration,
        size,
        write_region: (size / 8).min(64 << 20) / BLOCK * BLOCK,
        depths,
        queues,
        workloads: vec![
            workload(Pattern::RandRead, 4096, 1),
            workload(Pattern::RandRead, 4096, 32),
            workload(Pattern::SeqRead, MAX_BLOCK, 1),
            workload(Pattern::SeqRead, MAX_BLOCK, 32),
            workload(Pattern::RandWrite, 4096, 1),
            workload(Pattern::RandWrite, 4096, 32),
        ],
    })
}

fn require_tool(tool: &Path, why: &str) -> Result<(), Failure> {
    let works = Command::new(tool)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|out| out.status.success());
    if works {
        Ok(())
    } else {
        Err(Failure(format!(
            "{} not found or not working: it is needed {why}",
            tool.display()
        )))
    }
}

/// Everything the rounds need: the scratch files and how to start backends.
struct Bench {
    plan: Plan,
    dir: PathBuf,
    store: StrataStore,
    qsd: QsdOptions,
    /// Per depth: the Strata image name and the qcow2 top overlay.
    chains: Vec<(u32, String, PathBuf)>,
    /// Extra `--disk` keys of the strata contender.
    strata_options: String,
    /// The variant's `--disk` keys, if one is compared.
    variant_options: Option<String>,
}

impl Bench {
    fn strata(&self, image: &str) -> BackendKind {
        BackendKind::StrataWithOptions {
            image: image.to_string(),
            options: self.strata_options.clone(),
        }
    }

    fn variant(&self, image: &str) -> Option<BackendKind> {
        let options = self.variant_options.clone()?;
        Some(BackendKind::StrataWithOptions {
            image: image.to_string(),
            options,
        })
    }

    fn layout(&self, depth: u32) -> Layout {
        Layout {
            size: self.plan.size,
            depth,
            write_region: self.plan.write_region,
        }
    }

    fn start(&self, kind: &BackendKind, queues: u16) -> Result<(Backend, Session), Failure> {
        let socket = self.dir.join("blk.sock");
        let backend = Backend::start(
            kind,
            &self.store,
            &self.qsd,
            &socket,
            queues,
            &self.dir.join("backend.log"),
        )?;
        let session = Session::connect(&socket, usize::from(queues))
            .map_err(|e| Failure(format!("{e} ({})", backend.describe())))?;
        if session.capacity != self.plan.size {
            return Err(Failure(format!(
                "{} reports {} bytes, expected {}",
                backend.describe(),
                session.capacity,
                self.plan.size
            )));
        }
        Ok((backend, session))
    }

    /// Reads the whole disk through `kind` and compares it with the model;
    /// this also warms the page cache for the measured runs.
    fn verify(&self, kind: &BackendKind, depth: u32, label: &str) -> Result<(), Failure> {
        let (backend, mut session) = self.start(kind, 1)?;
        let layout = self.layout(depth);
        let mut expected = vec![0u8; BLOCK as usize];
        session
            .read_all(self.plan.size, MAX_BLOCK, |offset, data| {
                for (i, got) in data.chunks(BLOCK as usize).enumerate() {
                    let block = offset / BLOCK + i as u64;
                    layout.expected(block, &mut expected);
                    if got != expected.as_slice() {
                        return Err(format!(
                            "{label} at depth {depth}: block {block} does not hold the expected bytes"
                        ));
                    }
                }
                Ok(())
            })
            .map_err(|e| Failure(format!("{e} ({})", backend.describe())))?;
        session.close();
        drop(backend);
        Ok(())
    }

    /// One backend session: every workload once. Returns one summary per
    /// workload.
    fn session(
        &self,
        kind: &BackendKind,
        queues: u16,
        round: u32,
        label: &str,
    ) -> Result<Vec<Summary>, Failure> {
        let (mut backend, mut session) = self.start(kind, queues)?;
        let mut out = Vec::new();
        for (index, workload) in self.plan.workloads.iter().enumerate() {
            let span = match workload.pattern {
                Pattern::RandWrite => self.plan.write_region,
                Pattern::RandRead | Pattern::SeqRead => self.plan.size,
            };
            let seed = u64::from(round) * 1000 + index as u64 + 1;
            let result = session
                .run(*workload, span, seed, self.plan.warmup, self.plan.duration)
                .map_err(|e| {
                    Failure(format!(
                        "{label}, {}: {e} ({})",
                        workload.name(),
                        backend.describe()
                    ))
                })?;
            out.push(Summary::from(&result));
        }
        backend.check_alive()?;
        session.close();
        drop(backend);
        // Write the dirty pages out now, so that no backend's writeback
        // lands in the next one's runs.
        // SAFETY: sync(2) takes no arguments and cannot fail.
        unsafe { libc::sync() };
        Ok(out)
    }
}

fn build(args: &BlkBenchArgs, plan: Plan, dir: &Path) -> Result<Bench, Failure> {
    let exe = std::env::current_exe()
        .map_err(|e| Failure(format!("cannot find the strata binary itself: {e}")))?;
    let store = StrataStore::new(exe, dir)?;
    let golden = dir.join("golden.raw");
    disks::write_golden(&golden, plan.size)?;
    let mut bench = Bench {
        plan,
        dir: dir.to_path_buf(),
        store,
        qsd: QsdOptions {
            binary: args.qsd.clone(),
            aio: args.qsd_aio.clone(),
        },
        chains: Vec::new(),
        strata_options: args.strata_options.clone(),
        variant_options: args.compare_options.clone(),
    };
    for &depth in &bench.plan.depths.clone() {
        let layout = bench.layout(depth);
        let name = format!("d{depth}");
        bench.store.build(&name, &golden, &layout)?;
        let top = disks::build_qcow2(dir, &golden, &layout)?;
        bench.chains.push((depth, name, top));
    }
    Ok(bench)
}

/// Runs the benchmark and prints (and optionally writes) the report.
pub fn run(args: &BlkBenchArgs) -> Result<ExitStatus, Failure> {
    let began = Instant::now();
    let plan = plan(args)?;
    check_options("--strata-options", &args.strata_options)?;
    if let Some(options) = &args.compare_options {
        check_options("--compare-options", options)?;
    }
    require_tool(&args.qsd, "as the reference backend")?;
    require_tool(Path::new("qemu-img"), "to build the qcow2 chains")?;
    require_tool(Path::new("qemu-io"), "to build the qcow2 chains")?;
    let scratch = match &args.dir {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .map_err(|e| Failure(format!("cannot create a scratch directory: {e}")))?;
    eprintln!("strata bench blk: building the disks");
    let bench = build(args, plan, scratch.path())?;
    eprintln!("strata bench blk: checking both sides' bytes (and warming the page cache)");
    for (depth, name, top) in &bench.chains {
        bench.verify(&bench.strata(name), *depth, "strata")?;
        if let Some(variant) = bench.variant(name) {
            bench.verify(&variant, *depth, "variant")?;
        }
        bench.verify(&BackendKind::QsdQcow2 { top: top.clone() }, *depth, "qsd")?;
    }
    let cells = measure(&bench)?;
    let variant_line = bench.variant_options.as_ref().map(|v| {
        format!(
            "strata: --disk ...,{}; variant: --disk ...,{v}",
            if bench.strata_options.is_empty() {
                "(no extra keys)"
            } else {
                &bench.strata_options
            }
        )
    });
    let out = report::text(&cells, variant_line.as_deref());
    print!("{out}");
    let elapsed = began.elapsed().as_secs_f64();
    eprintln!("strata bench blk: done in {elapsed:.0} s");
    if let Some(path) = &args.markdown {
        let mut intro = format!(
            "{} rounds of {:.2} s per workload and backend; {} MiB disk; write region {} MiB",
            bench.plan.rounds,
            bench.plan.duration.as_secs_f64(),
            bench.plan.size >> 20,
            bench.plan.write_region >> 20
        );
        if let Some(line) = &variant_line {
            intro = format!("{intro}; {line}");
        }
        std::fs::write(path, report::markdown(&cells, &intro))
            .map_err(|e| Failure(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(ExitStatus::Success)
}

/// All rounds. Within a round, for each queue count: the null ceiling
/// first or last (alternating by round), and per depth Strata, qsd (and the
/// variant) in an order that rotates from group to group.
fn measure(bench: &Bench) -> Result<Vec<Cell>, Failure> {
    let plan = &bench.plan;
    let mut cells = Vec::new();
    for &queues in &plan.queues {
        for &(depth, _, _) in &bench.chains {
            for &workload in &plan.workloads {
                cells.push(Cell {
                    workload,
                    depth,
                    queues,
                    strata: Vec::new(),
                    qsd: Vec::new(),
                    null: Vec::new(),
                    variant: Vec::new(),
                });
            }
        }
    }
    let n_workloads = plan.workloads.len();
    for round in 0..plan.rounds {
        eprintln!("strata bench blk: round {}/{}", round + 1, plan.rounds);
        for (qi, &queues) in plan.queues.iter().enumerate() {
            let null_kind = BackendKind::QsdNull { size: plan.size };
            let null_first = round % 2 == 0;
            let mut null = None;
            if null_first {
                null = Some(bench.session(&null_kind, queues, round, "null-co")?);
            }
            for (di, (depth, name, top)) in bench.chains.iter().enumerate() {
                let mut contenders = vec![
                    ("strata", bench.strata(name)),
                    ("qsd", BackendKind::QsdQcow2 { top: top.clone() }),
                ];
                if let Some(variant) = bench.variant(name) {
                    contenders.push(("variant", variant));
                }
                let shift = (round as usize + di + qi) % contenders.len();
                contenders.rotate_left(shift);
                let first = (qi * bench.chains.len() + di) * n_workloads;
                for (label, kind) in &contenders {
                    let runs = bench.session(kind, queues, round, label)?;
                    for (w, run) in runs.into_iter().enumerate() {
                        let cell = &mut cells[first + w];
                        debug_assert_eq!(cell.depth, *depth);
                        match *label {
                            "strata" => cell.strata.push(run),
                            "qsd" => cell.qsd.push(run),
                            _ => cell.variant.push(run),
                        }
                    }
                }
            }
            let null = match null {
                Some(n) => n,
                None => bench.session(&null_kind, queues, round, "null-co")?,
            };
            for di in 0..bench.chains.len() {
                let first = (qi * bench.chains.len() + di) * n_workloads;
                for (w, n) in null.iter().enumerate() {
                    cells[first + w].null.push(*n);
                }
            }
        }
    }
    Ok(cells)
}
