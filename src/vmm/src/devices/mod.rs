//! Emulated devices and the port-I/O bus that routes guest `in`/`out` to them.
//!
//! The bus is built once before the vCPUs start and never changes, so vCPU
//! threads share it without a lock; each device has its own mutex, taken only
//! for the one access it serves.

mod debug_exit;
mod serial;

use std::sync::{Arc, Mutex};

pub use debug_exit::DebugExit;
pub use serial::{SerialConsole, SerialOutput, SerialOutputError};

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

struct PioRange {
    base: u16,
    len: u16,
    device: Arc<Mutex<dyn PioDevice>>,
}

/// An overlapping port range was registered.
#[derive(Debug, thiserror::Error)]
#[error("I/O ports {base:#x}+{len} overlap a device already on the bus")]
pub struct PioOverlap {
    base: u16,
    len: u16,
}

/// The port-I/O bus.
#[derive(Default)]
pub struct PioBus {
    ranges: Vec<PioRange>,
}

impl PioBus {
    /// Places `device` at ports `[base, base + len)`.
    pub fn insert(
        &mut self,
        base: u16,
        len: u16,
        device: Arc<Mutex<dyn PioDevice>>,
    ) -> Result<(), PioOverlap> {
        let end = u32::from(base) + u32::from(len);
        let overlaps = self.ranges.iter().any(|r| {
            u32::from(base) < u32::from(r.base) + u32::from(r.len) && u32::from(r.base) < end
        });
        if overlaps || len == 0 {
            return Err(PioOverlap { base, len });
        }
        self.ranges.push(PioRange { base, len, device });
        Ok(())
    }

    fn find(&self, port: u16) -> Option<(&PioRange, u16)> {
        self.ranges
            .iter()
            .find(|r| port >= r.base && u32::from(port) < u32::from(r.base) + u32::from(r.len))
            .map(|r| (r, port - r.base))
    }

    /// Serves an `in`; unclaimed ports read as all ones, as on a PC.
    pub fn read(&self, port: u16, data: &mut [u8]) {
        match self.find(port) {
            Some((range, offset)) => lock(&range.device).read(offset, data),
            None => data.fill(0xff),
        }
    }

    /// Serves an `out`; writes to unclaimed ports are dropped.
    pub fn write(&self, port: u16, data: &[u8]) -> PioAction {
        match self.find(port) {
            Some((range, offset)) => lock(&range.device).write(offset, data),
            None => PioAction::Continue,
        }
    }
}

/// Locks a device, carrying on if another vCPU thread panicked while holding it:
/// device state is plain registers, valid after any partial update.
fn lock(device: &Mutex<dyn PioDevice>) -> std::sync::MutexGuard<'_, dyn PioDevice + 'static> {
    device
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Recorder(Vec<(u16, u8)>);
    impl PioDevice for Recorder {
        fn read(&mut self, offset: u16, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u16, data: &[u8]) -> PioAction {
            self.0.push((offset, data[0]));
            PioAction::Continue
        }
    }

    #[test]
    fn routes_by_port_and_rejects_overlaps() {
        let dev = Arc::new(Mutex::new(Recorder(Vec::new())));
        let mut bus = PioBus::default();
        bus.insert(0x3f8, 8, dev.clone()).unwrap();
        assert!(bus.insert(0x3ff, 2, dev.clone()).is_err());
        assert!(bus.insert(0x3f0, 8, dev.clone()).is_ok());
        assert!(bus.insert(0xffff, 1, dev.clone()).is_ok());
        let mut data = [0u8; 1];
        bus.read(0x3fd, &mut data);
        assert_eq!(data, [5]);
        bus.read(0x80, &mut data);
        assert_eq!(data, [0xff]);
        bus.write(0x3f9, &[7]);
        assert_eq!(dev.lock().unwrap().0, vec![(1, 7)]);
    }
}
