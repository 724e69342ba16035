//! Where each credential goes for the child: the environment variables its
//! tools read, or files in a private directory that those variables name.
//! Pure: `writ exec` applies the result.
//!
//! | credential | environment (default) | `--to-file DIR` |
//! |---|---|---|
//! | AWS session | `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` | `DIR/aws-credentials` (profile `default`), `AWS_SHARED_CREDENTIALS_FILE` |
//! | password (database login) | `PGUSER`, `PGPASSWORD`, `PGHOST`, `PGPORT`, `PGDATABASE`, … | `DIR/pgpass`, `PGPASSFILE`, and the same without `PGPASSWORD` |
//! | bearer token | `WRIT_TOKEN_<PROVIDER>_<ROLE>` | `DIR/<provider>_<role>.token`, `WRIT_TOKEN_<PROVIDER>_<ROLE>_FILE` |

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use secrecy::{ExposeSecret as _, SecretString};
use writ_client::Credential;

/// The AWS variables a session replaces: what the child inherited must not
/// mix with it (a profile would win over the keys in some SDKs, an old
/// expiry would make botocore refuse them).
const AWS_INHERITED: [&str; 7] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CREDENTIAL_EXPIRATION",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
];

/// libpq variables that say where and as whom to connect: those the login
/// does not set are removed, so that nothing inherited redirects it.
const PG_INHERITED: [&str; 8] =
    ["PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGPASSFILE", "PGSERVICE"];

/// A login's connection hints (libpq keywords) and their variables.
const PG_HINTS: [(&str, &str); 14] = [
    ("host", "PGHOST"),
    ("hostaddr", "PGHOSTADDR"),
    ("port", "PGPORT"),
    ("dbname", "PGDATABASE"),
    ("options", "PGOPTIONS"),
    ("application_name", "PGAPPNAME"),
    ("sslmode", "PGSSLMODE"),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("sslcert", "PGSSLCERT"),
    ("sslkey", "PGSSLKEY"),
    ("connect_timeout", "PGCONNECT_TIMEOUT"),
    ("target_session_attrs", "PGTARGETSESSIONATTRS"),
    ("channel_binding", "PGCHANNELBINDING"),
    ("gssencmode", "PGGSSENCMODE"),
];

/// What the child gets for its credentials.
#[derive(Default)]
pub(super) struct Placement {
    /// Variables to set, with the grant that set each (for conflicts).
    pub set: BTreeMap<String, (String, SecretString)>,
    /// Inherited variables to remove.
    pub remove: BTreeSet<String>,
    /// Files to write in the directory, by name.
    pub files: BTreeMap<String, SecretString>,
}

