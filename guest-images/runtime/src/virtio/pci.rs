//! The modern virtio-pci transport (virtio 1.2, 4.1).
//!
//! The device's registers are in memory BARs, located by vendor-specific
//! capabilities (id 0x09) in its configuration space:
//!
//! ```text
//!   capability: +0 id 0x09 | +1 next | +2 length | +3 cfg_type
//!               +4 bar | +8 offset (u32) | +12 length (u32) | +16 notify_off_multiplier
//!   cfg_type 1 COMMON_CFG   feature bits, status, queue setup (below)
//!            2 NOTIFY_CFG   queue q is notified at offset + queue_notify_off(q) * multiplier
//!            3 ISR_CFG      not needed: completions are polled
//!            4 DEVICE_CFG   the device-type configuration (virtio-blk: capacity, ...)
//!
//!   COMMON_CFG: 0x00 device_feature_select  0x14 device_status  0x1c queue_enable
//!               0x04 device_feature         0x15 config_generation 0x1e queue_notify_off
//!               0x08 driver_feature_select  0x16 queue_select   0x20 queue_desc
//!               0x0c driver_feature         0x18 queue_size     0x28 queue_driver
//!               0x12 num_queues             0x1a queue_msix_vector 0x30 queue_device
//! ```

use super::queue::RingAddresses;
use super::{Registers, VirtioError};
use crate::paging;
use crate::pci::{COMMAND_BUS_MASTER, COMMAND_MEMORY, MemoryBar, PciFunction, find_on_bus0};

/// Red Hat's vendor id, used by every virtio-pci device.
const VENDOR_VIRTIO: u16 = 0x1af4;
/// Capability id of the virtio structures.
const CAP_VENDOR_SPECIFIC: u8 = 0x09;
/// Length of a virtio capability, and of the notify one.
const CAP_LEN: u8 = 16;
const NOTIFY_CAP_LEN: u8 = 20;

const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
const CFG_DEVICE: u8 = 4;

const DEVICE_FEATURE_SELECT: u64 = 0x00;
const DEVICE_FEATURE: u64 = 0x04;
const DRIVER_FEATURE_SELECT: u64 = 0x08;
const DRIVER_FEATURE: u64 = 0x0c;
const NUM_QUEUES: u64 = 0x12;
const DEVICE_STATUS: u64 = 0x14;
const CONFIG_GENERATION: u64 = 0x15;
const QUEUE_SELECT: u64 = 0x16;
const QUEUE_SIZE: u64 = 0x18;
const QUEUE_MSIX_VECTOR: u64 = 0x1a;
const QUEUE_ENABLE: u64 = 0x1c;
const QUEUE_NOTIFY_OFF: u64 = 0x1e;
const QUEUE_DESC: u64 = 0x20;
const QUEUE_DRIVER: u64 = 0x28;
const QUEUE_DEVICE: u64 = 0x30;
/// Length of the common configuration structure.
const COMMON_LEN: u64 = 0x38;
/// `queue_msix_vector` value for "no interrupt".
const NO_VECTOR: u16 = 0xffff;

/// Where a capability says a structure is.
#[derive(Clone, Copy)]
struct Region {
    bar: u8,
    offset: u32,
    length: u32,
}

/// A modern virtio-pci device.
pub(super) struct PciTransport {
    common: Registers,
    notify: Registers,
    notify_multiplier: u32,
    device: Registers,
    /// Offset in `notify` of queue 0's doorbell, once it is set up.
    queue_notify_offset: u64,
}

/// Finds the first function on bus 0 with the virtio vendor id and one of
/// `device_ids` that has the modern capabilities. `Ok(None)` if there is no
/// such function; the first function's error if none could be used.
pub(super) fn find(device_ids: &[u16]) -> Result<Option<PciTransport>, VirtioError> {
    let mut first_error = None;
    let found = find_on_bus0(|function, vendor, device| {
        if vendor != VENDOR_VIRTIO || !device_ids.contains(&device) || !function.is_device() {
            return None;
        }
        match PciTransport::probe(function) {
            Ok(transport) => Some(transport),
            Err(error) => {
                first_error.get_or_insert(error);
                None
            }
        }
    });
    match (found, first_error) {
        (Some(transport), _) => Ok(Some(transport)),
        (None, Some(error)) => Err(error),
        (None, None) => Ok(None),
    }
}

/// Reads the capabilities of `function`: (common, notify, notify multiplier,
/// device), each the first of its type.
fn capabilities(function: PciFunction) -> Result<(Region, Region, u32, Region), VirtioError> {
    let (mut common, mut notify, mut device) = (None, None, None);
    function.find_capability(|at, header| {
        let cap_len = (header >> 16) as u8;
        let cfg_type = (header >> 24) as u8;
        if header as u8 != CAP_VENDOR_SPECIFIC
            || cap_len < CAP_LEN
            || usize::from(at) + usize::from(cap_len) > 256
        {
            return None::<()>;
        }
        let region = Region {
            bar: function.read32(at + 4) as u8,
            offset: function.read32(at + 8),
            length: function.read32(at + 12),
        };
        match cfg_type {
            CFG_COMMON if common.is_none() => common = Some(region),
            CFG_NOTIFY if notify.is_none() && cap_len >= NOTIFY_CAP_LEN => {
                notify = Some((region, function.read32(at + 16)));
            }
            CFG_DEVICE if device.is_none() => device = Some(region),
            _ => {}
        }
        None
    });
    match (common, notify, device) {
        (Some(common), Some((notify, multiplier)), Some(device)) => {
            Ok((common, notify, multiplier, device))
        }
        _ => Err(VirtioError::MissingCapability),
    }
}

