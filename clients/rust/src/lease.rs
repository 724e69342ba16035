//! A lease that renews itself in the background and is given back when
//! done.
//!
//! Each [`Lease`] owns one renewer task. The task sleeps until
//! [`DEFAULT_RENEW_AT`](crate::DEFAULT_RENEW_AT) of the time left has
//! passed (on Writ's clock, estimated from the lease's `issued_at`), asks
//! Writ for the grant's lifetime again, publishes the result on a
//! `watch` channel ([`Lease::subscribe`]) and goes back to sleep. It stops
//! for good when Writ refuses (the task was closed, policy says no, the
//! provider cannot extend), when a renewal no longer extends the lease
//! (the task's deadline caps it), or when the lease expires while Writ is
//! unreachable. The credential keeps working until its expiry either way:
//! what to do then is the caller's decision.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use crate::client::{IssuedCredential, Renewed};
use crate::credential::Credential;
use crate::error::Error;
use crate::proto;
use crate::schedule::{ServerClock, renew_delay, retry_delay};

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The two calls a lease makes: [`Client`](crate::Client) in use, a fake in
/// tests.
pub(crate) trait Backend: Send + Sync + 'static {
    fn renew<'a>(&'a self, lease_id: &'a str, ttl: Option<Duration>)
    -> BoxFuture<'a, Result<Renewed, Error>>;
    fn release<'a>(&'a self, lease_id: &'a str) -> BoxFuture<'a, Result<proto::Lease, Error>>;
}

/// An issued credential, renewed in the background until released.
///
/// Release it with [`Lease::release`]. Dropping it stops the renewals and,
/// inside a tokio runtime, releases it in a spawned task: a best effort,
/// since the process may end first (Writ then revokes the lease at its
/// expiry, or when the task closes).
pub struct Lease {
    id: String,
    backend: Arc<dyn Backend>,
    /// Written by the renewer task (and by `stop_renewing`); read by
    /// `status` and every subscriber.
    status: Arc<watch::Sender<LeaseStatus>>,
    renewer: Option<JoinHandle<()>>,
    released: bool,
}

/// A lease as it is now. `Debug` shows no secret.
#[derive(Clone, Debug)]
pub struct LeaseStatus {
    /// The lease as Writ last described it: its expiry moves with each
    /// renewal.
    pub lease: proto::Lease,
    /// The credential to use now: a renewal may replace it.
    pub credential: Credential,
    /// How many times a renewal replaced the credential (0: the one
    /// issued).
    pub replacements: u64,
    /// How many renewals succeeded.
    pub renewals: u64,
    /// What Writ adjusted at the last issue or renewal.
    pub notices: Vec<String>,
    /// Where the renewals are.
    pub renewal: Renewal,
}

/// The state of a lease's renewals.
#[derive(Clone, Debug)]
pub enum Renewal {
    /// The next renewal is scheduled.
    Scheduled,
    /// Renewals failed in a way that may pass; they are tried again until
    /// the lease expires.
    Retrying {
        /// Failed tries in a row.
        failures: u32,
        /// The last failure.
        error: Error,
    },
    /// No more renewals.
    Stopped(Stopped),
}

/// Why renewals stopped.
#[derive(Clone, Debug)]
pub enum Stopped {
    /// Writ refused a renewal (the lease was revoked or the task closed,
    /// policy denied it, the provider cannot extend its credentials).
    Refused(Error),
    /// A renewal did not move the expiry (the task's deadline or the
    /// role's limits cap it): renewing again gains nothing.
    NotExtended,
    /// The lease expired while renewals failed; the last failure.
    Expired(Option<Error>),
    /// [`Lease::stop_renewing`] was called.
    ByCaller,
    /// The lease was released.
    Released,
}

impl Lease {
    pub(crate) fn start(
        backend: Arc<dyn Backend>,
        issued: IssuedCredential,
        ttl: Option<Duration>,
        renew_at: f64,
    ) -> Self {
        let id = issued.lease.lease_id.clone();
        let clock = ServerClock::new(
            timestamp(issued.lease.issued_at.as_ref())
                .or(timestamp(issued.lease.created_at.as_ref()))
                .unwrap_or_else(SystemTime::now),
        );
        let status = Arc::new(watch::Sender::new(LeaseStatus {
            lease: issued.lease,
            credential: issued.credential,
            replacements: 0,
            renewals: 0,
            notices: issued.notices,
            renewal: Renewal::Scheduled,
        }));
        let renewer = Renewer {
            backend: backend.clone(),
            lease_id: id.clone(),
            ttl,
            renew_at,
            clock,
            status: status.clone(),
        };
        let span = tracing::debug_span!("writ_lease_renewer", lease = %id);
        let renewer = tokio::spawn(renewer.run().instrument(span));
        Self { id, backend, status, renewer: Some(renewer), released: false }
    }

