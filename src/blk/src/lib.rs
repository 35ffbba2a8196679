//! Strata's vhost-user-blk backend.
//!
//! [`request`] turns a virtio descriptor chain into a validated virtio-blk
//! request, or into the status the driver must get for it. Guest-controlled
//! data is untrusted: every length, sector and flag is checked before any
//! byte of an image is touched.

pub mod backend;
pub mod config;
pub mod disk;
pub mod exec;
pub mod image_disk;
pub mod poll;
pub mod readahead;
pub mod request;
pub mod serve;
pub mod uring;
