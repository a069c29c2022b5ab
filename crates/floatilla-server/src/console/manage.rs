//! The console's list-and-form pages: jobs, artifacts, groups and tags, enrollment (tokens,
//! pending approvals, policy), API tokens, webhooks, and the provider's tenants. Each is a
//! table of what the API lists and the forms that change it, through the API's handlers.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use floatilla_domain::Role;
use serde::Serialize;
use serde_json::{Value, json};

use super::pages::{Flash, Nav, api_request, back, failed, field, link, render};
use super::session::Operator;
use crate::api::extract::{ApiJson, ApiQuery};
use crate::api::{artifacts, devices, enrollment, groups, jobs, provider, tags, tokens, webhooks};
use crate::error::{Error, Result};
use crate::state::AppState;

struct Field {
    name: &'static str,
    label: &'static str,
    kind: &'static str,
    options: Vec<&'static str>,
    required: bool,
}

fn text(name: &'static str, label: &'static str, required: bool) -> Field {
    Field {
        name,
        label,
        kind: "text",
        options: Vec::new(),
        required,
    }
}

fn choice(name: &'static str, label: &'static str, options: Vec<&'static str>) -> Field {
    Field {
        name,
        label,
        kind: "text",
        options,
        required: true,
    }
}

fn file(name: &'static str, label: &'static str) -> Field {
    Field {
        name,
        label,
        kind: "file",
        options: Vec::new(),
        required: true,
    }
}

struct FormSpec {
    action: String,
    submit: &'static str,
    /// Sent as `multipart/form-data`: it carries a file.
    multipart: bool,
    fields: Vec<Field>,
}

struct RowAction {
    url: String,
    label: &'static str,
}

struct Row {
    cells: Vec<String>,
    link: Option<String>,
    actions: Vec<RowAction>,
}

struct Section {
    heading: &'static str,
    headers: Vec<&'static str>,
    rows: Vec<Row>,
    has_actions: bool,
    form: Option<FormSpec>,
}

impl Section {
    /// A table of `items` (API views), one column per `(header, field)`.
    fn of<T: Serialize>(
        heading: &'static str,
        items: &[T],
        columns: &[(&'static str, &'static str)],
        row_extras: impl Fn(&Value) -> (Option<String>, Vec<RowAction>),
    ) -> Self {
        let rows: Vec<Row> = items
            .iter()
            .map(|item| {
                let value = serde_json::to_value(item).unwrap_or(Value::Null);
                let (link, actions) = row_extras(&value);
                Row {
                    cells: columns
                        .iter()
                        .map(|(_, field)| cell(value.pointer(field).unwrap_or(&Value::Null)))
                        .collect(),
                    link,
                    actions,
                }
            })
            .collect();
        Section {
            heading,
            headers: columns.iter().map(|(header, _)| *header).collect(),
            has_actions: rows.iter().any(|row| !row.actions.is_empty()),
            rows,
            form: None,
        }
    }

    fn with_form(mut self, allowed: bool, form: FormSpec) -> Self {
        if allowed {
            self.form = Some(form);
        }
        self
    }
}

fn no_extras(_: &Value) -> (Option<String>, Vec<RowAction>) {
    (None, Vec::new())
}

/// A JSON value as a table cell: times in UTC, lists joined, nothing as empty.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Bool(true) => "yes".to_owned(),
        Value::Bool(false) => "no".to_owned(),
        Value::String(text) => match chrono::DateTime::parse_from_rfc3339(text) {
            Ok(at) => at
                .with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M UTC")
                .to_string(),
            Err(_) => text.clone(),
        },
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(", "),
        Value::Object(map) => map
            .iter()
            .map(|(key, value)| format!("{key} {}", cell(value)))
            .collect::<Vec<_>>()
            .join(", "),
        Value::Number(number) => number.to_string(),
    }
}

/// A row's button to `verb` it, while its `field` (`revoked_at`, `cancelled_at`) is unset.
fn until_set(
    field: &'static str,
    page: &'static str,
    verb: &'static str,
) -> impl Fn(&Value) -> (Option<String>, Vec<RowAction>) {
    move |item| {
        let actions = item[field]
            .is_null()
            .then(|| RowAction {
                url: format!("/manage/{page}/{}/{verb}", id_of(item)),
                label: verb,
            })
            .into_iter()
            .collect();
        (None, actions)
    }
}

fn id_of(value: &Value) -> String {
    value["id"].as_str().unwrap_or_default().to_owned()
}

