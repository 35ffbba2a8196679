//! The catalogue on disk: round trips, damage, and concurrent writers.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::super::{
    CATALOGUE_FILE_NAME, Catalogue, CatalogueError, CatalogueLock, ImageEntry, LayerLocation,
};

fn entry(name: &str) -> ImageEntry {
    ImageEntry::new(
        name,
        LayerLocation::new("fast", format!("{name}/top.layer")),
    )
}

/// Files in `dir` other than the catalogue and its lock: leftovers.
fn stray_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != CATALOGUE_FILE_NAME && name != "catalogue.lock")
        .collect()
}

#[test]
fn round_trip_through_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut catalogue = Catalogue::open(dir.path()).unwrap();
    assert!(catalogue.is_empty());
    assert!(!catalogue.path().exists(), "open must not write");

    let mut golden = entry("debian-12");
    golden.description = Some("golden image".into());
    catalogue.insert(golden.clone()).unwrap();
    catalogue.insert(entry("alpine")).unwrap();
    catalogue.insert(entry("gone")).unwrap();
    assert_eq!(catalogue.remove("gone").unwrap().name, "gone");
    let new_top = LayerLocation::new("capacity", "debian-12/frozen-1.layer");
    catalogue.set_top("debian-12", new_top.clone()).unwrap();
    catalogue.save().unwrap();

    let reopened = Catalogue::open(dir.path()).unwrap();
    assert_eq!(reopened.path(), dir.path().join(CATALOGUE_FILE_NAME));
    let names: Vec<&str> = reopened.list().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["alpine", "debian-12"]);
    let debian = reopened.get("debian-12").unwrap();
    assert_eq!(debian.top, new_top);
    assert_eq!(debian.description.as_deref(), Some("golden image"));
    assert_eq!(debian.created_unix, golden.created_unix);
    assert!(debian.created_unix > 1_700_000_000);

    let text = std::fs::read_to_string(reopened.path()).unwrap();
    assert!(text.contains("\"format\": 1"), "{text}");
    assert!(!text.contains("\"description\": null"), "{text}");
    assert!(stray_files(dir.path()).is_empty());
}

#[test]
fn names_are_checked_and_unique() {
    let dir = tempfile::tempdir().unwrap();
    let mut catalogue = Catalogue::open(dir.path()).unwrap();
    catalogue.insert(entry("web")).unwrap();
    let error = catalogue.insert(entry("web")).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "an image named \"web\" already exists in catalogue {}",
            catalogue.path().display()
        )
    );
    for bad in ["", ".web", "-web", "a/b", "a b", &"x".repeat(65)] {
        let error = catalogue.insert(entry(bad)).unwrap_err();
        assert!(
            matches!(error, CatalogueError::InvalidImageName { .. }),
            "{bad:?}: {error:?}"
        );
    }
    let outside = ImageEntry::new("evil", LayerLocation::new("fast", "../../etc/passwd"));
    let error = catalogue.insert(outside).unwrap_err();
    assert!(
        matches!(error, CatalogueError::BadLayerFile { .. }),
        "{error:?}"
    );
    let error = catalogue
        .set_top("web", LayerLocation::new("fast", "/abs"))
        .unwrap_err();
    assert!(error.to_string().contains("is absolute"), "{error}");
    assert_eq!(catalogue.len(), 1);
}

#[test]
fn not_found_names_the_catalogue_and_the_known_images() {
    let dir = tempfile::tempdir().unwrap();
    let mut catalogue = Catalogue::open(dir.path()).unwrap();
    let path = catalogue.path().display().to_string();
    assert_eq!(
        catalogue.get("web").unwrap_err().to_string(),
        format!("no image named \"web\" in catalogue {path} (the catalogue is empty)")
    );
    catalogue.insert(entry("b")).unwrap();
    catalogue.insert(entry("a")).unwrap();
    assert_eq!(
        catalogue.remove("web").unwrap_err().to_string(),
        format!("no image named \"web\" in catalogue {path}; known images: a, b")
    );
    for i in 0..20 {
        catalogue.insert(entry(&format!("img{i}"))).unwrap();
    }
    let error = catalogue
        .set_top("web", LayerLocation::new("fast", "x"))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("no image named \"web\" in catalogue {path}")
    );
}

