//! The virtio-mmio transport, version 2 (virtio 1.2, 4.2.2), at an address
//! given by a `virtio_mmio.device=` command-line word.
//!
//! ```text
//!   0x000 MagicValue "virt"   0x030 QueueSel        0x080 QueueDescLow/High
//!   0x004 Version (2)         0x034 QueueNumMax     0x090 QueueDriverLow/High
//!   0x008 DeviceID            0x038 QueueNum        0x0a0 QueueDeviceLow/High
//!   0x010 DeviceFeatures      0x044 QueueReady      0x0fc ConfigGeneration
//!   0x014 DeviceFeaturesSel   0x050 QueueNotify     0x100 device configuration
//!   0x020 DriverFeatures      0x070 Status
//!   0x024 DriverFeaturesSel
//! ```

use strata_guest_abi::virtio_mmio::DeviceWord;

use super::queue::RingAddresses;
use super::{Registers, VirtioError};
use crate::paging;

const MAGIC_VALUE: u64 = 0x000;
const VERSION: u64 = 0x004;
const DEVICE_ID: u64 = 0x008;
const DEVICE_FEATURES: u64 = 0x010;
const DEVICE_FEATURES_SEL: u64 = 0x014;
const DRIVER_FEATURES: u64 = 0x020;
const DRIVER_FEATURES_SEL: u64 = 0x024;
const QUEUE_SEL: u64 = 0x030;
const QUEUE_NUM_MAX: u64 = 0x034;
const QUEUE_NUM: u64 = 0x038;
const QUEUE_READY: u64 = 0x044;
const QUEUE_NOTIFY: u64 = 0x050;
const STATUS: u64 = 0x070;
const QUEUE_DESC: u64 = 0x080;
const QUEUE_DRIVER: u64 = 0x090;
const QUEUE_DEVICE: u64 = 0x0a0;
const CONFIG_GENERATION: u64 = 0x0fc;
const CONFIG: u64 = 0x100;

/// "virt", little-endian.
const MAGIC: u32 = 0x7472_6976;
/// The modern register layout.
const MODERN_VERSION: u32 = 2;
/// The legacy register layout (QEMU's default, `force-legacy=on`).
const LEGACY_VERSION: u32 = 1;

/// A virtio-mmio device.
pub(super) struct MmioTransport {
    registers: Registers,
}

impl MmioTransport {
    /// Looks at the window `word` names: `Ok(None)` if it holds a device of
    /// another type (or the placeholder type 0), the transport if it holds a
    /// device of type `device_id`.
    pub(super) fn probe(
        word: &DeviceWord,
        device_id: u32,
    ) -> Result<Option<MmioTransport>, VirtioError> {
        // The window must hold the registers and start on a dword.
        if word.size < CONFIG || word.base % 4 != 0 {
            return Err(VirtioError::BadMmioWord);
        }
        let mapped =
            paging::map_device(word.base, word.size).map_err(|_| VirtioError::Unmappable)?;
        // SAFETY: the VMM's command line says the window holds a device's
        // registers, and it is now mapped at `mapped`; `DeviceWord::parse`
        // checked that it does not wrap around.
        let registers = unsafe { Registers::new(mapped, word.size) };
        if registers.read32(MAGIC_VALUE) != MAGIC {
            return Err(VirtioError::BadMagic);
        }
        let id = registers.read32(DEVICE_ID);
        if id != device_id {
            return Ok(None);
        }
        match registers.read32(VERSION) {
            MODERN_VERSION => Ok(Some(MmioTransport { registers })),
            LEGACY_VERSION => Err(VirtioError::LegacyMmio),
            _ => Err(VirtioError::BadVersion),
        }
    }

    pub(super) fn status(&self) -> u8 {
        self.registers.read32(STATUS) as u8
    }

    pub(super) fn set_status(&self, status: u8) {
        self.registers.write32(STATUS, u32::from(status));
    }

    pub(super) fn device_features(&self) -> u64 {
        self.registers.write32(DEVICE_FEATURES_SEL, 0);
        let low = self.registers.read32(DEVICE_FEATURES);
        self.registers.write32(DEVICE_FEATURES_SEL, 1);
        let high = self.registers.read32(DEVICE_FEATURES);
        (u64::from(high) << 32) | u64::from(low)
    }

    pub(super) fn set_driver_features(&self, features: u64) {
        self.registers.write32(DRIVER_FEATURES_SEL, 0);
        self.registers.write32(DRIVER_FEATURES, features as u32);
        self.registers.write32(DRIVER_FEATURES_SEL, 1);
        self.registers
            .write32(DRIVER_FEATURES, (features >> 32) as u32);
    }

    pub(super) fn queue_max_size(&self, index: u16) -> u16 {
        self.registers.write32(QUEUE_SEL, u32::from(index));
        if self.registers.read32(QUEUE_READY) != 0 {
            return 0;
        }
        u16::try_from(self.registers.read32(QUEUE_NUM_MAX)).unwrap_or(u16::MAX)
    }

    pub(super) fn setup_queue(
        &mut self,
        index: u16,
        size: u16,
        rings: RingAddresses,
    ) -> Result<(), VirtioError> {
        let r = &self.registers;
        r.write32(QUEUE_SEL, u32::from(index));
        r.write32(QUEUE_NUM, u32::from(size));
        r.write64(QUEUE_DESC, rings.descriptors);
        r.write64(QUEUE_DRIVER, rings.available);
        r.write64(QUEUE_DEVICE, rings.used);
        r.write32(QUEUE_READY, 1);
        if r.read32(QUEUE_READY) != 1 {
            return Err(VirtioError::BadQueue);
        }
        Ok(())
    }

    pub(super) fn notify(&self, index: u16) {
        self.registers.write32(QUEUE_NOTIFY, u32::from(index));
    }

    pub(super) fn config_generation(&self) -> u32 {
        self.registers.read32(CONFIG_GENERATION)
    }

    pub(super) fn config_read32(&self, offset: u64) -> Option<u32> {
        let at = CONFIG.checked_add(offset)?;
        (at.checked_add(4)? <= self.registers.len).then(|| self.registers.read32(at))
    }
}
