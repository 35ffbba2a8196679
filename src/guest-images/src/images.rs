// The list of guest images, shared by `build.rs` (through `include!`) and
// the library. Each name is a `[[bin]]` of `guest-images/programs`.

/// Names of all guest images, in no particular order. The image `name` is at
/// [`image_path`]`(name)`, that is `<target dir>/guest-images/<name>.elf`.
///
/// [`image_path`]: crate::image_path
pub const IMAGE_NAMES: &[&str] = &["hello", "triple-fault", "popcnt", "blkcheck"];
