//! [`SeerLayer`]: builds [`Seer`] services.

use seer_sdk::Recorder;
use tower_layer::Layer;

use crate::callbacks::DefaultOnShed;
use crate::classify::MethodAndPath;
use crate::service::Seer;

/// The server-side middleware: records every request, extracts W3C trace context, and admits
/// or sheds on the collector's advice. See the [crate docs](crate).
#[derive(Clone, Debug)]
pub struct SeerLayer<C = MethodAndPath, P = (), Sh = DefaultOnShed> {
    pub(crate) recorder: Recorder,
    pub(crate) classify: C,
    pub(crate) priority: P,
    pub(crate) on_shed: Sh,
    pub(crate) extension: bool,
}

impl SeerLayer {
    /// A layer recording into `recorder`, naming endpoints by method and path, with equal
    /// priorities and a plain `503` for shed requests.
    pub fn new(recorder: Recorder) -> Self {
        Self {
            recorder,
            classify: MethodAndPath,
            priority: (),
            on_shed: DefaultOnShed,
            extension: true,
        }
    }
}

impl<C, P, Sh> SeerLayer<C, P, Sh> {
    /// Uses `classify` to name endpoints (e.g. [`crate::classify::AxumRoute`]).
    pub fn with_classifier<C2>(self, classify: C2) -> SeerLayer<C2, P, Sh> {
        SeerLayer {
            recorder: self.recorder,
            classify,
            priority: self.priority,
            on_shed: self.on_shed,
            extension: self.extension,
        }
    }

    /// Uses `priority` (a `Fn(&Request<B>) -> u8`) for admission: the lowest are shed first.
    pub fn with_priority<P2>(self, priority: P2) -> SeerLayer<C, P2, Sh> {
        SeerLayer {
            recorder: self.recorder,
            classify: self.classify,
            priority,
            on_shed: self.on_shed,
            extension: self.extension,
        }
    }

    /// Uses `on_shed` (a `Fn(&Shed) -> Response<B>`) to answer shed requests.
    pub fn with_on_shed<Sh2>(self, on_shed: Sh2) -> SeerLayer<C, P, Sh2> {
        SeerLayer {
            recorder: self.recorder,
            classify: self.classify,
            priority: self.priority,
            on_shed,
            extension: self.extension,
        }
    }

    /// Whether to insert the request's [`seer_sdk::SpanContext`] into its extensions (default
    /// on; costs one small allocation per request in `http::Extensions`).
    pub fn with_context_extension(mut self, on: bool) -> Self {
        self.extension = on;
        self
    }

    /// The recorder.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }
}

impl<S, C: Clone, P: Clone, Sh: Clone> Layer<S> for SeerLayer<C, P, Sh> {
    type Service = Seer<S, C, P, Sh>;

    fn layer(&self, inner: S) -> Self::Service {
        Seer::new(inner, self.clone())
    }
}
