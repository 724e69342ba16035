//! The provider against a real peer: a `moto_server` per test (see
//! [`writ_test_peers::moto`]), with Writ's own IAM user, its
//! least-privilege policy and the roles it assumes set up as
//! `docs/providers/aws-sts.md` says.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sts::config::Credentials;
use chrono::Utc;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use uuid::Uuid;
use writ_provider_api::conformance::{self, Grant, Probe};
use writ_provider_api::{
    Credential, MintRequest, Provider, ProviderError, RenewRequest, RevocationHandle, RevokeRequest,
};
use writ_provider_aws_sts::names::{self, Handle};
use writ_provider_aws_sts::policy::REVOCATION_POLICY_NAME;
use writ_provider_aws_sts::{AwsStsConfig, AwsStsProvider};

use writ_test_peers::moto::{self, ACCOUNT, Moto};

const WRIT_USER: &str = "writ";
const REPORTS: &str = "writ-reports";
const DEPLOY: &str = "writ-deploy";
const CUTOFF: &str = "writ-cutoff";
const FORBIDDEN: &str = "not-for-writ";

fn role_arn(name: &str) -> String {
    let path = if name == DEPLOY { "ci/" } else { "" };
    format!("arn:aws:iam::{ACCOUNT}:role/{path}{name}")
}

/// moto with Writ's IAM user and the roles of [`World::config_text`].
struct World {
    moto: Moto,
    access_key_id: String,
    secret_access_key: String,
    /// An administrator of moto's account, for the tests' own IAM calls
    /// once moto enforces IAM.
    inspector: Credentials,
}

