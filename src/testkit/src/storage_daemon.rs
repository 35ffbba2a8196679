//! `qemu-storage-daemon` serving an image over vhost-user-blk: the reference
//! backend, to prove the guest kit works and to compare Strata against.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::process::{Transcript, kill, require_tool};

/// How long the daemon may take to create its socket.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);

/// The image format QEMU's block layer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

impl DiskFormat {
    fn driver(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

/// A running daemon; dropping it kills the daemon.
pub struct QemuStorageDaemon {
    child: Child,
    socket: PathBuf,
    stderr: Arc<Transcript>,
}

impl QemuStorageDaemon {
    /// Serves `image` (writable, one queue) on a Unix socket at `socket`
    /// and returns once the socket exists.
    pub fn serve(image: &Path, format: DiskFormat, socket: &Path) -> Result<Self, String> {
        Self::serve_with(image, format, socket, 1, true)
    }

    /// Like [`serve`](Self::serve), with `num_queues` virtqueues and a
    /// choice of read-only.
    pub fn serve_with(
        image: &Path,
        format: DiskFormat,
        socket: &Path,
        num_queues: u16,
        writable: bool,
    ) -> Result<Self, String> {
        let daemon = require_tool("qemu-storage-daemon", "it serves the reference disk")?;
        if socket.exists() {
            std::fs::remove_file(socket)
                .map_err(|e| format!("cannot remove stale {}: {e}", socket.display()))?;
        }
        let writable = if writable { "on" } else { "off" };
        let mut child = Command::new(daemon)
            .arg("--blockdev")
            .arg(format!(
                "driver=file,node-name=file0,filename={}",
                image.display()
            ))
            .arg("--blockdev")
            .arg(format!(
                "driver={},node-name=disk0,file=file0",
                format.driver()
            ))
            .arg("--export")
            .arg(format!(
                "type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path={},\
                 writable={writable},num-queues={num_queues}",
                socket.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start qemu-storage-daemon: {e}"))?;
        let Some(stderr) = child.stderr.take() else {
            kill(&mut child);
            return Err("qemu-storage-daemon started without its stderr pipe".to_owned());
        };
        let daemon = QemuStorageDaemon {
            child,
            socket: socket.to_path_buf(),
            stderr: Transcript::follow(stderr),
        };
        daemon.wait_for_socket()
    }

    fn wait_for_socket(mut self) -> Result<Self, String> {
        let deadline = Instant::now() + SOCKET_TIMEOUT;
        loop {
            if self.socket.exists() {
                return Ok(self);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.stderr.wait_closed(Duration::from_secs(1));
                return Err(format!(
                    "qemu-storage-daemon exited ({status}) before creating {}: {}",
                    self.socket.display(),
                    self.stderr.text().trim()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "qemu-storage-daemon did not create {} within {SOCKET_TIMEOUT:?}",
                    self.socket.display()
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The vhost-user socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Stops the daemon, so the image file is complete and unlocked.
    pub fn stop(mut self) {
        kill(&mut self.child);
    }
}

impl Drop for QemuStorageDaemon {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}
