//! The credentials Writ hands out. Secrets are [`SecretString`]s: they are
//! zeroed when dropped and never shown by `Debug`; read them with
//! [`ExposeSecret`](secrecy::ExposeSecret) where they are used.

use std::collections::BTreeMap;

use secrecy::SecretString;

use crate::error::Error;
use crate::proto;

/// One issued credential, by kind.
#[derive(Clone, Debug)]
pub enum Credential {
    /// A token to send as `authorization: <token_type> <token>`.
    Bearer(BearerToken),
    /// A login: a database role with its password, and where to connect.
    Password(Password),
    /// An AWS STS session.
    Aws(AwsSession),
}

/// A bearer token (the `jwt` and `oauth2` providers).
#[derive(Clone, Debug)]
pub struct BearerToken {
    /// The token.
    pub token: SecretString,
    /// How to present it, usually `Bearer`.
    pub token_type: String,
}

/// A login (the `postgres` provider: a role made for this lease).
#[derive(Clone, Debug)]
pub struct Password {
    /// The login's name.
    pub username: String,
    /// Its password.
    pub password: SecretString,
    /// Where to connect, as libpq keywords: `host`, `port`, `dbname`, and
    /// whatever else the provider's configuration adds.
    pub connection: BTreeMap<String, String>,
}

/// Temporary AWS credentials (the `aws-sts` provider).
#[derive(Clone, Debug)]
pub struct AwsSession {
    /// The access key id (an identifier, not a secret).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: SecretString,
    /// The session token, sent with every request.
    pub session_token: SecretString,
}

impl Credential {
    /// What kind of credential it is, in words, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Bearer(_) => "bearer token",
            Self::Password(_) => "password",
            Self::Aws(_) => "AWS session",
        }
    }
}

impl TryFrom<proto::Credential> for Credential {
    type Error = Error;

    fn try_from(credential: proto::Credential) -> Result<Self, Error> {
        use proto::credential::Kind;
        match credential.kind {
            Some(Kind::BearerToken(token)) => Ok(Self::Bearer(BearerToken {
                token: SecretString::from(token.token),
                token_type: token.token_type,
            })),
            Some(Kind::Password(password)) => Ok(Self::Password(Password {
                username: password.username,
                password: SecretString::from(password.password),
                connection: password.connection.into_iter().collect(),
            })),
            Some(Kind::AwsSession(session)) => Ok(Self::Aws(AwsSession {
                access_key_id: session.access_key_id,
                secret_access_key: SecretString::from(session.secret_access_key),
                session_token: SecretString::from(session.session_token),
            })),
            None => Err(Error::Protocol(
                "Writ sent a credential of a kind this client does not know; update writ-client".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;

    #[test]
    fn debug_never_shows_a_secret() {
        let kinds = [
            proto::credential::Kind::BearerToken(proto::BearerToken {
                token: "tok-s3cret".into(),
                token_type: "Bearer".into(),
            }),
            proto::credential::Kind::Password(proto::Password {
                username: "writ_1".into(),
                password: "pw-s3cret".into(),
                connection: [("host".to_string(), "db".to_string())].into(),
            }),
            proto::credential::Kind::AwsSession(proto::AwsSession {
                access_key_id: "ASIAEXAMPLE".into(),
                secret_access_key: "key-s3cret".into(),
                session_token: "session-s3cret".into(),
            }),
        ];
        for kind in kinds {
            let message = proto::Credential { kind: Some(kind) };
            let generated = format!(
                "{message:?} {:?}",
                proto::IssuedCredential { credential: Some(message.clone()), ..Default::default() }
            );
            let credential = Credential::try_from(message).unwrap();
            let ours = format!("{credential:?} {credential:#?}");
            for text in [generated, ours] {
                assert!(!text.contains("s3cret"), "{text}");
            }
        }
    }

    #[test]
    fn converts_each_kind() {
        let message = proto::Credential {
            kind: Some(proto::credential::Kind::AwsSession(proto::AwsSession {
                access_key_id: "ASIA1".into(),
                secret_access_key: "secret".into(),
                session_token: "session".into(),
            })),
        };
        let Credential::Aws(session) = Credential::try_from(message).unwrap() else { panic!("not AWS") };
        assert_eq!(session.access_key_id, "ASIA1");
        assert_eq!(session.secret_access_key.expose_secret(), "secret");
        assert!(Credential::try_from(proto::Credential { kind: None }).is_err());
    }
}
