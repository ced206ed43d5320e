//! Judge templates: one [`Principle`] per judging criterion (SPEC §1).

use serde::{Deserialize, Serialize};

use super::JudgeError;

/// The placeholders every `user` template must contain.
pub const PLACEHOLDERS: [&str; 3] = ["context", "response_a", "response_b"];

/// One judging criterion: a system message, a user template with `{context}`,
/// `{response_a}`, `{response_b}`, and the assistant cue the verdict token follows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Principle {
    pub name: String,
    pub system: String,
    pub user: String,
    pub assistant: String,
}

/// A piece of a parsed `user` template.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Slot(usize),
}

/// Parses a Python `str.format` template that may use only the three placeholders.
/// `{{` and `}}` are literal braces, as in Python.
fn parse(principle: &str, template: &str) -> Result<Vec<Piece>, JudgeError> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '{' => {
                let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                let slot = PLACEHOLDERS.iter().position(|p| *p == name).ok_or_else(|| {
                    JudgeError::Config(format!(
                        "judge template `{principle}`: unknown placeholder `{{{name}}}` in `user` (allowed: {{context}}, {{response_a}}, {{response_b}}; write braces as {{{{ and }}}})"
                    ))
                })?;
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Slot(slot));
            }
            '}' => {
                return Err(JudgeError::Config(format!(
                    "judge template `{principle}`: single `}}` in `user` (write it as `}}}}`)"
                )))
            }
            c => text.push(c),
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    for (i, p) in PLACEHOLDERS.iter().enumerate() {
        if !pieces.contains(&Piece::Slot(i)) {
            return Err(JudgeError::Config(format!(
                "judge template `{principle}` is missing the placeholder {{{p}}} in `user`"
            )));
        }
    }
    Ok(pieces)
}

/// A principle with its parsed user template.
#[derive(Debug, Clone)]
pub struct CompiledPrinciple {
    pub principle: Principle,
    /// `assistant` plus the decision text when rationales are configured: the exact
    /// text the ` A` / ` B` token follows.
    pub cue: String,
    pieces: Vec<Piece>,
}

impl CompiledPrinciple {
    /// Substitutes the three values in one pass: text inside a response that looks like
    /// a placeholder stays literal, as with Python's `str.format`.
    pub fn user_text(&self, context: &str, response_a: &str, response_b: &str) -> String {
        let vals = [context, response_a, response_b];
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Slot(i) => out.push_str(vals[*i]),
            }
        }
        out
    }
}

/// The ordered set of principles a judgment uses, with the optional decision text
/// appended to every cue (`templates.decision_rationale.decision`).
#[derive(Debug, Clone)]
pub struct JudgeTemplate {
    pub principles: Vec<CompiledPrinciple>,
    pub decision: Option<String>,
}

impl JudgeTemplate {
    /// Validates and compiles the principles (order is kept: it is the order of the
    /// verdict's `principles` list).
    pub fn new(principles: Vec<Principle>, decision: Option<String>) -> Result<Self, JudgeError> {
        if principles.is_empty() {
            return Err(JudgeError::Config(
                "templates.judge has no principle".into(),
            ));
        }
        let mut compiled = Vec::with_capacity(principles.len());
        for p in principles {
            if compiled
                .iter()
                .any(|c: &CompiledPrinciple| c.principle.name == p.name)
            {
                return Err(JudgeError::Config(format!(
                    "principle `{}` is defined twice",
                    p.name
                )));
            }
            let pieces = parse(&p.name, &p.user)?;
            let cue = format!("{}{}", p.assistant, decision.as_deref().unwrap_or(""));
            if cue.is_empty() {
                return Err(JudgeError::Config(format!(
                    "judge template `{}` has an empty assistant cue",
                    p.name
                )));
            }
            compiled.push(CompiledPrinciple {
                principle: p,
                cue,
                pieces,
            });
        }
        Ok(Self {
            principles: compiled,
            decision,
        })
    }

    /// Principle names in order.
    pub fn names(&self) -> Vec<String> {
        self.principles
            .iter()
            .map(|p| p.principle.name.clone())
            .collect()
    }

    /// Keeps only `names` (in the template's order); an unknown name is an error.
    pub fn restrict(&self, names: &[String]) -> Result<Self, JudgeError> {
        for n in names {
            if !self.principles.iter().any(|p| &p.principle.name == n) {
                return Err(JudgeError::Input(format!(
                    "unknown principle `{n}` (known: {})",
                    self.names().join(", ")
                )));
            }
        }
        if names.is_empty() {
            return Err(JudgeError::Input("the principle list is empty".into()));
        }
        Ok(Self {
            principles: self
                .principles
                .iter()
                .filter(|p| names.contains(&p.principle.name))
                .cloned()
                .collect(),
            decision: self.decision.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principle(user: &str) -> Principle {
        Principle {
            name: "helpful".into(),
            system: "S".into(),
            user: user.into(),
            assistant: "Cue".into(),
        }
    }

    #[test]
    fn substitutes_in_one_pass_like_python_format() {
        let t = JudgeTemplate::new(
            vec![principle("C={context} A={response_a} B={response_b} {{x}}")],
            None,
        )
        .unwrap();
        let s = t.principles[0].user_text("ctx", "{response_b}", "b");
        assert_eq!(s, "C=ctx A={response_b} B=b {x}");
    }

    #[test]
    fn missing_placeholder_names_principle_and_placeholder() {
        let e = JudgeTemplate::new(vec![principle("{context} {response_a}")], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`helpful`") && e.contains("{response_b}"), "{e}");
        let e = JudgeTemplate::new(
            vec![principle("{context} {response_a} {response_b} {other}")],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown placeholder `{other}`"), "{e}");
    }

    #[test]
    fn decision_is_appended_to_the_cue() {
        let t = JudgeTemplate::new(
            vec![principle("{context}{response_a}{response_b}")],
            Some("\nDecision: Response".into()),
        )
        .unwrap();
        assert_eq!(t.principles[0].cue, "Cue\nDecision: Response");
    }

    #[test]
    fn restrict_refuses_unknown_names() {
        let t =
            JudgeTemplate::new(vec![principle("{context}{response_a}{response_b}")], None).unwrap();
        assert!(t.restrict(&["honest".into()]).is_err());
        assert_eq!(
            t.restrict(&["helpful".into()]).unwrap().names(),
            ["helpful"]
        );
    }
}
