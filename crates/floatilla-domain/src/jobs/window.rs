//! Maintenance windows: a daily stretch of local time in a time zone, "02:00-04:00
//! Europe/Berlin", in which a group's routers may be changed. Local wall-clock time decides, so a
//! window follows daylight saving time: on the night the clocks go forward it is an hour shorter
//! (02:00-03:00 does not exist), on the night they go back an hour longer.

use std::fmt;
use std::str::FromStr;

use chrono::{Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Timestamp;

/// A daily window of local time. It may cross midnight ("22:00-02:00").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaintenanceWindow {
    start: NaiveTime,
    end: NaiveTime,
    zone: Tz,
}

/// Why a window was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error(
        "a maintenance window reads \"HH:MM-HH:MM Area/City\", e.g. \"02:00-04:00 Europe/Berlin\""
    )]
    Malformed,
    #[error("{0:?} is not a time of day (HH:MM)")]
    Time(String),
    #[error("{0:?} is not a time zone of the IANA database (e.g. Europe/Berlin, UTC)")]
    Zone(String),
    #[error("a maintenance window must not start and end at the same time")]
    Empty,
}

impl WindowError {
    pub fn code(&self) -> &'static str {
        "invalid_maintenance_window"
    }
}

impl MaintenanceWindow {
    pub fn new(start: NaiveTime, end: NaiveTime, zone: Tz) -> Result<Self, WindowError> {
        if start == end {
            return Err(WindowError::Empty);
        }
        Ok(Self { start, end, zone })
    }

    /// Whether routers may be changed at `at`.
    pub fn is_open(&self, at: Timestamp) -> bool {
        let local = at.with_timezone(&self.zone).time();
        if self.start < self.end {
            self.start <= local && local < self.end
        } else {
            local >= self.start || local < self.end
        }
    }

    /// The first instant after `at` at which the window opens or closes.
    pub fn next_change(&self, at: Timestamp) -> Timestamp {
        let open = self.is_open(at);
        let today = at.with_timezone(&self.zone).date_naive();
        (-1..=2)
            .filter_map(|offset| today.checked_add_signed(Duration::days(offset)))
            .flat_map(|day| [self.start, self.end].map(|time| self.instants(day, time)))
            .flatten()
            .filter(|candidate| *candidate > at && self.is_open(*candidate) != open)
            .min()
            .expect("a window with distinct ends opens or closes within two days")
    }

    /// The instants at which the local clock shows `time` on `day`: none, one, or (when the
    /// clocks go back) two; for a time the clocks skip, the instant they skip to.
    fn instants(&self, day: NaiveDate, time: NaiveTime) -> Vec<Timestamp> {
        let local = NaiveDateTime::new(day, time);
        match self.zone.from_local_datetime(&local) {
            LocalResult::Single(at) => vec![at.to_utc()],
            LocalResult::Ambiguous(first, second) => vec![first.to_utc(), second.to_utc()],
            LocalResult::None => (1..=24 * 60)
                .map(|minutes| local + Duration::minutes(minutes))
                .find_map(|later| self.zone.from_local_datetime(&later).earliest())
                .map(|at| vec![at.to_utc()])
                .unwrap_or_default(),
        }
    }
}

impl fmt::Display for MaintenanceWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{} {}",
            self.start.format("%H:%M"),
            self.end.format("%H:%M"),
            self.zone.name()
        )
    }
}

impl FromStr for MaintenanceWindow {
    type Err = WindowError;

    /// Reads "HH:MM-HH:MM Area/City"; an en dash may stand for the hyphen.
    fn from_str(text: &str) -> Result<Self, WindowError> {
        let (times, zone) = text
            .trim()
            .split_once(char::is_whitespace)
            .ok_or(WindowError::Malformed)?;
        let (start, end) = times.split_once(['-', '–']).ok_or(WindowError::Malformed)?;
        let time = |text: &str| {
            NaiveTime::parse_from_str(text.trim(), "%H:%M")
                .map_err(|_| WindowError::Time(text.trim().to_owned()))
        };
        let zone = zone.trim();
        let zone: Tz = zone
            .parse()
            .map_err(|_| WindowError::Zone(zone.to_owned()))?;
        MaintenanceWindow::new(time(start)?, time(end)?, zone)
    }
}

impl Serialize for MaintenanceWindow {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MaintenanceWindow {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn window(text: &str) -> MaintenanceWindow {
        text.parse().unwrap()
    }

