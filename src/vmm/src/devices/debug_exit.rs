//! QEMU-compatible `isa-debug-exit`: the guest writes a code and the VM ends.

use super::{PioAction, PioDevice};

/// The debug-exit port device. It holds no state.
#[derive(Debug, Default)]
pub struct DebugExit;

impl PioDevice for DebugExit {
    fn read(&mut self, _offset: u16, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u16, data: &[u8]) -> PioAction {
        // QEMU takes the whole value written; the process exit status keeps
        // only its low byte, so the low byte is the code.
        PioAction::GuestExit(data.first().copied().unwrap_or(0))
    }
}
