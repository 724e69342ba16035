use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// `[providers.<name>]` with `kind = "jwt"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The `iss` of minted tokens; resource servers pin it.
    pub issuer: String,
    /// `ES256` (default) or `EdDSA`.
    #[serde(default)]
    pub algorithm: crate::SigningAlgorithm,
    /// PKCS#8 private key, PEM or DER. `writ dev` generates one.
    pub key_file: std::path::PathBuf,
    pub roles: BTreeMap<String, RoleConfig>,
}

/// One role: the audience its tokens are for and the scopes it may carry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    pub audience: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    #[serde(with = "humantime_serde", default = "default_ttl")]
    pub default_ttl: Duration,
}

fn default_ttl() -> Duration {
    Duration::from_secs(300)
}

impl JwtConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.issuer.trim().is_empty() {
            return Err("issuer must not be empty".into());
        }
        if self.roles.is_empty() {
            return Err("at least one role is required".into());
        }
        for (name, role) in &self.roles {
            let valid_name =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !valid_name {
                return Err(format!("role {name:?}: names are letters, digits and -_."));
            }
            if role.audience.trim().is_empty() {
                return Err(format!("role {name:?}: audience must not be empty"));
            }
            if role.max_ttl < Duration::from_secs(1) {
                return Err(format!("role {name:?}: max_ttl must be at least 1s"));
            }
            if role.default_ttl.is_zero() || role.default_ttl > role.max_ttl {
                return Err(format!("role {name:?}: default_ttl must be within (0, max_ttl]"));
            }
            if let Some(scope) = role.scopes.iter().find(|s| s.is_empty() || s.contains(' ')) {
                return Err(format!("role {name:?}: scope {scope:?} must be one non-empty word"));
            }
        }
        Ok(())
    }
}
