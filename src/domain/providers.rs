//! Suspending a provider: an incident at one downstream system. From the
//! moment the call returns nothing more is issued, activated or renewed
//! from it on any replica (the store checks the provider's state in the
//! same atomic step that records a lease), and every live lease it issued,
//! of every agent and task, is queued for revocation there. Revocations
//! at the provider go on: a suspension stops issuing, not cleaning up.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::agents::check_reason;
use super::{Broker, Error, quoted};
use crate::audit::AuditEvent;
use crate::model::{AgentState, ProviderStatus, RevocationReason};
use crate::store::{Scope, StoreError};

/// A configured provider as operators see it.
#[derive(Clone, Debug)]
pub struct ProviderView {
    pub name: String,
    /// Its kind (`jwt`, `postgres`, …).
    pub kind: String,
    /// The last suspension or resumption; `None` for one never suspended.
    pub status: Option<ProviderStatus>,
}

impl ProviderView {
    pub fn state(&self) -> AgentState {
        self.status.as_ref().map_or(AgentState::Active, |status| status.state)
    }
}

/// What a provider's suspension did, once the wait for its revocations is
/// over.
#[derive(Clone, Debug)]
pub struct ProviderSuspension {
    pub provider: ProviderView,
    pub revoked: usize,
    pub retrying: usize,
    pub failed: usize,
}

impl Broker {
    /// Every configured provider with its state, in name order.
    pub async fn list_providers(&self) -> Result<Vec<ProviderView>, Error> {
        let mut names: Vec<&String> = self.providers.iter().map(|(name, _)| name).collect();
        names.sort();
        let mut views = Vec::with_capacity(names.len());
        for name in names {
            views.push(self.provider_view(name).await?);
        }
        Ok(views)
    }

    async fn provider_view(&self, name: &str) -> Result<ProviderView, Error> {
        let registered = self
            .providers
            .get(name)
            .ok_or_else(|| Error::NotFound(format!("provider {} is not configured", quoted(name))))?;
        let status = self.store.provider_status(name).await?;
        Ok(ProviderView { name: name.to_owned(), kind: registered.kind.clone(), status })
    }

    /// Suspends a provider and waits up to `limits.close_wait` for its
    /// leases' revocations. FAILED_PRECONDITION if it is suspended already.
    pub async fn suspend_provider(
        &self,
        caller: &str,
        provider: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<ProviderSuspension, Error> {
        check_reason(reason)?;
        let mut view = self.provider_view(provider).await?;
        let scope = Scope::Provider(provider.to_owned());
        let finished = self.revocations.subscribe();
        let closed = self.end_scope(caller, &scope, RevocationReason::ProviderSuspended, reason, now).await?;
        if !closed.ended_now {
            return Err(Error::FailedPrecondition(format!(
                "provider {} is suspended already",
                quoted(provider)
            )));
        }
        let outcome = self.wait_for_scope(closed, &scope, finished).await?;
        view.status = outcome.closed.provider.clone();
        Ok(ProviderSuspension {
            provider: view,
            revoked: outcome.revoked,
            retrying: outcome.retrying,
            failed: outcome.failed,
        })
    }

    /// Lifts a provider's suspension; what it revoked stays revoked.
    /// Evidence first: without it nothing is resumed.
    pub async fn resume_provider(
        &self,
        caller: &str,
        provider: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<ProviderView, Error> {
        check_reason(reason)?;
        let mut view = self.provider_view(provider).await?;
        if view.state() != AgentState::Suspended {
            return Err(StoreError::ProviderNotSuspended(provider.to_owned()).into());
        }
        let evidence = AuditEvent {
            event: "provider_resumed",
            actor: caller.to_owned(),
            outcome: "ok",
            provider: Some(provider.to_owned()),
            details: Some(json!({ "note": reason })),
            ..AuditEvent::default()
        };
        self.audit.record(now, evidence).await?;
        view.status = Some(self.store.resume_provider(provider, caller, reason, now).await?);
        Ok(view)
    }
}
