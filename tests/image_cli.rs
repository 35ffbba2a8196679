//! `strata image` as a user runs it: output, JSON, exit status, and one-line
//! errors for bad input.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{assert_one_line_error, run, stderr, stdout, strata};

struct Store {
    dir: tempfile::TempDir,
}

impl Store {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["store", "fast", "cap"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let toml = format!(
            "[tiers.fast]\npath = \"{}\"\nclass = \"fast\"\n\n[tiers.cap]\npath = \"{}\"\nclass = \"capacity\"\n\n[placement]\noverlays = \"fast\"\nbases = \"cap\"\n",
            dir.path().join("fast").display(),
            dir.path().join("cap").display()
        );
        std::fs::write(dir.path().join("store/strata.toml"), toml).unwrap();
        Self { dir }
    }

    fn image(&self) -> Command {
        let mut cmd = strata();
        cmd.arg("image")
            .env("STRATA_STORE", self.dir.path().join("store"));
        cmd
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = run(self.image().args(args));
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        stdout(&out)
    }

    fn fails(&self, args: &[&str]) -> Output {
        run(self.image().args(args))
    }

    fn path(&self, rel: &str) -> String {
        self.dir.path().join(rel).display().to_string()
    }
}

fn write_raw(path: &Path, size: u64) {
    std::fs::write(path, b"golden image header").unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(size)
        .unwrap();
}

#[test]
fn a_golden_image_with_overlays_through_the_cli() {
    let s = Store::new();
    let raw = s.path("golden.raw");
    write_raw(Path::new(&raw), 64 << 20);
    assert!(s.ok(&["import", "golden", &raw]).contains("imported"));
    assert!(
        s.ok(&["create", "vm1", "--from", "golden"])
            .contains("created image vm1")
    );
    s.ok(&["create", "vm2", "--raw", &raw]);
    assert_eq!(s.ok(&["list"]), "golden\nvm1\nvm2\n");

    let info: serde_json::Value = serde_json::from_str(&s.ok(&["info", "vm1", "--json"])).unwrap();
    assert_eq!(info["virtual_size"], 64 << 20);
    assert_eq!(info["chain"][0]["tier"], "fast");
    assert_eq!(info["chain"][1]["tier"], "cap");
    assert_eq!(info["chain"][1]["frozen"], true);
    let table = s.ok(&["info", "vm1"]);
    assert!(
        table.contains("image vm1: 64.0 MiB virtual") && table.contains("frozen"),
        "{table}"
    );

    assert!(
        s.ok(&["snapshot", "vm1", "--as", "vm1-snap"])
            .contains("as vm1-snap")
    );
    assert!(
        s.ok(&["diff", "vm1", "vm1-snap"])
            .contains("0 blocks differ")
    );
    assert!(s.ok(&["check", "vm1"]).contains("all consistent"));
    let copied = s.ok(&["copy", "vm1", "--to-tier", "cap"]);
    assert!(copied.contains("moved image vm1 to tier cap"), "{copied}");
    let out = s.path("vm1.raw");
    s.ok(&["export", "vm1", &out]);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&raw).unwrap());
    s.ok(&["rm", "vm2"]);
    assert_eq!(s.ok(&["list"]), "golden\nvm1\nvm1-snap\n");
}

#[test]
fn bad_input_gets_one_line_each() {
    let s = Store::new();
    assert_one_line_error(&s.fails(&["info", "ghost"]), &["no image named \"ghost\""]);
    assert_one_line_error(
        &s.fails(&["create", "x", "--raw", "/nonexistent.raw"]),
        &["/nonexistent.raw"],
    );
    assert_one_line_error(
        &s.fails(&["create", "bad/name", "--size", "1M"]),
        &["bad/name"],
    );
    assert_one_line_error(
        &s.fails(&["create", "x", "--size", "1M", "--block-size", "3000"]),
        &["--block-size 3000"],
    );
    assert_one_line_error(&s.fails(&["create", "x", "--size", "lots"]), &["lots"]);
    s.ok(&["create", "x", "--size", "1M"]);
    assert_one_line_error(&s.fails(&["copy", "x", "--to-tier", "tape"]), &["tape"]);
    assert_one_line_error(
        &s.fails(&["import", "y", "/nonexistent.qcow2"]),
        &["/nonexistent.qcow2"],
    );

    // A damaged layer: check fails, naming the file.
    let info: serde_json::Value = serde_json::from_str(&s.ok(&["info", "x", "--json"])).unwrap();
    let layer = info["chain"][0]["path"].as_str().unwrap().to_string();
    let mut bytes = std::fs::read(&layer).unwrap();
    bytes[0] = b'X';
    std::fs::write(&layer, bytes).unwrap();
    assert_one_line_error(&s.fails(&["check", "x"]), &[&layer, "not a Strata layer"]);

    // No tiers configured anywhere.
    let empty = tempfile::tempdir().unwrap();
    let out = run(strata()
        .args(["image", "list", "--store"])
        .arg(empty.path()));
    assert_one_line_error(&out, &["no storage tiers", "--tier"]);
    // A tier directory that does not exist.
    let out = run(strata()
        .args(["image", "list", "--store"])
        .arg(empty.path())
        .args(["--tier", "fast=/nonexistent/tier"]));
    assert_one_line_error(&out, &["/nonexistent/tier", "does not exist"]);
}

#[test]
fn help_shows_examples() {
    let out = run(strata().args(["image", "--help"]));
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains("Examples:") && stdout(&out).contains("copy web1 --to-tier capacity")
    );
}
