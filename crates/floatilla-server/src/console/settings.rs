//! The console's settings page: what an admin sets for the tenant (where license notices are
//! e-mailed, the enrollment policy, accepting the clock after an alarm), and how this server
//! was started, read-only, with the flag that changes each.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use floatilla_domain::{Mode, Role};
use serde::Deserialize;
use serde_json::{Value, json};

use super::pages::{CsrfForm, Flash, Nav, api_request, back, shown};
use super::session::Operator;
use crate::api::extract::ApiJson;
use crate::api::{activation, enrollment, licensing};
use crate::error::Error;
use crate::state::AppState;

/// One of the server's settings: what it is, its value here, and the `serve` flag for it.
struct ServerSetting {
    name: &'static str,
    value: String,
    flag: &'static str,
}

#[derive(Template)]
#[template(path = "settings.html")]
struct SettingsPage {
    nav: Option<Nav>,
    notice: Option<String>,
    problem: Option<String>,
    csrf: String,
    can_change: bool,
    tenant_name: String,
    contact_email: String,
    policy: String,
    clock_doubt: Option<String>,
    server: Vec<ServerSetting>,
}

fn days(duration: chrono::Duration) -> String {
    format!("{} days", duration.num_days())
}

fn server_settings(state: &AppState) -> Vec<ServerSetting> {
    let config = &state.config;
    let setting = |name, value, flag| ServerSetting { name, value, flag };
    vec![
        setting(
            "Form of operation",
            match state.installation.mode {
                Mode::OnPrem => "on premises (fixed when the database was first used)".to_owned(),
                Mode::Cloud => {
                    "cloud, many tenants (fixed when the database was first used)".to_owned()
                }
            },
            "--mode",
        ),
        setting(
            "Installation id",
            format!(
                "{} (license files are issued for it)",
                state.installation.id
            ),
            "",
        ),
        setting(
            "Heartbeat",
            format!(
                "ping every {} s, dropped after {} s without a pong (groups may set their own)",
                config.timers.ping_interval_secs, config.timers.pong_timeout_secs
            ),
            "--ping-interval-secs, --pong-timeout-secs",
        ),
        setting(
            "Seat kept after a router drops",
            format!("{} s", config.license_linger.num_seconds()),
            "--license-linger-secs",
        ),
        setting(
            "License notices before a capacity drop",
            config
                .license_notice_days
                .iter()
                .map(|d| {
                    if *d == 1 {
                        "1 day".to_owned()
                    } else {
                        format!("{d} days")
                    }
                })
                .collect::<Vec<_>>()
                .join(", "),
            "--license-notice-days",
        ),
        setting(
            "E-mail",
            config.smtp.as_ref().map_or_else(
                || "not sent".to_owned(),
                |smtp| format!("sent as {}", smtp.from),
            ),
            "--smtp-url, --smtp-from",
        ),
        setting(
            "Console sessions",
            format!(
                "end after {} minutes idle, {} hours at most",
                config.session_lifetime.idle.num_minutes(),
                config.session_lifetime.absolute.num_hours()
            ),
            "--session-idle-minutes, --session-max-hours",
        ),
        setting(
            "Audit log kept",
            days(config.audit_retention),
            "--audit-retention-days",
        ),
        setting(
            "Connection history and events kept",
            days(config.retention),
            "--retention-days",
        ),
        setting(
            "Router credentials valid",
            days(config.credential_lifetime),
            "--credential-lifetime-days",
        ),
        setting(
            "Largest artifact",
            format!("{} MiB", config.max_artifact_bytes / (1024 * 1024)),
            "--max-artifact-mib",
        ),
    ]
}

pub async fn settings(
    State(state): State<AppState>,
    operator: Operator,
    Query(flash): Query<Flash>,
) -> Response {
    let page = async {
        let tenant = activation::own_tenant(State(state.clone()), operator.caller.clone())
            .await?
            .0;
        let policy = enrollment::policy(State(state.clone()), operator.caller.clone())
            .await?
            .0;
        let pool = licensing::pool(State(state.clone()), operator.caller.clone())
            .await?
            .0;
        Ok::<_, Error>(SettingsPage {
            nav: Nav::of(&operator),
            notice: flash.notice,
            problem: flash.problem,
            csrf: operator.session.csrf_token.clone(),
            can_change: operator.caller.role.allows(Role::Admin),
            tenant_name: tenant.name,
            contact_email: tenant.contact_email.unwrap_or_default(),
            policy: policy.policy,
            clock_doubt: (!pool.clock.trusted).then(|| {
                pool.clock
                    .doubt
                    .unwrap_or_else(|| "the clock is in doubt".to_owned())
            }),
            server: server_settings(&state),
        })
    };
    shown(&operator, page.await)
}

#[derive(Debug, Deserialize)]
pub struct ContactForm {
    csrf: String,
    contact_email: String,
}

/// Sets where notices about the tenant's licenses are e-mailed; empty removes the address.
pub async fn set_contact(
    State(state): State<AppState>,
    operator: Operator,
    axum::Form(form): axum::Form<ContactForm>,
) -> Response {
    if let Err(error) = operator.check_csrf(&form.csrf) {
        return back("/settings", Err(error));
    }
    let address = form.contact_email.trim();
    let outcome = async {
        let contact = if address.is_empty() {
            Value::Null
        } else {
            json!(address)
        };
        let tenant = activation::update_own_tenant(
            State(state.clone()),
            operator.caller.clone(),
            ApiJson(api_request(json!({ "contact_email": contact }))?),
        )
        .await?
        .0;
        Ok(match tenant.contact_email {
            Some(address) => format!("License notices go to {address}."),
            None => "License notices are not e-mailed.".to_owned(),
        })
    };
    back("/settings", outcome.await)
}

/// Accepts the wall clock as it reads now, after a clock alarm.
pub async fn acknowledge_clock(
    State(state): State<AppState>,
    operator: Operator,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Response {
    if let Err(error) = operator.check_csrf(&form.csrf) {
        return back("/settings", Err(error));
    }
    let outcome = licensing::acknowledge_clock(State(state), operator.caller.clone())
        .await
        .map(|_| "The clock is accepted: capacity follows it again.".to_owned());
    back("/settings", outcome)
}
