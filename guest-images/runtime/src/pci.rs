//! PCI configuration space of bus 0 through the legacy ports 0xCF8/0xCFC
//! (configuration mechanism #1), and the memory BARs of a function.
//!
//! ```text
//!   0xCF8  CONFIG_ADDRESS  bit 31 enable | bus 23:16 | device 15:11 | function 10:8 | register 7:2
//!   0xCFC  CONFIG_DATA     the addressed dword (bytes at 0xCFC..0xCFF)
//! ```
//!
//! Every port access is a VM exit, so the scan is frugal: one probe of
//! CONFIG_ADDRESS tells whether there is a PCI host at all (a VMM without
//! PCI, such as Strata, answers all ones), then one dword per slot.

use crate::io::{inb, inl, inw, outl, outw};

const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;
const ENABLE: u32 = 1 << 31;

/// Configuration-space offsets (type 0 header).
const VENDOR_ID: u8 = 0x00;
const COMMAND: u8 = 0x04;
const STATUS: u8 = 0x06;
const HEADER_TYPE: u8 = 0x0e;
const BAR0: u8 = 0x10;
const CAPABILITIES_POINTER: u8 = 0x34;

/// COMMAND: respond to memory-space accesses.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// COMMAND: the device may master the bus (DMA).
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// STATUS: the capability list is valid.
const STATUS_CAPABILITIES: u16 = 1 << 4;
/// HEADER_TYPE: the device has functions 1-7 too.
const HEADER_MULTIFUNCTION: u8 = 1 << 7;
/// HEADER_TYPE without the multifunction bit: an ordinary device.
const HEADER_TYPE_DEVICE: u8 = 0;

/// Most capabilities followed, so that a looping list cannot hang the guest
/// (a 256-byte space holds at most 48 four-byte-aligned ones past 0x40).
const MAX_CAPABILITIES: usize = 48;

/// A function on bus 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciFunction {
    device: u8,
    function: u8,
}

/// A memory BAR, as the firmware (or VMM) programmed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryBar {
    /// Guest-physical base address.
    pub base: u64,
    /// Size in bytes (a power of two).
    pub size: u64,
}

/// Why a BAR cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarError {
    /// There is no BAR with that index, or it decodes I/O ports.
    NotMemory,
    /// The BAR is not implemented (reads back no size bits).
    Unimplemented,
    /// The BAR has not been given an address.
    Unassigned,
}

/// Tells whether configuration mechanism #1 answers at all.
pub fn host_present() -> bool {
    outl(CONFIG_ADDRESS, ENABLE);
    inl(CONFIG_ADDRESS) == ENABLE
}

/// Calls `visit` with every function on bus 0 and its vendor and device id,
/// until `visit` returns `Some`, and returns that. Returns `None` at once if
/// there is no PCI host.
pub fn find_on_bus0<T>(mut visit: impl FnMut(PciFunction, u16, u16) -> Option<T>) -> Option<T> {
    if !host_present() {
        return None;
    }
    for device in 0..32 {
        let mut function = PciFunction {
            device,
            function: 0,
        };
        while function.function < 8 {
            let ids = function.read32(VENDOR_ID);
            let vendor = ids as u16;
            if vendor != 0xffff && vendor != 0 {
                if let Some(found) = visit(function, vendor, (ids >> 16) as u16) {
                    return Some(found);
                }
            }
            let single = function.function == 0
                && (vendor == 0xffff || function.read8(HEADER_TYPE) & HEADER_MULTIFUNCTION == 0);
            if single {
                break;
            }
            function.function += 1;
        }
    }
    None
}

impl PciFunction {
    fn select(self, offset: u8) {
        let address = ENABLE
            | (u32::from(self.device) << 11)
            | (u32::from(self.function) << 8)
            | u32::from(offset & 0xfc);
        outl(CONFIG_ADDRESS, address);
    }

    /// Reads the dword at `offset` (rounded down to a multiple of 4).
    pub fn read32(self, offset: u8) -> u32 {
        self.select(offset);
        inl(CONFIG_DATA)
    }

