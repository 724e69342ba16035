//! A bare tonic server for scale: it speaks Writ's `CredentialService`, so
//! the load tool drives it with the very same client code and messages, but
//! `Issue` does nothing beyond echoing the request's tool back. No
//! authentication, policy, store, audit or provider: what is left is tonic,
//! HTTP/2, protobuf and the loopback network on this machine. Its answer
//! has the shape of a real one (a lease and a bearer token), so the agent's
//! client (`writ-client`) reads it as it reads Writ's.

use std::net::SocketAddr;

use tonic::{Request, Response, Status};
use writ::api::proto;
use writ::api::proto::credential_service_server::{CredentialService, CredentialServiceServer};

struct Echo;

#[tonic::async_trait]
impl CredentialService for Echo {
    async fn issue(
        &self,
        request: Request<proto::IssueRequest>,
    ) -> Result<Response<proto::IssueResponse>, Status> {
        let request = request.into_inner();
        let echoed = proto::IssuedCredential {
            lease: Some(proto::Lease { lease_id: "echo".into(), ..Default::default() }),
            credential: Some(proto::Credential {
                kind: Some(proto::credential::Kind::BearerToken(proto::BearerToken {
                    token: "echo".into(),
                    token_type: "Bearer".into(),
                })),
            }),
            notices: vec![request.tool],
        };
        Ok(Response::new(proto::IssueResponse { credentials: vec![echoed], approval_required: None }))
    }

    async fn renew(&self, _: Request<proto::RenewRequest>) -> Result<Response<proto::RenewResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }

    async fn release(
        &self,
        _: Request<proto::ReleaseRequest>,
    ) -> Result<Response<proto::ReleaseResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }

    type WatchApprovalStream = tokio_stream::Empty<Result<proto::Approval, Status>>;

    async fn watch_approval(
        &self,
        _: Request<proto::WatchApprovalRequest>,
    ) -> Result<Response<Self::WatchApprovalStream>, Status> {
        Err(Status::unimplemented("echo"))
    }

    async fn collect_approval(
        &self,
        _: Request<proto::CollectApprovalRequest>,
    ) -> Result<Response<proto::IssueResponse>, Status> {
        Err(Status::unimplemented("echo"))
    }
}

/// Starts the echo server on a free port, with TCP_NODELAY as Writ has it.
pub async fn start() -> SocketAddr {
    start_on("127.0.0.1:0".parse().unwrap()).await
}

/// Starts the echo server on `addr`.
pub async fn start_on(addr: SocketAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(CredentialServiceServer::new(Echo))
            .serve_with_incoming(incoming),
    );
    addr
}
