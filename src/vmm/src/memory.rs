//! Guest RAM: named regions, each backed by its own memfd and its own KVM slot.
//!
//! A memfd (rather than anonymous memory) lets a vhost-user backend map the
//! same pages, and one memfd per region lets a later stage replace a single
//! region (for example the guest kernel's) without touching the others.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::FromRawFd;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use thiserror::Error;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    Address, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, GuestRegionMmap,
};

use crate::layout::RamRange;

/// The guest memory type used throughout the VMM.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;

/// Why guest memory could not be set up.
#[derive(Debug, Error)]
pub enum GuestMemoryError {
    #[error("cannot create a memfd for guest region {name}: {source}")]
    Memfd {
        name: &'static str,
        source: std::io::Error,
    },
    #[error("cannot size guest region {name} to {size} bytes: {source}")]
    Resize {
        name: &'static str,
        size: u64,
        source: std::io::Error,
    },
    #[error("cannot map guest region {name}: {source}")]
    Map {
        name: &'static str,
        source: vm_memory::mmap::MmapRegionError,
    },
    #[error("guest region {name} does not fit in the guest address space")]
    Overflow { name: &'static str },
    #[error("guest regions overlap or are out of order: {0}")]
    Layout(#[source] vm_memory::GuestRegionCollectionError),
    #[error("KVM refused memory slot {slot} for guest region {name}: {source}")]
    SetSlot {
        name: &'static str,
        slot: u32,
        source: kvm_ioctls::Error,
    },
}

/// A region of guest RAM and the KVM slot it occupies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedRegion {
    /// The region's name, as in [`RamRange::name`].
    pub name: &'static str,
    /// KVM memory slot number.
    pub slot: u32,
    /// First guest-physical address.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

/// All of a VM's RAM.
pub struct GuestRam {
    memory: GuestMemoryMmap,
    regions: Vec<NamedRegion>,
}

impl GuestRam {
    /// Creates one memfd-backed mapping per range. Nothing is touched, so a
    /// large guest costs nothing until it uses its memory.
    pub fn new(ranges: &[RamRange]) -> Result<Self, GuestMemoryError> {
        let mut mmap_regions = Vec::with_capacity(ranges.len());
        let mut regions = Vec::with_capacity(ranges.len());
        for (slot, range) in (0u32..).zip(ranges) {
            let file = create_memfd(range.name)?;
            file.set_len(range.size)
                .map_err(|source| GuestMemoryError::Resize {
                    name: range.name,
                    size: range.size,
                    source,
                })?;
            let size = usize::try_from(range.size)
                .map_err(|_| GuestMemoryError::Overflow { name: range.name })?;
            let mapping = MmapRegionBuilder::new(size)
                .with_file_offset(FileOffset::new(file, 0))
                .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
                .with_mmap_flags(libc::MAP_SHARED | libc::MAP_NORESERVE)
                .build()
                .map_err(|source| GuestMemoryError::Map {
                    name: range.name,
                    source,
                })?;
            let region: GuestRegionMmap = GuestRegionMmap::new(mapping, GuestAddress(range.base))
                .ok_or(GuestMemoryError::Overflow { name: range.name })?;
            mmap_regions.push(region);
            regions.push(NamedRegion {
                name: range.name,
                slot,
                base: range.base,
                size: range.size,
            });
        }
        let memory =
            GuestMemoryMmap::from_regions(mmap_regions).map_err(GuestMemoryError::Layout)?;
        Ok(Self { memory, regions })
    }

    /// The memory, for loaders and devices.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// The regions with their slots, in address order.
    pub fn regions(&self) -> &[NamedRegion] {
        &self.regions
    }

    /// Total bytes of RAM.
    pub fn size(&self) -> u64 {
        self.regions.iter().map(|r| r.size).sum()
    }

    /// Makes every region visible to the guest through its KVM slot.
    pub fn register_with(&self, vm: &VmFd) -> Result<(), GuestMemoryError> {
        for (named, region) in self.regions.iter().zip(self.memory.iter()) {
            let mem_region = kvm_userspace_memory_region {
                slot: named.slot,
                flags: 0,
                guest_phys_addr: region.start_addr().raw_value(),
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
            };
            // SAFETY: the host range [as_ptr, as_ptr + len) is a live mapping owned by
            // `self.memory`, which outlives the VM: the VM is dropped before the memory
            // in `Vm`, and slots are never pointed anywhere else.
            unsafe { vm.set_user_memory_region(mem_region) }.map_err(|source| {
                GuestMemoryError::SetSlot {
                    name: named.name,
                    slot: named.slot,
                    source,
                }
            })?;
        }
        Ok(())
    }

    /// Bytes of guest RAM that are resident, i.e. that the guest (or a loader)
    /// has touched. Used to separate the VMM's own overhead from guest memory.
    ///
    /// A memfd allocates a page on first touch, so its allocated size is the
    /// resident guest memory: one `fstat` per region, whatever the RAM size.
    pub fn resident_bytes(&self) -> u64 {
        self.memory
            .iter()
            .filter_map(|region| region.file_offset())
            .filter_map(|file| file.file().metadata().ok())
            .map(|meta| std::os::unix::fs::MetadataExt::blocks(&meta) * 512)
            .sum()
    }
}

fn create_memfd(name: &'static str) -> Result<File, GuestMemoryError> {
    let memfd_err = |source| GuestMemoryError::Memfd { name, source };
    let c_name = CString::new(format!("strata:{name}"))
        .map_err(|_| memfd_err(std::io::Error::from(std::io::ErrorKind::InvalidInput)))?;
    // SAFETY: `c_name` is a valid NUL-terminated string that lives across the call.
    let fd = unsafe { libc::memfd_create(c_name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(memfd_err(std::io::Error::last_os_error()));
    }
    // SAFETY: memfd_create returned a fresh descriptor that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::ram_ranges;
    use vm_memory::Bytes;

    #[test]
    fn regions_are_memfd_backed_and_named() {
        let ram = GuestRam::new(&ram_ranges(8 << 20)).unwrap();
        assert_eq!(ram.regions().len(), 1);
        assert_eq!(ram.regions()[0].name, "ram-low");
        assert_eq!(ram.size(), 8 << 20);
        let region = ram.memory().iter().next().unwrap();
        assert!(region.file_offset().is_some());
    }

    #[test]
    fn resident_bytes_counts_touched_pages_only() {
        let ram = GuestRam::new(&ram_ranges(4 << 20)).unwrap();
        assert_eq!(ram.resident_bytes(), 0);
        ram.memory()
            .write_obj(0xabu8, GuestAddress(0x1000))
            .unwrap();
        ram.memory()
            .write_obj(0xcdu8, GuestAddress(0x20_0000))
            .unwrap();
        assert_eq!(ram.resident_bytes(), 2 * 4096);
    }
}
