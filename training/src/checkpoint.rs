//! Writing HF checkpoints the server loads: `config.json`, `model.safetensors`,
//! `tokenizer.json`, `tokenizer_config.json`. Written into a temporary sibling folder
//! and renamed into place, so a kill never leaves a half-written checkpoint.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use candle_core::Tensor;
use self_judge_model::ModelConfig;
use self_judge_tokenizer::TextTokenizer;

/// What goes into a checkpoint folder.
pub struct Checkpoint<'a> {
    pub config: &'a ModelConfig,
    /// Weights by HF name (an `lm_head.weight` of tied embeddings is not written).
    pub weights: HashMap<String, Tensor>,
    pub tokenizer: &'a TextTokenizer,
    pub chat_template: Option<&'a str>,
}

impl Checkpoint<'_> {
    /// Writes the checkpoint to `dir` atomically (replacing an older one).
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        atomic_dir(dir, |tmp| self.write_into(tmp))
    }

    /// Writes the checkpoint files into an existing folder.
    pub fn write_into(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_string_pretty(&self.config.to_hf_json())?,
        )?;
        let mut tensors: Vec<(&String, &Tensor)> = self
            .weights
            .iter()
            .filter(|(n, _)| !(self.config.tie_word_embeddings && n.as_str() == "lm_head.weight"))
            .collect();
        tensors.sort_by(|a, b| a.0.cmp(b.0));
        let map: HashMap<String, Tensor> = tensors
            .into_iter()
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect();
        save_tensors(&map, &dir.join("model.safetensors"))?;
        let tok_json = self
            .tokenizer
            .inner()
            .to_string(true)
            .map_err(|e| anyhow::anyhow!("serialising the tokenizer: {e}"))?;
        std::fs::write(dir.join("tokenizer.json"), tok_json)?;
        let mut tc = serde_json::json!({
            "eos_token": self.tokenizer.eos_token,
            "bos_token": self.tokenizer.bos_token,
            "model_max_length": self.config.max_position_embeddings,
            "tokenizer_class": "PreTrainedTokenizerFast",
        });
        if let Some(t) = self.chat_template {
            tc["chat_template"] = t.into();
        }
        std::fs::write(
            dir.join("tokenizer_config.json"),
            serde_json::to_string_pretty(&tc)?,
        )?;
        Ok(())
    }
}

/// Fills a temporary sibling of `dir` with `fill` and renames it to `dir` (replacing an
/// older one), so a kill leaves either the old folder or the complete new one.
pub fn atomic_dir(
    dir: &Path,
    fill: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let name = dir
        .file_name()
        .context("checkpoint path has no final component")?
        .to_string_lossy();
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    fill(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    if dir.exists() {
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        std::fs::rename(dir, &old)?;
        std::fs::rename(&tmp, dir)?;
        std::fs::remove_dir_all(&old)?;
    } else {
        std::fs::rename(&tmp, dir)?;
    }
    Ok(())
}

/// Saves tensors as safetensors readable by everyone (the writer creates files 0600,
/// which a server running as another user, e.g. in a container, could not read).
pub fn save_tensors(map: &HashMap<String, Tensor>, path: &Path) -> anyhow::Result<()> {
    candle_core::safetensors::save(map, path)
        .with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}
