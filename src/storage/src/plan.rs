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
//! [`Image::read_raw`] and the plans cut a request the same way
//! (`Image::runs`): into stretches that lie contiguously in one file.
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

/// A stretch of a request that lies in one contiguous range of one member's
/// file, or reads as zeros.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Run {
    /// Bytes of the request before it.
    pub done: usize,
    /// Its length.
    pub len: usize,
    /// Member index and byte offset in that member's file; `None`: zeros.
    pub source: Option<(usize, u64)>,
}

impl Image {
    /// Cuts `[offset, offset + len)` (already range-checked) into runs,
    /// extending each while the following blocks sit contiguously in the
    /// same file (or are zeros too).
    pub(crate) fn runs(&self, offset: u64, len: usize) -> impl Iterator<Item = Run> + '_ {
        let bs = u64::from(self.block_size());
        let mut done = 0usize;
        std::iter::from_fn(move || {
            if done >= len {
                return None;
            }
            let pos = offset + done as u64;
            let block = pos / bs;
            let within = pos % bs;
            let entry = self.entry(block);
            let mut run = (bs - within).min((len - done) as u64) as usize;
            let mut next = block + 1;
            while done + run < len {
                let expected =
                    unpack(entry).map_or(ZEROS, |(m, o)| pack(m, o + (next - block) * bs));
                if self.entry(next) != expected {
                    break;
                }
                run += (bs as usize).min(len - done - run);
                next += 1;
            }
            let item = Run {
                done,
                len: run,
                source: unpack(entry).map(|(index, base)| (index, base + within)),
            };
            done += run;
            Some(item)
        })
    }

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
        self.plan(offset, len, out, |run| match run.source {
            None => Some(Piece::Zeros { len: run.len }),
            Some((index, at)) => self.members()[index]
                .data()
                .plain_fd(at, run.len, addr + run.done, false)
                .map(|fd| Piece::Io {
                    fd,
                    offset: at,
                    len: run.len,
                }),
        })
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
        let top_index = self.members().len() - 1;
        let top = self.top();
        if !top.writable() {
            return Ok(false);
        }
        self.plan(offset, len, out, |run| match run.source {
            Some((index, at)) if index == top_index => top
                .data()
                .plain_fd(at, run.len, addr + run.done, true)
                .map(|fd| Piece::Io {
                    fd,
                    offset: at,
                    len: run.len,
                }),
            _ => None,
        })
    }

    /// Appends `piece(run)` for every run of the request to `out`, or
    /// nothing at all (and `Ok(false)`) if one of them has no piece.
    fn plan(
        &self,
        offset: u64,
        len: usize,
        out: &mut Vec<Piece>,
        piece: impl Fn(Run) -> Option<Piece>,
    ) -> Result<bool, ImageIoError> {
        let first = out.len();
        for run in self.runs(offset, len) {
            match piece(run) {
                Some(p) => out.push(p),
                None => {
                    out.truncate(first);
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests;
