//! Who may open a control channel right now: a cap on open router channels keeps file
//! descriptors in reserve for the database, the API and downloads, and a rate limit on new
//! channels keeps a reconnect storm from starving everything else. Both answer with a retry hint.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Why a router may not connect now, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAdmitted {
    /// As many routers are connected as this node takes.
    Full { retry_after_secs: u32 },
    /// Too many routers are connecting at once.
    Flooded { retry_after_secs: u32 },
}

impl NotAdmitted {
    pub fn code(self) -> &'static str {
        match self {
            NotAdmitted::Full { .. } => "server_full",
            NotAdmitted::Flooded { .. } => "too_many_connects",
        }
    }

    pub fn retry_after_secs(self) -> u32 {
        match self {
            NotAdmitted::Full { retry_after_secs } | NotAdmitted::Flooded { retry_after_secs } => {
                retry_after_secs
            }
        }
    }
}

/// A full server suggests coming back after this long; a flooded one after a second.
const FULL_RETRY_AFTER_SECS: u32 = 60;
const FLOOD_RETRY_AFTER_SECS: u32 = 1;

#[derive(Debug)]
pub struct Admission {
    max_channels: usize,
    open: AtomicUsize,
    bucket: Mutex<TokenBucket>,
}

/// Holds one admitted channel; dropping it frees the place.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    pub fn new(max_channels: usize, connects_per_sec: u32) -> Self {
        Self {
            max_channels,
            open: AtomicUsize::new(0),
            bucket: Mutex::new(TokenBucket::new(connects_per_sec, Instant::now())),
        }
    }

    /// Admits one more channel, or says why not.
    pub fn admit(self: &Arc<Self>) -> Result<Admitted, NotAdmitted> {
        self.admit_at(Instant::now())
    }

    fn admit_at(self: &Arc<Self>, now: Instant) -> Result<Admitted, NotAdmitted> {
        let previous = self.open.fetch_add(1, Ordering::AcqRel);
        let admitted = Admitted {
            admission: self.clone(),
        };
        if previous >= self.max_channels {
            return Err(NotAdmitted::Full {
                retry_after_secs: FULL_RETRY_AFTER_SECS,
            });
        }
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        if !bucket.take(now) {
            return Err(NotAdmitted::Flooded {
                retry_after_secs: FLOOD_RETRY_AFTER_SECS,
            });
        }
        Ok(admitted)
    }

    #[cfg(test)]
    fn open_channels(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

/// `rate` tokens a second, holding at most one second's worth.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    fn new(rate: u32, now: Instant) -> Self {
        let rate = f64::from(rate.max(1));
        Self {
            rate,
            tokens: rate,
            updated: now,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_cap_counts_open_channels_and_frees_places() {
        let admission = Arc::new(Admission::new(2, 1_000));
        let first = admission.admit().unwrap();
        let _second = admission.admit().unwrap();
        assert_eq!(admission.admit().unwrap_err().code(), "server_full");
        assert_eq!(admission.open_channels(), 2, "a refusal holds no place");
        drop(first);
        assert!(admission.admit().is_ok());
    }

    #[test]
    fn connects_beyond_the_rate_wait_a_second() {
        let admission = Arc::new(Admission::new(100, 3));
        let start = Instant::now();
        let admitted: Vec<_> = (0..3).map(|_| admission.admit_at(start).unwrap()).collect();
        let refused = admission.admit_at(start).unwrap_err();
        assert_eq!(
            refused,
            NotAdmitted::Flooded {
                retry_after_secs: 1
            }
        );
        // A third of a second later one more token has come back.
        assert!(
            admission
                .admit_at(start + Duration::from_millis(334))
                .is_ok()
        );
        drop(admitted);
    }
}
