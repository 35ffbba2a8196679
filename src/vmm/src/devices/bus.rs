//! The address-range buses that route guest port I/O and MMIO to devices.
//!
//! A bus is built once before the vCPUs start and never changes, so vCPU
//! threads share it without a lock; each device has its own mutex, taken only
//! for the one access it serves.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// What a port write asks the vCPU loop to do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PioAction {
    /// Keep running the guest.
    Continue,
    /// The guest asked to end the VM with this exit code.
    GuestExit(u8),
}

/// A device reached through x86 I/O ports.
pub trait PioDevice: Send {
    /// Serves an `in` at `offset` from the device's base port.
    fn read(&mut self, offset: u16, data: &mut [u8]);
    /// Serves an `out` at `offset` from the device's base port.
    fn write(&mut self, offset: u16, data: &[u8]) -> PioAction;
}

/// A device reached through guest-physical memory addresses that are not RAM.
pub trait MmioDevice: Send {
    /// Serves a load of `data.len()` bytes at `offset` from the device's base.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Serves a store at `offset` from the device's base.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// An overlapping or empty address range was registered.
#[derive(Debug, thiserror::Error)]
#[error("{space} range {base:#x}+{len:#x} overlaps a device already on the bus")]
pub struct BusOverlap {
    space: &'static str,
    base: u64,
    len: u64,
}

struct Range<D: ?Sized> {
    base: u64,
    len: u64,
    device: Arc<Mutex<D>>,
}

/// Address ranges, each served by one device.
struct Ranges<D: ?Sized> {
    space: &'static str,
    ranges: Vec<Range<D>>,
}

impl<D: ?Sized> Ranges<D> {
    fn new(space: &'static str) -> Self {
        Self {
            space,
            ranges: Vec::new(),
        }
    }

    fn insert(&mut self, base: u64, len: u64, device: Arc<Mutex<D>>) -> Result<(), BusOverlap> {
        let overlap = BusOverlap {
            space: self.space,
            base,
            len,
        };
        let end = base.checked_add(len).ok_or(BusOverlap { ..overlap })?;
        let overlaps = self
            .ranges
            .iter()
            .any(|r| base < r.base + r.len && r.base < end);
        if overlaps || len == 0 {
            return Err(overlap);
        }
        self.ranges.push(Range { base, len, device });
        Ok(())
    }

    /// The device serving `addr` and the offset of `addr` within its range.
    fn find(&self, addr: u64) -> Option<(MutexGuard<'_, D>, u64)> {
        self.ranges
            .iter()
            .find(|r| addr >= r.base && addr - r.base < r.len)
            // Device state is plain registers, valid after any partial
            // update, so a lock poisoned by a panicking vCPU is still usable.
            .map(|r| {
                let guard = r.device.lock().unwrap_or_else(PoisonError::into_inner);
                (guard, addr - r.base)
            })
    }
}

/// The port-I/O bus.
pub struct PioBus(Ranges<dyn PioDevice>);

impl Default for PioBus {
    fn default() -> Self {
        Self(Ranges::new("I/O port"))
    }
}

impl PioBus {
    /// Places `device` at ports `[base, base + len)`.
    pub fn insert(
        &mut self,
        base: u16,
        len: u16,
        device: Arc<Mutex<dyn PioDevice>>,
    ) -> Result<(), BusOverlap> {
        self.0.insert(u64::from(base), u64::from(len), device)
    }

    /// Serves an `in`; unclaimed ports read as all ones, as on a PC.
    pub fn read(&self, port: u16, data: &mut [u8]) {
        match self.0.find(u64::from(port)) {
            // The offset is below the range's u16 length.
            Some((mut device, offset)) => device.read(offset as u16, data),
            None => data.fill(0xff),
        }
    }

    /// Serves an `out`; writes to unclaimed ports are dropped.
    pub fn write(&self, port: u16, data: &[u8]) -> PioAction {
        match self.0.find(u64::from(port)) {
            Some((mut device, offset)) => device.write(offset as u16, data),
            None => PioAction::Continue,
        }
    }
}

/// The MMIO bus: guest-physical ranges outside RAM.
pub struct MmioBus(Ranges<dyn MmioDevice>);

impl Default for MmioBus {
    fn default() -> Self {
        Self(Ranges::new("MMIO"))
    }
}

impl MmioBus {
    /// Places `device` at guest-physical `[base, base + len)`.
    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        device: Arc<Mutex<dyn MmioDevice>>,
    ) -> Result<(), BusOverlap> {
        self.0.insert(base, len, device)
    }

    /// Serves a load; unclaimed addresses read as all ones.
    pub fn read(&self, addr: u64, data: &mut [u8]) {
        match self.0.find(addr) {
            Some((mut device, offset)) => device.read(offset, data),
            None => data.fill(0xff),
        }
    }

    /// Serves a store; stores to unclaimed addresses are dropped.
    pub fn write(&self, addr: u64, data: &[u8]) {
        if let Some((mut device, offset)) = self.0.find(addr) {
            device.write(offset, data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder(Vec<(u64, u8)>);
    impl PioDevice for Recorder {
        fn read(&mut self, offset: u16, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u16, data: &[u8]) -> PioAction {
            self.0.push((u64::from(offset), data[0]));
            PioAction::Continue
        }
    }
    impl MmioDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data[0]));
        }
    }

    #[test]
    fn ports_route_by_range_and_reject_overlaps() {
        let dev = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = PioBus::default();
        bus.insert(0x3f8, 8, dev.clone()).unwrap();
        assert!(bus.insert(0x3ff, 2, dev.clone()).is_err());
        assert!(bus.insert(0x3f0, 8, dev.clone()).is_ok());
        assert!(bus.insert(0xffff, 1, dev.clone()).is_ok());
        assert!(bus.insert(0x10, 0, dev.clone()).is_err());
        let mut data = [0u8; 1];
        bus.read(0x3fd, &mut data);
        assert_eq!(data, [5]);
        bus.read(0x80, &mut data);
        assert_eq!(data, [0xff]);
        bus.write(0x3f9, &[7]);
        assert_eq!(dev.lock().unwrap().0, vec![(1, 7)]);
    }

    #[test]
    fn mmio_routes_by_range_and_rejects_wrapping_ranges() {
        let dev = Arc::new(Mutex::new(Recorder::default()));
        let mut bus = MmioBus::default();
        bus.insert(0xd000_0000, 0x1000, dev.clone()).unwrap();
        assert!(bus.insert(0xd000_0fff, 0x10, dev.clone()).is_err());
        assert!(bus.insert(u64::MAX - 1, 4, dev.clone()).is_err());
        let mut data = [0u8; 4];
        bus.read(0xd000_0070, &mut data);
        assert_eq!(data, [0x70; 4]);
        bus.read(0xd000_1000, &mut data);
        assert_eq!(data, [0xff; 4]);
        bus.write(0xd000_0050, &[1, 0, 0, 0]);
        bus.write(0xc000_0000, &[9]);
        assert_eq!(dev.lock().unwrap().0, vec![(0x50, 1)]);
    }
}
