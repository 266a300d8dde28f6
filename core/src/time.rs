//! [`Now`]: the two clocks the core is given.

use std::time::{Duration, Instant};

use crate::contact::UnixSeconds;

/// The current time, as the caller read it: a monotonic instant for deadlines
/// and wall-clock time for what is recorded (`connectedTime`, task due times,
/// claim times). The core never reads a clock itself.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Now {
    /// Monotonic time: deadlines and timeouts.
    pub mono: Instant,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

impl Now {
    /// A time from its two clocks.
    pub fn new(mono: Instant, unix_ms: u64) -> Self {
        Self { mono, unix_ms }
    }

    /// Wall-clock seconds since the Unix epoch.
    pub fn unix_secs(&self) -> UnixSeconds {
        self.unix_ms / 1000
    }

    /// The same clocks, `elapsed` later (simulations and tests).
    pub fn advanced(self, elapsed: Duration) -> Self {
        Self {
            mono: self.mono + elapsed,
            unix_ms: self
                .unix_ms
                .saturating_add(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    /// The monotonic instant of a wall-clock time: `unix_ms` in the past
    /// gives `mono` itself (it is due now).
    pub fn mono_of_unix(&self, unix_ms: u64) -> Instant {
        // Capped at about 34 years, so a corrupt or hostile record cannot
        // overflow `Instant`.
        let ahead = unix_ms.saturating_sub(self.unix_ms).min(1 << 40);
        self.mono + Duration::from_millis(ahead)
    }

    /// The wall-clock time `delay` from now.
    pub fn unix_after(&self, delay: Duration) -> u64 {
        self.unix_ms
            .saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
    }
}

/// The time for a call that needs it only sometimes: a [`Now`] already read,
/// or a clock to read when, and only when, the call needs the time.
///
/// A stream's read or write is the hot path of a transfer and most of them
/// change nothing that depends on the time; the one that ends a stream's
/// side releases its connection's use, and the idle TTL must count from the
/// moment it happens. Reading two clocks per chunk cost a transfer about 2%
/// of its CPU, so the driver hands the clock itself and the core calls it
/// only on that path. The core still reads no clock of its own.
pub trait TimeSource {
    /// The time now.
    fn now(self) -> Now;
}

impl TimeSource for Now {
    fn now(self) -> Now {
        self
    }
}

impl<F: FnOnce() -> Now> TimeSource for F {
    fn now(self) -> Now {
        self()
    }
}
