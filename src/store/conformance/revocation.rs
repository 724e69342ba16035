//! The revocation path: requesting, sweeping, claiming, finishing, and the
//! schedule ([`LeaseStore::next_due`]) background workers sleep on.

use super::{
    Store, active, assert_revoking, ids, lease, lease_id, lease_of, open_task, pending, sorted, t, task,
};
use crate::model::{LeaseState, RevocationReason};
use crate::store::{LeaseFilter, RevocationOutcome, StoreError, Swept};

pub(super) async fn request_revocation(store: Store) {
    open_task(&store, "t").await;
    let waiting = pending(&store, 1, "t", t(0)).await;
    let live = active(&store, 2, "t", t(1000)).await;
    let queued = active(&store, 3, "t", t(1000)).await;
    let moved = store.request_revocation(&[queued], RevocationReason::Operator, t(1)).await.unwrap();
    assert_eq!(moved, vec![queued]);

    let asked = [waiting, live, queued, lease_id(99), waiting];
    let moved = store.request_revocation(&asked, RevocationReason::Released, t(10)).await.unwrap();
    assert_eq!(sorted(moved), vec![waiting, live], "only pending and active leases move, once");
    assert_revoking(&store, waiting, RevocationReason::Released, t(10)).await;
    assert_revoking(&store, live, RevocationReason::Released, t(10)).await;
    assert_revoking(&store, queued, RevocationReason::Operator, t(1)).await;
}

pub(super) async fn sweep(store: Store) {
    open_task(&store, "t").await;
    let due = active(&store, 1, "t", t(100)).await;
    let later = active(&store, 2, "t", t(200)).await;
    let stale = pending(&store, 3, "t", t(0)).await;
    let fresh = pending(&store, 4, "t", t(50)).await;

    let swept = store.sweep(t(99), t(0), 10).await.unwrap();
    assert_eq!(swept, Swept::default(), "nothing is due before t+99");
    let swept = store.sweep(t(100), t(50), 10).await.unwrap();
    assert_eq!(swept.expired, vec![due], "expires_at == now counts as expired");
    let named = crate::store::SweptLease { id: due, agent: "agent-1".into(), task_id: "t".into() };
    assert_eq!(swept.expired, vec![named], "with the agent and task its evidence names");
    assert_eq!(swept.abandoned, vec![stale], "only pendings created before the cutoff");
    assert_revoking(&store, due, RevocationReason::Expired, t(100)).await;
    assert_revoking(&store, stale, RevocationReason::Abandoned, t(100)).await;
    assert_eq!(lease_of(&store, later).await.state, LeaseState::Active);
    assert_eq!(lease_of(&store, fresh).await.state, LeaseState::Pending);
    let swept = store.sweep(t(100), t(50), 10).await.unwrap();
    assert_eq!(swept, Swept::default(), "a swept lease is not swept again");
}

pub(super) async fn sweep_limit(store: Store) {
    open_task(&store, "t").await;
    let mut expiring = Vec::new();
    for n in 1..=3 {
        expiring.push(active(&store, n, "t", t(100 + i64::from(n))).await);
    }
    let mut stale = Vec::new();
    for n in 11..=13 {
        stale.push(pending(&store, n, "t", t(i64::from(n))).await);
    }
    let first = store.sweep(t(200), t(200), 2).await.unwrap();
    assert_eq!(first.expired, expiring[..2], "limit 2 takes the two earliest expiries");
    assert_eq!(first.abandoned, stale[..2], "limit 2 takes the two oldest pendings");
    let second = store.sweep(t(200), t(200), 2).await.unwrap();
    assert_eq!(second.expired, expiring[2..]);
    assert_eq!(second.abandoned, stale[2..]);
    assert_eq!(store.sweep(t(200), t(200), 2).await.unwrap(), Swept::default());
}

pub(super) async fn claim_revocations(store: Store) {
    open_task(&store, "t").await;
    let first = active(&store, 1, "t", t(1000)).await;
    let second = active(&store, 2, "t", t(1000)).await;
    let _live = active(&store, 3, "t", t(1000)).await;
    let _waiting = pending(&store, 4, "t", t(0)).await;
    store.request_revocation(&[first], RevocationReason::Operator, t(10)).await.unwrap();
    store.request_revocation(&[second], RevocationReason::Operator, t(50)).await.unwrap();

    let claimed = store.claim_revocations(t(20), t(80), 10).await.unwrap();
    assert_eq!(ids(&claimed), vec![first], "only revocations due by now are claimed");
    let revocation = claimed[0].revocation.clone().unwrap();
    assert_eq!((revocation.attempts, revocation.next_attempt_at), (1, t(80)), "attempt counted, held");
    assert_eq!(lease_of(&store, first).await, claimed[0], "the claim is stored");
    assert!(store.claim_revocations(t(40), t(100), 10).await.unwrap().is_empty(), "claimed are hidden");

    let claimed = store.claim_revocations(t(80), t(140), 1).await.unwrap();
    assert_eq!(ids(&claimed), vec![second], "limit 1 takes the earliest due");
    let claimed = store.claim_revocations(t(80), t(140), 1).await.unwrap();
    assert_eq!(ids(&claimed), vec![first], "a lapsed claim is taken again");
    assert_eq!(claimed[0].revocation.as_ref().unwrap().attempts, 2, "each claim counts an attempt");
    assert!(store.claim_revocations(t(80), t(140), 10).await.unwrap().is_empty());
}

