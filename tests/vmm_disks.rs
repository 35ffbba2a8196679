//! Strata's own VMM as a vhost-user-blk client: the `blkcheck` guest on a
//! virtio-mmio disk served by `strata blk` or by `qemu-storage-daemon`, on
//! real KVM. The guest's checksums must match the host's view of the disk,
//! its writes must land in its own top layer, and the golden base must not
//! change.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use common::store::{Server, Store};
use common::{assert_one_line_error, image, kvm_available, strata};
use strata_storage::{Access, Image};
use strata_testkit::blkcheck::{BlkcheckReport, fnv_sum, pattern_bytes};
use strata_testkit::{DiskFormat, QemuStorageDaemon, host_sha256, write_pseudo_random};

const MIB: u64 = 1 << 20;
const GUEST_TIMEOUT: Duration = Duration::from_secs(120);

fn golden(path: &Path, len: u64) {
    write_pseudo_random(path, len, 0x05ee_d0f5_747a).unwrap();
}

/// `strata run` of the blkcheck guest with `disks` (full `--disk` values).
fn blkcheck(disks: &[String], cmdline: &str) -> Command {
    let mut cmd = strata();
    cmd.args(["run", "--memory", "64", "--serial", "stdout", "--kernel"])
        .arg(image("blkcheck"))
        .args(["--cmdline", cmdline]);
    for disk in disks {
        cmd.args(["--disk", disk]);
    }
    cmd
}

/// Runs the guest to its end and parses what it printed.
fn run_blkcheck(disks: &[String], cmdline: &str) -> (Output, BlkcheckReport) {
    let out = blkcheck(disks, cmdline).output().unwrap();
    let report = BlkcheckReport::parse(&String::from_utf8_lossy(&out.stdout));
    (out, report)
}

fn assert_passed(out: &Output, report: &BlkcheckReport) {
    assert!(
        out.status.success() && report.done,
        "blkcheck failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The host's view of `len` bytes at `offset` of the image `name`.
fn image_bytes(store: &Store, name: &str, offset: u64, len: u64) -> Vec<u8> {
    let image = Image::open(&store.top(name), Access::ReadOnly).unwrap();
    let mut buf = vec![0u8; len as usize];
    image.read_at(offset, &mut buf).unwrap();
    buf
}

fn file_bytes(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len as usize];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}

#[test]
fn strata_guest_reads_and_writes_a_strata_blk_disk() {
    if !kvm_available() {
        return;
    }
    let (store, raw) = Store::with_images(&["vm1"], 32 * MIB);
    let golden_sum = host_sha256(&raw, 0, 32 * MIB).unwrap();
    // A real chain: data in a frozen middle layer, a live top above it.
    {
        let image = Image::open(&store.top("vm1"), Access::ReadWrite).unwrap();
        image.write_at(3 * MIB + 512, &vec![0x77; 200_000]).unwrap();
        image.flush().unwrap();
    }
    store.image(&["snapshot", "vm1"]);
    let ranges = [(0, 64 * 1024), (3 * MIB, 256 * 1024), (31 * MIB, MIB)];
    let expected: Vec<String> = ranges
        .iter()
        .map(|&(o, l)| fnv_sum(&image_bytes(&store, "vm1", o, l)))
        .collect();

    let socket = store.path("vm1.sock");
    let server = Server::start(&store, &[format!("image=vm1,socket={}", socket.display())]);
    let (offset, len, seed) = (5 * MIB + 4096, 128 * 1024, 41);
    let ranges_arg = ranges
        .iter()
        .map(|(o, l)| format!("{o}+{l}"))
        .collect::<Vec<_>>()
        .join(",");
    let (out, report) = run_blkcheck(
        &[format!("socket={}", socket.display())],
        &format!("blkcheck.ranges={ranges_arg} blkcheck.write={offset}+{len} blkcheck.seed={seed}"),
    );
    server.stop();
    assert_passed(&out, &report);

    assert_eq!(report.transport.as_deref(), Some("mmio"));
    assert_eq!(report.capacity, Some(32 * MIB / 512));
    for (&(o, l), want) in ranges.iter().zip(&expected) {
        assert_eq!(report.sum(o, l), Some(want.as_str()), "range {o}+{l}");
    }
    assert_eq!(
        image_bytes(&store, "vm1", offset, len),
        pattern_bytes(offset, len, seed)
    );
    store.assert_in_top_layer("vm1", offset);
    assert_eq!(
        host_sha256(&raw, 0, 32 * MIB).unwrap(),
        golden_sum,
        "the golden base changed"
    );
}

#[test]
fn strata_guest_on_qemu_storage_daemon() {
    if !kvm_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.raw");
    golden(&disk, 16 * MIB);
    let before = fnv_sum(&file_bytes(&disk, MIB, 512 * 1024));
    let socket = dir.path().join("qsd.sock");
    let daemon = QemuStorageDaemon::serve(&disk, DiskFormat::Raw, &socket).unwrap();
    let (offset, len, seed) = (8 * MIB, 64 * 1024, 9);
    let (out, report) = run_blkcheck(
        &[format!("socket={}", socket.display())],
        &format!(
            "blkcheck.ranges={}+{} blkcheck.write={offset}+{len} blkcheck.seed={seed}",
            MIB,
            512 * 1024
        ),
    );
    daemon.stop();
    assert_passed(&out, &report);
    assert_eq!(report.capacity, Some(16 * MIB / 512));
    assert_eq!(report.sum(MIB, 512 * 1024), Some(before.as_str()));
    assert_eq!(
        file_bytes(&disk, offset, len),
        pattern_bytes(offset, len, seed)
    );
}

#[test]
fn read_only_disks() {
    if !kvm_available() {
        return;
    }
    let (store, _raw) = Store::with_images(&["vm"], 8 * MIB);
    let before = fnv_sum(&image_bytes(&store, "vm", 0, MIB));
    let (ro, rw) = (store.path("ro.sock"), store.path("rw.sock"));
    let server = Server::start(
        &store,
        &[format!("image=vm,socket={},readonly", ro.display())],
    );
    // The backend refuses writes: the guest sees RO and its write fails.
    let (out, report) = run_blkcheck(
        &[format!("socket={}", ro.display())],
        "blkcheck.ranges=0+1048576 blkcheck.expect-ro",
    );
    assert_passed(&out, &report);
    assert_eq!(report.ro, Some(true));
    assert!(report.write_refused);
    assert_eq!(report.sum(0, MIB), Some(before.as_str()));
    server.stop();

    // `readonly` on Strata's side alone: the guest is told the disk is read-only.
    let server = Server::start(&store, &[format!("image=vm,socket={}", rw.display())]);
    let (out, report) = run_blkcheck(
        &[format!("socket={},readonly", rw.display())],
        "blkcheck.ranges=0+4096",
    );
    server.stop();
    assert_passed(&out, &report);
    assert_eq!(report.ro, Some(true));
}

#[test]
fn a_missing_backend_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody.sock");
    let out = blkcheck(&[format!("socket={}", socket.display())], "")
        .output()
        .unwrap();
    assert_one_line_error(&out, &["disk 0", "nobody.sock", "cannot connect"]);

    // A socket nobody listens on any more.
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    drop(listener);
    let out = blkcheck(&[format!("socket={}", socket.display())], "")
        .output()
        .unwrap();
    assert_one_line_error(&out, &["disk 0", "cannot connect"]);

    for bad in ["readonly", "socket=x,queues=0", "socket=x,cache=none"] {
        let out = strata().args(["run", "--disk", bad]).output().unwrap();
        assert_eq!(out.status.code(), Some(125), "{bad}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--disk"),
            "{bad}"
        );
    }
}

