//! The gRPC surface: one thin service per audience.
//!
//! Each handler validates its input, calls the [`Broker`](crate::domain::Broker)
//! and maps the outcome. Authentication happens before any handler runs, in
//! [`auth::AuthLayer`]; errors become `Status` only here, in
//! [`status`], so every code and message is decided in one place.

pub mod admin;
pub mod approvals;
pub mod audit;
pub mod auth;
pub mod convert;
pub mod credentials;
pub mod policy;
pub mod tasks;

use tonic::{Code, Status};

use crate::domain::Error;
use crate::identity::AuthError;

pub use auth::{AuthLayer, Authenticator, Caller};

/// The generated code of `proto/writ/v1/writ.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("writ.v1");

    /// For gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("writ_descriptor");
}

/// The one mapping from domain errors to gRPC statuses.
pub fn status(error: Error) -> Status {
    let code = match &error {
        Error::InvalidArgument(_) => Code::InvalidArgument,
        Error::NotFound(_) => Code::NotFound,
        Error::AlreadyExists(_) => Code::AlreadyExists,
        Error::PermissionDenied(_) => Code::PermissionDenied,
        Error::FailedPrecondition(_) => Code::FailedPrecondition,
        Error::Aborted(_) => Code::Aborted,
        Error::Unavailable(_) => Code::Unavailable,
        Error::Internal(_) => Code::Internal,
    };
    Status::new(code, error.to_string())
}

/// Listings' page size: 0 means the default.
pub(crate) fn page_size(asked: u32) -> Result<usize, Status> {
    const DEFAULT_PAGE: usize = 100;
    const MAX_PAGE: usize = 1000;
    match usize::try_from(asked).unwrap_or(usize::MAX) {
        0 => Ok(DEFAULT_PAGE),
        size if size <= MAX_PAGE => Ok(size),
        _ => Err(Status::invalid_argument(format!("page_size must be at most {MAX_PAGE}"))),
    }
}

/// Where a listing resumes: after the id a previous page ended with.
pub(crate) fn page_after(token: &str) -> Result<Option<uuid::Uuid>, Status> {
    match token {
        "" => Ok(None),
        token => uuid::Uuid::parse_str(token)
            .map(Some)
            .map_err(|_| Status::invalid_argument("page_token is not one Writ gave out")),
    }
}

/// Authentication failures: the caller's token is the problem, except when
/// the issuer's keys cannot be fetched.
pub fn auth_status(error: &AuthError) -> Status {
    match error {
        AuthError::IssuerUnavailable(_) => Status::unavailable(error.to_string()),
        _ => Status::unauthenticated(error.to_string()),
    }
}

/// Names the task of the call in its span (and so in every log line of the
/// call), escaped and shortened: it is the caller's text.
pub(crate) fn record_task(task_id: &str) {
    tracing::Span::current().record("task", tracing::field::display(crate::text::quoted(task_id)));
}

/// Every method of Writ's gRPC services (`writ.v1.CredentialService/Issue`
/// …), read once from the compiled descriptors.
static METHODS: std::sync::LazyLock<std::collections::BTreeSet<String>> = std::sync::LazyLock::new(|| {
    use prost::Message as _;
    let Ok(set) = prost_types::FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET) else {
        return std::collections::BTreeSet::new();
    };
    let mut methods = std::collections::BTreeSet::new();
    for file in set.file {
        let package = file.package.unwrap_or_default();
        for service in file.service {
            let service_name = service.name.unwrap_or_default();
            for method in service.method {
                methods.insert(format!("{package}.{service_name}/{}", method.name.unwrap_or_default()));
            }
        }
    }
    methods
});

/// The name of the Writ method a request path names (without its leading
/// `/`), or `unknown`: what spans are named and metrics are labelled with,
/// so a caller's made-up paths never become names or labels.
pub fn method_name(path: &str) -> &'static str {
    METHODS.get(path.trim_start_matches('/')).map_or("unknown", String::as_str)
}
