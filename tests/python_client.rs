//! The Python client (`clients/python`), tested with pytest against the
//! `writ` binary this build made.
//!
//! A virtual environment under Cargo's target directory (kept between runs,
//! so pip's work is done once) gets the client installed as its guide says
//! (`pip install ./clients/python`), then with its `test` extra (pytest,
//! pytest-asyncio, grpcio-tools for the stub drift check, pg8000 for the
//! PostgreSQL example). pytest's fixtures start `writ dev` on free ports
//! from `WRIT_BIN`; the example also needs the local PostgreSQL server on
//! 127.0.0.1:5432, as the provider tests do.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The whole Python suite takes well under a minute; past this it hangs.
const PYTEST_LIMIT: Duration = Duration::from_secs(600);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `command` to the end with its output in `log`, within `limit`;
/// returns whether it succeeded and what it printed.
fn run_logged(mut command: Command, log: &Path, limit: Duration) -> (bool, String) {
    let out = File::create(log).unwrap_or_else(|error| panic!("cannot create {}: {error}", log.display()));
    let err = out.try_clone().unwrap();
    let what = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run {what}: {error}"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = std::fs::read_to_string(log).unwrap_or_default();
    match status {
        Some(status) => (status.success(), output),
        None => (false, format!("{output}\n(killed after {}s)", limit.as_secs())),
    }
}

/// The virtual environment's Python, made if missing or broken.
fn virtual_environment(dir: &Path) -> PathBuf {
    let python = dir.join("bin").join("python");
    let works = || {
        Command::new(&python)
            .args(["-c", "import sys; assert sys.version_info >= (3, 10)"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    if works() {
        return python;
    }
    let _ = std::fs::remove_dir_all(dir);
    let interpreter = std::env::var("WRIT_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut venv = Command::new(&interpreter);
    venv.args(["-m", "venv"]).arg(dir);
    let (ok, output) = run_logged(venv, &dir.with_extension("venv.log"), Duration::from_secs(300));
    assert!(
        ok,
        "cannot make a virtual environment with `{interpreter} -m venv` (install Python 3.10+ with its venv \
         module, e.g. Debian's python3-venv, or point WRIT_PYTHON at one):\n{output}"
    );
    assert!(works(), "{} does not run, or is older than Python 3.10", python.display());
    python
}

fn pip_install(python: &Path, what: &str, log: &Path) {
    let mut pip = Command::new(python);
    pip.args(["-m", "pip", "install", "--disable-pip-version-check", "--quiet", what]).current_dir(repo());
    let (ok, output) = run_logged(pip, log, Duration::from_secs(900));
    assert!(
        ok,
        "`pip install {what}` failed: is PyPI reachable (grpcio, protobuf, pytest, pytest-asyncio, \
         grpcio-tools, pg8000, and hatchling to build the package)?\n{output}"
    );
}

#[test]
fn the_python_client_passes_its_tests_against_this_writ() {
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("python-client");
    std::fs::create_dir_all(&work).unwrap();
    // One run at a time uses the environment (two `cargo test`s may share
    // the target directory).
    let lock = File::create(work.join("lock")).unwrap();
    lock.lock().unwrap();

    let python = virtual_environment(&work.join("venv"));
    // As docs/clients/python.md says, then what the tests need.
    pip_install(&python, "./clients/python", &work.join("pip-install.log"));
    pip_install(&python, "./clients/python[test]", &work.join("pip-install-test.log"));

    let mut pytest = Command::new(&python);
    pytest
        .args(["-m", "pytest", "tests", "-p", "no:cacheprovider", "-q", "-ra"])
        .current_dir(repo().join("clients/python"))
        .env("WRIT_BIN", env!("CARGO_BIN_EXE_writ"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("WRIT_ENDPOINT")
        .env_remove("WRIT_TOKEN")
        .env_remove("WRIT_TOKEN_FILE");
    let (ok, output) = run_logged(pytest, &work.join("pytest.log"), PYTEST_LIMIT);
    println!("{output}");
    assert!(ok, "pytest failed (clients/python/tests):\n{output}");
    assert!(
        output.lines().any(|line| line.contains(" passed") && !line.contains(" failed")),
        "pytest ran no test:\n{output}"
    );
}
