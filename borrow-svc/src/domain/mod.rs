//! Circulation rules, with no I/O: loan statuses, quantities, due dates, days late and fees.
mod fees;
mod loan;
mod policy;

pub use fees::{FeeTiers, FeeTiersError};
pub use loan::{LoanStatus, ReturnError, copies_to_return};
pub use policy::{LoanPolicy, PolicyError, Quantity};
