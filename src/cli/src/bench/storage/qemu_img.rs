//! Driving `qemu-img` and `qemu-io`: creating qcow2 overlays, filling them,
//! exporting them, and `qemu-img bench`.
//!
//! Every call is a process; its failure comes back as one line naming the
//! command and the first line of what it printed.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::workload::Requests;

/// How `qemu-img bench` submits requests (`-i`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum QemuAio {
    /// io_uring where `qemu-img bench` can use it, else threads.
    Auto,
    /// Linux io_uring: one thread; page-cache hits complete inline.
    #[value(name = "io_uring")]
    IoUring,
    /// QEMU's thread pool of blocking `preadv`/`pwritev` workers.
    Threads,
}

impl QemuAio {
    /// The value `-i` takes.
    pub fn flag(self) -> &'static str {
        match self {
            QemuAio::IoUring => "io_uring",
            QemuAio::Threads | QemuAio::Auto => "threads",
        }
    }
}

/// The QEMU tools the benchmark uses.
#[derive(Debug)]
pub struct QemuTools {
    img: PathBuf,
    io: PathBuf,
    /// How `qemu-img bench` submits requests.
    pub aio: QemuAio,
    /// First line of `qemu-img --version`.
    pub version: String,
}

impl QemuTools {
    /// Checks that both tools run.
    pub fn find(img: &Path, io: &Path, aio: QemuAio) -> Result<Self, String> {
        let version = |tool: &Path, flag: &str| {
            let out = Command::new(tool)
                .arg("--version")
                .output()
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => format!(
                        "{} not found: install qemu-utils, or pass {flag} PATH",
                        tool.display()
                    ),
                    _ => format!("cannot run {}: {e}", tool.display()),
                })?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            match text.lines().next() {
                Some(line) if out.status.success() => Ok(line.trim().to_string()),
                _ => Err(format!("{} --version failed", tool.display())),
            }
        };
        let version_line = version(img, "--qemu-img")?;
        version(io, "--qemu-io")?;
        Ok(Self {
            img: img.to_path_buf(),
            io: io.to_path_buf(),
            aio,
            version: version_line,
        })
    }

    /// Settles `auto`: io_uring if `qemu-img bench` can use it on raw file
    /// `image`, else threads (io_uring may be missing, or refused by a
    /// container's seccomp policy).
    pub fn settle_aio(&mut self, image: &Path) {
        if self.aio != QemuAio::Auto {
            return;
        }
        let works = Command::new(&self.img)
            .args([
                "bench",
                "-f",
                "raw",
                "-c",
                "1",
                "-t",
                "writeback",
                "-i",
                "io_uring",
            ])
            .arg(image)
            .output()
            .is_ok_and(|out| out.status.success());
        self.aio = if works {
            QemuAio::IoUring
        } else {
            QemuAio::Threads
        };
    }

    /// Creates qcow2 `path` over `backing` (a location relative to `path`'s
    /// directory, as qcow2 resolves it) of format `backing_format`.
    pub fn create_overlay(
        &self,
        path: &Path,
        backing: &str,
        backing_format: &str,
        cluster_size: u32,
    ) -> Result<(), String> {
        let mut command = Command::new(&self.img);
        command
            .args(["create", "-q", "-f", "qcow2", "-o"])
            .arg(format!("cluster_size={cluster_size}"))
            .args(["-b", backing, "-F", backing_format])
            .arg(path);
        run(&mut command, "qemu-img create").map(drop)
    }

    /// Runs the `qemu-io` commands in `script` (one per line) on qcow2
    /// `image` (an absolute path), with the same write-back caching the
    /// benchmark uses. Paths in the script are relative to its directory.
    pub fn run_script(&self, image: &Path, script: &Path) -> Result<(), String> {
        let stdin =
            File::open(script).map_err(|e| format!("cannot open {}: {e}", script.display()))?;
        let mut command = Command::new(&self.io);
        command
            .args(["-t", "writeback", "-f", "qcow2"])
            .arg(image)
            .stdin(Stdio::from(stdin))
            .current_dir(script.parent().unwrap_or(Path::new(".")));
        let out = run(&mut command, "qemu-io")?;
        let text = String::from_utf8_lossy(&out.stdout);
        // qemu-io reports a failed command and carries on with the next.
        match text
            .lines()
            .find(|l| l.contains("failed") || l.to_ascii_lowercase().contains("error"))
        {
            Some(line) => Err(format!("qemu-io on {}: {}", image.display(), line.trim())),
            None => Ok(()),
        }
    }

    /// Writes qcow2 `image`'s whole virtual disk to raw file `out`.
    pub fn export_raw(&self, image: &Path, out: &Path) -> Result<(), String> {
        let mut command = Command::new(&self.img);
        command
            .args(["convert", "-f", "qcow2", "-O", "raw"])
            .arg(image)
            .arg(out);
        run(&mut command, "qemu-img convert").map(drop)
    }

    /// The `cluster`-sized blocks qcow2 `image`'s top layer holds data for.
    pub fn allocated_in_top(&self, image: &Path, cluster: u64) -> Result<BTreeSet<u64>, String> {
        let mut command = Command::new(&self.img);
        command
            .args(["map", "-f", "qcow2", "--output=json"])
            .arg(image);
        let out = run(&mut command, "qemu-img map")?;
        top_clusters(&String::from_utf8_lossy(&out.stdout), cluster)
            .ok_or_else(|| format!("qemu-img map {}: unexpected output", image.display()))
    }

    /// Runs `requests` on qcow2 `image` at `queue_depth` with
    /// `qemu-img bench`; writes (of bytes `fill`) if `fill` is given.
    /// Returns the time `qemu-img` reports, which excludes opening the chain
    /// and closing it.
    ///
    /// Reads use `-t writeback` (buffered, like Strata). Writes use `-t
    /// unsafe`, which is the same but ignores flushes: neither side flushes
    /// during a run, and this spares the flush `qemu-img` makes on closing
    /// (the written layer is deleted next, and Strata does not flush either).
    pub fn bench(
        &self,
        image: &Path,
        requests: &Requests,
        queue_depth: u32,
        fill: Option<u8>,
    ) -> Result<Duration, String> {
        let mut command = Command::new(&self.img);
        command
            .args([
                "bench",
                "-f",
                "qcow2",
                "-i",
                self.aio.flag(),
                "-o",
                "0",
                "-t",
            ])
            .arg(if fill.is_some() {
                "unsafe"
            } else {
                "writeback"
            })
            .arg(format!("-c{}", requests.count))
            .arg(format!("-d{queue_depth}"))
            .arg(format!("-s{}", requests.len))
            .arg(format!("-S{}", requests.step));
        if let Some(fill) = fill {
            command.arg("-w").arg(format!("--pattern={fill}"));
        }
        command.arg(image);
        let out = run(&mut command, "qemu-img bench")?;
        let text = String::from_utf8_lossy(&out.stdout);
        run_time(&text)
            .ok_or_else(|| format!("qemu-img bench printed no run time: {:?}", text.trim()))
    }
}

