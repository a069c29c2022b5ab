//! Enrollment under control: the tenant's policy, accepting or rejecting pending routers, and
//! importing serials ahead of their routers (also how routers in the field are brought over).

use std::collections::{HashMap, HashSet};

use axum::Json;
use axum::extract::{Path, State};
use floatilla_domain::enrollment::{EnrollmentDecision, EnrollmentPolicy};
use floatilla_domain::events::{Event, EventKind};
use floatilla_domain::{GroupId, Role, TenantId, TimerChange, TimerProfile};
use floatilla_store::{Preregistered, Preregistration};

use super::auth::Caller;
use super::devices::load;
use super::extract::ApiJson;
use super::views::{DeviceView, EnrollmentPolicyView, ErrorView, ImportReport, ImportRow};
use crate::error::{Error, Result, checked_name};
use crate::gateway::enroll::checked_field;
use crate::state::AppState;

/// How long an accepted, formerly rejected router may enroll again (its credentials were
/// revoked when it was rejected).
const REENROLL_AFTER_ACCEPT_HOURS: i64 = 24 * 7;

/// The most rows one import may hold.
const MAX_IMPORT_ROWS: usize = 50_000;

/// How this tenant admits new routers.
#[utoipa::path(get, path = "/api/v1/enrollment-policy", tag = "enrollment",
    responses((status = 200, body = EnrollmentPolicyView)))]
pub async fn policy(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<EnrollmentPolicyView>> {
    let tenant = caller.tenant_record(&state, Role::Viewer).await?;
    Ok(Json(EnrollmentPolicyView {
        policy: tenant.enrollment_policy.as_str().to_owned(),
    }))
}

/// Sets how this tenant admits new routers; routers already enrolled are not affected.
#[utoipa::path(put, path = "/api/v1/enrollment-policy", request_body = EnrollmentPolicyView,
    tag = "enrollment", responses((status = 200, body = EnrollmentPolicyView), (status = 400, body = ErrorView)))]
pub async fn set_policy(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<EnrollmentPolicyView>,
) -> Result<Json<EnrollmentPolicyView>> {
    let tenant = caller.require(Role::Admin)?;
    let policy: EnrollmentPolicy = request
        .policy
        .parse()
        .map_err(|e| Error::invalid("invalid_policy", e))?;
    state.store.set_enrollment_policy(tenant, policy).await?;
    Ok(Json(EnrollmentPolicyView {
        policy: policy.as_str().to_owned(),
    }))
}

/// Accepts a pending (or rejected) router: its channel is served from its next connection.
#[utoipa::path(post, path = "/api/v1/devices/{id}/accept", tag = "enrollment",
    responses((status = 200, body = DeviceView), (status = 404, body = ErrorView), (status = 409, body = ErrorView)))]
pub async fn accept(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>> {
    decide(&state, caller, &id, EnrollmentDecision::Accept).await
}

/// Rejects a router: its credentials are revoked, its channel ends, and it cannot enroll again
/// until an admin accepts or deletes it.
#[utoipa::path(post, path = "/api/v1/devices/{id}/reject", tag = "enrollment",
    responses((status = 200, body = DeviceView), (status = 404, body = ErrorView), (status = 409, body = ErrorView)))]
