//! Loading TOML store configs.

use std::path::{Path, PathBuf};

use super::super::{ConfigSource, StoreConfig, StoreConfigError, TierClass};
use super::{EXAMPLE_CONFIG, example_config, load_config_text};

#[test]
fn loads_the_documented_example() {
    let dir = tempfile::tempdir().unwrap();
    let config = load_config_text(dir.path(), EXAMPLE_CONFIG).unwrap();
    let fast = config.tier("fast").unwrap();
    assert_eq!(fast.path, Path::new("/var/lib/strata/nvme"));
    assert_eq!(fast.class, TierClass::Fast);
    let capacity = config.tier("capacity").unwrap();
    assert_eq!(capacity.path, Path::new("/var/lib/strata/hdd"));
    assert_eq!(capacity.class, TierClass::Capacity);
    assert_eq!(config.placement().overlays, "fast");
    assert_eq!(config.placement().bases, "capacity");
    let names: Vec<&str> = config.tiers().map(|tier| tier.name.as_str()).collect();
    assert_eq!(names, ["capacity", "fast"]);
    assert_eq!(
        config.source(),
        &ConfigSource::File(dir.path().join("strata.toml"))
    );
    assert_eq!(example_config().tiers().count(), 2);
}

#[test]
fn missing_file_is_named() {
    let error = StoreConfig::load(Path::new("/nonexistent/strata.toml")).unwrap_err();
    assert!(
        matches!(error, StoreConfigError::ReadFile { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("/nonexistent/strata.toml"),
        "{error}"
    );
}

#[test]
fn bad_toml_gives_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[tiers.fast]\npath = \"/a\"\nclass = \n";
    let error = load_config_text(dir.path(), text).unwrap_err();
    let StoreConfigError::ParseFile { path, line, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(path, &dir.path().join("strata.toml"));
    assert_eq!(*line, 3);
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("store config {}:3:", path.display())),
        "{message}"
    );
    assert!(!message.contains('\n'), "one line: {message}");
}

#[test]
fn unknown_keys_are_rejected_at_every_level() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (format!("{EXAMPLE_CONFIG}\n[placment]\n"), 14),
        (
            EXAMPLE_CONFIG.replace("class = \"fast\"", "class = \"fast\"\nsize = 3"),
            5,
        ),
        (
            EXAMPLE_CONFIG.replace("bases = ", "overlay = \"fast\"\nbases = "),
            12,
        ),
    ];
    for (text, expected_line) in cases {
        let error = load_config_text(dir.path(), &text).unwrap_err();
        let StoreConfigError::ParseFile { line, message, .. } = &error else {
            panic!("{error:?}");
        };
        assert!(message.contains("unknown field"), "{error}");
        assert_eq!(*line, expected_line, "{error}");
        assert!(error.to_string().contains("strata.toml"), "{error}");
    }
}

#[test]
fn no_tiers_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for text in ["", "[tiers]\n", "[placement]\noverlays = \"a\"\n"] {
        let error = load_config_text(dir.path(), text).unwrap_err();
        assert!(
            matches!(error, StoreConfigError::NoTiers { .. }),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains("strata.toml") && message.contains("no storage tiers"),
            "{message}"
        );
    }
}

