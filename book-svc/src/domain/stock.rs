//! How stock may change. The database enforces the same rules with conditional updates (so they
//! hold under concurrency); these functions state them and are what the tests pin down.
//!
//! Invariant: `available + copies reserved by open loans == total` and `0 <= available <= total`.

/// A stock change the rules refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StockError {
    #[error("{on_loan} copies are on loan; total copies cannot go below that")]
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

#[cfg(test)]
mod tests {
    use super::*;

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
