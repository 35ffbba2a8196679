//! The loop a vCPU thread runs: `KVM_RUN`, serve the exit, repeat.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kvm_ioctls::{VcpuExit, VcpuFd};

use super::dump::RegisterDump;
use crate::devices::{MmioBus, PioAction, PioBus};

/// `kvm_run.internal.suberror` values (linux/kvm.h).
const KVM_INTERNAL_ERROR_EMULATION: u32 = 1;
const KVM_INTERNAL_ERROR_SIMUL_EX: u32 = 2;
const KVM_INTERNAL_ERROR_DELIVERY_EV: u32 = 3;

/// What everything a vCPU thread needs from the rest of the VM.
#[derive(Clone)]
pub struct VcpuShared {
    /// The port-I/O devices.
    pub bus: Arc<PioBus>,
    /// The MMIO devices.
    pub mmio: Arc<MmioBus>,
    /// Set by the VMM to ask every vCPU to leave its loop.
    pub stop: Arc<AtomicBool>,
    /// CLOCK_MONOTONIC nanoseconds of the guest's first port access; 0 until then.
    pub first_io_ns: Arc<AtomicU64>,
}

/// Why a guest crashed.
#[derive(Clone, Debug)]
pub enum CrashKind {
    /// `KVM_EXIT_SHUTDOWN`: on x86 a triple fault.
    TripleFault,
    /// `KVM_EXIT_INTERNAL_ERROR`.
    InternalError {
        /// `kvm_run.internal.suberror`.
        suberror: u32,
    },
    /// `KVM_EXIT_FAIL_ENTRY`: the CPU refused the vCPU state.
    FailEntry {
        /// Hardware reason code.
        reason: u64,
    },
    /// An exit Strata does not handle.
    UnexpectedExit(String),
}

impl fmt::Display for CrashKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CrashKind::TripleFault => write!(f, "the guest triple-faulted (KVM_EXIT_SHUTDOWN)"),
            CrashKind::InternalError { suberror } => {
                let what = match *suberror {
                    KVM_INTERNAL_ERROR_EMULATION => {
                        "KVM could not emulate an instruction (on nested or emulating hosts \
                         SSE/AVX, popcnt and crc32 are not emulated: build the guest without them)"
                    }
                    KVM_INTERNAL_ERROR_SIMUL_EX => {
                        "an exception arrived while one was being delivered"
                    }
                    KVM_INTERNAL_ERROR_DELIVERY_EV => "KVM could not deliver an event",
                    _ => "unknown cause",
                };
                write!(f, "KVM internal error, suberror {suberror}: {what}")
            }
            CrashKind::FailEntry { reason } => {
                write!(
                    f,
                    "the CPU refused to enter the guest (KVM_EXIT_FAIL_ENTRY, reason {reason:#x})"
                )
            }
            CrashKind::UnexpectedExit(exit) => write!(f, "unexpected vCPU exit {exit}"),
        }
    }
}

/// How a vCPU's loop ended.
#[derive(Debug)]
pub enum VcpuStop {
    /// The guest wrote this code to the debug-exit port.
    GuestExit(u8),
    /// The guest crashed; the registers are as they were at the exit.
    Crash(CrashKind, Box<RegisterDump>),
    /// The VMM asked the vCPU to stop.
    Stopped,
    /// `KVM_RUN` itself failed.
    RunFailed(kvm_ioctls::Error),
}

/// Reads CLOCK_MONOTONIC in nanoseconds; comparable across processes.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

fn note_first_io(shared: &VcpuShared) {
    if shared.first_io_ns.load(Ordering::Relaxed) == 0 {
        let _ = shared.first_io_ns.compare_exchange(
            0,
            monotonic_ns(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
}

fn internal_suberror(vcpu: &mut VcpuFd) -> u32 {
    let run = vcpu.get_kvm_run();
    // SAFETY: KVM filled the `internal` member of the exit union, since the exit
    // reason that brought us here is KVM_EXIT_INTERNAL_ERROR; the field is plain data.
    unsafe { run.__bindgen_anon_1.internal.suberror }
}

/// Runs `vcpu` until the guest exits, crashes, or the VMM asks it to stop.
pub fn run_vcpu(index: u32, vcpu: &mut VcpuFd, shared: &VcpuShared) -> VcpuStop {
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return VcpuStop::Stopped;
        }
        let crash = match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => {
                note_first_io(shared);
                match shared.bus.write(port, data) {
                    PioAction::Continue => continue,
                    PioAction::GuestExit(code) => return VcpuStop::GuestExit(code),
                }
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                note_first_io(shared);
                shared.bus.read(port, data);
                continue;
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                shared.mmio.read(addr, data);
                continue;
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                shared.mmio.write(addr, data);
                continue;
            }
            Ok(VcpuExit::Intr) => continue,
            Ok(VcpuExit::Shutdown) => CrashKind::TripleFault,
            Ok(VcpuExit::InternalError) => CrashKind::InternalError {
                suberror: internal_suberror(vcpu),
            },
            Ok(VcpuExit::FailEntry(reason, _)) => CrashKind::FailEntry { reason },
            Ok(other) => CrashKind::UnexpectedExit(format!("{other:?}")),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
            Err(e) => return VcpuStop::RunFailed(e),
        };
        return VcpuStop::Crash(crash, Box::new(RegisterDump::capture(index, vcpu)));
    }
}
