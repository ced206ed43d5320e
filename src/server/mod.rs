//! `self-judge serve`: the HTTP service. Start-up order: the config is validated and
//! the port bound at once (a bad config or a taken port fails immediately, naming the
//! cause); the model then loads in the background while `/health` answers 503; a model
//! that fails to load ends the process with the reason.

pub mod error;
pub mod json;
pub mod metrics;
pub mod openai;
pub mod openapi;
pub mod rerank;
pub mod routes;
pub mod schemas;
pub mod spec;
pub mod sse;
pub mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use crate::cli::ModelArgs;
use crate::engine::{spawn_engine, EngineSettings};
use crate::judge::{Judge, JudgeConfig, JudgeOptions};
use crate::service::{JudgeService, NamedAdapter};
use metrics::ServerMetrics;
use schemas::{InfoResponse, Limits, ServedAdapter, TokenIds};
use state::{AppState, Ready};

/// Arguments of `self-judge serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The YAML the model was trained with (chat template + judge templates).
    #[arg(long)]
    pub config: PathBuf,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// 0 picks a free port (printed on stdout).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Token budget of one judge forward pass.
    #[arg(long, default_value_t = 8192)]
    pub max_batch_tokens: usize,
    /// Judge prompts per forward pass.
    #[arg(long, default_value_t = 64)]
    pub max_batch_size: usize,
    /// MiB of keys/values kept for shared judge-prompt prefixes (0 disables sharing
    /// across batches).
    #[arg(long, default_value_t = 2048)]
    pub prefix_cache_mb: usize,
    /// Judge prompts (and generated sequences) in flight at once; a request that
    /// would exceed it is refused whole with 429.
    #[arg(long, default_value_t = 1024)]
    pub max_concurrent_requests: usize,
    /// MiB of keys/values running generations may hold together: each request reserves
    /// its most (n x (prompt + max_new_tokens) positions) before it starts, and one that
    /// does not fit now is refused with 429 (413 if it never could).
    #[arg(long, default_value_t = 4096)]
    pub kv_budget_mb: usize,
    /// Prompt length limit in tokens (default: the config's max_length, capped by the
    /// model's context).
    #[arg(long)]
    pub max_input_tokens: Option<usize>,
    /// Refuse over-long prompts with 413 instead of cutting them from the left.
    #[arg(long)]
    pub no_truncate: bool,
    /// Largest `max_new_tokens` a request may ask for.
    #[arg(long, default_value_t = 1024)]
    pub max_new_tokens: usize,
    /// Largest `n` a request may ask for.
    #[arg(long, default_value_t = 16)]
    pub max_n: usize,
    /// Largest request body.
    #[arg(long, default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Require `Authorization: Bearer KEY` on the API routes.
    #[arg(long, env = "SELF_JUDGE_API_KEY")]
    pub api_key: Option<String>,
    /// Use the config's token ids even if the tokenizer disagrees.
    #[arg(long)]
    pub force_token_ids: bool,
    /// The model's name on the OpenAI-compatible routes (`model` in requests, `GET
    /// /v1/models`); default: the checkpoint's file or folder name.
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Test hook: start loading the model only once this file exists (the loading
    /// state can then be observed however fast the machine is).
    #[arg(long, hide = true)]
    pub hold_load_until: Option<PathBuf>,
    /// Test hook: the first N judge batches fail as a broken forward pass would.
    #[arg(long, hide = true, default_value_t = 0)]
    pub test_failing_judge_batches: usize,
}

impl ServeArgs {
    /// The model's name on the OpenAI-compatible routes.
    fn model_id(&self) -> String {
        self.served_model_name.clone().unwrap_or_else(|| {
            let p = &self.model.model;
            p.file_stem().or(p.file_name()).map_or_else(
                || p.display().to_string(),
                |s| s.to_string_lossy().into_owned(),
            )
        })
    }

    /// The names of the adapters to serve side by side; refuses adapter flags that
    /// cannot work, before anything loads: a bad combination, or an adapter named like
    /// the base model.
    fn check_adapters(&self) -> anyhow::Result<Vec<String>> {
        let (_, named) = self.model.split_adapters()?;
        let id = self.model_id();
        if let Some(a) = named.iter().find(|a| a.name == id) {
            anyhow::bail!(
                "--adapter {}={}: `{id}` is the base model's name (--served-model-name); give the adapter another",
                a.name,
                a.dir.display()
            );
        }
        Ok(named.into_iter().map(|a| a.name).collect())
    }

