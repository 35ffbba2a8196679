//! `strata run` booting the guest images on the real `/dev/kvm`, asserting on
//! what a user sees: serial output and exit status.
#![allow(clippy::unwrap_used)]

mod common;

use common::{image, kvm_available, run, stderr, stdout, strata};

const BANNER: &str = "Hello from a Strata guest!";

#[test]
fn no_arguments_boots_the_built_in_hello_guest() {
    if !kvm_available() {
        return;
    }
    let out = run(strata().arg("run"));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), format!("{BANNER}\ncmdline: \n"));
}

#[test]
fn hello_prints_its_command_line_and_exits_with_the_code_it_is_given() {
    if !kvm_available() {
        return;
    }
    let out = run(strata()
        .args(["run", "--kernel"])
        .arg(image("hello"))
        .args(["--cmdline", "alpha exit=42 beta"]));
    assert_eq!(out.status.code(), Some(42), "stderr: {}", stderr(&out));
    assert!(
        stdout(&out).contains("cmdline: alpha exit=42 beta\n"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn triple_fault_ends_the_vm_with_a_message_and_register_dump() {
    if !kvm_available() {
        return;
    }
    let out = run(strata()
        .args(["run", "--kernel"])
        .arg(image("triple-fault")));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(126), "stderr: {err}");
    assert!(stdout(&out).contains("triple-fault: loading an empty IDT"));
    assert!(
        err.starts_with("strata: guest crashed: the guest triple-faulted"),
        "{err}"
    );
    assert!(
        err.contains("vCPU 0 registers:") && err.contains("rip=0x") && err.contains("cr0="),
        "{err}"
    );
    assert!(!err.contains("panicked"));
}

#[test]
fn an_instruction_kvm_cannot_run_is_reported_not_hung() {
    if !kvm_available() {
        return;
    }
    let out = run(strata().args(["run", "--kernel"]).arg(image("popcnt")));
    let (text, err) = (stdout(&out), stderr(&out));
    assert!(text.contains("popcnt: executing popcnt"), "{text}");
    match out.status.code() {
        // Hardware-assisted KVM runs popcnt natively.
        Some(0) => assert!(text.contains("popcnt: survived")),
        // An emulating (nested) KVM cannot: a KVM internal error.
        Some(126) => {
            assert!(err.contains("KVM internal error, suberror 1"), "{err}");
            assert!(err.contains("rip=0x"), "{err}");
        }
        other => panic!("unexpected status {other:?}; stderr: {err}"),
    }
}

#[test]
fn serial_output_can_go_to_a_file() {
    if !kvm_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serial.log");
    let out = run(strata().args(["run", "--serial"]).arg(&log));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "");
    assert!(std::fs::read_to_string(&log).unwrap().starts_with(BANNER));
}

#[test]
fn several_vcpus_and_memory_above_the_mmio_gap() {
    if !kvm_available() {
        return;
    }
    // 4 GiB puts RAM on both sides of the 3-4 GiB MMIO gap: two KVM slots.
    let out = run(strata().args([
        "run",
        "--cpus",
        "4",
        "--memory",
        "4G",
        "--cmdline",
        "exit=5",
    ]));
    assert_eq!(out.status.code(), Some(5), "stderr: {}", stderr(&out));
    assert!(stdout(&out).starts_with(BANNER));
}

#[test]
fn metrics_file_records_first_guest_io_and_memory() {
    if !kvm_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("metrics.json");
    let out = run(strata()
        .args(["run", "--serial", "none", "--metrics-file"])
        .arg(&metrics));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&metrics).unwrap()).unwrap();
    let start = json["main_start_ns"].as_u64().unwrap();
    let first_io = json["first_guest_io_ns"].as_u64().unwrap();
    let end = json["vm_end_ns"].as_u64().unwrap();
    assert!(start < first_io && first_io < end, "{json}");
    let resident = json["guest_resident_bytes"].as_u64().unwrap();
    let peak = json["peak_rss_bytes"].as_u64().unwrap();
    assert!(
        resident > 0 && resident < 8 << 20,
        "the hello guest touches a few pages: {json}"
    );
    assert!(peak > resident, "{json}");
}

/// Starts `hello wait` (which halts for good inside KVM), waits for its
/// banner, sends `signal`, and returns the exit status and stderr.
fn stop_waiting_guest_with(signal: libc::c_int) -> (Option<i32>, String) {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;
    let mut child = strata()
        .args(["run", "--cpus", "2", "--cmdline", "wait"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let waiting = lines.find(|l| l.as_ref().is_ok_and(|l| l == "hello: waiting"));
    assert!(waiting.is_some(), "the guest never reported that it waits");
    // SAFETY: kill(2) on our own unreaped child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code(), err)
}

#[test]
fn sigterm_stops_a_running_guest_cleanly() {
    if !kvm_available() {
        return;
    }
    let (status, err) = stop_waiting_guest_with(libc::SIGTERM);
    assert_eq!(status, Some(128 + libc::SIGTERM), "stderr: {err}");
    assert_eq!(err.trim(), "strata: stopped the guest on SIGTERM");
}

#[test]
fn ctrl_c_stops_a_running_guest_cleanly() {
    if !kvm_available() {
        return;
    }
    let (status, err) = stop_waiting_guest_with(libc::SIGINT);
    assert_eq!(status, Some(128 + libc::SIGINT), "stderr: {err}");
    assert_eq!(err.trim(), "strata: stopped the guest on SIGINT");
}
