//! Corruption tests: damaged layer files and broken chains, on real files.
//!
//! Each case copies a valid chain into a fresh directory, damages it, and
//! checks that opening the image fails with an error naming the file and the
//! problem, never a panic; a damaged header slot falls back to the other
//! slot, as the format intends. A seeded sweep then damages layer files at
//! random, 500 times: open may succeed or fail but must not panic, and an
//! image that opens must read (and take a write) without panicking.
//!
//! ```text
//!  golden.raw ◄── base.strata (frozen) ◄── top.strata (writable)
//! ```
#![allow(clippy::unwrap_used)]

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use strata_storage::format::{
    HEADER_SLOT_SIZE, Header, PARENT_LOCATION_OFFSET, Parent, ParentKind, checksum, choose_header,
};
use strata_storage::{Access, Image, LayerFile, ParentSpec};

const BLOCK: u32 = 4096;
const BS: u64 = BLOCK as u64;
const SIZE: u64 = 32 * BS - 700;
const GOLDEN: &str = "golden.raw";
const BASE: &str = "base.strata";
const TOP: &str = "top.strata";
const SWEEP_CASES: u64 = 500;

fn pattern(key: u64, offset: u64, len: u64) -> Vec<u8> {
    (offset..offset + len)
        .map(|p| (p.wrapping_mul(31) ^ key.wrapping_mul(0x9e37_79b9)) as u8 | 1)
        .collect()
}

/// A valid chain on disk, and what the top reads as now and as of its
/// previous commit.
struct Chain {
    dir: tempfile::TempDir,
    expected: Vec<u8>,
    previous: Vec<u8>,
}

fn write(image: &mut Image, disk: &mut [u8], key: u64, offset: u64, len: u64) {
    let bytes = pattern(key, offset, len);
    image.write_at(offset, &bytes).unwrap();
    disk[offset as usize..(offset + len) as usize].copy_from_slice(&bytes);
}

fn build_chain() -> Chain {
    let dir = tempfile::tempdir().unwrap();
    let mut disk = pattern(0, 0, SIZE);
    std::fs::write(dir.path().join(GOLDEN), &disk).unwrap();
    let spec = ParentSpec {
        kind: ParentKind::Raw,
        id: uuid::Uuid::nil(),
        size: SIZE,
        location: GOLDEN.into(),
    };
    LayerFile::create(&dir.path().join(BASE), SIZE, BLOCK, Some(&spec)).unwrap();
    let mut image = Image::open(&dir.path().join(BASE), Access::ReadWrite).unwrap();
    write(&mut image, &mut disk, 1, 0, 3 * BS);
    write(&mut image, &mut disk, 2, 10 * BS + 17, 5000);
    image.write_zeroes(20 * BS, 2 * BS).unwrap();
    disk[20 * BS as usize..22 * BS as usize].fill(0);
    image.snapshot(&dir.path().join(TOP), BASE).unwrap();
    write(&mut image, &mut disk, 3, BS, BS + 300);
    write(&mut image, &mut disk, 4, 25 * BS, 2 * BS);
    image.flush().unwrap();
    let previous = disk.clone();
    // Only blocks the top does not own yet: the previous commit's table
    // and data stay intact, so falling back to it reads `previous`.
    write(&mut image, &mut disk, 5, 12 * BS, 2 * BS);
    write(&mut image, &mut disk, 6, SIZE - 100, 100);
    image.flush().unwrap();
    Chain {
        dir,
        expected: disk,
        previous,
    }
}

impl Chain {
    /// A copy of the chain in a fresh directory, to damage.
    fn copy(&self) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for name in [GOLDEN, BASE, TOP] {
            std::fs::copy(self.dir.path().join(name), dir.path().join(name)).unwrap();
        }
        dir
    }
}

fn read_disk(image: &Image) -> Vec<u8> {
    let mut disk = vec![0u8; image.virtual_size() as usize];
    image.read_at(0, &mut disk).unwrap();
    disk
}

