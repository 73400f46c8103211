//! Virtual time: device-side delays without real sleeping.
//!
//! Every container has one virtual clock, starting at zero. Models schedule
//! work for a virtual instant ([`crate::DeviceModel::deadline`]), such as
//! edu's 100 ms DMA timer. When that work runs depends on the mode:
//!
//! - **Automatic** (the default): virtual time jumps ahead to a device's
//!   next deadline right after every access the driver makes, as if the CPU
//!   went idle at once. A driver polling a status register sees the work done
//!   on its first poll; one that blocks on the interrupt eventfd finds it
//!   already signalled. No test ever waits for real time.
//! - **Manual**: time moves only when the test calls [`MockClock::advance`],
//!   which runs every device's work that has become due. This is how a test
//!   observes a busy device (edu ignoring DMA register writes while a
//!   transfer runs, for example).
//!
//! ```
//! use std::time::Duration;
//! use vfio_hal::prelude::*;
//! use vfio_hal_mock::{models::Edu, MockContainer};
//!
//! let container = MockContainer::new();
//! container.plug("edu", Edu::new())?;
//! let edu = container.open_device("edu")?;
//! let bar0 = edu.region(0)?;
//!
//! let clock = container.clock();
//! clock.set_manual(true);
//! bar0.write_at::<u32>(0x08, 5)?; // start computing 5!
//! assert_eq!(bar0.read_at::<u32>(0x20)? & 1, 1, "still computing");
//! clock.advance(Duration::from_millis(1));
//! assert_eq!(bar0.read_at::<u32>(0x20)? & 1, 0, "done");
//! assert_eq!(bar0.read_at::<u32>(0x08)?, 120);
//! # Ok::<(), vfio_hal::Error>(())
//! ```

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::container::Shared;

/// The clock's state, shared by a container and its devices.
#[derive(Debug, Default)]
pub(crate) struct VirtualTime {
    now_ns: AtomicU64,
    manual: AtomicBool,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl VirtualTime {
    pub(crate) fn now(&self) -> Duration {
        Duration::from_nanos(self.now_ns.load(Ordering::Acquire))
    }

    pub(crate) fn is_manual(&self) -> bool {
        self.manual.load(Ordering::Acquire)
    }

    pub(crate) fn set_manual(&self, manual: bool) {
        self.manual.store(manual, Ordering::Release);
    }

    /// Moves time forward to `at`, never backwards.
    pub(crate) fn jump_to(&self, at: Duration) {
        self.now_ns.fetch_max(nanos(at), Ordering::AcqRel);
    }

    pub(crate) fn advance(&self, by: Duration) {
        let by = nanos(by);
        let _ = self
            .now_ns
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_add(by))
            });
    }
}

/// A handle on a container's virtual clock ([`crate::MockContainer::clock`]).
#[derive(Clone)]
pub struct MockClock {
    shared: Arc<Shared>,
}

impl fmt::Debug for MockClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockClock")
            .field("now", &self.now())
            .field("manual", &self.is_manual())
            .finish()
    }
}

impl MockClock {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Virtual time since the container was created.
    pub fn now(&self) -> Duration {
        self.shared.clock.now()
    }

    /// Whether the test drives time ([`MockClock::advance`]).
    pub fn is_manual(&self) -> bool {
        self.shared.clock.is_manual()
    }

    /// Switches between manual and automatic time. Switching back to
    /// automatic completes every device's pending work at once.
    pub fn set_manual(&self, manual: bool) {
        self.shared.clock.set_manual(manual);
        if !manual {
            self.shared.run_device_timers();
        }
    }

    /// Moves virtual time forward by `by` and runs every device's work that
    /// has become due, in each device's deadline order.
    pub fn advance(&self, by: Duration) {
        self.shared.clock.advance(by);
        self.shared.run_device_timers();
    }
}
