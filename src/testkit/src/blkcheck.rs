//! The host side of the `blkcheck` guest image: the checksum and pattern it
//! uses, computed over host bytes, and its serial output parsed. The
//! contract itself (command line, formulas, output lines) is
//! `strata_guest_abi::blkcheck`, which the guest uses too.
//!
//! ```text
//!   host bytes ── fnv_sum ──► "8c1a6b4e0f3d2a17"
//!                                      ══ report.sum(off, len)  ◄── BlkcheckReport::parse(serial)
//!   pattern_bytes(off, len, seed)      ══ what blkcheck.write=off+len blkcheck.seed=seed wrote
//! ```

use strata_guest_abi::blkcheck::{FNV_OFFSET_BASIS, fnv1a_word, pattern_word};

/// The guest's checksum of `bytes` as it prints it: FNV-1a over
/// little-endian u64 words, 16 lower-case hex digits. A trailing partial
/// word (never produced by the guest, whose ranges are whole sectors) is
/// zero-padded.
pub fn fnv_sum(bytes: &[u8]) -> String {
    format!("{:016x}", fnv_words(bytes))
}

/// [`fnv_sum`] as a number.
pub fn fnv_words(bytes: &[u8]) -> u64 {
    bytes.chunks(8).fold(FNV_OFFSET_BASIS, |hash, chunk| {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        fnv1a_word(hash, u64::from_le_bytes(word))
    })
}

/// The `len` bytes the guest writes at disk offset `offset` (a multiple of
/// 8) with `blkcheck.seed=seed`.
pub fn pattern_bytes(offset: u64, len: u64, seed: u64) -> Vec<u8> {
    (0..len.div_ceil(8))
        .flat_map(|i| pattern_word(offset + 8 * i, seed).to_le_bytes())
        .take(len as usize)
        .collect()
}

/// `blkcheck: sum <OFF>+<LEN> <sum>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSum {
    pub offset: u64,
    pub len: u64,
    /// 16 lower-case hex digits, as [`fnv_sum`] gives.
    pub sum: String,
}

/// Everything one `blkcheck` run printed. Lines without `blkcheck: `
/// (firmware banners) are ignored; text before it on a line is too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlkcheckReport {
    /// `mmio` or `pci`, from the disk line.
    pub transport: Option<String>,
    /// Disk size in 512-byte sectors.
    pub capacity: Option<u64>,
    /// The disk reported `VIRTIO_BLK_F_RO`.
    pub ro: Option<bool>,
    /// The device's serial; `None` if it gave none (`id=-`) or there was no
    /// disk line.
    pub id: Option<String>,
    pub sums: Vec<RangeSum>,
    /// `blkcheck: wrote <OFF>+<LEN>`.
    pub wrote: Option<(u64, u64)>,
    pub flushed: bool,
    pub readback_ok: bool,
    /// `blkcheck: write refused` (with `blkcheck.expect-ro`).
    pub write_refused: bool,
    /// `blkcheck: done`.
    pub done: bool,
    /// The text after `blkcheck: error: `.
    pub error: Option<String>,
}

impl BlkcheckReport {
    /// Parses a serial transcript.
    pub fn parse(output: &str) -> BlkcheckReport {
        let mut report = BlkcheckReport::default();
        for line in output.lines() {
            let Some(at) = line.find("blkcheck: ") else {
                continue;
            };
            let record = line[at + "blkcheck: ".len()..].trim_end_matches('\r');
            if let Some(error) = record.strip_prefix("error: ") {
                report.error = Some(error.to_owned());
            } else if let Some(disk) = record.strip_prefix("disk ") {
                report.parse_disk(disk);
            } else if let Some(sum) = record.strip_prefix("sum ") {
                if let Some(sum) = parse_sum(sum) {
                    report.sums.push(sum);
                }
            } else if let Some(range) = record.strip_prefix("wrote ") {
                report.wrote = parse_range(range);
            } else {
                match record {
                    "flushed" => report.flushed = true,
                    "readback ok" => report.readback_ok = true,
                    "write refused" => report.write_refused = true,
                    "done" => report.done = true,
                    _ => {}
                }
            }
        }
        report
    }

