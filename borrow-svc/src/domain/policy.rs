//! The library's lending policy: loan period, per-reader limit, fee tiers and the time zone in
//! which days are counted.
use chrono::{DateTime, Days, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::FeeTiers;

/// A policy setting that makes no sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("LIBRARY_TIMEZONE: `{0}` is not an IANA time zone (e.g. UTC, Asia/Seoul)")]
    TimeZone(String),
    #[error("LIBRARY_LOAN_DAYS: must be between 1 and 3650")]
    LoanDays,
    #[error("LIBRARY_MAX_COPIES_PER_USER: must be between 1 and 1000")]
    MaxCopies,
}

/// A borrow quantity the policy allows: 1..=max copies per reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(i32);

impl Quantity {
    pub fn get(self) -> i32 {
        self.0
    }
}

/// How lending works here.
#[derive(Debug, Clone)]
pub struct LoanPolicy {
    loan_days: u32,
    max_copies: i32,
    fee_tiers: FeeTiers,
    timezone: Tz,
}

impl LoanPolicy {
    /// # Errors
    /// A value out of range or an unknown time zone, naming its setting.
    pub fn new(loan_days: u32, max_copies: i32, fee_tiers: FeeTiers, timezone: &str) -> Result<Self, PolicyError> {
        if !(1..=3650).contains(&loan_days) {
            return Err(PolicyError::LoanDays);
        }
        if !(1..=1000).contains(&max_copies) {
            return Err(PolicyError::MaxCopies);
        }
        let timezone: Tz = timezone
            .trim()
            .parse()
            .map_err(|_| PolicyError::TimeZone(timezone.to_owned()))?;
        Ok(Self {
            loan_days,
            max_copies,
            fee_tiers,
            timezone,
        })
    }

    /// The most copies one reader may have outstanding (PENDING + ACTIVE).
    pub fn max_copies(&self) -> i32 {
        self.max_copies
    }

    /// A borrow quantity, if it could ever be granted.
    pub fn quantity(&self, requested: i32) -> Option<Quantity> {
        (1..=self.max_copies)
            .contains(&requested)
            .then_some(Quantity(requested))
    }

    /// The end (23:59:59) of the day `loan_days` after the borrow day, in the library's zone.
    pub fn due_at(&self, borrowed_at: DateTime<Utc>) -> DateTime<Utc> {
        let borrow_day = borrowed_at.with_timezone(&self.timezone).date_naive();
        let due_day = borrow_day + Days::new(u64::from(self.loan_days));
        let end_of_day = due_day.and_time(NaiveTime::from_hms_opt(23, 59, 59).unwrap_or_default());
        self.timezone
            .from_local_datetime(&end_of_day)
            .latest()
            // A local time that does not exist (a DST gap at midnight): an hour later does.
            .or_else(|| {
                self.timezone
                    .from_local_datetime(&(end_of_day + chrono::Duration::hours(1)))
                    .latest()
            })
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(borrowed_at + chrono::Duration::days(i64::from(self.loan_days)))
    }

    /// Calendar days between the due date and the return date, in the library's zone; 0 when on
    /// time.
    pub fn days_late(&self, due_at: DateTime<Utc>, returned_at: DateTime<Utc>) -> i64 {
        let due_day = due_at.with_timezone(&self.timezone).date_naive();
        let return_day = returned_at.with_timezone(&self.timezone).date_naive();
        (return_day - due_day).num_days().max(0)
    }

    /// The fee of one return that many days late.
    pub fn late_fee_for(&self, days_late: i64) -> i64 {
        self.fee_tiers.late_fee_for(days_late)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(tz: &str) -> LoanPolicy {
        LoanPolicy::new(14, 10, FeeTiers::default(), tz).unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn due_at_is_the_end_of_the_fourteenth_day() {
        assert_eq!(
            policy("UTC").due_at(at("2026-11-01T09:30:00Z")),
            at("2026-11-15T23:59:59Z")
        );
    }

    #[test]
    fn due_at_counts_days_in_the_library_zone() {
        // 20:00 UTC on Nov 1 is already Nov 2 in Seoul (UTC+9): due at the end of Nov 16, Seoul.
        assert_eq!(
            policy("Asia/Seoul").due_at(at("2026-11-01T20:00:00Z")),
            at("2026-11-16T14:59:59Z")
        );
    }

    #[test]
    fn returning_on_the_due_day_is_on_time() {
        let p = policy("UTC");
        let due = at("2026-11-15T23:59:59Z");
        assert_eq!(p.days_late(due, at("2026-11-15T23:59:59Z")), 0);
        assert_eq!(p.days_late(due, at("2026-11-01T00:00:00Z")), 0);
        assert_eq!(p.days_late(due, at("2026-11-16T00:00:00Z")), 1);
        assert_eq!(p.days_late(due, at("2026-11-22T12:00:00Z")), 7);
    }

    #[test]
    fn a_day_late_is_a_calendar_day_in_the_library_zone() {
        // Due end of Nov 15 in Seoul = 14:59:59Z. Returned 15:30Z is 00:30 Nov 16 in Seoul: a day
        // late there, while in UTC it is still the due day.
        let due = at("2026-11-15T14:59:59Z");
        let returned = at("2026-11-15T15:30:00Z");
        assert_eq!(policy("Asia/Seoul").days_late(due, returned), 1);
        assert_eq!(policy("UTC").days_late(due, returned), 0);
    }

    #[test]
    fn quantities_are_bounded_by_the_per_reader_limit() {
        let p = policy("UTC");
        assert!(p.quantity(0).is_none());
        assert!(p.quantity(-3).is_none());
        assert_eq!(p.quantity(10).map(Quantity::get), Some(10));
        assert!(p.quantity(11).is_none());
    }

    #[test]
    fn bad_settings_name_their_variable() {
        assert!(matches!(
            LoanPolicy::new(14, 10, FeeTiers::default(), "Mars/Base"),
            Err(PolicyError::TimeZone(_))
        ));
        assert_eq!(
            LoanPolicy::new(0, 10, FeeTiers::default(), "UTC").unwrap_err(),
            PolicyError::LoanDays
        );
        assert_eq!(
            LoanPolicy::new(14, 0, FeeTiers::default(), "UTC").unwrap_err(),
            PolicyError::MaxCopies
        );
    }
}
