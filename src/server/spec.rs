//! The exact OpenAPI document: utoipa derives the shapes of the bodies; this module
//! adds what the handlers check beyond types, so that a request valid under the spec
//! is one the server accepts and an invalid one is refused (schemathesis holds the two
//! together in CI). [`exact`] makes the committed document: request bodies as `oneOf`
//! their real forms with their required fields, the value ranges every handler
//! enforces, each status a route can answer, and the bearer key as optional.
//! [`served`] then states what only the running server knows: its limits, model and
//! adapter names, principles, and whether a key is required.

use serde_json::{json, Map, Value};

/// Largest `f64` that parses to a finite `f32` is just under this (the midpoint between
/// `f32::MAX` and 2^128 rounds to infinity): bounds for fields read as `f32`.
const F32_OVERFLOW: f64 = 3.402_823_567_797_336_6e38;
/// `2^-150`: the largest `f64` that rounds to `0f32` (so `top_p` must exceed it).
const F32_ZERO: f64 = 7.006_492_321_624_086e-46;
/// `1 + 2^-24`: the largest `f64` that rounds to `1f32`.
const F32_ONE: f64 = 1.000_000_059_604_644_8;

/// What a running server states in its spec.
#[derive(Debug, Clone)]
pub struct Served {
    /// Requests need `Authorization: Bearer KEY`.
    pub api_key: bool,
    /// The base model's name on the OpenAI routes.
    pub model: String,
    /// Adapter names (`--adapter NAME=DIR`).
    pub adapters: Vec<String>,
    /// The config's principle names.
    pub principles: Vec<String>,
    /// Largest `n` / `best_of`.
    pub max_n: usize,
    /// Largest `max_new_tokens` / `max_tokens`.
    pub max_new_tokens: usize,
}

fn schema_mut<'a>(spec: &'a mut Value, name: &str) -> &'a mut Value {
    let s = &mut spec["components"]["schemas"][name];
    assert!(s.is_object(), "no schema {name}");
    s
}

/// The property `prop` of schema `name` (in its own `properties` or in an `allOf`
/// member's).
fn prop_mut<'a>(spec: &'a mut Value, name: &str, prop: &str) -> &'a mut Value {
    let s = schema_mut(spec, name);
    if s["properties"].get(prop).is_some() {
        return &mut s["properties"][prop];
    }
    let members = s["allOf"].as_array_mut();
    let found = members
        .into_iter()
        .flatten()
        .find(|m| m["properties"].get(prop).is_some());
    match found {
        Some(m) => &mut m["properties"][prop],
        None => panic!("schema {name} has no property {prop}"),
    }
}

/// Merges `extra` (an object) into the property's schema.
fn constrain(spec: &mut Value, name: &str, prop: &str, extra: Value) {
    let p = prop_mut(spec, name, prop);
    for (k, v) in extra.as_object().expect("an object") {
        p[k] = v.clone();
    }
}

fn items_min_length(spec: &mut Value, name: &str, prop: &str) {
    prop_mut(spec, name, prop)["items"]["minLength"] = json!(1);
}

/// `temperature` and `top_p` as their `f32` reading accepts them.
fn sampling_ranges(spec: &mut Value, name: &str) {
    constrain(
        spec,
        name,
        "temperature",
        json!({"minimum": 0, "exclusiveMaximum": F32_OVERFLOW}),
    );
    constrain(
        spec,
        name,
        "top_p",
        json!({"exclusiveMinimum": F32_ZERO, "maximum": F32_ONE}),
    );
}

