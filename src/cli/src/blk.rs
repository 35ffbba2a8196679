//! `strata blk serve`: serve images to VMMs over vhost-user-blk.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use strata_blk::backend::BlkBackend;
use strata_blk::config::DiskConfig;
use strata_blk::image_disk::ImageDisk;
use strata_blk::request::{DiskLimits, SECTOR_SIZE};
use strata_blk::uring::Aio;
use strata_storage::{Access, ChainOptions, Image, SharedMembers};

use crate::exit::{ExitStatus, Failure};
use crate::image::{StoreArgs, open_store};

const SERVE_EXAMPLES: &str = "\
Examples:
  strata blk serve --disk image=web1,socket=/run/strata/web1.sock
  strata blk serve --disk image=web1,socket=/run/web1.sock,queues=2 \\
                   --disk image=web2,socket=/run/web2.sock,readonly
  strata blk serve --disk path=/srv/layers/top.layer,socket=/tmp/disk.sock
  strata blk serve --disk image=db,socket=/run/db.sock,queues=4,direct,poll=50

Then, in QEMU:
  -object memory-backend-memfd,id=mem,size=1G,share=on -machine memory-backend=mem
  -chardev socket,id=disk0,path=/run/web1.sock,reconnect=1
  -device vhost-user-blk-pci,chardev=disk0,num-queues=2
or in Cloud Hypervisor:
  --memory size=1G,shared=on --disk vhost_user=true,socket=/run/web1.sock,num_queues=2";

#[derive(Debug, Subcommand)]
pub enum BlkCommand {
    /// Serve one or more images, each on its own Unix socket.
    #[command(after_help = SERVE_EXAMPLES)]
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// A disk to serve (repeatable): image=NAME or path=LAYER, then
    /// socket=PATH, and optionally readonly, queues=N, queue-size=N,
    /// serial=TEXT, writethrough, readahead=on|off, direct (O_DIRECT: data
    /// around the host page cache), poll=MICROS (0 to 10000: each queue
    /// keeps polling its ring that long after it runs dry, before sleeping),
    /// aio=io_uring|sync (io_uring, the default: each queue keeps many
    /// requests in flight; sync: one pread/pwrite at a time per thread).
    /// Disks served together open the layers they share once.
    #[arg(long = "disk", value_name = "SPEC", required = true)]
    disks: Vec<String>,
}

/// One `--disk` value.
#[derive(Clone, Debug, PartialEq, Eq)]
struct DiskSpec {
    source: DiskSource,
    socket: PathBuf,
    read_only: bool,
    queues: u16,
    queue_size: u16,
    serial: Option<String>,
    writethrough: bool,
    readahead: bool,
    /// Data I/O with O_DIRECT.
    direct: bool,
    /// Busy-polling budget per queue.
    poll: Duration,
    /// How queues do their I/O.
    aio: Aio,
}

/// Longest busy-polling budget, in µs: a spinning queue holds a core.
const POLL_MAX_US: u64 = 10_000;

#[derive(Clone, Debug, PartialEq, Eq)]
enum DiskSource {
    Image(String),
    Path(PathBuf),
}

fn parse_spec(text: &str) -> Result<DiskSpec, String> {
    let (mut source, mut socket) = (None, None);
    let mut spec = DiskSpec {
        source: DiskSource::Image(String::new()),
        socket: PathBuf::new(),
        read_only: false,
        queues: 1,
        queue_size: 256,
        serial: None,
        writethrough: false,
        readahead: true,
        direct: false,
        poll: Duration::ZERO,
        aio: Aio::IoUring,
    };
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        let number = |max: u16| {
            value
                .parse::<u16>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| format!("--disk {key}={value}: expected a number from 1 to {max}"))
        };
        match key {
            "image" => source = Some(DiskSource::Image(value.to_string())),
            "path" => source = Some(DiskSource::Path(PathBuf::from(value))),
            "socket" => socket = Some(PathBuf::from(value)),
            "readonly" | "ro" => spec.read_only = true,
            "writethrough" => spec.writethrough = true,
            "readahead" | "direct" => {
                let on = match value {
                    "on" | "" => true,
                    "off" => false,
                    _ => return Err(format!("--disk {key}={value}: expected on or off")),
                };
                if key == "direct" {
                    spec.direct = on;
                } else {
                    spec.readahead = on;
                }
            }
            "poll" => {
                let micros = value
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n <= POLL_MAX_US)
                    .ok_or_else(|| {
                        format!(
                            "--disk poll={value}: expected microseconds from 0 to {POLL_MAX_US}"
                        )
                    })?;
                spec.poll = Duration::from_micros(micros);
            }
            "aio" => {
                spec.aio = match value {
                    "io_uring" => Aio::IoUring,
                    "sync" => Aio::Sync,
                    _ => return Err(format!("--disk aio={value}: expected io_uring or sync")),
                }
            }
            "queues" => spec.queues = number(64)?,
            "queue-size" => {
                spec.queue_size = number(32768)?;
                if !spec.queue_size.is_power_of_two() {
                    return Err(format!("--disk queue-size={value}: must be a power of two"));
                }
            }
            "serial" => spec.serial = Some(value.chars().take(20).collect()),
            other => {
                return Err(format!(
                    "--disk {text:?}: unknown key {other:?} (see `strata blk serve --help`)"
                ));
            }
        }
    }
    spec.source =
        source.ok_or_else(|| format!("--disk {text:?}: give image=NAME or path=LAYER"))?;
    spec.socket = socket.ok_or_else(|| format!("--disk {text:?}: give socket=PATH"))?;
    Ok(spec)
}

