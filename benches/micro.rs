//! Micro-benchmarks of the hot path's parts: workload-token verification,
//! policy evaluation (also with 1, 100 and 1,000 policies, full scan
//! against the index), and a lease-store round trip (pending + activate,
//! each a durable commit).
//!
//! `cargo bench --bench micro`

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use writ::config::{IssuerConfig, Limits};
use writ::dev::DevIssuer;
use writ::identity::Verifier;
use writ::model::{Lease, LeaseState, SealedHandle, Task, TaskContext, TaskState};
use writ::policy::{GrantFacts, PolicyEngine, RoleFacts};
use writ::principals::Agent;
use writ::store::{EmbeddedStore, LeaseStore};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

fn token_verification(c: &mut Criterion) {
    let rt = runtime();
    let (verifier, token, issuer) = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let issuer = DevIssuer::generate(&url).unwrap();
        let router = issuer.router();
        tokio::spawn(async move { axum::serve(listener, router).await });
        let config =
            IssuerConfig { issuer: url, jwks_url: None, algorithms: vec![], ca_file: None, token_file: None };
        let verifier = Verifier::new("writ", &Limits::default(), &[config]).unwrap();
        assert!(verifier.warm_up().await.is_empty());
        let token = issuer.mint("agent:bench", "writ", Duration::from_secs(3600), Utc::now()).unwrap();
        (verifier, token, issuer)
    });
    c.bench_function("verify workload token (ES256, seen before)", |b| {
        b.to_async(&rt).iter(|| async { verifier.verify(&token, Utc::now()).await.unwrap() })
    });
    let verifier = &verifier;
    c.bench_function("verify workload token (ES256, first sight: signature checked)", |b| {
        b.to_async(&rt).iter_batched(
            || issuer.mint("agent:bench", "writ", Duration::from_secs(3600), Utc::now()).unwrap(),
            |fresh| async move { verifier.verify(&fresh, Utc::now()).await.unwrap() },
            criterion::BatchSize::SmallInput,
        )
    });
}

fn task() -> Task {
    let now = Utc::now();
    Task {
        id: "bench-task".into(),
        agent: "demo-agent".into(),
        context: TaskContext {
            environment: "dev".into(),
            labels: [("team".into(), "a".into())].into(),
            ..TaskContext::default()
        },
        state: TaskState::Open,
        created_at: now,
        created_by: "bench".into(),
        deadline: now + chrono::Duration::hours(1),
        closed: None,
    }
}

fn policy_evaluation(c: &mut Criterion) {
    let engine = PolicyEngine::from_text(include_str!("../src/dev/example.cedar")).unwrap();
    let agent = Agent {
        name: "demo-agent".into(),
        owner: "o".into(),
        description: String::new(),
        team: String::new(),
        risk_tier: "low".into(),
    };
    let task = task();
    let scopes = vec!["orders:read".to_string()];
    c.bench_function("evaluate policy (4 policies, allow)", |b| {
        b.iter(|| {
            let facts = GrantFacts {
                action: "issue",
                agent: &agent,
                task: &task,
                role: RoleFacts { provider: "tokens", role: "orders-read", shape: "revocable" },
                tool: "orders.lookup",
                scopes: &scopes,
                ttl_seconds: 300,
                now: Utc::now(),
            };
            engine.decide(&facts).unwrap()
        })
    });
}

/// What policy `i` of a generated set is. Most grant one bot of one team
/// one role; a few say something about every role of a provider, or about
/// every role, and cannot be indexed.
enum Kind {
    /// `principal == …, resource == …`
    BotRole,
    /// `principal is Writ::Agent, resource == …` with attribute conditions
    AnyAgentOnRole,
    /// `forbid`, `resource in Writ::Provider::…`
    ForbidProvider,
    /// `forbid`, `principal` unconstrained, `resource is Writ::Role`
    ForbidAnyRole,
}

fn kind(i: usize) -> Kind {
    match (i % 100, i % 10) {
        (98, _) => Kind::ForbidAnyRole,
        (49 | 99, _) => Kind::ForbidProvider,
        (_, 7) => Kind::AnyAgentOnRole,
        _ => Kind::BotRole,
    }
}

