//! Links the guest programs as bare-metal PVH images with the runtime's
//! linker script, and refuses to build release images with SSE enabled.

use std::env;

fn main() {
    let Some(script) = env::var_os("DEP_STRATA_GUEST_RT_LINKER_SCRIPT") else {
        panic!("strata-guest-rt did not publish its linker script (links = \"strata_guest_rt\")");
    };
    let script = script.to_string_lossy();
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed={script}");

    let link_args = [
        // No C runtime, no libc, no dynamic linking, no PIE: the image is
        // entered at the PVH entry and runs where it is linked.
        "-nostdlib",
        "-nostartfiles",
        "-static",
        "-no-pie",
        "-Wl,--gc-sections",
        "-Wl,--build-id=none",
        "-Wl,-z,max-page-size=0x1000",
        "-Wl,-z,norelro",
        "-Wl,-z,noexecstack",
    ];
    for arg in link_args {
        println!("cargo::rustc-link-arg-bins={arg}");
    }
    println!("cargo::rustc-link-arg-bins=-Wl,-T,{script}");

    // The guests run where SSE is fatal. Check builds (clippy) may use any
    // flags, but release images must come with the flags of
    // `guest-images/.cargo/config.toml` / `src/guest-images/build.rs`.
    let profile = env::var("PROFILE").unwrap_or_default();
    let features = env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    if profile == "release" && features.split(',').any(|f| f == "sse" || f == "sse2") {
        panic!(
            "guest images must be built without SSE (target features: {features}); \
             build them through `cargo build -p strata-guest-images` in the main workspace, \
             or with `cargo build --release` inside guest-images/"
        );
    }
}
