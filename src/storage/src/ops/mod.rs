//! Whole-image operations on paths: check, diff, merge, export, import, and
//! copying layers between tiers. The catalogue-level commands in
//! [`crate::images`] build on these.

mod check;
mod copy;
mod diff;
mod merge;
mod raw;

pub use check::{CheckReport, LayerCheck, check_chain};
pub use copy::{CopyStats, copy_layer, copy_raw};
pub use diff::{BlockRange, DiffError, diff_images};
pub use merge::{MergeError, merge_top_into_parent};
pub use raw::{RawIoError, export_raw, import_raw};

/// Reports progress of a long operation: bytes done of bytes total.
pub trait Progress {
    /// Sets the total, once known.
    fn set_total(&mut self, total: u64);
    /// Adds `bytes` to the amount done.
    fn advance(&mut self, bytes: u64);
}

/// Progress that goes nowhere.
pub struct NoProgress;

impl Progress for NoProgress {
    fn set_total(&mut self, _total: u64) {}
    fn advance(&mut self, _bytes: u64) {}
}
