//! The `blkcheck` guest image's virtio-blk driver against `strata blk serve`,
//! with QEMU (TCG) as the VMM: modern virtio-pci on the `pc` machine
//! (`vhost-user-blk-pci`, BARs below 4 GiB, above 4 GiB, and above the
//! 2^47 identity-mapping limit), virtio-mmio on `microvm` (`vhost-user-blk`,
//! found through the `virtio_mmio.device=` word QEMU adds), and Cloud
//! Hypervisor when `CLOUD_HYPERVISOR` names its binary. The guest's
//! checksums must match the host's view of the layered image, its write must
//! land in the image's top layer and leave the golden base alone, and a
//! read-only disk must refuse it.
//!
//! The guest's contract is `strata_guest_abi::blkcheck`; the host side is
//! `strata_testkit::blkcheck`.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::store::{Server, Store};
use common::{image, kvm_available, strata};
use strata_guest_abi::exit_code;
use strata_guest_abi::qemu_exit_status;
use strata_storage::{Access, BlockSource, Image};
use strata_testkit::blkcheck::{BlkcheckReport, fnv_sum, pattern_bytes};
use strata_testkit::{host_sha256, write_pseudo_random};

const MIB: u64 = 1 << 20;
const DISK_SIZE: u64 = 16 * MIB;
/// Only a bound on a hung VMM; no test asserts on time.
const GUEST_TIMEOUT: Duration = Duration::from_secs(180);
const QEMU: &str = "qemu-system-x86_64";

/// The ranges every disk test checksums: the start, a run across a middle
/// layer's data and several image blocks, and the end of the disk.
const RANGES: [(u64, u64); 3] = [
    (0, 64 * 1024),
    (3 * MIB - 4096, 256 * 1024),
    (DISK_SIZE - MIB, MIB),
];

/// How QEMU attaches the disk.
#[derive(Clone, Copy, Debug)]
enum Machine {
    /// `pc` with `vhost-user-blk-pci`, plus `extra` arguments.
    Pc(&'static [&'static str]),
    /// `microvm` with `vhost-user-blk` on its virtio-mmio bus. Without ACPI,
    /// QEMU appends `virtio_mmio.device=512@0xfeb00e00:12` to the command
    /// line; `force-legacy=false` gives the modern (version 2) registers.
    Microvm,
}

/// An image `vm` on a golden base with a frozen middle layer (0x77 bytes
/// across 3 MiB) under a live top layer.
struct LayeredImage {
    store: Store,
    golden_raw: PathBuf,
    base_layer: PathBuf,
}

impl LayeredImage {
    fn new() -> LayeredImage {
        let store = Store::new();
        let golden_raw = store.path("golden.raw");
        write_pseudo_random(&golden_raw, DISK_SIZE, 0xb1c0_c4ec).unwrap();
        store.image(&["import", "golden", golden_raw.to_str().unwrap()]);
        store.image(&["create", "vm", "--from", "golden"]);
        {
            let image = Image::open(&store.top("vm"), Access::ReadWrite).unwrap();
            image.write_at(3 * MIB - 512, &vec![0x77; 200_000]).unwrap();
            image.flush().unwrap();
        }
        store.image(&["snapshot", "vm"]);
        let image = Image::open(&store.top("vm"), Access::ReadOnly).unwrap();
        assert_eq!(image.members().len(), 3, "golden, middle, top");
        let base_layer = image.members()[0].path().to_path_buf();
        LayeredImage {
            store,
            golden_raw,
            base_layer,
        }
    }

    /// The store's temporary directory, for VMM output files.
    fn dir(&self) -> PathBuf {
        self.store.path("")
    }

    /// The host's view of `len` bytes at `offset` of the image.
    fn bytes(&self, offset: u64, len: u64) -> Vec<u8> {
        let image = Image::open(&self.store.top("vm"), Access::ReadOnly).unwrap();
        let mut buf = vec![0u8; len as usize];
        image.read_at(offset, &mut buf).unwrap();
        buf
    }

    /// The checksums the guest must print for [`RANGES`].
    fn expected_sums(&self) -> Vec<String> {
        RANGES
            .iter()
            .map(|&(o, l)| fnv_sum(&self.bytes(o, l)))
            .collect()
    }

