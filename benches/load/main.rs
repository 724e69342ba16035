//! A bounded gRPC load generator: issues credentials against a real Writ at
//! a given concurrency for a given time and prints throughput and latency
//! percentiles. It issues through `writ-client`, the agents' Rust client.
//!
//! By default it starts Writ in-process (the `writ dev` configuration on an
//! embedded store in a temporary directory, with a development issuer) on
//! its own runtime. Both share this machine's cores, as they would on one
//! host.
//!
//! ```text
//! cargo bench --bench load -- [--concurrency 64] [--seconds 10] [--warmup 2]
//!                             [--store embedded|redis] [--provider jwt|postgres]
//!                             [--close N] [--echo] [--raw-postgres] [--tls]
//! cargo bench --bench load -- --target URL[,URL…] --data-dir DIR --issuer-listen ADDR
//!                             [--watch NAME=PID]… [--count N] [--warmup-count N]
//! ```
//!
//! With `--target` it drives Writ replicas running in other processes
//! instead (see `external.rs` and `scripts/cpu-per-issuance`, which starts
//! them pinned to their own cores).
//!
//! - `--store redis` starts a private `redis-server` (AOF on, `appendfsync
//!   everysec`) on a free port.
//! - `--provider postgres` issues PostgreSQL logins (the `postgres`
//!   provider) in a throw-away database on the local server instead of
//!   Writ-signed JWTs.
//! - `--close N` then also issues N leases into a fresh task and measures
//!   how long closing it takes until every lease is revoked.
//! - `--echo` first runs the same load against a bare tonic server whose
//!   `Issue` only echoes the request's tool back (no auth, no policy, no
//!   store, no provider), for scale: Writ's throughput as a fraction of it.
//! - `--tls` serves Writ's listeners over TLS (a CA and certificate made
//!   at start) and connects with TLS, as production does; without it both
//!   speak plaintext, as `writ dev` does.
//! - `--raw-postgres` (with `--provider postgres`) also measures the
//!   server's own ceiling at the same concurrency, without Writ: the
//!   provider's mint (`CREATE ROLE … LOGIN PASSWORD … VALID UNTIL … IN
//!   ROLE <group>`) and `DROP ROLE`, and the per-login shape
//!   (`grant_to = "login"`: the role's `GRANT`s under the grant lock).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tonic::transport::{Channel, Endpoint};
use writ::api::proto;
use writ::api::proto::credential_service_client::CredentialServiceClient;
use writ::api::proto::task_service_client::TaskServiceClient;
use writ::clock::SystemClock;
use writ::dev::{DevIssuer, DevOptions};
use writ::server::Running;

#[path = "../../tests/support/certs.rs"]
mod certs;
#[path = "../../tests/support/postgres.rs"]
mod pg_support;

mod echo;
mod external;
mod pg;

struct Options {
    concurrency: usize,
    seconds: u64,
    warmup: u64,
    connections: usize,
    redis: bool,
    close: usize,
    postgres: bool,
    echo: bool,
    raw_postgres: bool,
    tls: bool,
    /// External Writ replicas (or an echo server with `--echo`) to drive.
    targets: Vec<String>,
    /// The `--prepare`d data directory whose development issuer signs the tokens.
    data_dir: Option<std::path::PathBuf>,
    issuer_listen: Option<String>,
    prepare: Option<std::path::PathBuf>,
    serve_echo: Option<String>,
    /// Processes whose CPU time to report per issuance: (name, pid).
    watch: Vec<(String, String)>,
    count: Option<u64>,
    warmup_count: Option<u64>,
    /// With `--target`: how many tasks the callers issue into (caller `i`
    /// into task `i % tasks`), so that a sharded store spreads the load.
    tasks: usize,
}

