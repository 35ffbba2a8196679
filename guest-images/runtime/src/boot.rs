//! The PVH entry: from the VMM's 32-bit protected mode to the program's main.
//!
//! The VMM (or QEMU) finds the entry through a `.note.Xen` ELF note of type
//! [`XEN_ELFNOTE_PHYS32_ENTRY`] (its descriptor is the 64-bit address of
//! `pvh_start32`; loaders read its low 32 bits). It jumps there in 32-bit
//! protected mode, paging off, with `ebx` holding the guest-physical address
//! of the [`StartInfo`]. The stub then, without touching `ebx`:
//!
//! 1. points CR3 at the image's own page tables, which were filled in at
//!    build time (`.data.boot_pagetables`): the first 4 GiB are
//!    identity-mapped with 2 MiB pages, read/write, executable; the top GiB
//!    (the device hole at 3-4 GiB) uncached. Nothing above is mapped until
//!    [`paging::map_device`](crate::paging::map_device) maps it;
//! 2. loads its own GDT (null, 64-bit code at 0x08, flat data at 0x10), sets
//!    CR4.PAE, CR3, EFER.LME, CR0.PG, and far-jumps into 64-bit code;
//! 3. loads the data segments, points `rsp` at the 16 KiB stack, zeroes
//!    `.bss` and calls [`rust_start`] with the `StartInfo` address.
//!
//! Interrupts stay disabled throughout; there is no IDT.

use crate::serial;
use strata_guest_abi::exit_code;
use strata_guest_abi::pvh::{START_INFO_MAGIC, StartInfo, XEN_ELFNOTE_PHYS32_ENTRY};

/// End of the guest-physical memory identity-mapped at boot: boot
/// information must lie below it.
pub const IDENTITY_MAPPED_END: u64 = crate::paging::BOOT_MAPPED_END;

/// The longest command line accepted, including its terminating NUL.
pub const MAX_CMDLINE_LEN: u64 = 4096;

core::arch::global_asm!(
    // The PVH entry note: name "Xen", type XEN_ELFNOTE_PHYS32_ENTRY, and an
    // 8-byte descriptor (QEMU reads 8 bytes, linux-loader and Xen the low 4).
    r#"
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long .Lxen_name_end - .Lxen_name
    .long .Lxen_desc_end - .Lxen_desc
    .long {note_type}
.Lxen_name:
    .asciz "Xen"
.Lxen_name_end:
    .balign 4
.Lxen_desc:
    .quad pvh_start32
.Lxen_desc_end:
    .balign 4
    .popsection
    "#,
    // The page tables, complete at build time: PML4[0] -> PDPT,
    // PDPT[g] -> the g-th PD (g < 4), PD entry i -> i * 2 MiB (present,
    // writable, 2 MiB page; in the 4th GiB also cache-disabled and
    // write-through, i.e. uncached, as that is where device registers are).
    // The loader copies them with the image, which costs the guest nothing,
    // where building them at run time costs thousands of emulated
    // instructions on an emulating KVM.
    r#"
    .pushsection .data.boot_pagetables, "aw", @progbits
    .balign 4096
    .globl __boot_pml4
__boot_pml4:
    .quad __boot_pdpt + 0x3
    .fill 511, 8, 0
__boot_pdpt:
    .quad __boot_pd + 0x0003
    .quad __boot_pd + 0x1003
    .quad __boot_pd + 0x2003
    .quad __boot_pd + 0x3003
    .fill 508, 8, 0
__boot_pd:
    .set .Lpage, 0
    .rept 1536
    .quad (.Lpage << 21) | 0x83
    .set .Lpage, .Lpage + 1
    .endr
    .rept 512
    .quad (.Lpage << 21) | 0x9b
    .set .Lpage, .Lpage + 1
    .endr
    .popsection
    "#,
    // The GDT used from 64-bit mode on. The accessed bits are preset so the
    // CPU never writes to it.
    r#"
    .pushsection .rodata.strata_boot_gdt, "a", @progbits
    .balign 16
.Lgdt:
    .quad 0
    .quad 0x00af9b000000ffff
    .quad 0x00cf93000000ffff
.Lgdt_end:
    .balign 8
.Lgdt_ptr:
    .word .Lgdt_end - .Lgdt - 1
    .quad .Lgdt
    .popsection
    "#,
    r#"
    .pushsection .text.pvh_entry, "ax", @progbits
    .code32
    .globl pvh_start32
    .type pvh_start32, @function
pvh_start32:
    cli
    cld

    lgdt .Lgdt_ptr

    /* CR4.PAE */
    movl %cr4, %eax
    orl $0x20, %eax
    movl %eax, %cr4

    movl $__boot_pml4, %eax
    movl %eax, %cr3

    /* EFER.LME */
    movl $0xc0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr

    /* CR0.PG (CR0.PE is already set): long mode, compatibility submode. */
    movl %cr0, %eax
    orl $0x80000000, %eax
    movl %eax, %cr0

    ljmp $0x08, $.Lstart64

    .code64
.Lstart64:
    movl $0x10, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs

    movl $__stack_top, %esp

    /* Zero .bss. */
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    xorl %eax, %eax
    rep stosb

    /* rust_start(start_info_paddr): ebx zero-extended into rdi. */
    movl %ebx, %edi
    xorl %ebp, %ebp
    call {rust_start}
    ud2
    .size pvh_start32, . - pvh_start32
    .popsection
    "#,
    note_type = const XEN_ELFNOTE_PHYS32_ENTRY,
    rust_start = sym rust_start,
    options(att_syntax)
);

