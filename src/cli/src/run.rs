//! `strata run`: turn flags into a [`VmConfig`], run it, and turn the outcome
//! into messages and an exit status.

use std::path::{Path, PathBuf};

use serde::Serialize;
use strata_vmm::config::DiskConfig;
use strata_vmm::devices::vhost_user_blk::MAX_QUEUES;
use strata_vmm::vcpu::monotonic_ns;
use strata_vmm::{KernelSource, SerialOutput, VmConfig, VmError, VmOutcome, VmReport, run_vm};

use crate::args::RunArgs;
use crate::exit::{ExitStatus, Failure};

/// Figures written by `--metrics-file`, read by `strata bench`.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct RunMetrics {
    /// CLOCK_MONOTONIC ns when `main` started.
    pub main_start_ns: u64,
    /// CLOCK_MONOTONIC ns of the guest's first port access.
    pub first_guest_io_ns: Option<u64>,
    /// CLOCK_MONOTONIC ns when the VM had ended and its threads were joined.
    pub vm_end_ns: u64,
    /// Peak resident set size of the process (VmHWM).
    pub peak_rss_bytes: Option<u64>,
    /// Guest RAM resident at the end: pages the guest or the loader touched.
    pub guest_resident_bytes: u64,
}

/// Parses `--serial`.
fn serial_output(text: &str) -> SerialOutput {
    match text {
        "stdout" | "-" => SerialOutput::Stdout,
        "none" | "null" => SerialOutput::Null,
        path => SerialOutput::File(PathBuf::from(path)),
    }
}

/// Parses one `--disk` of `strata run`.
pub fn parse_disk(text: &str) -> Result<DiskConfig, String> {
    let mut socket = None;
    let mut disk = DiskConfig {
        socket: PathBuf::new(),
        readonly: false,
        queues: 1,
        reconnect: false,
    };
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (key, value) = part.split_once('=').unwrap_or((part, ""));
        match key {
            "socket" if value.is_empty() => {
                return Err("socket= needs the backend's socket path".into());
            }
            "socket" => socket = Some(PathBuf::from(value)),
            "readonly" | "ro" => disk.readonly = true,
            "reconnect" => disk.reconnect = true,
            "queues" => {
                disk.queues = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_QUEUES).contains(n))
                    .ok_or_else(|| {
                        format!("queues={value}: expected a number from 1 to {MAX_QUEUES}")
                    })?
            }
            _ => {
                return Err(format!(
                    "unknown key {part:?}: expected socket=PATH, readonly, queues=N or reconnect"
                ));
            }
        }
    }
    disk.socket = socket.ok_or("give socket=PATH, the backend's Unix socket")?;
    Ok(disk)
}

fn config_from(args: &RunArgs) -> VmConfig {
    let kernel = match &args.kernel {
        Some(path) => KernelSource::File(path.clone()),
        None => KernelSource::Embedded {
            name: "hello (built in)",
            bytes: strata_guest_images::HELLO_ELF,
        },
    };
    VmConfig {
        kernel,
        memory_mib: args.memory,
        vcpus: args.cpus,
        cmdline: args.cmdline.clone(),
        serial: serial_output(&args.serial),
        disks: args.disks.clone(),
    }
}

/// Runs `strata run` and returns the exit status to end the process with.
pub fn run(args: &RunArgs, main_start_ns: u64) -> Result<ExitStatus, Failure> {
    let config = config_from(args);
    let report = run_vm(&config).map_err(|e| Failure(describe(&e)))?;
    if let Some(path) = &args.metrics_file {
        write_metrics(path, &report, main_start_ns)?;
    }
    Ok(match report.outcome {
        VmOutcome::GuestExit(code) => ExitStatus::Guest(code),
        VmOutcome::Crashed { kind, registers } => {
            eprintln!("strata: guest crashed: {kind}");
            eprintln!("{registers}");
            ExitStatus::GuestCrashed
        }
        VmOutcome::Signalled(sig) => {
            eprintln!("strata: stopped the guest on {}", signal_name(sig));
            ExitStatus::Signalled(sig)
        }
        VmOutcome::RunFailed { index, source } => {
            return Err(Failure(format!("KVM_RUN failed on vCPU {index}: {source}")));
        }
    })
}

/// One line for any start-up error, with its causes appended.
fn describe(error: &VmError) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    // The top-level message already includes its direct cause for transparent
    // variants; append only causes that add new text.
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGINT => "SIGINT".to_string(),
        libc::SIGTERM => "SIGTERM".to_string(),
        other => format!("signal {other}"),
    }
}

fn write_metrics(path: &Path, report: &VmReport, main_start_ns: u64) -> Result<(), Failure> {
    let metrics = RunMetrics {
        main_start_ns,
        first_guest_io_ns: report.first_io_ns,
        vm_end_ns: monotonic_ns(),
        peak_rss_bytes: peak_rss_bytes(),
        guest_resident_bytes: report.guest_resident_bytes,
    };
    let json = serde_json::to_string_pretty(&metrics)
        .map_err(|e| Failure(format!("cannot encode metrics: {e}")))?;
    std::fs::write(path, json)
        .map_err(|e| Failure(format!("cannot write metrics file {}: {e}", path.display())))
}

/// This process's peak RSS (VmHWM), in bytes.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    strata_vmm::parse_meminfo_kib(&status, "VmHWM:").map(|kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_specs() {
        let disk = parse_disk("socket=/run/a.sock,readonly,queues=2,reconnect").unwrap();
        assert_eq!(
            disk,
            DiskConfig {
                socket: PathBuf::from("/run/a.sock"),
                readonly: true,
                queues: 2,
                reconnect: true
            }
        );
        assert_eq!(parse_disk("socket=x").unwrap().queues, 1);
        assert!(parse_disk("readonly").unwrap_err().contains("socket=PATH"));
        assert!(
            parse_disk("socket=x,queues=0")
                .unwrap_err()
                .contains("queues=0")
        );
        assert!(
            parse_disk("socket=x,queues=99")
                .unwrap_err()
                .contains("1 to 16")
        );
        assert!(
            parse_disk("socket=x,cache=none")
                .unwrap_err()
                .contains("cache=none")
        );
        assert!(parse_disk("socket=").unwrap_err().contains("socket path"));
    }

    #[test]
    fn serial_destinations() {
        assert_eq!(serial_output("stdout"), SerialOutput::Stdout);
        assert_eq!(serial_output("none"), SerialOutput::Null);
        assert_eq!(
            serial_output("guest.log"),
            SerialOutput::File(PathBuf::from("guest.log"))
        );
        assert_eq!(
            serial_output("./stdout"),
            SerialOutput::File(PathBuf::from("./stdout"))
        );
    }
}
