//! Reading the kernel command line: space-separated words, some `key=value`.

/// Returns the value of the first `key=value` word of `cmdline`, if any.
///
/// Words are separated by ASCII spaces. `find(b"a=1 exit=3", b"exit")` is
/// `Some(b"3")`; a bare `exit` (no `=`) does not match.
pub fn find<'a>(cmdline: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    cmdline.split(|&byte| byte == b' ').find_map(|word| {
        let rest = word.strip_prefix(key)?;
        rest.strip_prefix(b"=")
    })
}

/// Returns the values of every `key=value` word of `cmdline`, in order.
pub fn find_all<'a>(cmdline: &'a [u8], key: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
    cmdline.split(|&byte| byte == b' ').filter_map(move |word| {
        let rest = word.strip_prefix(key)?;
        rest.strip_prefix(b"=")
    })
}

/// Tells whether `word` appears on its own among the words of `cmdline`.
pub fn has_word(cmdline: &[u8], word: &[u8]) -> bool {
    cmdline.split(|&byte| byte == b' ').any(|w| w == word)
}

/// Parses a decimal number in `0..=255` with no sign and no spaces.
pub fn parse_u8(digits: &[u8]) -> Option<u8> {
    if digits.is_empty() {
        return None;
    }
    let mut value: u8 = 0;
    for &byte in digits {
        if !byte.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(byte - b'0')?;
    }
    Some(value)
}