/// The function's memory BARs, each sized once.
struct Bars {
    function: PciFunction,
    sized: [Option<MemoryBar>; 6],
}

impl Bars {
    /// Maps `region` and returns its registers; it must lie inside its BAR
    /// and be at least `min_len` bytes long.
    fn registers(&mut self, region: Region, min_len: u64) -> Result<Registers, VirtioError> {
        let slot = self
            .sized
            .get_mut(usize::from(region.bar))
            .ok_or(VirtioError::BadCapability)?;
        let bar = match slot {
            Some(bar) => *bar,
            None => *slot.insert(
                self.function
                    .memory_bar(region.bar)
                    .map_err(|_| VirtioError::BadCapability)?,
            ),
        };
        let (offset, length) = (u64::from(region.offset), u64::from(region.length));
        let inside = offset
            .checked_add(length)
            .is_some_and(|end| end <= bar.size);
        if !inside || length < min_len {
            return Err(VirtioError::BadCapability);
        }
        let base = bar
            .base
            .checked_add(offset)
            .ok_or(VirtioError::BadCapability)?;
        let mapped = paging::map_device(base, length).map_err(|_| VirtioError::Unmappable)?;
        // SAFETY: the range lies inside a memory BAR the firmware or VMM
        // assigned to this device (so not RAM), and is now mapped there.
        Ok(unsafe { Registers::new(mapped, length) })
    }
}

impl PciTransport {
    fn probe(function: PciFunction) -> Result<PciTransport, VirtioError> {
        let (common, notify, notify_multiplier, device) = capabilities(function)?;
        let mut bars = Bars {
            function,
            sized: [None; 6],
        };
        let transport = PciTransport {
            common: bars.registers(common, COMMON_LEN)?,
            notify: bars.registers(notify, 2)?,
            notify_multiplier,
            device: bars.registers(device, 0)?,
            queue_notify_offset: 0,
        };
        // Sizing the BARs is done: let the device decode them and DMA.
        function.enable(COMMAND_MEMORY | COMMAND_BUS_MASTER);
        Ok(transport)
    }

    pub(super) fn status(&self) -> u8 {
        self.common.read8(DEVICE_STATUS)
    }

    pub(super) fn set_status(&self, status: u8) {
        self.common.write8(DEVICE_STATUS, status);
    }

    pub(super) fn device_features(&self) -> u64 {
        self.common.write32(DEVICE_FEATURE_SELECT, 0);
        let low = self.common.read32(DEVICE_FEATURE);
        self.common.write32(DEVICE_FEATURE_SELECT, 1);
        let high = self.common.read32(DEVICE_FEATURE);
        (u64::from(high) << 32) | u64::from(low)
    }

    pub(super) fn set_driver_features(&self, features: u64) {
        self.common.write32(DRIVER_FEATURE_SELECT, 0);
        self.common.write32(DRIVER_FEATURE, features as u32);
        self.common.write32(DRIVER_FEATURE_SELECT, 1);
        self.common.write32(DRIVER_FEATURE, (features >> 32) as u32);
    }

    pub(super) fn queue_max_size(&self, index: u16) -> u16 {
        if index >= self.common.read16(NUM_QUEUES) {
            return 0;
        }
        self.common.write16(QUEUE_SELECT, index);
        if self.common.read16(QUEUE_ENABLE) != 0 {
            return 0;
        }
        self.common.read16(QUEUE_SIZE)
    }

    pub(super) fn setup_queue(
        &mut self,
        index: u16,
        size: u16,
        rings: RingAddresses,
    ) -> Result<(), VirtioError> {
        let c = &self.common;
        c.write16(QUEUE_SELECT, index);
        c.write16(QUEUE_SIZE, size);
        c.write16(QUEUE_MSIX_VECTOR, NO_VECTOR);
        c.write64(QUEUE_DESC, rings.descriptors);
        c.write64(QUEUE_DRIVER, rings.available);
        c.write64(QUEUE_DEVICE, rings.used);
        let offset = u64::from(c.read16(QUEUE_NOTIFY_OFF)) * u64::from(self.notify_multiplier);
        let fits = offset
            .checked_add(2)
            .is_some_and(|end| end <= self.notify.len);
        if !fits || offset % 2 != 0 {
            return Err(VirtioError::BadCapability);
        }
        self.queue_notify_offset = offset;
        c.write16(QUEUE_ENABLE, 1);
        if c.read16(QUEUE_ENABLE) != 1 {
            return Err(VirtioError::BadQueue);
        }
        Ok(())
    }

    pub(super) fn notify(&self, index: u16) {
        self.notify.write16(self.queue_notify_offset, index);
    }

    pub(super) fn config_generation(&self) -> u8 {
        self.common.read8(CONFIG_GENERATION)
    }

    pub(super) fn config_read32(&self, offset: u64) -> Option<u32> {
        (offset.checked_add(4)? <= self.device.len).then(|| self.device.read32(offset))
    }
}
