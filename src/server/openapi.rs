//! The OpenAPI document (derived with utoipa) and an offline HTML rendering of it.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{openai, rerank, routes};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "self-judge", description = "SELF-JUDGE: one LLM as policy and pairwise judge. Judge pairs, run best-of-n tournaments, generate."),
    paths(
        routes::judge::judge,
        routes::judge::tournament,
        routes::generate::generate,
        routes::meta::health,
        routes::meta::info,
        routes::meta::metrics,
        openai::routes::models,
        openai::chat::chat_completions,
        openai::completions::completions,
        rerank::routes::rerank_v1,
        rerank::routes::rerank_v2,
        rerank::routes::rerank_tei,
    ),
    components(schemas(
        super::schemas::RoundEvent,
        openai::schemas::ChatCompletionChunk,
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// The derived document before [`super::spec`] makes it exact.
fn derived() -> serde_json::Value {
    let mut api = ApiDoc::openapi();
    api.info.version = env!("CARGO_PKG_VERSION").to_string();
    serde_json::to_value(&api).expect("the OpenAPI document serialises")
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).expect("JSON serialises")
}

/// The exact document as pretty JSON (`self-judge openapi`, `openapi/openapi.json`).
pub fn spec_json() -> String {
    pretty(&super::spec::exact(derived()))
}

/// The document a running server serves at `/openapi.json`: the exact one stating its
/// limits, names and whether a key is required.
pub fn served_spec_json(served: &super::spec::Served) -> String {
    pretty(&super::spec::served(derived(), served))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A self-contained HTML page (no scripts, no CDN) listing every operation with its
/// request and response schemas.
pub fn docs_html() -> String {
    let spec = super::spec::exact(derived());
    let mut body = String::new();
    if let Some(paths) = spec["paths"].as_object() {
        for (path, ops) in paths {
            for (method, op) in ops.as_object().into_iter().flatten() {
                body.push_str(&format!(
                    "<section><h2><code>{} {}</code></h2><p>{}</p>",
                    method.to_uppercase(),
                    escape(path),
                    escape(
                        op["description"]
                            .as_str()
                            .or(op["summary"].as_str())
                            .unwrap_or("")
                    )
                ));
                if let Some(rb) = op.get("requestBody") {
                    body.push_str(&format!(
                        "<h3>Request body</h3><pre>{}</pre>",
                        escape(&serde_json::to_string_pretty(rb).unwrap_or_default())
                    ));
                }
                body.push_str(&format!(
                    "<h3>Responses</h3><pre>{}</pre></section>",
                    escape(&serde_json::to_string_pretty(&op["responses"]).unwrap_or_default())
                ));
            }
        }
    }
    let schemas = serde_json::to_string_pretty(&spec["components"]["schemas"]).unwrap_or_default();
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>self-judge API</title>\
         <style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}pre{{background:#f4f4f4;padding:1em;overflow:auto}}</style>\
         </head><body><h1>self-judge API</h1><p>Machine-readable spec: <a href=\"/openapi.json\">/openapi.json</a>. \
         Errors are JSON <code>{{\"error\", \"error_type\"}}</code>. With <code>--api-key</code>, send <code>Authorization: Bearer KEY</code> \
         (<code>/health</code>, <code>/metrics</code>, <code>/docs</code> and <code>/openapi.json</code> stay open).</p>{body}\
         <h2>Schemas</h2><pre>{}</pre></body></html>",
        escape(&schemas)
    )
}
