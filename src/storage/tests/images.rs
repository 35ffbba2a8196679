//! The named-image commands on real files: many overlays on one golden
//! image across two tiers, copying between tiers (snapshot, then only the
//! difference), commit, rm, diff, and the errors users meet.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use strata_storage::images::{CreateFrom, ImportFormat, Store};
use strata_storage::ops::NoProgress;
use strata_storage::store::StoreConfig;
use strata_storage::{Access, Image};

const MIB: u64 = 1 << 20;
const BS: u32 = 64 << 10;

struct Fixture {
    dir: tempfile::TempDir,
    store: Store,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["store", "fast", "capacity"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
    }
    let tiers = [
        format!("fast={}:fast", dir.path().join("fast").display()),
        format!(
            "capacity={}:capacity",
            dir.path().join("capacity").display()
        ),
    ];
    let config = StoreConfig::from_tier_flags(&tiers, None, None).unwrap();
    config.validate().unwrap();
    let store = Store::new(config, dir.path().join("store"));
    Fixture { dir, store }
}

/// A sparse golden raw image of `size` bytes with pseudo-random data in its first `data` bytes.
fn golden(dir: &Path, size: u64, data: u64) -> PathBuf {
    let path = dir.join("golden.raw");
    let bytes: Vec<u8> = (0..data)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 | 1)
        .collect();
    std::fs::write(&path, &bytes).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(size)
        .unwrap();
    path
}

fn top_of(store: &Store, name: &str) -> PathBuf {
    store.info(name).unwrap().chain[0].path.clone()
}

fn write(store: &Store, name: &str, offset: u64, data: &[u8]) {
    let image = Image::open(&top_of(store, name), Access::ReadWrite).unwrap();
    image.write_at(offset, data).unwrap();
    image.flush().unwrap();
}

fn read(store: &Store, name: &str, offset: u64, len: usize) -> Vec<u8> {
    let image = Image::open(&top_of(store, name), Access::ReadOnly).unwrap();
    let mut buf = vec![0u8; len];
    image.read_at(offset, &mut buf).unwrap();
    buf
}

#[test]
fn eight_overlays_share_one_golden_image_across_two_tiers() {
    let f = fixture();
    let raw = golden(f.dir.path(), 1 << 30, 4 * MIB);
    let golden_bytes = std::fs::read(&raw).unwrap();
    f.store
        .import("golden", &raw, ImportFormat::Auto, BS, &mut NoProgress)
        .unwrap();
    // The import is a frozen base on the bases tier.
    let info = f.store.info("golden").unwrap();
    assert_eq!(info.chain[0].tier.as_deref(), Some("capacity"));
    assert!(info.chain[0].frozen);
    for i in 0..8u8 {
        let name = format!("vm{i}");
        f.store
            .create(&name, &CreateFrom::Image("golden".into()), BS)
            .unwrap();
        assert_eq!(
            f.store.info(&name).unwrap().chain[0].tier.as_deref(),
            Some("fast")
        );
        // Each guest writes its own mark, partly over golden data (copy-up).
        write(&f.store, &name, u64::from(i) * 1000 + 100, &[i + 1; 3000]);
        write(
            &f.store,
            &name,
            512 * MIB + u64::from(i) * MIB,
            &[0xa0 + i; 4096],
        );
    }
    // Half of them live on the other tier.
    for i in 0..4 {
        f.store
            .copy_to_tier(&format!("vm{i}"), "capacity", &mut NoProgress)
            .unwrap();
    }
    for i in 0..8u8 {
        let name = format!("vm{i}");
        let head = read(&f.store, &name, 0, 16384);
        let mut expected = golden_bytes[..16384].to_vec();
        let at = usize::from(i) * 1000 + 100;
        expected[at..at + 3000].fill(i + 1);
        assert_eq!(
            head, expected,
            "{name} sees its own write over the golden data"
        );
        for j in 0..8u8 {
            let other = read(&f.store, &name, 512 * MIB + u64::from(j) * MIB, 4096);
            let want = if i == j {
                vec![0xa0 + i; 4096]
            } else {
                vec![0; 4096]
            };
            assert_eq!(other, want, "{name} sees only its own writes");
        }
        f.store.check(&name).unwrap();
    }
    assert_eq!(
        std::fs::read(&raw).unwrap(),
        golden_bytes,
        "the golden raw file is unchanged"
    );
    let golden_now = read(&f.store, "golden", 0, 4 * MIB as usize);
    assert_eq!(golden_now, golden_bytes[..4 * MIB as usize]);
}

#[test]
fn second_copy_moves_only_what_changed() {
    let f = fixture();
    let raw = golden(f.dir.path(), 256 * MIB, MIB);
    f.store.create("db", &CreateFrom::Raw(raw), BS).unwrap();
    // 32 MiB of the guest's own data.
    let blocks = 512u64;
    for b in 0..blocks {
        write_quiet(
            &f.store,
            "db",
            b * u64::from(BS),
            &[(b % 251) as u8 + 1; BS as usize],
        );
    }
    let first = f
        .store
        .copy_to_tier("db", "capacity", &mut NoProgress)
        .unwrap();
    assert_eq!(
        first.bytes_moved,
        blocks * u64::from(BS),
        "the first copy moves the data once"
    );
    // 1% of the blocks change.
    for b in (0..blocks).step_by(100) {
        write_quiet(&f.store, "db", b * u64::from(BS), &[0xee; BS as usize]);
    }
    let changed = blocks.div_ceil(100) * u64::from(BS);
    let second = f.store.copy_to_tier("db", "fast", &mut NoProgress).unwrap();
    assert_eq!(
        second.bytes_moved, changed,
        "the second copy moves only the changed blocks"
    );
    assert!(second.layers_reused >= 2, "{second:?}");
    assert_eq!(read(&f.store, "db", 0, 4), vec![0xee; 4]);
    assert_eq!(read(&f.store, "db", u64::from(BS), 4), vec![2; 4]);
    assert_eq!(
        f.store.info("db").unwrap().chain[0].tier.as_deref(),
        Some("fast")
    );
}

