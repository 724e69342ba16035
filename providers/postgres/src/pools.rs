//! Admin connections, one pool per database the provider manages.
//!
//! Roles are cluster-wide but ownership and privileges are per database:
//! `REASSIGN OWNED` and `DROP OWNED` act only in the database they run in,
//! so revocation needs a connection to each.

use std::sync::Arc;

use deadpool_postgres::{Client, Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use tokio_postgres::NoTls;
use tokio_postgres::config::SslMode;
use writ_provider_api::ProviderError;

use crate::PostgresConfig;
use crate::config::PostgresTls;
use crate::error;

/// A database and the pool of admin connections to it.
pub struct Database {
    pub name: String,
    pool: Pool,
}

impl Database {
    /// An admin connection, with `statement_timeout` set.
    pub async fn get(&self) -> Result<Client, ProviderError> {
        self.pool.get().await.map_err(|e| error::pool(e, &self.name))
    }
}

pub struct Pools {
    /// The database of `admin_connection`: roles are made and dropped here.
    primary: Database,
    /// `cleanup_databases`, visited only by revocation.
    cleanup: Vec<Database>,
}

impl Pools {
    /// Builds the pools without connecting.
    pub fn new(admin: &tokio_postgres::Config, config: &PostgresConfig) -> Result<Self, String> {
        let primary_name = admin.get_dbname().or(admin.get_user()).unwrap_or_default().to_string();
        let primary = database(primary_name, admin.clone(), config)?;
        let cleanup = config
            .cleanup_databases
            .iter()
            .map(|name| {
                let mut settings = admin.clone();
                settings.dbname(name);
                database(name.clone(), settings, config)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { primary, cleanup })
    }

    pub async fn primary(&self) -> Result<Client, ProviderError> {
        self.primary.get().await
    }

    pub fn primary_name(&self) -> &str {
        &self.primary.name
    }

    pub fn cleanup(&self) -> &[Database] {
        &self.cleanup
    }

    /// Whether every database answers, and the admin role may create roles.
    pub async fn check(&self) -> Result<(), ProviderError> {
        let client = self.primary().await?;
        let may_create_roles: Option<bool> = client
            .query_opt(
                "SELECT rolcreaterole OR rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user",
                &[],
            )
            .await
            .and_then(|row| row.map(|row| row.try_get(0)).transpose())
            .map_err(|e| error::postgres(e, "checking the admin role"))?;
        if may_create_roles != Some(true) {
            return Err(ProviderError::Failed("the admin role lacks CREATEROLE".into()));
        }
        for database in &self.cleanup {
            database
                .get()
                .await?
                .simple_query("SELECT 1")
                .await
                .map_err(|e| error::postgres(e, &format!("checking database {:?}", database.name)))?;
        }
        Ok(())
    }
}

/// A TLS connector that trusts `tls_ca_file` only and checks the host
/// name (rustls always does): libpq's `verify-full`.
fn verified_tls(config: &PostgresConfig) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    let path = config.tls_ca_file.as_ref().ok_or("tls = \"verify-full\" needs tls_ca_file")?;
    let pem = std::fs::read(path).map_err(|e| format!("tls_ca_file {}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("tls_ca_file {}: not PEM certificates: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("tls_ca_file {}: unusable CA certificate: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("tls_ca_file {}: holds no certificate", path.display()));
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
}

fn database(
    name: String,
    mut settings: tokio_postgres::Config,
    config: &PostgresConfig,
) -> Result<Database, String> {
    if settings.get_connect_timeout().is_none() {
        settings.connect_timeout(config.connect_timeout);
    }
    // Verified recycling costs one empty query per checkout and spares a
    // mint the error of a connection the server closed while it sat idle.
    let manager_config = ManagerConfig { recycling_method: RecyclingMethod::Verified };
    let manager = match config.tls {
        PostgresTls::Disable => Manager::from_config(settings, NoTls, manager_config),
        PostgresTls::VerifyFull => {
            // No plaintext fallback: the server must speak TLS.
            settings.ssl_mode(SslMode::Require);
            Manager::from_config(settings, verified_tls(config)?, manager_config)
        }
    };
    let set_timeout = format!("SET statement_timeout = {}", config.statement_timeout.as_millis());
    let pool = Pool::builder(manager)
        .max_size(config.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(config.connect_timeout))
        .create_timeout(Some(config.connect_timeout))
        .recycle_timeout(Some(config.connect_timeout))
        .post_create(Hook::async_fn(move |client, _| {
            let set_timeout = set_timeout.clone();
            Box::pin(async move { client.batch_execute(&set_timeout).await.map_err(HookError::Backend) })
        }))
        .build()
        .map_err(|e| format!("cannot build the connection pool for database {name:?}: {e}"))?;
    Ok(Database { name, pool })
}
