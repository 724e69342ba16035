//! A `moto_server` of the test's own, on a free port, stopped when dropped.
//!
//! The command is `moto_server` from `PATH` (install `requirements.txt`
//! next to this file), or whatever `WRIT_TEST_MOTO_SERVER` names. moto
//! records every request it receives in a file of the test's own
//! (`MOTO_ENABLE_RECORDING`), which is how the tests see what Writ sent:
//! moto keeps neither session tags nor `SourceIdentity` in its state.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_sdk_sts::config::{BehaviorVersion, Credentials, Region, SharedHttpClient};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

/// moto's default account.
pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "eu-west-1";

pub struct Moto {
    child: Option<Child>,
    pub port: u16,
    /// Where moto appends each request it receives, one JSON object a line.
    recording: PathBuf,
    log: PathBuf,
}

impl Moto {
    /// Starts moto and waits until it answers.
    pub async fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let id = Uuid::now_v7().simple();
        let recording = std::env::temp_dir().join(format!("writ-moto-{id}.jsonl"));
        let log = std::env::temp_dir().join(format!("writ-moto-{id}.log"));
        let program = std::env::var("WRIT_TEST_MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_ENABLE_RECORDING", "true")
            .env("MOTO_RECORDER_FILEPATH", &recording)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {program} (pip install -r tests/peer/requirements.txt): {e}")
            });
        let moto = Self { child: Some(child), port, recording, log };
        for _ in 0..300 {
            if let Ok((200, _)) = moto.http("GET", "/moto-api/data.json", "").await {
                return moto;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "moto did not answer on port {port}: {}",
            std::fs::read_to_string(&moto.log).unwrap_or_default()
        );
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops moto now; what listened on its port is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// One plain HTTP/1.0 request to moto's own API.
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
        let (status, body) = self.http("GET", "/moto-api/data.json", "").await.unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// From now on, moto checks every AWS request's signature and the
    /// caller's IAM policies.
    pub async fn enforce_iam(&self) {
        let (status, body) = self.http("POST", "/moto-api/reset-auth", "0").await.unwrap();
        assert_eq!(status, 200, "{body}");
    }

    /// The parameters of every `action` request moto received, in order.
    pub fn received(&self, action: &str) -> Vec<BTreeMap<String, String>> {
        let text = std::fs::read_to_string(&self.recording).unwrap_or_default();
        text.lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .filter_map(|entry| {
                let body = entry["body"].as_str().unwrap_or_default();
                let body = if entry["body_encoded"] == true {
                    String::from_utf8(STANDARD.decode(body).unwrap()).unwrap()
                } else {
                    body.to_string()
                };
                let form = parse_form(&body);
                (form.get("Action").map(String::as_str) == Some(action)).then_some(form)
            })
            .collect()
    }

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

/// Any key works while moto does not enforce IAM.
pub fn setup_credentials() -> Credentials {
    Credentials::new("AKIASETUPSETUPSETUP0", "setup-secret", None, None, "test")
}

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
                bytes.push(u8::from_str_radix(&hex, 16).unwrap());
            }
            other => bytes.push(other),
        }
    }
    String::from_utf8(bytes).unwrap()
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.recording);
        let _ = std::fs::remove_file(&self.log);
    }
}
