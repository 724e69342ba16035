//! The Tokio runtime `writ` runs on.
//!
//! One setting differs from Tokio's defaults: the per-worker LIFO slot is
//! off (ADR 0018). With it on, a task woken by another task on the same
//! worker runs next, so the connection task of Redis or of an HTTP/2 client
//! runs right after each request hands it one command or one response, and
//! writes it alone: about 4.8 socket writes per issuance. With it off, the
//! woken task waits its turn behind the requests already ready, and writes
//! what they all handed it at once: about 1.4 writes per issuance, and a
//! third less CPU per issuance (docs/performance.md). Tasks in the LIFO
//! slot are also not stolen by idle workers, a known source of latency
//! spikes.
//!
//! Turning the slot off is an unstable Tokio API, so the workspace builds
//! with `--cfg tokio_unstable` (`.cargo/config.toml`). A build without it
//! (a `RUSTFLAGS` in the environment replaces the file's flags) keeps the
//! slot, and [`LIFO_SLOT_OFF`] says so; `writ serve` warns at start.

/// Whether this build turns Tokio's LIFO slot off.
pub const LIFO_SLOT_OFF: bool = cfg!(tokio_unstable);

/// The multi-threaded runtime, one worker per CPU Writ may run on.
pub fn build() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    builder.build()
}

/// Warns, once the log is set up, if this build keeps the LIFO slot.
pub fn warn_if_lifo_slot_on() {
    if !LIFO_SLOT_OFF {
        tracing::warn!(
            "this build of writ was made without --cfg tokio_unstable (a RUSTFLAGS in the environment replaces \
             the flags in .cargo/config.toml), so Tokio's LIFO slot stays on: issuance takes about 45 % more \
             CPU; rebuild without RUSTFLAGS, or add --cfg tokio_unstable to them"
        );
    }
}

#[cfg(test)]
mod tests {
    // A test, not a `const` assertion: a build without the flag must still
    // compile (and warn at start); only the test run refuses it.
    #[test]
    #[allow(clippy::assertions_on_constants)]
    fn this_build_turns_the_lifo_slot_off() {
        // Fails when the workspace's `--cfg tokio_unstable` did not reach
        // the build (a RUSTFLAGS in the environment replaces it).
        assert!(super::LIFO_SLOT_OFF, "built without --cfg tokio_unstable: see .cargo/config.toml");
    }

    #[test]
    fn the_runtime_runs_tasks_that_wake_each_other() {
        let runtime = super::build().unwrap();
        let answer = runtime.block_on(async {
            let (send, receive) = tokio::sync::oneshot::channel();
            let echo = tokio::spawn(async move { receive.await.unwrap() + 1 });
            send.send(41).unwrap();
            echo.await.unwrap()
        });
        assert_eq!(answer, 42);
    }
}
