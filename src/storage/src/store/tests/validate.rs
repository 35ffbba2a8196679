//! `StoreConfig::validate` on real directories.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::super::{StoreConfig, StoreConfigError};

fn flags_config(tiers: &[(&str, &Path)]) -> StoreConfig {
    let flags: Vec<String> = tiers
        .iter()
        .map(|(name, path)| format!("{name}={}", path.display()))
        .collect();
    StoreConfig::from_tier_flags(&flags, None, None).unwrap()
}

#[test]
fn accepts_writable_directories_and_leaves_no_probe_behind() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    flags_config(&[("a", &a), ("b", &b)]).validate().unwrap();
    assert_eq!(std::fs::read_dir(&a).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(&b).unwrap().count(), 0);
}

#[test]
fn missing_directory_names_tier_and_path() {
    let root = tempfile::tempdir().unwrap();
    let missing = root.path().join("nope");
    let error = flags_config(&[("fast", &missing)]).validate().unwrap_err();
    assert!(
        matches!(error, StoreConfigError::TierDirectoryMissing { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "tier fast directory {} does not exist: create it first",
            missing.display()
        )
    );
}

#[test]
fn a_file_is_not_a_tier_directory() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let error = flags_config(&[("fast", &file)]).validate().unwrap_err();
    assert!(
        matches!(error, StoreConfigError::TierNotADirectory { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!("tier fast path {} is not a directory", file.display())
    );
}

#[test]
fn unwritable_directory_names_tier_and_path() {
    // /proc/self is a directory that refuses new files even to root.
    let proc_self = Path::new("/proc/self");
    let error = flags_config(&[("slow", proc_self)]).validate().unwrap_err();
    assert!(
        matches!(error, StoreConfigError::TierNotWritable { .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .starts_with("tier slow directory /proc/self is not writable: "),
        "{error}"
    );

    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    // Root writes into 0o555 directories regardless, so this half only
    // means something for other users.
    if euid != 0 {
        let root = tempfile::tempdir().unwrap();
        let read_only = root.path().join("ro");
        std::fs::create_dir(&read_only).unwrap();
        std::fs::set_permissions(&read_only, std::fs::Permissions::from_mode(0o555)).unwrap();
        let error = flags_config(&[("ro", &read_only)]).validate().unwrap_err();
        assert!(
            matches!(error, StoreConfigError::TierNotWritable { .. }),
            "{error:?}"
        );
    }
}

#[test]
fn symlinked_aliases_of_one_directory_are_caught() {
    let root = tempfile::tempdir().unwrap();
    let real = root.path().join("real");
    let alias = root.path().join("alias");
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, &alias).unwrap();
    let config = flags_config(&[("a", &real), ("b", &alias)]);
    let error = config.validate().unwrap_err();
    assert!(
        matches!(error, StoreConfigError::SharedTierDirectory { .. }),
        "{error:?}"
    );
}