    /// SHA-256 of the golden base layer and of the raw file it came from.
    fn golden_sums(&self) -> (String, String) {
        let base_len = std::fs::metadata(&self.base_layer).unwrap().len();
        (
            host_sha256(&self.base_layer, 0, base_len).unwrap(),
            host_sha256(&self.golden_raw, 0, DISK_SIZE).unwrap(),
        )
    }

    /// Serves the image on `vm.sock`, with `options` (e.g. `,readonly`).
    fn serve(&self, options: &str) -> (Server, PathBuf) {
        let socket = self.store.path("vm.sock");
        let disk = format!("image=vm,socket={}{options}", socket.display());
        (Server::start(&self.store, &[disk]), socket)
    }

    /// Tells whether the block holding `offset` lives in the top layer.
    fn in_top_layer(&self, offset: u64) -> bool {
        let image = Image::open(&self.store.top("vm"), Access::ReadOnly).unwrap();
        let top = image.members().len() - 1;
        let block = offset / u64::from(image.block_size());
        matches!(image.source(block), BlockSource::Member { index, .. } if index == top)
    }
}

/// `blkcheck.ranges=` for [`RANGES`].
fn ranges_word() -> String {
    let ranges: Vec<String> = RANGES.iter().map(|(o, l)| format!("{o}+{l}")).collect();
    format!("blkcheck.ranges={}", ranges.join(","))
}

/// What a VMM run of blkcheck produced.
struct Run {
    status: ExitStatus,
    serial: String,
    stderr: String,
    report: BlkcheckReport,
}

impl Run {
    fn transcript(&self) -> String {
        format!(
            "{}\n--- serial ---\n{}--- stderr ---\n{}",
            self.status, self.serial, self.stderr
        )
    }

    /// Asserts that blkcheck passed and QEMU exited with its code 0.
    fn assert_passed(&self) {
        assert!(
            self.status.code() == Some(qemu_exit_status(exit_code::SUCCESS))
                && self.report.passed(),
            "blkcheck failed: {}",
            self.transcript()
        );
    }

    /// Asserts that blkcheck failed with `code` and an error line
    /// containing `what`.
    fn assert_failed(&self, code: u8, what: &str) {
        let error = self.report.error.as_deref().unwrap_or_default();
        assert!(
            self.status.code() == Some(qemu_exit_status(code)) && error.contains(what),
            "expected exit code {code} and an error with {what:?}: {}",
            self.transcript()
        );
    }
}

/// Runs `command` with its output in files under `dir`, until it exits, or
/// until `stop` says the serial output is complete (then kills it).
fn run_vmm(command: &mut Command, dir: &Path, stop: impl Fn(&str) -> bool) -> Run {
    let stamp = std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos();
    let (out_path, err_path) = (
        dir.join(format!("vmm-{stamp}.out")),
        dir.join(format!("vmm-{stamp}.err")),
    );
    let mut child = command
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let deadline = Instant::now() + GUEST_TIMEOUT;
    let read = |path: &Path| String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if stop(&read(&out_path)) || Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let serial = read(&out_path);
    assert!(
        Instant::now() <= deadline,
        "{command:?} did not finish within {GUEST_TIMEOUT:?}:\n{serial}\n{}",
        read(&err_path)
    );
    Run {
        status,
        report: BlkcheckReport::parse(&serial),
        serial,
        stderr: read(&err_path),
    }
}

