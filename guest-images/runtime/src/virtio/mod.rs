//! A minimal virtio 1.x driver stack: two transports, one split virtqueue,
//! polled completion, and a block device on top.
//!
//! ```text
//!   blk::VirtioBlk  read / write / flush / GET_ID, one request at a time
//!        |
//!   queue::Virtqueue   descriptors, available and used rings in .dma
//!        |
//!   Transport ---- mmio::MmioTransport  virtio-mmio version 2, found from
//!            |                          `virtio_mmio.device=` words
//!            +---- pci::PciTransport    modern virtio-pci, found by a scan
//!                                       of bus 0 (ports 0xCF8/0xCFC)
//! ```
//!
//! Memory handed to a device lives in statics: physical == virtual, so a
//! pointer is its own DMA address. Interrupts stay off; the driver polls the
//! used ring. Everything a device reports (feature bits, queue sizes,
//! capability offsets, capacity) is checked before use.

/// A raw pointer to field `$field` of the `$ty` at raw pointer `$base`.
/// Computed from the field's offset, so it dereferences nothing (and needs
/// no `unsafe`); using the pointer is what needs it.
macro_rules! field_ptr {
    ($base:expr, $ty:ty, $field:ident) => {
        $base
            .wrapping_byte_add(core::mem::offset_of!($ty, $field))
            .cast()
    };
}

pub mod blk;
mod mmio;
mod pci;
mod queue;

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;

use mmio::MmioTransport;
use pci::PciTransport;

/// Device status bits (virtio 1.2, 2.1).
mod status {
    pub const ACKNOWLEDGE: u8 = 1;
    pub const DRIVER: u8 = 2;
    pub const DRIVER_OK: u8 = 4;
    pub const FEATURES_OK: u8 = 8;
    pub const FAILED: u8 = 128;
}

/// `VIRTIO_F_VERSION_1`: the device follows virtio 1.x, not the legacy layout.
pub const F_VERSION_1: u64 = 1 << 32;

/// How often a device's status is re-read after a reset before giving up.
const RESET_POLLS: u32 = 100_000;

/// What went wrong while finding, starting or using a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtioError {
    /// No device of the wanted type was found.
    NoDevice,
    /// A `virtio_mmio.device=` word is malformed.
    BadMmioWord,
    /// The device's registers could not be mapped.
    Unmappable,
    /// A virtio-mmio window is not a virtio device (wrong magic value).
    BadMagic,
    /// A virtio-mmio device uses the legacy (version 1) register layout.
    LegacyMmio,
    /// A virtio-mmio device has an unknown version.
    BadVersion,
    /// A virtio-pci device lacks a usable common, notify or device capability.
    MissingCapability,
    /// A virtio-pci capability points outside its BAR, or to an unusable BAR.
    BadCapability,
    /// The device did not finish its reset.
    ResetTimeout,
    /// The device does not offer `VIRTIO_F_VERSION_1`.
    NoVersion1,
    /// The device did not accept the driver's features.
    FeaturesRefused,
    /// The device has no queue 0, or it is already in use, or too small.
    BadQueue,
    /// The device configuration is too short or inconsistent.
    BadConfig,
    /// The driver's static memory is already in use by another device.
    InUse,
    /// A request asked for sectors beyond the disk or a bad length.
    OutOfRange,
    /// The device did not complete a request in time.
    Timeout,
    /// The device completed something other than the request in flight.
    BadCompletion,
    /// The device completed the request with `VIRTIO_BLK_S_IOERR`.
    IoError,
    /// The device completed the request with `VIRTIO_BLK_S_UNSUPP`.
    Unsupported,
    /// The device completed the request with an undefined status byte.
    BadStatus,
}

