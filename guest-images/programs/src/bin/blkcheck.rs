//! `blkcheck`: checksums ranges of a virtio-blk disk, and optionally writes
//! a pattern and reads it back, or checks that a read-only disk refuses a
//! write. The contract (command line, checksum, pattern, output) is in
//! `strata_guest_abi::blkcheck`; the host side is `strata_testkit::blkcheck`.
//!
//! ```text
//! blkcheck: disk transport=pci capacity=32768 ro=0 id=vm1
//! blkcheck: sum 0+65536 8c1a6b4e0f3d2a17
//! blkcheck: wrote 1048576+65536
//! blkcheck: flushed
//! blkcheck: readback ok
//! blkcheck: done
//! ```
//!
//! In that order: the disk line, one sum per range (before any write), the
//! `awaiting`/`awaited` with `blkcheck.await=`, `bench start`/`bench done`
//! with `blkcheck.bench=`, the write, flush and read-back, `write refused`
//! with `blkcheck.expect-ro`,
//! then `done` and exit code 0. On the first failure it prints
//! `blkcheck: error: <what>` and exits with `NO_DEVICE`, `DEVICE_ERROR`,
//! `MISMATCH` or `BAD_ARGS` (see `strata_guest_abi::exit_code`).
#![no_std]
#![no_main]

use strata_guest_rt::abi::blkcheck::{
    self as contract, AWAIT_KEY, BENCH_KEY, BENCH_READ_LEN, ByteRange, DEFAULT_RANGE, DEFAULT_SEED,
    EXPECT_RO_WORD, FNV_OFFSET_BASIS, KEY_PREFIX, RANGES_KEY, SECTOR_SIZE, SEED_KEY, WRITE_KEY,
    bench_offset, fnv1a_word, pattern_word,
};
use strata_guest_rt::abi::exit_code;
use strata_guest_rt::abi::virtio_mmio::parse_number;
use strata_guest_rt::serial;
use strata_guest_rt::virtio::VirtioError;
use strata_guest_rt::virtio::blk::{ID_LEN, VirtioBlk};

strata_guest_rt::entry!(main);

/// What to print after `blkcheck: error: <what>`.
enum Detail<'a> {
    None,
    /// Command-line text.
    Text(&'a [u8]),
    /// A disk byte offset.
    Offset(u64),
    /// The device's failure.
    Device(VirtioError),
}

/// The first failure: the exit code and the error line.
struct Failure<'a> {
    code: u8,
    what: &'static str,
    detail: Detail<'a>,
}

impl<'a> Failure<'a> {
    fn new(code: u8, what: &'static str, detail: Detail<'a>) -> Failure<'a> {
        Failure { code, what, detail }
    }

    /// A failed request: `DEVICE_ERROR`, with the device's reason.
    fn device(what: &'static str) -> impl FnOnce(VirtioError) -> Failure<'a> {
        move |error| Failure::new(exit_code::DEVICE_ERROR, what, Detail::Device(error))
    }
}

/// The parsed `blkcheck.*` words.
struct Args<'a> {
    /// The `blkcheck.ranges=` value (validated), or `None` for the default.
    ranges: Option<&'a [u8]>,
    write: Option<ByteRange>,
    /// `blkcheck.await=`: re-read until it holds the pattern.
    await_range: Option<ByteRange>,
    /// `blkcheck.bench=`: the number of benchmark reads.
    bench: Option<u64>,
    seed: u64,
    expect_ro: bool,
}

