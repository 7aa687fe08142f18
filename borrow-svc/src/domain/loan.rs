//! A loan's life: PENDING (accepted) -> ACTIVE (copies reserved) -> RETURNED (all back), or
//! PENDING -> CANCELED (the saga found too little stock).

use library_platform::text::{copies, is_are};

/// Where a loan is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoanStatus {
    Pending,
    Active,
    Returned,
    Canceled,
}

impl LoanStatus {
    /// The stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            LoanStatus::Pending => "PENDING",
            LoanStatus::Active => "ACTIVE",
            LoanStatus::Returned => "RETURNED",
            LoanStatus::Canceled => "CANCELED",
        }
    }

    /// Copies of a loan in this status count against the reader's limit.
    pub fn is_open(self) -> bool {
        matches!(self, LoanStatus::Pending | LoanStatus::Active)
    }
}

impl std::str::FromStr for LoanStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "PENDING" => Ok(LoanStatus::Pending),
            "ACTIVE" => Ok(LoanStatus::Active),
            "RETURNED" => Ok(LoanStatus::Returned),
            "CANCELED" => Ok(LoanStatus::Canceled),
            other => Err(format!("unknown loan status `{other}`")),
        }
    }
}

/// Why copies cannot be returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReturnError {
    #[error("only an ACTIVE loan can be returned; this one is {}", .0.as_str())]
    NotActive(LoanStatus),
    #[error("quantity: must be at least 1")]
    InvalidQuantity,
    #[error("only {} of this loan {} outstanding", copies(*.outstanding), is_are(*.outstanding))]
    ExceedsOutstanding { outstanding: i32 },
}

/// How many copies a return of `requested` (all outstanding when `None`) gives back.
///
/// # Errors
/// The loan is not ACTIVE, the quantity is not positive, or more than is outstanding.
pub fn copies_to_return(
    status: LoanStatus,
    quantity: i32,
    returned: i32,
    requested: Option<i32>,
) -> Result<i32, ReturnError> {
    if status != LoanStatus::Active {
        return Err(ReturnError::NotActive(status));
    }
    let outstanding = quantity - returned;
    let n = requested.unwrap_or(outstanding);
    if n <= 0 {
        return Err(ReturnError::InvalidQuantity);
    }
    if n > outstanding {
        return Err(ReturnError::ExceedsOutstanding { outstanding });
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn omitted_quantity_returns_everything_outstanding() {
        assert_eq!(copies_to_return(LoanStatus::Active, 4, 1, None), Ok(3));
    }

    #[test]
    fn partial_returns_are_allowed_up_to_what_is_outstanding() {
        assert_eq!(copies_to_return(LoanStatus::Active, 4, 1, Some(3)), Ok(3));
        assert_eq!(
            copies_to_return(LoanStatus::Active, 4, 1, Some(4)),
            Err(ReturnError::ExceedsOutstanding { outstanding: 3 })
        );
    }

    #[test]
    fn only_active_loans_come_back() {
        for status in [LoanStatus::Pending, LoanStatus::Returned, LoanStatus::Canceled] {
            assert_eq!(
                copies_to_return(status, 1, 0, None),
                Err(ReturnError::NotActive(status))
            );
        }
    }

    #[test]
    fn zero_or_negative_quantities_are_refused() {
        assert_eq!(
            copies_to_return(LoanStatus::Active, 2, 0, Some(0)),
            Err(ReturnError::InvalidQuantity)
        );
        assert_eq!(
            copies_to_return(LoanStatus::Active, 2, 0, Some(-1)),
            Err(ReturnError::InvalidQuantity)
        );
    }

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in [
            LoanStatus::Pending,
            LoanStatus::Active,
            LoanStatus::Returned,
            LoanStatus::Canceled,
        ] {
            assert_eq!(status.as_str().parse::<LoanStatus>(), Ok(status));
        }
        assert!("LOST".parse::<LoanStatus>().is_err());
    }
}
