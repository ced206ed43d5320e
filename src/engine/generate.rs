//! Batched generation with per-sequence KV caches. Sequences may join between decode
//! steps (the server's continuous batching) and leave as soon as they finish; the n
//! samples of one prompt share its prefill.

use candle_core::Tensor;
use serde::Serialize;

use super::sampling::{token_logprob, Sampler, SamplingParams, TokenLogprob};
use self_judge_model::{KvCache, ModelError, ModelView, Output, PackedBatch};

/// Why a sequence stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-sequence token was produced.
    Eos,
    /// A stop string was produced (it is not part of the text).
    Stop,
    /// `max_new_tokens` or the model's context was reached.
    Length,
}

/// A finished sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Generated {
    /// Identifies the request the sample belongs to (given to [`Generator::add`]).
    pub request: u64,
    /// Which of the request's n samples this is.
    pub index: usize,
    pub text: String,
    pub token_ids: Vec<u32>,
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
    /// One per token of `token_ids` when the request asked for log-probabilities.
    pub logprobs: Vec<TokenLogprob>,
}

/// A token a sequence produced in the last [`Generator::add`] or [`Generator::step`]
/// (what a streaming client is sent).
#[derive(Debug, Clone, PartialEq)]
pub struct Emitted {
    pub request: u64,
    pub index: usize,
    pub token: u32,
    pub logprob: Option<TokenLogprob>,
}

struct Sequence {
    request: u64,
    index: usize,
    cache: KvCache,
    sampler: Sampler,
    params: SamplingParams,
    prompt_tokens: usize,
    generated: Vec<u32>,
    logprobs: Vec<TokenLogprob>,
    /// Token produced last step, to be fed next step.
    pending: u32,
}

/// A set of sequences decoded together.
pub struct Generator<'m> {
    model: ModelView<'m>,
    active: Vec<Sequence>,
    emitted: Vec<Emitted>,
}

/// One prompt to sample `n` continuations of.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    pub request: u64,
    pub prompt_ids: Vec<u32>,
    pub params: SamplingParams,
    pub n: usize,
}

impl GenerationRequest {
    /// Checks what would make the request fail inside a batch.
    pub fn validate(&self, max_positions: usize) -> Result<(), ModelError> {
        self.params.validate()?;
        if self.n == 0 {
            return Err(ModelError::Input("n must be >= 1".into()));
        }
        if self.prompt_ids.is_empty() {
            return Err(ModelError::Input("the prompt is empty".into()));
        }
        if self.prompt_ids.len() >= max_positions {
            return Err(ModelError::Input(format!(
                "the prompt has {} tokens but the model's context is {max_positions}",
                self.prompt_ids.len()
            )));
        }
        Ok(())
    }
}

impl<'m> Generator<'m> {
    /// An empty generator over `model` (a `&LoadedModel` or a [`ModelView`]).
    pub fn new(model: impl Into<ModelView<'m>>) -> Self {
        Self {
            model: model.into(),
            active: Vec::new(),
            emitted: Vec::new(),
        }
    }

    /// The tokens sequences produced in the last call of [`Self::add`] or [`Self::step`]
    /// (end-of-sequence tokens are not text and are left out).
    pub fn emitted(&self) -> &[Emitted] {
        &self.emitted
    }

    /// Bytes of keys/values the decoding sequences hold.
    pub fn kv_bytes(&self) -> usize {
        self.active.iter().map(|s| s.cache.size_in_bytes()).sum()
    }

    /// Number of sequences still decoding.
    pub fn num_active(&self) -> usize {
        self.active.len()
    }

    /// Prefills all prompts in one packed forward and samples each sequence's first
    /// token. Returns the samples that finished already (one-token answers).
    pub fn add(&mut self, reqs: &[GenerationRequest]) -> Result<Vec<Generated>, ModelError> {
        self.emitted.clear();
        if reqs.is_empty() {
            return Ok(vec![]);
        }
        let max_pos = self.model.decoder.max_positions();
        for r in reqs {
            r.validate(max_pos)?;
        }
        let layers = self.model.decoder.cfg.num_hidden_layers;
        let batch = PackedBatch::new(
            &reqs
                .iter()
                .map(|r| r.prompt_ids.as_slice())
                .collect::<Vec<_>>(),
        )?;
        let mut caches: Vec<KvCache> = reqs.iter().map(|_| KvCache::new(layers)).collect();
        let logits = self
            .model
            .decoder
            .forward(&batch, Some(&mut caches), Output::LastLogits)?;
        let logits: Vec<Vec<f32>> = logits.to_vec2()?;
        let mut done = Vec::new();
        for ((r, cache), row) in reqs.iter().zip(caches).zip(logits) {
            for index in 0..r.n {
                let mut cache = cache.clone();
                // Every token it may generate gets a place now: decode writes in place.
                cache.reserve((r.prompt_ids.len() + r.params.max_new_tokens).min(max_pos));
                let mut seq = Sequence {
                    request: r.request,
                    index,
                    cache,
                    sampler: Sampler::new(&r.params, index as u64),
                    params: r.params.clone(),
                    prompt_tokens: r.prompt_ids.len(),
                    generated: Vec::new(),
                    logprobs: Vec::new(),
                    pending: 0,
                };
                let tok = seq.sampler.sample(&row);
                let lp = r.params.logprobs.map(|k| token_logprob(&row, tok, k));
                match self.accept(&mut seq, tok, lp)? {
                    Some(g) => done.push(g),
                    None => self.active.push(seq),
                }
            }
        }
        Ok(done)
    }

