//! Fuzzes the layer parser: the header and table decoders on raw bytes, then
//! the same bytes as a layer file opened through the real `LayerFile` and
//! `Image` code, read, written and flushed if it opens. Run by
//! `scripts/fuzz.sh`.
//!
//! The file sits in a fixture directory beside a raw base and a parent layer
//! with a fixed id, so inputs can name either as their parent:
//!
//! ```text
//!  $TMPDIR/strata-fuzz-<pid>/
//!    golden.raw     64 KiB raw base
//!    parent.strata  layer on golden.raw, id PARENT_ID
//!    fuzzed.strata  the input
//! ```
//!
//! With `STRATA_FUZZ_WRITE_SEEDS=<dir>` set, the target instead writes a seed
//! corpus of small valid layers (one of each parent kind) there and exits.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use strata_storage::format::{
    Geometry, HEADER_SLOT_SIZE, MIN_BLOCK_SIZE, ParentKind, choose_header, decode_table,
};
use strata_storage::{Access, Image, LayerFile, ParentSpec};
use uuid::Uuid;

const BLOCK: u32 = 4096;
const SIZE: u64 = 16 * BLOCK as u64;
const GOLDEN: &str = "golden.raw";
const PARENT: &str = "parent.strata";
const FUZZED: &str = "fuzzed.strata";
/// Fixed so that seeds written by one run still name the parent of the next.
const PARENT_ID: Uuid = Uuid::from_u128(0x5354_5241_5441_0000_0000_0000_0000_0001);
const SEEDS_ENV: &str = "STRATA_FUZZ_WRITE_SEEDS";

fuzz_target!(init: write_seeds_if_asked(), |data: &[u8]| {
    decode_bytes(data);
    open_as_file(data);
});

/// The pure decoders: two header slots, then the table the header names;
/// and a table under a geometry and checksum taken from the input.
fn decode_bytes(data: &[u8]) {
    let (slot0, rest) = data.split_at(data.len().min(HEADER_SLOT_SIZE));
    let (slot1, rest) = rest.split_at(rest.len().min(HEADER_SLOT_SIZE));
    if let Ok((header, _)) = choose_header(slot0, slot1) {
        let table_at = header.geometry.table_offsets[usize::from(header.active_table)];
        let table = usize::try_from(table_at)
            .ok()
            .and_then(|at| data.get(at..))
            .unwrap_or_default();
        let _ = decode_table(
            table,
            &header.geometry,
            header.table_crc,
            header.allocated_end,
        );
    }
    if let [b0, b1, shift, extra, c0, c1, c2, c3, table @ ..] = rest {
        let block_size = MIN_BLOCK_SIZE << (shift % 10);
        let blocks = u64::from(u16::from_le_bytes([*b0, *b1])) + 1;
        if let Some(geometry) = Geometry::new(blocks * u64::from(block_size), block_size) {
            let end = geometry.data_offset + u64::from(*extra) * u64::from(block_size);
            let _ = decode_table(
                table,
                &geometry,
                u32::from_le_bytes([*c0, *c1, *c2, *c3]),
                end,
            );
        }
    }
}

fn open_as_file(data: &[u8]) {
    let path = fixture().join(FUZZED);
    std::fs::write(&path, data).expect("write the input file");
    let Ok(layer) = LayerFile::open(&path, Access::ReadOnly) else {
        return;
    };
    // Follow only parents inside the fixture: a fuzzed location may name any
    // file on the machine, and opening a FIFO would hang.
    let parent_inside = layer
        .parent_location()
        .is_none_or(|l| [GOLDEN, PARENT, FUZZED].contains(&l));
    drop(layer);
    if !parent_inside {
        return;
    }
    let image = match Image::open(&path, Access::ReadWrite) {
        Ok(image) => image,
        // Frozen layers refuse writers.
        Err(_) => match Image::open(&path, Access::ReadOnly) {
            Ok(image) => image,
            Err(_) => return,
        },
    };
    exercise(image, data);
}

