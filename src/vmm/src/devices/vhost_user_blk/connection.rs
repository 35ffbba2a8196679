//! One session with a vhost-user-blk backend: the handshake at connect time
//! and the messages that start and stop the rings.

use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserHeaderFlag, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_bindings::virtio_blk::VIRTIO_BLK_F_MQ;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::virtio_mmio::QueueLayout;
use crate::memory::GuestMemoryMmap;

/// Bytes of `struct virtio_blk_config` read from the backend (virtio 1.2
/// §5.2.4, up to and including the write-zeroes fields).
pub const CONFIG_LEN: usize = 60;
/// Offset of `num_queues` in `struct virtio_blk_config`.
pub const CONFIG_NUM_QUEUES_OFFSET: usize = 34;

/// The protocol features Strata uses when the backend offers them. CONFIG is
/// required: it is how the disk's size and limits reach the guest.
fn wanted_protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::REPLY_ACK
}

/// Why a session with a backend could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to the vhost-user backend at {}: {source}", socket.display())]
    Connect {
        socket: PathBuf,
        source: vhost::Error,
    },
    #[error("the vhost-user backend at {} failed to {step}: {source}", socket.display())]
    Message {
        socket: PathBuf,
        step: &'static str,
        source: vhost::Error,
    },
    #[error("the vhost-user backend at {} does not offer {what}", socket.display())]
    Missing { socket: PathBuf, what: &'static str },
    #[error(
        "the vhost-user backend at {} serves at most {max} queue(s), not {requested}: lower queues=",
        socket.display()
    )]
    TooManyQueues {
        socket: PathBuf,
        requested: u16,
        max: u64,
    },
}

/// A connected, negotiated backend.
pub struct Connection {
    frontend: Frontend,
    socket: PathBuf,
    /// Virtio features the backend offers, `VHOST_USER_F_PROTOCOL_FEATURES` included.
    pub backend_features: u64,
    /// The disk's configuration space as the backend reports it.
    pub config: Vec<u8>,
}

impl Connection {
    /// Connects to the backend at `socket` and agrees on protocol features
    /// and `queues` queues.
    pub fn open(socket: &Path, queues: u16) -> Result<Self, ConnectError> {
        let frontend = Frontend::connect(socket, u64::from(queues)).map_err(|source| {
            ConnectError::Connect {
                socket: socket.to_path_buf(),
                source,
            }
        })?;
        let mut connection = Self {
            frontend,
            socket: socket.to_path_buf(),
            backend_features: 0,
            config: Vec::new(),
        };
        connection.negotiate(queues)?;
        Ok(connection)
    }

