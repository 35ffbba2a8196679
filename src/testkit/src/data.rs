//! Test data.

use std::path::Path;

/// Writes `len` bytes of xorshift64 output seeded with `seed` to `path`:
/// position-dependent contents, so a read from the wrong offset hashes
/// differently.
pub fn write_pseudo_random(path: &Path, len: u64, seed: u64) -> std::io::Result<()> {
    let mut state = seed | 1;
    let mut bytes = Vec::with_capacity(len as usize);
    while (bytes.len() as u64) < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len as usize);
    std::fs::write(path, bytes)
}
