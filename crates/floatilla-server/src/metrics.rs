//! Prometheus metrics. Names and labels are stable; `/metrics` serves them without credentials.

use std::sync::OnceLock;

use floatilla_domain::DisconnectReason;
use floatilla_domain::events::EventKind;
use floatilla_domain::licensing::LicenseReason;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const ROUTERS_CONNECTED: &str = "floatilla_routers_connected";
pub const ROUTER_CONNECTS: &str = "floatilla_router_connects_total";
pub const ROUTER_DISCONNECTS: &str = "floatilla_router_disconnects_total";
pub const DEVICE_MESSAGES: &str = "floatilla_device_messages_total";
pub const DEVICE_REFUSALS: &str = "floatilla_device_refusals_total";
pub const ENROLLMENTS: &str = "floatilla_enrollments_total";
pub const LICENSE_TRANSITIONS: &str = "floatilla_license_transitions_total";
pub const LICENSE_POOL_EVENTS: &str = "floatilla_license_pool_events_total";

/// The process-wide Prometheus recorder, installed on first use.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (an embedding program): then ours
            // still renders, it just sees nothing recorded elsewhere.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_gauge!(
        ROUTERS_CONNECTED,
        "Routers with an open control channel on this node."
    );
    metrics::describe_counter!(ROUTER_CONNECTS, "Control channels welcomed.");
    metrics::describe_counter!(ROUTER_DISCONNECTS, "Control channels ended, by reason.");
    metrics::describe_counter!(
        DEVICE_MESSAGES,
        "Control-channel messages, by direction and type."
    );
    metrics::describe_counter!(DEVICE_REFUSALS, "Bad input from routers, by error code.");
    metrics::describe_counter!(ENROLLMENTS, "Enrollment attempts, by result.");
    metrics::describe_counter!(
        LICENSE_TRANSITIONS,
        "Routers' license state changes decided on this node, by reason."
    );
    metrics::describe_counter!(
        LICENSE_POOL_EVENTS,
        "License pool events decided on this node, by kind."
    );
}

pub fn connected(count: usize) {
    metrics::gauge!(ROUTERS_CONNECTED).set(count as f64);
}

pub fn connect() {
    metrics::counter!(ROUTER_CONNECTS).increment(1);
}

pub fn disconnect(reason: DisconnectReason) {
    metrics::counter!(ROUTER_DISCONNECTS, "reason" => reason.as_str()).increment(1);
}

pub fn message(direction: &'static str, kind: &'static str) {
    metrics::counter!(DEVICE_MESSAGES, "direction" => direction, "type" => kind).increment(1);
}

pub fn refusal(code: &'static str) {
    metrics::counter!(DEVICE_REFUSALS, "code" => code).increment(1);
}

pub fn enrollment(result: &'static str) {
    metrics::counter!(ENROLLMENTS, "result" => result).increment(1);
}

pub fn license_transition(reason: LicenseReason) {
    metrics::counter!(LICENSE_TRANSITIONS, "reason" => reason.as_str()).increment(1);
}

pub fn license_pool_event(kind: EventKind) {
    metrics::counter!(LICENSE_POOL_EVENTS, "kind" => kind.as_str()).increment(1);
}
