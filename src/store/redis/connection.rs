//! The connection to Redis: one multiplexed connection to a single node
//! (a `ConnectionManager`, which reconnects on its own) or to each node of
//! a cluster, shared by every call of a store. Every call through it is
//! bounded, so that a Redis that is down makes calls fail rather than wait.

use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::io::tcp::{TcpSettings, socket2::TcpKeepalive};
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, Value};

use super::RedisConfig;
use super::library::Library;
use crate::store::StoreError;

/// How long the `ConnectionManager` keeps trying to reconnect once a
/// connection drops: the delay between attempts grows from the first to
/// the most, for this many attempts (about ten seconds). Calls made
/// meanwhile wait for it (up to their own timeout), so a Redis that comes
/// back within that time is used at once; after it, the next call starts
/// over, and fails with the real reason while it does.
const RECONNECT_ATTEMPTS: usize = 20;
const RECONNECT_FIRST_DELAY: Duration = Duration::from_millis(50);
const RECONNECT_MOST_DELAY: Duration = Duration::from_millis(500);

/// A peer that vanishes without closing the connection (a host gone, a
/// partition) is noticed by the kernel after this long with data unacked,
/// or by keepalive probes when idle; the connection then fails and is
/// replaced, where otherwise every call would time out on it forever.
const DEAD_PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// Redis, and the bound on every call made to it.
pub(super) struct Connection {
    nodes: Nodes,
    /// Loaded into Redis when a call finds it missing.
    library: Library,
    /// Waiting for a reconnection or a redirect included.
    operation_timeout: Duration,
}

impl Connection {
    /// Sets up the connection. A single node is connected lazily, on the
    /// first call; a cluster is asked for its slot map here.
    pub(super) async fn open(config: &RedisConfig) -> Result<Self, StoreError> {
        let connect = async { Nodes::open(config).await.map_err(|error| store_error(&error)) };
        let nodes = bounded(config.operation_timeout, connect).await?;
        Ok(Self { nodes, library: Library::new(), operation_timeout: config.operation_timeout })
    }

    /// The `FCALL` of one of the library's functions, with the namespace
    /// prefix as its key; the caller adds the arguments.
    pub(super) fn function(&self, operation: &str, prefix: &str) -> Cmd {
        let mut call = redis::cmd("FCALL");
        call.arg(self.library.function(operation)).arg(1).arg(prefix);
        call
    }

    /// Runs a call made by [`Connection::function`]. Where the node lacks
    /// the library (first use, a restarted or new node), loads it (on every
    /// primary of a cluster) and calls again, all within one bound.
    pub(super) async fn call(&self, call: &Cmd) -> Result<Value, StoreError> {
        let mut nodes = self.nodes.clone();
        let answer = async move {
            match call.query_async(&mut nodes).await {
                Err(error) if function_missing(&error) => {
                    let mut load = redis::cmd("FUNCTION");
                    load.arg("LOAD").arg("REPLACE").arg(self.library.source());
                    let _: Value = load.query_async(&mut nodes).await.map_err(|error| store_error(&error))?;
                    tracing::info!(
                        library = self.library.name(),
                        "loaded Writ's function library into Redis"
                    );
                    call.query_async(&mut nodes).await.map_err(|error| store_error(&error))
                }
                answer => answer.map_err(|error| store_error(&error)),
            }
        };
        bounded(self.operation_timeout, answer).await
    }

    pub(super) async fn get(&self, key: Vec<u8>) -> Result<Option<Vec<u8>>, StoreError> {
        let mut command = redis::cmd("GET");
        command.arg(key);
        self.query(command).await
    }

    pub(super) async fn hget(&self, key: &str, field: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let mut command = redis::cmd("HGET");
        command.arg(key).arg(field);
        self.query(command).await
    }

    /// The fields of a hash.
    pub(super) async fn hkeys(&self, key: &str) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut command = redis::cmd("HKEYS");
        command.arg(key);
        self.query(command).await
    }

    /// The number of members of a sorted set.
    pub(super) async fn zcard(&self, key: &str) -> Result<u64, StoreError> {
        let mut command = redis::cmd("ZCARD");
        command.arg(key);
        self.query(command).await
    }

    /// The first member of a sorted set (score, then byte order).
    pub(super) async fn zfirst(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut command = redis::cmd("ZRANGE");
        command.arg(key).arg(0).arg(0);
        let first: Vec<Vec<u8>> = self.query(command).await?;
        Ok(first.into_iter().next())
    }

    /// Any command, bounded like every call.
    pub(super) async fn query<T: redis::FromRedisValue>(&self, command: Cmd) -> Result<T, StoreError> {
        let mut nodes = self.nodes.clone();
        let answer =
            async move { command.query_async(&mut nodes).await.map_err(|error| store_error(&error)) };
        bounded(self.operation_timeout, answer).await
    }
}

