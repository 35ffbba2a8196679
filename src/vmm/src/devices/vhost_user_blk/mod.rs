//! A virtio-blk device whose requests are served by a vhost-user backend
//! (`strata blk`, `qemu-storage-daemon`, ...), on the virtio-mmio transport.
//!
//! The VMM never sees a block request. It relays feature negotiation and the
//! configuration space between the guest and the backend, shares guest RAM
//! (its memfds) with the backend, and wires the rings up:
//!
//! ```text
//!  guest writes QueueNotify ──ioeventfd (KVM)──► kick eventfd ──► backend
//!  backend completes        ──call eventfd ────► irqfd (KVM) ──► guest IRQ
//! ```
//!
//! A [`watch`] thread per disk notices the backend hanging up; the guest
//! keeps running, its I/O on that disk waits, and with `reconnect` the
//! session is set up again when the backend returns.

mod connection;
pub mod watch;

use std::path::PathBuf;

use kvm_ioctls::{IoEventAddress, VmFd};
use vhost::vhost_user::message::VhostUserVirtioFeatures;
use virtio_bindings::virtio_blk::{VIRTIO_BLK_F_MQ, VIRTIO_BLK_F_RO};
use virtio_bindings::virtio_config::{
    VIRTIO_F_ACCESS_PLATFORM, VIRTIO_F_NOTIFICATION_DATA, VIRTIO_F_RING_PACKED,
};
use vmm_sys_util::eventfd::EventFd;

use connection::CONFIG_NUM_QUEUES_OFFSET;
pub use connection::{CONFIG_LEN, ConnectError, Connection};

use super::virtio_mmio::{QUEUE_NOTIFY_OFFSET, QueueLayout, VirtioDevice};
use crate::memory::GuestMemoryMmap;

/// Virtio device id of a block device.
const VIRTIO_ID_BLOCK: u32 = 2;
/// Entries each queue may have.
pub const QUEUE_MAX_SIZE: u16 = 256;
/// Most queues a disk may ask for.
pub const MAX_QUEUES: u16 = 16;

/// A disk to attach: `strata run --disk socket=PATH[,readonly][,queues=N][,reconnect]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskConfig {
    /// The backend's Unix socket.
    pub socket: PathBuf,
    /// Offer the disk to the guest as read-only (`VIRTIO_BLK_F_RO`).
    pub readonly: bool,
    /// Number of request queues.
    pub queues: u16,
    /// Reconnect when the backend goes away, instead of only reporting it.
    pub reconnect: bool,
}

/// Why a disk could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("disk {index}: {source}")]
    Connect { index: usize, source: ConnectError },
    #[error("disk {index}: cannot create its {what} eventfd: {source}")]
    EventFd {
        index: usize,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("disk {index}: KVM refused to {step}: {source}")]
    Kvm {
        index: usize,
        step: &'static str,
        source: kvm_ioctls::Error,
    },
}

/// Features never relayed to the guest: the VMM reads the rings (on
/// reconnect) as split rings in guest-physical addresses, and the
/// vhost-user-only protocol bit is not a virtio feature.
fn hidden_features() -> u64 {
    (1 << VIRTIO_F_RING_PACKED)
        | (1 << VIRTIO_F_ACCESS_PLATFORM)
        | (1 << VIRTIO_F_NOTIFICATION_DATA)
        | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
}

/// A vhost-user-blk disk.
pub struct VhostUserBlk {
    index: usize,
    config: DiskConfig,
    memory: GuestMemoryMmap,
    /// `None` while the backend is away.
    connection: Option<Connection>,
    features: u64,
    config_space: Vec<u8>,
    call: EventFd,
    kicks: Vec<EventFd>,
    /// The rings as the backend was given them, to stop them on reset.
    started: Vec<QueueLayout>,
}

