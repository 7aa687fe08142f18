//! The gateway's errors and their one mapping to GraphQL: every error leaves with an
//! `extensions.code` from CONTRACT.md and a message safe to show; internal detail is logged here
//! and nowhere else.
use async_graphql::ErrorExtensions;
use library_platform::grpc::{Reason, invalid_field_of, reason_of};
use tonic::{Code, Status};

/// How long a client should wait before retrying a shed request.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// Every outcome a client can be told about.
///
/// Deliberately not `Display`: async-graphql turns any `Display` type into an error without a
/// code, so `?` on this type could only go through the mapping below.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayError {
    Unauthenticated(String),
    Forbidden(String),
    NotFound(String),
    BadUserInput(String),
    OutOfStock(String),
    LoanLimitReached(String),
    ReturnExceedsLoan(String),
    Conflict(String),
    /// Too many requests in flight to a downstream service: ask the user to wait a moment.
    ServiceBusy(&'static str),
    ServiceUnavailable(&'static str),
}

impl GatewayError {
    /// The `extensions.code` of this error.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::Unauthenticated(_) => "UNAUTHENTICATED",
            GatewayError::Forbidden(_) => "FORBIDDEN",
            GatewayError::NotFound(_) => "NOT_FOUND",
            GatewayError::BadUserInput(_) => "BAD_USER_INPUT",
            GatewayError::OutOfStock(_) => "OUT_OF_STOCK",
            GatewayError::LoanLimitReached(_) => "LOAN_LIMIT_REACHED",
            GatewayError::ReturnExceedsLoan(_) => "RETURN_EXCEEDS_LOAN",
            GatewayError::Conflict(_) => "CONFLICT",
            GatewayError::ServiceBusy(_) => "SERVICE_BUSY",
            GatewayError::ServiceUnavailable(_) => "SERVICE_UNAVAILABLE",
        }
    }

    /// The message shown to the client.
    pub fn message(&self) -> String {
        match self {
            GatewayError::Unauthenticated(m)
            | GatewayError::Forbidden(m)
            | GatewayError::NotFound(m)
            | GatewayError::BadUserInput(m)
            | GatewayError::OutOfStock(m)
            | GatewayError::LoanLimitReached(m)
            | GatewayError::ReturnExceedsLoan(m)
            | GatewayError::Conflict(m) => m.clone(),
            GatewayError::ServiceBusy(service) => {
                format!("the {service} service is busy; please retry in a moment")
            }
            GatewayError::ServiceUnavailable(service) => {
                format!("the {service} service is unavailable; please retry later")
            }
        }
    }

    /// Maps a downstream call's failure. Client errors keep the service's message (services put
    /// only user-facing text in them); anything else is logged and replaced.
    pub fn from_status(service: &'static str, status: &Status) -> Self {
        let message = status.message().to_owned();
        match (reason_of(status), status.code()) {
            (Some(Reason::OutOfStock), _) => GatewayError::OutOfStock(message),
            (Some(Reason::LoanLimitReached), _) => GatewayError::LoanLimitReached(message),
            (Some(Reason::ReturnExceedsLoan), _) => GatewayError::ReturnExceedsLoan(message),
            (_, Code::NotFound) => GatewayError::NotFound(message),
            (_, Code::InvalidArgument | Code::OutOfRange) => {
                GatewayError::BadUserInput(match invalid_field_of(status) {
                    Some((field, why)) => format!("{}: {why}", argument_name(&field)),
                    None => message,
                })
            }
            (_, Code::PermissionDenied) => GatewayError::Forbidden(message),
            (_, Code::Unauthenticated) => GatewayError::Unauthenticated(message),
            (_, Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted) => GatewayError::Conflict(message),
            (_, Code::ResourceExhausted) => GatewayError::ServiceBusy(service),
            (_, code) => {
                tracing::warn!(service, ?code, message = status.message(), "downstream call failed");
                GatewayError::ServiceUnavailable(service)
            }
        }
    }
}

/// The GraphQL argument (or input field) a client wrote for a request field of the services'
/// protos: the paging fields by their GraphQL names, the rest in camelCase (`book_id` is
/// `bookId`, `total_copies` is `totalCopies`).
pub fn argument_name(proto_field: &str) -> String {
    match proto_field {
        "page_token" => "after".into(),
        "page_size" => "first".into(),
        field => {
            let mut name = String::with_capacity(field.len());
            let mut upper = false;
            for c in field.chars() {
                if c == '_' {
                    upper = true;
                } else if upper {
                    name.extend(c.to_uppercase());
                    upper = false;
                } else {
                    name.push(c);
                }
            }
            name
        }
    }
}

impl From<GatewayError> for async_graphql::Error {
    fn from(error: GatewayError) -> Self {
        let code = error.code();
        let busy = matches!(error, GatewayError::ServiceBusy(_));
        async_graphql::Error::new(error.message()).extend_with(|_, extensions| {
            extensions.set("code", code);
            if busy {
                extensions.set("retryAfterSeconds", RETRY_AFTER_SECONDS);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use library_platform::grpc::refused;

    #[test]
    fn refusal_reasons_win_over_codes() {
        let status = refused(
            Code::FailedPrecondition,
            Reason::OutOfStock,
            "only 4 copies are available",
        );
        let error = GatewayError::from_status("borrow", &status);
        assert_eq!(error.code(), "OUT_OF_STOCK");
        assert_eq!(error.message(), "only 4 copies are available");
    }

    #[test]
    fn bad_fields_are_named_as_the_client_wrote_them() {
        for (proto, client) in [
            ("page_token", "after"),
            ("page_size", "first"),
            ("book_id", "bookId"),
            ("total_copies", "totalCopies"),
            ("title", "title"),
        ] {
            let status = library_platform::grpc::invalid_field(proto, "is wrong");
            let error = GatewayError::from_status("book", &status);
            assert_eq!(error, GatewayError::BadUserInput(format!("{client}: is wrong")));
        }
        let plain = Status::invalid_argument("no details");
        assert_eq!(
            GatewayError::from_status("book", &plain),
            GatewayError::BadUserInput("no details".into())
        );
    }

    #[test]
    fn internal_failures_never_leak_their_message() {
        let status = Status::internal("relation \"loans\" does not exist");
        let error = GatewayError::from_status("borrow", &status);
        assert_eq!(error.code(), "SERVICE_UNAVAILABLE");
        assert!(!error.message().contains("loans"));
    }

    #[test]
    fn codes_map_to_the_contract() {
        let cases = [
            (Code::NotFound, "NOT_FOUND"),
            (Code::InvalidArgument, "BAD_USER_INPUT"),
            (Code::PermissionDenied, "FORBIDDEN"),
            (Code::FailedPrecondition, "CONFLICT"),
            (Code::ResourceExhausted, "SERVICE_BUSY"),
            (Code::Unavailable, "SERVICE_UNAVAILABLE"),
            (Code::DeadlineExceeded, "SERVICE_UNAVAILABLE"),
        ];
        for (code, expected) in cases {
            assert_eq!(
                GatewayError::from_status("book", &Status::new(code, "x")).code(),
                expected,
                "{code:?}"
            );
        }
    }

    #[test]
    fn busy_errors_tell_when_to_retry() {
        let error: async_graphql::Error = GatewayError::ServiceBusy("borrow").into();
        let extensions = error.extensions.expect("extensions");
        assert_eq!(
            extensions.get("code").map(|v| v.to_string()),
            Some("\"SERVICE_BUSY\"".into())
        );
        assert!(extensions.get("retryAfterSeconds").is_some());
    }
}
