//! Self-judge prompts (seed notes d.9) for one HH and one UltraFeedback row, with the
//! seed's chat template on the tiny tokenizer (EOS `<|im_end|>`).

mod common;

use self_judge_judge::JudgeConfig;
use self_judge_tokenizer::{ChatTemplate, TextTokenizer};
use serde_json::json;
use training::data::jsft::BuildStats;
use training::data::self_judge::{hh_rows, json_rows, uf_rows, SelfJudgeRow};

fn setup(config: &str) -> (TextTokenizer, ChatTemplate, String) {
    let root = common::root();
    let (tok, _) = TextTokenizer::from_hf_dir(&root.join("tests/fixtures/tiny-chat"), &[]).unwrap();
    let cfg = JudgeConfig::from_file(&root.join("configs").join(config)).unwrap();
    let chat = ChatTemplate::new(cfg.chat_template.as_deref().unwrap()).unwrap();
    let system = cfg.template.principles[0].principle.system.clone();
    (tok, chat, system)
}

#[test]
fn hh_row_gives_query_context_and_full_conversations() {
    let (tok, chat, system) = setup("hh_self_judge.yaml");
    let rows = [
        json!({
            "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Bye\n\nAssistant: See ya",
            "rejected": "\n\nHuman: Hi\n\nAssistant: Hey\n\nHuman: Bye\n\nAssistant: Go away",
        }),
        json!({"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!"}),
    ];
    let mut stats = BuildStats::default();
    let out = hh_rows(&rows, &system, &chat, &tok, &mut stats).unwrap();
    assert_eq!(out.len(), 1);
    let head = format!("<|system|>\n{system}\n<|user|>\nHi\n<|assistant|>\n");
    assert_eq!(
        out[0],
        SelfJudgeRow {
            query: format!("{head}Hello!<|im_end|>\n<|user|>\nBye\n<|assistant|>\n"),
            context: "User: Hi\n\nAssistant: Hello!\n\nUser: Bye".into(),
            chosen: format!(
                "{head}Hello!<|im_end|>\n<|user|>\nBye\n<|assistant|>\nSee ya<|im_end|>"
            ),
            // The rejected conversation keeps its own earlier turns.
            rejected: format!(
                "{head}Hey<|im_end|>\n<|user|>\nBye\n<|assistant|>\nGo away<|im_end|>"
            ),
        }
    );
    assert_eq!((stats.rows, stats.bad_rows), (2, 1));
    assert_eq!(
        stats.first_error.as_deref(),
        Some("row 2: missing string field `rejected`")
    );
}

#[test]
fn uf_row_pairs_the_best_and_worst_ranked_responses() {
    let (tok, chat, _) = setup("uf_self_judge_pr.yaml");
    let c = |response: &str, system: &str, rating: &str| {
        json!({"response": response, "custom_system_prompt": system,
               "annotations": {"helpfulness": {"Rating": rating, "Rationale": "r"}}})
    };
    let rows = [
        json!({"instruction": "Name a color.", "completions": [
            c("Blue.", "Be brief.", "3"), c("Red is a color.", "Be helpful.", "5"), c("No.", "Be rude.", "1"),
        ]}),
        json!({"instruction": "Only one.", "completions": [c("Yes.", "S", "N/A")]}),
        json!({"instruction": "None.", "completions": []}),
        json!({"instruction": "Broken.", "completions": [{"response": "x"}]}),
    ];
    let mut stats = BuildStats::default();
    let out = uf_rows(&rows, &chat, &tok, &mut stats).unwrap();
    assert_eq!(out.len(), 2);
    // The prompt uses the best response's system prompt.
    let head = "<|system|>\nBe helpful.\n<|user|>\nName a color.";
    assert_eq!(
        out[0],
        SelfJudgeRow {
            query: format!("{head}\n<|assistant|>\n"),
            context: "Name a color.".into(),
            chosen: format!("{head}\n<|assistant|>\nRed is a color.<|im_end|>"),
            rejected: format!("{head}\n<|assistant|>\nNo.<|im_end|>"),
        }
    );
    // One completion: chosen and rejected are the same conversation.
    assert_eq!(out[1].chosen, out[1].rejected);
    assert_eq!(
        out[1].query,
        "<|system|>\nS\n<|user|>\nOnly one.\n<|assistant|>\n"
    );
    assert_eq!((stats.rows, stats.empty_rows, stats.bad_rows), (4, 1, 1));
    assert_eq!(
        stats.first_error.as_deref(),
        Some("row 4: completions[0]: missing string field `custom_system_prompt`")
    );
}

#[test]
fn preprocessed_rows_need_all_four_fields() {
    let rows = [
        json!({"query": "q", "context": "c", "chosen": "a", "rejected": "b"}),
        json!({"query": "q", "chosen": "a", "rejected": "b"}),
    ];
    let mut stats = BuildStats::default();
    let out = json_rows(&rows, &mut stats);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].context, "c");
    assert_eq!(
        stats.first_error.as_deref(),
        Some("row 2: missing string field `context`")
    );
}