fn write_quiet(store: &Store, name: &str, offset: u64, data: &[u8]) {
    write(store, name, offset, data);
}

#[test]
fn snapshot_diff_commit_and_rm() {
    let f = fixture();
    f.store
        .create("a", &CreateFrom::Empty(16 * MIB), BS)
        .unwrap();
    write(&f.store, "a", 0, &[1; 100]);
    f.store.snapshot("a", Some("a-snap")).unwrap();
    write(&f.store, "a", 3 * u64::from(BS) + 5, &[2; 10]);
    write(&f.store, "a", 7 * u64::from(BS), &[3; 10]);
    let (ranges, bs) = f.store.diff("a", "a-snap").unwrap();
    assert_eq!(bs, BS);
    let blocks: Vec<u64> = ranges
        .iter()
        .flat_map(|r| r.first..r.first + r.count)
        .collect();
    assert_eq!(blocks, vec![3, 7]);

    // The snapshot's layer is shared with a-snap: commit must refuse.
    let err = f
        .store
        .commit("a", &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(err.contains("also part of image a-snap"), "{err}");
    f.store.remove("a-snap").unwrap();
    f.store.commit("a", &mut NoProgress).unwrap();
    assert_eq!(f.store.info("a").unwrap().chain.len(), 1);
    assert_eq!(read(&f.store, "a", 0, 3), vec![1; 3]);
    assert_eq!(read(&f.store, "a", 3 * u64::from(BS) + 5, 3), vec![2; 3]);

    // rm deletes the layers nobody else uses, and keeps shared ones.
    f.store
        .create("child", &CreateFrom::Image("a".into()), BS)
        .unwrap();
    let shared = f.store.info("child").unwrap().chain[1].path.clone();
    let deleted = f.store.remove("child").unwrap();
    assert_eq!(deleted.len(), 1);
    assert!(shared.exists());
    let deleted = f.store.remove("a").unwrap();
    assert!(deleted.len() >= 2, "{deleted:?}");
    assert!(!shared.exists());
}

#[test]
fn export_round_trips_through_import() {
    let f = fixture();
    f.store
        .create("src", &CreateFrom::Empty(8 * MIB + 512), BS)
        .unwrap();
    write(&f.store, "src", 12345, b"hello strata");
    write(&f.store, "src", 8 * MIB, &[9; 512]);
    let out = f.dir.path().join("out.raw");
    f.store.export("src", &out, &mut NoProgress).unwrap();
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 8 * MIB + 512);
    let err = f
        .store
        .export("src", &out, &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(err.contains("already exists"), "{err}");
    f.store
        .import("copy", &out, ImportFormat::Raw, BS, &mut NoProgress)
        .unwrap();
    let (ranges, _) = f.store.diff("src", "copy").unwrap();
    assert!(ranges.is_empty(), "{ranges:?}");
}

#[test]
fn qcow2_import_goes_through_qemu_img() {
    let f = fixture();
    let raw = golden(f.dir.path(), 4 * MIB, MIB);
    let qcow = f.dir.path().join("golden.qcow2");
    let status = std::process::Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&qcow)
        .status()
        .expect("qemu-img is installed by scripts/test.sh");
    assert!(status.success());
    f.store
        .import("q", &qcow, ImportFormat::Auto, BS, &mut NoProgress)
        .unwrap();
    f.store
        .import("r", &raw, ImportFormat::Auto, BS, &mut NoProgress)
        .unwrap();
    assert!(f.store.diff("q", "r").unwrap().0.is_empty());
}

#[test]
fn errors_name_the_image_and_the_problem() {
    let f = fixture();
    let err = f.store.info("nope").unwrap_err().to_string();
    assert!(err.contains("no image named \"nope\""), "{err}");
    f.store.create("a", &CreateFrom::Empty(MIB), BS).unwrap();
    let err = f
        .store
        .create("a", &CreateFrom::Empty(MIB), BS)
        .unwrap_err()
        .to_string();
    assert!(err.contains("a"), "{err}");
    let err = f
        .store
        .create("b", &CreateFrom::Raw(f.dir.path().join("missing.raw")), BS)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.raw"), "{err}");
    let err = f
        .store
        .copy_to_tier("a", "tape", &mut NoProgress)
        .unwrap_err()
        .to_string();
    assert!(err.contains("tape"), "{err}");
    // An image open for writing cannot be snapshotted by another opener.
    let _writer = Image::open(&top_of(&f.store, "a"), Access::ReadWrite).unwrap();
    let err = f.store.snapshot("a", None).unwrap_err().to_string();
    assert!(err.contains("in use"), "{err}");
}
