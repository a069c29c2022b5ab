//! The console's pages and forms. Each reads and changes through the API's own handlers
//! (called with the logged-in person as the caller), then renders HTML.

use askama::Template;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use floatilla_domain::Role;
use floatilla_domain::jobs::ArtifactKind;
use http::header::{CONTENT_TYPE, SET_COOKIE};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::session::{
    LoginRefusal, Operator, cleared_cookie, log_in, login_form_is_genuine, login_form_token,
    session_cookie,
};
use crate::api::extract::{ApiJson, ApiQuery};
use crate::api::users::AuditView;
use crate::api::views::AllowReenrollmentRequest;
use crate::api::{artifacts, devices, events, jobs, licensing, rollouts, tags, users};
use crate::error::{Error, Result};
use crate::server::RemoteAddr;
use crate::state::AppState;

/// What the header shows: who is logged in, and the token their forms carry.
pub(super) struct Nav {
    pub(super) email: String,
    pub(super) role: &'static str,
    pub(super) csrf: String,
    /// Admins and the provider manage accounts and read the audit log.
    pub(super) admin: bool,
    pub(super) provider: bool,
}

impl Nav {
    pub(super) fn of(operator: &Operator) -> Option<Nav> {
        Some(Nav {
            email: operator.user.email.clone(),
            role: operator.user.role.as_str(),
            csrf: operator.session.csrf_token.clone(),
            admin: matches!(operator.caller.role, Role::Admin | Role::Provider),
            provider: operator.caller.role == Role::Provider,
        })
    }
}

/// One choice of a `<select>`.
pub(super) struct Choice {
    pub(super) value: String,
    pub(super) label: String,
    pub(super) selected: bool,
}

pub(super) fn choices(options: &[(&str, &str)], current: &str) -> Vec<Choice> {
    options
        .iter()
        .map(|(value, label)| Choice {
            value: (*value).to_owned(),
            label: (*label).to_owned(),
            selected: *value == current,
        })
        .collect()
}

/// A notice or problem a form's redirect carries back to its page.
#[derive(Debug, Default, Deserialize)]
pub struct Flash {
    pub(super) notice: Option<String>,
    pub(super) problem: Option<String>,
}

impl Flash {
    pub(super) fn notice(text: String) -> Self {
        Flash {
            notice: Some(text),
            problem: None,
        }
    }
}

pub(super) fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(error) => Error::Internal(format!("console page: {error}")).into_response(),
    }
}

/// Back to `path` with what came of a form.
pub(super) fn back(path: &str, outcome: Result<String>) -> Response {
    let (key, text) = match outcome {
        Ok(notice) => ("notice", notice),
        Err(error) => ("problem", error.body().message),
    };
    let separator = if path.contains('?') { '&' } else { '?' };
    let query = serde_urlencoded::to_string([(key, text)]).unwrap_or_default();
    Redirect::to(&format!("{path}{separator}{query}")).into_response()
}

/// A form's field as given (trimmed); an empty one counts as not given.
pub(super) fn field(fields: &[(String, String)], name: &str) -> Option<String> {
    fields
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|value| !value.is_empty())
}

/// A console address with a query: `path?name=value&…`.
pub(super) fn link(path: &str, pairs: &[(&str, &str)]) -> String {
    format!(
        "{path}?{}",
        serde_urlencoded::to_string(pairs).unwrap_or_default()
    )
}

/// An API request body or query built from a form, through the API's own types.
pub(super) fn api_request<T: DeserializeOwned>(value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| Error::invalid("invalid_form", e.to_string()))
}

/// Form fields that are empty count as not given.
pub(super) fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

pub(super) fn time(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn opt_time(at: Option<chrono::DateTime<chrono::Utc>>) -> String {
    at.map(time).unwrap_or_default()
}

pub(super) fn seats_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// A failure on a page that was asked for (not a form): the error page, with its status.
pub(super) fn failed(operator: &Operator, error: Error) -> Response {
    #[derive(Template)]
    #[template(
        source = "{% extends \"base.html\" %}{% block title %}Problem{% endblock %}{% block content %}<h1>{{ heading }}</h1>{% endblock %}",
        ext = "html"
    )]
    struct Problem {
        nav: Option<Nav>,
        notice: Option<String>,
        problem: Option<String>,
        heading: &'static str,
    }
    let status = error.status();
    let heading = match status {
        StatusCode::FORBIDDEN => "Your role may not do this",
        StatusCode::NOT_FOUND => "Not found",
        _ => "Something went wrong",
    };
    let mut response = render(&Problem {
        nav: Nav::of(operator),
        notice: None,
        problem: Some(error.body().message),
        heading,
    });
    *response.status_mut() = status;
    response
}

/// A page, or the error page for what kept it from being shown.
pub(super) fn shown(operator: &Operator, page: Result<impl Template>) -> Response {
    match page {
        Ok(page) => render(&page),
        Err(error) => failed(operator, error),
    }
}

pub async fn stylesheet() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../templates/console.css"),
    )
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    nav: Option<Nav>,
    notice: Option<String>,
    problem: Option<String>,
    email: String,
    csrf: String,
}

/// The login page with a new form token (and its cookie), answered with `status`.
fn login_form(
    status: StatusCode,
    notice: Option<String>,
    problem: Option<String>,
    email: String,
) -> Response {
    let (csrf, cookie) = login_form_token();
    let mut response = render(&LoginPage {
        nav: None,
        notice,
        problem,
        email,
        csrf,
    });
    *response.status_mut() = status;
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    response
}

pub async fn login_page(Query(flash): Query<Flash>) -> Response {
    login_form(StatusCode::OK, flash.notice, flash.problem, String::new())
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    email: String,
    password: String,
    #[serde(default)]
    csrf: String,
}

