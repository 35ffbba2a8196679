//! The PVH boot protocol as the guest sees it.
//!
//! A PVH kernel is an ELF file with a `XEN_ELFNOTE_PHYS32_ENTRY` note naming a
//! 32-bit entry point. The VMM enters it in 32-bit protected mode with paging
//! off, flat 4 GiB code and data segments, and `ebx` holding the guest-physical
//! address of a [`StartInfo`]. The layouts below are fixed by the Xen public
//! headers (`arch-x86/hvm/start_info.h`), which QEMU and Cloud Hypervisor
//! follow too.
//!
//! ```text
//!   StartInfo (56 bytes)                 MemmapEntry (24 bytes) x memmap_entries
//!   +0  magic          = 0x336ec578      +0  addr
//!   +4  version        (1: has memmap)   +8  size
//!   +8  flags                            +16 kind   (1 = RAM, 2 = reserved)
//!   +12 nr_modules                       +20 reserved
//!   +16 modlist_paddr
//!   +24 cmdline_paddr  (NUL-terminated)
//!   +32 rsdp_paddr
//!   +40 memmap_paddr
//!   +48 memmap_entries
//!   +52 reserved
//! ```

/// Value of [`StartInfo::magic`]: "xEn3" with bit 7 of the first byte set.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;

/// ELF note type of the 32-bit PVH entry point (`XEN_ELFNOTE_PHYS32_ENTRY`).
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// [`MemmapEntry::kind`] of usable RAM.
pub const MEMMAP_TYPE_RAM: u32 = 1;
/// [`MemmapEntry::kind`] of reserved space.
pub const MEMMAP_TYPE_RESERVED: u32 = 2;

/// `hvm_start_info`: the boot information a PVH guest receives in `ebx`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartInfo {
    /// Always [`START_INFO_MAGIC`].
    pub magic: u32,
    /// Version of this structure; 1 and above carry the memory map.
    pub version: u32,
    /// Flags (`SIF_*`); zero for Strata guests.
    pub flags: u32,
    /// Number of modules at `modlist_paddr`.
    pub nr_modules: u32,
    /// Guest-physical address of the module list.
    pub modlist_paddr: u64,
    /// Guest-physical address of the NUL-terminated command line, or 0.
    pub cmdline_paddr: u64,
    /// Guest-physical address of the ACPI RSDP, or 0.
    pub rsdp_paddr: u64,
    /// Guest-physical address of the memory map.
    pub memmap_paddr: u64,
    /// Number of [`MemmapEntry`] at `memmap_paddr`.
    pub memmap_entries: u32,
    /// Must be zero.
    pub reserved: u32,
}

/// `hvm_memmap_table_entry`: one range of the guest-physical memory map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemmapEntry {
    /// First guest-physical address of the range.
    pub addr: u64,
    /// Length of the range in bytes.
    pub size: u64,
    /// [`MEMMAP_TYPE_RAM`] or [`MEMMAP_TYPE_RESERVED`].
    pub kind: u32,
    /// Must be zero.
    pub reserved: u32,
}

const _: () = assert!(size_of::<StartInfo>() == 56);
const _: () = assert!(size_of::<MemmapEntry>() == 24);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_status_matches_isa_debug_exit() {
        assert_eq!(crate::qemu_exit_status(0), 1);
        assert_eq!(crate::qemu_exit_status(3), 7);
        assert_eq!(crate::qemu_exit_status(255), 511);
    }

    #[test]
    fn start_info_field_offsets_follow_xen_header() {
        assert_eq!(core::mem::offset_of!(StartInfo, cmdline_paddr), 24);
        assert_eq!(core::mem::offset_of!(StartInfo, memmap_paddr), 40);
        assert_eq!(core::mem::offset_of!(StartInfo, memmap_entries), 48);
        assert_eq!(core::mem::offset_of!(MemmapEntry, kind), 16);
    }
}
