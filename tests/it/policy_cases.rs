//! `writ policy test`, as the real binary: the example cases `writ dev`
//! writes, a copy with one expectation flipped, a broken policy, a bad cases
//! file, and the worked example in docs/policy.md.

use std::path::Path;
use std::process::{Command, Output};

use writ::dev::DevOptions;

/// A `writ dev` data directory, `.writ-dev` under a temp dir.
fn dev_dir() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let options = DevOptions {
        data_dir: root.path().join(".writ-dev"),
        listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        issuer_listen: "127.0.0.1:0".parse().unwrap(),
    };
    writ::dev::prepare(&options).unwrap();
    root
}

fn writ(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_writ")).current_dir(dir).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_example_cases_pass_as_documented() {
    let root = dev_dir();
    // The command docs/policy.md gives.
    let output = writ(root.path(), &["policy", "test", ".writ-dev/example-cases.toml"]);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.lines().any(|line| line == "ok    demo-agent reads orders"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert_eq!(stdout.lines().last(), Some("10 passed, 0 failed"), "{stdout}");

    // And from a source checkout, as the file's header says.
    let source = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = writ(
        source,
        &["policy", "test", "src/dev/example-cases.toml", "--policies", "src/dev/example.cedar"],
    );
    assert_eq!(output.status.code(), Some(0), "{}{}", text(&output.stdout), text(&output.stderr));
    assert_eq!(text(&output.stdout).lines().last(), Some("10 passed, 0 failed"));
}

#[test]
fn a_flipped_expectation_fails_and_names_the_case() {
    let root = dev_dir();
    let path = root.path().join(".writ-dev/example-cases.toml");
    let cases = std::fs::read_to_string(&path).unwrap();
    let flipped = cases.replacen(
        "expect = \"deny\"\npolicies = [\"no-restricted-data\"]",
        "expect = \"allow\"\npolicies = [\"no-restricted-data\"]",
        1,
    );
    assert_ne!(flipped, cases);
    std::fs::write(root.path().join(".writ-dev/flipped.toml"), flipped).unwrap();
    let output = writ(root.path(), &["policy", "test", ".writ-dev/flipped.toml"]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}{}", text(&output.stderr));
    assert!(
        stdout.contains(
            "FAIL  nothing for restricted data: expected allow by no-restricted-data, got deny by no-restricted-data"
        ),
        "{stdout}"
    );
    assert_eq!(stdout.lines().filter(|line| line.starts_with("FAIL")).count(), 1, "{stdout}");
    assert_eq!(stdout.lines().last(), Some("9 passed, 1 failed"), "{stdout}");
}

#[test]
fn a_broken_policy_is_refused_with_file_and_reason() {
    let root = dev_dir();
    let policy = root.path().join(".writ-dev/policies/example.cedar");
    let broken = std::fs::read_to_string(&policy).unwrap().replace("context.tool ==", "context.tol ==");
    std::fs::write(&policy, broken).unwrap();
    std::fs::write(root.path().join(".writ-dev/policies/typo.cedar"), "permit (principal, action, resource")
        .unwrap();
    let output = writ(root.path(), &["policy", "test", ".writ-dev/example-cases.toml"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{}{stderr}", text(&output.stdout));
    assert_eq!(text(&output.stdout), "");
    // The first file to fail, in load order: a parse error names the file.
    assert!(
        stderr.contains("error: loading policies: policy .writ-dev/policies/typo.cedar does not parse: "),
        "{stderr}"
    );

    std::fs::remove_file(root.path().join(".writ-dev/policies/typo.cedar")).unwrap();
    let output = writ(root.path(), &["policy", "test", ".writ-dev/example-cases.toml"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("error: loading policies: policies do not fit the schema: "), "{stderr}");
    assert!(stderr.contains("refunds-only-in-dev") && stderr.contains("tol"), "{stderr}");
}

#[test]
fn a_bad_cases_file_exits_2_and_a_wrong_step_up_fails() {
    let root = dev_dir();
    let path = root.path().join(".writ-dev/example-cases.toml");
    let cases = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, cases.replacen("tool = \"orders.lookup\"", "tool = [1]", 1)).unwrap();
    let output = writ(root.path(), &["policy", "test", ".writ-dev/example-cases.toml"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            ".writ-dev/example-cases.toml: case 1 (\"demo-agent reads orders\"): TOML parse error at line"
        ),
        "{stderr}"
    );

    // A case expecting approval that policy denies is a mismatch (exit 1).
    std::fs::write(&path, cases.replacen("expect = \"deny\"", "expect = \"step_up\"", 1)).unwrap();
    let output = writ(root.path(), &["policy", "test", ".writ-dev/example-cases.toml"]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "FAIL  another agent does not read orders: expected step_up by no policy, got deny (no policy permits)"
        ),
        "{stdout}"
    );
    // The wrong quorum for the step-up case is a mismatch too.
    std::fs::write(&path, cases.replace("quorum = 2", "quorum = 3")).unwrap();
    let output = writ(root.path(), &["policy", "test", ".writ-dev/example-cases.toml"]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "FAIL  refunds in prod wait for two approvers: expected step_up (3 of orders-approvers) by \
             prod-refunds-need-approval, got step_up (2 of orders-approvers) by prod-refunds-need-approval"
        ),
        "{stdout}"
    );
    // A group on a case that does not expect step_up is unusable (exit 2).
    let misplaced = cases.replacen("expect = \"allow\"", "expect = \"allow\"\ngroup = \"x\"", 1);
    std::fs::write(&path, misplaced).unwrap();
    let output = writ(root.path(), &["policy", "test", ".writ-dev/example-cases.toml"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("group and quorum belong to a case that expects \"step_up\""), "{stderr}");
}

/// The fenced block of `lang` that follows `from` in `text`.
fn block<'a>(text: &'a str, from: &str, lang: &str) -> &'a str {
    let rest = &text[text.find(from).unwrap()..];
    let start = rest.find(&format!("```{lang}\n")).unwrap() + lang.len() + 4;
    let len = rest[start..].find("```").unwrap();
    &rest[start..start + len]
}

#[test]
fn the_worked_example_in_the_docs_passes() {
    let docs = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/policy.md")).unwrap();
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("policies")).unwrap();
    std::fs::create_dir_all(root.path().join("policy-tests")).unwrap();
    std::fs::write(root.path().join("policies/orders.cedar"), block(&docs, "### A worked example", "cedar"))
        .unwrap();
    std::fs::write(root.path().join("policy-tests/cases.toml"), block(&docs, "### A worked example", "toml"))
        .unwrap();
    let output = writ(root.path(), &["policy", "test", "policy-tests/cases.toml"]);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}{}", text(&output.stderr));
    assert_eq!(stdout.lines().last(), Some("4 passed, 0 failed"), "{stdout}");
}
