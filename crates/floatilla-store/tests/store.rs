//! The `Store` contract, checked against both backends: every case runs once on a fresh SQLite
//! file (module `sqlite`) and once on a fresh PostgreSQL database (module `postgres`; skipped
//! with a notice when no server is reachable, except in CI).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Duration};
use floatilla_domain::TimerProfile;
use floatilla_domain::accounts::{Actor, AuditEntry, User, UserStatus};
use floatilla_domain::enrollment::{EnrollmentDecision, EnrollmentPolicy, EnrollmentState};
use floatilla_domain::events::{Event, EventFilter, EventKind, Severity};
use floatilla_domain::licensing::activation::ActivationCode;
use floatilla_domain::licensing::{LicenseTerm, Seats};
use floatilla_domain::model::{
    ApiToken, ConnectionRecord, Credential, Device, DeviceFilter, DeviceStatus, EnrollmentToken,
    Group, PageRequest, Tenant, TokenRefusal,
};
use floatilla_domain::{
    ApiTokenId, ConnectionState, CredentialId, DeviceId, DisconnectReason, EnrollmentTokenId,
    GroupId, Role, SessionId, TenantId, Timestamp,
};
use floatilla_domain::{AuditEntryId, UserId};
use floatilla_domain::{CodeBatchId, LicenseId};
use floatilla_store::testing::TestDb;
use floatilla_store::{
    AuditFilter, Backend, ClosedSession, ClusterMessage, CodeFilter, CodeRedemption,
    ConsoleSession, DevicePatch, Enrollment, ExecutionReport, GroupPatch, IssuedCode, License,
    Location, Preregistered, Preregistration, Received, Redemption, Store, StoreError,
    TenantUpdate,
};
use sqlx::Connection;

/// Generates `sqlite::case` and `postgres::case` for each `async fn case(Arc<dyn Store>)`.
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let db = floatilla_store::testing::TestDb::sqlite();
                    let store = db.open().await.expect("open SQLite store");
                    assert_eq!(store.backend(), floatilla_store::Backend::Sqlite);
                    super::$case(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let Some(db) = floatilla_store::testing::TestDb::postgres().await else {
                        return;
                    };
                    let store = db.open().await.expect("open PostgreSQL store");
                    assert_eq!(store.backend(), floatilla_store::Backend::Postgres);
                    super::$case(store).await;
                }
            )*
        }
    };
}

on_both_backends!(
    settings_keep_the_first_value,
    tenants_are_listed_oldest_first,
    group_names_are_unique_per_tenant,
    deleting_a_group_detaches_its_devices_and_tokens,
    enrollment_creates_an_offline_device_with_its_credential,
    max_uses_is_enforced_exactly,
    max_uses_holds_under_concurrent_enrollment,
    expired_revoked_and_unknown_tokens_are_refused,
    reenrollment_keeps_the_device_and_revokes_old_credentials,
    devices_are_listed_by_serial_with_filters_and_keyset_pages,
    device_updates_and_reports,
    credentials_are_revoked_once,
    connecting_with_one_credential_retires_the_others,
    old_connection_history_is_pruned_in_batches,
    superseded_session_does_not_take_the_device_offline,
    last_seen_is_recorded_in_batches_and_never_moves_back,
    closing_a_nodes_sessions_spares_devices_that_reconnected_elsewhere,
    connection_history_is_newest_first,
    api_tokens_are_found_by_hash_and_revoked,
    deleting_a_device_removes_its_credentials_and_history,
    groups_keep_a_timer_profile_that_routers_see,
    an_enrollment_writes_its_event_and_a_refused_one_writes_nothing,
    events_are_listed_newest_first_with_filters_and_pruned,
    preregistered_serials_are_created_or_updated,
    a_preregistered_router_enrolls_into_its_imported_name_and_group,
    the_enrollment_policy_is_kept_per_tenant,
    rejecting_revokes_and_accepting_a_rejected_router_lets_it_enroll_again,
    nodes_that_stop_heartbeating_are_found,
    cluster_messages_reach_every_subscriber,
    provider_tokens_belong_to_no_tenant,
    tenants_are_suspended_renamed_and_deleted_with_what_they_hold,
    activation_codes_are_redeemed_once_into_a_license,
    a_code_redeemed_by_two_tenants_at_once_goes_to_one,
    tags_select_routers_within_their_tenant,
    jobs_keep_each_routers_execution_moving_by_the_rules,
    artifacts_are_stored_in_chunks_and_complete_only_when_finished,
    rollouts_are_leased_released_and_stopped,
    accounts_are_unique_by_email_and_keep_their_sessions,
    the_audit_log_is_filtered_paged_and_pruned,
);

/// A fixed instant with whole milliseconds, the precision the store keeps.
fn at(offset_ms: i64) -> Timestamp {
    DateTime::from_timestamp_millis(1_750_000_000_000 + offset_ms).unwrap()
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

async fn new_tenant(store: &dyn Store) -> TenantId {
    let tenant = Tenant {
        id: TenantId::new(),
        name: unique("tenant"),
        enrollment_policy: EnrollmentPolicy::Open,
        created_at: at(0),
        suspended_at: None,
        contact_email: None,
    };
    store.create_tenant(&tenant).await.unwrap();
    tenant.id
}

async fn new_group(store: &dyn Store, tenant: TenantId, name: &str) -> Group {
    let group = Group {
        id: GroupId::new(),
        tenant_id: tenant,
        name: name.into(),
        timer_profile: None,
        maintenance_window: None,
        created_at: at(0),
    };
    store.create_group(&group).await.unwrap();
    group
}

fn renamed(name: &str) -> GroupPatch {
    GroupPatch {
        name: Some(name.into()),
        ..GroupPatch::default()
    }
}

async fn new_token(
    store: &dyn Store,
    tenant: TenantId,
    max_uses: Option<u32>,
    group: Option<GroupId>,
) -> EnrollmentToken {
    let token = EnrollmentToken {
        id: EnrollmentTokenId::new(),
        tenant_id: tenant,
        name: "line 3".into(),
        secret_hash: unique("hash"),
        max_uses,
        uses: 0,
        expires_at: Some(at(86_400_000)),
        group_id: group,
        revoked_at: None,
        created_at: at(0),
    };
    store.create_enrollment_token(&token).await.unwrap();
    token
}

fn credential(device: DeviceId, now: Timestamp) -> Credential {
    Credential {
        id: CredentialId::new(),
        device_id: device,
        secret_hash: unique("credential"),
        created_at: now,
        expires_at: now + Duration::days(365),
        revoked_at: None,
    }
}

fn enrollment(token: &EnrollmentToken, serial: &str, now: Timestamp) -> Enrollment {
    let device = DeviceId::new();
    Enrollment {
        token_id: token.id,
        tenant_id: token.tenant_id,
        now,
        existing_device: None,
        new_device_id: device,
        serial: serial.into(),
        model: "RUT241".into(),
        firmware: "7.1".into(),
        agent_version: "0.1.0".into(),
        group_id: token.group_id,
        state: EnrollmentState::Accepted,
        credential: credential(device, now),
        event: Event::new(
            token.tenant_id,
            now,
            EventKind::RouterEnrolled,
            Some(device),
            format!("router {serial} enrolled"),
        ),
    }
}

async fn enroll(store: &dyn Store, token: &EnrollmentToken, serial: &str) -> Device {
    store
        .enroll(&enrollment(token, serial, at(1_000)))
        .await
        .unwrap()
        .unwrap()
}

fn connection(device: DeviceId, node: &str, connected_at: Timestamp) -> ConnectionRecord {
    ConnectionRecord {
        session_id: SessionId::new(),
        device_id: device,
        node_id: node.into(),
        remote_addr: "192.0.2.7:40000".into(),
        connected_at,
        disconnected_at: None,
        reason: None,
    }
}

fn all() -> DeviceFilter {
    DeviceFilter::default()
}

fn first(limit: u32) -> PageRequest {
    PageRequest { limit, after: None }
}

fn serials(devices: &[Device]) -> Vec<&str> {
    devices.iter().map(|d| d.serial.as_str()).collect()
}

async fn settings_keep_the_first_value(store: Arc<dyn Store>) {
    assert_eq!(store.setting("mode").await.unwrap(), None);
    assert_eq!(store.init_setting("mode", "cloud").await.unwrap(), "cloud");
    assert_eq!(
        store.init_setting("mode", "on-prem").await.unwrap(),
        "cloud"
    );
    assert_eq!(
        store.setting("mode").await.unwrap().as_deref(),
        Some("cloud")
    );

    // Several processes initialising at once all end up with the one value that was stored.
    let racers = (0..8).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .init_setting("installation_id", &format!("candidate-{i}"))
                .await
                .unwrap()
        })
    });
    let mut seen = HashSet::new();
    for racer in racers.collect::<Vec<_>>() {
        seen.insert(racer.await.unwrap());
    }
    assert_eq!(
        seen.len(),
        1,
        "every initialiser must see the same value: {seen:?}"
    );
    let stored = store.setting("installation_id").await.unwrap().unwrap();
    assert!(seen.contains(&stored));
}

async fn tenants_are_listed_oldest_first(store: Arc<dyn Store>) {
    let newer = Tenant {
        id: TenantId::new(),
        name: "Newer".into(),
        enrollment_policy: EnrollmentPolicy::Open,
        created_at: at(5_000),
        suspended_at: None,
        contact_email: None,
    };
    let older = Tenant {
        id: TenantId::new(),
        name: "Older".into(),
        enrollment_policy: EnrollmentPolicy::Open,
        created_at: at(1_000),
        suspended_at: None,
        contact_email: None,
    };
    store.create_tenant(&newer).await.unwrap();
    store.create_tenant(&older).await.unwrap();
    assert_eq!(
        store.tenants().await.unwrap(),
        vec![older.clone(), newer.clone()]
    );
    assert_eq!(store.tenant(newer.id).await.unwrap(), Some(newer.clone()));
    assert_eq!(store.tenant(TenantId::new()).await.unwrap(), None);
    let again = store.create_tenant(&newer).await.unwrap_err();
    assert!(matches!(again, StoreError::Conflict(_)), "{again:?}");
}

