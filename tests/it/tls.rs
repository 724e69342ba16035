//! TLS on both listeners, certificates rotated while connections are open,
//! services identified by client certificate (mTLS), agent tokens bound to
//! the certificate (RFC 8705), and the clear errors of bad peers and bad
//! files. Every certificate is made here by rcgen.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use writ::api::proto;
use writ::api::proto::task_service_client::TaskServiceClient;
use writ::clock::Clock as _;
use writ::config::{ServiceConfig, ServiceRole};
use writ::tls::{CertificateMatch, TlsConfig};

use crate::certs::{Leaf, TestCa};
use crate::harness::{self, Harness, authed, issue_request};

const WORKFLOW_SPIFFE: &str = "spiffe://writ.test/ns/ci/sa/workflow-engine";

fn tls_config(dir: &Path, ca_pem: &str, leaf: &Leaf, client_ca: bool) -> TlsConfig {
    let (cert_file, key_file) = leaf.write(dir, "server");
    let client_ca_file = client_ca.then(|| {
        let path = dir.join("clients-ca.crt");
        std::fs::write(&path, ca_pem).unwrap();
        path
    });
    TlsConfig {
        cert_file,
        key_file,
        client_ca_file,
        reload_interval: Duration::from_millis(100),
        require_bound_agent_tokens: false,
    }
}

/// Writ on TLS with `server` as its certificate; with `client_ca`, client
/// certificates of `ca` are asked for, and `ci-engine` is the workflow
/// engine known by its SPIFFE ID.
async fn start(ca: &TestCa, server: &Leaf, client_ca: bool, bound: bool) -> Harness {
    let (ca_pem, cert_pem, key_pem) = (ca.pem.clone(), server.cert_pem.clone(), server.key_pem.clone());
    harness::start_with(Box::new(move |config, dir| {
        let leaf = Leaf { cert_pem, key_pem, der: Vec::new() };
        config.server.plaintext = false;
        let mut tls = tls_config(dir, &ca_pem, &leaf, client_ca);
        tls.require_bound_agent_tokens = bound;
        config.server.tls = Some(tls);
        if client_ca {
            config.services.push(ServiceConfig {
                name: "ci-engine".into(),
                roles: vec![ServiceRole::Workflow],
                identity: None,
                certificate: Some(CertificateMatch { uri: Some(WORKFLOW_SPIFFE.into()), common_name: None }),
            });
        }
    }))
    .await
}

async fn tls_channel(
    addr: SocketAddr,
    ca_pem: &str,
    client: Option<&Leaf>,
    name: &str,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)).domain_name(name);
    if let Some(client) = client {
        tls = tls.identity(Identity::from_pem(&client.cert_pem, &client.key_pem));
    }
    Channel::from_shared(format!("https://127.0.0.1:{}", addr.port()))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The certificate a fresh TLS connection to `addr` is served.
async fn served_certificate(addr: SocketAddr, ca_pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].as_ref().to_vec()
}

async fn open_task(
    channel: Channel,
    token: Option<&str>,
    task_id: &str,
) -> Result<proto::Task, tonic::Status> {
    let request = proto::StartTaskRequest {
        task_id: task_id.into(),
        agent: "demo-agent".into(),
        context: Some(proto::TaskContext { environment: "dev".into(), ..Default::default() }),
        deadline: Some(writ::api::convert::timestamp(chrono::Utc::now() + chrono::Duration::hours(1))),
    };
    let request = match token {
        Some(token) => authed(token, request),
        None => tonic::Request::new(request),
    };
    Ok(TaskServiceClient::new(channel).start_task(request).await?.into_inner().task.unwrap())
}

