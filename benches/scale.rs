//! Scale benchmarks: what a million leases cost, and how late expiry is.
//!
//! ```text
//! cargo bench --bench scale -- memory  --leases 1000000 [--shape postgres|jwt] [--agents 20] [--per-task 4]
//! cargo bench --bench scale -- startup --leases 1000000 [--watch 60]
//! cargo bench --bench scale -- expiry  --leases 100000 --over 60 [--store redis|embedded]
//! cargo bench --bench scale -- scripts --leases 100000 [--close 10000]
//! cargo bench --bench scale -- suspend --leases 10000 [--tasks 100] [--store redis|embedded] [--scope agent|provider]
//! cargo bench --bench scale -- audit-start --leases 1000000
//! cargo bench --bench scale -- shards --leases 30000 [--tasks 300] [--count 3]
//! ```
//!
//! Each run starts its own `redis-server` (default configuration, no
//! persistence) on a free port, through the tests' `support/redis.rs`.
//!
//! - `memory` seeds active leases through the Redis store's own write path
//!   (`insert_pending` then `activate`, many calls in flight on its one
//!   multiplexed connection) and prints the growth of `used_memory` per
//!   lease. `postgres` leases have the field sizes of the store test's
//!   "realistic" lease (20 agents, 4 leases a task, a 76-byte sealed
//!   handle); `jwt` leases those the `writ dev` token provider issues.
//! - `startup` runs the `writ serve` binary (Redis store) as a child: how
//!   long until gRPC health says SERVING, and its RSS then and over
//!   `--watch` seconds, first on an empty store, then after seeding.
//! - `expiry` starts Writ in-process (the `writ dev` configuration with the
//!   `jwt` provider), issues `--leases` credentials over gRPC whose expiries
//!   are spread evenly over `--over` seconds, waits until every one is
//!   revoked, and prints the lag: when the revocation was recorded
//!   (`completed_at`) minus `expires_at`.
//! - `scripts` seeds `--leases` active leases (the background), then takes
//!   one task of `--close` leases through its whole life on the store
//!   (issue: insert and activate; close, claim, finish), phase by phase, and prints
//!   the time Redis itself spent per lease in each phase, from
//!   `INFO commandstats` (reset before each phase). It measures the store's
//!   scripts, not the client, so a debug build measures the same.
//! - `suspend` issues `--leases` credentials over gRPC to the demo agent,
//!   spread over `--tasks` tasks, then pulls the kill switch
//!   (`AdminService/SuspendAgent`) while a prober keeps asking for a
//!   credential (on Redis, through a second replica), and prints how long
//!   until the first refusal, how long the call took, and how long until
//!   the last lease was revoked (its `completed_at`).
//! - `shards` starts a three-primary Redis Cluster and issues `--leases`
//!   leases (insert and activate, 64 in flight) over `--tasks` tasks
//!   through the store, once with `shards = 1` and once with `shards =
//!   --count`, each in its own namespace, and prints per primary the
//!   functions it ran and the time Redis spent in them (`INFO
//!   commandstats`, reset before each run), and the store's rate.
//! - `audit-start` writes a signed audit log of `--leases` `issued`-shaped
//!   records (a checkpoint every 10,000) and times opening it again, which
//!   reads a signed log through, against opening it unsigned (the tail
//!   only).

#[path = "../tests/support/redis.rs"]
mod redis_support;
#[path = "scale/suspend.rs"]
mod suspend;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use hdrhistogram::Histogram;
use redis_support::RedisServer;
use tonic::transport::{Channel, Endpoint};
use uuid::Uuid;
use writ::api::proto;
use writ::api::proto::credential_service_client::CredentialServiceClient;
use writ::api::proto::task_service_client::TaskServiceClient;
use writ::clock::SystemClock;
use writ::dev::{DevIssuer, DevOptions};
use writ::model::{Lease, LeaseState, SealedHandle, Task, TaskContext, TaskState};
use writ::server::Running;
use writ::store::{LeaseFilter, LeaseStore, RedisConfig, RedisStore, StoreConfig};

