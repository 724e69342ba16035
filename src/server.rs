//! Wiring: build every part from configuration, serve gRPC and HTTP, run
//! the background workers, and shut everything down in order.
//!
//! Start-up is split into named steps ([`App::build`]) so a failure says
//! which part could not start. Nothing here reads every lease: start-up
//! time does not grow with the store.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Server;

use crate::api::proto::admin_service_server::AdminServiceServer;
use crate::api::proto::approval_service_server::ApprovalServiceServer;
use crate::api::proto::audit_service_server::AuditServiceServer;
use crate::api::proto::credential_service_server::CredentialServiceServer;
use crate::api::proto::policy_service_server::PolicyServiceServer;
use crate::api::proto::task_service_server::TaskServiceServer;
use crate::api::{self, AuthLayer, Authenticator};
use crate::audit::AuditLog;
use crate::clock::Clock;
use crate::config::{Config, RevocationConfig};
use crate::domain::Declared;
use crate::domain::{Broker, Parts};
use crate::identity::Verifier;
use crate::policy::PolicyEngine;
use crate::providers::ProviderRegistry;
use crate::sealer::Sealer;
use crate::webhooks::Notifier;

/// A built, not yet serving, Writ.
pub struct App {
    broker: Arc<Broker>,
    authenticator: Arc<Authenticator>,
    clock: Arc<dyn Clock>,
    revocation: RevocationConfig,
    shutdown_grace: std::time::Duration,
    header_list_limit: u32,
    /// SIGHUP, listened for from the moment the app is built (so a signal
    /// sent once `Running::start` returned is never the default "hang up",
    /// which ends the process); `None` when `reload_on_sighup` is off.
    hangups: Option<Hangups>,
    /// The approval webhooks' worker, started by `serve`.
    deliveries: Option<crate::webhooks::Deliveries>,
    /// The CAEP transmitter's worker, started by `serve`.
    caep_deliveries: Option<crate::caep::SetDeliveries>,
    /// How often the audit chain's head is signed (with a signing key).
    checkpoint_interval: Option<std::time::Duration>,
    /// TLS on both listeners; `None` only with `server.plaintext`.
    tls: Option<Arc<crate::tls::ServerTls>>,
}

#[cfg(unix)]
type Hangups = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangups = ();

fn listen_for_hangups(config: &Config) -> anyhow::Result<Option<Hangups>> {
    if !config.policy.reload_on_sighup {
        return Ok(None);
    }
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Some(signal(SignalKind::hangup()).context("listening for SIGHUP (policy.reload_on_sighup)")?))
    }
    #[cfg(not(unix))]
    {
        Ok(None)
    }
}

/// Room the gRPC listener leaves beside the token for the other headers of
/// a request (path, content type, user agent, tracing headers).
const HEADER_ALLOWANCE: usize = 16 * 1024;

/// The HTTP/2 header-list limit (SETTINGS_MAX_HEADER_LIST_SIZE) of the gRPC
/// listener: `limits.max_token_bytes` plus [`HEADER_ALLOWANCE`], so that a
/// token over the configured limit still reaches Writ's own check and gets
/// its clear UNAUTHENTICATED, not the transport's refusal (hyper's default
/// is 16 KiB whatever the configuration says). Clients must allow as much
/// for the headers they send.
pub fn header_list_limit(limits: &crate::config::Limits) -> u32 {
    u32::try_from(limits.max_token_bytes.saturating_add(HEADER_ALLOWANCE)).unwrap_or(u32::MAX)
}

