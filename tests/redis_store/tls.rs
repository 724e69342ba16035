//! `rediss://`: the store over TLS to a `redis-server` started with TLS by
//! the test, verifying its certificate against a configured CA and
//! presenting a client certificate where Redis asks for one; a wrong CA or
//! a missing client certificate fails `Unavailable`, saying why.

use super::*;
use crate::certs::TestCa;

struct TlsRedis {
    server: RedisServer,
    port: u16,
    ca: TestCa,
    dir: tempfile::TempDir,
}

fn start(client_certificates: bool) -> TlsRedis {
    let ca = TestCa::new("redis test CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.server(&[]).write(dir.path(), "redis");
    let ca_file = ca.write(dir.path(), "ca.crt");
    let (server, port) = RedisServer::start_tls(&cert, &key, &ca_file, client_certificates);
    TlsRedis { server, port, ca, dir }
}

impl TlsRedis {
    fn config(&self, namespace: &str, client: bool) -> RedisConfig {
        let (client_cert_file, client_key_file) = if client {
            let (cert, key) =
                self.ca.client("spiffe://writ.test/writ", "writ").write(self.dir.path(), "writ");
            (Some(cert), Some(key))
        } else {
            (None, None)
        };
        RedisConfig {
            ca_file: Some(self.dir.path().join("ca.crt")),
            client_cert_file,
            client_key_file,
            // Room for the handshake on a loaded machine, so that a refusal
            // is reported as what it is rather than as a timeout.
            connect_timeout: Duration::from_secs(3),
            operation_timeout: Duration::from_secs(5),
            ..config(format!("rediss://127.0.0.1:{}", self.port), namespace)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conforms_over_tls_with_a_client_certificate() {
    let redis = start(true);
    let count = AtomicUsize::new(0);
    conformance::run(|| {
        let config = redis.config(&format!("tls-{}", count.fetch_add(1, Ordering::Relaxed)), true);
        async move { store(&config).await }
    })
    .await;
    // Every namespace was written through the TLS port (the only one the
    // configuration names).
    let keys: u64 = redis.server.cli(&["dbsize"]).trim().parse().unwrap();
    assert!(keys > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_or_a_missing_client_certificate_is_refused_clearly() {
    let redis = start(true);
    let other = TestCa::new("another CA");
    let wrong_ca = RedisConfig {
        ca_file: Some(other.write(redis.dir.path(), "other-ca.crt")),
        ..redis.config("a", true)
    };
    match RedisStore::open(&wrong_ca).await {
        Err(StoreError::Unavailable(message)) => {
            assert!(
                message.to_lowercase().contains("certificate") || message.contains("UnknownIssuer"),
                "{message}"
            )
        }
        other => panic!("a Redis whose certificate is not of the CA is refused: {:?}", other.err()),
    }
    match RedisStore::open(&redis.config("b", false)).await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("Redis asks for a client certificate: {:?}", other.err()),
    }
    let plaintext = config(format!("redis://127.0.0.1:{}", redis.port), "c");
    assert!(RedisStore::open(&plaintext).await.is_err(), "plaintext to the TLS port");
    RedisStore::open(&redis.config("d", true)).await.expect("the right CA and certificate");

    // A client key others can read is refused before any connection.
    let loose = redis.config("e", true);
    crate::certs::replace(
        loose.client_key_file.as_ref().unwrap(),
        std::fs::read(loose.client_key_file.as_ref().unwrap()).unwrap().as_slice(),
        0o644,
    );
    match RedisStore::open(&loose).await {
        Err(StoreError::Unavailable(message)) => assert!(message.contains("chmod 600"), "{message}"),
        other => panic!("a readable client key is refused: {:?}", other.err()),
    }
}
