//! Majority arithmetic, kept as pure functions so it can be table-tested on its own.

/// Votes needed to win among `voters` members (a strict majority).
pub fn majority(voters: usize) -> usize {
    voters / 2 + 1
}

/// The highest index that a majority of `match_indexes` (one per voter, the leader included)
/// has reached: sort descending and take the majority-th value.
pub fn committed_index(match_indexes: &mut [u64]) -> u64 {
    if match_indexes.is_empty() {
        return 0;
    }
    match_indexes.sort_unstable_by(|a, b| b.cmp(a));
    match_indexes[majority(match_indexes.len()) - 1]
}

/// Outcome of an election so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteResult {
    Won,
    Lost,
    Pending,
}

/// Tallies `granted` and `rejected` out of `voters`.
pub fn vote_result(voters: usize, granted: usize, rejected: usize) -> VoteResult {
    let need = majority(voters);
    if granted >= need {
        VoteResult::Won
    } else if rejected > voters - need {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_table() {
        for (n, want) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (7, 4)] {
            assert_eq!(majority(n), want, "voters={n}");
        }
    }

    #[test]
    fn committed_index_table() {
        let cases: &[(&[u64], u64)] = &[
            (&[5], 5),
            (&[5, 3, 4], 4),
            (&[1, 2, 3, 4, 5], 3),
            (&[7, 7, 0, 0, 0], 0),
            (&[9, 0, 9, 0], 0),
            (&[9, 8, 9, 0], 8),
        ];
        for (matches, want) in cases {
            let mut m = matches.to_vec();
            assert_eq!(committed_index(&mut m), *want, "{matches:?}");
        }
    }

    #[test]
    fn vote_result_table() {
        assert_eq!(vote_result(3, 2, 0), VoteResult::Won);
        assert_eq!(vote_result(3, 1, 1), VoteResult::Pending);
        assert_eq!(vote_result(3, 1, 2), VoteResult::Lost);
        assert_eq!(vote_result(4, 2, 2), VoteResult::Lost, "a tie cannot win");
        assert_eq!(vote_result(5, 2, 2), VoteResult::Pending);
        assert_eq!(vote_result(1, 1, 0), VoteResult::Won);
    }
}
