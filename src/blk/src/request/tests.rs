use proptest::prelude::*;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::*;

const MEM: usize = 1 << 20;

fn mem() -> GuestMemoryMmap<()> {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap()
}

fn limits() -> DiskLimits {
    DiskLimits {
        capacity_sectors: 2048,
        read_only: false,
        max_transfer: 128 << 10,
        max_zero_segments: 4,
        max_zero_sectors: 1024,
    }
}

fn header(mem: &GuestMemoryMmap<()>, at: u64, kind: u32, sector: u64) {
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&kind.to_le_bytes());
    bytes[8..].copy_from_slice(&sector.to_le_bytes());
    mem.write_slice(&bytes, GuestAddress(at)).unwrap();
}

fn r(addr: u64, len: u32) -> Descriptor {
    Descriptor {
        addr: GuestAddress(addr),
        len,
        writable: false,
    }
}

fn w(addr: u64, len: u32) -> Descriptor {
    Descriptor {
        addr: GuestAddress(addr),
        len,
        writable: true,
    }
}

fn status_of(result: Result<Request, Rejection>) -> u8 {
    match result {
        Err(Rejection::Status { code, .. }) => code,
        other => panic!("expected a status rejection, got {other:?}"),
    }
}

#[test]
fn read_with_header_split_across_descriptors() {
    let m = mem();
    header(&m, 0x1000, kind::IN, 8);
    let req = parse(
        &m,
        [r(0x1000, 10), r(0x100a, 6), w(0x2000, 512), w(0x3000, 513)],
        &limits(),
    )
    .unwrap();
    assert_eq!(req.status, GuestAddress(0x3000 + 512));
    assert_eq!(
        req.operation,
        Operation::Read {
            offset: 8 * 512,
            data: vec![
                Segment {
                    addr: GuestAddress(0x2000),
                    len: 512
                },
                Segment {
                    addr: GuestAddress(0x3000),
                    len: 512
                }
            ]
        }
    );
}

#[test]
fn write_takes_data_after_the_header() {
    let m = mem();
    header(&m, 0x1000, kind::OUT, 0);
    let req = parse(&m, [r(0x1000, 16 + 1024), w(0x9000, 1)], &limits()).unwrap();
    assert_eq!(
        req.operation,
        Operation::Write {
            offset: 0,
            data: vec![Segment {
                addr: GuestAddress(0x1010),
                len: 1024
            }]
        }
    );
}

#[test]
fn bad_reads_and_writes_get_ioerr() {
    let m = mem();
    let l = limits();
    header(&m, 0x1000, kind::OUT, 0);
    let ro = DiskLimits {
        read_only: true,
        ..l
    };
    assert_eq!(
        status_of(parse(
            &m,
            [r(0x1000, 16), r(0x2000, 512), w(0x3000, 1)],
            &ro
        )),
        status::IOERR
    );
    // Beyond the end, and a sector number that overflows.
    header(&m, 0x1000, kind::IN, 2047);
    assert_eq!(
        status_of(parse(
            &m,
            [r(0x1000, 16), w(0x2000, 1024), w(0x3000, 1)],
            &l
        )),
        status::IOERR
    );
    header(&m, 0x1000, kind::IN, u64::MAX);
    assert_eq!(
        status_of(parse(&m, [r(0x1000, 16), w(0x2000, 512), w(0x3000, 1)], &l)),
        status::IOERR
    );
    // Not a sector multiple; larger than the transfer limit.
    header(&m, 0x1000, kind::IN, 0);
    assert_eq!(
        status_of(parse(&m, [r(0x1000, 16), w(0x2000, 100), w(0x3000, 1)], &l)),
        status::IOERR
    );
    assert_eq!(
        status_of(parse(
            &m,
            [r(0x1000, 16), w(0x2000, 256 << 10), w(0x80000, 1)],
            &l
        )),
        status::IOERR
    );
    // Data outside guest memory.
    assert_eq!(
        status_of(parse(
            &m,
            [r(0x1000, 16), w(MEM as u64 - 256, 512), w(0x3000, 1)],
            &l
        )),
        status::IOERR
    );
    // Header shorter than 16 bytes.
    assert_eq!(
        status_of(parse(&m, [r(0x1000, 8), w(0x3000, 1)], &l)),
        status::IOERR
    );
    // Header outside guest memory.
    assert_eq!(
        status_of(parse(&m, [r(MEM as u64 + 0x1000, 16), w(0x3000, 1)], &l)),
        status::IOERR
    );
}