    #[test]
    fn windows_read_and_print_alike() {
        let berlin = window("02:00–04:00 Europe/Berlin");
        assert_eq!(berlin.to_string(), "02:00-04:00 Europe/Berlin");
        assert_eq!(window(&berlin.to_string()), berlin);
        assert_eq!(
            serde_json::to_string(&berlin).unwrap(),
            "\"02:00-04:00 Europe/Berlin\""
        );
        assert_eq!(
            "02:00-04:00".parse::<MaintenanceWindow>(),
            Err(WindowError::Malformed)
        );
        assert_eq!(
            "2am-4am UTC".parse::<MaintenanceWindow>(),
            Err(WindowError::Time("2am".into()))
        );
        assert_eq!(
            "02:00-04:00 Mars/Olympus".parse::<MaintenanceWindow>(),
            Err(WindowError::Zone("Mars/Olympus".into()))
        );
        assert_eq!(
            "03:00-03:00 UTC".parse::<MaintenanceWindow>(),
            Err(WindowError::Empty)
        );
    }

    #[test]
    fn a_summer_night_in_berlin() {
        let w = window("02:00-04:00 Europe/Berlin");
        // CEST is UTC+2: the window is 00:00-02:00 UTC.
        assert!(!w.is_open(utc("2026-07-01T23:59:59Z")));
        assert!(w.is_open(utc("2026-07-02T00:00:00Z")));
        assert!(w.is_open(utc("2026-07-02T01:59:59Z")));
        assert!(!w.is_open(utc("2026-07-02T02:00:00Z")));
        assert_eq!(
            w.next_change(utc("2026-07-01T12:00:00Z")),
            utc("2026-07-02T00:00:00Z")
        );
        assert_eq!(
            w.next_change(utc("2026-07-02T00:30:00Z")),
            utc("2026-07-02T02:00:00Z")
        );
    }

    #[test]
    fn a_window_across_midnight() {
        let w = window("22:00-02:00 America/New_York");
        // EDT is UTC-4: 02:00-06:00 UTC.
        assert!(w.is_open(utc("2026-07-02T02:00:00Z")));
        assert!(w.is_open(utc("2026-07-02T05:59:00Z")));
        assert!(!w.is_open(utc("2026-07-02T06:00:00Z")));
        assert_eq!(
            w.next_change(utc("2026-07-02T06:00:00Z")),
            utc("2026-07-03T02:00:00Z")
        );
    }

    #[test]
    fn the_night_the_clocks_go_forward_is_shorter() {
        // 2027-03-28 in Berlin: 02:00 CET becomes 03:00 CEST (01:00 UTC).
        let w = window("02:00-04:00 Europe/Berlin");
        assert_eq!(
            w.next_change(utc("2027-03-27T12:00:00Z")),
            utc("2027-03-28T01:00:00Z"),
            "opens when the clocks skip to 03:00"
        );
        assert_eq!(
            w.next_change(utc("2027-03-28T01:00:00Z")),
            utc("2027-03-28T02:00:00Z"),
            "closes at 04:00 CEST: one hour"
        );
    }

    #[test]
    fn the_night_the_clocks_go_back_is_longer() {
        // 2026-10-25 in Berlin: 03:00 CEST becomes 02:00 CET (01:00 UTC).
        let w = window("02:00-04:00 Europe/Berlin");
        assert_eq!(
            w.next_change(utc("2026-10-24T12:00:00Z")),
            utc("2026-10-25T00:00:00Z"),
            "opens at the first 02:00 (CEST)"
        );
        assert!(
            w.is_open(utc("2026-10-25T01:30:00Z")),
            "02:30 CET, the second time round"
        );
        assert_eq!(
            w.next_change(utc("2026-10-25T00:00:00Z")),
            utc("2026-10-25T03:00:00Z"),
            "closes at 04:00 CET: three hours"
        );
    }

    #[test]
    fn the_next_change_always_flips_the_window() {
        let windows = [
            window("02:00-04:00 Europe/Berlin"),
            window("23:30-00:15 Asia/Kolkata"),
            window("00:00-23:59 UTC"),
            window("01:30-02:30 America/New_York"),
        ];
        for w in windows {
            let mut at = utc("2026-01-01T00:00:00Z");
            for _ in 0..800 {
                let next = w.next_change(at);
                assert!(next > at);
                assert!(next - at <= Duration::hours(48));
                assert_ne!(w.is_open(next), w.is_open(at), "{w} at {next}");
                // Nothing changes in between.
                let middle = at + (next - at) / 2;
                assert_eq!(w.is_open(middle), w.is_open(at), "{w} at {middle}");
                at = next;
            }
        }
    }
}
