//! Heartbeat bookkeeping: the server writes "last seen" for all routers heard from in one batch per
//! interval. This compares that batch against the naive way, one write per heartbeat, for the same
//! 1,000 routers, on SQLite and (when reachable) PostgreSQL.
//!
//! Run: `cargo bench -p floatilla-store --features testing --bench last_seen`

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use floatilla_domain::model::{Credential, EnrollmentToken, Tenant};
use floatilla_domain::{CredentialId, DeviceId, EnrollmentTokenId, TenantId, Timestamp};
use floatilla_store::testing::on_each_backend;
use floatilla_store::{Enrollment, Store};

const ROUTERS: usize = 1_000;

async fn fleet(store: &dyn Store) -> Vec<DeviceId> {
    let now = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
    let tenant = Tenant {
        id: TenantId::new(),
        name: "bench".into(),
        enrollment_policy: floatilla_domain::enrollment::EnrollmentPolicy::Open,
        created_at: now,
        suspended_at: None,
        contact_email: None,
    };
    store.create_tenant(&tenant).await.unwrap();
    let token = EnrollmentToken {
        id: EnrollmentTokenId::new(),
        tenant_id: tenant.id,
        name: "bench".into(),
        secret_hash: "bench".into(),
        max_uses: None,
        uses: 0,
        expires_at: None,
        group_id: None,
        revoked_at: None,
        created_at: now,
    };
    store.create_enrollment_token(&token).await.unwrap();
    let mut devices = Vec::with_capacity(ROUTERS);
    for i in 0..ROUTERS {
        let id = DeviceId::new();
        let enrollment = Enrollment {
            token_id: token.id,
            tenant_id: tenant.id,
            now,
            existing_device: None,
            new_device_id: id,
            serial: format!("B{i:06}"),
            model: "m".into(),
            firmware: "f".into(),
            agent_version: "a".into(),
            group_id: None,
            state: floatilla_domain::enrollment::EnrollmentState::Accepted,
            credential: Credential {
                id: CredentialId::new(),
                device_id: id,
                secret_hash: format!("{i}"),
                created_at: now,
                expires_at: now + Duration::days(365),
                revoked_at: None,
            },
            event: floatilla_domain::events::Event::new(
                tenant.id,
                now,
                floatilla_domain::events::EventKind::RouterEnrolled,
                Some(id),
                "enrolled",
            ),
        };
        devices.push(store.enroll(&enrollment).await.unwrap().unwrap().id);
    }
    devices
}

fn bench_backend(
    c: &mut Criterion,
    runtime: &tokio::runtime::Runtime,
    backend: &str,
    store: Arc<dyn Store>,
) {
    let devices = runtime.block_on(fleet(store.as_ref()));
    let mut tick: i64 = 0;
    let mut next_time = move || -> Timestamp {
        tick += 1;
        Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap() + Duration::milliseconds(tick)
    };
    let mut group = c.benchmark_group(format!("last_seen/{backend}"));
    group.throughput(Throughput::Elements(ROUTERS as u64));
    group.sample_size(10);
    group.bench_function(BenchmarkId::new("one_batch", ROUTERS), |b| {
        b.to_async(runtime).iter(|| {
            let at = next_time();
            let batch: Vec<_> = devices.iter().map(|d| (*d, at)).collect();
            let store = store.clone();
            async move { store.record_last_seen(&batch).await.unwrap() }
        })
    });
    group.bench_function(BenchmarkId::new("one_write_per_heartbeat", ROUTERS), |b| {
        b.to_async(runtime).iter(|| {
            let at = next_time();
            let devices = devices.clone();
            let store = store.clone();
            async move {
                for device in devices {
                    store.record_last_seen(&[(device, at)]).await.unwrap();
                }
            }
        })
    });
    group.finish();
}

fn last_seen(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    on_each_backend(&runtime, |backend, store| {
        bench_backend(c, &runtime, backend, store);
    });
}

criterion_group!(benches, last_seen);
criterion_main!(benches);
