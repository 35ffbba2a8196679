//! `strata-guest-rt`: the bare-metal runtime of Strata's test guest images.
//!
//! A guest program is a `#![no_std]`, `#![no_main]` binary that names its
//! main function with [`entry!`]:
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//!
//! strata_guest_rt::entry!(main);
//!
//! fn main(cmdline: &[u8]) -> u8 {
//!     strata_guest_rt::serial::write_str("hi\n");
//!     0 // the exit code
//! }
//! ```
//!
//! and links with `link.ld` (see `programs/build.rs`). The runtime does the
//! rest:
//!
//! * [`boot`]: the PVH entry. A `.note.Xen` ELF note of type
//!   `XEN_ELFNOTE_PHYS32_ENTRY` names a 32-bit stub that loads page tables
//!   identity-mapping the first 4 GiB, enters 64-bit long mode, zeroes `.bss`,
//!   validates the PVH `StartInfo` and reads the kernel command line.
//! * [`paging`]: maps device registers above 4 GiB (a 64-bit PCI BAR).
//!   Every other address is its own physical address, so pointers to
//!   statics are DMA addresses.
//! * [`pci`]: PCI configuration space of bus 0 through ports 0xCF8/0xCFC.
//! * [`virtio`]: virtio-mmio and modern virtio-pci transports, a polled split
//!   virtqueue, and [`virtio::blk::VirtioBlk`], a virtio-blk driver.
//! * [`serial`]: output on the COM1 16550 UART, with no `core::fmt` (its
//!   precompiled code uses SSE, which the guests must not contain).
//! * [`exit`]: ends the VM through the `isa-debug-exit` port.
//! * [`cmdline`]: finds `key=value` words in the command line.
//! * `mem`: `memcpy` and friends, which the compiler calls and no libc provides.
//! * a panic handler printing `panic: <file>:<line>` and exiting with
//!   [`exit_code::PANIC`](strata_guest_abi::exit_code::PANIC).
//!
//! Memory layout (see `link.ld`): the image is linked and loaded at 1 MiB,
//! physical == virtual. The boot page tables (6 pages) start `.data`; `.dma`
//! (device rings and buffers, spare page tables: zero-filled by the loader,
//! not cleared again at boot), `.bss` and a 16 KiB stack follow. The first
//! 4 GiB of guest-physical memory are identity-mapped (the 3-4 GiB device
//! hole uncached), so the boot information the VMM passes must lie below
//! 4 GiB; device registers above are mapped on demand by
//! [`paging::map_device`].
//!
//! The guests run on an emulating nested KVM where each instruction costs
//! about a microsecond and SSE is fatal, so everything here is small and
//! integer-only.
#![no_std]

pub mod boot;
pub mod cmdline;
mod io;
mod mem;
pub mod paging;
pub mod pci;
pub mod serial;
pub mod virtio;

pub use strata_guest_abi as abi;

use strata_guest_abi::{DEBUG_EXIT_PORT, exit_code};

/// Declares the guest program's main function.
///
/// `main` must have the type `fn(&[u8]) -> u8`: it receives the kernel command
/// line (without its terminating NUL; empty if the VMM passed none) and returns
/// the exit code, which the runtime hands to [`exit`].
///
/// Every guest program must use this macro exactly once; without it the image
/// fails to link with an undefined `__strata_guest_main`.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        /// The guest program's entry point, called by `strata_guest_rt`.
        #[unsafe(no_mangle)]
        pub fn __strata_guest_main(cmdline: &[u8]) -> u8 {
            let main: fn(&[u8]) -> u8 = $main;
            main(cmdline)
        }
    };
}

/// Ends the VM with exit `code`.
///
/// Writes `code` to the `isa-debug-exit` port: Strata exits with `code`, QEMU
/// with `(code << 1) | 1`. If no such device is present, halts forever with
/// interrupts disabled.
pub fn exit(code: u8) -> ! {
    io::outb(DEBUG_EXIT_PORT, code);
    halt_forever()
}

/// Stops this CPU for good: interrupts disabled, then `hlt`. Only the VMM
/// can end the VM after this.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: `cli; hlt` stops this (only) CPU; it touches no memory.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Prints `panic: <file>:<line>` and exits with [`exit_code::PANIC`].
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    serial::write_str("panic: ");
    match info.location() {
        Some(location) => {
            serial::write_str(location.file());
            serial::write_str(":");
            serial::write_u64(u64::from(location.line()));
        }
        None => serial::write_str("<unknown location>"),
    }
    serial::write_str("\n");
    exit(exit_code::PANIC)
}
