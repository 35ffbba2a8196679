//! Building a VM from a [`VmConfig`] and running it to its end.
//!
//! ```text
//!  VMM thread                               vCPU threads (one per vCPU)
//!  ──────────                               ───────────────────────────
//!  validate config, open /dev/kvm
//!  block SIGINT/SIGTERM → signalfd
//!  create VM, irqchip, PIT
//!  guest RAM (memfd per region) → KVM slots
//!  load kernel + boot structures
//!  devices on the port bus, irqfds
//!  create vCPUs ───────────────spawn──────► KVM_RUN loop ─┐ port I/O → bus
//!  event loop: wait for ◄──── exit eventfd ───────────────┘ debug-exit / crash
//!    vCPU exit | signal
//!  set stop flag, kick vCPUs (SIGRTMIN) ──► leave KVM_RUN, thread ends
//!  join, report outcome
//! ```
//!
//! The `Vm` owns every KVM object and is touched only by the VMM thread; vCPU
//! threads own their `VcpuFd` and share only the immutable device bus.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use kvm_bindings::{KVM_PIT_SPEAKER_DUMMY, kvm_pit_config};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use strata_guest_abi::{
    DEBUG_EXIT_PORT, DEBUG_EXIT_PORT_COUNT, SERIAL_COM1_IRQ, SERIAL_COM1_PORT, SERIAL_PORT_COUNT,
};
use vmm_sys_util::eventfd::EventFd;

use crate::boot::{LoadKernelError, load_kernel};
use crate::config::{ConfigError, VmConfig, host_memory_mib};
use crate::devices::vhost_user_blk::watch::{self, SharedDisk};
use crate::devices::vhost_user_blk::{DiskConfig, DiskError, VhostUserBlk};
use crate::devices::virtio_mmio::{VIRTIO_MMIO_SIZE, VirtioMmio};
use crate::devices::{BusOverlap, DebugExit, MmioBus, PioBus, SerialConsole, SerialOutputError};
use crate::events::{VmmEvents, VmmWake, termination_signalfd};
use crate::kvm::{KvmOpenError, open_kvm};
use crate::layout::{KVM_TSS_ADDRESS, VIRTIO_MMIO_BASE, VIRTIO_MMIO_FIRST_GSI, ram_ranges};
use crate::memory::{GuestMemoryError, GuestRam};
use crate::vcpu::{
    CrashKind, RegisterDump, VcpuSetupError, VcpuShared, VcpuStop, create_vcpus, run_vcpu,
};

