//! The console's pages for one job (its executions, refreshed while it runs), one group (its
//! name, maintenance window and heartbeat), and uploading an artifact from the browser.

use std::collections::HashMap;

use askama::Template;
use axum::body::{Body, Bytes};
use axum::extract::{Multipart, Path, Query, State};
use axum::response::Response;
use floatilla_domain::jobs::ExecutionState;
use floatilla_domain::{DeviceId, Role};
use serde::Deserialize;
use serde_json::{Value, json};

use super::pages::{CsrfForm, Flash, Nav, api_request, back, link, shown, time};
use super::session::Operator;
use crate::api::extract::{ApiJson, ApiQuery};
use crate::api::{artifacts, groups, jobs};
use crate::error::{Error, Result};
use crate::state::AppState;

/// Executions shown on a job's page at once.
const EXECUTIONS_PAGE: u32 = 100;

struct ExecutionRow {
    router_id: String,
    router: String,
    state: String,
    reason: String,
    attempt: u32,
    updated_at: String,
}

struct StateCount {
    state: String,
    count: u64,
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    nav: Option<Nav>,
    notice: Option<String>,
    problem: Option<String>,
    csrf: String,
    live: bool,
    can_cancel: bool,
    id: String,
    kind: String,
    artifact: String,
    created_by: String,
    created_at: String,
    cancelled_at: String,
    total: u64,
    done_percent: u64,
    counts: Vec<StateCount>,
    executions: Vec<ExecutionRow>,
    next_page: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct JobQuery {
    after: Option<String>,
    notice: Option<String>,
    problem: Option<String>,
}

/// A job and a page of its executions; the page refreshes every 2 seconds while the job runs.
pub async fn job(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
    Query(query): Query<JobQuery>,
) -> Response {
    shown(&operator, job_page(&state, &operator, id, query).await)
}

async fn job_page(
    state: &AppState,
    operator: &Operator,
    id: String,
    query: JobQuery,
) -> Result<JobPage> {
    let tenant = operator.caller.require(Role::Viewer)?;
    let view = jobs::get(
        State(state.clone()),
        operator.caller.clone(),
        Path(id.clone()),
    )
    .await?
    .0;
    let mut request = json!({ "limit": EXECUTIONS_PAGE });
    if let Some(after) = &query.after {
        request["after"] = json!(after);
    }
    let list = jobs::executions(
        State(state.clone()),
        operator.caller.clone(),
        Path(id.clone()),
        ApiQuery(api_request(request)?),
    )
    .await?
    .0;
    let routers: Vec<DeviceId> = list
        .items
        .iter()
        .filter_map(|execution| execution.device_id.parse().ok())
        .collect();
    let serials: HashMap<String, String> = state
        .store
        .device_serials(tenant, &routers)
        .await?
        .into_iter()
        .map(|(id, serial)| (id.to_string(), serial))
        .collect();
    let executions = list
        .items
        .into_iter()
        .map(|execution| ExecutionRow {
            router: serials
                .get(&execution.device_id)
                .cloned()
                .unwrap_or_else(|| execution.device_id.clone()),
            router_id: execution.device_id,
            state: execution.state,
            reason: execution.reason.unwrap_or_default(),
            attempt: execution.attempt,
            updated_at: time(execution.updated_at),
        })
        .collect();
    let total: u64 = view.executions.values().sum();
    let unfinished: u64 = view
        .executions
        .iter()
        .filter(|(state, _)| {
            state
                .parse::<ExecutionState>()
                .is_ok_and(|state| !state.is_terminal())
        })
        .map(|(_, count)| count)
        .sum();
    let mut counts: Vec<StateCount> = view
        .executions
        .into_iter()
        .map(|(state, count)| StateCount { state, count })
        .collect();
    counts.sort_by(|a, b| a.state.cmp(&b.state));
    let live = view.cancelled_at.is_none() && unfinished > 0;
    Ok(JobPage {
        nav: Nav::of(operator),
        notice: query.notice,
        problem: query.problem,
        csrf: operator.session.csrf_token.clone(),
        live,
        can_cancel: live && operator.caller.role.allows(Role::Operator),
        next_page: list
            .next
            .map(|next| link(&format!("/jobs/{id}"), &[("after", &next)])),
        id,
        kind: view.kind,
        artifact: view
            .artifact
            .map(|a| format!("{} {}", a.name, a.version))
            .unwrap_or_default(),
        created_by: view.created_by,
        created_at: time(view.created_at),
        cancelled_at: view.cancelled_at.map(time).unwrap_or_default(),
        done_percent: (total - unfinished)
            .saturating_mul(100)
            .checked_div(total)
            .unwrap_or(0),
        total,
        counts,
        executions,
    })
}

#[derive(Template)]
#[template(path = "group.html")]
struct GroupPage {
    nav: Option<Nav>,
    notice: Option<String>,
    problem: Option<String>,
    csrf: String,
    can_edit: bool,
    id: String,
    name: String,
    maintenance_window: String,
    ping_interval_secs: String,
    pong_timeout_secs: String,
    routers_link: String,
}

/// A group with the form that edits it.
pub async fn group(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
    Query(flash): Query<Flash>,
) -> Response {
    let page = async {
        let list = groups::list(State(state.clone()), operator.caller.clone())
            .await?
            .0;
        let group = list
            .into_iter()
            .find(|group| group.id == id)
            .ok_or(Error::NotFound("group"))?;
        let profile = group.timer_profile.as_ref();
        Ok::<_, Error>(GroupPage {
            nav: Nav::of(&operator),
            notice: flash.notice,
            problem: flash.problem,
            csrf: operator.session.csrf_token.clone(),
            can_edit: operator.caller.role.allows(Role::Operator),
            routers_link: link("/routers", &[("group", &group.name)]),
            ping_interval_secs: profile
                .map_or_else(String::new, |p| p.ping_interval_secs.to_string()),
            pong_timeout_secs: profile
                .map_or_else(String::new, |p| p.pong_timeout_secs.to_string()),
            maintenance_window: group.maintenance_window.unwrap_or_default(),
            id: group.id,
            name: group.name,
        })
    };
    shown(&operator, page.await)
}

#[derive(Debug, Deserialize)]
pub struct GroupForm {
    csrf: String,
    name: String,
    maintenance_window: String,
    ping_interval_secs: String,
    pong_timeout_secs: String,
}

/// A number of seconds from a form field; empty is none.
fn seconds(text: &str, label: &str) -> Result<Option<u32>> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        Error::invalid(
            "invalid_timers",
            format!("{label} is a whole number of seconds"),
        )
    })
}

