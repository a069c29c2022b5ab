//! The router's sense of time. Routers without a battery-backed clock boot in 1970; until a server
//! tells them the time (WELCOME), certificates are checked as of the agent's build date at the
//! earliest, and afterwards as of the server's time.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};
use rustls::time_provider::TimeProvider;
use rustls_pki_types::UnixTime;

/// When this agent was built, in seconds since the epoch.
pub const BUILT_AT_UNIX_SECS: i64 = match i64::from_str_radix(env!("FLOATILLA_AGENT_BUILT_AT"), 10)
{
    Ok(secs) => secs,
    Err(_) => panic!("FLOATILLA_AGENT_BUILT_AT must be seconds since the epoch"),
};

const UNKNOWN: i64 = i64::MIN;

/// The local clock (optionally offset, to stand in for a router whose clock is wrong) and what the
/// server last said about it.
#[derive(Debug)]
pub struct RouterClock {
    local_skew: TimeDelta,
    /// Server time minus local time in milliseconds, once a WELCOME said it.
    server_offset_millis: AtomicI64,
}

impl Default for RouterClock {
    fn default() -> Self {
        Self::with_local_skew(TimeDelta::zero())
    }
}

impl RouterClock {
    /// A clock that reads `skew` away from the system clock: for routers whose clock is wrong.
    pub fn with_local_skew(local_skew: TimeDelta) -> Self {
        Self {
            local_skew,
            server_offset_millis: AtomicI64::new(UNKNOWN),
        }
    }

    /// What the router's own clock says.
    pub fn local_now(&self) -> DateTime<Utc> {
        Utc::now() + self.local_skew
    }

    /// Remembers the server's time from a WELCOME that arrived just now.
    pub fn learn_server_time(&self, server_time: DateTime<Utc>) {
        let offset = (server_time - self.local_now()).num_milliseconds();
        self.server_offset_millis.store(offset, Ordering::Relaxed);
    }

    /// The best estimate of the true time: the server's, once known; before that the local clock,
    /// but never earlier than the build date.
    pub fn trusted_now(&self) -> DateTime<Utc> {
        let local = self.local_now();
        match self.server_offset_millis.load(Ordering::Relaxed) {
            UNKNOWN => {
                let built = DateTime::from_timestamp(BUILT_AT_UNIX_SECS, 0).unwrap_or_default();
                local.max(built)
            }
            offset => local + TimeDelta::milliseconds(offset),
        }
    }
}

impl TimeProvider for RouterClock {
    fn current_time(&self) -> Option<UnixTime> {
        let secs = u64::try_from(self.trusted_now().timestamp()).unwrap_or(0);
        Some(UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            secs,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_in_1970_verifies_as_of_the_build_date_until_welcome() {
        let skew = DateTime::from_timestamp(0, 0).unwrap() - Utc::now();
        let clock = RouterClock::with_local_skew(skew);
        assert!(clock.local_now().timestamp() < 60);
        assert!(clock.trusted_now().timestamp() >= BUILT_AT_UNIX_SECS);

        let server_time = Utc::now();
        clock.learn_server_time(server_time);
        let trusted = clock.trusted_now();
        assert!(
            (trusted - server_time).num_seconds().abs() <= 1,
            "{trusted} vs {server_time}"
        );
    }

    #[test]
    fn a_correct_clock_is_used_as_it_is() {
        let clock = RouterClock::default();
        assert!((clock.trusted_now() - Utc::now()).num_seconds().abs() <= 1);
    }
}
