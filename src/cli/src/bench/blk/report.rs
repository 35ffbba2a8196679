//! The results table: medians over rounds per cell, ratios taken within
//! each round (so that a slow phase of the machine hits both sides alike),
//! and the goals checked against them.

pub use crate::bench::stats::median;
use std::fmt::Write;

use super::client::{RunResult, Workload};

/// The figures of one run, without its raw latencies.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    pub iops: f64,
    pub mib_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

impl From<&RunResult> for Summary {
    fn from(run: &RunResult) -> Self {
        Self {
            iops: run.iops(),
            mib_s: run.mib_per_s(),
            p50_us: run.percentile_us(50.0),
            p99_us: run.percentile_us(99.0),
        }
    }
}

/// All rounds of one (workload, depth, queues) cell.
#[derive(Clone, Debug)]
pub struct Cell {
    pub workload: Workload,
    pub depth: u32,
    pub queues: u16,
    pub strata: Vec<Summary>,
    pub qsd: Vec<Summary>,
    /// The null-co ceiling, which does not depend on depth.
    pub null: Vec<Summary>,
    /// `strata blk serve` with other `--disk` keys; empty if none is compared.
    pub variant: Vec<Summary>,
}

fn med(runs: &[Summary], f: impl Fn(&Summary) -> f64) -> f64 {
    median(runs.iter().map(f).collect())
}

/// Median over rounds of `f(a) / f(b)` within each round.
fn ratio(a: &[Summary], b: &[Summary], f: impl Fn(&Summary) -> f64) -> f64 {
    median(a.iter().zip(b).map(|(x, y)| f(x) / f(y)).collect())
}

impl Cell {
    pub fn strata_over_qsd(&self) -> f64 {
        ratio(&self.strata, &self.qsd, |s| s.iops)
    }

    pub fn p99_strata_over_qsd(&self) -> f64 {
        ratio(&self.strata, &self.qsd, |s| s.p99_us)
    }

    pub fn strata_over_null(&self) -> f64 {
        ratio(&self.strata, &self.null, |s| s.iops)
    }

    pub fn variant_over_strata(&self) -> f64 {
        ratio(&self.variant, &self.strata, |s| s.iops)
    }

    pub fn p99_variant_over_strata(&self) -> f64 {
        ratio(&self.variant, &self.strata, |s| s.p99_us)
    }
}

/// Extra columns when a variant is compared.
const VARIANT_HEADER: [&str; 6] = [
    "variant IOPS",
    "MiB/s",
    "p50 µs",
    "p99 µs",
    "variant/strata",
    "p99 variant/strata",
];

fn header(cells: &[Cell]) -> Vec<&'static str> {
    let mut out = HEADER.to_vec();
    if cells.iter().any(|c| !c.variant.is_empty()) {
        out.extend(VARIANT_HEADER);
    }
    out
}

const HEADER: [&str; 19] = [
    "workload",
    "QD",
    "depth",
    "queues",
    "strata IOPS",
    "MiB/s",
    "p50 µs",
    "p99 µs",
    "qsd IOPS",
    "MiB/s",
    "p50 µs",
    "p99 µs",
    "null IOPS",
    "MiB/s",
    "p50 µs",
    "p99 µs",
    "strata/qsd",
    "p99 strata/qsd",
    "strata/null",
];

fn row(cell: &Cell) -> Vec<String> {
    let mut out = vec![
        cell.workload.name(),
        cell.workload.qd.to_string(),
        cell.depth.to_string(),
        cell.queues.to_string(),
    ];
    for runs in [&cell.strata, &cell.qsd, &cell.null] {
        out.push(format!("{:.0}", med(runs, |s| s.iops)));
        out.push(format!("{:.1}", med(runs, |s| s.mib_s)));
        out.push(format!("{:.1}", med(runs, |s| s.p50_us)));
        out.push(format!("{:.1}", med(runs, |s| s.p99_us)));
    }
    out.push(format!("{:.2}x", cell.strata_over_qsd()));
    out.push(format!("{:.2}x", cell.p99_strata_over_qsd()));
    out.push(format!("{:.2}x", cell.strata_over_null()));
    if !cell.variant.is_empty() {
        let runs = &cell.variant;
        out.push(format!("{:.0}", med(runs, |s| s.iops)));
        out.push(format!("{:.1}", med(runs, |s| s.mib_s)));
        out.push(format!("{:.1}", med(runs, |s| s.p50_us)));
        out.push(format!("{:.1}", med(runs, |s| s.p99_us)));
        out.push(format!("{:.2}x", cell.variant_over_strata()));
        out.push(format!("{:.2}x", cell.p99_variant_over_strata()));
    }
    out
}

