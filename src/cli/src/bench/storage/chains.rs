//! The disks under test: one virtual disk built twice, as a chain of Strata
//! layers and as a chain of qcow2 overlays, over one shared raw golden base.
//!
//! ```text
//!  root/
//!    base.raw                      pseudo-random bytes, never written again
//!    pool/p00.bin .. p15.bin       64 KiB blocks of pseudo-random bytes
//!    depth-16/
//!      layer-01.strata ─► ../base.raw     layer-01.qcow2 ─► ../base.raw
//!      layer-02.strata ─► layer-01        layer-02.qcow2 ─► layer-01.qcow2
//!      ...                                ...
//!      layer-16.strata (frozen)           layer-16.qcow2
//! ```
//!
//! In a chain of depth `d`, a hash gives each 64 KiB block its owner: half
//! of the blocks stay in the base; each of the others is rewritten, with a
//! pool block also chosen by hash, by one of the `d` layers. So a read finds
//! its block anywhere in the chain, and the depths differ only in how the
//! rewritten half is spread. (Were the base's share `1/(d + 1)` instead,
//! depth 1 would read half its blocks from one large, sequentially written
//! file, which costs the kernel less per read than small layer files: a
//! difference of data placement, not of depth.) Both sides write the same
//! bytes at the same offsets; `verify` checks the whole virtual disk of each
//! against the other and the model.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use strata_storage::format::ParentKind;
use strata_storage::{Access, Image, LayerFile, Member, ParentSpec};

use super::qemu_img::QemuTools;

/// Block size of both chains: Strata's default block and qcow2's default
/// cluster.
pub const BLOCK: u32 = 64 << 10;
/// Number of distinct block contents the layers write.
const POOL: u64 = 16;
/// Name of the base, in the root directory.
const BASE: &str = "base.raw";

/// SplitMix64: a good, cheap hash of a counter.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fills `buf` with the pseudo-random stream `stream` from byte `at` (a
/// multiple of 8) on.
fn fill_random(stream: u64, at: u64, buf: &mut [u8]) {
    for (i, word) in buf.chunks_mut(8).enumerate() {
        let value = mix(stream.rotate_left(40) ^ (at / 8 + i as u64)).to_le_bytes();
        word.copy_from_slice(&value[..word.len()]);
    }
}

/// What every chain holds, and where it lives.
pub struct Content {
    /// The root directory.
    pub root: PathBuf,
    /// Virtual disk size in bytes.
    pub size: u64,
    pool: Vec<Vec<u8>>,
}

impl Content {
    /// Writes the base and the pool under `root`.
    pub fn create(root: &Path, size: u64) -> Result<Self, String> {
        let pool: Vec<Vec<u8>> = (0..POOL)
            .map(|k| {
                let mut block = vec![0u8; BLOCK as usize];
                fill_random(k + 1, 0, &mut block);
                block
            })
            .collect();
        let pool_dir = root.join("pool");
        std::fs::create_dir(&pool_dir)
            .map_err(|e| format!("cannot create {}: {e}", pool_dir.display()))?;
        for (k, block) in pool.iter().enumerate() {
            let path = root.join(pool_file(k));
            std::fs::write(&path, block)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        let base = root.join(BASE);
        let write_base = || -> std::io::Result<()> {
            let mut file = File::create_new(&base)?;
            let mut chunk = vec![0u8; 4 << 20];
            let mut at = 0;
            while at < size {
                let len = (size - at).min(chunk.len() as u64) as usize;
                fill_random(0, at, &mut chunk[..len]);
                file.write_all(&chunk[..len])?;
                at += len as u64;
            }
            // Written back now, so that no write-back runs during the measurements.
            file.sync_all()
        };
        write_base().map_err(|e| format!("cannot write {}: {e}", base.display()))?;
        Ok(Self {
            root: root.to_path_buf(),
            size,
            pool,
        })
    }

    /// The base file.
    pub fn base(&self) -> PathBuf {
        self.root.join(BASE)
    }

    /// The parent record of a layer created in the root, over the base.
    pub fn base_parent(&self) -> ParentSpec {
        ParentSpec {
            kind: ParentKind::Raw,
            id: Default::default(),
            size: self.size,
            location: BASE.to_string(),
        }
    }

    fn blocks(&self) -> u64 {
        self.size / u64::from(BLOCK)
    }

    /// The blocks layer `layer` of a depth-`depth` chain rewrites.
    fn blocks_of(&self, depth: u32, layer: u32) -> impl Iterator<Item = u64> {
        (0..self.blocks()).filter(move |&b| owner(depth, b) == layer)
    }
}

/// Who holds `block` in a chain of `depth` layers: 0 is the base, `i` is
/// layer `i`. Half of the blocks stay in the base at every depth, so that
/// depths differ only in how the other half is spread: over 1 layer, or 64.
fn owner(depth: u32, block: u64) -> u32 {
    let hash = mix((u64::from(depth) << 40) ^ block);
    if hash & 1 == 0 {
        0
    } else {
        1 + ((hash >> 1) % u64::from(depth)) as u32
    }
}

/// Which pool block layer `layer` writes into `block`.
fn pool_index(layer: u32, block: u64) -> usize {
    (mix((u64::from(layer) << 40) ^ block ^ 0x5eed) % POOL) as usize
}

fn pool_file(k: usize) -> String {
    format!("pool/p{k:02}.bin")
}

fn layer_file(layer: u32, extension: &str) -> String {
    format!("layer-{layer:02}.{extension}")
}

/// One chain depth, built both ways.
pub struct Chains {
    /// Number of layers over the base.
    pub depth: u32,
    dir: PathBuf,
    /// The Strata top layer (frozen).
    pub strata_top: PathBuf,
    /// The qcow2 top overlay.
    pub qcow2_top: PathBuf,
    /// What a new layer over `strata_top` records as its parent.
    top_parent: ParentSpec,
}

impl Chains {
    /// Builds both chains of `depth` layers over `content`'s base.
    pub fn build(content: &Content, depth: u32, qemu: &QemuTools) -> Result<Self, String> {
        let dir = content.root.join(format!("depth-{depth}"));
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let (strata_top, top_parent) = build_strata(content, depth, &dir)?;
        let qcow2_top = build_qcow2(content, depth, &dir, qemu)?;
        Ok(Self {
            depth,
            dir,
            strata_top,
            qcow2_top,
            top_parent,
        })
    }

