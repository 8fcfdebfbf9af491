//! Callbacks: admission priority and the response to a shed request.

use http::{HeaderValue, Request, Response, StatusCode, header::RETRY_AFTER};
use seer_sdk::{DEFAULT_PRIORITY, Shed};

/// Gives each request an admission priority: higher is kept longer when shedding. Called once
/// per request on the hot path.
pub trait Priority<B>: Clone {
    /// The priority of `req`.
    fn priority(&self, req: &Request<B>) -> u8;
}

/// Every request has [`DEFAULT_PRIORITY`].
impl<B> Priority<B> for () {
    #[inline]
    fn priority(&self, _req: &Request<B>) -> u8 {
        DEFAULT_PRIORITY
    }
}

impl<B, F> Priority<B> for F
where
    F: Fn(&Request<B>) -> u8 + Clone,
{
    #[inline]
    fn priority(&self, req: &Request<B>) -> u8 {
        self(req)
    }
}

/// Builds the response to a shed request. Called only for shed requests.
pub trait OnShed<ResBody>: Clone {
    /// The response for `shed`.
    fn on_shed(&self, shed: &Shed) -> Response<ResBody>;
}

/// `503 Service Unavailable` with `Retry-After` (whole seconds, at least 1) and an empty body.
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultOnShed;

impl<ResBody: Default> OnShed<ResBody> for DefaultOnShed {
    fn on_shed(&self, shed: &Shed) -> Response<ResBody> {
        let mut resp = Response::new(ResBody::default());
        *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        let secs = shed.retry_after.as_secs_f64().ceil().max(1.0) as u64;
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(secs));
        resp
    }
}

impl<ResBody, F> OnShed<ResBody> for F
where
    F: Fn(&Shed) -> Response<ResBody> + Clone,
{
    fn on_shed(&self, shed: &Shed) -> Response<ResBody> {
        self(shed)
    }
}
