//! Images that share their read-only members, and images whose data
//! bypasses the page cache: what reaches the files, what stays open, and
//! what users are told when the filesystem cannot do direct I/O.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_storage::format::ParentKind;
use strata_storage::{
    Access, ChainOptions, Image, LayerError, LayerFile, Member, ParentSpec, SharedMembers,
};

const MIB: u64 = 1 << 20;
const BS: u32 = 64 << 10;

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((i + seed).wrapping_mul(2_654_435_761) >> 13) as u8 | 1)
        .collect()
}

/// golden.raw ← base.layer (frozen, with data) ← `children` tops.
fn chain(dir: &Path, children: &[&str]) -> (PathBuf, PathBuf, Vec<PathBuf>) {
    let raw = dir.join("golden.raw");
    std::fs::write(&raw, pattern(4 * MIB as usize, 0)).unwrap();
    let base = dir.join("base.layer");
    let spec = ParentSpec {
        kind: ParentKind::Raw,
        id: uuid::Uuid::nil(),
        size: 4 * MIB,
        location: raw.display().to_string(),
    };
    LayerFile::create(&base, 4 * MIB, BS, Some(&spec)).unwrap();
    {
        let image = Image::open(&base, Access::ReadWrite).unwrap();
        image.write_at(MIB, &pattern(MIB as usize, 1)).unwrap();
        image.flush().unwrap();
        image.top().freeze().unwrap();
    }
    let header = LayerFile::open(&base, Access::ReadOnly).unwrap().header();
    let tops = children
        .iter()
        .map(|name| {
            let top = dir.join(format!("{name}.layer"));
            let spec = ParentSpec {
                kind: ParentKind::Layer,
                id: header.id,
                size: header.virtual_size,
                location: "base.layer".into(),
            };
            LayerFile::create(&top, 4 * MIB, BS, Some(&spec)).unwrap();
            top
        })
        .collect();
    (raw, base, tops)
}

/// How many of this process's descriptors name `path`.
fn open_fds(path: &Path) -> usize {
    let target = path.canonicalize().unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .filter(|link| *link == target)
        .count()
}

fn same_member(a: &Member, b: &Member) -> bool {
    match (a, b) {
        (Member::Layer(a), Member::Layer(b)) => Arc::ptr_eq(a, b),
        (Member::Raw(a), Member::Raw(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

#[test]
fn images_opened_together_share_their_read_only_members() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, base, tops) = chain(dir.path(), &["a", "b"]);
    let shared = SharedMembers::new();
    let options = ChainOptions {
        direct: false,
        shared: Some(&shared),
    };
    let a = Image::open_with(&tops[0], Access::ReadWrite, options).unwrap();
    let b = Image::open_with(&tops[1], Access::ReadWrite, options).unwrap();
    assert!(same_member(&a.members()[0], &b.members()[0]), "raw base");
    assert!(same_member(&a.members()[1], &b.members()[1]), "base layer");
    assert!(!same_member(&a.members()[2], &b.members()[2]), "tops");
    assert_eq!((open_fds(&raw), open_fds(&base)), (1, 1));
    assert_eq!(shared.open_members(), 2);

    // The shared base keeps its shared lock: nobody may write it meanwhile.
    assert!(matches!(
        LayerFile::open_to_merge_into(&base),
        Err(LayerError::InUse { .. })
    ));

    // Each image still reads the base and writes only its own top.
    a.write_at(MIB + 4096, &[0xaa; 4096]).unwrap();
    b.write_at(MIB + 4096, &[0xbb; 4096]).unwrap();
    let expected = pattern(MIB as usize, 1);
    for (image, byte) in [(&a, 0xaa), (&b, 0xbb)] {
        let mut buf = vec![0u8; 3 * 4096];
        image.read_at(MIB, &mut buf).unwrap();
        assert_eq!(buf[..4096], expected[..4096]);
        assert!(buf[4096..8192].iter().all(|x| *x == byte));
        assert_eq!(buf[8192..], expected[8192..3 * 4096]);
    }

    // A live top is never shared: a reader of it meets the writer's lock.
    let c = Image::open_with(&tops[0], Access::ReadOnly, options);
    assert!(matches!(
        c,
        Err(strata_storage::ChainError::Layer(LayerError::InUse { .. }))
    ));
    drop((a, b));
    assert_eq!((open_fds(&raw), open_fds(&base)), (0, 0));
    assert_eq!(shared.open_members(), 0);

    // Without a registry, every image opens its own.
    let a = Image::open(&tops[0], Access::ReadWrite).unwrap();
    let b = Image::open(&tops[1], Access::ReadWrite).unwrap();
    assert_eq!((open_fds(&raw), open_fds(&base)), (2, 2));
    drop((a, b));
}

#[test]
fn read_only_images_of_one_top_share_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_, _, tops) = chain(dir.path(), &["a"]);
    let shared = SharedMembers::new();
    let options = ChainOptions {
        direct: false,
        shared: Some(&shared),
    };
    let x = Image::open_with(&tops[0], Access::ReadOnly, options).unwrap();
    let y = Image::open_with(&tops[0], Access::ReadOnly, options).unwrap();
    assert!(same_member(&x.members()[2], &y.members()[2]));
    assert_eq!(open_fds(&tops[0]), 1);
    assert_eq!(shared.open_members(), 3);
}

