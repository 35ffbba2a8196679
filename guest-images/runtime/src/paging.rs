//! Mappings above the boot page tables, for device registers.
//!
//! The entry stub's tables (see `boot`) identity-map `[0, 4 GiB)`, which
//! holds the image, the boot information and the usual device hole at
//! 3-4 GiB. A device may still sit higher: a 64-bit PCI BAR can be anywhere
//! below the CPU's physical address limit. [`map_device`] maps the 2 MiB
//! pages covering such a range, uncached, building the missing tables from a
//! small pool of zero-filled pages (in `.dma`, see `link.ld`):
//!
//! ```text
//!   CR3 -> PML4 --[addr bits 47:39]--> PDPT --[38:30]--> PD --[29:21]--> 2 MiB page
//!          (boot)                      (boot, or         (boot, or
//!                                       from the pool)    from the pool)
//!
//!   virtual 0 .. 4 GiB               = physical, at boot
//!   virtual 4 GiB .. WINDOW_START    = physical, mapped on demand
//!   virtual WINDOW_START .. 2^47     the window: devices whose physical
//!                                    address is too high to identity-map
//! ```
//!
//! Only the lower canonical half (below 2^47) is usable as virtual
//! addresses, so a device above [`WINDOW_START`] gets an address in the
//! window instead. There is one CPU and no interrupts, so nothing else walks
//! or edits the tables meanwhile.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// End of the memory the boot page tables identity-map.
pub const BOOT_MAPPED_END: u64 = 4 << 30;
/// Start of the window for devices that cannot be identity-mapped: the
/// last 512 GiB of the lower canonical half (PML4 slot 255).
pub const WINDOW_START: u64 = 255 << 39;
/// End of the window (the end of the lower canonical half).
const WINDOW_END: u64 = 1 << 47;
/// Physical addresses go up to 52 bits at most (MAXPHYADDR).
const PHYSICAL_END: u64 = 1 << 52;

/// Size of the pages [`map_device`] maps.
const HUGE_PAGE: u64 = 2 << 20;
/// Page-table pages in the pool: enough for one device range that crosses
/// a 1 GiB or even a 512 GiB boundary (a PDPT and a PD on each side).
const SPARE_TABLES: usize = 4;

/// Present.
const PRESENT: u64 = 1 << 0;
/// Writable.
const WRITABLE: u64 = 1 << 1;
/// Write-through.
const WRITE_THROUGH: u64 = 1 << 3;
/// Cache disabled; with write-through, uncached (the PAT's default entry 3).
const CACHE_DISABLE: u64 = 1 << 4;
/// In a PDPT or PD entry: the entry maps a 1 GiB or 2 MiB page.
const PAGE_SIZE: u64 = 1 << 7;
/// Bits 51:12 of an entry: the address of the next table or of the page.
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Entry pointing to a lower-level table.
const TABLE_ENTRY: u64 = PRESENT | WRITABLE;
/// Entry mapping an uncached 2 MiB page.
const DEVICE_PAGE_ENTRY: u64 = PRESENT | WRITABLE | WRITE_THROUGH | CACHE_DISABLE | PAGE_SIZE;

/// Why a range could not be mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The range wraps around, lies beyond 52-bit physical addresses, or
    /// does not fit in what is left of the window.
    OutOfRange,
    /// The pool of page-table pages is used up.
    NoSpareTables,
    /// A page of the range is already mapped, to some other address.
    Conflict,
}

impl MapError {
    /// A one-line description.
    pub fn message(self) -> &'static str {
        match self {
            Self::OutOfRange => "address range is beyond what the page tables can map",
            Self::NoSpareTables => "no page-table pages left to map a device",
            Self::Conflict => "address range is already mapped elsewhere",
        }
    }
}

/// One page table: 512 entries.
#[repr(C, align(4096))]
struct Table([u64; 512]);

/// The pool: zero-filled pages, handed out once each (see [`SPARE_USED`]).
struct SpareTables(UnsafeCell<[Table; SPARE_TABLES]>);

// SAFETY: the guest runs on one CPU with interrupts disabled, and each table
// is handed out at most once (`SPARE_USED` only grows), so no two users ever
// share a table.
unsafe impl Sync for SpareTables {}

/// In `.dma` (see `link.ld`): zero-filled at load, not cleared at boot.
#[unsafe(link_section = ".bss.dma.page_tables")]
static SPARE: SpareTables = SpareTables(UnsafeCell::new([const { Table([0; 512]) }; SPARE_TABLES]));

/// How many tables of [`SPARE`] are in use. Apart from the tables, so that
/// it does not take a page of its own.
static SPARE_USED: AtomicUsize = AtomicUsize::new(0);

