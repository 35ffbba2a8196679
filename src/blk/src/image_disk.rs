//! A Strata layered image as a [`Disk`].

use std::io;

use strata_storage::{Image, ImageIoError, Piece};
use vm_memory::VolatileSlice;

use std::path::Path;

use crate::disk::Disk;
use crate::readahead::{Recorder, load_trace, trace_path};

/// An open image served to a guest.
pub struct ImageDisk(Image, Option<Recorder>);

impl ImageDisk {
    /// Serves `image`.
    pub fn new(image: Image) -> Self {
        Self(image, None)
    }

    /// Serves `image` with look-ahead traces kept in `dir`: if a trace of its
    /// base exists, returns the blocks to prefetch; otherwise records this
    /// boot's reads into a new one (written when the session ends).
    pub fn with_readahead(image: Image, dir: &Path) -> (Self, Option<Vec<u64>>) {
        let Some(path) = trace_path(dir, &image) else {
            return (Self::new(image), None);
        };
        if let Some(blocks) = load_trace(&path, image.block_size()) {
            return (Self::new(image), Some(blocks));
        }
        let recorder = Recorder::new(path, image.blocks(), image.block_size());
        (Self(image, Some(recorder)), None)
    }

    /// The image.
    pub fn image(&self) -> &Image {
        &self.0
    }
}

fn io_err(e: ImageIoError) -> io::Error {
    io::Error::other(e)
}

impl Disk for ImageDisk {
    fn size(&self) -> u64 {
        self.0.virtual_size()
    }

    fn read_to(&self, offset: u64, dst: &VolatileSlice) -> io::Result<()> {
        if let Some(recorder) = &self.1 {
            recorder.note_read(offset, dst.len() as u64);
        }
        let guard = dst.ptr_guard_mut();
        // SAFETY: the slice was obtained from guest memory that stays mapped for
        // as long as the memory guard the caller holds; `guard` points at
        // `dst.len()` writable bytes of it.
        unsafe { self.0.read_raw(offset, guard.as_ptr(), dst.len()) }.map_err(io_err)
    }

    fn write_from(&self, offset: u64, src: &VolatileSlice) -> io::Result<()> {
        let guard = src.ptr_guard();
        // SAFETY: as for `read_to`; `guard` points at `src.len()` readable bytes.
        unsafe { self.0.write_raw(offset, guard.as_ptr(), src.len()) }.map_err(io_err)
    }

    fn flush(&self) -> io::Result<()> {
        self.0.flush().map_err(io_err)
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.0.discard(offset, len).map_err(io_err)
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.0.write_zeroes(offset, len).map_err(io_err)
    }

    fn plan(
        &self,
        write: bool,
        offset: u64,
        len: usize,
        addr: usize,
        out: &mut Vec<Piece>,
    ) -> io::Result<bool> {
        if write {
            return self.0.plan_write(offset, len, addr, out).map_err(io_err);
        }
        let planned = self.0.plan_read(offset, len, addr, out).map_err(io_err)?;
        if planned && let Some(recorder) = &self.1 {
            recorder.note_read(offset, len as u64);
        }
        Ok(planned)
    }

    fn session_ended(&self) {
        if let Some(recorder) = &self.1 {
            match recorder.finish() {
                Ok(0) => {}
                Ok(n) => log::info!("recorded the first {n} blocks read for look-ahead"),
                Err(e) => log::warn!("cannot save the look-ahead trace: {e}"),
            }
        }
    }
}