fn options() -> Options {
    let mut options = Options {
        concurrency: 64,
        seconds: 10,
        warmup: 2,
        connections: 4,
        redis: false,
        close: 0,
        postgres: false,
        echo: false,
        raw_postgres: false,
        tls: false,
        targets: Vec::new(),
        data_dir: None,
        issuer_listen: None,
        prepare: None,
        serve_echo: None,
        watch: Vec::new(),
        count: None,
        warmup_count: None,
        tasks: 1,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut index = 1;
    while index < args.len() {
        let value = args.get(index + 1).and_then(|v| v.parse::<u64>().ok());
        match args[index].as_str() {
            "--store" => {
                options.redis = args.get(index + 1).is_some_and(|store| store == "redis");
                index += 2;
                continue;
            }
            "--provider" => {
                options.postgres = args.get(index + 1).is_some_and(|provider| provider == "postgres");
                index += 2;
                continue;
            }
            "--echo" => {
                options.echo = true;
                index += 1;
                continue;
            }
            "--raw-postgres" => {
                options.raw_postgres = true;
                index += 1;
                continue;
            }
            "--tls" => {
                options.tls = true;
                index += 1;
                continue;
            }
            "--target" | "--data-dir" | "--issuer-listen" | "--prepare" | "--serve-echo" | "--watch" => {
                let text = args.get(index + 1).cloned().unwrap_or_default();
                match args[index].as_str() {
                    "--target" => options.targets = text.split(',').map(str::to_string).collect(),
                    "--data-dir" => options.data_dir = Some(text.into()),
                    "--issuer-listen" => options.issuer_listen = Some(text),
                    "--prepare" => options.prepare = Some(text.into()),
                    "--serve-echo" => options.serve_echo = Some(text),
                    _ => {
                        let (name, pid) = text.split_once('=').expect("--watch NAME=PID");
                        options.watch.push((name.to_string(), pid.to_string()));
                    }
                }
                index += 2;
                continue;
            }
            _ => {}
        }
        match (args[index].as_str(), value) {
            ("--close", Some(v)) => options.close = usize::try_from(v).unwrap_or(0),
            ("--concurrency", Some(v)) => options.concurrency = usize::try_from(v).unwrap_or(64),
            ("--seconds", Some(v)) => options.seconds = v,
            ("--warmup", Some(v)) => options.warmup = v,
            ("--count", Some(v)) => options.count = Some(v),
            ("--warmup-count", Some(v)) => options.warmup_count = Some(v),
            ("--tasks", Some(v)) => options.tasks = usize::try_from(v).unwrap_or(1).max(1),
            ("--connections", Some(v)) => options.connections = usize::try_from(v).unwrap_or(4).max(1),
            _ => {
                index += 1;
                continue;
            }
        }
        index += 2;
    }
    options
}

fn authed<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn main() {
    let options = options();
    if let Some(dir) = &options.prepare {
        let listen = options.issuer_listen.as_deref().expect("--prepare needs --issuer-listen");
        return external::prepare(dir, listen);
    }
    if let Some(addr) = &options.serve_echo {
        return external::serve_echo(addr);
    }
    if !options.targets.is_empty() {
        return external::run(&options);
    }
    // The server under test gets its own runtime, the load generator another.
    let server_rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let client_rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    let echo = options.echo.then(|| {
        let addr = server_rt.block_on(echo::start());
        let request = issue_request("echo", "tokens", "orders-read", &["orders:read"]);
        let measured = client_rt.block_on(measure(&format!("http://{addr}"), "-", &request, &options));
        measured.print("bare tonic echo server");
        measured.throughput()
    });

    let dir = tempfile::tempdir().unwrap();
    let redis = options.redis.then(|| start_redis(dir.path()));
    let redis_url = redis.as_ref().map(|(_, url)| url.clone());
    let database = options.postgres.then(|| server_rt.block_on(pg::PgDatabase::create()));
    println!(
        "store: {}, provider: {}",
        if options.redis { "redis" } else { "embedded" },
        if options.postgres { "postgres" } else { "jwt" }
    );
    let (running, issuer) = server_rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dev = DevOptions {
            data_dir: dir.path().to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
            http_listen: "127.0.0.1:0".parse().unwrap(),
            issuer_listen: listener.local_addr().unwrap(),
        };
        let mut config = writ::dev::prepare(&dev).unwrap();
        if options.tls {
            config.server.plaintext = false;
            config.server.tls = Some(tls_files(dir.path()));
        }
        if let Some(url) = &redis_url {
            let mut store = writ::store::RedisConfig::single(url.clone());
            store.namespace = "load".into();
            config.store = writ::store::StoreConfig::Redis(store);
        }
        if let Some(database) = &database {
            let settings = database.provider_settings();
            config.providers.insert("analytics".into(), writ::config::ProviderConfig { kind: "postgres".into(), settings });
            let policy = r#"@id("load-analytics")
                permit (principal == Writ::Agent::"demo-agent", action == Writ::Action::"issue", resource == Writ::Role::"analytics/reader");"#;
            std::fs::write(dir.path().join("policies/analytics.cedar"), policy).unwrap();
        }
        let issuer = Arc::new(
            DevIssuer::load_or_create(&writ::dev::issuer_url(&dev), &dir.path().join("dev-issuer.pk8"))
                .unwrap(),
        );
        let router = issuer.router();
        tokio::spawn(async move { axum::serve(listener, router).await });
        (Running::start(&config, Arc::new(SystemClock)).await.unwrap(), issuer)
    });
    let endpoint = if options.tls {
        format!("https://localhost:{}", running.grpc_addr.port())
    } else {
        format!("http://{}", running.grpc_addr)
    };
    println!("transport: {}", if options.tls { "TLS" } else { "plaintext" });
    let now = chrono::Utc::now();
    let agent = issuer.mint(writ::dev::AGENT_SUBJECT, "writ", Duration::from_secs(3600), now).unwrap();
    let workflow = issuer.mint(writ::dev::WORKFLOW_SUBJECT, "writ", Duration::from_secs(3600), now).unwrap();
    let request = if options.postgres {
        issue_request("load-1", "analytics", "reader", &[])
    } else {
        issue_request("load-1", "tokens", "orders-read", &["orders:read"])
    };

    let measured = client_rt.block_on(async {
        start_task(&endpoint, &workflow, "load-1").await;
        measure(&endpoint, &agent, &request, &options).await
    });
    measured.print("writ");
    if let Some(echo) = echo {
        println!("ratio       {:.3} of the bare tonic echo server", measured.throughput() / echo);
    }
    if options.postgres {
        // Every role issued above is revoked (and dropped) before the
        // database goes: the revocation rate of a task close.
        client_rt.block_on(close_and_wait(&endpoint, &workflow, "load-1", measured.count as usize));
    }
    if options.close > 0 {
        let mut request = request.clone();
        request.task_id = "close-bench".into();
        client_rt.block_on(close_bench(&endpoint, &agent, &workflow, &request, options.close));
    }
    server_rt.block_on(async { running.stop().await.unwrap() });
    if let Some(database) = database {
        if options.raw_postgres {
            client_rt.block_on(pg::raw_ddl(
                &database,
                options.concurrency,
                Duration::from_secs(options.seconds),
            ));
        }
        server_rt.block_on(database.drop());
    }
    if let Some((mut child, _)) = redis {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The CA of `--tls`, trusted by every connection the load tool makes.
static TLS_CA: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// A CA and a certificate for `localhost`, written under `dir`.
fn tls_files(dir: &std::path::Path) -> writ::tls::TlsConfig {
    let ca = certs::TestCa::new("load CA");
    let (cert_file, key_file) = ca.server(&["localhost"]).write(dir, "load");
    let _ = TLS_CA.set(ca.pem.clone());
    writ::tls::TlsConfig {
        cert_file,
        key_file,
        client_ca_file: None,
        reload_interval: Duration::from_secs(10),
        require_bound_agent_tokens: false,
    }
}

/// An endpoint, with TLS trusting `--tls`'s CA for `https://`.
fn endpoint_of(url: &str) -> Endpoint {
    let endpoint = Endpoint::from_shared(url.to_string()).unwrap();
    match TLS_CA.get() {
        Some(ca) if url.starts_with("https://") => endpoint
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(ca)),
            )
            .unwrap(),
        _ => endpoint,
    }
}

