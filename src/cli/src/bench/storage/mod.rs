//! `strata image bench`: the storage engine against qcow2, side by side.
//!
//! The same virtual disk is built as a Strata chain and as a qcow2 chain of
//! each depth over one raw golden base, and checked byte for byte
//! ([`chains`]). Then, round after round, every workload runs at every queue
//! depth and chain depth on both sides in turn (who goes first alternates):
//! Strata through the engine in this process, qcow2 through `qemu-img
//! bench`, i.e. QEMU's own block layer. Both use buffered I/O on a warm page
//! cache, and both issue the very same offsets ([`workload`]). Writes go to
//! a fresh, empty top layer each round. Strata's reads at the shallowest
//! and the deepest chain are also compared in short runs alternated back to
//! back, which cancels most of a shared machine's slow spells. A last part
//! measures what a first small write costs at each block size
//! ([`block_size`]).

mod block_size;
mod chains;
mod qemu_img;
mod report;
mod workload;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use strata_storage::format::TableEntry;
use strata_storage::{Access, Image};

use crate::args::parse_mib;
use crate::exit::{ExitStatus, Failure};
use chains::{BLOCK, Chains, Content};
pub use qemu_img::QemuAio;
use qemu_img::QemuTools;
use report::{Cell, CopyUpRow, Flatness, Report, Runs};
use workload::{LARGE_REQUEST, Requests, SMALL_REQUEST, Workload};

const BENCH_HELP: &str = "\
Builds the same virtual disk as Strata and qcow2 chains of each depth over one
raw base, checks them byte for byte, then measures 4 KiB random reads, 128 KiB
sequential reads, 4 KiB first writes (copy-up) and rewrites on both, round after
round, and the copy-up cost per block size. Needs qemu-img and qemu-io
(qemu-utils); a default run takes two to three minutes and 2 GiB of disk.

Examples:
  strata image bench
  strata image bench --quick
  strata image bench --depths 1,64 --queue-depths 1 --runs 5 --markdown storage.md";

/// `strata image bench`: Strata's storage engine against qcow2.
#[derive(Debug, clap::Args)]
#[command(after_help = BENCH_HELP)]
pub struct StorageBenchArgs {
    /// Rounds; each runs every measurement once per side, interleaved
    /// [default: 9; 1 with --quick].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub runs: Option<u32>,

    /// Virtual disk size, in MiB unless suffixed, at least 4 MiB
    /// [default: 256; 16 with --quick].
    #[arg(long, value_name = "SIZE", value_parser = parse_mib)]
    pub size: Option<u64>,

    /// Chain depths to compare, layers over the base [default: 1,4,16,64;
    /// 1,4 with --quick].
    #[arg(long, value_name = "N,...", value_delimiter = ',',
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub depths: Vec<u32>,

    /// Queue depths (requests in flight) [default: 1,32].
    #[arg(long, value_name = "N,...", value_delimiter = ',',
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub queue_depths: Vec<u32>,

    /// A smoke test: a 16 MiB disk, depths 1 and 4, a few hundred requests,
    /// one round. Its figures mean little.
    #[arg(long)]
    pub quick: bool,

    /// Build the images in a new directory inside DIR [default: $TMPDIR].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Keep the images afterwards.
    #[arg(long)]
    pub keep: bool,

    /// How `qemu-img bench` submits requests.
    #[arg(long, value_enum, default_value_t = QemuAio::Auto)]
    pub qemu_aio: QemuAio,

    /// The `qemu-img` binary.
    #[arg(long, value_name = "PATH", default_value = "qemu-img")]
    pub qemu_img: PathBuf,

    /// The `qemu-io` binary (fills the qcow2 layers).
    #[arg(long, value_name = "PATH", default_value = "qemu-io")]
    pub qemu_io: PathBuf,

    /// Also write the results as Markdown to this file.
    #[arg(long, value_name = "PATH")]
    pub markdown: Option<PathBuf>,
}

/// The arguments with defaults filled in.
struct Settings {
    runs: u32,
    size: u64,
    depths: Vec<u32>,
    queue_depths: Vec<u32>,
    /// Random reads per run, for qcow2 and for Strata.
    random_reads: [u64; 2],
    /// Passes over the disk per sequential run, for qcow2 and for Strata.
    sequential_passes: [u64; 2],
    first_writes: u64,
    copy_up_writes: u64,
    /// Pairs of short Strata runs per round comparing the shallowest and
    /// the deepest chain.
    flat_pairs: u32,
}

const MIB: u64 = 1 << 20;