#[derive(Template)]
#[template(path = "manage.html")]
struct ManagePage {
    nav: Option<Nav>,
    notice: Option<String>,
    problem: Option<String>,
    csrf: String,
    title: &'static str,
    secret: Option<(String, String)>,
    sections: Vec<Section>,
}

/// Which page: its title and its sections as `operator` sees them.
async fn sections(
    state: &AppState,
    operator: &Operator,
    page: &str,
) -> Result<(&'static str, Vec<Section>)> {
    let caller = || operator.caller.clone();
    let st = || State(state.clone());
    let operates = operator.caller.role.allows(Role::Operator);
    Ok(match page {
        "jobs" => {
            let list = jobs::list(
                st(),
                caller(),
                ApiQuery(api_request(json!({"limit": 100}))?),
            )
            .await?
            .0;
            let jobs = Section::of(
                "",
                &list.items,
                &[
                    ("Job", "/id"),
                    ("Kind", "/kind"),
                    ("Created by", "/created_by"),
                    ("Created", "/created_at"),
                    ("Cancelled", "/cancelled_at"),
                    ("Executions", "/executions"),
                ],
                |job| {
                    let link = Some(format!("/jobs/{}", id_of(job)));
                    match operates {
                        true => (link, until_set("cancelled_at", "jobs", "cancel")(job).1),
                        false => (link, Vec::new()),
                    }
                },
            );
            ("Jobs", vec![jobs])
        }
        "artifacts" => {
            let list = artifacts::list(st(), caller(), ApiQuery(api_request(json!({}))?))
                .await?
                .0;
            let artifacts = Section::of(
                "",
                &list,
                &[
                    ("Name", "/name"),
                    ("Kind", "/kind"),
                    ("Version", "/version"),
                    ("Models", "/models"),
                    ("Bytes", "/size"),
                    ("SHA-256", "/sha256"),
                    ("Uploaded by", "/created_by"),
                    ("Uploaded", "/created_at"),
                ],
                |artifact| match operates {
                    true => (
                        None,
                        vec![RowAction {
                            url: format!("/manage/artifacts/{}/delete", id_of(artifact)),
                            label: "delete",
                        }],
                    ),
                    false => no_extras(artifact),
                },
            )
            .with_form(
                operates,
                FormSpec {
                    action: "/artifacts/upload".to_owned(),
                    submit: "Upload",
                    multipart: true,
                    fields: vec![
                        choice(
                            "kind",
                            "Kind",
                            vec!["firmware", "software", "config", "certificates"],
                        ),
                        text("name", "Name", true),
                        text("version", "Version", true),
                        text("models", "Models, comma-separated (empty: any)", false),
                        file("file", "File"),
                    ],
                },
            );
            ("Artifacts", vec![artifacts])
        }
        "groups" => {
            let list = groups::list(st(), caller()).await?.0;
            let tag_list = tags::list(st(), caller()).await?.0;
            let groups = Section::of(
                "Groups",
                &list,
                &[
                    ("Name", "/name"),
                    ("Maintenance window", "/maintenance_window"),
                    ("Heartbeat", "/timer_profile"),
                    ("Created", "/created_at"),
                ],
                |group| (Some(format!("/groups/{}", id_of(group))), Vec::new()),
            )
            .with_form(
                operates,
                FormSpec {
                    action: "/manage/groups".to_owned(),
                    multipart: false,
                    submit: "Create group",
                    fields: vec![
                        text("name", "Name", true),
                        text(
                            "maintenance_window",
                            "Maintenance window (02:00-04:00 Europe/Berlin)",
                            false,
                        ),
                    ],
                },
            );
            let tags = Section::of(
                "Tags",
                &tag_list,
                &[("Tag", "/tag"), ("Routers", "/routers")],
                |tag| {
                    let name = tag["tag"].as_str().unwrap_or_default();
                    (Some(link("/routers", &[("tag", name)])), Vec::new())
                },
            );
            ("Groups and tags", vec![groups, tags])
        }
        "enrollment" => {
            let tokens = tokens::list_enrollment_tokens(st(), caller()).await?.0;
            let pending = devices::list(
                st(),
                caller(),
                ApiQuery(api_request(json!({"enrollment": "pending", "limit": 200}))?),
            )
            .await?
            .0;
            let policy = enrollment::policy(st(), caller()).await?.0;
            let tokens = Section::of(
                "Enrollment tokens",
                &tokens,
                &[
                    ("Name", "/name"),
                    ("Group", "/group"),
                    ("Uses", "/uses"),
                    ("At most", "/max_uses"),
                    ("Expires", "/expires_at"),
                    ("Revoked", "/revoked_at"),
                ],
                until_set("revoked_at", "enrollment", "revoke"),
            )
            .with_form(
                true,
                FormSpec {
                    action: "/manage/enrollment".to_owned(),
                    multipart: false,
                    submit: "Create token",
                    fields: vec![
                        text("name", "Name", true),
                        text("group", "Group (optional)", false),
                        text("max_uses", "At most so many routers (optional)", false),
                    ],
                },
            );
            let approvals = Section::of(
                "Waiting for approval",
                &pending.items,
                &[
                    ("Serial", "/serial"),
                    ("Model", "/model"),
                    ("Firmware", "/firmware"),
                    ("Since", "/created_at"),
                ],
                |router| {
                    let id = id_of(router);
                    (
                        Some(format!("/routers/{id}")),
                        vec![
                            RowAction {
                                url: format!("/manage/approvals/{id}/accept"),
                                label: "accept",
                            },
                            RowAction {
                                url: format!("/manage/approvals/{id}/reject"),
                                label: "reject",
                            },
                        ],
                    )
                },
            );
            let policy = Section::of(
                "Policy",
                &[policy],
                &[("New routers", "/policy")],
                no_extras,
            )
            .with_form(
                true,
                FormSpec {
                    action: "/manage/policy".to_owned(),
                    multipart: false,
                    submit: "Set policy",
                    fields: vec![choice(
                        "policy",
                        "New routers are",
                        vec!["open", "approval", "preregistered"],
                    )],
                },
            );
            ("Enrollment", vec![tokens, approvals, policy])
        }
        "api-tokens" => {
            let list = tokens::list_api_tokens(st(), caller()).await?.0;
            let tokens = Section::of(
                "",
                &list,
                &[
                    ("Name", "/name"),
                    ("Role", "/role"),
                    ("Created", "/created_at"),
                    ("Revoked", "/revoked_at"),
                ],
                until_set("revoked_at", "api-tokens", "revoke"),
            )
            .with_form(
                true,
                FormSpec {
                    action: "/manage/api-tokens".to_owned(),
                    multipart: false,
                    submit: "Create token",
                    fields: vec![
                        text("name", "Name", true),
                        choice("role", "Role", vec!["viewer", "operator", "admin"]),
                    ],
                },
            );
            ("API tokens", vec![tokens])
        }
        "webhooks" => {
            let list = webhooks::list(st(), caller()).await?.0;
            let hooks = Section::of(
                "",
                &list,
                &[
                    ("URL", "/url"),
                    ("Events", "/events"),
                    ("Created", "/created_at"),
                ],
                |hook| {
                    (
                        None,
                        vec![RowAction {
                            url: format!("/manage/webhooks/{}/delete", id_of(hook)),
                            label: "delete",
                        }],
                    )
                },
            )
            .with_form(
                true,
                FormSpec {
                    action: "/manage/webhooks".to_owned(),
                    multipart: false,
                    submit: "Add webhook",
                    fields: vec![
                        text("url", "HTTPS URL", true),
                        text("secret", "Signing secret", true),
                        text("events", "Event kinds, comma-separated (empty: all)", false),
                    ],
                },
            );
            ("Webhooks", vec![hooks])
        }
        "tenants" => {
            let list = provider::list_tenants(st(), caller()).await?.0;
            let tenants = Section::of(
                "",
                &list,
                &[
                    ("Name", "/name"),
                    ("Contact", "/contact_email"),
                    ("Capacity", "/usage/capacity"),
                    ("In use", "/usage/in_use"),
                    ("Excess", "/usage/excess"),
                    ("Created", "/created_at"),
                    ("Suspended", "/suspended_at"),
                ],
                |tenant| {
                    let verb = if tenant["suspended_at"].is_null() {
                        "suspend"
                    } else {
                        "resume"
                    };
                    let id = id_of(tenant);
                    (
                        Some(format!("/tenants/{id}")),
                        vec![RowAction {
                            url: format!("/manage/tenants/{id}/{verb}"),
                            label: verb,
                        }],
                    )
                },
            )
            .with_form(
                true,
                FormSpec {
                    action: "/manage/tenants".to_owned(),
                    multipart: false,
                    submit: "Create tenant",
                    fields: vec![
                        text("name", "Name", true),
                        text("contact_email", "Contact e-mail (optional)", false),
                    ],
                },
            );
            ("Tenants", vec![tenants])
        }
        "activation-codes" => {
            let list = provider::list_codes(st(), caller(), ApiQuery(api_request(json!({}))?))
                .await?
                .0;
            let codes = Section::of(
                "Issued, newest first",
                &list,
                &[
                    ("Code", "/code"),
                    ("Seats", "/seats"),
                    ("Months", "/term_months"),
                    ("Batch", "/batch_id"),
                    ("Created", "/created_at"),
                    ("State", "/state"),
                    ("Redeemed", "/redeemed_at"),
                    ("By tenant", "/tenant_id"),
                    ("License ends", "/license_ends_at"),
                ],
                no_extras,
            )
            .with_form(
                true,
                FormSpec {
                    action: "/manage/activation-codes".to_owned(),
                    submit: "Create codes (CSV download)",
                    multipart: false,
                    fields: vec![
                        text("count", "How many", true),
                        text("seats", "Seats each", true),
                        text("term_months", "Months from redemption", true),
                    ],
                },
            );
            ("Activation codes", vec![codes])
        }
        _ => return Err(Error::NotFound("page")),
    })
}

