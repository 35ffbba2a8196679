//! Property test: an image behaves like a plain byte array through any
//! sequence of writes, zeroing, discards, flushes, reopens and snapshots,
//! over a raw golden base, with real files; and requests carried out from
//! their plans (`plan_read`, `plan_write`) by plain `pread`/`pwrite`, as an
//! asynchronous caller would, read and write the same bytes.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use strata_storage::format::ParentKind;
use strata_storage::{Access, Image, LayerFile, ParentSpec, Piece};

const BLOCK: u32 = 4096;
const BLOCKS: u64 = 24;
const SIZE: u64 = BLOCKS * BLOCK as u64 - 1000; // not a block multiple on purpose

#[derive(Clone, Debug)]
enum Op {
    Write { offset: u64, len: usize, seed: u8 },
    PlannedWrite { offset: u64, len: usize, seed: u8 },
    WriteZeroes { offset: u64, len: u64 },
    Discard { offset: u64, len: u64 },
    Flush,
    Reopen,
    Snapshot,
}

fn op() -> impl Strategy<Value = Op> {
    let range =
        (0..SIZE).prop_flat_map(|offset| (Just(offset), 1..=(SIZE - offset).min(3 * BLOCK as u64)));
    prop_oneof![
        6 => (range.clone(), any::<u8>()).prop_map(|((offset, len), seed)| Op::Write { offset, len: len as usize, seed }),
        3 => (range.clone(), any::<u8>()).prop_map(|((offset, len), seed)| Op::PlannedWrite { offset, len: len as usize, seed }),
        2 => range.clone().prop_map(|(offset, len)| Op::WriteZeroes { offset, len }),
        1 => range.prop_map(|(offset, len)| Op::Discard { offset, len }),
        1 => Just(Op::Flush),
        1 => Just(Op::Reopen),
        1 => Just(Op::Snapshot),
    ]
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

struct Harness {
    dir: tempfile::TempDir,
    top: PathBuf,
    layers: usize,
}

impl Harness {
    fn new(base: &[u8]) -> (Self, Image) {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("golden.raw");
        std::fs::write(&raw, base).unwrap();
        let top = dir.path().join("layer-0.strata");
        let spec = ParentSpec {
            kind: ParentKind::Raw,
            id: uuid::Uuid::nil(),
            size: SIZE,
            location: "golden.raw".into(),
        };
        LayerFile::create(&top, SIZE, BLOCK, Some(&spec)).unwrap();
        let image = Image::open(&top, Access::ReadWrite).unwrap();
        (
            Self {
                dir,
                top,
                layers: 1,
            },
            image,
        )
    }

    fn snapshot(&mut self, image: &mut Image) {
        let name = format!("layer-{}.strata", self.layers);
        let old = self.top.file_name().unwrap().to_str().unwrap().to_string();
        self.top = self.dir.path().join(&name);
        image.snapshot(&self.top, &old).unwrap();
        self.layers += 1;
    }

    fn path(&self) -> &Path {
        &self.top
    }
}

fn check(image: &Image, model: &[u8]) {
    let mut all = vec![0u8; model.len()];
    image.read_at(0, &mut all).unwrap();
    assert!(all == model, "image differs from the model");
    let mut planned = vec![0xeeu8; model.len()];
    planned_read(image, 0, &mut planned);
    assert!(planned == model, "a planned read differs from the model");
}

/// Reads through a plan: `pread` for file pieces (a short read leaves zeros,
/// as at the end of a raw base), zeros for the rest.
fn planned_read(image: &Image, offset: u64, buf: &mut [u8]) {
    let mut pieces = Vec::new();
    let planned = image
        .plan_read(offset, buf.len(), buf.as_ptr() as usize, &mut pieces)
        .unwrap();
    assert!(planned, "buffered reads always have a plan");
    assert_eq!(pieces.iter().map(Piece::len).sum::<usize>(), buf.len());
    let mut at = 0;
    for piece in pieces {
        let dst = &mut buf[at..at + piece.len()];
        match piece {
            Piece::Zeros { .. } => dst.fill(0),
            Piece::Io { fd, offset, len } => {
                // SAFETY: `dst` is a live buffer of `len` bytes.
                let n = unsafe { libc::pread(fd, dst.as_mut_ptr().cast(), len, offset as i64) };
                assert!(n >= 0, "pread failed");
                dst[n as usize..].fill(0);
            }
        }
        at += piece.len();
    }
}

/// Writes through a plan if the image has one (every block already in the
/// top layer); otherwise through `write_at`, which copies up.
fn planned_write(image: &Image, offset: u64, data: &[u8]) -> bool {
    let mut pieces = Vec::new();
    if !image
        .plan_write(offset, data.len(), data.as_ptr() as usize, &mut pieces)
        .unwrap()
    {
        assert!(pieces.is_empty(), "a refused plan leaves no pieces behind");
        image.write_at(offset, data).unwrap();
        return false;
    }
    let mut at = 0;
    for piece in pieces {
        let Piece::Io { fd, offset, len } = piece else {
            panic!("a write plan holds only file pieces");
        };
        let src = &data[at..at + len];
        // SAFETY: `src` is a live buffer of `len` bytes.
        let n = unsafe { libc::pwrite(fd, src.as_ptr().cast(), len, offset as i64) };
        assert_eq!(n, len as isize, "pwrite wrote all");
        at += len;
    }
    true
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn image_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        let base = pattern(SIZE as usize, 7);
        let (mut harness, mut image) = Harness::new(&base);
        let mut model = base.clone();
        for op in ops {
            match op {
                Op::Write { offset, len, seed } => {
                    let data = pattern(len, seed);
                    image.write_at(offset, &data).unwrap();
                    model[offset as usize..offset as usize + len].copy_from_slice(&data);
                }
                Op::PlannedWrite { offset, len, seed } => {
                    let data = pattern(len, seed);
                    planned_write(&image, offset, &data);
                    model[offset as usize..offset as usize + len].copy_from_slice(&data);
                }
                Op::WriteZeroes { offset, len } => {
                    image.write_zeroes(offset, len).unwrap();
                    model[offset as usize..(offset + len) as usize].fill(0);
                }
                Op::Discard { offset, len } => {
                    image.discard(offset, len).unwrap();
                    // Discard frees whole blocks only; partial blocks keep their data.
                    let bs = u64::from(BLOCK);
                    let start = offset.next_multiple_of(bs);
                    let mut end = ((offset + len) / bs) * bs;
                    if offset + len == SIZE { end = SIZE; }
                    if start < end { model[start as usize..end as usize].fill(0); }
                }
                Op::Flush => image.flush().unwrap(),
                Op::Reopen => {
                    image.flush().unwrap();
                    drop(image);
                    image = Image::open(harness.path(), Access::ReadWrite).unwrap();
                }
                Op::Snapshot => harness.snapshot(&mut image),
            }
            check(&image, &model);
        }
        image.flush().unwrap();
        drop(image);
        let reopened = Image::open(harness.path(), Access::ReadOnly).unwrap();
        check(&reopened, &model);
        // The golden base is never written.
        prop_assert!(std::fs::read(harness.dir.path().join("golden.raw")).unwrap() == base);
    }
}
