//! The guest-physical memory map of an x86_64 Strata VM.
//!
//! ```text
//!  0x0000_0000 +-----------------------------+
//!              | real-mode area (unused)     |
//!  0x0000_0500 | GDT         (Linux boot)    |
//!  0x0000_6000 | PVH start_info + memmap     |
//!  0x0000_7000 | zero page   (Linux boot)    |
//!  0x0000_8ff0 | boot stack  (Linux boot)    |
//!  0x0000_9000 | PML4/PDPT/PD (Linux boot)   |
//!  0x0002_0000 | kernel command line         |
//!  0x0009_fc00 +-----------------------------+ EBDA_START: reserved up to 1 MiB
//!  0x0010_0000 | kernel image, then free RAM |  "ram-low" region / KVM slot 0
//!              |            ...              |
//!  0xc000_0000 +-----------------------------+ MMIO_GAP_START (if RAM is that large)
//!              | MMIO for devices (1 GiB)    |
//!  0xd000_0000 |   virtio-mmio disks, 4 KiB  |  VIRTIO_MMIO_BASE, IRQ 5, 6, ...
//!  0xfffb_d000 |   KVM TSS (3 pages)         |
//! 0x1_0000_0000+-----------------------------+
//!              | RAM above 4 GiB             |  "ram-high" region / KVM slot 1
//!              +-----------------------------+
//! ```
//!
//! Everything below 1 MiB that Strata writes is boot data the guest may
//! reclaim; the PVH memory map and the Linux e820 map both report
//! `[EBDA_START, HIMEM_START)` as reserved.

/// Guest address of the GDT written for the Linux 64-bit boot protocol.
pub const BOOT_GDT_ADDR: u64 = 0x500;
/// Guest address of the IDT (empty) written for the Linux boot protocol.
pub const BOOT_IDT_ADDR: u64 = 0x520;
/// Guest address of the PVH `hvm_start_info`.
pub const PVH_START_INFO_ADDR: u64 = 0x6000;
/// Guest address of the PVH memory map that follows it.
pub const PVH_MEMMAP_ADDR: u64 = 0x6040;
/// Most entries the PVH memory map may hold before it reaches the zero page.
pub const PVH_MEMMAP_MAX_ENTRIES: usize = (ZERO_PAGE_ADDR - PVH_MEMMAP_ADDR) as usize / 24;
/// Guest address of the Linux `boot_params` ("zero page").
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// Initial stack pointer for the Linux 64-bit entry.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Guest address of the identity-mapping page tables for Linux boot.
pub const BOOT_PML4_ADDR: u64 = 0x9000;
/// Guest address of the page-directory-pointer table.
pub const BOOT_PDPT_ADDR: u64 = 0xa000;
/// Guest address of the page directory (maps the first 1 GiB with 2 MiB pages).
pub const BOOT_PD_ADDR: u64 = 0xb000;
/// Guest address of the kernel command line.
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// Capacity of the command line, including the terminating NUL.
pub const CMDLINE_CAPACITY: usize = 4096;
/// Start of the reserved area below 1 MiB (EBDA, VGA, BIOS).
pub const EBDA_START: u64 = 0x9_fc00;
/// First address above the legacy hole: where kernels are loaded.
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the gap below 4 GiB kept free of RAM for device MMIO.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of that gap; RAM beyond the gap resumes here.
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;

/// Guest address of the TSS pages KVM needs on Intel hosts: three pages just
/// below the BIOS area at the top of 4 GiB, above every device.
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
/// Guest address of the first virtio-mmio device; the next ones follow at
/// [`VIRTIO_MMIO_SIZE`](crate::devices::virtio_mmio::VIRTIO_MMIO_SIZE) steps,
/// inside the MMIO gap.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// Interrupt (IOAPIC pin / GSI) of the first virtio-mmio device; the next
/// ones take the following pins. COM1 has pin 4.
pub const VIRTIO_MMIO_FIRST_GSI: u32 = 5;
/// Most virtio-mmio devices: pins 5 to 15. Without MP or ACPI tables a
/// Linux guest drives interrupts through the 8259 pair, which has 16 lines,
/// so pins above 15 would never reach it.
pub const MAX_VIRTIO_MMIO_DEVICES: usize = 11;

// The boot structures must not overlap; checked when the crate compiles.
const _: () = assert!(BOOT_IDT_ADDR >= BOOT_GDT_ADDR + 4 * 8);
const _: () = assert!(PVH_START_INFO_ADDR + 56 <= PVH_MEMMAP_ADDR);
const _: () = assert!(PVH_MEMMAP_ADDR + 24 * PVH_MEMMAP_MAX_ENTRIES as u64 <= ZERO_PAGE_ADDR);
const _: () = assert!(ZERO_PAGE_ADDR + 4096 <= BOOT_STACK_POINTER);
const _: () = assert!(BOOT_STACK_POINTER < BOOT_PML4_ADDR);
const _: () = assert!(BOOT_PD_ADDR + 4096 <= CMDLINE_ADDR);
const _: () = assert!(CMDLINE_ADDR + CMDLINE_CAPACITY as u64 <= EBDA_START);
const _: () = assert!(
    VIRTIO_MMIO_BASE >= MMIO_GAP_START
        && VIRTIO_MMIO_BASE + 0x1000 * MAX_VIRTIO_MMIO_DEVICES as u64 <= KVM_TSS_ADDRESS
);
const _: () = assert!(VIRTIO_MMIO_FIRST_GSI + MAX_VIRTIO_MMIO_DEVICES as u32 <= 16);

/// A range of guest RAM, named so the VMM can treat regions separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamRange {
    /// Short name; also the memfd's name as seen in `/proc/PID/maps`.
    pub name: &'static str,
    /// First guest-physical address.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

/// Splits `mem_size` bytes of RAM around the MMIO gap.
pub fn ram_ranges(mem_size: u64) -> Vec<RamRange> {
    let low = mem_size.min(MMIO_GAP_START);
    let mut ranges = vec![RamRange {
        name: "ram-low",
        base: 0,
        size: low,
    }];
    if mem_size > low {
        ranges.push(RamRange {
            name: "ram-high",
            base: MMIO_GAP_END,
            size: mem_size - low,
        });
    }
    ranges
}

/// The usable RAM a guest is told about: the ranges minus the legacy hole.
///
/// Returns `(base, size)` pairs in address order.
pub fn usable_ram(mem_size: u64) -> Vec<(u64, u64)> {
    let mut usable = Vec::new();
    for range in ram_ranges(mem_size) {
        if range.base == 0 {
            usable.push((0, EBDA_START.min(range.size)));
            if range.size > HIMEM_START {
                usable.push((HIMEM_START, range.size - HIMEM_START));
            }
        } else {
            usable.push((range.base, range.size));
        }
    }
    usable
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn small_vm_has_one_region() {
        assert_eq!(
            ram_ranges(128 * MIB),
            vec![RamRange {
                name: "ram-low",
                base: 0,
                size: 128 * MIB
            }]
        );
        assert_eq!(
            usable_ram(128 * MIB),
            vec![(0, EBDA_START), (HIMEM_START, 127 * MIB)]
        );
    }

    #[test]
    fn large_vm_skips_the_mmio_gap() {
        let ranges = ram_ranges(4096 * MIB);
        assert_eq!(ranges.len(), 2);
        assert_eq!(ranges[0].size, MMIO_GAP_START);
        assert_eq!(ranges[1].base, MMIO_GAP_END);
        assert_eq!(ranges[0].size + ranges[1].size, 4096 * MIB);
    }
}