/// The goals of the issue, each with the cell that decides it.
pub fn goals(cells: &[Cell]) -> Vec<String> {
    let mut lines = Vec::new();
    let worst = |pick: &dyn Fn(&Cell) -> bool, f: &dyn Fn(&Cell) -> f64, lowest: bool| {
        cells
            .iter()
            .filter(|c| pick(c))
            .fold(None, |acc: Option<(f64, &Cell)>, c| {
                let v = f(c);
                match acc {
                    Some((best, _)) if (lowest && best <= v) || (!lowest && best >= v) => acc,
                    _ => Some((v, c)),
                }
            })
    };
    let at = |c: &Cell| {
        format!(
            "{} QD{} depth {} queues {}",
            c.workload.name(),
            c.workload.qd,
            c.depth,
            c.queues
        )
    };
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let rand_read_4k = |c: &Cell| {
        c.workload.pattern == super::client::Pattern::RandRead && c.workload.block == 4096
    };
    if let Some((v, c)) = worst(
        &|c| rand_read_4k(c) && c.depth >= 4 && c.workload.qd >= 32,
        &Cell::strata_over_qsd,
        true,
    ) {
        lines.push(format!(
            "4K random reads at depth >= 4, QD32: lowest strata/qsd {v:.2}x ({}); goal 1.5x: {}",
            at(c),
            verdict(v >= 1.5)
        ));
    }
    if let Some((v, c)) = worst(&|_| true, &Cell::strata_over_qsd, true) {
        lines.push(format!(
            "never below qsd: lowest strata/qsd {v:.2}x ({}): {}",
            at(c),
            verdict(v >= 1.0)
        ));
    }
    if let Some((v, c)) = worst(&|_| true, &Cell::p99_strata_over_qsd, false) {
        lines.push(format!(
            "p99 no worse: highest p99 strata/qsd {v:.2}x ({}): {}",
            at(c),
            verdict(v <= 1.0)
        ));
    }
    if let Some((v, c)) = worst(&|_| true, &Cell::strata_over_null, true) {
        lines.push(format!(
            "within 80% of null-co: lowest strata/null {v:.2}x ({}): {}",
            at(c),
            verdict(v >= 0.8)
        ));
    }
    lines
}

/// The table as aligned plain text, then what the variant is (if any),
/// then the goals.
pub fn text(cells: &[Cell], variant: Option<&str>) -> String {
    let header = header(cells);
    let rows: Vec<Vec<String>> = cells.iter().map(row).collect();
    let widths = crate::table::column_widths(&header, &rows);
    let mut out = String::new();
    let line = |cols: Vec<&str>, out: &mut String| {
        let padded: Vec<String> = cols
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}", w = *w))
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(header, &mut out);
    for r in &rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out.push('\n');
    if let Some(variant) = variant {
        let _ = writeln!(out, "- {variant}");
    }
    for g in goals(cells) {
        let _ = writeln!(out, "- {g}");
    }
    out
}

/// The same as a Markdown table, with `intro` above it.
pub fn markdown(cells: &[Cell], intro: &str) -> String {
    let header = header(cells);
    let mut out = format!("{intro}\n\n| {} |\n", header.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
    for r in cells.iter().map(row) {
        let _ = writeln!(out, "| {} |", r.join(" | "));
    }
    out.push('\n');
    for g in goals(cells) {
        let _ = writeln!(out, "- {g}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::client::Pattern;
    use super::*;

    fn s(iops: f64, p99: f64) -> Summary {
        Summary {
            iops,
            mib_s: iops / 256.0,
            p50_us: p99 / 2.0,
            p99_us: p99,
        }
    }

    #[test]
    fn ratios_are_medians_of_per_round_ratios() {
        let cell = Cell {
            workload: Workload {
                pattern: Pattern::RandRead,
                block: 4096,
                qd: 32,
            },
            depth: 4,
            queues: 1,
            strata: vec![s(300.0, 10.0), s(100.0, 30.0), s(200.0, 20.0)],
            qsd: vec![s(100.0, 20.0), s(100.0, 20.0), s(200.0, 40.0)],
            null: vec![s(400.0, 5.0); 3],
            variant: Vec::new(),
        };
        assert_eq!(cell.strata_over_qsd(), 1.0);
        assert_eq!(cell.p99_strata_over_qsd(), 0.5);
        assert_eq!(cell.strata_over_null(), 0.5);
        let g = goals(std::slice::from_ref(&cell));
        assert!(g[0].contains("1.00x") && g[0].contains("NOT met"), "{g:?}");
        assert!(g[2].contains("met") && !g[2].contains("NOT"), "{g:?}");
        assert!(text(&[cell], None).lines().count() >= 2);
    }

    #[test]
    fn a_variant_adds_its_columns_and_ratios_to_strata() {
        let mut cell = Cell {
            workload: Workload {
                pattern: Pattern::RandRead,
                block: 4096,
                qd: 1,
            },
            depth: 1,
            queues: 1,
            strata: vec![s(100.0, 20.0), s(200.0, 20.0)],
            qsd: vec![s(100.0, 20.0); 2],
            null: vec![s(400.0, 5.0); 2],
            variant: Vec::new(),
        };
        let plain = text(std::slice::from_ref(&cell), None);
        assert!(!plain.contains("variant"), "{plain}");
        cell.variant = vec![s(150.0, 10.0), s(300.0, 10.0)];
        assert_eq!(cell.variant_over_strata(), 1.5);
        assert_eq!(cell.p99_variant_over_strata(), 0.5);
        let out = text(std::slice::from_ref(&cell), Some("variant: poll=50"));
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].ends_with("p99 variant/strata"), "{out}");
        let last: Vec<&str> = lines[1].split_whitespace().rev().take(2).collect();
        assert_eq!(last, ["0.50x", "1.50x"], "{out}");
        assert!(out.contains("- variant: poll=50"), "{out}");
        let md = markdown(&[cell], "intro");
        let separator = md.lines().nth(3).unwrap();
        assert_eq!(separator.matches("---|").count(), 25, "{md}");
    }
}