impl App {
    pub async fn build(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let tls = match &config.server.tls {
            Some(tls) => {
                let tls =
                    crate::tls::ServerTls::load(tls, clock.now()).context("loading the TLS certificate")?;
                tracing::info!(
                    not_after = %tls.not_after(),
                    client_certificates = tls.asks_for_client_certificates(),
                    "serving TLS"
                );
                Some(Arc::new(tls))
            }
            None => {
                tracing::warn!(
                    "serving gRPC and HTTP WITHOUT TLS (server.plaintext = true): tokens and credentials \
                     cross the network in clear; for development on loopback only"
                );
                None
            }
        };
        let groups = config.approvals.groups.keys().cloned().collect();
        let policy = PolicyEngine::load(&config.policy.paths)
            .and_then(|policy| policy.require_groups(groups))
            .context("loading policies")?;
        tracing::info!(policies = policy.len(), "policies loaded");
        let providers = ProviderRegistry::from_config(&config.providers)
            .await
            .map_err(anyhow::Error::msg)
            .context("building providers")?;
        let sealer = load_sealer(config).context("loading sealing keys")?;
        let audit_key = std::fs::read(&config.audit.key_file)
            .with_context(|| format!("reading the audit key {}", config.audit.key_file.display()))?;
        let signer = match &config.audit.signing_key_file {
            Some(path) => {
                let pkcs8 = std::fs::read(path)
                    .with_context(|| format!("reading the audit signing key {}", path.display()))?;
                let signer = crate::audit::Signer::from_pkcs8(&pkcs8, &config.audit.replica)
                    .map_err(anyhow::Error::msg)
                    .with_context(|| format!("loading the audit signing key {}", path.display()))?;
                tracing::info!(
                    key_id = signer.key_id(),
                    replica = signer.replica(),
                    "audit checkpoints signed"
                );
                Some(signer)
            }
            None => None,
        };
        let audit = AuditLog::open_signed(&config.audit.path, &audit_key, signer, clock.now())
            .context("opening the audit log")?
            .for_replica(&config.audit.replica);
        let store = crate::store::open(&config.store).await.context("opening the lease store")?;
        let verifier = Verifier::new(&config.server.audience, &config.limits, &config.issuers)
            .map_err(anyhow::Error::msg)
            .context("configuring token verification")?;
        for (issuer, error) in verifier.warm_up().await {
            tracing::warn!(%issuer, %error, "issuer keys not fetched at start-up; will retry on demand");
        }
        let (webhooks, deliveries) =
            Notifier::new(&config.approvals.webhooks).context("configuring approval webhooks")?;
        let (caep, caep_deliveries) = crate::caep::Transmitter::new(config.caep.as_ref())
            .map_err(anyhow::Error::msg)
            .context("configuring CAEP")?;
        let broker = Arc::new(Broker::new(Parts {
            store,
            providers,
            policy,
            declared: Declared {
                agents: config.agents.clone(),
                services: config.services.clone(),
                issuers: config.issuers.iter().map(|issuer| issuer.issuer.clone()).collect(),
            },
            audit,
            sealer,
            limits: config.limits.clone(),
            approvals: config.approvals.settings(),
            webhooks,
            caep,
        }));
        match broker.seed_agents(clock.now()).await {
            Ok(0) => {}
            Ok(written) => {
                tracing::info!(written, "agents declared in the configuration written to the inventory")
            }
            Err(error) => {
                tracing::warn!(%error, "cannot seed the agent inventory now; the directory worker will retry")
            }
        }
        match broker.renotify_open_approvals(clock.now()).await {
            Ok(0) => {}
            Ok(sent) => tracing::info!(sent, "webhooks of open approval requests sent again"),
            Err(error) => tracing::warn!(%error, "cannot list open approval requests to notify again"),
        }
        let bound = config.server.tls.as_ref().is_some_and(|tls| tls.require_bound_agent_tokens);
        let authenticator = Arc::new(
            Authenticator::new(verifier, broker.clone(), clock.clone()).requiring_bound_agent_tokens(bound),
        );
        Ok(Self {
            broker,
            authenticator,
            clock,
            revocation: config.revocation.clone(),
            shutdown_grace: config.server.shutdown_grace,
            header_list_limit: header_list_limit(&config.limits),
            hangups: listen_for_hangups(config)?,
            deliveries: Some(deliveries),
            caep_deliveries: Some(caep_deliveries),
            checkpoint_interval: config
                .audit
                .signing_key_file
                .as_ref()
                .map(|_| config.audit.checkpoint_interval),
            tls,
        })
    }

    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Serves until `shutdown` completes, then drains requests (up to the
    /// grace period) and stops the workers.
    pub async fn serve(
        self,
        grpc: TcpListener,
        http: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = CancellationToken::new();
        let workers = Workers::default();
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let readiness = Arc::new(crate::http::Readiness::default());
        workers.spawn("revocation-worker", &stop, {
            let (broker, clock, config) = (self.broker.clone(), self.clock.clone(), self.revocation.clone());
            move |token| crate::revocation::run(broker, clock, config, token)
        });
        workers.spawn("expiry-sweeper", &stop, {
            let (broker, clock, config) = (self.broker.clone(), self.clock.clone(), self.revocation.clone());
            move |token| crate::sweeper::run(broker, clock, config, token)
        });
        if let Some(deliveries) = self.caep_deliveries {
            workers.spawn("caep-transmitter", &stop, move |token| deliveries.run(token));
        }
        if let Some(deliveries) = self.deliveries {
            workers.spawn("approval-webhooks", &stop, move |token| deliveries.run(token));
        }
        workers.spawn("agent-directory", &stop, {
            let (broker, clock) = (self.broker.clone(), self.clock.clone());
            move |token| follow_inventory(broker, clock, token)
        });
        if let Some(interval) = self.checkpoint_interval {
            workers.spawn("audit-checkpoints", &stop, {
                let (broker, clock) = (self.broker.clone(), self.clock.clone());
                move |token| sign_checkpoints(broker, clock, interval, token)
            });
        }
        if let Some(hangups) = self.hangups {
            workers.spawn("policy-reloader", &stop, {
                let (broker, clock) = (self.broker.clone(), self.clock.clone());
                move |token| reload_on_hangup(broker, clock, hangups, token)
            });
        }
        if let Some(tls) = &self.tls {
            workers.spawn("tls-reloader", &stop, {
                let (tls, clock) = (tls.clone(), self.clock.clone());
                move |token| crate::tls::watch(tls, clock, token)
            });
        }
        workers.spawn("backlog-gauges", &stop, {
            let (broker, clock) = (self.broker.clone(), self.clock.clone());
            move |token| crate::revocation::watch_backlog(broker, clock, token)
        });
        workers.spawn("health-watch", &stop, {
            let (broker, workers) = (self.broker.clone(), workers.clone());
            let readiness = readiness.clone();
            move |token| watch_health(broker, workers, health_reporter, readiness, token)
        });

        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(api::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("building gRPC reflection")?;
        let grpc_server = Server::builder()
            .http2_max_header_list_size(self.header_list_limit)
            .layer(AuthLayer::new(self.authenticator.clone()))
            .add_service(health_service)
            .add_service(reflection)
            .add_service(CredentialServiceServer::new(api::credentials::Credentials::new(
                self.broker.clone(),
                self.clock.clone(),
            )))
            .add_service(TaskServiceServer::new(api::tasks::Tasks::new(
                self.broker.clone(),
                self.clock.clone(),
            )))
            .add_service(AdminServiceServer::new(api::admin::Admin::new(
                self.broker.clone(),
                self.clock.clone(),
            )))
            .add_service(PolicyServiceServer::new(api::policy::Policies::new(
                self.broker.clone(),
                self.clock.clone(),
            )))
            .add_service(ApprovalServiceServer::new(api::approvals::Approvals::new(
                self.broker.clone(),
                self.clock.clone(),
            )))
            .add_service(AuditServiceServer::new(api::audit::Audit::new(
                self.broker.clone(),
                self.clock.clone(),
            )));
        let http_router = crate::http::router(
            self.broker.clone(),
            self.authenticator.clone(),
            self.clock.clone(),
            readiness.clone(),
        );
        type Served<E> = std::pin::Pin<Box<dyn Future<Output = Result<(), E>> + Send>>;
        let (grpc_server, http_server): (Served<tonic::transport::Error>, Served<std::io::Error>) =
            match &self.tls {
                Some(tls) => {
                    use crate::tls::{Listener, TlsIncoming};
                    let grpc = TlsIncoming::start(grpc, tls.clone(), Listener::Grpc, stop.clone())?;
                    let http = TlsIncoming::start(http, tls.clone(), Listener::Http, stop.clone())?;
                    (
                        Box::pin(grpc_server.serve_with_incoming_shutdown(
                            grpc.into_stream(),
                            stop.clone().cancelled_owned(),
                        )),
                        // Handlers see the client certificate (RFC 8705 binding).
                        Box::pin(
                            axum::serve(
                                http,
                                http_router
                                    .into_make_service_with_connect_info::<crate::tls::PeerCertificates>(),
                            )
                            .with_graceful_shutdown(stop.clone().cancelled_owned())
                            .into_future(),
                        ),
                    )
                }
                None => (
                    // Small request/response messages: without TCP_NODELAY,
                    // Nagle and delayed ACKs add ~40 ms to every call.
                    Box::pin(grpc_server.serve_with_incoming_shutdown(
                        tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true)),
                        stop.clone().cancelled_owned(),
                    )),
                    Box::pin(
                        axum::serve(http, http_router)
                            .with_graceful_shutdown(stop.clone().cancelled_owned())
                            .into_future(),
                    ),
                ),
            };

        let grace = self.shutdown_grace;
        let trigger = stop.clone();
        let signal = tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: draining requests");
            trigger.cancel();
        });
        let servers = async {
            tokio::try_join!(async { grpc_server.await.context("gRPC server") }, async {
                http_server.await.context("HTTP server")
            })
        };
        let served = tokio::select! {
            result = servers => result.map(|_| ()),
            () = async { stop.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "requests still running after the grace period; stopping anyway");
                Ok(())
            }
        };
        stop.cancel();
        signal.abort();
        workers.stop().await;
        // The last word: a checkpoint over everything this run wrote, after
        // which the log takes nothing more (a request still running after
        // the grace period fails rather than write past it).
        if let Err(error) = self.broker.audit().close(self.clock.now()).await {
            tracing::error!(%error, "cannot sign the audit log's final checkpoint");
        }
        tracing::info!("stopped");
        served
    }
}

