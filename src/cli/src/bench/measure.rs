//! Starting one contender once and timing it from the outside.

use std::io::Read;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use strata_vmm::vcpu::monotonic_ns;

use super::Contender;
use crate::run::RunMetrics;

/// A contender that has not exited by then is killed and the run fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// What `hello` prints first; a run that does not print it failed.
const BANNER: &str = "Hello from a Strata guest!";

/// What one start of one contender measured. Times are ns since spawn.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Until the guest's first port access, as the VMM recorded it (Strata only).
    pub first_io_ns: Option<u64>,
    /// Until the first byte of serial output reached the benchmark.
    pub first_byte_ns: u64,
    /// Until the process had exited.
    pub exit_ns: u64,
    /// Peak RSS of the process, from `wait4`.
    pub peak_rss_bytes: u64,
    /// Guest RAM resident at the end, when the VMM reports it (Strata only).
    pub guest_resident_bytes: Option<u64>,
}

/// Starts `contender` once and measures it.
pub fn measure(contender: &mut Contender) -> Result<Sample, String> {
    contender
        .command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let spawned_ns = monotonic_ns();
    let mut child = contender
        .command
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    let pid = child.id() as libc::pid_t;
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + RUN_TIMEOUT;
            while !done.load(Ordering::Acquire) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if !done.load(Ordering::Acquire) {
                // SAFETY: kill(2) has no memory-safety preconditions; the pid is
                // our unreaped child, so it cannot have been reused.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        })
    };

    let mut stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let mut output = Vec::new();
    let mut first = [0u8; 1];
    let got_first = stdout
        .read(&mut first)
        .map_err(|e| format!("reading output: {e}"))?;
    let first_byte_ns = monotonic_ns().saturating_sub(spawned_ns);
    output.extend_from_slice(&first[..got_first]);
    stdout
        .read_to_end(&mut output)
        .map_err(|e| format!("reading output: {e}"))?;
    let mut stderr_text = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut stderr_text);
    }

    let (status, rusage) = wait_with_rusage(pid)?;
    let exit_ns = monotonic_ns().saturating_sub(spawned_ns);
    done.store(true, Ordering::Release);
    let _ = watchdog.join();

    let text = String::from_utf8_lossy(&output);
    if !text.contains(BANNER) || status != Some(contender.expected_status) {
        return Err(format!(
            "expected the hello banner and exit status {}, got status {:?}; output: {:?}; stderr: {:?}",
            contender.expected_status,
            status,
            text.trim(),
            stderr_text.trim()
        ));
    }
    let mut sample = Sample {
        first_io_ns: None,
        first_byte_ns,
        exit_ns,
        peak_rss_bytes: (rusage.ru_maxrss as u64) * 1024,
        guest_resident_bytes: None,
    };
    if let Some(path) = &contender.metrics_file {
        let json = std::fs::read_to_string(path).map_err(|e| format!("no metrics file: {e}"))?;
        let metrics: RunMetrics =
            serde_json::from_str(&json).map_err(|e| format!("bad metrics file: {e}"))?;
        sample.first_io_ns = metrics
            .first_guest_io_ns
            .map(|ns| ns.saturating_sub(spawned_ns));
        sample.guest_resident_bytes = Some(metrics.guest_resident_bytes);
    }
    Ok(sample)
}

/// Reaps `pid`, returning its exit code (None if killed) and resource usage.
fn wait_with_rusage(pid: libc::pid_t) -> Result<(Option<i32>, libc::rusage), String> {
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `status` and `rusage` are valid, writable, and live across the call.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut rusage) };
        if rc == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("wait4: {err}"));
        }
    }
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    Ok((code, rusage))
}
