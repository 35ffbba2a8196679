//! Strata's storage engine: tiered, layered disk images.
//!
//! Many guests boot from one golden image; each writes to its own
//! copy-on-write layer. A layer file ([`layer`]) holds a header, a block
//! table and data blocks ([`format`], specified in `docs/storage-format.md`);
//! layers form chains down to a base ([`chain`]); an [`image::Image`] reads and
//! writes a chain as one disk through a flat block map, so reads cost the same
//! at any depth. Layers live on named tiers, and users name images through a
//! catalogue ([`store`]). Images opened together may share their read-only
//! members ([`shared`]), and may move data around the page cache ([`direct`]).
//!
//! This crate knows nothing of KVM or virtio.

pub mod chain;
pub mod direct;
pub mod format;
pub mod image;
pub mod images;
pub mod layer;
pub mod lock;
pub mod ops;
pub mod plan;
pub mod shared;
pub mod store;

pub use chain::{ChainError, ChainOptions, Member};
pub use image::{BlockSource, Image, ImageIoError};
pub use layer::{Access, LayerError, LayerFile, ParentSpec};
pub use plan::Piece;
pub use shared::SharedMembers;
