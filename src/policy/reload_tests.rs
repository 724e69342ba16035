//! Live reload: a good set replaces the running one, a bad one is refused
//! with its file, line and reason and changes nothing.

use super::*;

const PERMIT: &str = r#"@id("anyone-reads")
permit (principal, action == Writ::Action::"issue", resource);
"#;

fn engine_in(dir: &Path) -> PolicyEngine {
    std::fs::write(dir.join("a.cedar"), PERMIT).unwrap();
    PolicyEngine::load(&[dir.to_path_buf()]).unwrap()
}

#[test]
fn a_good_set_replaces_the_running_one_and_changes_the_digest() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    let first = engine.digest();
    assert_eq!(first.len(), 64, "hex SHA-256: {first}");
    let again = engine.reload().unwrap();
    assert_eq!((again.previous.clone(), again.digest.clone()), (first.clone(), first.clone()), "same files");

    let forbid = "@id(\"no-prod\")\nforbid (principal, action, resource) when { context.task.environment == \"prod\" };\n";
    std::fs::write(dir.path().join("b.cedar"), forbid).unwrap();
    let reloaded = engine.reload().unwrap();
    assert_eq!(reloaded.previous, first);
    assert_ne!(reloaded.digest, first);
    assert_eq!(reloaded.policies, 2);
    assert_eq!(engine.digest(), reloaded.digest);
    assert_eq!(engine.len(), 2);
}

#[test]
fn a_set_that_does_not_parse_is_refused_with_file_and_line_and_the_old_set_kept() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    let digest = engine.digest();
    let broken = "@id(\"ok\")\npermit (principal, action, resource);\n\n@id(\"broken\")\npermit (principal, action, resource\n";
    std::fs::write(dir.path().join("b.cedar"), broken).unwrap();
    let error = engine.reload().unwrap_err().to_string();
    assert!(error.contains("b.cedar") && error.contains("line 5"), "{error}");
    assert_eq!(engine.digest(), digest, "the running set is kept");
    assert_eq!(engine.len(), 1);
}

#[test]
fn a_set_that_does_not_fit_the_schema_is_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_in(dir.path());
    let typo = "// a comment\n\n@id(\"typo\")\npermit (principal, action, resource)\n  when { context.task.enviroment == \"dev\" };\n";
    std::fs::write(dir.path().join("typo.cedar"), typo).unwrap();
    let error = engine.reload().unwrap_err().to_string();
    assert!(error.contains("typo.cedar, line 5") && error.contains("enviroment"), "{error}");
    assert_eq!(engine.len(), 1, "the running set is kept");
    let unreadable = dir.path().join("gone.cedar");
    std::fs::create_dir(&unreadable).unwrap();
    let error = engine.reload().unwrap_err().to_string();
    assert!(error.contains("gone.cedar"), "a file that cannot be read is named: {error}");
}

#[test]
fn a_set_built_from_text_cannot_be_reloaded() {
    let engine = PolicyEngine::from_text(PERMIT).unwrap();
    assert!(engine.reload().is_err());
    assert_eq!(engine.len(), 1);
}
