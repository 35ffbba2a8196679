//! Several threads writing into the same not-yet-copied blocks at once: the
//! copy-ups race, and every thread's bytes must survive, with the base's
//! bytes around them.
#![allow(clippy::unwrap_used)]

use strata_storage::format::ParentKind;
use strata_storage::{Access, Image, LayerFile, ParentSpec};

const BLOCK: u32 = 16384;
const BLOCKS: u64 = 32;
const THREADS: u64 = 8;
const SLICE: u64 = 512;

#[test]
fn racing_copy_ups_lose_no_write() {
    for round in 0..20u8 {
        let dir = tempfile::tempdir().unwrap();
        let size = BLOCKS * u64::from(BLOCK);
        let base: Vec<u8> = (0..size).map(|i| (i % 251) as u8 ^ round).collect();
        std::fs::write(dir.path().join("base.raw"), &base).unwrap();
        let top = dir.path().join("top.layer");
        let spec = ParentSpec {
            kind: ParentKind::Raw,
            id: uuid::Uuid::nil(),
            size,
            location: "base.raw".into(),
        };
        LayerFile::create(&top, size, BLOCK, Some(&spec)).unwrap();
        let image = Image::open(&top, Access::ReadWrite).unwrap();
        // Thread t writes slice t of every group of 2 * THREADS slices: the
        // threads interleave inside every block, and half of each block stays
        // base data.
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                let image = &image;
                scope.spawn(move || {
                    let mut offset = t * SLICE;
                    while offset < size {
                        image
                            .write_at(offset, &[0x80 | t as u8; SLICE as usize])
                            .unwrap();
                        offset += 2 * THREADS * SLICE;
                    }
                });
            }
        });
        image.flush().unwrap();
        drop(image);
        let image = Image::open(&top, Access::ReadOnly).unwrap();
        let mut disk = vec![0u8; size as usize];
        image.read_at(0, &mut disk).unwrap();
        for (i, byte) in disk.iter().enumerate() {
            let slot = (i as u64 / SLICE) % (2 * THREADS);
            let want = if slot < THREADS {
                0x80 | slot as u8
            } else {
                base[i]
            };
            assert_eq!(*byte, want, "round {round}, byte {i}");
        }
    }
}
