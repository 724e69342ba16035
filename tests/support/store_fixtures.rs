//! Tasks and leases at fixed times, for the store tests of every backend.
#![allow(dead_code)]

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use uuid::Uuid;
use writ::model::{Lease, LeaseState, SealedHandle, Task, TaskContext, TaskState};

/// `secs` after a fixed instant: the tests never read the clock.
pub fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + TimeDelta::seconds(secs)
}

pub fn task(id: &str) -> Task {
    Task {
        id: id.into(),
        agent: "agent".into(),
        context: TaskContext::default(),
        state: TaskState::Open,
        created_at: t(0),
        created_by: "engine".into(),
        deadline: t(100_000),
        closed: None,
    }
}

/// A pending lease of `task_id`, expiring at `t(600)`.
pub fn lease(id: Uuid, task_id: &str) -> Lease {
    Lease {
        id,
        agent: "agent".into(),
        task_id: task_id.into(),
        provider: "test".into(),
        role: "reader".into(),
        scopes: vec![],
        tool: "tool".into(),
        state: LeaseState::Pending,
        created_at: t(0),
        issued_at: None,
        expires_at: t(600),
        handle: SealedHandle { key_id: "k".into(), sealed: id.as_bytes().to_vec() },
        revocation: None,
    }
}
