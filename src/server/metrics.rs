//! Prometheus metrics: HTTP-side counters here, engine-side ones in
//! [`crate::engine::EngineMetrics`], all in one registry served at `/metrics`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::engine::EngineMetrics;

/// HTTP metrics and the registry.
#[derive(Clone)]
pub struct ServerMetrics {
    pub registry: Registry,
    pub engine: EngineMetrics,
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    /// Requests refused with 429.
    pub rejected: IntCounter,
    /// Keys/values reserved by admitted generations, and the budget (set when scraped).
    pub kv_reserved: IntGauge,
    pub kv_budget: IntGauge,
}

impl ServerMetrics {
    /// Builds and registers every metric.
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let engine = EngineMetrics::new(&registry)?;
        let requests = IntCounterVec::new(
            Opts::new(
                "self_judge_requests_total",
                "HTTP requests by route and status",
            ),
            &["route", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "self_judge_request_duration_seconds",
                "HTTP request latency",
            )
            .buckets(prometheus::exponential_buckets(0.005, 2.0, 16)?),
            &["route"],
        )?;
        let rejected = IntCounter::new(
            "self_judge_rejected_total",
            "Requests refused because the server was at capacity",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(rejected.clone()))?;
        let kv_reserved = IntGauge::new(
            "self_judge_kv_reserved_bytes",
            "Bytes of keys/values reserved by admitted generations",
        )?;
        let kv_budget = IntGauge::new(
            "self_judge_kv_budget_bytes",
            "Bytes of keys/values generations may reserve (--kv-budget-mb)",
        )?;
        registry.register(Box::new(kv_reserved.clone()))?;
        registry.register(Box::new(kv_budget.clone()))?;
        Ok(Self {
            kv_reserved,
            kv_budget,
            registry,
            engine,
            requests,
            duration,
            rejected,
        })
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encoding to a Vec cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

/// Middleware counting requests and timing them per matched route.
pub async fn track(State(metrics): State<ServerMetrics>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let start = Instant::now();
    let res = next.run(req).await;
    metrics
        .duration
        .with_label_values(&[&route])
        .observe(start.elapsed().as_secs_f64());
    metrics
        .requests
        .with_label_values(&[&route, res.status().as_str()])
        .inc();
    res
}