/// Fails `Unavailable` if `work` takes longer than `limit`. The work may
/// still reach Redis: see the caveat in the store's docs.
async fn bounded<T>(
    limit: Duration,
    work: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or_else(|_| Err(StoreError::Unavailable(format!("redis did not answer within {limit:?}"))))
}

/// One node or a cluster; cloned (cheaply: a handle) for each call.
#[derive(Clone)]
enum Nodes {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Nodes {
    async fn open(config: &RedisConfig) -> Result<Self, RedisError> {
        let tcp = tcp_settings();
        let certificates = tls_certificates(config)?;
        if let Some(url) = &config.url {
            let info = url.as_str().into_connection_info()?.set_tcp_settings(tcp);
            let client = match &certificates {
                Some(certificates) => redis::Client::build_with_tls(info, certificates.clone())?,
                None => redis::Client::open(info)?,
            };
            if config.tls() {
                // The connection manager retries a failed handshake until
                // the call's bound, so its error would only say "did not
                // answer": one direct connection says why (an unknown CA, a
                // name mismatch, a client certificate Redis wants).
                let probe =
                    tokio::time::timeout(config.connect_timeout, client.get_multiplexed_async_connection());
                match probe.await {
                    Ok(Ok(_)) | Err(_) => {}
                    Ok(Err(error)) => return Err(error),
                }
            }
            let manager = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.connect_timeout))
                .set_response_timeout(Some(config.response_timeout))
                .set_number_of_retries(RECONNECT_ATTEMPTS)
                .set_min_delay(RECONNECT_FIRST_DELAY)
                .set_max_delay(RECONNECT_MOST_DELAY);
            return Ok(Self::Single(ConnectionManager::new_lazy_with_config(client, manager)?));
        }
        let mut builder = ClusterClientBuilder::new(config.cluster_nodes.iter().map(String::as_str));
        if let Some(certificates) = certificates {
            builder = builder.certs(certificates);
        }
        let client = builder
            .connection_timeout(config.connect_timeout)
            .response_timeout(config.response_timeout)
            // Redirects and retries during a failover, within the call's bound.
            .overall_response_timeout(Some(config.operation_timeout))
            .tcp_settings(tcp)
            .build()?;
        Ok(Self::Cluster(client.get_async_connection().await?))
    }
}

/// The CA and client certificate `rediss://` connections use, read from
/// their files; `None` where the defaults do (the system's roots, no
/// client certificate) or the URLs are not `rediss://`.
fn tls_certificates(config: &RedisConfig) -> Result<Option<redis::TlsCertificates>, RedisError> {
    if !config.tls() || (config.ca_file.is_none() && config.client_cert_file.is_none()) {
        return Ok(None);
    }
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path).map_err(|error| {
            RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "cannot read a TLS file",
                format!("{what} {}: {error}", path.display()),
            ))
        })
    };
    let root_cert = config.ca_file.as_deref().map(|path| read(path, "ca_file")).transpose()?;
    let client_tls = match (&config.client_cert_file, &config.client_key_file) {
        (Some(cert), Some(key)) => {
            crate::tls::check_key_permissions(key).map_err(|error| {
                RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "unusable client key",
                    error.to_string(),
                ))
            })?;
            Some(redis::ClientTlsConfig {
                client_cert: read(cert, "client_cert_file")?,
                client_key: read(key, "client_key_file")?,
            })
        }
        _ => None,
    };
    Ok(Some(redis::TlsCertificates { client_tls, root_cert }))
}

fn tcp_settings() -> TcpSettings {
    let keepalive = TcpKeepalive::new().with_time(DEAD_PEER_TIMEOUT).with_interval(Duration::from_secs(1));
    let settings = TcpSettings::default().set_nodelay(true).set_keepalive(keepalive);
    #[cfg(target_os = "linux")]
    let settings = settings.set_user_timeout(DEAD_PEER_TIMEOUT);
    settings
}

impl ConnectionLike for Nodes {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

/// Whether Redis answered that the function called is not loaded.
fn function_missing(error: &RedisError) -> bool {
    error.code() == Some("ERR")
        && error.detail().is_some_and(|detail| detail.starts_with("Function not found"))
}

/// Maps a Redis failure. A Lua error in one of Writ's functions means
/// stored data it could not read (or a bug): the functions check before
/// they write, so it wrote nothing. Anything else (refused, timed out, loading, out of
/// memory, read-only, cluster down) means Redis cannot serve now. Redis's
/// messages name the failure, never stored values, so they are passed on.
fn store_error(error: &RedisError) -> StoreError {
    let message = error.to_string();
    if let Some(at) = message.find("writ layout: ") {
        // A namespace written by another version: not corrupt, not usable.
        let reason = &message[at + "writ layout: ".len()..];
        let reason = reason.split(" script: ").next().unwrap_or(reason);
        StoreError::Unavailable(format!("redis store: {reason}"))
    } else if message.contains("user_function") {
        StoreError::Corrupt(format!("a store function failed: {message}"))
    } else {
        StoreError::Unavailable(format!("redis: {message}"))
    }
}