struct Options {
    command: String,
    leases: usize,
    shape: String,
    agents: usize,
    per_task: usize,
    watch: u64,
    over: u64,
    redis: bool,
    close: usize,
    tasks: usize,
    /// `shards`: the shard count to compare with one.
    count: u16,
    /// `suspend`: what is suspended, `agent` or `provider`.
    scope: String,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().skip(1).filter(|arg| arg != "--bench").collect();
    let value = |name: &str| args.iter().position(|arg| arg == name).and_then(|at| args.get(at + 1));
    let number = |name: &str, default: u64| {
        value(name).and_then(|v| v.trim_end_matches('s').parse().ok()).unwrap_or(default)
    };
    Options {
        command: args.first().cloned().unwrap_or_else(|| "memory".into()),
        leases: number("--leases", 100_000) as usize,
        shape: value("--shape").cloned().unwrap_or_else(|| "postgres".into()),
        agents: number("--agents", 20).max(1) as usize,
        per_task: number("--per-task", 4).max(1) as usize,
        watch: number("--watch", 60),
        over: number("--over", 60).max(1),
        redis: value("--store").is_none_or(|store| store == "redis"),
        close: number("--close", 10_000).max(1) as usize,
        tasks: number("--tasks", 100).max(1) as usize,
        scope: value("--scope").cloned().unwrap_or_else(|| "agent".into()),
        count: number("--count", 3).clamp(2, 1024) as u16,
    }
}

fn main() {
    let options = options();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    match options.command.as_str() {
        "memory" => runtime.block_on(memory(&options)),
        "startup" => runtime.block_on(startup(&options)),
        "expiry" => runtime.block_on(expiry(&options)),
        "scripts" => runtime.block_on(scripts(&options)),
        "suspend" => runtime.block_on(suspend::run(&options)),
        "audit-start" => runtime.block_on(audit_start(&options)),
        "shards" => runtime.block_on(shards(&options)),
        other => {
            eprintln!(
                "unknown command {other:?}: memory, startup, expiry, scripts, suspend, audit-start or shards"
            )
        }
    }
}

/// A patient store for seeding: bulk calls take longer than the default
/// bound allows under full load.
async fn redis_store(server: &RedisServer, namespace: &str) -> Arc<dyn LeaseStore> {
    let config = RedisConfig {
        namespace: namespace.into(),
        response_timeout: Duration::from_secs(30),
        operation_timeout: Duration::from_secs(30),
        ..RedisConfig::single(server.url())
    };
    Arc::new(RedisStore::open(&config).await.unwrap())
}

/// How seeded leases look.
struct Shape {
    jwt: bool,
    agents: usize,
    per_task: usize,
    /// Seeded leases expire between `expires_from` and an hour later.
    expires_from: DateTime<Utc>,
    created: DateTime<Utc>,
}

impl Shape {
    fn new(options: &Options) -> Self {
        let now = Utc::now();
        Self {
            jwt: options.shape == "jwt",
            agents: options.agents,
            per_task: options.per_task,
            expires_from: now + TimeDelta::hours(2),
            created: now,
        }
    }

    fn task_id(&self, n: usize) -> String {
        let task = n / self.per_task;
        if self.jwt { format!("task-{task}") } else { format!("task-{}", Uuid::from_u128(task as u128)) }
    }

    fn agent(&self, n: usize) -> String {
        if self.jwt {
            format!("agent-{}", n % self.agents)
        } else {
            format!("agent-payments-reconciler-{:02}", n % self.agents)
        }
    }

    /// A v7 id per lease, in seeding order, as Writ makes them.
    fn id(&self, n: usize) -> Uuid {
        let millis = u64::try_from(self.created.timestamp_millis()).unwrap() + (n / 1000) as u64;
        let random = (n as u128).to_be_bytes();
        uuid::Builder::from_unix_timestamp_millis(millis, random[6..].try_into().unwrap()).into_uuid()
    }

    fn handle(&self) -> SealedHandle {
        // Nonce, the handle (a lease id's text, a role name) and the tag.
        let plain = if self.jwt { 36 } else { 48 };
        SealedHandle {
            key_id: if self.jwt { "sealing-1".into() } else { "k-2026-01".into() },
            sealed: vec![7; 12 + plain + 16],
        }
    }

    fn lease(&self, n: usize) -> Lease {
        let (provider, role, scopes, tool) = if self.jwt {
            ("tokens", "orders-read", vec!["orders:read".to_string()], "orders.lookup")
        } else {
            (
                "postgres",
                "readonly-analytics",
                vec!["select:orders".into(), "select:customers".into()],
                "sql-query",
            )
        };
        Lease {
            id: self.id(n),
            agent: self.agent(n),
            task_id: self.task_id(n),
            provider: provider.into(),
            role: role.into(),
            scopes,
            tool: tool.into(),
            state: LeaseState::Pending,
            created_at: self.created,
            issued_at: None,
            expires_at: self.expires_from,
            handle: self.handle(),
            revocation: None,
        }
    }

