//! The HTTP routes (docs/api.yaml is their description). Handlers parse
//! and answer; the work is [`Daemon`]'s, on tokio's blocking threads when
//! it waits (building a VM, pausing, stopping).

use super::error::ApiError;
use super::model::{CreateInstance, RegisterImage, SnapshotRequest};
use super::registry::Daemon;
use super::{host, metrics};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use std::sync::Arc;

type Shared = State<Arc<Daemon>>;

/// Every route of the API.
pub fn router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route("/host", get(host_info))
        .route("/metrics", get(prometheus))
        .route("/images", get(list_images).post(register_image))
        .route("/images/{id}", get(get_image))
        .route("/instances", get(list_instances).post(create))
        .route("/instances/{id}", get(get_instance).delete(delete))
        .route("/instances/{id}/start", post(start))
        .route("/instances/{id}/stop", post(stop))
        .route("/instances/{id}/pause", post(pause))
        .route("/instances/{id}/resume", post(resume))
        .route("/instances/{id}/snapshot", post(snapshot))
        .route("/instances/{id}/logs", get(logs))
        .fallback(unknown_route)
        .with_state(daemon)
}

/// The body as JSON of type `T`, or a 400 that says what is wrong.
fn json<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "the request needs a JSON body (Content-Type: application/json)",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("the body is not valid JSON for this request: {e}"))
    })
}

/// Runs `work` on a blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal(format!("the request's worker failed: {e}")))?
}

async fn host_info(State(d): Shared) -> Result<Response, ApiError> {
    let info = blocking(move || Ok(host::info(&d))).await?;
    Ok(Json(info).into_response())
}

async fn prometheus(State(d): Shared) -> Result<Response, ApiError> {
    let text = blocking(move || {
        let host = host::info(&d);
        Ok(metrics::render(&host, &d.list()))
    })
    .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn list_images(State(d): Shared) -> Response {
    Json(d.images()).into_response()
}

async fn register_image(State(d): Shared, body: Bytes) -> Result<Response, ApiError> {
    let req: RegisterImage = json(&body)?;
    let info = blocking(move || d.register_image(req)).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

async fn get_image(State(d): Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(d.image(&id)?).into_response())
}

async fn list_instances(State(d): Shared) -> Result<Response, ApiError> {
    let list = blocking(move || Ok(d.list())).await?;
    Ok(Json(list).into_response())
}

async fn create(State(d): Shared, body: Bytes) -> Result<Response, ApiError> {
    let req: CreateInstance = json(&body)?;
    let info = blocking(move || d.create(req)).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

async fn get_instance(State(d): Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    let info = blocking(move || d.info(&id)).await?;
    Ok(Json(info).into_response())
}

async fn delete(State(d): Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    blocking(move || d.delete(&id)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn start(State(d): Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(blocking(move || d.start(&id)).await?).into_response())
}

async fn stop(State(d): Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(blocking(move || d.stop(&id)).await?).into_response())
}

async fn pause(State(d): Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(blocking(move || d.pause(&id)).await?).into_response())
}

async fn resume(State(d): Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(blocking(move || d.resume(&id)).await?).into_response())
}

async fn snapshot(
    State(d): Shared,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: SnapshotRequest = json(&body)?;
    Ok(Json(blocking(move || d.snapshot(&id, req)).await?).into_response())
}

async fn logs(State(d): Shared, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (bytes, discarded) = d.logs(&id)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::HeaderName::from_static("x-flint-console-discarded"),
                discarded.to_string(),
            ),
        ],
        bytes,
    )
        .into_response())
}

async fn unknown_route() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: "no_route",
        message: "no such route; see docs/api.yaml for the API".into(),
    }
}

#[cfg(test)]
mod tests {
    /// Every route the router serves, as docs/api.yaml names it.
    const ROUTES: &[&str] = &[
        "/host",
        "/metrics",
        "/images",
        "/images/{id}",
        "/instances",
        "/instances/{id}",
        "/instances/{id}/start",
        "/instances/{id}/stop",
        "/instances/{id}/pause",
        "/instances/{id}/resume",
        "/instances/{id}/snapshot",
        "/instances/{id}/logs",
    ];

    #[test]
    fn the_openapi_description_names_every_route() {
        let spec = include_str!("../../../docs/api.yaml");
        for route in ROUTES {
            assert!(
                spec.contains(&format!("\n  {route}:\n")),
                "docs/api.yaml does not describe {route}"
            );
        }
        let router = include_str!("api.rs");
        let served = router.matches(".route(\"").count();
        assert_eq!(served, ROUTES.len(), "a route is missing from ROUTES");
    }
}
