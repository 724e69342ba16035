//! PostgreSQL failures mapped, once, to what Writ should do about them.
//!
//! Messages carry the server's message and SQLSTATE, never a statement's
//! text: the text of `CREATE ROLE` holds the password's verifier.

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;
use writ_provider_api::ProviderError;

/// A failure to get an admin connection from the pool.
pub fn pool(error: PoolError, database: &str) -> ProviderError {
    match error {
        PoolError::Backend(error) => postgres(error, &format!("connecting to database {database:?}")),
        PoolError::PostCreateHook(deadpool_postgres::HookError::Backend(error)) => {
            postgres(error, &format!("setting up a session in database {database:?}"))
        }
        PoolError::Timeout(_) => ProviderError::Unavailable(format!(
            "timed out waiting for a PostgreSQL connection to database {database:?}"
        )),
        PoolError::Closed => ProviderError::Unavailable("the PostgreSQL connection pool is closed".into()),
        other => {
            ProviderError::Failed(format!("PostgreSQL connection pool for database {database:?}: {other}"))
        }
    }
}

/// A failure of a statement or connection, while doing `what`.
pub fn postgres(error: tokio_postgres::Error, what: &str) -> ProviderError {
    let Some(db) = error.as_db_error() else {
        // No answer from the server: the connection broke, was refused or
        // timed out, or its TLS handshake failed (the cause, such as an
        // unknown CA or another host name, is in the sources). These texts
        // name no secrets.
        let mut message = format!("{what}: {error}");
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            let said = cause.to_string();
            if !message.contains(&said) {
                message.push_str(": ");
                message.push_str(&said);
            }
            source = cause.source();
        }
        return ProviderError::Unavailable(message);
    };
    // The detail says what is in the way (`1 object in database reporting`);
    // for the catalog statements this provider runs it holds no data.
    let message = match db.detail() {
        Some(detail) => format!("{what}: {} ({detail}; SQLSTATE {})", db.message(), db.code().code()),
        None => format!("{what}: {} (SQLSTATE {})", db.message(), db.code().code()),
    };
    // "tuple concurrently updated" (XX000) is a lost race on a catalog row,
    // e.g. with a GRANT made outside Writ: try again, not an operator's job.
    let raced = db.code() == &SqlState::INTERNAL_ERROR && db.message() == "tuple concurrently updated";
    if raced || is_transient(db.code()) {
        ProviderError::Unavailable(message)
    } else {
        ProviderError::Failed(message)
    }
}

/// Whether a server error says "not now" rather than "not like this".
fn is_transient(code: &SqlState) -> bool {
    let class = code.code().get(..2).unwrap_or_default();
    // 08 connection exception, 53 insufficient resources (too many
    // connections, out of memory or disk), 57 operator intervention (shutdown,
    // statement_timeout), 58 system error (I/O), 40 transaction rollback
    // (serialization failure, deadlock).
    matches!(class, "08" | "53" | "57" | "58" | "40")
        || *code == SqlState::LOCK_NOT_AVAILABLE
        || *code == SqlState::OBJECT_IN_USE
}

/// Whether the error says a role does not exist.
pub fn is_undefined_object(error: &tokio_postgres::Error) -> bool {
    error.code() == Some(&SqlState::UNDEFINED_OBJECT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_server_errors_are_retryable() {
        for code in [
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::QUERY_CANCELED,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::CONNECTION_FAILURE,
        ] {
            assert!(is_transient(&code), "{code:?}");
        }
        for code in [
            SqlState::INSUFFICIENT_PRIVILEGE,
            SqlState::INVALID_PASSWORD,
            SqlState::INVALID_CATALOG_NAME,
            SqlState::SYNTAX_ERROR,
            SqlState::UNDEFINED_TABLE,
            SqlState::DUPLICATE_OBJECT,
            SqlState::DEPENDENT_OBJECTS_STILL_EXIST,
        ] {
            assert!(!is_transient(&code), "{code:?}");
        }
    }
}
