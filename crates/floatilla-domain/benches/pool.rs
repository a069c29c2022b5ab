//! The floating-license rule at fleet scale: a pool with 1,000,000 live sessions. How fast a
//! session is granted and released, how long shedding or restoring 100,000 routers takes when
//! the capacity changes, and how long rebuilding the pool from its stored routers takes.
//!
//! Run: `cargo bench -p floatilla-domain --bench pool`

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use floatilla_domain::DeviceId;
use floatilla_domain::licensing::{Capacity, Pool, StoredRouter};

const SESSIONS: u64 = 1_000_000;
const SEATS: u64 = 600_000;
const SWING: u64 = 100_000;

/// A pool holding `SESSIONS` live sessions for `SEATS` seats, and the next free place in line.
fn full_pool() -> (Pool, u64) {
    let mut pool = Pool::new(Capacity::Limited(SEATS));
    for place in 0..SESSIONS {
        pool.start_session(DeviceId::new(), place);
    }
    (pool, SESSIONS)
}

fn pool(c: &mut Criterion) {
    let (mut pool, mut next_place) = full_pool();
    let mut group = c.benchmark_group("pool of 1,000,000 live sessions");
    group.sample_size(20);

    // A router connects and, later, its session ends: one grant (or denial) and one release.
    group.throughput(Throughput::Elements(2));
    group.bench_function("session start and end (excess newcomer)", |b| {
        b.iter(|| {
            let device = DeviceId::new();
            pool.start_session(device, next_place);
            next_place += 1;
            pool.end_session(device)
        })
    });
    // A licensed router leaves and the oldest excess router takes its seat; then the leaver
    // comes back at the end of the line.
    group.bench_function("licensed session ends, oldest excess restored", |b| {
        b.iter_custom(|iterations| {
            let mut elapsed = Duration::ZERO;
            let mut licensed: Vec<DeviceId> = Vec::new();
            for _ in 0..iterations {
                if licensed.is_empty() {
                    licensed = pool.licensed().take(10_000).collect();
                }
                let device = licensed.pop().expect("licensed routers");
                let start = Instant::now();
                let changes = pool.end_session(device);
                pool.start_session(device, next_place);
                elapsed += start.elapsed();
                next_place += 1;
                assert_eq!(changes.transitions.len(), 2);
            }
            elapsed
        })
    });

    group.throughput(Throughput::Elements(SWING));
    group.sample_size(10);
    // The baseline: what any change would cost if the line were recomputed from scratch (the
    // way the reference model in the property tests does it): sorting every live session.
    let line: Vec<(bool, u64, DeviceId)> = (0..SESSIONS)
        .map(|_| {
            let device = DeviceId(uuid::Uuid::new_v4());
            (false, device.0.as_u64_pair().0, device)
        })
        .collect();
    // A node loading a tenant's pool from the database.
    let stored: Vec<StoredRouter> = pool.routers().collect();
    group.throughput(Throughput::Elements(stored.len() as u64));
    group.bench_function("rebuild the pool from 1,000,000 stored routers", |b| {
        b.iter_batched(
            || stored.clone(),
            |stored| Pool::rebuild(Capacity::Limited(SEATS), stored),
            criterion::BatchSize::LargeInput,
        )
    });
    group.throughput(Throughput::Elements(SWING));
    group.bench_function("baseline: recompute the whole line once", |b| {
        b.iter_batched(
            || line.clone(),
            |mut line| {
                line.sort_unstable();
                line
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.bench_function("capacity drops: 100,000 shed", |b| {
        b.iter_custom(|iterations| {
            let mut shedding = Duration::ZERO;
            for _ in 0..iterations {
                let start = Instant::now();
                let changes = pool.set_capacity(Capacity::Limited(SEATS - SWING));
                shedding += start.elapsed();
                assert_eq!(changes.transitions.len() as u64, SWING);
                pool.set_capacity(Capacity::Limited(SEATS));
            }
            shedding
        })
    });
    group.bench_function("capacity rises: 100,000 restored", |b| {
        b.iter_custom(|iterations| {
            let mut restoring = Duration::ZERO;
            for _ in 0..iterations {
                pool.set_capacity(Capacity::Limited(SEATS - SWING));
                let start = Instant::now();
                let changes = pool.set_capacity(Capacity::Limited(SEATS));
                restoring += start.elapsed();
                assert_eq!(changes.transitions.len() as u64, SWING);
            }
            restoring
        })
    });
    group.finish();
}

criterion_group!(benches, pool);
criterion_main!(benches);