impl VhostUserBlk {
    /// Connects disk `index` to its backend and hooks its interrupt to `gsi`
    /// and its queue kicks to the notify register of the device at `mmio_base`.
    pub fn new(
        index: usize,
        config: DiskConfig,
        memory: GuestMemoryMmap,
        vm: &VmFd,
        mmio_base: u64,
        gsi: u32,
    ) -> Result<Self, DiskError> {
        let connection = Connection::open(&config.socket, config.queues)
            .map_err(|source| DiskError::Connect { index, source })?;
        let eventfd = |what| {
            EventFd::new(libc::EFD_NONBLOCK).map_err(|source| DiskError::EventFd {
                index,
                what,
                source,
            })
        };
        let kvm = |step| {
            move |source| DiskError::Kvm {
                index,
                step,
                source,
            }
        };
        let call = eventfd("interrupt")?;
        vm.register_irqfd(&call, gsi)
            .map_err(kvm("route the disk's interrupt"))?;
        let mut kicks = Vec::with_capacity(usize::from(config.queues));
        for queue in 0..config.queues {
            let kick = eventfd("queue kick")?;
            vm.register_ioevent(
                &kick,
                &IoEventAddress::Mmio(mmio_base + QUEUE_NOTIFY_OFFSET),
                u32::from(queue),
            )
            .map_err(kvm("catch queue notifications (ioeventfd)"))?;
            kicks.push(kick);
        }
        let mut features = connection.backend_features & !hidden_features();
        if config.readonly {
            features |= 1 << VIRTIO_BLK_F_RO;
        }
        let mut config_space = connection.config.clone();
        if features & (1 << VIRTIO_BLK_F_MQ) != 0 {
            config_space[CONFIG_NUM_QUEUES_OFFSET..CONFIG_NUM_QUEUES_OFFSET + 2]
                .copy_from_slice(&config.queues.to_le_bytes());
        }
        log::debug!(
            "disk {index}: backend features {:#x}, offered {features:#x}, config {config_space:02x?}",
            connection.backend_features
        );
        Ok(Self {
            index,
            config,
            memory,
            connection: Some(connection),
            features,
            config_space,
            call,
            kicks,
            started: Vec::new(),
        })
    }

    /// The disk's settings.
    pub fn config(&self) -> &DiskConfig {
        &self.config
    }

    /// A label for messages: `disk N (socket)`.
    pub fn label(&self) -> String {
        format!("disk {} ({})", self.index, self.config.socket.display())
    }

    /// The backend socket while connected.
    pub fn socket_fd(&self) -> Option<std::os::fd::RawFd> {
        self.connection.as_ref().map(Connection::socket_fd)
    }

    /// Forgets the backend after it hung up.
    pub fn disconnected(&mut self) {
        self.connection = None;
    }

    /// Takes a new session with a returned backend and, if the guest had
    /// started the device, restarts the rings where the guest left them.
    pub fn reconnected(
        &mut self,
        mut connection: Connection,
        active: Option<(u64, Vec<QueueLayout>)>,
    ) -> Result<(), String> {
        let missing = self.features
            & !hidden_features()
            & !connection.backend_features
            & !(1 << VIRTIO_BLK_F_RO);
        if missing != 0 {
            return Err(format!(
                "the backend no longer offers features {missing:#x} the guest may use"
            ));
        }
        if let Some((features, queues)) = active {
            connection
                .start(
                    &self.memory,
                    features,
                    &queues,
                    &self.call,
                    &self.kicks,
                    true,
                )
                .map_err(|e| format!("cannot restart the rings: {e}"))?;
            self.started = queues;
        }
        self.connection = Some(connection);
        Ok(())
    }
}

impl VirtioDevice for VhostUserBlk {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_MAX_SIZE; usize::from(self.config.queues)]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match self
            .config_space
            .get(start..)
            .and_then(|rest| rest.get(..data.len()))
        {
            Some(bytes) => data.copy_from_slice(bytes),
            None => data.fill(0),
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let Some(bytes) = self
            .config_space
            .get_mut(start..)
            .and_then(|rest| rest.get_mut(..data.len()))
        else {
            return;
        };
        bytes.copy_from_slice(data);
        if let Some(connection) = &mut self.connection {
            // `start` is below CONFIG_LEN here.
            if let Err(e) = connection.write_config(start as u32, data) {
                log::warn!("{}: configuration write refused: {e}", self.label());
            }
        }
    }

    fn activate(&mut self, features: u64, queues: &[QueueLayout]) -> Result<(), String> {
        self.started = queues.to_vec();
        let Some(connection) = &mut self.connection else {
            log::warn!(
                "{}: the guest started the disk while its backend is away; its I/O waits for the backend",
                self.label()
            );
            return Ok(());
        };
        connection
            .start(
                &self.memory,
                features,
                queues,
                &self.call,
                &self.kicks,
                false,
            )
            .map_err(|e| format!("the vhost-user backend refused the rings: {e}"))
    }

    fn reset(&mut self) {
        if let Some(connection) = &mut self.connection {
            connection.stop(&self.started);
        }
        self.started.clear();
    }

    fn notify(&mut self, index: u16) {
        // A notify KVM did not catch (not a 4-byte write of the index).
        if let Some(kick) = self.kicks.get(usize::from(index)) {
            let _ = kick.write(1);
        }
    }
}
