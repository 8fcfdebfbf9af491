"""Exports spans from the real OpenTelemetry Python SDK to a Seer collector.

Protobuf: the SDK's own OTLP/HTTP exporter. JSON: the same SDK spans encoded by the SDK's
OTLP encoder, turned into OTLP/JSON (hex ids, integer enums) and posted as application/json.
Prints {"protobuf_trace": "<hex>", "json_trace": "<hex>"}.
"""
import base64
import json
import sys
import urllib.request

from google.protobuf.json_format import MessageToDict
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

endpoint = sys.argv[1]
token = sys.argv[2] if len(sys.argv) > 2 else ""
headers = {"authorization": "Bearer " + token} if token else {}


def spans(provider, name):
    tracer = provider.get_tracer("seer-test")
    with tracer.start_as_current_span(name, kind=trace.SpanKind.SERVER) as root:
        root.set_attribute("http.route", name)
        with tracer.start_as_current_span("call backend", kind=trace.SpanKind.CLIENT):
            pass
    return format(root.get_span_context().trace_id, "032x")


# 1. Protobuf through the SDK's exporter.
results = []


class Checked(OTLPSpanExporter):
    def export(self, batch):
        r = super().export(batch)
        results.append(r)
        return r


exporter = Checked(endpoint=endpoint + "/v1/traces", headers=headers)
provider = TracerProvider(resource=Resource.create({"service.name": "py-frontend"}))
provider.add_span_processor(SimpleSpanProcessor(exporter))
pb_trace = spans(provider, "GET /py-protobuf")
provider.shutdown()
assert results and all(r == SpanExportResult.SUCCESS for r in results), results

# 2. OTLP/JSON of SDK spans.
memory = InMemorySpanExporter()
provider = TracerProvider(resource=Resource.create({"service.name": "py-json"}))
provider.add_span_processor(SimpleSpanProcessor(memory))
js_trace = spans(provider, "GET /py-json")
provider.shutdown()
body = MessageToDict(encode_spans(memory.get_finished_spans()), use_integers_for_enums=True)


def hexify(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("traceId", "spanId", "parentSpanId") and isinstance(v, str):
                node[k] = base64.b64decode(v).hex()
            else:
                hexify(v)
    elif isinstance(node, list):
        for v in node:
            hexify(v)


hexify(body)
req = urllib.request.Request(
    endpoint + "/v1/traces",
    data=json.dumps(body).encode(),
    headers={"content-type": "application/json", **headers},
    method="POST",
)
with urllib.request.urlopen(req) as resp:
    assert resp.status == 200, resp.status

print(json.dumps({"protobuf_trace": pb_trace, "json_trace": js_trace}))