#[test]
fn unknown_types_get_unsupp() {
    let m = mem();
    header(&m, 0x1000, 99, 0);
    assert_eq!(
        status_of(parse(&m, [r(0x1000, 16), w(0x3000, 1)], &limits())),
        status::UNSUPP
    );
}

#[test]
fn chains_without_a_status_are_dropped() {
    let m = mem();
    header(&m, 0x1000, kind::IN, 0);
    assert!(matches!(
        parse(&m, [r(0x1000, 16)], &limits()),
        Err(Rejection::Drop(_))
    ));
    assert!(matches!(
        parse(&m, [w(0x3000, 1), r(0x1000, 16)], &limits()),
        Err(Rejection::Drop(_))
    ));
    assert!(matches!(
        parse(&m, [r(0x1000, 16), w(MEM as u64 + 5, 1)], &limits()),
        Err(Rejection::Drop(_))
    ));
    assert!(matches!(
        parse(&m, [r(0x1000, 16), w(u64::MAX - 1, 4)], &limits()),
        Err(Rejection::Drop(_))
    ));
    assert!(matches!(parse(&m, [], &limits()), Err(Rejection::Drop(_))));
}

fn segment(mem: &GuestMemoryMmap<()>, at: u64, sector: u64, sectors: u32, flags: u32) {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&sector.to_le_bytes());
    b[8..12].copy_from_slice(&sectors.to_le_bytes());
    b[12..].copy_from_slice(&flags.to_le_bytes());
    mem.write_slice(&b, GuestAddress(at)).unwrap();
}

#[test]
fn discard_and_write_zeroes_segments() {
    let m = mem();
    let l = limits();
    header(&m, 0x1000, kind::WRITE_ZEROES, 0);
    segment(&m, 0x1010, 8, 16, WRITE_ZEROES_FLAG_UNMAP);
    segment(&m, 0x1020, 100, 1, WRITE_ZEROES_FLAG_UNMAP);
    let req = parse(&m, [r(0x1000, 48), w(0x3000, 1)], &l).unwrap();
    assert_eq!(
        req.operation,
        Operation::WriteZeroes {
            ranges: vec![
                SectorRange {
                    sector: 8,
                    count: 16
                },
                SectorRange {
                    sector: 100,
                    count: 1
                }
            ],
            unmap: true
        }
    );
    // Discard takes no flags at all.
    header(&m, 0x1000, kind::DISCARD, 0);
    assert_eq!(
        status_of(parse(&m, [r(0x1000, 48), w(0x3000, 1)], &l)),
        status::UNSUPP
    );
    segment(&m, 0x1010, 8, 16, 0);
    segment(&m, 0x1020, 100, 1, 0);
    assert!(matches!(
        parse(&m, [r(0x1000, 48), w(0x3000, 1)], &l)
            .unwrap()
            .operation,
        Operation::Discard(_)
    ));
    // Unknown flags, overflow, too many segments, ragged length, too long.
    segment(&m, 0x1010, 8, 16, 0x4);
    assert_eq!(
        status_of(parse(&m, [r(0x1000, 32), w(0x3000, 1)], &l)),
        status::UNSUPP
    );
    segment(&m, 0x1010, u64::MAX - 1, 16, 0);
    assert_eq!(
        status_of(parse(&m, [r(0x1000, 32), w(0x3000, 1)], &l)),
        status::IOERR
    );
    assert_eq!(
        status_of(parse(&m, [r(0x1000, 16 + 5 * 16), w(0x3000, 1)], &l)),
        status::IOERR
    );
    assert_eq!(
        status_of(parse(&m, [r(0x1000, 16 + 20), w(0x3000, 1)], &l)),
        status::IOERR
    );
    segment(&m, 0x1010, 0, 1025, 0);
    assert_eq!(
        status_of(parse(&m, [r(0x1000, 32), w(0x3000, 1)], &l)),
        status::IOERR
    );
    let ro = DiskLimits {
        read_only: true,
        ..l
    };
    segment(&m, 0x1010, 0, 1, 0);
    assert_eq!(
        status_of(parse(&m, [r(0x1000, 32), w(0x3000, 1)], &ro)),
        status::IOERR
    );
}

