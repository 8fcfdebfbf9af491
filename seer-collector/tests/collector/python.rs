//! A real client: the OpenTelemetry Python SDK (installed into the workspace's git-ignored
//! `.venv` by `cargo xtask test`, or `SEER_PYTHON=/path/to/python`) exports spans as protobuf
//! and JSON; the collector serves them back by trace id.

use std::path::PathBuf;

use crate::common::*;

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("SEER_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        venv.exists(),
        "no Python venv at {}: run `cargo xtask test` (it installs opentelemetry-sdk and \
         opentelemetry-exporter-otlp-proto-http there) or set SEER_PYTHON",
        venv.display()
    );
    venv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_otel_sdk_protobuf_and_json() {
    let h = start(|c| c.ingest_token = Some("py-token".into())).await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/collector/otel_client.py");
    let url = format!("http://{}", h.addr);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python())
            .arg(&script)
            .arg(url)
            .arg("py-token")
            .output()
            .expect("python runs")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "python client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (key, service) in [("protobuf_trace", "py-frontend"), ("json_trace", "py-json")] {
        let id = ids[key].as_str().unwrap();
        let r = get(h.addr, &format!("/v1/traces/{id}")).await;
        assert_eq!(r.status, 200, "{key} {id}");
        let v = r.json();
        assert_eq!(
            v["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"],
            service
        );
        let spans = v["resourceSpans"][0]["scopeSpans"][0]["spans"]
            .as_array()
            .unwrap();
        assert_eq!(spans.len(), 2, "{key}: server + client span");
        assert!(spans.iter().all(|s| s["traceId"] == id));
    }
    h.running.shutdown().await.unwrap();
}
