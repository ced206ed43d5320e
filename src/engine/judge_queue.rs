//! The judge-prompt queue owned by the engine thread: prompts of all concurrent
//! requests wait here in arrival order and are packed into forward passes bounded by a
//! token budget and a prompt count. A request's prompts may span several batches; its
//! reply goes out when the last one is scored.

use std::collections::VecDeque;

use self_judge_judge::OrderProbs;

/// Something that can tell whether its requester has gone away.
pub trait Cancellable {
    fn is_cancelled(&self) -> bool;
}

impl<T> Cancellable for tokio::sync::oneshot::Sender<T> {
    fn is_cancelled(&self) -> bool {
        self.is_closed()
    }
}

struct Entry<R> {
    id: u64,
    prompts: Vec<Vec<u32>>,
    /// Index of the first prompt not yet handed to a batch.
    next: usize,
    results: Vec<Option<OrderProbs>>,
    remaining: usize,
    reply: R,
}

/// One prompt of a batch: which request and which of its prompts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub request: u64,
    pub index: usize,
}

/// Pending judge requests.
pub struct JudgeQueue<R> {
    entries: VecDeque<Entry<R>>,
    next_id: u64,
}

impl<R: Cancellable> Default for JudgeQueue<R> {
    fn default() -> Self {
        Self {
            entries: VecDeque::new(),
            next_id: 0,
        }
    }
}

impl<R: Cancellable> JudgeQueue<R> {
    /// Enqueues a request's prompts; returns its id.
    pub fn push(&mut self, prompts: Vec<Vec<u32>>, reply: R) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let n = prompts.len();
        self.entries.push_back(Entry {
            id,
            prompts,
            next: 0,
            results: vec![None; n],
            remaining: n,
            reply,
        });
        id
    }

    /// True when no prompt waits.
    pub fn is_empty(&self) -> bool {
        self.entries.iter().all(|e| e.next == e.prompts.len())
    }

    /// Prompts waiting to be scheduled.
    pub fn waiting_prompts(&self) -> usize {
        self.entries.iter().map(|e| e.prompts.len() - e.next).sum()
    }

    /// Removes requests whose client has gone; returns how many unscored prompts were
    /// dropped with them.
    pub fn drop_cancelled(&mut self) -> usize {
        let mut dropped = 0;
        self.entries.retain(|e| {
            let keep = !e.reply.is_cancelled();
            if !keep {
                dropped += e.remaining;
            }
            keep
        });
        dropped
    }

    /// Takes the next batch in arrival order: at most `max_size` prompts and, unless a
    /// single prompt is larger, at most `max_tokens` tokens.
    pub fn take_batch(&mut self, max_tokens: usize, max_size: usize) -> Vec<(Slot, &[u32])> {
        let mut picked: Vec<Slot> = Vec::new();
        let mut tokens = 0;
        'outer: for e in self.entries.iter_mut() {
            while e.next < e.prompts.len() {
                let len = e.prompts[e.next].len();
                if picked.len() == max_size || (!picked.is_empty() && tokens + len > max_tokens) {
                    break 'outer;
                }
                tokens += len;
                picked.push(Slot {
                    request: e.id,
                    index: e.next,
                });
                e.next += 1;
            }
        }
        picked
            .into_iter()
            .map(|s| {
                let e = self
                    .entries
                    .iter()
                    .find(|e| e.id == s.request)
                    .expect("picked from entries");
                (s, e.prompts[s.index].as_slice())
            })
            .collect()
    }

    /// Stores the scores of a batch; returns the requests that are now complete.
    pub fn complete(&mut self, slots: &[Slot], probs: &[OrderProbs]) -> Vec<(R, Vec<OrderProbs>)> {
        for (s, p) in slots.iter().zip(probs) {
            if let Some(e) = self.entries.iter_mut().find(|e| e.id == s.request) {
                if e.results[s.index].replace(*p).is_none() {
                    e.remaining -= 1;
                }
            }
        }
        let mut done = Vec::new();
        let mut i = 0;
        while i < self.entries.len() {
            if self.entries[i].remaining == 0 {
                let e = self.entries.remove(i).expect("index in range");
                done.push((
                    e.reply,
                    e.results
                        .into_iter()
                        .map(|r| r.expect("all scored"))
                        .collect(),
                ));
            } else {
                i += 1;
            }
        }
        done
    }

    /// Removes the requests touched by a failed batch and returns their replies.
    pub fn fail(&mut self, slots: &[Slot]) -> Vec<R> {
        let mut out = Vec::new();
        for s in slots {
            if let Some(i) = self.entries.iter().position(|e| e.id == s.request) {
                out.push(self.entries.remove(i).expect("index in range").reply);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    #[derive(Clone, Default)]
    struct Flag(Rc<Cell<bool>>);
    impl Cancellable for Flag {
        fn is_cancelled(&self) -> bool {
            self.0.get()
        }
    }

    fn prompts(lens: &[usize]) -> Vec<Vec<u32>> {
        lens.iter().map(|&n| vec![1; n]).collect()
    }

    fn p(x: f64) -> OrderProbs {
        OrderProbs {
            p_a: x,
            p_b: 1.0 - x,
        }
    }

    #[test]
    fn batches_span_requests_in_order_within_limits() {
        let mut q = JudgeQueue::default();
        let a = q.push(prompts(&[10, 10, 10]), Flag::default());
        let b = q.push(prompts(&[5, 5]), Flag::default());
        let batch: Vec<Slot> = q.take_batch(25, 10).into_iter().map(|x| x.0).collect();
        assert_eq!(
            batch,
            vec![
                Slot {
                    request: a,
                    index: 0
                },
                Slot {
                    request: a,
                    index: 1
                }
            ]
        );
        assert!(q.complete(&batch, &[p(0.1), p(0.2)]).is_empty());
        let batch: Vec<Slot> = q.take_batch(25, 2).into_iter().map(|x| x.0).collect();
        assert_eq!(
            batch,
            vec![
                Slot {
                    request: a,
                    index: 2
                },
                Slot {
                    request: b,
                    index: 0
                }
            ]
        );
        let done = q.complete(&batch, &[p(0.3), p(0.4)]);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].1, vec![p(0.1), p(0.2), p(0.3)]);
        assert_eq!(q.waiting_prompts(), 1);
    }

    #[test]
    fn a_prompt_larger_than_the_budget_runs_alone() {
        let mut q = JudgeQueue::default();
        q.push(prompts(&[100, 3]), Flag::default());
        assert_eq!(q.take_batch(50, 8).len(), 1);
        assert_eq!(q.take_batch(50, 8).len(), 1);
        assert!(q.is_empty());
    }

    #[test]
    fn cancelled_requests_are_dropped_before_batching() {
        let mut q = JudgeQueue::default();
        let gone = Flag::default();
        q.push(prompts(&[4, 4, 4]), gone.clone());
        let keep = q.push(prompts(&[4]), Flag::default());
        gone.0.set(true);
        assert_eq!(q.drop_cancelled(), 3);
        let batch = q.take_batch(100, 100);
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].0.request, keep);
    }
}
