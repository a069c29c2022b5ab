//! Licenses as the pool sees them: how many seats, and when they count.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Timestamp;

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
        match self {
            Seats::Count(n) => serializer.serialize_u32(*n),
            Seats::Unlimited => serializer.serialize_str("unlimited"),
        }
    }
}

impl<'de> Deserialize<'de> for Seats {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Count(u32),
            Word(String),
        }
        match Wire::deserialize(deserializer)? {
            Wire::Count(n) => Ok(Seats::Count(n)),
            Wire::Word(word) if word == "unlimited" => Ok(Seats::Unlimited),
            Wire::Word(word) => Err(serde::de::Error::custom(format!(
                "seats must be a number or \"unlimited\", not \"{word}\""
            ))),
        }
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
        match self {
            Capacity::Limited(n) => serializer.serialize_u64(*n),
            Capacity::Unlimited => serializer.serialize_str("unlimited"),
        }
    }
}

impl<'de> Deserialize<'de> for Capacity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Count(u64),
            Word(String),
        }
        match Wire::deserialize(deserializer)? {
            Wire::Count(n) => Ok(Capacity::Limited(n)),
            Wire::Word(word) if word == "unlimited" => Ok(Capacity::Unlimited),
            Wire::Word(word) => Err(serde::de::Error::custom(format!(
                "a capacity is a number or \"unlimited\", not \"{word}\""
            ))),
        }
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