#[test]
fn placement_must_name_a_defined_tier() {
    let dir = tempfile::tempdir().unwrap();
    let text = EXAMPLE_CONFIG.replace("bases = \"capacity\"", "bases = \"hdd\"");
    let error = load_config_text(dir.path(), &text).unwrap_err();
    assert!(
        matches!(error, StoreConfigError::UnknownPlacementTier { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    for part in [
        "strata.toml",
        "bases",
        "\"hdd\"",
        "known tiers: capacity, fast",
    ] {
        assert!(message.contains(part), "{part} missing from: {message}");
    }
}

#[test]
fn tiers_may_not_share_or_nest_directories() {
    let dir = tempfile::tempdir().unwrap();
    let shared = EXAMPLE_CONFIG.replace("/var/lib/strata/hdd", "/var/lib/strata/./nvme/");
    let error = load_config_text(dir.path(), &shared).unwrap_err();
    assert!(
        matches!(error, StoreConfigError::SharedTierDirectory { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    for part in ["strata.toml", "capacity", "fast", "/var/lib/strata/nvme"] {
        assert!(message.contains(part), "{part} missing from: {message}");
    }

    let nested = EXAMPLE_CONFIG.replace("/var/lib/strata/hdd", "/var/lib/strata/nvme/hdd");
    let error = load_config_text(dir.path(), &nested).unwrap_err();
    assert!(
        matches!(error, StoreConfigError::NestedTierDirectory { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("must not nest"), "{error}");

    let dotted = EXAMPLE_CONFIG.replace("/var/lib/strata/hdd", "/var/lib/strata/hdd/../nvme");
    let error = load_config_text(dir.path(), &dotted).unwrap_err();
    assert!(
        matches!(error, StoreConfigError::SharedTierDirectory { .. }),
        "{error:?}"
    );
}

#[test]
fn relative_tier_paths_are_relative_to_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let text = EXAMPLE_CONFIG
        .replace("/var/lib/strata/nvme", "nvme")
        .replace("/var/lib/strata/hdd", "../hdd");
    let config = load_config_text(dir.path(), &text).unwrap();
    assert_eq!(config.tier("fast").unwrap().path, dir.path().join("nvme"));
    let parent = dir.path().parent().unwrap();
    assert_eq!(config.tier("capacity").unwrap().path, parent.join("hdd"));
}

#[test]
fn class_defaults_to_capacity_and_may_be_any_name() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[tiers.a]\npath = \"/a\"\n[tiers.b]\npath = \"/b\"\nclass = \"Archive\"\n\
                [tiers.c]\npath = \"/c\"\nclass = \"FAST\"\n";
    let config = load_config_text(dir.path(), text).unwrap();
    assert_eq!(config.tier("a").unwrap().class, TierClass::Capacity);
    assert_eq!(
        config.tier("b").unwrap().class,
        TierClass::Other("archive".into())
    );
    assert_eq!(config.tier("c").unwrap().class, TierClass::Fast);
    assert_eq!(config.placement().overlays, "c");
    assert_eq!(config.placement().bases, "a");

    let bad = "[tiers.a]\npath = \"/a\"\nclass = \"no way\"\n";
    let error = load_config_text(dir.path(), bad).unwrap_err();
    assert!(
        matches!(error, StoreConfigError::ParseFile { line: 3, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("no way"), "{error}");
}

#[test]
fn placement_defaults_only_when_unambiguous() {
    let dir = tempfile::tempdir().unwrap();
    let one = load_config_text(dir.path(), "[tiers.only]\npath = \"/o\"\nclass = \"x\"\n").unwrap();
    assert_eq!(one.placement().overlays, "only");
    assert_eq!(one.placement().bases, "only");

    let no_fast =
        "[tiers.a]\npath = \"/a\"\n[tiers.b]\npath = \"/b\"\n[placement]\nbases = \"b\"\n";
    let error = load_config_text(dir.path(), no_fast).unwrap_err();
    assert!(
        matches!(
            error,
            StoreConfigError::PlacementNeeded {
                class: TierClass::Fast,
                ..
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("strata.toml") && message.contains("overlays"),
        "{message}"
    );
}

#[test]
fn bad_tier_names_and_empty_paths_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let error = load_config_text(dir.path(), "[tiers.\"-x\"]\npath = \"/x\"\n").unwrap_err();
    assert!(
        matches!(error, StoreConfigError::InvalidTierName { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("\"-x\""), "{error}");

    let error = load_config_text(dir.path(), "[tiers.x]\npath = \"\"\n").unwrap_err();
    assert!(
        matches!(error, StoreConfigError::EmptyTierPath { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("tier x"), "{error}");
}

#[test]
fn unknown_tier_lookup_lists_known_tiers() {
    let error = example_config().tier("ssd").unwrap_err();
    assert_eq!(
        error.to_string(),
        "no storage tier named \"ssd\"; known tiers: capacity, fast"
    );
}

#[test]
fn tier_of_compares_whole_components() {
    let config = example_config();
    let on = |path: &str| {
        config
            .tier_of(&PathBuf::from(path))
            .map(|tier| tier.name.clone())
    };
    assert_eq!(
        on("/var/lib/strata/nvme/a/b.layer").as_deref(),
        Some("fast")
    );
    assert_eq!(on("/var/lib/strata/nvme").as_deref(), Some("fast"));
    assert_eq!(
        on("/var/lib/strata/nvme/../hdd/x").as_deref(),
        Some("capacity")
    );
    assert_eq!(on("/var/lib/strata/nvme2/x"), None);
    assert_eq!(on("/var/lib/strata"), None);
}
