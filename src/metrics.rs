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
//! | `writ_issuances_total`                  | counter   | provider, outcome               |
//! | `writ_issue_duration_seconds`           | histogram | provider, outcome               |
//! | `writ_policy_decisions_total`           | counter   | action, decision                |
//! | `writ_grpc_calls_total`                 | counter   | method, code                    |
//! | `writ_revocation_queue_depth`           | gauge     |                                 |
//! | `writ_revocation_oldest_due_seconds`    | gauge     |                                 |
//! | `writ_expiry_lag_seconds`               | histogram | provider                        |
//! | `writ_store_unavailable_total`          | counter   |                                 |
//! | `writ_approvals_pending`                | gauge     |                                 |
//!
//! An issuance's `provider` is a configured provider's name, or `unknown`
//! for a name the agent sent that is not one (agents' text never becomes
//! a label); `outcome` is `issued`, `denied`, `step_up`, `refused` (bad
//! input, unknown or closed task, suspended agent) or `error` (the store,
//! the audit log or the provider failed). A gRPC call's `method` is one of
//! Writ's (an unknown one is `unknown`).
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

/// How an issuance ended, per grant.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum IssueOutcome {
    issued,
    denied,
    step_up,
    refused,
    error,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IssueLabels {
    provider: String,
    outcome: IssueOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    action: String,
    decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallCodeLabels {
    method: String,
    code: String,
}

/// Store failures (`Unavailable`) seen anywhere in the process: counted
/// where the domain maps them, which holds no [`Metrics`]; every registry
/// shows this one counter.
static STORE_UNAVAILABLE: std::sync::LazyLock<Counter> = std::sync::LazyLock::new(Counter::default);

/// Counts one store failure.
pub fn store_unavailable() {
    STORE_UNAVAILABLE.inc();
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
    issuances: Family<IssueLabels, Counter>,
    issue_duration: Family<IssueLabels, Histogram, fn() -> Histogram>,
    decisions: Family<DecisionLabels, Counter>,
    calls: Family<CallCodeLabels, Counter>,
    queue_depth: prometheus_client::metrics::gauge::Gauge,
    oldest_due: prometheus_client::metrics::gauge::Gauge<f64, std::sync::atomic::AtomicU64>,
    expiry_lag: Family<ProviderLabels, Histogram, fn() -> Histogram>,
    approvals_pending: prometheus_client::metrics::gauge::Gauge,
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
        let issuances = Family::<IssueLabels, Counter>::default();
        registry.register("issuances", "Grants asked for, by provider and how they ended", issuances.clone());
        let issue_duration =
            Family::<IssueLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "issue_duration",
            "Time an Issue call took, per grant, by provider and outcome",
            prometheus_client::registry::Unit::Seconds,
            issue_duration.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register("policy_decisions", "Policy decisions, by action and decision", decisions.clone());
        let calls = Family::<CallCodeLabels, Counter>::default();
        registry.register(
            "grpc_calls",
            "gRPC calls to Writ's services, by method and status code",
            calls.clone(),
        );
        let queue_depth = prometheus_client::metrics::gauge::Gauge::default();
        registry.register(
            "revocation_queue_depth",
            "Leases waiting to be revoked (due now or retrying later), as last read",
            queue_depth.clone(),
        );
        let oldest_due =
            prometheus_client::metrics::gauge::Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register_with_unit(
            "revocation_oldest_due",
            "How long ago the earliest queued revocation fell due (0 when none is overdue)",
            prometheus_client::registry::Unit::Seconds,
            oldest_due.clone(),
        );
        let expiry_lag = Family::<ProviderLabels, Histogram, fn() -> Histogram>::new_with_constructor(|| {
            // 50 ms to about 30 minutes.
            Histogram::new(exponential_buckets(0.05, 2.0, 16))
        });
        registry.register_with_unit(
            "expiry_lag",
            "How long after its expiry an expired lease was revoked at its provider",
            prometheus_client::registry::Unit::Seconds,
            expiry_lag.clone(),
        );
        registry.register(
            "store_unavailable",
            "Store calls that failed because the store could not be used (this process)",
            STORE_UNAVAILABLE.clone(),
        );
        let approvals_pending = prometheus_client::metrics::gauge::Gauge::default();
        registry.register(
            "approvals_pending",
            "Step-up approval requests waiting for a decision or a collection, as last read",
            approvals_pending.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            call_duration,
            failures,
            retries,
            revoked,
            gave_up,
            policy_set,
            issuances,
            issue_duration,
            decisions,
            calls,
            queue_depth,
            oldest_due,
            expiry_lag,
            approvals_pending,
        }
    }

    /// One grant of an issuance ended as `outcome`, the whole call having
    /// taken `elapsed`.
    pub fn issuance(&self, provider: &str, outcome: IssueOutcome, elapsed: Duration) {
        let labels = IssueLabels { provider: provider.to_string(), outcome };
        self.issuances.get_or_create(&labels).inc();
        self.issue_duration.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }

    /// A policy decision (`allow`, `deny`, `step_up`) for `action`.
    pub fn decision(&self, action: &str, decision: &str) {
        self.decisions
            .get_or_create(&DecisionLabels { action: action.to_string(), decision: decision.to_string() })
            .inc();
    }

    /// A gRPC call to one of Writ's methods ended with `code`.
    pub fn call(&self, method: &str, code: tonic::Code) {
        let code = format!("{code:?}");
        self.calls.get_or_create(&CallCodeLabels { method: method.to_string(), code }).inc();
    }

    /// The revocation queue as last read: how many leases wait, and how
    /// long ago the earliest next attempt fell due (0 if none is due).
    pub fn revocation_backlog(&self, queued: u64, overdue: Duration) {
        self.queue_depth.set(i64::try_from(queued).unwrap_or(i64::MAX));
        self.oldest_due.set(overdue.as_secs_f64());
    }

    /// A lease that expired was revoked at its provider this long after
    /// its expiry.
    pub fn expiry_lag(&self, provider: &str, lag: Duration) {
        self.expiry_lag
            .get_or_create(&ProviderLabels { provider: provider.to_string() })
            .observe(lag.as_secs_f64());
    }

    /// Approval requests waiting for a decision or a collection.
    pub fn approvals_pending(&self, count: u64) {
        self.approvals_pending.set(i64::try_from(count).unwrap_or(i64::MAX));
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