impl<'a> Args<'a> {
    fn parse(cmdline: &'a [u8]) -> Result<Args<'a>, Failure<'a>> {
        let mut args = Args {
            ranges: None,
            write: None,
            await_range: None,
            bench: None,
            seed: DEFAULT_SEED,
            expect_ro: false,
        };
        let bad = |what, text| Failure::new(exit_code::BAD_ARGS, what, Detail::Text(text));
        for word in cmdline.split(|&b| b == b' ') {
            if !word.starts_with(KEY_PREFIX.as_bytes()) {
                continue;
            }
            if word == EXPECT_RO_WORD.as_bytes() {
                args.expect_ro = true;
                continue;
            }
            let at = word.iter().position(|&b| b == b'=').unwrap_or(word.len());
            let (key, value) = (
                word.get(..at).unwrap_or_default(),
                word.get(at + 1..).unwrap_or_default(),
            );
            if key == RANGES_KEY.as_bytes() {
                if let Some(Err(text)) = contract::ranges(value).find(Result::is_err) {
                    return Err(bad("bad range (want OFF+LEN, multiples of 512)", text));
                }
                args.ranges = Some(value);
            } else if key == WRITE_KEY.as_bytes() {
                let range = ByteRange::parse(value);
                args.write = Some(range.ok_or_else(|| {
                    bad("bad write range (want OFF+LEN, multiples of 512)", value)
                })?);
            } else if key == AWAIT_KEY.as_bytes() {
                let range = ByteRange::parse(value);
                args.await_range = Some(range.ok_or_else(|| {
                    bad("bad await range (want OFF+LEN, multiples of 512)", value)
                })?);
            } else if key == BENCH_KEY.as_bytes() {
                args.bench =
                    Some(parse_number(value).ok_or_else(|| bad("bad bench count", value))?);
            } else if key == SEED_KEY.as_bytes() {
                args.seed = parse_number(value).ok_or_else(|| bad("bad seed", value))?;
            } else {
                return Err(bad("unknown word", word));
            }
        }
        Ok(args)
    }

    /// Calls `check` with each range to checksum, in order.
    fn each_range(
        &self,
        mut check: impl FnMut(ByteRange) -> Result<(), Failure<'a>>,
    ) -> Result<(), Failure<'a>> {
        match self.ranges {
            None => check(DEFAULT_RANGE),
            Some(value) => contract::ranges(value).flatten().try_for_each(check),
        }
    }
}

fn main(cmdline: &[u8]) -> u8 {
    match run(cmdline) {
        Ok(()) => {
            serial::write_str("blkcheck: done\n");
            exit_code::SUCCESS
        }
        Err(failure) => {
            serial::write_str("blkcheck: error: ");
            serial::write_str(failure.what);
            match failure.detail {
                Detail::None => {}
                Detail::Text(text) => {
                    serial::write_str(": ");
                    serial::write_bytes(text);
                }
                Detail::Offset(offset) => {
                    serial::write_str(" at byte ");
                    serial::write_u64(offset);
                }
                Detail::Device(error) => {
                    serial::write_str(": ");
                    serial::write_str(error.message());
                }
            }
            serial::write_str("\n");
            failure.code
        }
    }
}

fn run(cmdline: &[u8]) -> Result<(), Failure<'_>> {
    let args = Args::parse(cmdline)?;
    let mut disk = VirtioBlk::find(cmdline).map_err(|error| {
        let code = match error {
            VirtioError::NoDevice => exit_code::NO_DEVICE,
            VirtioError::BadMmioWord => exit_code::BAD_ARGS,
            _ => exit_code::DEVICE_ERROR,
        };
        Failure::new(code, "cannot start the disk", Detail::Device(error))
    })?;
    print_disk(&mut disk)?;

    // Every range must fit before any I/O starts.
    let capacity = disk.capacity();
    let past_end = |range: ByteRange| {
        Failure::new(
            exit_code::BAD_ARGS,
            "range past the end of the disk",
            Detail::Offset(range.offset),
        )
    };
    args.each_range(|range| {
        if range.fits(capacity) {
            Ok(())
        } else {
            Err(past_end(range))
        }
    })?;
    let refused_write = ByteRange {
        offset: args.write.map_or(0, |range| range.offset),
        len: SECTOR_SIZE,
    };
    for range in args
        .write
        .iter()
        .chain(args.await_range.iter())
        .chain(args.expect_ro.then_some(&refused_write))
    {
        if !range.fits(capacity) {
            return Err(past_end(*range));
        }
    }

    args.each_range(|range| {
        let sum = checksum(&mut disk, range)?;
        print_range("blkcheck: sum ", range);
        serial::write_str(" ");
        serial::write_hex_u64(sum);
        serial::write_str("\n");
        Ok(())
    })?;

    if let Some(range) = args.await_range {
        await_pattern(&mut disk, range, args.seed)?;
    }
    if let Some(count) = args.bench {
        bench_reads(&mut disk, count)?;
    }
    if args.expect_ro {
        return check_refused_write(&mut disk, refused_write, args.seed);
    }
    if let Some(range) = args.write {
        if disk.read_only() {
            return Err(Failure::new(
                exit_code::BAD_ARGS,
                "blkcheck.write= given, but the disk is read-only",
                Detail::None,
            ));
        }
        write_and_verify(&mut disk, range, args.seed)?;
    }
    Ok(())
}