pub async fn reject(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<DeviceView>> {
    decide(&state, caller, &id, EnrollmentDecision::Reject).await
}

async fn decide(
    state: &AppState,
    caller: Caller,
    id: &str,
    decision: EnrollmentDecision,
) -> Result<Json<DeviceView>> {
    let tenant = caller.require(Role::Admin)?;
    let device = load(state, tenant, id).await?;
    let now = state.clock.now();
    let reenroll_until = now + chrono::Duration::hours(REENROLL_AFTER_ACCEPT_HOURS);
    let kind = match decision {
        EnrollmentDecision::Accept => EventKind::EnrollmentAccepted,
        EnrollmentDecision::Reject => EventKind::EnrollmentRejected,
    };
    let message = format!(
        "router {} ({}) was {} by API token {}",
        device.name,
        device.serial,
        decision.state(),
        caller.name()
    );
    let event = Event::new(tenant, now, kind, Some(device.id), message);
    let device = state
        .store
        .decide_enrollment(tenant, device.id, decision, reenroll_until, &event)
        .await?;
    if decision == EnrollmentDecision::Reject {
        crate::cluster::credentials_revoked(state, device.id).await;
    }
    Ok(Json(
        super::devices::device_view(state, tenant, &device).await?,
    ))
}

/// Imports serials from CSV (`serial,name,group`; name and group optional; a header line
/// naming the columns is optional). Each serial gets a router record that its router takes
/// over when it enrolls, with this name and group; a serial already known gets the new name
/// and group. Every row is answered: `created`, `updated` or `failed` with the reason. Rows that
/// fail leave the others alone.
#[utoipa::path(post, path = "/api/v1/devices/import", tag = "enrollment",
    request_body(content = String, content_type = "text/csv"),
    responses((status = 200, body = ImportReport), (status = 400, body = ErrorView)))]
pub async fn import(
    State(state): State<AppState>,
    caller: Caller,
    body: String,
) -> Result<Json<ImportReport>> {
    let tenant = caller.require(Role::Admin)?;
    let rows = parse_rows(&body)?;
    let mut groups = GroupNames::default();
    let mut seen = HashSet::new();
    let mut report = Vec::with_capacity(rows.len());
    let mut entries = Vec::new();
    for row in rows {
        let checked = match row.fields {
            Ok(fields) => check_row(&state, tenant, &mut groups, &mut seen, &fields).await?,
            Err(error) => Err(error),
        };
        match checked {
            Ok(entry) => {
                report.push(ImportRow {
                    line: row.line,
                    serial: Some(entry.serial.clone()),
                    result: String::new(),
                    device_id: None,
                    error: None,
                });
                entries.push((report.len() - 1, entry));
            }
            Err(error) => report.push(ImportRow {
                line: row.line,
                serial: row.serial,
                result: "failed".into(),
                device_id: None,
                error: Some(ErrorView {
                    code: error.code().to_owned(),
                    message: error.to_string(),
                }),
            }),
        }
    }
    let (positions, entries): (Vec<usize>, Vec<Preregistration>) = entries.into_iter().unzip();
    let outcomes = state
        .store
        .preregister(tenant, &entries, state.clock.now())
        .await?;
    for ((position, outcome), entry) in positions.into_iter().zip(outcomes).zip(&entries) {
        let (result, id) = match outcome {
            Preregistered::Created(id) => ("created", id),
            Preregistered::Updated(id) => {
                // A connected router that moved takes up its new group's heartbeat.
                let change = TimerChange::Router {
                    group: entry.group_id,
                    profile: groups.profile(entry.group_id),
                };
                crate::cluster::timers_changed(&state, Some(id), change).await;
                ("updated", id)
            }
        };
        report[position].result = result.into();
        report[position].device_id = Some(id.to_string());
    }
    let count = |result: &str| report.iter().filter(|r| r.result == result).count() as u64;
    Ok(Json(ImportReport {
        created: count("created"),
        updated: count("updated"),
        failed: count("failed"),
        rows: report,
    }))
}

/// One data row of the file: its line, and its fields or why it cannot be read.
struct CsvRow {
    line: u64,
    serial: Option<String>,
    fields: Result<Vec<String>>,
}

fn parse_rows(body: &str) -> Result<Vec<CsvRow>> {
    let mut reader = csv_reader(body);
    let mut rows = Vec::new();
    let mut lines = LineCounter::default();
    for (index, record) in reader.records().enumerate() {
        let line = record
            .as_ref()
            .ok()
            .and_then(|r| r.position())
            .map_or(index as u64 + 1, |p| lines.line_at(body, p.byte()));
        let fields = match record {
            Ok(record) => {
                let fields: Vec<String> = record.iter().map(str::to_owned).collect();
                let is_header = index == 0
                    && fields
                        .first()
                        .is_some_and(|f| f.eq_ignore_ascii_case("serial"));
                if is_header || fields.iter().all(String::is_empty) {
                    continue;
                }
                Ok(fields)
            }
            Err(error) => Err(Error::invalid("invalid_csv", error.to_string())),
        };
        if rows.len() == MAX_IMPORT_ROWS {
            return Err(Error::invalid(
                "too_many_rows",
                format!("an import holds at most {MAX_IMPORT_ROWS} rows"),
            ));
        }
        rows.push(CsvRow {
            line,
            serial: fields.as_ref().ok().and_then(|f| f.first().cloned()),
            fields,
        });
    }
    if rows.is_empty() {
        return Err(Error::invalid(
            "empty_import",
            "the file holds no rows (expected serial,name,group)",
        ));
    }
    Ok(rows)
}