impl World {
    /// moto accepts any request, signed by anyone.
    async fn open() -> Self {
        let moto = Moto::start().await;
        let iam = moto.iam(moto::setup_credentials());
        let trust = json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": { "AWS": format!("arn:aws:iam::{ACCOUNT}:user/{WRIT_USER}") },
                "Action": ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"],
            }],
        });
        for name in [REPORTS, DEPLOY, CUTOFF, FORBIDDEN] {
            let path = if name == DEPLOY { "/ci/" } else { "/" };
            iam.create_role()
                .role_name(name)
                .path(path)
                .assume_role_policy_document(trust.to_string())
                .max_session_duration(7200)
                .send()
                .await
                .unwrap();
        }
        iam.create_user().user_name(WRIT_USER).send().await.unwrap();
        // Writ's least-privilege policy, as documented: assume (and tag, and
        // set the source identity of) exactly the configured roles; read and
        // write the inline policy of the one role that revokes by
        // aws:TokenIssueTime.
        let identity = json!({
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "AssumeConfiguredRoles",
                    "Effect": "Allow",
                    "Action": ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"],
                    "Resource": [role_arn(REPORTS), role_arn(DEPLOY), role_arn(CUTOFF)],
                },
                {
                    "Sid": "RevokeByTokenIssueTime",
                    "Effect": "Allow",
                    "Action": ["iam:GetRolePolicy", "iam:PutRolePolicy"],
                    "Resource": [role_arn(CUTOFF)],
                },
            ],
        });
        iam.put_user_policy()
            .user_name(WRIT_USER)
            .policy_name("writ-broker")
            .policy_document(identity.to_string())
            .send()
            .await
            .unwrap();
        let key = iam.create_access_key().user_name(WRIT_USER).send().await.unwrap();
        let key = key.access_key().unwrap();

        iam.create_user().user_name("inspector").send().await.unwrap();
        let everything = json!({
            "Version": "2012-10-17",
            "Statement": [{ "Effect": "Allow", "Action": "*", "Resource": "*" }],
        });
        iam.put_user_policy()
            .user_name("inspector")
            .policy_name("admin")
            .policy_document(everything.to_string())
            .send()
            .await
            .unwrap();
        let inspector = iam.create_access_key().user_name("inspector").send().await.unwrap();
        let inspector = inspector.access_key().unwrap();
        Self {
            access_key_id: key.access_key_id().to_string(),
            secret_access_key: key.secret_access_key().to_string(),
            inspector: Credentials::new(
                inspector.access_key_id(),
                inspector.secret_access_key(),
                None,
                None,
                "inspector",
            ),
            moto,
        }
    }

    /// As [`World::open`], then moto checks every signature and IAM policy:
    /// Writ works with exactly the documented permissions.
    async fn enforcing() -> Self {
        let world = Self::open().await;
        world.moto.enforce_iam().await;
        world
    }

    fn config_text(&self) -> String {
        let url = self.moto.url();
        format!(
            r#"
region = "{region}"
endpoint_url = "{url}"
iam_endpoint_url = "{url}"
access_key_id_env = "WRIT_TEST_ACCESS_KEY_ID"
secret_access_key_env = "WRIT_TEST_SECRET_ACCESS_KEY"
session_token_env = "WRIT_TEST_SESSION_TOKEN"
connect_timeout = "1s"
timeout = "10s"
max_attempts = 1

[roles.reports]
role_arn = "{reports}"
max_ttl = "1h"
transitive_tag_keys = ["writ:agent"]
statements = '''{{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::acme-reports"}}'''

[roles.reports.scopes]
read = '''[{{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::acme-reports/*"}}]'''
write = '''[{{"Effect": "Allow", "Action": ["s3:PutObject"],
           "Resource": "arn:aws:s3:::acme-reports/in/*"}}]'''

[roles.deploy]
role_arn = "{deploy}"
max_ttl = "2h"
default_ttl = "30m"

[roles.cutoff]
role_arn = "{cutoff}"
max_ttl = "1h"
revoke_by_token_issue_time = true

[roles.forbidden]
role_arn = "{forbidden}"
max_ttl = "1h"
"#,
            region = moto::REGION,
            reports = role_arn(REPORTS),
            deploy = role_arn(DEPLOY),
            cutoff = role_arn(CUTOFF),
            forbidden = role_arn(FORBIDDEN),
        )
    }

    fn config(&self) -> AwsStsConfig {
        toml::from_str(&self.config_text()).unwrap()
    }

    fn env(&self) -> impl Fn(&str) -> Option<String> + use<> {
        let mut variables = BTreeMap::new();
        variables.insert("WRIT_TEST_ACCESS_KEY_ID", self.access_key_id.clone());
        variables.insert("WRIT_TEST_SECRET_ACCESS_KEY", self.secret_access_key.clone());
        move |name: &str| variables.get(name).cloned()
    }

    fn provider(&self) -> Arc<AwsStsProvider> {
        Arc::new(AwsStsProvider::with_env(self.config(), self.env()).unwrap())
    }

    /// Who AWS says the holder of `credential` is.
    async fn caller_arn(&self, credential: &Credential) -> Result<String, String> {
        let Credential::AwsSession { access_key_id, secret_access_key, session_token } = credential else {
            panic!("the aws-sts provider mints AWS sessions, got {credential:?}")
        };
        let credentials = Credentials::new(
            access_key_id,
            secret_access_key.expose_secret(),
            Some(session_token.expose_secret().to_string()),
            None,
            "minted",
        );
        let identity = self.moto.sts(credentials).get_caller_identity().send().await;
        identity.map(|identity| identity.arn().unwrap_or_default().to_string()).map_err(|e| format!("{e:?}"))
    }

    fn iam(&self) -> aws_sdk_iam::Client {
        self.moto.iam(self.inspector.clone())
    }

    /// The cutoff of the role's revocation policy, read directly from IAM.
    async fn cutoff_of(&self, role: &str) -> Option<chrono::DateTime<Utc>> {
        let output = self
            .iam()
            .get_role_policy()
            .role_name(role)
            .policy_name(REVOCATION_POLICY_NAME)
            .send()
            .await
            .ok()?;
        // IAM returns policy documents URL-encoded.
        let document: Value = serde_json::from_str(&moto::url_decode(output.policy_document())).unwrap();
        let statement = &document["Statement"][0];
        assert_eq!(statement["Effect"], "Deny");
        assert_eq!(statement["Action"], "*");
        assert_eq!(statement["Resource"], "*");
        let cutoff = statement["Condition"]["DateLessThan"]["aws:TokenIssueTime"].as_str().unwrap();
        Some(chrono::DateTime::parse_from_rfc3339(cutoff).unwrap().with_timezone(&Utc))
    }
}

/// Whether AWS takes the credential, and sees the lease's session.
struct CallerIdentity<'a>(&'a World);

