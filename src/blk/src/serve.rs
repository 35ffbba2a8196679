//! Serving one disk on one Unix socket, connection after connection.
//!
//! A vhost-user connection carries one VMM's session. When the VMM goes away
//! (guest shut down, VMM killed) the backend keeps its disk open and accepts
//! the next connection on the same socket, so a VMM started with
//! `reconnect` finds it again.

use std::path::Path;

use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use crate::backend::BlkBackend;

/// Serving failed in a way that retrying will not mend.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot start the vhost-user daemon for {socket}: {reason}")]
    Daemon { socket: String, reason: String },
    #[error("cannot listen on {socket}: {reason}")]
    Listen { socket: String, reason: String },
}

/// Serves `backend`'s disk on `socket` until the process ends: one
/// connection at a time, each in a fresh vhost-user session with a fresh
/// backend (see [`BlkBackend::for_next_session`]): the last session's worker
/// exit events have fired and would stop the new session's workers at once.
pub fn serve_forever(name: &str, backend: &BlkBackend, socket: &Path) -> Result<(), ServeError> {
    let socket_name = socket.display().to_string();
    loop {
        let session = backend.for_next_session().map_err(|e| ServeError::Daemon {
            socket: socket_name.clone(),
            reason: e.to_string(),
        })?;
        let memory = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let mut daemon = VhostUserDaemon::new(name.to_string(), session, memory).map_err(|e| {
            ServeError::Daemon {
                socket: socket_name.clone(),
                reason: e.to_string(),
            }
        })?;
        let result = daemon.serve(socket);
        backend.session_ended();
        match result {
            Ok(()) => log::info!("{socket_name}: client disconnected; waiting for the next one"),
            Err(e @ vhost_user_backend::Error::CreateVhostUserListener(_)) => {
                return Err(ServeError::Listen {
                    socket: socket_name,
                    reason: e.to_string(),
                });
            }
            Err(e) => log::warn!(
                "{socket_name}: session ended with an error: {e}; waiting for the next client"
            ),
        }
    }
}
