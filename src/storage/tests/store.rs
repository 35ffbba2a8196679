//! The store as `strata image` will use it: a config file with real tier
//! directories, layer files placed by policy, and a catalogue updated by
//! several processes at once.

use std::path::Path;
use std::process::Command;

use strata_storage::store::{Catalogue, ImageEntry, LayerLocation, StoreConfig, locate, resolve};

/// Set in the environment of child processes started by
/// `separate_processes_never_lose_updates`: the catalogue directory to write.
const CHILD_DIR_VAR: &str = "STRATA_STORE_TEST_CATALOGUE_DIR";
const IMAGES_PER_CHILD: usize = 25;

#[test]
fn import_a_golden_image_and_find_it_by_name() {
    let root = tempfile::tempdir().unwrap();
    for tier in ["nvme", "hdd"] {
        std::fs::create_dir(root.path().join(tier)).unwrap();
    }
    let config_path = root.path().join("strata.toml");
    std::fs::write(
        &config_path,
        "[tiers.fast]\npath = \"nvme\"\nclass = \"fast\"\n\
         [tiers.capacity]\npath = \"hdd\"\nclass = \"capacity\"\n",
    )
    .unwrap();
    let config = StoreConfig::load(&config_path).unwrap();
    config.validate().unwrap();
    assert_eq!(config.placement().bases, "capacity");

    // Import: the base goes to the bases tier, the catalogue records where.
    let bases = config.tier(&config.placement().bases).unwrap();
    let layer_path = bases.path.join("debian-12.layer");
    std::fs::write(&layer_path, b"golden bytes").unwrap();
    let location = locate(&config, &layer_path).unwrap();
    {
        let (_lock, mut catalogue) = Catalogue::lock_and_open(root.path()).unwrap();
        catalogue
            .insert(ImageEntry::new("debian-12", location))
            .unwrap();
        catalogue.save().unwrap();
    }

    let catalogue = Catalogue::open(root.path()).unwrap();
    let entry = catalogue.get("debian-12").unwrap();
    assert_eq!(entry.top.tier, "capacity");
    let path = resolve(&config, &entry.top).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), b"golden bytes");
}

#[test]
fn separate_processes_never_lose_updates() {
    let root = tempfile::tempdir().unwrap();
    let test_binary = std::env::current_exe().unwrap();
    let children: Vec<_> = ["first", "second"]
        .into_iter()
        .map(|tag| {
            Command::new(&test_binary)
                .args(["--exact", "catalogue_writer_child", "--nocapture"])
                .env(CHILD_DIR_VAR, root.path())
                .env("STRATA_STORE_TEST_TAG", tag)
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let catalogue = Catalogue::open(root.path()).unwrap();
    assert_eq!(catalogue.len(), 2 * IMAGES_PER_CHILD);
}

/// Does nothing unless started by `separate_processes_never_lose_updates`.
#[test]
fn catalogue_writer_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_VAR) else {
        return;
    };
    let tag = std::env::var("STRATA_STORE_TEST_TAG").unwrap();
    let dir = Path::new(&dir);
    for i in 0..IMAGES_PER_CHILD {
        let (_lock, mut catalogue) = Catalogue::lock_and_open(dir).unwrap();
        let top = LayerLocation::new("fast", format!("{tag}-{i}.layer"));
        catalogue
            .insert(ImageEntry::new(format!("{tag}-{i}"), top))
            .unwrap();
        catalogue.save().unwrap();
    }
}
