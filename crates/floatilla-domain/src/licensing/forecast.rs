//! The next change of capacity and what it would do to the fleet, in numbers and in words.

use crate::Timestamp;
use crate::licensing::license::{Capacity, LicenseTerm, capacity_at, next_boundary};

/// The next instant at which the capacity changes, and its effect on today's live routers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapacityForecast {
    pub at: Timestamp,
    pub from: Capacity,
    pub to: Capacity,
    /// Licensed routers that would become excess.
    pub shed: u64,
    /// Excess routers that would become licensed.
    pub restored: u64,
}

/// The next capacity change after `now`, for `live_managed` routers with a live session (the
/// fleet as it is now); `None` if the capacity never changes again. Boundaries at which licenses
/// end and start without changing the sum are passed over.
pub fn next_capacity_change(
    terms: &[LicenseTerm],
    now: Timestamp,
    live_managed: u64,
) -> Option<CapacityForecast> {
    let from = capacity_at(terms, now);
    let mut at = now;
    loop {
        at = next_boundary(terms, at)?;
        let to = capacity_at(terms, at);
        if to == from {
            continue;
        }
        let live = usize::try_from(live_managed).unwrap_or(usize::MAX);
        let licensed_now = from.seats_for(live) as u64;
        let licensed_then = to.seats_for(live) as u64;
        return Some(CapacityForecast {
            at,
            from,
            to,
            shed: licensed_now.saturating_sub(licensed_then),
            restored: licensed_then.saturating_sub(licensed_now),
        });
    }
}

/// The next drop of capacity after `now`, no later than `within`, for `live_managed` routers:
/// rises on the way are passed over, since only a drop needs a warning.
pub fn next_capacity_drop(
    terms: &[LicenseTerm],
    now: Timestamp,
    live_managed: u64,
    within: chrono::Duration,
) -> Option<CapacityForecast> {
    let horizon = now + within;
    let mut at = now;
    loop {
        let change = next_capacity_change(terms, at, live_managed)?;
        if change.at > horizon {
            return None;
        }
        if change.is_drop() {
            return Some(change);
        }
        at = change.at;
    }
}

/// The warning windows before a capacity drop, in days (30, 14, 7 and 1 by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeWindows(Vec<u32>);

impl NoticeWindows {
    /// Windows in any order; duplicates and zero are dropped.
    pub fn new(mut days: Vec<u32>) -> Self {
        days.retain(|d| *d > 0);
        days.sort_unstable_by(|a, b| b.cmp(a));
        days.dedup();
        Self(days)
    }

    /// How far ahead the widest window looks.
    pub fn horizon(&self) -> chrono::Duration {
        chrono::Duration::days(self.0.first().copied().unwrap_or(0).into())
    }

    /// The window a drop at `drop_at` is in, seen from `now`: the narrowest one that has
    /// opened. A notice is due once per window; after an outage only the narrowest is sent.
    pub fn current(&self, drop_at: Timestamp, now: Timestamp) -> Option<u32> {
        if now >= drop_at {
            return None;
        }
        self.0
            .iter()
            .copied()
            .filter(|days| drop_at - chrono::Duration::days((*days).into()) <= now)
            .min()
    }

    /// When the next window before `drop_at` opens after `now`.
    pub fn next_opening(&self, drop_at: Timestamp, now: Timestamp) -> Option<Timestamp> {
        self.0
            .iter()
            .map(|days| drop_at - chrono::Duration::days((*days).into()))
            .filter(|opening| *opening > now)
            .min()
    }
}

impl Default for NoticeWindows {
    fn default() -> Self {
        Self::new(vec![30, 14, 7, 1])
    }
}

impl CapacityForecast {
    /// Whether fewer routers could be licensed after it.
    pub fn is_drop(&self) -> bool {
        match (self.from, self.to) {
            (Capacity::Limited(from), Capacity::Limited(to)) => to < from,
            (Capacity::Unlimited, Capacity::Limited(_)) => true,
            (_, Capacity::Unlimited) => false,
        }
    }

    /// A warning ahead of the drop, in plain words, e.g. "in 14 days, on 2027-01-31 at 00:00
    /// UTC 25 seats expire: 12 routers would become excess".
    pub fn notice(&self, now: Timestamp) -> String {
        format!("{}, {}", self.time_left(now), self.describe())
    }

    /// How soon the change comes, in whole days: "in 14 days", "in 1 day", "within a day".
    pub fn time_left(&self, now: Timestamp) -> String {
        match (self.at - now).num_days() {
            0 => "within a day".to_owned(),
            1 => "in 1 day".to_owned(),
            n => format!("in {n} days"),
        }
    }
    /// The change in plain words, e.g. "on 2027-01-31 at 00:00 UTC 25 seats expire: 12 routers
    /// would become excess".
    pub fn describe(&self) -> String {
        let when = self.at.format("on %Y-%m-%d at %H:%M UTC");
        match (self.from, self.to) {
            (Capacity::Limited(from), Capacity::Limited(to)) if to < from => format!(
                "{when} {} expire: {} would become excess",
                seats(from - to),
                routers(self.shed)
            ),
            (Capacity::Limited(from), Capacity::Limited(to)) => format!(
                "{when} {} are added: {} in excess would be licensed",
                seats(to - from),
                routers(self.restored)
            ),
            (Capacity::Unlimited, Capacity::Limited(to)) => format!(
                "{when} the unlimited license ends, leaving {}: {} would become excess",
                seats(to),
                routers(self.shed)
            ),
            (_, Capacity::Unlimited) => format!(
                "{when} an unlimited license starts: {} in excess would be licensed",
                routers(self.restored)
            ),
        }
    }
}