/// Both listeners speak TLS; a new certificate written over the files is
/// served to new connections within the reload interval, while a
/// connection opened before goes on working; a change that does not load
/// (a key others can read) leaves the last good certificate in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_listeners_serve_tls_and_certificates_rotate_without_a_restart() {
    let ca = TestCa::new("writ test CA");
    let first = ca.server(&[]);
    let writ = start(&ca, &first, false, false).await;
    let grpc = writ.grpc_addr();

    let before = tls_channel(grpc, &ca.pem, None, "localhost").await.expect("a TLS connection");
    open_task(before.clone(), Some(&writ.workflow()), "tls-1").await.expect("a task opened over TLS");
    let request = issue_request("tls-1", "orders-read", &["orders:read"], 60);
    let issued = proto::credential_service_client::CredentialServiceClient::new(before.clone())
        .issue(authed(&writ.agent(), request))
        .await
        .expect("issued over TLS");
    assert_eq!(issued.into_inner().credentials.len(), 1);
    assert_eq!(served_certificate(grpc, &ca.pem).await, first.der);

    // The HTTP listener: JWKS over https, trusted through the same CA.
    let http = writ.running().http_addr;
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .resolve("localhost", http)
        .build()
        .unwrap();
    let jwks = client
        .get(format!("https://localhost:{}/providers/tokens/jwks.json", http.port()))
        .send()
        .await
        .expect("JWKS over https");
    assert_eq!(jwks.status(), 200);
    let plain = reqwest::get(format!("http://127.0.0.1:{}/providers/tokens/jwks.json", http.port())).await;
    assert!(plain.is_err(), "plain HTTP gets no answer from a TLS listener: {plain:?}");

    // Rotation: the files are replaced; new connections get the new one.
    let second = ca.server(&[]);
    let dir = writ.config.server.tls.as_ref().unwrap().cert_file.parent().unwrap().to_path_buf();
    second.write(&dir, "server");
    let mut served = Vec::new();
    for _ in 0..100 {
        served = served_certificate(grpc, &ca.pem).await;
        if served == second.der {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(served, second.der, "the rotated certificate is served within 5 s");
    open_task(before.clone(), Some(&writ.workflow()), "tls-2").await.expect("the connection opened before");
    let after = tls_channel(grpc, &ca.pem, None, "localhost").await.expect("a connection after");
    open_task(after, Some(&writ.workflow()), "tls-3").await.unwrap();

    // A change that does not load: the last good certificate stays.
    let third = ca.server(&[]);
    third.write(&dir, "server");
    crate::certs::replace(&dir.join("server.key"), third.key_pem.as_bytes(), 0o644);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(served_certificate(grpc, &ca.pem).await, second.der, "a key others can read is not taken");
    writ.stop().await;
}

/// A plaintext client, a client that trusts another CA, one that expects
/// another name, and one that never completes its handshake each fail
/// with a reason, and the listener goes on serving everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_clients_fail_clearly_and_the_listener_keeps_serving() {
    let ca = TestCa::new("writ test CA");
    let writ = start(&ca, &ca.server(&[]), false, false).await;
    let grpc = writ.grpc_addr();

    // Holds a connection open without a handshake: nobody waits on it.
    let _silent = tokio::net::TcpStream::connect(grpc).await.unwrap();

    let plaintext = Channel::from_shared(format!("http://{grpc}")).unwrap().connect().await;
    let refused = match plaintext {
        Err(error) => chain(&error),
        Ok(channel) => open_task(channel, Some(&writ.workflow()), "plain").await.unwrap_err().to_string(),
    };
    assert!(!refused.is_empty(), "a plaintext client is refused");

    let other = TestCa::new("another CA");
    let error = tls_channel(grpc, &other.pem, None, "localhost").await.unwrap_err();
    let text = chain(&error);
    assert!(text.contains("UnknownIssuer") || text.contains("unknown issuer"), "{text}");

    let error = tls_channel(grpc, &ca.pem, None, "writ.elsewhere.example").await.unwrap_err();
    let text = chain(&error);
    assert!(text.contains("NotValidForName") || text.contains("not valid for name"), "{text}");

    let good = tls_channel(grpc, &ca.pem, None, "localhost").await.expect("still serving");
    open_task(good, Some(&writ.workflow()), "after-bad-clients").await.expect("still serving");
    writ.stop().await;
}