impl VirtioError {
    /// A one-line description.
    pub fn message(self) -> &'static str {
        match self {
            Self::NoDevice => "no virtio-blk device found (virtio_mmio.device= words, PCI bus 0)",
            Self::BadMmioWord => "malformed virtio_mmio.device= word",
            Self::Unmappable => "device registers lie where they cannot be mapped",
            Self::BadMagic => "virtio_mmio.device= names a window without a virtio device",
            Self::LegacyMmio => "legacy virtio-mmio device (version 1) is not supported",
            Self::BadVersion => "virtio-mmio device has an unknown version",
            Self::MissingCapability => {
                "virtio-pci device lacks a common, notify or device capability"
            }
            Self::BadCapability => "virtio-pci capability lies outside a usable memory BAR",
            Self::ResetTimeout => "device did not complete its reset",
            Self::NoVersion1 => "device does not offer VIRTIO_F_VERSION_1",
            Self::FeaturesRefused => "device refused the driver's features",
            Self::BadQueue => "device queue 0 is missing, in use or too small",
            Self::BadConfig => "device configuration space is too short or inconsistent",
            Self::InUse => "driver memory is already in use by another device",
            Self::OutOfRange => "request beyond the end of the disk or of a bad length",
            Self::Timeout => "device did not complete a request within about 30 seconds",
            Self::BadCompletion => "device completed an unknown request",
            Self::IoError => "device answered IOERR",
            Self::Unsupported => "device answered UNSUPP",
            Self::BadStatus => "device answered an undefined status",
        }
    }
}

/// A window of device registers, accessed with volatile loads and stores.
///
/// Accesses outside the window, or misaligned, read as all ones and are
/// dropped on write, as a bus does for unclaimed addresses; callers check
/// offsets that come from a device before using them.
#[derive(Clone, Copy, Debug)]
struct Registers {
    base: u64,
    len: u64,
}

impl Registers {
    /// # Safety
    ///
    /// `[base, base + len)` must be mapped device registers (not
    /// RAM the program uses), and stay so.
    unsafe fn new(base: u64, len: u64) -> Registers {
        Registers { base, len }
    }

    fn address(&self, offset: u64, width: u64) -> Option<u64> {
        let end = offset.checked_add(width)?;
        (end <= self.len && offset % width == 0).then_some(self.base + offset)
    }

    fn read32(&self, offset: u64) -> u32 {
        match self.address(offset, 4) {
            // SAFETY: the address is aligned and inside the window, which
            // `new`'s caller vouched for.
            Some(address) => unsafe { (address as *const u32).read_volatile() },
            None => u32::MAX,
        }
    }

    fn read16(&self, offset: u64) -> u16 {
        match self.address(offset, 2) {
            // SAFETY: as for `read32`.
            Some(address) => unsafe { (address as *const u16).read_volatile() },
            None => u16::MAX,
        }
    }

    fn read8(&self, offset: u64) -> u8 {
        match self.address(offset, 1) {
            // SAFETY: as for `read32`.
            Some(address) => unsafe { (address as *const u8).read_volatile() },
            None => u8::MAX,
        }
    }

    fn write32(&self, offset: u64, value: u32) {
        if let Some(address) = self.address(offset, 4) {
            // SAFETY: as for `read32`; a register write changes no memory
            // the program owns.
            unsafe { (address as *mut u32).write_volatile(value) };
        }
    }

    fn write16(&self, offset: u64, value: u16) {
        if let Some(address) = self.address(offset, 2) {
            // SAFETY: as for `write32`.
            unsafe { (address as *mut u16).write_volatile(value) };
        }
    }

    fn write8(&self, offset: u64, value: u8) {
        if let Some(address) = self.address(offset, 1) {
            // SAFETY: as for `write32`.
            unsafe { (address as *mut u8).write_volatile(value) };
        }
    }

    /// Writes a 64-bit register as two 32-bit halves, low first.
    fn write64(&self, offset: u64, value: u64) {
        self.write32(offset, value as u32);
        self.write32(offset + 4, (value >> 32) as u32);
    }
}

/// Memory shared with a device: a zero-filled static (placed in `.dma`),
/// reached only through the raw pointer [`DeviceMemory::get`] returns, by the
/// one driver that claimed it (each driver keeps its own claim flag).
struct DeviceMemory<T>(UnsafeCell<MaybeUninit<T>>);

// SAFETY: the memory is reached only through raw pointers, by the single
// driver instance that claimed it; the guest has one CPU and no interrupts.
unsafe impl<T> Sync for DeviceMemory<T> {}

impl<T> DeviceMemory<T> {
    /// # Safety
    ///
    /// All-zero bytes must be a valid `T` (the drivers use plain integers
    /// and arrays of them).
    const unsafe fn zeroed() -> DeviceMemory<T> {
        DeviceMemory(UnsafeCell::new(MaybeUninit::zeroed()))
    }

    fn get(&self) -> *mut T {
        self.0.get().cast()
    }
}

/// A device's registers, on one transport or the other.
enum Transport {
    Mmio(MmioTransport),
    Pci(PciTransport),
}

