//! Endpoint classifiers: how a request is named in spans and window stats.

use http::Request;
use seer_sdk::{EndpointId, Recorder};

/// Names the endpoint of a request. Called once per request on the hot path: it must not
/// allocate (intern through [`Recorder::endpoint`], which allocates only for a new name).
pub trait Classify: Clone {
    /// The endpoint of `req`.
    fn classify<B>(&self, req: &Request<B>, recorder: &Recorder) -> EndpointId;
}

/// `"{method} {path}"`, e.g. `GET /users/42`. Fine for gRPC (`POST /pkg.Svc/Method`) and
/// fixed paths; for paths with ids, prefer a router-aware classifier. The recorder's
/// cardinality cap bounds memory either way.
#[derive(Clone, Copy, Debug, Default)]
pub struct MethodAndPath;

impl Classify for MethodAndPath {
    #[inline]
    fn classify<B>(&self, req: &Request<B>, recorder: &Recorder) -> EndpointId {
        recorder.endpoint(req.method().as_str(), req.uri().path())
    }
}

/// axum's `MatchedPath` (`GET /users/{id}`) when the request carries it, else method and path.
/// `MatchedPath` is present when SeerLayer is added with `Router::layer` or
/// `Router::route_layer`.
#[cfg(feature = "axum")]
#[derive(Clone, Copy, Debug, Default)]
pub struct AxumRoute;

#[cfg(feature = "axum")]
impl Classify for AxumRoute {
    #[inline]
    fn classify<B>(&self, req: &Request<B>, recorder: &Recorder) -> EndpointId {
        match req.extensions().get::<axum::extract::MatchedPath>() {
            Some(p) => recorder.endpoint(req.method().as_str(), p.as_str()),
            None => MethodAndPath.classify(req, recorder),
        }
    }
}

/// A classifier from a closure returning the route template (e.g. from your router), or `None`
/// to fall back to the path.
#[derive(Clone, Copy, Debug)]
pub struct RouteFn<F>(pub F);

impl<F> Classify for RouteFn<F>
where
    F: for<'a> Fn(&'a http::Method, &'a http::Uri, &'a http::Extensions) -> Option<&'a str> + Clone,
{
    #[inline]
    fn classify<B>(&self, req: &Request<B>, recorder: &Recorder) -> EndpointId {
        let route = (self.0)(req.method(), req.uri(), req.extensions()).unwrap_or(req.uri().path());
        recorder.endpoint(req.method().as_str(), route)
    }
}
