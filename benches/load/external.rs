//! Driving a Writ (or an echo server) that runs in other processes, so that
//! each can be pinned to its own cores and its CPU read from `/proc`.
//!
//! - `--prepare DIR --issuer-listen ADDR` writes what `writ dev` writes
//!   (keys, the example policy, a `writ.toml` on the embedded store) for a
//!   development issuer at `ADDR`; `scripts/cpu-per-issuance` turns that
//!   `writ.toml` into one configuration per replica (the store, the ports,
//!   the audit log) and starts `writ serve` on each.
//! - `--target URL[,URL…] --data-dir DIR --issuer-listen ADDR` serves the
//!   development issuer of `DIR` at `ADDR` (Writ fetches its keys from
//!   there), starts one task (`--tasks N`: N, caller `i` issuing into task
//!   `i % N`, so that a sharded Redis store spreads the work) and drives the
//!   targets, `--connections` each.
//! - `--serve-echo ADDR` runs the bare echo server until killed; `--echo
//!   --target URL` drives it (no task, no tokens).
//! - `--watch NAME=PID` (repeatable) reads the CPU time of each process from
//!   `/proc/PID/stat` at the start and end of the measured window and prints
//!   it per issuance, beside the load tool's own, and the write system
//!   calls (`/proc/PID/io`) each made per issuance.
//! - `--count N` issues exactly N after the warm-up instead of running for
//!   `--seconds`, and `--warmup-count N` does the same for the warm-up:
//!   two runs that differ only in `--count` differ only by those issuances,
//!   which is what the callgrind measurement needs.

use std::path::Path;
use std::time::{Duration, Instant};

use writ::dev::{DevIssuer, DevOptions};

use crate::{Budget, Measured, Options};

/// Writes the `writ dev` data directory for a development issuer at `issuer_listen`.
pub fn prepare(dir: &Path, issuer_listen: &str) {
    let dev = DevOptions {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:7070".parse().unwrap(),
        http_listen: "127.0.0.1:7071".parse().unwrap(),
        issuer_listen: issuer_listen.parse().expect("--issuer-listen is host:port"),
    };
    writ::dev::prepare(&dev).unwrap();
    DevIssuer::load_or_create(&writ::dev::issuer_url(&dev), &dir.join("dev-issuer.pk8")).unwrap();
    println!("prepared {}", dir.display());
}

/// Runs the echo server on `addr` until the process is killed.
pub fn serve_echo(addr: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let addr = crate::echo::start_on(addr.parse().expect("--serve-echo is host:port")).await;
        println!("echo server on {addr}");
        std::future::pending::<()>().await;
    });
}