fn issue_request(task_id: &str, provider: &str, role: &str, scopes: &[&str]) -> proto::IssueRequest {
    proto::IssueRequest {
        task_id: task_id.into(),
        tool: "orders.lookup".into(),
        grants: vec![proto::GrantRequest {
            provider: provider.into(),
            role: role.into(),
            scopes: scopes.iter().map(|scope| scope.to_string()).collect(),
            ttl: Some(prost_types::Duration { seconds: 300, nanos: 0 }),
        }],
    }
}

async fn start_task(endpoint: &str, workflow: &str, task_id: &str) {
    let channel = endpoint_of(endpoint).connect().await.unwrap();
    let start = proto::StartTaskRequest {
        task_id: task_id.into(),
        agent: "demo-agent".into(),
        context: Some(proto::TaskContext { environment: "dev".into(), ..Default::default() }),
        deadline: Some(writ::api::convert::timestamp(chrono::Utc::now() + chrono::Duration::minutes(30))),
    };
    TaskServiceClient::new(channel).start_task(authed(workflow, start)).await.unwrap();
}

struct Measured {
    count: u64,
    errors: u64,
    histogram: Histogram<u64>,
    elapsed: Duration,
}

impl Measured {
    fn throughput(&self) -> f64 {
        self.count as f64 / self.elapsed.as_secs_f64()
    }

