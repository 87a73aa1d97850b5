//! An injectable clock, so that key lifetimes, deletion windows and audit times can be tested without
//! sleeping.
//!
//! Everything in colvault that asks for the time (the KEK cache, `LocalKms` deletion windows, audit
//! records) takes an `Arc<dyn Clock>`. Production code uses [`SystemClock`]; tests use a
//! [`ManualClock`] and move it forward (or backward) explicitly:
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use colvault::clock::{Clock, ManualClock};
//!
//! let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! let clock = ManualClock::new(start);
//! clock.advance(Duration::from_secs(601));
//! assert_eq!(clock.now(), start + Duration::from_secs(601));
//! ```

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// A source of the current wall-clock time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The operating system's wall clock ([`SystemTime::now`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to: for tests.
///
/// It uses interior mutability, so it can be shared as an `Arc<ManualClock>` with the components under
/// test and moved from the test.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<SystemTime>,
}

impl ManualClock {
    /// A clock that reads `start` until it is moved.
    pub fn new(start: SystemTime) -> Self {
        ManualClock { now: Mutex::new(start) }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }

    /// Sets the clock to `to`, which may be earlier than the current reading (a clock going backwards).
    pub fn set(&self, to: SystemTime) {
        *self.now.lock().unwrap_or_else(|e| e.into_inner()) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let c = ManualClock::new(start);
        assert_eq!(c.now(), start);
        assert_eq!(c.now(), start);
        c.advance(Duration::from_secs(5));
        assert_eq!(c.now(), start + Duration::from_secs(5));
        c.set(start - Duration::from_secs(10));
        assert_eq!(c.now(), start - Duration::from_secs(10));
    }

    #[test]
    fn system_clock_is_after_2020() {
        let t = SystemClock.now();
        assert!(t > SystemTime::UNIX_EPOCH + Duration::from_secs(1_577_836_800));
    }
}