/// A guest whose serial output goes to a file, for tests that act while it runs.
struct RunningGuest {
    child: Child,
    log: PathBuf,
}

impl RunningGuest {
    fn spawn(cmd: &mut Command, log: PathBuf) -> Self {
        let child = cmd
            .env("STRATA_LOG", "warn")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
            .spawn()
            .unwrap();
        Self { child, log }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.log.with_extension("err")).unwrap_or_default()
    }

    fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + GUEST_TIMEOUT;
        while !self.output().contains(text) {
            assert!(
                Instant::now() < deadline,
                "no {text:?} from the guest:\n{}\n{}",
                self.output(),
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(mut self) -> (std::process::ExitStatus, BlkcheckReport, String) {
        let deadline = Instant::now() + GUEST_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "guest hung:\n{}", self.output());
            std::thread::sleep(Duration::from_millis(20));
        };
        (status, BlkcheckReport::parse(&self.output()), self.stderr())
    }
}

impl Drop for RunningGuest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn eight_guests_share_one_golden_base() {
    if !kvm_available() {
        return;
    }
    const GUESTS: u64 = 8;
    let store = Store::new();
    let raw = store.path("golden.raw");
    golden(&raw, 16 * MIB);
    let golden_sum = host_sha256(&raw, 0, 16 * MIB).unwrap();
    store.image(&["import", "golden", raw.to_str().unwrap()]);
    let mut disks = Vec::new();
    for i in 0..GUESTS {
        store.image(&["create", &format!("vm{i}"), "--from", "golden"]);
        disks.push(format!(
            "image=vm{i},socket={}",
            store.path(&format!("vm{i}.sock")).display()
        ));
    }
    let base_layer = Image::open(&store.top("vm0"), Access::ReadOnly)
        .unwrap()
        .members()[0]
        .path()
        .to_path_buf();
    let base_sum = host_sha256(
        &base_layer,
        0,
        std::fs::metadata(&base_layer).unwrap().len(),
    )
    .unwrap();
    let shared = fnv_sum(&file_bytes(&raw, 2 * MIB, 256 * 1024));
    let server = Server::start(&store, &disks);

