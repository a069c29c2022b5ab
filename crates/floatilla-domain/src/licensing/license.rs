//! Licenses as the pool sees them: how many seats, and when they count.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Timestamp;
use crate::names::named_enum;

/// The seats a license grants: a number, or no limit at all. Never a magic number for "no limit".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Seats {
    Count(u32),
    Unlimited,
}

impl fmt::Display for Seats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Seats::Count(n) => write!(f, "{n}"),
            Seats::Unlimited => f.write_str("unlimited"),
        }
    }
}

/// On the wire and in files: a JSON number, or the string `"unlimited"`.
impl Serialize for Seats {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let limit = match self {
            Seats::Count(n) => Some(*n),
            Seats::Unlimited => None,
        };
        serialize_limit(limit, serializer)
    }
}

impl<'de> Deserialize<'de> for Seats {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(deserialize_limit(deserializer, "seats")?.map_or(Seats::Unlimited, Seats::Count))
    }
}

/// A limit as a JSON number, or `None` as the string `"unlimited"`.
fn serialize_limit<S: Serializer, T: Serialize>(
    limit: Option<T>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match limit {
        Some(n) => n.serialize(serializer),
        None => serializer.serialize_str("unlimited"),
    }
}

/// A JSON number, or `None` for the string `"unlimited"`; `what` names it in the error.
fn deserialize_limit<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
    what: &str,
) -> Result<Option<T>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Wire<T> {
        Count(T),
        Word(String),
    }
    match Wire::<T>::deserialize(deserializer)? {
        Wire::Count(n) => Ok(Some(n)),
        Wire::Word(word) if word == "unlimited" => Ok(None),
        Wire::Word(word) => Err(serde::de::Error::custom(format!(
            "{what} must be a number or \"unlimited\", not \"{word}\""
        ))),
    }
}

/// How many routers may be licensed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Capacity {
    Limited(u64),
    Unlimited,
}

impl Capacity {
    /// How many of `live` routers get a seat.
    pub fn seats_for(self, live: usize) -> usize {
        match self {
            Capacity::Limited(seats) => usize::try_from(seats).unwrap_or(usize::MAX).min(live),
            Capacity::Unlimited => live,
        }
    }

    /// Whether `count` routers fit.
    pub fn admits(self, count: u64) -> bool {
        match self {
            Capacity::Limited(seats) => count <= seats,
            Capacity::Unlimited => true,
        }
    }
}

/// Like [`Seats`]: a JSON number, or the string `"unlimited"`.
impl Serialize for Capacity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let limit = match self {
            Capacity::Limited(n) => Some(*n),
            Capacity::Unlimited => None,
        };
        serialize_limit(limit, serializer)
    }
}

impl<'de> Deserialize<'de> for Capacity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(deserialize_limit(deserializer, "a capacity")?
            .map_or(Capacity::Unlimited, Capacity::Limited))
    }
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Capacity::Limited(n) => write!(f, "{n}"),
            Capacity::Unlimited => f.write_str("unlimited"),
        }
    }
}

/// When a license counts and for how many seats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LicenseTerm {
    pub seats: Seats,
    /// The first instant it counts.
    pub not_before: Timestamp,
    /// Its end, unless it has a grace period; `None` for a permanent license.
    pub not_after: Option<Timestamp>,
    /// The end of its grace period, which replaces `not_after` as its end.
    pub grace_until: Option<Timestamp>,
}

impl LicenseTerm {
    /// The first instant it no longer counts, if any.
    pub fn effective_end(&self) -> Option<Timestamp> {
        self.grace_until.or(self.not_after)
    }

    /// Counts from `not_before` (inclusive) to its effective end (exclusive).
    pub fn counts_at(&self, at: Timestamp) -> bool {
        at >= self.not_before && self.effective_end().is_none_or(|end| at < end)
    }
}

/// The capacity at `at`: the seats of the licenses counting then, or unlimited if any of them is.
pub fn capacity_at<'a>(
    terms: impl IntoIterator<Item = &'a LicenseTerm>,
    at: Timestamp,
) -> Capacity {
    let mut seats: u64 = 0;
    for term in terms.into_iter().filter(|t| t.counts_at(at)) {
        match term.seats {
            Seats::Count(n) => seats += u64::from(n),
            Seats::Unlimited => return Capacity::Unlimited,
        }
    }
    Capacity::Limited(seats)
}