    /// Records `tok` (with its log-probability, when asked for) for `seq`; returns the
    /// finished sample if it ended.
    fn accept(
        &mut self,
        seq: &mut Sequence,
        tok: u32,
        lp: Option<TokenLogprob>,
    ) -> Result<Option<Generated>, ModelError> {
        let tokenizer = self.model.tokenizer;
        let finish = |seq: &Sequence, reason, text: String| Generated {
            request: seq.request,
            index: seq.index,
            text,
            token_ids: seq.generated.clone(),
            finish_reason: reason,
            prompt_tokens: seq.prompt_tokens,
            logprobs: seq.logprobs.clone(),
        };
        if tokenizer.eos_ids.contains(&tok) {
            let text = tokenizer.decode(&seq.generated, true)?;
            return Ok(Some(finish(seq, FinishReason::Eos, text)));
        }
        seq.generated.push(tok);
        seq.pending = tok;
        if let Some(lp) = &lp {
            seq.logprobs.push(lp.clone());
        }
        self.emitted.push(Emitted {
            request: seq.request,
            index: seq.index,
            token: tok,
            logprob: lp,
        });
        if !seq.params.stop.is_empty() {
            let text = tokenizer.decode(&seq.generated, true)?;
            let hit = seq
                .params
                .stop
                .iter()
                .filter_map(|s| text.find(s.as_str()))
                .min();
            if let Some(at) = hit {
                return Ok(Some(finish(
                    seq,
                    FinishReason::Stop,
                    text[..at].to_string(),
                )));
            }
        }
        let at_context_end =
            seq.prompt_tokens + seq.generated.len() >= self.model.decoder.max_positions();
        if seq.generated.len() >= seq.params.max_new_tokens || at_context_end {
            let text = tokenizer.decode(&seq.generated, true)?;
            return Ok(Some(finish(seq, FinishReason::Length, text)));
        }
        Ok(None)
    }

    /// One decode step for every active sequence; returns those that finished.
    pub fn step(&mut self) -> Result<Vec<Generated>, ModelError> {
        self.emitted.clear();
        if self.active.is_empty() {
            return Ok(vec![]);
        }
        let batch = PackedBatch {
            tokens: self.active.iter().map(|s| s.pending).collect(),
            cu_seqlens: (0..=self.active.len()).collect(),
        };
        let mut caches: Vec<KvCache> = self
            .active
            .iter_mut()
            .map(|s| std::mem::replace(&mut s.cache, KvCache::new(0)))
            .collect();
        let logits = self
            .model
            .decoder
            .forward(&batch, Some(&mut caches), Output::LastLogits);
        for (s, c) in self.active.iter_mut().zip(caches) {
            s.cache = c;
        }
        let logits: Tensor = logits?;
        let rows: Vec<Vec<f32>> = logits.to_vec2()?;
        let mut done = Vec::new();
        let mut still = Vec::with_capacity(self.active.len());
        for (mut seq, row) in std::mem::take(&mut self.active).into_iter().zip(rows) {
            let tok = seq.sampler.sample(&row);
            let lp = seq.params.logprobs.map(|k| token_logprob(&row, tok, k));
            match self.accept(&mut seq, tok, lp)? {
                Some(g) => done.push(g),
                None => still.push(seq),
            }
        }
        self.active = still;
        Ok(done)
    }

    /// Drops every sequence of `request` (a cancelled client).
    pub fn cancel(&mut self, request: u64) -> usize {
        let before = self.active.len();
        self.active.retain(|s| s.request != request);
        before - self.active.len()
    }

    /// Runs until every sequence has finished.
    pub fn run_to_end(&mut self) -> Result<Vec<Generated>, ModelError> {
        let mut out = Vec::new();
        while !self.active.is_empty() {
            out.extend(self.step()?);
        }
        Ok(out)
    }
}

/// Generates `n` samples for each request and returns them grouped per request, in
/// sample order.
pub fn generate<'m>(
    model: impl Into<ModelView<'m>>,
    reqs: &[GenerationRequest],
) -> Result<Vec<Vec<Generated>>, ModelError> {
    let mut g = Generator::new(model);
    let mut all = g.add(reqs)?;
    all.extend(g.run_to_end()?);
    let mut grouped: Vec<Vec<Generated>> = reqs.iter().map(|_| Vec::new()).collect();
    for s in all {
        if let Some(i) = reqs.iter().position(|r| r.request == s.request) {
            grouped[i].push(s);
        }
    }
    for gr in &mut grouped {
        gr.sort_by_key(|s| s.index);
    }
    Ok(grouped)
}
