//! The clock every expiry, timer and timestamp is measured on. Production uses the system clock;
//! tests drive a [`ManualClock`] so that timeouts and expiry are exercised exactly, without sleeping.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// An instant in UTC, to the clock's precision.
pub type Timestamp = DateTime<Utc>;

/// A future that completes when the clock reaches a deadline.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A source of "now" that can also wait for a moment to arrive.
pub trait Clock: Send + Sync + 'static {
    /// The wall clock: what the licenses' validity is measured on. It can be set wrong.
    fn now(&self) -> Timestamp;

    /// Time elapsed on a clock that never jumps, since an arbitrary start (at the latest, this
    /// process's first reading). Only differences between two readings mean anything.
    fn monotonic(&self) -> Duration;

    /// Completes once `now() >= deadline`.
    fn sleep_until(&self, deadline: Timestamp) -> Sleep;
}

/// The operating system's clock, with tokio timers for waiting.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Utc::now()
    }

    fn monotonic(&self) -> Duration {
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed()
    }

    fn sleep_until(&self, deadline: Timestamp) -> Sleep {
        let wait = (deadline - Utc::now()).to_std().unwrap_or_default();
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock that only moves when told to. Every pending [`Clock::sleep_until`] whose deadline is
/// reached on the wall clock (by [`ManualClock::advance`], [`ManualClock::jump`] or
/// [`ManualClock::set`]) completes.
///
/// Its monotonic clock starts at zero and moves only with [`ManualClock::advance`]: time passing.
/// [`ManualClock::jump`] and [`ManualClock::set`] move only the wall clock, as when a clock is set.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<watch::Sender<Reading>>,
}

#[derive(Debug, Clone, Copy)]
struct Reading {
    wall: Timestamp,
    monotonic: Duration,
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        Self {
            now: Arc::new(watch::Sender::new(Reading {
                wall: start,
                monotonic: Duration::ZERO,
            })),
        }
    }

    /// Time passes: the wall and the monotonic clock move on together. (A negative `by` moves
    /// only the wall clock, like [`ManualClock::jump`]: monotonic time never runs backwards.)
    pub fn advance(&self, by: chrono::Duration) {
        self.now.send_modify(|now| {
            now.wall += by;
            now.monotonic += by.to_std().unwrap_or_default();
        });
    }

    /// The wall clock is set `by` forward (or back, when negative) while no time passes.
    pub fn jump(&self, by: chrono::Duration) {
        self.now.send_modify(|now| now.wall += by);
    }

    /// The wall clock is set to `to` while no time passes.
    pub fn set(&self, to: Timestamp) {
        self.now.send_modify(|now| now.wall = to);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        self.now.borrow().wall
    }

    fn monotonic(&self) -> Duration {
        self.now.borrow().monotonic
    }

    fn sleep_until(&self, deadline: Timestamp) -> Sleep {
        let mut now = self.now.subscribe();
        Box::pin(async move {
            // `wait_for` only fails when the sender is gone: then time never moves again.
            if now.wait_for(|now| now.wall >= deadline).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[tokio::test]
    async fn manual_sleep_completes_exactly_at_the_deadline() {
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap());
        let deadline = clock.now() + chrono::Duration::seconds(30);
        let mut sleep = clock.sleep_until(deadline);

        clock.advance(chrono::Duration::seconds(29));
        assert!(futures_poll_once(&mut sleep).is_none());
        clock.advance(chrono::Duration::seconds(1));
        assert!(futures_poll_once(&mut sleep).is_some());
    }

    #[test]
    fn manual_monotonic_time_moves_only_when_time_passes() {
        let start = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
        let clock = ManualClock::new(start);
        assert_eq!(clock.monotonic(), Duration::ZERO);

        clock.advance(chrono::Duration::minutes(5));
        assert_eq!(clock.now(), start + chrono::Duration::minutes(5));
        assert_eq!(clock.monotonic(), Duration::from_secs(300));

        clock.jump(chrono::Duration::hours(-2));
        assert_eq!(clock.now(), start - chrono::Duration::minutes(115));
        clock.jump(chrono::Duration::hours(3));
        assert_eq!(clock.now(), start + chrono::Duration::minutes(65));
        clock.set(start);
        assert_eq!(clock.now(), start);
        assert_eq!(clock.monotonic(), Duration::from_secs(300));

        clock.advance(chrono::Duration::seconds(-10));
        assert_eq!(clock.now(), start - chrono::Duration::seconds(10));
        assert_eq!(clock.monotonic(), Duration::from_secs(300));
    }

    #[tokio::test]
    async fn a_jump_reaches_a_deadline_on_the_wall_clock() {
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap());
        let mut sleep = clock.sleep_until(clock.now() + chrono::Duration::hours(1));
        clock.jump(chrono::Duration::hours(1));
        assert!(futures_poll_once(&mut sleep).is_some());
    }

    #[test]
    fn system_monotonic_time_never_runs_backwards() {
        let first = SystemClock.monotonic();
        assert!(SystemClock.monotonic() >= first);
    }

    fn futures_poll_once(sleep: &mut Sleep) -> Option<()> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match sleep.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(()) => Some(()),
            std::task::Poll::Pending => None,
        }
    }
}
