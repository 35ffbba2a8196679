//! Loading a kernel into guest memory and writing what it needs to start.
//!
//! ```text
//!  kernel file ──detect_format──┬─ ELF ──► linux-loader Elf ──► PVH start_info ──► 32-bit entry
//!                               └─ bzImage ► linux-loader BzImage ► zero page ──► 64-bit entry
//! ```
//!
//! The result, a [`BootEntry`], says how the boot vCPU must be set up.

mod image;
mod linux;
mod pvh;

use std::fs::File;
use std::io::{Cursor, Read, Seek};
use std::path::PathBuf;

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::{Elf, KernelLoader, PvhBootCapability};
use thiserror::Error;
use vm_memory::{GuestAddress, ReadVolatile};

pub use image::{ElfShapeError, KernelFormat, detect_format, elf_load_end};

use crate::layout::{CMDLINE_ADDR, CMDLINE_CAPACITY, HIMEM_START};
use crate::memory::GuestMemoryMmap;

/// Where the kernel image comes from.
#[derive(Clone, Debug)]
pub enum KernelSource {
    /// A file on the host.
    File(PathBuf),
    /// An image compiled into the binary, with a name for messages.
    Embedded {
        /// Name shown in messages, e.g. `hello (built in)`.
        name: &'static str,
        /// The ELF image.
        bytes: &'static [u8],
    },
}

impl KernelSource {
    /// How the image is named in messages.
    pub fn display_name(&self) -> String {
        match self {
            KernelSource::File(path) => path.display().to_string(),
            KernelSource::Embedded { name, .. } => (*name).to_string(),
        }
    }
}

/// How the boot vCPU enters the loaded kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootEntry {
    /// PVH: 32-bit protected mode, paging off, `ebx` = start_info address.
    Pvh {
        /// The 32-bit entry point from the ELF note.
        entry: u64,
    },
    /// Linux 64-bit boot protocol: long mode, `rsi` = zero page address.
    Linux64 {
        /// The 64-bit entry point (load address + 0x200).
        entry: u64,
    },
}

/// Why a kernel could not be loaded.
#[derive(Debug, Error)]
pub enum LoadKernelError {
    #[error("kernel image {0} not found: check the --kernel path")]
    NotFound(PathBuf),
    #[error("cannot read kernel image {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{0} is neither an ELF kernel nor a Linux bzImage: pass an ELF image with a PVH note \
         or a bzImage"
    )]
    UnknownFormat(String),
    #[error("{path} is not a usable ELF kernel: {reason}")]
    BadElf { path: String, reason: ElfShapeError },
    #[error(
        "{0} has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): Strata boots ELF kernels \
         through PVH; build the kernel with a PVH note (Linux: CONFIG_PVH=y) or pass its bzImage"
    )]
    NoPvhNote(String),
    #[error(
        "guest memory ({memory_mib} MiB) is too small for kernel {path}, which needs at least \
         {needed_mib} MiB: raise --memory"
    )]
    TooSmall {
        path: String,
        memory_mib: u64,
        needed_mib: u64,
    },
    #[error("cannot load ELF kernel {path}: {source}")]
    Elf {
        path: String,
        source: linux_loader::loader::Error,
    },
    #[error("cannot load bzImage {path}: {source}")]
    BzImage {
        path: String,
        source: linux_loader::loader::Error,
    },
    #[error("kernel command line rejected: {0} (at most {max} bytes of printable ASCII)", max = CMDLINE_CAPACITY - 1)]
    Cmdline(#[source] linux_loader::cmdline::Error),
    #[error("cannot write the kernel command line into guest memory: {0}")]
    WriteCmdline(#[source] linux_loader::loader::Error),
    #[error("cannot write boot information into guest memory: {0}")]
    BootParams(#[source] linux_loader::configurator::Error),
    #[error("the boot memory map needs {0} entries, more than the boot area holds")]
    MemmapTooLarge(usize),
}

/// The image's bytes, seekable and readable into guest memory.
pub(crate) trait KernelReader: Read + Seek + ReadVolatile {}
impl<T: Read + Seek + ReadVolatile> KernelReader for T {}

fn read_probe(reader: &mut impl KernelReader, path: &str) -> Result<Vec<u8>, LoadKernelError> {
    let mut header = Vec::with_capacity(image::HEADER_PROBE_LEN);
    reader
        .take(image::HEADER_PROBE_LEN as u64)
        .read_to_end(&mut header)
        .and_then(|_| reader.rewind())
        .map_err(|source| LoadKernelError::Read {
            path: path.to_string(),
            source,
        })?;
    Ok(header)
}

/// Loads `source` and `cmdline` into `mem` and writes the boot structures.
///
/// `mem_size` is the guest's RAM in bytes, used for the memory map and for
/// telling the user how much a kernel needs.
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    source: &KernelSource,
    cmdline: &str,
) -> Result<BootEntry, LoadKernelError> {
    let path = source.display_name();
    match source {
        KernelSource::File(file_path) => {
            if file_path.is_dir() {
                return Err(LoadKernelError::UnknownFormat(path));
            }
            let mut file = File::open(file_path).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => LoadKernelError::NotFound(file_path.clone()),
                _ => LoadKernelError::Read {
                    path: path.clone(),
                    source: e,
                },
            })?;
            load_from(mem, mem_size, &mut file, &path, cmdline)
        }
        KernelSource::Embedded { bytes, .. } => {
            load_from(mem, mem_size, &mut Cursor::new(*bytes), &path, cmdline)
        }
    }
}

