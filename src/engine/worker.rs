//! The engine thread: the single owner of the model. Async handlers talk to it through
//! a channel of commands and get results back on oneshot channels, so the model never
//! runs on the async runtime. Each loop turn runs one judge batch (prompts of all
//! waiting requests packed together) and one decode step of every active generation;
//! new generations join between steps.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::generate::{Emitted, Generated, GenerationRequest, Generator};
use super::judge_queue::{JudgeQueue, Slot};
use super::metrics::EngineMetrics;
use super::prefix::PrefixScorer;
use self_judge_judge::OrderProbs;
use self_judge_model::LoadedModel;

/// Batch limits of the engine.
#[derive(Debug, Clone, Copy)]
pub struct EngineSettings {
    /// Token budget of one judge forward pass.
    pub max_batch_tokens: usize,
    /// Prompts per judge forward pass.
    pub max_batch_size: usize,
    /// Bytes of keys/values kept for shared judge-prompt prefixes.
    pub prefix_cache_bytes: usize,
}

/// Why the engine could not serve a command.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("the model failed: {0}")]
    Forward(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the engine has stopped")]
    Stopped,
}

type JudgeReply = oneshot::Sender<Result<Vec<OrderProbs>, EngineError>>;

/// What a streaming generation receives: every token as it is produced, then the
/// finished samples (or the error).
#[derive(Debug)]
pub enum GenEvent {
    Token(Emitted),
    Done(Result<Vec<Generated>, EngineError>),
}

/// Where a generation's result goes.
enum GenReply {
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

    fn send(self, result: Result<Vec<Generated>, EngineError>) {
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

enum Command {
    Judge {
        prompts: Vec<Vec<u32>>,
        reply: JudgeReply,
    },
    Generate {
        req: GenerationRequest,
        reply: GenReply,
    },
}

/// A cheap, cloneable way to submit work to the engine thread.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
    /// False after a failed forward pass, true again after a successful one.
    pub healthy: Arc<AtomicBool>,
}

impl EngineHandle {
    /// Scores judge prompts (all of them enter the queue together).
    pub async fn judge(&self, prompts: Vec<Vec<u32>>) -> Result<Vec<OrderProbs>, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Judge { prompts, reply })
            .map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)?
    }

    /// Generates `req.n` samples; dropping the future cancels them.
    pub async fn generate(&self, req: GenerationRequest) -> Result<Vec<Generated>, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Generate {
                req,
                reply: GenReply::Once(reply),
            })
            .map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)?
    }

    /// Generates `req.n` samples, sending each token as it is produced and then the
    /// samples; dropping the receiver cancels them.
    pub fn generate_stream(
        &self,
        req: GenerationRequest,
    ) -> Result<tokio::sync::mpsc::UnboundedReceiver<GenEvent>, EngineError> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.tx
            .send(Command::Generate {
                req,
                reply: GenReply::Stream(tx),
            })
            .map_err(|_| EngineError::Stopped)?;
        Ok(rx)
    }
}

/// Starts the engine thread. It stops when every handle is dropped.
pub fn spawn_engine(
    model: Arc<LoadedModel>,
    token_ids: (u32, u32),
    settings: EngineSettings,
    metrics: EngineMetrics,
) -> EngineHandle {
    let (tx, rx) = mpsc::channel();
    let healthy = Arc::new(AtomicBool::new(true));
    let h = healthy.clone();
    std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || Worker::new(&model, token_ids, settings, metrics, h).run(rx))
        .expect("spawning the engine thread");
    EngineHandle { tx, healthy }
}

struct ActiveGeneration {
    reply: GenReply,
    n: usize,
    done: Vec<Generated>,
}

struct Worker<'m> {
    model: &'m LoadedModel,
    settings: EngineSettings,
    metrics: EngineMetrics,
    healthy: Arc<AtomicBool>,
    judge: JudgeQueue<JudgeReply>,
    scorer: PrefixScorer,
    generator: Generator<'m>,
    joining: Vec<(GenerationRequest, GenReply)>,
    active: HashMap<u64, ActiveGeneration>,
    next_gen_id: u64,
}

impl<'m> Worker<'m> {
    fn new(
        model: &'m LoadedModel,
        token_ids: (u32, u32),
        settings: EngineSettings,
        metrics: EngineMetrics,
        healthy: Arc<AtomicBool>,
    ) -> Self {
        Self {
            model,
            settings,
            metrics,
            healthy,
            judge: JudgeQueue::default(),
            scorer: PrefixScorer::new(
                token_ids,
                settings.max_batch_tokens,
                settings.prefix_cache_bytes,
            ),
            generator: Generator::new(model),
            joining: Vec::new(),
            active: HashMap::new(),
            next_gen_id: 0,
        }
    }