pub(super) async fn finish_revocations(store: Store) {
    open_task(&store, "t").await;
    let done = active(&store, 1, "t", t(1000)).await;
    let mint_failed = pending(&store, 2, "t", t(0)).await;
    let retried = active(&store, 3, "t", t(1000)).await;
    store.request_revocation(&[done, retried], RevocationReason::Operator, t(10)).await.unwrap();
    store.request_revocation(&[mint_failed], RevocationReason::MintFailed, t(10)).await.unwrap();
    assert_eq!(store.claim_revocations(t(10), t(70), 10).await.unwrap().len(), 3);

    let outcomes = [
        RevocationOutcome::Done { lease_id: done, generation: 0 },
        RevocationOutcome::Done { lease_id: mint_failed, generation: 0 },
        RevocationOutcome::Retry {
            lease_id: retried,
            generation: 0,
            next_attempt_at: t(200),
            error: "provider down".into(),
        },
    ];
    store.finish_revocations(&outcomes, t(20)).await.expect("finish revocations");
    let revoked = lease_of(&store, done).await;
    assert_eq!(revoked.state, LeaseState::Revoked);
    assert_eq!(revoked.revocation.as_ref().unwrap().completed_at, Some(t(20)));
    let failed = lease_of(&store, mint_failed).await;
    assert_eq!(failed.state, LeaseState::Failed, "a failed mint ends failed");
    assert_eq!(failed.revocation.as_ref().unwrap().completed_at, Some(t(20)));
    let retrying = lease_of(&store, retried).await;
    assert_eq!(retrying.state, LeaseState::Revoking, "a retried revocation stays queued");
    let revocation = retrying.revocation.unwrap();
    assert_eq!(revocation.next_attempt_at, t(200));
    assert_eq!(revocation.last_error.as_deref(), Some("provider down"));
    assert_eq!(revocation.completed_at, None);

    assert!(store.claim_revocations(t(100), t(300), 10).await.unwrap().is_empty(), "retry not due yet");
    let claimed = store.claim_revocations(t(200), t(300), 10).await.unwrap();
    assert_eq!(ids(&claimed), vec![retried], "finished revocations are never claimed again");
    assert_eq!(claimed[0].revocation.as_ref().unwrap().attempts, 2);

    let repeat = [RevocationOutcome::Done { lease_id: done, generation: 0 }];
    store.finish_revocations(&repeat, t(30)).await.expect("a repeated outcome is accepted");
    assert_eq!(lease_of(&store, done).await, revoked, "a repeated outcome changes nothing");
    let unknown = [RevocationOutcome::Done { lease_id: lease_id(99), generation: 0 }];
    let err = store.finish_revocations(&unknown, t(30)).await.unwrap_err();
    assert_eq!(err, StoreError::LeaseNotFound(lease_id(99)));

    // A revocation the provider says can never succeed: failed, with why,
    // keeping the reason it was revoked for, and never claimed again. An
    // outcome for an older generation is ignored as for the others.
    let error = "provider failed: the key is pinned".to_string();
    let stale = [RevocationOutcome::GaveUp { lease_id: retried, generation: 7, error: error.clone() }];
    store.finish_revocations(&stale, t(210)).await.unwrap();
    assert_eq!(lease_of(&store, retried).await.state, LeaseState::Revoking, "a stale give-up is ignored");
    let gave_up = [RevocationOutcome::GaveUp { lease_id: retried, generation: 0, error: error.clone() }];
    store.finish_revocations(&gave_up, t(220)).await.unwrap();
    let failed = lease_of(&store, retried).await;
    assert_eq!(failed.state, LeaseState::Failed);
    assert!(failed.revocation_gave_up());
    let revocation = failed.revocation.clone().unwrap();
    assert_eq!(revocation.reason, RevocationReason::Operator);
    assert_eq!(revocation.last_error, Some(error));
    assert_eq!(revocation.completed_at, Some(t(220)));
    assert!(!lease_of(&store, mint_failed).await.revocation_gave_up(), "a cleaned-up mint is not a give-up");

    // A failed mint whose clean-up gives up is a give-up too; a revocation
    // that finished after retries carries no error.
    let leftover = pending(&store, 5, "t", t(0)).await;
    let recovered = active(&store, 6, "t", t(1000)).await;
    store.request_revocation(&[leftover], RevocationReason::MintFailed, t(300)).await.unwrap();
    store.request_revocation(&[recovered], RevocationReason::Operator, t(300)).await.unwrap();
    store.claim_revocations(t(300), t(360), 10).await.unwrap();
    let retry = RevocationOutcome::Retry {
        lease_id: recovered,
        generation: 0,
        next_attempt_at: t(301),
        error: "provider down".into(),
    };
    let outcomes =
        [RevocationOutcome::GaveUp { lease_id: leftover, generation: 0, error: "pinned".into() }, retry];
    store.finish_revocations(&outcomes, t(300)).await.unwrap();
    assert!(lease_of(&store, leftover).await.revocation_gave_up(), "a failed mint's clean-up that gave up");
    store.claim_revocations(t(301), t(360), 10).await.unwrap();
    let done = [RevocationOutcome::Done { lease_id: recovered, generation: 0 }];
    store.finish_revocations(&done, t(302)).await.unwrap();
    let finished = lease_of(&store, recovered).await;
    assert_eq!(finished.state, LeaseState::Revoked);
    assert_eq!(finished.revocation.unwrap().last_error, None, "a finished revocation carries no error");
    assert!(store.claim_revocations(t(10_000), t(10_060), 10).await.unwrap().is_empty());
    let listed = store
        .list_leases(&LeaseFilter { state: Some(LeaseState::Failed), ..LeaseFilter::default() }, None, 10)
        .await
        .unwrap();
    assert_eq!(
        sorted(ids(&listed)),
        sorted(vec![mint_failed, retried, leftover]),
        "failed leases are listed"
    );
}

