//! Test-only helpers for Strata's block-device tests: a real Linux guest as
//! the vhost-user-blk client, and QEMU's own backend to compare against.
//!
//! ```text
//!   tests/linux/build-guest.sh ──► <target>/linux-guest/{vmlinux, initramfs.cpio.gz}
//!                                          │  LinuxGuestKit::ensure()
//!                                          ▼
//!   QemuVhostUserBlk ── qemu-system-x86_64 -accel tcg ──(vhost-user socket)──► backend
//!        │  serial console: SIZE / SUM / WROTE / STRATA-DONE records          (strata blk serve,
//!        ▼                                                                     or QemuStorageDaemon)
//!   GuestRun::report() ──► GuestReport
//! ```
//!
//! The guest runs under TCG, not KVM: it needs no `/dev/kvm` and boots the
//! same everywhere, in a few seconds. The records it prints are described in
//! `tests/linux/guest-init.sh`.
//!
//! [`blkcheck`] is the host side of the bare-metal `blkcheck` guest image
//! (checksums, write pattern, its serial output parsed), for tests that run
//! it under QEMU, Cloud Hypervisor or Strata's own VMM.

pub mod blkcheck;
mod data;
mod guest;
mod kit;
mod process;
mod records;
mod storage_daemon;

pub use data::write_pseudo_random;
pub use guest::{GuestRun, QemuVhostUserBlk};
pub use kit::LinuxGuestKit;
pub use process::host_sha256;
pub use records::{DiskSize, DiskSum, GuestReport, Wrote};
pub use storage_daemon::{DiskFormat, QemuStorageDaemon};