/// The ranges and sizes every handler enforces.
fn ranges(spec: &mut Value) {
    constrain(spec, "JudgeRequest", "pairs", json!({"minItems": 1}));
    for name in ["JudgeRequest", "TournamentRequest"] {
        constrain(spec, name, "principles", json!({"minItems": 1}));
    }
    for name in ["GenerateRequest", "TournamentRequest"] {
        constrain(spec, name, "messages", json!({"minItems": 1}));
        constrain(spec, name, "n", json!({"minimum": 1}));
        constrain(spec, name, "max_new_tokens", json!({"minimum": 1}));
        sampling_ranges(spec, name);
        items_min_length(spec, name, "stop");
    }
    constrain(spec, "GenerateRequest", "prompt", json!({"minLength": 1}));
    constrain(
        spec,
        "TournamentRequest",
        "contexts",
        json!({"minItems": 1}),
    );
    constrain(
        spec,
        "TournamentRequest",
        "responses",
        json!({"minItems": 1, "items": {"type": "array", "items": {"type": "string"}, "minItems": 1}}),
    );
    // OpenAI routes.
    for p in ["n", "best_of"] {
        constrain(spec, "CommonParams", p, json!({"minimum": 1}));
    }
    sampling_ranges(spec, "CommonParams");
    for p in ["frequency_penalty", "presence_penalty"] {
        constrain(
            spec,
            "CommonParams",
            p,
            json!({"minimum": -F32_ZERO, "maximum": F32_ZERO}),
        );
    }
    spec["components"]["schemas"]["OneOrMany"]["oneOf"] = json!([
        {"type": "string", "minLength": 1},
        {"type": "array", "items": {"type": "string", "minLength": 1}}
    ]);
    spec["components"]["schemas"]["PromptInput"]["oneOf"] = json!([
        {"type": "string", "minLength": 1},
        {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1, "maxItems": 1}
    ]);
    constrain(
        spec,
        "ChatCompletionRequest",
        "messages",
        json!({"minItems": 1}),
    );
    for p in ["max_tokens", "max_completion_tokens"] {
        constrain(spec, "ChatCompletionRequest", p, json!({"minimum": 1}));
    }
    constrain(
        spec,
        "ChatCompletionRequest",
        "top_logprobs",
        json!({"maximum": 20}),
    );
    constrain(
        spec,
        "CompletionRequest",
        "max_tokens",
        json!({"minimum": 1}),
    );
    constrain(
        spec,
        "CompletionRequest",
        "logprobs",
        json!({"maximum": 20}),
    );
    constrain(spec, "CompletionRequest", "echo", json!({"enum": [false]}));
    constrain(
        spec,
        "OpenAiMessage",
        "role",
        json!({"enum": ["system", "developer", "user", "assistant"]}),
    );
    let part = schema_mut(spec, "ContentPart");
    part["properties"]["type"]["enum"] = json!(["text"]);
    part["properties"]["text"] = json!({"type": "string"});
    part["required"] = json!(["type", "text"]);
    constrain(spec, "RerankRequest", "documents", json!({"minItems": 1}));
    constrain(spec, "RerankRequest", "top_n", json!({"minimum": 1}));
    constrain(spec, "TeiRerankRequest", "texts", json!({"minItems": 1}));
    unsigned_maxima(&mut spec["components"]["schemas"]);
}

/// Unsigned integers are read as `u64`/`usize`: a larger number is refused.
fn unsigned_maxima(v: &mut Value) {
    match v {
        Value::Object(m) => {
            let integer = match m.get("type") {
                Some(Value::String(t)) => t == "integer",
                Some(Value::Array(ts)) => ts.iter().any(|t| t == "integer"),
                _ => false,
            };
            if integer && m.get("minimum").is_some() && !m.contains_key("maximum") {
                m.insert("maximum".into(), json!(u64::MAX));
            }
            m.values_mut().for_each(unsigned_maxima);
        }
        Value::Array(a) => a.iter_mut().for_each(unsigned_maxima),
        _ => {}
    }
}

