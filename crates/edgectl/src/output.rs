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

/// Names joined by `, `.
pub fn names(names: &[edge_types::Name]) -> String {
    names.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
}

/// A time (milliseconds since the epoch) as UTC, `2026-12-05T07:10:00.123Z`.
pub fn time_of(ms: u64) -> String {
    let (days, rest) = ((ms / 86_400_000) as i64, ms % 86_400_000);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (rest / 3_600_000, rest / 60_000 % 60, rest / 1000 % 60, rest % 1000);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod time_tests {
    #[test]
    fn times_print_as_utc() {
        assert_eq!(super::time_of(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::time_of(1_796_454_600_123), "2026-12-05T07:10:00.123Z");
        assert_eq!(super::time_of(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
