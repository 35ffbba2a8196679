//! Output on the first 16550 UART (COM1, [`SERIAL_COM1_PORT`]).
//!
//! Bytes are written exactly as given (no `\n` to `\r\n` translation).
//! There is deliberately no `core::fmt` support: its precompiled code uses
//! SSE. Print numbers with [`write_u64`] and [`write_hex_u64`].

use crate::io::{inb, outb};
use strata_guest_abi::SERIAL_COM1_PORT;

/// Interrupt enable register.
const IER: u16 = SERIAL_COM1_PORT + 1;
/// FIFO control register (write only).
const FCR: u16 = SERIAL_COM1_PORT + 2;
/// FCR value: enable the FIFOs and clear both of them.
const FCR_ENABLE_AND_CLEAR: u8 = 0x07;
/// Depth of the 16550A transmit FIFO: once THR reports empty, this many
/// bytes can be written without polling again.
const TX_FIFO_DEPTH: usize = 16;
/// Line control register.
const LCR: u16 = SERIAL_COM1_PORT + 3;
/// Line status register.
const LSR: u16 = SERIAL_COM1_PORT + 5;
/// LSR bit 5: the transmit holding register is empty.
const LSR_THR_EMPTY: u8 = 1 << 5;
/// LCR value for 8 data bits, no parity, one stop bit (and DLAB off).
const LCR_8N1: u8 = 0x03;
/// How often [`write_byte`] polls LSR before writing anyway, so that a
/// missing or stuck UART cannot hang the guest.
const MAX_POLLS: u32 = 10_000;

/// Minimal UART setup: interrupts off, 8N1, FIFOs on. The divisor (baud
/// rate) is left alone; emulated UARTs ignore it. Called by the runtime
/// before `main`.
pub(crate) fn init() {
    outb(LCR, LCR_8N1);
    outb(IER, 0);
    outb(FCR, FCR_ENABLE_AND_CLEAR);
}

/// Waits until the transmitter (and so its FIFO) is empty.
fn wait_for_empty_transmitter() {
    let mut polls = 0;
    while inb(LSR) & LSR_THR_EMPTY == 0 && polls < MAX_POLLS {
        polls += 1;
    }
}

/// Writes one byte, after waiting for the transmitter to be ready.
pub fn write_byte(byte: u8) {
    write_bytes(&[byte]);
}

/// Writes `bytes` as they are: a FIFO's worth after each wait for an empty
/// transmitter. Every port access is a VM exit, so this halves the exits
/// per byte compared with polling before each one.
pub fn write_bytes(bytes: &[u8]) {
    for chunk in bytes.chunks(TX_FIFO_DEPTH) {
        wait_for_empty_transmitter();
        for &byte in chunk {
            outb(SERIAL_COM1_PORT, byte);
        }
    }
}

/// Writes `s` as it is.
pub fn write_str(s: &str) {
    write_bytes(s.as_bytes());
}

/// Writes `value` in decimal.
pub fn write_u64(value: u64) {
    // u64::MAX has 20 decimal digits.
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut rest = value;
    for slot in digits.iter_mut().rev() {
        // `rest % 10` is below 10, so the cast and the addition cannot overflow.
        *slot = b'0' + (rest % 10) as u8;
        rest /= 10;
        start -= 1;
        if rest == 0 {
            break;
        }
    }
    write_bytes(digits.get(start..).unwrap_or_default());
}

/// Writes `value` as 16 lower-case hexadecimal digits, leading zeros included.
pub fn write_hex_u64(value: u64) {
    let mut digits = [0u8; 16];
    let mut rest = value;
    for slot in digits.iter_mut().rev() {
        // `rest & 0xf` is below 16, so it indexes the table.
        *slot = b"0123456789abcdef"[(rest & 0xf) as usize];
        rest >>= 4;
    }
    write_bytes(&digits);
}
