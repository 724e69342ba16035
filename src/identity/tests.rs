use std::sync::atomic::{AtomicUsize, Ordering};

use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::*;
use crate::dev::DevIssuer;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A JWKS server whose key set can be swapped, counting fetches.
struct KeyServer {
    issuer: String,
    fetches: Arc<AtomicUsize>,
    jwks: Arc<std::sync::Mutex<Value>>,
}

async fn key_server() -> KeyServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let fetches = Arc::new(AtomicUsize::new(0));
    let jwks = Arc::new(std::sync::Mutex::new(json!({ "keys": [] })));
    let discovery = json!({ "issuer": issuer, "jwks_uri": format!("{issuer}/jwks") });
    let (count, keys) = (fetches.clone(), jwks.clone());
    let router = Router::new()
        .route("/.well-known/openid-configuration", get(move || async move { Json(discovery) }))
        .route(
            "/jwks",
            get(move || {
                count.fetch_add(1, Ordering::SeqCst);
                let body = keys.lock().unwrap().clone();
                async move { Json(body) }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, router).await });
    KeyServer { issuer, fetches, jwks }
}

fn verifier(issuer: &str) -> Verifier {
    let limits = Limits { jwks_refresh_interval: Duration::from_secs(3600), ..Limits::default() };
    let config = IssuerConfig {
        issuer: issuer.into(),
        jwks_url: None,
        algorithms: vec![],
        ca_file: None,
        token_file: None,
    };
    Verifier::new("writ", &limits, &[config]).unwrap()
}

