//! The most recently active of a user's conversations, picked without holding them all: a user
//! in 100,000 conversations must not cost a 100,000-entry copy to build one frame.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use parley_shared::ids::ConversationId;
use parley_shared::presence::MAX_AUDIENCE;

/// A presence announcement's audience from the user's small conversations and their `last_seq`:
/// the [`MAX_AUDIENCE`] most recently active.
pub fn audience(small: impl IntoIterator<Item = (i64, ConversationId)>) -> Vec<ConversationId> {
    most_recent(small, MAX_AUDIENCE).0.into_iter().map(|(_, conversation)| conversation).collect()
}

/// The `max` items with the highest `last_seq`, highest first, and whether any were left out.
/// Holds at most `max + 1` items at a time, however many `items` yields.
pub fn most_recent<T: Ord>(items: impl IntoIterator<Item = (i64, T)>, max: usize) -> (Vec<(i64, T)>, bool) {
    let mut kept = BinaryHeap::new();
    let mut left_out = false;
    for item in items {
        kept.push(Reverse(item));
        if kept.len() > max {
            kept.pop();
            left_out = true;
        }
    }
    // Ascending in `Reverse` is descending in `last_seq`.
    (kept.into_sorted_vec().into_iter().map(|Reverse(item)| item).collect(), left_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_highest_seqs_highest_first_and_says_when_it_left_some_out() {
        let items = [(3, 'c'), (9, 'i'), (1, 'a'), (7, 'g'), (5, 'e')];
        assert_eq!(most_recent(items, 2), (vec![(9, 'i'), (7, 'g')], true));
        assert_eq!(most_recent(items, 5), (vec![(9, 'i'), (7, 'g'), (5, 'e'), (3, 'c'), (1, 'a')], false));
        assert_eq!(most_recent(items, 0), (vec![], true));
        assert_eq!(most_recent(Vec::<(i64, char)>::new(), 3), (vec![], false));
    }
}
