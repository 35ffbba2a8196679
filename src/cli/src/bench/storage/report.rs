//! Medians, ratios and the goals, rendered as text and as Markdown.

use std::time::Duration;

use super::block_size::{memory_bytes_per_gib, table_bytes_per_gib};
use super::workload::{Requests, Workload};
use crate::bench::stats::median;

/// Reads at the deepest chain must reach this share of the shallowest.
const FLAT_READS: f64 = 0.95;
/// Random reads must beat qcow2 by this factor at chain depth 4 and above.
const RANDOM_READ_LEAD: f64 = 1.5;
const RANDOM_READ_FROM_DEPTH: u32 = 4;

/// The runs of one side: how many requests each made, and how long each took.
#[derive(Clone, Debug, Default)]
pub struct Runs {
    /// Requests per run.
    pub count: u64,
    /// One time per round.
    pub times: Vec<Duration>,
}

impl Runs {
    /// No runs yet, of `count` requests each.
    pub fn new(count: u64) -> Self {
        Self {
            count,
            times: Vec::new(),
        }
    }

    fn rates(&self) -> Vec<f64> {
        let count = self.count as f64;
        self.times
            .iter()
            .map(|t| count / t.as_secs_f64().max(1e-9))
            .collect()
    }

    /// Median requests per second.
    fn iops(&self) -> f64 {
        median(self.rates())
    }
}

/// Every run of one workload at one queue depth and chain depth.
pub struct Cell {
    /// What ran.
    pub workload: Workload,
    /// Requests in flight.
    pub queue_depth: u32,
    /// Layers over the base.
    pub depth: u32,
    /// Bytes per request.
    pub len: usize,
    /// Strata's runs.
    pub strata: Runs,
    /// qcow2's runs.
    pub qcow2: Runs,
}

/// Strata's read rate at the deepest chain over that at the shallowest,
/// from pairs of short runs alternated back to back.
pub struct Flatness {
    /// What ran.
    pub workload: Workload,
    /// Requests in flight.
    pub queue_depth: u32,
    /// One ratio of wall-clock rates per pair.
    pub wall: Vec<f64>,
    /// One ratio of rates per CPU second per pair.
    pub cpu: Vec<f64>,
}

/// Strata's deepest against shallowest reads, summarised.
struct Flat {
    label: String,
    cpu: Ratio,
    wall: Ratio,
    qcow2: f64,
}

/// First-write runs at one block size.
pub struct CopyUpRow {
    /// Strata block size and qcow2 cluster size.
    pub block_size: u32,
    /// The writes of each run.
    pub requests: Requests,
    /// Strata's runs.
    pub strata: Runs,
    /// qcow2's runs.
    pub qcow2: Runs,
}

/// `a / b` round by round: the median and the range of the ratios. Pairs
/// measured moments apart share the machine's slow and fast spells.
fn paired_ratio(a: &Runs, b: &Runs) -> Ratio {
    let ratios: Vec<f64> = a
        .rates()
        .iter()
        .zip(b.rates())
        .map(|(x, y)| x / y)
        .collect();
    let low = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let high = ratios.iter().copied().fold(0.0, f64::max);
    Ratio {
        median: median(ratios),
        low,
        high,
    }
}

/// The median and the middle half (quartiles) of `values`.
fn middle_half(values: &[f64]) -> Ratio {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: usize| {
        sorted
            .get((sorted.len().saturating_sub(1) * q) / 4)
            .copied()
    };
    Ratio {
        median: median(sorted.clone()),
        low: at(1).unwrap_or(f64::NAN),
        high: at(3).unwrap_or(f64::NAN),
    }
}

/// A ratio over rounds.
#[derive(Clone, Copy, Debug)]
struct Ratio {
    median: f64,
    low: f64,
    high: f64,
}

impl Ratio {
    fn range(&self, digits: usize) -> String {
        format!("{:.digits$}-{:.digits$}", self.low, self.high)
    }
}

impl Cell {
    fn ratio(&self) -> Ratio {
        paired_ratio(&self.strata, &self.qcow2)
    }

