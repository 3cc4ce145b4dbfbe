//! Byte-level BPE as CLIP uses it: bytes mapped to printable characters (GPT-2's table),
//! `</w>` appended to the last symbol of each word, merges applied lowest rank first.

use std::collections::HashMap;

/// Suffix CLIP appends to the last symbol of every word, so word-final pieces get their own ids.
pub(super) const END_OF_WORD: &str = "</w>";

/// GPT-2's reversible byte -> character table: printable Latin-1 bytes map to themselves, the
/// rest to code points from U+0100 up, so every byte becomes a visible vocabulary character.
pub(super) fn bytes_to_unicode() -> [char; 256] {
    let is_printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut table = ['\0'; 256];
    let mut next_unprintable = 256u32;
    for byte in 0..=255u8 {
        let code_point = if is_printable(byte) {
            u32::from(byte)
        } else {
            let c = next_unprintable;
            next_unprintable += 1;
            c
        };
        // Every value is below 0x200, far from the surrogate range, so the conversion holds.
        table[usize::from(byte)] = char::from_u32(code_point).unwrap_or('\u{FFFD}');
    }
    table
}

/// One merge rule resolved to vocabulary ids: `(left, right)` becomes `merged` at `rank`.
#[derive(Debug, Clone, Copy)]
struct Merge {
    rank: u32,
    merged: u32,
}

/// Merge table over token ids: comparing ids instead of strings keeps the hot loop free of
/// allocations.
#[derive(Debug)]
pub(super) struct BpeMerges {
    by_pair: HashMap<(u32, u32), Merge>,
}

impl BpeMerges {
    /// Builds the table from merges in rank order. A merge whose parts or result are not in
    /// the vocabulary can never fire on vocabulary symbols, so it is dropped.
    pub(super) fn new<'a>(
        merges: impl IntoIterator<Item = (&'a str, &'a str)>,
        vocab: &HashMap<String, u32>,
    ) -> Self {
        let mut by_pair = HashMap::new();
        for (rank, (left, right)) in merges.into_iter().enumerate() {
            let (Some(&l), Some(&r), Some(&merged)) = (
                vocab.get(left),
                vocab.get(right),
                vocab.get(&format!("{left}{right}")),
            ) else {
                continue;
            };
            let rank = u32::try_from(rank).unwrap_or(u32::MAX);
            // The first (lowest-rank) occurrence of a pair wins, as in the reference tokenizer.
            by_pair.entry((l, r)).or_insert(Merge { rank, merged });
        }
        Self { by_pair }
    }

    pub(super) fn len(&self) -> usize {
        self.by_pair.len()
    }

    /// Repeatedly merges the adjacent pair with the lowest rank (leftmost on ties, which is
    /// what both OpenAI's loop and HF's priority queue do) until no pair has a merge.
    pub(super) fn apply(&self, mut symbols: Vec<u32>) -> Vec<u32> {
        while symbols.len() > 1 {
            let best = symbols
                .windows(2)
                .enumerate()
                .filter_map(|(pos, pair)| {
                    self.by_pair
                        .get(&(pair[0], pair[1]))
                        .map(|merge| (merge.rank, pos, merge.merged))
                })
                .min_by_key(|&(rank, pos, _)| (rank, pos));
            let Some((rank, _, _)) = best else {
                break;
            };
            // Merge every non-overlapping occurrence of that pair, left to right.
            let mut merged = Vec::with_capacity(symbols.len());
            let mut i = 0;
            while i < symbols.len() {
                if i + 1 < symbols.len() {
                    if let Some(merge) = self.by_pair.get(&(symbols[i], symbols[i + 1])) {
                        if merge.rank == rank {
                            merged.push(merge.merged);
                            i += 2;
                            continue;
                        }
                    }
                }
                merged.push(symbols[i]);
                i += 1;
            }
            symbols = merged;
        }
        symbols
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_a_bijection_onto_printable_characters() {
        let table = bytes_to_unicode();
        let distinct: std::collections::HashSet<char> = table.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
        assert_eq!(table[usize::from(b'a')], 'a');
        assert_eq!(table[usize::from(b' ')], '\u{120}');
        assert_eq!(table[0], '\u{100}');
        assert!(table.iter().all(|c| !c.is_whitespace() && !c.is_control()));
    }

    #[test]
    fn merges_lowest_rank_first() {
        let vocab: HashMap<String, u32> = ["a", "b", "c", "ab", "bc", "abc"]
            .iter()
            .enumerate()
            .map(|(i, s)| (s.to_string(), i as u32))
            .collect();
        // "bc" outranks "ab", so "abc" must go a + bc, and there is no "a"+"bc" merge.
        let merges = BpeMerges::new([("b", "c"), ("a", "b")], &vocab);
        assert_eq!(merges.apply(vec![0, 1, 2]), vec![0, 4]);
        let merges = BpeMerges::new([("a", "b"), ("ab", "c")], &vocab);
        assert_eq!(merges.apply(vec![0, 1, 2]), vec![5]);
    }
}
