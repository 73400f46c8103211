//! `MockContainer`: the mock IOMMU, the plugged devices and the virtual clock.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use vfio_hal::dirty::DirtyBitmap;
use vfio_hal::{Container, DmaAccess, Error, IommuInfo, Result, Target};

use crate::clock::{MockClock, VirtualTime};
use crate::device::{DeviceCore, MockDevice};
use crate::iommu::{IommuConfig, IommuFault, MappingInfo, MockIommu};
use crate::model::{DeviceModel, Incident};

/// How many incidents are kept; older ones are dropped (and still counted
/// by [`MockContainer::incident_count`]).
pub const INCIDENT_LOG_CAPACITY: usize = 4096;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a container shares with its devices and clock handles.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) iommu: MockIommu,
    pub(crate) clock: VirtualTime,
    devices: Mutex<BTreeMap<String, Arc<DeviceCore>>>,
    incidents: Mutex<IncidentLog>,
}

/// The newest incidents, and how many there were.
#[derive(Debug, Default)]
struct IncidentLog {
    recent: VecDeque<Incident>,
    total: u64,
}

impl Shared {
    pub(crate) fn record(&self, incident: Incident) {
        let mut log = lock(&self.incidents);
        if log.recent.len() == INCIDENT_LOG_CAPACITY {
            log.recent.pop_front();
        }
        log.recent.push_back(incident);
        log.total += 1;
    }

    /// Lets every plugged device run the work its clock mode allows.
    pub(crate) fn run_device_timers(&self) {
        let cores: Vec<Arc<DeviceCore>> = lock(&self.devices).values().cloned().collect();
        for core in cores {
            core.run_timers(self);
        }
    }
}

/// An in-memory VFIO container: a kernel-faithful IOMMU plus device models.
///
/// Cloning shares the same container (the state is behind an `Arc`), so a
/// test can keep a handle while the code under test owns another.
///
/// ```
/// use vfio_hal::prelude::*;
/// use vfio_hal::{DmaAccess, DmaBuffer, ErrorKind};
/// use vfio_hal_mock::{models::Edu, MockContainer};
///
/// let container = MockContainer::new();
/// container.plug("0000:00:04.0", Edu::new())?;
///
/// let ring = container.map_buffer(0x10_0000, DmaBuffer::new(4096)?, DmaAccess::ReadWrite)?;
/// let overlap = container.map_buffer(0x10_0000, DmaBuffer::new(4096)?, DmaAccess::ReadWrite);
/// assert_eq!(overlap.unwrap_err().kind(), ErrorKind::AlreadyMapped);
/// assert_eq!(container.mapping_count(), 1);
///
/// let edu = container.open_device("0000:00:04.0")?;
/// assert_eq!(edu.region(0)?.read_at::<u32>(0)?, 0x0100_00ed);
/// drop(ring);
/// assert_eq!(container.mapped_bytes(), 0);
/// # Ok::<(), vfio_hal::Error>(())
/// ```
///
/// A guard that owns a share of its container lives beside it in a VMM's
/// state ([`Container::map_buffer_owned`]):
///
/// ```
/// use std::sync::Arc;
/// use vfio_hal::{Container, DmaAccess, DmaBuffer, OwnedDmaMapping};
/// use vfio_hal_mock::MockContainer;
///
/// struct Vm {
///     container: Arc<MockContainer>,
///     ram: OwnedDmaMapping<MockContainer>,
/// }
///
/// let container = Arc::new(MockContainer::new());
/// let ram = container.map_buffer_owned(0, DmaBuffer::new(0x10_0000)?, DmaAccess::ReadWrite)?;
/// let vm = Vm { container, ram };
/// assert_eq!(vm.container.mapping_count(), 1);
///
/// let container = Arc::clone(&vm.container);
/// drop(vm);
/// assert_eq!(container.mapping_count(), 0, "dropping the state unmapped");
/// # Ok::<(), vfio_hal::Error>(())
/// ```
#[derive(Clone)]
pub struct MockContainer {
    owner: Arc<Owner>,
}

/// The container proper; devices and clocks hold only the [`Shared`] part.
///
/// `map_dma_raw`'s contract lets the caller free mapped memory once the
/// container is dropped, but open devices keep `Shared` (and so the IOMMU)
/// alive. Dropping the last container handle therefore unmaps everything:
/// later DMA by a still-open device faults instead of touching freed memory.
#[derive(Debug)]
struct Owner {
    shared: Arc<Shared>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.iommu.unmap_all();
    }
}

