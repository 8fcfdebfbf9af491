//! Bearer-token checks for the ingest and admin routes.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};

use crate::internal_events::RequestRejected;
use crate::pipeline::AppState;

/// Which token a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `ingest_token`.
    Ingest,
    /// `admin_token`.
    Admin,
}

/// Constant-time comparison of two byte strings.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `headers` carry `Authorization: Bearer <expected>` (always true without a token).
pub fn authorized(headers: &http::HeaderMap, expected: Option<&str>) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .is_some_and(|t| same(t.trim().as_bytes(), expected.as_bytes()))
}

async fn check(scope: Scope, state: AppState, req: Request, next: Next) -> Response {
    let expected = match scope {
        Scope::Ingest => state.cfg.ingest_token.as_deref(),
        Scope::Admin => state.cfg.admin_token.as_deref(),
    };
    if authorized(req.headers(), expected) {
        return next.run(req).await;
    }
    RequestRejected { status: 401 }.emit(&state.metrics);
    let mut r = (StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n").into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer"),
    );
    r
}

/// Middleware for ingest routes.
pub async fn ingest(State(state): State<AppState>, req: Request, next: Next) -> Response {
    check(Scope::Ingest, state, req, next).await
}

/// Middleware for admin routes.
pub async fn admin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    check(Scope::Admin, state, req, next).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_rules() {
        let mut h = http::HeaderMap::new();
        assert!(authorized(&h, None));
        assert!(!authorized(&h, Some("s3cret")));
        h.insert(header::AUTHORIZATION, "Bearer wrong!".parse().unwrap());
        assert!(!authorized(&h, Some("s3cret")));
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(authorized(&h, Some("s3cret")));
        h.insert(header::AUTHORIZATION, "Basic s3cret".parse().unwrap());
        assert!(!authorized(&h, Some("s3cret")));
    }
}
