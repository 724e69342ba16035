//! Writ: a just-in-time credential broker for AI agents.
//!
//! An agent presents its workload identity (an OIDC JWT) and a task id;
//! Writ verifies the identity ([`identity`]), resolves the agent
//! ([`principals`]), decides the grant by Cedar policy ([`policy`]), records
//! a lease before minting ([`store`]), mints through a provider
//! ([`providers`]), and hands back a short-lived credential. Closing the
//! task, the lease's expiry or a release revokes it through one queue
//! ([`revocation`], [`sweeper`]). Every step leaves evidence ([`audit`]).
//!
//! ```text
//! gRPC (api) ──▶ Broker (domain) ──▶ LeaseStore ─┐
//!                   │   │   └──────▶ Provider    │◀── revocation worker
//!                   │   └──────────▶ PolicyEngine│◀── expiry sweeper
//!                   └──────────────▶ AuditLog    ┘
//! ```
//!
//! [`server`] wires the parts from a [`config::Config`]; [`dev`] builds a
//! complete local setup.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod api;
pub mod audit;
pub mod caep;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dev;
pub mod domain;
pub mod http;
pub mod identity;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod principals;
pub mod providers;
pub mod revocation;
pub mod runtime;
pub mod sealer;
pub mod server;
pub mod store;
pub mod sweeper;
pub mod telemetry;
pub mod text;
pub mod tls;
pub mod webhooks;

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => {
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
