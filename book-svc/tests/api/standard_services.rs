//! What standard gRPC tools see on book-svc: health reports the BookService itself, and
//! reflection (v1 and v1alpha) lists it alone besides health and reflection.
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::spawn_app;

const BOOK_SERVICE: &str = "library.book.v1.BookService";

#[tokio::test]
async fn health_reports_the_book_service() {
    let app = spawn_app().await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{}", app.port))
        .expect("a URL")
        .connect()
        .await
        .expect("book-svc reachable");
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: BOOK_SERVICE.to_owned(),
        })
        .await
        .expect("health answers for the BookService")
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::Serving);
}

#[tokio::test]
async fn reflection_lists_only_the_book_service() {
    let app = spawn_app().await;
    let url = format!("http://127.0.0.1:{}", app.port);
    if let Err(why) = library_platform::test_support::reflection::check(&url, &[BOOK_SERVICE]).await {
        panic!("{why}");
    }
}