pub(super) async fn next_due(store: Store) {
    assert_eq!(store.next_due().await.unwrap(), None, "an empty store has nothing due");
    store.create_task(task("t", t(1000))).await.unwrap();
    assert_eq!(store.next_due().await.unwrap(), Some(t(1000)), "an open task's deadline");
    let live = active(&store, 1, "t", t(500)).await;
    assert_eq!(store.next_due().await.unwrap(), Some(t(500)), "an active lease's expiry");
    let mut asked = lease(2, "t", t(0));
    asked.expires_at = t(50);
    store.insert_pending(asked, t(0)).await.unwrap();
    assert_eq!(store.next_due().await.unwrap(), Some(t(500)), "pending leases are not scheduled");
    let revoked = active(&store, 3, "t", t(900)).await;
    store.request_revocation(&[revoked], RevocationReason::Operator, t(300)).await.unwrap();
    assert_eq!(store.next_due().await.unwrap(), Some(t(300)), "a queued revocation");
    store.claim_revocations(t(300), t(400), 10).await.unwrap();
    assert_eq!(store.next_due().await.unwrap(), Some(t(400)), "a claimed revocation's lapse");
    store
        .finish_revocations(&[RevocationOutcome::Done { lease_id: revoked, generation: 0 }], t(310))
        .await
        .unwrap();
    assert_eq!(store.next_due().await.unwrap(), Some(t(500)));

    store.close_task("t", "engine", RevocationReason::TaskClosed, t(450)).await.unwrap();
    assert_eq!(store.next_due().await.unwrap(), Some(t(450)), "closing queues revocations, drops deadline");
    let claimed = store.claim_revocations(t(450), t(460), 10).await.unwrap();
    assert_eq!(sorted(ids(&claimed)), vec![live, lease_id(2)]);
    let outcomes: Vec<_> =
        claimed.iter().map(|lease| RevocationOutcome::Done { lease_id: lease.id, generation: 0 }).collect();
    store.finish_revocations(&outcomes, t(455)).await.unwrap();
    assert_eq!(store.next_due().await.unwrap(), None, "nothing left to do");
}

/// The queue the revocation metrics report: every revoking lease counts,
/// due or not, and the earliest next attempt is exact; finished ones leave.
pub(super) async fn backlog(store: Store) {
    use crate::store::Backlog;
    assert_eq!(store.backlog().await.unwrap(), Backlog::default(), "empty");
    open_task(&store, "t").await;
    let first = active(&store, 1, "t", t(1000)).await;
    let second = active(&store, 2, "t", t(1000)).await;
    let _live = active(&store, 3, "t", t(1000)).await;
    store.request_revocation(&[second], RevocationReason::Operator, t(50)).await.unwrap();
    store.request_revocation(&[first], RevocationReason::Operator, t(10)).await.unwrap();
    let backlog = store.backlog().await.unwrap();
    assert_eq!(backlog, Backlog { queued: 2, earliest_due: Some(t(10)), approvals_open: 0 });

    // Claimed: held until the claim lapses, still queued.
    let claimed = store.claim_revocations(t(20), t(80), 1).await.unwrap();
    assert_eq!(ids(&claimed), vec![first]);
    assert_eq!(
        store.backlog().await.unwrap(),
        Backlog { queued: 2, earliest_due: Some(t(50)), approvals_open: 0 }
    );
    let done = [RevocationOutcome::Done { lease_id: first, generation: 0 }];
    store.finish_revocations(&done, t(21)).await.unwrap();
    assert_eq!(
        store.backlog().await.unwrap(),
        Backlog { queued: 1, earliest_due: Some(t(50)), approvals_open: 0 }
    );
}