    /// The limits, with the prompt limit `max_input_tokens` for a model of `context`
    /// positions (the flag, else the config's `max_length`, capped by the context).
    fn limits(&self, config_max_length: Option<usize>, context: usize) -> Limits {
        Limits {
            max_batch_tokens: self.max_batch_tokens,
            max_batch_size: self.max_batch_size,
            max_concurrent_requests: self.max_concurrent_requests,
            max_input_tokens: self
                .max_input_tokens
                .or(config_max_length)
                .unwrap_or(context)
                .min(context),
            truncate: !self.no_truncate,
            max_new_tokens: self.max_new_tokens,
            max_n: self.max_n,
            max_body_bytes: self.max_body_bytes,
            kv_budget_bytes: self.kv_budget_mb.saturating_mul(1 << 20),
        }
    }
}

/// Loads the model and everything that depends on it.
fn load(args: &ServeArgs, cfg: &JudgeConfig, metrics: &ServerMetrics) -> anyhow::Result<Ready> {
    let (merged, named) = args.model.split_adapters()?;
    let mut model = args.model.load_base(merged.as_deref())?;
    if let Some(chat) = &cfg.chat_template {
        model.set_chat_template(chat)?;
    }
    let mut adapters = Vec::new();
    for a in &named {
        let m = model
            .with_adapter(&a.dir)
            .with_context(|| format!("--adapter {}={}", a.name, a.dir.display()))?;
        adapters.push(NamedAdapter {
            name: a.name.clone(),
            model: Arc::new(m),
        });
    }
    let ctx = model.decoder.max_positions();
    let limits = args.limits(cfg.max_length, ctx);
    let opts = JudgeOptions {
        max_length: Some(limits.max_input_tokens),
        force_token_ids: args.force_token_ids,
        principles: None,
    };
    let mut judge = Judge::new(&model, cfg, &opts)?;
    judge.prompts.set_truncate(limits.truncate);
    let c = &model.decoder.cfg;
    let info = InfoResponse {
        version: env!("CARGO_PKG_VERSION").into(),
        model: model.path.display().to_string(),
        adapter: model.adapter.as_ref().map(|a| a.display().to_string()),
        adapters: named
            .iter()
            .map(|a| ServedAdapter {
                name: a.name.clone(),
                path: a.dir.display().to_string(),
            })
            .collect(),
        model_type: c.model_type.clone(),
        format: format!("{:?}", model.format),
        dtype: format!("{:?}", model.decoder.dtype()).to_lowercase(),
        device: crate::model::device_name(model.decoder.device()),
        num_parameters: c.num_parameters(),
        max_position_embeddings: ctx,
        config: args.config.display().to_string(),
        token_ids: TokenIds {
            a: judge.token_ids.0,
            b: judge.token_ids.1,
        },
        principles: judge.template.names(),
        limits: limits.clone(),
    };
    let model = Arc::new(model);
    let settings = EngineSettings {
        max_batch_tokens: args.max_batch_tokens,
        max_batch_size: args.max_batch_size,
        prefix_cache_bytes: args.prefix_cache_mb << 20,
        failing_judge_batches: args.test_failing_judge_batches,
    };
    let models = std::iter::once(model.clone())
        .chain(adapters.iter().map(|a| a.model.clone()))
        .collect();
    let engine = spawn_engine(models, judge.token_ids, settings, metrics.engine.clone());
    let model_id = args.model_id();
    let service = JudgeService::new(model, judge, engine, limits, metrics.rejected.clone())?
        .with_adapters(adapters);
    Ok(Ready {
        service,
        info,
        model_id,
        created: openai::convert::now(),
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// Runs the server until SIGINT/SIGTERM, then finishes in-flight requests.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Every limit but the prompt's is known now: refuse a bad flag before loading.
    args.limits(None, usize::MAX)
        .check()
        .map_err(anyhow::Error::msg)?;
    let adapter_names = args.check_adapters()?;
    let cfg = JudgeConfig::from_file(&args.config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let addr: SocketAddr = format!("{}:{}", args.host, args.port)
            .parse()
            .with_context(|| format!("invalid --host/--port {}:{}", args.host, args.port))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let metrics = ServerMetrics::new()?;
        let api_key = args.api_key.clone().filter(|k| !k.is_empty());
        let spec = openapi::served_spec_json(&spec::Served {
            api_key: api_key.is_some(),
            model: args.model_id(),
            adapters: adapter_names,
            principles: cfg.template.names(),
            max_n: args.max_n,
            max_new_tokens: args.max_new_tokens,
        });
        let state = Arc::new(AppState::new(
            args.max_body_bytes,
            metrics.clone(),
            api_key,
            spec,
        ));
        let loader_state = state.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(f) = &args.hold_load_until {
                while !f.exists() {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
            match load(&args, &cfg, &metrics) {
                Ok(ready) => {
                    tracing::info!(model = %ready.info.model, "model loaded");
                    let _ = loader_state.ready.set(ready);
                }
                Err(e) => {
                    eprintln!("error: cannot load the model: {e:#}");
                    std::process::exit(1);
                }
            }
        });
        let local = listener.local_addr()?;
        println!("self-judge listening on http://{local}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        axum::serve(listener, routes::router(state))
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        Ok(())
    })
}