fn open_error(top: &Path) -> String {
    match Image::open(top, Access::ReadWrite) {
        Ok(_) => panic!("{} opened despite the damage", top.display()),
        Err(e) => e.to_string(),
    }
}

/// Damages a copy of the chain and checks the error names `file` and says
/// every one of `problem`.
fn assert_refused(chain: &Chain, damage: impl FnOnce(&Path), file: &str, problem: &[&str]) {
    let dir = chain.copy();
    damage(dir.path());
    let err = open_error(&dir.path().join(TOP));
    let named = dir.path().join(file).display().to_string();
    assert!(err.contains(&named), "error does not name {file}: {err}");
    for words in problem {
        assert!(err.contains(words), "error does not say {words:?}: {err}");
    }
}

fn rw(path: &Path) -> std::fs::File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap()
}

fn read_slot(path: &Path, slot: usize) -> [u8; HEADER_SLOT_SIZE] {
    let mut bytes = [0u8; HEADER_SLOT_SIZE];
    rw(path)
        .read_exact_at(&mut bytes, (slot * HEADER_SLOT_SIZE) as u64)
        .unwrap();
    bytes
}

fn write_slot(path: &Path, slot: usize, bytes: &[u8]) {
    rw(path)
        .write_all_at(bytes, (slot * HEADER_SLOT_SIZE) as u64)
        .unwrap();
}

/// Rewrites raw bytes of a slot and recomputes its CRC, as a buggy or
/// hostile writer would.
fn patch_slot_bytes(path: &Path, slot: usize, at: usize, bytes: &[u8]) {
    let mut raw = read_slot(path, slot);
    raw[at..at + bytes.len()].copy_from_slice(bytes);
    let crc = checksum(&raw[..HEADER_SLOT_SIZE - 4]);
    raw[HEADER_SLOT_SIZE - 4..].copy_from_slice(&crc.to_le_bytes());
    write_slot(path, slot, &raw);
}

/// The current header and its slot.
fn current(path: &Path) -> (Header, usize) {
    choose_header(&read_slot(path, 0), &read_slot(path, 1)).unwrap()
}

fn patch_current_header(path: &Path, change: impl FnOnce(&mut Header)) {
    let (mut header, slot) = current(path);
    change(&mut header);
    write_slot(path, slot, &header.encode());
}

fn flip(path: &Path, at: u64) {
    let file = rw(path);
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).unwrap();
    file.write_all_at(&[byte[0] ^ 0x5a], at).unwrap();
}

fn truncate(path: &Path, len: u64) {
    rw(path).set_len(len).unwrap();
}

/// Replaces entry `block` of the current table copy and makes the table and
/// header checksums match again, so only the entry's validation can object.
fn set_table_entry(path: &Path, block: u64, value: u64) {
    let (header, _) = current(path);
    let table_at = header.geometry.table_offsets[usize::from(header.active_table)];
    let file = rw(path);
    file.write_all_at(&value.to_le_bytes(), table_at + block * 8)
        .unwrap();
    let mut table = vec![0u8; header.geometry.table_len()];
    file.read_exact_at(&mut table, table_at).unwrap();
    patch_current_header(path, |h| h.table_crc = checksum(&table));
}

#[test]
fn bad_magic_is_refused() {
    let chain = build_chain();
    let both_slots = |dir: &Path| {
        for slot in 0..2 {
            rw(&dir.join(TOP))
                .write_all_at(b"NOTALAYR", (slot * HEADER_SLOT_SIZE) as u64)
                .unwrap();
        }
    };
    assert_refused(&chain, both_slots, TOP, &["not a Strata layer (bad magic)"]);
    // A raw disk image where a layer should be.
    let raw_as_layer = |dir: &Path| {
        std::fs::copy(dir.join(GOLDEN), dir.join(BASE))
            .map(drop)
            .unwrap()
    };
    assert_refused(&chain, raw_as_layer, BASE, &["bad magic"]);
}

