//! Publishes the path of the runtime's linker script to the crates that link
//! guest programs (as `DEP_STRATA_GUEST_RT_LINKER_SCRIPT`).

use std::env;
use std::path::PathBuf;

fn main() {
    let Some(manifest_dir) = env::var_os("CARGO_MANIFEST_DIR") else {
        panic!("CARGO_MANIFEST_DIR is not set; run this build script through cargo");
    };
    let script = PathBuf::from(manifest_dir).join("link.ld");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=link.ld");
    println!("cargo::metadata=linker_script={}", script.display());
}
