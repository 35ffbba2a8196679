//! Building store configs from `--tier` flags.

use std::path::Path;

use super::super::{ConfigSource, StoreConfig, StoreConfigError, TierClass};

fn from_flags(flags: &[&str]) -> Result<StoreConfig, StoreConfigError> {
    let flags: Vec<String> = flags.iter().map(|flag| flag.to_string()).collect();
    StoreConfig::from_tier_flags(&flags, None, None)
}

#[test]
fn one_tier_takes_both_placements() {
    let config = from_flags(&["main=/srv/strata"]).unwrap();
    let tier = config.tier("main").unwrap();
    assert_eq!(tier.path, Path::new("/srv/strata"));
    assert_eq!(tier.class, TierClass::Capacity);
    assert_eq!(config.placement().overlays, "main");
    assert_eq!(config.placement().bases, "main");
    assert_eq!(config.source(), &ConfigSource::Flags);
}

#[test]
fn two_tiers_place_by_class() {
    let config = from_flags(&["hdd=/srv/hdd:capacity", "nvme=/srv/nvme:fast"]).unwrap();
    assert_eq!(config.placement().overlays, "nvme");
    assert_eq!(config.placement().bases, "hdd");
}

#[test]
fn without_a_matching_class_the_first_tier_given_is_used() {
    let config = from_flags(&["zeta=/z:weird", "alpha=/a:Other"]).unwrap();
    assert_eq!(
        config.tier("zeta").unwrap().class,
        TierClass::Other("weird".into())
    );
    assert_eq!(
        config.tier("alpha").unwrap().class,
        TierClass::Other("other".into())
    );
    assert_eq!(config.placement().overlays, "zeta");
    assert_eq!(config.placement().bases, "zeta");
}

#[test]
fn explicit_placement_wins_and_must_exist() {
    let flags = ["a=/a:fast".to_owned(), "b=/b:capacity".to_owned()];
    let config = StoreConfig::from_tier_flags(&flags, Some("b"), Some("a")).unwrap();
    assert_eq!(config.placement().overlays, "b");
    assert_eq!(config.placement().bases, "a");

    let error = StoreConfig::from_tier_flags(&flags, None, Some("c")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "--tier flags: placement bases names tier \"c\", which is not defined; known tiers: a, b"
    );
}

#[test]
fn the_class_is_what_follows_the_last_colon() {
    let config = from_flags(&["a=/mnt/x:y:fast"]).unwrap();
    let tier = config.tier("a").unwrap();
    assert_eq!(tier.path, Path::new("/mnt/x:y"));
    assert_eq!(tier.class, TierClass::Fast);
}

#[test]
fn relative_paths_are_made_absolute_against_the_current_directory() {
    let config = from_flags(&["a=some/dir"]).unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(config.tier("a").unwrap().path, cwd.join("some/dir"));
}

#[test]
fn malformed_flags_are_rejected_with_the_flag_quoted() {
    let cases = [
        ("fast", "no '='"),
        ("=x", "tier name before '=' is empty"),
        ("a=", "path after '=' is empty"),
        ("a=:fast", "path after '=' is empty"),
        ("a=/p:", "class \"\" after ':' is invalid"),
        ("a=/p:no way", "class \"no way\" after ':' is invalid"),
    ];
    for (flag, expected) in cases {
        let error = from_flags(&[flag]).unwrap_err();
        assert!(
            matches!(error, StoreConfigError::BadTierFlag { .. }),
            "{flag}: {error:?}"
        );
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("--tier {flag:?}: ")),
            "{message}"
        );
        assert!(message.contains(expected), "{flag}: {message}");
        assert!(message.ends_with("expected NAME=PATH[:CLASS]"), "{message}");
    }
}

#[test]
fn tier_sets_are_checked_like_config_files() {
    let error = from_flags(&[]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "--tier flags defines no storage tiers: give at least one"
    );

    let error = from_flags(&["a b=/p"]).unwrap_err();
    assert!(
        matches!(error, StoreConfigError::InvalidTierName { .. }),
        "{error:?}"
    );

    let error = from_flags(&["a=/p", "a=/q"]).unwrap_err();
    assert_eq!(error.to_string(), "--tier flags: tier a is given twice");

    let error = from_flags(&["a=/p", "b=/p/"]).unwrap_err();
    assert_eq!(
        error.to_string(),
        "--tier flags: tiers a and b share the directory /p: each tier needs its own"
    );
}