/// A reader of an uploaded CSV file: no header assumed (the caller recognises one), rows of any
/// length, fields trimmed.
pub(crate) fn csv_reader(body: &str) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(body.as_bytes())
}

/// The line of each record, counted once through the file: records come in order.
#[derive(Default)]
pub(crate) struct LineCounter {
    /// Newlines before `counted_to`.
    newlines: usize,
    counted_to: usize,
}

impl LineCounter {
    /// The line of the record that starts at `byte`. The reader reports where it began looking,
    /// which is before any blank lines it skipped.
    pub(crate) fn line_at(&mut self, body: &str, byte: u64) -> u64 {
        let bytes = body.as_bytes();
        let mut start = usize::try_from(byte).unwrap_or(usize::MAX).min(bytes.len());
        while start < bytes.len() && matches!(bytes[start], b'\r' | b'\n') {
            start += 1;
        }
        let from = self.counted_to.min(start);
        self.newlines += bytes[from..start].iter().filter(|b| **b == b'\n').count();
        self.counted_to = start;
        self.newlines as u64 + 1
    }
}

/// Groups looked up once per import: their ids by name, and their timer profiles by id.
#[derive(Default)]
struct GroupNames {
    ids: HashMap<String, Option<GroupId>>,
    profiles: HashMap<GroupId, Option<TimerProfile>>,
}

impl GroupNames {
    async fn id(
        &mut self,
        state: &AppState,
        tenant: TenantId,
        name: &str,
    ) -> Result<Option<GroupId>> {
        if let Some(known) = self.ids.get(name) {
            return Ok(*known);
        }
        let group = state.store.group_by_name(tenant, name).await?;
        let id = group.map(|g| {
            self.profiles.insert(g.id, g.timer_profile);
            g.id
        });
        self.ids.insert(name.to_owned(), id);
        Ok(id)
    }

    fn profile(&self, id: Option<GroupId>) -> Option<TimerProfile> {
        id.and_then(|id| self.profiles.get(&id).copied().flatten())
    }
}

/// A row's entry, or why the row fails. The outer error is a store failure, which fails the
/// whole import.
async fn check_row(
    state: &AppState,
    tenant: TenantId,
    groups: &mut GroupNames,
    seen: &mut HashSet<String>,
    fields: &[String],
) -> Result<Result<Preregistration>> {
    if fields.len() > 3 {
        return Ok(Err(Error::invalid(
            "invalid_row",
            format!("expected serial,name,group, found {} columns", fields.len()),
        )));
    }
    let serial = match checked_field("serial", &fields[0], true) {
        Ok(serial) => serial.to_owned(),
        Err(error) => return Ok(Err(error)),
    };
    let name = match fields.get(1).filter(|n| !n.is_empty()) {
        Some(name) => match checked_name("router", name, 200) {
            Ok(name) => name,
            Err(error) => return Ok(Err(error)),
        },
        None => serial.clone(),
    };
    let group_id = match fields.get(2).filter(|g| !g.is_empty()) {
        Some(group) => match groups.id(state, tenant, group).await? {
            Some(id) => Some(id),
            None => {
                return Ok(Err(Error::invalid(
                    "unknown_group",
                    format!("there is no group named `{group}`"),
                )));
            }
        },
        None => None,
    };
    if !seen.insert(serial.clone()) {
        return Ok(Err(Error::invalid(
            "duplicate_serial",
            format!("serial {serial} appears earlier in this file"),
        )));
    }
    Ok(Ok(Preregistration {
        serial,
        name,
        group_id,
    }))
}