impl Settings {
    fn new(args: &StorageBenchArgs) -> Result<Self, Failure> {
        let list = |given: &[u32], default: &[u32]| {
            let mut list = if given.is_empty() {
                default.to_vec()
            } else {
                given.to_vec()
            };
            list.sort_unstable();
            list.dedup();
            list
        };
        let quick = args.quick;
        let size = args.size.unwrap_or(if quick { 16 } else { 256 });
        if size < 4 {
            return Err(Failure(format!(
                "--size {size} MiB is too small: use at least 4 MiB"
            )));
        }
        let depths: &[u32] = if quick { &[1, 4] } else { &[1, 4, 16, 64] };
        // Strata runs the same request sequence, only further, so that its
        // runs last about as long as qcow2's (100 ms and more) and are as
        // little disturbed by this shared machine.
        Ok(Self {
            runs: args.runs.unwrap_or(if quick { 1 } else { 9 }),
            size: size * MIB,
            depths: list(&args.depths, depths),
            queue_depths: list(&args.queue_depths, &[1, 32]),
            random_reads: if quick { [400, 400] } else { [20_000, 100_000] },
            sequential_passes: if quick { [1, 1] } else { [2, 8] },
            first_writes: if quick { 64 } else { 2048 },
            copy_up_writes: if quick { 32 } else { 1024 },
            flat_pairs: if quick { 1 } else { 5 },
        })
    }
}

/// What each side runs for one workload: the same sequence of offsets, of
/// which Strata may run more.
#[derive(Clone, Copy)]
struct Sides {
    strata: Requests,
    qcow2: Requests,
}

/// The requests of each workload.
struct Plan {
    random_reads: Sides,
    sequential_reads: Sides,
    writes: Requests,
    /// The short runs that compare depths: as many random reads as qcow2
    /// runs, one sequential pass.
    flat: [Requests; 2],
}

impl Plan {
    fn new(settings: &Settings) -> Self {
        let size = settings.size;
        let [qcow2_reads, strata_reads] = settings.random_reads;
        let random = workload::scattered(size, SMALL_REQUEST, SMALL_REQUEST as u64, qcow2_reads);
        let pass = workload::sequential(size, LARGE_REQUEST);
        let [qcow2_passes, strata_passes] = settings.sequential_passes;
        Self {
            random_reads: Sides {
                strata: Requests {
                    count: strata_reads,
                    ..random
                },
                qcow2: random,
            },
            sequential_reads: Sides {
                strata: Requests {
                    count: pass.count * strata_passes,
                    ..pass
                },
                qcow2: Requests {
                    count: pass.count * qcow2_passes,
                    ..pass
                },
            },
            flat: [random, pass],
            // One write per block, so that each first write is a copy-up.
            writes: workload::scattered(
                size,
                SMALL_REQUEST,
                u64::from(BLOCK),
                settings.first_writes,
            ),
        }
    }

    fn requests(&self, workload: Workload) -> Sides {
        match workload {
            Workload::RandRead => self.random_reads,
            Workload::SeqRead => self.sequential_reads,
            Workload::FirstWrite | Workload::Rewrite => Sides {
                strata: self.writes,
                qcow2: self.writes,
            },
        }
    }
}

fn progress(message: &str) {
    eprintln!("strata image bench: {message}");
}

