//! Strata's virtual machine monitor.
//!
//! Builds a KVM virtual machine from the rust-vmm crates and runs it:
//! [`kvm`] opens `/dev/kvm`, [`memory`] backs guest RAM with memfds,
//! [`boot`] loads an ELF (PVH) or bzImage kernel, [`vcpu`] sets up and runs
//! vCPUs, [`devices`] emulates the serial console and debug-exit port, and
//! [`vm`] ties them together around an `event-manager` loop.
//!
//! The entry point is [`run_vm`]. The memory map is in [`layout`].

pub mod boot;
pub mod config;
pub mod devices;
pub mod events;
pub mod kvm;
pub mod layout;
pub mod memory;
pub mod vcpu;
pub mod vm;

pub use boot::KernelSource;
pub use config::{VmConfig, parse_meminfo_kib};
pub use devices::SerialOutput;
pub use vm::{VmError, VmOutcome, VmReport, run_vm};