#[tokio::test]
async fn a_rotated_key_is_fetched_but_bogus_kids_cannot_flood_the_issuer() {
    let server = key_server().await;
    let first = DevIssuer::generate(&server.issuer).unwrap();
    *server.jwks.lock().unwrap() = first.jwks();
    let verifier = verifier(&server.issuer);
    assert!(verifier.warm_up().await.is_empty());
    let now = Utc::now();
    let token = first.mint("agent", "writ", Duration::from_secs(60), now).unwrap();
    assert_eq!(verifier.verify(&token, now).await.unwrap().subject, "agent");
    assert_eq!(server.fetches.load(Ordering::SeqCst), 1);

    // The issuer rotates: the unknown kid triggers one refresh.
    let second = DevIssuer::generate(&server.issuer).unwrap();
    *server.jwks.lock().unwrap() = second.jwks();
    let rotated = second.mint("agent", "writ", Duration::from_secs(60), now).unwrap();
    assert_eq!(verifier.verify(&rotated, now).await.unwrap().subject, "agent");
    assert_eq!(server.fetches.load(Ordering::SeqCst), 2);

    // A flood of tokens with made-up kids costs no further fetches.
    let stranger = DevIssuer::generate(&server.issuer).unwrap();
    for _ in 0..50 {
        let bogus = stranger.mint("agent", "writ", Duration::from_secs(60), now).unwrap();
        assert!(matches!(verifier.verify(&bogus, now).await, Err(AuthError::UnknownKey(_))));
    }
    assert_eq!(server.fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn lifetimes_are_checked_against_the_given_time_with_leeway() {
    let server = key_server().await;
    let issuer = DevIssuer::generate(&server.issuer).unwrap();
    *server.jwks.lock().unwrap() = issuer.jwks();
    let verifier = verifier(&server.issuer);
    let minted_at = Utc::now();
    let token = issuer.mint("agent", "writ", Duration::from_secs(60), minted_at).unwrap();
    let leeway = chrono::Duration::seconds(30);
    let at = |offset: i64| minted_at + chrono::Duration::seconds(offset);
    assert!(verifier.verify(&token, at(60) + leeway).await.is_ok());
    assert_eq!(verifier.verify(&token, at(61) + leeway).await, Err(AuthError::Expired));
    assert_eq!(verifier.verify(&token, at(-31)).await, Err(AuthError::NotYetValid));
}

#[tokio::test]
async fn refusals_name_what_is_wrong() {
    let server = key_server().await;
    let issuer = DevIssuer::generate(&server.issuer).unwrap();
    *server.jwks.lock().unwrap() = issuer.jwks();
    let verifier = verifier(&server.issuer);
    let now = Utc::now();
    let stranger = DevIssuer::generate("https://elsewhere.example").unwrap();
    let foreign = stranger.mint("agent", "writ", Duration::from_secs(60), now).unwrap();
    assert_eq!(
        verifier.verify(&foreign, now).await,
        Err(AuthError::UntrustedIssuer("https://elsewhere.example".into()))
    );
    let none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
        URL_SAFE_NO_PAD
            .encode(json!({"iss": server.issuer, "sub": "a", "aud": "writ", "exp": 4e9}).to_string())
    );
    assert_eq!(verifier.verify(&none, now).await, Err(AuthError::Algorithm("none".into())));
    assert_eq!(verifier.verify("x".repeat(9000).as_str(), now).await, Err(AuthError::TooLarge(8192)));
    assert!(matches!(verifier.verify("a.b", now).await, Err(AuthError::Malformed(_))));
    let no_sub = issuer.mint_with("", "writ", Duration::from_secs(60), now, json!({})).unwrap();
    assert_eq!(verifier.verify(&no_sub, now).await, Err(AuthError::MissingClaim("sub".into())));
}

// The header and claim rules of docs/token-rules.md. Every token below is
// correctly signed by the trusted issuer unless the test says otherwise, so
// it is refused only because of the rule under test.

/// A trusted issuer with its key server and a verifier that trusts it.
struct Fixture {
    server: KeyServer,
    issuer: DevIssuer,
    verifier: Verifier,
    now: DateTime<Utc>,
}

async fn fixture() -> Fixture {
    fixture_with(vec![]).await
}

async fn fixture_with(algorithms: Vec<String>) -> Fixture {
    let server = key_server().await;
    let issuer = DevIssuer::generate(&server.issuer).unwrap();
    *server.jwks.lock().unwrap() = issuer.jwks();
    let limits = Limits { jwks_refresh_interval: Duration::from_secs(3600), ..Limits::default() };
    let config = IssuerConfig {
        issuer: server.issuer.clone(),
        jwks_url: None,
        algorithms,
        ca_file: None,
        token_file: None,
    };
    let verifier = Verifier::new("writ", &limits, &[config]).unwrap();
    Fixture { server, issuer, verifier, now: Utc::now() }
}

impl Fixture {
    /// The header `mint` writes.
    fn header(&self) -> Value {
        json!({ "alg": "ES256", "typ": "JWT", "kid": self.issuer.kid() })
    }

    /// Claims that pass every check.
    fn claims(&self) -> Value {
        let now = self.now.timestamp();
        json!({ "iss": self.server.issuer, "sub": "agent", "aud": "writ", "iat": now, "nbf": now, "exp": now + 60 })
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        self.sign_raw(&header.to_string(), &claims.to_string())
    }

    fn sign_raw(&self, header: &str, claims: &str) -> String {
        self.issuer.sign_raw(header.as_bytes(), claims.as_bytes()).unwrap()
    }

    /// The default header with `name` set to `value`.
    fn with_header(&self, name: &str, value: Value) -> String {
        let mut header = self.header();
        header[name] = value;
        self.sign(&header, &self.claims())
    }

    /// The default claims with `name` set to `value`.
    fn with_claim(&self, name: &str, value: Value) -> String {
        let mut claims = self.claims();
        claims[name] = value;
        self.sign(&self.header(), &claims)
    }

    fn without_claim(&self, name: &str) -> String {
        let mut claims = self.claims();
        claims.as_object_mut().unwrap().remove(name);
        self.sign(&self.header(), &claims)
    }

    async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        self.verifier.verify(token, self.now).await
    }

    /// The refusal of `token`, as the caller reads it.
    async fn refusal(&self, token: &str) -> String {
        match self.verify(token).await {
            Ok(identity) => panic!("accepted {identity:?}"),
            Err(error) => error.to_string(),
        }
    }
}

fn b64(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(text)
}

#[tokio::test]
async fn the_fixture_token_is_accepted_so_each_refusal_below_is_the_rule() {
    let f = fixture().await;
    let identity = f.verify(&f.sign(&f.header(), &f.claims())).await.unwrap();
    assert_eq!(identity.subject, "agent");
    assert_eq!(identity.issuer, f.server.issuer);
    // Unknown header parameters that are not critical are ignored (RFC 7515 §4).
    assert!(f.verify(&f.with_header("x-vendor", json!("anything"))).await.is_ok());
    assert!(f.verify(&f.with_header("x5t", json!("aGludA"))).await.is_ok());
    // The same DevIssuer `mint` tokens pass too.
    let minted = f.issuer.mint("agent", "writ", Duration::from_secs(60), f.now).unwrap();
    assert!(f.verify(&minted).await.is_ok());
}

