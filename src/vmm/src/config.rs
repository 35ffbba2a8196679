//! What a user asks for, checked before any KVM object exists.

use crate::boot::KernelSource;
use crate::devices::SerialOutput;
pub use crate::devices::vhost_user_blk::DiskConfig;
use crate::devices::vhost_user_blk::MAX_QUEUES;
use crate::layout::MAX_VIRTIO_MMIO_DEVICES;

/// Smallest guest Strata starts: boot data below 1 MiB plus a kernel above it.
pub const MIN_MEMORY_MIB: u64 = 2;
/// Most vCPUs: the one-byte APIC id and the LAPIC broadcast id bound it.
pub const MAX_VCPUS: u32 = 254;

/// A VM to run.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// The kernel image.
    pub kernel: KernelSource,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Kernel command line.
    pub cmdline: String,
    /// Where the serial console goes.
    pub serial: SerialOutput,
    /// vhost-user-blk disks, in the order the guest finds them.
    pub disks: Vec<DiskConfig>,
}

/// A configuration value is out of range.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--memory {0} MiB is too small: a guest needs at least {MIN_MEMORY_MIB} MiB")]
    MemoryTooSmall(u64),
    #[error("--memory {requested} MiB is more than this host's {host} MiB of RAM: lower --memory")]
    MemoryTooLarge { requested: u64, host: u64 },
    #[error("--cpus must be at least 1")]
    NoVcpus,
    #[error("--cpus {requested} is more than the {max} vCPUs this host's KVM allows")]
    TooManyVcpus { requested: u32, max: u32 },
    #[error("{0} --disk options: at most {MAX_VIRTIO_MMIO_DEVICES} disks fit")]
    TooManyDisks(usize),
    #[error("--disk {socket}: queues={queues} is out of range: 1 to {MAX_QUEUES}")]
    DiskQueues { socket: String, queues: u16 },
}

impl VmConfig {
    /// Checks memory against `host_mib` of host RAM and vCPUs against `kvm_max_vcpus`.
    pub fn validate(&self, host_mib: u64, kvm_max_vcpus: u32) -> Result<(), ConfigError> {
        if self.memory_mib < MIN_MEMORY_MIB {
            return Err(ConfigError::MemoryTooSmall(self.memory_mib));
        }
        if self.memory_mib > host_mib {
            return Err(ConfigError::MemoryTooLarge {
                requested: self.memory_mib,
                host: host_mib,
            });
        }
        if self.vcpus == 0 {
            return Err(ConfigError::NoVcpus);
        }
        let max = kvm_max_vcpus.min(MAX_VCPUS);
        if self.vcpus > max {
            return Err(ConfigError::TooManyVcpus {
                requested: self.vcpus,
                max,
            });
        }
        if self.disks.len() > MAX_VIRTIO_MMIO_DEVICES {
            return Err(ConfigError::TooManyDisks(self.disks.len()));
        }
        if let Some(disk) = self
            .disks
            .iter()
            .find(|d| d.queues == 0 || d.queues > MAX_QUEUES)
        {
            return Err(ConfigError::DiskQueues {
                socket: disk.socket.display().to_string(),
                queues: disk.queues,
            });
        }
        Ok(())
    }

    /// Guest RAM in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib << 20
    }
}

/// The host's RAM in MiB, from `/proc/meminfo`.
pub fn host_memory_mib() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo_kib(&meminfo, "MemTotal:").map(|kib| kib / 1024)
}

/// Reads one `Key:   N kB` line of a `/proc` status-style file.
pub fn parse_meminfo_kib(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        line.strip_prefix(key)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(memory_mib: u64, vcpus: u32) -> VmConfig {
        VmConfig {
            kernel: KernelSource::Embedded {
                name: "test",
                bytes: &[],
            },
            memory_mib,
            vcpus,
            cmdline: String::new(),
            serial: SerialOutput::Null,
            disks: Vec::new(),
        }
    }

    #[test]
    fn memory_and_vcpu_bounds() {
        assert_eq!(
            config(1, 1).validate(1024, 8),
            Err(ConfigError::MemoryTooSmall(1))
        );
        assert_eq!(
            config(2048, 1).validate(1024, 8),
            Err(ConfigError::MemoryTooLarge {
                requested: 2048,
                host: 1024
            })
        );
        assert_eq!(config(64, 0).validate(1024, 8), Err(ConfigError::NoVcpus));
        assert_eq!(
            config(64, 9).validate(1024, 8),
            Err(ConfigError::TooManyVcpus {
                requested: 9,
                max: 8
            })
        );
        assert_eq!(config(64, 8).validate(1024, 8), Ok(()));
    }

    #[test]
    fn meminfo_lines_parse() {
        let text = "MemTotal:       24576000 kB\nMemFree:  100 kB\n";
        assert_eq!(parse_meminfo_kib(text, "MemTotal:"), Some(24_576_000));
        assert_eq!(parse_meminfo_kib(text, "VmHWM:"), None);
    }
}