    fn step(&self, step: &'static str) -> impl FnOnce(vhost::Error) -> ConnectError + '_ {
        move |source| ConnectError::Message {
            socket: self.socket.clone(),
            step,
            source,
        }
    }

    fn missing(&self, what: &'static str) -> ConnectError {
        ConnectError::Missing {
            socket: self.socket.clone(),
            what,
        }
    }

    fn negotiate(&mut self, queues: u16) -> Result<(), ConnectError> {
        self.frontend
            .set_owner()
            .map_err(self.step("take ownership (SET_OWNER)"))?;
        let features = self
            .frontend
            .get_features()
            .map_err(self.step("report its features"))?;
        if features & (1 << VIRTIO_F_VERSION_1) == 0 {
            return Err(self.missing("VIRTIO_F_VERSION_1"));
        }
        if features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() == 0 {
            return Err(self.missing("VHOST_USER_F_PROTOCOL_FEATURES"));
        }
        let offered = self
            .frontend
            .get_protocol_features()
            .map_err(self.step("report its protocol features"))?;
        let protocol = offered & wanted_protocol_features();
        if !protocol.contains(VhostUserProtocolFeatures::CONFIG) {
            return Err(self.missing("the CONFIG protocol feature"));
        }
        self.frontend
            .set_protocol_features(protocol)
            .map_err(self.step("accept protocol features"))?;
        if protocol.contains(VhostUserProtocolFeatures::REPLY_ACK) {
            // Every later request waits for the backend's verdict, so a
            // refused ring or memory table is an error here, not a hang.
            self.frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        }
        let max_queues = if protocol.contains(VhostUserProtocolFeatures::MQ)
            && features & (1 << VIRTIO_BLK_F_MQ) != 0
        {
            self.frontend
                .get_queue_num()
                .map_err(self.step("report its queue count"))?
        } else {
            1
        };
        if u64::from(queues) > max_queues {
            return Err(ConnectError::TooManyQueues {
                socket: self.socket.clone(),
                requested: queues,
                max: max_queues,
            });
        }
        let (_, config) = self
            .frontend
            .get_config(
                0,
                CONFIG_LEN as u32,
                VhostUserConfigFlags::WRITABLE,
                &[0; CONFIG_LEN],
            )
            .map_err(self.step("report the disk configuration (GET_CONFIG)"))?;
        self.backend_features = features;
        self.config = config;
        Ok(())
    }

    /// The socket, to watch for the backend hanging up.
    pub fn socket_fd(&self) -> RawFd {
        self.frontend.as_raw_fd()
    }

    /// Passes a configuration-space write on to the backend.
    pub fn write_config(&mut self, offset: u32, data: &[u8]) -> Result<(), vhost::Error> {
        self.frontend
            .set_config(offset, VhostUserConfigFlags::WRITABLE, data)
    }

    /// Hands the backend guest memory and the driver's rings and lets it run.
    ///
    /// `resume` says the rings already hold requests from an earlier session:
    /// each ring then restarts at its used index, so requests the previous
    /// backend took but never completed are served again.
    pub fn start(
        &mut self,
        memory: &GuestMemoryMmap,
        features: u64,
        queues: &[QueueLayout],
        call: &EventFd,
        kicks: &[EventFd],
        resume: bool,
    ) -> Result<(), vhost::Error> {
        // The guest may have accepted `RO` that Strata added (`readonly`);
        // the backend only hears of features it offered.
        let features = features & self.backend_features;
        self.frontend
            .set_features(features | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits())?;
        let regions = memory
            .iter()
            .map(VhostUserMemoryRegionInfo::from_guest_region)
            .collect::<Result<Vec<_>, _>>()?;
        self.frontend.set_mem_table(&regions)?;
        for ((index, queue), kick) in queues.iter().enumerate().zip(kicks) {
            if !queue.ready {
                continue;
            }
            let host = |addr: u64| {
                memory
                    .get_host_address(GuestAddress(addr))
                    .map(|ptr| ptr as u64)
                    .map_err(|_| vhost::Error::InvalidGuestMemory)
            };
            let base = if resume {
                memory
                    .read_obj::<u16>(GuestAddress(queue.used + 2))
                    .map_err(|_| vhost::Error::InvalidGuestMemory)?
            } else {
                0
            };
            self.frontend.set_vring_num(index, queue.size)?;
            self.frontend.set_vring_addr(
                index,
                &VringConfigData {
                    queue_max_size: queue.max_size,
                    queue_size: queue.size,
                    flags: 0,
                    desc_table_addr: host(queue.desc)?,
                    used_ring_addr: host(queue.used)?,
                    avail_ring_addr: host(queue.avail)?,
                    log_addr: None,
                },
            )?;
            self.frontend.set_vring_base(index, base)?;
            self.frontend.set_vring_call(index, call)?;
            self.frontend.set_vring_kick(index, kick)?;
            self.frontend.set_vring_enable(index, true)?;
            if resume {
                // The dead backend consumed the guest's last kick, and with
                // EVENT_IDX the guest may not kick again until the backend
                // moves `avail_event`: wake the new one up to look.
                let _ = kick.write(1);
            }
        }
        Ok(())
    }

    /// Stops the backend's rings after the driver reset the device.
    pub fn stop(&mut self, queues: &[QueueLayout]) {
        for (index, queue) in queues.iter().enumerate() {
            if queue.ready {
                let _ = self.frontend.set_vring_enable(index, false);
                // GET_VRING_BASE is what makes a backend stop a ring.
                if let Err(e) = self.frontend.get_vring_base(index) {
                    log::warn!(
                        "vhost-user backend at {}: stopping queue {index}: {e}",
                        self.socket.display()
                    );
                }
            }
        }
    }
}
