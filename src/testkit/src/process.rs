//! Child processes for the helpers: finding tools with a useful message,
//! collecting output on background threads, waiting with a deadline.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Fails with a one-line message naming how to get `tool` when it is not on
/// `PATH`.
pub(crate) fn require_tool(tool: &str, why: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| format!("{tool} not found ({why}): run scripts/test.sh, which installs it"))
}

/// Lines a child wrote to one stream, shared with the thread reading them.
#[derive(Default)]
pub(crate) struct Transcript {
    state: Mutex<TranscriptState>,
    grew: Condvar,
}

#[derive(Default)]
struct TranscriptState {
    lines: Vec<String>,
    closed: bool,
}

impl Transcript {
    /// Reads `stream` line by line on a new thread until it closes.
    pub(crate) fn follow(stream: impl Read + Send + 'static) -> Arc<Transcript> {
        let transcript = Arc::new(Transcript::default());
        let writer = Arc::clone(&transcript);
        thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut raw = Vec::new();
            loop {
                raw.clear();
                match reader.read_until(b'\n', &mut raw) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&raw);
                        writer.push(line.trim_end_matches(['\n', '\r']).to_owned());
                    }
                }
            }
            writer.close();
        });
        transcript
    }

    fn push(&self, line: String) {
        let mut state = self.lock();
        state.lines.push(line);
        self.grew.notify_all();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.grew.notify_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TranscriptState> {
        // A reader thread cannot panic while holding the lock, but a poisoned
        // transcript is still worth reading.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Everything so far, one line each.
    pub(crate) fn text(&self) -> String {
        let state = self.lock();
        let mut text = state.lines.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        text
    }

    /// Waits for a line starting with `prefix` and returns it; `None` when
    /// the stream closes or the deadline passes first.
    pub(crate) fn wait_for_prefix(&self, prefix: &str, deadline: Instant) -> Option<String> {
        let mut state = self.lock();
        let mut seen = 0;
        loop {
            if let Some(line) = state.lines[seen..].iter().find(|l| l.starts_with(prefix)) {
                return Some(line.clone());
            }
            seen = state.lines.len();
            let now = Instant::now();
            if state.closed || now >= deadline {
                return None;
            }
            state = self
                .grew
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// Waits (briefly) for the reader to reach end of file, so the text is
    /// complete after the child exits.
    pub(crate) fn wait_closed(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        while !state.closed {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            state = self
                .grew
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }
}

/// Waits for `child` to exit; kills it when `timeout` passes first.
pub(crate) fn wait_with_deadline(
    child: &mut Child,
    timeout: Duration,
    what: &str,
) -> Result<ExitStatus, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                kill(child);
                return Err(format!("{what} still running after {timeout:?}; killed it"));
            }
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("cannot wait for {what}: {e}")),
        }
    }
}

/// Kills and reaps `child`, ignoring one that has already gone.
pub(crate) fn kill(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// SHA-256 (lowercase hex) of `len` bytes at `offset` in a host file, the
/// same figure the guest prints in its `SUM` and `WROTE` records. Computed
/// by coreutils' `sha256sum`, so the kit needs no hashing crate.
pub fn host_sha256(path: &Path, offset: u64, len: u64) -> Result<String, String> {
    use std::io::{Seek, SeekFrom};
    let mut file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| format!("cannot seek {} to {offset}: {e}", path.display()))?;
    require_tool("sha256sum", "it hashes disk images on the host")?;
    let mut hasher = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run sha256sum: {e}"))?;
    let mut stdin = hasher.stdin.take().ok_or("sha256sum has no stdin")?;
    let copied = std::io::copy(&mut file.take(len), &mut stdin)
        .and_then(|n| stdin.flush().map(|()| n))
        .map_err(|e| format!("cannot hash {}: {e}", path.display()));
    drop(stdin);
    let output = hasher
        .wait_with_output()
        .map_err(|e| format!("sha256sum failed: {e}"))?;
    let copied = copied?;
    if copied != len {
        return Err(format!(
            "{} has only {copied} bytes at {offset}, wanted {len}",
            path.display()
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .next()
        .map(str::to_owned)
        .ok_or_else(|| "sha256sum printed nothing".to_owned())
}
