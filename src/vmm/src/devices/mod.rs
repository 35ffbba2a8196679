//! Emulated devices and the buses that route guest port I/O and MMIO to them.

mod bus;
mod debug_exit;
mod serial;
pub mod vhost_user_blk;
pub mod virtio_mmio;

pub use bus::{BusOverlap, MmioBus, MmioDevice, PioAction, PioBus, PioDevice};
pub use debug_exit::DebugExit;
pub use serial::{SerialConsole, SerialOutput, SerialOutputError};