/// mTLS: a service is known by its certificate's SPIFFE ID and needs no
/// token; an unknown certificate is refused by name; a certificate of
/// another CA, or an expired one, fails the handshake; agents still need
/// their token, and a token bound to a certificate works only with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_authenticate_by_certificate_and_bound_tokens_need_theirs() {
    let ca = TestCa::new("writ test CA");
    let writ = start(&ca, &ca.server(&[]), true, false).await;
    let grpc = writ.grpc_addr();

    let engine = ca.client(WORKFLOW_SPIFFE, "workflow-engine");
    let channel = tls_channel(grpc, &ca.pem, Some(&engine), "localhost").await.unwrap();
    let task = open_task(channel.clone(), None, "mtls-1").await.expect("the engine by its certificate alone");
    assert_eq!(task.task_id, "mtls-1");
    let status = proto::admin_service_client::AdminServiceClient::new(channel.clone())
        .list_leases(tonic::Request::new(proto::ListLeasesRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("ci-engine") && status.message().contains("operator"), "{status:?}");

    let stranger = ca.client("spiffe://writ.test/ns/x/sa/stranger", "stranger");
    let channel = tls_channel(grpc, &ca.pem, Some(&stranger), "localhost").await.unwrap();
    let status = open_task(channel, None, "mtls-2").await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("stranger") && status.message().contains("not bound"), "{status:?}");

    // Refused in the handshake: the server says why in its log; the
    // client's first call fails.
    for (what, leaf) in [
        ("another CA's", TestCa::new("another CA").client(WORKFLOW_SPIFFE, "workflow-engine")),
        ("an expired", ca.expired_client(WORKFLOW_SPIFFE, "workflow-engine")),
    ] {
        let refused = match tls_channel(grpc, &ca.pem, Some(&leaf), "localhost").await {
            Err(error) => chain(&error),
            Ok(channel) => open_task(channel, None, "mtls-3").await.unwrap_err().to_string(),
        };
        assert!(!refused.is_empty(), "{what} certificate is refused");
    }

    // An agent token bound to the engine's certificate (RFC 8705).
    let thumbprint = writ::tls::peer::thumbprint(&rustls_pki_types::CertificateDer::from(engine.der.clone()));
    let bound = writ
        .issuer
        .mint_with(
            writ::dev::AGENT_SUBJECT,
            "writ",
            Duration::from_secs(600),
            writ.clock.now(),
            serde_json::json!({ "cnf": { "x5t#S256": thumbprint } }),
        )
        .unwrap();
    let engine_channel = tls_channel(grpc, &ca.pem, Some(&engine), "localhost").await.unwrap();
    open_task(engine_channel, None, "bound-1").await.unwrap();
    let issue = |channel: Channel, token: String| async move {
        let request = issue_request("bound-1", "orders-read", &["orders:read"], 60);
        proto::credential_service_client::CredentialServiceClient::new(channel)
            .issue(authed(&token, request))
            .await
    };
    let with_cert = tls_channel(grpc, &ca.pem, Some(&engine), "localhost").await.unwrap();
    issue(with_cert, bound.clone()).await.expect("a bound token over its certificate");
    let other_cert = tls_channel(grpc, &ca.pem, Some(&stranger), "localhost").await.unwrap();
    let status = issue(other_cert, bound.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("another client certificate"), "{status:?}");
    let no_cert = tls_channel(grpc, &ca.pem, None, "localhost").await.unwrap();
    let status = issue(no_cert.clone(), bound.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("presented none"), "{status:?}");
    issue(no_cert, writ.agent()).await.expect("unbound tokens are accepted unless required");

    // The RFC 8693 front door checks the binding the same way, with the
    // client certificate of its HTTPS connection.
    let http = writ.running().http_addr;
    let oauth = |client: Option<&Leaf>| {
        let mut builder = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
            .resolve("localhost", http);
        if let Some(client) = client {
            let pem = format!("{}{}", client.cert_pem, client.key_pem);
            builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
        }
        builder.build().unwrap()
    };
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
        ("subject_token", bound.as_str()),
        ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
        ("audience", "tokens/orders-read"),
        ("scope", "orders:read"),
        ("writ_task_id", "bound-1"),
        ("writ_tool", "orders.lookup"),
    ];
    let url = format!("https://localhost:{}/oauth2/token", http.port());
    let answer = oauth(Some(&engine)).post(&url).form(&form).send().await.unwrap();
    assert_eq!(answer.status(), 200, "{:?}", answer.text().await);
    let answer = oauth(None).post(&url).form(&form).send().await.unwrap();
    assert_eq!(answer.status(), 400);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert!(body["error_description"].as_str().unwrap().contains("presented none"), "{body}");
    writ.stop().await;

    // Required: an unbound agent token is refused.
    let writ = start(&ca, &ca.server(&[]), true, true).await;
    let channel = tls_channel(writ.grpc_addr(), &ca.pem, Some(&engine), "localhost").await.unwrap();
    open_task(channel.clone(), None, "bound-2").await.unwrap();
    let request = issue_request("bound-2", "orders-read", &["orders:read"], 60);
    let status = proto::credential_service_client::CredentialServiceClient::new(channel)
        .issue(authed(&writ.agent(), request))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("must be bound"), "{status:?}");
    writ.stop().await;
}

