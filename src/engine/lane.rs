//! One model of the engine and the work waiting for it. The engine serves a base model
//! and, next to it, copies with LoRA adapters attached (sharing the base weights); a
//! forward pass runs one model, so each has its own lane: judge queue, prefix cache and
//! running generations. The engine thread turns every lane each loop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::error::EngineError;
use super::generate::{Emitted, Generated, GenerationRequest, Generator};
use super::judge_queue::{JudgeQueue, Slot};
use super::metrics::EngineMetrics;
use super::prefix::PrefixScorer;
use super::settings::EngineSettings;
use self_judge_judge::OrderProbs;
use self_judge_model::LoadedModel;

pub(super) type JudgeReply = oneshot::Sender<Result<Vec<OrderProbs>, EngineError>>;

/// What a streaming generation receives: every token as it is produced, then the
/// finished samples (or the error).
#[derive(Debug)]
pub enum GenEvent {
    Token(Emitted),
    Done(Result<Vec<Generated>, EngineError>),
}

/// Where a generation's result goes.
pub(super) enum GenReply {
    Once(oneshot::Sender<Result<Vec<Generated>, EngineError>>),
    Stream(tokio::sync::mpsc::UnboundedSender<GenEvent>),
}

impl GenReply {
    /// The client has gone (its future or stream was dropped).
    fn is_cancelled(&self) -> bool {
        match self {
            Self::Once(tx) => tx.is_closed(),
            Self::Stream(tx) => tx.is_closed(),
        }
    }

    pub(super) fn send(self, result: Result<Vec<Generated>, EngineError>) {
        match self {
            Self::Once(tx) => {
                let _ = tx.send(result);
            }
            Self::Stream(tx) => {
                let _ = tx.send(GenEvent::Done(result));
            }
        }
    }
}

/// What every lane of one engine shares.
pub(super) struct Shared {
    pub settings: EngineSettings,
    pub metrics: EngineMetrics,
    /// False after a failed forward pass (of any lane), true after a successful one.
    pub healthy: Arc<AtomicBool>,
    /// Judge batches still to fail ([`EngineSettings::failing_judge_batches`]).
    pub failing: std::cell::Cell<usize>,
}

impl Shared {
    fn set_health(&self, ok: bool) {
        self.healthy.store(ok, Ordering::Relaxed);
        if !ok {
            self.metrics.forward_errors.inc();
        }
    }
}

struct ActiveGeneration {
    reply: GenReply,
    n: usize,
    done: Vec<Generated>,
}

/// One model's queues, cache and generations.
pub(super) struct Lane<'m> {
    pub model: &'m LoadedModel,
    judge: JudgeQueue<JudgeReply>,
    scorer: PrefixScorer,
    generator: Generator<'m>,
    joining: Vec<(GenerationRequest, GenReply)>,
    active: HashMap<u64, ActiveGeneration>,
}

impl<'m> Lane<'m> {
    /// A lane for `model` whose prefix cache holds at most `prefix_cache_bytes`.
    pub fn new(
        model: &'m LoadedModel,
        token_ids: (u32, u32),
        settings: &EngineSettings,
        prefix_cache_bytes: usize,
    ) -> Self {
        Self {
            model,
            judge: JudgeQueue::default(),
            scorer: PrefixScorer::new(token_ids, settings.max_batch_tokens, prefix_cache_bytes),
            generator: Generator::new(model),
            joining: Vec::new(),
            active: HashMap::new(),
        }
    }

    pub fn idle(&self) -> bool {
        self.judge.is_empty() && self.joining.is_empty() && self.generator.num_active() == 0
    }

    /// Prompts waiting in the judge queue.
    pub fn waiting_prompts(&self) -> usize {
        self.judge.waiting_prompts()
    }

    /// Sequences being decoded.
    pub fn running(&self) -> usize {
        self.generator.num_active()
    }

    /// Bytes of keys/values the lane's running generations hold.
    pub fn kv_bytes(&self) -> usize {
        self.generator.kv_bytes()
    }

    pub fn push_judge(&mut self, prompts: Vec<Vec<u32>>, reply: JudgeReply) {
        self.judge.push(prompts, reply);
    }

    pub fn push_generation(&mut self, req: GenerationRequest, reply: GenReply) {
        self.joining.push((req, reply));
    }

