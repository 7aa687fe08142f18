//! Distributed tracing, seen by a real OTLP/gRPC collector: the test serves the OpenTelemetry
//! collector's `TraceService` (its own protobuf definitions, `opentelemetry-proto`), points every
//! process of the distributed system at it with `OTEL_EXPORTER_OTLP_ENDPOINT`, and reads what
//! they export, as Jaeger or Tempo would.
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use library_platform::CancellationToken;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value;
use serde_json::{Value, json};

use crate::helpers::{System, id_of, try_eventually};

/// How long exported spans may take to arrive (the services export every 100 ms here).
const EXPORTED: Duration = Duration::from_secs(15);

/// One span as the collector received it.
#[derive(Clone, Debug)]
struct RecordedSpan {
    /// `service.name` of the resource that exported it.
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    /// Empty for a root span.
    parent_span_id: String,
}

/// An OTLP/gRPC trace collector that keeps every span it is sent.
#[derive(Clone, Default)]
struct Recorder {
    spans: Arc<Mutex<Vec<RecordedSpan>>>,
}

#[tonic::async_trait]
impl TraceService for Recorder {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut recorded = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|attribute| attribute.key == "service.name")
                .and_then(|attribute| match attribute.value.as_ref()?.value.as_ref()? {
                    any_value::Value::StringValue(name) => Some(name.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|scope| scope.spans) {
                recorded.push(RecordedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                });
            }
        }
        self.spans.lock().unwrap_or_else(|p| p.into_inner()).extend(recorded);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The collector, serving on a port of its own until dropped.
struct Collector {
    endpoint: String,
    recorder: Recorder,
    stop: CancellationToken,
}

impl Collector {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind the collector");
        let endpoint = format!("http://{}", listener.local_addr().expect("the collector's address"));
        let recorder = Recorder::default();
        let stop = CancellationToken::new();
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(recorder.clone()))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                stop.clone().cancelled_owned(),
            );
        tokio::spawn(async move {
            if let Err(error) = server.await {
                panic!("the collector failed: {error}");
            }
        });
        Self {
            endpoint,
            recorder,
            stop,
        }
    }

    /// The spans of `trace_id` received so far.
    fn trace(&self, trace_id: &str) -> Vec<RecordedSpan> {
        let spans = self.recorder.spans.lock().unwrap_or_else(|p| p.into_inner());
        spans.iter().filter(|s| s.trace_id == trace_id).cloned().collect()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One borrow through the gateway, made in a trace the caller started (its `traceparent`
/// header), is one trace: the gateway's request span is the caller's child, borrow-svc's and
/// book-svc's calls follow, and the events' consumers (book-svc's saga, dashboard-svc's
/// projection) are children of the spans that published them.
#[tokio::test]
async fn one_borrow_is_one_trace_across_every_service() {
    let collector = Collector::start().await;
    let system = System::distributed_with(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await;
    let admin = system.admin();
    let reader = system.reader("traced");
    let book_id = id_of(&admin.create_book("Traced", 3).await);

    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let caller_span = &uuid::Uuid::new_v4().simple().to_string()[..16];
    let reply: Value = reqwest::Client::new()
        .post(format!("{}/graphql", system.http_url))
        .bearer_auth(reader.token().expect("a reader's token"))
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&json!({
            "query": "mutation($bookId: ID!) { borrowBook(bookId: $bookId, quantity: 1) { id status } }",
            "variables": { "bookId": book_id },
        }))
        .send()
        .await
        .expect("the gateway answers")
        .json()
        .await
        .expect("a JSON answer");
    let loan_id = reply["data"]["borrowBook"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("borrowed: {reply}"))
        .to_owned();
    reader.wait_loan_status(&loan_id, "ACTIVE").await;
    reader.wait_dashboard(1, 0).await;

    let wanted: BTreeSet<&str> = ["graphql-gateway", "borrow-svc", "book-svc", "dashboard-svc"].into();
    let outcome = try_eventually(EXPORTED, || async {
        let spans = collector.trace(&trace_id);
        let services: BTreeSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
        let missing: Vec<&&str> = wanted.difference(&services).collect();
        let ids: BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
        let joined = |service: &str| {
            spans
                .iter()
                .any(|s| s.service == service && s.name == "consume" && ids.contains(s.parent_span_id.as_str()))
        };
        let gateway_under_caller = spans
            .iter()
            .any(|s| s.service == "graphql-gateway" && s.parent_span_id == caller_span);
        if missing.is_empty() && joined("dashboard-svc") && joined("book-svc") && gateway_under_caller {
            Ok(spans)
        } else {
            Err(format!(
                "missing services {missing:?}; dashboard-svc consume joined: {}; book-svc consume joined: {}; \
                 gateway span under the caller's: {gateway_under_caller}; spans: {spans:#?}",
                joined("dashboard-svc"),
                joined("book-svc"),
            ))
        }
    })
    .await;
    let spans = match outcome {
        Ok(spans) => spans,
        Err(last) => {
            system.print_logs();
            panic!("one borrow is not one trace within {EXPORTED:?}: {last}");
        }
    };
    // The dashboard's update was caused by borrow-svc's BookBorrowed: its consumer span's
    // parent is the borrow-svc span that published it.
    let parent_of = |span: &RecordedSpan| spans.iter().find(|s| s.span_id == span.parent_span_id);
    let projection = spans
        .iter()
        .find(|s| s.service == "dashboard-svc" && s.name == "consume")
        .expect("dashboard-svc's consumer span");
    assert_eq!(
        parent_of(projection).map(|s| s.service.as_str()),
        Some("borrow-svc"),
        "the projection's parent: {spans:#?}"
    );
}