/// A directory on a filesystem that does direct I/O: Cargo's scratch
/// directory inside the target directory (the system's temporary
/// directory may be tmpfs).
fn direct_capable_dir() -> tempfile::TempDir {
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(scratch).unwrap();
    tempfile::tempdir_in(scratch).unwrap()
}

#[test]
fn a_direct_image_reads_and_writes_what_a_buffered_one_sees() {
    let dir = direct_capable_dir();
    let (_, _, tops) = chain(dir.path(), &["a", "b"]);
    let shared = SharedMembers::new();
    let direct = ChainOptions {
        direct: true,
        shared: Some(&shared),
    };
    let image = Image::open_with(&tops[0], Access::ReadWrite, direct).unwrap();
    assert!(image.members().iter().all(|m| m.data().is_direct()));
    // The same base opened buffered by another image is another member.
    let buffered = ChainOptions {
        direct: false,
        shared: Some(&shared),
    };
    let other = Image::open_with(&tops[1], Access::ReadWrite, buffered).unwrap();
    assert!(!same_member(&image.members()[1], &other.members()[1]));
    drop(other);

    let mut model = vec![0u8; 4 * MIB as usize];
    image.read_at(0, &mut model).unwrap();
    // Sector-sized requests at every alignment the guest may send, with
    // memory that is not aligned either, across blocks and layers.
    let writes: [(u64, usize, usize); 6] = [
        (0, 64 << 10, 0),
        (MIB - 512, 4096, 0),
        (MIB + 3 * 512, 512, 1),
        (2 * MIB + 100, 7000, 3),
        (3 * MIB + (60 << 10), 200 << 10, 0),
        (4 * MIB - 512, 512, 0),
    ];
    for (i, (offset, len, skew)) in writes.into_iter().enumerate() {
        let data = pattern(len + skew, 100 + i as u64);
        image.write_at(offset, &data[skew..]).unwrap();
        model[offset as usize..offset as usize + len].copy_from_slice(&data[skew..]);
    }
    image.write_zeroes(MIB + (64 << 10), 128 << 10).unwrap();
    model[(MIB + (64 << 10)) as usize..(MIB + (192 << 10)) as usize].fill(0);
    let mut back = vec![0u8; model.len() + 1];
    image.read_at(0, &mut back[1..]).unwrap();
    assert!(
        back[1..] == model[..],
        "direct reads disagree with the model"
    );
    image.flush().unwrap();
    drop(image);

    let reopened = Image::open(&tops[0], Access::ReadOnly).unwrap();
    let mut seen = vec![0u8; model.len()];
    reopened.read_at(0, &mut seen).unwrap();
    assert!(seen == model, "the buffered view disagrees after a flush");
}

#[test]
fn direct_io_on_a_memory_filesystem_is_refused_naming_the_file() {
    let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
        eprintln!("skipping: no /dev/shm");
        return;
    };
    let (_, _, tops) = chain(dir.path(), &["a"]);
    let direct = ChainOptions {
        direct: true,
        shared: None,
    };
    let err = Image::open_with(&tops[0], Access::ReadWrite, direct).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: this filesystem does not support direct I/O (O_DIRECT)",
            tops[0].display()
        )
    );
}

#[test]
fn plans_of_a_direct_image_use_the_direct_descriptor_only_where_aligned() {
    use std::os::fd::AsRawFd;
    use strata_storage::Piece;

    let dir = direct_capable_dir();
    let (_, _, tops) = chain(dir.path(), &["a"]);
    let direct = ChainOptions {
        direct: true,
        shared: None,
    };
    let image = Image::open_with(&tops[0], Access::ReadWrite, direct).unwrap();
    image.write_at(0, &pattern(BS as usize, 9)).unwrap();
    let buffered_fds: Vec<i32> = image
        .members()
        .iter()
        .map(|m| m.file().as_raw_fd())
        .collect();
    let page = 4096usize;
    let mut pieces = Vec::new();
    // Aligned offset, length and memory: one plain direct read each.
    assert!(
        image
            .plan_read(MIB, 2 * page, 64 * page, &mut pieces)
            .unwrap()
    );
    assert!(!pieces.is_empty());
    for piece in &pieces {
        let Piece::Io { fd, .. } = piece else {
            panic!("the chain holds data here, not zeros: {piece:?}");
        };
        assert!(!buffered_fds.contains(fd), "the direct twin is used");
    }
    // Memory out of alignment: only a bounce buffer can do it.
    pieces.clear();
    assert!(
        !image
            .plan_read(MIB, page, 64 * page + 1, &mut pieces)
            .unwrap()
    );
    assert!(pieces.is_empty());
    // A write at an unaligned offset goes through the cache, as write_raw does.
    assert!(image.plan_write(100, 200, 64 * page, &mut pieces).unwrap());
    assert_eq!(
        pieces,
        [Piece::Io {
            fd: image.top().file().as_raw_fd(),
            offset: match image.source(0) {
                strata_storage::BlockSource::Member { offset, .. } => offset + 100,
                other => panic!("block 0 was written: {other:?}"),
            },
            len: 200
        }]
    );
}