#[test]
fn get_id_writes_at_most_twenty_bytes() {
    let m = mem();
    header(&m, 0x1000, kind::GET_ID, 0);
    let req = parse(&m, [r(0x1000, 16), w(0x2000, 64), w(0x3000, 1)], &limits()).unwrap();
    assert_eq!(
        req.operation,
        Operation::GetId {
            data: vec![Segment {
                addr: GuestAddress(0x2000),
                len: 20
            }]
        }
    );
}

#[test]
fn a_chain_from_a_real_split_queue() {
    use virtio_queue::desc::{RawDescriptor, split::Descriptor as SplitDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    let m = mem();
    header(&m, 0x10_000, kind::IN, 4);
    let queue = MockSplitQueue::new(&m, 16);
    let flags_w = virtio_bindings::bindings::virtio_ring::VRING_DESC_F_WRITE as u16;
    let descs = [
        RawDescriptor::from(SplitDescriptor::new(0x10_000, 16, 0, 0)),
        RawDescriptor::from(SplitDescriptor::new(0x20_000, 4096, flags_w, 0)),
        RawDescriptor::from(SplitDescriptor::new(0x30_000, 1, flags_w, 0)),
    ];
    let chain = queue.build_desc_chain(&descs).unwrap();
    let descriptors = chain.map(|d| Descriptor {
        addr: d.addr(),
        len: d.len(),
        writable: d.is_write_only(),
    });
    let req = parse(&m, descriptors, &limits()).unwrap();
    assert_eq!(req.status, GuestAddress(0x30_000));
    assert!(matches!(
        req.operation,
        Operation::Read { offset: 2048, .. }
    ));
}

proptest! {
    /// Whatever the guest puts in its descriptors and memory, parsing never
    /// panics, and an accepted request only names guest memory and sectors
    /// that exist.
    #[test]
    fn hostile_chains_never_escape(
        descs in proptest::collection::vec((0u64..(MEM as u64 + 8192), 0u32..70_000, any::<bool>()), 0..8),
        kind_raw in prop_oneof![Just(0u32), Just(1), Just(4), Just(8), Just(11), Just(13), any::<u32>()],
        sector in prop_oneof![0u64..4096, any::<u64>()],
        junk in proptest::collection::vec(any::<u8>(), 64),
    ) {
        let m = mem();
        m.write_slice(&junk, GuestAddress(0x1010)).unwrap();
        header(&m, 0x1000, kind_raw, sector);
        let mut list: Vec<Descriptor> = vec![r(0x1000, 16)];
        list.extend(descs.iter().map(|(a, l, wr)| Descriptor { addr: GuestAddress(*a), len: *l, writable: *wr }));
        if let Ok(req) = parse(&m, list, &limits()) {
            prop_assert!(m.check_range(req.status, 1));
            match req.operation {
                Operation::Read { offset, data } | Operation::Write { offset, data } => {
                    let len: u64 = data.iter().map(|s| s.len).sum();
                    prop_assert!(offset + len <= limits().capacity_sectors * 512);
                    for s in data { prop_assert!(m.check_range(s.addr, s.len as usize)); }
                }
                Operation::Discard(ranges) | Operation::WriteZeroes { ranges, .. } => {
                    for rg in ranges { prop_assert!(rg.sector + rg.count <= limits().capacity_sectors); }
                }
                Operation::GetId { data } => {
                    for s in data { prop_assert!(m.check_range(s.addr, s.len as usize)); }
                }
                Operation::Flush => {}
            }
        }
    }
}
