//! The Linux guest under QEMU (TCG) with one virtio disk per vhost-user
//! socket: the client side of every vhost-user-blk test.
//!
//! Disks appear in the guest as `vda`, `vdb`, ... in the order they were
//! added. QEMU exits when `/init` powers off (`-no-reboot` turns a kernel
//! panic into an exit too).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::kit::LinuxGuestKit;
use crate::process::{Transcript, kill, require_tool, wait_with_deadline};
use crate::records::GuestReport;

/// Builds the QEMU command line and starts the guest.
#[derive(Debug, Clone)]
pub struct QemuVhostUserBlk {
    kit: LinuxGuestKit,
    sockets: Vec<PathBuf>,
    num_queues: u16,
    memory_mib: u32,
    reconnect: bool,
    cmdline: Vec<String>,
}

impl QemuVhostUserBlk {
    /// A guest with 256 MiB of RAM, one queue per disk and no disks yet.
    pub fn new(kit: &LinuxGuestKit) -> QemuVhostUserBlk {
        QemuVhostUserBlk {
            kit: kit.clone(),
            sockets: Vec::new(),
            num_queues: 1,
            memory_mib: 256,
            reconnect: false,
            cmdline: Vec::new(),
        }
    }

    /// Adds a virtio disk served on the vhost-user socket at `socket`.
    pub fn disk(mut self, socket: impl AsRef<Path>) -> Self {
        self.sockets.push(socket.as_ref().to_path_buf());
        self
    }

    /// Virtqueues per disk (the backend must offer at least as many).
    pub fn num_queues(mut self, queues: u16) -> Self {
        self.num_queues = queues;
        self
    }

    /// Guest RAM in MiB, all of it in a shared memfd the backend maps.
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Makes QEMU reconnect (every second) when a backend's socket closes,
    /// instead of failing; for tests that restart the backend.
    pub fn reconnect(mut self, reconnect: bool) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// Appends words to the kernel command line, e.g. `strata.test=sums`.
    pub fn append(mut self, words: &str) -> Self {
        self.cmdline
            .extend(words.split_whitespace().map(str::to_owned));
        self
    }

    /// The QEMU arguments, without the program name.
    pub fn args(&self) -> Vec<String> {
        let mem = self.memory_mib;
        let mut cmdline = vec![
            "console=ttyS0".to_owned(),
            "quiet".to_owned(),
            "panic=-1".to_owned(),
            format!("strata.disks={}", self.sockets.len()),
        ];
        cmdline.extend(self.cmdline.iter().cloned());
        let mut args: Vec<String> = [
            "-accel",
            "tcg",
            "-M",
            "pc",
            "-m",
            &format!("{mem}M"),
            "-object",
            &format!("memory-backend-memfd,id=mem,size={mem}M,share=on"),
            "-machine",
            "memory-backend=mem",
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-no-reboot",
            "-serial",
            "stdio",
            "-kernel",
            &self.kit.vmlinux.to_string_lossy(),
            "-initrd",
            &self.kit.initramfs.to_string_lossy(),
            "-append",
            &cmdline.join(" "),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        for (n, socket) in self.sockets.iter().enumerate() {
            let reconnect = if self.reconnect { ",reconnect=1" } else { "" };
            args.push("-chardev".to_owned());
            args.push(format!(
                "socket,id=chr{n},path={}{reconnect}",
                socket.display()
            ));
            args.push("-device".to_owned());
            args.push(format!(
                "vhost-user-blk-pci,chardev=chr{n},num-queues={}",
                self.num_queues
            ));
        }
        args
    }

    /// Starts QEMU. Its serial console (stdout) and stderr are collected in
    /// the background.
    pub fn spawn(&self) -> Result<GuestRun, String> {
        let qemu = require_tool("qemu-system-x86_64", "it runs the Linux test guest")?;
        let mut child = Command::new(qemu)
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start qemu-system-x86_64: {e}"))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            kill(&mut child);
            return Err("qemu-system-x86_64 started without its output pipes".to_owned());
        };
        Ok(GuestRun {
            child,
            serial: Transcript::follow(stdout),
            stderr: Transcript::follow(stderr),
            started: Instant::now(),
        })
    }
}

/// A running (or finished) guest. Dropping it kills QEMU.
pub struct GuestRun {
    child: Child,
    serial: Arc<Transcript>,
    stderr: Arc<Transcript>,
    started: Instant,
}

impl GuestRun {
    /// Waits for a serial line starting with `prefix` and returns it.
    pub fn wait_for_line(&self, prefix: &str, timeout: Duration) -> Result<String, String> {
        self.serial
            .wait_for_prefix(prefix, Instant::now() + timeout)
            .ok_or_else(|| {
                format!(
                    "no serial line starting with {prefix:?} within {timeout:?}\n{}",
                    self.transcript()
                )
            })
    }

    /// The serial console so far.
    pub fn output(&self) -> String {
        self.serial.text()
    }

    /// What QEMU wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Waits for QEMU to exit, killing it after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let result = wait_with_deadline(&mut self.child, timeout, "qemu-system-x86_64");
        self.serial.wait_closed(Duration::from_secs(1));
        self.stderr.wait_closed(Duration::from_secs(1));
        result.map_err(|e| format!("{e}\n{}", self.transcript()))
    }

    /// The records parsed from the serial console so far.
    pub fn report(&self) -> GuestReport {
        GuestReport::parse(&self.output())
    }

    /// Waits for QEMU to exit and returns the report, failing unless QEMU
    /// exited cleanly and the guest passed every routine.
    pub fn finish(&mut self, timeout: Duration) -> Result<GuestReport, String> {
        let status = self.wait(timeout)?;
        let report = self.report();
        if !status.success() || !report.passed() {
            return Err(format!(
                "guest run failed (qemu {status}, done {:?}, failures {:?})\n{}",
                report.done,
                report.failures,
                self.transcript()
            ));
        }
        Ok(report)
    }

    /// Time since QEMU was started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Serial console and stderr, for failure messages.
    fn transcript(&self) -> String {
        format!(
            "--- serial ---\n{}--- qemu stderr ---\n{}",
            self.output(),
            self.stderr()
        )
    }
}

impl Drop for GuestRun {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}