/// The group form as the API's patch: an empty window removes it, empty heartbeat fields go
/// back to the server's timing.
fn group_patch(form: &GroupForm) -> Result<Value> {
    let window = form.maintenance_window.trim();
    let timers = match (
        seconds(&form.ping_interval_secs, "the ping interval")?,
        seconds(&form.pong_timeout_secs, "the pong timeout")?,
    ) {
        (None, None) => Value::Null,
        (Some(ping), Some(pong)) => {
            json!({ "ping_interval_secs": ping, "pong_timeout_secs": pong })
        }
        _ => {
            return Err(Error::invalid(
                "invalid_timers",
                "give both the ping interval and the pong timeout, or neither",
            ));
        }
    };
    Ok(json!({
        "name": form.name.trim(),
        "maintenance_window": if window.is_empty() { Value::Null } else { json!(window) },
        "timer_profile": timers,
    }))
}

pub async fn update_group(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<GroupForm>,
) -> Response {
    let back_to = format!("/groups/{id}");
    if let Err(error) = operator.check_csrf(&form.csrf) {
        return back(&back_to, Err(error));
    }
    let outcome = async {
        let request = api_request(group_patch(&form)?)?;
        let group = groups::update(
            State(state.clone()),
            operator.caller.clone(),
            Path(id.clone()),
            ApiJson(request),
        )
        .await?;
        Ok(format!("Group {} saved.", group.0.name))
    };
    back(&back_to, outcome.await)
}

/// Deletes a group; its routers stay, without a group.
pub async fn delete_group(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Response {
    if let Err(error) = operator.check_csrf(&form.csrf) {
        return back(&format!("/groups/{id}"), Err(error));
    }
    match groups::delete(State(state), operator.caller.clone(), Path(id.clone())).await {
        Ok(_) => back(
            "/manage/groups",
            Ok("Group deleted; its routers have no group now.".to_owned()),
        ),
        Err(error) => back(&format!("/groups/{id}"), Err(error)),
    }
}

/// Uploads an artifact from a form (`multipart/form-data`): the CSRF token and the
/// artifact's kind, name, version and models come first, then the file, which streams into
/// the API's upload as it arrives (it may be larger than memory should hold).
pub async fn upload_artifact(
    State(state): State<AppState>,
    operator: Operator,
    mut form: Multipart,
) -> Response {
    let back_to = "/manage/artifacts";
    let mut fields = serde_json::Map::new();
    let mut csrf = String::new();
    let outcome = loop {
        let mut field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => {
                break operator.check_csrf(&csrf).and(Err(Error::invalid(
                    "empty_artifact",
                    "choose the artifact's file",
                )));
            }
            Err(error) => break Err(Error::invalid("invalid_form", error.to_string())),
        };
        let name = field.name().unwrap_or_default().to_owned();
        if name != "file" {
            match field.text().await {
                Ok(text) if name == "csrf" => csrf = text,
                Ok(text) if !text.trim().is_empty() => {
                    fields.insert(name, json!(text.trim()));
                }
                Ok(_) => {}
                Err(error) => break Err(Error::invalid("invalid_form", error.to_string())),
            }
            continue;
        }
        if let Err(error) = operator.check_csrf(&csrf) {
            break Err(error);
        }
        let query = match api_request(Value::Object(std::mem::take(&mut fields))) {
            Ok(query) => query,
            Err(error) => break Err(error),
        };
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
        let body = Body::from_stream(futures_util::stream::poll_fn(move |cx| {
            receiver.poll_recv(cx)
        }));
        let upload = artifacts::upload(
            State(state.clone()),
            operator.caller.clone(),
            ApiQuery(query),
            body,
        );
        let feed = async move {
            loop {
                let chunk = match field.chunk().await {
                    Ok(Some(chunk)) => Ok(chunk),
                    Ok(None) => break,
                    Err(error) => Err(std::io::Error::other(error.to_string())),
                };
                let broken = chunk.is_err();
                if sender.send(chunk).await.is_err() || broken {
                    break;
                }
            }
        };
        let (uploaded, ()) = tokio::join!(upload, feed);
        break uploaded.map(|(_, artifact)| {
            format!(
                "Artifact {} {} uploaded ({} bytes).",
                artifact.0.name, artifact.0.version, artifact.0.size
            )
        });
    };
    back(back_to, outcome)
}