/// Why a VM could not be started (or the VMM failed while running it).
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Kvm(#[from] KvmOpenError),
    #[error("cannot read this host's memory size from /proc/meminfo")]
    HostMemory,
    #[error("KVM refused to {step}: {source}")]
    VmSetup {
        step: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error(transparent)]
    Memory(#[from] GuestMemoryError),
    #[error(transparent)]
    LoadKernel(#[from] LoadKernelError),
    #[error(transparent)]
    Serial(#[from] SerialOutputError),
    #[error(transparent)]
    Bus(#[from] BusOverlap),
    #[error(transparent)]
    Vcpu(#[from] VcpuSetupError),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("cannot set up the VMM's {what}: {source}")]
    Host {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("the VMM's event loop failed: {0:?}")]
    EventLoop(event_manager::Error),
    #[error("cannot start a thread for vCPU {index}: {source}")]
    SpawnVcpu { index: u32, source: std::io::Error },
}

/// How the VM ended.
#[derive(Debug)]
pub enum VmOutcome {
    /// The guest wrote this code to the debug-exit port.
    GuestExit(u8),
    /// The guest crashed.
    Crashed {
        /// What went wrong.
        kind: CrashKind,
        /// The crashing vCPU's registers.
        registers: Box<RegisterDump>,
    },
    /// A termination signal stopped the VM.
    Signalled(i32),
    /// `KVM_RUN` failed on a vCPU.
    RunFailed {
        /// The vCPU.
        index: u32,
        /// The error KVM returned.
        source: kvm_ioctls::Error,
    },
}

/// The outcome plus what the VMM measured on the way.
#[derive(Debug)]
pub struct VmReport {
    /// How the VM ended.
    pub outcome: VmOutcome,
    /// CLOCK_MONOTONIC nanoseconds of the guest's first port access, if any.
    pub first_io_ns: Option<u64>,
    /// Bytes of guest RAM resident when the VM ended.
    pub guest_resident_bytes: u64,
}

/// Creates the VM described by `config`, runs it until it ends, and reports.
pub fn run_vm(config: &VmConfig) -> Result<VmReport, VmError> {
    let host_mib = host_memory_mib().ok_or(VmError::HostMemory)?;
    let kvm = open_kvm()?;
    config.validate(
        host_mib,
        u32::try_from(kvm.get_max_vcpus()).unwrap_or(u32::MAX),
    )?;

    let signals = termination_signalfd().map_err(|source| VmError::Host {
        what: "signal handling",
        source,
    })?;
    install_kick_handler()?;

    let vm = create_vm(&kvm)?;
    let ram = GuestRam::new(&ram_ranges(config.memory_bytes()))?;
    ram.register_with(&vm)?;
    let disks = attach_disks(&vm, &ram, &config.disks)?;
    let cmdline = kernel_cmdline(&config.cmdline, &disks);
    let entry = load_kernel(ram.memory(), ram.size(), &config.kernel, &cmdline)?;
    let bus = Arc::new(build_bus(&vm, config)?);
    let mmio = Arc::new(build_mmio_bus(&disks)?);
    let vcpus = create_vcpus(&kvm, &vm, ram.memory(), config.vcpus, entry)?;

    let shared = VcpuShared {
        bus,
        mmio,
        stop: Arc::new(AtomicBool::new(false)),
        first_io_ns: Arc::new(AtomicU64::new(0)),
    };
    let vcpu_exit = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| VmError::Host {
        what: "vCPU exit eventfd",
        source,
    })?;
    let exit_notifier = vcpu_exit.try_clone().map_err(|source| VmError::Host {
        what: "vCPU exit eventfd",
        source,
    })?;
    let events = Arc::new(Mutex::new(VmmEvents::new(vcpu_exit, signals)));
    let mut event_manager: EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>> =
        EventManager::new().map_err(VmError::EventLoop)?;
    event_manager.add_subscriber(events.clone());

    let mut watchers = Watchers::default();
    for disk in &disks {
        let handle =
            watch::spawn(disk.device.clone(), watchers.stop.clone()).map_err(|source| {
                VmError::Host {
                    what: "disk watcher thread",
                    source,
                }
            })?;
        watchers.threads.push(handle);
    }

    let (stops_tx, stops_rx) = mpsc::channel();
    let mut threads = Vec::with_capacity(vcpus.len());
    for (index, vcpu) in (0u32..).zip(vcpus) {
        let handle = spawn_vcpu(
            index,
            vcpu,
            shared.clone(),
            stops_tx.clone(),
            &exit_notifier,
        );
        match handle {
            Ok(handle) => threads.push(handle),
            Err(e) => {
                stop_vcpus(&shared.stop, threads);
                return Err(e);
            }
        }
    }

    let wake = loop {
        event_manager.run().map_err(VmError::EventLoop)?;
        let woken = events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take_wake();
        if let Some(wake) = woken {
            break wake;
        }
    };
    let outcome = match wake {
        VmmWake::Signal(sig) => VmOutcome::Signalled(sig),
        VmmWake::VcpuExited => match stops_rx.recv() {
            Ok((_, VcpuStop::GuestExit(code))) => VmOutcome::GuestExit(code),
            Ok((_, VcpuStop::Crash(kind, registers))) => VmOutcome::Crashed { kind, registers },
            Ok((index, VcpuStop::RunFailed(source))) => VmOutcome::RunFailed { index, source },
            // A vCPU only reports a stop it was not asked for; the channel
            // cannot be empty once the exit eventfd fired.
            Ok((index, VcpuStop::Stopped)) => VmOutcome::RunFailed {
                index,
                source: kvm_ioctls::Error::new(libc::ECANCELED),
            },
            Err(_) => VmOutcome::RunFailed {
                index: 0,
                source: kvm_ioctls::Error::new(libc::EIO),
            },
        },
    };
    stop_vcpus(&shared.stop, threads);
    drop(watchers);
    let first_io_ns = match shared.first_io_ns.load(Ordering::Relaxed) {
        0 => None,
        ns => Some(ns),
    };
    Ok(VmReport {
        outcome,
        first_io_ns,
        guest_resident_bytes: ram.resident_bytes(),
    })
}

fn create_vm(kvm: &Kvm) -> Result<VmFd, VmError> {
    let step = |step| move |source| VmError::VmSetup { step, source };
    let vm = kvm.create_vm().map_err(step("create a VM"))?;
    vm.set_tss_address(KVM_TSS_ADDRESS as usize)
        .map_err(step("set the TSS address"))?;
    vm.create_irq_chip()
        .map_err(step("create the in-kernel irqchip"))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit)
        .map_err(step("create the in-kernel PIT"))?;
    Ok(vm)
}

fn build_bus(vm: &VmFd, config: &VmConfig) -> Result<PioBus, VmError> {
    let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| VmError::Host {
        what: "serial interrupt eventfd",
        source,
    })?;
    vm.register_irqfd(&serial_irq, SERIAL_COM1_IRQ)
        .map_err(|source| VmError::VmSetup {
            step: "route the serial interrupt",
            source,
        })?;
    let mut bus = PioBus::default();
    let serial = SerialConsole::new(&config.serial, serial_irq)?;
    bus.insert(
        SERIAL_COM1_PORT,
        SERIAL_PORT_COUNT,
        Arc::new(Mutex::new(serial)),
    )?;
    bus.insert(
        DEBUG_EXIT_PORT,
        DEBUG_EXIT_PORT_COUNT,
        Arc::new(Mutex::new(DebugExit)),
    )?;
    Ok(bus)
}

/// The disks' watcher threads, stopped and joined when dropped, on every
/// way out of [`run_vm`].
#[derive(Default)]
struct Watchers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Watchers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                log::error!("a disk watcher thread panicked");
            }
        }
    }
}