    /// The lease id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The lease, the current credential and the renewal state, now.
    pub fn status(&self) -> LeaseStatus {
        self.status.borrow().clone()
    }

    /// The credential to use now (a renewal may replace it: read it where
    /// it is used).
    pub fn credential(&self) -> Credential {
        self.status.borrow().credential.clone()
    }

    /// The lease as Writ last described it.
    pub fn lease(&self) -> proto::Lease {
        self.status.borrow().lease.clone()
    }

    /// Follows the lease: changes whenever a renewal succeeds, fails or
    /// stops.
    pub fn subscribe(&self) -> watch::Receiver<LeaseStatus> {
        self.status.subscribe()
    }

    /// Renews no more; the lease lives until its expiry or its release.
    pub fn stop_renewing(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
            self.status.send_modify(|status| status.renewal = Renewal::Stopped(Stopped::ByCaller));
        }
    }

    /// Gives the lease back: Writ revokes it at once. The lease as Writ
    /// describes it then (usually `revoking`).
    pub async fn release(mut self) -> Result<proto::Lease, Error> {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        self.released = true;
        let lease = self.backend.release(&self.id).await?;
        self.status.send_modify(|status| {
            status.lease = lease.clone();
            status.renewal = Renewal::Stopped(Stopped::Released);
        });
        Ok(lease)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        if self.released {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(lease = %self.id, "a lease dropped outside a tokio runtime is not released; it lives until it expires");
            return;
        };
        let (backend, id) = (self.backend.clone(), self.id.clone());
        runtime.spawn(async move {
            match backend.release(&id).await {
                Ok(_) => tracing::debug!(lease = %id, "released a dropped lease"),
                Err(error) => tracing::warn!(lease = %id, %error, "releasing a dropped lease failed; it lives until it expires"),
            }
        });
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("id", &self.id).field("status", &*self.status.borrow()).finish()
    }
}

/// The renewer task's state.
struct Renewer {
    backend: Arc<dyn Backend>,
    lease_id: String,
    /// Asked for at each renewal; `None`: the role's default.
    ttl: Option<Duration>,
    renew_at: f64,
    clock: ServerClock,
    status: Arc<watch::Sender<LeaseStatus>>,
}

impl Renewer {
    async fn run(self) {
        let mut failures = 0u32;
        let mut wait = renew_delay(self.remaining(), self.renew_at);
        while let Some(delay) = wait {
            tokio::time::sleep(delay).await;
            let before = self.expires_at();
            match self.backend.renew(&self.lease_id, self.ttl).await {
                Ok(renewed) => {
                    failures = 0;
                    let after = timestamp(renewed.lease.expires_at.as_ref());
                    tracing::debug!(expires_at = ?after, replaced = renewed.credential.is_some(), "lease renewed");
                    self.status.send_modify(|status| {
                        status.lease = renewed.lease;
                        if let Some(credential) = renewed.credential {
                            status.credential = credential;
                            status.replacements += 1;
                        }
                        status.renewals += 1;
                        status.notices = renewed.notices;
                        status.renewal = Renewal::Scheduled;
                    });
                    if after <= before {
                        return self.stop(Stopped::NotExtended);
                    }
                    wait = renew_delay(self.remaining(), self.renew_at);
                }
                Err(error) if error.is_retryable() => {
                    failures += 1;
                    tracing::debug!(%error, failures, "renewing the lease failed; trying again");
                    wait = retry_delay(self.remaining(), failures);
                    if wait.is_none() {
                        return self.stop(Stopped::Expired(Some(error)));
                    }
                    self.status.send_modify(|status| status.renewal = Renewal::Retrying { failures, error });
                }
                Err(error) => {
                    tracing::debug!(%error, "Writ refused to renew the lease");
                    return self.stop(Stopped::Refused(error));
                }
            }
        }
        self.stop(Stopped::Expired(None));
    }

    fn expires_at(&self) -> Option<SystemTime> {
        timestamp(self.status.borrow().lease.expires_at.as_ref())
    }

