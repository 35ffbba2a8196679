//! Medians, ratios, and their rendering as text and Markdown.

use super::Contender;
use super::measure::Sample;
use super::stats::median;

/// Medians for one contender.
struct Row {
    name: &'static str,
    first_io_ms: Option<f64>,
    first_byte_ms: f64,
    exit_ms: f64,
    peak_rss_mib: f64,
    overhead_mib: Option<f64>,
}

/// The benchmark's results.
pub struct Report {
    rows: Vec<Row>,
    runs: u32,
    note: Option<String>,
}

const NS_PER_MS: f64 = 1e6;
const BYTES_PER_MIB: f64 = 1024.0 * 1024.0;

impl Report {
    /// Summarises `samples[i]`, the samples of `contenders[i]`.
    pub fn new(
        contenders: &[Contender],
        samples: &[Vec<Sample>],
        runs: u32,
        note: Option<String>,
    ) -> Self {
        let rows = contenders
            .iter()
            .zip(samples)
            .map(|(c, s)| {
                let ms = |f: fn(&Sample) -> u64| {
                    median(s.iter().map(|x| f(x) as f64 / NS_PER_MS).collect())
                };
                let first_io: Vec<f64> = s
                    .iter()
                    .filter_map(|x| x.first_io_ns)
                    .map(|ns| ns as f64 / NS_PER_MS)
                    .collect();
                let overhead: Vec<f64> = s
                    .iter()
                    .filter_map(|x| {
                        x.guest_resident_bytes
                            .map(|g| x.peak_rss_bytes.saturating_sub(g))
                    })
                    .map(|b| b as f64 / BYTES_PER_MIB)
                    .collect();
                Row {
                    name: c.name,
                    first_io_ms: (!first_io.is_empty()).then(|| median(first_io)),
                    first_byte_ms: ms(|x| x.first_byte_ns),
                    exit_ms: ms(|x| x.exit_ns),
                    peak_rss_mib: median(
                        s.iter()
                            .map(|x| x.peak_rss_bytes as f64 / BYTES_PER_MIB)
                            .collect(),
                    ),
                    overhead_mib: (!overhead.is_empty()).then(|| median(overhead)),
                }
            })
            .collect();
        Self { rows, runs, note }
    }

    fn cells(&self) -> Vec<[String; 6]> {
        let opt =
            |v: Option<f64>, unit: &str| v.map_or("-".to_string(), |v| format!("{v:.2} {unit}"));
        self.rows
            .iter()
            .map(|r| {
                [
                    r.name.to_string(),
                    opt(r.first_io_ms, "ms"),
                    format!("{:.2} ms", r.first_byte_ms),
                    format!("{:.2} ms", r.exit_ms),
                    format!("{:.2} MiB", r.peak_rss_mib),
                    opt(r.overhead_mib, "MiB"),
                ]
            })
            .collect()
    }

    fn ratios(&self) -> Vec<String> {
        let Some(strata) = self.rows.first() else {
            return Vec::new();
        };
        self.rows
            .iter()
            .skip(1)
            .map(|r| {
                format!(
                    "{} / strata: first serial byte {:.1}x, exit {:.1}x, peak RSS {:.1}x",
                    r.name,
                    r.first_byte_ms / strata.first_byte_ms,
                    r.exit_ms / strata.exit_ms,
                    r.peak_rss_mib / strata.peak_rss_mib
                )
            })
            .collect()
    }

    const HEADERS: [&'static str; 6] = [
        "VMM",
        "to first guest I/O",
        "to first serial byte",
        "to exit",
        "peak RSS",
        "VMM overhead",
    ];

    /// A plain-text table for the terminal.
    pub fn text(&self) -> String {
        let cells = self.cells();
        let widths = crate::table::column_widths(&Self::HEADERS, &cells);
        let line = |cols: [&str; 6]| {
            let padded: Vec<String> = cols
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            padded.join("  ").trim_end().to_string() + "\n"
        };
        let mut out = format!("hello boot, median of {} interleaved rounds\n", self.runs);
        out += &line(Self::HEADERS);
        for row in &cells {
            out += &line([&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]]);
        }
        for ratio in self.ratios() {
            out += &ratio;
            out.push('\n');
        }
        if let Some(note) = &self.note {
            out += &format!("note: {note}\n");
        }
        out
    }

    /// The same as a Markdown table.
    pub fn markdown(&self) -> String {
        let mut out = format!("| {} |\n", Self::HEADERS.join(" | "));
        out += &format!("|{}\n", "---|".repeat(6));
        for row in self.cells() {
            out += &format!("| {} |\n", row.join(" | "));
        }
        out.push('\n');
        for ratio in self.ratios() {
            out += &format!("- {ratio}\n");
        }
        if let Some(note) = &self.note {
            out += &format!("- note: {note}\n");
        }
        out
    }
}
