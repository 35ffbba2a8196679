//! Look-ahead for guests that boot alike.
//!
//! Many guests boot from one golden image and read its blocks in nearly the
//! same order. The first boot records that order; later boots of any image on
//! the same base prefetch those blocks from the shared lower layers, in order,
//! on a thread of their own, so that the guest finds them in the page cache.
//!
//! ```text
//!  first boot:  guest reads ──► ImageDisk ──► Recorder (first touch of each block, in order)
//!                                               └─ session ends ──► <dir>/<base key>.json
//!  later boots: serve starts ──► Prefetcher thread: for each recorded block still
//!               held by a lower layer: posix_fadvise(WILLNEED) on that layer's file
//! ```
//!
//! Recording costs the read path one atomic flag per block; the lock behind
//! it is taken only the first time a block is read, and only while recording.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use strata_storage::{BlockSource, Image, Member};

/// Most blocks a trace holds; a boot reads far fewer.
pub const MAX_TRACE_BLOCKS: usize = 1 << 20;
const TRACE_VERSION: u32 = 1;

/// The recorded order, on disk.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct TraceFile {
    version: u32,
    block_size: u32,
    blocks: Vec<u64>,
}

/// Where the trace of an image's base lives: one file per golden base,
/// shared by every image on it.
pub fn trace_path(dir: &Path, image: &Image) -> Option<PathBuf> {
    let key = match image.members().first()? {
        Member::Layer(layer) => format!("layer-{}", layer.header().id),
        Member::Raw(raw) => {
            let canonical = raw.path.canonicalize().unwrap_or_else(|_| raw.path.clone());
            format!(
                "raw-{:016x}-{}",
                fnv1a(canonical.as_os_str().as_encoded_bytes()),
                raw.size
            )
        }
    };
    Some(dir.join(format!("{key}.json")))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Records the order in which blocks are first read.
pub struct Recorder {
    path: PathBuf,
    block_size: u32,
    seen: Vec<AtomicBool>,
    order: Mutex<Vec<u64>>,
    active: AtomicBool,
}

impl Recorder {
    /// A recorder for an image of `blocks` blocks, saving to `path`.
    pub fn new(path: PathBuf, blocks: u64, block_size: u32) -> Self {
        Self {
            path,
            block_size,
            seen: (0..blocks).map(|_| AtomicBool::new(false)).collect(),
            order: Mutex::new(Vec::new()),
            active: AtomicBool::new(true),
        }
    }

    /// Notes a read of `[offset, offset + len)`.
    pub fn note_read(&self, offset: u64, len: u64) {
        if !self.active.load(Ordering::Relaxed) || len == 0 {
            return;
        }
        let bs = u64::from(self.block_size);
        for block in offset / bs..=(offset + len - 1) / bs {
            let Some(flag) = self.seen.get(block as usize) else {
                break;
            };
            if !flag.swap(true, Ordering::Relaxed) {
                let mut order = self
                    .order
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if order.len() < MAX_TRACE_BLOCKS {
                    order.push(block);
                }
            }
        }
    }

    /// Stops recording and writes the trace, if anything was read. Only the
    /// first call writes.
    pub fn finish(&self) -> std::io::Result<usize> {
        if !self.active.swap(false, Ordering::Relaxed) {
            return Ok(0);
        }
        let blocks = std::mem::take(
            &mut *self
                .order
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if blocks.is_empty() {
            return Ok(0);
        }
        let count = blocks.len();
        let file = TraceFile {
            version: TRACE_VERSION,
            block_size: self.block_size,
            blocks,
        };
        let json = serde_json::to_vec(&file).map_err(std::io::Error::other)?;
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let temp = self.path.with_extension("partial");
        std::fs::write(&temp, json)?;
        std::fs::rename(&temp, &self.path)?;
        Ok(count)
    }
}

/// Reads a trace; `None` if there is none or it does not fit `block_size`.
pub fn load_trace(path: &Path, block_size: u32) -> Option<Vec<u64>> {
    let bytes = std::fs::read(path).ok()?;
    let file: TraceFile = match serde_json::from_slice(&bytes) {
        Ok(file) => file,
        Err(e) => {
            log::warn!("ignoring damaged read-ahead trace {}: {e}", path.display());
            return None;
        }
    };
    (file.version == TRACE_VERSION && file.block_size == block_size).then_some(file.blocks)
}

/// Counts what a prefetch pass did, for logs and tests.
#[derive(Debug, Default)]
pub struct PrefetchStats {
    /// Blocks asked for.
    pub requested: AtomicU64,
    /// Blocks prefetched from a lower layer.
    pub prefetched: AtomicU64,
}

/// Asks the kernel to read `blocks` of `image` that lower (shared) layers
/// hold, in order. Blocks the top layer holds, or that read as zeros, are
/// skipped: the guest's own data is not shared, and zeros need no I/O.
pub fn prefetch(image: &Image, blocks: &[u64], stats: &PrefetchStats) {
    let top = image.members().len() - 1;
    let bs = u64::from(image.block_size());
    for block in blocks {
        stats.requested.fetch_add(1, Ordering::Relaxed);
        if *block >= image.blocks() {
            continue;
        }
        let BlockSource::Member { index, offset } = image.source(*block) else {
            continue;
        };
        if index == top {
            continue;
        }
        let Some(file) = image.member_file(index) else {
            continue;
        };
        // SAFETY: posix_fadvise only advises the kernel about a descriptor owned by
        // `file`; it reads no memory of ours.
        unsafe {
            libc::posix_fadvise(
                file.as_raw_fd(),
                offset as i64,
                bs as i64,
                libc::POSIX_FADV_WILLNEED,
            )
        };
        stats.prefetched.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_first_touches_in_order_and_saves_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ra/trace.json");
        let rec = Recorder::new(path.clone(), 100, 4096);
        rec.note_read(5 * 4096, 4096);
        rec.note_read(0, 2 * 4096);
        rec.note_read(5 * 4096 + 10, 100);
        rec.note_read(99 * 4096, 8192); // runs off the end: recorded up to the last block
        assert_eq!(rec.finish().unwrap(), 4);
        assert_eq!(load_trace(&path, 4096), Some(vec![5, 0, 1, 99]));
        assert_eq!(
            load_trace(&path, 65536),
            None,
            "a trace for another block size is ignored"
        );
        assert_eq!(rec.finish().unwrap(), 0, "only the first finish writes");
        rec.note_read(7 * 4096, 1);
        assert_eq!(load_trace(&path, 4096), Some(vec![5, 0, 1, 99]));
    }

    #[test]
    fn damaged_traces_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        std::fs::write(&path, b"{ not json").unwrap();
        assert_eq!(load_trace(&path, 4096), None);
        assert_eq!(load_trace(&dir.path().join("missing.json"), 4096), None);
    }
}