async fn show(
    state: &AppState,
    operator: &Operator,
    page: &str,
    flash: Flash,
    secret: Option<(String, String)>,
) -> Response {
    match sections(state, operator, page).await {
        Ok((title, sections)) => render(&ManagePage {
            nav: Nav::of(operator),
            notice: flash.notice,
            problem: flash.problem,
            csrf: operator.session.csrf_token.clone(),
            title,
            secret,
            sections,
        }),
        Err(error) => failed(operator, error),
    }
}

pub async fn page(
    State(state): State<AppState>,
    operator: Operator,
    Path(page): Path<String>,
    Query(flash): Query<Flash>,
) -> Response {
    show(&state, &operator, &page, flash, None).await
}

/// A form that creates something: the new thing's secret, if it has one, is shown once on
/// the page that answers.
pub async fn create(
    State(state): State<AppState>,
    operator: Operator,
    Path(page): Path<String>,
    axum::Form(fields): axum::Form<Vec<(String, String)>>,
) -> Response {
    let back_to = format!("/manage/{page}");
    if let Err(error) = operator.check_csrf(&field(&fields, "csrf").unwrap_or_default()) {
        return back(&back_to, Err(error));
    }
    let get = |name: &str| field(&fields, name);
    let (st, caller) = (State(state.clone()), operator.caller.clone());
    if page == "activation-codes" {
        return match new_codes(st, caller, &get).await {
            Ok(csv) => csv,
            Err(error) => back(&back_to, Err(error)),
        };
    }
    let created: Result<(String, Option<(String, String)>)> = async {
        Ok(match page.as_str() {
            "groups" => {
                let mut request = json!({"name": get("name").unwrap_or_default()});
                if let Some(window) = get("maintenance_window") {
                    request["maintenance_window"] = json!(window);
                }
                let group = groups::create(st, caller, ApiJson(api_request(request)?)).await?;
                (format!("Group {} created.", group.1.0.name), None)
            }
            "enrollment" => {
                let mut request = json!({"name": get("name").unwrap_or_default()});
                if let Some(group) = get("group") {
                    request["group"] = json!(group);
                }
                if let Some(max) = get("max_uses") {
                    request["max_uses"] = json!(max.parse::<u32>().map_err(|_| {
                        Error::invalid("invalid_max_uses", "At most so many routers is a number.")
                    })?);
                }
                let token =
                    tokens::create_enrollment_token(st, caller, ApiJson(api_request(request)?))
                        .await?
                        .1
                        .0;
                let secret = token
                    .token
                    .map(|t| ("Give this enrollment token to the routers".to_owned(), t));
                (format!("Enrollment token {} created.", token.name), secret)
            }
            "policy" => {
                let request = json!({"policy": get("policy").unwrap_or_default()});
                let policy =
                    enrollment::set_policy(st, caller, ApiJson(api_request(request)?)).await?;
                (format!("New routers are now {}.", policy.0.policy), None)
            }
            "api-tokens" => {
                let request = json!({
                    "name": get("name").unwrap_or_default(),
                    "role": get("role").unwrap_or_default(),
                });
                let token = tokens::create_api_token(st, caller, ApiJson(api_request(request)?))
                    .await?
                    .1
                    .0;
                let secret = token.token.map(|t| ("The API token".to_owned(), t));
                (format!("API token {} created.", token.name), secret)
            }
            "webhooks" => {
                let events: Vec<String> = get("events")
                    .map(|list| list.split(',').map(|e| e.trim().to_owned()).collect())
                    .unwrap_or_default();
                let request = json!({
                    "url": get("url").unwrap_or_default(),
                    "secret": get("secret").unwrap_or_default(),
                    "events": events,
                });
                let hook = webhooks::create(st, caller, ApiJson(api_request(request)?)).await?;
                (format!("Webhook to {} added.", hook.1.0.url), None)
            }
            "tenants" => {
                let mut request = json!({"name": get("name").unwrap_or_default()});
                if let Some(contact) = get("contact_email") {
                    request["contact_email"] = json!(contact);
                }
                let tenant =
                    provider::create_tenant(st, caller, ApiJson(api_request(request)?)).await?;
                (format!("Tenant {} created.", tenant.1.0.name), None)
            }
            _ => return Err(Error::NotFound("page")),
        })
    }
    .await;
    let shown = if page == "policy" {
        "enrollment"
    } else {
        page.as_str()
    };
    match created {
        Ok((notice, Some(secret))) => {
            let flash = Flash::notice(notice);
            show(&state, &operator, shown, flash, Some(secret)).await
        }
        Ok((notice, None)) => back(&format!("/manage/{shown}"), Ok(notice)),
        Err(error) => back(&format!("/manage/{shown}"), Err(error)),
    }
}

