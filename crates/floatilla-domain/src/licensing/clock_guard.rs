//! Whether the wall clock can be trusted for license decisions.
//!
//! Licenses start and expire on the wall clock, and a wall clock can be wrong: set back to keep
//! licenses alive, or jumped forward so that they expire early. The server trusts two other
//! clocks instead: the newest signed time it has seen (license issue times), and its own
//! monotonic clock while running. A [`ClockGuard`] holds every wall-clock reading against them:
//!
//! - [`ClockDoubt::Jumped`]: the wall clock is more than [`MAX_JUMP`] (either way) away from the
//!   last trusted reading carried forward by the monotonic clock;
//! - [`ClockDoubt::Behind`]: the wall clock is more than [`MAX_BEHIND`] behind the trusted time,
//!   the later of the newest signed time and the last trusted reading carried forward by the
//!   monotonic clock.
//!
//! Every other reading is trusted and becomes the new reference, with one exception that keeps
//! a clock from being wound back a little at a time: a reading behind the monotonic clock moves
//! the reference back no faster than clocks drift (one part in [`SLOW_DRIFT_DIVISOR`]).
//!
//! While the wall clock is in doubt the reference stays at the last trusted reading, and the
//! server holds capacity where it was: no license expires or starts, whatever the wall clock
//! says. Routers are never cut off because of a clock. The doubt ends by itself as soon as a
//! reading passes both checks again (the clock was set right), or when an admin acknowledges the
//! wall clock as it is.

use std::time::Duration as MonotonicDuration;

use chrono::{DateTime, Duration, Utc};

use crate::Timestamp;

/// How far the wall clock may be behind the trusted time before it is in doubt.
pub const MAX_BEHIND: Duration = Duration::minutes(5);

/// How far the wall clock may move away from the monotonic clock, either way, between two
/// readings before it has jumped.
pub const MAX_JUMP: Duration = Duration::hours(1);

/// A trusted wall clock running slow against the monotonic clock pulls the reference back by
/// at most one part in this many of the monotonic time passed (1000 ppm, twice the most that
/// NTP slews): real drift is absorbed, a clock wound back a few minutes at a time is not.
const SLOW_DRIFT_DIVISOR: u32 = 1_000;

/// Watches the wall clock against the newest signed time and the monotonic clock. Pure: the
/// server feeds it readings of [`crate::Clock::now`] and [`crate::Clock::monotonic`].
#[derive(Debug, Clone)]
pub struct ClockGuard {
    /// The last trusted reading; `None` while none has been trusted yet, because the wall clock
    /// has been behind the newest signed time since the guard was made.
    reference: Option<Reading>,
    newest_signed: Option<Timestamp>,
    in_doubt: bool,
}

/// Why the wall clock is in doubt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockDoubt {
    /// The wall clock is `by` (more than [`MAX_BEHIND`]) behind the trusted time.
    Behind { by: Duration },
    /// The wall clock is `by` (positive: ahead, negative: behind; more than [`MAX_JUMP`] either
    /// way) away from the last trusted reading carried forward by the monotonic clock.
    Jumped { by: Duration },
}

/// A doubt episode starting or ending: the server raises one alarm event for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockChange {
    /// The wall clock has just come into doubt, for this reason.
    Doubt(ClockDoubt),
    /// The wall clock is trusted again: it agrees with the trusted clocks, or was acknowledged.
    Trusted,
}

/// What one reading of the wall clock may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockVerdict {
    /// Whether license decisions may follow the wall clock now. While `false`, the server applies
    /// no capacity change (no expiry, no start): capacity holds where it was.
    pub trusted: bool,
    /// Set only on the reading that starts or ends a doubt episode.
    pub change: Option<ClockChange>,
}

#[derive(Debug, Clone, Copy)]
struct Reading {
    wall: Timestamp,
    monotonic: MonotonicDuration,
}

