//! A thread per disk that notices its backend hanging up and, with
//! `reconnect`, brings a returning backend back into the running VM.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{Connection, VhostUserBlk};
use crate::devices::virtio_mmio::VirtioMmio;

/// How long one wait for a hang-up lasts before the stop flag is checked.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Pause between attempts to reach a backend that is away.
const RECONNECT_INTERVAL: Duration = Duration::from_millis(200);

/// A disk on its transport, shared by the vCPUs and the watcher.
pub type SharedDisk = Arc<Mutex<VirtioMmio<VhostUserBlk>>>;

fn lock(disk: &SharedDisk) -> MutexGuard<'_, VirtioMmio<VhostUserBlk>> {
    disk.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts watching `disk` until `stop` is set.
pub fn spawn(disk: SharedDisk, stop: Arc<AtomicBool>) -> std::io::Result<JoinHandle<()>> {
    let name = format!("disk-watch{}", lock(&disk).device().index);
    std::thread::Builder::new()
        .name(name)
        .spawn(move || watch(&disk, &stop))
}

fn watch(disk: &SharedDisk, stop: &AtomicBool) {
    let (label, socket, reconnect, queues) = {
        let disk = lock(disk);
        let device = disk.device();
        (
            device.label(),
            device.config().socket.clone(),
            device.config().reconnect,
            device.config().queues,
        )
    };
    while !stop.load(Ordering::Acquire) {
        let fd = lock(disk).device().socket_fd();
        match fd {
            Some(fd) => {
                if hung_up(fd) {
                    lock(disk).device_mut().disconnected();
                    if reconnect {
                        log::warn!(
                            "{label}: the vhost-user backend went away; the guest's I/O on this disk waits while Strata reconnects"
                        );
                    } else {
                        log::warn!(
                            "{label}: the vhost-user backend went away; the guest's I/O on this disk waits for good (start with reconnect to reconnect)"
                        );
                        return;
                    }
                }
            }
            None => match Connection::open(&socket, queues) {
                Ok(connection) => {
                    let mut disk = lock(disk);
                    let active = disk.active_state().map(|(f, q)| (f, q.to_vec()));
                    match disk.device_mut().reconnected(connection, active) {
                        Ok(()) => log::warn!("{label}: reconnected to the vhost-user backend"),
                        Err(why) => {
                            drop(disk);
                            log::warn!("{label}: reconnecting: {why}");
                            std::thread::sleep(RECONNECT_INTERVAL);
                        }
                    }
                }
                Err(e) => {
                    log::debug!("{label}: reconnect attempt: {e}");
                    std::thread::sleep(RECONNECT_INTERVAL);
                }
            },
        }
    }
}

/// Waits up to [`POLL_INTERVAL`] for the peer of socket `fd` to hang up.
fn hung_up(fd: std::os::fd::RawFd) -> bool {
    let mut pollfd = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: `pollfd` is one valid, writable entry; the descriptor stays
    // open for the call because only this thread replaces the connection.
    let ready = unsafe { libc::poll(&mut pollfd, 1, POLL_INTERVAL.as_millis() as i32) };
    ready > 0 && pollfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}
