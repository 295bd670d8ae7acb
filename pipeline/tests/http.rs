//! The HTTP API: one event decided synchronously, bad events answered with
//! their reason, admin endpoints refused without the bearer token.

mod common;

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use verdict::config::{Config, EngineConfig, HttpConfig, KafkaConfig};
use verdict::engine::Engine;
use verdict::http::AppState;
use verdict::metrics::Metrics;

async fn start(token: Option<&str>) -> std::net::SocketAddr {
    start_with(token).await.0
}

/// The API over the example engine (whose admin interface reloads its
/// rules), with its metrics.
async fn start_with(token: Option<&str>) -> (std::net::SocketAddr, Arc<Metrics>) {
    let config = Config {
        engine: EngineConfig {
            schema: concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/schema.toml").into(),
            max_event_bytes: 65536,
            rules: Some(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/rules").into()),
            rules_watch_ms: 0,
            declared: Some(
                concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/declared.toml").into(),
            ),
            features: Some(
                concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/features.toml").into(),
            ),
        },
        kafka: KafkaConfig::default(),
        http: HttpConfig::default(),
        features: Default::default(),
        model: Some(verdict_models::ModelConfig {
            // A scoring thread that would wait a second for a batch, past
            // the deadline: a request is scored by its own handler.
            max_batch: 65_536,
            max_wait_us: 1_000_000,
            deadline_ms: 500,
            ..verdict_models::ModelConfig::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../models/fraud-gbt.manifest.toml"
            ))
        }),
        history: None,
        workbench: None,
        base: Default::default(),
    };
    let metrics = Arc::new(Metrics::new());
    let engine = Arc::new(Engine::load(&config).unwrap());
    engine.attach_metrics(metrics.clone());
    let state = AppState {
        metrics: metrics.clone(),
        engine: Some(engine),
        admin_token: token.map(verdict::config::Secret::new),
        ready: Default::default(),
        max_body_bytes: 4096,
        max_in_flight: 64,
        backtest: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(verdict::http::serve(listener, state));
    (addr, metrics)
}

/// Sends one HTTP/1.0 request with a body of `content_type`; answers
/// (status, body).
async fn request_typed(
    addr: std::net::SocketAddr,
    content_type: &str,
    body: &[u8],
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/decisions HTTP/1.0\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

use common::http_request as request;

const EVENT: &str = r#"{"event_id":"e-1","event_type":"payment","timestamp":"2026-11-24T08:15:30.250Z","user_id":"u_1","amount":5.0}"#;

/// A user on the block list: denied by `blocked_user`, whatever the score.
const BLOCKED: &str = r#"{"event_id":"e-2","event_type":"payment","timestamp":"2026-11-24T08:15:31.250Z","user_id":"u_009991","amount":5.0}"#;

#[tokio::test]
async fn decides_one_event() {
    let addr = start(None).await;
    let (status, body) = request(addr, "POST", "/v1/decisions", "", EVENT.as_bytes()).await;
    assert_eq!(status, 200, "{body}");
    let d: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(d["event_id"], "e-1");
    assert_eq!(d["decision"], "approve", "a small first payment: {body}");
    assert_eq!(d["hits"], serde_json::json!([]), "{body}");
    assert_eq!(
        d["degraded"], false,
        "scored by the request's handler: {body}"
    );
    assert!(d["scores"]["fraud_score"].as_f64().unwrap() < 0.5, "{body}");

    let (status, body) = request(addr, "POST", "/v1/decisions", "", BLOCKED.as_bytes()).await;
    assert_eq!(status, 200, "{body}");
    let d: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(d["decision"], "deny", "{body}");
    assert_eq!(d["hits"][0]["rule"], "blocked_user", "{body}");
    assert_eq!(
        d["hits"][0]["reason"],
        "account on the fraud team's block list"
    );
}

/// Requests sent together are decided together, each answered with its
/// own decision.
#[tokio::test]
async fn concurrent_requests_each_get_their_own_decision() {
    let addr = start(None).await;
    let requests = (0..50).map(|i| {
        let user = if i % 5 == 0 { "u_009992".to_owned() } else { format!("u_c{i}") };
        let event = format!(
            r#"{{"event_id":"c-{i}","event_type":"payment","timestamp":"2026-11-24T08:15:30.250Z","user_id":"{user}","amount":1.0}}"#
        );
        async move {
            let (status, body) = request(addr, "POST", "/v1/decisions", "", event.as_bytes()).await;
            (i, status, body)
        }
    });
    for (i, status, body) in futures::future::join_all(requests).await {
        assert_eq!(status, 200, "{body}");
        let d: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(d["event_id"], format!("c-{i}"));
        let want = if i % 5 == 0 { "deny" } else { "approve" };
        assert_eq!(d["decision"], want, "{body}");
    }
}

#[tokio::test]
async fn bad_event_is_422_with_its_reason() {
    let addr = start(None).await;
    let (status, body) = request(addr, "POST", "/v1/decisions", "", b"{not json").await;
    assert_eq!(status, 422);
    let d: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(d["kind"], "not_json", "{body}");
    assert!(
        d["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not valid JSON")),
        "{body}"
    );
}