impl Transport {
    /// `"mmio"` or `"pci"`.
    fn name(&self) -> &'static str {
        match self {
            Self::Mmio(_) => "mmio",
            Self::Pci(_) => "pci",
        }
    }

    fn status(&self) -> u8 {
        match self {
            Self::Mmio(t) => t.status(),
            Self::Pci(t) => t.status(),
        }
    }

    fn set_status(&self, status: u8) {
        match self {
            Self::Mmio(t) => t.set_status(status),
            Self::Pci(t) => t.set_status(status),
        }
    }

    fn device_features(&self) -> u64 {
        match self {
            Self::Mmio(t) => t.device_features(),
            Self::Pci(t) => t.device_features(),
        }
    }

    fn set_driver_features(&self, features: u64) {
        match self {
            Self::Mmio(t) => t.set_driver_features(features),
            Self::Pci(t) => t.set_driver_features(features),
        }
    }

    /// Sets up queue `index` with `size` entries at the given addresses and
    /// enables it. `size` is at most the device's maximum (see
    /// [`Transport::queue_max_size`]).
    fn setup_queue(
        &mut self,
        index: u16,
        size: u16,
        rings: queue::RingAddresses,
    ) -> Result<(), VirtioError> {
        match self {
            Self::Mmio(t) => t.setup_queue(index, size, rings),
            Self::Pci(t) => t.setup_queue(index, size, rings),
        }
    }

    /// The largest size queue `index` allows; 0 if it does not exist or is
    /// already enabled.
    fn queue_max_size(&self, index: u16) -> u16 {
        match self {
            Self::Mmio(t) => t.queue_max_size(index),
            Self::Pci(t) => t.queue_max_size(index),
        }
    }

    fn notify(&self, index: u16) {
        match self {
            Self::Mmio(t) => t.notify(index),
            Self::Pci(t) => t.notify(index),
        }
    }

    fn config_generation(&self) -> u32 {
        match self {
            Self::Mmio(t) => t.config_generation(),
            Self::Pci(t) => u32::from(t.config_generation()),
        }
    }

    /// Reads the device-configuration dword at `offset`; `None` past the end
    /// of the configuration space.
    fn config_read32(&self, offset: u64) -> Option<u32> {
        match self {
            Self::Mmio(t) => t.config_read32(offset),
            Self::Pci(t) => t.config_read32(offset),
        }
    }

    /// Reads a 64-bit configuration field as two dwords, again until the
    /// configuration generation is stable.
    fn config_read64(&self, offset: u64) -> Result<u64, VirtioError> {
        for _ in 0..16 {
            let before = self.config_generation();
            let low = self.config_read32(offset).ok_or(VirtioError::BadConfig)?;
            let high = self
                .config_read32(offset + 4)
                .ok_or(VirtioError::BadConfig)?;
            if self.config_generation() == before {
                return Ok((u64::from(high) << 32) | u64::from(low));
            }
        }
        Err(VirtioError::BadConfig)
    }

    /// Resets the device and waits until it reads back a zero status.
    fn reset(&self) -> Result<(), VirtioError> {
        self.set_status(0);
        for _ in 0..RESET_POLLS {
            if self.status() == 0 {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err(VirtioError::ResetTimeout)
    }

    /// Marks the device FAILED and returns `error`.
    fn fail(&self, error: VirtioError) -> VirtioError {
        self.set_status(self.status() | status::FAILED);
        error
    }

    /// Resets the device and negotiates features: `VIRTIO_F_VERSION_1` and
    /// whichever of `wanted` the device offers. Returns the accepted set.
    /// The device is then at FEATURES_OK, ready for its queues.
    fn negotiate(&self, wanted: u64) -> Result<u64, VirtioError> {
        self.reset()?;
        self.set_status(status::ACKNOWLEDGE);
        self.set_status(status::ACKNOWLEDGE | status::DRIVER);
        let offered = self.device_features();
        if offered & F_VERSION_1 == 0 {
            return Err(self.fail(VirtioError::NoVersion1));
        }
        let accepted = offered & (wanted | F_VERSION_1);
        self.set_driver_features(accepted);
        let features_ok = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        self.set_status(features_ok);
        if self.status() & status::FEATURES_OK == 0 {
            return Err(self.fail(VirtioError::FeaturesRefused));
        }
        Ok(accepted)
    }

    /// Tells the device the driver is ready (after its queues are set up).
    fn driver_ok(&self) {
        self.set_status(
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        );
    }
}