/// One form of a body: the schema's properties with `required` (made non-null)
/// required, and those of other forms (`drop`) only as `null` (which the server reads
/// as absent) or, for a flag, `false`.
fn form(base: &Value, title: &str, required: &[&str], drop: &[&str]) -> Value {
    let mut props: Map<String, Value> = base["properties"].as_object().cloned().unwrap_or_default();
    for d in drop {
        let p = props
            .get_mut(*d)
            .unwrap_or_else(|| panic!("no property {d}"));
        *p = if p["type"] == "boolean" {
            json!({"enum": [false]})
        } else {
            json!({"type": "null"})
        };
    }
    for r in required {
        let p = props
            .get_mut(*r)
            .unwrap_or_else(|| panic!("no property {r}"));
        if let Some(Value::Array(types)) = p.get("type").cloned() {
            let kept: Vec<Value> = types.into_iter().filter(|t| t != "null").collect();
            p["type"] = if kept.len() == 1 {
                kept[0].clone()
            } else {
                json!(kept)
            };
        }
    }
    let mut f =
        json!({"type": "object", "title": title, "required": required, "properties": props});
    if base.get("additionalProperties").is_some() {
        f["additionalProperties"] = base["additionalProperties"].clone();
    }
    f
}

/// Replaces a schema by `oneOf` its forms (title, required, dropped properties).
fn forms(spec: &mut Value, name: &str, list: &[(&str, &[&str], &[&str])]) {
    let base = schema_mut(spec, name).clone();
    let one_of: Vec<Value> = list
        .iter()
        .map(|(title, req, drop)| form(&base, title, req, drop))
        .collect();
    *schema_mut(spec, name) = json!({"description": base["description"], "oneOf": one_of});
}

const SAMPLING: [&str; 5] = ["max_new_tokens", "temperature", "top_p", "top_k", "stop"];

fn body_forms(spec: &mut Value) {
    forms(
        spec,
        "JudgeRequest",
        &[
            (
                "One pair",
                &["context", "response_a", "response_b"],
                &["pairs"],
            ),
            (
                "A list of pairs",
                &["pairs"],
                &["context", "response_a", "response_b"],
            ),
        ],
    );
    forms(
        spec,
        "GenerateRequest",
        &[
            ("Raw text", &["prompt"], &["messages"]),
            ("A conversation", &["messages"], &["prompt"]),
        ],
    );
    let given: Vec<&str> = ["query", "messages", "context", "n"]
        .into_iter()
        .chain(SAMPLING)
        .collect();
    forms(
        spec,
        "TournamentRequest",
        &[
            ("Given candidates", &["contexts", "responses"], &given),
            (
                "Best-of-n from a query",
                &["query", "n"],
                &["contexts", "responses", "messages", "stream"],
            ),
            (
                "Best-of-n from a conversation",
                &["messages", "n"],
                &["contexts", "responses", "query", "stream"],
            ),
        ],
    );
}

/// Every status each route can answer, with its error body.
fn statuses(spec: &mut Value) {
    let ours = json!({"$ref": "#/components/schemas/ErrorResponse"});
    let openai = json!({"$ref": "#/components/schemas/OpenAiErrorResponse"});
    let paths = spec["paths"].as_object_mut().expect("paths");
    for (path, ops) in paths.iter_mut() {
        let openai_shape = path.starts_with("/v1/");
        let body = if openai_shape { &openai } else { &ours };
        for (method, op) in ops.as_object_mut().expect("operations") {
            let open = matches!(path.as_str(), "/health" | "/metrics");
            let mut add = |code: &str, what: &str| {
                let r = &mut op["responses"];
                if r.get(code).is_none() {
                    r[code] = json!({"description": what,
                        "content": {"application/json": {"schema": body}}});
                }
            };
            if !open {
                add(
                    "401",
                    "Missing or wrong API key (only when the server has one)",
                );
                add("503", "The model is still loading (`Retry-After`)");
            }
            if method == "post" {
                let invalid = if openai_shape { "400" } else { "422" };
                add(invalid, "Invalid request");
                add("400", "Not JSON");
                add(
                    "413",
                    "Body or prompt over a limit, or more work than the server admits",
                );
                add("415", "Not `Content-Type: application/json`");
                add("429", "At capacity; retry after `Retry-After` seconds");
                add("404", "Unknown model or adapter");
                add("500", "The model failed (`model_error`)");
            }
            if !open {
                op["security"] = json!([{}, {"bearer": []}]);
            }
            let streams = matches!(
                path.as_str(),
                "/tournament" | "/v1/chat/completions" | "/v1/completions"
            );
            if streams {
                let events = if path == "/tournament" {
                    json!(["round", "result", "error"])
                } else {
                    json!(["message"])
                };
                op["responses"]["200"]["content"]["text/event-stream"] = json!({"schema": {
                    "description": "With `stream: true`, each server-sent event: its `data` is JSON (see the route; OpenAI streams end with `[DONE]`)",
                    "type": "object",
                    "required": ["data"],
                    "properties": {
                        "event": {"type": "string", "enum": events},
                        "data": {"type": "string", "minLength": 1}
                    }
                }});
            }
        }
    }
}