impl Reading {
    /// The monotonic time passed since this reading (none if `monotonic` is earlier).
    fn elapsed(&self, monotonic: MonotonicDuration) -> MonotonicDuration {
        monotonic.saturating_sub(self.monotonic)
    }

    /// What the wall clock should read at `monotonic`, going by this reading.
    fn carried_to(&self, monotonic: MonotonicDuration) -> Timestamp {
        Duration::from_std(self.elapsed(monotonic))
            .ok()
            .and_then(|elapsed| self.wall.checked_add_signed(elapsed))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

impl ClockGuard {
    /// A guard starting from a reading of the wall and the monotonic clock, knowing the newest
    /// signed time so far. The first [`ClockGuard::observe`] reports a doubt if the wall clock is
    /// already behind the signed time.
    pub fn new(
        wall: Timestamp,
        monotonic: MonotonicDuration,
        newest_signed: Option<Timestamp>,
    ) -> Self {
        let behind_signed = newest_signed.is_some_and(|signed| signed - wall > MAX_BEHIND);
        Self {
            reference: (!behind_signed).then_some(Reading { wall, monotonic }),
            newest_signed,
            in_doubt: false,
        }
    }

    /// A signed time was seen (an installed license's issue time); the newest one counts.
    pub fn saw_signed_time(&mut self, at: Timestamp) {
        self.newest_signed = self.newest_signed.max(Some(at));
    }

    /// Judges a reading of the wall and the monotonic clock, taken together.
    pub fn observe(&mut self, wall: Timestamp, monotonic: MonotonicDuration) -> ClockVerdict {
        match self.doubt(wall, monotonic) {
            None => {
                self.trust(wall, monotonic);
                ClockVerdict {
                    trusted: true,
                    change: std::mem::take(&mut self.in_doubt).then_some(ClockChange::Trusted),
                }
            }
            Some(doubt) => ClockVerdict {
                trusted: false,
                change: (!std::mem::replace(&mut self.in_doubt, true))
                    .then_some(ClockChange::Doubt(doubt)),
            },
        }
    }

    /// An admin accepts the wall clock as it reads now: it is trusted from here on, carried
    /// forward by the monotonic clock, and signed times later than it are forgotten.
    pub fn acknowledge(&mut self, wall: Timestamp, monotonic: MonotonicDuration) -> ClockVerdict {
        self.reference = Some(Reading { wall, monotonic });
        self.newest_signed = self.newest_signed.map(|signed| signed.min(wall));
        ClockVerdict {
            trusted: true,
            change: std::mem::take(&mut self.in_doubt).then_some(ClockChange::Trusted),
        }
    }

    fn doubt(&self, wall: Timestamp, monotonic: MonotonicDuration) -> Option<ClockDoubt> {
        let carried = self
            .reference
            .map(|reference| reference.carried_to(monotonic));
        if let Some(carried) = carried {
            let by = wall - carried;
            if by.abs() > MAX_JUMP {
                return Some(ClockDoubt::Jumped { by });
            }
        }
        let trusted = carried.max(self.newest_signed)?;
        let by = trusted - wall;
        (by > MAX_BEHIND).then_some(ClockDoubt::Behind { by })
    }

    /// Makes a trusted reading the reference. Behind the monotonic clock, the reference follows
    /// it back only as far as drift explains.
    fn trust(&mut self, wall: Timestamp, monotonic: MonotonicDuration) {
        let wall = match self.reference {
            Some(reference) => {
                let drift = Duration::from_std(reference.elapsed(monotonic) / SLOW_DRIFT_DIVISOR)
                    .unwrap_or(Duration::MAX);
                let floor = reference.carried_to(monotonic).checked_sub_signed(drift);
                floor.map_or(wall, |floor| wall.max(floor))
            }
            None => wall,
        };
        self.reference = Some(Reading { wall, monotonic });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Clock, ManualClock};
    use chrono::TimeZone;

    fn start() -> Timestamp {
        Utc.with_ymd_and_hms(2030, 6, 1, 12, 0, 0).unwrap()
    }

    /// A guard watching `clock`, which starts at [`start`].
    fn watching(newest_signed: Option<Timestamp>) -> (ManualClock, ClockGuard) {
        let clock = ManualClock::new(start());
        let guard = ClockGuard::new(clock.now(), clock.monotonic(), newest_signed);
        (clock, guard)
    }

    fn observe(guard: &mut ClockGuard, clock: &ManualClock) -> ClockVerdict {
        guard.observe(clock.now(), clock.monotonic())
    }

    const TRUSTED: ClockVerdict = ClockVerdict {
        trusted: true,
        change: None,
    };
    const STILL_IN_DOUBT: ClockVerdict = ClockVerdict {
        trusted: false,
        change: None,
    };
    const TRUSTED_AGAIN: ClockVerdict = ClockVerdict {
        trusted: true,
        change: Some(ClockChange::Trusted),
    };

    fn doubt(doubt: ClockDoubt) -> ClockVerdict {
        ClockVerdict {
            trusted: false,
            change: Some(ClockChange::Doubt(doubt)),
        }
    }

    fn behind(by: Duration) -> ClockVerdict {
        doubt(ClockDoubt::Behind { by })
    }

    fn jumped(by: Duration) -> ClockVerdict {
        doubt(ClockDoubt::Jumped { by })
    }

    #[test]
    fn normal_running_with_small_drift_and_ntp_steps_stays_trusted() {
        let (clock, mut guard) = watching(Some(start() - Duration::days(30)));
        for minute in 0..(3 * 24 * 60) {
            clock.advance(Duration::minutes(1));
            // The wall clock wobbles by a few milliseconds against the monotonic clock, and
            // NTP steps it by a fraction of a second now and then.
            clock.jump(Duration::milliseconds(if minute % 2 == 0 { 3 } else { -4 }));
            if minute % 600 == 0 {
                clock.jump(Duration::milliseconds(-400));
            }
            if minute % 900 == 0 {
                clock.jump(Duration::milliseconds(700));
            }
            assert_eq!(observe(&mut guard, &clock), TRUSTED, "minute {minute}");
        }
    }

    #[test]
    fn a_wall_clock_running_slow_for_months_stays_trusted() {
        let (clock, mut guard) = watching(None);
        // 200 ppm slow: over 90 days it falls 26 minutes behind the monotonic clock.
        for _ in 0..(90 * 24) {
            clock.advance(Duration::hours(1));
            clock.jump(Duration::microseconds(-720_000));
            assert_eq!(observe(&mut guard, &clock), TRUSTED);
        }
        let fallen_behind = start() + Duration::days(90) - clock.now();
        assert_eq!(fallen_behind, Duration::milliseconds(1_555_200));
    }

    #[test]
    fn a_clock_set_back_below_the_newest_signed_time_is_behind() {
        let signed = start();
        // A restart with the clock set back: only the signed time says so.
        let clock = ManualClock::new(signed - Duration::minutes(10));
        let mut guard = ClockGuard::new(clock.now(), clock.monotonic(), Some(signed));
        assert_eq!(observe(&mut guard, &clock), behind(Duration::minutes(10)));
        clock.advance(Duration::minutes(1));
        assert_eq!(observe(&mut guard, &clock), STILL_IN_DOUBT);
        // Time catching up with the signed time ends the doubt: nothing to trust the clock less.
        clock.advance(Duration::minutes(4));
        assert_eq!(observe(&mut guard, &clock), TRUSTED_AGAIN);
        clock.advance(Duration::hours(1));
        assert_eq!(observe(&mut guard, &clock), TRUSTED);
    }

    #[test]
    fn a_newer_signed_time_puts_a_slow_clock_in_doubt_until_it_is_set_right() {
        let (clock, mut guard) = watching(Some(start() - Duration::days(1)));
        clock.advance(Duration::minutes(1));
        assert_eq!(observe(&mut guard, &clock), TRUSTED);
        // A license issued 10 minutes after this clock's "now": the clock is 10 minutes slow.
        guard.saw_signed_time(clock.now() + Duration::minutes(10));
        guard.saw_signed_time(clock.now() - Duration::days(2));
        assert_eq!(observe(&mut guard, &clock), behind(Duration::minutes(10)));
        clock.jump(Duration::minutes(10));
        assert_eq!(observe(&mut guard, &clock), TRUSTED_AGAIN);
    }

    #[test]
    fn a_clock_set_back_while_running_is_behind() {
        let (clock, mut guard) = watching(None);
        clock.advance(Duration::hours(3));
        assert_eq!(observe(&mut guard, &clock), TRUSTED);
        clock.jump(Duration::minutes(-10));
        assert_eq!(observe(&mut guard, &clock), behind(Duration::minutes(10)));
        clock.advance(Duration::hours(1));
        assert_eq!(observe(&mut guard, &clock), STILL_IN_DOUBT);
        clock.jump(Duration::minutes(10));
        assert_eq!(observe(&mut guard, &clock), TRUSTED_AGAIN);
    }

    #[test]
    fn a_clock_wound_back_a_little_at_a_time_is_behind() {
        let (clock, mut guard) = watching(None);
        clock.advance(Duration::minutes(1));
        clock.jump(Duration::minutes(-4));
        assert_eq!(observe(&mut guard, &clock), TRUSTED);
        clock.advance(Duration::minutes(1));
        clock.jump(Duration::minutes(-4));
        // The drift allowance of the first minute forgives 60 ms of the 8 minutes.
        assert_eq!(
            observe(&mut guard, &clock),
            behind(Duration::minutes(8) - Duration::milliseconds(60))
        );
    }

    #[test]
    fn a_jump_forward_holds_capacity_instead_of_expiring_licenses() {
        let (clock, mut guard) = watching(None);
        clock.advance(Duration::minutes(30));
        assert_eq!(observe(&mut guard, &clock), TRUSTED);
        clock.jump(Duration::hours(2));
        // Not trusted: the server neither expires nor starts licenses on this reading.
        assert_eq!(observe(&mut guard, &clock), jumped(Duration::hours(2)));
        // One alarm per episode, however long it lasts and however far the clock moves.
        for _ in 0..10 {
            clock.advance(Duration::minutes(10));
            assert_eq!(observe(&mut guard, &clock), STILL_IN_DOUBT);
        }
        clock.jump(Duration::hours(5));
        assert_eq!(observe(&mut guard, &clock), STILL_IN_DOUBT);
    }

    #[test]
    fn a_jump_back_is_a_jump() {
        let (clock, mut guard) = watching(None);
        clock.advance(Duration::minutes(30));
        assert_eq!(observe(&mut guard, &clock), TRUSTED);
        clock.jump(Duration::hours(-2));
        assert_eq!(observe(&mut guard, &clock), jumped(Duration::hours(-2)));
        clock.advance(Duration::hours(3));
        assert_eq!(observe(&mut guard, &clock), STILL_IN_DOUBT);
    }

    #[test]
    fn setting_the_clock_right_after_a_jump_ends_the_doubt_without_acknowledgement() {
        let (clock, mut guard) = watching(None);
        clock.advance(Duration::minutes(30));
        assert_eq!(observe(&mut guard, &clock), TRUSTED);
        clock.jump(Duration::hours(2));
        assert_eq!(observe(&mut guard, &clock), jumped(Duration::hours(2)));
        clock.advance(Duration::hours(1));
        assert_eq!(observe(&mut guard, &clock), STILL_IN_DOUBT);

        // Set right: start + 90 minutes of running.
        clock.set(start() + Duration::minutes(90));
        assert_eq!(observe(&mut guard, &clock), TRUSTED_AGAIN);
        clock.advance(Duration::hours(1));
        assert_eq!(observe(&mut guard, &clock), TRUSTED);

        // A later episode raises its own alarm.
        clock.jump(Duration::hours(-3));
        assert_eq!(observe(&mut guard, &clock), jumped(Duration::hours(-3)));
    }

    #[test]
    fn acknowledging_trusts_the_wall_clock_from_then_on() {
        let (clock, mut guard) = watching(None);
        clock.advance(Duration::minutes(30));
        assert_eq!(observe(&mut guard, &clock), TRUSTED);
        clock.jump(Duration::hours(2));
        assert_eq!(observe(&mut guard, &clock), jumped(Duration::hours(2)));

        assert_eq!(
            guard.acknowledge(clock.now(), clock.monotonic()),
            TRUSTED_AGAIN
        );
        assert_eq!(observe(&mut guard, &clock), TRUSTED);
        for _ in 0..48 {
            clock.advance(Duration::hours(1));
            assert_eq!(observe(&mut guard, &clock), TRUSTED);
        }
        // Setting the clock back to where it was before the jump is now a jump itself.
        clock.jump(Duration::hours(-2));
        assert_eq!(observe(&mut guard, &clock), jumped(Duration::hours(-2)));
        // Acknowledging a trusted clock changes nothing visible.
        let mut trusted = ClockGuard::new(start(), MonotonicDuration::ZERO, None);
        assert_eq!(
            trusted.acknowledge(start(), MonotonicDuration::ZERO),
            TRUSTED
        );
    }

    #[test]
    fn acknowledging_a_clock_behind_the_signed_time_forgets_the_later_signed_time() {
        let signed = start() + Duration::hours(3);
        let (clock, mut guard) = watching(Some(signed));
        assert_eq!(observe(&mut guard, &clock), behind(Duration::hours(3)));
        assert_eq!(
            guard.acknowledge(clock.now(), clock.monotonic()),
            TRUSTED_AGAIN
        );
        clock.advance(Duration::hours(1));
        assert_eq!(observe(&mut guard, &clock), TRUSTED);
        // Set back past the acknowledged time, it is behind the monotonic clock.
        clock.jump(Duration::minutes(-6));
        assert_eq!(observe(&mut guard, &clock), behind(Duration::minutes(6)));
    }

    #[test]
    fn fifty_nine_minutes_is_not_a_jump() {
        let (clock, mut guard) = watching(None);
        clock.advance(Duration::minutes(30));
        clock.jump(Duration::minutes(59));
        assert_eq!(observe(&mut guard, &clock), TRUSTED);
        // Forward is accepted as the new reference; going back to where it was is not.
        clock.jump(Duration::minutes(-59));
        assert_eq!(observe(&mut guard, &clock), behind(Duration::minutes(59)));
    }

    #[test]
    fn a_jump_is_more_than_an_hour_either_way() {
        let one = Duration::milliseconds(1);
        for (by, verdict) in [
            (MAX_JUMP, TRUSTED),
            (MAX_JUMP + one, jumped(MAX_JUMP + one)),
            (-MAX_JUMP, behind(MAX_JUMP)),
            (-MAX_JUMP - one, jumped(-MAX_JUMP - one)),
        ] {
            let (clock, mut guard) = watching(None);
            clock.advance(Duration::minutes(1));
            clock.jump(by);
            assert_eq!(observe(&mut guard, &clock), verdict, "jump by {by}");
        }
    }

    #[test]
    fn behind_is_more_than_five_minutes_behind() {
        let one = Duration::milliseconds(1);
        for (by, verdict) in [
            (MAX_BEHIND, TRUSTED),
            (MAX_BEHIND + one, behind(MAX_BEHIND + one)),
        ] {
            // Behind the monotonic clock (no time passed, so no drift allowance)...
            let (clock, mut guard) = watching(None);
            clock.jump(-by);
            assert_eq!(observe(&mut guard, &clock), verdict, "set back by {by}");
            // ... and behind the signed time.
            let (clock, mut guard) = watching(Some(start() + by));
            assert_eq!(observe(&mut guard, &clock), verdict, "signed {by} ahead");
        }
    }
}
