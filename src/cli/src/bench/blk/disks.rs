//! The disks both backends serve: one raw golden base, and per chain depth
//! d a Strata image and a qcow2 chain of d layers over it with the same
//! bytes in the same places.
//!
//! ```text
//!   block:      0 .. write region .. | rest of the disk
//!   layer d:    all (top, writable)  | blocks with owner d
//!   layer i:    -                    | blocks with owner i    (1 <= i < d)
//!   golden.raw: everything           | (owner 0 reads land here)
//! ```
//!
//! A hash gives each 64 KiB block an owner from 0 to d, so every layer holds
//! about 1/(d+1) of the disk and a read finds its block anywhere in the
//! chain. The write region belongs to the top layer on both sides, so the
//! 4 KiB write runs rewrite in place and never change which layer holds
//! what: every round and every contender sees the same chain.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use strata_storage::{Access, Image};

use crate::exit::Failure;

/// Strata's default block and qcow2's default cluster.
pub const BLOCK: u64 = 64 * 1024;

/// Where the blocks of one disk come from.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub size: u64,
    pub depth: u32,
    /// Bytes at the start of the disk that the top layer holds in full.
    pub write_region: u64,
}

fn mix(mut x: u64) -> u64 {
    // splitmix64's finaliser: a cheap, well-spread hash.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Layout {
    pub fn blocks(&self) -> u64 {
        self.size / BLOCK
    }

    /// 0 for the golden base, else the layer (1 = lowest) that holds `block`.
    pub fn owner(&self, block: u64) -> u32 {
        if block < self.write_region / BLOCK {
            return self.depth;
        }
        (mix(block ^ (u64::from(self.depth) << 40)) % (u64::from(self.depth) + 1)) as u32
    }

    /// The byte layer `layer` fills `block` with (never zero).
    pub fn fill(layer: u32, block: u64) -> u8 {
        ((u64::from(layer) * 67 + block * 13) % 251 + 1) as u8
    }

    /// What a reader must see in `block` before any measured write.
    pub fn expected(&self, block: u64, out: &mut [u8]) {
        match self.owner(block) {
            0 => golden_block(block, out),
            layer => out.fill(Self::fill(layer, block)),
        }
    }
}

/// The golden base's bytes of `block`: pseudo-random, seeded by the block.
pub fn golden_block(block: u64, out: &mut [u8]) {
    let mut state = mix(block.wrapping_add(0x9e37_79b9_7f4a_7c15)) | 1;
    for chunk in out.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let bytes = state.to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

/// Writes the golden base of `size` bytes.
pub fn write_golden(path: &Path, size: u64) -> Result<(), Failure> {
    let fail = |e: std::io::Error| Failure(format!("cannot write {}: {e}", path.display()));
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).map_err(fail)?);
    let mut buf = vec![0u8; BLOCK as usize];
    for block in 0..size / BLOCK {
        golden_block(block, &mut buf);
        file.write_all(&buf).map_err(fail)?;
    }
    file.flush().map_err(fail)
}

/// The scratch store `strata blk serve` and `strata image` work in.
pub struct StrataStore {
    pub exe: PathBuf,
    pub store: PathBuf,
    pub tier: PathBuf,
}

impl StrataStore {
    pub fn new(exe: PathBuf, dir: &Path) -> Result<Self, Failure> {
        let (store, tier) = (dir.join("store"), dir.join("fast"));
        for d in [&store, &tier] {
            std::fs::create_dir_all(d)
                .map_err(|e| Failure(format!("cannot create {}: {e}", d.display())))?;
        }
        Ok(Self { exe, store, tier })
    }

