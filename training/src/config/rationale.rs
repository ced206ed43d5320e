//! The rationale template of UltraFeedback's per-principle judgments
//! (`templates.decision_rationale.rationale`).

/// `template` with `{position}` replaced (Python `str.format` with one keyword: `{{`
/// and `}}` are literal braces, any other placeholder is an error).
pub fn format_rationale(template: &str, position: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                anyhow::ensure!(
                    name == "position",
                    "templates.decision_rationale.rationale: unknown placeholder `{{{name}}}` (only {{position}} is allowed)"
                );
                out.push_str(position);
            }
            '}' => anyhow::bail!(
                "templates.decision_rationale.rationale: single `}}` (write it as `}}}}`)"
            ),
            c => out.push(c),
        }
    }
    Ok(out)
}
