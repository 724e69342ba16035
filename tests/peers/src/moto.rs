//! A `moto_server` of the test's own, on a free port, stopped when dropped:
//! AWS STS and IAM for the `aws-sts` provider's tests and Writ's.
//!
//! The command is `moto_server` from `PATH` (`pip install -r
//! providers/aws-sts/tests/peer/requirements.txt`), or whatever
//! `WRIT_TEST_MOTO_SERVER` names. moto takes any key until told to enforce
//! IAM ([`Moto::enforce_iam`]). It records every request it receives in a
//! file of the test's own (`MOTO_ENABLE_RECORDING`), which is how a test
//! sees what Writ sent ([`Moto::received`]): moto keeps neither session
//! tags nor `SourceIdentity` in its state.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_sts::config::{BehaviorVersion, Credentials, Region, SharedHttpClient};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::process::{self, Running};

/// moto's default account.
pub const ACCOUNT: &str = "123456789012";
/// The region every client of [`Moto`] is made for.
pub const REGION: &str = "eu-west-1";

/// What to do when `moto_server` is missing.
const INSTALL: &str = "install it with `python3 -m pip install -r providers/aws-sts/tests/peer/requirements.txt` \
                       (or name the command in WRIT_TEST_MOTO_SERVER)";

/// A running `moto_server`.
pub struct Moto {
    pub port: u16,
    process: Running,
    /// Where moto appends each request it receives, one JSON object a line.
    recording: PathBuf,
    /// moto's own output, shown when it does not start.
    log: PathBuf,
}

impl Moto {
    /// Starts moto and waits (at most 30 s) until it answers.
    pub async fn start() -> Self {
        let port = free_port();
        let id = Uuid::now_v7().simple();
        let recording = std::env::temp_dir().join(format!("writ-moto-{id}.jsonl"));
        let log = std::env::temp_dir().join(format!("writ-moto-{id}.log"));
        let program = std::env::var("WRIT_TEST_MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let log_file = std::fs::File::create(&log).expect("moto's log file is created");
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_ENABLE_RECORDING", "true")
            .env("MOTO_RECORDER_FILEPATH", &recording)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("moto's log file is shared by stdout and stderr"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {program} ({error}); {INSTALL}"));
        let moto = Self { port, process: Running::new(child), recording, log };
        let deadline = Instant::now() + process::STARTUP;
        while Instant::now() < deadline {
            if let Ok((200, _)) = moto.http("GET", "/moto-api/data.json", "").await {
                return moto;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let output = std::fs::read_to_string(&moto.log).unwrap_or_default();
        panic!("moto did not answer on port {port} within {:?}; {INSTALL}\n{output}", process::STARTUP);
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops moto now; what listened on its port is gone.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// One plain HTTP/1.0 request to moto's own API; its status and body.
    pub async fn http(&self, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await?;
        let request = format!(
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\n\r\n{body}",
            self.port,
            body.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let status = head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
        Ok((status, body.to_string()))
    }

    /// moto's state: every model instance with its JSON-able attributes.
    pub async fn state(&self) -> Value {
        let (status, body) = self.http("GET", "/moto-api/data.json", "").await.expect("moto answers");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("moto's state is JSON")
    }

    /// From now on, moto checks every AWS request's signature and the
    /// caller's IAM policies.
    pub async fn enforce_iam(&self) {
        let (status, body) = self.http("POST", "/moto-api/reset-auth", "0").await.expect("moto answers");
        assert_eq!(status, 200, "{body}");
    }

    /// The parameters of every `action` request moto received, in order.
    pub fn received(&self, action: &str) -> Vec<BTreeMap<String, String>> {
        let text = std::fs::read_to_string(&self.recording).unwrap_or_default();
        text.lines()
            .map(|line| serde_json::from_str::<Value>(line).expect("moto records JSON lines"))
            .filter_map(|entry| {
                let body = entry["body"].as_str().unwrap_or_default();
                let body = if entry["body_encoded"] == true {
                    let bytes = STANDARD.decode(body).expect("an encoded body is base64");
                    String::from_utf8(bytes).expect("a query-protocol body is text")
                } else {
                    body.to_string()
                };
                let form = parse_form(&body);
                (form.get("Action").map(String::as_str) == Some(action)).then_some(form)
            })
            .collect()
    }

    /// An IAM client of moto, signing with `credentials`.
    pub fn iam(&self, credentials: Credentials) -> aws_sdk_iam::Client {
        let config = aws_sdk_iam::Config::builder()
            .behavior_version(aws_sdk_iam::config::BehaviorVersion::v2026_01_12())
            .region(aws_sdk_iam::config::Region::new(REGION))
            .endpoint_url(self.url())
            .credentials_provider(credentials)
            .http_client(http_client())
            .build();
        aws_sdk_iam::Client::from_conf(config)
    }

    /// An STS client of moto, signing with `credentials`.
    pub fn sts(&self, credentials: Credentials) -> aws_sdk_sts::Client {
        let config = aws_sdk_sts::Config::builder()
            .behavior_version(BehaviorVersion::v2026_01_12())
            .region(Region::new(REGION))
            .endpoint_url(self.url())
            .credentials_provider(credentials)
            .http_client(http_client())
            .build();
        aws_sdk_sts::Client::from_conf(config)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.recording);
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A local port nothing listens on now (moto cannot be asked to choose
/// one). Another process may take it before moto binds it; moto then exits
/// and the start panics with its log.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free local port");
    listener.local_addr().expect("the free port's address").port()
}

/// Credentials for setting moto up: any key works while it does not
/// enforce IAM.
pub fn setup_credentials() -> Credentials {
    Credentials::new("AKIASETUPSETUPSETUP0", "setup-secret", None, None, "setup")
}

/// The AWS SDK's HTTP client on rustls with ring, as Writ builds it (no
/// aws-lc).
fn http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(CryptoMode::Ring)).build_https()
}

/// `application/x-www-form-urlencoded`, as the AWS query protocol sends it.
fn parse_form(body: &str) -> BTreeMap<String, String> {
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (url_decode(key), url_decode(value)))
        .collect()
}

/// Percent-decoding, with `+` for a space.
pub fn url_decode(text: &str) -> String {
    let mut bytes = Vec::new();
    let mut input = text.bytes();
    while let Some(byte) = input.next() {
        match byte {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hex: String = input.by_ref().take(2).map(char::from).collect();
                bytes.push(u8::from_str_radix(&hex, 16).expect("a percent escape is two hex digits"));
            }
            other => bytes.push(other),
        }
    }
    String::from_utf8(bytes).expect("a decoded form field is UTF-8")
}
