//! The `virtio_mmio.device=` command-line word that tells a guest where a
//! virtio-mmio device is, in the form the Linux kernel reads
//! (`drivers/virtio/virtio_mmio.c`):
//!
//! ```text
//!   virtio_mmio.device=<size>@<base>:<irq>[:<id>]
//!
//!   size   register window length: 512, 0x200, 4K, 1M (K/M/G: powers of 1024)
//!   base   guest-physical address of the registers: 0xd0000000
//!   irq    interrupt line, decimal
//!   id     optional platform device id, decimal
//! ```
//!
//! A VMM adds one word per device, in device order; QEMU's `microvm` machine
//! adds them itself (`auto-kernel-cmdline`). Numbers are decimal or `0x` hex.

/// The key of the word, before the `=`.
pub const CMDLINE_KEY: &str = "virtio_mmio.device";

/// One parsed `virtio_mmio.device=` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceWord {
    /// Length of the register window in bytes.
    pub size: u64,
    /// Guest-physical address of the register window.
    pub base: u64,
    /// Interrupt line.
    pub irq: u32,
    /// Platform device id, if given.
    pub id: Option<u32>,
}

impl DeviceWord {
    /// Parses the value after `virtio_mmio.device=`. `None` unless it is
    /// well formed, `size` is non-zero and `base + size` does not overflow.
    pub fn parse(value: &[u8]) -> Option<DeviceWord> {
        let at = value.iter().position(|&b| b == b'@')?;
        let (size, rest) = (value.get(..at)?, value.get(at + 1..)?);
        let size = parse_size(size).filter(|&size| size > 0)?;
        let mut fields = rest.split(|&b| b == b':');
        let base = parse_number(fields.next()?)?;
        let irq = u32::try_from(parse_decimal(fields.next()?)?).ok()?;
        let id = match fields.next() {
            Some(id) => Some(u32::try_from(parse_decimal(id)?).ok()?),
            None => None,
        };
        if fields.next().is_some() || base.checked_add(size).is_none() {
            return None;
        }
        Some(DeviceWord {
            size,
            base,
            irq,
            id,
        })
    }
}

/// Parses a number: decimal, or hexadecimal after `0x`/`0X`. `None` for an
/// empty string, any other character, or a value above `u64::MAX`.
pub fn parse_number(text: &[u8]) -> Option<u64> {
    match text {
        [b'0', b'x' | b'X', hex @ ..] => parse_radix(hex, 16),
        _ => parse_radix(text, 10),
    }
}

/// Parses a decimal number (no sign, no spaces).
pub fn parse_decimal(text: &[u8]) -> Option<u64> {
    parse_radix(text, 10)
}

/// Parses a size: a [`parse_number`] optionally followed by `K`, `M` or `G`
/// (either case), which multiply by 1024, 1024² and 1024³.
pub fn parse_size(text: &[u8]) -> Option<u64> {
    let (digits, shift) = match text.split_last() {
        Some((b'k' | b'K', digits)) => (digits, 10),
        Some((b'm' | b'M', digits)) => (digits, 20),
        Some((b'g' | b'G', digits)) => (digits, 30),
        _ => (text, 0),
    };
    parse_number(digits)?.checked_mul(1 << shift)
}

fn parse_radix(digits: &[u8], radix: u32) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    let mut value: u64 = 0;
    for &byte in digits {
        let digit = char::from(byte).to_digit(radix)?;
        value = value
            .checked_mul(u64::from(radix))?
            .checked_add(u64::from(digit))?;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_vmms_write() {
        assert_eq!(
            DeviceWord::parse(b"4K@0xd0000000:5"),
            Some(DeviceWord {
                size: 4096,
                base: 0xd000_0000,
                irq: 5,
                id: None
            })
        );
        // QEMU microvm's form.
        assert_eq!(
            DeviceWord::parse(b"512@0xfeb00e00:19"),
            Some(DeviceWord {
                size: 512,
                base: 0xfeb0_0e00,
                irq: 19,
                id: None
            })
        );
        assert_eq!(
            DeviceWord::parse(b"0x1000@0xd0001000:6:1"),
            Some(DeviceWord {
                size: 0x1000,
                base: 0xd000_1000,
                irq: 6,
                id: Some(1)
            })
        );
        assert_eq!(
            DeviceWord::parse(b"1m@4096:1").map(|w| w.size),
            Some(1 << 20)
        );
    }

    #[test]
    fn rejects_malformed_words() {
        for bad in [
            &b""[..],
            b"4K",
            b"4K@",
            b"4K@0xd0000000",
            b"@0xd0000000:5",
            b"0@0xd0000000:5",
            b"4X@0xd0000000:5",
            b"4K@0xd000000g:5",
            b"4K@0xd0000000:0x5",
            b"4K@0xd0000000:5:1:2",
            b"4K@0xd0000000:5:",
            b"4K@0xfffffffffffff800:5",
            b"17179869184G@0:5",
        ] {
            assert_eq!(
                DeviceWord::parse(bad),
                None,
                "{:?}",
                core::str::from_utf8(bad)
            );
        }
    }

    #[test]
    fn numbers_are_decimal_or_hex_and_never_overflow() {
        assert_eq!(parse_number(b"512"), Some(512));
        assert_eq!(parse_number(b"0x200"), Some(512));
        assert_eq!(parse_number(b"0XfF"), Some(255));
        assert_eq!(parse_number(b"0x"), None);
        assert_eq!(parse_number(b"-1"), None);
        assert_eq!(parse_number(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_number(b"18446744073709551616"), None);
        assert_eq!(parse_size(b"2G"), Some(2 << 30));
        assert_eq!(parse_size(b"K"), None);
    }
}
