//! Exponential backoff: how long to wait before trying again after a failure (a lost broker, a
//! failed drain pass, an event handler that failed), doubling each time up to a ceiling, and
//! starting over once things work again. One piece, so every retry loop of the platform waits
//! the same way.
use std::time::Duration;

/// The waits of one retry loop.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Waits of `first`, then twice as long each time, never above `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first.min(max),
        }
    }

    /// The wait before the next attempt; the one after it is twice as long (up to the ceiling).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Things work again: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.next = self.first.min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn waits_double_up_to_the_ceiling_and_start_over_on_reset() {
        let mut backoff = Backoff::new(50 * MS, 300 * MS);
        let waits: Vec<Duration> = (0..5).map(|_| backoff.next_delay()).collect();
        assert_eq!(waits, [50 * MS, 100 * MS, 200 * MS, 300 * MS, 300 * MS]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), 50 * MS);
    }

    #[test]
    fn a_first_wait_above_the_ceiling_is_held_to_it() {
        let mut backoff = Backoff::new(10 * MS, 5 * MS);
        assert_eq!(backoff.next_delay(), 5 * MS);
        assert_eq!(backoff.next_delay(), 5 * MS);
        backoff.reset();
        assert_eq!(backoff.next_delay(), 5 * MS);
    }
}
