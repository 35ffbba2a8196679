//! Opening `/dev/kvm` and checking that it offers what Strata needs.
//!
//! Failures here are the first thing a new user meets, so each one names the
//! cause and the fix rather than an errno.

use kvm_ioctls::{Cap, Kvm};
use thiserror::Error;

/// The device node Strata opens.
pub const KVM_PATH: &str = "/dev/kvm";

/// Capabilities the VMM relies on, with what each is used for.
const REQUIRED_CAPS: &[(Cap, &str)] = &[
    (Cap::Irqchip, "in-kernel interrupt controller"),
    (Cap::Pit2, "in-kernel PIT"),
    (Cap::UserMemory, "user memory regions"),
    (Cap::Ioeventfd, "ioeventfd"),
    (Cap::Irqfd, "irqfd"),
    (Cap::ImmediateExit, "immediate exit"),
];

/// Why KVM could not be used.
#[derive(Debug, Error)]
pub enum KvmOpenError {
    #[error(
        "{KVM_PATH} does not exist: this host offers no KVM (enable virtualisation in the \
         firmware and load kvm_intel or kvm_amd, or enable nested virtualisation)"
    )]
    Missing,
    #[error(
        "no permission to open {KVM_PATH}: add your user to the group that owns it \
         (usually `kvm`) or run as root"
    )]
    PermissionDenied,
    #[error("cannot open {KVM_PATH}: {0}")]
    Open(#[source] kvm_ioctls::Error),
    #[error("{KVM_PATH} speaks KVM API version {0}; Strata needs version 12")]
    ApiVersion(i32),
    #[error("the host's KVM lacks the {0} capability Strata needs; use a newer host kernel")]
    MissingCapability(&'static str),
}

/// Opens KVM and checks the API version and the capabilities Strata uses.
pub fn open_kvm() -> Result<Kvm, KvmOpenError> {
    let kvm = Kvm::new().map_err(|e| match e.errno() {
        libc::ENOENT | libc::ENODEV | libc::ENXIO => KvmOpenError::Missing,
        libc::EACCES | libc::EPERM => KvmOpenError::PermissionDenied,
        _ => KvmOpenError::Open(e),
    })?;
    let version = kvm.get_api_version();
    if version != kvm_bindings::KVM_API_VERSION as i32 {
        return Err(KvmOpenError::ApiVersion(version));
    }
    for (cap, what) in REQUIRED_CAPS {
        if !kvm.check_extension(*cap) {
            return Err(KvmOpenError::MissingCapability(what));
        }
    }
    Ok(kvm)
}