/// Signs the audit chain's head every `interval` (a head that is a
/// checkpoint already is left alone, so an idle log does not grow).
/// How often each replica checks whether the agent inventory changed
/// (one small read); a change made on another replica is recognised here
/// within this.
const INVENTORY_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps this replica's directory in step with the inventory, and seeds
/// the configured agents if that could not be done at start or the store
/// lost them.
async fn follow_inventory(broker: Arc<Broker>, clock: Arc<dyn Clock>, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(INVENTORY_POLL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let result = if broker.registry().needs_seeding() {
            broker.seed_agents(clock.now()).await.map(drop)
        } else {
            broker.refresh_directory().await.map(drop)
        };
        match result {
            Ok(()) if failing => {
                tracing::info!("agent inventory read again");
                failing = false;
            }
            Ok(()) => {}
            Err(error) if !failing => {
                tracing::warn!(%error, "cannot read the agent inventory; retrying every second");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

async fn sign_checkpoints(
    broker: Arc<Broker>,
    clock: Arc<dyn Clock>,
    interval: std::time::Duration,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if let Err(error) = broker.audit().checkpoint(clock.now()).await {
            tracing::error!(%error, "cannot sign an audit checkpoint");
        }
    }
}

fn load_sealer(config: &Config) -> anyhow::Result<Sealer> {
    let keys = config
        .sealing
        .keys
        .iter()
        .map(|key| {
            let bytes =
                std::fs::read(&key.file).with_context(|| format!("reading sealing key {:?}", key.id))?;
            Ok((key.id.clone(), bytes))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Sealer::new(keys)?)
}

/// Reports NOT_SERVING while Writ cannot issue (store or audit down) or a
/// background worker has died (revocations would silently stop).
async fn watch_health(
    broker: Arc<Broker>,
    workers: Workers,
    reporter: tonic_health::server::HealthReporter,
    readiness: Arc<crate::http::Readiness>,
    stop: CancellationToken,
) {
    const SERVICES: [&str; 5] = [
        "",
        "writ.v1.CredentialService",
        "writ.v1.TaskService",
        "writ.v1.AdminService",
        "writ.v1.PolicyService",
    ];
    loop {
        let workers_alive = workers.all_running();
        if !workers_alive {
            tracing::error!("a background worker stopped unexpectedly; reporting NOT_SERVING");
        }
        let ready = workers_alive && broker.ready().await;
        readiness.set(ready);
        let status = if ready {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        for service in SERVICES {
            reporter.set_service_status(service, status).await;
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
        }
    }
    readiness.set(false);
    for service in SERVICES {
        reporter.set_service_status(service, tonic_health::ServingStatus::NotServing).await;
    }
}

/// Reloads the policy files on every SIGHUP until `stop`. A refused set is
/// logged and audited by the broker, and the running one kept.
async fn reload_on_hangup(
    broker: Arc<Broker>,
    clock: Arc<dyn Clock>,
    hangups: Hangups,
    stop: CancellationToken,
) {
    #[cfg(unix)]
    {
        let mut hangups = hangups;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                received = hangups.recv() => {
                    if received.is_none() {
                        stop.cancelled().await;
                        break;
                    }
                    // The broker logs and audits the outcome either way.
                    let _ = broker.reload_policies("sighup", clock.now()).await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (broker, clock, hangups);
        stop.cancelled().await;
    }
}

/// The background workers, by name. Shared with the health watch, which
/// reports NOT_SERVING if one of them ends before shutdown.
#[derive(Clone, Default)]
struct Workers {
    handles: Arc<std::sync::Mutex<Handles>>,
}

type Handles = Vec<(&'static str, JoinHandle<()>)>;

impl Workers {
    fn handles(&self) -> std::sync::MutexGuard<'_, Handles> {
        self.handles.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn spawn<F, Fut>(&self, name: &'static str, stop: &CancellationToken, start: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        use tracing::Instrument as _;
        let future = start(stop.clone()).instrument(tracing::info_span!("worker", name));
        self.handles().push((name, tokio::spawn(future)));
    }

    /// Whether every worker is still running.
    fn all_running(&self) -> bool {
        self.handles().iter().all(|(_, handle)| !handle.is_finished())
    }

    async fn stop(self) {
        let handles = std::mem::take(&mut *self.handles());
        for (name, handle) in handles {
            if let Err(error) = handle.await {
                tracing::error!(worker = name, %error, "worker ended abnormally");
            }
        }
    }
}

/// A Writ serving in the background: for `writ dev`, tests and benchmarks.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub broker: Arc<Broker>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Binds both listeners (port 0 picks free ports) and starts serving.
    pub async fn start(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let app = App::build(config, clock).await?;
        let grpc = TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding {}", config.server.listen))?;
        let http = TcpListener::bind(config.server.http_listen)
            .await
            .with_context(|| format!("binding {}", config.server.http_listen))?;
        let (grpc_addr, http_addr) = (grpc.local_addr()?, http.local_addr()?);
        let broker = app.broker().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.serve(grpc, http, async move {
            let _ = stopped.await;
        }));
        Ok(Self { grpc_addr, http_addr, broker, stop: Some(stop), task })
    }

    /// Shuts down gracefully and waits until everything has stopped.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        drop(self.broker);
        (&mut self.task).await.context("server task")?
    }
}