fn load_from(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    reader: &mut impl KernelReader,
    path: &str,
    cmdline: &str,
) -> Result<BootEntry, LoadKernelError> {
    let path = path.to_string();
    let header = read_probe(reader, &path)?;
    let cmdline = build_cmdline(cmdline)?;
    let entry = match detect_format(&header) {
        Some(KernelFormat::Elf) => load_elf(mem, mem_size, reader, &header, &path)?,
        Some(KernelFormat::BzImage) => {
            linux::load_bzimage(mem, mem_size, reader, &header, &path, &cmdline)?
        }
        None => return Err(LoadKernelError::UnknownFormat(path)),
    };
    linux_loader::loader::load_cmdline(mem, GuestAddress(CMDLINE_ADDR), &cmdline)
        .map_err(LoadKernelError::WriteCmdline)?;
    if let BootEntry::Pvh { .. } = entry {
        pvh::write_start_info(mem, mem_size)?;
    }
    Ok(entry)
}

fn build_cmdline(text: &str) -> Result<Cmdline, LoadKernelError> {
    let mut cmdline = Cmdline::new(CMDLINE_CAPACITY).map_err(LoadKernelError::Cmdline)?;
    if !text.is_empty() {
        cmdline.insert_str(text).map_err(LoadKernelError::Cmdline)?;
    }
    Ok(cmdline)
}

fn load_elf(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    reader: &mut impl KernelReader,
    header: &[u8],
    path: &str,
) -> Result<BootEntry, LoadKernelError> {
    let end = elf_load_end(header).map_err(|reason| LoadKernelError::BadElf {
        path: path.to_string(),
        reason,
    })?;
    check_fits(end, mem_size, path)?;
    let loaded =
        Elf::load(mem, None, reader, Some(GuestAddress(HIMEM_START))).map_err(|source| {
            LoadKernelError::Elf {
                path: path.to_string(),
                source,
            }
        })?;
    match loaded.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(entry) => Ok(BootEntry::Pvh { entry: entry.0 }),
        _ => Err(LoadKernelError::NoPvhNote(path.to_string())),
    }
}

/// Fails with a message naming the RAM needed if `[0, end)` is not all RAM.
fn check_fits(end: u64, mem_size: u64, path: &str) -> Result<(), LoadKernelError> {
    let contiguous = crate::layout::ram_ranges(mem_size)
        .first()
        .map_or(0, |r| r.size);
    if end > contiguous {
        const MIB: u64 = 1 << 20;
        return Err(LoadKernelError::TooSmall {
            path: path.to_string(),
            memory_mib: mem_size / MIB,
            needed_mib: end.div_ceil(MIB),
        });
    }
    Ok(())
}