/// A disk opened and ready to serve.
struct Served {
    spec: DiskSpec,
    name: String,
    backend: BlkBackend,
    disk: Arc<ImageDisk>,
    /// Blocks to prefetch, from an earlier boot on the same base.
    prefetch: Option<Vec<u64>>,
}

/// Opens `spec`'s image, sharing read-only layers through `shared`.
fn open_disk(spec: DiskSpec, store: &StoreArgs, shared: &SharedMembers) -> Result<Served, Failure> {
    let (top, name) = match &spec.source {
        DiskSource::Path(path) => (path.clone(), path.display().to_string()),
        DiskSource::Image(name) => {
            let store = open_store(store)?;
            let info = store.info(name).map_err(|e| Failure(e.to_string()))?;
            let top = info
                .chain
                .first()
                .map(|c| c.path.clone())
                .ok_or_else(|| Failure(format!("image {name} has no layers")))?;
            (top, name.clone())
        }
    };
    let access = if spec.read_only {
        Access::ReadOnly
    } else {
        Access::ReadWrite
    };
    let options = ChainOptions {
        direct: spec.direct,
        shared: Some(shared),
    };
    let image = Image::open_with(&top, access, options).map_err(|e| Failure(e.to_string()))?;
    let traces = store.store.join("readahead");
    // Look-ahead fills the page cache, which direct I/O does not read.
    let (disk, prefetch) = if spec.readahead && !spec.direct && store.store.is_dir() {
        ImageDisk::with_readahead(image, &traces)
    } else {
        (ImageDisk::new(image), None)
    };
    let disk = Arc::new(disk);
    let size = disk.image().virtual_size();
    let block = disk.image().block_size();
    let seg_max = u32::from(spec.queue_size).saturating_sub(2).max(1);
    let size_max = 1u32 << 20;
    let config = DiskConfig {
        limits: DiskLimits {
            capacity_sectors: size / SECTOR_SIZE,
            read_only: spec.read_only,
            max_transfer: u64::from(seg_max) * u64::from(size_max),
            max_zero_segments: 32,
            max_zero_sectors: 1 << 22,
        },
        size_max,
        seg_max,
        blk_size: 512,
        opt_io_size: block,
        num_queues: spec.queues,
        writeback: !spec.writethrough,
    };
    let serial = spec
        .serial
        .clone()
        .unwrap_or_else(|| name.chars().take(20).collect());
    let backend = BlkBackend::new(
        disk.clone(),
        config,
        spec.queue_size,
        &serial,
        spec.poll,
        spec.aio,
    )
    .map_err(|e| Failure(format!("cannot set up the backend for {name}: {e}")))?;
    Ok(Served {
        spec,
        name,
        backend,
        disk,
        prefetch,
    })
}

/// Blocks SIGINT and SIGTERM in this thread and the ones it starts, so that
/// `sigwait` can take them.
fn block_termination_signals() -> libc::sigset_t {
    // SAFETY: an all-zero sigset_t is a valid argument for sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t owned by this frame.
    unsafe { libc::sigemptyset(&mut set) };
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: as above; `sig` is a valid signal.
        unsafe { libc::sigaddset(&mut set, sig) };
    }
    // SAFETY: `set` is initialised; a null old set is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    set
}

