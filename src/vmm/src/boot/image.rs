//! Recognising kernel images before handing them to `linux-loader`.
//!
//! These are pure functions over the first bytes of a file, so the checks
//! that produce user-facing errors are unit-tested without KVM.

/// The kernel formats Strata boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFormat {
    /// An ELF64 x86_64 executable, booted through its PVH entry note.
    Elf,
    /// A Linux bzImage, booted through the 64-bit Linux boot protocol.
    BzImage,
}

/// Bytes of the file needed to recognise it and read its program headers.
pub const HEADER_PROBE_LEN: usize = 4096;

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const BZIMAGE_BOOT_FLAG_OFFSET: usize = 0x1fe;
const BZIMAGE_HEADER_MAGIC_OFFSET: usize = 0x202;

/// Recognises a kernel image by its first bytes.
pub fn detect_format(header: &[u8]) -> Option<KernelFormat> {
    if header.starts_with(ELF_MAGIC) {
        return Some(KernelFormat::Elf);
    }
    let boot_flag = header.get(BZIMAGE_BOOT_FLAG_OFFSET..BZIMAGE_BOOT_FLAG_OFFSET + 2)?;
    let magic = header.get(BZIMAGE_HEADER_MAGIC_OFFSET..BZIMAGE_HEADER_MAGIC_OFFSET + 4)?;
    (boot_flag == [0x55, 0xaa] && magic == b"HdrS").then_some(KernelFormat::BzImage)
}

/// What is wrong with an ELF file as a Strata kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ElfShapeError {
    #[error("it is not a 64-bit little-endian ELF file")]
    NotElf64,
    #[error("it is built for another machine (e_machine {0}); Strata runs x86_64 guests")]
    WrongMachine(u16),
    #[error("its program headers lie outside the file")]
    BadProgramHeaders,
    #[error("it has no loadable segments")]
    NoLoadableSegments,
}

/// The highest guest-physical address (exclusive) an ELF kernel's loadable
/// segments occupy, read from its program headers.
///
/// The loader places segments at their physical addresses, so this is the
/// least RAM the guest needs. Only the headers within `header` are read;
/// files whose headers lie further in are rejected.
pub fn elf_load_end(header: &[u8]) -> Result<u64, ElfShapeError> {
    const EM_X86_64: u16 = 62;
    const PT_LOAD: u32 = 1;
    if header.len() < 64 || header.get(4) != Some(&2) || header.get(5) != Some(&1) {
        return Err(ElfShapeError::NotElf64);
    }
    let machine = read_u16(header, 0x12).ok_or(ElfShapeError::NotElf64)?;
    if machine != EM_X86_64 {
        return Err(ElfShapeError::WrongMachine(machine));
    }
    let phoff = read_u64(header, 0x20).ok_or(ElfShapeError::BadProgramHeaders)?;
    let phentsize = read_u16(header, 0x36).ok_or(ElfShapeError::BadProgramHeaders)? as u64;
    let phnum = read_u16(header, 0x38).ok_or(ElfShapeError::BadProgramHeaders)? as u64;
    if phentsize < 56 {
        return Err(ElfShapeError::BadProgramHeaders);
    }
    let mut end = None;
    for i in 0..phnum {
        let at = i
            .checked_mul(phentsize)
            .and_then(|off| off.checked_add(phoff))
            .and_then(|off| usize::try_from(off).ok())
            .ok_or(ElfShapeError::BadProgramHeaders)?;
        let p_type = read_u32(header, at).ok_or(ElfShapeError::BadProgramHeaders)?;
        if p_type != PT_LOAD {
            continue;
        }
        let paddr = read_u64(header, at + 0x18).ok_or(ElfShapeError::BadProgramHeaders)?;
        let memsz = read_u64(header, at + 0x28).ok_or(ElfShapeError::BadProgramHeaders)?;
        let seg_end = paddr
            .checked_add(memsz)
            .ok_or(ElfShapeError::BadProgramHeaders)?;
        end = Some(end.map_or(seg_end, |e: u64| e.max(seg_end)));
    }
    end.ok_or(ElfShapeError::NoLoadableSegments)
}

