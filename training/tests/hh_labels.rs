//! HH-RLHF rows through the JSFT builder, on the tiny byte-level ChatML tokenizer with
//! the ChatML markers of `tests/fixtures/training/lora_jsft.yaml`: the exact texts of the
//! SFT and judgment examples, which tokens are learned, and what `skip_first_token: true`
//! (every seed config sets it) changes: the first id of each marker is dropped, so a
//! later user turn's first marker token is learned (the seed's masking), while the
//! judgments still learn only the verdict.

mod common;

use self_judge_judge::JudgeConfig;
use self_judge_tokenizer::{ChatTemplate, TextTokenizer};
use serde_json::json;
use training::data::jsft::{BuildStats, JsftBuilder};
use training::loss::{Example, IGNORE};

struct Setup {
    tok: TextTokenizer,
    chat: ChatTemplate,
    judge: self_judge_judge::JudgeTemplate,
}

fn setup() -> Setup {
    let root = common::root();
    let (tok, _) = TextTokenizer::from_hf_dir(&root.join("tests/fixtures/tiny-chat"), &[]).unwrap();
    let yaml =
        std::fs::read_to_string(root.join("tests/fixtures/training/lora_jsft.yaml")).unwrap();
    let cfg = JudgeConfig::from_yaml(&yaml).unwrap();
    Setup {
        tok,
        chat: ChatTemplate::new(cfg.chat_template.as_deref().unwrap()).unwrap(),
        judge: cfg.template,
    }
}

impl Setup {
    fn examples(&self, skip_first_token: bool) -> Vec<Example> {
        let b = JsftBuilder::new(
            &self.tok,
            &self.chat,
            &self.judge,
            4096,
            "<|im_start|>user\n",
            "<|im_start|>assistant\n",
            skip_first_token,
        )
        .unwrap();
        let row = json!({
            "chosen": "\n\nHuman: Hi?\n\nAssistant: Hello!\n\nHuman: Name a fruit.\n\nAssistant: Apple.",
            "rejected": "\n\nHuman: Hi?\n\nAssistant: Hello!\n\nHuman: Name a fruit.\n\nAssistant: A car."
        });
        let mut stats = BuildStats::default();
        let out = b.hh(&[row], "Judge.", &mut stats).unwrap();
        assert_eq!(stats.bad_rows, 0);
        out
    }

    fn text(&self, ids: &[u32]) -> String {
        self.tok.decode(ids, false).unwrap()
    }

    /// The learned tokens as runs of text (one string per contiguous learned span).
    fn learned(&self, e: &Example) -> Vec<String> {
        assert_eq!(e.input_ids.len(), e.labels.len());
        let mut runs: Vec<Vec<u32>> = Vec::new();
        let mut open = false;
        for (&id, &l) in e.input_ids.iter().zip(&e.labels) {
            if l == IGNORE {
                open = false;
                continue;
            }
            assert_eq!(l, id as i64, "a label is the token itself");
            if !open {
                runs.push(Vec::new());
                open = true;
            }
            runs.last_mut().unwrap().push(id);
        }
        runs.iter().map(|r| self.text(r)).collect()
    }
}

#[test]
fn hh_examples_have_the_seed_texts_and_masks() {
    let s = setup();
    let ex = s.examples(false);
    assert_eq!(ex.len(), 3, "one SFT example, two judgment orders");
    let sft = &ex[0];
    assert_eq!(
        s.text(&sft.input_ids),
        "<|im_start|>system\nJudge.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n\
         <|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nName a fruit.<|im_end|>\n\
         <|im_start|>assistant\nApple.<|im_end|>\n"
    );
    assert_eq!(
        s.learned(sft),
        ["Hello!<|im_end|>\n", "Apple.<|im_end|>\n"],
        "assistant turns and their end markers are learned"
    );
    let context = "User: Hi?\n\nAssistant: Hello!\n\nUser: Name a fruit.";
    for (e, (a, b, verdict)) in ex[1..]
        .iter()
        .zip([("Apple.", "A car.", " A"), ("A car.", "Apple.", " B")])
    {
        assert_eq!(
            s.text(&e.input_ids),
            format!(
                "<|im_start|>system\nJudge.<|im_end|>\n<|im_start|>user\n{context}\nA: {a}\nB: {b}<|im_end|>\n\
                 <|im_start|>assistant\nBetter:{verdict}<|im_end|>\n"
            )
        );
        // Only the verdict and what follows it in the render are learned.
        assert_eq!(s.learned(e), [format!("{verdict}<|im_end|>\n")]);
    }
}

#[test]
fn skip_first_token_drops_each_markers_first_id() {
    let s = setup();
    let (plain, skipped) = (s.examples(false), s.examples(true));
    assert_eq!(plain.len(), skipped.len());
    // The same tokens; the seed's markers without their first id (`<|im_start|>`)
    // leave the second user turn's `<|im_start|>` learned.
    assert_eq!(plain[0].input_ids, skipped[0].input_ids);
    assert_eq!(
        s.learned(&skipped[0]),
        ["Hello!<|im_end|>\n<|im_start|>", "Apple.<|im_end|>\n"]
    );
    // The judgments' cue loses its first byte (`B` of "Better:"), which moves nothing:
    // the loss still starts after the cue.
    for (p, k) in plain[1..].iter().zip(&skipped[1..]) {
        assert_eq!(p, k);
    }
}