#[test]
fn unknown_version_is_refused() {
    let chain = build_chain();
    let version_2 = |dir: &Path| {
        (0..2).for_each(|slot| patch_slot_bytes(&dir.join(TOP), slot, 8, &2u32.to_le_bytes()))
    };
    assert_refused(
        &chain,
        version_2,
        TOP,
        &["format version 2", "reads version 1"],
    );
}

#[test]
fn unknown_flags_are_refused() {
    let chain = build_chain();
    let flags = |dir: &Path| {
        (0..2).for_each(|slot| patch_slot_bytes(&dir.join(TOP), slot, 12, &0x80u32.to_le_bytes()))
    };
    assert_refused(&chain, flags, TOP, &["unknown flags 0x80"]);
}

#[test]
fn one_damaged_header_slot_falls_back_to_the_other() {
    let chain = build_chain();
    let (_, current_slot) = current(&chain.dir.path().join(TOP));
    for (slot, wanted) in [
        (current_slot, &chain.previous),
        (1 - current_slot, &chain.expected),
    ] {
        let dir = chain.copy();
        let top = dir.path().join(TOP);
        flip(&top, (slot * HEADER_SLOT_SIZE + 200) as u64);
        let mut image = Image::open(&top, Access::ReadWrite).unwrap();
        assert!(
            read_disk(&image) == *wanted,
            "slot {slot} damaged: wrong contents"
        );
        // The next commit rewrites the damaged slot; the image stays usable.
        let mut disk = wanted.clone();
        write(&mut image, &mut disk, 9, 7 * BS + 5, 3 * BS);
        image.flush().unwrap();
        drop(image);
        let image = Image::open(&top, Access::ReadOnly).unwrap();
        assert!(
            read_disk(&image) == disk,
            "slot {slot} damaged: a later commit was lost"
        );
    }
}

#[test]
fn both_damaged_header_slots_are_refused() {
    let chain = build_chain();
    let both = |dir: &Path| {
        (0..2).for_each(|slot| flip(&dir.join(TOP), (slot * HEADER_SLOT_SIZE + 40) as u64))
    };
    assert_refused(&chain, both, TOP, &["header checksum does not match"]);
    let base_too = |dir: &Path| {
        (0..2).for_each(|slot| flip(&dir.join(BASE), (slot * HEADER_SLOT_SIZE + 300) as u64))
    };
    assert_refused(&chain, base_too, BASE, &["header checksum does not match"]);
}

#[test]
fn table_damage_is_refused() {
    let chain = build_chain();
    let (header, _) = current(&chain.dir.path().join(TOP));
    let table_at = header.geometry.table_offsets[usize::from(header.active_table)];
    let data_offset = header.geometry.data_offset;
    let end = header.allocated_end;
    assert_refused(
        &chain,
        |dir| flip(&dir.join(TOP), table_at + 3),
        TOP,
        &["table checksum does not match"],
    );
    let beyond = |dir: &Path| set_table_entry(&dir.join(TOP), 2, end + 64 * BS);
    assert_refused(
        &chain,
        beyond,
        TOP,
        &["table entry 2 points at", "outside the data area"],
    );
    let into_tables = |dir: &Path| set_table_entry(&dir.join(TOP), 2, BS);
    assert_refused(
        &chain,
        into_tables,
        TOP,
        &["table entry 2 points at 0x1000", "outside the data area"],
    );
    let huge = |dir: &Path| set_table_entry(&dir.join(TOP), 3, u64::MAX - BS + 1);
    assert_refused(&chain, huge, TOP, &["outside the data area"]);
    let misaligned = |dir: &Path| set_table_entry(&dir.join(TOP), 2, data_offset + 8);
    assert_refused(&chain, misaligned, TOP, &["not block-aligned"]);
    let shared = |dir: &Path| {
        set_table_entry(&dir.join(TOP), 0, data_offset);
        set_table_entry(&dir.join(TOP), 30, data_offset);
    };
    assert_refused(&chain, shared, TOP, &["both point at"]);
}

