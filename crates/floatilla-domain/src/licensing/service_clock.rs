//! Time that counts against a dropped router's linger: wall-clock time while the service ran.
//! An outage (no node running) or a restart does not eat into the linger, so it does not
//! reshuffle the fleet's places in line.

use chrono::Duration;

use crate::Timestamp;

/// An instant of service time: milliseconds since the epoch, less every outage before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceInstant(i64);

impl ServiceInstant {
    pub fn millis(self) -> i64 {
        self.0
    }

    pub fn from_millis(millis: i64) -> Self {
        Self(millis)
    }
}

/// Converts between wall-clock and service time, given the total outage so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServiceClock {
    downtime: Duration,
}

impl ServiceClock {
    pub fn with_downtime(downtime: Duration) -> Self {
        Self {
            downtime: downtime.max(Duration::zero()),
        }
    }

    /// All the time no node ran, so far.
    pub fn downtime(&self) -> Duration {
        self.downtime
    }

    /// Records that no node ran from `last_alive` (the last sign of life of any node) until
    /// `restarted`. A negative span (clocks of different nodes) records nothing.
    pub fn record_outage(&mut self, last_alive: Timestamp, restarted: Timestamp) {
        self.downtime += (restarted - last_alive).max(Duration::zero());
    }

    pub fn service_time(&self, at: Timestamp) -> ServiceInstant {
        ServiceInstant(at.timestamp_millis() - self.downtime.num_milliseconds())
    }

    /// When service time `instant` arrives on the wall clock, if the service keeps running.
    pub fn wall_time(&self, instant: ServiceInstant) -> Timestamp {
        chrono::DateTime::from_timestamp_millis(instant.0 + self.downtime.num_milliseconds())
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
    }

    /// The service instant at which the session of a router whose connection dropped at
    /// `dropped_at` ends, after `linger`.
    pub fn linger_deadline(&self, dropped_at: Timestamp, linger: Duration) -> ServiceInstant {
        ServiceInstant(self.service_time(dropped_at).0 + linger.num_milliseconds())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn at(hour: u32, minute: u32) -> Timestamp {
        Utc.with_ymd_and_hms(2027, 3, 1, hour, minute, 0).unwrap()
    }

    #[test]
    fn an_outage_does_not_count_against_the_linger() {
        let mut clock = ServiceClock::default();
        let deadline = clock.linger_deadline(at(10, 0), Duration::minutes(10));
        assert_eq!(clock.wall_time(deadline), at(10, 10));
        // No node ran from 10:05 to 10:35: the linger ends half an hour later.
        clock.record_outage(at(10, 5), at(10, 35));
        assert_eq!(clock.downtime(), Duration::minutes(30));
        assert_eq!(clock.wall_time(deadline), at(10, 40));
        assert!(clock.service_time(at(10, 39)) < deadline);
        assert!(clock.service_time(at(10, 40)) >= deadline);
    }

    #[test]
    fn a_backwards_outage_records_nothing() {
        let mut clock = ServiceClock::with_downtime(Duration::minutes(3));
        clock.record_outage(at(10, 5), at(10, 4));
        assert_eq!(clock.downtime(), Duration::minutes(3));
        assert_eq!(
            ServiceClock::with_downtime(Duration::minutes(-1)).downtime(),
            Duration::zero()
        );
    }

    #[test]
    fn service_time_round_trips() {
        let clock = ServiceClock::with_downtime(Duration::hours(7));
        let instant = clock.service_time(at(12, 0));
        assert_eq!(clock.wall_time(instant), at(12, 0));
        assert_eq!(ServiceInstant::from_millis(instant.millis()), instant);
    }
}
