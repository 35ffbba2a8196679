//! `popcnt`: executes one `popcnt` instruction.
//!
//! Prints `popcnt: executing popcnt`, runs `popcnt`, prints
//! `popcnt: survived` and exits with 0. On a KVM that emulates every guest
//! instruction and cannot emulate `popcnt`, the VM stops with a KVM internal
//! error instead; on real hardware it survives.
#![no_std]
#![no_main]

use strata_guest_rt::serial;

strata_guest_rt::entry!(main);

fn main(_cmdline: &[u8]) -> u8 {
    serial::write_str("popcnt: executing popcnt\n");
    let input: u64 = 0xf0f0;
    let count: u64;
    // SAFETY: `popcnt` only reads and writes the given registers (and flags).
    unsafe {
        core::arch::asm!("popcnt {}, {}", out(reg) count, in(reg) input, options(nomem, nostack));
    }
    // The program can only continue if `popcnt` ran; use its result so that
    // it cannot be considered dead.
    if count == 8 {
        serial::write_str("popcnt: survived\n");
    } else {
        serial::write_str("popcnt: survived, but counted ");
        serial::write_u64(count);
        serial::write_str(" bits instead of 8\n");
    }
    0
}
