//! x86 port I/O: the UART, the debug-exit port and PCI configuration space.

/// Writes `value` to I/O port `port`.
#[inline(always)]
pub(crate) fn outb(port: u16, value: u8) {
    // SAFETY: port writes touch no memory the compiler knows about. The ports
    // this runtime uses (UART, debug exit, PCI configuration) do not write
    // guest memory themselves; a device can only DMA into memory its driver
    // handed it, which the drivers here keep in their own statics.
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

/// Writes a 16-bit `value` to I/O port `port`.
#[inline(always)]
pub(crate) fn outw(port: u16, value: u16) {
    // SAFETY: as for `outb`.
    unsafe {
        core::arch::asm!("out dx, ax", in("dx") port, in("ax") value,
            options(nomem, nostack, preserves_flags));
    }
}

/// Reads 16 bits from I/O port `port`.
#[inline(always)]
pub(crate) fn inw(port: u16) -> u16 {
    let value: u16;
    // SAFETY: as for `outb`: a port read has no effect on guest memory.
    unsafe {
        core::arch::asm!("in ax, dx", in("dx") port, out("ax") value,
            options(nomem, nostack, preserves_flags));
    }
    value
}

/// Writes a 32-bit `value` to I/O port `port`.
#[inline(always)]
pub(crate) fn outl(port: u16, value: u32) {
    // SAFETY: as for `outb`.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") port, in("eax") value,
            options(nomem, nostack, preserves_flags));
    }
}

/// Reads 32 bits from I/O port `port`.
#[inline(always)]
pub(crate) fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: as for `outb`: a port read has no effect on guest memory.
    unsafe {
        core::arch::asm!("in eax, dx", in("dx") port, out("eax") value,
            options(nomem, nostack, preserves_flags));
    }
    value
}
