//! The console's licenses page: the pool and each license; on premises, installing a license
//! file bound to this installation; in the cloud, redeeming activation codes one by one or from
//! a CSV file; removing a license; usage history as CSV. A change that would make routers
//! excess shows which ones first, and goes ahead only when confirmed.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Multipart, Path, Query, State};
use axum::response::Response;
use floatilla_domain::{Mode, Role};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::json;

use super::pages::{Flash, Nav, api_request, back, failed, render, seats_text, shown, time};
use super::session::Operator;
use crate::api::activation::{self, CodeImportRow};
use crate::api::extract::{ApiJson, ApiQuery};
use crate::api::licensing;
use crate::api::views::RouterRef;
use crate::error::{Error, Result};
use crate::state::AppState;

struct LicenseRow {
    id: String,
    name: String,
    serial: String,
    seats: String,
    not_before: String,
    not_after: String,
    status: String,
    counting: &'static str,
}

#[derive(Template)]
#[template(path = "licenses.html")]
struct LicensesPage {
    nav: Option<Nav>,
    notice: Option<String>,
    problem: Option<String>,
    csrf: String,
    can_change: bool,
    cloud: bool,
    installation_id: String,
    capacity: String,
    in_use: u64,
    free: String,
    excess: u64,
    explanation: Option<String>,
    next_change: Option<String>,
    licenses: Vec<LicenseRow>,
    imported: Vec<CodeImportRow>,
}

pub async fn licenses(
    State(state): State<AppState>,
    operator: Operator,
    Query(flash): Query<Flash>,
) -> Response {
    shown(
        &operator,
        licenses_page(&state, &operator, flash, Vec::new()).await,
    )
}

async fn licenses_page(
    state: &AppState,
    operator: &Operator,
    flash: Flash,
    imported: Vec<CodeImportRow>,
) -> Result<LicensesPage> {
    let pool = licensing::pool(State(state.clone()), operator.caller.clone())
        .await?
        .0;
    let list = licensing::list(State(state.clone()), operator.caller.clone())
        .await?
        .0;
    Ok(LicensesPage {
        nav: Nav::of(operator),
        notice: flash.notice,
        problem: flash.problem,
        csrf: operator.session.csrf_token.clone(),
        can_change: operator.caller.role.allows(Role::Admin),
        cloud: state.installation.mode == Mode::Cloud,
        installation_id: state.installation.id.clone(),
        capacity: seats_text(&pool.capacity),
        in_use: pool.in_use,
        free: pool
            .free
            .map_or_else(|| "unlimited".to_owned(), |f| f.to_string()),
        excess: pool.excess,
        explanation: pool.explanation,
        next_change: pool.next_change.map(|c| c.description),
        licenses: list
            .items
            .into_iter()
            .map(|l| LicenseRow {
                seats: serde_json::to_value(l.seats)
                    .map(|v| seats_text(&v))
                    .unwrap_or_default(),
                id: l.id,
                name: l.name,
                serial: l.serial.unwrap_or_default(),
                not_before: time(l.not_before),
                not_after: l.not_after.map_or_else(|| "permanent".to_owned(), time),
                status: l.status,
                counting: if l.counting { "yes" } else { "no" },
            })
            .collect(),
        imported,
    })
}

/// What a change of licenses would do to the routers holding seats, asked before it is made.
#[derive(Template)]
#[template(path = "downgrade.html")]
struct DowngradePage {
    nav: Option<Nav>,
    notice: Option<String>,
    problem: Option<String>,
    csrf: String,
    change: &'static str,
    from: String,
    to: String,
    routers: Vec<RouterRef>,
    /// Where the confirmation posts, with `acknowledge_downgrade`.
    confirm_action: String,
    confirm: &'static str,
    /// The license file to install, carried through the confirmation.
    content: Option<String>,
}

/// How to ask for a change of licenses to be confirmed.
struct Confirmation {
    /// The change, as the start of a sentence: "Removing this license".
    change: &'static str,
    /// Where the confirmation posts.
    action: String,
    /// The confirming button's words.
    button: &'static str,
    /// The license file to install, carried through the confirmation.
    content: Option<String>,
}

/// The form's answer to a change of licenses: back to the licenses page with what came of it,
/// or, when routers would become excess, the page that names them and asks to confirm.
fn changed(operator: &Operator, outcome: Result<String>, confirmation: Confirmation) -> Response {
    match outcome {
        Err(Error::DowngradeRequiresAcknowledgement { from, to, routers }) => {
            render(&DowngradePage {
                nav: Nav::of(operator),
                notice: None,
                problem: None,
                csrf: operator.session.csrf_token.clone(),
                change: confirmation.change,
                from,
                to,
                routers,
                confirm_action: confirmation.action,
                confirm: confirmation.button,
                content: confirmation.content,
            })
        }
        outcome => back("/licenses", outcome),
    }
}

/// The fields of a multipart form, the file (or a license text carried through a
/// confirmation) as bytes.
async fn multipart_fields(mut form: Multipart) -> Result<Vec<(String, Bytes)>> {
    let mut fields = Vec::new();
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| Error::invalid("invalid_form", e.to_string()))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        let bytes = field
            .bytes()
            .await
            .map_err(|_| Error::invalid("invalid_form", "the upload broke off"))?;
        fields.push((name, bytes));
    }
    Ok(fields)
}

fn text_of(fields: &[(String, Bytes)], name: &str) -> Option<String> {
    fields
        .iter()
        .find(|(key, bytes)| key == name && !bytes.is_empty())
        .map(|(_, bytes)| String::from_utf8_lossy(bytes).into_owned())
}