    /// Reads the word at `offset` (rounded down to a multiple of 2).
    pub fn read16(self, offset: u8) -> u16 {
        self.select(offset);
        inw(CONFIG_DATA + u16::from(offset & 2))
    }

    /// Reads the byte at `offset`.
    pub fn read8(self, offset: u8) -> u8 {
        self.select(offset);
        inb(CONFIG_DATA + u16::from(offset & 3))
    }

    /// Writes the dword at `offset` (rounded down to a multiple of 4).
    pub fn write32(self, offset: u8, value: u32) {
        self.select(offset);
        outl(CONFIG_DATA, value);
    }

    /// Writes the word at `offset` (rounded down to a multiple of 2).
    pub fn write16(self, offset: u8, value: u16) {
        self.select(offset);
        outw(CONFIG_DATA + u16::from(offset & 2), value);
    }

    /// Tells whether this is an ordinary device (header type 0), not a bridge.
    pub fn is_device(self) -> bool {
        self.read8(HEADER_TYPE) & !HEADER_MULTIFUNCTION == HEADER_TYPE_DEVICE
    }

    /// The COMMAND register.
    pub fn command(self) -> u16 {
        self.read16(COMMAND)
    }

    /// Sets bits in the COMMAND register.
    pub fn enable(self, bits: u16) {
        self.write16(COMMAND, self.command() | bits);
    }

    /// Offset of the first capability, if the function has a list.
    fn first_capability(self) -> Option<u8> {
        if self.read16(STATUS) & STATUS_CAPABILITIES == 0 {
            return None;
        }
        Some(self.read8(CAPABILITIES_POINTER) & 0xfc)
    }

    /// Calls `visit` with the offset and the first dword (id in bits 7:0,
    /// next pointer in 15:8) of each capability, until it returns `Some`.
    /// Pointers into the standard header or past the end stop the walk.
    pub fn find_capability<T>(self, mut visit: impl FnMut(u8, u32) -> Option<T>) -> Option<T> {
        let mut at = self.first_capability()?;
        for _ in 0..MAX_CAPABILITIES {
            if at < 0x40 {
                return None;
            }
            let header = self.read32(at);
            if let Some(found) = visit(at, header) {
                return Some(found);
            }
            at = (header >> 8) as u8 & 0xfc;
        }
        None
    }

    /// Reads and sizes memory BAR `index` (0-5; a 64-bit BAR uses `index`
    /// and `index + 1`). Memory decoding is off while the BAR is sized, then
    /// restored.
    pub fn memory_bar(self, index: u8) -> Result<MemoryBar, BarError> {
        if index > 5 {
            return Err(BarError::NotMemory);
        }
        let offset = BAR0 + 4 * index;
        let low = self.read32(offset);
        if low & 1 != 0 {
            return Err(BarError::NotMemory);
        }
        let is_64 = (low >> 1) & 3 == 2;
        if is_64 && index == 5 {
            return Err(BarError::NotMemory);
        }
        let high = if is_64 { self.read32(offset + 4) } else { 0 };

        let command = self.command();
        self.write16(COMMAND, command & !COMMAND_MEMORY);
        self.write32(offset, u32::MAX);
        let size_low = self.read32(offset);
        self.write32(offset, low);
        let size_high = if is_64 {
            self.write32(offset + 4, u32::MAX);
            let size_high = self.read32(offset + 4);
            self.write32(offset + 4, high);
            size_high
        } else {
            u32::MAX
        };
        self.write16(COMMAND, command);

        let mask = (u64::from(size_high) << 32) | u64::from(size_low & !0xf);
        let implemented = if is_64 {
            mask != 0
        } else {
            size_low & !0xf != 0
        };
        if !implemented {
            return Err(BarError::Unimplemented);
        }
        let size = (!mask).wrapping_add(1);
        let base = (u64::from(high) << 32) | u64::from(low & !0xf);
        if base == 0 {
            return Err(BarError::Unassigned);
        }
        Ok(MemoryBar { base, size })
    }
}
