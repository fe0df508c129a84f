//! Output: aligned tables for people, JSON for scripts.

use serde::Serialize;

use crate::cli::Format;

/// Prints `value` as JSON, or the table `rows` builds, per `format`.
pub fn print<T: Serialize>(format: Format, value: &T, headers: &[&str], rows: Vec<Vec<String>>) {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value).expect("replies serialize")),
        Format::Table => print!("{}", table(headers, &rows)),
    }
}

/// Formats an aligned table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s =
            cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect::<Vec<_>>().join("  ");
        s.truncate(s.trim_end().len());
        s + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

/// `a=b,c=d`
pub fn labels(l: &std::collections::BTreeMap<String, String>) -> String {
    l.iter().map(|(k, v)| if v.is_empty() { k.clone() } else { format!("{k}={v}") }).collect::<Vec<_>>().join(",")
}

/// Age of a millisecond timestamp, e.g. `3s`, `5m`.
pub fn age(ms: u64) -> String {
    if ms == 0 {
        return "never".into();
    }
    let secs = edge_bus::time::now_ms().saturating_sub(ms) / 1000;
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s => format!("{}h", s / 3600),
    }
}

/// A site's event buffer: fill, events waiting for the hub, and the full-buffer alarm.
pub fn buffer(b: &edge_types::site::BufferState) -> String {
    let mut s = format!("{:.0}% ({} events)", b.fill() * 100.0, b.messages);
    if b.full {
        s += " FULL";
    }
    if b.rejected_total > 0 {
        s += &format!(" {} refused", b.rejected_total);
    }
    s
}
