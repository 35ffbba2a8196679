//! A virtio-blk driver (virtio 1.2, 5.2): one queue, one request at a time,
//! data through one 64 KiB buffer the driver owns.
//!
//! ```text
//!   request chain:  [ header: type u32 | reserved u32 | sector u64 ]  device reads
//!                   [ data: up to max_transfer() bytes ]            device reads (OUT)
//!                                                                   or writes (IN, GET_ID)
//!                   [ status u8: OK 0 | IOERR 1 | UNSUPP 2 ]        device writes
//! ```
//!
//! [`VirtioBlk::find`] takes the first virtio-blk device named by a
//! `virtio_mmio.device=` word of the command line (in order), or else the
//! first modern virtio-blk function on PCI bus 0. The features taken, when
//! offered, are `VERSION_1` (required), `SIZE_MAX`, `SEG_MAX`, `BLK_SIZE`,
//! `RO` and `FLUSH`.

use core::sync::atomic::{AtomicBool, Ordering};

use strata_guest_abi::virtio_mmio::{CMDLINE_KEY, DeviceWord};

use super::mmio::MmioTransport;
use super::queue::{Buffer, QueueMemory, Virtqueue};
use super::{DeviceMemory, Transport, VirtioError};
use crate::cmdline;

/// Size of the driver's data buffer: the most one request moves.
pub const BUFFER_LEN: usize = 64 * 1024;
/// The unit of virtio-blk addresses.
pub const SECTOR_SIZE: u64 = 512;
/// Longest GET_ID answer.
pub const ID_LEN: usize = 20;

/// Virtio device type of a block device.
const DEVICE_ID_BLOCK: u32 = 2;
/// PCI device ids of a block device: modern, then transitional.
const PCI_DEVICE_IDS: [u16; 2] = [0x1042, 0x1001];

const F_SIZE_MAX: u64 = 1 << 1;
/// Accepted, but seg_max is not read: a request has one data segment, which
/// every device allows (Linux reads a seg_max of 0 as 1, too).
const F_SEG_MAX: u64 = 1 << 2;
const F_RO: u64 = 1 << 5;
const F_BLK_SIZE: u64 = 1 << 6;
const F_FLUSH: u64 = 1 << 9;
const WANTED_FEATURES: u64 = F_SIZE_MAX | F_SEG_MAX | F_RO | F_BLK_SIZE | F_FLUSH;

/// Configuration-space offsets.
const CONFIG_CAPACITY: u64 = 0;
const CONFIG_SIZE_MAX: u64 = 8;
const CONFIG_BLK_SIZE: u64 = 20;

/// Request types.
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;

/// Status byte values; the driver presets [`S_PENDING`], which no device
/// writes.
const S_OK: u8 = 0;
const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;
const S_PENDING: u8 = 0xff;

/// The queue that carries every request.
const QUEUE: u16 = 0;

#[repr(C)]
#[derive(Clone, Copy)]
struct RequestHeader {
    kind: u32,
    reserved: u32,
    sector: u64,
}

#[repr(C, align(4096))]
struct DataBuffer([u8; BUFFER_LEN]);

/// Everything the device reads or writes, in one zero-filled static.
#[repr(C, align(4096))]
struct BlkMemory {
    queue: QueueMemory,
    header: RequestHeader,
    status: u8,
    id: [u8; ID_LEN],
    data: DataBuffer,
}

// SAFETY: `BlkMemory` is integers and arrays of them: all-zero is valid.
// In `.dma` (see `link.ld`): zero-filled at load, not cleared at boot.
#[unsafe(link_section = ".bss.dma.virtio_blk")]
static MEMORY: DeviceMemory<BlkMemory> = unsafe { DeviceMemory::zeroed() };
/// Set once [`MEMORY`] serves a device.
static CLAIMED: AtomicBool = AtomicBool::new(false);

/// A started virtio-blk device.
pub struct VirtioBlk {
    transport: Transport,
    queue: Virtqueue,
    memory: *mut BlkMemory,
    features: u64,
    capacity: u64,
    block_size: u32,
    max_transfer: usize,
}