pub async fn login(
    State(state): State<AppState>,
    remote: Option<axum::Extension<RemoteAddr>>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<LoginForm>,
) -> Response {
    if !login_form_is_genuine(&headers, &form.csrf) {
        let problem = "This login form has expired or was not sent by this console: log in again.";
        return login_form(
            StatusCode::FORBIDDEN,
            None,
            Some(problem.to_owned()),
            form.email,
        );
    }
    match log_in(&state, remote.map(|r| r.0), &form.email, form.password).await {
        Ok((_, secret)) => {
            let mut response = Redirect::to("/").into_response();
            if let Ok(cookie) = HeaderValue::from_str(&session_cookie(&secret)) {
                response.headers_mut().insert(SET_COOKIE, cookie);
            }
            response
        }
        Err(refusal) => {
            let (status, problem) = match refusal {
                LoginRefusal::Invalid => (
                    StatusCode::UNAUTHORIZED,
                    "The e-mail address or the password is not right.".to_owned(),
                ),
                LoginRefusal::Throttled { minutes } => (
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("Too many failed attempts: try again in {minutes} minutes."),
                ),
                LoginRefusal::Failed(error) => {
                    tracing::error!(%error, "cannot check a console login");
                    (error.status(), error.body().message)
                }
            };
            login_form(status, None, Some(problem), form.email)
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    pub(super) csrf: String,
}

pub async fn logout(
    State(state): State<AppState>,
    operator: Operator,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Response {
    if let Err(error) = operator.check_csrf(&form.csrf) {
        return back("/", Err(error));
    }
    if let Err(error) = state
        .store
        .delete_console_session(&operator.session.secret_hash)
        .await
    {
        return back("/", Err(error.into()));
    }
    (cleared_cookie(), Redirect::to("/login")).into_response()
}

#[derive(Template)]
#[template(path = "invitation.html")]
struct InvitationPage {
    nav: Option<Nav>,
    notice: Option<String>,
    problem: Option<String>,
    email: String,
}

/// The invited account the link's secret belongs to, while the link may be used.
async fn invited(state: &AppState, secret: &str) -> Result<floatilla_domain::accounts::User> {
    let hash = crate::accounts::hash_of_secret(secret).ok_or(Error::NotFound("invitation"))?;
    state
        .store
        .user_by_invitation(&hash)
        .await?
        .filter(|user| {
            user.invitation
                .as_ref()
                .is_some_and(|(_, until)| *until > state.clock.now())
        })
        .ok_or(Error::NotFound("invitation"))
}

pub async fn invitation_page(
    State(state): State<AppState>,
    Path(secret): Path<String>,
) -> Response {
    match invited(&state, &secret).await {
        Ok(user) => render(&InvitationPage {
            nav: None,
            notice: None,
            problem: None,
            email: user.email,
        }),
        Err(_) => back(
            "/login",
            Err(Error::invalid(
                "invalid_invitation",
                "This invitation link is not valid (it was used, has lapsed or was mistyped): ask an admin for a new one.",
            )),
        ),
    }
}

#[derive(Debug, Deserialize)]
pub struct PasswordForm {
    password: String,
}

pub async fn accept_invitation(
    State(state): State<AppState>,
    Path(secret): Path<String>,
    remote: Option<axum::Extension<RemoteAddr>>,
    axum::Form(form): axum::Form<PasswordForm>,
) -> Response {
    let mut user = match invited(&state, &secret).await {
        Ok(user) => user,
        Err(error) => return back("/login", Err(error)),
    };
    let hash = match crate::accounts::hash_password(form.password).await {
        Ok(hash) => hash,
        Err(error) => {
            let mut response = render(&InvitationPage {
                nav: None,
                notice: None,
                problem: Some(error.body().message),
                email: user.email,
            });
            *response.status_mut() = StatusCode::BAD_REQUEST;
            return response;
        }
    };
    user.password_hash = Some(hash);
    user.invitation = None;
    user.status =
        floatilla_domain::accounts::UserStatus::after_accepting_invitation(state.config.mode);
    if let Err(error) = state.store.update_user(&user).await {
        return back("/login", Err(error.into()));
    }
    crate::audit::record(
        &state,
        user.tenant_id,
        floatilla_domain::accounts::Actor::User {
            id: user.id,
            email: user.email.clone(),
        },
        "POST /invitation/{secret}",
        remote.map(|r| r.0.0.ip().to_string()),
        200,
        None,
    )
    .await;
    let notice = match user.status {
        floatilla_domain::accounts::UserStatus::Active => "Your password is set: log in.",
        _ => {
            "Your password is set. An admin of your organisation approves the account before you can log in."
        }
    };
    back("/login", Ok(notice.to_owned()))
}

struct EventRow {
    at: String,
    kind: String,
    message: String,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct Dashboard {
    nav: Option<Nav>,
    notice: Option<String>,
    problem: Option<String>,
    warnings: Vec<String>,
    online: u64,
    offline: u64,
    capacity: String,
    in_use: u64,
    free: String,
    excess: u64,
    used_percent: u64,
    next_change: Option<String>,
    chart: String,
    events: Vec<EventRow>,
}

async fn router_count(state: &AppState, operator: &Operator, filter: Value) -> Result<u64> {
    let mut query = filter;
    query["limit"] = json!(1);
    let list = devices::list(
        State(state.clone()),
        operator.caller.clone(),
        ApiQuery(api_request(query)?),
    )
    .await?;
    Ok(list.0.total)
}

pub async fn dashboard(
    State(state): State<AppState>,
    operator: Operator,
    Query(flash): Query<Flash>,
) -> Response {
    if operator.caller.role == Role::Provider {
        return super::manage::provider_home();
    }
    shown(&operator, dashboard_page(&state, &operator, flash).await)
}

async fn dashboard_page(state: &AppState, operator: &Operator, flash: Flash) -> Result<Dashboard> {
    let online = router_count(state, operator, json!({"connection_state": "online"})).await?;
    let offline = router_count(state, operator, json!({"connection_state": "offline"})).await?;
    let pool = licensing::pool(State(state.clone()), operator.caller.clone())
        .await?
        .0;
    let history = licensing::usage_rows(
        state,
        operator.caller.require(Role::Viewer)?,
        &licensing::UsageQuery::default(),
        floatilla_domain::licensing::Granularity::Hour,
    )
    .await?;
    let recent = events::list(
        State(state.clone()),
        operator.caller.clone(),
        ApiQuery(api_request(json!({"limit": 10}))?),
    )
    .await?
    .0;
    let mut warnings: Vec<String> = pool.warning.iter().cloned().collect();
    if !pool.clock.trusted {
        warnings.push(
            "The server's clock is in doubt: capacity holds where it was until an admin acknowledges the clock.".to_owned(),
        );
    }
    warnings.extend(
        recent
            .items
            .iter()
            .filter(|e| e.kind == "credential_cloned")
            .map(|e| format!("Cloned credential: {}", e.message)),
    );
    let capacity = pool.capacity.as_u64();
    let used_percent = capacity
        .filter(|c| *c > 0)
        .map_or(0, |c| (pool.in_use * 100 / c).min(100));
    Ok(Dashboard {
        nav: Nav::of(operator),
        notice: flash.notice,
        problem: flash.problem,
        warnings,
        online,
        offline,
        capacity: seats_text(&pool.capacity),
        in_use: pool.in_use,
        free: pool
            .free
            .map_or_else(|| "unlimited".to_owned(), |f| f.to_string()),
        excess: pool.excess,
        used_percent,
        next_change: pool.next_change.map(|c| c.description),
        chart: usage_chart(&history, capacity),
        events: recent
            .items
            .into_iter()
            .map(|e| EventRow {
                at: time(e.at),
                kind: e.kind,
                message: e.message,
            })
            .collect(),
    })
}

/// An SVG line chart of peak managed and licensed routers per hour, with the capacity now.
pub(super) fn usage_chart(
    history: &[crate::api::views::UsageView],
    capacity: Option<u64>,
) -> String {
    const WIDTH: f64 = 720.0;
    const HEIGHT: f64 = 180.0;
    if history.is_empty() {
        return "<p class=\"muted\">No usage recorded yet.</p>".to_owned();
    }
    let top = history
        .iter()
        .map(|h| h.peak_managed.max(h.peak_licensed))
        .chain(capacity)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let step = WIDTH / (history.len().max(2) - 1) as f64;
    let y = |value: u64| HEIGHT - value as f64 / top * HEIGHT;
    let line = |value: fn(&crate::api::views::UsageView) -> u64| {
        history
            .iter()
            .enumerate()
            .map(|(i, h)| format!("{:.1},{:.1}", i as f64 * step, y(value(h))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let capacity_line = capacity.map_or_else(String::new, |c| {
        format!(
            "<line x1=\"0\" x2=\"{WIDTH}\" y1=\"{0:.1}\" y2=\"{0:.1}\" stroke=\"#b3261e\" stroke-dasharray=\"6 4\"/><text x=\"4\" y=\"{1:.1}\">capacity now: {c}</text>",
            y(c),
            (y(c) - 4.0).max(10.0)
        )
    });
    let first = history.first().map(|h| time(h.start)).unwrap_or_default();
    format!(
        "<svg role=\"img\" aria-label=\"Peak managed and licensed routers per hour since {first}, against the capacity now\" viewBox=\"0 -10 {WIDTH} {}\" width=\"100%\" preserveAspectRatio=\"none\">\
         {capacity_line}\
         <polyline fill=\"none\" stroke=\"#1f5fbf\" stroke-width=\"2\" points=\"{}\"/>\
         <polyline fill=\"none\" stroke=\"#1e7a3c\" stroke-width=\"2\" points=\"{}\"/>\
         <text x=\"4\" y=\"{}\">blue: managed routers online · green: licensed · since {first}</text></svg>",
        HEIGHT + 30.0,
        line(|h| h.peak_managed),
        line(|h| h.peak_licensed),
        HEIGHT + 16.0,
    )
}

/// A router as a row of the console.
struct RouterRow {
    id: String,
    serial: String,
    name: String,
    connection_state: String,
    license_state: String,
    why: String,
    group: String,
    tags: String,
    model: String,
    firmware: String,
}

impl RouterRow {
    fn of(view: crate::api::views::DeviceView) -> Self {
        RouterRow {
            why: license_reason(&view.license_state, view.license_reason.as_deref()),
            id: view.id,
            serial: view.serial,
            name: view.name,
            connection_state: view.connection_state,
            license_state: view.license_state,
            group: view.group.unwrap_or_default(),
            tags: view.tags.join(", "),
            model: view.model,
            firmware: view.firmware,
        }
    }
}

/// A router's license state and the reason of its last change, in plain words.
pub fn license_reason(state: &str, reason: Option<&str>) -> String {
    let why = match (state, reason) {
        ("unmanaged", _) => "An operator marked it unmanaged: it holds no seat and gets no tasks.",
        ("excess", Some("shed_capacity_dropped")) => {
            "Licenses expired and the capacity fell: it connected after the routers that kept a seat, so it waits for one (oldest excess first)."
        }
        ("excess", Some("shed_pinned_priority")) => {
            "A pinned router took its seat: it waits for one to free up."
        }
        ("excess", _) => {
            "Every seat was taken when it connected: it is visible but gets no updates or tasks until a seat frees up."
        }
        ("licensed", Some("restored")) => "A seat freed up and it got one back.",
        ("licensed", _) => "It holds a seat while its session lasts.",
        ("inactive", Some("released_linger_expired")) => {
            "It has been offline longer than the linger: its seat went back to the pool."
        }
        ("inactive", _) => "It has no live session, so it holds no seat.",
        _ => "",
    };
    why.to_owned()
}

#[derive(Debug, Default, Deserialize)]
pub struct RoutersQuery {
    q: Option<String>,
    connection_state: Option<String>,
    license_state: Option<String>,
    group: Option<String>,
    tag: Option<String>,
    model: Option<String>,
    firmware: Option<String>,
    cursor: Option<String>,
    notice: Option<String>,
    problem: Option<String>,
}

/// The filters as the template shows them back.
struct ShownFilters {
    q: String,
    tag: String,
    model: String,
    firmware: String,
}

#[derive(Template)]
#[template(path = "routers.html")]
struct RoutersPage {
    nav: Option<Nav>,
    notice: Option<String>,
    problem: Option<String>,
    csrf: String,
    can_manage: bool,
    /// What an update job for the selected routers may install.
    artifacts: Vec<ArtifactChoice>,
    total: u64,
    query: ShownFilters,
    connection_options: Vec<Choice>,
    license_options: Vec<Choice>,
    group_options: Vec<Choice>,
    routers: Vec<RouterRow>,
    next_page: Option<String>,
}

/// Routers shown a page.
const ROUTERS_PAGE: u32 = 50;

pub async fn routers(
    State(state): State<AppState>,
    operator: Operator,
    Query(query): Query<RoutersQuery>,
) -> Response {
    shown(&operator, routers_page(&state, &operator, query).await)
}

async fn routers_page(
    state: &AppState,
    operator: &Operator,
    query: RoutersQuery,
) -> Result<RoutersPage> {
    let mut api = json!({ "limit": ROUTERS_PAGE });
    let filters = [
        ("q", &query.q),
        ("connection_state", &query.connection_state),
        ("license_state", &query.license_state),
        ("group", &query.group),
        ("tag", &query.tag),
        ("model", &query.model),
        ("firmware", &query.firmware),
        ("cursor", &query.cursor),
    ];
    for (name, value) in filters {
        if let Some(value) = given(value) {
            api[name] = json!(value);
        }
    }
    let list = devices::list(
        State(state.clone()),
        operator.caller.clone(),
        ApiQuery(api_request(api)?),
    )
    .await?
    .0;
    let groups = state
        .store
        .groups(operator.caller.require(Role::Viewer)?)
        .await?;
    let can_manage = operator.caller.role.allows(Role::Operator);
    let artifacts = if can_manage {
        artifacts::list(
            State(state.clone()),
            operator.caller.clone(),
            ApiQuery(api_request(json!({}))?),
        )
        .await?
        .0
    } else {
        Vec::new()
    };
    let next_page = list.next.as_ref().map(|next| {
        let mut pairs: Vec<(&str, &str)> = filters
            .iter()
            .filter(|(name, _)| *name != "cursor")
            .filter_map(|(name, value)| given(value).map(|v| (*name, v)))
            .collect();
        pairs.push(("cursor", next));
        link("/routers", &pairs)
    });
    let mut group_options = vec![Choice {
        value: String::new(),
        label: "any".to_owned(),
        selected: given(&query.group).is_none(),
    }];
    group_options.extend(groups.into_iter().map(|g| Choice {
        selected: given(&query.group) == Some(g.name.as_str()),
        value: g.name.clone(),
        label: g.name,
    }));
    Ok(RoutersPage {
        nav: Nav::of(operator),
        notice: query.notice.clone(),
        problem: query.problem.clone(),
        csrf: operator.session.csrf_token.clone(),
        can_manage,
        artifacts: artifact_choices(artifacts),
        total: list.total,
        connection_options: choices(
            &[("", "any"), ("online", "online"), ("offline", "offline")],
            given(&query.connection_state).unwrap_or(""),
        ),
        license_options: choices(
            &[
                ("", "any"),
                ("licensed", "licensed"),
                ("excess", "excess"),
                ("inactive", "inactive"),
                ("unmanaged", "unmanaged"),
            ],
            given(&query.license_state).unwrap_or(""),
        ),
        group_options,
        query: ShownFilters {
            q: given(&query.q).unwrap_or_default().to_owned(),
            tag: given(&query.tag).unwrap_or_default().to_owned(),
            model: given(&query.model).unwrap_or_default().to_owned(),
            firmware: given(&query.firmware).unwrap_or_default().to_owned(),
        },
        routers: list.items.into_iter().map(RouterRow::of).collect(),
        next_page,
    })
}

/// The bulk form's fields; `id` repeats, once per selected router.
pub async fn routers_bulk(
    State(state): State<AppState>,
    operator: Operator,
    axum::Form(fields): axum::Form<Vec<(String, String)>>,
) -> Response {
    let field = |name: &str| field(&fields, name).unwrap_or_default();
    if let Err(error) = operator.check_csrf(&field("csrf")) {
        return back("/routers", Err(error));
    }
    let ids: Vec<String> = fields
        .iter()
        .filter(|(key, _)| key == "id")
        .map(|(_, value)| value.clone())
        .collect();
    let action = field("action");
    let value = if action == "update" {
        field("artifact_id")
    } else {
        field("value")
    };
    let outcome = bulk_change(&state, &operator, &action, &value, ids).await;
    back("/routers", outcome)
}

async fn bulk_change(
    state: &AppState,
    operator: &Operator,
    action: &str,
    value: &str,
    ids: Vec<String>,
) -> Result<String> {
    if ids.is_empty() {
        return Err(Error::invalid(
            "nothing_selected",
            "Select at least one router.",
        ));
    }
    let count = ids.len();
    let caller = operator.caller.clone();
    let state_of = || State(state.clone());
    match action {
        "manage" | "unmanage" => {
            let managed = action == "manage";
            let result = licensing::bulk(
                state_of(),
                caller,
                ApiJson(api_request(json!({"ids": ids, "managed": managed}))?),
            )
            .await?;
            Ok(format!("{} routers marked {action}d.", result.0.changed))
        }
        "pin" | "unpin" => {
            let pinned = action == "pin";
            let result = licensing::bulk(
                state_of(),
                caller,
                ApiJson(api_request(json!({"ids": ids, "pinned": pinned}))?),
            )
            .await?;
            let done = if pinned { "pinned" } else { "unpinned" };
            Ok(format!("{} routers {done}.", result.0.changed))
        }
        "tag" | "untag" => {
            let key = if action == "tag" { "add" } else { "remove" };
            let result = tags::tag_routers(
                state_of(),
                caller,
                ApiJson(api_request(json!({"ids": ids, key: [value]}))?),
            )
            .await?;
            Ok(format!(
                "Tag {value} changed on {} routers.",
                result.0.changed
            ))
        }
        "move" => {
            let group = if value.is_empty() {
                Value::Null
            } else {
                json!(value)
            };
            let mut moved = Vec::with_capacity(count);
            for id in ids {
                let router = devices::patch(
                    state_of(),
                    caller.clone(),
                    Path(id),
                    ApiJson(api_request(json!({ "group": group }))?),
                )
                .await?;
                moved.push(router.0.serial);
            }
            Ok(format!("Moved {}.", moved.join(", ")))
        }
        "reboot" => {
            let job = jobs::create(
                state_of(),
                caller,
                ApiJson(api_request(
                    json!({"kind": "reboot", "target": {"ids": ids}}),
                )?),
            )
            .await?;
            Ok(format!(
                "Reboot job {} created for {count} routers.",
                job.1.0.id
            ))
        }
        "update" => {
            if value.is_empty() {
                return Err(Error::invalid(
                    "no_artifact",
                    "Choose the artifact to install.",
                ));
            }
            let artifact =
                artifacts::get(state_of(), caller.clone(), Path(value.to_owned())).await?;
            let kind = artifact
                .0
                .kind
                .parse::<ArtifactKind>()
                .map_err(|e| Error::Internal(format!("a stored artifact's kind: {e}")))?
                .installed_by();
            let job = jobs::create(
                state_of(),
                caller,
                ApiJson(api_request(json!({
                    "kind": kind.as_str(),
                    "artifact_id": value,
                    "target": {"ids": ids},
                }))?),
            )
            .await?;
            Ok(format!(
                "Job {} installs {} {} on {count} routers.",
                job.1.0.id, artifact.0.name, artifact.0.version
            ))
        }
        _ => Err(Error::invalid(
            "invalid_action",
            "Choose what to do with the selected routers.",
        )),
    }
}

struct ConnectionRow {
    connected_at: String,
    disconnected_at: String,
    reason: String,
    remote_addr: String,
    node_id: String,
}

struct JobRow {
    job_id: String,
    reason: String,
    state: String,
    updated_at: String,
}

#[derive(Template)]
#[template(path = "router.html")]
struct RouterPage {
    nav: Option<Nav>,
    notice: Option<String>,
    problem: Option<String>,
    csrf: String,
    can_manage: bool,
    can_administer: bool,
    managed: bool,
    pinned: bool,
    groups: Vec<String>,
    router: RouterRow,
    connections: Vec<ConnectionRow>,
    jobs: Vec<JobRow>,
}

pub async fn router(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
    Query(flash): Query<Flash>,
) -> Response {
    let page = async {
        let detail = devices::get(
            State(state.clone()),
            operator.caller.clone(),
            Path(id.clone()),
        )
        .await?
        .0;
        let executions =
            jobs::device_executions(State(state.clone()), operator.caller.clone(), Path(id))
                .await?
                .0;
        let groups = state
            .store
            .groups(operator.caller.require(Role::Viewer)?)
            .await?;
        Ok::<_, Error>(RouterPage {
            nav: Nav::of(&operator),
            notice: flash.notice,
            problem: flash.problem,
            csrf: operator.session.csrf_token.clone(),
            can_manage: operator.caller.role.allows(Role::Operator),
            can_administer: operator.caller.role.allows(Role::Admin),
            managed: detail.device.managed,
            pinned: detail.device.pinned,
            groups: groups.into_iter().map(|g| g.name).collect(),
            router: RouterRow::of(detail.device),
            connections: detail
                .connection_history
                .into_iter()
                .map(|c| ConnectionRow {
                    connected_at: time(c.connected_at),
                    disconnected_at: opt_time(c.disconnected_at),
                    reason: c.reason.unwrap_or_default(),
                    remote_addr: c.remote_addr,
                    node_id: c.node_id,
                })
                .collect(),
            jobs: executions
                .into_iter()
                .map(|e| JobRow {
                    job_id: e.job_id,
                    reason: e.reason.unwrap_or_default(),
                    state: e.state,
                    updated_at: time(e.updated_at),
                })
                .collect(),
        })
    };
    shown(&operator, page.await)
}

/// A button or form on a router's page: the routers list's bulk actions for this one router,
/// and what only applies to one (rename, revoke its credentials, let it enroll again).
pub async fn router_action(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<RouterActionForm>,
) -> Response {
    let back_to = format!("/routers/{id}");
    if let Err(error) = operator.check_csrf(&form.csrf) {
        return back(&back_to, Err(error));
    }
    let value = form.value.as_deref().map(str::trim).unwrap_or_default();
    let (st, caller) = (State(state.clone()), operator.caller.clone());
    let outcome = match form.action.as_str() {
        "rename" => match api_request(json!({ "name": value })) {
            Ok(request) => devices::patch(st, caller, Path(id.clone()), ApiJson(request))
                .await
                .map(|router| format!("Renamed to {}.", router.0.name)),
            Err(error) => Err(error),
        },
        "revoke-credentials" => devices::revoke_credentials(st, caller, Path(id.clone()))
            .await
            .map(|_| {
                "Its credentials are revoked: it is disconnected and must enroll again.".to_owned()
            }),
        "allow-reenrollment" => devices::allow_reenrollment(
            st,
            caller,
            Path(id.clone()),
            ApiJson(AllowReenrollmentRequest {
                valid_for_hours: None,
            }),
        )
        .await
        .map(|_| "It may enroll again, once, within 24 hours.".to_owned()),
        action => bulk_change(&state, &operator, action, value, vec![id.clone()]).await,
    };
    back(&back_to, outcome)
}

#[derive(Debug, Deserialize)]
pub struct RouterActionForm {
    csrf: String,
    action: String,
    value: Option<String>,
}

struct RolloutRow {
    id: String,
    created_at: String,
    status: String,
    phase: String,
    planned: u32,
    succeeded: u32,
    failed: u32,
}

struct ArtifactChoice {
    id: String,
    label: String,
}

fn artifact_choices(artifacts: Vec<artifacts::ArtifactView>) -> Vec<ArtifactChoice> {
    artifacts
        .into_iter()
        .map(|a| ArtifactChoice {
            label: format!(
                "{} {} {} ({})",
                a.kind,
                a.name,
                a.version,
                a.models.join(", ")
            ),
            id: a.id,
        })
        .collect()
}

#[derive(Template)]
#[template(path = "rollouts.html")]
struct RolloutsPage {
    nav: Option<Nav>,
    notice: Option<String>,
    problem: Option<String>,
    csrf: String,
    can_start: bool,
    artifacts: Vec<ArtifactChoice>,
    groups: Vec<String>,
    rollouts: Vec<RolloutRow>,
}

pub async fn rollouts(
    State(state): State<AppState>,
    operator: Operator,
    Query(flash): Query<Flash>,
) -> Response {
    let page = async {
        let list = rollouts::list(
            State(state.clone()),
            operator.caller.clone(),
            ApiQuery(api_request(json!({"limit": 50}))?),
        )
        .await?
        .0;
        let artifacts = artifacts::list(
            State(state.clone()),
            operator.caller.clone(),
            ApiQuery(api_request(json!({}))?),
        )
        .await?
        .0;
        let groups = state
            .store
            .groups(operator.caller.require(Role::Viewer)?)
            .await?;
        Ok::<_, Error>(RolloutsPage {
            nav: Nav::of(&operator),
            notice: flash.notice,
            problem: flash.problem,
            csrf: operator.session.csrf_token.clone(),
            can_start: operator.caller.role.allows(Role::Operator),
            artifacts: artifact_choices(artifacts),
            groups: groups.into_iter().map(|g| g.name).collect(),
            rollouts: list
                .items
                .into_iter()
                .map(|r| RolloutRow {
                    succeeded: r.phases.iter().map(|p| p.succeeded).sum(),
                    failed: r.phases.iter().map(|p| p.failed).sum(),
                    phase: format!("{} of {}", r.phase + 1, r.phases.len()),
                    id: r.id,
                    created_at: time(r.created_at),
                    status: r.status,
                    planned: r.planned,
                })
                .collect(),
        })
    };
    shown(&operator, page.await)
}

#[derive(Debug, Deserialize)]
pub struct RolloutForm {
    csrf: String,
    kind: String,
    artifact_id: Option<String>,
    group: Option<String>,
    tag: Option<String>,
    /// Cumulative phase sizes: `10, 50%, 100%`.
    phases: Option<String>,
    max_concurrent: Option<String>,
}

/// `10, 50%, 100%` as the API's phases.
fn phases(text: &str) -> Result<Vec<Value>> {
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| match part.strip_suffix('%') {
            Some(percent) => percent.trim().parse::<u32>().map(|p| json!({"percent": p})),
            None => part.parse::<u32>().map(|c| json!({"count": c})),
        })
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| {
            Error::invalid(
                "invalid_phases",
                "Phases are router counts or percentages, separated by commas: 10, 50%, 100%",
            )
        })
}

pub async fn start_rollout(
    State(state): State<AppState>,
    operator: Operator,
    axum::Form(form): axum::Form<RolloutForm>,
) -> Response {
    if let Err(error) = operator.check_csrf(&form.csrf) {
        return back("/rollouts", Err(error));
    }
    let request = async {
        let target = match (given(&form.group), given(&form.tag)) {
            (Some(group), None) => json!({"group": group}),
            (None, Some(tag)) => json!({"tag": tag}),
            _ => {
                return Err(Error::invalid(
                    "invalid_target",
                    "Choose a group or give a tag (one of them).",
                ));
            }
        };
        let mut job = json!({"kind": form.kind, "target": target});
        if let Some(artifact) = given(&form.artifact_id) {
            job["artifact_id"] = json!(artifact);
        }
        let mut request = json!({
            "job": job,
            "phases": phases(given(&form.phases).unwrap_or("100%"))?,
        });
        if let Some(max) = given(&form.max_concurrent) {
            request["max_concurrent"] = json!(max.parse::<u32>().map_err(|_| {
                Error::invalid("invalid_max_concurrent", "At most at once is a number.")
            })?);
        }
        let (_, created) = rollouts::create(
            State(state.clone()),
            operator.caller.clone(),
            ApiJson(api_request(request)?),
        )
        .await?;
        Ok(created.0.id)
    };
    match request.await {
        Ok(id) => back(
            &format!("/rollouts/{id}"),
            Ok("Rollout started.".to_owned()),
        ),
        Err(error) => back("/rollouts", Err(error)),
    }
}

struct PhaseRow {
    reaches: u32,
    ready: u32,
    in_flight: u32,
    succeeded: u32,
    failed: u32,
    waiting_for_license: u32,
}

struct RolloutDetail {
    id: String,
    job_id: String,
    status: String,
    phase: u32,
    phase_count: usize,
    reason: Option<String>,
    planned: u32,
    succeeded: u32,
    failed: u32,
    in_flight: u32,
    waiting: u32,
    done_percent: u32,
    phases: Vec<PhaseRow>,
}

#[derive(Template)]
#[template(path = "rollout.html")]
struct RolloutPage {
    nav: Option<Nav>,
    notice: Option<String>,
    problem: Option<String>,
    csrf: String,
    live: bool,
    can_control: bool,
    actions: Vec<&'static str>,
    rollout: RolloutDetail,
}

pub async fn rollout(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
    Query(flash): Query<Flash>,
) -> Response {
    let view = match rollouts::get(State(state), operator.caller.clone(), Path(id)).await {
        Ok(view) => view.0,
        Err(error) => return failed(&operator, error),
    };
    let sum = |f: fn(&rollouts::PhaseView) -> u32| view.phases.iter().map(f).sum::<u32>();
    let (succeeded, failed_count) = (sum(|p| p.succeeded), sum(|p| p.failed));
    let live = matches!(view.status.as_str(), "running" | "paused");
    let actions = match view.status.as_str() {
        "running" => vec!["pause", "cancel"],
        "paused" => vec!["resume", "cancel"],
        _ => Vec::new(),
    };
    render(&RolloutPage {
        nav: Nav::of(&operator),
        notice: flash.notice,
        problem: flash.problem,
        csrf: operator.session.csrf_token.clone(),
        live,
        can_control: operator.caller.role.allows(Role::Operator),
        actions,
        rollout: RolloutDetail {
            done_percent: (succeeded + failed_count)
                .saturating_mul(100)
                .checked_div(view.planned)
                .unwrap_or(0)
                .min(100),
            succeeded,
            failed: failed_count,
            in_flight: sum(|p| p.in_flight),
            waiting: sum(|p| p.waiting_for_license),
            phase_count: view.phases.len(),
            phases: view
                .phases
                .iter()
                .map(|p| PhaseRow {
                    reaches: p.reaches,
                    ready: p.ready,
                    in_flight: p.in_flight,
                    succeeded: p.succeeded,
                    failed: p.failed,
                    waiting_for_license: p.waiting_for_license,
                })
                .collect(),
            id: view.id,
            job_id: view.job.id,
            status: view.status,
            phase: view.phase,
            reason: view.reason,
            planned: view.planned,
        },
    })
}

pub async fn control_rollout(
    State(state): State<AppState>,
    operator: Operator,
    Path((id, action)): Path<(String, String)>,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Response {
    let page = format!("/rollouts/{id}");
    if let Err(error) = operator.check_csrf(&form.csrf) {
        return back(&page, Err(error));
    }
    let (state, caller, path) = (State(state), operator.caller.clone(), Path(id));
    let outcome = match action.as_str() {
        "pause" => rollouts::pause(state, caller, path).await,
        "resume" => rollouts::resume(state, caller, path).await,
        "cancel" => rollouts::cancel(state, caller, path).await,
        _ => Err(Error::NotFound("action")),
    };
    back(
        &page,
        outcome.map(|view| format!("Rollout {}.", view.0.status)),
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct AuditPageQuery {
    actor: Option<String>,
    action: Option<String>,
    outcome: Option<String>,
    before: Option<String>,
}

impl AuditPageQuery {
    fn api(&self, limit: u32, format: Option<&str>) -> Result<users::AuditQuery> {
        let mut query = json!({ "limit": limit });
        for (name, value) in [
            ("actor", &self.actor),
            ("action", &self.action),
            ("outcome", &self.outcome),
            ("before", &self.before),
        ] {
            if let Some(value) = given(value) {
                query[name] = json!(value);
            }
        }
        if let Some(format) = format {
            query["format"] = json!(format);
        }
        api_request(query)
    }

    fn link(&self, path: &str, before: Option<&str>) -> String {
        let pairs: Vec<(&str, &str)> = [
            ("actor", given(&self.actor)),
            ("action", given(&self.action)),
            ("outcome", given(&self.outcome)),
            ("before", before),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name, v)))
        .collect();
        link(path, &pairs)
    }
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    nav: Option<Nav>,
    notice: Option<String>,
    problem: Option<String>,
    actor: String,
    action: String,
    outcome_options: Vec<Choice>,
    csv_link: String,
    entries: Vec<AuditView>,
    next_page: Option<String>,
}

/// Entries shown a page.
const AUDIT_PAGE: u32 = 100;

pub async fn audit(
    State(state): State<AppState>,
    operator: Operator,
    Query(query): Query<AuditPageQuery>,
) -> Response {
    let page = async {
        let list =
            users::audit_list(&state, &operator.caller, &query.api(AUDIT_PAGE, None)?).await?;
        Ok::<_, Error>(AuditPage {
            nav: Nav::of(&operator),
            notice: None,
            problem: None,
            actor: given(&query.actor).unwrap_or_default().to_owned(),
            action: given(&query.action).unwrap_or_default().to_owned(),
            outcome_options: choices(
                &[
                    ("", "any"),
                    ("succeeded", "succeeded"),
                    ("failed", "failed"),
                ],
                given(&query.outcome).unwrap_or(""),
            ),
            csv_link: query.link("/audit.csv", None),
            next_page: list
                .next_before
                .as_deref()
                .map(|before| query.link("/audit", Some(before))),
            entries: list.items,
        })
    };
    shown(&operator, page.await)
}

pub async fn audit_csv(
    State(state): State<AppState>,
    operator: Operator,
    Query(query): Query<AuditPageQuery>,
) -> Response {
    let request = query.api(crate::api::extract::MAX_PAGE, Some("csv"));
    let answer = match request {
        Ok(request) => users::audit(State(state), operator.caller.clone(), ApiQuery(request)).await,
        Err(error) => Err(error),
    };
    answer.unwrap_or_else(|error| failed(&operator, error))
}

struct UserRow {
    id: String,
    /// The logged-in person's own row has no buttons: nobody locks themselves out here.
    own: bool,
    email: String,
    role: String,
    status: String,
    last_login: String,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    nav: Option<Nav>,
    notice: Option<String>,
    problem: Option<String>,
    csrf: String,
    invitation_link: Option<String>,
    roles: Vec<&'static str>,
    users: Vec<UserRow>,
}

async fn users_page(
    state: &AppState,
    operator: &Operator,
    flash: Flash,
    invitation_link: Option<String>,
) -> Response {
    let list = match users::list(State(state.clone()), operator.caller.clone()).await {
        Ok(list) => list.0,
        Err(error) => return failed(operator, error),
    };
    let roles = if operator.caller.role == Role::Provider {
        vec!["provider"]
    } else {
        vec!["viewer", "operator", "admin"]
    };
    render(&UsersPage {
        nav: Nav::of(operator),
        notice: flash.notice,
        problem: flash.problem,
        csrf: operator.session.csrf_token.clone(),
        invitation_link,
        roles,
        users: list
            .into_iter()
            .map(|u| UserRow {
                own: u.id == operator.user.id.to_string(),
                id: u.id,
                email: u.email,
                role: u.role,
                status: u.status,
                last_login: opt_time(u.last_login_at),
            })
            .collect(),
    })
}

pub async fn users(
    State(state): State<AppState>,
    operator: Operator,
    Query(flash): Query<Flash>,
) -> Response {
    users_page(&state, &operator, flash, None).await
}

#[derive(Debug, Deserialize)]
pub struct InviteForm {
    csrf: String,
    email: String,
    role: String,
}

/// Invites a person and shows the one-time link on the page that answers (never in a URL).
pub async fn invite(
    State(state): State<AppState>,
    operator: Operator,
    headers: HeaderMap,
    axum::Form(form): axum::Form<InviteForm>,
) -> Response {
    if let Err(error) = operator.check_csrf(&form.csrf) {
        return back("/users", Err(error));
    }
    let invited = users::invite(
        State(state.clone()),
        operator.caller.clone(),
        ApiJson(users::InviteRequest {
            email: form.email,
            role: form.role,
        }),
    )
    .await;
    match invited {
        Ok((_, Json(view))) => {
            let host = headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            let link = view
                .invitation_path
                .map(|path| format!("https://{host}{path}"));
            let flash = Flash {
                notice: Some(format!("{} invited as {}.", view.email, view.role)),
                problem: None,
            };
            users_page(&state, &operator, flash, link).await
        }
        Err(error) => back("/users", Err(error)),
    }
}

#[derive(Debug, Deserialize)]
pub struct UserActionForm {
    csrf: String,
    /// The new role, for `role`.
    role: Option<String>,
}

/// A button or form on an account's row: approve, change its role, disable, enable, delete.
pub async fn user_action(
    State(state): State<AppState>,
    operator: Operator,
    Path((id, action)): Path<(String, String)>,
    axum::Form(form): axum::Form<UserActionForm>,
) -> Response {
    if let Err(error) = operator.check_csrf(&form.csrf) {
        return back("/users", Err(error));
    }
    let (st, caller) = (State(state), operator.caller.clone());
    let patch = |request: users::UserPatchRequest| {
        users::update(
            st.clone(),
            caller.clone(),
            Path(id.clone()),
            ApiJson(request),
        )
    };
    let outcome = match action.as_str() {
        "approve" => users::approve(st.clone(), caller.clone(), Path(id.clone()))
            .await
            .map(|view| format!("{} may log in now.", view.0.email)),
        "role" => patch(users::UserPatchRequest {
            role: form.role.clone(),
            disabled: None,
        })
        .await
        .map(|view| format!("{} is {} now.", view.0.email, view.0.role)),
        "disable" | "enable" => patch(users::UserPatchRequest {
            role: None,
            disabled: Some(action == "disable"),
        })
        .await
        .map(|view| format!("{} is {}.", view.0.email, view.0.status)),
        "delete" => users::delete(st.clone(), caller.clone(), Path(id.clone()))
            .await
            .map(|_| "The account is deleted.".to_owned()),
        _ => Err(Error::NotFound("action")),
    };
    back("/users", outcome)
}