/// A body over the limit (413) and one that is not JSON by its content type
/// (415) answer the same JSON shape as a 422.
#[tokio::test]
async fn refusals_answer_the_same_json_shape() {
    let addr = start(None).await;
    let (status, body) = request(addr, "POST", "/v1/decisions", "", &[b'x'; 10_000]).await;
    assert_eq!(status, 413, "{body}");
    let d: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(d["kind"], "too_large", "{body}");
    assert!(
        d["reason"].as_str().unwrap().contains("4096 bytes"),
        "{body}"
    );

    let (status, body) = request_typed(addr, "text/plain", EVENT.as_bytes()).await;
    assert_eq!(status, 415, "{body}");
    let d: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(d["kind"], "unsupported_media_type", "{body}");
    assert!(
        d["reason"].as_str().unwrap().contains("application/json"),
        "{body}"
    );

    let (status, body) = request(addr, "GET", "/admin/versions", "", b"").await;
    assert_eq!(status, 401);
    let d: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(d["kind"], "unauthorised", "{body}");
}

#[tokio::test]
async fn admin_requires_the_bearer_token() {
    let (addr, metrics) = start_with(Some("s3cret")).await;
    assert_eq!(
        request(addr, "GET", "/admin/versions", "", b"").await.0,
        401
    );
    let wrong = "Authorization: Bearer nope\r\n";
    assert_eq!(
        request(addr, "POST", "/admin/reload/rules", wrong, b"")
            .await
            .0,
        401
    );
    let right = "Authorization: Bearer s3cret\r\n";
    let (status, body) = request(addr, "GET", "/admin/versions", right, b"").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"ruleset_version\":\"rs-"), "{body}");
    let (status, body) = request(addr, "POST", "/admin/reload/rules", right, b"").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("rules reloaded: rs-"), "{body}");
    let text = metrics.render();
    assert!(
        text.contains("verdict_reloads_total{component=\"rules\",result=\"success\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("verdict_info{model_version=\"fraud-gbt-"),
        "{text}"
    );
    let (status, body) = request(addr, "POST", "/admin/reload/model", right, b"").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("model reloaded: fraud-gbt-"), "{body}");
    let text = metrics.render();
    assert!(
        text.contains("verdict_reloads_total{component=\"model\",result=\"success\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn admin_without_a_configured_token_is_401() {
    let addr = start(None).await;
    let any = "Authorization: Bearer \r\n";
    assert_eq!(
        request(addr, "GET", "/admin/versions", any, b"").await.0,
        401
    );
}

/// `POST /v1/explain` answers the champion's score and its top
/// contributions for any event, without deciding it: the same answer
/// twice, and no decision counted (that the store is left unchanged is
/// `features/tests/store.rs`'s).
#[tokio::test]
async fn explains_an_event_without_deciding_it() {
    let (addr, metrics) = start_with(None).await;
    let (status, body) = request(addr, "POST", "/v1/explain?top=3", "", BLOCKED.as_bytes()).await;
    assert_eq!(status, 200, "{body}");
    let e: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(e["event_id"], "e-2");
    assert!(
        e["model_version"]
            .as_str()
            .unwrap()
            .starts_with("fraud-gbt-"),
        "{body}"
    );
    let contributions = e["explanation"].as_array().unwrap();
    assert_eq!(contributions.len(), 3, "{body}");
    let sizes: Vec<f64> = contributions
        .iter()
        .map(|c| c["contribution"].as_f64().unwrap().abs())
        .collect();
    assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{body}");
    assert!(
        contributions
            .iter()
            .any(|c| c["input"] == "event.amount" && c["value"] == 5.0),
        "{body}"
    );
    let score = e["scores"]["fraud_score"].as_f64().unwrap();
    let margin = e["margin"].as_f64().unwrap();
    // A binary classifier's score is the logistic of its margin.
    assert!(
        (score - 1.0 / (1.0 + (-margin).exp())).abs() < 1e-5,
        "{body}"
    );
    let (_, again) = request(addr, "POST", "/v1/explain?top=3", "", BLOCKED.as_bytes()).await;
    assert_eq!(again, body);
    // Nothing was decided.
    let decided = |outcome: &str| {
        let text = metrics.render();
        let line = format!("verdict_decisions_total{{outcome=\"{outcome}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(line.as_str()).map(str::to_owned))
            .unwrap_or_else(|| panic!("no {line} in {text}"))
    };
    assert_eq!(decided("deny"), "0");
    let (status, body) = request(addr, "POST", "/v1/decisions", "", BLOCKED.as_bytes()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(decided("deny"), "1");

    let (status, body) = request(addr, "POST", "/v1/explain", "", b"{\"event_id\":").await;
    assert_eq!(status, 422, "{body}");
    let refusal: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(refusal["kind"], "not_json", "{body}");
}
