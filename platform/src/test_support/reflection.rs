//! For tests: asks a running server's reflection what it serves, in both versions standard
//! clients speak (`grpc.reflection.v1`: grpcurl, Postman; `v1alpha`: Python's
//! `grpcio-reflection`), with tonic-reflection's own clients, the way such a tool would.
use std::collections::{BTreeSet, HashMap};

use prost::Message;
use prost_types::FileDescriptorProto;

/// The services every server lists besides its own.
pub const STANDARD_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Checks the reflection of the server at `url` (`http://host:port`), in `v1` and in `v1alpha`:
/// it lists exactly `own` and [`STANDARD_SERVICES`], and every listed service's file resolves,
/// with every file it imports, so a client can build the service's every message.
///
/// # Errors
/// What differs or failed, naming the version.
pub async fn check(url: &str, own: &[&str]) -> Result<(), String> {
    v1::check(url, own)
        .await
        .map_err(|e| format!("grpc.reflection.v1 at {url}: {e}"))?;
    v1alpha::check(url, own)
        .await
        .map_err(|e| format!("grpc.reflection.v1alpha at {url}: {e}"))
}

/// The same check for each version: the two packages have the same messages, but distinct types.
macro_rules! version {
    ($name:ident) => {
        mod $name {
            use tonic_reflection::pb::$name::ServerReflectionRequest;
            use tonic_reflection::pb::$name::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::$name::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::$name::server_reflection_response::MessageResponse;

            /// One request on a reflection stream of its own.
            async fn ask(
                client: &mut ServerReflectionClient<tonic::transport::Channel>,
                request: MessageRequest,
            ) -> Result<MessageResponse, String> {
                let request = ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(request),
                };
                let mut replies = client
                    .server_reflection_info(tokio_stream::iter([request]))
                    .await
                    .map_err(|e| format!("the reflection call failed: {e}"))?
                    .into_inner();
                let reply = replies
                    .message()
                    .await
                    .map_err(|e| format!("the reflection stream failed: {e}"))?
                    .ok_or("the reflection stream ended without a reply")?;
                match reply.message_response {
                    Some(MessageResponse::ErrorResponse(e)) => {
                        Err(format!("error {}: {}", e.error_code, e.error_message))
                    }
                    Some(response) => Ok(response),
                    None => Err("a reply without a response".to_owned()),
                }
            }

            pub(super) async fn check(url: &str, own: &[&str]) -> Result<(), String> {
                let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
                    .map_err(|e| format!("not a URL: {e}"))?
                    .connect()
                    .await
                    .map_err(|e| format!("cannot connect: {e}"))?;
                let mut client = ServerReflectionClient::new(channel);
                let listed = match ask(&mut client, MessageRequest::ListServices(String::new())).await? {
                    MessageResponse::ListServicesResponse(list) => {
                        list.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
                    }
                    other => return Err(format!("list_services answered {other:?}")),
                };
                super::compare(&listed, own)?;
                for service in &listed {
                    let mut files = super::Files::default();
                    let mut asked_files = std::collections::HashSet::new();
                    let mut wanted = vec![MessageRequest::FileContainingSymbol(service.clone())];
                    while let Some(request) = wanted.pop() {
                        let asked = format!("{request:?}");
                        let files_of_reply = match ask(&mut client, request).await {
                            Ok(MessageResponse::FileDescriptorResponse(r)) => r.file_descriptor_proto,
                            Ok(other) => return Err(format!("{asked} answered {other:?}")),
                            Err(e) => return Err(format!("{asked} (for {service}): {e}")),
                        };
                        for missing in files.add(&files_of_reply)? {
                            // Each file asked for once: a server answering with another file
                            // must not make this loop forever.
                            if asked_files.insert(missing.clone()) {
                                wanted.push(MessageRequest::FileByFilename(missing));
                            }
                        }
                    }
                    files.complete()?;
                    files.declares(service)?;
                }
                Ok(())
            }
        }
    };
}

version!(v1);
version!(v1alpha);

/// The listed services are exactly `own` and the standard ones, each once.
fn compare(listed: &[String], own: &[&str]) -> Result<(), String> {
    let got: BTreeSet<&str> = listed.iter().map(String::as_str).collect();
    let expected: BTreeSet<&str> = own.iter().copied().chain(STANDARD_SERVICES).collect();
    if got != expected || got.len() != listed.len() {
        return Err(format!("list_services gave {listed:?}, expected {expected:?}"));
    }
    Ok(())
}

/// The files received for one service, by name.
#[derive(Default)]
struct Files(HashMap<String, FileDescriptorProto>);

impl Files {
    /// Adds the files of a reply; returns the imports not received yet.
    fn add(&mut self, encoded: &[Vec<u8>]) -> Result<Vec<String>, String> {
        for bytes in encoded {
            let file = FileDescriptorProto::decode(bytes.as_slice())
                .map_err(|e| format!("a file descriptor that does not decode: {e}"))?;
            self.0.insert(file.name().to_owned(), file);
        }
        let mut missing: Vec<String> = self
            .0
            .values()
            .flat_map(|f| f.dependency.iter())
            .filter(|d| !self.0.contains_key(*d))
            .cloned()
            .collect();
        missing.sort();
        missing.dedup();
        Ok(missing)
    }

    /// Every import of every file received.
    fn complete(&mut self) -> Result<(), String> {
        match self.add(&[])?.as_slice() {
            [] => Ok(()),
            missing => Err(format!("imports not served: {missing:?}")),
        }
    }

    /// One of the files declares `service`.
    fn declares(&self, service: &str) -> Result<(), String> {
        let found = self.0.values().any(|f| {
            f.service
                .iter()
                .any(|s| format!("{}.{}", f.package(), s.name()) == service)
        });
        if found {
            Ok(())
        } else {
            Err(format!(
                "the files of {service} ({:?}) do not declare it",
                self.0.keys().collect::<Vec<_>>()
            ))
        }
    }
}
