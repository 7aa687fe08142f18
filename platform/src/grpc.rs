//! gRPC serving and calling: every server gets the standard health service and reflection,
//! request spans joined to the caller's trace, and graceful shutdown; errors carry a
//! machine-readable reason in metadata so the gateway can tell refusals apart.
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::{Router, TcpIncoming};
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Status};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::layer::util::{Identity, Stack};
use tower_resilience::circuitbreaker::{CircuitBreaker, CircuitBreakerLayer, DefaultClassifier};

use crate::metrics::GrpcMetricsLayer;

/// The metadata entry that names why a call was refused (e.g. `OUT_OF_STOCK`).
pub const REASON_KEY: &str = "x-library-reason";

/// A gRPC server's router: its calls counted and timed ([`crate::metrics::GrpcMetricsLayer`]).
pub type GrpcRouter = Router<Stack<GrpcMetricsLayer, Identity>>;

/// A gRPC server being put together: the service's own services are added with
/// [`GrpcServer::add_service`], which also names them for health and reflection, so that a
/// server advertises exactly what it serves (as `grpcurl list` and probes expect).
pub struct GrpcServer {
    router: GrpcRouter,
    reporter: HealthReporter,
    services: Vec<&'static str>,
}

/// A server that could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("building gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
}

/// A server with health, tracing and call metrics, ready for the service's own services
/// ([`GrpcServer::add_service`]); reflection is added by [`serve`], once those are known.
pub fn server() -> GrpcServer {
    let (reporter, health) = tonic_health::server::health_reporter();
    let router = Server::builder()
        .trace_fn(|request| {
            let span = tracing::info_span!("grpc", method = %request.uri().path());
            crate::telemetry::set_parent_from_headers(&span, request.headers());
            span
        })
        .layer(GrpcMetricsLayer)
        .add_service(health);
    GrpcServer {
        router,
        reporter,
        services: Vec::new(),
    }
}

impl GrpcServer {
    /// Adds one of the service's own gRPC services, to be served, reported by health and listed
    /// by reflection under its generated name.
    #[must_use]
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: tower::Service<http::Request<tonic::body::Body>, Error = std::convert::Infallible>
            + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.router = self.router.add_service(service);
        self.services.push(S::NAME);
        self
    }
}

/// What reflection lists besides the service's own: the standard services every server has.
const STANDARD_SERVICES: [&str; 3] = [
    tonic_health::pb::health_server::SERVICE_NAME,
    tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME,
    tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME,
];

/// Server reflection in both versions clients speak (`v1`: grpcurl, Postman; `v1alpha`: Python's
/// `grpcio-reflection`, GraphQL Mesh), listing `services` and the standard ones only. Every
/// descriptor is registered, so that each listed service's file and its imports resolve.
fn add_reflection(
    router: GrpcRouter,
    services: &[&'static str],
) -> Result<GrpcRouter, tonic_reflection::server::Error> {
    let builder = || {
        services.iter().chain(&STANDARD_SERVICES).fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(library_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET),
            |builder, name| builder.with_service_name(*name),
        )
    };
    Ok(router
        .add_service(builder().build_v1()?)
        .add_service(builder().build_v1alpha()?))
}

/// Serves `server` on `listener` until `shutdown`, with reflection of its services: health
/// reports SERVING for the whole server and each of its services, then NOT_SERVING as soon as
/// the shutdown begins; the server goes on serving for `delay` (so that load balancers see it
/// unready and stop sending first), then stops accepting and in-flight calls finish.
///
/// # Errors
/// Reflection could not be built, or the server failed.
pub async fn serve(
    server: GrpcServer,
    listener: TcpListener,
    shutdown: CancellationToken,
    delay: Duration,
) -> Result<(), ServeError> {
    let GrpcServer {
        router,
        reporter,
        services,
    } = server;
    let router = add_reflection(router, &services)?;
    let names: Vec<String> = std::iter::once(String::new())
        .chain(services.iter().map(|s| (*s).to_owned()))
        .collect();
    for name in &names {
        reporter.set_service_status(name.as_str(), ServingStatus::Serving).await;
    }
    let stop = async move {
        shutdown.cancelled().await;
        for name in &names {
            reporter
                .set_service_status(name.as_str(), ServingStatus::NotServing)
                .await;
        }
        crate::shutdown::lame_duck(delay).await;
    };
    router
        // Without TCP_NODELAY a reply's trailers wait for the client's delayed ACK.
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), stop)
        .await?;
    Ok(())
}

/// A channel to `url` that connects on first use and reconnects by itself, so a caller starts
/// while its dependency is still down.
///
/// # Errors
/// `url` is not a valid URI.
pub fn lazy_channel(url: &str, deadline: Duration) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(1))
        .timeout(deadline)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true)
        .connect_lazy())
}

/// A channel behind a circuit breaker: once half of the last 20 calls (at least 5) failed to
/// reach the service or timed out, calls fail at once for 5 seconds instead of waiting on a
/// dependency that is down.
pub type GuardedChannel = CircuitBreaker<Channel, DefaultClassifier>;

/// A bad client setting.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{setting}: `{url}` is not a valid URL")]
    BadUrl { setting: String, url: String },
    #[error("circuit breaker configuration: {0}")]
    Breaker(String),
}