    fn print(&self, what: &str) {
        let ms = |quantile: f64| self.histogram.value_at_quantile(quantile) as f64 / 1000.0;
        println!("== {what}");
        println!("issued {} in {:.2}s ({} errors)", self.count, self.elapsed.as_secs_f64(), self.errors);
        println!("throughput  {:.0} calls/s", self.throughput());
        println!(
            "latency     p50 {:.2} ms   p99 {:.2} ms   p99.9 {:.2} ms   max {:.2} ms   mean {:.2} ms",
            ms(0.5),
            ms(0.99),
            ms(0.999),
            self.histogram.max() as f64 / 1000.0,
            self.histogram.mean() / 1000.0
        );
    }
}

/// Warms up, then drives `request` at `endpoint` for the measured time.
async fn measure(endpoint: &str, token: &str, request: &proto::IssueRequest, options: &Options) -> Measured {
    let channels: Vec<Channel> = futures_channels(endpoint, options.connections).await;
    println!("warming up for {}s", options.warmup);
    drive(&channels, token, request, options.concurrency, Budget::until(Duration::from_secs(options.warmup)))
        .await;
    println!(
        "measuring {} concurrent callers for {}s over {} connections",
        options.concurrency, options.seconds, options.connections
    );
    let started = Instant::now();
    let (count, histogram, errors) = drive(
        &channels,
        token,
        request,
        options.concurrency,
        Budget::until(Duration::from_secs(options.seconds)),
    )
    .await;
    Measured { count, errors, histogram, elapsed: started.elapsed() }
}

/// A private redis-server with AOF, as production would run it.
fn start_redis(dir: &std::path::Path) -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = std::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--appendonly", "yes"])
        .args(["--appendfsync", "everysec", "--save", "", "--dir"])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server starts");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, format!("redis://127.0.0.1:{port}"))
}

/// Issues `count` leases into a fresh task, closes it, and reports how long
/// it took until every lease was revoked.
async fn close_bench(
    endpoint: &str,
    agent: &str,
    workflow: &str,
    request: &proto::IssueRequest,
    count: usize,
) {
    let channel = endpoint_of(endpoint).connect().await.unwrap();
    start_task(endpoint, workflow, &request.task_id).await;
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..32 {
        let mut client = CredentialServiceClient::new(channel.clone());
        let (agent, request) = (agent.to_string(), request.clone());
        let share = count / 32 + usize::from(worker < count % 32);
        workers.spawn(async move {
            for _ in 0..share {
                client.issue(authed(&agent, request.clone())).await.unwrap();
            }
        });
    }
    while workers.join_next().await.is_some() {}
    close_and_wait(endpoint, workflow, &request.task_id, count).await;
}