/// Bytes a bzImage occupies from its load address while it starts: the larger
/// of its protected-mode payload and the `init_size` it asks for to
/// decompress itself in place.
pub fn bzimage_footprint(header: &[u8], file_len: u64) -> u64 {
    const SETUP_SECTS_OFFSET: usize = 0x1f1;
    const INIT_SIZE_OFFSET: usize = 0x260;
    let setup_sects = match header.get(SETUP_SECTS_OFFSET).copied().unwrap_or(0) {
        0 => 4,
        n => u64::from(n),
    };
    let payload = file_len.saturating_sub((setup_sects + 1) * 512);
    let init_size = read_u32(header, INIT_SIZE_OFFSET).map_or(0, u64::from);
    payload.max(init_size)
}

fn read_u16(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        buf.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        buf.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn read_u64(buf: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        buf.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 header with `segments` PT_LOAD headers of (paddr, memsz).
    fn elf(machine: u16, segments: &[(u64, u64)]) -> Vec<u8> {
        let mut buf = vec![0u8; 64 + 56 * segments.len()];
        buf[..4].copy_from_slice(ELF_MAGIC);
        buf[4] = 2;
        buf[5] = 1;
        buf[0x12..0x14].copy_from_slice(&machine.to_le_bytes());
        buf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        buf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        buf[0x38..0x3a].copy_from_slice(&(segments.len() as u16).to_le_bytes());
        for (i, (paddr, memsz)) in segments.iter().enumerate() {
            let at = 64 + 56 * i;
            buf[at..at + 4].copy_from_slice(&1u32.to_le_bytes());
            buf[at + 0x18..at + 0x20].copy_from_slice(&paddr.to_le_bytes());
            buf[at + 0x28..at + 0x30].copy_from_slice(&memsz.to_le_bytes());
        }
        buf
    }

    #[test]
    fn detects_elf_and_bzimage() {
        assert_eq!(detect_format(&elf(62, &[])), Some(KernelFormat::Elf));
        let mut bz = vec![0u8; 0x300];
        bz[0x1fe] = 0x55;
        bz[0x1ff] = 0xaa;
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(detect_format(&bz), Some(KernelFormat::BzImage));
    }

    #[test]
    fn bzimage_footprint_takes_the_larger_of_payload_and_init_size() {
        let mut bz = vec![0u8; 0x300];
        bz[0x1f1] = 27;
        bz[0x260..0x264].copy_from_slice(&(8u32 << 20).to_le_bytes());
        assert_eq!(bzimage_footprint(&bz, 28 * 512 + 4096), 8 << 20);
        assert_eq!(bzimage_footprint(&bz, 28 * 512 + (9 << 20)), 9 << 20);
        bz[0x1f1] = 0; // "0 means 4" in the boot protocol
        assert_eq!(bzimage_footprint(&bz[..0x200], 5 * 512 + 100), 100);
    }

    #[test]
    fn rejects_other_files() {
        assert_eq!(detect_format(b""), None);
        assert_eq!(detect_format(b"#!/bin/sh\necho hi\n"), None);
        assert_eq!(detect_format(&vec![0u8; 8192]), None);
    }

    #[test]
    fn load_end_is_highest_segment_end() {
        let img = elf(62, &[(0x10_0000, 0x2000), (0x20_0000, 0x1000)]);
        assert_eq!(elf_load_end(&img), Ok(0x20_1000));
    }

    #[test]
    fn bad_elf_shapes_are_reported() {
        assert_eq!(
            elf_load_end(&elf(3, &[(0, 1)])),
            Err(ElfShapeError::WrongMachine(3))
        );
        assert_eq!(
            elf_load_end(&elf(62, &[])),
            Err(ElfShapeError::NoLoadableSegments)
        );
        let mut truncated = elf(62, &[(0x10_0000, 0x1000)]);
        truncated.truncate(80);
        assert_eq!(
            elf_load_end(&truncated),
            Err(ElfShapeError::BadProgramHeaders)
        );
        let mut overflow = elf(62, &[(u64::MAX, 2)]);
        overflow.truncate(64 + 56);
        assert_eq!(
            elf_load_end(&overflow),
            Err(ElfShapeError::BadProgramHeaders)
        );
        let mut class32 = elf(62, &[(0, 1)]);
        class32[4] = 1;
        assert_eq!(elf_load_end(&class32), Err(ElfShapeError::NotElf64));
    }
}
