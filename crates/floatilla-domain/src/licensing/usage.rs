//! License usage over time, for true-ups and audits: per hour or per day, the peak of concurrent
//! managed routers, the peak of licensed ones, and how many router-minutes were spent in excess.

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
    fn opening(start: Timestamp, level: &UsageSample) -> Self {
        Self {
            start,
            peak_managed: level.managed_live,
            peak_licensed: level.licensed,
            excess_router_millis: 0,
        }
    }

    pub fn excess_router_minutes(&self) -> f64 {
        self.excess_router_millis as f64 / 60_000.0
    }
}

/// Folds samples of the pool's counts into buckets.
#[derive(Debug, Clone)]
pub struct UsageMeter {
    granularity: Granularity,
    last: Option<UsageSample>,
    open: Option<UsageBucket>,
}

impl UsageMeter {
    pub fn new(granularity: Granularity) -> Self {
        Self {
            granularity,
            last: None,
            open: None,
        }
    }

    /// Takes the counts from `sample.at` on, and answers the buckets that ended before it. A
    /// sample older than the previous one counts from the previous one's instant.
    pub fn record(&mut self, sample: UsageSample) -> Vec<UsageBucket> {
        let Some(last) = self.last else {
            self.open = Some(UsageBucket::opening(
                self.granularity.bucket_start(sample.at),
                &sample,
            ));
            self.last = Some(sample);
            return Vec::new();
        };
        let sample = UsageSample {
            at: sample.at.max(last.at),
            ..sample
        };
        let closed = self.advance(sample.at);
        if let Some(open) = &mut self.open {
            open.peak_managed = open.peak_managed.max(sample.managed_live);
            open.peak_licensed = open.peak_licensed.max(sample.licensed);
        }
        self.last = Some(sample);
        closed
    }

    /// The buckets that ended before `now`, the counts unchanged since the last sample.
    pub fn close_until(&mut self, now: Timestamp) -> Vec<UsageBucket> {
        match self.last {
            Some(last) if now > last.at => self.advance(now),
            _ => Vec::new(),
        }
    }

    /// The bucket in progress, as far as it goes.
    pub fn current(&self) -> Option<UsageBucket> {
        self.open
    }

    /// Counts the last sample's excess up to `until`, closing buckets on the way.
    fn advance(&mut self, until: Timestamp) -> Vec<UsageBucket> {
        let (Some(mut last), Some(mut open)) = (self.last, self.open) else {
            return Vec::new();
        };
        let mut closed = Vec::new();
        loop {
            let end = open.start + self.granularity.length();
            let stop = end.min(until);
            let span = (stop - last.at).num_milliseconds().max(0) as u64;
            open.excess_router_millis += last.excess * span;
            last.at = stop;
            if end > until {
                break;
            }
            closed.push(open);
            open = UsageBucket::opening(end, &last);
        }
        self.open = Some(open);
        self.last = Some(last);
        closed
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

    #[test]
    fn hours_keep_their_peaks_and_excess_minutes() {
        let mut meter = UsageMeter::new(Granularity::Hour);
        assert!(meter.record(sample(at(1, 10, 0), 5, 3)).is_empty());
        assert!(meter.record(sample(at(1, 10, 30), 8, 3)).is_empty());
        let closed = meter.record(sample(at(1, 11, 15), 2, 2));
        assert_eq!(
            closed,
            vec![UsageBucket {
                start: at(1, 10, 0),
                peak_managed: 8,
                peak_licensed: 3,
                // 2 routers for 30 minutes, then 5 for 30 minutes.
                excess_router_millis: (2 * 30 + 5 * 30) * 60_000,
            }]
        );
        let closed = meter.close_until(at(1, 13, 0));
        assert_eq!(closed.len(), 2);
        // The level carried into 11:00 counts as that hour's peak.
        assert_eq!(closed[0].start, at(1, 11, 0));
        assert_eq!((closed[0].peak_managed, closed[0].peak_licensed), (8, 3));
        assert_eq!(closed[0].excess_router_minutes(), 75.0);
        assert_eq!(closed[1].start, at(1, 12, 0));
        assert_eq!(
            (closed[1].peak_managed, closed[1].excess_router_millis),
            (2, 0)
        );
        assert_eq!(meter.current().unwrap().start, at(1, 13, 0));
    }

    #[test]
    fn days_are_utc_days() {
        let mut meter = UsageMeter::new(Granularity::Day);
        meter.record(sample(at(1, 23, 0), 4, 1));
        let closed = meter.record(sample(at(2, 1, 0), 0, 0));
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].start, at(1, 0, 0));
        assert_eq!(closed[0].excess_router_minutes(), 3.0 * 60.0);
        assert_eq!(meter.current().unwrap().excess_router_minutes(), 3.0 * 60.0);
    }

    #[test]
    fn a_late_sample_counts_from_the_previous_instant() {
        let mut meter = UsageMeter::new(Granularity::Hour);
        meter.record(sample(at(1, 10, 30), 3, 1));
        meter.record(sample(at(1, 10, 20), 6, 1));
        let bucket = meter.current().unwrap();
        assert_eq!(bucket.peak_managed, 6);
        assert_eq!(bucket.excess_router_millis, 0);
        assert!(meter.close_until(at(1, 10, 0)).is_empty());
    }
}