#[test]
fn truncated_files_are_refused() {
    let chain = build_chain();
    let top = chain.dir.path().join(TOP);
    let (header, _) = current(&top);
    let len = std::fs::metadata(&top).unwrap().len();
    assert_refused(
        &chain,
        |dir| truncate(&dir.join(TOP), 0),
        TOP,
        &["shorter than 512 bytes"],
    );
    assert_refused(
        &chain,
        |dir| truncate(&dir.join(TOP), 300),
        TOP,
        &["shorter than 512 bytes"],
    );
    // Slot 1 cut short: whichever slot is chosen, the data is gone.
    assert_refused(
        &chain,
        |dir| truncate(&dir.join(TOP), 700),
        TOP,
        &["truncated file"],
    );
    let in_parent_location = |dir: &Path| truncate(&dir.join(TOP), PARENT_LOCATION_OFFSET + 3);
    assert_refused(&chain, in_parent_location, TOP, &["truncated file"]);
    let in_table = |dir: &Path| truncate(&dir.join(TOP), header.geometry.table_offsets[1] + 100);
    assert_refused(&chain, in_table, TOP, &["truncated file"]);
    let in_data = |dir: &Path| truncate(&dir.join(TOP), len - BS / 2);
    assert_refused(&chain, in_data, TOP, &["truncated file", "is only"]);
    let base_in_data = |dir: &Path| {
        let base = dir.join(BASE);
        truncate(&base, std::fs::metadata(&base).unwrap().len() - BS);
    };
    assert_refused(&chain, base_in_data, BASE, &["truncated file"]);
}

#[test]
fn corrupt_parent_location_is_refused() {
    let chain = build_chain();
    let damage = |dir: &Path| flip(&dir.join(TOP), PARENT_LOCATION_OFFSET + 2);
    assert_refused(&chain, damage, TOP, &["parent location is corrupt"]);
}

#[test]
fn missing_parents_are_refused() {
    let chain = build_chain();
    let no_base = |dir: &Path| std::fs::remove_file(dir.join(BASE)).unwrap();
    assert_refused(&chain, no_base, TOP, &[BASE, "is missing"]);
    let no_golden = |dir: &Path| std::fs::remove_file(dir.join(GOLDEN)).unwrap();
    assert_refused(&chain, no_golden, BASE, &[GOLDEN, "is missing"]);
}

#[test]
fn replaced_parent_is_refused() {
    let chain = build_chain();
    let replace = |dir: &Path| {
        std::fs::remove_file(dir.join(BASE)).unwrap();
        let spec = ParentSpec {
            kind: ParentKind::Raw,
            id: uuid::Uuid::nil(),
            size: SIZE,
            location: GOLDEN.into(),
        };
        LayerFile::create(&dir.join(BASE), SIZE, BLOCK, Some(&spec)).unwrap();
    };
    assert_refused(&chain, replace, TOP, &[BASE, "the parent was replaced"]);
}

#[test]
fn raw_base_of_another_size_is_refused() {
    let chain = build_chain();
    for new_len in [SIZE + BS, SIZE - 1] {
        let resize = |dir: &Path| truncate(&dir.join(GOLDEN), new_len);
        let found = format!("is {new_len} bytes, but {SIZE} were recorded");
        assert_refused(&chain, resize, BASE, &[GOLDEN, &found]);
    }
}

/// Points `path`'s (fresh, single-slot) header at a layer parent.
fn point_at(path: &Path, parent_id: uuid::Uuid, location: &str) {
    rw(path)
        .write_all_at(location.as_bytes(), PARENT_LOCATION_OFFSET)
        .unwrap();
    patch_current_header(path, |h| {
        h.parent = Some(Parent {
            kind: ParentKind::Layer,
            id: parent_id,
            size: SIZE,
            location_len: location.len() as u32,
            location_crc: checksum(location.as_bytes()),
        });
    });
}

