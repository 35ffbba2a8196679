//! Feature bits and the virtio-blk configuration space (virtio 1.2, 5.2.4).
//!
//! ```text
//!  off size field                      off size field
//!   0   8   capacity (sectors)          34   2   num_queues
//!   8   4   size_max                    36   4   max_discard_sectors
//!  12   4   seg_max                     40   4   max_discard_seg
//!  16   4   geometry (unused)           44   4   discard_sector_alignment
//!  20   4   blk_size                    48   4   max_write_zeroes_sectors
//!  24   1   physical_block_exp          52   4   max_write_zeroes_seg
//!  25   1   alignment_offset            56   1   write_zeroes_may_unmap
//!  26   2   min_io_size                 57   3   unused
//!  28   4   opt_io_size
//!  32   1   wce (writeback cache on)
//! ```

use crate::request::{DiskLimits, SECTOR_SIZE};

/// Feature bit numbers.
pub mod feature {
    /// `size_max` is valid.
    pub const SIZE_MAX: u32 = 1;
    /// `seg_max` is valid.
    pub const SEG_MAX: u32 = 2;
    /// The disk is read-only.
    pub const RO: u32 = 5;
    /// `blk_size` is valid.
    pub const BLK_SIZE: u32 = 6;
    /// FLUSH is supported.
    pub const FLUSH: u32 = 9;
    /// Topology fields are valid.
    pub const TOPOLOGY: u32 = 10;
    /// The driver may toggle the write cache.
    pub const CONFIG_WCE: u32 = 11;
    /// More than one queue.
    pub const MQ: u32 = 12;
    /// DISCARD is supported.
    pub const DISCARD: u32 = 13;
    /// WRITE_ZEROES is supported.
    pub const WRITE_ZEROES: u32 = 14;
    /// Used/available event index suppression.
    pub const RING_EVENT_IDX: u32 = 29;
    /// Virtio 1.x.
    pub const VERSION_1: u32 = 32;
}

/// Length of the configuration space Strata exposes.
pub const CONFIG_LEN: usize = 60;

/// What the configuration space describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskConfig {
    /// Request limits (also capacity and read-only).
    pub limits: DiskLimits,
    /// Largest single data segment.
    pub size_max: u32,
    /// Most data segments per request.
    pub seg_max: u32,
    /// Logical block size reported to the guest.
    pub blk_size: u32,
    /// The image's block size: the preferred I/O size.
    pub opt_io_size: u32,
    /// Number of request queues.
    pub num_queues: u16,
    /// Write cache enabled (write-back).
    pub writeback: bool,
}

/// The feature bits Strata offers for `config`.
pub fn device_features(config: &DiskConfig) -> u64 {
    let mut bits = [
        feature::VERSION_1,
        feature::RING_EVENT_IDX,
        feature::SIZE_MAX,
        feature::SEG_MAX,
        feature::BLK_SIZE,
        feature::TOPOLOGY,
        feature::FLUSH,
        feature::CONFIG_WCE,
        feature::MQ,
    ]
    .to_vec();
    if config.limits.read_only {
        bits.push(feature::RO);
    } else {
        bits.extend([feature::DISCARD, feature::WRITE_ZEROES]);
    }
    bits.into_iter().fold(0, |acc, bit| acc | (1u64 << bit))
}

/// Encodes the configuration space.
pub fn config_space(config: &DiskConfig) -> [u8; CONFIG_LEN] {
    let mut b = [0u8; CONFIG_LEN];
    let mut put = |at: usize, bytes: &[u8]| b[at..at + bytes.len()].copy_from_slice(bytes);
    put(0, &config.limits.capacity_sectors.to_le_bytes());
    put(8, &config.size_max.to_le_bytes());
    put(12, &config.seg_max.to_le_bytes());
    put(20, &config.blk_size.to_le_bytes());
    let exp = (config.opt_io_size / config.blk_size.max(1))
        .max(1)
        .trailing_zeros() as u8;
    put(24, &[exp.min(15)]);
    put(26, &1u16.to_le_bytes());
    put(
        28,
        &(config.opt_io_size / config.blk_size.max(1)).to_le_bytes(),
    );
    put(32, &[u8::from(config.writeback)]);
    put(34, &config.num_queues.to_le_bytes());
    put(36, &config.limits.max_zero_sectors.to_le_bytes());
    put(40, &config.limits.max_zero_segments.to_le_bytes());
    put(
        44,
        &((config.opt_io_size as u64 / SECTOR_SIZE) as u32).to_le_bytes(),
    );
    put(48, &config.limits.max_zero_sectors.to_le_bytes());
    put(52, &config.limits.max_zero_segments.to_le_bytes());
    put(56, &[1]);
    b
}

/// The bytes `[offset, offset + size)` of the configuration space; bytes
/// past its end read as zero, as the vhost-user spec leaves them undefined.
pub fn read_config(space: &[u8], offset: u32, size: u32) -> Vec<u8> {
    let mut out = vec![0u8; size as usize];
    let start = offset as usize;
    if start < space.len() {
        let end = (start + size as usize).min(space.len());
        out[..end - start].copy_from_slice(&space[start..end]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(read_only: bool) -> DiskConfig {
        DiskConfig {
            limits: DiskLimits {
                capacity_sectors: 2 << 21,
                read_only,
                max_transfer: 1 << 20,
                max_zero_segments: 16,
                max_zero_sectors: 1 << 16,
            },
            size_max: 1 << 20,
            seg_max: 128,
            blk_size: 512,
            opt_io_size: 65536,
            num_queues: 2,
            writeback: true,
        }
    }

    #[test]
    fn read_only_disks_offer_ro_and_no_discard() {
        let rw = device_features(&config(false));
        let ro = device_features(&config(true));
        assert_ne!(rw & (1 << feature::DISCARD), 0);
        assert_eq!(rw & (1 << feature::RO), 0);
        assert_ne!(ro & (1 << feature::RO), 0);
        assert_eq!(ro & (1 << feature::WRITE_ZEROES), 0);
        assert_ne!(ro & (1 << feature::VERSION_1), 0);
    }

    #[test]
    fn config_fields_sit_at_spec_offsets() {
        let space = config_space(&config(false));
        assert_eq!(u64::from_le_bytes(space[0..8].try_into().unwrap()), 2 << 21);
        assert_eq!(u16::from_le_bytes(space[34..36].try_into().unwrap()), 2);
        assert_eq!(
            space[24], 7,
            "64 KiB / 512 B = 2^7 logical blocks per physical block"
        );
        assert_eq!(read_config(&space, 32, 1), vec![1]);
        assert_eq!(read_config(&space, 58, 4), vec![0, 0, 0, 0]);
        assert_eq!(read_config(&space, 1000, 2), vec![0, 0]);
    }
}