/// Installs an uploaded license file (a signed file; an unsigned license as JSON where the
/// server accepts those), as `POST /api/v1/licenses` does.
pub async fn install_license(
    State(state): State<AppState>,
    operator: Operator,
    form: Multipart,
) -> Response {
    let fields = match multipart_fields(form).await {
        Ok(fields) => fields,
        Err(error) => return back("/licenses", Err(error)),
    };
    if let Err(error) = operator.check_csrf(&text_of(&fields, "csrf").unwrap_or_default()) {
        return back("/licenses", Err(error));
    }
    let Some(file) = text_of(&fields, "file").or_else(|| text_of(&fields, "content")) else {
        return back(
            "/licenses",
            Err(Error::invalid("empty_license", "choose the license file")),
        );
    };
    let acknowledged = text_of(&fields, "acknowledge_downgrade").is_some();
    let media_type = if file.trim_start().starts_with('{') {
        "application/json"
    } else {
        "text/plain"
    };
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(media_type));
    let outcome = async {
        let installed = licensing::create(
            State(state.clone()),
            operator.caller.clone(),
            ApiQuery(api_request(json!({"acknowledge_downgrade": acknowledged}))?),
            headers,
            Bytes::from(file.clone()),
        )
        .await?;
        Ok(format!("License {} installed.", installed.1.0.name))
    };
    let outcome = outcome.await;
    let confirmation = Confirmation {
        change: "Installing this license",
        action: "/licenses".to_owned(),
        button: "Install it anyway",
        content: Some(file),
    };
    changed(&operator, outcome, confirmation)
}

#[derive(Debug, Deserialize)]
pub struct RemoveForm {
    csrf: String,
    acknowledge_downgrade: Option<String>,
}

/// Removes a license; its seats stop counting at once.
pub async fn remove_license(
    State(state): State<AppState>,
    operator: Operator,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<RemoveForm>,
) -> Response {
    if let Err(error) = operator.check_csrf(&form.csrf) {
        return back("/licenses", Err(error));
    }
    let acknowledged = form.acknowledge_downgrade.is_some();
    let outcome = async {
        licensing::delete(
            State(state.clone()),
            operator.caller.clone(),
            Path(id.clone()),
            ApiQuery(api_request(json!({"acknowledge_downgrade": acknowledged}))?),
        )
        .await?;
        Ok("License removed.".to_owned())
    };
    let outcome = outcome.await;
    let confirmation = Confirmation {
        change: "Removing this license",
        action: format!("/licenses/{id}/remove"),
        button: "Remove it anyway",
        content: None,
    };
    changed(&operator, outcome, confirmation)
}

#[derive(Debug, Deserialize)]
pub struct RedeemForm {
    csrf: String,
    code: String,
}

/// Redeems one activation code for the tenant (cloud).
pub async fn redeem(
    State(state): State<AppState>,
    operator: Operator,
    axum::Form(form): axum::Form<RedeemForm>,
) -> Response {
    if let Err(error) = operator.check_csrf(&form.csrf) {
        return back("/licenses", Err(error));
    }
    let outcome = async {
        let redeemed = activation::redeem(
            State(state.clone()),
            operator.caller.clone(),
            ApiJson(api_request(json!({"code": form.code.trim()}))?),
        )
        .await?
        .1
        .0;
        Ok(format!(
            "Code {} redeemed: license {} added.",
            redeemed.code, redeemed.license.name
        ))
    };
    back("/licenses", outcome.await)
}

/// Redeems the codes of an uploaded CSV file (cloud), and shows what came of each row.
pub async fn import_codes(
    State(state): State<AppState>,
    operator: Operator,
    form: Multipart,
) -> Response {
    let outcome = async {
        let fields = multipart_fields(form).await?;
        operator.check_csrf(&text_of(&fields, "csrf").unwrap_or_default())?;
        let csv = text_of(&fields, "file")
            .ok_or_else(|| Error::invalid("empty_import", "choose the CSV file of codes"))?;
        Ok(
            activation::import(State(state.clone()), operator.caller.clone(), csv)
                .await?
                .0,
        )
    };
    let report = match outcome.await {
        Ok(report) => report,
        Err(error) => return back("/licenses", Err(error)),
    };
    let flash = Flash::notice(format!(
        "{} codes redeemed, {} failed.",
        report.redeemed, report.failed
    ));
    shown(
        &operator,
        licenses_page(&state, &operator, flash, report.rows).await,
    )
}

/// Which usage history to download: `hour` (the default) or `day`.
#[derive(Debug, Deserialize)]
pub struct UsageCsvQuery {
    granularity: Option<String>,
}

impl UsageCsvQuery {
    /// The API's usage query for this download, as CSV.
    pub(super) fn into_csv_request(self) -> Result<ApiQuery<licensing::UsageQuery>> {
        let granularity = self.granularity.unwrap_or_else(|| "hour".to_owned());
        api_request(json!({"granularity": granularity, "format": "csv"})).map(ApiQuery)
    }
}

pub async fn usage_csv(
    State(state): State<AppState>,
    operator: Operator,
    Query(query): Query<UsageCsvQuery>,
) -> Response {
    let usage = async {
        licensing::usage(
            State(state),
            operator.caller.clone(),
            query.into_csv_request()?,
        )
        .await
    };
    usage.await.unwrap_or_else(|error| failed(&operator, error))
}
