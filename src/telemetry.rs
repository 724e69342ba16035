//! Logs and traces.
//!
//! Logs go to stderr as text (a terminal, `writ dev`) or JSON lines
//! (production: `log_format = "json"`, `--log-json`). Every line written
//! while a gRPC call is served carries the call's span: its method, task,
//! agent and trace id (never a token or a credential).
//!
//! Traces go over OTLP/gRPC when an endpoint is configured
//! (`[telemetry] otlp_endpoint`, or the standard
//! `OTEL_EXPORTER_OTLP_ENDPOINT`): one span per call, continuing the trace
//! of an incoming W3C `traceparent`, with child spans for identity, policy,
//! store, provider and audit. The child spans are `DEBUG` spans that only
//! the trace layer asks for, so without an endpoint they cost nothing.

use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};
use serde::Deserialize;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The standard variable naming an OTLP endpoint, honoured when the
/// configuration names none.
pub const ENV_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// `[telemetry]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `"text"` or `"json"` (JSON lines, one object per event).
    #[serde(default)]
    pub log_format: LogFormat,
    /// An OTLP/gRPC collector, e.g. `http://otel-collector:4317`; traces
    /// are off without it (or `OTEL_EXPORTER_OTLP_ENDPOINT`).
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the spans.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// The share of new traces recorded (0 to 1); a call whose caller
    /// sampled its trace is always recorded.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::default(),
            otlp_endpoint: None,
            service_name: default_service_name(),
            sample_ratio: default_sample_ratio(),
        }
    }
}

fn default_service_name() -> String {
    "writ".into()
}

fn default_sample_ratio() -> f64 {
    1.0
}

impl TelemetryConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err("telemetry.sample_ratio must be from 0 to 1".into());
        }
        if let Some(endpoint) = &self.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(format!("telemetry.otlp_endpoint {endpoint:?} must be an http:// or https:// URL"));
        }
        if self.service_name.trim().is_empty() {
            return Err("telemetry.service_name must not be empty".into());
        }
        Ok(())
    }

    /// The endpoint traces go to: the configuration's, else the standard
    /// environment variable's.
    fn endpoint(&self) -> Option<String> {
        self.otlp_endpoint
            .clone()
            .or_else(|| std::env::var(ENV_OTLP_ENDPOINT).ok().filter(|value| !value.trim().is_empty()))
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// What [`init`] set up; [`Telemetry::shutdown`] sends the spans still
/// buffered.
#[must_use]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is buffered and stops the exporter. Blocks: called on
    /// a blocking thread.
    pub async fn shutdown(self) {
        if let Some(provider) = self.provider {
            let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
            if let Ok(Err(error)) = done {
                eprintln!("writ: traces not all exported at shutdown: {error}");
            }
        }
    }
}

/// Installs the global subscriber: `filter` (EnvFilter syntax) for logs in
/// `format`, and, with `traces`, OTLP traces if `config` (or the
/// environment) names an endpoint. Call once, inside the Tokio runtime.
pub fn init(
    filter: &str,
    format: LogFormat,
    config: &TelemetryConfig,
    traces: bool,
) -> anyhow::Result<Telemetry> {
    let endpoint = if traces { config.endpoint() } else { None };
    // tokio-postgres logs statement text at debug, and provider DDL holds
    // password verifiers: keep it at info unless asked for by name.
    let directives = if filter.contains("tokio_postgres") {
        filter.to_owned()
    } else {
        format!("{filter},tokio_postgres=info")
    };
    let logs_filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tokio_postgres=info"));
    use std::io::IsTerminal as _;
    let text = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let logs = match format {
        LogFormat::Text => text.with_filter(logs_filter).boxed(),
        LogFormat::Json => {
            text.json().with_current_span(true).with_span_list(false).with_filter(logs_filter).boxed()
        }
    };
    let (traces, provider) = match &endpoint {
        Some(endpoint) => {
            let provider = tracer_provider(endpoint, config)?;
            let tracer = provider.tracer("writ");
            // Writ's own spans, the child spans included (DEBUG), and the
            // providers' (INFO); not every library's.
            let targets = tracing_subscriber::filter::Targets::new()
                .with_target("writ", tracing::Level::DEBUG)
                .with_target("writ_provider_postgres", tracing::Level::INFO)
                .with_target("writ_provider_external", tracing::Level::INFO);
            let layer = tracing_opentelemetry::layer().with_tracer(tracer).with_filter(targets);
            (Some(layer), Some(provider))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()
        .context("installing the log subscriber")?;
    if let Some(endpoint) = endpoint {
        // A URL may carry credentials (`user:pass@`); the log gets none.
        let shown = match (endpoint.find("://"), endpoint.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}<redacted>{}", &endpoint[..scheme + 3], &endpoint[at..])
            }
            _ => endpoint.clone(),
        };
        tracing::info!(endpoint = %shown, sample_ratio = config.sample_ratio, "exporting traces over OTLP");
    }
    Ok(Telemetry { provider })
}