/// Runs the benchmark and prints (and optionally writes) the report.
pub fn run(args: &StorageBenchArgs) -> Result<ExitStatus, Failure> {
    let started = Instant::now();
    let settings = Settings::new(args)?;
    let mut qemu =
        QemuTools::find(&args.qemu_img, &args.qemu_io, args.qemu_aio).map_err(Failure)?;
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let workdir = tempfile::Builder::new()
        .prefix("strata-image-bench-")
        .tempdir_in(&parent)
        .map_err(|e| {
            Failure(format!(
                "cannot create a directory in {}: {e}",
                parent.display()
            ))
        })?;
    // Absolute, since qemu-io runs from inside it.
    let root = workdir
        .path()
        .canonicalize()
        .map_err(|e| Failure(format!("{}: {e}", workdir.path().display())))?;
    let outcome = measure(&settings, &mut qemu, &root);
    if args.keep {
        progress(&format!("images kept in {}", workdir.keep().display()));
    }
    let Measured {
        cells,
        flatness,
        copy_up,
    } = outcome.map_err(Failure)?;

    let setup = format!(
        "Strata engine in process (queue depth = threads sharing one image) vs \
         qcow2 through `qemu-img bench -i {}` ({}; -t writeback, for writes -t unsafe); \
         {} MiB disk, 64 KiB blocks and clusters, buffered I/O, warm page cache",
        qemu.aio.flag(),
        qemu.version,
        settings.size / MIB
    );
    let report = Report {
        setup,
        runs: settings.runs,
        cells: &cells,
        flatness: &flatness,
        copy_up: &copy_up,
        elapsed: started.elapsed(),
    };
    print!("{}", report.text());
    if let Some(path) = &args.markdown {
        std::fs::write(path, report.markdown())
            .map_err(|e| Failure(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(ExitStatus::Success)
}

/// Everything measured.
struct Measured {
    cells: Vec<Cell>,
    flatness: Vec<Flatness>,
    copy_up: Vec<CopyUpRow>,
}

/// Builds the disks and runs every round.
fn measure(settings: &Settings, qemu: &mut QemuTools, root: &Path) -> Result<Measured, String> {
    progress(&format!(
        "writing a {} MiB golden base in {}",
        settings.size / MIB,
        root.display()
    ));
    let content = Content::create(root, settings.size)?;
    qemu.settle_aio(&content.base());
    let qemu: &QemuTools = qemu;
    let mut all_chains = Vec::new();
    for &depth in &settings.depths {
        progress(&format!("building and checking the depth-{depth} chains"));
        let chains = Chains::build(&content, depth, qemu)?;
        chains.verify(&content, qemu)?;
        all_chains.push(chains);
    }

    let plan = Plan::new(settings);
    let mut cells = Vec::new();
    for workload in Workload::ALL {
        for &queue_depth in &settings.queue_depths {
            for &depth in &settings.depths {
                let sides = plan.requests(workload);
                cells.push(Cell {
                    workload,
                    queue_depth,
                    depth,
                    len: sides.strata.len,
                    strata: Runs::new(sides.strata.count),
                    qcow2: Runs::new(sides.qcow2.count),
                });
            }
        }
    }
    let mut flatness = Vec::new();
    for &queue_depth in &settings.queue_depths {
        for workload in [Workload::RandRead, Workload::SeqRead] {
            flatness.push(Flatness {
                workload,
                queue_depth,
                wall: vec![],
                cpu: vec![],
            });
        }
    }
    let mut copy_up: Vec<CopyUpRow> = block_size::BLOCK_SIZES
        .iter()
        .map(|&block_size| {
            let requests = block_size::requests(settings.size, block_size, settings.copy_up_writes);
            CopyUpRow {
                block_size,
                requests,
                strata: Runs::new(requests.count),
                qcow2: Runs::new(requests.count),
            }
        })
        .collect();

    for round in 0..settings.runs {
        progress(&format!("round {} of {}", round + 1, settings.runs));
        let strata_first = round % 2 == 0;
        // Each round starts at another depth, so none is always measured first.
        let n = all_chains.len();
        let rotated: Vec<&Chains> = all_chains
            .iter()
            .cycle()
            .skip(round as usize % n)
            .take(n)
            .collect();
        let images = rotated
            .iter()
            .map(|chains| Image::open(&chains.strata_top, Access::ReadOnly))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("cannot open a Strata chain: {e}"))?;
        settle();
        // Reads of every depth back to back, so that depths compare closely.
        for &qd in &settings.queue_depths {
            for workload in [Workload::RandRead, Workload::SeqRead] {
                let sides = plan.requests(workload);
                for (chains, image) in rotated.iter().zip(&images) {
                    let (s, q) = side_by_side(
                        strata_first,
                        || {
                            let timing = workload::read(image, &sides.strata, qd);
                            timing.map(|t| t.wall).map_err(|e| e.to_string())
                        },
                        || qemu.bench(&chains.qcow2_top, &sides.qcow2, qd, None),
                    )?;
                    record(&mut cells, workload, qd, chains.depth, [s, q]);
                }
            }
        }
        let by_depth = |depth| rotated.iter().zip(&images).find(|(c, _)| c.depth == depth);
        let shallowest = settings.depths.first().copied().and_then(by_depth);
        let deepest = settings.depths.last().copied().and_then(by_depth);
        if let (Some((_, shallow)), Some((_, deep))) = (shallowest, deepest)
            && settings.depths.len() > 1
        {
            for entry in &mut flatness {
                let requests = plan.flat[usize::from(entry.workload == Workload::SeqRead)];
                for pair in 0..settings.flat_pairs {
                    let (s, d) = side_by_side(
                        pair % 2 == 0,
                        || workload::read(shallow, &requests, entry.queue_depth),
                        || workload::read(deep, &requests, entry.queue_depth),
                    )
                    .map_err(|e| e.to_string())?;
                    let ratio =
                        |s: Duration, d: Duration| s.as_secs_f64() / d.as_secs_f64().max(1e-9);
                    entry.wall.push(ratio(s.wall, d.wall));
                    entry.cpu.push(ratio(s.cpu, d.cpu));
                }
            }
        }
        drop(images);
        for &qd in &settings.queue_depths {
            for chains in &rotated {
                // The first round checks once per chain that both sides
                // wrote the same blocks.
                let check = round == 0 && qd == settings.queue_depths[0];
                let ((s, strata_blocks), (q, qcow2_blocks)) = side_by_side(
                    strata_first,
                    || strata_writes(chains, &plan.writes, qd, check),
                    || qcow2_writes(chains, qemu, &plan.writes, qd, check),
                )?;
                if strata_blocks != qcow2_blocks {
                    return Err(format!(
                        "depth {}: Strata and qcow2 wrote different blocks ({} and {})",
                        chains.depth,
                        strata_blocks.len(),
                        qcow2_blocks.len()
                    ));
                }
                record(
                    &mut cells,
                    Workload::FirstWrite,
                    qd,
                    chains.depth,
                    [s[0], q[0]],
                );
                record(
                    &mut cells,
                    Workload::Rewrite,
                    qd,
                    chains.depth,
                    [s[1], q[1]],
                );
            }
        }
        for row in &mut copy_up {
            let (s, q) = side_by_side(
                strata_first,
                || block_size::strata(&content, row.block_size, &row.requests),
                || block_size::qcow2(&content, qemu, row.block_size, &row.requests),
            )?;
            row.strata.times.push(s);
            row.qcow2.times.push(q);
        }
    }
    Ok(Measured {
        cells,
        flatness,
        copy_up,
    })
}

/// Lets the previous round's file system work finish before reads are timed.
fn settle() {
    // SAFETY: sync(2) takes no arguments and touches no memory of ours.
    unsafe { libc::sync() };
}

/// Runs `strata` and `qcow2` (or any two contenders) one after the other,
/// in the order given.
fn side_by_side<S, Q, E>(
    strata_first: bool,
    strata: impl FnOnce() -> Result<S, E>,
    qcow2: impl FnOnce() -> Result<Q, E>,
) -> Result<(S, Q), E> {
    if strata_first {
        let s = strata()?;
        Ok((s, qcow2()?))
    } else {
        let q = qcow2()?;
        Ok((strata()?, q))
    }
}

/// Adds one round's times (first Strata's, then qcow2's) to their cell.
fn record(cells: &mut [Cell], workload: Workload, qd: u32, depth: u32, [s, q]: [Duration; 2]) {
    if let Some(cell) = cells
        .iter_mut()
        .find(|c| c.workload == workload && c.queue_depth == qd && c.depth == depth)
    {
        cell.strata.times.push(s);
        cell.qcow2.times.push(q);
    }
}

/// Timed runs are returned as [first writes, rewrites]; with `check`, also
/// the blocks the top layer then holds.
type WriteRuns = ([Duration; 2], BTreeSet<u64>);

/// Strata: the writes, then the same writes again, into a fresh layer over
/// the chain.
fn strata_writes(
    chains: &Chains,
    writes: &Requests,
    qd: u32,
    check: bool,
) -> Result<WriteRuns, String> {
    let path = chains.strata_scratch()?;
    let outcome = (|| {
        let image = Image::open(&path, Access::ReadWrite).map_err(|e| e.to_string())?;
        let write = |fill| workload::write(&image, writes, qd, fill).map_err(|e| e.to_string());
        let (first, again) = (write(0x11)?.wall, write(0x22)?.wall);
        // Not flushed: the layer is deleted next (qemu-img does not flush either).
        let held = if check {
            let entries = image.top().entries().into_iter().enumerate();
            entries
                .filter(|(_, e)| matches!(e, TableEntry::Data(_)))
                .map(|(b, _)| b as u64)
                .collect()
        } else {
            BTreeSet::new()
        };
        Ok(([first, again], held))
    })();
    let _ = std::fs::remove_file(&path);
    outcome
}

/// qcow2: the same, with two `qemu-img bench -w` runs on a fresh overlay.
fn qcow2_writes(
    chains: &Chains,
    qemu: &QemuTools,
    writes: &Requests,
    qd: u32,
    check: bool,
) -> Result<WriteRuns, String> {
    let path = chains.qcow2_scratch(qemu)?;
    let outcome = (|| {
        let first = qemu.bench(&path, writes, qd, Some(0x11))?;
        let again = qemu.bench(&path, writes, qd, Some(0x22))?;
        let held = if check {
            let held = qemu.allocated_in_top(&path, u64::from(BLOCK))?;
            if held.len() as u64 != writes.count {
                return Err(format!(
                    "depth {}: {} writes into distinct clusters left {} clusters in the qcow2 top",
                    chains.depth,
                    writes.count,
                    held.len()
                ));
            }
            held
        } else {
            BTreeSet::new()
        };
        Ok(([first, again], held))
    })();
    let _ = std::fs::remove_file(&path);
    outcome
}