/// A [`lazy_channel`] to `url` (from the setting named `setting`) behind a circuit breaker named
/// `name`.
///
/// # Errors
/// `url` is not a valid URI.
pub fn guarded_channel(
    name: &str,
    setting: &str,
    url: &str,
    deadline: Duration,
) -> Result<GuardedChannel, ClientError> {
    let channel = lazy_channel(url, deadline).map_err(|_| ClientError::BadUrl {
        setting: setting.to_owned(),
        url: url.to_owned(),
    })?;
    let breaker = CircuitBreakerLayer::builder()
        .name(name)
        .failure_rate_threshold(0.5)
        .sliding_window_size(20)
        .minimum_number_of_calls(5)
        .wait_duration_in_open(Duration::from_secs(5))
        .build()
        .map_err(|e| ClientError::Breaker(e.to_string()))?;
    Ok(tower::Layer::layer(&breaker, channel))
}

/// A request carrying `message`, a deadline and the current trace context.
pub fn request<T>(message: T, deadline: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(deadline);
    crate::telemetry::inject_grpc(request.metadata_mut());
    request
}

/// Why a service refused a call, where the gRPC code alone does not say (several refusals share
/// `FAILED_PRECONDITION`): what the gateway turns into an `extensions.code`. One list for the
/// services that refuse and the gateway that maps, so neither matches a string literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Too few copies on the shelf.
    OutOfStock,
    /// The reader would go over their limit of copies.
    LoanLimitReached,
    /// A return of more copies than are outstanding.
    ReturnExceedsLoan,
    /// The loan is not in a state that allows it (closed, or not yet active).
    LoanNotActive,
    /// The book still has copies on loan.
    CopiesOnLoan,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Reason; 5] = [
        Reason::OutOfStock,
        Reason::LoanLimitReached,
        Reason::ReturnExceedsLoan,
        Reason::LoanNotActive,
        Reason::CopiesOnLoan,
    ];

    /// Its name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::OutOfStock => "OUT_OF_STOCK",
            Reason::LoanLimitReached => "LOAN_LIMIT_REACHED",
            Reason::ReturnExceedsLoan => "RETURN_EXCEEDS_LOAN",
            Reason::LoanNotActive => "LOAN_NOT_ACTIVE",
            Reason::CopiesOnLoan => "COPIES_ON_LOAN",
        }
    }

    /// The reason named `name`, if it is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.as_str() == name)
    }
}

/// A refusal with a machine-readable reason.
pub fn refused(code: Code, reason: Reason, message: impl Into<String>) -> Status {
    let mut status = Status::new(code, message);
    status
        .metadata_mut()
        .insert(REASON_KEY, tonic::metadata::MetadataValue::from_static(reason.as_str()));
    status
}

/// The reason a refusal carries, if any.
pub fn reason_of(status: &Status) -> Option<Reason> {
    status
        .metadata()
        .get(REASON_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(Reason::parse)
}

/// An internal failure: logged here with its cause, answered with a generic message.
pub fn internal(context: &str, cause: &dyn std::fmt::Display) -> Status {
    tracing::error!(error = %cause, "{context}");
    Status::internal("internal error")
}

/// A request field the caller got wrong: `INVALID_ARGUMENT` with the message `field: why`, and
/// the field in a standard `google.rpc.BadRequest` detail, so that a caller relaying the
/// refusal (the gateway) can name the field as its own client wrote it.
pub fn invalid_field(field: &str, description: impl Into<String>) -> Status {
    use tonic_types::{ErrorDetails, StatusExt};
    let description = description.into();
    Status::with_error_details(
        Code::InvalidArgument,
        format!("{field}: {description}"),
        ErrorDetails::with_bad_request_violation(field, description),
    )
}

/// The field and reason of an [`invalid_field`] refusal.
pub fn invalid_field_of(status: &Status) -> Option<(String, String)> {
    use tonic_types::StatusExt;
    let violation = status.get_details_bad_request()?.field_violations.into_iter().next()?;
    Some((violation.field, violation.description))
}

/// The longest user id accepted (the JWT `sub` the gateway passes on).
pub const MAX_USER_ID_LEN: usize = 128;

/// Checks a request's `user_id`: 1 to 128 characters once trimmed.
///
/// # Errors
/// `INVALID_ARGUMENT` naming the field.
pub fn parse_user_id(value: &str) -> Result<&str, Status> {
    let value = value.trim();
    if value.is_empty() || value.len() > MAX_USER_ID_LEN {
        return Err(invalid_field(
            "user_id",
            format!("must be 1 to {MAX_USER_ID_LEN} characters"),
        ));
    }
    Ok(value)
}

/// Parses a UUID field of a request into its canonical text form.
///
/// # Errors
/// `INVALID_ARGUMENT` naming the field.
pub fn parse_id(field: &str, value: &str) -> Result<String, Status> {
    uuid::Uuid::parse_str(value.trim())
        .map(|id| id.to_string())
        .map_err(|_| invalid_field(field, format!("`{}` is not a valid id", crate::text::excerpt(value))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_field_is_named_in_the_message_and_the_details() {
        let status = parse_id("book_id", &"x".repeat(100)).unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with("book_id: `xxx"), "{}", status.message());
        assert!(status.message().len() < 100, "long input is not echoed whole");
        let (field, why) = invalid_field_of(&status).expect("details");
        assert_eq!(field, "book_id");
        assert!(why.ends_with("is not a valid id"), "{why}");
    }

    #[test]
    fn a_refusal_carries_its_reason() {
        let status = refused(Code::FailedPrecondition, Reason::OutOfStock, "only 2 left");
        assert_eq!(reason_of(&status), Some(Reason::OutOfStock));
        for reason in Reason::ALL {
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(Reason::parse("SOMETHING_ELSE"), None);
        assert_eq!(status.message(), "only 2 left");
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let status = internal("saving the loan", &"relation \"loans\" does not exist");
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("loans"));
    }
}
