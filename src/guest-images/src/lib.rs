//! Strata's bare-metal test guest images, built from source with the rest of
//! the workspace.
//!
//! The guests live in `guest-images/`, a Cargo workspace of its own (they are
//! `no_std` programs for a machine without SSE, linked at 1 MiB as PVH ELF
//! images). This crate's `build.rs` builds that workspace during the normal
//! `cargo build`, with the guest compiler flags set explicitly so that the
//! caller's `RUSTFLAGS` and profile settings cannot leak in, and puts every
//! image at a stable path:
//!
//! ```text
//! <target dir>/guest-images/<name>.elf      e.g. target/guest-images/hello.elf
//! ```
//!
//! where `<target dir>` is the `target/` directory of the outer build
//! (`CARGO_TARGET_DIR` if set). The guest workspace's own build output goes
//! to `<target dir>/guest-build/`, so nothing appears in the source tree.
//!
//! The images:
//!
//! | name           | serial output                                        | then                              |
//! |----------------|------------------------------------------------------|-----------------------------------|
//! | `hello`        | `Hello from a Strata guest!` / `cmdline: <cmdline>`  | exits 0, or `N` given `exit=N`    |
//! | `triple-fault` | `triple-fault: loading an empty IDT and raising #UD` | triple-faults (VM shutdown)       |
//! | `popcnt`       | `popcnt: executing popcnt` / `popcnt: survived`      | exits 0 (if `popcnt` could run)   |
//! | `blkcheck`     | `blkcheck: disk ...`, `blkcheck: sum ...`, ...       | exits 0 with `blkcheck: done`     |
//!
//! Exit codes go to the `isa-debug-exit` port (`strata_guest_abi::DEBUG_EXIT_PORT`);
//! a panicking guest prints `panic: <file>:<line>` and exits with 101, a guest
//! given bad PVH boot information exits with 102. `blkcheck` checks a
//! virtio-blk disk (see `strata_guest_abi::blkcheck` for its contract) and
//! fails with 110-113 (`strata_guest_abi::exit_code`).
//!
//! [`HELLO_ELF`] and the other constants embed the images in the binary that
//! uses them; [`image_path`] names the file, for tools such as QEMU.

use std::path::PathBuf;

mod images;

pub use images::IMAGE_NAMES;

/// The `hello` image, embedded.
pub const HELLO_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hello.elf"));

/// The `triple-fault` image, embedded.
pub const TRIPLE_FAULT_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/triple-fault.elf"));

/// The `popcnt` image, embedded.
pub const POPCNT_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/popcnt.elf"));

/// The `blkcheck` image, embedded.
pub const BLKCHECK_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/blkcheck.elf"));

/// The directory holding the images: `<target dir>/guest-images`.
pub fn images_dir() -> PathBuf {
    PathBuf::from(env!("STRATA_GUEST_IMAGES_DIR"))
}

/// The stable path of the image `name`: `<target dir>/guest-images/<name>.elf`.
///
/// `name` should be one of [`IMAGE_NAMES`]; for any other name the path does
/// not exist.
pub fn image_path(name: &str) -> PathBuf {
    images_dir().join(format!("{name}.elf"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_image_exists_at_its_stable_path() {
        for name in IMAGE_NAMES {
            let path = image_path(name);
            assert!(path.is_file(), "{} is missing", path.display());
        }
    }

    #[test]
    fn embedded_images_match_the_files() {
        for (name, bytes) in [
            ("hello", HELLO_ELF),
            ("triple-fault", TRIPLE_FAULT_ELF),
            ("popcnt", POPCNT_ELF),
            ("blkcheck", BLKCHECK_ELF),
        ] {
            let file = std::fs::read(image_path(name)).unwrap();
            assert!(file == bytes, "{name}.elf differs from the embedded copy");
        }
    }
}