/// Closes a task holding `count` leases and waits until every one is
/// revoked, then reports the time and the revocation rate.
async fn close_and_wait(endpoint: &str, workflow: &str, task_id: &str, count: usize) {
    let channel = endpoint_of(endpoint).connect().await.unwrap();
    let mut tasks = TaskServiceClient::new(channel);
    let began = Instant::now();
    let closed = tasks
        .close_task(authed(workflow, proto::CloseTaskRequest { task_id: task_id.into() }))
        .await
        .unwrap()
        .into_inner();
    let answered = began.elapsed();
    loop {
        let task = tasks
            .get_task(authed(workflow, proto::GetTaskRequest { task_id: task_id.into() }))
            .await
            .unwrap()
            .into_inner();
        let done = task.leases.iter().filter(|l| l.state == proto::LeaseState::Revoked as i32).count();
        if done >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all = began.elapsed();
    println!(
        "close a task with {count} leases: CloseTask answered in {:.0} ms ({} revoked, {} retrying); all revoked after {:.0} ms ({:.0} revocations/s)",
        answered.as_secs_f64() * 1000.0,
        closed.revoked,
        closed.retrying,
        all.as_secs_f64() * 1000.0,
        count as f64 / all.as_secs_f64()
    );
}

async fn futures_channels(endpoint: &str, connections: usize) -> Vec<Channel> {
    let mut channels = Vec::new();
    for _ in 0..connections {
        channels.push(endpoint_of(endpoint).connect().await.unwrap());
    }
    channels
}

/// How much a run issues: for a time, or an exact number of calls.
#[derive(Clone)]
enum Budget {
    Until(Instant),
    /// Calls left to start, shared by the callers.
    Count(Arc<std::sync::atomic::AtomicI64>),
}

impl Budget {
    fn until(duration: Duration) -> Self {
        Self::Until(Instant::now() + duration)
    }

    fn count(count: u64) -> Self {
        Self::Count(Arc::new(std::sync::atomic::AtomicI64::new(i64::try_from(count).unwrap_or(i64::MAX))))
    }

    /// Whether a caller may start one more call.
    fn take(&self) -> bool {
        match self {
            Self::Until(deadline) => Instant::now() < *deadline,
            Self::Count(left) => left.fetch_sub(1, std::sync::atomic::Ordering::Relaxed) > 0,
        }
    }
}

async fn drive(
    channels: &[Channel],
    token: &str,
    request: &proto::IssueRequest,
    concurrency: usize,
    budget: Budget,
) -> (u64, Histogram<u64>, u64) {
    drive_tasks(channels, token, request, std::slice::from_ref(&request.task_id), concurrency, budget).await
}

/// [`drive`], caller `i` issuing into `tasks[i % tasks.len()]`.
async fn drive_tasks(
    channels: &[Channel],
    token: &str,
    request: &proto::IssueRequest,
    tasks: &[String],
    concurrency: usize,
    budget: Budget,
) -> (u64, Histogram<u64>, u64) {
    // The agents' client, one per connection, as a Rust agent issues.
    let clients: Vec<writ_client::Client> = channels
        .iter()
        .map(|channel| {
            writ_client::Client::builder("http://load")
                .token(writ_client::Token::fixed(token))
                .with_channel(channel.clone())
                .unwrap()
        })
        .collect();
    let grants: Vec<writ_client::Grant> = request
        .grants
        .iter()
        .map(|grant| writ_client::Grant {
            provider: grant.provider.clone(),
            role: grant.role.clone(),
            scopes: grant.scopes.clone(),
            ttl: grant.ttl.map(|ttl| Duration::from_secs(ttl.seconds.unsigned_abs())),
        })
        .collect();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let client = clients[worker % clients.len()].clone();
        let task_id = tasks[worker % tasks.len()].clone();
        let (tool, grants) = (request.tool.clone(), grants.clone());
        let budget = budget.clone();
        workers.spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let (mut count, mut errors) = (0u64, 0u64);
            while budget.take() {
                let began = Instant::now();
                match client.issue(&task_id, &tool, &grants).await {
                    Ok(_) => {
                        count += 1;
                        histogram.record(began.elapsed().as_micros() as u64).unwrap();
                    }
                    Err(error) => {
                        errors += 1;
                        if errors == 1 {
                            eprintln!("first error: {error}");
                        }
                    }
                }
            }
            (count, histogram, errors)
        });
    }
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let (mut count, mut errors) = (0, 0);
    while let Some(Ok((c, h, e))) = workers.join_next().await {
        count += c;
        errors += e;
        total.add(h).unwrap();
    }
    (count, total, errors)
}
