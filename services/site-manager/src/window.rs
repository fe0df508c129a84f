//! The site's maintenance window: daily `HH:MM-HH:MM` on the site's own clock (UTC plus the
//! configured offset). Outside it, updates that replace running containers wait at the site;
//! first installs, restarts of crashed containers and removals never wait.

use std::fmt;

/// A daily window, e.g. `22:00-04:00` (crossing midnight) at offset `+01:00`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    start: u32,
    end: u32,
    offset: i32,
}

fn minutes(hhmm: &str) -> Option<u32> {
    let (h, m) = hhmm.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && hhmm.trim().len() == 5).then_some(h * 60 + m)
}

impl Window {
    /// Parses `HH:MM-HH:MM` and an offset `+HH:MM` / `-HH:MM` (empty: UTC).
    pub fn parse(window: &str, offset: &str) -> Result<Self, String> {
        let bad = || format!("maintenance window {window:?} is not HH:MM-HH:MM");
        let (a, b) = window.split_once('-').ok_or_else(bad)?;
        let (start, end) = (minutes(a).ok_or_else(bad)?, minutes(b).ok_or_else(bad)?);
        if start == end {
            return Err(format!("maintenance window {window:?} is empty"));
        }
        let offset = match offset.trim() {
            "" => 0,
            o => {
                let bad = || format!("UTC offset {o:?} is not +HH:MM or -HH:MM");
                let (sign, rest) = match o.as_bytes()[0] {
                    b'+' => (1, &o[1..]),
                    b'-' => (-1, &o[1..]),
                    _ => return Err(bad()),
                };
                let m = minutes(rest).ok_or_else(bad)? as i32;
                if m > 14 * 60 {
                    return Err(bad());
                }
                sign * m
            }
        };
        Ok(Self { start, end, offset })
    }

    /// Whether the window is open at `unix_ms`.
    pub fn open_at(&self, unix_ms: u64) -> bool {
        let utc_min = ((unix_ms / 60_000) % 1440) as i32;
        let local = (utc_min + self.offset).rem_euclid(1440) as u32;
        if self.start < self.end {
            (self.start..self.end).contains(&local)
        } else {
            local >= self.start || local < self.end
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
        let sign = if self.offset < 0 { '-' } else { '+' };
        let o = self.offset.unsigned_abs();
        write!(f, "{}-{} UTC{sign}{}", hm(self.start), hm(self.end), hm(o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3_600_000;

    #[test]
    fn opens_on_the_site_clock_also_across_midnight() {
        let w = Window::parse("01:00-05:00", "").unwrap();
        assert!(!w.open_at(0) && w.open_at(H) && w.open_at(5 * H - 1) && !w.open_at(5 * H));
        let night = Window::parse("22:00-04:00", "+02:00").unwrap();
        assert!(night.open_at(20 * H), "22:00 local at UTC+2");
        assert!(night.open_at(H), "03:00 local");
        assert!(!night.open_at(10 * H), "12:00 local");
        let west = Window::parse("22:00-23:00", "-05:00").unwrap();
        assert!(west.open_at(3 * H + H / 2), "22:30 local is 03:30 UTC");
        for bad in [("25:00-01:00", ""), ("1:00-2:00", ""), ("01:00", ""), ("01:00-01:00", ""), ("01:00-02:00", "2")] {
            assert!(Window::parse(bad.0, bad.1).is_err(), "{bad:?}");
        }
    }
}
