//! License usage over time, for true-ups and audits: per hour or per day, the peak of concurrent
//! managed routers, the peak of licensed ones, and how many router-minutes were spent in excess.
//! The pool's counts are sampled after every change; each new sample adds its predecessor's
//! share to the buckets it spans.

use chrono::{Datelike, Duration, TimeZone, Timelike, Utc};

use crate::Timestamp;
use crate::names::named_enum;

named_enum! {
    /// The length of a usage bucket, aligned to UTC.
    pub enum Granularity {
        Hour = "hour",
        Day = "day",
    }
}

impl Granularity {
    /// The start of the bucket holding `at`.
    pub fn bucket_start(self, at: Timestamp) -> Timestamp {
        let hour = match self {
            Granularity::Hour => at.hour(),
            Granularity::Day => 0,
        };
        Utc.with_ymd_and_hms(at.year(), at.month(), at.day(), hour, 0, 0)
            .single()
            .expect("a UTC hour exists")
    }

    pub fn length(self) -> Duration {
        match self {
            Granularity::Hour => Duration::hours(1),
            Granularity::Day => Duration::days(1),
        }
    }
}

/// The pool's counts from `at` until the next sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageSample {
    pub at: Timestamp,
    /// Managed routers with a live session: licensed and excess.
    pub managed_live: u64,
    pub licensed: u64,
    pub excess: u64,
}

/// One hour's or day's usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageBucket {
    pub start: Timestamp,
    pub peak_managed: u64,
    pub peak_licensed: u64,
    /// Excess routers multiplied by the milliseconds they were excess.
    pub excess_router_millis: u64,
}

impl UsageBucket {
    pub fn excess_router_minutes(&self) -> f64 {
        self.excess_router_millis as f64 / 60_000.0
    }

    /// Folds in another share of the same bucket: peaks are the larger, excess adds up.
    pub fn merge(&mut self, other: &UsageBucket) {
        self.peak_managed = self.peak_managed.max(other.peak_managed);
        self.peak_licensed = self.peak_licensed.max(other.peak_licensed);
        self.excess_router_millis += other.excess_router_millis;
    }
}

/// What the pool's counts contributed to each bucket from `last` (held until `next.at`) and
/// `next` (from then on): one share per bucket touched, to merge into what the buckets hold.
/// The counts of `last` are the peak of every bucket they were held in; `next`'s count in the
/// bucket it starts. A `next` older than `last` counts from `last`'s instant.
pub fn accrue(
    last: &UsageSample,
    next: &UsageSample,
    granularity: Granularity,
) -> Vec<UsageBucket> {
    let until = next.at.max(last.at);
    let mut shares = Vec::new();
    let mut start = granularity.bucket_start(last.at);
    let mut from = last.at;
    loop {
        let end = start + granularity.length();
        let stop = end.min(until);
        let span = (stop - from).num_milliseconds().max(0) as u64;
        let mut share = UsageBucket {
            start,
            peak_managed: last.managed_live,
            peak_licensed: last.licensed,
            excess_router_millis: last.excess * span,
        };
        if end > until {
            share.peak_managed = share.peak_managed.max(next.managed_live);
            share.peak_licensed = share.peak_licensed.max(next.licensed);
            shares.push(share);
            return shares;
        }
        shares.push(share);
        start = end;
        from = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: u32, hour: u32, minute: u32) -> Timestamp {
        Utc.with_ymd_and_hms(2027, 3, day, hour, minute, 0).unwrap()
    }

    fn sample(at: Timestamp, managed_live: u64, licensed: u64) -> UsageSample {
        UsageSample {
            at,
            managed_live,
            licensed,
            excess: managed_live - licensed,
        }
    }

    /// Folds a series of samples into buckets, as the store does.
    fn fold(samples: &[UsageSample], granularity: Granularity) -> Vec<UsageBucket> {
        let mut buckets: Vec<UsageBucket> = Vec::new();
        for pair in samples.windows(2) {
            for share in accrue(&pair[0], &pair[1], granularity) {
                match buckets.iter_mut().find(|b| b.start == share.start) {
                    Some(bucket) => bucket.merge(&share),
                    None => buckets.push(share),
                }
            }
        }
        buckets
    }

    #[test]
    fn hours_keep_their_peaks_and_excess_minutes() {
        let buckets = fold(
            &[
                sample(at(1, 10, 0), 5, 3),
                sample(at(1, 10, 30), 8, 3),
                sample(at(1, 11, 15), 2, 2),
                sample(at(1, 13, 0), 2, 2),
            ],
            Granularity::Hour,
        );
        assert_eq!(buckets.len(), 4);
        assert_eq!(
            buckets[0],
            UsageBucket {
                start: at(1, 10, 0),
                peak_managed: 8,
                peak_licensed: 3,
                // 2 routers for 30 minutes, then 5 for 30 minutes.
                excess_router_millis: (2 * 30 + 5 * 30) * 60_000,
            }
        );
        // The level carried into 11:00 counts as that hour's peak.
        assert_eq!(buckets[1].start, at(1, 11, 0));
        assert_eq!((buckets[1].peak_managed, buckets[1].peak_licensed), (8, 3));
        assert_eq!(buckets[1].excess_router_minutes(), 75.0);
        assert_eq!(buckets[2].start, at(1, 12, 0));
        assert_eq!(
            (buckets[2].peak_managed, buckets[2].excess_router_millis),
            (2, 0)
        );
        assert_eq!(buckets[3].start, at(1, 13, 0));
    }

    #[test]
    fn days_are_utc_days() {
        let buckets = fold(
            &[sample(at(1, 23, 0), 4, 1), sample(at(2, 1, 0), 0, 0)],
            Granularity::Day,
        );
        assert_eq!(buckets.len(), 2);
        assert_eq!(buckets[0].start, at(1, 0, 0));
        assert_eq!(buckets[0].excess_router_minutes(), 3.0 * 60.0);
        assert_eq!(buckets[1].excess_router_minutes(), 3.0 * 60.0);
        assert_eq!(buckets[1].peak_managed, 4);
    }

    #[test]
    fn a_late_sample_counts_from_the_previous_instant() {
        let shares = accrue(
            &sample(at(1, 10, 30), 3, 1),
            &sample(at(1, 10, 20), 6, 1),
            Granularity::Hour,
        );
        assert_eq!(shares.len(), 1);
        assert_eq!(shares[0].peak_managed, 6);
        assert_eq!(shares[0].excess_router_millis, 0);
    }
}