    fn strata_iops(&self) -> f64 {
        self.strata.iops()
    }

    fn qcow2_iops(&self) -> f64 {
        self.qcow2.iops()
    }

    fn mib_per_s(&self, iops: f64) -> f64 {
        iops * self.len as f64 / f64::from(1 << 20)
    }
}

/// A table with a header row.
struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn text(&self) -> String {
        let widths = crate::table::column_widths(&self.headers, &self.rows);
        let line = |cells: Vec<&str>| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (c, w))| {
                    if i == 0 {
                        format!("{c:<w$}")
                    } else {
                        format!("{c:>w$}")
                    }
                })
                .collect();
            padded.join("  ").trim_end().to_string() + "\n"
        };
        let mut out = line(self.headers.clone());
        for row in &self.rows {
            out += &line(row.iter().map(String::as_str).collect());
        }
        out
    }

    fn markdown(&self) -> String {
        let mut out = format!("| {} |\n|", self.headers.join(" | "));
        out += &"---|".repeat(self.headers.len());
        out.push('\n');
        for row in &self.rows {
            out += &format!("| {} |\n", row.join(" | "));
        }
        out
    }
}

fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b % 1024 == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

/// The benchmark's results.
pub struct Report<'a> {
    /// What was compared, one line.
    pub setup: String,
    /// Interleaved rounds.
    pub runs: u32,
    /// The main measurements.
    pub cells: &'a [Cell],
    /// Strata's deepest-against-shallowest reads.
    pub flatness: &'a [Flatness],
    /// The block-size measurements.
    pub copy_up: &'a [CopyUpRow],
    /// How long the whole benchmark took.
    pub elapsed: Duration,
}

