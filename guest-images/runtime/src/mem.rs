//! `memcpy`, `memmove`, `memset`, `memcmp` and `bcmp`.
//!
//! The compiler emits calls to these for copies and comparisons, and on bare
//! metal there is no libc to provide them. They use `rep movsb`/`rep stosb`
//! (one emulated instruction each) or volatile byte loops, which the compiler
//! cannot turn back into calls to themselves.

use core::arch::asm;
use core::ptr;

/// Copies `n` bytes from `src` to `dst`; the ranges must not overlap.
///
/// # Safety
///
/// `src` must be valid for `n` byte reads and `dst` for `n` byte writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges; the direction flag is clear
    // (the entry stub clears it and nothing sets it for long).
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _,
            options(nostack, preserves_flags));
    }
    dst
}

/// Copies `n` bytes from `src` to `dst`; the ranges may overlap.
///
/// # Safety
///
/// `src` must be valid for `n` byte reads and `dst` for `n` byte writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize).wrapping_sub(src as usize) >= n {
        // `dst` is below `src` or past the end of the source: copying
        // forwards never overwrites a byte before it is read.
        // SAFETY: the caller guarantees both ranges.
        return unsafe { memcpy(dst, src, n) };
    }
    // `dst` overlaps the source from above: copy backwards, from the last byte.
    // SAFETY: the caller guarantees both ranges, so `n > 0` here (otherwise the
    // branch above is taken) and `ptr + n - 1` is the last byte of each.
    // The direction flag is set only for the copy and cleared again.
    unsafe {
        asm!("std", "rep movsb", "cld",
            inout("rcx") n => _,
            inout("rdi") dst.wrapping_add(n - 1) => _,
            inout("rsi") src.wrapping_add(n - 1) => _,
            options(nostack));
    }
    dst
}

/// Sets `n` bytes at `dst` to `value as u8`.
///
/// # Safety
///
/// `dst` must be valid for `n` byte writes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memset(dst: *mut u8, value: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the range; the direction flag is clear.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _, in("al") value as u8,
            options(nostack, preserves_flags));
    }
    dst
}

/// Compares `n` bytes at `a` and `b` as unsigned bytes.
///
/// # Safety
///
/// `a` and `b` must be valid for `n` byte reads.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: `i < n`, and the caller guarantees `n` readable bytes at
        // `a`. Volatile reads keep this loop from being turned into a call to
        // `memcmp`.
        let x = unsafe { ptr::read_volatile(a.wrapping_add(i)) };
        // SAFETY: likewise for `b`.
        let y = unsafe { ptr::read_volatile(b.wrapping_add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

/// Like [`memcmp`], but only zero versus non-zero is meaningful.
///
/// # Safety
///
/// `a` and `b` must be valid for `n` byte reads.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as `memcmp`.
    unsafe { memcmp(a, b, n) }
}
