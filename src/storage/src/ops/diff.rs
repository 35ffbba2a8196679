//! `diff`: which blocks differ between two images.
//!
//! Blocks that resolve to the same block of the same layer (same layer id
//! and offset) are equal without being read; that makes diffing an image
//! against its own snapshot cost only the blocks written since.

use crate::chain::Member;
use crate::image::{BlockSource, Image, ImageIoError};

/// A run of differing blocks, `[first, first + count)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BlockRange {
    /// First block.
    pub first: u64,
    /// Number of blocks.
    pub count: u64,
}

/// Why two images cannot be compared.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("the images use different block sizes ({0} and {1} bytes)")]
    BlockSize(u32, u32),
    #[error(transparent)]
    Io(#[from] ImageIoError),
}

/// Identity of a block's storage: the member's layer id (or raw path) and offset.
fn identity(image: &Image, source: BlockSource) -> Option<(String, u64)> {
    match source {
        BlockSource::Zeros => None,
        BlockSource::Member { index, offset } => {
            let who = match &image.members()[index] {
                Member::Layer(layer) => layer.header().id.to_string(),
                Member::Raw(raw) => raw.path.display().to_string(),
            };
            Some((who, offset))
        }
    }
}

/// Compares `a` and `b` block by block over the larger of their sizes (the
/// part one lacks counts as zeros) and returns the differing runs.
pub fn diff_images(a: &Image, b: &Image) -> Result<Vec<BlockRange>, DiffError> {
    if a.block_size() != b.block_size() {
        return Err(DiffError::BlockSize(a.block_size(), b.block_size()));
    }
    let bs = a.block_size() as usize;
    let (mut buf_a, mut buf_b) = (vec![0u8; bs], vec![0u8; bs]);
    let mut ranges: Vec<BlockRange> = Vec::new();
    for block in 0..a.blocks().max(b.blocks()) {
        let differs = {
            let (sa, sb) = (source_of(a, block), source_of(b, block));
            match (identity(a, sa), identity(b, sb)) {
                (None, None) => false,
                (Some(x), Some(y)) if x == y => false,
                _ => {
                    read_block(a, block, &mut buf_a)?;
                    read_block(b, block, &mut buf_b)?;
                    buf_a != buf_b
                }
            }
        };
        if differs {
            match ranges.last_mut() {
                Some(last) if last.first + last.count == block => last.count += 1,
                _ => ranges.push(BlockRange {
                    first: block,
                    count: 1,
                }),
            }
        }
    }
    Ok(ranges)
}

fn source_of(image: &Image, block: u64) -> BlockSource {
    if block < image.blocks() {
        image.source(block)
    } else {
        BlockSource::Zeros
    }
}

/// Reads a block, zero-filling past the image's end.
fn read_block(image: &Image, block: u64, buf: &mut [u8]) -> Result<(), ImageIoError> {
    buf.fill(0);
    let start = block * buf.len() as u64;
    if start >= image.virtual_size() {
        return Ok(());
    }
    let len = (image.virtual_size() - start).min(buf.len() as u64) as usize;
    image.read_at(start, &mut buf[..len])
}
