//! `resolve` and `locate`: between catalogue locations and host paths.

use std::path::{Path, PathBuf};

use super::super::{LayerLocation, ResolveLayerError, locate, resolve};
use super::example_config;

#[test]
fn resolves_to_the_tier_directory_plus_the_file() {
    let config = example_config();
    let location = LayerLocation::new("fast", "debian/top.layer");
    assert_eq!(
        resolve(&config, &location).unwrap(),
        Path::new("/var/lib/strata/nvme/debian/top.layer")
    );
}

#[test]
fn refuses_files_that_could_leave_the_tier() {
    let config = example_config();
    let cases = [
        ("../x", "contains '..'"),
        ("a/../../x", "contains '..'"),
        ("/abs", "is absolute"),
        ("./x", "contains '.'"),
        ("", "is empty"),
    ];
    for (file, problem) in cases {
        let error = resolve(&config, &LayerLocation::new("fast", file)).unwrap_err();
        assert!(
            matches!(error, ResolveLayerError::BadFile(_)),
            "{file}: {error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!(
                "layer file {file} on tier fast {problem}: \
                 a layer file must be a relative path inside its tier"
            )
        );
    }
}

#[test]
fn refuses_unknown_tiers() {
    let error = resolve(&example_config(), &LayerLocation::new("ssd", "x")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "layer file x is on tier ssd, which the store config does not define; \
         known tiers: capacity, fast"
    );
}

#[test]
fn locate_inverts_resolve() {
    let config = example_config();
    let location = LayerLocation::new("capacity", "golden/debian.layer");
    let path = resolve(&config, &location).unwrap();
    assert_eq!(locate(&config, &path), Some(location));
    assert_eq!(
        locate(&config, Path::new("/var/lib/strata/nvme/../hdd/g.layer")),
        Some(LayerLocation::new("capacity", "g.layer"))
    );
    assert_eq!(locate(&config, Path::new("/var/lib/strata/nvme")), None);
    assert_eq!(locate(&config, &PathBuf::from("/elsewhere/x")), None);
}
