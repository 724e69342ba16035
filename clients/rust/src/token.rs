//! Where the agent's workload token comes from. Such tokens rotate (a
//! Kubernetes projected service-account token is rewritten by the
//! kubelet), so the source is asked again before every call.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use secrecy::SecretString;

use crate::error::Error;

/// The variable a workload token is read from by default.
pub const ENV_TOKEN: &str = "WRIT_TOKEN";
/// The variable naming a file holding the workload token.
pub const ENV_TOKEN_FILE: &str = "WRIT_TOKEN_FILE";

/// A source of the agent's workload token. `Debug` never shows a token.
#[derive(Clone)]
pub struct Token(Source);

#[derive(Clone)]
enum Source {
    /// No token: the client presents a certificate instead.
    None,
    Fixed(SecretString),
    /// Read at every call: a file that rotates is picked up.
    File(PathBuf),
    /// Read at every call.
    Env(String),
    Function(Arc<dyn Fn() -> Result<String, String> + Send + Sync>),
}

impl Token {
    /// No token: for a service that presents a client certificate.
    pub fn none() -> Self {
        Self(Source::None)
    }

    /// A fixed token (fine for a script; real tokens expire).
    pub fn fixed(token: impl Into<String>) -> Self {
        Self(Source::Fixed(SecretString::from(token.into())))
    }

    /// A file holding the token, read again before every call; surrounding
    /// whitespace is ignored.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self(Source::File(path.into()))
    }

    /// An environment variable, read before every call.
    pub fn env(name: impl Into<String>) -> Self {
        Self(Source::Env(name.into()))
    }

    /// Anything else: a function returning the token, or why it has none.
    pub fn from_fn(get: impl Fn() -> Result<String, String> + Send + Sync + 'static) -> Self {
        Self(Source::Function(Arc::new(get)))
    }

    /// `$WRIT_TOKEN_FILE` if set, else `$WRIT_TOKEN`.
    pub fn from_env() -> Self {
        match std::env::var_os(ENV_TOKEN_FILE) {
            Some(path) if !path.is_empty() => Self::file(PathBuf::from(path)),
            _ => Self::env(ENV_TOKEN),
        }
    }

    /// The token now; `None` for [`Token::none`].
    pub(crate) fn current(&self) -> Result<Option<SecretString>, Error> {
        let token = match &self.0 {
            Source::None => return Ok(None),
            Source::Fixed(token) => return Ok(Some(token.clone())),
            Source::File(path) => std::fs::read_to_string(path)
                .map_err(|error| Error::Token(format!("reading {}: {error}", path.display())))?,
            Source::Env(name) => {
                std::env::var(name).map_err(|_| Error::Token(format!("{name} is not set")))?
            }
            Source::Function(get) => get().map_err(Error::Token)?,
        };
        let token = token.trim();
        if token.is_empty() {
            return Err(Error::Token(format!("{self:?} is empty")));
        }
        Ok(Some(SecretString::from(token.to_string())))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Source::None => f.write_str("no token"),
            Source::Fixed(_) => f.write_str("a fixed token"),
            Source::File(path) => write!(f, "the token file {}", path.display()),
            Source::Env(name) => write!(f, "the token in ${name}"),
            Source::Function(_) => f.write_str("the token function"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;

    #[test]
    fn a_file_is_read_again_at_each_call() {
        let dir = std::env::temp_dir().join(format!("writ-client-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        let token = Token::file(&path);
        assert!(matches!(token.current(), Err(Error::Token(_))));
        std::fs::write(&path, "first\n").unwrap();
        assert_eq!(token.current().unwrap().unwrap().expose_secret(), "first");
        std::fs::write(&path, "second").unwrap();
        assert_eq!(token.current().unwrap().unwrap().expose_secret(), "second");
        std::fs::write(&path, " \n").unwrap();
        assert!(token.current().is_err(), "an empty file is no token");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debug_names_the_source_never_the_token() {
        let fixed = Token::fixed("eyJ-s3cret");
        assert_eq!(format!("{fixed:?}"), "a fixed token");
        assert_eq!(fixed.current().unwrap().unwrap().expose_secret(), "eyJ-s3cret");
        assert!(Token::none().current().unwrap().is_none());
        let failing = Token::from_fn(|| Err("the identity agent is down".into()));
        assert_eq!(
            failing.current().unwrap_err().to_string(),
            "no workload token: the identity agent is down"
        );
    }
}
