//! Starting and stopping the vhost-user-blk backends being measured.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::disks::StrataStore;
use crate::exit::Failure;

/// How long a backend may take to create its socket.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a backend may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// What serves the disk.
#[derive(Clone, Debug)]
pub enum BackendKind {
    /// `strata blk serve` on a Strata image.
    Strata { image: String },
    /// `strata blk serve` on a Strata image, with extra `--disk` keys
    /// (`poll=50`, `direct`, ...).
    StrataWithOptions { image: String, options: String },
    /// `qemu-storage-daemon` on a qcow2 chain (`top` is its top overlay).
    QsdQcow2 { top: PathBuf },
    /// `qemu-storage-daemon` with `null-co`: no storage at all.
    QsdNull { size: u64 },
}

/// How qemu-storage-daemon is run.
#[derive(Clone, Debug)]
pub struct QsdOptions {
    pub binary: PathBuf,
    /// `aio=` of the file driver: `threads` or `io_uring`.
    pub aio: String,
}

/// A running backend; dropping it stops it.
pub struct Backend {
    child: Child,
    name: String,
    log: PathBuf,
}

/// The last non-empty line of a backend's stderr, for error messages.
fn last_line(log: &Path) -> String {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(no output)")
        .trim()
        .to_string()
}

/// The command line of `qemu-storage-daemon` for `kind`.
pub fn qsd_command(
    options: &QsdOptions,
    kind: &BackendKind,
    socket: &Path,
    queues: u16,
) -> Command {
    let mut cmd = Command::new(&options.binary);
    match kind {
        BackendKind::QsdNull { size } => {
            cmd.arg("--blockdev").arg(format!(
                "driver=null-co,node-name=disk0,size={size},read-zeroes=on"
            ));
        }
        BackendKind::QsdQcow2 { top } => {
            // Same cache mode as Strata: buffered I/O, flushes honoured.
            cmd.arg("--blockdev").arg(format!(
                "driver=file,node-name=file0,filename={},cache.direct=off,aio={}",
                top.display(),
                options.aio
            ));
            cmd.arg("--blockdev")
                .arg("driver=qcow2,node-name=disk0,file=file0");
        }
        BackendKind::Strata { .. } | BackendKind::StrataWithOptions { .. } => {}
    }
    cmd.args(["--object", "iothread,id=iothread0", "--export"])
        .arg(format!(
            "type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path={},\
             writable=on,num-queues={queues},iothread=iothread0",
            socket.display()
        ));
    cmd
}

impl Backend {
    /// Starts a backend for `kind` on `socket` and waits for the socket.
    pub fn start(
        kind: &BackendKind,
        store: &StrataStore,
        qsd: &QsdOptions,
        socket: &Path,
        queues: u16,
        log: &Path,
    ) -> Result<Self, Failure> {
        if socket.exists() {
            std::fs::remove_file(socket)
                .map_err(|e| Failure(format!("cannot remove {}: {e}", socket.display())))?;
        }
        let strata = match kind {
            BackendKind::Strata { image } => Some((image, "")),
            BackendKind::StrataWithOptions { image, options } => Some((image, options.as_str())),
            BackendKind::QsdQcow2 { .. } | BackendKind::QsdNull { .. } => None,
        };
        let (mut cmd, name) = match strata {
            Some((image, options)) => {
                let mut disk = format!("image={image},socket={},queues={queues}", socket.display());
                if !options.is_empty() {
                    disk = format!("{disk},{options}");
                }
                (
                    store.command(&["blk", "serve", "--disk", &disk]),
                    "strata blk serve",
                )
            }
            None => (
                qsd_command(qsd, kind, socket, queues),
                "qemu-storage-daemon",
            ),
        };
        let stderr = File::create(log)
            .map_err(|e| Failure(format!("cannot create {}: {e}", log.display())))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| {
                Failure(format!(
                    "cannot start {}: {e}",
                    cmd.get_program().to_string_lossy()
                ))
            })?;
        let mut backend = Backend {
            child,
            name: name.to_string(),
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + SOCKET_TIMEOUT;
        while !socket.exists() {
            if let Ok(Some(status)) = backend.child.try_wait() {
                return Err(Failure(format!(
                    "{name} exited ({status}) before creating {}: {}",
                    socket.display(),
                    last_line(log)
                )));
            }
            if Instant::now() >= deadline {
                return Err(Failure(format!(
                    "{name} did not create {} within {}s",
                    socket.display(),
                    SOCKET_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        backend.check_alive()?;
        Ok(backend)
    }

    /// Fails if the backend has exited.
    pub fn check_alive(&mut self) -> Result<(), Failure> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(Failure(format!(
                "{} exited ({status}): {}",
                self.name,
                last_line(&self.log)
            ))),
            Err(e) => Err(Failure(format!("{}: {e}", self.name))),
        }
    }

    /// Why the backend might have failed: its last line of output.
    pub fn describe(&self) -> String {
        format!("{}: {}", self.name, last_line(&self.log))
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        // SIGTERM first, so that `strata blk serve` flushes and exits cleanly.
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child, which has not been reaped
            // (the Child still owns it), so the pid cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