    /// `strata <args> --store .. --tier fast=..:fast`, not yet started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.args(args)
            .arg("--store")
            .arg(&self.store)
            .arg("--tier")
            .arg(format!("fast={}:fast", self.tier.display()));
        cmd
    }

    fn image(&self, args: &[&str]) -> Result<Vec<u8>, Failure> {
        let mut full = vec!["image"];
        full.extend_from_slice(args);
        let out = self
            .command(&full)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Failure(format!("cannot run {}: {e}", self.exe.display())))?;
        if !out.status.success() {
            return Err(Failure(format!(
                "strata image {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(out.stdout)
    }

    /// The live top layer of `name`, and how many members its chain has.
    fn top(&self, name: &str) -> Result<(PathBuf, usize), Failure> {
        let out = self.image(&["info", name, "--json"])?;
        let info: serde_json::Value = serde_json::from_slice(&out)
            .map_err(|e| Failure(format!("strata image info {name}: bad JSON: {e}")))?;
        let chain = info["chain"].as_array().map_or(0, Vec::len);
        let top = info["chain"][0]["path"]
            .as_str()
            .ok_or_else(|| Failure(format!("strata image info {name}: no top layer")))?;
        Ok((PathBuf::from(top), chain))
    }

    /// Builds image `name`: `layout.depth` layers over `golden`.
    pub fn build(&self, name: &str, golden: &Path, layout: &Layout) -> Result<(), Failure> {
        let golden_arg = golden.to_string_lossy();
        self.image(&["create", name, "--raw", &golden_arg])?;
        let mut buf = vec![0u8; BLOCK as usize];
        for layer in 1..=layout.depth {
            if layer > 1 {
                self.image(&["snapshot", name])?;
            }
            let (top, _) = self.top(name)?;
            let image = Image::open(&top, Access::ReadWrite)
                .map_err(|e| Failure(format!("cannot open {}: {e}", top.display())))?;
            for block in (0..layout.blocks()).filter(|b| layout.owner(*b) == layer) {
                buf.fill(Layout::fill(layer, block));
                image
                    .write_at(block * BLOCK, &buf)
                    .map_err(|e| Failure(format!("writing {}: {e}", top.display())))?;
            }
            image
                .flush()
                .map_err(|e| Failure(format!("flushing {}: {e}", top.display())))?;
        }
        let (_, members) = self.top(name)?;
        if members != layout.depth as usize + 1 {
            return Err(Failure(format!(
                "image {name} has {members} members, expected {} layers over the base",
                layout.depth
            )));
        }
        Ok(())
    }
}

/// Builds a qcow2 chain of `layout.depth` overlays over `golden` in `dir`
/// and returns the top overlay.
pub fn build_qcow2(dir: &Path, golden: &Path, layout: &Layout) -> Result<PathBuf, Failure> {
    let mut backing = (golden.to_path_buf(), "raw");
    for layer in 1..=layout.depth {
        let file = dir.join(format!("d{}-layer{layer}.qcow2", layout.depth));
        run_tool(
            Command::new("qemu-img")
                .args([
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    "-o",
                    "cluster_size=65536",
                    "-b",
                ])
                .arg(&backing.0)
                .args(["-F", backing.1])
                .arg(&file)
                .arg(layout.size.to_string()),
            None,
        )?;
        let mut script = String::new();
        for block in (0..layout.blocks()).filter(|b| layout.owner(*b) == layer) {
            script.push_str(&format!(
                "write -q -P {} {} {BLOCK}\n",
                Layout::fill(layer, block),
                block * BLOCK
            ));
        }
        run_tool(
            Command::new("qemu-io")
                .args(["-f", "qcow2", "-t", "unsafe"])
                .arg(&file),
            Some(script),
        )?;
        backing = (file, "qcow2");
    }
    Ok(backing.0)
}

/// Runs a QEMU tool, feeding `stdin`; any error output is a failure.
fn run_tool(cmd: &mut Command, stdin: Option<String>) -> Result<(), Failure> {
    let name = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Failure(format!("cannot run {name}: {e}")))?;
    let feeder = child.stdin.take().map(|mut pipe| {
        std::thread::spawn(move || {
            if let Some(text) = stdin {
                let _ = pipe.write_all(text.as_bytes());
            }
        })
    });
    let out = child
        .wait_with_output()
        .map_err(|e| Failure(format!("{name}: {e}")))?;
    if let Some(feeder) = feeder {
        let _ = feeder.join();
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let complaint = text
        .lines()
        .map(|l| l.trim_start_matches("qemu-io> ").trim())
        .find(|l| !l.is_empty());
    match (out.status.success(), complaint) {
        (true, None) => Ok(()),
        (_, Some(line)) => Err(Failure(format!("{name}: {line}"))),
        (false, None) => Err(Failure(format!("{name} failed ({})", out.status))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_cover_every_layer_and_the_write_region_is_the_tops() {
        let layout = Layout {
            size: 1024 * BLOCK,
            depth: 4,
            write_region: 64 * BLOCK,
        };
        let mut counts = [0u32; 5];
        for block in 0..layout.blocks() {
            counts[layout.owner(block) as usize] += 1;
        }
        assert!((0..64).all(|b| layout.owner(b) == 4));
        // Outside the region each owner gets about a fifth of 960 blocks.
        for (owner, count) in counts.iter().enumerate() {
            let expected = if owner == 4 { 64 + 192 } else { 192 };
            assert!(count.abs_diff(expected) < 50, "owner {owner}: {count}");
        }
    }

    #[test]
    fn fills_are_never_zero_and_golden_is_deterministic() {
        assert!((0..4096).all(|b| (0..20).all(|l| Layout::fill(l, b) != 0)));
        let (mut a, mut b) = (vec![0u8; 4096], vec![0u8; 4096]);
        golden_block(7, &mut a);
        golden_block(7, &mut b);
        assert_eq!(a, b);
        golden_block(8, &mut b);
        assert_ne!(a, b);
        assert!(a.iter().any(|x| *x != 0));
    }
}