    /// Checks that both chains read back the same virtual disk, byte for
    /// byte, and that it is the one the model describes.
    pub fn verify(&self, content: &Content, qemu: &QemuTools) -> Result<(), String> {
        let export = self.dir.join("export.raw");
        qemu.export_raw(&self.qcow2_top, &export)?;
        let outcome = self.compare(content, &export);
        let _ = std::fs::remove_file(&export);
        outcome
    }

    fn compare(&self, content: &Content, export: &Path) -> Result<(), String> {
        let image = Image::open(&self.strata_top, Access::ReadOnly)
            .map_err(|e| format!("cannot open the Strata chain: {e}"))?;
        let open =
            |p: &Path| File::open(p).map_err(|e| format!("cannot open {}: {e}", p.display()));
        let (exported, base) = (open(export)?, open(&content.base())?);
        let chunk = 1 << 20;
        let (mut strata, mut qcow2, mut expected) =
            (vec![0u8; chunk], vec![0u8; chunk], vec![0u8; chunk]);
        let mut at = 0u64;
        while at < content.size {
            let len = (content.size - at).min(chunk as u64) as usize;
            image
                .read_at(at, &mut strata[..len])
                .map_err(|e| format!("Strata read at {at:#x}: {e}"))?;
            exported
                .read_exact_at(&mut qcow2[..len], at)
                .map_err(|e| format!("reading {} at {at:#x}: {e}", export.display()))?;
            base.read_exact_at(&mut expected[..len], at)
                .map_err(|e| format!("reading the base at {at:#x}: {e}"))?;
            for (i, block) in expected[..len].chunks_mut(BLOCK as usize).enumerate() {
                let index = at / u64::from(BLOCK) + i as u64;
                let layer = owner(self.depth, index);
                if layer != 0 {
                    block.copy_from_slice(&content.pool[pool_index(layer, index)][..block.len()]);
                }
            }
            if strata[..len] != expected[..len] {
                return Err(self.mismatch("the Strata chain", at, &strata, &expected));
            }
            if qcow2[..len] != expected[..len] {
                return Err(self.mismatch("the qcow2 chain", at, &qcow2, &expected));
            }
            at += len as u64;
        }
        Ok(())
    }

    fn mismatch(&self, what: &str, at: u64, got: &[u8], expected: &[u8]) -> String {
        let first = got
            .iter()
            .zip(expected)
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        format!(
            "depth {}: {what} differs from the model at byte {:#x}",
            self.depth,
            at + first as u64
        )
    }

    /// A new, empty Strata layer over the Strata top, where writes land.
    pub fn strata_scratch(&self) -> Result<PathBuf, String> {
        let path = self.dir.join("scratch.strata");
        new_strata_layer(&path, BLOCK, &self.top_parent)?;
        Ok(path)
    }

