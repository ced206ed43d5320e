//! Label masking from role markers (SPEC §4): loss only on assistant tokens.
//!
//! A marker is a token sequence (`templates.user`, `templates.assistant`, or a judge
//! cue). Everything from the start of the sequence to the end of the first assistant
//! marker, and from each later user marker to the end of the following assistant
//! marker, is ignored; the rest (assistant content and EOS) is learned. A sequence whose
//! markers cannot be matched up is rejected as a whole, never half-masked.

use crate::loss::IGNORE;

/// Start indices of every (possibly overlapping) occurrence of `marker` in `ids`.
pub fn find_all(ids: &[u32], marker: &[u32]) -> Vec<usize> {
    if marker.is_empty() || marker.len() > ids.len() {
        return vec![];
    }
    (0..=ids.len() - marker.len())
        .filter(|&i| ids[i..i + marker.len()] == *marker)
        .collect()
}

/// Why a sequence could not be masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaskError {
    NoAssistantMarker,
    NoUserMarker,
    /// Different numbers of user and assistant markers.
    Unbalanced {
        user: usize,
        assistant: usize,
    },
    /// A user marker does not precede its assistant marker.
    OutOfOrder,
}

/// Labels for `ids`: the token id where learned, [`IGNORE`] elsewhere.
///
/// With `user` markers (chat SFT), spans `[user_start_k, assistant_end_k)` are ignored
/// with the first span starting at 0. Without (`user` empty: a judgment whose marker
/// is the cue), everything up to the end of the last assistant marker is ignored.
pub fn mask_labels(ids: &[u32], user: &[u32], assistant: &[u32]) -> Result<Vec<i64>, MaskError> {
    let ends: Vec<usize> = find_all(ids, assistant)
        .into_iter()
        .map(|i| i + assistant.len())
        .collect();
    if ends.is_empty() {
        return Err(MaskError::NoAssistantMarker);
    }
    let mut labels: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
    if user.is_empty() {
        let last = *ends.last().expect("non-empty");
        labels[..last].iter_mut().for_each(|l| *l = IGNORE);
        return Ok(labels);
    }
    let mut starts = find_all(ids, user);
    if starts.is_empty() {
        return Err(MaskError::NoUserMarker);
    }
    if starts.len() != ends.len() {
        return Err(MaskError::Unbalanced {
            user: starts.len(),
            assistant: ends.len(),
        });
    }
    starts[0] = 0;
    for (k, (&s, &e)) in starts.iter().zip(&ends).enumerate() {
        if s >= e || (k + 1 < starts.len() && e > starts[k + 1]) {
            return Err(MaskError::OutOfOrder);
        }
        labels[s..e].iter_mut().for_each(|l| *l = IGNORE);
    }
    Ok(labels)
}

/// Marker ids of a template string; `skip_first_token` drops the first id (a
/// SentencePiece artefact of encoding a marker on its own, SPEC §4).
pub fn marker(
    tok: &self_judge_tokenizer::TextTokenizer,
    text: &str,
    skip_first_token: bool,
) -> anyhow::Result<Vec<u32>> {
    let mut ids = tok.encode(text, false)?;
    if skip_first_token && !ids.is_empty() {
        ids.remove(0);
    }
    anyhow::ensure!(!ids.is_empty(), "the marker {text:?} encodes to no tokens");
    Ok(ids)
}

/// Keeps the last `max_length` tokens and labels (left truncation, as the seed's
/// collator).
pub fn truncate_left(ids: &mut Vec<u32>, labels: &mut Vec<i64>, max_length: usize) {
    if ids.len() > max_length {
        let cut = ids.len() - max_length;
        ids.drain(..cut);
        labels.drain(..cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: [u32; 2] = [90, 91];
    const A: [u32; 2] = [80, 81];

    #[test]
    fn masks_every_turn_boundary() {
        // sys 1 2 | U 3 | A 4 5 | U 6 | A 7
        let ids = [1, 2, 90, 91, 3, 80, 81, 4, 5, 90, 91, 6, 80, 81, 7];
        let l = mask_labels(&ids, &U, &A).unwrap();
        let learned: Vec<u32> = ids
            .iter()
            .zip(&l)
            .filter(|(_, &l)| l != IGNORE)
            .map(|(&t, _)| t)
            .collect();
        assert_eq!(learned, vec![4, 5, 7]);
    }

    #[test]
    fn judgment_learns_only_after_the_cue() {
        let ids = [1, 2, 3, 80, 81, 55, 2];
        let l = mask_labels(&ids, &[], &A).unwrap();
        assert_eq!(l, vec![IGNORE, IGNORE, IGNORE, IGNORE, IGNORE, 55, 2]);
    }

    #[test]
    fn unmatched_markers_reject_the_whole_row() {
        assert_eq!(
            mask_labels(&[1, 2, 3], &U, &A),
            Err(MaskError::NoAssistantMarker)
        );
        assert_eq!(
            mask_labels(&[80, 81, 1], &U, &A),
            Err(MaskError::NoUserMarker)
        );
        assert_eq!(
            mask_labels(&[90, 91, 80, 81, 1, 80, 81], &U, &A),
            Err(MaskError::Unbalanced {
                user: 1,
                assistant: 2
            })
        );
    }

    #[test]
    fn truncation_keeps_the_end() {
        let (mut i, mut l) = (vec![1, 2, 3, 4], vec![IGNORE, 2, 3, 4]);
        truncate_left(&mut i, &mut l, 3);
        assert_eq!((i, l), (vec![2, 3, 4], vec![2, 3, 4]));
    }
}
