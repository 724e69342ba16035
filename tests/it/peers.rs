//! Real peers nobody here wrote, from `writ-test-peers`: npm
//! `oidc-provider` as a workload issuer, npm `jose` as an independent JWT
//! verifier, and the example Python plugin, under the names the end-to-end
//! tests use.

pub use writ_test_peers::oidc::{OidcIssuer as OidcProvider, jose_verify, jose_verify_typed};
pub use writ_test_peers::plugin::PythonPlugin;
