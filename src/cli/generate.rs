//! `self-judge generate`: sample a continuation of one prompt and print it.

use clap::Args;

use super::ModelArgs;
use crate::engine::{generate, GenerationRequest, SamplingParams};
use crate::tokenizer::ChatMessage;

/// Arguments of `self-judge generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt text.
    #[arg(long)]
    pub prompt: String,
    /// Wrap the prompt as one user message through the chat template.
    #[arg(long)]
    pub chat: bool,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// 0 means greedy decoding.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// 0 disables top-k.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop before this string (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
}

/// Runs the command; the generated text alone goes to stdout.
pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let model = args.model.load()?;
    let text = if args.chat {
        let t = model.chat_template()?;
        t.render(
            &[ChatMessage::new("user", args.prompt.clone())],
            true,
            model.tokenizer.bos_token.as_deref(),
            model.tokenizer.eos_token.as_deref(),
        )?
    } else {
        args.prompt.clone()
    };
    if text.is_empty() {
        anyhow::bail!("the prompt is empty");
    }
    let ids = model.tokenizer.encode(&text, true)?;
    let params = SamplingParams {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        seed: args.seed,
        max_new_tokens: args.max_new_tokens,
        stop: args.stop,
        logprobs: None,
    };
    let req = GenerationRequest {
        request: 0,
        prompt_ids: ids,
        params,
        n: 1,
    };
    let out = generate(&model, &[req])?;
    let sample = &out[0][0];
    tracing::info!(finish_reason = ?sample.finish_reason, tokens = sample.token_ids.len(), "generated");
    println!("{}", sample.text);
    Ok(())
}