    fn parse_disk(&mut self, fields: &str) {
        for field in fields.split(' ') {
            match field.split_once('=') {
                Some(("transport", value)) => self.transport = Some(value.to_owned()),
                Some(("capacity", value)) => self.capacity = value.parse().ok(),
                Some(("ro", value)) => self.ro = Some(value == "1"),
                Some(("id", "-")) => self.id = None,
                Some(("id", value)) => self.id = Some(value.to_owned()),
                _ => {}
            }
        }
    }

    /// The checksum the guest printed for `offset`+`len`.
    pub fn sum(&self, offset: u64, len: u64) -> Option<&str> {
        self.sums
            .iter()
            .find(|s| s.offset == offset && s.len == len)
            .map(|s| s.sum.as_str())
    }

    /// True when the guest printed `done` and no error.
    pub fn passed(&self) -> bool {
        self.done && self.error.is_none()
    }
}

/// `<OFF>+<LEN>`, decimal.
fn parse_range(text: &str) -> Option<(u64, u64)> {
    let (offset, len) = text.split_once('+')?;
    Some((offset.parse().ok()?, len.parse().ok()?))
}

/// `<OFF>+<LEN> <16 hex digits>`.
fn parse_sum(text: &str) -> Option<RangeSum> {
    let (range, sum) = text.split_once(' ')?;
    let (offset, len) = parse_range(range)?;
    let valid = sum.len() == 16 && sum.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    valid.then(|| RangeSum {
        offset,
        len,
        sum: sum.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_of_one_zero_word_is_basis_times_prime() {
        assert_eq!(fnv_sum(&[0; 8]), "af63bd4c8601b7df");
        assert_eq!(fnv_sum(&[]), "cbf29ce484222325");
        assert_eq!(fnv_words(&[1, 0, 0, 0, 0, 0, 0, 0]), fnv_words(&[1]));
    }

    #[test]
    fn pattern_matches_the_formula() {
        let bytes = pattern_bytes(4096, 16, 7);
        assert_eq!(bytes.len(), 16);
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        assert_eq!(word(0), (4096u64 ^ 7).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        assert_eq!(word(8), (4104u64 ^ 7).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        // A piece of a pattern is the pattern of the piece.
        assert_eq!(pattern_bytes(4104, 8, 7), bytes[8..]);
    }

    #[test]
    fn parses_a_run_behind_a_firmware_banner() {
        let output = "\u{1b}[2JSeaBIOS (version 1.16.2)\n\
            Booting from ROM..blkcheck: disk transport=pci capacity=32768 ro=0 id=vm1\r\n\
            blkcheck: sum 0+65536 42d64458dfe6407d\n\
            blkcheck: sum 0+512 nothex\n\
            blkcheck: wrote 2097152+4096\n\
            blkcheck: flushed\n\
            blkcheck: readback ok\n\
            blkcheck: done\n";
        let report = BlkcheckReport::parse(output);
        assert_eq!(report.transport.as_deref(), Some("pci"));
        assert_eq!(report.capacity, Some(32768));
        assert_eq!(report.ro, Some(false));
        assert_eq!(report.id.as_deref(), Some("vm1"));
        assert_eq!(report.sum(0, 65536), Some("42d64458dfe6407d"));
        assert_eq!(report.sums.len(), 1);
        assert_eq!(report.wrote, Some((2097152, 4096)));
        assert!(report.flushed && report.readback_ok && !report.write_refused);
        assert!(report.passed());
    }

    #[test]
    fn errors_and_refusals() {
        let report = BlkcheckReport::parse(
            "blkcheck: disk transport=mmio capacity=8 ro=1 id=-\n\
             blkcheck: write refused\n\
             blkcheck: error: range past the end of the disk at byte 4096\n",
        );
        assert_eq!(report.ro, Some(true));
        assert_eq!(report.id, None);
        assert!(report.write_refused);
        assert_eq!(
            report.error.as_deref(),
            Some("range past the end of the disk at byte 4096")
        );
        assert!(!report.passed());
        assert!(!BlkcheckReport::parse("").passed());
    }
}