/// Finds the transport of the first block device (see the module docs).
fn find_transport(cmdline: &[u8]) -> Result<Transport, VirtioError> {
    for value in cmdline::find_all(cmdline, CMDLINE_KEY.as_bytes()) {
        let word = DeviceWord::parse(value).ok_or(VirtioError::BadMmioWord)?;
        if let Some(transport) = MmioTransport::probe(&word, DEVICE_ID_BLOCK)? {
            return Ok(Transport::Mmio(transport));
        }
    }
    match super::pci::find(&PCI_DEVICE_IDS)? {
        Some(transport) => Ok(Transport::Pci(transport)),
        None => Err(VirtioError::NoDevice),
    }
}

impl VirtioBlk {
    /// Finds and starts the first virtio-blk device (see the module docs).
    /// The driver's memory serves one device: a second call fails with
    /// [`VirtioError::InUse`].
    pub fn find(cmdline: &[u8]) -> Result<VirtioBlk, VirtioError> {
        let transport = find_transport(cmdline)?;
        if CLAIMED.swap(true, Ordering::Relaxed) {
            return Err(VirtioError::InUse);
        }
        Self::start(transport, MEMORY.get())
    }

    fn start(mut transport: Transport, memory: *mut BlkMemory) -> Result<VirtioBlk, VirtioError> {
        let features = transport.negotiate(WANTED_FEATURES)?;
        let config = |offset| {
            transport
                .config_read32(offset)
                .ok_or(VirtioError::BadConfig)
        };
        let mut max_transfer = BUFFER_LEN;
        if features & F_SIZE_MAX != 0 {
            // qemu-storage-daemon offers SIZE_MAX with a size_max of 0, which
            // Linux reads as "no limit"; so does this driver.
            match config(CONFIG_SIZE_MAX)? as usize {
                0 => {}
                size_max if size_max < SECTOR_SIZE as usize => {
                    return Err(transport.fail(VirtioError::BadConfig));
                }
                size_max => max_transfer = max_transfer.min(size_max & !(SECTOR_SIZE as usize - 1)),
            }
        }
        let block_size = match features & F_BLK_SIZE {
            0 => SECTOR_SIZE as u32,
            _ => config(CONFIG_BLK_SIZE)?,
        };
        let capacity = transport.config_read64(CONFIG_CAPACITY)?;
        if !block_size.is_power_of_two()
            || u64::from(block_size) < SECTOR_SIZE
            || capacity > u64::MAX / SECTOR_SIZE
        {
            return Err(transport.fail(VirtioError::BadConfig));
        }
        let queue_memory: *mut QueueMemory = field_ptr!(memory, BlkMemory, queue);
        // SAFETY: `memory` is the claimed, zero-filled static: identity-mapped
        // and used by nothing else.
        let queue = unsafe { Virtqueue::setup(&mut transport, QUEUE, queue_memory)? };
        transport.driver_ok();
        Ok(VirtioBlk {
            transport,
            queue,
            memory,
            features,
            capacity,
            block_size,
            max_transfer,
        })
    }

