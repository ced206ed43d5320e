//! Packing prompts into forward passes under a token budget.

/// Splits prompts into consecutive groups whose token total stays within `budget`
/// (a prompt longer than the budget forms a group of its own).
pub fn chunk_by_tokens<S: AsRef<[u32]>>(
    prompts: &[S],
    budget: usize,
) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut used) = (0, 0);
    for (i, p) in prompts.iter().enumerate() {
        let p = p.as_ref();
        if i > start && used + p.len() > budget {
            out.push(start..i);
            start = i;
            used = 0;
        }
        used += p.len();
    }
    if start < prompts.len() {
        out.push(start..prompts.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_the_budget() {
        let p: Vec<Vec<u32>> = [3, 4, 2, 9, 1].iter().map(|&n| vec![0; n]).collect();
        assert_eq!(chunk_by_tokens(&p, 7), vec![0..2, 2..3, 3..4, 4..5]);
        assert_eq!(chunk_by_tokens(&p, 100), vec![0..5]);
    }
}
