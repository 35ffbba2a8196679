//! The one spelling rule shared by image names, tier names and tier classes.
//!
//! A name is 1 to 64 characters of `A-Z a-z 0-9 . _ -` and does not start
//! with `.` or `-`, so it is safe as a file name, a TOML key and a command-line
//! argument, and can never be mistaken for a flag or a hidden file.

/// Longest name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// Why `name` is not a valid name, or `None` if it is.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Some("it is longer than 64 characters");
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Some("it starts with '.' or '-'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Some("only letters, digits, '.', '_' and '-' are allowed");
    }
    None
}

/// Joins up to `max` names for an error message: `"a, b, c"`, or `"a, b, ... (7 in all)"`.
pub(super) fn list_names<'a>(names: impl Iterator<Item = &'a str>, max: usize) -> String {
    let names: Vec<&str> = names.collect();
    let shown = names[..names.len().min(max)].join(", ");
    if names.len() > max {
        format!("{shown}, ... ({} in all)", names.len())
    } else {
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in ["debian-12", "a", "golden_v1.2", "A0", &"x".repeat(64)] {
            assert_eq!(name_problem(name), None, "{name}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        for name in [
            "",
            ".hidden",
            "-flag",
            "a/b",
            "a b",
            "é",
            "..",
            &"x".repeat(65),
        ] {
            assert!(name_problem(name).is_some(), "{name:?} accepted");
        }
    }

    #[test]
    fn lists_few_names_in_full_and_many_with_a_count() {
        assert_eq!(list_names(["a", "b"].into_iter(), 3), "a, b");
        assert_eq!(
            list_names(["a", "b", "c", "d"].into_iter(), 2),
            "a, b, ... (4 in all)"
        );
        assert_eq!(list_names([].into_iter(), 2), "");
    }
}