#[tokio::test]
async fn crit_is_refused_in_every_form() {
    let f = fixture().await;
    // An extension Writ does not understand, correctly listed and present.
    let mut header = f.header();
    header["crit"] = json!(["urn:example:ext"]);
    header["urn:example:ext"] = json!(true);
    let token = f.sign(&header, &f.claims());
    assert_eq!(
        f.verify(&token).await,
        Err(AuthError::Refused(
            "the header marks \"urn:example:ext\" critical, an extension Writ does not understand".into()
        ))
    );
    // Malformed crit values (RFC 7515 §4.1.11).
    let cases = [
        (json!([]), "crit is an empty list"),
        (json!("urn:example:ext"), "crit is not a list of header parameter names"),
        (json!([1]), "crit is not a list of header parameter names"),
        (json!(null), "crit is not a list of header parameter names"),
        (json!(["absent"]), "crit names \"absent\", which the header lacks"),
        (json!(["alg"]), "crit names \"alg\", a registered header parameter"),
        (json!(["kid"]), "crit names \"kid\", a registered header parameter"),
        (json!(["crit"]), "crit names \"crit\", a registered header parameter"),
    ];
    for (crit, expected) in cases {
        let token = f.with_header("crit", crit.clone());
        assert_eq!(f.verify(&token).await, Err(AuthError::Malformed(expected.into())), "crit {crit}");
    }
}

#[tokio::test]
async fn b64_unencoded_payloads_are_refused() {
    let f = fixture().await;
    // RFC 7797: b64 must be critical; as such it is an extension Writ refuses.
    let mut header = f.header();
    header["b64"] = json!(false);
    header["crit"] = json!(["b64"]);
    assert!(f.refusal(&f.sign(&header, &f.claims())).await.contains("\"b64\" critical"));
    // Without crit, b64 is refused all the same, false or true.
    for value in [json!(false), json!(true)] {
        assert_eq!(
            f.verify(&f.with_header("b64", value)).await,
            Err(AuthError::Refused(
                "the header has b64 (RFC 7797 unencoded payload), which Writ does not support".into()
            ))
        );
    }
}

#[tokio::test]
async fn zip_enc_and_cty_are_refused() {
    let f = fixture().await;
    let refused = |text: &str| Err(AuthError::Refused(text.into()));
    assert_eq!(
        f.verify(&f.with_header("zip", json!("DEF"))).await,
        refused("the header has zip; a signed JWT is never compressed")
    );
    assert_eq!(
        f.verify(&f.with_header("enc", json!("A256GCM"))).await,
        refused("the header has enc; Writ accepts signed JWTs only")
    );
    assert_eq!(
        f.verify(&f.with_header("cty", json!("JWT"))).await,
        refused("the header has cty; nested JWTs are not accepted")
    );
}

#[tokio::test]
async fn a_token_that_brings_its_own_key_is_refused() {
    let f = fixture().await;
    // The attacker signs with their own key, names the trusted issuer and
    // embeds their public key: the key is never used.
    let attacker = DevIssuer::generate(&f.server.issuer).unwrap();
    let attacker_jwk = attacker.jwks()["keys"][0].clone();
    for header in [
        json!({ "alg": "ES256", "jwk": attacker_jwk }),
        json!({ "alg": "ES256", "kid": attacker.kid(), "jwk": attacker_jwk }),
        json!({ "alg": "ES256", "kid": f.issuer.kid(), "jwk": attacker_jwk }),
    ] {
        let token =
            attacker.sign_raw(header.to_string().as_bytes(), f.claims().to_string().as_bytes()).unwrap();
        assert_eq!(
            f.verify(&token).await,
            Err(AuthError::Refused(
                "the header carries jwk; Writ takes keys only from the issuer's JWKS".into()
            ))
        );
    }
    // Nor are key URLs or certificate chains, even on a token signed by the
    // trusted issuer.
    let fetches = f.server.fetches.load(Ordering::SeqCst);
    for (name, value) in [
        ("jku", json!("https://attacker.example/jwks")),
        ("x5u", json!("https://attacker.example/cert.pem")),
        ("x5c", json!(["MIIB"])),
    ] {
        assert_eq!(
            f.verify(&f.with_header(name, value)).await,
            Err(AuthError::Refused(format!(
                "the header carries {name}; Writ takes keys only from the issuer's JWKS"
            )))
        );
    }
    assert_eq!(f.server.fetches.load(Ordering::SeqCst), fetches, "nothing was fetched");
}