impl fmt::Debug for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Placement")
            .field("set", &self.set.keys().collect::<Vec<_>>())
            .field("remove", &self.remove)
            .field("files", &self.files.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A grant's name in variables and files: `tokens/orders-read` is
/// `TOKENS_ORDERS_READ`, every character but ASCII letters and digits
/// becoming `_`.
pub(super) fn label(provider: &str, role: &str) -> String {
    format!("{provider}_{role}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' })
        .collect()
}

/// Where the files go, if anywhere: the directory as the child sees it.
#[derive(Clone, Copy, Debug)]
pub(super) enum Mode<'a> {
    Environment,
    Files(&'a std::path::Path),
}

/// One credential's variables and files, for the grant `provider/role`.
pub(super) fn place_one(provider: &str, role: &str, credential: &Credential, mode: Mode<'_>) -> Placement {
    let grant = format!("{provider}/{role}");
    let mut placement = Placement::default();
    let mut set = |name: &str, value: &str| {
        placement.set.insert(name.to_string(), (grant.clone(), SecretString::from(value.to_string())));
    };
    match (credential, mode) {
        (Credential::Bearer(token), Mode::Environment) => {
            set(&format!("WRIT_TOKEN_{}", label(provider, role)), token.token.expose_secret());
        }
        (Credential::Bearer(token), Mode::Files(dir)) => {
            let name = format!("{}.token", label(provider, role).to_ascii_lowercase());
            set(&format!("WRIT_TOKEN_{}_FILE", label(provider, role)), &dir.join(&name).to_string_lossy());
            placement.files.insert(name, token.token.clone());
        }
        (Credential::Aws(session), Mode::Environment) => {
            set("AWS_ACCESS_KEY_ID", &session.access_key_id);
            set("AWS_SECRET_ACCESS_KEY", session.secret_access_key.expose_secret());
            set("AWS_SESSION_TOKEN", session.session_token.expose_secret());
        }
        (Credential::Aws(session), Mode::Files(dir)) => {
            let profile = format!(
                "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\naws_session_token = {}\n",
                session.access_key_id,
                session.secret_access_key.expose_secret(),
                session.session_token.expose_secret()
            );
            set("AWS_SHARED_CREDENTIALS_FILE", &dir.join("aws-credentials").to_string_lossy());
            placement.files.insert("aws-credentials".into(), SecretString::from(profile));
        }
        (Credential::Password(login), mode) => {
            set("PGUSER", &login.username);
            for (keyword, variable) in PG_HINTS {
                if let Some(value) = login.connection.get(keyword) {
                    set(variable, value);
                }
            }
            match mode {
                Mode::Environment => set("PGPASSWORD", login.password.expose_secret()),
                Mode::Files(dir) => {
                    // Any host, port and database, for this login only.
                    let line = format!(
                        "*:*:*:{}:{}\n",
                        pgpass_escape(&login.username),
                        pgpass_escape(login.password.expose_secret())
                    );
                    set("PGPASSFILE", &dir.join("pgpass").to_string_lossy());
                    placement.files.insert("pgpass".into(), SecretString::from(line));
                }
            }
        }
    }
    let inherited: &[&str] = match credential {
        Credential::Bearer(_) => &[],
        Credential::Aws(_) => &AWS_INHERITED,
        Credential::Password(_) => &PG_INHERITED,
    };
    placement.remove = inherited
        .iter()
        .filter(|name| !placement.set.contains_key(**name))
        .map(|name| name.to_string())
        .collect();
    placement
}

/// Every credential's variables and files together. Two grants that
/// would set one variable (two AWS sessions, two logins) are refused:
/// the child's environment can hold one of each.
pub(super) fn place_all<'a>(
    credentials: impl IntoIterator<Item = (&'a str, &'a str, &'a Credential)>,
    mode: Mode<'_>,
) -> Result<Placement, String> {
    let mut all = Placement::default();
    for (provider, role, credential) in credentials {
        let one = place_one(provider, role, credential, mode);
        for (name, (grant, value)) in one.set {
            if let Some((other, _)) = all.set.get(&name) {
                return Err(format!(
                    "{other} and {grant} would both set {name}: one `writ exec` gives the command one {} \
                     (ask for the other in a separate `writ exec`)",
                    credential.kind()
                ));
            }
            all.set.insert(name, (grant, value));
        }
        all.remove.extend(one.remove);
        all.files.extend(one.files);
    }
    let set = &all.set;
    all.remove.retain(|name| !set.contains_key(name));
    Ok(all)
}

/// A `.pgpass` field: `:` and `\` escaped with `\`.
fn pgpass_escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace(':', "\\:")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use writ_client::{AwsSession, BearerToken, Password};

    use super::*;

    fn secret(text: &str) -> SecretString {
        SecretString::from(text.to_string())
    }

    fn token() -> Credential {
        Credential::Bearer(BearerToken { token: secret("eyJ.tok"), token_type: "Bearer".into() })
    }

    fn aws() -> Credential {
        Credential::Aws(AwsSession {
            access_key_id: "ASIA1".into(),
            secret_access_key: secret("aws-secret"),
            session_token: secret("aws-session"),
        })
    }

    fn login() -> Credential {
        Credential::Password(Password {
            username: "writ_0193".into(),
            password: secret("pa:ss\\word"),
            connection: [
                ("host", "db.internal"),
                ("port", "5432"),
                ("dbname", "analytics"),
                ("unknown", "x"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        })
    }

    fn vars(placement: &Placement) -> BTreeMap<&str, &str> {
        placement.set.iter().map(|(name, (_, value))| (name.as_str(), value.expose_secret())).collect()
    }

    #[test]
    fn labels_are_upper_case_with_underscores() {
        assert_eq!(label("tokens", "orders-read"), "TOKENS_ORDERS_READ");
        assert_eq!(label("pg.prod", "réader"), "PG_PROD_R_ADER");
    }

    #[test]
    fn each_kind_gets_the_variables_its_tools_read() {
        let placement = place_all(
            [("tokens", "orders-read", &token()), ("aws", "reports", &aws()), ("pg", "reader", &login())],
            Mode::Environment,
        )
        .unwrap();
        assert_eq!(
            vars(&placement),
            BTreeMap::from([
                ("AWS_ACCESS_KEY_ID", "ASIA1"),
                ("AWS_SECRET_ACCESS_KEY", "aws-secret"),
                ("AWS_SESSION_TOKEN", "aws-session"),
                ("PGDATABASE", "analytics"),
                ("PGHOST", "db.internal"),
                ("PGPASSWORD", "pa:ss\\word"),
                ("PGPORT", "5432"),
                ("PGUSER", "writ_0193"),
                ("WRIT_TOKEN_TOKENS_ORDERS_READ", "eyJ.tok"),
            ])
        );
        let removed: Vec<&str> = placement.remove.iter().map(String::as_str).collect();
        assert_eq!(
            removed,
            [
                "AWS_CREDENTIAL_EXPIRATION",
                "AWS_DEFAULT_PROFILE",
                "AWS_PROFILE",
                "AWS_SECURITY_TOKEN",
                "PGHOSTADDR",
                "PGPASSFILE",
                "PGSERVICE"
            ]
        );
        assert!(placement.files.is_empty());
        assert!(!format!("{placement:?}").contains("secret"), "{placement:?}");
    }

    #[test]
    fn files_hold_the_secrets_and_variables_name_the_files() {
        let dir = Path::new("/run/writ-exec");
        let placement = place_all(
            [("tokens", "orders-read", &token()), ("aws", "reports", &aws()), ("pg", "reader", &login())],
            Mode::Files(dir),
        )
        .unwrap();
        let vars = vars(&placement);
        assert_eq!(vars["WRIT_TOKEN_TOKENS_ORDERS_READ_FILE"], "/run/writ-exec/tokens_orders_read.token");
        assert_eq!(vars["AWS_SHARED_CREDENTIALS_FILE"], "/run/writ-exec/aws-credentials");
        assert_eq!(vars["PGPASSFILE"], "/run/writ-exec/pgpass");
        assert_eq!(vars["PGUSER"], "writ_0193");
        for secret in ["eyJ.tok", "aws-secret", "aws-session", "pa:ss"] {
            assert!(!vars.values().any(|value| value.contains(secret)), "{secret} is only in a file");
        }
        for name in ["AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN", "AWS_PROFILE", "PGPASSWORD"] {
            assert!(placement.remove.contains(name), "{name} is removed");
        }
        let files: BTreeMap<&str, &str> =
            placement.files.iter().map(|(name, text)| (name.as_str(), text.expose_secret())).collect();
        assert_eq!(files["tokens_orders_read.token"], "eyJ.tok");
        assert_eq!(files["pgpass"], "*:*:*:writ_0193:pa\\:ss\\\\word\n");
        assert_eq!(
            files["aws-credentials"],
            "[default]\naws_access_key_id = ASIA1\naws_secret_access_key = aws-secret\naws_session_token = aws-session\n"
        );
    }

    #[test]
    fn two_sessions_of_one_kind_are_refused_and_tokens_are_named_apart() {
        let error = place_all([("aws", "reports", &aws()), ("aws", "billing", &aws())], Mode::Environment)
            .unwrap_err();
        assert!(error.starts_with("aws/reports and aws/billing would both set AWS_"), "{error}");
        assert!(!error.contains("secret"));
        let error = place_all([("pg", "a", &login()), ("pg", "b", &login())], Mode::Files(Path::new("/d")))
            .unwrap_err();
        assert!(error.contains("would both set"), "{error}");
        let tokens =
            place_all([("tokens", "a", &token()), ("tokens", "b", &token())], Mode::Environment).unwrap();
        assert_eq!(tokens.set.len(), 2);
    }
}
