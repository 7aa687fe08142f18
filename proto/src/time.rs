//! Conversions between Protobuf timestamps and `chrono`.
use chrono::{DateTime, TimeZone, Utc};
use prost_types::Timestamp;

/// A `chrono` instant as a Protobuf timestamp.
pub fn to_timestamp(at: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

/// A Protobuf timestamp as a `chrono` instant; `None` when it is out of range.
pub fn from_timestamp(ts: &Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(ts.nanos).ok()?;
    Utc.timestamp_opt(ts.seconds, nanos).single()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_to_the_nanosecond() {
        let at = Utc.timestamp_opt(1_764_000_000, 123_456_789).unwrap();
        assert_eq!(from_timestamp(&to_timestamp(at)), Some(at));
    }

    #[test]
    fn negative_nanos_are_out_of_range() {
        let ts = Timestamp { seconds: 0, nanos: -1 };
        assert_eq!(from_timestamp(&ts), None);
    }
}
