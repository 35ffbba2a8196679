//! `hello`: prints a banner and the command line, then exits.
//!
//! Output:
//!
//! ```text
//! Hello from a Strata guest!
//! cmdline: <the command line bytes as given>
//! ```
//!
//! Exits with 0, or with `N` if the command line has a word `exit=N`
//! (decimal, 0..=255). An invalid `N` is reported on a third line and
//! ignored. With the word `wait` it instead prints `hello: waiting` and
//! halts with interrupts disabled until the VMM is stopped (used to test
//! Ctrl-C and SIGTERM handling).
#![no_std]
#![no_main]

use strata_guest_rt::{cmdline, serial};

strata_guest_rt::entry!(main);

fn main(cmdline: &[u8]) -> u8 {
    serial::write_str("Hello from a Strata guest!\n");
    serial::write_str("cmdline: ");
    serial::write_bytes(cmdline);
    serial::write_str("\n");

    if cmdline::has_word(cmdline, b"wait") {
        serial::write_str("hello: waiting\n");
        strata_guest_rt::halt_forever();
    }

    match cmdline::find(cmdline, b"exit") {
        None => 0,
        Some(value) => cmdline::parse_u8(value).unwrap_or_else(|| {
            serial::write_str("hello: ignoring exit= value that is not a number in 0..=255\n");
            0
        }),
    }
}