/// A batch of activation codes, answered as the API's CSV file, to download.
async fn new_codes(
    st: State<AppState>,
    caller: crate::api::auth::Caller,
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Response> {
    let number = |name: &str, label: &str| {
        get(name)
            .unwrap_or_default()
            .parse::<u32>()
            .map_err(|_| Error::invalid("invalid_form", format!("{label} is a whole number")))
    };
    let request = json!({
        "count": number("count", "How many")?,
        "seats": number("seats", "Seats each")?,
        "term_months": number("term_months", "Months from redemption")?,
    });
    let mut csv = provider::create_codes(st, caller, ApiJson(api_request(request)?)).await?;
    csv.headers_mut().insert(
        http::header::CONTENT_DISPOSITION,
        http::HeaderValue::from_static("attachment; filename=\"activation-codes.csv\""),
    );
    Ok(csv)
}

/// A button on a row: revoke, delete, cancel, accept, reject, suspend, resume.
pub async fn act(
    State(state): State<AppState>,
    operator: Operator,
    Path((page, id, verb)): Path<(String, String, String)>,
    axum::Form(fields): axum::Form<Vec<(String, String)>>,
) -> Response {
    let shown = if page == "approvals" {
        "enrollment"
    } else {
        page.as_str()
    };
    let back_to = format!("/manage/{shown}");
    if let Err(error) = operator.check_csrf(&field(&fields, "csrf").unwrap_or_default()) {
        return back(&back_to, Err(error));
    }
    let (st, caller, path) = (State(state), operator.caller.clone(), Path(id));
    let done: Result<String> = match (page.as_str(), verb.as_str()) {
        ("jobs", "cancel") => jobs::cancel(st, caller, path)
            .await
            .map(|_| "Job cancelled.".to_owned()),
        ("enrollment", "revoke") => tokens::revoke_enrollment_token(st, caller, path)
            .await
            .map(|_| "Enrollment token revoked.".to_owned()),
        ("api-tokens", "revoke") => tokens::revoke_api_token(st, caller, path)
            .await
            .map(|_| "API token revoked.".to_owned()),
        ("artifacts", "delete") => artifacts::delete(st, caller, path)
            .await
            .map(|_| "Artifact deleted.".to_owned()),
        ("webhooks", "delete") => webhooks::delete(st, caller, path)
            .await
            .map(|_| "Webhook deleted.".to_owned()),
        ("approvals", "accept") => enrollment::accept(st, caller, path)
            .await
            .map(|router| format!("{} accepted.", router.0.serial)),
        ("approvals", "reject") => enrollment::reject(st, caller, path)
            .await
            .map(|router| format!("{} rejected.", router.0.serial)),
        ("tenants", "suspend") => provider::suspend_tenant(st, caller, path)
            .await
            .map(|tenant| format!("{} suspended.", tenant.0.name)),
        ("tenants", "resume") => provider::resume_tenant(st, caller, path)
            .await
            .map(|tenant| format!("{} resumed.", tenant.0.name)),
        _ => Err(Error::NotFound("action")),
    };
    back(&back_to, done)
}

/// The provider has no fleet of its own: its console starts at its tenants.
pub fn provider_home() -> Response {
    Redirect::to("/manage/tenants").into_response()
}