/// Drives the Writ replicas (or the echo server) at `options.targets`.
pub fn run(options: &Options) {
    // As many workers as the cores this process may use (`taskset`).
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let targets = &options.targets;
    let (token, request, tasks) = if options.echo {
        let request = crate::issue_request("echo", "tokens", "orders-read", &["orders:read"]);
        ("-".to_string(), request, vec!["echo".to_string()])
    } else {
        let dir = options.data_dir.as_deref().expect("--target needs --data-dir (of --prepare)");
        let listen = options.issuer_listen.as_deref().expect("--target needs --issuer-listen");
        let issuer =
            DevIssuer::load_or_create(&format!("http://{listen}"), &dir.join("dev-issuer.pk8")).unwrap();
        let router = issuer.router();
        let listener = runtime.block_on(tokio::net::TcpListener::bind(listen)).unwrap();
        runtime.spawn(async move { axum::serve(listener, router).await });
        let now = chrono::Utc::now();
        let hour = Duration::from_secs(3600);
        let agent = issuer.mint(writ::dev::AGENT_SUBJECT, writ::dev::AUDIENCE, hour, now).unwrap();
        let workflow = issuer.mint(writ::dev::WORKFLOW_SUBJECT, writ::dev::AUDIENCE, hour, now).unwrap();
        // New tasks per run: the store may outlive the run.
        let run = chrono::Utc::now().timestamp_millis();
        let tasks: Vec<String> = (0..options.tasks).map(|n| format!("load-{run}-{n}")).collect();
        for task_id in &tasks {
            runtime.block_on(crate::start_task(&targets[0], &workflow, task_id));
        }
        (agent, crate::issue_request(&tasks[0], "tokens", "orders-read", &["orders:read"]), tasks)
    };
    println!(
        "targets: {} ({})",
        targets.join(", "),
        if options.echo { "bare tonic echo server" } else { "writ" }
    );
    let watched = &options.watch;
    runtime.block_on(async {
        let mut channels = Vec::new();
        for target in targets {
            channels.extend(crate::futures_channels(target, options.connections).await);
        }
        let warmup = match options.warmup_count {
            Some(count) => Budget::count(count),
            None => Budget::until(Duration::from_secs(options.warmup)),
        };
        println!("warming up");
        crate::drive_tasks(&channels, &token, &request, &tasks, options.concurrency, warmup).await;
        let measured_budget = match options.count {
            Some(count) => Budget::count(count),
            None => Budget::until(Duration::from_secs(options.seconds)),
        };
        println!("measuring {} concurrent callers over {} connections", options.concurrency, channels.len());
        let before: Vec<Option<u64>> = watched.iter().map(|(_, pid)| cpu_ticks(pid)).collect();
        let writes_before: Vec<Option<u64>> = watched.iter().map(|(_, pid)| write_calls(pid)).collect();
        let own_before = cpu_ticks("self");
        let started = Instant::now();
        let (count, histogram, errors) =
            crate::drive_tasks(&channels, &token, &request, &tasks, options.concurrency, measured_budget)
                .await;
        let elapsed = started.elapsed();
        let after: Vec<Option<u64>> = watched.iter().map(|(_, pid)| cpu_ticks(pid)).collect();
        let writes_after: Vec<Option<u64>> = watched.iter().map(|(_, pid)| write_calls(pid)).collect();
        let own_after = cpu_ticks("self");
        Measured { count, errors, histogram, elapsed }.print(if options.echo {
            "bare tonic echo server"
        } else {
            "writ"
        });
        let per_call = |before: Option<u64>, after: Option<u64>| match (before, after) {
            (Some(before), Some(after)) if count > 0 => {
                let seconds = (after - before) as f64 / ticks_per_second();
                Some((seconds * 1e6 / count as f64, seconds / elapsed.as_secs_f64()))
            }
            _ => None,
        };
        let mut rows: Vec<(String, Option<(f64, f64)>)> = watched
            .iter()
            .zip(before.iter().zip(&after))
            .map(|((name, _), (b, a))| (name.clone(), per_call(*b, *a)))
            .collect();
        rows.push(("load tool".into(), per_call(own_before, own_after)));
        for (name, cpu) in rows {
            match cpu {
                Some((micros, cores)) => {
                    println!("cpu         {name:<12} {micros:8.1} µs per call   {cores:.2} cores")
                }
                None => println!("cpu         {name:<12} (not readable)"),
            }
        }
        for ((name, _), (before, after)) in watched.iter().zip(writes_before.iter().zip(&writes_after)) {
            if let (Some(before), Some(after)) = (before, after)
                && count > 0
            {
                let per_call = (after - before) as f64 / count as f64;
                println!("writes      {name:<12} {per_call:8.2} write calls per call");
            }
        }
    });
}

/// The write system calls a process made (`syscw` of `/proc/PID/io`):
/// sockets and files alike, so fewer means writes coalesced.
fn write_calls(pid: &str) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines().find_map(|line| line.strip_prefix("syscw: "))?.trim().parse().ok()
}

/// utime + stime of a process (all its threads), in clock ticks.
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: count after it.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    // Fields 14 and 15 of stat(5); the slice starts at field 3.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// `sysconf(_SC_CLK_TCK)`: 100 on every Linux this runs on (no libc call in
/// a crate that forbids unsafe code; `getconf` says so when it differs).
fn ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0)
    })
}
