//! A register dump for crash reports.

use std::fmt;

use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use kvm_ioctls::VcpuFd;

/// The registers of one vCPU at the moment it stopped.
#[derive(Clone, Debug, Default)]
pub struct RegisterDump {
    /// Index of the vCPU.
    pub index: u32,
    /// General registers, if KVM returned them.
    pub regs: Option<kvm_regs>,
    /// Special registers, if KVM returned them.
    pub sregs: Option<kvm_sregs>,
}

impl RegisterDump {
    /// Reads the registers of `vcpu`; a register set KVM will not give is left out.
    pub fn capture(index: u32, vcpu: &VcpuFd) -> Self {
        Self {
            index,
            regs: vcpu.get_regs().ok(),
            sregs: vcpu.get_sregs().ok(),
        }
    }
}

fn segment(f: &mut fmt::Formatter<'_>, name: &str, s: &kvm_segment) -> fmt::Result {
    write!(
        f,
        " {name}={:#06x}(base={:#x} limit={:#x} l={} db={})",
        s.selector, s.base, s.limit, s.l, s.db
    )
}

impl fmt::Display for RegisterDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "vCPU {} registers:", self.index)?;
        match &self.regs {
            Some(r) => {
                writeln!(
                    f,
                    "  rip={:#018x} rsp={:#018x} rflags={:#010x}",
                    r.rip, r.rsp, r.rflags
                )?;
                writeln!(
                    f,
                    "  rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}",
                    r.rax, r.rbx, r.rcx, r.rdx
                )?;
                writeln!(
                    f,
                    "  rsi={:#018x} rdi={:#018x} rbp={:#018x}",
                    r.rsi, r.rdi, r.rbp
                )?;
                writeln!(
                    f,
                    "  r8 ={:#018x} r9 ={:#018x} r10={:#018x} r11={:#018x}",
                    r.r8, r.r9, r.r10, r.r11
                )?;
                writeln!(
                    f,
                    "  r12={:#018x} r13={:#018x} r14={:#018x} r15={:#018x}",
                    r.r12, r.r13, r.r14, r.r15
                )?;
            }
            None => writeln!(f, "  (general registers unavailable)")?,
        }
        match &self.sregs {
            Some(s) => {
                writeln!(
                    f,
                    "  cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x}",
                    s.cr0, s.cr2, s.cr3, s.cr4, s.efer
                )?;
                write!(f, " ")?;
                segment(f, "cs", &s.cs)?;
                segment(f, "ss", &s.ss)?;
                writeln!(f)?;
                write!(
                    f,
                    "  gdt={:#x}/{:#x} idt={:#x}/{:#x}",
                    s.gdt.base, s.gdt.limit, s.idt.base, s.idt.limit
                )?;
            }
            None => write!(f, "  (special registers unavailable)")?,
        }
        Ok(())
    }
}
