//! A Strata layered image as a [`Disk`].

use std::io;

use strata_storage::{Image, ImageIoError};
use vm_memory::VolatileSlice;

use crate::disk::Disk;

/// An open image served to a guest.
pub struct ImageDisk(Image);

impl ImageDisk {
    /// Serves `image`.
    pub fn new(image: Image) -> Self {
        Self(image)
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
}