impl Report<'_> {
    fn main_table(&self) -> Table {
        let rows = self
            .cells
            .iter()
            .map(|c| {
                let (s, q, ratio) = (c.strata_iops(), c.qcow2_iops(), c.ratio());
                vec![
                    c.workload.name().to_string(),
                    c.queue_depth.to_string(),
                    c.depth.to_string(),
                    format!("{s:.0}"),
                    format!("{:.1}", c.mib_per_s(s)),
                    format!("{q:.0}"),
                    format!("{:.1}", c.mib_per_s(q)),
                    format!("{:.2}x", ratio.median),
                    ratio.range(2),
                ]
            })
            .collect();
        Table {
            headers: vec![
                "workload",
                "QD",
                "depth",
                "Strata IOPS",
                "Strata MiB/s",
                "qcow2 IOPS",
                "qcow2 MiB/s",
                "Strata/qcow2",
                "range",
            ],
            rows,
        }
    }

    fn copy_up_table(&self) -> Table {
        let rows = self
            .copy_up
            .iter()
            .map(|r| {
                let (s, q) = (1e6 / r.strata.iops(), 1e6 / r.qcow2.iops());
                let ratio = paired_ratio(&r.strata, &r.qcow2);
                vec![
                    size(u64::from(r.block_size)),
                    r.requests.count.to_string(),
                    size(table_bytes_per_gib(r.block_size)),
                    size(memory_bytes_per_gib(r.block_size)),
                    size(u64::from(r.block_size)),
                    format!("{s:.1}"),
                    format!("{q:.1}"),
                    format!("{:.2}x", ratio.median),
                    ratio.range(2),
                ]
            })
            .collect();
        Table {
            headers: vec![
                "block",
                "writes",
                "table/GiB",
                "RAM/GiB",
                "written per 4K",
                "Strata µs/write",
                "qcow2 µs/write",
                "Strata/qcow2",
                "range",
            ],
            rows,
        }
    }

    fn find(&self, workload: Workload, queue_depth: u32, depth: u32) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.workload == workload && c.queue_depth == queue_depth && c.depth == depth)
    }

    fn depths(&self) -> (u32, u32) {
        let depths = self.cells.iter().map(|c| c.depth);
        (depths.clone().min().unwrap_or(1), depths.max().unwrap_or(1))
    }

    /// Deepest-against-shallowest reads: Strata's from its alternating
    /// short runs (median and middle half), qcow2's from the rounds (median
    /// of the per-round ratios).
    fn flatness(&self) -> Vec<Flat> {
        let (low, high) = self.depths();
        self.flatness
            .iter()
            .filter(|f| !f.cpu.is_empty())
            .map(|f| {
                let (qd, workload) = (f.queue_depth, f.workload);
                let qcow2 = match (self.find(workload, qd, low), self.find(workload, qd, high)) {
                    (Some(a), Some(b)) => paired_ratio(&b.qcow2, &a.qcow2).median,
                    _ => f64::NAN,
                };
                Flat {
                    label: format!("{} QD{qd}", workload.name()),
                    cpu: middle_half(&f.cpu),
                    wall: middle_half(&f.wall),
                    qcow2,
                }
            })
            .collect()
    }

    /// Each goal: its wording, whether it is met, and the evidence.
    fn goals(&self) -> Vec<(String, bool, String)> {
        let (low, high) = self.depths();
        let mut goals = Vec::new();
        let flat = self.flatness();
        if low != high
            && let Some(worst) = flat
                .iter()
                .min_by(|a, b| a.cpu.median.total_cmp(&b.cpu.median))
        {
            goals.push((
                format!("reads at depth {high} within 5% of depth {low} (CPU time per read)"),
                worst.cpu.median >= FLAT_READS,
                format!(
                    "worst {:.3}x ({}; {:.3}x by wall time)",
                    worst.cpu.median, worst.label, worst.wall.median
                ),
            ));
        }
        let lowest = |workload: Workload, from_depth: u32| {
            self.cells
                .iter()
                .filter(|c| c.workload == workload && c.depth >= from_depth)
                .map(|c| (c.ratio().median, c))
                .min_by(|a, b| a.0.total_cmp(&b.0))
        };
        if let Some((ratio, c)) = lowest(Workload::RandRead, RANDOM_READ_FROM_DEPTH) {
            goals.push((
                format!(
                    "random reads at least {RANDOM_READ_LEAD}x qcow2's at depth {RANDOM_READ_FROM_DEPTH} and above"
                ),
                ratio >= RANDOM_READ_LEAD,
                format!("lowest {ratio:.2}x (QD{}, depth {})", c.queue_depth, c.depth),
            ));
        }
        if let Some((ratio, c)) = lowest(Workload::FirstWrite, 0) {
            goals.push((
                "first write (copy-up) no slower than qcow2's".to_string(),
                ratio >= 1.0,
                format!(
                    "lowest {ratio:.2}x (QD{}, depth {})",
                    c.queue_depth, c.depth
                ),
            ));
        }
        goals
    }

    fn summary_lines(&self) -> Vec<String> {
        let (low, high) = self.depths();
        let mut lines = Vec::new();
        if low != high {
            let pairs = self.flatness.first().map_or(0, |f| f.cpu.len());
            lines.push(format!(
                "depth {high} against depth {low}: Strata from short runs alternated back to back \
                 ({pairs} pairs; median and middle half of the ratios of reads per CPU second \
                 and per wall second), qcow2 from the rounds"
            ));
            for flat in self.flatness() {
                lines.push(format!(
                    "depth {high} / depth {low}, {}: Strata {:.3}x by CPU time ({}), \
                     {:.3}x by wall time ({}); qcow2 {:.3}x",
                    flat.label,
                    flat.cpu.median,
                    flat.cpu.range(3),
                    flat.wall.median,
                    flat.wall.range(3),
                    flat.qcow2
                ));
            }
        }
        for (goal, met, evidence) in self.goals() {
            let verdict = if met { "met" } else { "NOT met" };
            lines.push(format!("goal: {goal}: {verdict}, {evidence}"));
        }
        lines
    }

    fn method(&self) -> String {
        format!(
            "{} interleaved rounds; IOPS: medians; ratios: medians (and ranges) of the \
             ratios within each round",
            self.runs
        )
    }

    fn copy_up_heading(&self) -> String {
        "first 4 KiB writes, each into a different unallocated block, QD1, into a fresh \
         layer over the raw base (table: each of the two on-disk copies; RAM: map + table)"
            .to_string()
    }

    /// A plain-text report for the terminal.
    pub fn text(&self) -> String {
        let mut out = format!("{}\n{}\n\n", self.setup, self.method());
        out += &self.main_table().text();
        out.push('\n');
        for line in self.summary_lines() {
            out += &line;
            out.push('\n');
        }
        if !self.copy_up.is_empty() {
            out += &format!("\n{}\n", self.copy_up_heading());
            out += &self.copy_up_table().text();
        }
        out += &format!("\ntotal time {:.1} s\n", self.elapsed.as_secs_f64());
        out
    }

    /// The same in Markdown.
    pub fn markdown(&self) -> String {
        let mut out = format!("{}; {}.\n\n", self.setup, self.method());
        out += &self.main_table().markdown();
        out.push('\n');
        for line in self.summary_lines() {
            out += &format!("- {line}\n");
        }
        if !self.copy_up.is_empty() {
            out += &format!(
                "\nCopy-up cost by block size: {}.\n\n",
                self.copy_up_heading()
            );
            out += &self.copy_up_table().markdown();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(workload: Workload, depth: u32, strata_ms: u64, qcow2_ms: u64) -> Cell {
        let runs = |ms| Runs {
            count: 1000,
            times: vec![Duration::from_millis(ms); 3],
        };
        Cell {
            workload,
            queue_depth: 1,
            depth,
            len: 4096,
            strata: runs(strata_ms),
            qcow2: runs(qcow2_ms),
        }
    }

    #[test]
    fn goals_are_judged_on_the_worst_case() {
        let cells = [
            cell(Workload::RandRead, 1, 100, 150),
            cell(Workload::RandRead, 64, 103, 400),
            cell(Workload::SeqRead, 1, 100, 100),
            cell(Workload::SeqRead, 64, 110, 300),
            cell(Workload::FirstWrite, 1, 100, 99),
        ];
        let flat = |workload, ratios: &[f64]| Flatness {
            workload,
            queue_depth: 1,
            wall: ratios.iter().map(|r| r * 0.5).collect(),
            cpu: ratios.to_vec(),
        };
        let flatness = [
            flat(Workload::RandRead, &[1.0, 0.99, 1.02]),
            flat(Workload::SeqRead, &[0.90, 0.91, 0.97]),
        ];
        let report = Report {
            setup: String::new(),
            runs: 3,
            cells: &cells,
            flatness: &flatness,
            copy_up: &[],
            elapsed: Duration::ZERO,
        };
        let goals = report.goals();
        assert_eq!(goals.len(), 3);
        assert!(!goals[0].1, "seq-read lost 9%: {:?}", goals[0]);
        assert!(
            goals[0]
                .2
                .contains("0.910x (seq-read 128K QD1; 0.455x by wall time)"),
            "{:?}",
            goals[0]
        );
        assert!(goals[1].1, "{:?}", goals[1]);
        assert!(!goals[2].1, "{:?}", goals[2]);
        let text = report.text();
        assert!(
            text.contains("goal: first write (copy-up) no slower than qcow2's: NOT met"),
            "{text}"
        );
        assert!(report.markdown().starts_with("; 3 interleaved rounds"));
    }

    #[test]
    fn middle_half_is_the_quartiles() {
        let r = middle_half(&[5.0, 1.0, 4.0, 2.0, 3.0]);
        assert_eq!((r.low, r.median, r.high), (2.0, 3.0, 4.0));
        assert!(middle_half(&[]).median.is_nan());
    }

    #[test]
    fn sizes_are_readable() {
        assert_eq!(size(128 << 10), "128 KiB");
        assert_eq!(size(2 << 20), "2 MiB");
        assert_eq!(size(100), "100 B");
    }
}