/// Why the boot information was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootError {
    /// `ebx` was 0, misaligned, or the `StartInfo` is not identity-mapped.
    StartInfoAddress,
    /// `StartInfo::magic` is not [`START_INFO_MAGIC`].
    Magic,
    /// The command line is not identity-mapped or has no NUL within
    /// [`MAX_CMDLINE_LEN`] bytes.
    Cmdline,
}

impl BootError {
    /// A one-line description.
    pub fn message(self) -> &'static str {
        match self {
            Self::StartInfoAddress => "PVH StartInfo address is null, misaligned or above 4 GiB",
            Self::Magic => "PVH StartInfo magic mismatch",
            Self::Cmdline => "command line is above 4 GiB or not NUL-terminated",
        }
    }
}

/// Reads and validates the `StartInfo` at `paddr`.
///
/// # Safety
///
/// If `paddr` is non-zero, aligned and identity-mapped, it must point to
/// readable memory (anything the VMM put there).
unsafe fn read_start_info(paddr: u64) -> Result<StartInfo, BootError> {
    let size = size_of::<StartInfo>() as u64;
    if paddr == 0 || paddr % 8 != 0 || paddr > IDENTITY_MAPPED_END - size {
        return Err(BootError::StartInfoAddress);
    }
    // SAFETY: `paddr` is aligned and the whole structure is identity-mapped;
    // the caller guarantees it is readable. Volatile: the VMM wrote it.
    let info = unsafe { core::ptr::read_volatile(paddr as *const StartInfo) };
    if info.magic != START_INFO_MAGIC {
        return Err(BootError::Magic);
    }
    Ok(info)
}

/// Returns the NUL-terminated command line at `paddr` (empty if `paddr` is 0).
///
/// # Safety
///
/// If `paddr` is non-zero and identity-mapped, the memory from `paddr` up to
/// the NUL (or [`MAX_CMDLINE_LEN`] bytes) must be readable and never written
/// again.
unsafe fn read_cmdline(paddr: u64) -> Result<&'static [u8], BootError> {
    if paddr == 0 {
        return Ok(&[]);
    }
    if paddr >= IDENTITY_MAPPED_END {
        return Err(BootError::Cmdline);
    }
    let limit = MAX_CMDLINE_LEN.min(IDENTITY_MAPPED_END - paddr);
    let start = paddr as *const u8;
    let mut len = 0;
    loop {
        if len == limit {
            return Err(BootError::Cmdline);
        }
        // SAFETY: `len < limit`, so the byte is identity-mapped and, per the
        // caller, readable. Volatile also keeps this from becoming `strlen`.
        if unsafe { core::ptr::read_volatile(start.wrapping_add(len as usize)) } == 0 {
            break;
        }
        len += 1;
    }
    // SAFETY: the `len` bytes at `start` are readable (checked above) and,
    // per the caller, never written again.
    Ok(unsafe { core::slice::from_raw_parts(start, len as usize) })
}

unsafe extern "Rust" {
    /// The program's main, defined by [`entry!`](crate::entry).
    fn __strata_guest_main(cmdline: &[u8]) -> u8;
}

/// Validates the boot information and returns the command line.
fn boot_cmdline(start_info_paddr: u64) -> Result<&'static [u8], BootError> {
    // SAFETY: the VMM put the `StartInfo` in guest memory and the stub
    // identity-mapped the first 4 GiB; `read_start_info` checks the address.
    let info = unsafe { read_start_info(start_info_paddr) }?;
    // SAFETY: the VMM put the command line in guest memory and never writes it
    // again; `read_cmdline` checks that what it reads is identity-mapped.
    unsafe { read_cmdline(info.cmdline_paddr) }
}

/// The first Rust code to run: called by the entry stub on the boot stack,
/// with the guest-physical address of the PVH `StartInfo`.
extern "C" fn rust_start(start_info_paddr: u64) -> ! {
    serial::init();
    match boot_cmdline(start_info_paddr) {
        Ok(cmdline) => {
            // SAFETY: `entry!` defines `__strata_guest_main` with exactly this
            // signature; it is an ordinary safe Rust function.
            let code = unsafe { __strata_guest_main(cmdline) };
            crate::exit(code)
        }
        Err(error) => {
            serial::write_str("strata-guest-rt: bad boot information: ");
            serial::write_str(error.message());
            serial::write_str("\n");
            crate::exit(exit_code::BAD_BOOT_INFO)
        }
    }
}
