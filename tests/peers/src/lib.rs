//! The real processes Writ's tests run against, started in one place for
//! every test binary of the workspace: npm `oidc-provider` and `jose`
//! ([`oidc`]), `moto_server` (`moto`, behind the feature of that name, for
//! the AWS SDK it brings), the example Python plugin ([`plugin`]), a
//! throw-away database on the local PostgreSQL server ([`postgres`]) and
//! `redis-server` ([`redis`]).
//!
//! Each starter runs the real program on a free local port, waits until it
//! answers (with a timeout, and a panic that says what to install), and
//! kills and reaps it when dropped. The scripts it starts stay next to this
//! crate (`tests/peers/oidc`, `tests/peers/external_provider`) and are found
//! from its own manifest directory, so any crate of the workspace can use
//! it as a dev-dependency.
//!
//! This crate must not depend on Writ or a provider crate: they depend on
//! it (for their tests), and Cargo refuses the cycle. What needs their
//! types stays in their tests.
#![forbid(unsafe_code)]

#[cfg(feature = "moto")]
pub mod moto;
pub mod oidc;
pub mod plugin;
pub mod postgres;
pub mod postgres_tls;
pub mod redis;

mod process;