/// Reads the disk (its first MiB and a sector of every block: a damaged
/// header may describe gigabytes), then writes and flushes.
fn exercise(mut image: Image, data: &[u8]) {
    let size = image.virtual_size();
    let bs = u64::from(image.block_size());
    let mut buf = vec![0u8; size.min(1 << 20) as usize];
    image
        .read_at(0, &mut buf)
        .expect("read the start of an image that opened");
    for block in 0..image.blocks().min(1 << 14) {
        let at = block * bs;
        let mut sector = vec![0u8; (size - at).min(512) as usize];
        image
            .read_at(at, &mut sector)
            .expect("read a block of an image that opened");
    }
    let at = data
        .iter()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(*b)))
        % size;
    let len = (bs + 100).min(size - at);
    if image.write_at(at, &vec![0xa5; len as usize]).is_ok() {
        let _ = image.flush();
    }
}

/// The fixture directory, made once per process.
fn fixture() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("strata-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the fixture directory");
        std::fs::write(dir.join(GOLDEN), pattern(SIZE as usize, 3)).expect("write the raw base");
        let parent = dir.join(PARENT);
        let mut image = new_image(&parent, raw_parent());
        image
            .write_at(BLOCK as u64, &pattern(2 * BLOCK as usize, 4))
            .expect("write the parent layer");
        image.flush().expect("flush the parent layer");
        drop(image);
        set_id(&parent, PARENT_ID);
        dir
    })
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

fn raw_parent() -> Option<ParentSpec> {
    Some(ParentSpec {
        kind: ParentKind::Raw,
        id: Uuid::nil(),
        size: SIZE,
        location: GOLDEN.into(),
    })
}

fn new_image(path: &Path, parent: Option<ParentSpec>) -> Image {
    LayerFile::create(path, SIZE, BLOCK, parent.as_ref()).expect("create a layer");
    Image::open(path, Access::ReadWrite).expect("open a new layer")
}

/// Rewrites the current header slot of `path` with another layer id.
fn set_id(path: &Path, id: Uuid) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open a layer");
    let mut slots = [0u8; 2 * HEADER_SLOT_SIZE];
    file.read_exact_at(&mut slots, 0)
        .expect("read the header slots");
    let (mut header, slot) = choose_header(&slots[..HEADER_SLOT_SIZE], &slots[HEADER_SLOT_SIZE..])
        .expect("a valid header");
    header.id = id;
    file.write_all_at(&header.encode(), (slot * HEADER_SLOT_SIZE) as u64)
        .expect("write the header");
}

/// Writes the seed corpus and exits, if `STRATA_FUZZ_WRITE_SEEDS` asks for it.
fn write_seeds_if_asked() {
    let Some(out) = std::env::var_os(SEEDS_ENV).map(PathBuf::from) else {
        return;
    };
    std::fs::create_dir_all(&out).expect("create the seed directory");
    let dir = fixture();
    let on_parent = Some(ParentSpec {
        kind: ParentKind::Layer,
        id: PARENT_ID,
        size: SIZE,
        location: PARENT.into(),
    });
    let seeds = [
        ("no-parent", None),
        ("on-raw", raw_parent()),
        ("on-layer", on_parent),
    ];
    for (name, parent) in seeds {
        let path = dir.join(format!("seed-{name}.strata"));
        let mut image = new_image(&path, parent);
        // Two commits, so both header slots and both table copies are valid;
        // one data block and one zero entry keep each seed under 20 KiB.
        image
            .write_at(5 * BLOCK as u64 + 300, &pattern(1000, 9))
            .expect("write a seed");
        image.flush().expect("flush a seed");
        image
            .write_zeroes(9 * BLOCK as u64, BLOCK as u64)
            .expect("zero a seed block");
        image.flush().expect("flush a seed");
        drop(image);
        std::fs::copy(&path, out.join(name)).expect("copy a seed");
        std::fs::remove_file(&path).expect("remove a seed");
    }
    let _ = std::fs::remove_dir_all(dir);
    std::process::exit(0);
}