    /// A new, empty qcow2 overlay over the qcow2 top, where writes land.
    pub fn qcow2_scratch(&self, qemu: &QemuTools) -> Result<PathBuf, String> {
        let path = self.dir.join("scratch.qcow2");
        let _ = std::fs::remove_file(&path);
        qemu.create_overlay(&path, &layer_file(self.depth, "qcow2"), "qcow2", BLOCK)?;
        Ok(path)
    }
}

/// Creates an empty Strata layer at `path` (replacing any) over `parent`.
pub fn new_strata_layer(path: &Path, block_size: u32, parent: &ParentSpec) -> Result<(), String> {
    let _ = std::fs::remove_file(path);
    LayerFile::create(path, parent.size, block_size, Some(parent))
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Builds layers 1..=depth through one open image, snapshotting between
/// layers, and freezes the last. Returns the top and its parent record.
fn build_strata(
    content: &Content,
    depth: u32,
    dir: &Path,
) -> Result<(PathBuf, ParentSpec), String> {
    let text = |e: &dyn std::fmt::Display| e.to_string();
    let first = dir.join(layer_file(1, "strata"));
    let over_base = ParentSpec {
        location: format!("../{BASE}"),
        ..content.base_parent()
    };
    new_strata_layer(&first, BLOCK, &over_base)?;
    let mut image = Image::open(&first, Access::ReadWrite).map_err(|e| text(&e))?;
    for layer in 1..=depth {
        if layer > 1 {
            let path = dir.join(layer_file(layer, "strata"));
            image
                .snapshot(&path, &layer_file(layer - 1, "strata"))
                .map_err(|e| text(&e))?;
        }
        for block in content.blocks_of(depth, layer) {
            let data = &content.pool[pool_index(layer, block)];
            image
                .write_at(block * u64::from(BLOCK), data)
                .map_err(|e| text(&e))?;
        }
    }
    image.flush().map_err(|e| text(&e))?;
    let mut members = image.into_members();
    let Some(Member::Layer(top)) = members.last_mut() else {
        return Err("the Strata chain has no top layer".to_string());
    };
    top.freeze().map_err(|e| text(&e))?;
    let header = top.header();
    let parent = ParentSpec {
        kind: ParentKind::Layer,
        id: header.id,
        size: header.virtual_size,
        location: layer_file(depth, "strata"),
    };
    Ok((top.path().to_path_buf(), parent))
}

/// Builds the qcow2 overlays 1..=depth, filling each with `qemu-io`.
fn build_qcow2(
    content: &Content,
    depth: u32,
    dir: &Path,
    qemu: &QemuTools,
) -> Result<PathBuf, String> {
    let script = content.root.join("fill.qemu-io");
    let mut path = PathBuf::new();
    for layer in 1..=depth {
        path = dir.join(layer_file(layer, "qcow2"));
        let (backing, format) = match layer {
            1 => (format!("../{BASE}"), "raw"),
            _ => (layer_file(layer - 1, "qcow2"), "qcow2"),
        };
        qemu.create_overlay(&path, &backing, format, BLOCK)?;
        // Pool paths are relative to the root, where qemu-io runs.
        let commands: String = content
            .blocks_of(depth, layer)
            .map(|b| {
                let pool = pool_file(pool_index(layer, b));
                format!("write -q -s {pool} {} {BLOCK}\n", b * u64::from(BLOCK))
            })
            .collect();
        std::fs::write(&script, commands)
            .map_err(|e| format!("cannot write {}: {e}", script.display()))?;
        qemu.run_script(&path, &script)?;
    }
    let _ = std::fs::remove_file(&script);
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_stays_in_the_base_and_the_layers_share_the_rest() {
        for depth in [1u32, 4, 16, 64] {
            let blocks = 4096u64;
            let mut counts = vec![0u64; depth as usize + 1];
            for b in 0..blocks {
                counts[owner(depth, b) as usize] += 1;
            }
            assert!(
                counts[0].abs_diff(blocks / 2) < blocks / 20,
                "{depth}: {counts:?}"
            );
            let fair = blocks / 2 / u64::from(depth);
            assert!(
                counts[1..].iter().all(|&c| c > fair / 2 && c < fair * 2),
                "{depth}: {counts:?}"
            );
        }
    }

    #[test]
    fn random_fill_is_positional() {
        let mut whole = vec![0u8; 64];
        fill_random(0, 0, &mut whole);
        let mut tail = vec![0u8; 32];
        fill_random(0, 32, &mut tail);
        assert_eq!(&whole[32..], &tail[..]);
        assert!(whole.iter().any(|&b| b != 0));
        let mut other = vec![0u8; 64];
        fill_random(1, 0, &mut other);
        assert_ne!(whole, other);
    }
}