    /// `"mmio"` or `"pci"`.
    pub fn transport_name(&self) -> &'static str {
        self.transport.name()
    }

    /// Disk size in 512-byte sectors (at most `u64::MAX / 512`).
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The device reports `VIRTIO_BLK_F_RO`.
    pub fn read_only(&self) -> bool {
        self.features & F_RO != 0
    }

    /// The device's logical block size (512 unless it reports another).
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Most bytes one [`read`](Self::read) or [`write`](Self::write) moves: a
    /// multiple of 512, at most [`BUFFER_LEN`].
    pub fn max_transfer(&self) -> usize {
        self.max_transfer
    }

    /// The data buffer, [`BUFFER_LEN`] bytes: fill it before a write.
    pub fn buffer(&mut self) -> &mut [u8] {
        // SAFETY: the buffer is part of the claimed static; no request is in
        // flight between calls, so the device does not touch it while the
        // borrow of `self` lasts.
        unsafe { &mut (*self.memory).data.0 }
    }

    /// Reads `len` bytes from `sector` into the buffer and returns them.
    pub fn read(&mut self, sector: u64, len: usize) -> Result<&[u8], VirtioError> {
        self.check_range(sector, len)?;
        let data: *const u8 = field_ptr!(self.memory, BlkMemory, data);
        self.request(T_IN, sector, Some((data as u64, len as u32, true)))?;
        // SAFETY: the buffer is part of the claimed static and `len <=
        // BUFFER_LEN` (checked above); the device has finished writing it
        // (the request completed).
        Ok(unsafe { core::slice::from_raw_parts(data, len) })
    }

    /// Writes the first `len` bytes of the buffer at `sector`. The driver
    /// does not refuse this on a read-only disk: the device must (tests rely
    /// on seeing it do so).
    pub fn write(&mut self, sector: u64, len: usize) -> Result<(), VirtioError> {
        self.check_range(sector, len)?;
        let data: *const u8 = field_ptr!(self.memory, BlkMemory, data);
        self.request(T_OUT, sector, Some((data as u64, len as u32, false)))
    }

    /// Makes completed writes durable. Without `VIRTIO_BLK_F_FLUSH` the
    /// device writes through, so there is nothing to ask for.
    pub fn flush(&mut self) -> Result<(), VirtioError> {
        if self.features & F_FLUSH == 0 {
            return Ok(());
        }
        self.request(T_FLUSH, 0, None)
    }

    /// Asks for the device's serial (GET_ID): up to [`ID_LEN`] bytes.
    pub fn id(&mut self) -> Result<&[u8], VirtioError> {
        let id = {
            // SAFETY: the id buffer is part of the claimed static; no request
            // is in flight.
            let id = unsafe { &mut (*self.memory).id };
            id.fill(0);
            id.as_ptr() as u64
        };
        self.request(T_GET_ID, 0, Some((id, ID_LEN as u32, true)))?;
        // SAFETY: the request completed, so the device is done with the id.
        let id: &[u8; ID_LEN] = unsafe { &(*self.memory).id };
        // The serial is NUL-padded when shorter than 20 bytes.
        let len = id.iter().position(|&b| b == 0).unwrap_or(ID_LEN);
        Ok(id.get(..len).unwrap_or_default())
    }

    fn check_range(&self, sector: u64, len: usize) -> Result<(), VirtioError> {
        let sectors = len as u64 / SECTOR_SIZE;
        let inside = sector
            .checked_add(sectors)
            .is_some_and(|end| end <= self.capacity);
        if len == 0 || len > self.max_transfer || len as u64 % SECTOR_SIZE != 0 || !inside {
            return Err(VirtioError::OutOfRange);
        }
        Ok(())
    }

    /// Sends one request with an optional data buffer (address, length,
    /// written by the device) and checks its status byte.
    fn request(
        &mut self,
        kind: u32,
        sector: u64,
        data: Option<(u64, u32, bool)>,
    ) -> Result<(), VirtioError> {
        let header_ptr: *mut RequestHeader = field_ptr!(self.memory, BlkMemory, header);
        let status_ptr: *mut u8 = field_ptr!(self.memory, BlkMemory, status);
        let header = RequestHeader {
            kind,
            reserved: 0,
            sector,
        };
        // SAFETY: header and status are part of the claimed static; no
        // request is in flight, so the device does not access them now.
        unsafe { header_ptr.write_volatile(header) };
        // SAFETY: as above.
        unsafe { status_ptr.write_volatile(S_PENDING) };
        let header = Buffer {
            addr: header_ptr as u64,
            len: size_of::<RequestHeader>() as u32,
            device_writes: false,
        };
        let status = Buffer {
            addr: status_ptr as u64,
            len: 1,
            device_writes: true,
        };
        match data {
            Some((addr, len, device_writes)) => {
                let data = Buffer {
                    addr,
                    len,
                    device_writes,
                };
                self.queue
                    .run(&self.transport, QUEUE, &[header, data, status])?
            }
            None => self.queue.run(&self.transport, QUEUE, &[header, status])?,
        };
        // SAFETY: the request completed: the device wrote the status byte.
        match unsafe { status_ptr.read_volatile() } {
            S_OK => Ok(()),
            S_IOERR => Err(VirtioError::IoError),
            S_UNSUPP => Err(VirtioError::Unsupported),
            _ => Err(VirtioError::BadStatus),
        }
    }
}
