//! Encoding finished spans as OTLP/HTTP protobuf (`ExportTraceServiceRequest`).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource as OtlpResource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};

use crate::advice::DEFAULT_PRIORITY;
use crate::attr;
use crate::record::SpanKind;
use crate::span::{FinishedSpan, Resource};

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn int(key: &str, v: u64) -> KeyValue {
    kv(
        key,
        any_value::Value::IntValue(i64::try_from(v).unwrap_or(i64::MAX)),
    )
}

/// The OTLP resource for `resource`: `service.name`, `host.name`, `process.pid`, `seer.cgroup`.
pub fn otlp_resource(resource: &Resource) -> OtlpResource {
    let mut attributes = vec![kv(
        attr::SERVICE_NAME,
        any_value::Value::StringValue(resource.service.clone()),
    )];
    if !resource.node.is_empty() {
        attributes.push(kv(
            attr::HOST_NAME,
            any_value::Value::StringValue(resource.node.clone()),
        ));
    }
    attributes.push(int(attr::PROCESS_PID, u64::from(resource.pid)));
    if !resource.cgroup.is_empty() {
        attributes.push(kv(
            attr::CGROUP,
            any_value::Value::StringValue(resource.cgroup.clone()),
        ));
    }
    OtlpResource {
        attributes,
        ..Default::default()
    }
}

/// One OTLP span for `s`.
pub fn otlp_span(s: &FinishedSpan) -> Span {
    let kind = match s.kind {
        SpanKind::Server => span::SpanKind::Server,
        SpanKind::Client => span::SpanKind::Client,
        SpanKind::Internal => span::SpanKind::Internal,
    };
    let mut attributes = Vec::with_capacity(8);
    if s.status != 0 {
        attributes.push(int(attr::HTTP_STATUS, u64::from(s.status)));
    }
    if s.kind == SpanKind::Server {
        attributes.push(int(attr::QUEUE_WAIT_NS, s.queue_wait_ns));
        attributes.push(int(attr::SELF_NS, s.self_ns));
        attributes.push(int(attr::INFLIGHT, u64::from(s.inflight)));
        attributes.push(int(attr::LOCAL_INFLIGHT, u64::from(s.local_inflight)));
        if s.priority != DEFAULT_PRIORITY {
            attributes.push(int(attr::PRIORITY, u64::from(s.priority)));
        }
    }
    if s.is_shed() {
        attributes.push(kv(attr::SHED, any_value::Value::BoolValue(true)));
    }
    if s.is_cancelled() {
        attributes.push(kv(attr::CANCELLED, any_value::Value::BoolValue(true)));
    }
    if s.slow {
        attributes.push(kv(attr::SLOW, any_value::Value::BoolValue(true)));
    }
    let error = s.is_error() || s.is_shed();
    // OTLP span flags: low byte = W3C trace flags; bit 8 = "has is_remote", bit 9 = is_remote.
    let mut flags = u32::from(u8::from(s.is_sampled()));
    flags |= 0x100;
    if s.has_remote_parent() {
        flags |= 0x200;
    }
    Span {
        trace_id: s.trace_id.to_bytes().to_vec(),
        span_id: s.span_id.to_bytes().to_vec(),
        parent_span_id: if s.parent_span_id.is_valid() {
            s.parent_span_id.to_bytes().to_vec()
        } else {
            Vec::new()
        },
        flags,
        name: s.name.to_string(),
        kind: kind as i32,
        start_time_unix_nano: s.start_unix_ns,
        end_time_unix_nano: s.end_unix_ns,
        attributes,
        status: error.then(|| Status {
            message: if s.is_shed() {
                "shed".to_owned()
            } else {
                String::new()
            },
            code: status::StatusCode::Error as i32,
        }),
        ..Default::default()
    }
}

/// The request body for `spans` from `resource`.
pub fn encode_request(resource: &Resource, spans: &[FinishedSpan]) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(otlp_resource(resource)),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "seer-sdk".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    ..Default::default()
                }),
                spans: spans.iter().map(otlp_span).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}
