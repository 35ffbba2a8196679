//! Every way `strata run` can be given bad input ends in one line that names
//! the problem and its fix, and exit status 125: never a panic or a hang.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{assert_one_line_error, image, kvm_available, run, stderr, strata};

#[test]
fn kernel_that_does_not_exist() {
    if !kvm_available() {
        return;
    }
    let out = run(strata().args(["run", "--kernel", "/nonexistent/vmlinux"]));
    assert_one_line_error(&out, &["/nonexistent/vmlinux", "not found", "--kernel"]);
}

#[test]
fn kernel_that_is_neither_elf_nor_bzimage() {
    if !kvm_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("kernel.sh");
    std::fs::write(&script, "#!/bin/sh\necho not a kernel\n").unwrap();
    let out = run(strata().args(["run", "--kernel"]).arg(&script));
    assert_one_line_error(
        &out,
        &["kernel.sh", "neither an ELF kernel nor a Linux bzImage"],
    );
    let out = run(strata().args(["run", "--kernel"]).arg(dir.path()));
    assert_one_line_error(&out, &["neither an ELF kernel nor a Linux bzImage"]);
}

/// The hello image with the type of its PVH note changed, so that it has no
/// PVH entry any more.
fn hello_without_pvh_note(dir: &Path) -> std::path::PathBuf {
    let mut elf = std::fs::read(image("hello")).unwrap();
    let name = elf
        .windows(4)
        .position(|w| w == b"Xen\0")
        .expect("hello has a Xen note");
    let note_type = name - 4;
    assert_eq!(
        u32::from_le_bytes(elf[note_type..name].try_into().unwrap()),
        18
    );
    elf[note_type..name].copy_from_slice(&0x99u32.to_le_bytes());
    let path = dir.join("no-pvh.elf");
    std::fs::write(&path, elf).unwrap();
    path
}

#[test]
fn elf_without_a_pvh_note() {
    if !kvm_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = run(strata()
        .args(["run", "--kernel"])
        .arg(hello_without_pvh_note(dir.path())));
    assert_one_line_error(&out, &["no-pvh.elf", "no PVH entry note"]);
}

#[test]
fn elf_for_another_machine() {
    if !kvm_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut elf = std::fs::read(image("hello")).unwrap();
    elf[0x12..0x14].copy_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
    let path = dir.path().join("arm.elf");
    std::fs::write(&path, elf).unwrap();
    let out = run(strata().args(["run", "--kernel"]).arg(&path));
    assert_one_line_error(&out, &["arm.elf", "another machine"]);
}

#[test]
fn truncated_bzimage() {
    if !kvm_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut bz = vec![0u8; 0x400];
    bz[0x1f1] = 1;
    bz[0x1fe] = 0x55;
    bz[0x1ff] = 0xaa;
    bz[0x202..0x206].copy_from_slice(b"HdrS");
    let path = dir.path().join("bzImage");
    std::fs::write(&path, bz).unwrap();
    let out = run(strata().args(["run", "--kernel"]).arg(&path));
    assert_one_line_error(&out, &["bzImage"]);
}

#[test]
fn memory_too_small_or_too_large() {
    if !kvm_available() {
        return;
    }
    let out = run(strata().args(["run", "--memory", "1"]));
    assert_one_line_error(&out, &["--memory 1 MiB is too small", "at least 2 MiB"]);
    let out = run(strata().args(["run", "--memory", "1024G"]));
    assert_one_line_error(
        &out,
        &[
            "--memory 1048576 MiB is more than this host's",
            "lower --memory",
        ],
    );
}

#[test]
fn bad_flag_values_are_one_line_each() {
    let cases: &[(&[&str], &[&str])] = &[
        (&["run", "--cpus", "0"], &["--cpus must be at least 1"]),
        (&["run", "--cpus", "many"], &["many", "--cpus"]),
        (&["run", "--memory", "lots"], &["lots", "not a size"]),
        (&["run", "--memory", "12P"], &["unknown unit"]),
        (
            &["run", "--no-such-flag"],
            &["--no-such-flag", "strata --help"],
        ),
        (&["launch"], &["launch"]),
    ];
    for (args, needles) in cases {
        if args == &["run", "--cpus", "0"] && !kvm_available() {
            continue;
        }
        let out = run(strata().args(*args));
        assert_one_line_error(&out, needles);
    }
}

#[test]
fn serial_file_that_cannot_be_created() {
    if !kvm_available() {
        return;
    }
    let out = run(strata().args(["run", "--serial", "/nonexistent-dir/serial.log"]));
    assert_one_line_error(
        &out,
        &["/nonexistent-dir/serial.log", "cannot open serial output"],
    );
}

/// Runs `strata run` inside a private mount namespace whose `/dev` is an
/// empty tmpfs, after `setup` has run there. Needs root (unshare, mount).
fn run_with_private_dev(setup: &str, run_as_nobody: bool) -> Option<std::process::Output> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: needs root to build a private /dev");
        return None;
    }
    // A copy of the binary that an unprivileged user may execute.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.path().join("strata");
    std::fs::copy(env!("CARGO_BIN_EXE_strata"), &exe).unwrap();
    let runner = if run_as_nobody {
        "setpriv --reuid=65534 --regid=65534 --clear-groups "
    } else {
        ""
    };
    let script = format!(
        "mount -t tmpfs none /dev && {setup} && exec {runner}{} run",
        exe.display()
    );
    Some(run(std::process::Command::new("unshare").args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ])))
}

#[test]
fn no_kvm_device() {
    let Some(out) = run_with_private_dev("true", false) else {
        return;
    };
    assert_one_line_error(&out, &["/dev/kvm does not exist", "enable"]);
}

#[test]
fn no_permission_on_kvm_device() {
    let Some(out) = run_with_private_dev("mknod -m 600 /dev/kvm c 10 232", true) else {
        return;
    };
    assert_one_line_error(&out, &["no permission to open /dev/kvm", "kvm"]);
    assert!(!stderr(&out).contains("os error"));
}
