//! End-to-end tests over gRPC against a real Writ: one test binary, one
//! module per area. `harness` starts Writ; `peers` starts the npm
//! `oidc-provider` issuer and the `jose` verifier.

mod approvals;
mod aws_sts;
mod caep;
#[path = "../support/certs.rs"]
mod certs;
mod crash;
mod evidence;
mod exchange;
mod exec;
mod harness;
mod identity;
mod input;
mod inventory;
mod lifecycle;
mod oauth2;
mod observability;
mod oidc;
mod peers;
mod policy_admin;
mod policy_cases;
mod postgres;
#[path = "../support/postgres.rs"]
mod postgres_support;
mod provider_suspension;
#[path = "../support/redis.rs"]
mod redis_support;
mod replicas;
mod suspension;
mod tls;
mod token_exchange;