/// `blkcheck: disk transport=... capacity=... ro=... id=...`
fn print_disk(disk: &mut VirtioBlk) -> Result<(), Failure<'static>> {
    let mut shown = [b'-'; ID_LEN];
    let len = match disk.id() {
        Ok(id) if !id.is_empty() => {
            // Keep the line one word per field: no spaces or control bytes.
            for (slot, &byte) in shown.iter_mut().zip(id) {
                *slot = if byte.is_ascii_graphic() { byte } else { b'?' };
            }
            id.len()
        }
        // A device without GET_ID, or with an empty serial.
        Ok(_) | Err(VirtioError::IoError | VirtioError::Unsupported) => 1,
        Err(error) => return Err(Failure::device("GET_ID failed")(error)),
    };
    serial::write_str("blkcheck: disk transport=");
    serial::write_str(disk.transport_name());
    serial::write_str(" capacity=");
    serial::write_u64(disk.capacity());
    serial::write_str(if disk.read_only() { " ro=1" } else { " ro=0" });
    serial::write_str(" id=");
    serial::write_bytes(shown.get(..len).unwrap_or_default());
    serial::write_str("\n");
    Ok(())
}

/// Writes `<prefix><OFF>+<LEN>`.
fn print_range(prefix: &str, range: ByteRange) {
    serial::write_str(prefix);
    serial::write_u64(range.offset);
    serial::write_str("+");
    serial::write_u64(range.len);
}

/// Calls `visit` with each piece of `range` one request can move: its
/// offset and length.
fn each_piece<'a>(
    disk: &mut VirtioBlk,
    range: ByteRange,
    mut visit: impl FnMut(&mut VirtioBlk, u64, usize) -> Result<(), Failure<'a>>,
) -> Result<(), Failure<'a>> {
    let mut offset = range.offset;
    let end = offset + range.len;
    while offset < end {
        let len = (end - offset).min(disk.max_transfer() as u64) as usize;
        visit(disk, offset, len)?;
        offset += len as u64;
    }
    Ok(())
}

/// The FNV-1a checksum of `range`, over little-endian u64 words.
fn checksum(disk: &mut VirtioBlk, range: ByteRange) -> Result<u64, Failure<'static>> {
    let mut hash = FNV_OFFSET_BASIS;
    each_piece(disk, range, |disk, offset, len| {
        let data = disk
            .read(offset / SECTOR_SIZE, len)
            .map_err(Failure::device("read failed"))?;
        for word in data.chunks_exact(8) {
            if let Ok(bytes) = <[u8; 8]>::try_from(word) {
                hash = fnv1a_word(hash, u64::from_le_bytes(bytes));
            }
        }
        Ok(())
    })?;
    Ok(hash)
}

/// Fills `buffer` with the pattern of the disk bytes from `offset` on.
fn fill_pattern(buffer: &mut [u8], offset: u64, seed: u64) {
    let mut at = offset;
    for word in buffer.chunks_exact_mut(8) {
        if let Ok(bytes) = <&mut [u8; 8]>::try_from(word) {
            *bytes = pattern_word(at, seed).to_le_bytes();
        }
        at += 8;
    }
}

