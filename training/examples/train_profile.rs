//! Times one JSFT-style training step phase by phase (forward + loss, backward, clipping
//! and AdamW) and reports the peak resident memory, for finding where a step's time and
//! memory go. Not a benchmark against a reference (that is `bench/train/`).
//!
//! ```sh
//! cargo run --release -p training --example train_profile -- MODEL MODE [STEPS] [SEQS] [LEN] [checkpoint]
//! ```
//! MODEL: a GGUF file or HF directory. MODE: `lora-qv`, `lora-all` or `full`. Sequences
//! are seeded random tokens, labelled on their second half (an SFT response).

use std::time::Instant;

use anyhow::Context;
use candle_core::backprop::GradStore;
use rand::{Rng, SeedableRng};
use self_judge_model::Pass;
use training::lora::LoraSpec;
use training::loss::{lm_loss, Example, IGNORE};
use training::model::TrainModel;
use training::optim::{clip_grads, AdamW};

fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}

fn status_mib(key: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

fn main() -> anyhow::Result<()> {
    // As the server and the trainer run (CANDLE_NUM_THREADS=2 for candle's own pool).
    self_judge_model::threads::one_cpu_pool();
    training::alloc::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: train_profile MODEL lora-qv|lora-all|full [STEPS] [SEQS] [LEN]";
    let model_path = args.get(1).context(usage)?;
    let mode = args.get(2).context(usage)?.as_str();
    let num = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (steps, seqs, len) = (num(3, 3), num(4, 8), num(5, 256));
    let targets = match mode {
        "lora-qv" => Some(LoraSpec::default_targets()),
        "lora-all" => Some(vec!["all-linear".to_string()]),
        "full" => None,
        other => anyhow::bail!("unknown mode {other}; {usage}"),
    };
    let spec = targets
        .map(|t| {
            LoraSpec {
                r: 8,
                alpha: 16.0,
                dropout: 0.05,
                target_modules: t,
            }
            .validate()
        })
        .transpose()?;
    let mut model = TrainModel::load(
        std::path::Path::new(model_path),
        spec.as_ref().map(|s| (s, 42)),
    )?;
    model.set_gradient_checkpointing(args.get(6).is_some_and(|a| a == "checkpoint"));
    let vars: Vec<_> = model.vars.iter().map(|(_, v)| v.clone()).collect();
    eprintln!(
        "{mode}: {} trainable, after load peak RSS {:.0} MiB",
        model.num_trainable(),
        peak_rss_mib()
    );
    let vocab = model.decoder.cfg.vocab_size as u32;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut opt = AdamW::new(&vars, 0.0)?;
    for step in 0..steps {
        let examples: Vec<Example> = (0..seqs)
            .map(|_| {
                let input_ids: Vec<u32> = (0..len).map(|_| rng.random_range(0..vocab)).collect();
                let labels = input_ids
                    .iter()
                    .enumerate()
                    .map(|(i, &t)| if i < len / 2 { IGNORE } else { t as i64 })
                    .collect();
                Example { input_ids, labels }
            })
            .collect();
        let refs: Vec<&Example> = examples.iter().collect();
        let n_targets: usize = refs.iter().map(|e| e.num_targets()).sum();
        let t0 = Instant::now();
        let loss = lm_loss(
            &model.decoder,
            &refs,
            n_targets,
            Pass::Train { dropout: true },
        )?;
        let value = loss.to_scalar::<f32>()?;
        let t1 = Instant::now();
        let after_forward = status_mib("VmRSS:");
        let mut grads: GradStore = model.backward(&loss)?;
        drop(loss);
        let t2 = Instant::now();
        clip_grads(&vars, &mut grads, 1.0)?;
        opt.update(&vars, &grads, 1e-4)?;
        drop(grads);
        let t3 = Instant::now();
        let total = (t3 - t0).as_secs_f64();
        eprintln!(
            "step {step}: loss {value:.4} forward {:.2}s backward {:.2}s update {:.2}s \
             = {total:.2}s, {:.1} tokens/s, RSS after forward {after_forward:.0} MiB, \
             after the step {:.0} MiB, peak {:.0} MiB",
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            (t3 - t2).as_secs_f64(),
            (seqs * len) as f64 / total,
            status_mib("VmRSS:"),
            peak_rss_mib()
        );
    }
    Ok(())
}