    fn idle(&self) -> bool {
        self.judge.is_empty() && self.joining.is_empty() && self.generator.num_active() == 0
    }

    fn accept(&mut self, cmd: Command) {
        match cmd {
            Command::Judge { prompts, reply } => {
                if prompts.is_empty() {
                    let _ = reply.send(Ok(vec![]));
                } else {
                    self.judge.push(prompts, reply);
                }
            }
            Command::Generate { mut req, reply } => {
                if let Err(e) = req.validate(self.model.decoder.max_positions()) {
                    reply.send(Err(EngineError::Invalid(e.to_string())));
                    return;
                }
                req.request = self.next_gen_id;
                self.next_gen_id += 1;
                self.joining.push((req, reply));
            }
        }
    }

    fn run(mut self, rx: Receiver<Command>) {
        loop {
            if self.idle() {
                match rx.recv() {
                    Ok(c) => self.accept(c),
                    Err(_) => return,
                }
            }
            loop {
                match rx.try_recv() {
                    Ok(c) => self.accept(c),
                    Err(TryRecvError::Empty) => break,
                    // Finish what is queued; no new work can arrive.
                    Err(TryRecvError::Disconnected) if self.idle() => return,
                    Err(TryRecvError::Disconnected) => break,
                }
            }
            self.judge_step();
            self.generation_step();
        }
    }

    fn set_health(&self, ok: bool) {
        self.healthy.store(ok, Ordering::Relaxed);
        if !ok {
            self.metrics.forward_errors.inc();
        }
    }

    fn judge_step(&mut self) {
        let dropped = self.judge.drop_cancelled();
        self.metrics.prompts_cancelled.inc_by(dropped as u64);
        if dropped > 0 {
            tracing::info!(
                prompts = dropped,
                "dropped judge prompts of disconnected clients"
            );
        }
        if self.judge.is_empty() {
            self.metrics.queue_prompts.set(0);
            return;
        }
        let batch = self
            .judge
            .take_batch(self.settings.max_batch_tokens, self.settings.max_batch_size);
        let slots: Vec<Slot> = batch.iter().map(|(s, _)| *s).collect();
        let prompts: Vec<&[u32]> = batch.iter().map(|(_, p)| *p).collect();
        let tokens: usize = prompts.iter().map(|p| p.len()).sum();
        let start = Instant::now();
        let result = self
            .scorer
            .score(&self.model.decoder, &prompts, Some(&self.metrics));
        self.metrics
            .batch_seconds
            .observe(start.elapsed().as_secs_f64());
        self.metrics.batch_size.observe(slots.len() as f64);
        self.metrics.batch_tokens.observe(tokens as f64);
        match result {
            Ok(probs) => {
                self.set_health(true);
                self.metrics.prompts_scored.inc_by(slots.len() as u64);
                for (reply, res) in self.judge.complete(&slots, &probs) {
                    let _ = reply.send(Ok(res));
                }
            }
            Err(e) => {
                self.set_health(false);
                tracing::error!(error = %e, "judge forward failed");
                for reply in self.judge.fail(&slots) {
                    let _ = reply.send(Err(EngineError::Forward(e.to_string())));
                }
            }
        }
        self.metrics
            .queue_prompts
            .set(self.judge.waiting_prompts() as i64);
    }

    fn finish(&mut self, finished: Vec<Generated>) {
        for g in finished {
            self.metrics
                .generated_tokens
                .inc_by(g.token_ids.len() as u64);
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

    fn fail_generations(&mut self, e: &self_judge_model::ModelError) {
        self.set_health(false);
        tracing::error!(error = %e, "generation forward failed");
        for (_, a) in self.active.drain() {
            a.reply.send(Err(EngineError::Forward(e.to_string())));
        }
        self.generator = Generator::new(self.model);
        self.metrics.running_sequences.set(0);
    }

    fn generation_step(&mut self) {
        let gone: Vec<u64> = self
            .active
            .iter()
            .filter(|(_, a)| a.reply.is_cancelled())
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            let n = self.generator.cancel(id);
            self.metrics.generations_cancelled.inc_by(n as u64);
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
                    self.set_health(true);
                    self.stream_tokens();
                    self.finish(done);
                }
                Err(e) => return self.fail_generations(&e),
            }
        }
        if self.generator.num_active() > 0 {
            self.metrics
                .decode_batch_size
                .observe(self.generator.num_active() as f64);
            match self.generator.step() {
                Ok(done) => {
                    self.stream_tokens();
                    self.finish(done);
                }
                Err(e) => self.fail_generations(&e),
            }
        }
        self.metrics
            .running_sequences
            .set(self.generator.num_active() as i64);
    }
}
