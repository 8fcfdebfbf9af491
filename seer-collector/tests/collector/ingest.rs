//! OTLP ingest: formats, partial success and every kind of bad input.

use std::io::Write;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;

use crate::common::*;

const PB: &str = "application/x-protobuf";
const JSON: &str = "application/json";

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_json_and_gzip_are_stored_and_served_back() {
    let h = start(|_| {}).await;
    let t0 = now_ns();
    // Protobuf.
    let trace = [0x11; 16];
    let req = request_of(
        "frontend",
        vec![
            span(trace, 1, 0, 2, "GET /home", t0, 5_000_000),
            span(trace, 2, 1, 3, "GET /c", t0 + 1_000_000, 3_000_000),
        ],
    );
    let r = post(h.addr, "/v1/traces", PB, req.encode_to_vec()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], PB);
    let resp = ExportTraceServiceResponse::decode(r.body.as_ref()).unwrap();
    assert!(resp.partial_success.is_none());
    // JSON (hex ids) from another service in the same trace.
    let json = serde_json::to_vec(&request_of(
        "c",
        vec![span(trace, 3, 2, 2, "GET /c", t0 + 1_100_000, 2_800_000)],
    ))
    .unwrap();
    assert!(String::from_utf8_lossy(&json).contains(&hex(&trace)));
    let r = post(h.addr, "/v1/traces", JSON, json).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.headers["content-type"], JSON);
    // Gzip.
    let trace2 = [0x22; 16];
    let body = gzip(
        &request_of("frontend", vec![span(trace2, 9, 0, 2, "GET /x", t0, 1_000)]).encode_to_vec(),
    );
    let r = request(
        "POST",
        h.addr,
        "/v1/traces",
        &[("content-type", PB), ("content-encoding", "gzip")],
        body,
    )
    .await;
    assert_eq!(r.status, 200);

    let got = get(h.addr, &format!("/v1/traces/{}", hex(&trace))).await;
    assert_eq!(got.status, 200);
    let v = got.json();
    let rs = v["resourceSpans"].as_array().unwrap();
    assert_eq!(rs.len(), 2, "two services: {v}");
    let total: usize = rs
        .iter()
        .map(|r| r["scopeSpans"][0]["spans"].as_array().unwrap().len())
        .sum();
    assert_eq!(total, 3);
    assert!(
        v.to_string().contains(&hex(&trace)),
        "ids served back in hex"
    );
    assert_eq!(
        get(h.addr, &format!("/v1/traces/{}", hex(&trace2)))
            .await
            .status,
        200
    );
    assert_eq!(
        get(h.addr, &format!("/v1/traces/{}", hex(&[0x33; 16])))
            .await
            .status,
        404
    );
    assert_eq!(get(h.addr, "/v1/traces/not-hex").await.status, 400);
    let list = get(h.addr, "/v1/traces?service=frontend&from=-1m")
        .await
        .json();
    assert_eq!(list["trace_ids"].as_array().unwrap().len(), 2);
    let m = String::from_utf8(get(h.addr, "/metrics").await.body.to_vec()).unwrap();
    assert!(m.contains("seer_spans_accepted_total 4"), "{m}");
    h.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_ids_give_partial_success_or_400() {
    let h = start(|_| {}).await;
    let t0 = now_ns();
    let mut bad = span([0; 16], 5, 0, 2, "GET /", t0, 10);
    bad.trace_id = vec![0; 16];
    let mut short = span([7; 16], 6, 0, 2, "GET /", t0, 10);
    short.span_id = vec![1, 2, 3];
    let req = request_of(
        "s",
        vec![span([7; 16], 1, 0, 2, "GET /", t0, 10), bad.clone(), short],
    );
    let r = post(h.addr, "/v1/traces", PB, req.encode_to_vec()).await;
    assert_eq!(r.status, 200);
    let ps = ExportTraceServiceResponse::decode(r.body.as_ref())
        .unwrap()
        .partial_success
        .unwrap();
    assert_eq!(ps.rejected_spans, 2);
    assert!(!ps.error_message.is_empty());
    // JSON partial success in JSON.
    let req = request_of(
        "s",
        vec![span([8; 16], 1, 0, 2, "GET /", t0, 10), bad.clone()],
    );
    let r = post(
        h.addr,
        "/v1/traces",
        JSON,
        serde_json::to_vec(&req).unwrap(),
    )
    .await;
    assert_eq!(r.status, 200);
    let rejected = &r.json()["partialSuccess"]["rejectedSpans"];
    assert!(rejected == 1 || rejected == "1", "{rejected}");
    // Every span invalid: 400.
    let r = post(
        h.addr,
        "/v1/traces",
        PB,
        request_of("s", vec![bad]).encode_to_vec(),
    )
    .await;
    assert_eq!(r.status, 400);
    h.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_4xx_and_crashes_nothing() {
    let h = start(|c| c.max_body_bytes = 1 << 20).await;
    let good = request_of("s", vec![span([1; 16], 1, 0, 2, "GET /", now_ns(), 10)]).encode_to_vec();
    // Truncated protobuf.
    let r = post(h.addr, "/v1/traces", PB, good[..good.len() - 3].to_vec()).await;
    assert_eq!(r.status, 400);
    assert!(r.headers.get("retry-after").is_none());
    // Wrong content type.
    assert_eq!(
        post(h.addr, "/v1/traces", "text/plain", good.clone())
            .await
            .status,
        415
    );
    assert_eq!(
        request("POST", h.addr, "/v1/traces", &[], good.clone())
            .await
            .status,
        415
    );
    // Unknown encoding.
    let r = request(
        "POST",
        h.addr,
        "/v1/traces",
        &[("content-type", PB), ("content-encoding", "br")],
        good.clone(),
    )
    .await;
    assert_eq!(r.status, 415);
    // Invalid ids in JSON (not hex).
    let json = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz","spanId":"0102030405060708","name":"x"}]}]}]}"#;
    assert_eq!(post(h.addr, "/v1/traces", JSON, json).await.status, 400);
    // Deeply nested JSON.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(post(h.addr, "/v1/traces", JSON, deep).await.status, 400);
    let nested_attr = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"k","value":{}{{"stringValue":"x"}}{}}}]}}}}]}}"#,
        r#"{"arrayValue":{"values":["#.repeat(200),
        "]}}".repeat(200)
    );
    assert_eq!(
        post(h.addr, "/v1/traces", JSON, nested_attr).await.status,
        400
    );
    // Huge JSON (over the 1 MiB limit).
    let huge = format!(r#"{{"resourceSpans":[],"pad":"{}"}}"#, "a".repeat(2 << 20));
    assert_eq!(post(h.addr, "/v1/traces", JSON, huge).await.status, 413);
    // Gzip bomb: 64 MiB of zeros in ~64 KiB.
    let bomb = gzip(&vec![0u8; 64 << 20]);
    assert!(bomb.len() < 1 << 20);
    let r = request(
        "POST",
        h.addr,
        "/v1/traces",
        &[("content-type", PB), ("content-encoding", "gzip")],
        bomb,
    )
    .await;
    assert_eq!(r.status, 413);
    // Corrupt gzip.
    let r = request(
        "POST",
        h.addr,
        "/v1/traces",
        &[("content-type", PB), ("content-encoding", "gzip")],
        b"\x1f\x8b\x08garbage".to_vec(),
    )
    .await;
    assert_eq!(r.status, 400);
    // Oversized raw body.
    assert_eq!(
        post(h.addr, "/v1/traces", PB, vec![0u8; 2 << 20])
            .await
            .status,
        413
    );
    // Garbage protobuf.
    assert_eq!(
        post(h.addr, "/v1/traces", PB, b"\xff\xff\xff\xff".to_vec())
            .await
            .status,
        400
    );
    // Still alive and still ingesting.
    assert_eq!(get(h.addr, "/healthz").await.status, 200);
    assert_eq!(post(h.addr, "/v1/traces", PB, good).await.status, 200);
    let m = String::from_utf8(get(h.addr, "/metrics").await.body.to_vec()).unwrap();
    assert!(
        m.contains("seer_requests_rejected_total{status=\"413\"} 3"),
        "{m}"
    );
    h.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_memory_budget_is_503_with_retry_after() {
    // 16 MiB limit -> 8 MiB ingest budget; a 10 MiB body (under the 32 MiB body limit) cannot fit.
    let h = start(|c| {
        c.memory_limit_mb = 16;
        c.max_body_bytes = 32 << 20;
    })
    .await;
    let r = post(h.addr, "/v1/traces", PB, vec![0u8; 10 << 20]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.headers["retry-after"], "1");
    // The budget was released: a normal request goes through.
    let good = request_of("s", vec![span([1; 16], 1, 0, 2, "GET /", now_ns(), 10)]).encode_to_vec();
    assert_eq!(post(h.addr, "/v1/traces", PB, good).await.status, 200);
    h.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_are_enforced() {
    let h = start(|c| {
        c.ingest_token = Some("in-secret".into());
        c.admin_token = Some("ad-secret".into());
    })
    .await;
    let good = request_of("s", vec![span([1; 16], 1, 0, 2, "GET /", now_ns(), 10)]).encode_to_vec();
    assert_eq!(
        post(h.addr, "/v1/traces", PB, good.clone()).await.status,
        401
    );
    let r = request(
        "POST",
        h.addr,
        "/v1/traces",
        &[("content-type", PB), ("authorization", "Bearer ad-secret")],
        good.clone(),
    )
    .await;
    assert_eq!(r.status, 401, "the admin token is not an ingest token");
    let r = request(
        "POST",
        h.addr,
        "/v1/traces",
        &[("content-type", PB), ("authorization", "Bearer in-secret")],
        good,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        post(h.addr, "/v1/seer/windows", PB, vec![]).await.status,
        401
    );
    assert_eq!(post(h.addr, "/v1/labels", JSON, "{}").await.status, 401);
    for path in [
        "/v1/services",
        "/v1/graph",
        "/metrics",
        "/v1/predictions",
        "/v1/alerts",
        "/v1/advice/s",
    ] {
        assert_eq!(get(h.addr, path).await.status, 401, "{path}");
        let r = request(
            "GET",
            h.addr,
            path,
            &[("authorization", "Bearer in-secret")],
            bytes::Bytes::new(),
        )
        .await;
        assert_eq!(r.status, 401, "{path} with the ingest token");
        let r = request(
            "GET",
            h.addr,
            path,
            &[("authorization", "Bearer ad-secret")],
            bytes::Bytes::new(),
        )
        .await;
        assert_eq!(r.status, 200, "{path}");
    }
    assert_eq!(get(h.addr, "/healthz").await.status, 200);
    assert_eq!(get(h.addr, "/readyz").await.status, 200);
    h.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_get_503_with_retry_after() {
    let h = start(|c| c.max_connections = 1).await;
    // Hold the only slot with a request that never finishes its headers.
    let hold = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    hold.writable().await.unwrap();
    hold.try_write(b"POST /v1/traces HTTP/1.1\r\nhost: x\r\n")
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let good = request_of("s", vec![span([1; 16], 1, 0, 2, "GET /", now_ns(), 10)]).encode_to_vec();
    let r = post(h.addr, "/v1/traces", PB, good.clone()).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.headers["retry-after"], "1");
    drop(hold);
    // Once the slot is free, requests go through again.
    assert!(
        eventually(20, || async {
            post(h.addr, "/v1/traces", PB, good.clone()).await.status == 200
        })
        .await
    );
    h.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_services_or_a_too_long_name_is_400() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    let h = start(|_| {}).await;
    let t0 = now_ns();
    // 4097 distinct services in one request (the store indexes a blob's services with 16 bits;
    // ingest stops far below that).
    let mut req = ExportTraceServiceRequest::default();
    for i in 0..=4096u64 {
        let mut r = request_of(
            &format!("svc-{i}"),
            vec![span([7; 16], i + 1, 0, 2, "GET /", t0, 10)],
        );
        req.resource_spans.append(&mut r.resource_spans);
    }
    let r = post(h.addr, "/v1/traces", PB, req.encode_to_vec()).await;
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        String::from_utf8_lossy(&r.body).contains("more than 4096 distinct services"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    // A service name over 256 bytes, in protobuf and JSON.
    let long = request_of(
        &"x".repeat(257),
        vec![span([8; 16], 1, 0, 2, "GET /", t0, 10)],
    );
    let r = post(h.addr, "/v1/traces", PB, long.encode_to_vec()).await;
    assert_eq!(r.status, 400);
    assert!(
        String::from_utf8_lossy(&r.body).contains("service.name is 257 bytes"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let r = post(
        h.addr,
        "/v1/traces",
        JSON,
        serde_json::to_vec(&long).unwrap(),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        get(h.addr, &format!("/v1/traces/{}", hex(&[8; 16])))
            .await
            .status,
        404,
        "nothing of a refused request is stored"
    );
    // 256 bytes is fine.
    let ok = request_of(
        &"y".repeat(256),
        vec![span([9; 16], 1, 0, 2, "GET /", t0, 10)],
    );
    assert_eq!(
        post(h.addr, "/v1/traces", PB, ok.encode_to_vec())
            .await
            .status,
        200
    );
    h.running.shutdown().await.unwrap();
}

/// Writes all of `data` to a raw connection.
async fn write_raw(stream: &tokio::net::TcpStream, mut data: &[u8]) {
    while !data.is_empty() {
        stream.writable().await.unwrap();
        match stream.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("write: {e}"),
        }
    }
}

/// Reads a raw connection until the server closes it (`None` if it is still open after 30 s,
/// a guard against hanging rather than a timing expectation).
async fn read_until_closed(stream: &tokio::net::TcpStream) -> Option<String> {
    let mut out = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            if stream.readable().await.is_err() {
                return;
            }
            match stream.try_read(&mut buf) {
                Ok(0) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), read)
        .await
        .ok()?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_hold_little_budget_and_get_408_after_the_deadline() {
    // 128 MiB limit -> 32 MiB ingest budget. Two clients each declare a 16 MiB body (under the
    // 32 MiB body limit) and stall after a few bytes: together they declare the whole budget.
    let h = start(|c| {
        c.memory_limit_mb = 128;
        c.max_body_bytes = 32 << 20;
        c.body_read_timeout_ms = 1_500;
    })
    .await;
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: {PB}\r\ncontent-length: {}\r\n\r\n",
        16 << 20
    );
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        write_raw(&s, head.as_bytes()).await;
        write_raw(&s, b"\x0a\x00").await;
        stalled.push(s);
    }
    // Both are being read (each holds its first reservation).
    assert!(
        eventually(20, || async {
            let m = String::from_utf8(get(h.addr, "/metrics").await.body.to_vec()).unwrap();
            metric(&m, "seer_ingest_bytes_in_use") >= f64::from(2 << 20)
        })
        .await
    );
    // Others are still served: the stalled bodies hold a small reservation, not 16 MiB each.
    let good = request_of("s", vec![span([1; 16], 1, 0, 2, "GET /", now_ns(), 10)]).encode_to_vec();
    let r = post(h.addr, "/v1/traces", PB, good.clone()).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // At the deadline each stalled client gets 408 and its connection closed...
    for s in &stalled {
        let answer = read_until_closed(s)
            .await
            .expect("stalled connection kept open");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("not received within 1500 ms"), "{answer}");
    }
    // ...and the budget is released.
    assert!(
        eventually(20, || async {
            let m = String::from_utf8(get(h.addr, "/metrics").await.body.to_vec()).unwrap();
            metric(&m, "seer_ingest_bytes_in_use") == 0.0
        })
        .await
    );
    assert_eq!(post(h.addr, "/v1/traces", PB, good).await.status, 200);
    assert_eq!(h.running.metrics().requests_rejected(408), 2);
    h.running.shutdown().await.unwrap();
}
