//! The PVH `hvm_start_info` and memory map, written below 1 MiB.

use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::elf::start_info::{hvm_memmap_table_entry, hvm_start_info};
use strata_guest_abi::pvh::{MEMMAP_TYPE_RAM, MEMMAP_TYPE_RESERVED, START_INFO_MAGIC};
use vm_memory::GuestAddress;

use super::LoadKernelError;
use crate::layout::{
    CMDLINE_ADDR, EBDA_START, HIMEM_START, PVH_MEMMAP_ADDR, PVH_MEMMAP_MAX_ENTRIES,
    PVH_START_INFO_ADDR, usable_ram,
};
use crate::memory::GuestMemoryMmap;

/// The PVH memory map for a guest of `mem_size` bytes: usable RAM plus the
/// legacy hole below 1 MiB, in address order.
pub(super) fn memmap(mem_size: u64) -> Vec<hvm_memmap_table_entry> {
    let mut entries: Vec<_> = usable_ram(mem_size)
        .into_iter()
        .map(|(addr, size)| hvm_memmap_table_entry {
            addr,
            size,
            type_: MEMMAP_TYPE_RAM,
            reserved: 0,
        })
        .collect();
    entries.push(hvm_memmap_table_entry {
        addr: EBDA_START,
        size: HIMEM_START - EBDA_START,
        type_: MEMMAP_TYPE_RESERVED,
        reserved: 0,
    });
    entries.sort_by_key(|e| e.addr);
    entries
}

pub(super) fn write_start_info(
    mem: &GuestMemoryMmap,
    mem_size: u64,
) -> Result<(), LoadKernelError> {
    let entries = memmap(mem_size);
    if entries.len() > PVH_MEMMAP_MAX_ENTRIES {
        return Err(LoadKernelError::MemmapTooLarge(entries.len()));
    }
    let start_info = hvm_start_info {
        magic: START_INFO_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE_ADDR,
        memmap_paddr: PVH_MEMMAP_ADDR,
        memmap_entries: entries.len() as u32,
        ..Default::default()
    };
    let mut params = BootParams::new(&start_info, GuestAddress(PVH_START_INFO_ADDR));
    params.set_sections(&entries, GuestAddress(PVH_MEMMAP_ADDR));
    PvhBootConfigurator::write_bootparams(&params, mem).map_err(LoadKernelError::BootParams)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memmap_reserves_the_legacy_hole() {
        let map = memmap(64 << 20);
        let kinds: Vec<_> = map.iter().map(|e| (e.addr, e.type_)).collect();
        assert_eq!(
            kinds,
            vec![
                (0, MEMMAP_TYPE_RAM),
                (EBDA_START, MEMMAP_TYPE_RESERVED),
                (HIMEM_START, MEMMAP_TYPE_RAM)
            ]
        );
        assert_eq!(map[2].size, (64 << 20) - HIMEM_START);
    }
}
