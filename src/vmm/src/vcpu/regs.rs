//! Initial register state of the boot vCPU for each entry mode.
//!
//! ```text
//!  PVH:      protected mode, paging off, CS = flat 32-bit code, EBX = start_info
//!  Linux64:  long mode, identity map of the first 1 GiB, RSI = zero page
//! ```
//!
//! Both modes load the same GDT layout from guest memory (null, code, data,
//! TSS), differing only in whether the code segment is 32- or 64-bit.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress};

use crate::boot::BootEntry;
use crate::layout::{
    BOOT_GDT_ADDR, BOOT_IDT_ADDR, BOOT_PD_ADDR, BOOT_PDPT_ADDR, BOOT_PML4_ADDR, BOOT_STACK_POINTER,
    PVH_START_INFO_ADDR, ZERO_PAGE_ADDR,
};
use crate::memory::GuestMemoryMmap;

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// Bit 1 of RFLAGS is reserved and always set.
const RFLAGS_RESERVED: u64 = 1 << 1;

/// GDT access/flags words (the bits that sit at 40..56 of a descriptor).
const GDT_CODE64: u16 = 0xa09b;
const GDT_CODE32: u16 = 0xc09b;
const GDT_DATA: u16 = 0xc093;
const GDT_TSS: u16 = 0x808b;

const CODE_SELECTOR: u16 = 1 << 3;
const DATA_SELECTOR: u16 = 2 << 3;
const TSS_SELECTOR: u16 = 3 << 3;

/// Guest memory could not hold the boot tables.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the boot {what} into guest memory: {source}")]
pub struct BootTablesError {
    what: &'static str,
    source: vm_memory::GuestMemoryError,
}

/// Encodes a segment descriptor.
fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let (flags, base, limit) = (u64::from(flags), u64::from(base), u64::from(limit));
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
}

/// Decodes a descriptor into the form KVM takes.
fn segment_from_entry(entry: u64, selector: u16) -> kvm_segment {
    let base = ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = (entry & 0xffff) | ((entry >> 32) & 0x000f_0000);
    let granular = (entry >> 55) & 1 == 1;
    let limit = if granular {
        (raw_limit << 12) | 0xfff
    } else {
        raw_limit
    };
    kvm_segment {
        base,
        limit: limit as u32,
        selector,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g: granular as u8,
        avl: ((entry >> 52) & 1) as u8,
        unusable: 0,
        padding: 0,
    }
}

fn write_gdt(mem: &GuestMemoryMmap, code: u16) -> Result<[u64; 4], BootTablesError> {
    let gdt = [
        0,
        gdt_entry(code, 0, 0xfffff),
        gdt_entry(GDT_DATA, 0, 0xfffff),
        gdt_entry(GDT_TSS, 0, 0xfffff),
    ];
    for (i, entry) in gdt.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(BOOT_GDT_ADDR + 8 * i as u64))
            .map_err(|source| BootTablesError {
                what: "GDT",
                source,
            })?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_ADDR))
        .map_err(|source| BootTablesError {
            what: "IDT",
            source,
        })?;
    Ok(gdt)
}

/// Identity-maps the first 1 GiB with 2 MiB pages for the Linux 64-bit entry.
fn write_identity_page_tables(mem: &GuestMemoryMmap) -> Result<(), BootTablesError> {
    let err = |source| BootTablesError {
        what: "page tables",
        source,
    };
    mem.write_obj(BOOT_PDPT_ADDR | 0x03, GuestAddress(BOOT_PML4_ADDR))
        .map_err(err)?;
    mem.write_obj(BOOT_PD_ADDR | 0x03, GuestAddress(BOOT_PDPT_ADDR))
        .map_err(err)?;
    for i in 0..512u64 {
        mem.write_obj((i << 21) | 0x83, GuestAddress(BOOT_PD_ADDR + i * 8))
            .map_err(err)?;
    }
    Ok(())
}