/// `count` policies over `count / 10` teams (at least one), policy `i`
/// about team `i % teams`, bot `i / teams`.
fn policy_text(count: usize) -> String {
    let teams = (count / 10).max(1);
    (0..count)
        .map(|i| {
            let (team, bot) = (i % teams, i / teams);
            match kind(i) {
                Kind::BotRole => format!(
                    "@id(\"p{i}\") permit (principal == Writ::Agent::\"team-{team}-bot-{bot}\", \
                     action == Writ::Action::\"issue\", resource == Writ::Role::\"pg-{team}/reader\") \
                     when {{ context.task.environment == \"prod\" }};\n"
                ),
                Kind::AnyAgentOnRole => format!(
                    "@id(\"p{i}\") permit (principal is Writ::Agent, action == Writ::Action::\"issue\", \
                     resource == Writ::Role::\"pg-{team}/writer\") \
                     when {{ principal.owner == \"team-{team}@example.com\" && principal.risk_tier == \"low\" \
                     && context.ttl_seconds <= 900 }};\n"
                ),
                Kind::ForbidProvider => format!(
                    "@id(\"p{i}\") forbid (principal, action, resource in Writ::Provider::\"pg-{team}\") \
                     when {{ context.task.data_classification == \"restricted\" }};\n"
                ),
                Kind::ForbidAnyRole => format!(
                    "@id(\"p{i}\") forbid (principal, action, resource is Writ::Role) \
                     when {{ principal.risk_tier == \"high\" && context.now.hour_utc < 6 }};\n"
                ),
            }
        })
        .collect()
}

fn policy_scaling(c: &mut Criterion) {
    let mut group = c.benchmark_group("policy decision");
    for count in [1, 100, 1000] {
        let engine = PolicyEngine::from_text(&policy_text(count)).unwrap();
        // The bot of a `BotRole` policy in the middle of the set, on its role.
        let i = (count / 2..count).find(|&i| matches!(kind(i), Kind::BotRole)).unwrap();
        let teams = (count / 10).max(1);
        let (team, bot) = (i % teams, i / teams);
        let agent = Agent {
            name: format!("team-{team}-bot-{bot}"),
            owner: format!("team-{team}@example.com"),
            description: String::new(),
            team: String::new(),
            risk_tier: "low".into(),
        };
        let mut task = task();
        task.context.environment = "prod".into();
        let provider = format!("pg-{team}");
        let scopes = vec![];
        let facts = GrantFacts {
            action: "issue",
            agent: &agent,
            task: &task,
            role: RoleFacts { provider: &provider, role: "reader", shape: "revocable" },
            tool: "sql.query",
            scopes: &scopes,
            ttl_seconds: 300,
            now: Utc::now(),
        };
        let full = engine.decide_scanning_all(&facts).unwrap();
        assert_eq!(full, writ::policy::Decision::Allow { policies: vec![format!("p{i}")] });
        assert_eq!(engine.decide(&facts).unwrap(), full);
        group.bench_function(format!("{count} policies, full scan"), |b| {
            b.iter(|| engine.decide_scanning_all(&facts).unwrap())
        });
        group.bench_function(format!("{count} policies, indexed, candidate set assembled"), |b| {
            b.iter(|| engine.decide_uncached(&facts).unwrap())
        });
        group.bench_function(format!("{count} policies, indexed, candidate set cached"), |b| {
            b.iter(|| engine.decide(&facts).unwrap())
        });
    }
    group.finish();
}

fn store_round_trip(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn LeaseStore> = rt.block_on(async {
        let store = EmbeddedStore::open(&dir.path().join("bench.redb")).await.unwrap();
        let mut task = task();
        task.deadline = Utc::now() + chrono::Duration::days(1);
        store.create_task(task).await.unwrap();
        Arc::new(store)
    });
    let lease = |now| Lease {
        id: uuid::Uuid::now_v7(),
        agent: "demo-agent".into(),
        task_id: "bench-task".into(),
        provider: "tokens".into(),
        role: "orders-read".into(),
        scopes: vec![],
        tool: "bench".into(),
        state: LeaseState::Pending,
        created_at: now,
        issued_at: None,
        expires_at: now + chrono::Duration::minutes(5),
        handle: SealedHandle { key_id: "k".into(), sealed: vec![0; 60] },
        revocation: None,
    };
    let mut group = c.benchmark_group("lease store (embedded, durable)");
    group.sample_size(30);
    group.bench_function("pending + activate, one caller", |b| {
        b.to_async(&rt).iter(|| async {
            let now = Utc::now();
            let lease = lease(now);
            let id = lease.id;
            store.insert_pending(lease, now).await.unwrap();
            store
                .activate(
                    id,
                    now + chrono::Duration::minutes(5),
                    SealedHandle { key_id: "k".into(), sealed: vec![1; 60] },
                    now,
                )
                .await
                .unwrap();
        })
    });
    group.bench_function("pending + activate, 64 concurrent callers (per batch of 64)", |b| {
        b.to_async(&rt).iter(|| async {
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..64 {
                let store = store.clone();
                set.spawn(async move {
                    let now = Utc::now();
                    let lease = lease(now);
                    let id = lease.id;
                    store.insert_pending(lease, now).await.unwrap();
                    store
                        .activate(
                            id,
                            now + chrono::Duration::minutes(5),
                            SealedHandle { key_id: "k".into(), sealed: vec![1; 60] },
                            now,
                        )
                        .await
                        .unwrap();
                });
            }
            while set.join_next().await.is_some() {}
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = token_verification, policy_evaluation, policy_scaling, store_round_trip
}
criterion_main!(benches);
