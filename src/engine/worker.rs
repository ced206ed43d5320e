//! The engine thread: the single owner of the models. Async handlers talk to it through
//! a channel of commands and get results back on oneshot channels, so no model ever
//! runs on the async runtime. Each loop turn runs, for every model's lane, one judge
//! batch (prompts of all waiting requests packed together) and one decode step of its
//! active generations; new generations join between steps.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;

use tokio::sync::oneshot;

use super::error::EngineError;
use super::generate::{Generated, GenerationRequest};
use super::lane::{GenEvent, GenReply, JudgeReply, Lane, Shared};
use super::metrics::EngineMetrics;
use super::settings::EngineSettings;
use self_judge_judge::OrderProbs;
use self_judge_model::LoadedModel;

enum Command {
    Judge {
        lane: usize,
        prompts: Vec<Vec<u32>>,
        reply: JudgeReply,
    },
    Generate {
        lane: usize,
        req: GenerationRequest,
        reply: GenReply,
    },
}

/// A cheap, cloneable way to submit work to the engine thread, for one of its models
/// (the first, the base, unless [`EngineHandle::for_model`] picked another).
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
    lane: usize,
    lanes: usize,
    /// False after a failed forward pass, true again after a successful one.
    pub healthy: Arc<AtomicBool>,
}

impl EngineHandle {
    /// The same engine, submitting to its model `i` (in the order given to
    /// [`spawn_engine`]); `None` past the last.
    pub fn for_model(&self, i: usize) -> Option<EngineHandle> {
        (i < self.lanes).then(|| EngineHandle {
            lane: i,
            ..self.clone()
        })
    }

    /// Scores judge prompts (all of them enter the queue together).
    pub async fn judge(&self, prompts: Vec<Vec<u32>>) -> Result<Vec<OrderProbs>, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Judge {
                lane: self.lane,
                prompts,
                reply,
            })
            .map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)?
    }

    /// Generates `req.n` samples; dropping the future cancels them.
    pub async fn generate(&self, req: GenerationRequest) -> Result<Vec<Generated>, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Generate {
                lane: self.lane,
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
                lane: self.lane,
                req,
                reply: GenReply::Stream(tx),
            })
            .map_err(|_| EngineError::Stopped)?;
        Ok(rx)
    }
}

/// Starts the engine thread over `models` (a base first, then the same base with
/// adapters attached, which share its weights). It stops when every handle is dropped.
/// The handle submits to the first model.
///
/// # Panics
/// If `models` is empty.
pub fn spawn_engine(
    models: Vec<Arc<LoadedModel>>,
    token_ids: (u32, u32),
    settings: EngineSettings,
    metrics: EngineMetrics,
) -> EngineHandle {
    assert!(!models.is_empty(), "an engine needs a model");
    let (tx, rx) = mpsc::channel();
    let healthy = Arc::new(AtomicBool::new(true));
    let lanes = models.len();
    let shared = Shared {
        settings,
        metrics,
        healthy: healthy.clone(),
        failing: std::cell::Cell::new(settings.failing_judge_batches),
    };
    std::thread::Builder::new()
        .name("engine".into())
        .spawn(move || Worker::new(&models, token_ids, shared).run(rx))
        .expect("spawning the engine thread");
    EngineHandle {
        tx,
        lane: 0,
        lanes,
        healthy,
    }
}

struct Worker<'m> {
    shared: Shared,
    lanes: Vec<Lane<'m>>,
    next_gen_id: u64,
}

impl<'m> Worker<'m> {
    fn new(models: &'m [Arc<LoadedModel>], token_ids: (u32, u32), shared: Shared) -> Self {
        // The cache budget is the flag's over all models, split evenly: an adapter's
        // keys/values differ from the base's, so they cannot share entries.
        let per_lane = shared.settings.prefix_cache_bytes / models.len();
        let lanes = models
            .iter()
            .map(|m| Lane::new(m, token_ids, &shared.settings, per_lane))
            .collect();
        Self {
            shared,
            lanes,
            next_gen_id: 0,
        }
    }

    fn idle(&self) -> bool {
        self.lanes.iter().all(Lane::idle)
    }

    fn accept(&mut self, cmd: Command) {
        match cmd {
            Command::Judge {
                lane,
                prompts,
                reply,
            } => {
                if prompts.is_empty() {
                    let _ = reply.send(Ok(vec![]));
                } else {
                    self.lanes[lane].push_judge(prompts, reply);
                }
            }
            Command::Generate {
                lane,
                mut req,
                reply,
            } => {
                let lane = &mut self.lanes[lane];
                if let Err(e) = req.validate(lane.model.decoder.max_positions()) {
                    reply.send(Err(EngineError::Invalid(e.to_string())));
                    return;
                }
                req.request = self.next_gen_id;
                self.next_gen_id += 1;
                lane.push_generation(req, reply);
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
            for lane in &mut self.lanes {
                lane.judge_step(&self.shared);
            }
            for lane in &mut self.lanes {
                lane.generation_step(&self.shared);
            }
            let m = &self.shared.metrics;
            m.queue_prompts
                .set(self.lanes.iter().map(Lane::waiting_prompts).sum::<usize>() as i64);
            m.running_sequences
                .set(self.lanes.iter().map(Lane::running).sum::<usize>() as i64);
            m.kv_bytes
                .set(self.lanes.iter().map(Lane::kv_bytes).sum::<usize>() as i64);
        }
    }
}
