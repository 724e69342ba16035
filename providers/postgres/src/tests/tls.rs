//! `tls = "verify-full"` against a PostgreSQL server of the test's own that
//! accepts TCP logins over TLS only, with a certificate made here: minting
//! and revoking work over TLS; a server whose certificate is of another CA,
//! or names another host, is refused and nothing is minted.

use tokio_postgres::NoTls;
use writ_test_peers::postgres_tls::PostgresTlsServer;

use super::*;
use crate::PostgresTls;

#[path = "../../../../tests/support/certs.rs"]
mod certs;

async fn socket(server: &PostgresTlsServer) -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(&server.socket_settings("postgres"), NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

fn tls_config(server: &PostgresTlsServer, host: &str, ca_file: &std::path::Path) -> PostgresConfig {
    let admin = format!("host={host} port={} user=postgres dbname=postgres", server.port());
    PostgresConfig {
        tls: PostgresTls::VerifyFull,
        tls_ca_file: Some(ca_file.into()),
        ..harness::config(&admin, "postgres")
    }
}

#[tokio::test]
async fn verify_full_mints_over_tls_and_refuses_a_wrong_ca_or_host_name() {
    let ca = certs::TestCa::new("postgres test CA");
    let leaf = ca.server(&["localhost"]);
    let server = PostgresTlsServer::start(&leaf.cert_pem, &leaf.key_pem);
    let admin = socket(&server).await;
    admin.batch_execute("CREATE SCHEMA app; CREATE TABLE app.orders (id int)").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write(dir.path(), "ca.crt");

    let provider = PostgresProvider::new(tls_config(&server, "localhost", &ca_file)).unwrap();
    let asked = request(&[], Duration::from_secs(600));
    let minted = provider.mint(&asked).await.unwrap_or_else(|error| panic!("{error}\n{}", server.log()));
    let (username, _, _) = password_of(&minted.credential);
    let exists = |name: String| {
        let admin = &admin;
        async move {
            admin.query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name]).await.unwrap().is_some()
        }
    };
    assert!(exists(username.to_owned()).await, "the login was made");
    // Writ's admin sessions came over TLS (plaintext TCP is rejected by
    // this server's pg_hba.conf anyway).
    let encrypted: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
             WHERE ssl AND application_name = 'writ'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted >= 1, "an admin session over TLS");
    provider.revoke(&revocation(&asked, minted.handle)).await.unwrap();
    assert!(!exists(username.to_owned()).await, "revoked over TLS");

    // Another CA's certificate, or the right one for another name: refused.
    let other = certs::TestCa::new("another CA");
    let other_ca = other.write(dir.path(), "other.crt");
    for (what, config) in [
        ("another CA", tls_config(&server, "localhost", &other_ca)),
        ("another name", tls_config(&server, "127.0.0.1", &ca_file)),
    ] {
        let provider = PostgresProvider::new(config).unwrap();
        let error = provider.mint(&request(&[], Duration::from_secs(600))).await.unwrap_err();
        assert!(matches!(error, ProviderError::Unavailable(_)), "{what}: {error:?}");
        assert!(error.to_string().contains("certificate"), "{what}: {error}");
    }
    let logins: i64 = admin
        .query_one("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'writ%' AND rolcanlogin", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(logins, 0, "nothing minted by the refused providers");
}

#[test]
fn tls_settings_that_would_not_verify_are_refused() {
    let admin = "host=db.example port=5432 user=writ dbname=app";
    let no_ca = PostgresConfig { tls: PostgresTls::VerifyFull, ..harness::config(admin, "app") };
    assert!(no_ca.validate().unwrap_err().contains("tls_ca_file"));
    let unused_ca = PostgresConfig { tls_ca_file: Some("ca.pem".into()), ..harness::config(admin, "app") };
    assert!(unused_ca.validate().unwrap_err().contains("verify-full"));
    let require = harness::config(&format!("{admin} sslmode=require"), "app");
    assert!(require.validate().unwrap_err().contains("would not verify"));
    let socket = PostgresConfig {
        tls: PostgresTls::VerifyFull,
        tls_ca_file: Some("ca.pem".into()),
        ..harness::config("host=/var/run/postgresql user=writ dbname=app", "app")
    };
    assert!(socket.validate().unwrap_err().contains("host name"));
}