/// Runs `strata blk serve`.
pub fn serve(args: &ServeArgs) -> Result<ExitStatus, Failure> {
    let specs = args
        .disks
        .iter()
        .map(|d| parse_spec(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure)?;
    let signals = block_termination_signals();
    let shared = SharedMembers::new();
    let served = specs
        .into_iter()
        .map(|spec| open_disk(spec, &args.store, &shared))
        .collect::<Result<Vec<_>, _>>()?;
    log::info!(
        "{} disks open; their read-only layers and bases are {} files, each open once",
        served.len(),
        shared.open_members()
    );
    let (errors_tx, errors_rx) = std::sync::mpsc::channel();
    for disk in &served {
        let (name, backend, socket, errors) = (
            disk.name.clone(),
            disk.backend.clone(),
            disk.spec.socket.clone(),
            errors_tx.clone(),
        );
        std::thread::Builder::new()
            .name(format!("serve-{}", disk.name))
            .spawn(move || {
                if let Err(e) = strata_blk::serve::serve_forever(&name, &backend, &socket) {
                    let _ = errors.send(e.to_string());
                }
            })
            .map_err(|e| Failure(format!("cannot start a thread for {}: {e}", disk.name)))?;
        eprintln!(
            "strata: serving {} on {}",
            disk.name,
            disk.spec.socket.display()
        );
        if let Some(blocks) = disk.prefetch.clone() {
            let (image_disk, name) = (disk.disk.clone(), disk.name.clone());
            std::thread::spawn(move || {
                let stats = strata_blk::readahead::PrefetchStats::default();
                strata_blk::readahead::prefetch(image_disk.image(), &blocks, &stats);
                log::info!(
                    "{name}: prefetched {} of {} recorded blocks",
                    stats.prefetched.load(std::sync::atomic::Ordering::Relaxed),
                    blocks.len()
                );
            });
        }
    }
    // Wait for a termination signal, or for a server that cannot go on.
    let waiter = std::thread::spawn(move || {
        let mut sig = 0;
        // SAFETY: `signals` holds the blocked signals; `sig` is written by sigwait.
        unsafe { libc::sigwait(&signals, &mut sig) };
        sig
    });
    let failure = loop {
        if waiter.is_finished() {
            break None;
        }
        if let Ok(message) = errors_rx.recv_timeout(Duration::from_millis(100)) {
            break Some(message);
        }
    };
    for disk in &served {
        if let Err(e) = disk.disk.image().flush() {
            eprintln!("strata: error: flushing {} failed: {e}", disk.name);
        }
    }
    match failure {
        Some(message) => Err(Failure(message)),
        None => Ok(ExitStatus::Success),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_specs_parse() {
        let spec =
            parse_spec("image=web1,socket=/run/a.sock,queues=2,readonly,serial=abc").unwrap();
        assert_eq!(spec.source, DiskSource::Image("web1".into()));
        assert_eq!(
            (spec.queues, spec.read_only, spec.serial.as_deref()),
            (2, true, Some("abc"))
        );
        assert!(
            parse_spec("socket=/x")
                .unwrap_err()
                .contains("image=NAME or path=LAYER")
        );
        assert!(parse_spec("image=a").unwrap_err().contains("socket=PATH"));
        assert!(
            parse_spec("image=a,socket=/x,queues=0")
                .unwrap_err()
                .contains("1 to 64")
        );
        assert!(
            parse_spec("image=a,socket=/x,queue-size=100")
                .unwrap_err()
                .contains("power of two")
        );
        assert!(
            parse_spec("image=a,socket=/x,color=red")
                .unwrap_err()
                .contains("unknown key")
        );
    }

    #[test]
    fn direct_and_poll_parse() {
        let plain = parse_spec("image=a,socket=/x").unwrap();
        assert_eq!((plain.direct, plain.poll), (false, Duration::ZERO));
        let spec = parse_spec("image=a,socket=/x,direct,poll=50").unwrap();
        assert_eq!((spec.direct, spec.poll), (true, Duration::from_micros(50)));
        assert!(!parse_spec("image=a,socket=/x,direct=off").unwrap().direct);
        assert!(parse_spec("image=a,socket=/x,direct=on").unwrap().direct);
        assert_eq!(
            parse_spec("image=a,socket=/x,poll=10000").unwrap().poll,
            Duration::from_millis(10)
        );
        assert_eq!(
            parse_spec("image=a,socket=/x,poll=0").unwrap().poll,
            Duration::ZERO
        );
        for bad in ["poll=10001", "poll=-1", "poll=fast", "poll="] {
            let err = parse_spec(&format!("image=a,socket=/x,{bad}")).unwrap_err();
            assert_eq!(
                err,
                format!("--disk {bad}: expected microseconds from 0 to 10000")
            );
        }
        assert_eq!(
            parse_spec("image=a,socket=/x,direct=yes").unwrap_err(),
            "--disk direct=yes: expected on or off"
        );
    }

    #[test]
    fn aio_parses() {
        assert_eq!(parse_spec("image=a,socket=/x").unwrap().aio, Aio::IoUring);
        assert_eq!(
            parse_spec("image=a,socket=/x,aio=sync").unwrap().aio,
            Aio::Sync
        );
        assert_eq!(
            parse_spec("image=a,socket=/x,aio=sync,aio=io_uring")
                .unwrap()
                .aio,
            Aio::IoUring
        );
        for bad in ["aio=native", "aio=", "aio"] {
            let value = bad.strip_prefix("aio").unwrap().trim_start_matches('=');
            assert_eq!(
                parse_spec(&format!("image=a,socket=/x,{bad}")).unwrap_err(),
                format!("--disk aio={value}: expected io_uring or sync")
            );
        }
    }
}
