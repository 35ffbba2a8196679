//! The contract of the `blkcheck` guest image: what it reads from the
//! command line and how it computes the figures it prints, so that the guest
//! and the host-side tests (`strata_testkit::blkcheck`) agree by
//! construction.
//!
//! ```text
//!   command line                         serial output, in this order
//!   blkcheck.ranges=OFF+LEN[,OFF+LEN..]  blkcheck: disk transport=mmio|pci capacity=<sectors>
//!   blkcheck.write=OFF+LEN                         ro=0|1 id=<GET_ID serial|->  (one line)
//!   blkcheck.seed=N                      blkcheck: sum <OFF>+<LEN> <16 hex digits>  (per range)
//!   blkcheck.expect-ro                   blkcheck: wrote <OFF>+<LEN> / flushed / readback ok
//!                                        blkcheck: write refused  (with expect-ro)
//!                                        blkcheck: done           (exit code 0)
//!                                        blkcheck: error: <what>  (exit code from `exit_code`)
//! ```
//!
//! Offsets and lengths are bytes (decimal or `0x` hex), multiples of
//! [`SECTOR_SIZE`]; printed ones are decimal.

use crate::virtio_mmio::parse_number;

/// Virtio-blk's sector: every offset and length is a multiple of it.
pub const SECTOR_SIZE: u64 = 512;

/// Command-line key of the ranges to checksum.
pub const RANGES_KEY: &str = "blkcheck.ranges";
/// Command-line key of the range to write the pattern to.
pub const WRITE_KEY: &str = "blkcheck.write";
/// Command-line key of the pattern's seed.
pub const SEED_KEY: &str = "blkcheck.seed";
/// Command-line key of a range to re-read until it holds the pattern
/// (written there by someone else: the host, while the guest waits).
pub const AWAIT_KEY: &str = "blkcheck.await";
/// Command-line key of the request count of the read benchmark.
pub const BENCH_KEY: &str = "blkcheck.bench";
/// Bytes each benchmark read moves.
pub const BENCH_READ_LEN: u64 = 4096;
/// Command-line word asking for a read-only disk.
pub const EXPECT_RO_WORD: &str = "blkcheck.expect-ro";
/// Prefix of every `blkcheck.*` word; any other word with it is an error.
pub const KEY_PREFIX: &str = "blkcheck.";

/// The ranges checked without `blkcheck.ranges=`.
pub const DEFAULT_RANGE: ByteRange = ByteRange {
    offset: 0,
    len: 65536,
};
/// The seed without `blkcheck.seed=`.
pub const DEFAULT_SEED: u64 = 1;

/// FNV-1a 64-bit offset basis: the checksum of nothing.
pub const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
pub const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// Multiplier of the write pattern (the 64-bit golden ratio).
pub const PATTERN_MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

/// Adds one little-endian u64 word to an FNV-1a checksum. Words, not bytes:
/// an eighth of the work on a guest where each instruction costs time.
pub const fn fnv1a_word(hash: u64, word: u64) -> u64 {
    (hash ^ word).wrapping_mul(FNV_PRIME)
}

/// The disk byte offset of benchmark read `index` on a disk of
/// `capacity_sectors`: a stride through the disk that touches every 4 KiB
/// block before repeating one (7919 is prime, so it is coprime with any
/// power-of-two block count).
pub const fn bench_offset(index: u64, capacity_sectors: u64) -> u64 {
    let blocks = capacity_sectors / (BENCH_READ_LEN / SECTOR_SIZE);
    if blocks == 0 {
        return 0;
    }
    (index.wrapping_mul(7919) % blocks) * BENCH_READ_LEN
}

/// The pattern's u64 word at absolute disk byte offset `offset` (a multiple
/// of 8), stored little-endian.
pub const fn pattern_word(offset: u64, seed: u64) -> u64 {
    (offset ^ seed).wrapping_mul(PATTERN_MULTIPLIER)
}

/// `OFF+LEN`: a byte range of the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

impl ByteRange {
    /// Parses `OFF+LEN`. `None` unless both are numbers, multiples of
    /// [`SECTOR_SIZE`], `LEN` is non-zero and the end fits in a u64.
    pub fn parse(text: &[u8]) -> Option<ByteRange> {
        let plus = text.iter().position(|&b| b == b'+')?;
        let offset = parse_number(text.get(..plus)?)?;
        let len = parse_number(text.get(plus + 1..)?)?;
        let range = ByteRange { offset, len };
        let aligned = offset % SECTOR_SIZE == 0 && len % SECTOR_SIZE == 0;
        (aligned && len > 0 && range.end().is_some()).then_some(range)
    }

    /// One past the last byte; `None` if that overflows.
    pub const fn end(&self) -> Option<u64> {
        self.offset.checked_add(self.len)
    }

    /// Tells whether the range lies within a disk of `capacity_sectors`.
    pub fn fits(&self, capacity_sectors: u64) -> bool {
        match (self.end(), capacity_sectors.checked_mul(SECTOR_SIZE)) {
            (Some(end), Some(size)) => end <= size,
            // A disk of 2^64 bytes or more holds every range that exists.
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// The ranges of a `blkcheck.ranges=` value, each `Err(text)` if malformed.
pub fn ranges(value: &[u8]) -> impl Iterator<Item = Result<ByteRange, &[u8]>> {
    value
        .split(|&b| b == b',')
        .map(|text| ByteRange::parse(text).ok_or(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_of_words_matches_a_known_value() {
        assert_eq!(fnv1a_word(FNV_OFFSET_BASIS, 0), 0xaf63_bd4c_8601_b7df);
    }

    #[test]
    fn pattern_depends_on_offset_and_seed() {
        assert_eq!(pattern_word(0, 0), 0);
        assert_eq!(pattern_word(8, 0), 8u64.wrapping_mul(PATTERN_MULTIPLIER));
        assert_ne!(pattern_word(8, 1), pattern_word(8, 2));
        assert_eq!(pattern_word(1, 1), 0);
    }

    #[test]
    fn ranges_parse_and_check_alignment() {
        assert_eq!(
            ByteRange::parse(b"0+65536"),
            Some(ByteRange {
                offset: 0,
                len: 65536
            })
        );
        assert_eq!(
            ByteRange::parse(b"0x100000+0x200"),
            Some(ByteRange {
                offset: 1 << 20,
                len: 512
            })
        );
        for bad in [
            &b"0"[..],
            b"0+",
            b"+512",
            b"0+0",
            b"1+512",
            b"0+513",
            b"0+512+512",
            b"18446744073709551104+512",
        ] {
            assert_eq!(
                ByteRange::parse(bad),
                None,
                "{:?}",
                core::str::from_utf8(bad)
            );
        }
        let parsed: [_; 3] = {
            let mut it = ranges(b"0+512,x,1024+512");
            [it.next(), it.next(), it.next()]
        };
        assert_eq!(parsed[0], Some(Ok(ByteRange::parse(b"0+512").unwrap())));
        assert_eq!(parsed[1], Some(Err(&b"x"[..])));
        assert!(matches!(parsed[2], Some(Ok(_))));
    }

    #[test]
    fn ranges_must_fit_the_disk() {
        let range = ByteRange {
            offset: 1024,
            len: 512,
        };
        assert!(range.fits(3));
        assert!(!range.fits(2));
        assert!(range.fits(u64::MAX));
    }
}
