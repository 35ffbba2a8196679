//! `strata blk serve` with a real client: QEMU (TCG) booting a Debian Linux
//! kernel whose disk is a layered Strata image served over vhost-user-blk.
//! The guest's checksums must match the host's view of the image, its
//! writes must land in its own top layer, and the golden base must not change.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::store::{Server, Store};
use strata_storage::format::ParentKind;
use strata_storage::{Access, Image, LayerFile, ParentSpec};
use strata_testkit::{LinuxGuestKit, QemuVhostUserBlk, host_sha256};

const MIB: u64 = 1 << 20;
const GUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// A golden raw image with position-dependent contents.
fn golden(path: &Path, len: u64) {
    strata_testkit::write_pseudo_random(path, len, 0x9e37_79b9_7f4a_7c15).unwrap();
}

fn kit() -> LinuxGuestKit {
    LinuxGuestKit::ensure().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn linux_guest_reads_and_writes_a_layered_disk() {
    let kit = kit();
    let store = Store::new();
    let raw = store.path("golden.raw");
    golden(&raw, 64 * MIB);
    let golden_sum = host_sha256(&raw, 0, 64 * MIB).unwrap();
    store.image(&["create", "vm1", "--raw", raw.to_str().unwrap()]);
    // Give the image a real chain: data in a frozen middle layer, a live top.
    {
        let image = Image::open(&store.top("vm1"), Access::ReadWrite).unwrap();
        image
            .write_at(10 * MIB + 100, &vec![0x77; MIB as usize])
            .unwrap();
        image.flush().unwrap();
    }
    store.image(&["snapshot", "vm1"]);
    let host_view = store.path("vm1.raw");
    store.image(&["export", "vm1", host_view.to_str().unwrap()]);
    let expected = host_sha256(&host_view, 0, 64 * MIB).unwrap();

    let socket = store.path("vm1.sock");
    let server = Server::start(
        &store,
        &[format!("image=vm1,socket={},queues=2", socket.display())],
    );
    let (offset, len) = (20 * MIB + 4096, 256 * 1024 + 512);
    let mut guest = QemuVhostUserBlk::new(&kit)
        .disk(&socket)
        .num_queues(2)
        .append(&format!(
            "strata.test=sums,write strata.wr={offset}:{len} strata.pattern=5a"
        ))
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let report = guest
        .finish(GUEST_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    server.stop();

    assert_eq!(report.size("vda"), Some(64 * MIB));
    assert_eq!(
        report.sum("vda", 0, 64 * MIB),
        Some(expected.as_str()),
        "guest and host disagree"
    );
    assert_eq!(report.wrote.len(), 1);

    let image = Image::open(&store.top("vm1"), Access::ReadOnly).unwrap();
    let mut buf = vec![0u8; len as usize];
    image.read_at(offset, &mut buf).unwrap();
    assert!(
        buf.iter().all(|b| *b == 0x5a),
        "the guest's write is not in the image"
    );
    store.assert_in_top_layer("vm1", offset);
    assert_eq!(
        host_sha256(&raw, 0, 64 * MIB).unwrap(),
        golden_sum,
        "the golden base changed"
    );
}

#[test]
fn two_guests_share_one_golden_base() {
    let kit = kit();
    let store = Store::new();
    let raw = store.path("golden.raw");
    golden(&raw, 32 * MIB);
    let golden_sum = host_sha256(&raw, 0, 32 * MIB).unwrap();
    store.image(&["create", "a", "--raw", raw.to_str().unwrap()]);
    store.image(&["create", "b", "--raw", raw.to_str().unwrap()]);
    let (sa, sb) = (store.path("a.sock"), store.path("b.sock"));
    let server = Server::start(
        &store,
        &[
            format!("image=a,socket={}", sa.display()),
            format!("image=b,socket={}", sb.display()),
        ],
    );
    let (offset, len) = (8 * MIB, 64 * 1024);
    let spawn = |socket: &Path, pattern: &str| {
        QemuVhostUserBlk::new(&kit)
            .disk(socket)
            .append(&format!(
                "strata.test=write strata.wr={offset}:{len} strata.pattern={pattern}"
            ))
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let (mut ga, mut gb) = (spawn(&sa, "aa"), spawn(&sb, "bb"));
    ga.finish(GUEST_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    gb.finish(GUEST_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    server.stop();

    for (name, byte) in [("a", 0xaa), ("b", 0xbb)] {
        let image = Image::open(&store.top(name), Access::ReadOnly).unwrap();
        let mut buf = vec![0u8; len as usize];
        image.read_at(offset, &mut buf).unwrap();
        assert!(
            buf.iter().all(|b| *b == byte),
            "image {name} does not hold only its own guest's write"
        );
    }
    assert_eq!(
        host_sha256(&raw, 0, 32 * MIB).unwrap(),
        golden_sum,
        "the golden base changed"
    );
}

#[test]
fn backend_restart_and_the_next_client() {
    let kit = kit();
    let (store, _raw) = Store::with_images(&["vm"], 16 * MIB);
    let socket = store.path("vm.sock");
    let disk = format!("image=vm,socket={}", socket.display());
    let server = Server::start(&store, std::slice::from_ref(&disk));
    let (offset, len) = (4 * MIB, 128 * 1024);
    let mut guest = QemuVhostUserBlk::new(&kit)
        .disk(&socket)
        .reconnect(true)
        .append(&format!(
            "strata.test=sums,pause,write,sums strata.pause=8 strata.ranges={offset}:{len} \
             strata.wr={offset}:{len} strata.pattern=c3"
        ))
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    guest
        .wait_for_line("PAUSE", GUEST_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    // Kill the backend while the guest runs, and start a new one at once.
    server.kill();
    let server = Server::start(&store, std::slice::from_ref(&disk));
    let report = guest
        .finish(GUEST_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        report.wrote.len(),
        1,
        "the guest's write after the restart did not complete"
    );
    let written = report.wrote[0].sha256.clone();
    let sums: Vec<&str> = report.sums.iter().map(|s| s.sha256.as_str()).collect();
    assert_eq!(sums.len(), 2);
    assert_eq!(
        sums[1], written,
        "the guest reads back what it wrote after the restart"
    );

    // The same server takes the next client: a new guest sees the data.
    let mut second = QemuVhostUserBlk::new(&kit)
        .disk(&socket)
        .append(&format!("strata.test=sums strata.ranges={offset}:{len}"))
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let report = second
        .finish(GUEST_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.sum("vda", offset, len), Some(written.as_str()));
    server.stop();
}

/// A disk served with `direct` (O_DIRECT) and `poll=50`: the guest reads the
/// golden bytes through direct reads of the base and writes through direct
/// copy-ups into the top layer; any kick lost by the polling worker would
/// hang the guest. Its files live in Cargo's scratch directory, since the
/// system's temporary directory may be tmpfs, which has no direct I/O.
#[test]
fn linux_guest_on_a_direct_polled_disk() {
    let kit = kit();
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(scratch).unwrap();
    let dir = tempfile::tempdir_in(scratch).unwrap();
    let raw = dir.path().join("golden.raw");
    golden(&raw, 32 * MIB);
    let golden_sum = host_sha256(&raw, 0, 32 * MIB).unwrap();
    let top = dir.path().join("top.layer");
    let parent = ParentSpec {
        kind: ParentKind::Raw,
        id: Default::default(),
        size: 32 * MIB,
        location: "golden.raw".into(),
    };
    LayerFile::create(&top, 32 * MIB, 64 << 10, Some(&parent)).unwrap();

    let socket = dir.path().join("d.sock");
    let store = Store::new();
    let server = Server::start(
        &store,
        &[format!(
            "path={},socket={},queues=2,direct,poll=50",
            top.display(),
            socket.display()
        )],
    );
    // Unaligned to the 64 KiB block at both ends: copy-ups merge old bytes.
    let (offset, len) = (5 * MIB + 4096, 192 * 1024 + 512);
    let mut guest = QemuVhostUserBlk::new(&kit)
        .disk(&socket)
        .num_queues(2)
        .append(&format!(
            "strata.test=sums,write strata.wr={offset}:{len} strata.pattern=3c"
        ))
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let report = guest
        .finish(GUEST_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    server.stop();

    assert_eq!(
        report.sum("vda", 0, 32 * MIB),
        Some(golden_sum.as_str()),
        "the guest read other bytes than the golden image's"
    );
    assert_eq!(report.wrote.len(), 1);
    let image = Image::open(&top, Access::ReadOnly).unwrap();
    let mut buf = vec![0u8; len as usize + 2 * 4096];
    image.read_at(offset - 4096, &mut buf).unwrap();
    let mut expected = std::fs::read(&raw).unwrap()
        [(offset - 4096) as usize..(offset + len + 4096) as usize]
        .to_vec();
    expected[4096..4096 + len as usize].fill(0x3c);
    assert!(
        buf == expected,
        "the guest's write, or the bytes around it, are wrong"
    );
    assert_eq!(host_sha256(&raw, 0, 32 * MIB).unwrap(), golden_sum);
}

/// The pid of the `strata blk serve` whose command line names `socket`.
fn serve_pid(socket: &Path) -> u32 {
    let needle = socket.to_str().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmd| {
                let cmd = String::from_utf8_lossy(&cmd);
                cmd.contains("blk\0serve") && cmd.contains(needle)
            })
        })
        .unwrap_or_else(|| panic!("no strata blk serve for {needle}"))
}

/// How many descriptors of process `pid` name `path`.
fn fds_naming(pid: u32, path: &Path) -> usize {
    let target = path.canonicalize().unwrap();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|link| *link == target)
        .count()
}

/// Four disks in one process: two on an imported golden layer, two on a raw
/// golden file. Each shared base is open once, whatever the disk count.
#[test]
fn disks_served_together_open_their_shared_bases_once() {
    let store = Store::new();
    let raw = store.path("golden.raw");
    golden(&raw, 16 * MIB);
    store.image(&["import", "golden", raw.to_str().unwrap()]);
    for (name, from) in [
        ("a", "--from"),
        ("b", "--from"),
        ("c", "--raw"),
        ("d", "--raw"),
    ] {
        let base = if from == "--raw" {
            raw.to_str().unwrap()
        } else {
            "golden"
        };
        store.image(&["create", name, from, base]);
    }
    let golden_layer = store.top("golden");
    // `image info` cannot open an image while it is served.
    let tops: Vec<_> = ["a", "b", "c", "d"].map(|n| store.top(n)).into();
    let disks: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| {
            format!(
                "image={n},socket={}",
                store.path(&format!("{n}.sock")).display()
            )
        })
        .collect();
    let server = Server::start(&store, &disks);
    let pid = serve_pid(&store.path("a.sock"));
    assert_eq!(fds_naming(pid, &golden_layer), 1, "the golden layer");
    assert_eq!(fds_naming(pid, &raw), 1, "the golden raw file");
    for top in &tops {
        assert_eq!(fds_naming(pid, top), 1, "{}", top.display());
    }
    server.stop();
}

/// `direct` on a filesystem without direct I/O (tmpfs) is refused in one
/// line naming the file, before anything is served.
#[test]
fn direct_io_on_tmpfs_is_refused_in_one_line() {
    let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
        eprintln!("skipping: no /dev/shm");
        return;
    };
    let top = dir.path().join("top.layer");
    LayerFile::create(&top, 16 * MIB, 64 << 10, None).unwrap();
    let out = common::run(common::strata().args([
        "blk",
        "serve",
        "--disk",
        &format!(
            "path={},socket={},direct",
            top.display(),
            dir.path().join("s.sock").display()
        ),
    ]));
    common::assert_one_line_error(
        &out,
        &[
            &top.display().to_string(),
            "this filesystem does not support direct I/O (O_DIRECT)",
        ],
    );
}

/// Scattered reads, like a boot: 48 runs of 128 KiB across the first `span` bytes.
fn boot_like_ranges(span: u64) -> String {
    (0..48u64)
        .map(|i| format!("{}:{}", (i * 7919 % 48) * (span / 48), 128 * 1024))
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn look_ahead_trace_is_recorded_and_replayed() {
    let kit = kit();
    let store = Store::new();
    let raw = store.path("golden.raw");
    golden(&raw, 32 * MIB);
    store.image(&["create", "first", "--raw", raw.to_str().unwrap()]);
    store.image(&["create", "second", "--raw", raw.to_str().unwrap()]);
    let ranges = boot_like_ranges(32 * MIB);

    // First boot: its reads are recorded when the session ends.
    let socket = store.path("first.sock");
    let server = Server::start(
        &store,
        &[format!("image=first,socket={}", socket.display())],
    );
    let mut guest = QemuVhostUserBlk::new(&kit)
        .disk(&socket)
        .append(&format!("strata.test=read strata.ranges={ranges}"))
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    guest
        .finish(GUEST_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    server.wait_for_log("recorded the first", Duration::from_secs(10));
    server.stop();
    let traces: Vec<_> = std::fs::read_dir(store.path("store/readahead"))
        .unwrap()
        .collect();
    assert_eq!(traces.len(), 1, "one trace for the one golden base");

    // Another image on the same base: the trace is replayed at start.
    let socket = store.path("second.sock");
    let server = Server::start(
        &store,
        &[format!("image=second,socket={}", socket.display())],
    );
    let line = server.wait_for_log("prefetched", Duration::from_secs(10));
    let count: u64 = line
        .split("prefetched ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        count >= 48 * 2,
        "at least the blocks of 48 ranges of 128 KiB: {line}"
    );
    server.stop();
}

/// Not a test but a measurement (run with --ignored --nocapture): the guest's
/// time to read boot-like ranges with a cold page cache, with and without
/// look-ahead, interleaved. Figures go to docs/benchmarks.md.
#[test]
#[ignore = "benchmark"]
fn look_ahead_effect_with_a_cold_page_cache() {
    let kit = kit();
    let store = Store::new();
    let raw = store.path("golden.raw");
    golden(&raw, 256 * MIB);
    let ranges = boot_like_ranges(256 * MIB);
    let boot = |name: &str, readahead: &str| -> u64 {
        let socket = store.path(&format!("{name}.sock"));
        store.image(&["create", name, "--raw", raw.to_str().unwrap()]);
        // SAFETY: sync(2) has no preconditions.
        unsafe { libc::sync() };
        std::fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
        let disk = format!(
            "image={name},socket={},readahead={readahead}",
            socket.display()
        );
        let server = Server::start(&store, &[disk]);
        let mut guest = QemuVhostUserBlk::new(&kit)
            .disk(&socket)
            .append(&format!("strata.test=read strata.ranges={ranges}"))
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"));
        let line = guest
            .wait_for_line("READ ", GUEST_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
        guest
            .finish(GUEST_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e}"));
        server.stop();
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    };
    boot("record", "on");
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 0..5 {
        off.push(boot(&format!("off{round}"), "off"));
        on.push(boot(&format!("on{round}"), "on"));
    }
    off.sort_unstable();
    on.sort_unstable();
    println!(
        "guest read of 48 x 128 KiB, cold page cache, median of 5: without look-ahead {} ms, with {} ms",
        off[2], on[2]
    );
    println!("all runs: without {off:?}, with {on:?}");
}
