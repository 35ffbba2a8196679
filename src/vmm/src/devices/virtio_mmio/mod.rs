//! The virtio-mmio transport, virtio 1.x ("modern", register layout version 2).
//!
//! The transport owns the registers the driver programs (status, feature
//! words, queue addresses) and hands a [`VirtioDevice`] the negotiated
//! features and queue layout once the driver sets `DRIVER_OK`. Every value
//! the driver writes is untrusted: bad queue sizes, unaligned or out-of-RAM
//! ring addresses and features the device never offered are refused, and the
//! device is marked `DEVICE_NEEDS_RESET` rather than started.
//!
//! Linux finds such a device from its command line:
//! `virtio_mmio.device=<size>@<base>:<irq>` ([`VirtioMmio::cmdline_word`]).

mod registers;
#[cfg(test)]
mod tests;

use registers::*;
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::MmioDevice;
use crate::memory::GuestMemoryMmap;

/// Bytes of MMIO space each virtio-mmio device occupies.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// Offset of the queue-notify register, where an ioeventfd can catch kicks.
pub const QUEUE_NOTIFY_OFFSET: u64 = REG_QUEUE_NOTIFY;
/// `VIRTIO_F_VERSION_1`: the modern interface, required by this transport.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// Device status bits (virtio 1.x §2.1).
pub mod status {
    /// The guest found the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u32 = 2;
    /// The driver is ready: the device may run.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    /// The driver gave up on the device.
    pub const FAILED: u32 = 0x80;
}

/// One virtqueue as the driver laid it out (split ring).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueLayout {
    /// Entries the device allows.
    pub max_size: u16,
    /// Entries the driver chose.
    pub size: u16,
    /// The driver enabled this queue.
    pub ready: bool,
    /// Guest address of the descriptor table.
    pub desc: u64,
    /// Guest address of the available ("driver") ring.
    pub avail: u64,
    /// Guest address of the used ("device") ring.
    pub used: u64,
}

impl QueueLayout {
    /// Checks the layout against the rules of a split virtqueue and against
    /// guest RAM. `Err` names the first problem.
    pub fn validate(&self, memory: &GuestMemoryMmap) -> Result<(), String> {
        let size = u64::from(self.size);
        if self.size == 0 || self.size > self.max_size || !self.size.is_power_of_two() {
            return Err(format!(
                "queue size {} is not a power of two from 1 to {}",
                self.size, self.max_size
            ));
        }
        let parts = [
            ("descriptor table", self.desc, 16, 16 * size),
            ("available ring", self.avail, 2, 6 + 2 * size),
            ("used ring", self.used, 4, 6 + 8 * size),
        ];
        for (name, addr, align, len) in parts {
            if addr % align != 0 {
                return Err(format!("{name} at {addr:#x} is not {align}-byte aligned"));
            }
            // One host mapping must hold the whole ring: the backend gets a
            // single host address for it.
            let contiguous =
                memory
                    .to_region_addr(GuestAddress(addr))
                    .is_some_and(|(region, offset)| {
                        offset
                            .checked_add(len)
                            .is_some_and(|end| end.raw_value() <= region.len())
                    });
            if !contiguous {
                return Err(format!(
                    "{name} at {addr:#x}+{len:#x} is not inside one region of guest RAM"
                ));
            }
        }
        Ok(())
    }
}

/// What a device behind the transport provides.
pub trait VirtioDevice: Send {
    /// The virtio device id (2 for a block device).
    fn device_type(&self) -> u32;
    /// Feature bits offered to the driver; must include [`VIRTIO_F_VERSION_1`].
    fn features(&self) -> u64;
    /// Largest size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> Vec<u16>;
    /// Reads the device-specific configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device-specific configuration space.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Starts the device with the negotiated `features` and the driver's
    /// queues, every one of which passed [`QueueLayout::validate`] if ready.
    fn activate(&mut self, features: u64, queues: &[QueueLayout]) -> Result<(), String>;
    /// Stops the device after the driver reset it.
    fn reset(&mut self);
    /// Kicks queue `index` for a notify that did not match an ioeventfd.
    fn notify(&mut self, index: u16);
}

/// A virtio device on the virtio-mmio transport.
pub struct VirtioMmio<D> {
    device: D,
    memory: GuestMemoryMmap,
    name: String,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: Vec<QueueLayout>,
    active: bool,
}

impl<D: VirtioDevice> VirtioMmio<D> {
    /// Wraps `device`; `name` labels log lines about it.
    pub fn new(device: D, memory: GuestMemoryMmap, name: String) -> Self {
        let queues = device
            .queue_max_sizes()
            .into_iter()
            .map(|max_size| QueueLayout {
                max_size,
                ..QueueLayout::default()
            })
            .collect();
        Self {
            device,
            memory,
            name,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            queues,
            active: false,
        }
    }

    /// The kernel command-line word that announces a device at `base` with
    /// interrupt `irq`, in the form Linux's virtio-mmio driver parses.
    pub fn cmdline_word(base: u64, irq: u32) -> String {
        format!(
            "virtio_mmio.device={}K@{base:#x}:{irq}",
            VIRTIO_MMIO_SIZE >> 10
        )
    }

    /// The device behind the transport.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The device behind the transport, for changes outside guest accesses
    /// (a backend reconnecting).
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// The driver's status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// The negotiated features and queues, if the device is running.
    pub fn active_state(&self) -> Option<(u64, &[QueueLayout])> {
        self.active
            .then_some((self.driver_features, &self.queues[..]))
    }

