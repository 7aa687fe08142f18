//! How stock may change. The database enforces the same rules with conditional updates (so they
//! hold under concurrency); these functions state them and are what the tests pin down.
//!
//! Invariant: `available + copies reserved by open loans == total` and `0 <= available <= total`.

use library_platform::text::{copies, is_are};

/// A stock change the rules refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StockError {
    #[error("{} {} on loan; total copies cannot go below that", copies(*.on_loan), is_are(*.on_loan))]
    BelowOnLoan { on_loan: i32 },
}

/// The copies available after changing the total from `total` to `new_total`, keeping the copies
/// on loan (`total - available`) on loan.
///
/// # Errors
/// `new_total` is below the copies on loan.
pub fn available_after_resize(total: i32, available: i32, new_total: i32) -> Result<i32, StockError> {
    let on_loan = total - available;
    if new_total < on_loan {
        return Err(StockError::BelowOnLoan { on_loan });
    }
    Ok(new_total - on_loan)
}

/// Whether `quantity` copies can be reserved now.
pub fn can_reserve(available: i32, quantity: i32) -> bool {
    quantity > 0 && available >= quantity
}

/// What became of one request for copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocation {
    pub served: bool,
    /// Copies on the shelf once this request was decided.
    pub left: i32,
}

/// Serves `requests` (copies wanted, in arrival order) from a shelf of `available` copies, first
/// come first served. A request that does not fit is refused and does not block a smaller one
/// after it.
pub fn allocate(mut available: i32, requests: impl IntoIterator<Item = i32>) -> Vec<Allocation> {
    requests
        .into_iter()
        .map(|quantity| {
            let served = can_reserve(available, quantity);
            if served {
                available -= quantity;
            }
            Allocation {
                served,
                left: available,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(allocations: &[Allocation]) -> Vec<bool> {
        allocations.iter().map(|a| a.served).collect()
    }

    #[test]
    fn requests_are_served_in_arrival_order_until_the_shelf_is_empty() {
        let allocations = allocate(3, [1, 1, 1, 1]);
        assert_eq!(served(&allocations), [true, true, true, false]);
        assert_eq!(allocations.iter().map(|a| a.left).collect::<Vec<_>>(), [2, 1, 0, 0]);
    }

    #[test]
    fn a_request_too_big_is_refused_and_a_smaller_one_after_it_is_served() {
        let allocations = allocate(3, [2, 2, 1]);
        assert_eq!(served(&allocations), [true, false, true]);
        assert_eq!(allocations[1].left, 1, "a refusal leaves the shelf as it was");
        assert_eq!(allocations[2].left, 0);
    }

    #[test]
    fn nothing_is_served_from_an_empty_shelf_or_for_no_copies() {
        assert_eq!(allocate(0, [1]), [Allocation { served: false, left: 0 }]);
        assert_eq!(served(&allocate(5, [0, -1])), [false, false]);
        assert!(allocate(5, []).is_empty());
    }

    #[test]
    fn growing_the_total_adds_to_the_shelf() {
        assert_eq!(available_after_resize(4, 1, 10), Ok(7));
    }

    #[test]
    fn shrinking_down_to_the_copies_on_loan_empties_the_shelf() {
        assert_eq!(available_after_resize(4, 1, 3), Ok(0));
    }

    #[test]
    fn shrinking_below_the_copies_on_loan_is_refused() {
        assert_eq!(
            available_after_resize(4, 1, 2),
            Err(StockError::BelowOnLoan { on_loan: 3 })
        );
    }

    #[test]
    fn reserving_needs_enough_copies_and_a_positive_quantity() {
        assert!(can_reserve(4, 4));
        assert!(!can_reserve(4, 5));
        assert!(!can_reserve(4, 0));
    }
}