/// The committed document (`self-judge openapi`, `openapi/openapi.json`).
pub fn exact(mut spec: Value) -> Value {
    ranges(&mut spec);
    body_forms(&mut spec);
    statuses(&mut spec);
    spec
}

/// `values` as the property's `enum`, with `null` when its type allows it.
fn set_enum(p: &mut Value, values: &[&String]) {
    let mut e: Vec<Value> = values.iter().map(|v| json!(v)).collect();
    let nullable = matches!(&p["type"], Value::Array(t) if t.iter().any(|t| t == "null"));
    if nullable {
        e.push(Value::Null);
    }
    p["enum"] = json!(e);
}

/// Each property named `prop` in the schemas below `v` (forms included).
fn each_prop(v: &mut Value, prop: &str, f: &mut dyn FnMut(&mut Map<String, Value>)) {
    match v {
        Value::Object(m) => {
            if let Some(Value::Object(props)) = m.get_mut("properties") {
                if props.contains_key(prop) {
                    f(props);
                }
            }
            m.values_mut().for_each(|c| each_prop(c, prop, f));
        }
        Value::Array(a) => a.iter_mut().for_each(|c| each_prop(c, prop, f)),
        _ => {}
    }
}

/// The document a running server serves at `/openapi.json`: [`exact`] stating this
/// server's limits, names and key.
pub fn served(spec: Value, s: &Served) -> Value {
    let mut spec = exact(spec);
    let schemas = &mut spec["components"]["schemas"];
    for (name, prop, max) in [
        ("GenerateRequest", "n", s.max_n),
        ("TournamentRequest", "n", s.max_n),
        ("CommonParams", "n", s.max_n),
        ("CommonParams", "best_of", s.max_n),
        ("GenerateRequest", "max_new_tokens", s.max_new_tokens),
        ("TournamentRequest", "max_new_tokens", s.max_new_tokens),
        ("ChatCompletionRequest", "max_tokens", s.max_new_tokens),
        (
            "ChatCompletionRequest",
            "max_completion_tokens",
            s.max_new_tokens,
        ),
        ("CompletionRequest", "max_tokens", s.max_new_tokens),
    ] {
        each_prop(&mut schemas[name], prop, &mut |props| {
            props[prop]["maximum"] = json!(max);
        });
    }
    let models: Vec<&String> = std::iter::once(&s.model).chain(&s.adapters).collect();
    for name in [
        "ChatCompletionRequest",
        "CompletionRequest",
        "RerankRequest",
    ] {
        each_prop(&mut schemas[name], "model", &mut |props| {
            if props["model"]["type"] != "null" {
                set_enum(&mut props["model"], &models);
            }
        });
    }
    for name in [
        "JudgeRequest",
        "GenerateRequest",
        "TournamentRequest",
        "TeiRerankRequest",
    ] {
        each_prop(&mut schemas[name], "adapter", &mut |props| {
            let names: Vec<&String> = s.adapters.iter().collect();
            set_enum(&mut props["adapter"], &names);
        });
        each_prop(&mut schemas[name], "principles", &mut |props| {
            if props["principles"]["type"] != "null" {
                props["principles"]["items"]["enum"] = json!(s.principles);
            }
        });
    }
    for ops in spec["paths"]
        .as_object_mut()
        .into_iter()
        .flat_map(|p| p.values_mut())
    {
        for op in ops.as_object_mut().into_iter().flat_map(|o| o.values_mut()) {
            let Some(o) = op.as_object_mut() else {
                continue;
            };
            if o.contains_key("security") {
                if s.api_key {
                    o.insert("security".into(), json!([{"bearer": []}]));
                } else {
                    o.remove("security");
                    if let Some(r) = o.get_mut("responses").and_then(Value::as_object_mut) {
                        r.remove("401");
                    }
                }
            }
        }
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    fn derived() -> Value {
        use utoipa::OpenApi;
        serde_json::to_value(crate::server::openapi::ApiDoc::openapi()).unwrap()
    }

    #[test]
    fn bodies_are_one_of_their_forms_with_required_fields() {
        let spec = exact(derived());
        let judge = &spec["components"]["schemas"]["JudgeRequest"]["oneOf"];
        assert_eq!(judge.as_array().unwrap().len(), 2);
        assert_eq!(
            judge[0]["required"],
            json!(["context", "response_a", "response_b"])
        );
        assert_eq!(judge[0]["properties"]["context"]["type"], "string");
        assert_eq!(judge[0]["properties"]["pairs"], json!({"type": "null"}));
        assert_eq!(judge[1]["properties"]["pairs"]["minItems"], 1);
        let t = &spec["components"]["schemas"]["TournamentRequest"]["oneOf"];
        assert_eq!(t[1]["required"], json!(["query", "n"]));
        assert_eq!(t[1]["properties"]["stream"], json!({"enum": [false]}));
        let judge_op = &spec["paths"]["/judge"]["post"];
        for code in [
            "400", "401", "404", "413", "415", "422", "429", "500", "503",
        ] {
            assert!(judge_op["responses"].get(code).is_some(), "/judge {code}");
        }
        assert_eq!(judge_op["security"], json!([{}, {"bearer": []}]));
        assert!(spec["paths"]["/health"]["get"].get("security").is_none());
    }

    #[test]
    fn the_served_spec_states_limits_names_and_the_key() {
        let s = Served {
            api_key: false,
            model: "m".into(),
            adapters: vec!["a".into()],
            principles: vec!["helpful".into()],
            max_n: 4,
            max_new_tokens: 9,
        };
        let spec = served(derived(), &s);
        let schemas = &spec["components"]["schemas"];
        assert!(spec["paths"]["/judge"]["post"].get("security").is_none());
        assert!(spec["paths"]["/judge"]["post"]["responses"]
            .get("401")
            .is_none());
        let common = &schemas["CommonParams"]["properties"];
        assert_eq!(common["best_of"]["maximum"], 4);
        let chat = &schemas["ChatCompletionRequest"]["allOf"][1]["properties"];
        assert_eq!(chat["model"]["enum"], json!(["m", "a"]));
        assert_eq!(chat["max_tokens"]["maximum"], 9);
        let gen = &schemas["GenerateRequest"]["oneOf"][0]["properties"];
        assert_eq!(gen["adapter"]["enum"], json!(["a", null]));
        let judge = &schemas["JudgeRequest"]["oneOf"][1]["properties"];
        assert_eq!(judge["principles"]["items"]["enum"], json!(["helpful"]));
        let keyed = served(derived(), &Served { api_key: true, ..s });
        assert_eq!(
            keyed["paths"]["/judge"]["post"]["security"],
            json!([{"bearer": []}])
        );
    }

    #[test]
    fn f32_bounds_are_where_rounding_changes() {
        assert_eq!(F32_ZERO as f32, 0.0);
        assert!(f64::from_bits(F32_ZERO.to_bits() + 1) as f32 > 0.0);
        assert_eq!(F32_ONE as f32, 1.0);
        assert!(f64::from_bits(F32_ONE.to_bits() + 1) as f32 > 1.0);
        assert!((F32_OVERFLOW as f32).is_infinite());
        assert!((f64::from_bits(F32_OVERFLOW.to_bits() - 1) as f32).is_finite());
    }
}