    fn selected_queue(&mut self) -> Option<&mut QueueLayout> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn read_register(&self, offset: u64) -> u32 {
        let queue = self.queues.get(self.queue_sel as usize);
        match offset {
            REG_MAGIC => MAGIC_VALUE,
            REG_VERSION => MMIO_VERSION,
            REG_DEVICE_ID => self.device.device_type(),
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            REG_QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size)),
            REG_QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready)),
            // Completions come from the backend straight through an irqfd,
            // so the transport cannot tell them apart: report "used buffer"
            // always, and drivers check their rings on every interrupt.
            REG_INTERRUPT_STATUS => INTERRUPT_USED_BUFFER,
            REG_STATUS => self.status,
            REG_CONFIG_GENERATION => 0,
            _ => 0,
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        // Queue and feature registers are frozen once the device runs.
        let configuring = !self.active && self.status & status::FEATURES_OK == 0;
        let queues_writable = !self.active;
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            REG_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            REG_DRIVER_FEATURES if configuring => match self.driver_features_sel {
                0 => {
                    self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(value)
                }
                1 => {
                    self.driver_features =
                        (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
                }
                _ => {}
            },
            REG_QUEUE_SEL => self.queue_sel = value,
            REG_QUEUE_NUM if queues_writable => {
                if let Some(q) = self.selected_queue() {
                    // Out-of-range sizes become 0, which validation refuses.
                    q.size = u16::try_from(value).unwrap_or(0);
                }
            }
            REG_QUEUE_READY if queues_writable => {
                if let Some(q) = self.selected_queue() {
                    q.ready = value == 1;
                }
            }
            REG_QUEUE_DESC_LOW..=REG_QUEUE_USED_HIGH if queues_writable => {
                self.set_queue_address(offset, value)
            }
            REG_QUEUE_NOTIFY => {
                if self.active {
                    self.device.notify(value as u16);
                }
            }
            REG_INTERRUPT_ACK => {}
            REG_STATUS => self.set_status(value),
            _ => log::debug!(
                "{}: write {value:#x} to register {offset:#x} ignored",
                self.name
            ),
        }
    }

    fn set_queue_address(&mut self, offset: u64, value: u32) {
        let Some(q) = self.selected_queue() else {
            return;
        };
        let (field, high) = match offset {
            REG_QUEUE_DESC_LOW => (&mut q.desc, false),
            REG_QUEUE_DESC_HIGH => (&mut q.desc, true),
            REG_QUEUE_AVAIL_LOW => (&mut q.avail, false),
            REG_QUEUE_AVAIL_HIGH => (&mut q.avail, true),
            REG_QUEUE_USED_LOW => (&mut q.used, false),
            REG_QUEUE_USED_HIGH => (&mut q.used, true),
            _ => return,
        };
        *field = if high {
            (*field & 0xffff_ffff) | (u64::from(value) << 32)
        } else {
            (*field & !0xffff_ffff) | u64::from(value)
        };
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        let added = value & !self.status;
        let mut value = value;
        if added & status::FEATURES_OK != 0 {
            let offered = self.device.features();
            let unknown = self.driver_features & !offered;
            if unknown != 0 || self.driver_features & VIRTIO_F_VERSION_1 == 0 {
                log::warn!(
                    "{}: driver features {:#x} refused (not offered: {unknown:#x}; VERSION_1 is required)",
                    self.name,
                    self.driver_features
                );
                value &= !status::FEATURES_OK;
            }
        }
        if added & status::DRIVER_OK != 0 && !self.active {
            if value & status::FEATURES_OK == 0 {
                log::warn!("{}: DRIVER_OK without FEATURES_OK", self.name);
                value |= status::DEVICE_NEEDS_RESET;
            } else if let Err(why) = self.activate() {
                log::warn!("{}: cannot start the device: {why}", self.name);
                // Stop whatever part of the device did start.
                self.device.reset();
                value |= status::DEVICE_NEEDS_RESET;
            }
        }
        self.status = value;
    }

    fn activate(&mut self) -> Result<(), String> {
        for (index, queue) in self.queues.iter().enumerate() {
            if queue.ready {
                queue
                    .validate(&self.memory)
                    .map_err(|why| format!("queue {index}: {why}"))?;
            }
        }
        if !self.queues.iter().any(|q| q.ready) {
            return Err("the driver enabled no queue".into());
        }
        self.device.activate(self.driver_features, &self.queues)?;
        self.active = true;
        Ok(())
    }

    fn reset(&mut self) {
        if self.active {
            self.device.reset();
        }
        self.active = false;
        self.status = 0;
        self.driver_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        for q in &mut self.queues {
            *q = QueueLayout {
                max_size: q.max_size,
                ..QueueLayout::default()
            };
        }
    }
}

impl<D: VirtioDevice> MmioDevice for VirtioMmio<D> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            self.device.read_config(offset - CONFIG_SPACE_OFFSET, data);
            return;
        }
        if data.len() != 4 || offset % 4 != 0 {
            log::debug!(
                "{}: {}-byte read at {offset:#x} refused",
                self.name,
                data.len()
            );
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_register(offset).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            self.device.write_config(offset - CONFIG_SPACE_OFFSET, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            log::debug!(
                "{}: {}-byte write at {offset:#x} ignored",
                self.name,
                data.len()
            );
            return;
        };
        if offset % 4 != 0 {
            return;
        }
        self.write_register(offset, u32::from_le_bytes(bytes));
    }
}