/// Files that cannot serve are refused at start, naming the file and what
/// to do; so is a configuration with neither TLS nor `plaintext`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_files_are_refused_at_start_with_what_to_do() {
    let ca = TestCa::new("writ test CA");
    let dir = tempfile::tempdir().unwrap();
    let options = writ::dev::DevOptions {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        issuer_listen: "127.0.0.1:1".parse().unwrap(),
    };
    let base = writ::dev::prepare(&options).unwrap();
    let start_with = |tls: TlsConfig| {
        let mut config = base.clone();
        config.server.plaintext = false;
        config.server.tls = Some(tls);
        async move {
            let clock: Arc<dyn writ::clock::Clock> = Arc::new(writ::clock::SystemClock);
            match writ::server::App::build(&config, clock).await {
                Ok(_) => panic!("started"),
                Err(error) => format!("{error:#}"),
            }
        }
    };

    let leaf = ca.server(&[]);
    let good = tls_config(dir.path(), &ca.pem, &leaf, false);
    crate::certs::replace(&good.key_file, leaf.key_pem.as_bytes(), 0o644);
    let error = start_with(good.clone()).await;
    assert!(error.contains("server.key") && error.contains("chmod 600") && error.contains("644"), "{error}");
    // Readable by the group: only a root-owned key (a mounted secret).
    std::fs::set_permissions(&good.key_file, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&good.key_file).unwrap());
    let loaded = writ::tls::ServerTls::load(&good, chrono::Utc::now());
    assert_eq!(loaded.is_ok(), owner == 0, "a 0640 key is taken only from root: {loaded:?}");

    let expired = tls_config(dir.path(), &ca.pem, &ca.expired_server(), false);
    let error = start_with(expired).await;
    assert!(error.contains("server.crt") && error.contains("expired"), "{error}");

    let mismatched = tls_config(dir.path(), &ca.pem, &ca.server(&[]), false);
    crate::certs::replace(&mismatched.key_file, ca.server(&[]).key_pem.as_bytes(), 0o600);
    let error = start_with(mismatched).await;
    assert!(error.contains("TLS"), "a key of another certificate: {error}");

    let missing = TlsConfig { cert_file: dir.path().join("nowhere.crt"), ..good.clone() };
    let error = start_with(missing).await;
    assert!(error.contains("nowhere.crt"), "{error}");

    std::fs::write(dir.path().join("garbage.crt"), "not a certificate").unwrap();
    let garbage = TlsConfig { cert_file: dir.path().join("garbage.crt"), ..good };
    let error = start_with(garbage).await;
    assert!(error.contains("garbage.crt") && error.contains("PEM"), "{error}");

    let mut neither = base.clone();
    neither.server.plaintext = false;
    let error = neither.validate().unwrap_err().to_string();
    assert!(error.contains("[server.tls]") && error.contains("plaintext"), "{error}");
}

/// The CLI speaks TLS to an `https://` endpoint: trusting `--ca` (or
/// `WRIT_CA`), refusing a server its CA did not sign, and, pointed at a TLS
/// port with `http://`, saying what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_speaks_tls_with_its_ca() {
    let ca = TestCa::new("writ test CA");
    let writ = start(&ca, &ca.server(&[]), false, false).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write(dir.path(), "ca.crt");
    let port = writ.grpc_addr().port();
    let cli = |endpoint: String, ca: Option<&Path>, task: &str| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_writ"));
        command
            .args(["task", "start", task, "--agent", "demo-agent", "--environment", "dev"])
            .args(["--deadline-in", "10m", "--endpoint", &endpoint])
            .env("WRIT_TOKEN", writ.workflow())
            .env_remove("WRIT_CA");
        if let Some(ca) = ca {
            command.env("WRIT_CA", ca);
        }
        // Not blocking a worker: this Writ serves on the test's runtime.
        async move { command.output().await.unwrap() }
    };
    let https = format!("https://localhost:{port}");
    let opened = cli(https.clone(), Some(&ca_file), "cli-tls-1").await;
    assert!(opened.status.success(), "{}", String::from_utf8_lossy(&opened.stderr));
    assert!(String::from_utf8_lossy(&opened.stdout).contains("cli-tls-1"));

    let untrusted = cli(https, None, "cli-tls-2").await;
    let said = String::from_utf8_lossy(&untrusted.stderr);
    assert!(!untrusted.status.success() && said.contains("UnknownIssuer"), "{said}");

    let plaintext = cli(format!("http://localhost:{port}"), None, "cli-tls-3").await;
    let said = String::from_utf8_lossy(&plaintext.stderr);
    assert!(!plaintext.status.success() && said.contains("https://"), "{said}");
    writ.stop().await;
}