    /// Runs one judge batch of this lane's queue.
    pub fn judge_step(&mut self, sh: &Shared) {
        let dropped = self.judge.drop_cancelled();
        sh.metrics.prompts_cancelled.inc_by(dropped as u64);
        if dropped > 0 {
            tracing::info!(
                prompts = dropped,
                "dropped judge prompts of disconnected clients"
            );
        }
        if self.judge.is_empty() {
            return;
        }
        let batch = self
            .judge
            .take_batch(sh.settings.max_batch_tokens, sh.settings.max_batch_size);
        let slots: Vec<Slot> = batch.iter().map(|(s, _)| *s).collect();
        let prompts: Vec<&[u32]> = batch.iter().map(|(_, p)| *p).collect();
        let tokens: usize = prompts.iter().map(|p| p.len()).sum();
        let start = Instant::now();
        let result = match sh.failing.get() {
            0 => self
                .scorer
                .score(&self.model.decoder, &prompts, Some(&sh.metrics)),
            n => {
                sh.failing.set(n - 1);
                Err(self_judge_model::ModelError::Input(
                    "injected failure (--test-failing-judge-batches)".into(),
                ))
            }
        };
        sh.metrics
            .batch_seconds
            .observe(start.elapsed().as_secs_f64());
        sh.metrics.batch_size.observe(slots.len() as f64);
        sh.metrics.batch_tokens.observe(tokens as f64);
        match result {
            Ok(probs) => {
                sh.set_health(true);
                sh.metrics.prompts_scored.inc_by(slots.len() as u64);
                for (reply, res) in self.judge.complete(&slots, &probs) {
                    let _ = reply.send(Ok(res));
                }
            }
            Err(e) => {
                sh.set_health(false);
                tracing::error!(error = %e, "judge forward failed");
                for reply in self.judge.fail(&slots) {
                    let _ = reply.send(Err(EngineError::Forward(e.to_string())));
                }
            }
        }
    }

    fn finish(&mut self, sh: &Shared, finished: Vec<Generated>) {
        for g in finished {
            sh.metrics.generated_tokens.inc_by(g.token_ids.len() as u64);
            let id = g.request;
            let complete = match self.active.get_mut(&id) {
                Some(a) => {
                    a.done.push(g);
                    a.done.len() == a.n
                }
                None => false,
            };
            if complete {
                let mut a = self.active.remove(&id).expect("present");
                a.done.sort_by_key(|g| g.index);
                a.reply.send(Ok(a.done));
            }
        }
    }

    /// Sends the tokens of the last step to the streaming clients.
    fn stream_tokens(&self) {
        for e in self.generator.emitted() {
            if let Some(ActiveGeneration {
                reply: GenReply::Stream(tx),
                ..
            }) = self.active.get(&e.request)
            {
                let _ = tx.send(GenEvent::Token(e.clone()));
            }
        }
    }

    fn fail_generations(&mut self, sh: &Shared, e: &self_judge_model::ModelError) {
        sh.set_health(false);
        tracing::error!(error = %e, "generation forward failed");
        for (_, a) in self.active.drain() {
            a.reply.send(Err(EngineError::Forward(e.to_string())));
        }
        self.generator = Generator::new(self.model);
    }

    /// Admits the generations that joined and runs one decode step of all of them.
    pub fn generation_step(&mut self, sh: &Shared) {
        let gone: Vec<u64> = self
            .active
            .iter()
            .filter(|(_, a)| a.reply.is_cancelled())
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            let n = self.generator.cancel(id);
            sh.metrics.generations_cancelled.inc_by(n as u64);
            self.active.remove(&id);
            tracing::info!(sequences = n, "stopped generation of a disconnected client");
        }
        if !self.joining.is_empty() {
            let joining = std::mem::take(&mut self.joining);
            let (reqs, replies): (Vec<_>, Vec<_>) = joining
                .into_iter()
                .filter(|(_, r)| !r.is_cancelled())
                .unzip();
            for (req, reply) in reqs.iter().zip(replies) {
                self.active.insert(
                    req.request,
                    ActiveGeneration {
                        reply,
                        n: req.n,
                        done: Vec::new(),
                    },
                );
            }
            match self.generator.add(&reqs) {
                Ok(done) => {
                    sh.set_health(true);
                    self.stream_tokens();
                    self.finish(sh, done);
                }
                Err(e) => return self.fail_generations(sh, &e),
            }
        }
        if self.generator.num_active() > 0 {
            sh.metrics
                .decode_batch_size
                .observe(self.generator.num_active() as f64);
            match self.generator.step() {
                Ok(done) => {
                    self.stream_tokens();
                    self.finish(sh, done);
                }
                Err(e) => self.fail_generations(sh, &e),
            }
        }
    }
}