#[tokio::test]
async fn only_allowed_asymmetric_algorithms_pass() {
    let f = fixture().await;
    let algorithm = |name: &str| Err(AuthError::Algorithm(name.into()));
    // HS256 "signed" with the issuer's public key as the HMAC secret, and
    // algorithms outside the allow-list, whatever the signature.
    for name in ["HS256", "HS512", "none", "None", "es256", "RS384", "ES384", "PS512"] {
        assert_eq!(f.verify(&f.with_header("alg", json!(name))).await, algorithm(name), "{name}");
    }
    assert_eq!(
        f.verify(&f.with_header("alg", json!(["ES256"]))).await,
        Err(AuthError::Malformed("the header's alg is not a string".into()))
    );
    let mut header = f.header();
    header.as_object_mut().unwrap().remove("alg");
    assert_eq!(
        f.verify(&f.sign(&header, &f.claims())).await,
        Err(AuthError::Malformed("the header has no alg".into()))
    );
    // An issuer configured for fewer algorithms refuses the others.
    let narrow = fixture_with(vec!["RS256".into()]).await;
    let token = narrow.sign(&narrow.header(), &narrow.claims());
    assert_eq!(narrow.verify(&token).await, algorithm("ES256"));
}

#[tokio::test]
async fn a_key_is_used_only_with_its_own_algorithm_and_type() {
    // The JWK says alg ES256: a token that asks for PS256 with it is refused.
    let f = fixture().await;
    assert_eq!(f.verify(&f.with_header("alg", json!("PS256"))).await, Err(AuthError::KeyMismatch));
    // A JWK without alg: the key type still decides (an EC key is no RSA or
    // Ed25519 key), checked by the ring provider.
    let loose = fixture().await;
    let mut jwks = loose.issuer.jwks();
    jwks["keys"][0].as_object_mut().unwrap().remove("alg");
    *loose.server.jwks.lock().unwrap() = jwks;
    assert!(loose.verify(&loose.sign(&loose.header(), &loose.claims())).await.is_ok());
    for name in ["RS256", "PS256", "EdDSA"] {
        assert_eq!(
            loose.verify(&loose.with_header("alg", json!(name))).await,
            Err(AuthError::KeyMismatch),
            "{name}"
        );
    }
}

#[tokio::test]
async fn kid_must_be_a_string_naming_a_published_key() {
    let f = fixture().await;
    assert_eq!(
        f.verify(&f.with_header("kid", json!("no-such-key"))).await,
        Err(AuthError::UnknownKey(Some("no-such-key".into())))
    );
    for kid in [json!(5), json!(null), json!([f.issuer.kid()])] {
        assert_eq!(
            f.verify(&f.with_header("kid", kid)).await,
            Err(AuthError::Malformed("the header's kid is not a string".into()))
        );
    }
    // Without a kid, the issuer's one key is used only if it has no kid.
    let mut header = f.header();
    header.as_object_mut().unwrap().remove("kid");
    let token = f.sign(&header, &f.claims());
    assert_eq!(f.verify(&token).await, Err(AuthError::UnknownKey(None)));
    assert_eq!(
        AuthError::UnknownKey(None).to_string(),
        "the token names no key (kid) and the issuer's JWKS does not hold exactly one"
    );
}

#[tokio::test]
async fn typ_must_mark_a_jwt_or_an_access_token() {
    let f = fixture().await;
    let mut header = f.header();
    header.as_object_mut().unwrap().remove("typ");
    assert!(f.verify(&f.sign(&header, &f.claims())).await.is_ok(), "no typ (Kubernetes)");
    for typ in ["JWT", "jwt", "application/jwt", "JOSE", "at+jwt", "application/at+JWT"] {
        assert!(f.verify(&f.with_header("typ", json!(typ))).await.is_ok(), "{typ}");
    }
    for typ in ["secevent+jwt", "logout+jwt", "dpop+jwt", "client-authentication+jwt", "JOSE+JSON", ""] {
        assert_eq!(
            f.verify(&f.with_header("typ", json!(typ))).await,
            Err(AuthError::Refused(format!(
                "typ {typ:?} marks another kind of JWT; Writ accepts JWT and at+jwt"
            ))),
            "{typ}"
        );
    }
    assert_eq!(
        f.verify(&f.with_header("typ", json!(1))).await,
        Err(AuthError::Malformed("the header's typ is not a string".into()))
    );
}