impl fmt::Debug for MockContainer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockContainer")
            .field("devices", &self.devices())
            .field("mappings", &self.mapping_count())
            .field("mapped_bytes", &self.mapped_bytes())
            .field("clock", &self.clock())
            .finish()
    }
}

impl Default for MockContainer {
    fn default() -> Self {
        Self::new()
    }
}

impl MockContainer {
    fn shared(&self) -> &Arc<Shared> {
        &self.owner.shared
    }

    /// A container with the default IOMMU ([`IommuConfig::default`]).
    pub fn new() -> Self {
        let iommu = MockIommu::new(IommuConfig::default())
            .unwrap_or_else(|e| unreachable!("the default IOMMU configuration is valid: {e}"));
        Self::from_iommu(iommu)
    }

    /// A container with this IOMMU configuration.
    ///
    /// Errors: `InvalidArgument` for a configuration no IOMMU could have
    /// (page size 0 or not a power of two, `max_mappings` 0, no IOVA range,
    /// a range reversed, holding no page, or out of order); its source is
    /// the [`ConfigError`](crate::ConfigError) naming the rule and value.
    ///
    /// ```
    /// use vfio_hal::ErrorKind;
    /// use vfio_hal_mock::{ConfigError, IommuConfig, MockContainer};
    ///
    /// let e = MockContainer::with_config(IommuConfig { page_size: 0, ..IommuConfig::default() })
    ///     .unwrap_err();
    /// assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    /// let why = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<ConfigError>());
    /// assert_eq!(why, Some(&ConfigError::PageSize { page_size: 0 }));
    /// ```
    pub fn with_config(config: IommuConfig) -> Result<Self> {
        Ok(Self::from_iommu(MockIommu::new(config)?))
    }

    fn from_iommu(iommu: MockIommu) -> Self {
        let shared = Arc::new(Shared {
            iommu,
            clock: VirtualTime::default(),
            devices: Mutex::new(BTreeMap::new()),
            incidents: Mutex::new(IncidentLog::default()),
        });
        Self {
            owner: Arc::new(Owner { shared }),
        }
    }

    /// Plugs a device model under `name`, to be opened with [`Container::open_device`].
    ///
    /// Errors: a name already plugged is `Busy` (`EBUSY`); an inconsistent
    /// model layout is `InvalidArgument` with the rule it breaks.
    pub fn plug(&self, name: &str, model: impl DeviceModel) -> Result<()> {
        // Built before taking the registry lock: it creates memfds.
        let core = DeviceCore::new(name, Box::new(model))?;
        let mut devices = lock(&self.shared().devices);
        if devices.contains_key(name) {
            return Err(Error::sys(
                "plug",
                Target::Device(name.to_owned()),
                libc::EBUSY,
            ));
        }
        devices.insert(name.to_owned(), Arc::new(core));
        Ok(())
    }

    /// Removes the device now (surprise removal). An open [`MockDevice`] and
    /// its regions and irqs then fail with `DeviceGone` (`ENODEV`), and its
    /// eventfd routes are closed. The name can be plugged again.
    ///
    /// Errors: `NotFound` if nothing is plugged under `name`.
    pub fn unplug(&self, name: &str) -> Result<()> {
        let core = lock(&self.shared().devices)
            .remove(name)
            .ok_or_else(|| Error::sys("unplug", Target::Device(name.to_owned()), libc::ENOENT))?;
        core.unplug();
        Ok(())
    }

    /// Asks the user to release the device, as vfio-pci does when the host
    /// wants it back: signals the REQ irq's eventfd. Returns whether one was
    /// signalled (false if the device is not open or has no REQ eventfd).
    ///
    /// Errors: `NotFound` if nothing is plugged under `name`.
    pub fn request_unplug(&self, name: &str) -> Result<bool> {
        let core = lock(&self.shared().devices)
            .get(name)
            .cloned()
            .ok_or_else(|| {
                Error::sys(
                    "request_unplug",
                    Target::Device(name.to_owned()),
                    libc::ENOENT,
                )
            })?;
        Ok(core.request_release())
    }

    /// Names of the plugged devices, sorted.
    pub fn devices(&self) -> Vec<String> {
        lock(&self.shared().devices).keys().cloned().collect()
    }

    /// The IOMMU (for its less common queries).
    pub fn iommu(&self) -> &MockIommu {
        &self.shared().iommu
    }

    /// The recorded IOMMU faults, oldest first.
    pub fn faults(&self) -> Vec<IommuFault> {
        self.shared().iommu.faults()
    }

    /// Returns and forgets the recorded IOMMU faults.
    pub fn take_faults(&self) -> Vec<IommuFault> {
        self.shared().iommu.take_faults()
    }

