//! The provider registry: `name → Arc<dyn Provider>`, built once from
//! configuration. This is the one place that knows which crate implements
//! which `kind`; everything else sees only the trait.

use std::collections::HashMap;
use std::sync::Arc;

use writ_provider_api::{Provider, ProviderDescription, RoleDescription};

use crate::config::ProviderConfig;

/// A configured provider and what it described at start-up.
pub struct Registered {
    pub provider: Arc<dyn Provider>,
    pub description: ProviderDescription,
    /// Its configured `kind` (`jwt`, `postgres`, …).
    pub kind: String,
}

impl Registered {
    pub fn role(&self, name: &str) -> Option<&RoleDescription> {
        self.description.role(name)
    }

    pub fn shape_name(&self) -> &'static str {
        match self.description.shape {
            writ_provider_api::CredentialShape::Revocable => "revocable",
            writ_provider_api::CredentialShape::ExpiryOnly => "expiry_only",
        }
    }
}

#[derive(Default)]
pub struct ProviderRegistry {
    providers: HashMap<String, Registered>,
}

impl ProviderRegistry {
    /// Builds every configured provider. Fails on the first that cannot be
    /// built, naming it.
    pub async fn from_config(
        configs: &std::collections::BTreeMap<String, ProviderConfig>,
    ) -> Result<Self, String> {
        let mut registry = Self::default();
        for (name, config) in configs {
            let provider = build(config).await.map_err(|e| format!("provider {name:?}: {e}"))?;
            registry.insert(name, &config.kind, provider);
        }
        Ok(registry)
    }

    pub fn insert(&mut self, name: &str, kind: &str, provider: Arc<dyn Provider>) {
        let description = provider.describe();
        self.providers.insert(name.to_string(), Registered { provider, description, kind: kind.to_owned() });
    }

    pub fn get(&self, name: &str) -> Option<&Registered> {
        self.providers.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Registered)> {
        self.providers.iter()
    }
}

async fn build(config: &ProviderConfig) -> Result<Arc<dyn Provider>, String> {
    let settings = toml::Value::Table(config.settings.clone());
    let parse_error = |e: toml::de::Error| e.to_string();
    match config.kind.as_str() {
        writ_provider_jwt::KIND => {
            let settings: writ_provider_jwt::JwtConfig = settings.try_into().map_err(parse_error)?;
            let key = writ_provider_jwt::SigningKey::load(settings.algorithm, &settings.key_file)?;
            Ok(Arc::new(writ_provider_jwt::JwtProvider::new(settings, &key)?))
        }
        writ_provider_external::KIND => {
            let settings: writ_provider_external::ExternalConfig =
                settings.try_into().map_err(parse_error)?;
            Ok(Arc::new(writ_provider_external::ExternalProvider::connect(settings).await?))
        }
        writ_provider_postgres::KIND => {
            let settings: writ_provider_postgres::PostgresConfig =
                settings.try_into().map_err(parse_error)?;
            Ok(Arc::new(writ_provider_postgres::PostgresProvider::new(settings)?))
        }
        writ_provider_aws_sts::KIND => {
            let settings: writ_provider_aws_sts::AwsStsConfig = settings.try_into().map_err(parse_error)?;
            Ok(Arc::new(writ_provider_aws_sts::AwsStsProvider::new(settings)?))
        }
        writ_provider_oauth2::KIND => {
            let settings: writ_provider_oauth2::OAuth2Config = settings.try_into().map_err(parse_error)?;
            Ok(Arc::new(writ_provider_oauth2::OAuth2Provider::connect(settings).await?))
        }
        other => Err(format!(
            "unknown provider kind {other:?}; known kinds: jwt, external, postgres, aws-sts, oauth2"
        )),
    }
}