    fn remaining(&self) -> Duration {
        self.expires_at().map_or(Duration::ZERO, |expires_at| self.clock.remaining(expires_at))
    }

    fn stop(&self, why: Stopped) {
        self.status.send_modify(|status| status.renewal = Renewal::Stopped(why));
    }
}

fn timestamp(at: Option<&prost_types::Timestamp>) -> Option<SystemTime> {
    at.and_then(|at| SystemTime::try_from(*at).ok())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use secrecy::ExposeSecret as _;

    use super::*;
    use crate::credential::BearerToken;

    const T0: u64 = 1_800_000_000;

    fn at(seconds: u64) -> prost_types::Timestamp {
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(T0 + seconds)).unwrap().into()
    }

    fn token(text: &str) -> Credential {
        Credential::Bearer(BearerToken { token: text.to_string().into(), token_type: "Bearer".into() })
    }

    /// Writ with a clock the test's paused tokio clock drives: a renewal
    /// sets the expiry to now + ttl, unless told to answer otherwise.
    struct FakeWrit {
        start: tokio::time::Instant,
        answers: Mutex<Vec<Result<(), Error>>>,
        /// (seconds since start, ttl asked) of each renewal.
        renewals: Mutex<Vec<(f64, Option<Duration>)>>,
        released: Mutex<Vec<String>>,
        /// The expiry renewals cannot pass.
        cap: Option<u64>,
    }

    impl FakeWrit {
        fn new(answers: Vec<Result<(), Error>>, cap: Option<u64>) -> Arc<Self> {
            Arc::new(Self {
                start: tokio::time::Instant::now(),
                answers: Mutex::new(answers),
                renewals: Mutex::new(Vec::new()),
                released: Mutex::new(Vec::new()),
                cap,
            })
        }

        fn renewal_times(&self) -> Vec<f64> {
            self.renewals.lock().unwrap().iter().map(|(at, _)| *at).collect()
        }
    }

    /// Renewal times, to the millisecond.
    fn assert_times(got: &[f64], expected: &[f64]) {
        assert_eq!(got.len(), expected.len(), "{got:?} vs {expected:?}");
        for (got_one, expected_one) in got.iter().zip(expected) {
            assert!((got_one - expected_one).abs() < 0.001, "{got:?} vs {expected:?}");
        }
    }

    impl Backend for FakeWrit {
        fn renew<'a>(
            &'a self,
            lease_id: &'a str,
            ttl: Option<Duration>,
        ) -> BoxFuture<'a, Result<Renewed, Error>> {
            Box::pin(async move {
                let now = self.start.elapsed();
                self.renewals.lock().unwrap().push((now.as_secs_f64(), ttl));
                let answer = {
                    let mut answers = self.answers.lock().unwrap();
                    if answers.is_empty() { Ok(()) } else { answers.remove(0) }
                };
                answer?;
                let mut expires = now.as_secs() + ttl.unwrap_or(Duration::from_secs(60)).as_secs();
                if let Some(cap) = self.cap {
                    expires = expires.min(cap);
                }
                let renewals = self.renewals.lock().unwrap().len();
                Ok(Renewed {
                    lease: proto::Lease {
                        lease_id: lease_id.into(),
                        expires_at: Some(at(expires)),
                        ..Default::default()
                    },
                    credential: Some(token(&format!("token-{renewals}"))),
                    notices: Vec::new(),
                })
            })
        }

        fn release<'a>(&'a self, lease_id: &'a str) -> BoxFuture<'a, Result<proto::Lease, Error>> {
            Box::pin(async move {
                self.released.lock().unwrap().push(lease_id.to_string());
                Ok(proto::Lease {
                    lease_id: lease_id.into(),
                    state: proto::LeaseState::Revoking.into(),
                    ..Default::default()
                })
            })
        }
    }

    fn issued(ttl_seconds: u64) -> IssuedCredential {
        IssuedCredential {
            lease: proto::Lease {
                lease_id: "lease-1".into(),
                issued_at: Some(at(0)),
                expires_at: Some(at(ttl_seconds)),
                ..Default::default()
            },
            credential: token("token-0"),
            notices: Vec::new(),
        }
    }

    /// Lets the renewer task run until it waits on the (paused) clock.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn renews_at_two_thirds_of_the_time_left_and_publishes_the_new_credential() {
        let writ = FakeWrit::new(Vec::new(), None);
        let lease = Lease::start(writ.clone(), issued(30), Some(Duration::from_secs(30)), 2.0 / 3.0);
        let mut changes = lease.subscribe();
        tokio::time::sleep(Duration::from_secs(19)).await;
        settle().await;
        assert!(writ.renewal_times().is_empty(), "not before 2/3 of 30 s");
        changes.changed().await.unwrap();
        assert_times(&writ.renewal_times(), &[20.0]);
        assert_eq!(
            writ.renewals.lock().unwrap()[0].1,
            Some(Duration::from_secs(30)),
            "the grant's ttl again"
        );
        let status = lease.status();
        assert_eq!(status.lease.expires_at, Some(at(50)));
        assert_eq!((status.renewals, status.replacements), (1, 1));
        let Credential::Bearer(current) = lease.credential() else { panic!("a token") };
        assert_eq!(current.token.expose_secret(), "token-1");
        // Next: 2/3 of the 30 s left at 20 s.
        tokio::time::sleep(Duration::from_secs(21)).await;
        settle().await;
        assert_times(&writ.renewal_times(), &[20.0, 40.0]);

        let released = lease.release().await.unwrap();
        assert_eq!(released.state(), proto::LeaseState::Revoking);
        assert_eq!(*writ.released.lock().unwrap(), ["lease-1"]);
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(writ.renewal_times().len(), 2, "no renewal after the release");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_what_may_pass_and_stops_at_a_refusal() {
        let unavailable = Error::from(tonic::Status::unavailable("store down"));
        let closed = Error::from(tonic::Status::failed_precondition("task \"t-1\" is closed"));
        let writ = FakeWrit::new(vec![Err(unavailable.clone()), Err(unavailable), Err(closed)], None);
        let lease = Lease::start(writ.clone(), issued(30), None, 2.0 / 3.0);
        let mut changes = lease.subscribe();
        changes.changed().await.unwrap();
        assert!(matches!(lease.status().renewal, Renewal::Retrying { failures: 1, .. }));
        changes.wait_for(|status| matches!(status.renewal, Renewal::Stopped(_))).await.unwrap();
        // Backoff 250 ms, then 500 ms.
        assert_times(&writ.renewal_times(), &[20.0, 20.25, 20.75]);
        let Renewal::Stopped(Stopped::Refused(error)) = lease.status().renewal else { panic!("refused") };
        assert_eq!(error.code(), Some(tonic::Code::FailedPrecondition));
        assert_eq!(lease.status().lease.expires_at, Some(at(30)), "the credential lives to its expiry");
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(writ.renewal_times().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_once_a_renewal_no_longer_extends_the_lease_or_it_expired() {
        let capped = FakeWrit::new(Vec::new(), Some(45));
        let lease = Lease::start(capped.clone(), issued(30), Some(Duration::from_secs(30)), 2.0 / 3.0);
        lease.subscribe().wait_for(|status| matches!(status.renewal, Renewal::Stopped(_))).await.unwrap();
        assert!(matches!(lease.status().renewal, Renewal::Stopped(Stopped::NotExtended)));
        assert_times(&capped.renewal_times(), &[20.0, 20.0 + 25.0 * 2.0 / 3.0]);
        assert_eq!(lease.status().lease.expires_at, Some(at(45)));

        let down = Error::Connect { endpoint: "http://writ".into(), detail: "refused".into() };
        let unreachable = FakeWrit::new(vec![Err(down); 100], None);
        let lease = Lease::start(unreachable.clone(), issued(3), None, 2.0 / 3.0);
        lease.subscribe().wait_for(|status| matches!(status.renewal, Renewal::Stopped(_))).await.unwrap();
        assert!(matches!(
            lease.status().renewal,
            Renewal::Stopped(Stopped::Expired(Some(Error::Connect { .. })))
        ));
        let last = *unreachable.renewal_times().last().unwrap();
        assert!(last < 3.0, "no try after the expiry: {:?}", unreachable.renewal_times());
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_lease_is_released_and_a_stopped_one_renews_no_more() {
        let writ = FakeWrit::new(Vec::new(), None);
        let mut lease = Lease::start(writ.clone(), issued(30), None, 2.0 / 3.0);
        lease.stop_renewing();
        assert!(matches!(lease.status().renewal, Renewal::Stopped(Stopped::ByCaller)));
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(writ.renewal_times().is_empty());
        drop(lease);
        settle().await;
        assert_eq!(*writ.released.lock().unwrap(), ["lease-1"]);
    }
}
