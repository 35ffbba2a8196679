//! vCPUs: creation, boot state, and the run loop their threads execute.
//!
//! vCPU 0 enters the kernel; the others are created in the wait-for-SIPI state
//! the in-kernel LAPIC gives them, for the guest to start.

mod dump;
mod regs;
mod run;

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};

pub use dump::RegisterDump;
pub use regs::BootTablesError;
pub use run::{CrashKind, VcpuShared, VcpuStop, monotonic_ns, run_vcpu};

use crate::boot::BootEntry;
use crate::memory::GuestMemoryMmap;

/// A vCPU could not be created or given its initial state.
#[derive(Debug, thiserror::Error)]
pub enum VcpuSetupError {
    #[error("cannot read the CPUID features KVM supports: {0}")]
    SupportedCpuid(#[source] kvm_ioctls::Error),
    #[error("vCPU {index}: {step} failed: {source}")]
    Ioctl {
        index: u32,
        step: &'static str,
        source: kvm_ioctls::Error,
    },
    #[error(transparent)]
    BootTables(#[from] BootTablesError),
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;
const CPUID_HYPERVISOR_BIT: u32 = 1 << 31;

/// Creates `count` vCPUs and puts vCPU 0 at `entry`.
pub fn create_vcpus(
    kvm: &Kvm,
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    count: u32,
    entry: BootEntry,
) -> Result<Vec<VcpuFd>, VcpuSetupError> {
    let supported = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(VcpuSetupError::SupportedCpuid)?;
    (0..count)
        .map(|index| {
            let ioctl = |step| {
                move |source| VcpuSetupError::Ioctl {
                    index,
                    step,
                    source,
                }
            };
            let vcpu = vm
                .create_vcpu(u64::from(index))
                .map_err(ioctl("KVM_CREATE_VCPU"))?;
            vcpu.set_cpuid2(&cpuid_for(&supported, index, count))
                .map_err(ioctl("KVM_SET_CPUID2"))?;
            set_lint_modes(&vcpu).map_err(ioctl("LAPIC set-up"))?;
            vcpu.set_fpu(&regs::boot_fpu())
                .map_err(ioctl("KVM_SET_FPU"))?;
            if index == 0 {
                let sregs = vcpu.get_sregs().map_err(ioctl("KVM_GET_SREGS"))?;
                vcpu.set_sregs(&regs::boot_sregs(mem, entry, sregs)?)
                    .map_err(ioctl("KVM_SET_SREGS"))?;
                vcpu.set_regs(&regs::boot_regs(entry))
                    .map_err(ioctl("KVM_SET_REGS"))?;
            }
            Ok(vcpu)
        })
        .collect()
}

/// The CPUID a vCPU reports: what KVM supports, with this vCPU's APIC id and
/// the hypervisor bit set.
fn cpuid_for(supported: &CpuId, index: u32, count: u32) -> CpuId {
    let mut cpuid = supported.clone();
    for entry in cpuid.as_mut_slice() {
        match entry.function {
            1 => {
                entry.ebx = (entry.ebx & 0x0000_ffff) | (index << 24) | ((count & 0xff) << 16);
                entry.ecx |= CPUID_HYPERVISOR_BIT;
            }
            0xb | 0x1f => entry.edx = index,
            _ => {}
        }
    }
    cpuid
}

/// Wires LINT0 to the PIC (ExtINT) and LINT1 to NMI, as firmware would.
fn set_lint_modes(vcpu: &VcpuFd) -> Result<(), kvm_ioctls::Error> {
    let mut lapic = vcpu.get_lapic()?;
    for (offset, mode) in [(APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)] {
        let bytes: Vec<u8> = lapic.regs[offset..offset + 4]
            .iter()
            .map(|b| *b as u8)
            .collect();
        let value = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let value = (value & !0x700) | (mode << 8);
        for (dst, src) in lapic.regs[offset..offset + 4]
            .iter_mut()
            .zip(value.to_le_bytes())
        {
            *dst = src as _;
        }
    }
    vcpu.set_lapic(&lapic)
}
