//! Telling a cloned router image from a router that moved: a clone's credential keeps
//! superseding its own connection from another address, a moving router does so rarely.

use std::net::{IpAddr, SocketAddr};

use crate::model::ConnectionRecord;
use crate::{DisconnectReason, Timestamp};

/// A credential whose connections superseded each other from changing addresses more than this
/// many times within [`CLONE_WINDOW_MINUTES`] is in use by more than one router.
pub const CLONE_SUPERSEDES: usize = 3;
pub const CLONE_WINDOW_MINUTES: i64 = 10;

/// The host part of a recorded remote address (`ip:port`); the port changes with every
/// connection of the same router and says nothing.
fn host(addr: &str) -> Option<IpAddr> {
    addr.parse::<SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| addr.parse::<IpAddr>())
        .ok()
}

/// Whether a new connection from `newcomer` would be one supersede too many: `recent` is the
/// device's latest connections, newest first (as the history lists them). A connection counts
/// as superseded when a later one followed it while it was still open; only supersedes from a
/// different host within the window count, and only if the newcomer would supersede a live
/// connection from another host yet again.
pub fn is_clone(recent: &[ConnectionRecord], newcomer: &str, now: Timestamp) -> bool {
    let Some(live) = recent.first().filter(|r| r.disconnected_at.is_none()) else {
        return false;
    };
    if host(&live.remote_addr) == host(newcomer) {
        return false;
    }
    let window_start = now - chrono::Duration::minutes(CLONE_WINDOW_MINUTES);
    let earlier_supersedes = recent
        .windows(2)
        .filter(|pair| {
            let (successor, superseded) = (&pair[0], &pair[1]);
            let ended_by_successor = match superseded.reason {
                Some(DisconnectReason::Superseded) => true,
                // Still open: its session has not recorded its end yet.
                None => true,
                Some(_) => false,
            };
            ended_by_successor
                && successor.connected_at >= window_start
                && host(&successor.remote_addr) != host(&superseded.remote_addr)
        })
        .count();
    earlier_supersedes + 1 > CLONE_SUPERSEDES
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DeviceId, SessionId};
    use chrono::{Duration, TimeZone, Utc};

    fn at(minute: i64) -> Timestamp {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::minutes(minute)
    }

    /// Connections in the order they happened; each ends when the next starts, superseded,
    /// except the last, which is live.
    fn tug_of_war(hosts_and_minutes: &[(&str, i64)]) -> Vec<ConnectionRecord> {
        let device = DeviceId::new();
        let mut records: Vec<ConnectionRecord> = hosts_and_minutes
            .iter()
            .enumerate()
            .map(|(i, (host, minute))| ConnectionRecord {
                session_id: SessionId::new(),
                device_id: device,
                node_id: "n".into(),
                remote_addr: format!("{host}:{}", 40000 + i),
                connected_at: at(*minute),
                disconnected_at: hosts_and_minutes.get(i + 1).map(|(_, m)| at(*m)),
                reason: hosts_and_minutes
                    .get(i + 1)
                    .map(|_| DisconnectReason::Superseded),
            })
            .collect();
        records.reverse();
        records
    }

    #[test]
    fn the_fourth_alternating_supersede_within_ten_minutes_is_a_clone() {
        let three = tug_of_war(&[
            ("10.0.0.1", 0),
            ("10.0.0.2", 1),
            ("10.0.0.1", 2),
            ("10.0.0.2", 3),
        ]);
        assert!(is_clone(&three, "10.0.0.1:5000", at(4)));
        let two = tug_of_war(&[("10.0.0.1", 0), ("10.0.0.2", 1), ("10.0.0.1", 2)]);
        assert!(!is_clone(&two, "10.0.0.2:5000", at(3)));
    }

    #[test]
    fn a_router_that_moved_once_is_no_clone() {
        let moved = tug_of_war(&[("10.0.0.1", 0)]);
        assert!(!is_clone(&moved, "10.9.9.9:5000", at(1)));
    }

    #[test]
    fn reconnecting_from_the_live_connections_host_is_no_clone() {
        let three = tug_of_war(&[
            ("10.0.0.1", 0),
            ("10.0.0.2", 1),
            ("10.0.0.1", 2),
            ("10.0.0.2", 3),
        ]);
        assert!(!is_clone(&three, "10.0.0.2:6000", at(4)));
    }

    #[test]
    fn supersedes_older_than_the_window_do_not_count() {
        let slow = tug_of_war(&[
            ("10.0.0.1", 0),
            ("10.0.0.2", 5),
            ("10.0.0.1", 10),
            ("10.0.0.2", 15),
        ]);
        assert!(!is_clone(&slow, "10.0.0.1:5000", at(16)));
    }

    #[test]
    fn without_a_live_connection_nothing_is_superseded() {
        let mut ended = tug_of_war(&[
            ("10.0.0.1", 0),
            ("10.0.0.2", 1),
            ("10.0.0.1", 2),
            ("10.0.0.2", 3),
        ]);
        ended[0].disconnected_at = Some(at(3));
        ended[0].reason = Some(DisconnectReason::ConnectionLost);
        assert!(!is_clone(&ended, "10.0.0.1:5000", at(4)));
    }

    #[test]
    fn reconnects_after_lost_connections_are_not_supersedes() {
        let mut records = tug_of_war(&[
            ("10.0.0.1", 0),
            ("10.0.0.2", 1),
            ("10.0.0.3", 2),
            ("10.0.0.4", 3),
        ]);
        for record in records.iter_mut().skip(1) {
            record.reason = Some(DisconnectReason::ConnectionLost);
        }
        assert!(!is_clone(&records, "10.0.0.5:5000", at(4)));
    }
}