/// Boots blkcheck under QEMU TCG on `machine` with the disk on `socket`
/// (none if `None`) and `cmdline`, and waits for QEMU to exit.
fn qemu(machine: Machine, socket: Option<&Path>, cmdline: &str, dir: &Path) -> Run {
    let mut command = Command::new(QEMU);
    command.args(["-accel", "tcg", "-m", "64M"]);
    command.args([
        "-object",
        "memory-backend-memfd,id=mem,size=64M,share=on",
        "-machine",
        "memory-backend=mem",
    ]);
    command.args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]);
    command.args(["-serial", "stdio", "-display", "none"]);
    command.args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4"]);
    let device = match machine {
        Machine::Pc(extra) => {
            command.args(["-M", "pc"]).args(extra);
            "vhost-user-blk-pci,chardev=disk0"
        }
        Machine::Microvm => {
            command.args(["-M", "microvm,acpi=off"]);
            command.args(["-global", "virtio-mmio.force-legacy=false"]);
            "vhost-user-blk,chardev=disk0"
        }
    };
    if let Some(socket) = socket {
        command
            .arg("-chardev")
            .arg(format!("socket,id=disk0,path={}", socket.display()))
            .args(["-device", device]);
    }
    command.arg("-kernel").arg(image("blkcheck"));
    command.args(["-append", cmdline]);
    run_vmm(&mut command, dir, |_| false)
}