/// A disk on the MMIO bus.
struct AttachedDisk {
    device: SharedDisk,
    base: u64,
    gsi: u32,
}

/// Connects every disk to its backend and places it on the MMIO bus's map.
fn attach_disks(
    vm: &VmFd,
    ram: &GuestRam,
    disks: &[DiskConfig],
) -> Result<Vec<AttachedDisk>, VmError> {
    let mut attached = Vec::with_capacity(disks.len());
    for (index, (config, gsi)) in disks.iter().zip(VIRTIO_MMIO_FIRST_GSI..).enumerate() {
        let base = VIRTIO_MMIO_BASE + VIRTIO_MMIO_SIZE * index as u64;
        let device = VhostUserBlk::new(index, config.clone(), ram.memory().clone(), vm, base, gsi)?;
        let label = device.label();
        let transport = VirtioMmio::new(device, ram.memory().clone(), label);
        attached.push(AttachedDisk {
            device: Arc::new(Mutex::new(transport)),
            base,
            gsi,
        });
    }
    Ok(attached)
}

fn build_mmio_bus(disks: &[AttachedDisk]) -> Result<MmioBus, VmError> {
    let mut bus = MmioBus::default();
    for disk in disks {
        bus.insert(disk.base, VIRTIO_MMIO_SIZE, disk.device.clone())?;
    }
    Ok(bus)
}

/// The user's command line plus a `virtio_mmio.device=` word per disk.
fn kernel_cmdline(user: &str, disks: &[AttachedDisk]) -> String {
    let mut cmdline = user.trim().to_string();
    for disk in disks {
        if !cmdline.is_empty() {
            cmdline.push(' ');
        }
        cmdline.push_str(&VirtioMmio::<VhostUserBlk>::cmdline_word(
            disk.base, disk.gsi,
        ));
    }
    cmdline
}

fn spawn_vcpu(
    index: u32,
    mut vcpu: VcpuFd,
    shared: VcpuShared,
    stops: mpsc::Sender<(u32, VcpuStop)>,
    exit_notifier: &EventFd,
) -> Result<JoinHandle<()>, VmError> {
    let notifier = exit_notifier.try_clone().map_err(|source| VmError::Host {
        what: "vCPU exit eventfd",
        source,
    })?;
    std::thread::Builder::new()
        .name(format!("vcpu{index}"))
        .spawn(move || {
            let stop = run_vcpu(index, &mut vcpu, &shared);
            if matches!(stop, VcpuStop::Stopped) {
                return;
            }
            // The VMM thread may already be gone if another vCPU ended first.
            let _ = stops.send((index, stop));
            let _ = notifier.write(1);
        })
        .map_err(|source| VmError::SpawnVcpu { index, source })
}

/// The signal that knocks a vCPU thread out of `KVM_RUN`.
fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn ignore_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

fn install_kick_handler() -> Result<(), VmError> {
    vmm_sys_util::signal::register_signal_handler(kick_signal(), ignore_kick).map_err(|e| {
        VmError::Host {
            what: "vCPU kick signal",
            source: std::io::Error::from_raw_os_error(e.errno()),
        }
    })
}

/// Asks every vCPU to stop and waits until all threads have ended.
///
/// A kick that lands just before a thread enters `KVM_RUN` is lost, so the
/// kick is repeated until the thread is seen to finish.
fn stop_vcpus(stop: &AtomicBool, threads: Vec<JoinHandle<()>>) {
    use std::os::unix::thread::JoinHandleExt;
    stop.store(true, Ordering::Release);
    for handle in threads {
        while !handle.is_finished() {
            // SAFETY: the handle is not yet joined, so its pthread_t is valid; the
            // kick signal has a handler installed that does nothing.
            unsafe { libc::pthread_kill(handle.as_pthread_t(), kick_signal()) };
            std::thread::sleep(Duration::from_micros(200));
        }
        if handle.join().is_err() {
            log::error!("a vCPU thread panicked");
        }
    }
}