/// The first instant after `at` at which some license starts or stops counting: when the
/// capacity may change next.
pub fn next_boundary<'a>(
    terms: impl IntoIterator<Item = &'a LicenseTerm>,
    at: Timestamp,
) -> Option<Timestamp> {
    terms
        .into_iter()
        .flat_map(|t| [Some(t.not_before), t.effective_end()])
        .flatten()
        .filter(|boundary| *boundary > at)
        .min()
}

named_enum! {
    /// Where an installed license stands, for people.
    pub enum LicenseStatus {
        /// Counts, and stops counting (if ever) in more than 30 days.
        Valid = "valid",
        /// Starts later.
        NotYetValid = "not_yet_valid",
        /// Counts, and stops counting (at the end of any grace period) within 30 days.
        Expiring = "expiring",
        /// Past its `not_after`, still counting until its grace period ends.
        InGrace = "in_grace",
        Expired = "expired",
        /// Its successor has started.
        Superseded = "superseded",
    }
}

/// A license's end is announced as `expiring` this long before.
pub const EXPIRING_WITHIN_DAYS: i64 = 30;

/// The license's status at `now`, with the whole days left while it is expiring or in grace.
pub fn license_status(
    term: &LicenseTerm,
    superseded_from: Option<Timestamp>,
    now: Timestamp,
) -> (LicenseStatus, Option<i64>) {
    if superseded_from.is_some_and(|from| now >= from) {
        return (LicenseStatus::Superseded, None);
    }
    if now < term.not_before {
        return (LicenseStatus::NotYetValid, None);
    }
    let Some(end) = term.effective_end() else {
        return (LicenseStatus::Valid, None);
    };
    if now >= end {
        return (LicenseStatus::Expired, None);
    }
    let days_left = (end - now).num_days();
    if term.not_after.is_some_and(|not_after| now >= not_after) {
        return (LicenseStatus::InGrace, Some(days_left));
    }
    if days_left < EXPIRING_WITHIN_DAYS {
        return (LicenseStatus::Expiring, Some(days_left));
    }
    (LicenseStatus::Valid, None)
}

/// A license as far as renewals go: its term, its serial (signed licenses have one) and the
/// serials it supersedes.
#[derive(Debug, Clone, Copy)]
pub struct Lineage<'a> {
    pub term: LicenseTerm,
    pub serial: Option<&'a str>,
    pub supersedes: &'a [String],
}

