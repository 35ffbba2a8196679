//! The records the guest's `/init` prints on the serial console, parsed.
//! Lines that are not records (firmware, kernel messages) are ignored.

/// `SIZE <dev> <bytes>`: the size of a virtio disk as the guest sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSize {
    pub dev: String,
    pub bytes: u64,
}

/// `SUM <dev> <offset> <len> <sha256>`: the hash of a byte range of a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSum {
    pub dev: String,
    pub offset: u64,
    pub len: u64,
    pub sha256: String,
}

/// `WROTE <offset> <len> <sha256>`: a range the guest wrote, hashed after
/// reading it back from the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wrote {
    pub offset: u64,
    pub len: u64,
    pub sha256: String,
}

/// Everything one guest run reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestReport {
    /// Disks found, in probe order (`STRATA-DISKS`).
    pub disks: Vec<String>,
    pub sizes: Vec<DiskSize>,
    pub sums: Vec<DiskSum>,
    pub wrote: Vec<Wrote>,
    /// Reasons from `STRATA-FAIL` lines.
    pub failures: Vec<String>,
    /// The status on `STRATA-DONE`; `None` when the guest never got there.
    pub done: Option<i32>,
}

impl GuestReport {
    /// Parses a serial transcript.
    pub fn parse(output: &str) -> GuestReport {
        let mut report = GuestReport::default();
        for line in output.lines() {
            let mut words = line.split_whitespace();
            let Some(tag) = words.next() else { continue };
            let fields: Vec<&str> = words.collect();
            match (tag, fields.as_slice()) {
                ("STRATA-DISKS", disks) => {
                    report.disks = disks.iter().map(|d| (*d).to_owned()).collect();
                }
                ("SIZE", [dev, bytes]) => {
                    if let Ok(bytes) = bytes.parse() {
                        report.sizes.push(DiskSize {
                            dev: (*dev).to_owned(),
                            bytes,
                        });
                    }
                }
                ("SUM", [dev, offset, len, sha]) => {
                    if let (Ok(offset), Ok(len), true) = (offset.parse(), len.parse(), is_sha(sha))
                    {
                        let (dev, sha256) = ((*dev).to_owned(), (*sha).to_owned());
                        report.sums.push(DiskSum {
                            dev,
                            offset,
                            len,
                            sha256,
                        });
                    }
                }
                ("WROTE", [offset, len, sha]) => {
                    if let (Ok(offset), Ok(len), true) = (offset.parse(), len.parse(), is_sha(sha))
                    {
                        let sha256 = (*sha).to_owned();
                        report.wrote.push(Wrote {
                            offset,
                            len,
                            sha256,
                        });
                    }
                }
                ("STRATA-FAIL", reason) => report.failures.push(reason.join(" ")),
                ("STRATA-DONE", [status]) => report.done = status.parse().ok(),
                _ => {}
            }
        }
        report
    }

    /// True when the guest finished with status 0 and no failures.
    pub fn passed(&self) -> bool {
        self.done == Some(0) && self.failures.is_empty()
    }

    /// The size the guest saw for `dev`.
    pub fn size(&self, dev: &str) -> Option<u64> {
        self.sizes.iter().find(|s| s.dev == dev).map(|s| s.bytes)
    }

    /// The hash of `dev`'s range at `offset` of `len` bytes.
    pub fn sum(&self, dev: &str, offset: u64, len: u64) -> Option<&str> {
        self.sums
            .iter()
            .find(|s| s.dev == dev && s.offset == offset && s.len == len)
            .map(|s| s.sha256.as_str())
    }
}

fn is_sha(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "23b01a8bed75c3b659aa690dfe22af44d32fa462a70b318440799467ecc1c10f";

    #[test]
    fn parses_records_and_skips_noise() {
        let output = format!(
            "\u{1b}[2JSeaBIOS (version 1.16.2)\nBooting from ROM..\n\
             STRATA-DISKS vda vdb\nSIZE vda 67108864\nSUM vda 0 67108864 {SHA}\n\
             SUM vda 0 nope {SHA}\nWROTE 4096 512 {SHA}\nSTRATA-DONE 0\n\
             [    3.2] reboot: Power down\n"
        );
        let report = GuestReport::parse(&output);
        assert_eq!(report.disks, ["vda", "vdb"]);
        assert_eq!(report.size("vda"), Some(64 << 20));
        assert_eq!(report.sum("vda", 0, 64 << 20), Some(SHA));
        assert_eq!(report.sums.len(), 1);
        assert_eq!(
            report.wrote,
            [Wrote {
                offset: 4096,
                len: 512,
                sha256: SHA.to_owned()
            }]
        );
        assert!(report.passed());
    }

    #[test]
    fn failures_and_a_missing_done_do_not_pass() {
        let report = GuestReport::parse("STRATA-FAIL insmod virtio_blk\nSTRATA-DONE 1\n");
        assert_eq!(report.failures, ["insmod virtio_blk"]);
        assert_eq!(report.done, Some(1));
        assert!(!report.passed());
        assert!(!GuestReport::parse("SIZE vda 512\n").passed());
    }
}