#[async_trait]
impl Probe for CallerIdentity<'_> {
    async fn is_live(&self, credential: &Credential, request: &MintRequest) -> bool {
        match self.0.caller_arn(credential).await {
            Ok(arn) => arn.contains(":assumed-role/") && arn.contains(&names::session_name(request.lease_id)),
            Err(_) => false,
        }
    }
}

fn grant(role: &str, scopes: &[&str]) -> Grant {
    Grant { role: role.into(), scopes: scopes.iter().map(|scope| scope.to_string()).collect() }
}

fn request(role: &str, scopes: &[&str], ttl: Duration) -> MintRequest {
    conformance::request(&grant(role, scopes), Utc::now(), ttl)
}

fn revocation(request: &MintRequest, handle: RevocationHandle) -> RevokeRequest {
    RevokeRequest { lease_id: request.lease_id, role: request.role.clone(), handle }
}

const FIFTEEN_MINUTES: Duration = Duration::from_secs(900);

#[tokio::test]
async fn passes_the_conformance_suite() {
    let world = World::enforcing().await;
    conformance::run(world.provider(), grant("reports", &["read"]), &CallerIdentity(&world), Utc::now())
        .await;
}

#[tokio::test]
async fn passes_the_conformance_suite_without_scopes() {
    let world = World::enforcing().await;
    conformance::run(world.provider(), grant("deploy", &[]), &CallerIdentity(&world), Utc::now()).await;
}

#[tokio::test]
async fn passes_the_conformance_suite_revoking_by_token_issue_time() {
    let world = World::enforcing().await;
    conformance::run(world.provider(), grant("cutoff", &[]), &CallerIdentity(&world), Utc::now()).await;
    assert!(world.cutoff_of(CUTOFF).await.is_some(), "the suite's revocations applied the deny");
}

#[tokio::test]
async fn a_session_is_named_for_its_lease_and_tagged_with_agent_task_and_owner() {
    // Not enforcing: moto's SigV4 check rejects a correctly signed form body
    // holding a space (the tag value below); AWS does not.
    let world = World::open().await;
    let provider = world.provider();
    let mut asked = request("reports", &["read"], FIFTEEN_MINUTES);
    asked.agent = "spiffe://corp/agents/report bot".into();
    asked.task_id = "task#42".into();
    let minted = provider.mint(&asked).await.unwrap();

    let session = format!("writ-{}", asked.lease_id.simple());
    let arn = world.caller_arn(&minted.credential).await.unwrap();
    assert_eq!(arn, format!("arn:aws:sts::{ACCOUNT}:assumed-role/{REPORTS}/{session}"));

    let sent = world.moto.received("AssumeRole");
    assert_eq!(sent.len(), 1, "{sent:?}");
    let sent = &sent[0];
    assert_eq!(sent["RoleArn"], role_arn(REPORTS));
    assert_eq!(sent["RoleSessionName"], session);
    assert_eq!(sent["SourceIdentity"], "spiffe___corp_agents_report_bot");
    let tags: Vec<(&str, &str)> = (1..=3)
        .map(|n| {
            (sent[&format!("Tags.member.{n}.Key")].as_str(), sent[&format!("Tags.member.{n}.Value")].as_str())
        })
        .collect();
    assert_eq!(
        tags,
        [
            ("writ:agent", "spiffe://corp/agents/report bot"),
            ("writ:task", "task_42"),
            ("writ:owner", "owner@example.com"),
        ]
    );
    assert!(!sent.contains_key("Tags.member.4.Key"));
    assert_eq!(sent["TransitiveTagKeys.member.1"], "writ:agent");
    assert!(!sent.contains_key("TransitiveTagKeys.member.2"));

    // moto's own record of the session.
    let state = world.moto.state().await;
    let sessions = state["sts"]["AssumedRole"].as_array().unwrap();
    let recorded = sessions.iter().find(|s| s["session_name"] == session.as_str()).unwrap();
    assert_eq!(recorded["role_arn"], role_arn(REPORTS));

    let deploy = provider.mint(&request("deploy", &[], FIFTEEN_MINUTES)).await.unwrap();
    let sent = world.moto.received("AssumeRole").pop().unwrap();
    assert!(
        !sent.keys().any(|key| key.starts_with("TransitiveTagKeys")),
        "no transitive keys unless configured: {sent:?}"
    );
    assert!(world.caller_arn(&deploy.credential).await.unwrap().contains(&format!("/{DEPLOY}/writ-")));
}

