//! Builds the guest workspace in `guest-images/` and publishes its images.
//!
//! Runs `$CARGO build --release` on `guest-images/Cargo.toml` for
//! `x86_64-unknown-linux-gnu` with `--target-dir <target dir>/guest-build`,
//! in an environment scrubbed of the outer build's flags (`RUSTFLAGS`,
//! wrappers, `CARGO_PROFILE_*`, ...), with the guest code-generation flags
//! given explicitly in `CARGO_ENCODED_RUSTFLAGS`. Each image is then copied to
//! `<target dir>/guest-images/<name>.elf` (the stable path) and to `OUT_DIR`
//! (for `include_bytes!`).

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

include!("src/images.rs");

/// The triple the guests are compiled for: the only one a stable toolchain
/// reliably has. The linker script and flags make it bare metal.
const GUEST_TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// Code-generation flags of the guests. Keep in sync with
/// `guest-images/.cargo/config.toml` (used only for builds by hand).
const GUEST_RUSTFLAGS: &[&str] = &[
    "-C",
    "target-feature=-sse,-sse2,-sse3,-ssse3,-sse4.1,-sse4.2,-avx,-avx2,-fma,-popcnt",
    "-C",
    "relocation-model=static",
    "-C",
    "force-unwind-tables=no",
];

/// Variables removed from the nested cargo's environment, so that nothing of
/// the outer build (flags, wrappers, target selection) changes the images.
const SCRUBBED_VARS: &[&str] = &[
    "RUSTFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTC_LINKER",
    "CARGO_INCREMENTAL",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_CRATE_NAME",
    "OUT_DIR",
    "TARGET",
    "HOST",
    "PROFILE",
    "OPT_LEVEL",
    "DEBUG",
    "NUM_JOBS",
    "CLIPPY_ARGS",
    "CLIPPY_CONF_DIR",
];

/// Prefixes of variables removed likewise: `CARGO_BUILD_*` (incl. target,
/// target dir, rustflags), `CARGO_TARGET_*` (incl. `CARGO_TARGET_DIR` and
/// per-target linkers and flags), profiles, and what cargo sets for this
/// build script.
const SCRUBBED_PREFIXES: &[&str] = &[
    "CARGO_BUILD_",
    "CARGO_TARGET_",
    "CARGO_PROFILE_",
    "CARGO_FEATURE_",
    "CARGO_CFG_",
    "CARGO_PKG_",
    "CARGO_MANIFEST_",
    "DEP_",
    "__CARGO",
];

fn main() {
    let manifest_dir = path_from_env("CARGO_MANIFEST_DIR");
    let out_dir = path_from_env("OUT_DIR");
    let Some(repo_root) = manifest_dir.ancestors().nth(2) else {
        panic!("{} is not <repo>/src/guest-images", manifest_dir.display());
    };
    let guest_workspace = repo_root.join("guest-images");
    let target_dir = main_target_dir(&out_dir);
    let guest_target_dir = target_dir.join("guest-build");
    let images_dir = target_dir.join("guest-images");

    emit_rerun_if_changed(&guest_workspace, &repo_root.join("src").join("guest-abi"));
    println!(
        "cargo::rustc-env=STRATA_GUEST_IMAGES_DIR={}",
        images_dir.display()
    );

    build_guest_workspace(&guest_workspace, &guest_target_dir);

    let built_dir = guest_target_dir.join(GUEST_TRIPLE).join("release");
    create_dir(&images_dir);
    for name in IMAGE_NAMES {
        let built = built_dir.join(name);
        let file_name = format!("{name}.elf");
        copy_atomically(&built, &images_dir.join(&file_name));
        copy_atomically(&built, &out_dir.join(&file_name));
    }
}

fn path_from_env(name: &str) -> PathBuf {
    match env::var_os(name) {
        Some(value) => PathBuf::from(value),
        None => panic!("{name} is not set; run this build script through cargo"),
    }
}

/// The outer build's target directory.
///
/// `OUT_DIR` is `<target dir>/[<triple>/]<profile>/build/<package>-<hash>/out`,
/// which already follows `CARGO_TARGET_DIR` and `--target-dir`.
fn main_target_dir(out_dir: &Path) -> PathBuf {
    let Some(profile_dir) = out_dir.ancestors().nth(3) else {
        panic!("unexpected OUT_DIR layout: {}", out_dir.display());
    };
    let Some(mut target_dir) = profile_dir.parent() else {
        panic!("unexpected OUT_DIR layout: {}", out_dir.display());
    };
    // With an explicit `--target`, there is a `<triple>/` level.
    let triple = env::var_os("TARGET");
    if target_dir.file_name() == triple.as_deref() {
        if let Some(parent) = target_dir.parent() {
            target_dir = parent;
        }
    }
    target_dir.to_path_buf()
}

/// Reruns this script when any source of the guests changes: every entry of
/// `guest-images/` except its `target/` (from builds by hand), and the ABI
/// crate.
fn emit_rerun_if_changed(guest_workspace: &Path, guest_abi: &Path) {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=src/images.rs");
    println!("cargo::rerun-if-changed={}", guest_abi.display());
    let entries = match fs::read_dir(guest_workspace) {
        Ok(entries) => entries,
        Err(error) => panic!("cannot read {}: {error}", guest_workspace.display()),
    };
    for entry in entries {
        let path = match entry {
            Ok(entry) => entry.path(),
            Err(error) => panic!("cannot read {}: {error}", guest_workspace.display()),
        };
        if path.file_name().is_some_and(|name| name == "target") {
            continue;
        }
        println!("cargo::rerun-if-changed={}", path.display());
    }
}

/// Runs the nested `cargo build`, panicking with its output if it fails.
fn build_guest_workspace(guest_workspace: &Path, guest_target_dir: &Path) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(&cargo);
    command
        .arg("build")
        .arg("--release")
        .arg("--manifest-path")
        .arg(guest_workspace.join("Cargo.toml"))
        .arg("--target")
        .arg(GUEST_TRIPLE)
        .arg("--target-dir")
        .arg(guest_target_dir)
        .current_dir(guest_workspace);
    for (name, _) in env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if SCRUBBED_VARS.contains(&name)
            || SCRUBBED_PREFIXES
                .iter()
                .any(|prefix| name.starts_with(prefix))
        {
            command.env_remove(name);
        }
    }
    command.env("CARGO_ENCODED_RUSTFLAGS", GUEST_RUSTFLAGS.join("\x1f"));

    let output = match command.output() {
        Ok(output) => output,
        Err(error) => panic!("cannot run {}: {error}", cargo.to_string_lossy()),
    };
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stdout));
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        panic!(
            "building the guest images failed: `{command:?}` exited with {}; \
             its output is above",
            output.status
        );
    }
}

fn create_dir(dir: &Path) {
    if let Err(error) = fs::create_dir_all(dir) {
        panic!("cannot create {}: {error}", dir.display());
    }
}

/// Copies `from` to `to` through a temporary file, so that readers never see
/// a partial image.
fn copy_atomically(from: &Path, to: &Path) {
    let mut temporary = to.as_os_str().to_owned();
    // Unique per process: debug and release builds may run this concurrently.
    temporary.push(format!(".tmp{}", std::process::id()));
    let temporary = PathBuf::from(temporary);
    if let Err(error) = fs::copy(from, &temporary) {
        panic!(
            "cannot copy {} to {}: {error}",
            from.display(),
            temporary.display()
        );
    }
    if let Err(error) = fs::rename(&temporary, to) {
        panic!(
            "cannot rename {} to {}: {error}",
            temporary.display(),
            to.display()
        );
    }
}
