//! TEMPORARY stand-in for the webhooks module, until it lands.
use crate::model::Approval;
use chrono::{DateTime, Utc};
use std::path::PathBuf;

#[derive(Clone, Debug, serde::Deserialize)]
pub struct WebhookConfig {
    pub url: String,
    pub secret_file: PathBuf,
}
#[derive(Clone, Copy, Debug)]
pub enum WebhookEvent {
    Requested,
    Approved,
    Denied,
    Expired,
    Cancelled,
    Collected,
    Voted,
}
#[derive(Clone, Debug)]
pub struct Notifier;
pub struct Deliveries;
impl Notifier {
    pub fn new(_c: &[WebhookConfig]) -> Result<(Self, Deliveries), std::io::Error> {
        Ok((Self, Deliveries))
    }
    pub fn disabled() -> Self {
        Self
    }
    pub fn send(&self, _e: WebhookEvent, _a: &Approval, _at: DateTime<Utc>) {}
}
impl Deliveries {
    pub async fn run(self, _s: tokio_util::sync::CancellationToken) {}
}