#[tokio::test]
async fn duration_seconds_is_the_lease_ttl() {
    let world = World::enforcing().await;
    let provider = world.provider();

    // Writ's clock a minute ahead of AWS's: AWS's earlier Expiration is
    // what is reported, and it is DurationSeconds from AWS's now.
    let mut ahead = request("reports", &[], Duration::from_secs(1800));
    ahead.issued_at += chrono::Duration::seconds(60);
    ahead.expires_at += chrono::Duration::seconds(60);
    let minted = provider.mint(&ahead).await.unwrap();
    assert_eq!(world.moto.received("AssumeRole").pop().unwrap()["DurationSeconds"], "1800");
    let lives = (minted.expires_at - Utc::now()).num_seconds();
    assert!((1795..=1800).contains(&lives), "Expiration - now = {lives}s");
    assert!(minted.expires_at < ahead.expires_at);
    let handle = Handle::parse(&minted.handle, ahead.lease_id).unwrap();
    let issued = handle.issued_at.unwrap();
    assert!((issued - Utc::now()).num_seconds().abs() <= 5, "the handle holds AWS's issue time: {issued}");

    // In step: the call's latency is within expiry_tolerance, so the lease's
    // own expiry is reported.
    let in_step = request("reports", &[], FIFTEEN_MINUTES);
    let minted = provider.mint(&in_step).await.unwrap();
    assert_eq!(world.moto.received("AssumeRole").pop().unwrap()["DurationSeconds"], "900");
    assert_eq!(minted.expires_at, in_step.expires_at);

    // Past max_ttl (which Writ core never asks for): clamped.
    let long = request("reports", &[], Duration::from_secs(7200));
    let minted = provider.mint(&long).await.unwrap();
    assert_eq!(world.moto.received("AssumeRole").pop().unwrap()["DurationSeconds"], "3600");
    let lives = (minted.expires_at - Utc::now()).num_seconds();
    assert!((3595..=3600).contains(&lives), "AWS's Expiration, an hour from its now: {lives}s");

    // Shorter than STS's minimum (which Writ core never asks for either):
    // refused before calling AWS.
    let short = request("reports", &[], Duration::from_secs(600));
    let error = provider.mint(&short).await.unwrap_err();
    assert!(matches!(&error, ProviderError::Refused(m) if m.contains("600s")), "{error:?}");
    assert_eq!(world.moto.received("AssumeRole").len(), 3);
}

#[tokio::test]
async fn a_session_outliving_the_lease_past_the_tolerance_is_discarded() {
    let world = World::open().await;
    let provider = world.provider();
    // Writ's clock two minutes behind AWS's.
    let mut behind = request("reports", &[], FIFTEEN_MINUTES);
    behind.issued_at -= chrono::Duration::seconds(120);
    behind.expires_at -= chrono::Duration::seconds(120);
    let error = provider.mint(&behind).await.unwrap_err();
    let ProviderError::Failed(message) = &error else { panic!("Failed, got {error:?}") };
    assert!(message.contains("after the lease's expiry") && message.contains("discarded"), "{message}");
    assert_eq!(world.moto.received("AssumeRole").len(), 1, "the session exists at AWS, unused");

    let mut slightly = request("reports", &[], FIFTEEN_MINUTES);
    slightly.issued_at -= chrono::Duration::seconds(10);
    slightly.expires_at -= chrono::Duration::seconds(10);
    let minted = provider.mint(&slightly).await.unwrap();
    assert_eq!(minted.expires_at, slightly.expires_at, "within expiry_tolerance the lease's expiry holds");
}