async fn group_names_are_unique_per_tenant(store: Arc<dyn Store>) {
    let tenant = new_tenant(&*store).await;
    let other_tenant = new_tenant(&*store).await;
    let lab = new_group(&*store, tenant, "lab").await;
    let depot = new_group(&*store, tenant, "depot").await;

    let duplicate = Group {
        id: GroupId::new(),
        ..lab.clone()
    };
    match store.create_group(&duplicate).await {
        Err(StoreError::Conflict(message)) => assert!(message.contains("lab"), "{message}"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // The same name in another tenant is a different group.
    let elsewhere = new_group(&*store, other_tenant, "lab").await;

    assert_eq!(
        store.groups(tenant).await.unwrap(),
        vec![depot.clone(), lab.clone()]
    );
    assert_eq!(
        store.groups(other_tenant).await.unwrap(),
        vec![elsewhere.clone()]
    );
    assert_eq!(
        store.group(tenant, lab.id).await.unwrap(),
        Some(lab.clone())
    );
    assert_eq!(store.group(other_tenant, lab.id).await.unwrap(), None);
    assert_eq!(
        store.group_by_name(tenant, "depot").await.unwrap(),
        Some(depot.clone())
    );
    assert_eq!(store.group_by_name(tenant, "nowhere").await.unwrap(), None);

    let taken = store
        .update_group(tenant, depot.id, &renamed("lab"))
        .await
        .unwrap_err();
    assert!(matches!(taken, StoreError::Conflict(_)), "{taken:?}");
    store
        .update_group(tenant, depot.id, &renamed("warehouse"))
        .await
        .unwrap();
    assert_eq!(
        store.group(tenant, depot.id).await.unwrap().unwrap().name,
        "warehouse"
    );
    let missing = store
        .update_group(other_tenant, depot.id, &renamed("x"))
        .await
        .unwrap_err();
    assert!(
        matches!(missing, StoreError::NotFound("group")),
        "{missing:?}"
    );

    let orphan = Group {
        id: GroupId::new(),
        tenant_id: TenantId::new(),
        name: "orphan".into(),
        timer_profile: None,
        maintenance_window: None,
        created_at: at(0),
    };
    let no_tenant = store.create_group(&orphan).await.unwrap_err();
    assert!(
        matches!(no_tenant, StoreError::NotFound("tenant")),
        "{no_tenant:?}"
    );
}

async fn deleting_a_group_detaches_its_devices_and_tokens(store: Arc<dyn Store>) {
    let tenant = new_tenant(&*store).await;
    let group = new_group(&*store, tenant, "field").await;
    let token = new_token(&*store, tenant, None, Some(group.id)).await;
    let device = enroll(&*store, &token, "RT-1").await;
    assert_eq!(device.group_id, Some(group.id));
    assert_eq!(device.group_name.as_deref(), Some("field"));

    store.delete_group(tenant, group.id).await.unwrap();

    let device = store.device(tenant, device.id).await.unwrap().unwrap();
    assert_eq!((device.group_id, device.group_name), (None, None));
    let token = store
        .enrollment_token(tenant, token.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(token.group_id, None);
    assert!(store.groups(tenant).await.unwrap().is_empty());
    let again = store.delete_group(tenant, group.id).await.unwrap_err();
    assert!(matches!(again, StoreError::NotFound("group")), "{again:?}");
}

async fn enrollment_creates_an_offline_device_with_its_credential(store: Arc<dyn Store>) {
    let tenant = new_tenant(&*store).await;
    let group = new_group(&*store, tenant, "north").await;
    let token = new_token(&*store, tenant, None, Some(group.id)).await;
    let request = enrollment(&token, "SN-0001", at(1_000));

    let device = store.enroll(&request).await.unwrap().unwrap();

    assert_eq!(device.id, request.new_device_id);
    assert_eq!(device.tenant_id, tenant);
    assert_eq!(device.serial, "SN-0001");
    assert_eq!(
        device.name, "SN-0001",
        "a new router is named after its serial"
    );
    assert_eq!(
        (
            device.model.as_str(),
            device.firmware.as_str(),
            device.agent_version.as_str()
        ),
        ("RUT241", "7.1", "0.1.0")
    );
    assert_eq!(device.group_id, Some(group.id));
    assert_eq!(device.group_name.as_deref(), Some("north"));
    assert_eq!(device.connection_state, ConnectionState::Offline);
    assert_eq!(device.connected_since, None);
    assert_eq!(device.last_seen, None);
    assert_eq!(device.status, DeviceStatus::default());
    assert_eq!(device.reenroll_allowed_until, None);
    assert_eq!(device.created_at, at(1_000));

    assert_eq!(
        store.device_by_id(device.id).await.unwrap(),
        Some(device.clone())
    );
    assert_eq!(
        store.device_by_serial(tenant, "SN-0001").await.unwrap(),
        Some(device.clone())
    );
    assert_eq!(
        store.credential(request.credential.id).await.unwrap(),
        Some(request.credential.clone())
    );
    let token = store
        .enrollment_token_by_hash(&token.secret_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(token.uses, 1);

    // The same serial cannot be enrolled as a second device.
    let twin = store
        .enroll(&enrollment(&token, "SN-0001", at(2_000)))
        .await
        .unwrap_err();
    assert!(matches!(twin, StoreError::Conflict(_)), "{twin:?}");
    let token = store
        .enrollment_token(tenant, token.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(token.uses, 1, "a failed enrollment must not count a use");
}

async fn max_uses_is_enforced_exactly(store: Arc<dyn Store>) {
    let tenant = new_tenant(&*store).await;
    let token = new_token(&*store, tenant, Some(2), None).await;
    enroll(&*store, &token, "A").await;
    enroll(&*store, &token, "B").await;

    let third = enrollment(&token, "C", at(1_000));
    assert_eq!(
        store.enroll(&third).await.unwrap(),
        Err(TokenRefusal::UsedUp)
    );

    assert_eq!(store.device_by_serial(tenant, "C").await.unwrap(), None);
    assert_eq!(store.credential(third.credential.id).await.unwrap(), None);
    let token = store
        .enrollment_token(tenant, token.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(token.uses, 2);
}

async fn max_uses_holds_under_concurrent_enrollment(store: Arc<dyn Store>) {
    let tenant = new_tenant(&*store).await;
    let token = new_token(&*store, tenant, Some(3), None).await;

    let attempts: Vec<_> = (0..10)
        .map(|i| {
            let store = store.clone();
            let request = enrollment(&token, &format!("RACE-{i:02}"), at(1_000));
            tokio::spawn(async move { store.enroll(&request).await.unwrap() })
        })
        .collect();
    let mut enrolled = 0;
    let mut refused = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(_) => enrolled += 1,
            Err(refusal) => {
                assert_eq!(refusal, TokenRefusal::UsedUp);
                refused += 1;
            }
        }
    }
    assert_eq!((enrolled, refused), (3, 7));
    let token = store
        .enrollment_token(tenant, token.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(token.uses, 3);
    let listed = store
        .list_devices(tenant, &all(), &first(100))
        .await
        .unwrap();
    assert_eq!(listed.total, 3);
}

async fn expired_revoked_and_unknown_tokens_are_refused(store: Arc<dyn Store>) {
    let tenant = new_tenant(&*store).await;
    let token = new_token(&*store, tenant, None, None).await;
    let expiry = token.expires_at.unwrap();

    let late = enrollment(&token, "LATE", expiry);
    assert_eq!(
        store.enroll(&late).await.unwrap(),
        Err(TokenRefusal::Expired)
    );
    let just_in_time = enrollment(&token, "ON-TIME", expiry - Duration::milliseconds(1));
    assert!(store.enroll(&just_in_time).await.unwrap().is_ok());

    store
        .revoke_enrollment_token(tenant, token.id, at(2_000))
        .await
        .unwrap();
    // Revoking again keeps the first revocation time.
    store
        .revoke_enrollment_token(tenant, token.id, at(3_000))
        .await
        .unwrap();
    let revoked = store
        .enrollment_token(tenant, token.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(at(2_000)));
    assert_eq!(revoked.uses, 1);
    let after = enrollment(&token, "AFTER", at(4_000));
    assert_eq!(
        store.enroll(&after).await.unwrap(),
        Err(TokenRefusal::Revoked)
    );
    assert_eq!(store.device_by_serial(tenant, "LATE").await.unwrap(), None);
    assert_eq!(store.device_by_serial(tenant, "AFTER").await.unwrap(), None);

    let other_tenant = new_tenant(&*store).await;
    let wrong_tenant = store
        .revoke_enrollment_token(other_tenant, token.id, at(5_000))
        .await
        .unwrap_err();
    assert!(
        matches!(wrong_tenant, StoreError::NotFound(_)),
        "{wrong_tenant:?}"
    );

    let mut unknown = enrollment(&token, "GHOST", at(1_000));
    unknown.token_id = EnrollmentTokenId::new();
    let error = store.enroll(&unknown).await.unwrap_err();
    assert!(
        matches!(error, StoreError::NotFound("enrollment token")),
        "{error:?}"
    );
}

async fn reenrollment_keeps_the_device_and_revokes_old_credentials(store: Arc<dyn Store>) {
    let tenant = new_tenant(&*store).await;
    let group = new_group(&*store, tenant, "west").await;
    let token = new_token(&*store, tenant, Some(5), None).await;
    let original = enrollment(&token, "RE-1", at(1_000));
    let device = store.enroll(&original).await.unwrap().unwrap();
    let renewal = credential(device.id, at(1_500));
    store.add_credential(&renewal).await.unwrap();
    let patch = DevicePatch {
        name: Some("Pump house".into()),
        group_id: Some(Some(group.id)),
    };
    store
        .update_device(tenant, device.id, &patch)
        .await
        .unwrap();
    store
        .allow_reenrollment(tenant, device.id, at(60_000))
        .await
        .unwrap();
    assert_eq!(
        store
            .device(tenant, device.id)
            .await
            .unwrap()
            .unwrap()
            .reenroll_allowed_until,
        Some(at(60_000))
    );

    let mut again = enrollment(&token, "RE-1", at(10_000));
    again.existing_device = Some(device.id);
    again.model = "RUT956".into();
    again.firmware = "7.4".into();
    again.agent_version = "0.2.0".into();
    again.credential = credential(device.id, at(10_000));
    let rekeyed = store.enroll(&again).await.unwrap().unwrap();

    assert_eq!(rekeyed.id, device.id);
    assert_eq!(rekeyed.name, "Pump house");
    assert_eq!(rekeyed.group_id, Some(group.id));
    assert_eq!(
        (
            rekeyed.model.as_str(),
            rekeyed.firmware.as_str(),
            rekeyed.agent_version.as_str()
        ),
        ("RUT956", "7.4", "0.2.0")
    );
    assert_eq!(rekeyed.reenroll_allowed_until, None);
    for old in [original.credential.id, renewal.id] {
        let old = store.credential(old).await.unwrap().unwrap();
        assert_eq!(old.revoked_at, Some(at(10_000)));
    }
    let new = store
        .credential(again.credential.id)
        .await
        .unwrap()
        .unwrap();
    assert!(new.is_valid_at(at(10_000)));
    assert_eq!(
        store
            .list_devices(tenant, &all(), &first(50))
            .await
            .unwrap()
            .total,
        1
    );
    let token = store
        .enrollment_token(tenant, token.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(token.uses, 2);

    // Re-enrolling a device of another tenant is refused, and counts nothing.
    let other_tenant = new_tenant(&*store).await;
    let other_token = new_token(&*store, other_tenant, None, None).await;
    let mut hijack = enrollment(&other_token, "RE-1", at(11_000));
    hijack.existing_device = Some(device.id);
    let error = store.enroll(&hijack).await.unwrap_err();
    assert!(matches!(error, StoreError::NotFound("device")), "{error:?}");
    let other_token = store
        .enrollment_token(other_tenant, other_token.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(other_token.uses, 0);
}

async fn devices_are_listed_by_serial_with_filters_and_keyset_pages(store: Arc<dyn Store>) {
    let tenant = new_tenant(&*store).await;
    let other_tenant = new_tenant(&*store).await;
    let group = new_group(&*store, tenant, "pumps").await;
    let token = new_token(&*store, tenant, None, None).await;
    let other_token = new_token(&*store, other_tenant, None, None).await;

    // Enrolled out of order: the listing sorts by serial.
    let mut devices = Vec::new();
    for i in (0..25).rev() {
        devices.push(enroll(&*store, &token, &format!("rt-{i:03}")).await);
    }
    devices.sort_by(|a, b| a.serial.cmp(&b.serial));
    let mut others = Vec::new();
    for i in 0..3 {
        others.push(enroll(&*store, &other_token, &format!("rt-{i:03}")).await);
    }
    // Serials read at once: only the tenant's own routers are answered.
    let asked: Vec<DeviceId> = [devices[3].id, devices[24].id, others[0].id].into();
    assert_eq!(
        store.device_serials(tenant, &asked).await.unwrap(),
        HashMap::from([
            (devices[3].id, "rt-003".to_owned()),
            (devices[24].id, "rt-024".to_owned()),
        ])
    );
    assert!(store.device_serials(tenant, &[]).await.unwrap().is_empty());
    // Every third router online, every fourth in the group.
    for device in devices.iter().step_by(3) {
        store
            .record_connect(&connection(device.id, "node-1", at(2_000)), None)
            .await
            .unwrap();
    }
    for device in devices.iter().step_by(4) {
        let patch = DevicePatch {
            group_id: Some(Some(group.id)),
            ..DevicePatch::default()
        };
        store
            .update_device(tenant, device.id, &patch)
            .await
            .unwrap();
    }
    let rename = |i: usize, name: &'static str| {
        let store = store.clone();
        let id = devices[i].id;
        async move {
            let patch = DevicePatch {
                name: Some(name.into()),
                ..DevicePatch::default()
            };
            store.update_device(tenant, id, &patch).await.unwrap();
        }
    };
    rename(5, "Pump 50%_North").await;
    rename(6, "pump 50xxSouth").await;
    rename(7, "Gate\\Control").await;

    // Three pages of ten, linked by next_after.
    let page1 = store
        .list_devices(tenant, &all(), &first(10))
        .await
        .unwrap();
    assert_eq!(page1.total, 25);
    assert_eq!(serials(&page1.items), serials(&devices[0..10]));
    assert_eq!(page1.next_after.as_deref(), Some("rt-009"));
    let page2 = store
        .list_devices(
            tenant,
            &all(),
            &PageRequest {
                limit: 10,
                after: page1.next_after.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(page2.total, 25);
    assert_eq!(serials(&page2.items), serials(&devices[10..20]));
    assert_eq!(page2.next_after.as_deref(), Some("rt-019"));
    let page3 = store
        .list_devices(
            tenant,
            &all(),
            &PageRequest {
                limit: 10,
                after: page2.next_after.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(serials(&page3.items), serials(&devices[20..25]));
    assert_eq!(page3.next_after, None);
    // An exactly full last page has nothing after it.
    let exact = store
        .list_devices(tenant, &all(), &first(25))
        .await
        .unwrap();
    assert_eq!((exact.items.len(), exact.next_after), (25, None));
    assert_eq!(exact.items, devices_now(&*store, tenant, &devices).await);

    // Online routers, paged by four: serials 0, 3, 6, … 24.
    let online = DeviceFilter {
        connection_state: Some(ConnectionState::Online),
        ..all()
    };
    let expected: Vec<String> = (0..25).step_by(3).map(|i| format!("rt-{i:03}")).collect();
    let mut listed = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_devices(tenant, &online, &PageRequest { limit: 4, after })
            .await
            .unwrap();
        assert_eq!(page.total, 9);
        assert!(
            page.items
                .iter()
                .all(|d| d.connection_state == ConnectionState::Online)
        );
        listed.extend(page.items.into_iter().map(|d| d.serial));
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(listed, expected);
    let offline = DeviceFilter {
        connection_state: Some(ConnectionState::Offline),
        ..all()
    };
    assert_eq!(
        store
            .list_devices(tenant, &offline, &first(1))
            .await
            .unwrap()
            .total,
        16
    );

    // By group, and group combined with state: serials 0, 4, 8, … 24 and of those 0, 12, 24.
    let in_group = DeviceFilter {
        group_id: Some(group.id),
        ..all()
    };
    let page = store
        .list_devices(tenant, &in_group, &first(50))
        .await
        .unwrap();
    assert_eq!(
        serials(&page.items),
        [
            "rt-000", "rt-004", "rt-008", "rt-012", "rt-016", "rt-020", "rt-024"
        ]
    );
    assert!(
        page.items
            .iter()
            .all(|d| d.group_name.as_deref() == Some("pumps"))
    );
    let online_in_group = DeviceFilter {
        group_id: Some(group.id),
        connection_state: Some(ConnectionState::Online),
        ..all()
    };
    let page = store
        .list_devices(tenant, &online_in_group, &first(50))
        .await
        .unwrap();
    assert_eq!(serials(&page.items), ["rt-000", "rt-012", "rt-024"]);
    assert_eq!(page.total, 3);

    // Case-insensitive substring of serial or name, with LIKE's wildcards taken literally.
    let query = |q: &str| DeviceFilter {
        query: Some(q.into()),
        ..all()
    };
    let page = store
        .list_devices(tenant, &query("RT-01"), &first(3))
        .await
        .unwrap();
    assert_eq!(page.total, 10);
    assert_eq!(serials(&page.items), ["rt-010", "rt-011", "rt-012"]);
    assert_eq!(page.next_after.as_deref(), Some("rt-012"));
    let page = store
        .list_devices(tenant, &query("PUMP"), &first(50))
        .await
        .unwrap();
    assert_eq!(serials(&page.items), ["rt-005", "rt-006"]);
    let page = store
        .list_devices(tenant, &query("50%_"), &first(50))
        .await
        .unwrap();
    assert_eq!(serials(&page.items), ["rt-005"]);
    let page = store
        .list_devices(tenant, &query("_"), &first(50))
        .await
        .unwrap();
    assert_eq!(serials(&page.items), ["rt-005"]);
    let page = store
        .list_devices(tenant, &query("e\\c"), &first(50))
        .await
        .unwrap();
    assert_eq!(serials(&page.items), ["rt-007"]);
    let page = store
        .list_devices(tenant, &query("%"), &first(50))
        .await
        .unwrap();
    assert_eq!(serials(&page.items), ["rt-005"]);
    let page = store
        .list_devices(tenant, &query("nothing"), &first(50))
        .await
        .unwrap();
    assert_eq!(
        (page.total, page.items.len(), page.next_after),
        (0, 0, None)
    );
    let all_online_matching = DeviceFilter {
        query: Some("rt-00".into()),
        connection_state: Some(ConnectionState::Online),
        ..all()
    };
    let page = store
        .list_devices(tenant, &all_online_matching, &first(50))
        .await
        .unwrap();
    assert_eq!(
        serials(&page.items),
        ["rt-000", "rt-003", "rt-006", "rt-009"]
    );

    // Other tenants' routers never show.
    let theirs = store
        .list_devices(other_tenant, &all(), &first(50))
        .await
        .unwrap();
    assert_eq!(theirs.total, 3);
    assert!(theirs.items.iter().all(|d| d.tenant_id == other_tenant));
}

/// The devices as the store has them now, in the given order.
async fn devices_now(store: &dyn Store, tenant: TenantId, devices: &[Device]) -> Vec<Device> {
    let mut now = Vec::new();
    for device in devices {
        now.push(store.device(tenant, device.id).await.unwrap().unwrap());
    }
    now
}

async fn device_updates_and_reports(store: Arc<dyn Store>) {
    let tenant = new_tenant(&*store).await;
    let other_tenant = new_tenant(&*store).await;
    let group = new_group(&*store, tenant, "east").await;
    let foreign_group = new_group(&*store, other_tenant, "theirs").await;
    let token = new_token(&*store, tenant, None, None).await;
    let device = enroll(&*store, &token, "UPD-1").await;

    let renamed = store
        .update_device(
            tenant,
            device.id,
            &DevicePatch {
                name: Some("Tower".into()),
                group_id: Some(Some(group.id)),
            },
        )
        .await
        .unwrap();
    assert_eq!(renamed.name, "Tower");
    assert_eq!(renamed.group_name.as_deref(), Some("east"));
    let unchanged = store
        .update_device(tenant, device.id, &DevicePatch::default())
        .await
        .unwrap();
    assert_eq!(unchanged, renamed);
    let ungrouped = store
        .update_device(
            tenant,
            device.id,
            &DevicePatch {
                name: None,
                group_id: Some(None),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (ungrouped.name.as_str(), ungrouped.group_id),
        ("Tower", None)
    );

    let foreign = store
        .update_device(
            tenant,
            device.id,
            &DevicePatch {
                name: Some("Hijacked".into()),
                group_id: Some(Some(foreign_group.id)),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(foreign, StoreError::NotFound("group")),
        "{foreign:?}"
    );
    assert_eq!(
        store.device(tenant, device.id).await.unwrap().unwrap().name,
        "Tower",
        "a refused patch changes nothing"
    );
    let elsewhere = store
        .update_device(other_tenant, device.id, &DevicePatch::default())
        .await
        .unwrap_err();
    assert!(
        matches!(elsewhere, StoreError::NotFound("device")),
        "{elsewhere:?}"
    );
    assert_eq!(store.device(other_tenant, device.id).await.unwrap(), None);
    let missing = store
        .allow_reenrollment(tenant, DeviceId::new(), at(1))
        .await
        .unwrap_err();
    assert!(
        matches!(missing, StoreError::NotFound("device")),
        "{missing:?}"
    );

    store
        .record_inventory(device.id, "RUT955", "7.6", "0.3.1")
        .await
        .unwrap();
    let status = DeviceStatus {
        uptime_secs: Some(86_400),
        cellular_signal_dbm: Some(-71),
        rx_bytes: Some(123_456_789_012),
        tx_bytes: Some(42),
        wan_address: Some("198.51.100.4".into()),
        reported_at: Some(at(7_000)),
        clock_skew_secs: Some(-3_600),
    };
    store.record_status(device.id, &status).await.unwrap();
    let reported = store.device_by_id(device.id).await.unwrap().unwrap();
    assert_eq!(
        (
            reported.model.as_str(),
            reported.firmware.as_str(),
            reported.agent_version.as_str()
        ),
        ("RUT955", "7.6", "0.3.1")
    );
    assert_eq!(reported.status, status);
    let gone = store
        .record_status(DeviceId::new(), &status)
        .await
        .unwrap_err();
    assert!(matches!(gone, StoreError::NotFound("device")), "{gone:?}");
    let gone = store
        .record_inventory(DeviceId::new(), "m", "f", "a")
        .await
        .unwrap_err();
    assert!(matches!(gone, StoreError::NotFound("device")), "{gone:?}");
}

async fn credentials_are_revoked_once(store: Arc<dyn Store>) {
    let tenant = new_tenant(&*store).await;
    let token = new_token(&*store, tenant, None, None).await;
    let device = enroll(&*store, &token, "CRED-1").await;
    let second = credential(device.id, at(2_000));
    let third = credential(device.id, at(3_000));
    store.add_credential(&second).await.unwrap();
    store.add_credential(&third).await.unwrap();

    store.revoke_credential(second.id, at(4_000)).await.unwrap();
    store.revoke_credential(second.id, at(5_000)).await.unwrap();
    let revoked = store.credential(second.id).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(at(4_000)));
    assert!(!revoked.is_valid_at(at(4_000)));

    // Keeping the third: only the enrollment credential goes.
    assert_eq!(
        store
            .revoke_device_credentials(device.id, Some(third.id), at(5_500))
            .await
            .unwrap(),
        1
    );
    assert!(
        store
            .credential(third.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_none()
    );
    assert_eq!(
        store
            .revoke_device_credentials(device.id, None, at(6_000))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .revoke_device_credentials(device.id, None, at(7_000))
            .await
            .unwrap(),
        0
    );
    let third = store.credential(third.id).await.unwrap().unwrap();
    assert_eq!(third.revoked_at, Some(at(6_000)));

    let missing = store
        .revoke_credential(CredentialId::new(), at(1))
        .await
        .unwrap_err();
    assert!(
        matches!(missing, StoreError::NotFound("credential")),
        "{missing:?}"
    );
    let orphan = store
        .add_credential(&credential(DeviceId::new(), at(1)))
        .await
        .unwrap_err();
    assert!(
        matches!(orphan, StoreError::NotFound("device")),
        "{orphan:?}"
    );
}

async fn connecting_with_one_credential_retires_the_others(store: Arc<dyn Store>) {
    let tenant = new_tenant(&*store).await;
    let token = new_token(&*store, tenant, None, None).await;
    let device = enroll(&*store, &token, "RET-1").await;
    let renewed = credential(device.id, at(2_000));
    store.add_credential(&renewed).await.unwrap();

    store
        .record_connect(
            &connection(device.id, "node-1", at(3_000)),
            Some(renewed.id),
        )
        .await
        .unwrap();
    assert!(
        store
            .credential(renewed.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_none()
    );
    // The enrollment credential was the only other one.
    assert_eq!(
        store
            .revoke_device_credentials(device.id, None, at(4_000))
            .await
            .unwrap(),
        1
    );
}

async fn old_connection_history_is_pruned_in_batches(store: Arc<dyn Store>) {
    let tenant = new_tenant(&*store).await;
    let token = new_token(&*store, tenant, None, None).await;
    let device = enroll(&*store, &token, "RET-H").await;
    for i in 0..5 {
        let record = connection(device.id, "node-1", at(i * 1_000));
        store.record_connect(&record, None).await.unwrap();
        store
            .record_disconnect(
                record.session_id,
                device.id,
                at(i * 1_000 + 500),
                DisconnectReason::CleanClose,
            )
            .await
            .unwrap();
    }
    let open = connection(device.id, "node-1", at(100));
    store.record_connect(&open, None).await.unwrap();

    // Three ended before 2,600 ms; at most two go per call.
    assert_eq!(
        store.prune_connection_history(at(2_600), 2).await.unwrap(),
        2
    );
    assert_eq!(
        store.prune_connection_history(at(2_600), 2).await.unwrap(),
        1
    );
    assert_eq!(
        store.prune_connection_history(at(2_600), 2).await.unwrap(),
        0
    );
    let left = store.connection_history(device.id, 100).await.unwrap();
    assert_eq!(left.len(), 3, "two recent ones and the open one: {left:?}");
    assert!(left.iter().any(|c| c.session_id == open.session_id));
}

async fn superseded_session_does_not_take_the_device_offline(store: Arc<dyn Store>) {
    let tenant = new_tenant(&*store).await;
    let token = new_token(&*store, tenant, None, None).await;
    let device = enroll(&*store, &token, "SES-1").await;

    let old = connection(device.id, "node-1", at(10_000));
    store.record_connect(&old, None).await.unwrap();
    let online = store.device_by_id(device.id).await.unwrap().unwrap();
    assert_eq!(online.connection_state, ConnectionState::Online);
    assert_eq!(online.connected_since, Some(at(10_000)));
    assert_eq!(online.last_seen, Some(at(10_000)));

    // The router reconnects (to another node) before its old connection is noticed as gone.
    let new = connection(device.id, "node-2", at(20_000));
    store.record_connect(&new, None).await.unwrap();
    store
        .record_disconnect(
            old.session_id,
            device.id,
            at(21_000),
            DisconnectReason::Superseded,
        )
        .await
        .unwrap();
    let still = store.device_by_id(device.id).await.unwrap().unwrap();
    assert_eq!(still.connection_state, ConnectionState::Online);
    assert_eq!(still.connected_since, Some(at(20_000)));
    assert_eq!(still.last_disconnect_at, None);
    let history = store.connection_history(device.id, 10).await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].session_id, old.session_id);
    // It ended when the new connection replaced it; its own late goodbye changes nothing.
    assert_eq!(history[1].disconnected_at, Some(at(20_000)));
    assert_eq!(history[1].reason, Some(DisconnectReason::Superseded));
    assert_eq!(
        (history[0].disconnected_at, history[0].reason),
        (None, None)
    );

    store
        .record_disconnect(
            new.session_id,
            device.id,
            at(30_000),
            DisconnectReason::PingTimeout,
        )
        .await
        .unwrap();
    let offline = store.device_by_id(device.id).await.unwrap().unwrap();
    assert_eq!(offline.connection_state, ConnectionState::Offline);
    assert_eq!(offline.connected_since, None);
    assert_eq!(offline.last_disconnect_at, Some(at(30_000)));
    assert_eq!(
        offline.last_disconnect_reason,
        Some(DisconnectReason::PingTimeout)
    );
    assert_eq!(offline.last_seen, Some(at(20_000)));

    // A repeated disconnect changes nothing.
    store
        .record_disconnect(
            new.session_id,
            device.id,
            at(40_000),
            DisconnectReason::CleanClose,
        )
        .await
        .unwrap();
    assert_eq!(
        store.device_by_id(device.id).await.unwrap().unwrap(),
        offline
    );
    let history = store.connection_history(device.id, 10).await.unwrap();
    assert_eq!(history[0].disconnected_at, Some(at(30_000)));
    assert_eq!(history[0].reason, Some(DisconnectReason::PingTimeout));

    let unknown = store
        .record_connect(&connection(DeviceId::new(), "node-1", at(1)), None)
        .await
        .unwrap_err();
    assert!(
        matches!(unknown, StoreError::NotFound("device")),
        "{unknown:?}"
    );
}

async fn last_seen_is_recorded_in_batches_and_never_moves_back(store: Arc<dyn Store>) {
    let tenant = new_tenant(&*store).await;
    let token = new_token(&*store, tenant, None, None).await;
    let a = enroll(&*store, &token, "HB-A").await;
    let b = enroll(&*store, &token, "HB-B").await;
    let c = enroll(&*store, &token, "HB-C").await;

    store
        .record_last_seen(&[
            (a.id, at(5_000)),
            (b.id, at(6_000)),
            (DeviceId::new(), at(6_500)),
        ])
        .await
        .unwrap();
    store
        .record_last_seen(&[(a.id, at(4_000)), (b.id, at(8_000))])
        .await
        .unwrap();
    store.record_last_seen(&[]).await.unwrap();

    let seen = |id| {
        let store = store.clone();
        async move { store.device_by_id(id).await.unwrap().unwrap().last_seen }
    };
    assert_eq!(seen(a.id).await, Some(at(5_000)));
    assert_eq!(seen(b.id).await, Some(at(8_000)));
    assert_eq!(seen(c.id).await, None);

    // A batch larger than one statement's chunk reaches every router in it.
    let mut many = Vec::new();
    for i in 0..1_100 {
        many.push(enroll(&*store, &token, &format!("HB-{i:04}")).await.id);
    }
    let batch: Vec<_> = many.iter().map(|id| (*id, at(9_000))).collect();
    store.record_last_seen(&batch).await.unwrap();
    for id in [many[0], many[499], many[500], many[1_099]] {
        assert_eq!(seen(id).await, Some(at(9_000)));
    }
}

async fn closing_a_nodes_sessions_spares_devices_that_reconnected_elsewhere(store: Arc<dyn Store>) {
    let tenant = new_tenant(&*store).await;
    let token = new_token(&*store, tenant, None, None).await;
    let stranded = enroll(&*store, &token, "N-1").await;
    let moved = enroll(&*store, &token, "N-2").await;
    let elsewhere = enroll(&*store, &token, "N-3").await;
    let stranded_session = connection(stranded.id, "node-1", at(1_000));
    let moved_old = connection(moved.id, "node-1", at(1_000));
    let moved_new = connection(moved.id, "node-2", at(2_000));
    let elsewhere_session = connection(elsewhere.id, "node-2", at(1_000));
    for record in [
        &stranded_session,
        &moved_old,
        &moved_new,
        &elsewhere_session,
    ] {
        store.record_connect(record, None).await.unwrap();
    }

    let closed = store
        .close_node_sessions("node-1", at(9_000), DisconnectReason::ServerShutdown)
        .await
        .unwrap();
    // The moved router's old session ended when it reconnected elsewhere: only one was open.
    assert_eq!(
        closed,
        [ClosedSession {
            tenant: stranded.tenant_id,
            device: stranded.id,
            session: stranded_session.session_id,
        }]
    );

    let device = store.device_by_id(stranded.id).await.unwrap().unwrap();
    assert_eq!(device.connection_state, ConnectionState::Offline);
    assert_eq!(device.last_disconnect_at, Some(at(9_000)));
    assert_eq!(
        device.last_disconnect_reason,
        Some(DisconnectReason::ServerShutdown)
    );
    assert_eq!(device.connected_since, None);
    for survivor in [moved.id, elsewhere.id] {
        let device = store.device_by_id(survivor).await.unwrap().unwrap();
        assert_eq!(device.connection_state, ConnectionState::Online);
        assert_eq!(device.last_disconnect_at, None);
    }
    let history = store.connection_history(moved.id, 10).await.unwrap();
    assert_eq!(history[0].session_id, moved_new.session_id);
    assert_eq!(history[0].disconnected_at, None);
    assert_eq!(history[1].session_id, moved_old.session_id);
    assert_eq!(history[1].disconnected_at, Some(at(2_000)));
    assert_eq!(history[1].reason, Some(DisconnectReason::Superseded));

    // A late disconnect of a closed session changes nothing; the node has nothing left open.
    store
        .record_disconnect(
            stranded_session.session_id,
            stranded.id,
            at(9_500),
            DisconnectReason::ConnectionLost,
        )
        .await
        .unwrap();
    let history = store.connection_history(stranded.id, 10).await.unwrap();
    assert_eq!(history[0].reason, Some(DisconnectReason::ServerShutdown));
    let closed = store
        .close_node_sessions("node-1", at(10_000), DisconnectReason::ServerShutdown)
        .await
        .unwrap();
    assert!(closed.is_empty());
}

async fn connection_history_is_newest_first(store: Arc<dyn Store>) {
    let tenant = new_tenant(&*store).await;
    let token = new_token(&*store, tenant, None, None).await;
    let device = enroll(&*store, &token, "HIST-1").await;
    let other = enroll(&*store, &token, "HIST-2").await;
    let mut sessions = Vec::new();
    for start in [1_000, 3_000, 2_000] {
        let record = connection(device.id, "node-1", at(start));
        store.record_connect(&record, None).await.unwrap();
        store
            .record_disconnect(
                record.session_id,
                device.id,
                at(start + 500),
                DisconnectReason::ConnectionLost,
            )
            .await
            .unwrap();
        sessions.push(record);
    }
    store
        .record_connect(&connection(other.id, "node-1", at(5_000)), None)
        .await
        .unwrap();

    let history = store.connection_history(device.id, 10).await.unwrap();
    let starts: Vec<_> = history.iter().map(|r| r.connected_at).collect();
    assert_eq!(starts, [at(3_000), at(2_000), at(1_000)]);
    let newest = &sessions[1];
    assert_eq!(
        history[0],
        ConnectionRecord {
            disconnected_at: Some(at(3_500)),
            reason: Some(DisconnectReason::ConnectionLost),
            ..newest.clone()
        }
    );
    let limited = store.connection_history(device.id, 2).await.unwrap();
    assert_eq!(limited, history[..2]);
    assert!(
        store
            .connection_history(DeviceId::new(), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn api_tokens_are_found_by_hash_and_revoked(store: Arc<dyn Store>) {
    let tenant = new_tenant(&*store).await;
    let other_tenant = new_tenant(&*store).await;
    let token = |name: &str, role, created| ApiToken {
        id: ApiTokenId::new(),
        tenant_id: Some(tenant),
        name: name.into(),
        role,
        secret_hash: unique("api"),
        created_at: at(created),
        revoked_at: None,
    };
    let older = token("ci", Role::Operator, 1_000);
    let newer = token("dashboard", Role::Viewer, 2_000);
    store.create_api_token(&older).await.unwrap();
    store.create_api_token(&newer).await.unwrap();

    assert_eq!(
        store.api_token_by_hash(&older.secret_hash).await.unwrap(),
        Some(older.clone())
    );
    assert_eq!(store.api_token_by_hash("unknown").await.unwrap(), None);
    assert_eq!(
        store.api_tokens(tenant).await.unwrap(),
        vec![newer.clone(), older.clone()]
    );
    assert!(store.api_tokens(other_tenant).await.unwrap().is_empty());

    let copy = ApiToken {
        id: ApiTokenId::new(),
        ..older.clone()
    };
    let duplicate = store.create_api_token(&copy).await.unwrap_err();
    assert!(
        matches!(duplicate, StoreError::Conflict(_)),
        "{duplicate:?}"
    );

    let wrong_tenant = store
        .revoke_api_token(other_tenant, older.id, at(3_000))
        .await
        .unwrap_err();
    assert!(
        matches!(wrong_tenant, StoreError::NotFound(_)),
        "{wrong_tenant:?}"
    );
    store
        .revoke_api_token(tenant, older.id, at(3_000))
        .await
        .unwrap();
    store
        .revoke_api_token(tenant, older.id, at(4_000))
        .await
        .unwrap();
    let revoked = store
        .api_token_by_hash(&older.secret_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(at(3_000)));
    let untouched = store
        .api_token_by_hash(&newer.secret_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(untouched.revoked_at, None);
}

async fn deleting_a_device_removes_its_credentials_and_history(store: Arc<dyn Store>) {
    let tenant = new_tenant(&*store).await;
    let token = new_token(&*store, tenant, None, None).await;
    let doomed = enrollment(&token, "DEL-1", at(1_000));
    let device = store.enroll(&doomed).await.unwrap().unwrap();
    let kept = enroll(&*store, &token, "DEL-2").await;
    store
        .record_connect(&connection(device.id, "node-1", at(2_000)), None)
        .await
        .unwrap();
    store
        .record_connect(&connection(kept.id, "node-1", at(2_000)), None)
        .await
        .unwrap();

    let other_tenant = new_tenant(&*store).await;
    let elsewhere = store
        .delete_device(other_tenant, device.id)
        .await
        .unwrap_err();
    assert!(
        matches!(elsewhere, StoreError::NotFound("device")),
        "{elsewhere:?}"
    );

    store.delete_device(tenant, device.id).await.unwrap();
    assert_eq!(store.device(tenant, device.id).await.unwrap(), None);
    assert_eq!(store.credential(doomed.credential.id).await.unwrap(), None);
    assert!(
        store
            .connection_history(device.id, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let again = store.delete_device(tenant, device.id).await.unwrap_err();
    assert!(matches!(again, StoreError::NotFound("device")), "{again:?}");

    assert!(store.device(tenant, kept.id).await.unwrap().is_some());
    assert_eq!(
        store.connection_history(kept.id, 10).await.unwrap().len(),
        1
    );
    // The serial is free again.
    enroll(&*store, &token, "DEL-1").await;
}

/// The version a future Floatilla might have migrated to.
const FUTURE_VERSION: i64 = 99_990_101_000_000;

/// Records a migration this build does not have, as a newer build would.
async fn migrate_from_the_future(location: &Location) {
    let insert = "INSERT INTO _sqlx_migrations \
                  (version, description, success, checksum, execution_time) \
                  VALUES ($1, 'from the future', TRUE, $2, 0)";
    match location {
        Location::Sqlite(path) => {
            let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
            let mut conn = sqlx::SqliteConnection::connect_with(&options)
                .await
                .unwrap();
            sqlx::query(insert)
                .bind(FUTURE_VERSION)
                .bind(vec![0_u8; 48])
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
        }
        Location::Postgres(url) => {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query(insert)
                .bind(FUTURE_VERSION)
                .bind(vec![0_u8; 48])
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
        }
    }
}

/// The highest version among this build's migration files (`NNNN_name.sql`) for the backend
/// of `location` (each backend numbers its own).
fn newest_migration(location: &Location) -> i64 {
    let backend = match location {
        Location::Sqlite(_) => "sqlite",
        Location::Postgres(_) => "postgres",
    };
    std::fs::read_dir(format!(
        "{}/migrations/{backend}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .filter_map(|entry| {
        let name = entry.unwrap().file_name().into_string().unwrap();
        name.split('_').next()?.parse::<i64>().ok()
    })
    .max()
    .unwrap()
}

async fn refuses_a_schema_from_a_newer_build(db: TestDb) {
    let store = db.open().await.unwrap();
    let tenant = new_tenant(&*store).await;
    drop(store);
    migrate_from_the_future(db.location()).await;

    match db.open().await {
        Err(StoreError::SchemaTooNew { found, known }) => {
            assert_eq!(found, FUTURE_VERSION);
            assert_eq!(known, newest_migration(db.location()));
        }
        Err(other) => panic!("expected SchemaTooNew, got {other:?}"),
        Ok(_) => panic!("expected SchemaTooNew, but the store opened"),
    }
    // Nothing was touched: the data is still there for the newer build.
    match db.location() {
        Location::Sqlite(path) => {
            let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
            let mut conn = sqlx::SqliteConnection::connect_with(&options)
                .await
                .unwrap();
            let tenants: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tenants WHERE id = $1")
                .bind(tenant.to_string())
                .fetch_one(&mut conn)
                .await
                .unwrap();
            assert_eq!(tenants, 1);
        }
        Location::Postgres(url) => {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            let tenants: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tenants WHERE id = $1")
                .bind(tenant.to_string())
                .fetch_one(&mut conn)
                .await
                .unwrap();
            assert_eq!(tenants, 1);
        }
    }
}

/// Several processes opening (and so migrating) a new database at once all succeed and share it.
async fn opens_concurrently(db: TestDb) {
    let db = Arc::new(db);
    let openers: Vec<_> = (0..8)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move { db.open().await.unwrap() })
        })
        .collect();
    let mut stores = Vec::new();
    for opener in openers {
        stores.push(opener.await.unwrap());
    }
    let tenant = new_tenant(&*stores[0]).await;
    for store in &stores {
        assert!(store.tenant(tenant).await.unwrap().is_some());
    }
    // Reopening an up-to-date database applies nothing and keeps the data.
    let reopened = db.open().await.unwrap();
    assert_eq!(reopened.tenants().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_refuses_a_schema_from_a_newer_build() {
    refuses_a_schema_from_a_newer_build(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_refuses_a_schema_from_a_newer_build() {
    if let Some(db) = TestDb::postgres().await {
        refuses_a_schema_from_a_newer_build(db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_opens_concurrently() {
    opens_concurrently(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_opens_concurrently() {
    if let Some(db) = TestDb::postgres().await {
        opens_concurrently(db).await;
    }
}

#[tokio::test]
async fn sqlite_creates_the_file_and_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir
        .path()
        .join("nested")
        .join("deeper")
        .join("floatilla.db");
    let store = floatilla_store::open(&Location::Sqlite(path.clone()))
        .await
        .unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    assert!(path.exists());
}

async fn groups_keep_a_timer_profile_that_routers_see(store: Arc<dyn Store>) {
    let tenant = new_tenant(store.as_ref()).await;
    let metered = new_group(store.as_ref(), tenant, "metered").await;
    let profile = TimerProfile {
        ping_interval_secs: 1800,
        pong_timeout_secs: 60,
    };
    let updated = store
        .update_group(
            tenant,
            metered.id,
            &GroupPatch {
                timer_profile: Some(Some(profile)),
                ..GroupPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.timer_profile, Some(profile));
    assert_eq!(updated.name, "metered");
    let token = new_token(store.as_ref(), tenant, None, Some(metered.id)).await;
    let device = enroll(store.as_ref(), &token, "M-1").await;
    assert_eq!(device.timer_profile, Some(profile));

    let cleared = store
        .update_group(
            tenant,
            metered.id,
            &GroupPatch {
                timer_profile: Some(None),
                ..GroupPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(cleared.timer_profile, None);
    let device = store.device_by_id(device.id).await.unwrap().unwrap();
    assert_eq!(device.timer_profile, None);
}

async fn events_are_listed_newest_first_with_filters_and_pruned(store: Arc<dyn Store>) {
    let tenant = new_tenant(store.as_ref()).await;
    let other = new_tenant(store.as_ref()).await;
    let router = DeviceId::new();
    let mut recorded = Vec::new();
    for (minute, kind, device) in [
        (1, EventKind::RouterEnrolled, Some(router)),
        (2, EventKind::CredentialCloned, Some(router)),
        (3, EventKind::EnrollmentRequested, None),
        (4, EventKind::CredentialCloned, Some(router)),
    ] {
        let event = Event::new(
            tenant,
            at(minute * 60_000),
            kind,
            device,
            format!("event {minute}"),
        );
        store.record_event(&event).await.unwrap();
        recorded.push(event);
    }
    store
        .record_event(&Event::new(
            other,
            at(0),
            EventKind::RouterEnrolled,
            None,
            "elsewhere",
        ))
        .await
        .unwrap();

    let all = store
        .events(tenant, &EventFilter::default(), 10)
        .await
        .unwrap();
    let newest_first: Vec<Event> = recorded.iter().rev().cloned().collect();
    assert_eq!(all, newest_first);

    let alarms = EventFilter {
        severity: Some(Severity::Alarm),
        ..EventFilter::default()
    };
    let page = store.events(tenant, &alarms, 1).await.unwrap();
    assert_eq!(page, vec![recorded[3].clone()]);
    let next = EventFilter {
        before: Some(page[0].id),
        ..alarms.clone()
    };
    assert_eq!(
        store.events(tenant, &next, 1).await.unwrap(),
        vec![recorded[1].clone()]
    );
    let about_router = EventFilter {
        device_id: Some(router),
        kind: Some(EventKind::RouterEnrolled),
        ..EventFilter::default()
    };
    assert_eq!(
        store.events(tenant, &about_router, 10).await.unwrap(),
        vec![recorded[0].clone()]
    );

    // Everything before minute 3 goes, in batches of one.
    let mut pruned = 0;
    loop {
        let deleted = store.prune_events(at(3 * 60_000), 1).await.unwrap();
        if deleted == 0 {
            break;
        }
        assert_eq!(deleted, 1);
        pruned += deleted;
    }
    assert_eq!(pruned, 3, "two of this tenant's and the other tenant's");
    let left = store
        .events(tenant, &EventFilter::default(), 10)
        .await
        .unwrap();
    assert_eq!(left, vec![recorded[3].clone(), recorded[2].clone()]);
}

fn preregistration(serial: &str, name: &str, group: Option<GroupId>) -> Preregistration {
    Preregistration {
        serial: serial.into(),
        name: name.into(),
        group_id: group,
    }
}

async fn preregistered_serials_are_created_or_updated(store: Arc<dyn Store>) {
    let tenant = new_tenant(store.as_ref()).await;
    let depot = new_group(store.as_ref(), tenant, "depot").await;
    let token = new_token(store.as_ref(), tenant, None, None).await;
    let enrolled = enroll(store.as_ref(), &token, "E-1").await;

    let outcomes = store
        .preregister(
            tenant,
            &[
                preregistration("P-1", "Pump 1", Some(depot.id)),
                preregistration("E-1", "Existing", Some(depot.id)),
            ],
            at(2_000),
        )
        .await
        .unwrap();
    assert_eq!(outcomes[1], Preregistered::Updated(enrolled.id));
    let Preregistered::Created(created) = outcomes[0] else {
        panic!("P-1 is new: {outcomes:?}");
    };
    let pump = store.device(tenant, created).await.unwrap().unwrap();
    assert_eq!(pump.enrollment, EnrollmentState::Preregistered);
    assert_eq!(pump.name, "Pump 1");
    assert_eq!(pump.group_id, Some(depot.id));
    assert_eq!(pump.connection_state, ConnectionState::Offline);
    let existing = store.device(tenant, enrolled.id).await.unwrap().unwrap();
    assert_eq!(existing.name, "Existing");
    assert_eq!(existing.enrollment, EnrollmentState::Accepted);

    let waiting = DeviceFilter {
        enrollment: Some(EnrollmentState::Preregistered),
        ..DeviceFilter::default()
    };
    let page = store
        .list_devices(tenant, &waiting, &first(10))
        .await
        .unwrap();
    assert_eq!(page.items, vec![pump]);
}

async fn a_preregistered_router_enrolls_into_its_imported_name_and_group(store: Arc<dyn Store>) {
    let tenant = new_tenant(store.as_ref()).await;
    let depot = new_group(store.as_ref(), tenant, "depot").await;
    let line = new_group(store.as_ref(), tenant, "line").await;
    let outcomes = store
        .preregister(
            tenant,
            &[
                preregistration("P-1", "Pump 1", Some(depot.id)),
                preregistration("P-2", "Pump 2", None),
            ],
            at(0),
        )
        .await
        .unwrap();
    let token = new_token(store.as_ref(), tenant, None, Some(line.id)).await;
    for (outcome, serial, group) in [
        (outcomes[0], "P-1", depot.id),
        (outcomes[1], "P-2", line.id),
    ] {
        let Preregistered::Created(id) = outcome else {
            panic!("{outcome:?}");
        };
        let mut request = enrollment(&token, serial, at(1_000));
        request.existing_device = Some(id);
        let device = store.enroll(&request).await.unwrap().unwrap();
        assert_eq!(device.id, id);
        assert_eq!(device.enrollment, EnrollmentState::Accepted);
        assert_eq!(device.group_id, Some(group), "{serial}");
        assert_eq!(device.model, "RUT241");
        assert!(device.name.starts_with("Pump"));
    }
}

async fn the_enrollment_policy_is_kept_per_tenant(store: Arc<dyn Store>) {
    let tenant = new_tenant(store.as_ref()).await;
    let other = new_tenant(store.as_ref()).await;
    store
        .set_enrollment_policy(tenant, EnrollmentPolicy::Approval)
        .await
        .unwrap();
    assert_eq!(
        store
            .tenant(tenant)
            .await
            .unwrap()
            .unwrap()
            .enrollment_policy,
        EnrollmentPolicy::Approval
    );
    assert_eq!(
        store
            .tenant(other)
            .await
            .unwrap()
            .unwrap()
            .enrollment_policy,
        EnrollmentPolicy::Open
    );
    let missing = store
        .set_enrollment_policy(TenantId::new(), EnrollmentPolicy::Open)
        .await
        .unwrap_err();
    assert!(
        matches!(missing, StoreError::NotFound("tenant")),
        "{missing:?}"
    );
}

async fn rejecting_revokes_and_accepting_a_rejected_router_lets_it_enroll_again(
    store: Arc<dyn Store>,
) {
    let tenant = new_tenant(store.as_ref()).await;
    let token = new_token(store.as_ref(), tenant, None, None).await;
    let mut request = enrollment(&token, "Q-1", at(1_000));
    request.state = EnrollmentState::Pending;
    let pending = store.enroll(&request).await.unwrap().unwrap();
    assert_eq!(pending.enrollment, EnrollmentState::Pending);

    let rejected = store
        .decide_enrollment(
            tenant,
            pending.id,
            EnrollmentDecision::Reject,
            at(9_000),
            &Event::new(
                tenant,
                at(2_000),
                EventKind::EnrollmentRejected,
                Some(pending.id),
                "decided",
            ),
        )
        .await
        .unwrap();
    assert_eq!(rejected.enrollment, EnrollmentState::Rejected);
    let credential = store
        .credential(request.credential.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(credential.revoked_at, Some(at(2_000)));

    let accepted = store
        .decide_enrollment(
            tenant,
            pending.id,
            EnrollmentDecision::Accept,
            at(9_000),
            &Event::new(
                tenant,
                at(3_000),
                EventKind::EnrollmentAccepted,
                Some(pending.id),
                "decided",
            ),
        )
        .await
        .unwrap();
    assert_eq!(accepted.enrollment, EnrollmentState::Accepted);
    assert_eq!(accepted.reenroll_allowed_until, Some(at(9_000)));
    let decided = store
        .events(tenant, &EventFilter::default(), 10)
        .await
        .unwrap();
    let kinds: Vec<EventKind> = decided.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::EnrollmentAccepted,
            EventKind::EnrollmentRejected,
            EventKind::RouterEnrolled
        ]
    );

    let outcomes = store
        .preregister(tenant, &[preregistration("P-9", "later", None)], at(0))
        .await
        .unwrap();
    let Preregistered::Created(imported) = outcomes[0] else {
        panic!("{outcomes:?}");
    };
    let not_enrolled = store
        .decide_enrollment(
            tenant,
            imported,
            EnrollmentDecision::Accept,
            at(9_000),
            &Event::new(
                tenant,
                at(3_000),
                EventKind::EnrollmentAccepted,
                Some(imported),
                "decided",
            ),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(not_enrolled, StoreError::Conflict(_)),
        "{not_enrolled:?}"
    );
    let elsewhere = store
        .decide_enrollment(
            TenantId::new(),
            pending.id,
            EnrollmentDecision::Accept,
            at(9_000),
            &Event::new(
                tenant,
                at(3_000),
                EventKind::EnrollmentAccepted,
                Some(pending.id),
                "decided",
            ),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(elsewhere, StoreError::NotFound("device")),
        "{elsewhere:?}"
    );
    let after = store
        .events(tenant, &EventFilter::default(), 10)
        .await
        .unwrap();
    assert_eq!(after.len(), 3, "refused decisions record nothing");
}

async fn nodes_that_stop_heartbeating_are_found(store: Arc<dyn Store>) {
    let a = unique("node-a");
    let b = unique("node-b");
    assert!(!store.node_heartbeat(&a, at(0)).await.unwrap(), "a is new");
    assert!(!store.node_heartbeat(&b, at(0)).await.unwrap());
    assert!(store.node_heartbeat(&a, at(30_000)).await.unwrap());
    let silent = store.silent_nodes(at(20_000)).await.unwrap();
    assert!(silent.contains(&b) && !silent.contains(&a), "{silent:?}");
    store.forget_node(&b).await.unwrap();
    assert!(!store.silent_nodes(at(20_000)).await.unwrap().contains(&b));
    assert!(
        !store.node_heartbeat(&b, at(40_000)).await.unwrap(),
        "b was forgotten"
    );
}

async fn cluster_messages_reach_every_subscriber(store: Arc<dyn Store>) {
    let message = ClusterMessage::SessionStarted {
        device: DeviceId::new(),
        session: SessionId::new(),
        node: "a".into(),
    };
    let Some(mut first) = store.subscribe().await.unwrap() else {
        assert_eq!(
            store.backend(),
            Backend::Sqlite,
            "only SQLite is single-node"
        );
        store.publish(&message).await.unwrap();
        return;
    };
    let mut second = store.subscribe().await.unwrap().unwrap();
    store.publish(&message).await.unwrap();
    for subscription in [&mut first, &mut second] {
        let received =
            tokio::time::timeout(std::time::Duration::from_secs(10), subscription.recv())
                .await
                .expect("the message arrives");
        assert!(
            matches!(&received, Received::Message(m) if *m == message),
            "{received:?}"
        );
    }
    let too_large = ClusterMessage::Call {
        call: uuid::Uuid::new_v4(),
        device: DeviceId::new(),
        method: "x".repeat(8_000),
        params: serde_json::Value::Null,
        from: "a".into(),
    };
    assert!(store.publish(&too_large).await.is_err());
}

async fn an_enrollment_writes_its_event_and_a_refused_one_writes_nothing(store: Arc<dyn Store>) {
    let tenant = new_tenant(store.as_ref()).await;
    let token = new_token(store.as_ref(), tenant, Some(1), None).await;
    let device = enroll(store.as_ref(), &token, "EV-1").await;
    let refused = store
        .enroll(&enrollment(&token, "EV-2", at(2_000)))
        .await
        .unwrap();
    assert_eq!(refused.unwrap_err(), TokenRefusal::UsedUp);
    let events = store
        .events(tenant, &EventFilter::default(), 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, EventKind::RouterEnrolled);
    assert_eq!(events[0].device_id, Some(device.id));
    assert_eq!(events[0].message, "router EV-1 enrolled");
}

async fn provider_tokens_belong_to_no_tenant(store: Arc<dyn Store>) {
    let tenant = new_tenant(&*store).await;
    let provider = ApiToken {
        id: ApiTokenId::new(),
        tenant_id: None,
        name: "provider".into(),
        role: Role::Provider,
        secret_hash: unique("api"),
        created_at: at(0),
        revoked_at: None,
    };
    store.create_api_token(&provider).await.unwrap();
    assert_eq!(
        store
            .api_token_by_hash(&provider.secret_hash)
            .await
            .unwrap(),
        Some(provider.clone())
    );
    assert!(store.api_tokens(tenant).await.unwrap().is_empty());
    let inside_a_tenant = ApiToken {
        id: ApiTokenId::new(),
        tenant_id: Some(tenant),
        secret_hash: unique("api"),
        ..provider.clone()
    };
    assert!(store.create_api_token(&inside_a_tenant).await.is_err());
    let admin_of_nothing = ApiToken {
        id: ApiTokenId::new(),
        role: Role::Admin,
        secret_hash: unique("api"),
        ..provider
    };
    assert!(store.create_api_token(&admin_of_nothing).await.is_err());
}

fn issued_code(batch: CodeBatchId, seats: u32, term_months: u32, created: i64) -> IssuedCode {
    IssuedCode {
        code: ActivationCode::generate(rand::random()),
        batch_id: batch,
        seats,
        term_months,
        created_at: at(created),
        redemption: None,
    }
}

async fn tenants_are_suspended_renamed_and_deleted_with_what_they_hold(store: Arc<dyn Store>) {
    let tenant = new_tenant(&*store).await;
    let other = new_tenant(&*store).await;

    let suspended = store
        .set_tenant_suspended(tenant, Some(at(1_000)))
        .await
        .unwrap();
    assert_eq!(suspended.suspended_at, Some(at(1_000)));
    let again = store
        .set_tenant_suspended(tenant, Some(at(2_000)))
        .await
        .unwrap();
    assert_eq!(
        again.suspended_at,
        Some(at(1_000)),
        "the first suspension counts"
    );
    assert_eq!(store.suspended_tenants().await.unwrap(), vec![tenant]);
    let resumed = store.set_tenant_suspended(tenant, None).await.unwrap();
    assert_eq!(resumed.suspended_at, None);
    assert!(store.suspended_tenants().await.unwrap().is_empty());

    let renamed = store
        .update_tenant(
            tenant,
            &TenantUpdate {
                name: Some("Harbour Works".into()),
                contact_email: Some(Some("ops@harbour.example".into())),
            },
        )
        .await
        .unwrap();
    assert_eq!(renamed.name, "Harbour Works");
    assert_eq!(
        renamed.contact_email.as_deref(),
        Some("ops@harbour.example")
    );
    let cleared = store
        .update_tenant(
            tenant,
            &TenantUpdate {
                name: None,
                contact_email: Some(None),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (cleared.name.as_str(), cleared.contact_email),
        ("Harbour Works", None)
    );

    let group = new_group(&*store, tenant, "field").await;
    let license = License {
        id: LicenseId::new(),
        tenant_id: tenant,
        name: "term".into(),
        term: LicenseTerm {
            seats: Seats::Count(5),
            not_before: at(0),
            not_after: None,
            grace_until: None,
        },
        signed: None,
        created_at: at(0),
    };
    store.add_license(&license).await.unwrap();
    store.delete_tenant(tenant).await.unwrap();
    assert_eq!(store.tenant(tenant).await.unwrap(), None);
    assert_eq!(store.group(tenant, group.id).await.unwrap(), None);
    assert!(store.licenses(tenant).await.unwrap().is_empty());
    assert!(store.tenant(other).await.unwrap().is_some());
    assert!(matches!(
        store.delete_tenant(tenant).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.set_tenant_suspended(tenant, None).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn activation_codes_are_redeemed_once_into_a_license(store: Arc<dyn Store>) {
    let tenant = new_tenant(&*store).await;
    let other = new_tenant(&*store).await;
    let batch = CodeBatchId::new();
    let codes = vec![
        issued_code(batch, 25, 12, 1_000),
        issued_code(batch, 1, 1, 1_000),
    ];
    store.create_activation_codes(&codes).await.unwrap();
    let older_batch = CodeBatchId::new();
    store
        .create_activation_codes(&[issued_code(older_batch, 3, 6, 0)])
        .await
        .unwrap();
    assert!(
        store.create_activation_codes(&codes[..1]).await.is_err(),
        "a code is issued once"
    );

    let listed = store
        .activation_codes(&CodeFilter {
            batch: Some(batch),
            limit: 10,
            ..CodeFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
    let all = store
        .activation_codes(&CodeFilter {
            limit: 10,
            ..CodeFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[2].batch_id, older_batch, "newest first");

    let redeemed_at = at(50_000);
    let license_id = LicenseId::new();
    let redemption = store
        .redeem_activation_code(tenant, &codes[0].code, license_id, redeemed_at)
        .await
        .unwrap();
    let Redemption::Redeemed { code, license } = redemption else {
        panic!("not redeemed: {redemption:?}");
    };
    assert_eq!(
        code.redemption,
        Some(CodeRedemption {
            at: redeemed_at,
            tenant_id: Some(tenant),
            license_id: Some(license_id),
        })
    );
    assert_eq!(license.id, license_id);
    assert_eq!(license.term.seats, Seats::Count(25));
    assert_eq!(license.term.not_before, redeemed_at);
    assert_eq!(
        license.term.not_after,
        redeemed_at.checked_add_months(chrono::Months::new(12))
    );
    assert_eq!(store.licenses(tenant).await.unwrap(), vec![*license]);

    assert_eq!(
        store
            .redeem_activation_code(tenant, &codes[0].code, LicenseId::new(), at(60_000))
            .await
            .unwrap(),
        Redemption::AlreadyRedeemed { at: redeemed_at }
    );
    assert_eq!(
        store
            .redeem_activation_code(other, &codes[0].code, LicenseId::new(), at(60_000))
            .await
            .unwrap(),
        Redemption::Unknown,
        "another tenant's code looks like no code"
    );
    let never_issued = ActivationCode::generate(rand::random());
    assert_eq!(
        store
            .redeem_activation_code(tenant, &never_issued, LicenseId::new(), at(60_000))
            .await
            .unwrap(),
        Redemption::Unknown
    );
    assert_eq!(store.licenses(tenant).await.unwrap().len(), 1);
    assert!(store.licenses(other).await.unwrap().is_empty());

    let redeemed = CodeFilter {
        redeemed: Some(true),
        limit: 10,
        ..CodeFilter::default()
    };
    let available = CodeFilter {
        redeemed: Some(false),
        limit: 10,
        ..CodeFilter::default()
    };
    assert_eq!(store.activation_codes(&redeemed).await.unwrap(), vec![code]);
    assert_eq!(store.activation_codes(&available).await.unwrap().len(), 2);

    store.delete_tenant(tenant).await.unwrap();
    let kept = store.activation_codes(&redeemed).await.unwrap();
    assert_eq!(kept.len(), 1, "a deleted tenant's code stays redeemed");
    assert_eq!(kept[0].redemption.as_ref().unwrap().tenant_id, None);
    assert_eq!(
        store
            .redeem_activation_code(other, &codes[0].code, LicenseId::new(), at(70_000))
            .await
            .unwrap(),
        Redemption::Unknown
    );
}

async fn a_code_redeemed_by_two_tenants_at_once_goes_to_one(store: Arc<dyn Store>) {
    let first = new_tenant(&*store).await;
    let second = new_tenant(&*store).await;
    let code = issued_code(CodeBatchId::new(), 1, 1, 0);
    store
        .create_activation_codes(std::slice::from_ref(&code))
        .await
        .unwrap();
    let redeem = |tenant| {
        let store = store.clone();
        let code = code.code.clone();
        tokio::spawn(async move {
            store
                .redeem_activation_code(tenant, &code, LicenseId::new(), at(1_000))
                .await
                .unwrap()
        })
    };
    let (a, b) = tokio::join!(redeem(first), redeem(second));
    let outcomes = [a.unwrap(), b.unwrap()];
    let winners = outcomes
        .iter()
        .filter(|o| matches!(o, Redemption::Redeemed { .. }))
        .count();
    assert_eq!(winners, 1, "{outcomes:?}");
    let licenses =
        store.licenses(first).await.unwrap().len() + store.licenses(second).await.unwrap().len();
    assert_eq!(licenses, 1);
}

async fn tags_select_routers_within_their_tenant(store: Arc<dyn Store>) {
    let tenant = new_tenant(&*store).await;
    let other = new_tenant(&*store).await;
    let token = new_token(&*store, tenant, None, None).await;
    let a = enroll(&*store, &token, "T-A").await;
    let b = enroll(&*store, &token, "T-B").await;
    let c = enroll(&*store, &token, "T-C").await;
    let tags = |list: &[&str]| list.iter().map(|t| (*t).to_owned()).collect::<Vec<_>>();

    store
        .set_device_tags(tenant, a.id, &tags(&["pilot", "site:hamburg"]))
        .await
        .unwrap();
    assert!(matches!(
        store.set_device_tags(other, a.id, &tags(&["x"])).await,
        Err(StoreError::NotFound(_))
    ));
    let changed = store
        .change_tags(
            tenant,
            &[b.id, c.id, DeviceId::new()],
            &tags(&["site:hamburg"]),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(changed, 2);
    assert_eq!(
        store
            .change_tags(other, &[a.id], &tags(&["stolen"]), &tags(&["pilot"]))
            .await
            .unwrap(),
        0,
        "another tenant's routers are left alone"
    );
    store
        .change_tags(tenant, &[c.id], &tags(&["pilot"]), &tags(&["site:hamburg"]))
        .await
        .unwrap();

    let held = store
        .device_tags(tenant, &[a.id, b.id, c.id])
        .await
        .unwrap();
    assert_eq!(held[&a.id], tags(&["pilot", "site:hamburg"]));
    assert_eq!(held[&b.id], tags(&["site:hamburg"]));
    assert_eq!(held[&c.id], tags(&["pilot"]));
    assert!(store.device_tags(other, &[a.id]).await.unwrap().is_empty());
    assert_eq!(
        store.tags(tenant).await.unwrap(),
        vec![("pilot".to_owned(), 2), ("site:hamburg".to_owned(), 2)]
    );

    let serials = |filter: DeviceFilter| {
        let store = store.clone();
        async move {
            let page = store
                .list_devices(
                    tenant,
                    &filter,
                    &PageRequest {
                        limit: 10,
                        after: None,
                    },
                )
                .await
                .unwrap();
            page.items.into_iter().map(|d| d.serial).collect::<Vec<_>>()
        }
    };
    let both = DeviceFilter {
        tags: tags(&["pilot", "site:hamburg"]),
        ..DeviceFilter::default()
    };
    assert_eq!(serials(both).await, ["T-A"]);
    let pilots = DeviceFilter {
        tags: tags(&["pilot"]),
        ..DeviceFilter::default()
    };
    assert_eq!(serials(pilots).await, ["T-A", "T-C"]);

    store.delete_device(tenant, a.id).await.unwrap();
    assert_eq!(
        store.tags(tenant).await.unwrap(),
        vec![("pilot".to_owned(), 1), ("site:hamburg".to_owned(), 1)]
    );
}

async fn jobs_keep_each_routers_execution_moving_by_the_rules(store: Arc<dyn Store>) {
    use floatilla_domain::jobs::{ExecutionState as S, JobKind};
    use floatilla_domain::{ExecutionId, JobId};
    use floatilla_store::{Execution, Job};

    let tenant = new_tenant(&*store).await;
    let other = new_tenant(&*store).await;
    let token = new_token(&*store, tenant, None, None).await;
    let online = enroll(&*store, &token, "J-1").await;
    let shed = enroll(&*store, &token, "J-2").await;
    let job = Job {
        id: JobId::new(),
        tenant_id: tenant,
        kind: JobKind::Reboot,
        params: serde_json::json!({"reason": "test"}),
        expires_at: Some(at(100_000)),
        timeout_secs: 60,
        expected_downtime_secs: 120,
        created_by: "ci".into(),
        created_at: at(0),
        cancelled_at: None,
        artifact: None,
    };
    let execution = |device: DeviceId, state| Execution {
        id: ExecutionId::new(),
        job_id: job.id,
        tenant_id: tenant,
        device_id: device,
        state,
        reason: None,
        attempt: 1,
        created_at: at(0),
        sent_at: None,
        updated_at: at(0),
        finished_at: None,
        release_at: Some(at(0)),
        position: 0,
        phase: 0,
    };
    let first = execution(online.id, S::Queued);
    let second = execution(shed.id, S::WaitingForLicense);
    store
        .create_job(&job, &[first.clone(), second.clone()])
        .await
        .unwrap();
    assert!(store.has_open_executions(online.id).await.unwrap());
    assert!(store.has_open_executions(shed.id).await.unwrap());
    assert_eq!(store.job(tenant, job.id).await.unwrap(), Some(job.clone()));
    assert_eq!(store.job(other, job.id).await.unwrap(), None);
    assert_eq!(
        store
            .jobs_by_id(tenant, &[JobId::new(), job.id])
            .await
            .unwrap(),
        vec![job.clone()]
    );
    assert!(store.jobs_by_id(other, &[job.id]).await.unwrap().is_empty());
    assert_eq!(
        store.jobs(tenant, 10, None).await.unwrap(),
        vec![job.clone()]
    );
    assert!(
        store
            .jobs(tenant, 10, Some(job.id))
            .await
            .unwrap()
            .is_empty()
    );

    // A dispatcher marks the queued ones of the routers it holds sent in one go; one it could
    // not hand over goes back to the queue.
    assert_eq!(
        store
            .queued_executions(job.id, at(500), 10, None)
            .await
            .unwrap(),
        vec![(first.id, online.id)]
    );
    let marked = store
        .mark_sent(&[first.id, second.id], at(500))
        .await
        .unwrap();
    assert_eq!(marked.len(), 1);
    assert_eq!((marked[0].id, marked[0].state), (first.id, S::Sent));
    assert!(
        store
            .move_execution(first.id, S::Sent, S::Queued, None, at(600))
            .await
            .unwrap()
    );

    // Sending takes the queued one and marks it sent; sending again offers it again.
    let sent = store
        .take_executions_to_send(tenant, online.id, at(1_000))
        .await
        .unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, job);
    assert_eq!(
        (sent[0].1.state, sent[0].1.sent_at),
        (S::Sent, Some(at(1_000)))
    );
    let again = store
        .take_executions_to_send(tenant, online.id, at(2_000))
        .await
        .unwrap();
    assert_eq!(again[0].1.sent_at, Some(at(1_000)), "resent, not sent anew");
    assert!(
        store
            .take_executions_to_send(tenant, shed.id, at(1_000))
            .await
            .unwrap()
            .is_empty(),
        "nothing goes to a router without a seat"
    );

    // The router reports; a stale report, or one about another router's execution, changes
    // nothing.
    let report = |device, from: &[S], to, reason: Option<&str>, at_ms| ExecutionReport {
        tenant,
        device,
        execution: first.id,
        from: from.to_vec(),
        to,
        reason: reason.map(str::to_owned),
        attempt: None,
        at: at(at_ms),
    };
    let in_flight = [S::Sent, S::Downloading];
    let moved = store
        .report_executions(&[
            report(
                online.id,
                &in_flight,
                S::Installing,
                Some("flashing"),
                3_000,
            ),
            report(online.id, &in_flight, S::Installing, None, 3_500),
            report(shed.id, &[S::Installing], S::Failed, None, 3_500),
            ExecutionReport {
                attempt: Some(7),
                ..report(online.id, &[S::Installing], S::Succeeded, None, 3_600)
            },
        ])
        .await
        .unwrap();
    assert_eq!(
        moved, 1,
        "only the first report moves it, not one of another attempt"
    );
    assert!(
        !store
            .move_execution(first.id, S::Sent, S::Failed, None, at(3_500))
            .await
            .unwrap()
    );

    // The shed router gets its seat back; then the job's timeout and expiry pass.
    assert_eq!(
        store
            .relicense_executions(tenant, shed.id, true, at(4_000))
            .await
            .unwrap(),
        1
    );
    let counts = store.execution_counts(tenant, &[job.id]).await.unwrap();
    assert_eq!(counts[&job.id][&S::Installing], 1);
    assert_eq!(counts[&job.id][&S::Queued], 1);

    let overdue = store.end_overdue_executions(at(61_000)).await.unwrap();
    assert_eq!(overdue.len(), 1);
    assert_eq!((overdue[0].id, overdue[0].state), (first.id, S::TimedOut));
    let overdue = store.end_overdue_executions(at(100_000)).await.unwrap();
    assert_eq!(overdue.len(), 1);
    assert_eq!((overdue[0].id, overdue[0].state), (second.id, S::Expired));
    assert_eq!(overdue[0].finished_at, Some(at(100_000)));

    // A retry queues the timed-out one again as attempt 2; cancelling the job ends it.
    assert!(
        store
            .move_execution(first.id, S::TimedOut, S::Queued, None, at(101_000))
            .await
            .unwrap()
    );
    let retried = store
        .device_execution(tenant, online.id, first.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (retried.state, retried.attempt, retried.finished_at),
        (S::Queued, 2, None)
    );
    assert!(matches!(
        store.cancel_job(other, job.id, at(102_000)).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        store.cancel_job(tenant, job.id, at(102_000)).await.unwrap(),
        1
    );
    let listed = store
        .job_executions(tenant, job.id, 10, None)
        .await
        .unwrap();
    let states: Vec<S> = listed.iter().map(|e| e.state).collect();
    assert!(
        states.contains(&S::Cancelled) && states.contains(&S::Expired),
        "{states:?}"
    );
    assert_eq!(
        store
            .device_executions(tenant, online.id, 10)
            .await
            .unwrap()[0]
            .state,
        S::Cancelled
    );
    assert!(
        store
            .job(tenant, job.id)
            .await
            .unwrap()
            .unwrap()
            .cancelled_at
            .is_some()
    );
    assert!(
        !store.has_open_executions(online.id).await.unwrap(),
        "every execution ended"
    );
}

async fn artifacts_are_stored_in_chunks_and_complete_only_when_finished(store: Arc<dyn Store>) {
    use floatilla_domain::ArtifactId;
    use floatilla_domain::jobs::ArtifactKind;
    use floatilla_store::Artifact;

    let tenant = new_tenant(&*store).await;
    let other = new_tenant(&*store).await;
    let mut artifact = Artifact {
        id: ArtifactId::new(),
        tenant_id: tenant,
        kind: ArtifactKind::Firmware,
        name: "mrx".into(),
        version: "5.3.0".into(),
        models: vec!["MRX5".into()],
        size: 0,
        sha256: String::new(),
        created_by: "ci".into(),
        created_at: at(0),
    };
    store.begin_artifact(&artifact).await.unwrap();
    store
        .put_artifact_chunk(artifact.id, 0, b"first")
        .await
        .unwrap();
    assert!(
        store.artifact(tenant, artifact.id).await.unwrap().is_none(),
        "not listed while the upload runs"
    );
    let duplicate = Artifact {
        id: ArtifactId::new(),
        ..artifact.clone()
    };
    assert!(matches!(
        store.begin_artifact(&duplicate).await,
        Err(StoreError::Conflict(_))
    ));
    store
        .put_artifact_chunk(artifact.id, 1, b"second")
        .await
        .unwrap();
    store
        .finish_artifact(artifact.id, 11, "abc123")
        .await
        .unwrap();
    artifact.size = 11;
    artifact.sha256 = "abc123".into();
    assert_eq!(
        store.artifact(tenant, artifact.id).await.unwrap(),
        Some(artifact.clone())
    );
    assert_eq!(store.artifact(other, artifact.id).await.unwrap(), None);
    assert_eq!(
        store
            .artifacts(tenant, Some(ArtifactKind::Firmware))
            .await
            .unwrap(),
        vec![artifact.clone()]
    );
    assert!(
        store
            .artifacts(tenant, Some(ArtifactKind::Config))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .artifact_chunk(artifact.id, 1)
            .await
            .unwrap()
            .as_deref(),
        Some(&b"second"[..])
    );
    assert_eq!(store.artifact_chunk(artifact.id, 2).await.unwrap(), None);

    // An upload left unfinished is removed once stale, with its chunks; a finished one stays.
    let stale = Artifact {
        id: ArtifactId::new(),
        version: "5.4.0".into(),
        created_at: at(1_000),
        ..artifact.clone()
    };
    store.begin_artifact(&stale).await.unwrap();
    store
        .put_artifact_chunk(stale.id, 0, b"lost")
        .await
        .unwrap();
    assert_eq!(store.abandon_stale_uploads(at(1_000)).await.unwrap(), 0);
    assert_eq!(store.abandon_stale_uploads(at(2_000)).await.unwrap(), 1);
    assert_eq!(store.artifact_chunk(stale.id, 0).await.unwrap(), None);
    assert!(store.artifact(tenant, artifact.id).await.unwrap().is_some());

    assert!(matches!(
        store.delete_artifact(other, artifact.id).await,
        Err(StoreError::NotFound(_))
    ));
    store.delete_artifact(tenant, artifact.id).await.unwrap();
    assert_eq!(store.artifact_chunk(artifact.id, 0).await.unwrap(), None);
}

async fn rollouts_are_leased_released_and_stopped(store: Arc<dyn Store>) {
    use floatilla_domain::jobs::{
        ExecutionState as S, JobKind, PhaseSize, RolloutPolicy, RolloutStatus,
    };
    use floatilla_domain::{ExecutionId, JobId};
    use floatilla_store::{Execution, Job, PhaseCount, Rollout, RolloutChange};

    let tenant = new_tenant(&*store).await;
    let token = new_token(&*store, tenant, None, None).await;
    let devices = [
        enroll(&*store, &token, "RO-1").await,
        enroll(&*store, &token, "RO-2").await,
        enroll(&*store, &token, "RO-3").await,
    ];
    let job = Job {
        id: JobId::new(),
        tenant_id: tenant,
        kind: JobKind::Reboot,
        params: serde_json::json!({}),
        expires_at: None,
        timeout_secs: 60,
        expected_downtime_secs: 0,
        created_by: "ci".into(),
        created_at: at(0),
        cancelled_at: None,
        artifact: None,
    };
    let executions: Vec<Execution> = devices
        .iter()
        .enumerate()
        .map(|(position, device)| Execution {
            id: ExecutionId::new(),
            job_id: job.id,
            tenant_id: tenant,
            device_id: device.id,
            state: S::Queued,
            reason: None,
            attempt: 1,
            created_at: at(0),
            sent_at: None,
            updated_at: at(0),
            finished_at: None,
            release_at: None,
            position: position as u32,
            phase: u32::from(position > 0),
        })
        .collect();
    let rollout = Rollout {
        job_id: job.id,
        tenant_id: tenant,
        policy: RolloutPolicy {
            phases: vec![PhaseSize::Count(1)],
            max_concurrent: Some(1),
            success_threshold_percent: 90,
            failure_threshold_percent: 20,
        },
        status: RolloutStatus::Running,
        phase: 0,
        planned: 3,
        target_group: None,
        target_tag: None,
        jitter_secs: 0,
        max_retries: 1,
        reason: None,
        created_at: at(0),
        updated_at: at(0),
    };
    store
        .create_rollout(&rollout, &job, &executions)
        .await
        .unwrap();
    assert_eq!(
        store.rollout(tenant, job.id).await.unwrap(),
        Some(rollout.clone())
    );
    assert_eq!(
        store.active_rollouts().await.unwrap(),
        vec![rollout.clone()]
    );

    // One node at a time drives it; another takes over once the lease ran out.
    assert!(
        store
            .lease_rollout(job.id, "a", at(0), at(15_000))
            .await
            .unwrap()
    );
    assert!(
        !store
            .lease_rollout(job.id, "b", at(1_000), at(16_000))
            .await
            .unwrap()
    );
    assert!(
        store
            .lease_rollout(job.id, "a", at(1_000), at(16_000))
            .await
            .unwrap()
    );
    assert!(
        store
            .lease_rollout(job.id, "b", at(16_001), at(31_000))
            .await
            .unwrap()
    );

    // Nothing is sent before it is released, nor before its release time.
    assert!(
        store
            .mark_sent(&[executions[0].id], at(2_000))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .release_executions(&[(executions[0].id, at(3_000))], at(2_000))
            .await
            .unwrap(),
        1
    );
    assert!(
        store
            .mark_sent(&[executions[0].id], at(2_500))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .mark_sent(&[executions[0].id], at(3_000))
            .await
            .unwrap()
            .len(),
        1
    );
    let mut counts = store.phase_counts(job.id).await.unwrap();
    counts.sort_by_key(|c| (c.phase, c.state.as_str()));
    assert_eq!(
        counts,
        vec![
            PhaseCount {
                phase: 0,
                state: S::Sent,
                released: true,
                count: 1
            },
            PhaseCount {
                phase: 1,
                state: S::Queued,
                released: false,
                count: 2
            },
        ]
    );

    // A failure is retried as attempt 2, waiting to be released again; not a third time.
    assert!(
        store
            .move_execution(
                executions[0].id,
                S::Sent,
                S::Failed,
                Some("boom"),
                at(4_000)
            )
            .await
            .unwrap()
    );
    assert_eq!(
        store.retry_executions(job.id, 2, at(5_000)).await.unwrap(),
        1
    );
    let retried = store
        .device_execution(tenant, devices[0].id, executions[0].id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            retried.state,
            retried.attempt,
            retried.release_at,
            retried.sent_at
        ),
        (S::Queued, 2, None, None)
    );

    // Aborting ends what was not sent; a stopped rollout does not start again.
    let change = RolloutChange {
        from: &[RolloutStatus::Running],
        to: RolloutStatus::Aborted,
        phase: 0,
        reason: Some("too many failures"),
    };
    assert!(
        store
            .set_rollout_status(tenant, job.id, change, at(6_000))
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_rollout_status(tenant, job.id, change, at(6_000))
            .await
            .unwrap()
    );
    let counts = store.execution_counts(tenant, &[job.id]).await.unwrap();
    assert_eq!(counts[&job.id][&S::Cancelled], 3);
    assert!(store.active_rollouts().await.unwrap().is_empty());
    let stopped = store.rollout(tenant, job.id).await.unwrap().unwrap();
    assert_eq!(
        (stopped.status, stopped.reason.as_deref()),
        (RolloutStatus::Aborted, Some("too many failures"))
    );
}

fn account(tenant: Option<TenantId>, email: &str, role: Role) -> User {
    User {
        id: UserId::new(),
        tenant_id: tenant,
        email: email.to_owned(),
        role,
        status: UserStatus::Active,
        password_hash: Some("$argon2id$v=19$stand-in".to_owned()),
        invitation: None,
        created_at: at(0),
        last_login_at: None,
    }
}

async fn accounts_are_unique_by_email_and_keep_their_sessions(store: Arc<dyn Store>) {
    let tenant = new_tenant(store.as_ref()).await;
    let alice = account(Some(tenant), &unique("alice"), Role::Admin);
    store.create_user(&alice).await.unwrap();
    let again = User {
        id: UserId::new(),
        ..alice.clone()
    };
    assert!(matches!(
        store.create_user(&again).await,
        Err(StoreError::Conflict(_))
    ));
    let provider = account(None, &unique("provider"), Role::Provider);
    store.create_user(&provider).await.unwrap();
    assert_eq!(
        store.users(Some(tenant)).await.unwrap(),
        vec![alice.clone()]
    );
    assert!(store.users(None).await.unwrap().contains(&provider));
    assert_eq!(
        store.user_by_email(&alice.email).await.unwrap(),
        Some(alice.clone())
    );

    let invited = User {
        status: UserStatus::Invited,
        password_hash: None,
        invitation: Some((unique("hash"), at(60_000))),
        ..account(Some(tenant), &unique("bob"), Role::Viewer)
    };
    store.create_user(&invited).await.unwrap();
    let hash = invited.invitation.clone().unwrap().0;
    assert_eq!(
        store.user_by_invitation(&hash).await.unwrap(),
        Some(invited.clone())
    );
    let accepted = User {
        status: UserStatus::NeedsApproval,
        password_hash: Some("$argon2id$v=19$other".to_owned()),
        invitation: None,
        last_login_at: Some(at(5_000)),
        ..invited.clone()
    };
    store.update_user(&accepted).await.unwrap();
    assert_eq!(store.user(invited.id).await.unwrap(), Some(accepted));
    assert_eq!(store.user_by_invitation(&hash).await.unwrap(), None);

    let session = ConsoleSession {
        secret_hash: unique("session"),
        user_id: alice.id,
        csrf_token: "csrf".to_owned(),
        created_at: at(1_000),
        last_used_at: at(1_000),
    };
    store.create_console_session(&session).await.unwrap();
    store
        .touch_console_session(&session.secret_hash, at(2_000))
        .await
        .unwrap();
    let (found, user) = store
        .console_session(&session.secret_hash)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(user, alice);
    assert_eq!(found.last_used_at, at(2_000));
    assert_eq!(found.csrf_token, "csrf");
    // Neither begun too early nor idle too long: kept.
    assert_eq!(
        store
            .prune_console_sessions(at(500), at(1_500))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .prune_console_sessions(at(500), at(2_500))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.console_session(&session.secret_hash).await.unwrap(),
        None
    );

    store.create_console_session(&session).await.unwrap();
    store.delete_user(alice.id).await.unwrap();
    assert_eq!(
        store.console_session(&session.secret_hash).await.unwrap(),
        None
    );
    assert!(matches!(
        store.delete_user(alice.id).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn the_audit_log_is_filtered_paged_and_pruned(store: Arc<dyn Store>) {
    let tenant = new_tenant(store.as_ref()).await;
    let other = new_tenant(store.as_ref()).await;
    let user = Actor::User {
        id: UserId::new(),
        email: "alice@example.com".to_owned(),
    };
    let token = Actor::Token {
        id: ApiTokenId::new(),
        name: "deploy".to_owned(),
    };
    let mut written = Vec::new();
    for n in 0..10 {
        let entry = AuditEntry {
            id: AuditEntryId::new(),
            tenant_id: Some(if n == 9 { other } else { tenant }),
            at: at(n * 1_000),
            actor: if n % 2 == 0 {
                user.clone()
            } else {
                token.clone()
            },
            action: if n < 5 {
                "POST /api/v1/devices/bulk".to_owned()
            } else {
                "DELETE /api/v1/licenses/{id}".to_owned()
            },
            target: (n >= 5).then(|| format!("license-{n}")),
            address: Some("127.0.0.1".to_owned()),
            status: if n == 3 { 403 } else { 200 },
            error: (n == 3).then(|| "forbidden".to_owned()),
        };
        store.record_audit(&entry).await.unwrap();
        written.push(entry);
    }
    let list = |filter: AuditFilter, limit: u32| {
        let store = store.clone();
        async move {
            store
                .audit_entries(Some(tenant), &filter, limit)
                .await
                .unwrap()
        }
    };
    let everything = list(AuditFilter::default(), 100).await;
    assert_eq!(
        everything.len(),
        9,
        "the other tenant's entry is not listed"
    );
    assert_eq!(everything[0], written[8], "newest first, read back whole");
    let by_token = list(
        AuditFilter {
            actor: Some("deploy".to_owned()),
            ..AuditFilter::default()
        },
        100,
    )
    .await;
    assert!(by_token.iter().all(|e| e.actor == token));
    assert_eq!(by_token.len(), 4);
    let failed = list(
        AuditFilter {
            succeeded: Some(false),
            ..AuditFilter::default()
        },
        100,
    )
    .await;
    assert_eq!(failed, vec![written[3].clone()]);
    let licenses_in_window = list(
        AuditFilter {
            action: Some("licenses".to_owned()),
            since: Some(at(6_000)),
            until: Some(at(8_000)),
            ..AuditFilter::default()
        },
        100,
    )
    .await;
    assert_eq!(
        licenses_in_window,
        vec![written[7].clone(), written[6].clone()]
    );
    let first_page = list(AuditFilter::default(), 4).await;
    let second_page = list(
        AuditFilter {
            before: Some(first_page[3].id),
            ..AuditFilter::default()
        },
        4,
    )
    .await;
    assert_eq!(first_page[3], written[5]);
    assert_eq!(second_page[0], written[4]);
    assert!(
        store
            .audit_entries(None, &AuditFilter::default(), 100)
            .await
            .unwrap()
            .iter()
            .all(|e| e.tenant_id.is_none())
    );

    assert_eq!(store.prune_audit(at(4_000), 2).await.unwrap(), 2);
    assert_eq!(store.prune_audit(at(4_000), 100).await.unwrap(), 2);
    assert_eq!(list(AuditFilter::default(), 100).await.len(), 5);
}
