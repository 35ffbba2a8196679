//! Requests resolved to file ranges, for callers that carry out the I/O
//! themselves (a vhost-user-blk queue submitting to io_uring).
//!
//! [`Image::read_raw`] and [`Image::write_raw`] look each block up and do
//! the `pread`/`pwrite` at once. A plan does the lookup only: it lists what
//! the request would do, in order, and the caller does it, possibly many
//! requests at a time:
//!
//! ```text
//!  read 192 KiB at 0x30000 ─► [ Io { fd: base, offset: 0x30000, len: 64K },
//!                               Zeros { len: 64K },
//!                               Io { fd: layer 2, offset: 0x51000, len: 64K } ]
//! ```
//!
//! A plan is a snapshot of the map: a write or discard racing with it may
//! change where the blocks live, as it may under `read_raw`. Writes are
//! planned only where the top layer already owns every block; a block that
//! needs a copy-up makes the plan fail, and the caller falls back to
//! [`Image::write_raw`], which does it. The descriptors stay valid for the
//! life of the image.

use std::os::fd::RawFd;

use crate::image::{Image, ImageIoError, ZEROS, pack, unpack};

/// One step of a planned request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece {
    /// The next `len` bytes read as zeros (reads only).
    Zeros { len: usize },
    /// The next `len` bytes are read from (or written to) `fd` at `offset`.
    /// A read that comes back short has hit the end of a raw base: the rest
    /// reads as zeros.
    Io { fd: RawFd, offset: u64, len: usize },
}

impl Piece {
    /// Bytes of the request this piece covers.
    pub fn len(&self) -> usize {
        match *self {
            Piece::Zeros { len } | Piece::Io { len, .. } => len,
        }
    }

    /// Whether it covers nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Image {
    /// Plans a read of `len` bytes at `offset` into host memory at `addr`,
    /// appending its pieces to `out`. `Ok(false)` (with `out` as it was) if
    /// some piece needs a bounce buffer: use [`Image::read_raw`].
    pub fn plan_read(
        &self,
        offset: u64,
        len: usize,
        addr: usize,
        out: &mut Vec<Piece>,
    ) -> Result<bool, ImageIoError> {
        self.check_range(offset, len as u64)?;
        let first = out.len();
        let bs = u64::from(self.block_size());
        let mut done = 0usize;
        while done < len {
            let pos = offset + done as u64;
            let block = pos / bs;
            let within = pos % bs;
            let entry = self.entry(block);
            let run = self.run_len(block, entry, within, len - done);
            let piece = match unpack(entry) {
                None => Piece::Zeros { len: run },
                Some((index, base)) => {
                    let data = self.members()[index].data();
                    match data.plain_fd(base + within, run, addr + done, false) {
                        Some(fd) => Piece::Io {
                            fd,
                            offset: base + within,
                            len: run,
                        },
                        None => {
                            out.truncate(first);
                            return Ok(false);
                        }
                    }
                }
            };
            out.push(piece);
            done += run;
        }
        Ok(true)
    }

    /// Plans a write of `len` bytes at `offset` from host memory at `addr`,
    /// appending its pieces (all [`Piece::Io`], into the top layer) to `out`.
    /// `Ok(false)` (with `out` as it was) if some block is not yet the top
    /// layer's (it needs a copy-up) or a piece needs a bounce buffer: use
    /// [`Image::write_raw`].
    pub fn plan_write(
        &self,
        offset: u64,
        len: usize,
        addr: usize,
        out: &mut Vec<Piece>,
    ) -> Result<bool, ImageIoError> {
        self.ensure_writable()?;
        self.check_range(offset, len as u64)?;
        let first = out.len();
        let top_index = self.members().len() - 1;
        let top = self.top();
        if !top.writable() {
            return Ok(false);
        }
        let bs = u64::from(self.block_size());
        let mut done = 0usize;
        while done < len {
            let pos = offset + done as u64;
            let block = pos / bs;
            let within = pos % bs;
            let entry = self.entry(block);
            let run = self.run_len(block, entry, within, len - done);
            let fd = match unpack(entry) {
                Some((index, base)) if index == top_index => top
                    .data()
                    .plain_fd(base + within, run, addr + done, true)
                    .map(|fd| (fd, base + within)),
                _ => None,
            };
            let Some((fd, at)) = fd else {
                out.truncate(first);
                return Ok(false);
            };
            out.push(Piece::Io {
                fd,
                offset: at,
                len: run,
            });
            done += run;
        }
        Ok(true)
    }

    /// How many of the `left` bytes from `within` block `block` (whose map
    /// entry is `entry`) lie in one contiguous run of the same file (or of
    /// zeros).
    pub(crate) fn run_len(&self, block: u64, entry: u64, within: u64, left: usize) -> usize {
        let bs = u64::from(self.block_size());
        let mut run = (bs - within).min(left as u64) as usize;
        let mut next = block + 1;
        while run < left {
            let expected = unpack(entry).map_or(ZEROS, |(m, o)| pack(m, o + (next - block) * bs));
            if self.entry(next) != expected {
                break;
            }
            run += (bs as usize).min(left - run);
            next += 1;
        }
        run
    }
}

#[cfg(test)]
mod tests;