#[tokio::test]
async fn the_session_policy_holds_exactly_the_granted_scopes() {
    let world = World::enforcing().await;
    let provider = world.provider();
    let list = json!({"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::acme-reports"});
    let read =
        json!({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::acme-reports/*"});
    let write =
        json!({"Effect": "Allow", "Action": ["s3:PutObject"], "Resource": "arn:aws:s3:::acme-reports/in/*"});
    let cases: [(&[&str], Vec<&Value>); 4] = [
        (&[], vec![&list]),
        (&["read"], vec![&list, &read]),
        (&["write"], vec![&list, &write]),
        (&["write", "read"], vec![&list, &read, &write]),
    ];
    let mut sent_policies = Vec::new();
    for (scopes, expected) in cases {
        let asked = request("reports", scopes, FIFTEEN_MINUTES);
        provider.mint(&asked).await.unwrap();
        let sent = world.moto.received("AssumeRole").pop().unwrap();
        let policy: Value = serde_json::from_str(&sent["Policy"]).unwrap();
        assert_eq!(policy["Version"], "2012-10-17");
        assert_eq!(
            policy["Statement"].as_array().unwrap().iter().collect::<Vec<_>>(),
            expected,
            "{scopes:?}"
        );

        let state = world.moto.state().await;
        let session = names::session_name(asked.lease_id);
        let recorded = state["sts"]["AssumedRole"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["session_name"] == session.as_str())
            .unwrap()
            .clone();
        assert_eq!(recorded["policy"].as_str(), Some(sent["Policy"].as_str()), "moto holds the policy sent");
        sent_policies.push(sent["Policy"].clone());
    }

    provider.mint(&request("deploy", &[], FIFTEEN_MINUTES)).await.unwrap();
    let sent = world.moto.received("AssumeRole").pop().unwrap();
    assert!(!sent.contains_key("Policy"), "a role without statements or scopes sends no session policy");

    // IAM's own policy grammar (moto's validator) takes every policy sent.
    let world_iam = World::open().await;
    for (index, policy) in sent_policies.iter().enumerate() {
        world_iam
            .iam()
            .create_policy()
            .policy_name(format!("sent-{index}"))
            .policy_document(policy)
            .send()
            .await
            .unwrap_or_else(|e| panic!("IAM refuses {policy}: {e:?}"));
    }
}

#[tokio::test]
async fn unknown_roles_and_scopes_are_refused_by_name_without_calling_aws() {
    let world = World::open().await;
    let provider = world.provider();
    let cases = [
        ("no-such-role", vec![], vec!["no-such-role"]),
        ("reports", vec!["admin"], vec!["\"admin\"", "\"reports\""]),
        ("reports", vec!["read", "admin"], vec!["\"admin\""]),
        ("deploy", vec!["read"], vec!["\"read\"", "\"deploy\""]),
    ];
    for (role, scopes, named) in cases {
        let error = provider.mint(&request(role, &scopes, FIFTEEN_MINUTES)).await.unwrap_err();
        let ProviderError::Refused(message) = &error else { panic!("Refused, got {error:?}") };
        for name in named {
            assert!(message.contains(name), "{message} names {name}");
        }
    }
    let error = provider.intent(Uuid::now_v7(), "no-such-role").unwrap_err();
    assert!(matches!(&error, ProviderError::Refused(m) if m.contains("no-such-role")), "{error:?}");
    assert!(world.moto.received("AssumeRole").is_empty());
}

#[tokio::test]
async fn access_denied_is_refused_with_what_writ_needs() {
    let world = World::enforcing().await;
    let provider = world.provider();
    let error = provider.mint(&request("forbidden", &[], FIFTEEN_MINUTES)).await.unwrap_err();
    let ProviderError::Refused(message) = &error else { panic!("Refused, got {error:?}") };
    assert!(message.contains("AccessDenied"), "{message}");
    assert!(message.contains(&role_arn(FORBIDDEN)) && message.contains("\"forbidden\""), "{message}");
    assert!(message.contains("sts:AssumeRole, sts:TagSession and sts:SetSourceIdentity"), "{message}");
    assert!(!message.contains(&world.secret_access_key));
}

#[tokio::test]
async fn credentials_aws_does_not_accept_fail_and_make_writ_unhealthy() {
    let world = World::enforcing().await;
    let wrong = |name: &str| match name {
        "WRIT_TEST_ACCESS_KEY_ID" => Some(world.access_key_id.clone()),
        "WRIT_TEST_SECRET_ACCESS_KEY" => Some("wrong-s3cret-key".to_string()),
        _ => None,
    };
    let provider = AwsStsProvider::with_env(world.config(), wrong).unwrap();
    let error = provider.mint(&request("reports", &[], FIFTEEN_MINUTES)).await.unwrap_err();
    let ProviderError::Failed(message) = &error else { panic!("Failed, got {error:?}") };
    assert!(message.contains("SignatureDoesNotMatch"), "{message}");
    assert!(!message.contains("s3cret"), "{message}");
    let error = provider.health().await.unwrap_err();
    assert!(matches!(&error, ProviderError::Unavailable(m) if !m.contains("s3cret")), "{error:?}");
    world.provider().health().await.unwrap();
}

#[tokio::test]
async fn with_aws_out_of_reach_mint_is_unavailable_and_default_revocation_succeeds() {
    let mut world = World::open().await;
    let provider = world.provider();
    let pending = request("deploy", &[], FIFTEEN_MINUTES);
    let cutoff_pending = request("cutoff", &[], FIFTEEN_MINUTES);
    world.moto.stop();

    let error = provider.mint(&request("reports", &["read"], FIFTEEN_MINUTES)).await.unwrap_err();
    let ProviderError::Unavailable(message) = &error else { panic!("Unavailable, got {error:?}") };
    assert!(message.contains("cannot reach AWS"), "{message}");
    assert!(error.is_retryable());
    assert!(matches!(provider.health().await, Err(ProviderError::Unavailable(_))));

    // Revocation without the deny needs no AWS, and is idempotent.
    let handle = provider.intent(pending.lease_id, "deploy").unwrap();
    for _ in 0..2 {
        provider.revoke(&revocation(&pending, handle.clone())).await.unwrap();
    }
    // With the deny, it needs IAM, and says so in a way that is retried.
    let handle = provider.intent(cutoff_pending.lease_id, "cutoff").unwrap();
    let error = provider.revoke(&revocation(&cutoff_pending, handle)).await.unwrap_err();
    assert!(matches!(&error, ProviderError::Unavailable(_)), "{error:?}");
}

#[tokio::test]
async fn default_revocation_only_records_intent_and_the_session_lives_on() {
    let world = World::enforcing().await;
    let provider = world.provider();
    let asked = request("deploy", &[], FIFTEEN_MINUTES);
    let minted = provider.mint(&asked).await.unwrap();
    let renewal = RenewRequest { mint: asked.clone(), handle: minted.handle.clone() };
    let error = provider.renew(&renewal).await.unwrap_err();
    assert!(matches!(&error, ProviderError::Refused(m) if m.contains("cannot be extended")), "{error:?}");

    provider.revoke(&revocation(&asked, minted.handle.clone())).await.unwrap();
    provider.revoke(&revocation(&asked, minted.handle.clone())).await.unwrap();
    assert!(world.caller_arn(&minted.credential).await.is_ok(), "expiry-only: the session still works");

    // A lease of a role no longer configured: nothing to do, and done.
    let retired = request("retired", &[], FIFTEEN_MINUTES);
    let handle = Handle::new("retired", &role_arn(DEPLOY), retired.lease_id).to_revocation_handle().unwrap();
    provider.revoke(&revocation(&retired, handle)).await.unwrap();
    let policies = world.iam().list_role_policies().role_name(DEPLOY).send().await.unwrap();
    assert!(policies.policy_names().is_empty(), "nothing was written to the role");

    // A handle of another lease is not acted on.
    let other = request("deploy", &[], FIFTEEN_MINUTES);
    let error = provider.revoke(&revocation(&other, minted.handle)).await.unwrap_err();
    assert!(matches!(&error, ProviderError::Failed(m) if m.contains("another session")), "{error:?}");
}

#[tokio::test]
async fn revoking_by_token_issue_time_moves_the_role_cutoff_forward_only() {
    let world = World::enforcing().await;
    let provider = world.provider();
    let older = request("cutoff", &[], FIFTEEN_MINUTES);
    let older_minted = provider.mint(&older).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let newer = request("cutoff", &[], FIFTEEN_MINUTES);
    let newer_minted = provider.mint(&newer).await.unwrap();
    let newer_issued = Handle::parse(&newer_minted.handle, newer.lease_id).unwrap().issued_at.unwrap();
    assert_eq!(world.cutoff_of(CUTOFF).await, None);

    provider.revoke(&revocation(&newer, newer_minted.handle.clone())).await.unwrap();
    let cutoff = world.cutoff_of(CUTOFF).await.expect("the role has the deny");
    assert!(cutoff > newer_issued && cutoff > newer.issued_at, "{cutoff} after {newer_issued}");
    assert!(cutoff <= Utc::now() + chrono::Duration::seconds(3), "not far in the future: {cutoff}");

    // Idempotent: the same revocation again changes nothing.
    provider.revoke(&revocation(&newer, newer_minted.handle.clone())).await.unwrap();
    assert_eq!(world.cutoff_of(CUTOFF).await, Some(cutoff));
    // Monotonic: revoking the older lease afterwards keeps the later cutoff.
    provider.revoke(&revocation(&older, older_minted.handle.clone())).await.unwrap();
    assert_eq!(world.cutoff_of(CUTOFF).await, Some(cutoff));

    // A pending lease (its handle from `intent`, issue time unknown) cuts at
    // the revocation time.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let pending = request("cutoff", &[], FIFTEEN_MINUTES);
    let handle = provider.intent(pending.lease_id, "cutoff").unwrap();
    let before = Utc::now();
    provider.revoke(&revocation(&pending, handle)).await.unwrap();
    let moved = world.cutoff_of(CUTOFF).await.unwrap();
    assert!(moved > cutoff && moved > before, "{moved} after {before}");

    // Only this role's policy was written.
    for role in [REPORTS, DEPLOY] {
        let policies = world.iam().list_role_policies().role_name(role).send().await.unwrap();
        assert!(policies.policy_names().is_empty(), "{role}");
    }
}

#[tokio::test]
async fn debug_output_and_errors_never_show_secrets() {
    let world = World::open().await;
    let secret = "wJalr-s3cret-never-printed";
    let env = |name: &str| match name {
        "WRIT_TEST_ACCESS_KEY_ID" => Some("AKIAWRITTESTKEY00001".to_string()),
        "WRIT_TEST_SECRET_ACCESS_KEY" => Some(secret.to_string()),
        "WRIT_TEST_SESSION_TOKEN" => Some("session-s3cret-token".to_string()),
        _ => None,
    };
    let config = world.config();
    let provider = AwsStsProvider::with_env(config.clone(), env).unwrap();
    let printed = format!("{config:?} {provider:?}");
    assert!(!printed.contains("s3cret"), "{printed}");
    assert!(printed.contains("AKIAWRITTESTKEY00001"), "the key id is not secret: {printed}");

    let minted = provider.mint(&request("reports", &["read"], FIFTEEN_MINUTES)).await.unwrap();
    let printed = format!("{minted:?}");
    for secret in minted.credential.secrets() {
        assert!(!printed.contains(secret), "{printed}");
    }

    let missing =
        |name: &str| (name == "WRIT_TEST_ACCESS_KEY_ID").then(|| "AKIAWRITTESTKEY00001".to_string());
    let error = AwsStsProvider::with_env(world.config(), missing).unwrap_err();
    assert!(
        error.contains("WRIT_TEST_SECRET_ACCESS_KEY") && error.contains("secret_access_key_env"),
        "{error}"
    );
}

#[tokio::test]
async fn bad_configuration_is_refused_when_the_provider_is_built() {
    let world = World::open().await;
    let broken = world.config_text().replace(
        r#"read = '''[{"Effect": "Allow", "Action": "s3:GetObject""#,
        r#"read = '''[{"Effect": "Permit", "Action": "s3:GetObject""#,
    );
    let config: AwsStsConfig = toml::from_str(&broken).unwrap();
    let error = AwsStsProvider::with_env(config, world.env()).unwrap_err();
    assert_eq!(error, r#"role "reports": scope "read" statement 0: Effect must be "Allow" or "Deny""#);

    let unknown =
        world.config_text().replace("max_attempts = 1", "max_attempts = 1\nsecret_access_key = \"x\"");
    let error = toml::from_str::<AwsStsConfig>(&unknown).unwrap_err();
    assert!(error.to_string().contains("unknown field `secret_access_key`"), "{error}");
}