#[tokio::test]
async fn repeated_member_names_are_refused() {
    let f = fixture().await;
    let now = f.now.timestamp();
    let kid = f.issuer.kid();
    let iss = &f.server.issuer;
    let header = format!(r#"{{"alg":"ES256","kid":"{kid}"}}"#);
    let claims = |sub: &str| format!(r#"{{"iss":"{iss}",{sub},"aud":"writ","exp":{}}}"#, now + 60);
    assert!(f.verify(&f.sign_raw(&header, &claims(r#""sub":"agent""#))).await.is_ok());
    let repeated = |what: &str| Err(AuthError::Malformed(format!("the {what} repeats a member name")));
    // serde_json alone would keep the last `sub`.
    for sub in [r#""sub":"agent","sub":"admin""#, r#""sub":"agent","s\u0075b":"admin""#] {
        assert_eq!(f.verify(&f.sign_raw(&header, &claims(sub))).await, repeated("payload"), "{sub}");
    }
    let nested = claims(r#""sub":"agent","ctx":{"team":"a","team":"b"}"#);
    assert_eq!(f.verify(&f.sign_raw(&header, &nested)).await, repeated("payload"));
    let header_twice = format!(r#"{{"alg":"ES256","kid":"{kid}","alg":"ES256"}}"#);
    assert_eq!(f.verify(&f.sign_raw(&header_twice, &claims(r#""sub":"agent""#))).await, repeated("header"));
}

#[tokio::test]
async fn only_three_canonical_base64url_parts_are_accepted() {
    let f = fixture().await;
    let token = f.sign(&f.header(), &f.claims());
    let parts: Vec<&str> = token.split('.').collect();
    let (header, payload, signature) = (parts[0], parts[1], parts[2]);
    let malformed = |text: &str| Err(AuthError::Malformed(text.into()));
    let jwe = format!("{}.a.b.c.d", b64(r#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#));
    assert_eq!(
        f.verify(&jwe).await,
        malformed("the token has five parts, an encrypted JWT (JWE); Writ accepts signed JWTs only")
    );
    for wrong in [format!("{header}.{payload}"), format!("{token}.x"), format!("{token}.x.y.z")] {
        assert_eq!(f.verify(&wrong).await, malformed("a JWT has three dot-separated parts"));
    }
    assert_eq!(f.verify(&format!("{header}.{payload}.")).await, malformed("the token has no signature"));
    // Padding, the standard alphabet, whitespace and garbage.
    assert_eq!(
        f.verify(&format!("{header}=.{payload}.{signature}")).await,
        malformed("the header is not unpadded base64url")
    );
    let standard = base64::engine::general_purpose::STANDARD.encode(f.claims().to_string() + "??>>");
    assert_eq!(
        f.verify(&format!("{header}.{standard}.{signature}")).await,
        malformed("the payload is not unpadded base64url")
    );
    for bad in
        [format!("{signature}="), format!("{signature} "), format!("{signature}\n"), format!("{signature}!")]
    {
        assert_eq!(
            f.verify(&format!("{header}.{payload}.{bad}")).await,
            malformed("the signature is not unpadded base64url")
        );
    }
    // A last symbol with non-zero unused bits decodes to the same bytes
    // with a lenient decoder; canonical base64url has one spelling.
    assert_eq!(signature.len() % 4, 2, "a 64-byte ES256 signature ends in a 4-bit-padded symbol");
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = alphabet.iter().position(|c| *c == *signature.as_bytes().last().unwrap()).unwrap();
    let sloppy = char::from(alphabet[(last & 0b110000) | 0b0001]);
    let sloppy = format!("{header}.{payload}.{}{sloppy}", &signature[..signature.len() - 1]);
    assert_eq!(f.verify(&sloppy).await, malformed("the signature is not unpadded base64url"));
}

#[tokio::test]
async fn header_and_payload_must_be_json_objects() {
    let f = fixture().await;
    let header = f.header().to_string();
    let claims = f.claims().to_string();
    let malformed = |text: &str| Err(AuthError::Malformed(text.into()));
    for (payload, expected) in [
        ("[]", "the payload is not a JSON object"),
        ("\"agent\"", "the payload is not a JSON object"),
        ("null", "the payload is not a JSON object"),
        ("{\"iss\":", "the payload is not JSON"),
        (&format!("{claims} trailing"), "the payload is not JSON"),
    ] {
        assert_eq!(f.verify(&f.sign_raw(&header, payload)).await, malformed(expected), "{payload}");
    }
    assert_eq!(f.verify(&f.sign_raw("[]", &claims)).await, malformed("the header is not a JSON object"));
    let not_utf8 = format!("{}.{}.{}", b64(&header), URL_SAFE_NO_PAD.encode([0x7b, 0xff, 0x7d]), "AAAA");
    assert_eq!(f.verify(&not_utf8).await, malformed("the payload is not JSON"));
}

#[tokio::test]
async fn iss_must_name_a_trusted_issuer_exactly() {
    let f = fixture().await;
    let iss = f.server.issuer.clone();
    for other in
        [format!("{iss}/"), iss.to_uppercase(), format!(" {iss}"), iss.replace("http://", "https://")]
    {
        assert_eq!(
            f.verify(&f.with_claim("iss", json!(other))).await,
            Err(AuthError::UntrustedIssuer(other))
        );
    }
    for value in [json!([iss]), json!(1), json!(null)] {
        assert_eq!(
            f.verify(&f.with_claim("iss", value)).await,
            Err(AuthError::Malformed("claim iss is not a string".into()))
        );
    }
    assert_eq!(f.verify(&f.without_claim("iss")).await, Err(AuthError::MissingClaim("iss".into())));
}

#[tokio::test]
async fn aud_must_include_writ() {
    let f = fixture().await;
    for aud in [json!("writ"), json!(["writ"]), json!(["other", "writ"])] {
        assert!(f.verify(&f.with_claim("aud", aud.clone())).await.is_ok(), "{aud}");
    }
    for aud in [json!("other"), json!(["other"]), json!([]), json!("Writ"), json!("writ ")] {
        assert_eq!(
            f.verify(&f.with_claim("aud", aud.clone())).await,
            Err(AuthError::WrongAudience("writ".into())),
            "{aud}"
        );
    }
    for aud in [json!(1), json!(["writ", 1]), json!({ "writ": true }), json!(null)] {
        assert_eq!(
            f.verify(&f.with_claim("aud", aud.clone())).await,
            Err(AuthError::Malformed("claim aud is not a string or a list of strings".into())),
            "{aud}"
        );
    }
    assert_eq!(f.verify(&f.without_claim("aud")).await, Err(AuthError::MissingClaim("aud".into())));
}

#[tokio::test]
async fn sub_must_be_a_non_empty_string() {
    let f = fixture().await;
    assert_eq!(f.verify(&f.without_claim("sub")).await, Err(AuthError::MissingClaim("sub".into())));
    assert_eq!(f.verify(&f.with_claim("sub", json!(""))).await, Err(AuthError::MissingClaim("sub".into())));
    for sub in [json!(42), json!(["agent"]), json!(null), json!({ "id": "agent" })] {
        assert_eq!(
            f.verify(&f.with_claim("sub", sub)).await,
            Err(AuthError::Malformed("claim sub is not a string".into()))
        );
    }
}

#[tokio::test]
async fn lifetimes_are_numbers_and_fractions_round_towards_refusal() {
    let f = fixture().await;
    let now = f.now.timestamp();
    assert_eq!(f.verify(&f.without_claim("exp")).await, Err(AuthError::MissingClaim("exp".into())));
    for name in ["exp", "nbf", "iat"] {
        for value in [json!((now + 60).to_string()), json!(null), json!(true), json!([now])] {
            assert_eq!(
                f.verify(&f.with_claim(name, value.clone())).await,
                Err(AuthError::Malformed(format!("claim {name} is not a number of seconds since 1970"))),
                "{name}: {value}"
            );
        }
    }
    // RFC 7519 NumericDates may be fractional; the leeway is 30 s.
    let at = |offset: f64| json!(now as f64 + offset);
    assert!(f.verify(&f.with_claim("exp", at(60.5))).await.is_ok());
    assert!(f.verify(&f.with_claim("exp", at(-29.5))).await.is_ok());
    // exp rounds down: 30.5 s ago is past the leeway.
    assert_eq!(f.verify(&f.with_claim("exp", at(-30.5))).await, Err(AuthError::Expired));
    // nbf and iat round up: 30.5 s ahead is beyond the leeway.
    assert!(f.verify(&f.with_claim("nbf", at(29.5))).await.is_ok());
    assert_eq!(f.verify(&f.with_claim("nbf", at(30.5))).await, Err(AuthError::NotYetValid));
    assert!(f.verify(&f.with_claim("iat", at(29.5))).await.is_ok());
    assert_eq!(f.verify(&f.with_claim("iat", at(30.5))).await, Err(AuthError::IssuedInFuture));
    // Out-of-range values neither panic nor wrap.
    assert_eq!(f.verify(&f.with_claim("exp", json!(-1))).await, Err(AuthError::Expired));
    assert_eq!(f.verify(&f.with_claim("exp", json!(-1e300))).await, Err(AuthError::Expired));
    assert_eq!(f.verify(&f.with_claim("nbf", json!(u64::MAX))).await, Err(AuthError::NotYetValid));
}

#[tokio::test]
async fn the_signature_covers_the_exact_bytes_received() {
    let f = fixture().await;
    let token = f.sign(&f.header(), &f.claims());
    let parts: Vec<&str> = token.split('.').collect();
    let signature = parts[2];
    // The same header, spelled with spaces: same JSON, other bytes.
    let spaced = b64(&format!(r#"{{ "alg": "ES256", "typ": "JWT", "kid": "{}" }}"#, f.issuer.kid()));
    assert_eq!(f.verify(&format!("{spaced}.{}.{signature}", parts[1])).await, Err(AuthError::BadSignature));
    let mut claims = f.claims();
    claims["sub"] = json!("admin");
    let swapped = format!("{}.{}.{signature}", parts[0], b64(&claims.to_string()));
    assert_eq!(f.verify(&swapped).await, Err(AuthError::BadSignature));
    claims["sub"] = json!("other");
    let other = f.sign(&f.header(), &claims);
    let borrowed = format!("{}.{}.{}", parts[0], parts[1], other.split('.').nth(2).unwrap());
    assert_eq!(f.verify(&borrowed).await, Err(AuthError::BadSignature));
    // And a refusal is not remembered: the real token still passes.
    assert!(f.verify(&token).await.is_ok());
}

#[test]
fn the_debug_text_detector_detects_debug_text() {
    assert!(has_debug_text("malformed token: Base64(InvalidLastSymbol(81, 109))"));
    assert!(has_debug_text("Json(Error(\"x\", line: 1))"));
    assert!(has_debug_text("Some(\"kid\")"));
    assert!(!has_debug_text("the signature is not unpadded base64url"));
    assert!(!has_debug_text("token is not valid yet (nbf)"));
    assert_eq!(unquoted(r#"crit names "Base64(\"x\")", which"#), "crit names , which");
}

#[test]
fn quoted_escapes_and_shortens_caller_text() {
    assert_eq!(quoted("agent"), "\"agent\"");
    assert_eq!(quoted("a\"b\n\u{7}"), r#""a\"b\n\u{7}""#);
    let exact = "é".repeat(64);
    assert_eq!(quoted(&exact), format!("\"{exact}\""));
    let long = "é".repeat(65);
    assert_eq!(quoted(&long), format!("\"{}…\"", "é".repeat(64)));
}

/// The message without the caller text it quotes.
fn unquoted(message: &str) -> String {
    let mut unquoted = String::new();
    let (mut inside, mut escaped) = (false, false);
    for c in message.chars() {
        match (inside, escaped, c) {
            (true, false, '\\') => escaped = true,
            (true, true, _) => escaped = false,
            (_, _, '"') => inside = !inside,
            (false, _, c) => unquoted.push(c),
            (true, false, _) => {}
        }
    }
    unquoted
}

/// Rust debug text: a capitalised identifier directly followed by `(` or
/// `{` (`Base64(`, `InvalidLastSymbol(`, `Some(`, `Error{`).
fn has_debug_text(message: &str) -> bool {
    let bytes = message.as_bytes();
    bytes.iter().enumerate().any(|(at, byte)| {
        if !matches!(byte, b'(' | b'{') {
            return false;
        }
        let word: Vec<u8> =
            bytes[..at].iter().rev().take_while(|c| c.is_ascii_alphanumeric()).copied().collect();
        word.last().is_some_and(u8::is_ascii_uppercase) && word.len() > 1
    })
}

fn assert_plain_words(message: &str) {
    let own = unquoted(message);
    assert!(!has_debug_text(&own), "debug text in {message:?}");
    for fragment in ["Base64(", "Json(", "InvalidLastSymbol", "ErrorKind", "Error("] {
        assert!(!own.contains(fragment), "{fragment} in {message:?}");
    }
    assert!(message.starts_with(|c: char| c.is_lowercase()), "{message:?} starts lowercase");
    assert!(!message.ends_with('.'), "{message:?} has no trailing period");
    assert!(message.len() <= 200, "{message:?} is short");
}

#[test]
fn every_jsonwebtoken_error_kind_is_explained_in_words() {
    use jsonwebtoken::errors::ErrorKind as Kind;
    let limits = Limits::default();
    let verifier = Verifier::new("writ", &limits, &[]).unwrap();
    let json_error = serde_json::from_str::<Value>("{").unwrap_err();
    let utf8_error = String::from_utf8(vec![0xff]).unwrap_err();
    let kinds = [
        Kind::InvalidToken,
        Kind::InvalidSignature,
        Kind::InvalidEcdsaKey,
        Kind::InvalidEddsaKey,
        Kind::InvalidRsaKey("InvalidEncoding".into()),
        Kind::RsaFailedSigning,
        Kind::Signing("Error { kind: X }".into()),
        Kind::InvalidAlgorithmName,
        Kind::UnsupportedAlgorithm,
        Kind::InvalidKeyFormat,
        Kind::MissingRequiredClaim("exp".into()),
        Kind::InvalidClaimFormat("exp".into()),
        Kind::ExpiredSignature,
        Kind::InvalidIssuer,
        Kind::InvalidAudience,
        Kind::InvalidSubject,
        Kind::ImmatureSignature,
        Kind::InvalidAlgorithm,
        Kind::MissingAlgorithm,
        Kind::Base64(base64::DecodeError::InvalidLastSymbol(81, 109)),
        Kind::Json(Arc::new(json_error)),
        Kind::Utf8(utf8_error),
        Kind::Provider("Custom(Thing)".into()),
    ];
    for kind in kinds {
        let shown = format!("{kind:?}");
        let message = verifier.explain(&kind.into()).to_string();
        assert_plain_words(&message);
        assert!(!message.contains(&shown), "{message:?} shows {shown}");
    }
}

#[tokio::test]
async fn refusal_messages_are_plain_words_and_quote_little_of_the_token() {
    let f = fixture().await;
    let long = format!("https://{}\"\n{}", "a".repeat(5000), "b".repeat(100));
    let token = f.sign(&f.header(), &f.claims());
    let parts: Vec<&str> = token.split('.').collect();
    let mut crit = f.header();
    crit["crit"] = json!([long.clone()]);
    crit[long.as_str()] = json!(1);
    let mut tokens = vec![
        f.with_claim("iss", json!(long)),
        f.with_header("kid", json!(long)),
        f.with_header("alg", json!(long)),
        f.with_header("typ", json!(long)),
        f.sign(&crit, &f.claims()),
        f.with_header("crit", json!([long])),
        f.with_header("crit", json!(["Base64(x)"])),
        f.with_header("jwk", json!({ "kty": "EC" })),
        f.with_header("alg", json!("PS256")),
        f.with_claim("aud", json!("other")),
        f.with_claim("exp", json!("soon")),
        f.with_claim("sub", json!(1)),
        f.sign_raw("{\"alg\":\"ES256\",\"alg\":\"ES256\"}", "{}"),
        format!("{}.{}.{}x", parts[0], parts[1], parts[2]),
        format!("{}.{}.AAAA", parts[0], parts[1]),
        format!("{}.{}.Zm9v=", parts[0], parts[1]),
        format!("{}.e30.{}", parts[0], parts[2]),
        "a.b".into(),
        "a.b.c.d.e".into(),
        "....".into(),
        "x".repeat(9000),
    ];
    tokens.push(f.with_header("kid", json!("nope")));
    for token in &tokens {
        let message = f.refusal(token).await;
        assert_plain_words(&message);
        assert!(!message.contains(&"a".repeat(65)), "{message:?} quotes at most 64 characters");
        assert!(!message.contains('\n'), "{message:?} has no raw newline");
    }
    let untrusted = f.refusal(&f.with_claim("iss", json!(long))).await;
    assert_eq!(untrusted, format!("issuer \"https://{}…\" is not trusted", "a".repeat(56)));
}
