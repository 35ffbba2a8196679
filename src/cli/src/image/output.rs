//! How `strata image` prints results: aligned tables, or JSON with `--json`.

use strata_storage::images::{CopyReport, ImageInfo, Store, StoreError};
use strata_storage::ops::{BlockRange, CheckReport};

/// Human-readable bytes.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("strata: cannot encode JSON: {e}"),
    }
}

fn table(headers: &[&str], rows: &[Vec<String>]) {
    let widths = crate::table::column_widths(headers, rows);
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// `info`.
pub fn info(info: &ImageInfo, as_json: bool) {
    if as_json {
        return json(info);
    }
    println!(
        "image {}: {} virtual, {} blocks, {} layers",
        info.name,
        bytes(info.virtual_size),
        bytes(u64::from(info.block_size)),
        info.chain.len()
    );
    let rows: Vec<Vec<String>> = info
        .chain
        .iter()
        .enumerate()
        .map(|(depth, e)| {
            vec![
                depth.to_string(),
                e.kind.to_string(),
                if e.frozen { "frozen" } else { "live" }.to_string(),
                e.tier.clone().unwrap_or_else(|| "-".to_string()),
                bytes(e.allocated_bytes),
                bytes(e.disk_bytes),
                e.path.display().to_string(),
            ]
        })
        .collect();
    table(
        &["#", "kind", "state", "tier", "data", "on disk", "file"],
        &rows,
    );
}

/// `list`.
pub fn list(store: &Store, as_json: bool) -> Result<(), StoreError> {
    let names = store.names()?;
    if as_json {
        json(&names);
    } else {
        for name in names {
            println!("{name}");
        }
    }
    Ok(())
}

/// `check`.
pub fn check(report: &CheckReport, name: &str, as_json: bool) {
    if as_json {
        return json(report);
    }
    for layer in report.layers.iter().rev() {
        let id = layer.id.as_deref().unwrap_or("raw");
        println!(
            "ok  {}  {}  data {}  unreferenced {}",
            id,
            layer.path.display(),
            bytes(layer.allocated_bytes),
            bytes(layer.unreferenced_bytes)
        );
        for warning in &layer.warnings {
            println!("    warning: {warning}");
        }
    }
    println!(
        "image {name}: {} layers, all consistent",
        report.layers.len()
    );
}

/// `diff`.
pub fn diff(ranges: &[BlockRange], block_size: u32, as_json: bool) {
    if as_json {
        return json(&ranges);
    }
    let blocks: u64 = ranges.iter().map(|r| r.count).sum();
    for r in ranges {
        let start = r.first * u64::from(block_size);
        println!(
            "blocks {}..{}  bytes {:#x}..{:#x}",
            r.first,
            r.first + r.count,
            start,
            start + r.count * u64::from(block_size)
        );
    }
    println!(
        "{blocks} blocks differ ({})",
        bytes(blocks * u64::from(block_size))
    );
}

/// `copy`.
pub fn copy(name: &str, tier: &str, report: &CopyReport, as_json: bool) {
    if as_json {
        return json(report);
    }
    println!(
        "moved image {name} to tier {tier}: {} moved of {} in its chain ({} layers copied, {} reused)",
        bytes(report.bytes_moved),
        bytes(report.bytes_in_chain),
        report.layers_copied,
        report.layers_reused
    );
}
