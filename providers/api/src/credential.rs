//! Credential material. Secrets are held in [`SecretString`] so that they
//! print as redacted in `Debug` output and are zeroed when dropped.

use std::collections::BTreeMap;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// A credential handed to an agent.
#[derive(Clone)]
pub enum Credential {
    /// An access token for an `Authorization` header.
    BearerToken { token: SecretString, token_type: String },
    /// A login for a database or similar service.
    Password { username: String, password: SecretString, connection: BTreeMap<String, String> },
    /// Temporary AWS credentials.
    AwsSession { access_key_id: String, secret_access_key: SecretString, session_token: SecretString },
}

impl Credential {
    /// The secret values, for the one place that must hand them out (the
    /// gRPC response) and for tests that prove they never leak elsewhere.
    pub fn secrets(&self) -> Vec<&str> {
        match self {
            Self::BearerToken { token, .. } => vec![token.expose_secret()],
            Self::Password { password, .. } => vec![password.expose_secret()],
            Self::AwsSession { secret_access_key, session_token, .. } => {
                vec![secret_access_key.expose_secret(), session_token.expose_secret()]
            }
        }
    }

    /// A short name of the credential's type.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BearerToken { .. } => "bearer_token",
            Self::Password { .. } => "password",
            Self::AwsSession { .. } => "aws_session",
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BearerToken { token_type, .. } => f
                .debug_struct("BearerToken")
                .field("token", &"<redacted>")
                .field("token_type", token_type)
                .finish(),
            Self::Password { username, connection, .. } => f
                .debug_struct("Password")
                .field("username", username)
                .field("password", &"<redacted>")
                .field("connection", connection)
                .finish(),
            Self::AwsSession { access_key_id, .. } => f
                .debug_struct("AwsSession")
                .field("access_key_id", access_key_id)
                .field("secret_access_key", &"<redacted>")
                .field("session_token", &"<redacted>")
                .finish(),
        }
    }
}

/// What a provider needs to revoke a credential later. It may be secret (a
/// refresh token, a session token), so Writ stores it only encrypted and it
/// prints as redacted.
#[derive(Clone)]
pub struct RevocationHandle(SecretString);

impl RevocationHandle {
    pub fn new(material: impl Into<String>) -> Self {
        Self(SecretString::from(material.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl PartialEq for RevocationHandle {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq(self.expose().as_bytes(), other.expose().as_bytes())
    }
}

impl Eq for RevocationHandle {}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl fmt::Debug for RevocationHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RevocationHandle(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_secrets() {
        let credentials = [
            Credential::BearerToken { token: "tok-s3cret".into(), token_type: "Bearer".into() },
            Credential::Password {
                username: "writ_1".into(),
                password: "pw-s3cret".into(),
                connection: BTreeMap::new(),
            },
            Credential::AwsSession {
                access_key_id: "ASIA".into(),
                secret_access_key: "sak-s3cret".into(),
                session_token: "st-s3cret".into(),
            },
        ];
        for credential in credentials {
            let printed = format!("{credential:?}");
            assert!(!printed.contains("s3cret"), "{printed}");
            assert!(!credential.secrets().is_empty());
        }
        let handle = RevocationHandle::new("h-s3cret");
        assert!(!format!("{handle:?}").contains("s3cret"));
    }
}
