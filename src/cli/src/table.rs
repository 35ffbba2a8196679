//! Plain-text tables for the terminal.

/// The width of each column: the widest of its header and its cells, in
/// characters (the tables hold units such as "µs").
pub fn column_widths<R: AsRef<[String]>>(headers: &[&str], rows: &[R]) -> Vec<usize> {
    (0..headers.len())
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.as_ref().get(i))
                .map(|c| c.chars().count())
                .chain([headers[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::column_widths;

    #[test]
    fn widths_cover_headers_and_cells() {
        let rows = vec![vec!["µs".to_string(), "12345".to_string()]];
        assert_eq!(column_widths(&["a", "bb"], &rows), vec![2, 5]);
        assert_eq!(column_widths::<Vec<String>>(&["abc"], &[]), vec![3]);
    }
}
