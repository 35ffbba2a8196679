//! `copy --to-tier`: move an image to another tier by snapshot, then difference.
//!
//! ```text
//!  1. snapshot:   freeze the top (S); the image continues in a new live layer L
//!  2. copy:       every frozen member of S's chain that the target tier lacks
//!                 (layers are found by id: <id>.layer), allocated blocks only
//!  3. create:     a new top T on the target, on the copy of S
//!  4. difference: whatever L received since the snapshot is written onto T
//!  5. switch:     the catalogue names T; L is deleted
//! ```
//!
//! Frozen layers stay on the source tier, so copying the image back later
//! moves only the layers frozen since: after 1% of blocks changed, about 1%
//! of the data moves. Raw golden images that lie on no tier stay where they
//! are and are shared, not copied.

use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::{Store, StoreError, parent_location_for};
use crate::chain::{Member, open_chain};
use crate::format::{ParentKind, TableEntry};
use crate::image::Image;
use crate::layer::{Access, LayerFile, ParentSpec, peek};
use crate::ops::{CopyStats, Progress, copy_layer, copy_raw};

/// What a copy did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CopyReport {
    /// Bytes of block data moved to the target tier.
    pub bytes_moved: u64,
    /// Bytes of data in the image's chain (what a full copy would move).
    pub bytes_in_chain: u64,
    /// Layers copied.
    pub layers_copied: usize,
    /// Layers already on the target tier and reused.
    pub layers_reused: usize,
}

impl Store {
    /// Moves image `name` to tier `target`.
    pub fn copy_to_tier(
        &self,
        name: &str,
        target: &str,
        progress: &mut dyn Progress,
    ) -> Result<CopyReport, StoreError> {
        let (_lock, mut catalogue) = self.catalogue()?;
        let target_dir = self.config.tier(target)?.path.clone();
        let source_top = self.top_path(&catalogue, name)?;
        let source_tier = catalogue.get(name)?.top.tier.clone();

        // 1. Snapshot: S = the current top, frozen; L = the new live layer.
        let mut image = Image::open(&source_top, Access::ReadWrite)?;
        let live_id = Uuid::new_v4();
        let (live_location, live_path) = self.new_layer(&source_tier, live_id)?;
        image.snapshot_with_id(
            &live_path,
            live_id,
            &parent_location_for(&live_path, &source_top),
        )?;
        catalogue.set_top(name, live_location)?;
        catalogue.save()?;
        drop(image);

        // 2. Copy S's chain, base first, skipping what the target already has.
        let frozen = open_chain(&source_top, Access::ReadOnly)?;
        let mut report = CopyReport::default();
        let total: u64 = frozen.iter().map(member_bytes).sum();
        report.bytes_in_chain = total;
        progress.set_total(total);
        let mut parent: Option<(PathBuf, ParentSpec)> = None;
        for member in &frozen {
            let (copied, stats, reused) =
                self.copy_member(member, &target_dir, parent.as_ref(), progress)?;
            report.bytes_moved += stats.bytes;
            if reused {
                report.layers_reused += 1
            } else {
                report.layers_copied += 1
            }
            let spec = match member {
                Member::Raw(raw) => ParentSpec {
                    kind: ParentKind::Raw,
                    id: Uuid::nil(),
                    size: raw.size,
                    location: String::new(),
                },
                Member::Layer(l) => ParentSpec {
                    kind: ParentKind::Layer,
                    id: l.header().id,
                    size: l.header().virtual_size,
                    location: String::new(),
                },
            };
            parent = Some((copied, spec));
        }
        drop(frozen);

        // 3. The new top on the target, on the copy of S.
        let top_id = Uuid::new_v4();
        let (top_location, top_path) = self.new_layer(target, top_id)?;
        let mut spec = parent.map(|(path, spec)| ParentSpec {
            location: parent_location_for(&top_path, &path),
            ..spec
        });
        let (header, _) = peek(&live_path)?;
        let new_top = LayerFile::create_with_id(
            &top_path,
            top_id,
            header.virtual_size,
            header.geometry.block_size,
            spec.as_mut().map(|s| &*s),
        )?;

        // 4. The difference: what the live layer received since the snapshot.
        let live = LayerFile::open(&live_path, Access::ReadWrite)?;
        for (block, entry) in (0u64..).zip(live.entries()) {
            match entry {
                TableEntry::Absent => {}
                TableEntry::Zero => new_top.set_entry(block, TableEntry::Zero)?,
                TableEntry::Data(offset) => {
                    new_top.append_block_from(block, live.file(), offset)?;
                    report.bytes_moved += u64::from(header.geometry.block_size);
                }
            }
        }
        new_top.commit()?;
        drop(new_top);
        if let Err(e) = Image::open(&top_path, Access::ReadOnly) {
            let _ = std::fs::remove_file(&top_path);
            return Err(e.into());
        }

        // 5. Switch.
        catalogue.set_top(name, top_location)?;
        catalogue.save()?;
        drop(live);
        let _ = std::fs::remove_file(&live_path);
        Ok(report)
    }

    /// Copies one chain member to `dir` (or finds it there already). Returns
    /// the path the next member's parent location must name.
    fn copy_member(
        &self,
        member: &Member,
        dir: &Path,
        parent: Option<&(PathBuf, ParentSpec)>,
        progress: &mut dyn Progress,
    ) -> Result<(PathBuf, CopyStats, bool), StoreError> {
        match member {
            Member::Raw(raw) => {
                // Golden images outside every tier are shared where they are.
                if self.config.tier_of(&raw.path).is_none() {
                    return Ok((raw.path.clone(), CopyStats::default(), true));
                }
                let name = raw
                    .path
                    .file_name()
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("base.raw"));
                let dest = dir.join(name);
                if std::fs::metadata(&dest).is_ok_and(|m| m.len() == raw.size) {
                    return Ok((dest, CopyStats::default(), true));
                }
                let stats = copy_raw(&raw.path, &dest, progress)?;
                Ok((dest, stats, false))
            }
            Member::Layer(layer) => {
                let dest = dir.join(format!("{}.layer", layer.header().id));
                if peek(&dest).is_ok_and(|(h, _)| h.id == layer.header().id && h.frozen) {
                    progress.advance(layer.allocated_bytes());
                    return Ok((dest, CopyStats::default(), true));
                }
                let spec = parent.map(|(path, spec)| ParentSpec {
                    location: parent_location_for(&dest, path),
                    ..spec.clone()
                });
                let stats = copy_layer(layer, &dest, spec.as_ref(), progress)?;
                Ok((dest, stats, false))
            }
        }
    }
}

fn member_bytes(member: &Member) -> u64 {
    match member {
        Member::Raw(raw) => raw.size,
        Member::Layer(layer) => layer.allocated_bytes(),
    }
}