    fn expiry(&self, n: usize, leases: usize) -> DateTime<Utc> {
        self.expires_from + TimeDelta::milliseconds((3_600_000 * n / leases.max(1)) as i64)
    }
}

/// Runs `work(n)` for every n below `count`, `in_flight` at a time.
async fn for_each<F, Fut>(count: usize, in_flight: usize, what: &str, work: F)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let work = Arc::new(work);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..in_flight {
        let (next, work, what) = (next.clone(), work.clone(), what.to_owned());
        workers.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    break;
                }
                work(n).await;
                if (n + 1) % 100_000 == 0 {
                    eprintln!("  {what}: {} done", n + 1);
                }
            }
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined.unwrap();
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("{what}: {count} in {seconds:.1}s ({:.0}/s)", count as f64 / seconds);
}

/// Creates the tasks, then `leases` active leases, through the store.
async fn seed(store: &Arc<dyn LeaseStore>, shape: &Arc<Shape>, leases: usize) {
    let tasks = leases.div_ceil(shape.per_task);
    let (seeding, store_) = (shape.clone(), store.clone());
    for_each(tasks, 256, "tasks", move |task| {
        let (shape, store) = (seeding.clone(), store_.clone());
        async move {
            let task = Task {
                id: shape.task_id(task * shape.per_task),
                agent: shape.agent(task * shape.per_task),
                context: TaskContext { purpose: "scale".into(), ..TaskContext::default() },
                state: TaskState::Open,
                created_at: shape.created,
                created_by: "engine".into(),
                deadline: shape.created + TimeDelta::days(1),
                closed: None,
            };
            store.create_task(task).await.unwrap();
        }
    })
    .await;
}

async fn seed_leases(store: &Arc<dyn LeaseStore>, shape: &Arc<Shape>, leases: usize) {
    let (seeding, store_) = (shape.clone(), store.clone());
    for_each(leases, 512, "leases", move |n| {
        let (shape, store) = (seeding.clone(), store_.clone());
        async move {
            let lease = shape.lease(n);
            let id = lease.id;
            store.insert_pending(lease, shape.created).await.unwrap();
            let issued = shape.created + TimeDelta::milliseconds(5);
            store.activate(id, shape.expiry(n, leases), shape.handle(), issued).await.unwrap();
        }
    })
    .await;
}

fn used_memory(server: &RedisServer) -> i64 {
    let info = server.cli(&["info", "memory"]);
    info.lines().find_map(|line| line.strip_prefix("used_memory:")).unwrap().trim().parse().unwrap()
}

