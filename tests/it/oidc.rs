//! End to end with a real OIDC provider nobody here wrote (npm
//! `oidc-provider`): its client-credentials JWT access tokens are the
//! agents' workload identities, signed with each allowed algorithm.

use writ::config::{AgentConfig, IdentityMatch, IssuerConfig};

use crate::harness::{self, authed};
use crate::peers::OidcProvider;

const CLIENTS: [(&str, &str, &str); 4] = [
    ("agent-rs256", "secret-rs", "RS256"),
    ("agent-ps256", "secret-ps", "PS256"),
    ("agent-es256", "secret-es", "ES256"),
    ("agent-eddsa", "secret-ed", "EdDSA"),
];

#[tokio::test]
async fn oidc_provider_tokens_work_for_every_allowed_algorithm() {
    let mut clients = CLIENTS.to_vec();
    clients.push(("unregistered", "secret-un", "ES256"));
    let provider = OidcProvider::start(&clients).await;
    let issuer = provider.issuer.clone();
    let h = harness::start_with(Box::new(move |config, dir| {
        config.issuers.push(IssuerConfig {
            issuer: issuer.clone(),
            jwks_url: None,
            algorithms: vec![],
            ca_file: None,
            token_file: None,
        });
        for (client_id, _, _) in CLIENTS {
            config.agents.push(AgentConfig {
                name: client_id.into(),
                owner: "oidc@example.com".into(),
                description: "an agent identified by oidc-provider".into(),
                team: String::new(),
                risk_tier: "low".into(),
                identity: IdentityMatch {
                    issuer: issuer.clone(),
                    subject: Some(client_id.into()),
                    claims: Default::default(),
                },
            });
        }
        let policy = r#"
            @id("oidc-agents-read-orders")
            permit (principal, action == Writ::Action::"issue", resource == Writ::Role::"tokens/orders-read")
            when { principal.owner == "oidc@example.com" };
        "#;
        std::fs::write(dir.join("policies/oidc.cedar"), policy).unwrap();
    }))
    .await;

    for (client_id, secret, alg) in CLIENTS {
        let token = provider.token(client_id, secret).await;
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(format!("{:?}", header.alg), alg, "oidc-provider signed with {alg}");
        h.open_task(&format!("oidc-{client_id}"), client_id, 600).await;
        let request =
            harness::issue_request(&format!("oidc-{client_id}"), "orders-read", &["orders:read"], 60);
        let issued = h.credentials().await.issue(authed(&token, request)).await;
        let issued = issued.unwrap_or_else(|status| panic!("{alg}: {status:?}")).into_inner();
        let lease = issued.credentials[0].lease.as_ref().unwrap();
        assert_eq!(lease.agent, client_id);
    }

    // A valid token from a trusted issuer that maps to no agent is a sighting.
    let stranger = provider.token("unregistered", "secret-un").await;
    let request = harness::issue_request("oidc-agent-es256", "orders-read", &[], 60);
    let status = h.credentials().await.issue(authed(&stranger, request)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    let sightings = h
        .admin()
        .await
        .list_sightings(authed(&h.operator(), writ::api::proto::ListSightingsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .sightings;
    assert!(sightings.iter().any(|s| s.subject == "unregistered" && s.issuer == provider.issuer));
    h.stop().await;
}