/// Where the firmware put the virtio-blk device's 64-bit BAR 4 (the one
/// holding its virtio structures) on `pc` with `extra` arguments: boots
/// `hello wait` with the disk on `socket` and asks QEMU's monitor.
fn virtio_bar4(extra: &[&str], socket: &Path, dir: &Path) -> u64 {
    let serial = dir.join("bar-probe.serial");
    let mut child = Command::new(QEMU)
        .args(["-accel", "tcg", "-M", "pc", "-m", "64M"])
        .args(["-object", "memory-backend-memfd,id=mem,size=64M,share=on"])
        .args([
            "-machine",
            "memory-backend=mem",
            "-nodefaults",
            "-display",
            "none",
        ])
        .args(extra)
        .arg("-chardev")
        .arg(format!("socket,id=disk0,path={}", socket.display()))
        .args(["-device", "vhost-user-blk-pci,chardev=disk0"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .args(["-monitor", "stdio", "-kernel"])
        .arg(image("hello"))
        .args(["-append", "wait"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + GUEST_TIMEOUT;
    while !std::fs::read_to_string(&serial)
        .unwrap_or_default()
        .contains("hello: waiting")
    {
        assert!(Instant::now() < deadline, "hello never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The guest runs no more code: the firmware's BAR assignment is final.
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"info pci\nquit\n").unwrap();
    let monitor = String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned();
    let device = monitor
        .split("Bus ")
        .find(|d| d.contains("1af4:1001") || d.contains("1af4:1042"))
        .unwrap_or_else(|| panic!("no virtio-blk device in:\n{monitor}"));
    let bar = device
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("BAR4: 64 bit prefetchable memory at 0x")
        })
        .unwrap_or_else(|| panic!("no 64-bit BAR 4 in:\n{device}"));
    let hex = bar.split(' ').next().unwrap();
    u64::from_str_radix(hex, 16).unwrap()
}

/// A [`LayeredImage`] being served, with what the host saw before.
struct Served {
    disk: LayeredImage,
    expected: Vec<String>,
    golden_before: (String, String),
    server: Server,
    socket: PathBuf,
}

impl Served {
    fn new() -> Served {
        let disk = LayeredImage::new();
        let expected = disk.expected_sums();
        let golden_before = disk.golden_sums();
        let (server, socket) = disk.serve("");
        Served {
            disk,
            expected,
            golden_before,
            server,
            socket,
        }
    }
}

/// The whole check on one machine: checksums of a layered image, then a
/// write that must reach the top layer and nothing below.
fn reads_and_writes_a_layered_image(machine: Machine, transport: &str) {
    reads_and_writes(Served::new(), machine, transport);
}

fn reads_and_writes(served: Served, machine: Machine, transport: &str) {
    let Served {
        disk,
        expected,
        golden_before,
        server,
        socket,
    } = served;
    let (offset, len, seed) = (5 * MIB + 4096, 128 * 1024 + 512, 41);
    let run = qemu(
        machine,
        Some(&socket),
        &format!(
            "{} blkcheck.write={offset}+{len} blkcheck.seed={seed}",
            ranges_word()
        ),
        &disk.dir(),
    );
    server.stop();
    run.assert_passed();

    let report = &run.report;
    assert_eq!(report.transport.as_deref(), Some(transport));
    assert_eq!(report.capacity, Some(DISK_SIZE / 512));
    assert_eq!(report.ro, Some(false));
    assert_eq!(
        report.id.as_deref(),
        Some("vm"),
        "GET_ID gives the image name"
    );
    for (&(o, l), want) in RANGES.iter().zip(&expected) {
        assert_eq!(report.sum(o, l), Some(want.as_str()), "range {o}+{l}");
    }
    assert_eq!(report.wrote, Some((offset, len)));
    assert!(report.flushed && report.readback_ok);

    assert_eq!(
        disk.bytes(offset, len),
        pattern_bytes(offset, len, seed),
        "the guest's write is not in the image"
    );
    assert!(
        disk.in_top_layer(offset),
        "the write is not in the top layer"
    );
    assert_eq!(disk.golden_sums(), golden_before, "the golden base changed");
}

#[test]
fn pci_on_qemu_pc() {
    reads_and_writes_a_layered_image(Machine::Pc(&[]), "pci");
}

#[test]
fn mmio_on_qemu_microvm() {
    reads_and_writes_a_layered_image(Machine::Microvm, "mmio");
}

/// [`reads_and_writes_a_layered_image`] on `pc` with `extra`, after checking
/// that the firmware put the device's BAR 4 in `bars`.
fn with_bar_in(extra: &'static [&'static str], bars: std::ops::Range<u64>) {
    let served = Served::new();
    let bar = virtio_bar4(extra, &served.socket, &served.disk.dir());
    assert!(
        bars.contains(&bar),
        "BAR 4 at {bar:#x}, not in {bars:#x?}: the test is moot"
    );
    reads_and_writes(served, Machine::Pc(extra), "pci");
}

#[test]
fn pci_bar_above_4_gib() {
    // A 2 GiB 64-bit BAR does not fit SeaBIOS's 32-bit window, so it moves
    // every 64-bit BAR above 4 GiB: virtio's lands at 6 GiB, which the guest
    // identity-maps on demand.
    with_bar_in(&["-device", "pci-testdev,membar=2G"], (4 << 30)..(1 << 47));
}

#[test]
fn pci_bar_above_the_identity_mapping_limit() {
    // With room for 200 TiB of hot-plugged memory, SeaBIOS puts the 64-bit
    // BARs above it, at about 201 TiB: beyond 2^47, where virtual ==
    // physical is impossible, so the guest maps the BAR into its window.
    // (The second `-m` overrides the first.)
    with_bar_in(
        &[
            "-cpu",
            "qemu64,phys-bits=48",
            "-m",
            "64M,slots=1,maxmem=200T",
            "-device",
            "pci-testdev,membar=2G",
        ],
        (1 << 47)..(1 << 48),
    );
}

#[test]
fn read_only_disk_refuses_the_write() {
    let disk = LayeredImage::new();
    let expected = disk.expected_sums();
    let offset = 5 * MIB;
    let before = disk.bytes(offset, 512);
    let (server, socket) = disk.serve(",readonly");
    let run = qemu(
        Machine::Pc(&[]),
        Some(&socket),
        &format!(
            "{} blkcheck.write={offset}+4096 blkcheck.expect-ro",
            ranges_word()
        ),
        &disk.dir(),
    );
    server.wait_for_log("write to a read-only disk", Duration::from_secs(10));
    server.stop();
    run.assert_passed();
    let report = &run.report;
    assert_eq!(report.ro, Some(true));
    assert!(report.write_refused);
    assert_eq!(report.wrote, None);
    for (&(o, l), want) in RANGES.iter().zip(&expected) {
        assert_eq!(report.sum(o, l), Some(want.as_str()), "range {o}+{l}");
    }
    assert_eq!(disk.bytes(offset, 512), before);
    assert!(!disk.in_top_layer(offset));
}

#[test]
fn expect_ro_on_a_writable_disk_is_a_mismatch() {
    let disk = LayeredImage::new();
    let (server, socket) = disk.serve("");
    let run = qemu(
        Machine::Microvm,
        Some(&socket),
        "blkcheck.expect-ro",
        &disk.dir(),
    );
    server.stop();
    run.assert_failed(exit_code::MISMATCH, "VIRTIO_BLK_F_RO");
}

#[test]
fn a_range_past_the_end_is_bad_args() {
    let disk = LayeredImage::new();
    let (server, socket) = disk.serve("");
    let run = qemu(
        Machine::Microvm,
        Some(&socket),
        &format!("blkcheck.ranges=0+512,{}+1024", DISK_SIZE - 512),
        &disk.dir(),
    );
    server.stop();
    run.assert_failed(exit_code::BAD_ARGS, "past the end");
    // Nothing was read: every range is checked before any I/O.
    assert!(run.report.sums.is_empty(), "{}", run.transcript());
    assert!(run.report.transport.is_some(), "{}", run.transcript());
}

#[test]
fn bad_words_and_a_missing_disk() {
    let dir = tempfile::tempdir().unwrap();
    for (cmdline, code, what) in [
        ("blkcheck.ranges=0+100", exit_code::BAD_ARGS, "0+100"),
        ("blkcheck.write=1+512", exit_code::BAD_ARGS, "1+512"),
        ("blkcheck.seed=x", exit_code::BAD_ARGS, "seed"),
        (
            "blkcheck.range=0+512",
            exit_code::BAD_ARGS,
            "blkcheck.range=0+512",
        ),
        (
            "virtio_mmio.device=4K@zz:5",
            exit_code::BAD_ARGS,
            "virtio_mmio",
        ),
        ("", exit_code::NO_DEVICE, "no virtio-blk device"),
    ] {
        let run = qemu(Machine::Microvm, None, cmdline, dir.path());
        run.assert_failed(code, what);
    }
    // Also on a machine with a PCI bus to scan.
    let run = qemu(Machine::Pc(&[]), None, "", dir.path());
    run.assert_failed(exit_code::NO_DEVICE, "no virtio-blk device");
}

/// Strata's own VMM without a disk: no virtio-mmio word, no PCI host.
#[test]
fn strata_run_without_a_disk_is_no_device() {
    if !kvm_available() {
        return;
    }
    let out = strata()
        .args(["run", "--memory", "64", "--kernel"])
        .arg(image("blkcheck"))
        .output()
        .unwrap();
    let report = BlkcheckReport::parse(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        out.status.code(),
        Some(i32::from(exit_code::NO_DEVICE)),
        "{out:?}"
    );
    assert!(
        report
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("no virtio-blk device"),
        "{out:?}"
    );
}

#[test]
fn cloud_hypervisor() {
    let Some(binary) = std::env::var_os("CLOUD_HYPERVISOR") else {
        eprintln!("skipping: set CLOUD_HYPERVISOR to a cloud-hypervisor binary to run this test");
        return;
    };
    let disk = LayeredImage::new();
    let expected = disk.expected_sums();
    let (server, socket) = disk.serve("");
    let (offset, len, seed) = (7 * MIB, 64 * 1024, 5);
    let cmdline = format!(
        "{} blkcheck.write={offset}+{len} blkcheck.seed={seed}",
        ranges_word()
    );
    let mut command = Command::new(binary);
    command
        .arg("--kernel")
        .arg(image("blkcheck"))
        .args(["--cmdline", &cmdline])
        .args(["--memory", "size=64M,shared=on"])
        .arg("--disk")
        .arg(format!("vhost_user=true,socket={}", socket.display()))
        .args(["--serial", "tty", "--console", "off"]);
    // Cloud Hypervisor has no isa-debug-exit: the guest halts after its
    // last line, and the VMM is killed then.
    let run = run_vmm(&mut command, &disk.dir(), |serial| {
        let report = BlkcheckReport::parse(serial);
        report.done || report.error.is_some()
    });
    server.stop();
    let report = &run.report;
    assert!(report.passed(), "blkcheck failed: {}", run.transcript());
    assert_eq!(report.transport.as_deref(), Some("pci"));
    for (&(o, l), want) in RANGES.iter().zip(&expected) {
        assert_eq!(report.sum(o, l), Some(want.as_str()), "range {o}+{l}");
    }
    assert!(report.readback_ok);
    assert_eq!(disk.bytes(offset, len), pattern_bytes(offset, len, seed));
}