#[test]
fn chain_loops_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.strata"), dir.path().join("b.strata"));
    let a_id = LayerFile::create(&a, SIZE, BLOCK, None)
        .unwrap()
        .header()
        .id;
    let spec = ParentSpec {
        kind: ParentKind::Layer,
        id: a_id,
        size: SIZE,
        location: "a.strata".into(),
    };
    let b_id = LayerFile::create(&b, SIZE, BLOCK, Some(&spec))
        .unwrap()
        .header()
        .id;
    point_at(&a, b_id, "b.strata");
    let err = open_error(&b);
    assert!(
        err.contains(&b.display().to_string()) && err.contains("loops back to"),
        "{err}"
    );

    let c = dir.path().join("c.strata");
    let c_id = LayerFile::create(&c, SIZE, BLOCK, None)
        .unwrap()
        .header()
        .id;
    point_at(&c, c_id, "c.strata");
    let err = open_error(&c);
    assert!(
        err.contains(&c.display().to_string()) && err.contains("loops back to"),
        "{err}"
    );
}

#[test]
fn block_size_mismatch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (parent, child) = (dir.path().join("p.strata"), dir.path().join("c.strata"));
    let id = LayerFile::create(&parent, SIZE, 2 * BLOCK, None)
        .unwrap()
        .header()
        .id;
    let spec = ParentSpec {
        kind: ParentKind::Layer,
        id,
        size: SIZE,
        location: "p.strata".into(),
    };
    LayerFile::create(&child, SIZE, BLOCK, Some(&spec)).unwrap();
    let err = open_error(&child);
    assert!(err.contains(&child.display().to_string()), "{err}");
    assert!(
        err.contains("uses 8192-byte blocks, the child 4096-byte blocks"),
        "{err}"
    );
}

#[test]
fn shrinking_child_is_refused() {
    let chain = build_chain();
    // One byte less: same number of blocks, so only the chain check objects.
    let shrink = |dir: &Path| {
        patch_slot_bytes(
            &dir.join(TOP),
            current(&dir.join(TOP)).1,
            32,
            &(SIZE - 1).to_le_bytes(),
        )
    };
    assert_refused(&chain, shrink, TOP, &["smaller than its parent"]);
}

/// SplitMix64, for a reproducible sweep.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// One random damage to `path`; returns what was done, for the report.
fn damage_at_random(rng: &mut Rng, path: &Path) -> String {
    let len = std::fs::metadata(path).unwrap().len();
    let (header, slot) = current(path);
    let metadata_end = header.geometry.data_offset;
    match rng.below(5) {
        0 => {
            let mut done = Vec::new();
            for _ in 0..1 + rng.below(8) {
                // Mostly in the header and tables, where bytes mean something.
                let at = if rng.below(4) == 0 {
                    rng.below(len)
                } else {
                    rng.below(metadata_end.min(len))
                };
                flip(path, at);
                done.push(format!("{at:#x}"));
            }
            format!("flip bytes at {}", done.join(", "))
        }
        1 => {
            let at = rng.below(len);
            truncate(path, at);
            format!("truncate to {at:#x}")
        }
        2 => {
            // A header field set to a random value with a valid CRC.
            let slot = if rng.below(3) == 0 { 1 - slot } else { slot };
            let at = rng.below(136) as usize;
            let width = [1usize, 4, 8][rng.below(3) as usize].min(136 - at);
            let value = rng.next().to_le_bytes();
            patch_slot_bytes(path, slot, at, &value[..width]);
            format!(
                "header slot {slot}: {width} bytes at {at} := {:02x?} (CRC fixed)",
                &value[..width]
            )
        }
        _ => {
            // A table entry set to a plausible or random value, checksums fixed.
            let bs = u64::from(header.geometry.block_size);
            let end = header.allocated_end;
            let candidates = [
                0,
                1,
                2,
                metadata_end,
                metadata_end + bs * rng.below(8),
                end,
                end.saturating_sub(bs),
                end + bs,
                rng.below(len),
                rng.next(),
                !(bs - 1),
            ];
            let value = candidates[rng.below(candidates.len() as u64) as usize];
            let block = rng.below(header.geometry.entries);
            set_table_entry(path, block, value);
            format!("table entry {block} := {value:#x} (checksums fixed)")
        }
    }
}

