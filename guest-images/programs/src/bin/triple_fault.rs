//! `triple-fault`: makes the CPU triple-fault (a VM shutdown).
//!
//! Prints `triple-fault: loading an empty IDT and raising #UD`, loads an IDT
//! with limit 0 and executes `ud2`: the #UD cannot be delivered, nor the #GP
//! that raises, nor the double fault, so the CPU shuts down
//! (`KVM_EXIT_SHUTDOWN`; QEMU resets, or exits with `-no-reboot`).
#![no_std]
#![no_main]

use strata_guest_rt::serial;

strata_guest_rt::entry!(main);

/// An IDT descriptor: limit 0, base 0.
#[repr(C, packed)]
struct IdtPointer {
    limit: u16,
    base: u64,
}

fn main(_cmdline: &[u8]) -> u8 {
    serial::write_str("triple-fault: loading an empty IDT and raising #UD\n");
    let empty = IdtPointer { limit: 0, base: 0 };
    // SAFETY: this deliberately crashes the VM: with an empty IDT, `ud2`
    // triple-faults. Nothing runs afterwards, so no Rust invariant can break.
    unsafe {
        core::arch::asm!("lidt [{}]", "ud2", in(reg) &empty, options(noreturn, nostack));
    }
}