/// When a successor takes over the license with `serial`: the earliest start among the
/// licenses that supersede it.
pub fn superseded_at(serial: &str, licenses: &[Lineage<'_>]) -> Option<Timestamp> {
    licenses
        .iter()
        .filter(|l| l.supersedes.iter().any(|s| s == serial))
        .map(|l| l.term.not_before)
        .min()
}

/// The terms that count: a superseded license stops counting when its successor starts, so an
/// early renewal, installed ahead of time, leaves no gap and counts no seat twice.
pub fn effective_terms(licenses: &[Lineage<'_>]) -> Vec<LicenseTerm> {
    licenses
        .iter()
        .map(|license| {
            let Some(successor_start) = license.serial.and_then(|s| superseded_at(s, licenses))
            else {
                return license.term;
            };
            let end = license
                .term
                .effective_end()
                .map_or(successor_start, |end| end.min(successor_start));
            // Ends no earlier than it starts: a license superseded before its start never counts.
            let end = end.max(license.term.not_before);
            LicenseTerm {
                not_after: Some(end),
                grace_until: None,
                ..license.term
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone, Utc};

    fn day(n: i64) -> Timestamp {
        Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap() + Duration::days(n)
    }

    fn term(seats: Seats, from: i64, to: Option<i64>, grace: Option<i64>) -> LicenseTerm {
        LicenseTerm {
            seats,
            not_before: day(from),
            not_after: to.map(day),
            grace_until: grace.map(day),
        }
    }

    #[test]
    fn a_license_counts_from_its_start_to_just_before_its_end() {
        let t = term(Seats::Count(10), 1, Some(31), None);
        assert!(!t.counts_at(day(1) - Duration::milliseconds(1)));
        assert!(t.counts_at(day(1)));
        assert!(t.counts_at(day(31) - Duration::milliseconds(1)));
        assert!(!t.counts_at(day(31)));
    }

    #[test]
    fn grace_replaces_the_end_and_no_end_is_permanent() {
        let graced = term(Seats::Count(10), 0, Some(30), Some(44));
        assert!(graced.counts_at(day(40)));
        assert!(!graced.counts_at(day(44)));
        let permanent = term(Seats::Count(5), 0, None, None);
        assert!(permanent.counts_at(day(100_000)));
    }

    #[test]
    fn capacity_sums_counting_licenses_and_unlimited_wins() {
        let terms = [
            term(Seats::Count(10), 0, Some(30), None),
            term(Seats::Count(5), 0, None, None),
            term(Seats::Unlimited, 60, Some(90), None),
        ];
        assert_eq!(capacity_at(&terms, day(-1)), Capacity::Limited(0));
        assert_eq!(capacity_at(&terms, day(0)), Capacity::Limited(15));
        assert_eq!(capacity_at(&terms, day(30)), Capacity::Limited(5));
        assert_eq!(capacity_at(&terms, day(60)), Capacity::Unlimited);
        assert_eq!(capacity_at(&terms, day(90)), Capacity::Limited(5));
        assert_eq!(next_boundary(&terms, day(0)), Some(day(30)));
        assert_eq!(next_boundary(&terms, day(30)), Some(day(60)));
        assert_eq!(next_boundary(&terms, day(90)), None);
    }

    #[test]
    fn an_early_renewal_takes_over_at_its_start_with_no_gap_and_no_double_count() {
        let old = term(Seats::Count(10), 0, Some(30), Some(40));
        let renewal = term(Seats::Count(12), 25, Some(395), None);
        let supersedes = vec!["A-1".to_owned()];
        let lineages = [
            Lineage {
                term: old,
                serial: Some("A-1"),
                supersedes: &[],
            },
            Lineage {
                term: renewal,
                serial: Some("A-2"),
                supersedes: &supersedes,
            },
        ];
        let terms = effective_terms(&lineages);
        let just_before = day(25) - Duration::milliseconds(1);
        assert_eq!(capacity_at(&terms, just_before), Capacity::Limited(10));
        assert_eq!(capacity_at(&terms, day(25)), Capacity::Limited(12));
        assert_eq!(capacity_at(&terms, day(35)), Capacity::Limited(12));
        assert_eq!(superseded_at("A-1", &lineages), Some(day(25)));
        assert_eq!(superseded_at("A-2", &lineages), None);
        // A successor that starts before the license itself: it never counts.
        let early = term(Seats::Count(3), -5, None, None);
        let lineages = [
            Lineage {
                term: old,
                serial: Some("A-1"),
                supersedes: &[],
            },
            Lineage {
                term: early,
                serial: None,
                supersedes: &supersedes,
            },
        ];
        assert_eq!(
            capacity_at(&effective_terms(&lineages), day(1)),
            Capacity::Limited(3)
        );
    }

    #[test]
    fn status_follows_the_term_grace_and_successor() {
        let t = term(Seats::Count(10), 10, Some(100), Some(114));
        let status = |now| license_status(&t, Some(day(200)), now);
        assert_eq!(status(day(5)), (LicenseStatus::NotYetValid, None));
        assert_eq!(status(day(10)), (LicenseStatus::Valid, None));
        // Days left count to the end of the grace period, when the license stops counting.
        assert_eq!(status(day(80)), (LicenseStatus::Valid, None));
        assert_eq!(status(day(90)), (LicenseStatus::Expiring, Some(24)));
        assert_eq!(status(day(100)), (LicenseStatus::InGrace, Some(14)));
        assert_eq!(status(day(114)), (LicenseStatus::Expired, None));
        assert_eq!(status(day(200)), (LicenseStatus::Superseded, None));
        let permanent = term(Seats::Unlimited, 0, None, None);
        assert_eq!(
            license_status(&permanent, None, day(9_999)),
            (LicenseStatus::Valid, None)
        );
    }

    #[test]
    fn seats_are_a_number_or_unlimited_in_json() {
        assert_eq!(serde_json::to_string(&Seats::Count(25)).unwrap(), "25");
        assert_eq!(
            serde_json::to_string(&Seats::Unlimited).unwrap(),
            "\"unlimited\""
        );
        assert_eq!(serde_json::from_str::<Seats>("7").unwrap(), Seats::Count(7));
        assert_eq!(
            serde_json::from_str::<Seats>("\"unlimited\"").unwrap(),
            Seats::Unlimited
        );
        assert!(serde_json::from_str::<Seats>("\"lots\"").is_err());
        assert!(serde_json::from_str::<Seats>("-1").is_err());
    }
}