/// Opens, reads and (if it opened) writes and flushes the image; any panic
/// is returned as text.
fn exercise(top: &Path, rng: &mut Rng) -> Result<String, String> {
    let seed = rng.next();
    catch_unwind(AssertUnwindSafe(|| {
        let image = match Image::open(top, Access::ReadWrite) {
            Ok(image) => image,
            Err(e) => return format!("refused: {e}"),
        };
        let size = image.virtual_size();
        // A damaged header may claim a huge disk; read its start, its end
        // and one sector of every block.
        let mut buf = vec![0u8; size.min(1 << 20) as usize];
        image.read_at(0, &mut buf).unwrap();
        let bs = u64::from(image.block_size());
        for block in 0..image.blocks().min(1 << 16) {
            let at = block * bs;
            let mut sector = vec![0u8; (size - at).min(512) as usize];
            image.read_at(at, &mut sector).unwrap();
        }
        let mut rng = Rng(seed);
        let at = rng.below(size);
        let len = (1 + rng.below(2 * bs)).min(size - at);
        image.write_at(at, &pattern(seed, at, len)).unwrap();
        image.flush().unwrap();
        "opened, read, written".to_string()
    }))
    .map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

#[test]
fn random_damage_never_panics() {
    let chain = build_chain();
    let pristine: Vec<(PathBuf, Vec<u8>)> = [BASE, TOP]
        .iter()
        .map(|name| {
            (
                PathBuf::from(name),
                std::fs::read(chain.dir.path().join(name)).unwrap(),
            )
        })
        .collect();
    let dir = chain.copy();
    let top = dir.path().join(TOP);
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
    let cases = env("STRATA_SWEEP_CASES").unwrap_or(SWEEP_CASES);
    let mut rng = Rng(env("STRATA_SWEEP_SEED").unwrap_or(0xc0_4408));
    let mut failures = Vec::new();
    let (mut opened, mut refused) = (0, 0);
    for case in 0..cases {
        for (name, bytes) in &pristine {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        let victim = if rng.below(4) == 0 { BASE } else { TOP };
        let what = damage_at_random(&mut rng, &dir.path().join(victim));
        match exercise(&top, &mut rng) {
            Ok(outcome) if outcome.starts_with("refused") => {
                refused += 1;
                assert!(
                    outcome.contains(&dir.path().display().to_string()),
                    "case {case} ({victim}: {what}): the error names no file: {outcome}"
                );
            }
            Ok(_) => opened += 1,
            Err(panic) => {
                failures.push(format!("case {case}, {victim}: {what}: panicked: {panic}"))
            }
        }
    }
    eprintln!(
        "{cases} damaged chains: {opened} opened, {refused} refused, {} panicked",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "opening a damaged chain panicked:\n{}",
        failures.join("\n")
    );
}

/// Table offsets at or past 2^48 overlap the member index in the image's
/// block map (`(member + 1) << 48 | offset`), so such an entry reads another
/// member's bytes or panics. It needs a file system that allows a sparse
/// file over 256 TiB (tmpfs, XFS, btrfs; not ext4).
#[test]
fn table_offsets_beyond_2_pow_48_are_refused() {
    let chain = build_chain();
    let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
        return;
    };
    for name in [GOLDEN, BASE, TOP] {
        std::fs::copy(chain.dir.path().join(name), dir.path().join(name)).unwrap();
    }
    let top = dir.path().join(TOP);
    let far = 1u64 << 48;
    rw(&top).set_len(far + BS).unwrap();
    patch_current_header(&top, |h| h.allocated_end = far + BS);
    set_table_entry(&top, 0, far);
    let outcome =
        catch_unwind(|| Image::open(&top, Access::ReadOnly).map(|image| read_disk(&image)));
    match outcome {
        Err(_) => panic!("reading the image panicked"),
        Ok(Ok(disk)) => panic!("opened; block 0 reads {:02x?}", &disk[..8]),
        Ok(Err(e)) => assert!(e.to_string().contains(TOP), "{e}"),
    }
}
