//! `strata bench boot`: start-up time and memory overhead of the `hello`
//! guest under Strata and under QEMU, measured side by side.
//!
//! Each round starts every contender once, in turn, so that slow phases of
//! a noisy machine hit all of them alike; the report gives medians and the
//! ratios between them. All contenders boot the very same `hello.elf`.

pub mod blk;
pub mod guest_disk;
mod measure;
mod report;
pub mod stats;
pub mod storage;

use std::path::{Path, PathBuf};
use std::process::Command;

use strata_guest_abi::qemu_exit_status;

use crate::args::BenchBootArgs;
use crate::exit::{ExitStatus, Failure};
use measure::{Sample, measure};

/// One VMM configuration being measured.
pub struct Contender {
    /// Name in the report.
    pub name: &'static str,
    /// The command that boots `hello.elf`.
    command: Command,
    /// Exit status the guest's `exit 0` turns into under this VMM.
    expected_status: i32,
    /// Where Strata writes its metrics, for Strata only.
    metrics_file: Option<PathBuf>,
}

fn strata_contender(image: &Path, dir: &Path) -> Result<Contender, Failure> {
    let exe = std::env::current_exe()
        .map_err(|e| Failure(format!("cannot find the strata binary itself: {e}")))?;
    let metrics = dir.join("metrics.json");
    let mut command = Command::new(exe);
    command
        .arg("run")
        .arg("--kernel")
        .arg(image)
        .args(["--memory", "128", "--serial", "stdout", "--metrics-file"])
        .arg(&metrics);
    Ok(Contender {
        name: "strata",
        command,
        expected_status: 0,
        metrics_file: Some(metrics),
    })
}

fn qemu_contender(
    qemu: &Path,
    machine: &'static str,
    name: &'static str,
    image: &Path,
) -> Contender {
    let mut command = Command::new(qemu);
    command
        .args(["-M", machine, "-accel", "kvm", "-m", "128"])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-no-reboot",
            "-display",
            "none",
        ])
        .args([
            "-serial",
            "stdio",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=4",
        ])
        .arg("-kernel")
        .arg(image);
    Contender {
        name,
        command,
        expected_status: qemu_exit_status(0),
        metrics_file: None,
    }
}

fn qemu_available(qemu: &Path) -> bool {
    Command::new(qemu)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Runs the benchmark and prints (and optionally writes) the report.
pub fn boot(args: &BenchBootArgs) -> Result<ExitStatus, Failure> {
    let dir = tempfile::tempdir()
        .map_err(|e| Failure(format!("cannot create a temporary directory: {e}")))?;
    let image = dir.path().join("hello.elf");
    std::fs::write(&image, strata_guest_images::HELLO_ELF)
        .map_err(|e| Failure(format!("cannot write {}: {e}", image.display())))?;

    let mut contenders = vec![strata_contender(&image, dir.path())?];
    let qemu_note = if qemu_available(&args.qemu) {
        contenders.push(qemu_contender(
            &args.qemu,
            "microvm",
            "qemu -M microvm",
            &image,
        ));
        contenders.push(qemu_contender(&args.qemu, "pc", "qemu -M pc", &image));
        None
    } else {
        Some(format!(
            "{} not found: QEMU was not measured",
            args.qemu.display()
        ))
    };

    let mut samples: Vec<Vec<Sample>> = contenders.iter().map(|_| Vec::new()).collect();
    for round in 0..args.runs {
        for (contender, results) in contenders.iter_mut().zip(samples.iter_mut()) {
            let sample = measure(contender)
                .map_err(|e| Failure(format!("round {}: {}: {e}", round + 1, contender.name)))?;
            results.push(sample);
        }
    }
    let report = report::Report::new(&contenders, &samples, args.runs, qemu_note);
    print!("{}", report.text());
    if let Some(path) = &args.markdown {
        std::fs::write(path, report.markdown())
            .map_err(|e| Failure(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(ExitStatus::Success)
}
