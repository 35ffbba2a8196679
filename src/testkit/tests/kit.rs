//! End-to-end check of the kit itself, with QEMU's own vhost-user-blk
//! backend (qemu-storage-daemon) in place of Strata's: the Linux guest must
//! read exactly the bytes of the image file, and its writes must land in it.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use strata_testkit::{DiskFormat, LinuxGuestKit, QemuStorageDaemon, QemuVhostUserBlk, host_sha256};

const MIB: u64 = 1 << 20;
const GUEST_TIMEOUT: Duration = Duration::from_secs(60);

fn kit() -> LinuxGuestKit {
    let started = Instant::now();
    let kit = LinuxGuestKit::ensure().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("guest kit ready in {:?}", started.elapsed());
    kit
}

fn make_image(path: &Path, len: u64, seed: u64) {
    strata_testkit::write_pseudo_random(path, len, seed).unwrap();
}

#[test]
fn guest_reads_every_byte_of_two_disks() {
    let kit = kit();
    let dir = tempfile::tempdir().unwrap();
    let (big, small) = (dir.path().join("big.raw"), dir.path().join("small.raw"));
    make_image(&big, 64 * MIB, 1);
    make_image(&small, 8 * MIB, 2);
    let daemons = [
        QemuStorageDaemon::serve_with(&big, DiskFormat::Raw, &dir.path().join("big.sock"), 2, true),
        QemuStorageDaemon::serve_with(
            &small,
            DiskFormat::Raw,
            &dir.path().join("small.sock"),
            2,
            true,
        ),
    ]
    .map(|d| d.unwrap_or_else(|e| panic!("{e}")));

    let mut guest = QemuVhostUserBlk::new(&kit)
        .disk(daemons[0].socket())
        .disk(daemons[1].socket())
        .num_queues(2)
        .append("strata.test=sums")
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let report = guest
        .finish(GUEST_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("sums guest ran in {:?}", guest.elapsed());

    assert_eq!(report.disks, ["vda", "vdb"]);
    assert_eq!(report.size("vda"), Some(64 * MIB));
    assert_eq!(report.size("vdb"), Some(8 * MIB));
    assert_eq!(
        report.sum("vda", 0, 64 * MIB),
        Some(host_sha256(&big, 0, 64 * MIB).unwrap().as_str())
    );
    assert_eq!(
        report.sum("vdb", 0, 8 * MIB),
        Some(host_sha256(&small, 0, 8 * MIB).unwrap().as_str())
    );
}

#[test]
fn guest_writes_land_in_the_image() {
    let kit = kit();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.raw");
    make_image(&image, 64 * MIB, 3);
    let before = std::fs::read(&image).unwrap();
    let daemon = QemuStorageDaemon::serve(&image, DiskFormat::Raw, &dir.path().join("disk.sock"))
        .unwrap_or_else(|e| panic!("{e}"));

    // Not aligned to the 1 MiB dd block size, to exercise the byte offsets.
    let (offset, len) = (3 * MIB + 4096, 256 * 1024 + 512);
    let mut guest = QemuVhostUserBlk::new(&kit)
        .disk(daemon.socket())
        .append(&format!(
            "strata.test=write,sums strata.wr={offset}:{len} strata.pattern=5a \
             strata.ranges={offset}:{len}"
        ))
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let report = guest
        .finish(GUEST_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("write guest ran in {:?}", guest.elapsed());
    daemon.stop();

    let after = std::fs::read(&image).unwrap();
    let (start, end) = (offset as usize, (offset + len) as usize);
    assert!(
        after[start..end].iter().all(|&b| b == 0x5a),
        "pattern missing from the image"
    );
    assert_eq!(
        after[..start],
        before[..start],
        "bytes before the write changed"
    );
    assert_eq!(after[end..], before[end..], "bytes after the write changed");

    let host = host_sha256(&image, offset, len).unwrap();
    assert_eq!(report.wrote.len(), 1);
    assert_eq!((report.wrote[0].offset, report.wrote[0].len), (offset, len));
    assert_eq!(report.wrote[0].sha256, host);
    assert_eq!(report.sum("vda", offset, len), Some(host.as_str()));
}
