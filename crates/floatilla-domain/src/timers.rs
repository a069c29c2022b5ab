//! Control-channel timers. Every value carries its unit in its name and has a default.

use serde::{Deserialize, Serialize};

use crate::GroupId;

/// The heartbeat and reconnect timing a server hands a router in WELCOME.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timers {
    /// How often the server pings a connected router.
    pub ping_interval_secs: u32,
    /// How long the server waits for the pong before it drops the connection.
    pub pong_timeout_secs: u32,
    /// The longest a router should wait between reconnect attempts (before jitter).
    pub reconnect_backoff_cap_secs: u32,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            ping_interval_secs: 120,
            pong_timeout_secs: 30,
            reconnect_backoff_cap_secs: 60,
        }
    }
}

/// A group's own heartbeat timing, replacing the server's for its routers: a long interval for
/// routers on metered links, for example.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerProfile {
    pub ping_interval_secs: u32,
    pub pong_timeout_secs: u32,
}

/// A change of heartbeat timing for routers already connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "applies_to", rename_all = "snake_case")]
pub enum TimerChange {
    /// The group's profile changed: for its routers.
    Group {
        group: GroupId,
        profile: Option<TimerProfile>,
    },
    /// The router moved to another group (or out of any), which has this profile.
    Router {
        group: Option<GroupId>,
        profile: Option<TimerProfile>,
    },
}

impl TimerProfile {
    /// The longest ping interval a profile may set: a day.
    pub const MAX_PING_INTERVAL_SECS: u32 = 86_400;

    pub fn validate(&self) -> Result<(), String> {
        if self.ping_interval_secs > Self::MAX_PING_INTERVAL_SECS {
            return Err(format!(
                "ping interval must be at most {} seconds",
                Self::MAX_PING_INTERVAL_SECS
            ));
        }
        Timers::default().with_profile(Some(*self)).validate()
    }
}

impl Timers {
    /// These timers with a group's profile, if it has one, in place of the heartbeat timing.
    pub fn with_profile(self, profile: Option<TimerProfile>) -> Timers {
        match profile {
            Some(profile) => Timers {
                ping_interval_secs: profile.ping_interval_secs,
                pong_timeout_secs: profile.pong_timeout_secs,
                ..self
            },
            None => self,
        }
    }

    pub fn ping_interval(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.ping_interval_secs.into())
    }

    pub fn pong_timeout(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.pong_timeout_secs.into())
    }

    /// Rejects settings that would make a connection flap or never be checked.
    pub fn validate(&self) -> Result<(), String> {
        if self.ping_interval_secs == 0 {
            return Err("ping interval must be at least 1 second".into());
        }
        if self.pong_timeout_secs == 0 || self.pong_timeout_secs >= self.ping_interval_secs {
            return Err(
                "pong timeout must be at least 1 second and shorter than the ping interval".into(),
            );
        }
        if self.reconnect_backoff_cap_secs == 0 {
            return Err("reconnect backoff cap must be at least 1 second".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let timers = Timers::default();
        assert_eq!(timers.ping_interval_secs, 120);
        assert_eq!(timers.pong_timeout_secs, 30);
        assert_eq!(timers.reconnect_backoff_cap_secs, 60);
        assert!(timers.validate().is_ok());
    }

    #[test]
    fn a_pong_timeout_as_long_as_the_interval_is_refused() {
        let timers = Timers {
            ping_interval_secs: 30,
            pong_timeout_secs: 30,
            reconnect_backoff_cap_secs: 60,
        };
        assert!(timers.validate().is_err());
    }

    #[test]
    fn a_profile_replaces_the_heartbeat_but_not_the_backoff() {
        let profile = TimerProfile {
            ping_interval_secs: 1800,
            pong_timeout_secs: 60,
        };
        assert!(profile.validate().is_ok());
        let timers = Timers::default().with_profile(Some(profile));
        assert_eq!(timers.ping_interval_secs, 1800);
        assert_eq!(timers.pong_timeout_secs, 60);
        assert_eq!(timers.reconnect_backoff_cap_secs, 60);
        assert_eq!(Timers::default().with_profile(None), Timers::default());
    }

    #[test]
    fn a_profile_must_be_a_sensible_heartbeat() {
        for (ping, pong) in [(0, 0), (60, 60), (86_401, 60)] {
            let profile = TimerProfile {
                ping_interval_secs: ping,
                pong_timeout_secs: pong,
            };
            assert!(profile.validate().is_err(), "{ping}/{pong}");
        }
    }
}