    /// The recorded incidents (DMA without bus mastering, refused
    /// requests), oldest first: the newest [`INCIDENT_LOG_CAPACITY`].
    pub fn incidents(&self) -> Vec<Incident> {
        lock(&self.shared().incidents)
            .recent
            .iter()
            .cloned()
            .collect()
    }

    /// How many incidents were recorded in total, including dropped and
    /// taken ones. Counting from 1, as the fault and trace logs do, the
    /// last of [`MockContainer::incidents`] is incident number
    /// `incident_count()`.
    pub fn incident_count(&self) -> u64 {
        lock(&self.shared().incidents).total
    }

    /// Returns and forgets the recorded incidents.
    pub fn take_incidents(&self) -> Vec<Incident> {
        std::mem::take(&mut lock(&self.shared().incidents).recent).into()
    }

    /// Number of live DMA mappings.
    pub fn mapping_count(&self) -> usize {
        self.shared().iommu.mapping_count()
    }

    /// Total bytes mapped.
    pub fn mapped_bytes(&self) -> u64 {
        self.shared().iommu.mapped_bytes()
    }

    /// Every live mapping, ascending by IOVA.
    pub fn mappings(&self) -> Vec<MappingInfo> {
        self.shared().iommu.mappings()
    }

    /// The virtual clock of this container ([`crate::clock`]).
    pub fn clock(&self) -> MockClock {
        MockClock::new(Arc::clone(self.shared()))
    }
}

// SAFETY: the mock IOMMU removes a mapping from its table, under the lock
// its device models translate through, before it answers an unmap with
// success; it says NotMapped only when no mapping of the range exists (a
// split is refused with EINVAL, or performed when configured so).
unsafe impl Container for MockContainer {
    type Device = MockDevice;

    fn iommu_info(&self) -> Result<IommuInfo> {
        Ok(self.shared().iommu.info())
    }

    unsafe fn map_dma_raw(
        &self,
        iova: u64,
        host: *mut u8,
        len: u64,
        access: DmaAccess,
    ) -> Result<()> {
        // SAFETY: the caller upholds `map_dma_raw`'s contract, which is
        // exactly `MockIommu::map`'s.
        unsafe { self.shared().iommu.map(iova, host, len, access) }
    }

    fn unmap_dma(&self, iova: u64, len: u64) -> Result<u64> {
        self.shared().iommu.unmap(iova, len)
    }

    fn unmap_all(&self) -> Result<u64> {
        Ok(self.shared().iommu.unmap_all())
    }

    /// The mock IOMMU's dirty tracking ([`MockIommu::set_dirty_tracking`](crate::iommu::MockIommu::set_dirty_tracking)).
    fn set_dirty_tracking(&self, enable: bool) -> Result<()> {
        self.shared().iommu.set_dirty_tracking(enable);
        Ok(())
    }

    /// See [`MockIommu::read_dirty`](crate::iommu::MockIommu::read_dirty).
    fn read_dirty(&self, iova: u64, len: u64, page_size: u64, keep: bool) -> Result<DirtyBitmap> {
        self.shared().iommu.read_dirty(iova, len, page_size, keep)
    }

    /// Opens a plugged device. Errors: `NotFound` (`ENOENT`) for an unknown
    /// name, `Busy` (`EBUSY`) if it is already open.
    fn open_device(&self, name: &str) -> Result<MockDevice> {
        let core = lock(&self.shared().devices)
            .get(name)
            .cloned()
            .ok_or_else(|| {
                Error::sys("open_device", Target::Device(name.to_owned()), libc::ENOENT)
            })?;
        core.open(self.shared())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_incident_log_keeps_the_newest_and_counts_them_all() {
        let c = MockContainer::new();
        let extra = 3;
        for i in 0..INCIDENT_LOG_CAPACITY + extra {
            c.shared().record(Incident::Refused {
                device: "d".into(),
                reason: format!("incident {}", i + 1),
            });
        }
        let kept = c.incidents();
        assert_eq!(kept.len(), INCIDENT_LOG_CAPACITY, "bounded");
        let total = (INCIDENT_LOG_CAPACITY + extra) as u64;
        assert_eq!(c.incident_count(), total, "dropped ones still count");
        let reason = |i: &Incident| match i {
            Incident::Refused { reason, .. } => reason.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            kept.first().map(reason),
            Some(format!("incident {}", extra + 1))
        );
        assert_eq!(kept.last().map(reason), Some(format!("incident {total}")));
        c.take_incidents();
        assert_eq!(c.incident_count(), total, "taking keeps the count");
    }
}
