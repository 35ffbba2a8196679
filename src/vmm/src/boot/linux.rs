//! Linux bzImage boot through the 64-bit boot protocol.
//!
//! linux-loader copies the protected-mode kernel to 1 MiB; this module fills
//! the zero page (`boot_params`) with the setup header, the command line and
//! an e820 map. The vCPU then enters at load address + 0x200 in long mode
//! with `rsi` pointing at the zero page (see `vcpu::regs`).

use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::boot_params;
use linux_loader::loader::{BzImage, KernelLoader};
use vm_memory::GuestAddress;

use std::io::SeekFrom;

use super::image::bzimage_footprint;
use super::{BootEntry, KernelReader, LoadKernelError, check_fits};
use crate::layout::{CMDLINE_ADDR, EBDA_START, HIMEM_START, ZERO_PAGE_ADDR, usable_ram};
use crate::memory::GuestMemoryMmap;

const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
/// `type_of_loader` value for a boot loader without an assigned id.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
/// Offset of the 64-bit entry point from the protected-mode load address.
const STARTUP_64_OFFSET: u64 = 0x200;

pub(super) fn load_bzimage(
    mem: &GuestMemoryMmap,
    mem_size: u64,
    reader: &mut impl KernelReader,
    header_probe: &[u8],
    path: &str,
    cmdline: &Cmdline,
) -> Result<BootEntry, LoadKernelError> {
    let file_len = reader
        .seek(SeekFrom::End(0))
        .and_then(|len| reader.rewind().map(|()| len))
        .map_err(|source| LoadKernelError::Read {
            path: path.to_string(),
            source,
        })?;
    let needed = HIMEM_START.saturating_add(bzimage_footprint(header_probe, file_len));
    check_fits(needed, mem_size, path)?;
    let loaded =
        BzImage::load(mem, None, reader, Some(GuestAddress(HIMEM_START))).map_err(|source| {
            LoadKernelError::BzImage {
                path: path.to_string(),
                source,
            }
        })?;
    let Some(mut header) = loaded.setup_header else {
        return Err(LoadKernelError::UnknownFormat(path.to_string()));
    };

    header.type_of_loader = LOADER_TYPE_UNDEFINED;
    header.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    header.header = KERNEL_HDR_MAGIC;
    header.cmd_line_ptr = CMDLINE_ADDR as u32;
    header.cmdline_size = cmdline_len(cmdline);
    let mut params = boot_params {
        hdr: header,
        ..Default::default()
    };
    let e820 = e820_map(mem_size);
    if e820.len() > params.e820_table.len() {
        return Err(LoadKernelError::MemmapTooLarge(e820.len()));
    }
    for (slot, (addr, size, kind)) in params.e820_table.iter_mut().zip(&e820) {
        slot.addr = *addr;
        slot.size = *size;
        slot.r#type = *kind;
    }
    params.e820_entries = e820.len() as u8;
    let zero_page = BootParams::new(&params, GuestAddress(ZERO_PAGE_ADDR));
    LinuxBootConfigurator::write_bootparams(&zero_page, mem)
        .map_err(LoadKernelError::BootParams)?;
    Ok(BootEntry::Linux64 {
        entry: loaded.kernel_load.0 + STARTUP_64_OFFSET,
    })
}

fn cmdline_len(cmdline: &Cmdline) -> u32 {
    cmdline
        .as_cstring()
        .map_or(0, |c| c.as_bytes().len() as u32)
}

/// The e820 map: `(addr, size, type)` in address order.
fn e820_map(mem_size: u64) -> Vec<(u64, u64, u32)> {
    let mut map: Vec<_> = usable_ram(mem_size)
        .into_iter()
        .map(|(addr, size)| (addr, size, E820_RAM))
        .collect();
    map.push((EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED));
    map.sort_by_key(|e| e.0);
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e820_covers_ram_and_reserves_the_hole() {
        let map = e820_map(256 << 20);
        assert_eq!(map[0], (0, EBDA_START, E820_RAM));
        assert_eq!(
            map[1],
            (EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED)
        );
        assert_eq!(map[2], (HIMEM_START, (256 << 20) - HIMEM_START, E820_RAM));
    }
}
