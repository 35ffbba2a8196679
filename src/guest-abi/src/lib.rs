//! The guest/host ABI of Strata: everything a guest and the VMM must agree on.
//!
//! Both sides depend on this crate: the VMM (`strata-vmm`) when it wires up
//! devices and writes boot structures, and the bare-metal guest runtime in
//! `guest-images/` when it talks to those devices. It is `no_std` and has no
//! dependencies so that the guest can use it as it is.
//!
//! The port numbers follow the PC conventions QEMU uses, so one guest image
//! runs unchanged under Strata and under `qemu-system-x86_64`.
#![no_std]

pub mod blkcheck;
pub mod pvh;
pub mod virtio_mmio;

/// I/O port base of the first 16550 UART (COM1). Eight registers follow it.
pub const SERIAL_COM1_PORT: u16 = 0x3f8;
/// Number of I/O ports the 16550 UART decodes.
pub const SERIAL_PORT_COUNT: u16 = 8;
/// ISA IRQ line of COM1.
pub const SERIAL_COM1_IRQ: u32 = 4;

/// I/O port of the `isa-debug-exit` device, at QEMU's conventional base.
///
/// A guest ends the VM by writing a byte `code` here. Strata exits with
/// `code` itself; QEMU (`-device isa-debug-exit,iobase=0xf4,iosize=4`) exits
/// with `(code << 1) | 1`. See [`qemu_exit_status`].
pub const DEBUG_EXIT_PORT: u16 = 0xf4;
/// Number of I/O ports the debug-exit device decodes (QEMU's `iosize=4`).
pub const DEBUG_EXIT_PORT_COUNT: u16 = 4;

/// Exit status QEMU's `isa-debug-exit` gives for a guest exit `code`.
pub const fn qemu_exit_status(code: u8) -> i32 {
    ((code as i32) << 1) | 1
}

/// Exit codes the guest images in this repository use by convention.
pub mod exit_code {
    /// The guest finished what it was asked to do.
    pub const SUCCESS: u8 = 0;
    /// The guest panicked.
    pub const PANIC: u8 = 101;
    /// The guest was started without valid PVH boot information.
    pub const BAD_BOOT_INFO: u8 = 102;

    // The codes of the device-testing images (`blkcheck`). All stay below
    // 128, so that QEMU's `(code << 1) | 1` still fits an exit status.

    /// No device of the kind the guest looks for was found.
    pub const NO_DEVICE: u8 = 110;
    /// The device misbehaved or failed a request it should have served
    /// (bad registers, refused features, a timeout, an error status).
    pub const DEVICE_ERROR: u8 = 111;
    /// The device worked, but not as expected: data read back differs from
    /// what was written, or a read-only disk accepted a write.
    pub const MISMATCH: u8 = 112;
    /// The guest's command line is malformed or asks for the impossible
    /// (a range past the end of the disk, a write to a read-only disk).
    pub const BAD_ARGS: u8 = 113;
}

#[cfg(test)]
mod tests {
    use crate::exit_code::*;

    #[test]
    fn exit_codes_are_distinct_and_fit_a_qemu_status() {
        let codes = [
            SUCCESS,
            PANIC,
            BAD_BOOT_INFO,
            NO_DEVICE,
            DEVICE_ERROR,
            MISMATCH,
            BAD_ARGS,
        ];
        for (i, code) in codes.iter().enumerate() {
            assert!(crate::qemu_exit_status(*code) < 256);
            assert!(codes[i + 1..].iter().all(|other| other != code));
        }
    }
}