    // Every guest writes its own pattern at the same offset, then reads it back.
    let (offset, len) = (6 * MIB, 64 * 1024);
    let guests: Vec<RunningGuest> = (0..GUESTS)
        .map(|i| {
            let cmdline = format!(
                "blkcheck.ranges={}+{} blkcheck.write={offset}+{len} blkcheck.seed={}",
                2 * MIB,
                256 * 1024,
                100 + i
            );
            RunningGuest::spawn(
                &mut blkcheck(
                    &[format!(
                        "socket={}",
                        store.path(&format!("vm{i}.sock")).display()
                    )],
                    &cmdline,
                ),
                store.path(&format!("guest{i}.log")),
            )
        })
        .collect();
    for (i, guest) in guests.into_iter().enumerate() {
        let (status, report, stderr) = guest.finish();
        assert!(
            status.success() && report.done,
            "guest {i}: {status} {stderr}"
        );
        assert_eq!(
            report.sum(2 * MIB, 256 * 1024),
            Some(shared.as_str()),
            "guest {i}"
        );
    }
    server.stop();

    for i in 0..GUESTS {
        assert_eq!(
            image_bytes(&store, &format!("vm{i}"), offset, len),
            pattern_bytes(offset, len, 100 + i),
            "vm{i} does not hold exactly its own guest's write"
        );
    }
    assert_eq!(
        host_sha256(
            &base_layer,
            0,
            std::fs::metadata(&base_layer).unwrap().len()
        )
        .unwrap(),
        base_sum,
        "the golden base layer changed"
    );
    assert_eq!(host_sha256(&raw, 0, 16 * MIB).unwrap(), golden_sum);
}

#[test]
fn the_vmm_reconnects_to_a_restarted_backend() {
    if !kvm_available() {
        return;
    }
    let (store, _raw) = Store::with_images(&["vm"], 16 * MIB);
    let socket = store.path("vm.sock");
    let disk = format!("image=vm,socket={}", socket.display());
    let server = Server::start(&store, std::slice::from_ref(&disk));
    // The guest re-reads 8 MiB+4K until it holds pattern 5, which only the
    // host writes, and only while the backend is down; then it writes its
    // own data through the new backend.
    let (awaited, written) = ((8 * MIB, 4096), (9 * MIB, 64 * 1024));
    let guest = RunningGuest::spawn(
        &mut blkcheck(
            &[format!("socket={},reconnect", socket.display())],
            &format!(
                "blkcheck.ranges=0+4096 blkcheck.await={}+{} blkcheck.write={}+{} blkcheck.seed=5",
                awaited.0, awaited.1, written.0, written.1
            ),
        ),
        store.path("guest.log"),
    );
    guest.wait_for("blkcheck: awaiting");
    server.kill();
    {
        let image = Image::open(&store.top("vm"), Access::ReadWrite).unwrap();
        image
            .write_at(awaited.0, &pattern_bytes(awaited.0, awaited.1, 5))
            .unwrap();
        image.flush().unwrap();
    }
    let server = Server::start(&store, std::slice::from_ref(&disk));
    let (status, report, stderr) = guest.finish();
    server.stop();
    assert!(
        status.success() && report.done && report.readback_ok,
        "{status}: {stderr}"
    );
    assert!(
        stderr.contains("went away"),
        "the VMM did not report the loss: {stderr}"
    );
    assert!(stderr.contains("reconnected"), "{stderr}");
    assert_eq!(
        image_bytes(&store, "vm", written.0, written.1),
        pattern_bytes(written.0, written.1, 5)
    );
}

#[test]
fn without_reconnect_the_guest_waits_and_the_vmm_keeps_running() {
    if !kvm_available() {
        return;
    }
    let (store, _raw) = Store::with_images(&["vm"], 8 * MIB);
    let socket = store.path("vm.sock");
    let server = Server::start(&store, &[format!("image=vm,socket={}", socket.display())]);
    let mut guest = RunningGuest::spawn(
        &mut blkcheck(
            &[format!("socket={}", socket.display())],
            "blkcheck.await=4194304+4096 blkcheck.seed=77",
        ),
        store.path("guest.log"),
    );
    guest.wait_for("blkcheck: awaiting");
    server.kill();
    let deadline = Instant::now() + GUEST_TIMEOUT;
    while !guest.stderr().contains("went away") {
        assert!(Instant::now() < deadline, "no report: {}", guest.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(guest.child.try_wait().unwrap().is_none(), "the VMM ended");
    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(guest.child.id() as i32, libc::SIGTERM) };
    let status = guest.child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(128 + libc::SIGTERM),
        "{}",
        guest.stderr()
    );
}
