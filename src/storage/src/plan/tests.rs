#![allow(clippy::unwrap_used)]

use std::os::fd::AsRawFd;

use super::*;
use crate::format::ParentKind;
use crate::layer::{Access, LayerFile, ParentSpec};

const BS: u32 = 4096;
const SIZE: u64 = 8 * BS as u64 - 100;

/// A raw base of `SIZE` bytes (its last block ends early) under one empty
/// top layer.
fn image(dir: &std::path::Path) -> Image {
    std::fs::write(dir.join("golden.raw"), vec![7u8; SIZE as usize]).unwrap();
    let top = dir.join("top.strata");
    let spec = ParentSpec {
        kind: ParentKind::Raw,
        id: uuid::Uuid::nil(),
        size: SIZE,
        location: "golden.raw".into(),
    };
    LayerFile::create(&top, SIZE, BS, Some(&spec)).unwrap();
    Image::open(&top, Access::ReadWrite).unwrap()
}

#[test]
fn a_read_follows_the_map_across_members_and_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let image = image(dir.path());
    let bs = BS as usize;
    image.write_at(2 * BS as u64, &vec![1u8; bs]).unwrap();
    image.write_zeroes(3 * BS as u64, BS as u64).unwrap();
    let base_fd = image.members()[0].file().as_raw_fd();
    let top_fd = image.top().file().as_raw_fd();

    let mut pieces = Vec::new();
    assert!(image.plan_read(100, 4 * bs, 0x1000, &mut pieces).unwrap());
    let top_offset = match image.source(2) {
        crate::BlockSource::Member { offset, .. } => offset,
        other => panic!("block 2 should be the top layer's, not {other:?}"),
    };
    assert_eq!(
        pieces,
        [
            // Blocks 0 and 1 lie next to each other in the base: one piece.
            Piece::Io {
                fd: base_fd,
                offset: 100,
                len: 2 * bs - 100
            },
            Piece::Io {
                fd: top_fd,
                offset: top_offset,
                len: bs
            },
            Piece::Zeros { len: bs },
            Piece::Io {
                fd: base_fd,
                offset: 4 * BS as u64,
                len: 100
            },
        ]
    );
}

#[test]
fn a_write_has_a_plan_only_where_the_top_layer_owns_every_block() {
    let dir = tempfile::tempdir().unwrap();
    let image = image(dir.path());
    let bs = BS as usize;
    let mut pieces = vec![Piece::Zeros { len: 1 }];
    // Block 1 is still the base's: a copy-up is needed.
    assert!(!image.plan_write(0, 2 * bs, 0, &mut pieces).unwrap());
    assert_eq!(pieces, [Piece::Zeros { len: 1 }], "nothing added");

    image.write_at(0, &vec![1u8; 2 * bs]).unwrap();
    pieces.clear();
    assert!(image.plan_write(10, 2 * bs - 20, 0, &mut pieces).unwrap());
    let total: usize = pieces.iter().map(Piece::len).sum();
    assert_eq!(total, 2 * bs - 20);
    let top_fd = image.top().file().as_raw_fd();
    assert!(
        pieces
            .iter()
            .all(|p| matches!(p, Piece::Io { fd, .. } if *fd == top_fd))
    );
}

#[test]
fn plans_check_the_range_and_the_access() {
    let dir = tempfile::tempdir().unwrap();
    drop(image(dir.path()));
    let image = Image::open(&dir.path().join("top.strata"), Access::ReadOnly).unwrap();
    let mut pieces = Vec::new();
    assert!(matches!(
        image.plan_read(SIZE - 10, 11, 0, &mut pieces),
        Err(ImageIoError::OutOfRange { .. })
    ));
    assert!(matches!(
        image.plan_read(u64::MAX, 2, 0, &mut pieces),
        Err(ImageIoError::OutOfRange { .. })
    ));
    assert!(matches!(
        image.plan_write(0, 512, 0, &mut pieces),
        Err(ImageIoError::ReadOnly)
    ));
    assert!(pieces.is_empty());
}
