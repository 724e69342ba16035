//! The agent's side of Writ: ask for a short-lived credential for one tool
//! call in one task, use it, give it back (`docs/clients/rust.md` has the
//! guide).
//!
//! - [`Client`] connects to Writ's `CredentialService` (plaintext or TLS,
//!   with an optional client certificate) and presents the agent's
//!   workload token, read from a [`Token`] source before every call. It
//!   issues, renews and releases leases, and waits for and collects
//!   step-up approvals.
//! - [`Lease`] holds one issued credential: a background task renews it
//!   once 2/3 of the time it has left has passed (timed on Writ's clock,
//!   so a skewed local clock does not matter), and it is released by
//!   [`Lease::release`] or, as a best effort, when dropped.
//! - [`Grant`] is what to ask for, also in the CLI's text form
//!   `provider/role[:scope,scope…][@ttl]`.
//! - [`Credential`] is what Writ handed out. Its secrets are
//!   [`SecretString`]s: `Debug` never shows them, and the
//!   generated [`proto`] messages that carry them redact them too.
//!
//! ```text
//! Client::leases ──Issue──▶ Writ ──▶ Vec<Lease> ──(renewer task)──Renew──▶ Writ
//!                                        │  watch::Receiver<LeaseStatus> to follow renewals
//!                                        └── release().await ──Release──▶ Writ
//! ```
//!
//! # Example
//!
//! ```no_run
//! use writ_client::{Client, Credential, ExposeSecret as _, Grant};
//!
//! # async fn run() -> Result<(), writ_client::Error> {
//! // WRIT_ENDPOINT, WRIT_TOKEN_FILE or WRIT_TOKEN, WRIT_CA, WRIT_CLIENT_CERT/KEY.
//! let client = Client::from_env()?.connect().await?;
//! let grant: Grant = "tokens/orders-read:orders:read@5m".parse()?;
//! let mut leases = client.leases("demo-1", "orders.lookup", &[grant]).await?;
//! let lease = leases.remove(0);
//! if let Credential::Bearer(token) = lease.credential() {
//!     // Read the credential each time it is used: a renewal may replace it.
//!     let _header = format!("Bearer {}", token.token.expose_secret());
//! }
//! lease.release().await?;
//! # Ok(())
//! # }
//! ```
//!
//! A step-up grant answers [`Error::ApprovalRequired`] with the approval
//! request; [`Client::wait_for_approval`] waits for approvers and
//! [`Client::collect_leases`] collects what they approved.
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
#![warn(missing_docs)]

mod client;
mod credential;
mod error;
mod grant;
mod lease;
mod schedule;
mod token;

pub use client::{Client, ClientBuilder, Issued, IssuedCredential, Renewed};
pub use credential::{AwsSession, BearerToken, Credential, Password};
pub use error::Error;
pub use grant::Grant;
pub use lease::{Lease, LeaseStatus, Renewal, Stopped};
pub use schedule::DEFAULT_RENEW_AT;
/// The secret types credentials are made of, re-exported so that callers
/// need no `secrecy` dependency of their own.
pub use secrecy::{ExposeSecret, SecretString};
pub use token::Token;

/// The generated messages and client stubs of `proto/writ/v1/writ.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("writ.v1");

    use std::fmt;

    const REDACTED: &str = "<redacted>";

    impl fmt::Debug for BearerToken {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("BearerToken")
                .field("token", &REDACTED)
                .field("token_type", &self.token_type)
                .finish()
        }
    }

    impl fmt::Debug for Password {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Password")
                .field("username", &self.username)
                .field("password", &REDACTED)
                .field("connection", &self.connection)
                .finish()
        }
    }

    impl fmt::Debug for AwsSession {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("AwsSession")
                .field("access_key_id", &self.access_key_id)
                .field("secret_access_key", &REDACTED)
                .field("session_token", &REDACTED)
                .finish()
        }
    }
}

/// The guide's examples (`docs/clients/rust.md`), compiled as doctests so
/// that the guide cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/clients/rust.md")]
pub struct GuideExamples;
