//! x86 port I/O, the only way the guests talk to devices.

/// Writes `value` to I/O port `port`.
#[inline(always)]
pub(crate) fn outb(port: u16, value: u8) {
    // SAFETY: port writes touch no memory the compiler knows about; the ports
    // this runtime uses (UART, debug exit) have no effect on guest memory.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") port, in("al") value,
            options(nomem, nostack, preserves_flags));
    }
}

/// Reads a byte from I/O port `port`.
#[inline(always)]
pub(crate) fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as for `outb`: a port read has no effect on guest memory.
    unsafe {
        core::arch::asm!("in al, dx", in("dx") port, out("al") value,
            options(nomem, nostack, preserves_flags));
    }
    value
}