/// Writes the pattern over `range`, flushes, and reads it back.
fn write_and_verify(
    disk: &mut VirtioBlk,
    range: ByteRange,
    seed: u64,
) -> Result<(), Failure<'static>> {
    each_piece(disk, range, |disk, offset, len| {
        fill_pattern(
            disk.buffer().get_mut(..len).unwrap_or_default(),
            offset,
            seed,
        );
        disk.write(offset / SECTOR_SIZE, len)
            .map_err(Failure::device("write failed"))
    })?;
    print_range("blkcheck: wrote ", range);
    serial::write_str("\n");
    disk.flush().map_err(Failure::device("flush failed"))?;
    serial::write_str("blkcheck: flushed\n");
    each_piece(disk, range, |disk, offset, len| {
        let data = disk
            .read(offset / SECTOR_SIZE, len)
            .map_err(Failure::device("read-back failed"))?;
        let mut at = offset;
        for word in data.chunks_exact(8) {
            if let Ok(bytes) = <[u8; 8]>::try_from(word) {
                if u64::from_le_bytes(bytes) != pattern_word(at, seed) {
                    return Err(Failure::new(
                        exit_code::MISMATCH,
                        "read-back differs from the pattern",
                        Detail::Offset(at),
                    ));
                }
            }
            at += 8;
        }
        Ok(())
    })?;
    serial::write_str("blkcheck: readback ok\n");
    Ok(())
}

/// Tells whether `range` holds the pattern of `seed`.
fn holds_pattern(
    disk: &mut VirtioBlk,
    range: ByteRange,
    seed: u64,
) -> Result<bool, Failure<'static>> {
    let mut matches = true;
    each_piece(disk, range, |disk, offset, len| {
        let data = disk
            .read(offset / SECTOR_SIZE, len)
            .map_err(Failure::device("read failed"))?;
        let mut at = offset;
        for word in data.chunks_exact(8) {
            if let Ok(bytes) = <[u8; 8]>::try_from(word) {
                matches &= u64::from_le_bytes(bytes) == pattern_word(at, seed);
            }
            at += 8;
        }
        Ok(())
    })?;
    Ok(matches)
}

/// Re-reads `range` until it holds the pattern that someone else writes.
fn await_pattern(
    disk: &mut VirtioBlk,
    range: ByteRange,
    seed: u64,
) -> Result<(), Failure<'static>> {
    print_range("blkcheck: awaiting ", range);
    serial::write_str("\n");
    while !holds_pattern(disk, range, seed)? {}
    print_range("blkcheck: awaited ", range);
    serial::write_str("\n");
    Ok(())
}

/// `count` reads of 4 KiB, one at a time, spread over the disk, between two
/// lines the host times.
fn bench_reads(disk: &mut VirtioBlk, count: u64) -> Result<(), Failure<'static>> {
    let capacity = disk.capacity();
    serial::write_str("blkcheck: bench start\n");
    for index in 0..count {
        let offset = bench_offset(index, capacity);
        disk.read(offset / SECTOR_SIZE, BENCH_READ_LEN as usize)
            .map_err(Failure::device("bench read failed"))?;
    }
    serial::write_str("blkcheck: bench done ");
    serial::write_u64(count);
    serial::write_str("\n");
    Ok(())
}

/// Checks that the disk reports read-only and answers a write with IOERR.
fn check_refused_write(
    disk: &mut VirtioBlk,
    range: ByteRange,
    seed: u64,
) -> Result<(), Failure<'static>> {
    if !disk.read_only() {
        return Err(Failure::new(
            exit_code::MISMATCH,
            "blkcheck.expect-ro: the disk does not report VIRTIO_BLK_F_RO",
            Detail::None,
        ));
    }
    let len = range.len as usize;
    fill_pattern(
        disk.buffer().get_mut(..len).unwrap_or_default(),
        range.offset,
        seed,
    );
    match disk.write(range.offset / SECTOR_SIZE, len) {
        Err(VirtioError::IoError) => {
            serial::write_str("blkcheck: write refused\n");
            Ok(())
        }
        Ok(()) => Err(Failure::new(
            exit_code::MISMATCH,
            "the read-only disk accepted a write",
            Detail::Offset(range.offset),
        )),
        Err(error) => Err(Failure::new(
            exit_code::MISMATCH,
            "the read-only disk failed a write without IOERR",
            Detail::Device(error),
        )),
    }
}
