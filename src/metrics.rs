//! Prometheus metrics, served at `GET /metrics` on the HTTP listener.
//!
//! Every provider call goes through [`Metrics::provider_call`], so each
//! provider reports the same series without knowing about metrics at all:
//!
//! | metric                                  | type      | labels                          |
//! |-----------------------------------------|-----------|---------------------------------|
//! | `writ_provider_call_duration_seconds`   | histogram | provider, operation             |
//! | `writ_provider_failures_total`          | counter   | provider, operation, reason     |
//! | `writ_revocation_retries_total`         | counter   | provider                        |
//! | `writ_revocations_done_total`           | counter   | provider                        |
//! | `writ_revocations_failed_total`         | counter   | provider                        |
//! | `writ_policy_set_info`                  | gauge     | digest                          |
//!
//! A failed revocation is one the provider said can never succeed: the
//! lease is `failed` with the reason, the credential may live until its
//! expiry, and an operator must look (alert on any increase).
//!
//! `operation` is `mint`, `renew` or `revoke`; `reason` is `unavailable`,
//! `timeout`, `refused` or `failed`. Labels carry only names from the
//! configuration, never anything an agent sent, so the series count is
//! bounded by the number of configured providers.
//!
//! Each [`Metrics`] has its own registry (no process-wide recorder), so
//! several Writ instances in one process, as in the tests, stay apart.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use writ_provider_api::ProviderError;

/// A provider operation.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Operation {
    mint,
    renew,
    revoke,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum Reason {
    unavailable,
    timeout,
    refused,
    failed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    provider: String,
    operation: Operation,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    provider: String,
    operation: Operation,
    reason: Reason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicySetLabels {
    digest: String,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Writ's metrics and the registry that renders them.
pub struct Metrics {
    registry: Mutex<Registry>,
    call_duration: Family<CallLabels, Histogram, fn() -> Histogram>,
    failures: Family<FailureLabels, Counter>,
    retries: Family<ProviderLabels, Counter>,
    revoked: Family<ProviderLabels, Counter>,
    gave_up: Family<ProviderLabels, Counter>,
    /// 1 for the digest of the policy set in force, so that replicas
    /// running different sets show up side by side.
    policy_set: Family<PolicySetLabels, prometheus_client::metrics::gauge::Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("writ");
        let call_duration =
            Family::<CallLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let failures = Family::<FailureLabels, Counter>::default();
        let retries = Family::<ProviderLabels, Counter>::default();
        let revoked = Family::<ProviderLabels, Counter>::default();
        let gave_up = Family::<ProviderLabels, Counter>::default();
        let policy_set = Family::<PolicySetLabels, prometheus_client::metrics::gauge::Gauge>::default();
        registry.register(
            "policy_set_info",
            "The policy set this replica decides with, by digest (1 for the one in force)",
            policy_set.clone(),
        );
        registry.register(
            "revocations_failed",
            "Revocations the provider said can never succeed: the lease is failed and needs an operator",
            gave_up.clone(),
        );
        registry.register_with_unit(
            "provider_call_duration",
            "Time a provider took to answer, failures and timeouts included",
            prometheus_client::registry::Unit::Seconds,
            call_duration.clone(),
        );
        registry.register(
            "provider_failures",
            "Provider calls that failed, by reason (unavailable, timeout, refused, failed)",
            failures.clone(),
        );
        registry.register(
            "revocation_retries",
            "Revocations that failed and were scheduled again (never dropped)",
            retries.clone(),
        );
        registry.register("revocations_done", "Leases revoked at their provider", revoked.clone());
        Self {
            registry: Mutex::new(registry),
            call_duration,
            failures,
            retries,
            revoked,
            gave_up,
            policy_set,
        }
    }

    /// Runs one provider call under `limit`, recording its latency and any
    /// failure. A call that does not answer in time is an unavailable
    /// provider: a hung provider must not hold a request or the revocation
    /// worker forever.
    pub async fn provider_call<T>(
        &self,
        provider: &str,
        operation: Operation,
        limit: Duration,
        call: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        let started = Instant::now();
        let outcome = tokio::time::timeout(limit, call).await;
        let labels = CallLabels { provider: provider.to_string(), operation };
        self.call_duration.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
        let (result, reason) = match outcome {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => {
                let reason = match &error {
                    ProviderError::Unavailable(_) => Reason::unavailable,
                    ProviderError::Refused(_) => Reason::refused,
                    ProviderError::Failed(_) => Reason::failed,
                };
                (Err(error), reason)
            }
            Err(_) => (
                Err(ProviderError::Unavailable(format!("no answer within {}s", limit.as_secs_f32()))),
                Reason::timeout,
            ),
        };
        self.failures
            .get_or_create(&FailureLabels { provider: provider.to_string(), operation, reason })
            .inc();
        result
    }

    /// A revocation failed and is scheduled again.
    pub fn revocation_retried(&self, provider: &str) {
        self.retries.get_or_create(&ProviderLabels { provider: provider.to_string() }).inc();
    }

    /// A revocation the provider said can never succeed was given up.
    pub fn revocation_failed(&self, provider: &str) {
        self.gave_up.get_or_create(&ProviderLabels { provider: provider.to_string() }).inc();
    }

    /// The policy set in force changed from `previous` (empty at start) to
    /// `digest`.
    pub fn policy_set(&self, previous: &str, digest: &str) {
        if previous != digest {
            self.policy_set.remove(&PolicySetLabels { digest: previous.to_string() });
        }
        self.policy_set.get_or_create(&PolicySetLabels { digest: digest.to_string() }).set(1);
    }

    /// A lease was revoked at its provider.
    pub fn revocation_done(&self, provider: &str) {
        self.revoked.get_or_create(&ProviderLabels { provider: provider.to_string() }).inc();
    }

    /// The metrics in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn provider_calls_are_timed_and_failures_counted_by_reason() {
        let metrics = Metrics::new();
        let limit = Duration::from_secs(5);
        let ok: Result<u8, _> = metrics.provider_call("pg", Operation::mint, limit, async { Ok(1) }).await;
        assert_eq!(ok.unwrap(), 1);
        let refused: Result<u8, _> = metrics
            .provider_call("pg", Operation::mint, limit, async { Err(ProviderError::Refused("no".into())) })
            .await;
        assert!(matches!(refused, Err(ProviderError::Refused(_))));
        let hung: Result<u8, _> = metrics
            .provider_call("pg", Operation::revoke, Duration::from_millis(10), std::future::pending())
            .await;
        assert!(matches!(hung, Err(ProviderError::Unavailable(ref m)) if m.contains("no answer")));
        metrics.revocation_retried("pg");

        let text = metrics.render();
        assert!(
            text.contains(r#"writ_provider_call_duration_seconds_count{provider="pg",operation="mint"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"writ_provider_failures_total{provider="pg",operation="mint",reason="refused"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"writ_provider_failures_total{provider="pg",operation="revoke",reason="timeout"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"writ_revocation_retries_total{provider="pg"} 1"#), "{text}");
        assert!(!text.contains(r#"reason="unavailable""#), "no unavailable failure happened: {text}");
    }
}
