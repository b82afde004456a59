//! HTTP on loopback.
//!
//! | route | body | answer |
//! |---|---|---|
//! | `POST /api/v1/update` | Candid-encoded signed [`dc_identity::Envelope`] | 200 + Candid reply, after the change is durable |
//! | `POST /api/v1/query` | Candid `(method : text, arg : blob)` | 200 + Candid reply |
//! | `GET /api/v1/status` | — | JSON ledger totals |
//!
//! Refusals carry one line of text: 400 malformed, 401 missing or wrong
//! signature or expired envelope, 404 unknown method, 409 replayed nonce,
//! 413 too large, 503 storage failure or shutdown.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use dc_ledger_core::dispatch::{self, DispatchError};

use crate::service::{Service, ServiceError, MAX_REQUEST_BYTES};

/// Content type of Candid bodies.
pub const CANDID: &str = "application/candid";

fn status_of(e: &ServiceError) -> StatusCode {
    match e {
        ServiceError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        ServiceError::Malformed(_) => StatusCode::BAD_REQUEST,
        ServiceError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        ServiceError::Replayed(_) => StatusCode::CONFLICT,
        ServiceError::Dispatch(DispatchError::UnknownMethod(_)) => StatusCode::NOT_FOUND,
        ServiceError::Dispatch(DispatchError::ArgumentTooLarge { .. }) => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        ServiceError::Dispatch(_) => StatusCode::BAD_REQUEST,
        ServiceError::Storage(_) | ServiceError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn reply(result: Result<Vec<u8>, ServiceError>) -> Response {
    match result {
        Ok(bytes) => ([(header::CONTENT_TYPE, CANDID)], bytes).into_response(),
        Err(e) => (
            status_of(&e),
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{e}\n"),
        )
            .into_response(),
    }
}

async fn update(State(service): State<Service>, body: Bytes) -> Response {
    reply(service.update(&body).await)
}

async fn query(State(service): State<Service>, body: Bytes) -> Response {
    let result = dispatch::decode_args::<(String, serde_bytes::ByteBuf)>("query", &body)
        .map_err(ServiceError::from)
        .and_then(|(method, arg)| service.query(&method, &arg));
    reply(result)
}

async fn status(State(service): State<Service>) -> Response {
    match service.with_ledger(|l| serde_json::to_string(&l.stats())) {
        Ok(Ok(json)) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        _ => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// The router of the local ledger.
pub fn router(service: Service) -> Router {
    Router::new()
        .route("/api/v1/update", post(update))
        .route("/api/v1/query", post(query))
        .route("/api/v1/status", get(status))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(service)
}