#[test]
fn damaged_files_are_reported_and_left_alone() {
    let cases: [(&str, &str); 6] = [
        (
            "{\"format\": 1, \"images\": [",
            "is not valid JSON: EOF while parsing a list at line 1 column 25",
        ),
        ("", "is not valid JSON"),
        ("{\"images\": []}", "has no \"format\" field"),
        (
            "{\"format\": 2, \"images\": []}",
            "has format 2, but this Strata reads only format 1",
        ),
        (
            "{\"format\": 1, \"images\": [], \"extra\": 0}",
            "is malformed: unknown field `extra`",
        ),
        (
            "{\"format\": 1, \"images\": [{\"name\": \"x\", \"created_unix\": 0, \
             \"top\": {\"tier\": \"fast\", \"file\": \"../x\"}}]}",
            "image \"x\": layer file ../x on tier fast contains '..'",
        ),
    ];
    for (text, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CATALOGUE_FILE_NAME);
        std::fs::write(&path, text).unwrap();
        let error = Catalogue::open(dir.path()).unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with(&format!("catalogue {}", path.display())),
            "{message}"
        );
        assert!(
            message.contains(expected),
            "{expected:?} missing from: {message}"
        );
        let error = Catalogue::lock_and_open(dir.path()).unwrap_err();
        assert_eq!(error.to_string(), message);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            text,
            "file was changed"
        );
    }
}

#[test]
fn duplicate_names_in_the_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let one = r#"{"name": "x", "created_unix": 0, "top": {"tier": "fast", "file": "x"}}"#;
    let text = format!("{{\"format\": 1, \"images\": [{one}, {one}]}}");
    std::fs::write(dir.path().join(CATALOGUE_FILE_NAME), &text).unwrap();
    let error = Catalogue::open(dir.path()).unwrap_err();
    assert!(
        error.to_string().contains("the name appears twice"),
        "{error}"
    );
}

#[test]
fn missing_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let error = Catalogue::open(&missing).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "catalogue directory {} does not exist or is not a directory",
            missing.display()
        )
    );
    assert!(Catalogue::lock_and_open(&missing).is_err());
}

#[test]
fn a_failed_save_leaves_the_old_contents_and_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut catalogue = Catalogue::open(dir.path()).unwrap();
    catalogue.insert(entry("a")).unwrap();
    // A non-empty directory where the file goes makes the final rename fail
    // after the temporary file was written.
    std::fs::create_dir(catalogue.path()).unwrap();
    std::fs::write(catalogue.path().join("keep"), b"old").unwrap();
    let error = catalogue.save().unwrap_err();
    assert!(matches!(error, CatalogueError::Write { .. }), "{error:?}");
    assert!(
        error.to_string().contains("rename over the old file"),
        "{error}"
    );
    assert_eq!(
        std::fs::read(catalogue.path().join("keep")).unwrap(),
        b"old"
    );
    assert!(
        stray_files(dir.path()).is_empty(),
        "{:?}",
        stray_files(dir.path())
    );
}

#[test]
fn concurrent_writers_under_the_lock_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let writers: Vec<_> = ["left", "right"]
        .into_iter()
        .map(|prefix| {
            let dir = dir.path().to_owned();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let (_lock, mut catalogue) = Catalogue::lock_and_open(&dir).unwrap();
                    catalogue.insert(entry(&format!("{prefix}-{i}"))).unwrap();
                    catalogue.save().unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let catalogue = Catalogue::open(dir.path()).unwrap();
    assert_eq!(catalogue.len(), 100);
    assert!(catalogue.get("left-49").is_ok() && catalogue.get("right-0").is_ok());
    assert!(stray_files(dir.path()).is_empty());
}

#[test]
fn the_lock_excludes_a_second_holder_until_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let lock = CatalogueLock::acquire(dir.path()).unwrap();
    assert_eq!(lock.path(), dir.path().join("catalogue.lock"));
    let acquired = Arc::new(AtomicBool::new(false));
    let waiter = {
        let (dir, acquired) = (dir.path().to_owned(), Arc::clone(&acquired));
        std::thread::spawn(move || {
            let _lock = CatalogueLock::acquire(&dir).unwrap();
            acquired.store(true, Ordering::SeqCst);
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !acquired.load(Ordering::SeqCst),
        "second lock taken while the first is held"
    );
    drop(lock);
    waiter.join().unwrap();
    assert!(acquired.load(Ordering::SeqCst));
}