/// Takes a zeroed table from the pool.
fn take_table() -> Result<*mut u64, MapError> {
    let index = SPARE_USED.load(Ordering::Relaxed);
    if index >= SPARE_TABLES {
        return Err(MapError::NoSpareTables);
    }
    SPARE_USED.store(index + 1, Ordering::Relaxed);
    let tables: *mut Table = SPARE.0.get().cast();
    // `index < SPARE_TABLES`, so the result stays within the array.
    Ok(tables.wrapping_add(index).cast())
}

/// Next free virtual address of the window.
static WINDOW_NEXT: AtomicU64 = AtomicU64::new(WINDOW_START);

/// Maps the device registers at physical `[base, base + len)` and returns
/// the virtual address of `base`: `base` itself up to [`WINDOW_START`]
/// (identity-mapped, with uncached 2 MiB pages above 4 GiB), an address in
/// the window above it. Pages already identity-mapped are left alone.
pub fn map_device(base: u64, len: u64) -> Result<u64, MapError> {
    let end = base.checked_add(len).ok_or(MapError::OutOfRange)?;
    if len == 0 || end <= BOOT_MAPPED_END {
        return Ok(base);
    }
    if end > PHYSICAL_END {
        return Err(MapError::OutOfRange);
    }
    let first = base & !(HUGE_PAGE - 1);
    let pages = (end - first).div_ceil(HUGE_PAGE);
    let virtual_first = if end <= WINDOW_START {
        first
    } else {
        let start = WINDOW_NEXT.load(Ordering::Relaxed);
        let next = pages
            .checked_mul(HUGE_PAGE)
            .and_then(|size| start.checked_add(size))
            .filter(|&next| next <= WINDOW_END)
            .ok_or(MapError::OutOfRange)?;
        WINDOW_NEXT.store(next, Ordering::Relaxed);
        start
    };
    for page in 0..pages {
        let virtual_page = virtual_first + page * HUGE_PAGE;
        // Below 4 GiB, the boot tables map it already.
        if virtual_page >= BOOT_MAPPED_END {
            map_huge_page(virtual_page, first + page * HUGE_PAGE)?;
        }
    }
    flush_tlb();
    Ok(virtual_first + (base - first))
}

/// Maps the 2 MiB page at `virtual_page` (aligned, below 2^47) to
/// `physical_page` (aligned, below 2^52).
fn map_huge_page(virtual_page: u64, physical_page: u64) -> Result<(), MapError> {
    let pml4 = (read_cr3() & ADDRESS_MASK) as *mut u64;
    let pdpt = next_table(pml4, virtual_page >> 39)?;
    let pd = next_table(pdpt, virtual_page >> 30)?;
    let entry = pd.wrapping_add(((virtual_page >> 21) & 511) as usize);
    // SAFETY: `pd` is a page-table page (the boot PD, or one from the pool)
    // inside the image, which is identity-mapped; the index is below 512.
    let old = unsafe { entry.read_volatile() };
    if old & PRESENT == 0 {
        // SAFETY: as above; the entry was not present, so no mapping in use
        // changes.
        unsafe { entry.write_volatile(physical_page | DEVICE_PAGE_ENTRY) };
        Ok(())
    } else if old & PAGE_SIZE != 0 && old & ADDRESS_MASK == physical_page {
        Ok(())
    } else {
        Err(MapError::Conflict)
    }
}

/// Returns the table that entry `index % 512` of `table` points to,
/// creating it from the pool if the entry is not present.
fn next_table(table: *mut u64, index: u64) -> Result<*mut u64, MapError> {
    let entry = table.wrapping_add((index & 511) as usize);
    // SAFETY: `table` is a page-table page inside the identity-mapped image
    // (reached from CR3 through the boot tables or the pool); the index is
    // below 512.
    let old = unsafe { entry.read_volatile() };
    if old & PRESENT != 0 {
        if old & PAGE_SIZE != 0 {
            // A 1 GiB page: not made by this runtime.
            return Err(MapError::Conflict);
        }
        return Ok((old & ADDRESS_MASK) as *mut u64);
    }
    let new = take_table()?;
    // SAFETY: as above; the entry was not present, so no mapping in use
    // changes, and the new table is zeroed (nothing present yet).
    unsafe { entry.write_volatile(new as u64 | TABLE_ENTRY) };
    Ok(new)
}

fn read_cr3() -> u64 {
    let cr3: u64;
    // SAFETY: reading CR3 has no side effects; the runtime runs in ring 0.
    unsafe {
        core::arch::asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags));
    }
    cr3
}

/// Reloads CR3, so that no stale paging-structure cache entry hides a new
/// mapping (a page fault would be fatal: there is no IDT).
fn flush_tlb() {
    // SAFETY: writing CR3 back with its own value changes no mapping; it only
    // drops cached translations. Not `nomem`: the table writes before it must
    // not be moved after it.
    unsafe {
        core::arch::asm!("mov {tmp}, cr3", "mov cr3, {tmp}", tmp = out(reg) _,
            options(nostack, preserves_flags));
    }
}