fn seats(n: u64) -> String {
    if n == 1 {
        "1 seat".to_owned()
    } else {
        format!("{n} seats")
    }
}

fn routers(n: u64) -> String {
    match n {
        0 => "no router".to_owned(),
        1 => "1 router".to_owned(),
        n => format!("{n} routers"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::licensing::license::Seats;
    use chrono::{Duration, TimeZone, Utc};

    fn day(n: i64) -> Timestamp {
        Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap() + Duration::days(n)
    }

    fn term(seats: Seats, from: i64, to: Option<i64>) -> LicenseTerm {
        LicenseTerm {
            seats,
            not_before: day(from),
            not_after: to.map(day),
            grace_until: None,
        }
    }

    #[test]
    fn expiring_seats_say_how_many_routers_become_excess() {
        let terms = [
            term(Seats::Count(25), 0, Some(30)),
            term(Seats::Count(10), 0, None),
        ];
        let forecast = next_capacity_change(&terms, day(1), 22).unwrap();
        assert_eq!(forecast.at, day(30));
        assert_eq!(
            (forecast.from, forecast.to),
            (Capacity::Limited(35), Capacity::Limited(10))
        );
        assert_eq!((forecast.shed, forecast.restored), (12, 0));
        assert_eq!(
            forecast.describe(),
            "on 2027-01-31 at 00:00 UTC 25 seats expire: 12 routers would become excess"
        );
        let quiet = next_capacity_change(&terms, day(1), 5).unwrap();
        assert!(quiet.describe().ends_with("no router would become excess"));
    }

    #[test]
    fn a_renewal_on_the_same_instant_is_no_change() {
        let terms = [
            term(Seats::Count(10), 0, Some(30)),
            term(Seats::Count(10), 30, Some(60)),
            term(Seats::Count(1), 0, None),
        ];
        let forecast = next_capacity_change(&terms, day(1), 11).unwrap();
        assert_eq!(forecast.at, day(60));
        assert_eq!(forecast.shed, 10);
        assert_eq!(
            forecast.describe(),
            "on 2027-03-02 at 00:00 UTC 10 seats expire: 10 routers would become excess"
        );
    }

    #[test]
    fn the_next_drop_passes_over_rises_and_looks_only_so_far() {
        let terms = [
            term(Seats::Count(5), 0, None),
            term(Seats::Count(3), 10, Some(40)),
        ];
        let drop = next_capacity_drop(&terms, day(1), 8, Duration::days(60)).unwrap();
        assert_eq!(
            (drop.at, drop.from, drop.to),
            (day(40), Capacity::Limited(8), Capacity::Limited(5))
        );
        assert_eq!(
            next_capacity_drop(&terms, day(1), 8, Duration::days(30)),
            None
        );
        let from_inside = next_capacity_drop(&terms, day(12), 8, Duration::days(30)).unwrap();
        assert_eq!(
            (from_inside.from, from_inside.shed),
            (Capacity::Limited(8), 3)
        );
        assert_eq!(
            from_inside.notice(day(12)),
            "in 28 days, on 2027-02-10 at 00:00 UTC 3 seats expire: 3 routers would become excess"
        );
    }

    #[test]
    fn notice_windows_open_one_after_the_other() {
        let windows = NoticeWindows::new(vec![7, 30, 1, 14, 14, 0]);
        assert_eq!(windows, NoticeWindows::default());
        assert_eq!(windows.horizon(), Duration::days(30));
        let drop = day(60);
        assert_eq!(windows.current(drop, day(29)), None);
        assert_eq!(windows.next_opening(drop, day(29)), Some(day(30)));
        assert_eq!(windows.current(drop, day(30)), Some(30));
        assert_eq!(windows.current(drop, day(46)), Some(14));
        assert_eq!(windows.next_opening(drop, day(46)), Some(day(53)));
        // After an outage only the narrowest open window counts.
        assert_eq!(windows.current(drop, day(59) + Duration::hours(1)), Some(1));
        assert_eq!(
            windows.next_opening(drop, day(59) + Duration::hours(1)),
            None
        );
        assert_eq!(windows.current(drop, drop), None);
    }

    #[test]
    fn added_and_unlimited_seats_restore_excess_routers() {
        let terms = [
            term(Seats::Count(5), 0, None),
            term(Seats::Count(3), 10, Some(20)),
            term(Seats::Unlimited, 20, Some(40)),
        ];
        let added = next_capacity_change(&terms, day(1), 7).unwrap();
        assert_eq!((added.at, added.restored), (day(10), 2));
        assert_eq!(
            added.describe(),
            "on 2027-01-11 at 00:00 UTC 3 seats are added: 2 routers in excess would be licensed"
        );
        let unlimited = next_capacity_change(&terms, day(10), 9).unwrap();
        assert_eq!(unlimited.to, Capacity::Unlimited);
        assert_eq!(unlimited.restored, 1);
        assert_eq!(
            unlimited.describe(),
            "on 2027-01-21 at 00:00 UTC an unlimited license starts: 1 router in excess would be licensed"
        );
        let ends = next_capacity_change(&terms, day(20), 9).unwrap();
        assert_eq!(
            ends.describe(),
            "on 2027-02-10 at 00:00 UTC the unlimited license ends, leaving 5 seats: 4 routers would become excess"
        );
        assert_eq!(next_capacity_change(&terms, day(40), 9), None);
    }
}
