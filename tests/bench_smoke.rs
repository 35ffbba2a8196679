//! `strata bench boot` runs end to end and reports every contender. This
//! checks the benchmark works, not how fast anything is.
#![allow(clippy::unwrap_used)]

mod common;

use common::{kvm_available, run, stderr, stdout, strata};

#[test]
fn bench_boot_reports_strata_and_qemu() {
    if !kvm_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("boot.md");
    let out = run(strata()
        .args(["bench", "boot", "--runs", "1", "--markdown"])
        .arg(&md));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    for row in [
        "strata",
        "qemu -M microvm",
        "qemu -M pc",
        "qemu -M microvm / strata",
    ] {
        assert!(text.contains(row), "{row:?} missing from:\n{text}");
    }
    let table = std::fs::read_to_string(&md).unwrap();
    assert!(table.starts_with("| VMM |"), "{table}");
    assert_eq!(
        table
            .lines()
            .filter(|l| l.starts_with("| strata |"))
            .count(),
        1
    );
}

#[test]
fn bench_rejects_zero_runs() {
    let out = run(strata().args(["bench", "boot", "--runs", "0"]));
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
}

#[test]
fn bench_blk_quick_reports_every_backend() {
    let out = run(strata().args(["bench", "blk", "--quick"]));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    for needle in [
        "rand-read 4K",
        "seq-read 128K",
        "rand-write 4K",
        "goal 1.5x",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}

#[test]
fn image_bench_quick_compares_with_qcow2() {
    let out = run(strata().args(["image", "bench", "--quick"]));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    for needle in ["rand-read 4K", "qcow2", "64 KiB"] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}

#[test]
fn bench_guest_disk_reports_guest_and_host_rates() {
    if !kvm_available() {
        return;
    }
    let out = run(strata().args([
        "bench",
        "guest-disk",
        "--rounds",
        "1",
        "--requests",
        "50",
        "--seconds",
        "0.1",
    ]));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    for needle in [
        "inside a Strata guest",
        "host libblkio client",
        "with one vhost-user-blk disk",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
}
