//! The VMM thread's event loop: it waits for a vCPU to finish or for a
//! termination signal, whichever comes first.
//!
//! SIGINT and SIGTERM are blocked in every thread and read from a signalfd
//! here, so a Ctrl-C never interrupts a device emulation half-way: the VMM
//! stops the vCPUs in order and exits with a status that names the signal.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

/// Signals that stop the VM.
pub const TERMINATION_SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

/// What woke the VMM thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmmWake {
    /// A vCPU thread ended; its reason is on the vCPU channel.
    VcpuExited,
    /// A termination signal arrived.
    Signal(i32),
}

/// Blocks the termination signals in the calling thread (and so in every
/// thread it starts afterwards) and returns a signalfd that reads them.
pub fn termination_signalfd() -> std::io::Result<OwnedFd> {
    // SAFETY: an all-zero sigset_t is a valid value to pass to sigemptyset.
    let mut mask: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `mask` is a valid sigset_t owned by this frame.
    unsafe { libc::sigemptyset(&mut mask) };
    for sig in TERMINATION_SIGNALS {
        // SAFETY: as above; `sig` is a valid signal number.
        unsafe { libc::sigaddset(&mut mask, sig) };
    }
    // SAFETY: `mask` is initialised; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &mask, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    // SAFETY: `mask` is initialised; -1 asks for a new descriptor.
    let fd = unsafe { libc::signalfd(-1, &mask, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: signalfd returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The subscriber for the VMM thread's two wake-up sources.
pub struct VmmEvents {
    vcpu_exit: EventFd,
    signals: OwnedFd,
    wake: Option<VmmWake>,
}

impl VmmEvents {
    /// Watches `vcpu_exit` (written by vCPU threads) and `signals`.
    pub fn new(vcpu_exit: EventFd, signals: OwnedFd) -> Self {
        Self {
            vcpu_exit,
            signals,
            wake: None,
        }
    }

    /// What happened, once something has.
    pub fn take_wake(&mut self) -> Option<VmmWake> {
        self.wake.take()
    }

    fn read_signal(&self) -> Option<i32> {
        // SAFETY: all-zero bytes are a valid signalfd_siginfo.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let len = size_of::<libc::signalfd_siginfo>();
        // SAFETY: `info` is a writable buffer of `len` bytes for the whole call.
        let n = unsafe { libc::read(self.signals.as_raw_fd(), (&raw mut info).cast(), len) };
        (n == len as isize).then_some(info.ssi_signo as i32)
    }
}

impl MutEventSubscriber for VmmEvents {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.fd() == self.vcpu_exit.as_raw_fd() {
            let _ = self.vcpu_exit.read();
            self.wake = Some(VmmWake::VcpuExited);
        } else if events.fd() == self.signals.as_raw_fd() {
            if let Some(sig) = self.read_signal() {
                self.wake = Some(VmmWake::Signal(sig));
            }
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        for fd in [self.vcpu_exit.as_raw_fd(), self.signals.as_raw_fd()] {
            if let Err(e) = ops.add(Events::new_raw(fd, EventSet::IN)) {
                log::error!("cannot watch fd {fd} in the VMM event loop: {e:?}");
            }
        }
    }
}
