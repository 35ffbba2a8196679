//! Helpers shared by the integration tests: running the real `strata`
//! binary and deciding what to do on a host without KVM.
#![allow(dead_code, clippy::unwrap_used)]

pub mod store;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `strata` binary Cargo built for these tests.
pub fn strata() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strata"))
}

/// Path of a guest image built from `guest-images/`.
pub fn image(name: &str) -> PathBuf {
    strata_guest_images::image_path(name)
}

/// Tells whether KVM tests can run. A missing `/dev/kvm` fails the test,
/// unless `STRATA_ALLOW_NO_KVM=1` says that skipping is intended, so a skip
/// can never pass silently in CI.
pub fn kvm_available() -> bool {
    if Path::new("/dev/kvm").exists() {
        return true;
    }
    if std::env::var("STRATA_ALLOW_NO_KVM").as_deref() == Ok("1") {
        eprintln!("skipping: /dev/kvm is missing and STRATA_ALLOW_NO_KVM=1");
        return false;
    }
    panic!("/dev/kvm is missing: KVM tests need it (set STRATA_ALLOW_NO_KVM=1 to skip them)");
}

/// Runs `command` and returns its output.
pub fn run(command: &mut Command) -> Output {
    command.output().unwrap()
}

/// Standard output as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts that `output` is a refusal: status 125 and exactly one line on
/// stderr, `strata: error: ...`, containing every one of `needles`.
pub fn assert_one_line_error(output: &Output, needles: &[&str]) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(125), "stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    assert!(lines[0].starts_with("strata: error: "), "got: {err}");
    for needle in needles {
        assert!(lines[0].contains(needle), "{needle:?} missing from: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}