/// Runs `command`; a failure is one line: `what`, and the first line of
/// its stderr (or stdout).
fn run(command: &mut Command, what: &str) -> Result<Output, String> {
    let out = command
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if out.status.success() {
        return Ok(out);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let first = stderr
        .lines()
        .chain(stdout.lines())
        .find(|l| !l.trim().is_empty());
    Err(format!(
        "{what} failed ({}): {}",
        out.status,
        first.unwrap_or("no output").trim()
    ))
}

/// The time in `qemu-img bench`'s "Run completed in 0.123 seconds." line.
pub fn run_time(stdout: &str) -> Option<Duration> {
    let line = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Run completed in "))?;
    let seconds: f64 = line.strip_suffix(" seconds.")?.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

/// The clusters covered by extents that `qemu-img map --output=json` says
/// the top layer (`"depth": 0`) holds data for.
fn top_clusters(json: &str, cluster: u64) -> Option<BTreeSet<u64>> {
    let extents: serde_json::Value = serde_json::from_str(json).ok()?;
    let mut clusters = BTreeSet::new();
    for extent in extents.as_array()? {
        let field = |name: &str| extent.get(name).and_then(serde_json::Value::as_u64);
        if field("depth")? != 0 || extent.get("data")?.as_bool() != Some(true) {
            continue;
        }
        let (start, length) = (field("start")?, field("length")?);
        clusters.extend(start / cluster..(start + length).div_ceil(cluster));
    }
    Some(clusters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_time_is_parsed() {
        let out = "Sending 5 write requests, 4096 bytes each, 1 in parallel \
                   (starting at offset 0, step size 41480192)\nRun completed in 0.011 seconds.\n";
        assert_eq!(run_time(out), Some(Duration::from_millis(11)));
        assert_eq!(run_time("Run completed in soon."), None);
        assert_eq!(run_time(""), None);
    }

    #[test]
    fn top_clusters_come_from_depth_zero_data() {
        let json = r#"[{ "start": 0, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true, "offset": 327680},
            { "start": 65536, "length": 131072, "depth": 1, "present": true, "zero": false, "data": true, "offset": 65536},
            { "start": 196608, "length": 131072, "depth": 0, "present": true, "zero": false, "data": true, "offset": 458752},
            { "start": 327680, "length": 65536, "depth": 0, "present": true, "zero": true, "data": false}]"#;
        let clusters = top_clusters(json, 65536).unwrap_or_default();
        assert_eq!(clusters.into_iter().collect::<Vec<_>>(), [0, 3, 4]);
        assert!(top_clusters("not json", 65536).is_none());
    }
}