/// Special registers for `entry`, starting from the vCPU's reset state.
pub fn boot_sregs(
    mem: &GuestMemoryMmap,
    entry: BootEntry,
    mut sregs: kvm_sregs,
) -> Result<kvm_sregs, BootTablesError> {
    let code = match entry {
        BootEntry::Pvh { .. } => GDT_CODE32,
        BootEntry::Linux64 { .. } => GDT_CODE64,
    };
    let gdt = write_gdt(mem, code)?;
    sregs.gdt.base = BOOT_GDT_ADDR;
    sregs.gdt.limit = (size_of_val(&gdt) - 1) as u16;
    sregs.idt.base = BOOT_IDT_ADDR;
    sregs.idt.limit = 7;
    let data = segment_from_entry(gdt[2], DATA_SELECTOR);
    sregs.cs = segment_from_entry(gdt[1], CODE_SELECTOR);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment_from_entry(gdt[3], TSS_SELECTOR);
    match entry {
        BootEntry::Pvh { .. } => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
        BootEntry::Linux64 { .. } => {
            write_identity_page_tables(mem)?;
            sregs.cr3 = BOOT_PML4_ADDR;
            sregs.cr0 |= X86_CR0_PE | X86_CR0_PG;
            sregs.cr4 |= X86_CR4_PAE;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
    }
    Ok(sregs)
}

/// General registers for `entry`.
pub fn boot_regs(entry: BootEntry) -> kvm_regs {
    match entry {
        BootEntry::Pvh { entry } => kvm_regs {
            rip: entry,
            rbx: PVH_START_INFO_ADDR,
            rflags: RFLAGS_RESERVED,
            ..Default::default()
        },
        BootEntry::Linux64 { entry } => kvm_regs {
            rip: entry,
            rsp: BOOT_STACK_POINTER,
            rbp: BOOT_STACK_POINTER,
            rsi: ZERO_PAGE_ADDR,
            rflags: RFLAGS_RESERVED,
            ..Default::default()
        },
    }
}

/// The FPU state after `FNINIT` with SSE exceptions masked.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_round_trip_through_kvm_segments() {
        let code64 = segment_from_entry(gdt_entry(GDT_CODE64, 0, 0xfffff), CODE_SELECTOR);
        assert_eq!(
            (code64.l, code64.db, code64.g, code64.present, code64.type_),
            (1, 0, 1, 1, 0xb)
        );
        assert_eq!(code64.limit, 0xffff_ffff);
        let code32 = segment_from_entry(gdt_entry(GDT_CODE32, 0, 0xfffff), CODE_SELECTOR);
        assert_eq!((code32.l, code32.db), (0, 1));
        let tss = segment_from_entry(gdt_entry(GDT_TSS, 0x1234_5678, 0x67), TSS_SELECTOR);
        assert_eq!(tss.base, 0x1234_5678);
        assert_eq!(tss.limit, 0x67fff, "a granular limit counts 4 KiB pages");
    }

    #[test]
    fn pvh_entry_starts_in_flat_protected_mode() {
        let mem = crate::memory::GuestRam::new(&crate::layout::ram_ranges(2 << 20)).unwrap();
        let sregs = boot_sregs(
            mem.memory(),
            BootEntry::Pvh { entry: 0x10_0000 },
            kvm_sregs::default(),
        )
        .unwrap();
        assert_eq!(sregs.cr0 & X86_CR0_PG, 0);
        assert_eq!(sregs.cr0 & X86_CR0_PE, 1);
        assert_eq!(sregs.cs.db, 1);
        let regs = boot_regs(BootEntry::Pvh { entry: 0x10_0000 });
        assert_eq!((regs.rip, regs.rbx), (0x10_0000, PVH_START_INFO_ADDR));
    }

    #[test]
    fn linux_entry_maps_the_first_gigabyte() {
        let mem = crate::memory::GuestRam::new(&crate::layout::ram_ranges(2 << 20)).unwrap();
        let sregs = boot_sregs(
            mem.memory(),
            BootEntry::Linux64 { entry: 0x10_0200 },
            kvm_sregs::default(),
        )
        .unwrap();
        assert_eq!(sregs.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        let pd_last: u64 = mem
            .memory()
            .read_obj(GuestAddress(BOOT_PD_ADDR + 511 * 8))
            .unwrap();
        assert_eq!(pd_last, (511 << 21) | 0x83);
    }
}