fn tracer_provider(endpoint: &str, config: &TelemetryConfig) -> anyhow::Result<SdkTracerProvider> {
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(5))
        .build()
        .with_context(|| format!("configuring the OTLP exporter for {endpoint}"))?;
    let exporter = OnRuntime { inner: exporter, runtime: tokio::runtime::Handle::current() };
    let resource =
        opentelemetry_sdk::Resource::builder().with_service_name(config.service_name.clone()).build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio))))
        .with_resource(resource)
        .build())
}

/// The OTLP exporter, run on Writ's Tokio runtime. The SDK's batch
/// processor exports from a thread of its own, where tonic would find no
/// reactor; `Handle::block_on` lends it the runtime's.
#[derive(Debug)]
struct OnRuntime {
    inner: opentelemetry_otlp::SpanExporter,
    runtime: tokio::runtime::Handle,
}

impl SpanExporter for OnRuntime {
    fn export(&self, batch: Vec<SpanData>) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let result = self.runtime.block_on(self.inner.export(batch));
        std::future::ready(result)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// Reads W3C trace context (`traceparent`, `tracestate`) from headers.
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The span a gRPC call is served in: it continues the caller's trace (a
/// valid `traceparent`), and its `trace_id` field, which every log line in
/// it carries, is that trace's (or, without a caller's trace and without
/// OTLP, a fresh one, so the lines of one call still go together).
pub fn request_span(method: &'static str, headers: &http::HeaderMap) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    let span = tracing::info_span!(
        "grpc.request",
        otel.name = method,
        rpc.method = method,
        task = tracing::field::Empty,
        agent = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    let incoming = parent.span().span_context().clone();
    let _ = span.set_parent(parent);
    let exported = span.context().span().span_context().trace_id();
    let trace_id = if exported != opentelemetry::TraceId::INVALID {
        exported
    } else if incoming.is_valid() {
        incoming.trace_id()
    } else {
        opentelemetry::TraceId::from_bytes(fastrand::u128(1..).to_be_bytes())
    };
    span.record("trace_id", tracing::field::display(trace_id));
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_s_trace_is_continued_in_the_log_fields() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse().unwrap(),
        );
        // No subscriber: the span is disabled, but the propagation is read.
        let parent = TraceContextPropagator::new().extract(&Headers(&headers));
        assert_eq!(parent.span().span_context().trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let garbage = {
            let mut headers = http::HeaderMap::new();
            headers.insert("traceparent", "00-zz-yy-01".parse().unwrap());
            TraceContextPropagator::new().extract(&Headers(&headers))
        };
        assert!(!garbage.span().span_context().is_valid(), "a malformed traceparent starts a new trace");
    }

    #[test]
    fn settings_are_checked() {
        let mut config = TelemetryConfig { sample_ratio: 1.5, ..TelemetryConfig::default() };
        assert!(config.validate().unwrap_err().contains("sample_ratio"));
        config.sample_ratio = 0.5;
        config.otlp_endpoint = Some("collector:4317".into());
        assert!(config.validate().unwrap_err().contains("http://"));
        config.otlp_endpoint = Some("http://collector:4317".into());
        config.validate().unwrap();
    }
}
