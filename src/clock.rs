//! Time as a parameter. Domain logic takes `now`; only the edges (gRPC
//! handlers, background workers) read a [`Clock`], and tests swap in a
//! [`ManualClock`] they move by hand. Background workers also wake when a
//! manual clock moves ([`Clock::changed`]), so a test that moves time sees
//! the workers act on the new time at once, not after a real-time poll.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;

    /// Completes the next time the clock is moved by hand. The wall clock
    /// never is, so its future never completes. Call it before reading the
    /// time a wait is computed from, so that no move is missed.
    fn changed(&self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(std::future::pending())
    }
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to. Cloning shares the same time.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<watch::Sender<DateTime<Utc>>>);

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        Self(Arc::new(watch::Sender::new(start)))
    }

    pub fn advance(&self, by: chrono::Duration) {
        self.0.send_modify(|now| *now += by);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.borrow()
    }

    fn changed(&self) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        // Subscribed now, so a move made before the future is polled counts.
        let mut moved = self.0.subscribe();
        Box::pin(async move {
            if moved.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_says_when_it_moves() {
        let clock = ManualClock::new(Utc::now());
        let before = clock.now();
        let changed = clock.changed();
        clock.advance(chrono::Duration::seconds(5));
        tokio::time::timeout(std::time::Duration::from_secs(1), changed).await.expect("woken by the move");
        assert_eq!(clock.now() - before, chrono::Duration::seconds(5));
        let unmoved = clock.changed();
        assert!(tokio::time::timeout(std::time::Duration::from_millis(20), unmoved).await.is_err());
        let wall = SystemClock.changed();
        assert!(tokio::time::timeout(std::time::Duration::from_millis(20), wall).await.is_err());
    }
}
