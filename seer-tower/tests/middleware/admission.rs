use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Request, Response, StatusCode};
use seer_proto::AdviceReply;
use seer_sdk::{Advice, Builder, LimiterConfig, LimiterKind, Shed, ShedReason};
use seer_tower::SeerLayer;
use tokio_test::assert_ready_ok;
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_test::mock;

use crate::{flush, pipeline, total};

fn unix_ns_in(d: Duration) -> u64 {
    (SystemTime::now() + d)
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn unix_ns_ago(d: Duration) -> u64 {
    (SystemTime::now() - d)
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn advice(admit: f32, expires_at_unix_ns: u64) -> Advice {
    Advice::from(AdviceReply {
        admit_fraction: admit,
        expires_at_unix_ns,
        ..Default::default()
    })
}

async fn ok(_req: Request<String>) -> Result<Response<String>, Infallible> {
    Ok(Response::new(String::new()))
}

/// Tolerance: 4000 Bernoulli trials at p = 0.7 have a standard deviation of 0.0072; we allow
/// 0.03 (more than 4 sigma).
#[tokio::test(flavor = "current_thread")]
async fn sheds_one_minus_admit_fraction_within_tolerance() {
    const N: usize = 4000;
    let (recorder, mut worker, exp) = pipeline(Builder::new("svc").with_sample_ratio(1.0));
    recorder.set_advice(advice(0.3, unix_ns_in(Duration::from_secs(60))));
    let mut svc = SeerLayer::new(recorder).layer(service_fn(ok));
    let mut shed = 0;
    for _ in 0..N {
        let resp = svc
            .ready()
            .await
            .unwrap()
            .call(Request::get("/a").body(String::new()).unwrap())
            .await
            .unwrap();
        if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(resp.headers()["retry-after"], "1");
            shed += 1;
        }
    }
    let frac = shed as f64 / N as f64;
    assert!((frac - 0.7).abs() < 0.03, "shed fraction {frac}");
    assert_eq!(recorder.in_flight(), 0);
    flush(&mut worker);
    assert_eq!(total(&exp, |w| w.shed), shed as u64);
    assert_eq!(total(&exp, |w| w.arrivals), N as u64);
    assert_eq!(total(&exp, |w| w.completions), (N - shed) as u64);
    // Shed spans are always exported.
    assert_eq!(exp.spans().iter().filter(|s| s.is_shed()).count(), shed);
}

#[tokio::test(flavor = "current_thread")]
async fn expired_or_missing_advice_fails_open() {
    let (recorder, _worker, _exp) = pipeline(Builder::new("svc").with_sample_ratio(1.0));
    let mut svc = SeerLayer::new(recorder).layer(service_fn(ok));
    for _ in 0..200 {
        let r = svc
            .ready()
            .await
            .unwrap()
            .call(Request::get("/a").body(String::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "no advice: admit");
    }
    recorder.set_advice(advice(0.0, unix_ns_ago(Duration::from_millis(1))));
    for _ in 0..200 {
        let r = svc
            .ready()
            .await
            .unwrap()
            .call(Request::get("/a").body(String::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "expired advice: admit");
    }
    recorder.set_advice(advice(0.0, unix_ns_in(Duration::from_secs(60))));
    let r = svc
        .ready()
        .await
        .unwrap()
        .call(Request::get("/a").body(String::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "valid advice admitting nothing");
}

#[tokio::test(flavor = "current_thread")]
async fn lowest_priority_is_shed_first() {
    let (recorder, mut worker, exp) = pipeline(Builder::new("svc").with_sample_ratio(1.0));
    let layer = SeerLayer::new(recorder).with_priority(|req: &Request<String>| {
        if req.headers().contains_key("x-low") {
            10
        } else {
            200
        }
    });
    let mut svc = layer.layer(service_fn(ok));
    let send = |low: bool| {
        let mut b = Request::get("/p");
        if low {
            b = b.header("x-low", "1");
        }
        b.body(String::new()).unwrap()
    };
    // Learn the priority mix (half low, half high), then receive advice to admit 60%.
    for i in 0..1000 {
        svc.ready()
            .await
            .unwrap()
            .call(send(i % 2 == 0))
            .await
            .unwrap();
    }
    exp.reply_with(AdviceReply {
        admit_fraction: 0.6,
        expires_at_unix_ns: unix_ns_in(Duration::from_secs(60)),
        ..Default::default()
    });
    flush(&mut worker);
    assert!(recorder.advice().is_some());
    let (mut low_shed, mut high_shed) = (0, 0);
    for i in 0..2000 {
        let low = i % 2 == 0;
        let r = svc.ready().await.unwrap().call(send(low)).await.unwrap();
        if r.status() == 503 {
            if low { low_shed += 1 } else { high_shed += 1 }
        }
    }
    // 40% of traffic shed = 80% of the low class, none of the high class.
    assert_eq!(high_shed, 0);
    let frac = low_shed as f64 / 1000.0;
    assert!((frac - 0.8).abs() < 0.05, "low shed fraction {frac}");
}

#[tokio::test(flavor = "current_thread")]
async fn shed_response_is_customisable() {
    let (recorder, _w, _e) = pipeline(Builder::new("svc").with_sample_ratio(1.0));
    recorder.set_advice(advice(0.0, unix_ns_in(Duration::from_secs(60))));
    let layer = SeerLayer::new(recorder).with_on_shed(|shed: &Shed| {
        assert_eq!(shed.reason, ShedReason::Advice);
        let mut r = Response::new("slow down".to_owned());
        *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        r
    });
    let r = layer
        .layer(service_fn(ok))
        .oneshot(Request::get("/").body(String::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.body(), "slow down");
}

#[tokio::test(flavor = "current_thread")]
async fn max_in_flight_is_enforced() {
    let (recorder, _w, _e) = pipeline(
        Builder::new("svc")
            .with_sample_ratio(1.0)
            .with_max_in_flight(2),
    );
    let (mut svc, mut handle) =
        mock::spawn_layer::<Request<String>, Response<String>, _>(SeerLayer::new(recorder));
    handle.allow(3);
    let mut futs = Vec::new();
    for _ in 0..3 {
        assert_ready_ok!(svc.poll_ready());
        futs.push(svc.call(Request::get("/").body(String::new()).unwrap()));
    }
    let third = futs.pop().unwrap().await.unwrap();
    assert_eq!(third.status(), 503);
    assert_eq!(recorder.in_flight(), 2);
    for _ in 0..2 {
        let (_r, send) = handle.next_request().await.unwrap();
        send.send_response(Response::new(String::new()));
    }
    for f in futs {
        assert_eq!(f.await.unwrap().status(), 200);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn local_limiter_applies_without_advice() {
    let limiter = LimiterConfig::new(LimiterKind::aimd())
        .with_initial(1)
        .with_bounds(1, 10);
    let (recorder, _w, _e) = pipeline(Builder::new("svc").with_limiter(limiter));
    assert_eq!(recorder.limit(), Some(1));
    let (mut svc, mut handle) = mock::spawn_layer::<Request<String>, Response<String>, _>(
        SeerLayer::new(recorder).with_on_shed(|s: &Shed| {
            assert_eq!(s.reason, ShedReason::Limiter);
            let mut r = Response::new(String::new());
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            r
        }),
    );
    handle.allow(2);
    assert_ready_ok!(svc.poll_ready());
    let first = svc.call(Request::get("/").body(String::new()).unwrap());
    assert_ready_ok!(svc.poll_ready());
    let second = svc.call(Request::get("/").body(String::new()).unwrap());
    assert_eq!(second.await.unwrap().status(), 503);
    let (_r, send) = handle.next_request().await.unwrap();
    send.send_response(Response::new(String::new()));
    assert_eq!(first.await.unwrap().status(), 200);
}