async fn memory(options: &Options) {
    let server = RedisServer::start();
    let store = redis_store(&server, "scale").await;
    let shape = Arc::new(Shape::new(options));
    println!(
        "memory: {} active {} leases, {} agents, {} leases a task",
        options.leases, options.shape, options.agents, options.per_task
    );
    let empty = used_memory(&server);
    seed(&store, &shape, options.leases).await;
    let with_tasks = used_memory(&server);
    seed_leases(&store, &shape, options.leases).await;
    let full = used_memory(&server);
    let per = |bytes: i64| bytes as f64 / options.leases as f64;
    println!("used_memory: empty {empty} B, with tasks {with_tasks} B, with leases {full} B");
    println!("per lease (leases only, after the tasks): {:.0} B", per(full - with_tasks));
    println!("per lease (tasks included): {:.0} B", per(full - empty));
    let sample = store.get_lease(shape.id(0)).await.unwrap().unwrap();
    println!("a lease's JSON (for comparison): {} B", serde_json::to_string(&sample).unwrap().len());
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn startup(options: &Options) {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let grpc = format!("127.0.0.1:{}", free_port());
    let dev = DevOptions {
        data_dir: dir.path().to_path_buf(),
        listen: grpc.parse().unwrap(),
        http_listen: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        // Nothing listens there: the child warns that it cannot fetch keys.
        issuer_listen: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
    };
    writ::dev::prepare(&dev).unwrap();
    let path = dir.path().join("writ.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let redis = format!("[store]\nkind = \"redis\"\nurl = \"{}\"\nnamespace = \"scale\"\n", server.url());
    let text = text.replace("[store]\nkind = \"embedded\"\npath = \"leases.redb\"\n", &redis);
    assert!(text.contains("kind = \"redis\""), "the dev configuration changed shape");
    std::fs::write(&path, text).unwrap();

    println!("startup: `writ serve` on the Redis store, watched for {}s", options.watch);
    serve_and_watch(&path, &grpc, "0 leases", options.watch).await;
    let store = redis_store(&server, "scale").await;
    let shape = Arc::new(Shape::new(options));
    seed(&store, &shape, options.leases).await;
    seed_leases(&store, &shape, options.leases).await;
    println!("Redis used_memory with {} leases: {} MiB", options.leases, used_memory(&server) >> 20);
    serve_and_watch(&path, &grpc, &format!("{} leases", options.leases), options.watch).await;
}

/// Starts `writ serve`, times it to SERVING, samples its RSS, stops it.
async fn serve_and_watch(config: &std::path::Path, grpc: &str, label: &str, watch: u64) {
    let started = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_writ"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let serving = loop {
        if let Ok(channel) = Endpoint::from_shared(format!("http://{grpc}")).unwrap().connect().await {
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
            let request = tonic_health::pb::HealthCheckRequest { service: String::new() };
            if let Ok(answer) = health.check(request).await
                && answer.into_inner().status
                    == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            {
                break started.elapsed();
            }
        }
        assert!(started.elapsed() < Duration::from_secs(60), "writ serve did not become SERVING");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let at_start = rss_kib(pid);
    let mut samples = vec![at_start];
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(watch) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        samples.push(rss_kib(pid));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let most = samples.iter().max().copied().unwrap_or(0);
    println!(
        "{label}: SERVING after {:.0} ms; RSS at SERVING {} MiB, after {watch}s {} MiB, most {} MiB",
        serving.as_secs_f64() * 1000.0,
        at_start >> 10,
        samples.last().copied().unwrap_or(0) >> 10,
        most >> 10
    );
}

fn authed<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// A Writ in-process with the `writ dev` configuration (on `redis` when
/// given), its issuer, and its data directory.
struct Dev {
    _dir: tempfile::TempDir,
    config: writ::config::Config,
    issuer: Arc<DevIssuer>,
    running: Running,
}

async fn start_dev(redis: Option<&RedisServer>, namespace: &str) -> Dev {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dev = DevOptions {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        issuer_listen: listener.local_addr().unwrap(),
    };
    let mut config = writ::dev::prepare(&dev).unwrap();
    if let Some(server) = redis {
        config.store = StoreConfig::Redis(RedisConfig {
            namespace: namespace.into(),
            ..RedisConfig::single(server.url())
        });
    }
    let issuer = Arc::new(
        DevIssuer::load_or_create(&writ::dev::issuer_url(&dev), &dir.path().join("dev-issuer.pk8")).unwrap(),
    );
    let router = issuer.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let running = Running::start(&config, Arc::new(SystemClock)).await.unwrap();
    Dev { _dir: dir, config, issuer, running }
}

async fn expiry(options: &Options) {
    let redis = options.redis.then(RedisServer::start);
    let Dev { _dir, issuer, running, .. } = start_dev(redis.as_ref(), "expiry").await;
    let store = running.broker.store().clone();
    let endpoint = format!("http://{}", running.grpc_addr);
    let now = Utc::now();
    let agent = issuer.mint(writ::dev::AGENT_SUBJECT, "writ", Duration::from_secs(7200), now).unwrap();
    let workflow = issuer.mint(writ::dev::WORKFLOW_SUBJECT, "writ", Duration::from_secs(7200), now).unwrap();
    let mut channels: Vec<Channel> = Vec::new();
    for _ in 0..4 {
        channels.push(Endpoint::from_shared(endpoint.clone()).unwrap().connect().await.unwrap());
    }
    let start = proto::StartTaskRequest {
        task_id: "expiry".into(),
        agent: "demo-agent".into(),
        context: Some(proto::TaskContext { environment: "dev".into(), ..Default::default() }),
        deadline: Some(writ::api::convert::timestamp(now + TimeDelta::minutes(60))),
    };
    TaskServiceClient::new(channels[0].clone()).start_task(authed(&workflow, start)).await.unwrap();

    // Expiries from `first` on, evenly over `over` seconds. Issuing runs
    // at a few thousand a second here; `first` leaves room for it.
    let leases = options.leases;
    let over = TimeDelta::seconds(options.over as i64);
    let first = Utc::now() + TimeDelta::seconds((leases / 800) as i64 + 30);
    println!(
        "expiry: {leases} leases on the {} store expiring over {}s, from {first}",
        if options.redis { "redis" } else { "embedded" },
        options.over
    );
    let late = Arc::new(AtomicUsize::new(0));
    let (agent_, channels_, late_) = (agent.clone(), channels.clone(), late.clone());
    for_each(leases, 64, "issued", move |n| {
        let mut client = CredentialServiceClient::new(channels_[n % channels_.len()].clone());
        let (agent, late) = (agent_.clone(), late_.clone());
        async move {
            let target = first + over * (n as i32) / (leases as i32);
            let ttl = (target - Utc::now()).to_std().unwrap_or_default();
            if ttl < Duration::from_secs(2) {
                late.fetch_add(1, Ordering::Relaxed);
            }
            let ttl = ttl.max(Duration::from_secs(1));
            let request = proto::IssueRequest {
                task_id: "expiry".into(),
                tool: "orders.lookup".into(),
                grants: vec![proto::GrantRequest {
                    provider: "tokens".into(),
                    role: "orders-read".into(),
                    scopes: vec!["orders:read".into()],
                    ttl: Some(prost_types::Duration {
                        seconds: ttl.as_secs() as i64,
                        nanos: ttl.subsec_nanos() as i32,
                    }),
                }],
            };
            client.issue(authed(&agent, request)).await.unwrap();
        }
    })
    .await;
    if late.load(Ordering::Relaxed) > 0 {
        println!(
            "warning: {} leases were issued less than 2s before their target expiry",
            late.load(Ordering::Relaxed)
        );
    }
    let until = first + over;
    println!("issued; waiting for the window to pass ({}s from now)", (until - Utc::now()).num_seconds());
    let pending = |state| LeaseFilter { state: Some(state), ..LeaseFilter::default() };
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if Utc::now() < until {
            continue;
        }
        let active = store.list_leases(&pending(LeaseState::Active), None, 1).await.unwrap();
        let revoking = store.list_leases(&pending(LeaseState::Revoking), None, 1).await.unwrap();
        if active.is_empty() && revoking.is_empty() {
            break;
        }
        assert!(
            Utc::now() < until + TimeDelta::minutes(10),
            "leases still not revoked 10 minutes after the window"
        );
    }
    let mut lag = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
    let (mut after, mut count, mut early) = (None, 0, 0);
    loop {
        let page = store.list_leases(&pending(LeaseState::Revoked), after, 10_000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for lease in &page {
            let completed = lease.revocation.as_ref().and_then(|r| r.completed_at).unwrap();
            let micros = (completed - lease.expires_at).num_microseconds().unwrap();
            if micros < 0 {
                early += 1;
            }
            lag.record(micros.max(1) as u64).unwrap();
            count += 1;
        }
    }
    let ms = |quantile: f64| lag.value_at_quantile(quantile) as f64 / 1000.0;
    println!("revoked {count} leases ({early} before their expiry)");
    println!(
        "expiry lag: p50 {:.0} ms, p99 {:.0} ms, p99.9 {:.0} ms, max {:.0} ms",
        ms(0.5),
        ms(0.99),
        ms(0.999),
        lag.max() as f64 / 1000.0
    );
    running.stop().await.unwrap();
}

/// Since the last reset: Redis's time (µs) in store calls (`FCALL`, or
/// `EVALSHA` before the function library), their number, and the number of
/// commands they ran inside (counted by Redis separately, their time
/// already in the calls').
fn redis_time(server: &RedisServer) -> (u64, u64, u64) {
    let info = server.cli(&["info", "commandstats"]);
    let field = |line: &str, name: &str| -> u64 {
        line.split([':', ','])
            .find_map(|part| part.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let mut totals = (0, 0, 0);
    for line in info.lines().filter(|line| line.starts_with("cmdstat_")) {
        if ["cmdstat_fcall:", "cmdstat_evalsha:", "cmdstat_eval:"].iter().any(|name| line.starts_with(name)) {
            totals.0 += field(line, "usec=");
            totals.1 += field(line, "calls=");
        } else if !line.starts_with("cmdstat_config") && !line.starts_with("cmdstat_function") {
            totals.2 += field(line, "calls=");
        }
    }
    totals
}

async fn scripts(options: &Options) {
    let server = RedisServer::start();
    let store = redis_store(&server, "scale").await;
    let shape = Arc::new(Shape::new(options));
    seed(&store, &shape, options.leases).await;
    seed_leases(&store, &shape, options.leases).await;
    let count = options.close;
    println!("scripts: one task of {count} leases, beside {} active leases", options.leases);
    let now = Utc::now();
    let task = Task {
        id: "scripts".into(),
        agent: "agent-scripts".into(),
        context: TaskContext { purpose: "scale".into(), ..TaskContext::default() },
        state: TaskState::Open,
        created_at: now,
        created_by: "engine".into(),
        deadline: now + TimeDelta::days(1),
        closed: None,
    };
    store.create_task(task).await.unwrap();
    let ids: Arc<Vec<Uuid>> = Arc::new((0..count).map(|_| Uuid::now_v7()).collect());
    let phase = |name: &'static str, server: &RedisServer, started: Instant| {
        let (usec, calls, inside) = redis_time(server);
        println!(
            "{name:>18}: {calls:>5} calls running {inside:>6} commands, {:>6.1} ms in Redis, \
             {:>5.1} µs and {:>4.1} commands a lease ({:.0} ms wall)",
            usec as f64 / 1000.0,
            usec as f64 / count as f64,
            inside as f64 / count as f64,
            started.elapsed().as_secs_f64() * 1000.0
        );
    };
    let reset = |server: &RedisServer| {
        server.cli(&["config", "resetstat"]);
        Instant::now()
    };

    // As Writ issues: a pending lease, then its activation, 64 in flight.
    let started = reset(&server);
    let (issuing, store_) = ((shape.clone(), ids.clone()), store.clone());
    for_each(count, 64, "issue", move |n| {
        let ((shape, ids), store) = (issuing.clone(), store_.clone());
        async move {
            let lease = Lease { id: ids[n], task_id: "scripts".into(), created_at: now, ..shape.lease(n) };
            store.insert_pending(lease, now).await.unwrap();
            let expires = now + TimeDelta::minutes(15) + TimeDelta::milliseconds(n as i64);
            store.activate(ids[n], expires, shape.handle(), now).await.unwrap();
        }
    })
    .await;
    phase("insert + activate", &server, started);

    let started = reset(&server);
    let closed = store.close_task("scripts", "engine", writ::model::RevocationReason::TaskClosed, now).await;
    assert_eq!(closed.unwrap().revoking.len(), count);
    phase("close_task", &server, started);

    let started = reset(&server);
    let mut claimed = Vec::new();
    loop {
        let batch = store.claim_revocations(now, now + TimeDelta::hours(1), 1024).await.unwrap();
        if batch.is_empty() {
            break;
        }
        claimed.extend(batch);
    }
    assert_eq!(claimed.len(), count);
    phase("claim_revocations", &server, started);

    let started = reset(&server);
    for batch in claimed.chunks(1024) {
        let outcomes: Vec<_> = batch
            .iter()
            .map(|lease| writ::store::RevocationOutcome::Done {
                lease_id: lease.id,
                generation: lease.revocation.as_ref().map_or(0, |revocation| revocation.generation),
            })
            .collect();
        store.finish_revocations(&outcomes, now).await.unwrap();
    }
    phase("finish_revocations", &server, started);
    let revoked = store
        .list_leases(&LeaseFilter { task_id: Some("scripts".into()), ..LeaseFilter::default() }, None, count)
        .await
        .unwrap();
    assert!(revoked.iter().all(|lease| lease.state == LeaseState::Revoked));
}

/// How long opening a signed audit log of `--leases` records takes (it is
/// read through), against opening it unsigned.
async fn audit_start(options: &Options) {
    use writ::audit::{AuditEvent, AuditLog, Signer};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let pkcs8 = writ::audit::checkpoint::generate_pkcs8().unwrap();
    let signer = || Signer::from_pkcs8(&pkcs8, "bench").unwrap();
    let key = [9u8; 32];
    let now = Utc::now();
    {
        let log = AuditLog::open_signed(&path, &key, Some(signer()), now).unwrap();
        for batch in 0..options.leases.div_ceil(10_000) {
            let events = (0..10_000.min(options.leases - batch * 10_000))
                .map(|n| AuditEvent {
                    event: "issued",
                    actor: "demo-agent".into(),
                    outcome: "ok",
                    agent: Some("demo-agent".into()),
                    task: Some(format!("task-{}", n % 100)),
                    provider: Some("tokens".into()),
                    role: Some("orders-read".into()),
                    tool: Some("orders.lookup".into()),
                    lease: Some(Uuid::now_v7()),
                    policies: vec!["demo-agent-reads-orders".into()],
                    details: Some(
                        serde_json::json!({"scopes": ["orders:read"], "expires_at": now, "notices": []}),
                    ),
                    ..AuditEvent::default()
                })
                .collect();
            log.record_all(now, events).await.unwrap();
            log.checkpoint(now).await.unwrap();
        }
        log.close(now).await.unwrap();
    }
    let bytes = std::fs::metadata(&path).unwrap().len();
    println!("audit-start: {} records, {:.0} MB", options.leases, bytes as f64 / 1e6);
    for _ in 0..3 {
        let started = Instant::now();
        drop(AuditLog::open_signed(&path, &key, Some(signer()), now).unwrap());
        let signed = started.elapsed();
        let started = Instant::now();
        drop(AuditLog::open(&path, &key).unwrap());
        let unsigned = started.elapsed();
        println!(
            "open signed {:.0} ms, unsigned {:.1} ms",
            signed.as_secs_f64() * 1000.0,
            unsigned.as_secs_f64() * 1000.0
        );
    }
}

/// Redis work per primary of a three-primary cluster, with one shard and
/// with `--count` shards.
async fn shards(options: &Options) {
    use redis_support::RedisCluster;
    let cluster = RedisCluster::start();
    let shape = Arc::new(Shape::new(options));
    let (leases, tasks) = (options.leases, options.tasks);
    println!("shards: {leases} issuances over {tasks} tasks, 64 in flight, on a three-primary cluster");
    for count in [1, options.count] {
        let config = RedisConfig {
            namespace: format!("shards-{count}"),
            shards: count,
            response_timeout: Duration::from_secs(30),
            operation_timeout: Duration::from_secs(30),
            ..RedisConfig::cluster(cluster.urls())
        };
        let store: Arc<dyn LeaseStore> = Arc::new(RedisStore::open(&config).await.unwrap());
        let now = Utc::now();
        for n in 0..tasks {
            let task = Task {
                id: format!("shards-task-{n}"),
                agent: "agent-shards".into(),
                context: TaskContext::default(),
                state: TaskState::Open,
                created_at: now,
                created_by: "engine".into(),
                deadline: now + TimeDelta::days(1),
                closed: None,
            };
            store.create_task(task).await.unwrap();
        }
        for node in cluster.nodes() {
            node.cli(&["config", "resetstat"]);
        }
        let started = Instant::now();
        let (shape, store_) = (shape.clone(), store.clone());
        for_each(leases, 64, "issue", move |n| {
            let (shape, store) = (shape.clone(), store_.clone());
            async move {
                let task_id = format!("shards-task-{}", n % tasks);
                let id = writ::model::routing::id_for_task(&task_id);
                let lease = Lease { id, task_id, created_at: now, ..shape.lease(n) };
                store.insert_pending(lease, now).await.unwrap();
                let expires = now + TimeDelta::minutes(15) + TimeDelta::milliseconds(n as i64);
                store.activate(id, expires, shape.handle(), now).await.unwrap();
            }
        })
        .await;
        let seconds = started.elapsed().as_secs_f64();
        let per_node: Vec<(u64, u64, u64)> = cluster.nodes().iter().map(redis_time).collect();
        let busiest = per_node.iter().map(|(usec, _, _)| *usec).max().unwrap_or(0);
        let total: u64 = per_node.iter().map(|(usec, _, _)| *usec).sum();
        println!("  shards = {count}: {:.0} issuances/s through the store", leases as f64 / seconds);
        for (node, (usec, calls, _)) in cluster.nodes().iter().zip(&per_node) {
            println!(
                "    primary :{}: {calls:>6} functions, {:>7.1} ms in Redis ({:>4.1} µs an issuance of all)",
                node.port(),
                *usec as f64 / 1000.0,
                *usec as f64 / leases as f64
            );
        }
        println!(
            "    busiest primary: {:.0} % of the Redis time; a primary at 100 % would cap issuance near {:.0}/s",
            100.0 * busiest as f64 / total.max(1) as f64,
            leases as f64 / (busiest.max(1) as f64 / 1e6)
        );
    }
}
