//! A temporary image store driven through the `strata` CLI, and a
//! `strata blk serve` process on it: the fixtures of the tests that attach
//! disks to guests.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::strata;

pub struct Store {
    dir: tempfile::TempDir,
}

impl Store {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["store", "fast", "cap"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        Self { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = strata();
        cmd.args(args)
            .arg("--store")
            .arg(self.path("store"))
            .arg("--tier")
            .arg(format!("fast={}:fast", self.path("fast").display()))
            .arg("--tier")
            .arg(format!("cap={}:capacity", self.path("cap").display()));
        cmd
    }

    pub fn image(&self, args: &[&str]) {
        let mut full = vec!["image"];
        full.extend_from_slice(args);
        let out = self.cmd(&full).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A store with a pseudo-random golden file `golden.raw` of `len`
    /// bytes, and images `names` created over it. Returns the file too.
    pub fn with_images(names: &[&str], len: u64) -> (Self, PathBuf) {
        let store = Self::new();
        let raw = store.path("golden.raw");
        strata_testkit::write_pseudo_random(&raw, len, 0x9e37_79b9_7f4a_7c15).unwrap();
        for name in names {
            store.image(&["create", name, "--raw", raw.to_str().unwrap()]);
        }
        (store, raw)
    }

    /// Asserts that the block holding byte `offset` of image `name` lives
    /// in the image's top layer.
    pub fn assert_in_top_layer(&self, name: &str, offset: u64) {
        use strata_storage::{Access, BlockSource, Image};
        let image = Image::open(&self.top(name), Access::ReadOnly).unwrap();
        let top = image.members().len() - 1;
        let block = offset / u64::from(image.block_size());
        assert!(
            matches!(image.source(block), BlockSource::Member { index, .. } if index == top),
            "byte {offset} of {name} is not in its top layer"
        );
    }

    pub fn top(&self, name: &str) -> PathBuf {
        let out = self
            .cmd(&["image", "info", name, "--json"])
            .output()
            .unwrap();
        let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        PathBuf::from(info["chain"][0]["path"].as_str().unwrap())
    }
}

/// `strata blk serve`, killed (SIGTERM, so it flushes) on drop. Its log
/// (`STRATA_LOG=info`) goes to a file.
pub struct Server(Child, PathBuf);

impl Server {
    pub fn start(store: &Store, disks: &[String]) -> Self {
        let mut args = vec!["blk".to_string(), "serve".to_string()];
        for disk in disks {
            args.push("--disk".into());
            args.push(disk.clone());
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = store.path(&format!(
            "server-{}.log",
            std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos()
        ));
        let child = store
            .cmd(&refs)
            .env("STRATA_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let server = Self(child, log);
        for disk in disks {
            let socket = disk
                .split(',')
                .find_map(|p| p.strip_prefix("socket="))
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while !Path::new(socket).exists() {
                assert!(
                    Instant::now() < deadline,
                    "strata blk never created {socket}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        server
    }

    /// Waits until the log has a line containing `text`, and returns it.
    pub fn wait_for_log(&self, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = std::fs::read_to_string(&self.1).unwrap_or_default();
            if let Some(line) = log.lines().find(|l| l.contains(text)) {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no {text:?} in the server log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the server with SIGKILL, as a crash would, and reaps it.
    pub fn kill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }

    /// Stops the server with SIGTERM and checks it exited cleanly.
    pub fn stop(mut self) {
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let status = self.0.wait().unwrap();
        assert!(status.success(), "strata blk serve exited with {status}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
