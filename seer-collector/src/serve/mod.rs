//! The HTTP server: ingest and the JSON API on one port, with bearer-token scopes.

pub mod api;
pub mod auth;

use axum::Router;
use axum::routing::{get, post};

use crate::pipeline::AppState;

/// The full router: ingest routes (ingest token), API routes (admin token), health (open).
pub fn router(state: AppState) -> Router {
    let ingest = Router::new()
        .route(seer_proto::TRACES_PATH, post(crate::ingest::traces))
        .route(seer_proto::WINDOWS_PATH, post(crate::ingest::windows))
        .route(api::NODES_PATH, post(api::post_node))
        .route("/v1/labels", post(api::post_labels))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::ingest,
        ));
    let admin = Router::new()
        .route("/v1/advice/{service}", get(api::advice))
        .route("/v1/predictions", get(api::predictions))
        .route("/v1/services", get(api::services))
        .route("/v1/graph", get(api::graph))
        .route("/v1/windows", get(api::windows))
        .route("/v1/traces", get(api::trace_list))
        .route("/v1/traces/{trace_id}", get(api::trace))
        .route("/v1/alerts", get(api::alerts))
        .route("/v1/labels", get(api::labels))
        .route("/v1/nodes", get(api::nodes))
        .route("/v1/status", get(api::status))
        .route("/metrics", get(api::metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::admin,
        ));
    Router::new()
        .merge(ingest)
        .merge(admin)
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .fallback(api::not_found)
        .with_state(state)
}
