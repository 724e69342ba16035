//! The `aws-sts` provider through Writ, against a `moto_server` of the
//! test's own: an agent gets an STS session named for its lease (a TTL
//! under STS's 15-minute minimum is refused), reported as expiry-only, and
//! recorded as revoked (not ended) when the task closes.
//!
//! Writ reads its own AWS credentials from environment variables its
//! configuration names, and a test cannot set variables (that needs
//! `unsafe` in a multithreaded process). moto, until told to enforce IAM,
//! takes any key: so the configuration names variables `cargo test` always
//! sets for the test process ([`WRIT_KEY_ENV`], [`WRIT_SECRET_ENV`]). Once
//! the session is minted, the test turns enforcement on, so the session's
//! own signature is checked when the agent uses it.

use aws_sdk_sts::config::Credentials;
use serde_json::json;
use writ::api::proto;
use writ::clock::Clock;
use writ_test_peers::moto::{self, ACCOUNT, Moto, REGION};

use crate::harness::{self, authed};

const ROLE: &str = "writ-reports";
/// Variables cargo sets for every test process it runs; their values stand
/// in for Writ's access key id and secret key while moto takes any key.
const WRIT_KEY_ENV: &str = "CARGO_PKG_NAME";
const WRIT_SECRET_ENV: &str = "CARGO_MANIFEST_DIR";
/// Named so that no session token is used, whatever the environment holds.
const NO_SESSION_TOKEN_ENV: &str = "WRIT_IT_AWS_STS_NO_SESSION_TOKEN";

/// Who moto says the holder of `session` is.
async fn caller_arn(moto: &Moto, session: &proto::AwsSession) -> Result<String, String> {
    let credentials = Credentials::new(
        &session.access_key_id,
        &session.secret_access_key,
        Some(session.session_token.clone()),
        None,
        "issued",
    );
    let identity = moto.sts(credentials).get_caller_identity().send().await;
    identity.map(|identity| identity.arn().unwrap_or_default().to_string()).map_err(|e| format!("{e:?}"))
}

/// moto with the IAM role Writ assumes (any key works: IAM is not enforced).
async fn moto_with_role() -> Moto {
    let moto = Moto::start().await;
    let trust = json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": { "AWS": format!("arn:aws:iam::{ACCOUNT}:root") },
            "Action": ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"],
        }],
    });
    moto.iam(moto::setup_credentials())
        .create_role()
        .role_name(ROLE)
        .assume_role_policy_document(trust.to_string())
        .max_session_duration(3600)
        .send()
        .await
        .unwrap();
    moto
}

/// Writ with provider `aws` (`kind = "aws-sts"`) at `moto`, and a policy
/// letting the demo agent have its `reports` role.
async fn with_aws(moto: &Moto) -> harness::Harness {
    for name in [WRIT_KEY_ENV, WRIT_SECRET_ENV] {
        assert!(
            std::env::var(name).is_ok_and(|value| !value.is_empty()),
            "{name} is set by `cargo test`; run this test through cargo"
        );
    }
    let settings = format!(
        r#"
region = "{REGION}"
endpoint_url = "{url}"
access_key_id_env = "{WRIT_KEY_ENV}"
secret_access_key_env = "{WRIT_SECRET_ENV}"
session_token_env = "{NO_SESSION_TOKEN_ENV}"
connect_timeout = "1s"
timeout = "10s"
max_attempts = 1

[roles.reports]
role_arn = "arn:aws:iam::{ACCOUNT}:role/{ROLE}"
max_ttl = "1h"
"#,
        url = moto.url(),
    );
    let settings: toml::Table = toml::from_str(&settings).unwrap();
    harness::start_with(Box::new(move |config, dir| {
        config.providers.insert("aws".into(), writ::config::ProviderConfig { kind: "aws-sts".into(), settings });
        let policy = r#"
            @id("demo-agent-gets-aws-reports")
            permit (principal == Writ::Agent::"demo-agent", action == Writ::Action::"issue", resource == Writ::Role::"aws/reports");
        "#;
        std::fs::write(dir.join("policies/aws.cedar"), policy).unwrap();
    }))
    .await
}

fn aws_session(issued: &proto::IssuedCredential) -> proto::AwsSession {
    match issued.credential.as_ref().and_then(|c| c.kind.as_ref()) {
        Some(proto::credential::Kind::AwsSession(session)) => session.clone(),
        other => panic!("expected an AWS session, got {other:?}"),
    }
}

#[tokio::test]
async fn an_sts_session_is_named_for_its_lease_at_least_the_sts_minimum_and_expiry_only() {
    let moto = moto_with_role().await;
    let h = with_aws(&moto).await;
    h.open_task("aws-1", "demo-agent", 3600).await;
    let now = h.clock.now();
    // Under STS's 15-minute minimum: refused, naming the minimum.
    let mut request = harness::issue_request("aws-1", "reports", &[], 300);
    request.grants[0].provider = "aws".into();
    let status = h.credentials().await.issue(authed(&h.agent(), request.clone())).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("minimum credential lifetime of 900s"), "{status:?}");
    request.grants[0].ttl = Some(prost_types::Duration { seconds: 900, nanos: 0 });
    let issued = h.credentials().await.issue(authed(&h.agent(), request)).await.unwrap().into_inner();
    let issued = &issued.credentials[0];
    assert!(issued.notices.is_empty(), "{:?}", issued.notices);
    let lease = issued.lease.clone().unwrap();
    assert_eq!(lease.provider, "aws");
    assert_eq!(lease.role, "reports");
    assert_eq!(lease.state, proto::LeaseState::Active as i32);
    assert_eq!(lease.shape, proto::CredentialShape::ExpiryOnly as i32, "an STS session cannot be revoked");
    let (issued_at, expires_at) = (lease.issued_at.unwrap().seconds, lease.expires_at.unwrap().seconds);
    assert_eq!(issued_at, now.timestamp(), "issued now, by Writ's clock");
    assert_eq!(expires_at - issued_at, 900, "the lease lasts the 900 s asked, STS's minimum");
    let session = aws_session(issued);

    // The agent uses the session; moto now checks its signature.
    moto.enforce_iam().await;
    let session_name = format!("writ-{}", lease.lease_id.replace('-', ""));
    let arn = caller_arn(&moto, &session).await.unwrap();
    assert_eq!(arn, format!("arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE}/{session_name}"));
    let forged = proto::AwsSession { secret_access_key: "not-the-secret".into(), ..session.clone() };
    assert!(caller_arn(&moto, &forged).await.is_err(), "moto checks the session's signature");

    let closed = h
        .tasks()
        .await
        .close_task(authed(&h.workflow(), proto::CloseTaskRequest { task_id: "aws-1".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((closed.revoked, closed.retrying), (1, 0), "{closed:?}");
    let revoked = h.lease(&lease.lease_id).await;
    assert_eq!(revoked.state, proto::LeaseState::Revoked as i32);
    assert_eq!(revoked.revocation_reason, "task_closed");
    assert_eq!(revoked.shape, proto::CredentialShape::ExpiryOnly as i32);
    // Expiry-only: the revocation is recorded, and the session lives on
    // until its expiry.
    assert_eq!(caller_arn(&moto, &session).await.unwrap(), arn);

    let audit = std::fs::read_to_string(&h.config.audit.path).unwrap();
    assert!(!audit.contains(&session.secret_access_key) && !audit.contains(&session.session_token));
    h.stop().await;
}
