//! Redeeming an activation code: one transaction that looks the code up, marks it redeemed and
//! adds its license. The baseline is adding a license alone (insert plus revision bump), the
//! least a redemption must do; the ratio is what the lookup and the mark cost on top. SQLite and
//! (when reachable) PostgreSQL.
//!
//! Run: `cargo bench -p floatilla-store --features testing --bench redeem`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use floatilla_domain::licensing::activation::ActivationCode;
use floatilla_domain::licensing::{LicenseTerm, Seats};
use floatilla_domain::model::Tenant;
use floatilla_domain::{CodeBatchId, LicenseId, TenantId};
use floatilla_store::testing::on_each_backend;
use floatilla_store::{IssuedCode, License, Redemption, Store};

/// Codes issued up front: more than criterion redeems in its samples.
const CODES: usize = 30_000;

fn bench_backend(
    c: &mut Criterion,
    runtime: &tokio::runtime::Runtime,
    backend: &str,
    store: Arc<dyn Store>,
) {
    let now = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
    let tenant = Tenant {
        id: TenantId::new(),
        name: "bench".into(),
        enrollment_policy: floatilla_domain::enrollment::EnrollmentPolicy::Open,
        created_at: now,
        suspended_at: None,
        contact_email: None,
    };
    runtime.block_on(store.create_tenant(&tenant)).unwrap();
    let batch = CodeBatchId::new();
    let codes: Arc<Vec<ActivationCode>> = Arc::new(
        (0..CODES)
            .map(|_| ActivationCode::generate(rand::random()))
            .collect(),
    );
    for chunk in codes.chunks(1_000) {
        let issued: Vec<IssuedCode> = chunk
            .iter()
            .map(|code| IssuedCode {
                code: code.clone(),
                batch_id: batch,
                seats: 1,
                term_months: 12,
                created_at: now,
                redemption: None,
            })
            .collect();
        runtime
            .block_on(store.create_activation_codes(&issued))
            .unwrap();
    }
    let next = Arc::new(AtomicUsize::new(0));
    let mut group = c.benchmark_group(format!("redeem/{backend}"));
    group.sample_size(20);
    group.bench_function("redeem_code", |b| {
        b.to_async(runtime).iter(|| {
            let code = codes[next.fetch_add(1, Ordering::Relaxed)].clone();
            let store = store.clone();
            async move {
                let outcome = store
                    .redeem_activation_code(tenant.id, &code, LicenseId::new(), now)
                    .await
                    .unwrap();
                assert!(matches!(outcome, Redemption::Redeemed { .. }));
            }
        })
    });
    group.bench_function("add_license", |b| {
        b.to_async(runtime).iter(|| {
            let store = store.clone();
            let license = License {
                id: LicenseId::new(),
                tenant_id: tenant.id,
                name: "bench".into(),
                term: LicenseTerm {
                    seats: Seats::Count(1),
                    not_before: now,
                    not_after: None,
                    grace_until: None,
                },
                signed: None,
                created_at: now,
            };
            async move { store.add_license(&license).await.unwrap() }
        })
    });
    group.finish();
}

fn redeem(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    on_each_backend(&runtime, |backend, store| {
        bench_backend(c, &runtime, backend, store);
    });
}

criterion_group!(benches, redeem);
criterion_main!(benches);
