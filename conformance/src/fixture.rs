//! What a backend hands the suite: containers, device names, declared capabilities.
//!
//! The suite is written once against the hal traits; a [`Fixture`] is the
//! only thing that differs between the mock, type1 (`legacy-type1v2`), the
//! iommufd compat container (`legacy-iommufd-compat`) and native iommufd
//! (`iommufd`) — like the kernel selftests' `FIXTURE_VARIANT`s. Where
//! backends legitimately differ, the fixture *declares* it in
//! [`Capabilities`] and the cases check the declaration both ways: a
//! capability declared absent must be refused with the right kind, one
//! declared present must work. Nothing is skipped because a backend happens
//! to fail.

use std::time::Duration;

use vfio_hal::{Container, ErrorKind, Result};

/// One backend mode under test.
///
/// Every case asks for a fresh container, so cases do not see each other's
/// mappings or interrupt routes. Hooks default to "not available"; a case
/// that needs one is not applicable without it, and says so.
pub trait Fixture {
    /// The backend's container type.
    type Container: Container;

    /// The mode's name, e.g. `"mock"`, `"legacy-type1v2"`,
    /// `"legacy-iommufd-compat"`, `"iommufd"`.
    fn mode(&self) -> &str;

    /// A fresh container (IO address space) with the fixture's devices
    /// reachable through [`Container::open_device`] and no mappings.
    fn container(&self) -> Result<Self::Container>;

    /// The name of QEMU's `edu` device (or a model of it), for `open_device`.
    fn edu(&self) -> &str;

    /// The name of a device with MSI-X, if the fixture has one (the mock's
    /// copy engine; in the real-kernel lane a QEMU `e1000e` or `nvme`).
    /// MSI-X cases use only generic means on it: irq info, loopback trigger,
    /// config space and region info.
    fn msix_device(&self) -> Option<&str> {
        None
    }

    /// The name of a copy engine with the kernel selftests' DMA contract
    /// (see [`crate::copy_engine`]), if the fixture has one.
    fn copy_engine(&self) -> Option<&str> {
        None
    }

    /// The name of QEMU's `igb` NIC (82576, `8086:10c9`), if the fixture
    /// has one, for the DMA-engine cases through [`crate::igb`]: in the
    /// real-kernel lane the igb alone behind its root port; the mock has
    /// none. The cases reset it by software and leave it reset.
    fn igb(&self) -> Option<&str> {
        None
    }

    /// Two devices of one model with VFIO migration, if the fixture has
    /// them: the source and the destination of the migration cases (the
    /// mock's migratable edus; in the real-kernel lane, mtty instances).
    /// The cases leave both RUNNING.
    fn migratable_pair(&self) -> Option<(&str, &str)> {
        None
    }

    /// What this backend does where backends legitimately differ.
    fn capabilities(&self) -> Capabilities;

    /// IOMMU faults recorded so far in `container`, where the backend
    /// records them (the mock does; the kernel only logs them). Must return
    /// `Some` when [`Capabilities::iommu_faults_observable`] is declared.
    fn iommu_faults(&self, container: &Self::Container) -> Option<u64> {
        let _ = container;
        None
    }

    /// The number of live DMA mappings in `container`, where the backend
    /// can tell without changing anything. Leak checks fall back to
    /// `unmap_all() == 0` (which empties the container) without it.
    fn live_mappings(&self, container: &Self::Container) -> Option<usize> {
        let _ = container;
        None
    }

    /// Injection points *inside* backend calls (below the hal traits), where
    /// the fixture has them: in the real-kernel lane, the kernel's per-thread
    /// `fail-nth`. Whole hal calls are failed by
    /// `vfio_hal::decorate::inject::FaultInjector`, which wraps any backend and
    /// needs no hook.
    fn step_faults(&self) -> Option<&dyn StepFaults> {
        None
    }

    /// Unplugs `device` from under its users, where the fixture can; `None`
    /// where it cannot (the lane unplugs through QMP in its own test).
    fn unplug(&self, container: &Self::Container, device: &str, how: Unplug) -> Option<Result<()>> {
        let _ = (container, device, how);
        None
    }
}

/// Fails the Nth fallible step inside the backend from now on, on this thread.
///
/// The contract of the kernel's `/proc/thread-self/fail-nth`: arming with
/// `n` makes the `n`th injection point reached by this thread fail;
/// disarming reports whether it did.
pub trait StepFaults {
    /// Arms: the `nth` step from now (1-based) fails.
    fn arm(&self, nth: u64) -> Result<()>;
    /// Disarms; returns whether the armed fault fired.
    fn disarm(&self) -> Result<bool>;
}

/// How [`Fixture::unplug`] removes a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unplug {
    /// Ask politely: signal the device's REQ interrupt (what vfio-pci does
    /// when the host wants the device back) and remove it once released.
    Request,
    /// Remove it now, in use or not (surprise removal): every later
    /// operation on it fails with a [`ErrorKind::DeviceGone`] kind.
    Surprise,
}

/// What a backend does with an unmap that would cut a mapping in two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SplitUnmap {
    /// The mapping is split and exactly the requested part unmapped (type1
    /// v1, hardware page tables, the mock when configured so).
    Allowed,
    /// The unmap is refused with this kind and the mapping stays whole:
    /// type1v2 answers `EINVAL` ([`ErrorKind::InvalidArgument`]), iommufd
    /// `ENOENT` ([`ErrorKind::NotMapped`]). Other kinds fail the case.
    Refused(ErrorKind),
}

/// Declared behaviour where backends legitimately differ, and the fixture's
/// parameters. Every declared behaviour is checked by a case in both
/// directions: present, it must work; absent, it must be refused (or not
/// happen) exactly as described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// What unmapping part of a mapping does.
    pub split_unmap: SplitUnmap,
    /// `Container::unmap_all` works (`VFIO_DMA_UNMAP_FLAG_ALL`, iommufd's
    /// full-range unmap). When false it is refused with
    /// [`ErrorKind::NotSupported`].
    pub unmap_all: bool,
    /// The IOMMU reports dirty-tracking support (type1's migration
    /// capability in `IommuInfo::caps`) and `Container::read_dirty` works.
    pub dirty_tracking: bool,
    /// Dirty tracking reports exactly the pages devices wrote (the mock).
    /// type1 cannot tell for devices that pin no pages (vfio-pci's) and
    /// reports every page of each mapping in the range instead.
    pub dirty_pages_exact: bool,
    /// `Region::mmap` maps a region's mappable areas. When false (a backend
    /// that cannot map device memory at all) it is refused with
    /// [`ErrorKind::NotSupported`] even where areas are advertised.
    pub region_mmap: bool,
    /// The fixture can count IOMMU faults ([`Fixture::iommu_faults`]). Real
    /// kernels only log them, so there the cases check buffers only.
    pub iommu_faults_observable: bool,
    /// The backend notices a write to an INTx resample eventfd only at the
    /// next access to the device (the mock: no thread watches the fd). The
    /// kernel's virqfd reacts at once, without any access: false there.
    pub resample_lazy: bool,
    /// Start of a free IOVA window of at least [`IOVA_WINDOW`] bytes inside
    /// a usable IOVA range and below 256 MiB (edu masks DMA addresses to 28
    /// bits), aligned to the IOMMU page size.
    pub iova_base: u64,
    /// The longest an interrupt or a device completion may take.
    pub timeout: Duration,
    /// How long to watch an eventfd before concluding nothing will arrive.
    pub quiet: Duration,
}

impl Capabilities {
    /// What every real Linux backend does with QEMU's `edu` behind it: the
    /// kernel logs IOMMU faults without counting them, its virqfd handles a
    /// resample write at once, `unmap_all` works
    /// and regions mmap; timeouts are generous for TCG guests (edu's DMA
    /// timer alone is 100 ms of virtual time). The backend states only where
    /// real backends differ: the kind with which it refuses a split unmap
    /// (type1v2 `InvalidArgument`, iommufd `NotMapped`), whether the IOMMU
    /// reports dirty tracking, and the IOVA window base.
    pub fn real_kernel(split_refusal: ErrorKind, dirty_tracking: bool, iova_base: u64) -> Self {
        Self {
            split_unmap: SplitUnmap::Refused(split_refusal),
            unmap_all: true,
            dirty_tracking,
            dirty_pages_exact: false,
            region_mmap: true,
            iommu_faults_observable: false,
            resample_lazy: false,
            iova_base,
            timeout: Duration::from_secs(20),
            quiet: Duration::from_millis(200),
        }
    }
}

/// Bytes of IOVA space from [`Capabilities::iova_base`] that cases use.
///
/// The last [`crate::dma_engine::DRIVER_IOVA_LEN`] bytes of it are lent to
/// the DMA-engine drivers of the H cases for memory of their own
/// ([`crate::dma_engine::DriverMemory`]); no case maps anything there.
pub const IOVA_WINDOW: u64 = 64 << 20;

/// Kinds the `Container` contract allows for a map outside the usable IOVA
/// ranges ("as the kernel says": type1 and iommufd differ).
pub const OUTSIDE_RANGES: &[ErrorKind] = &[ErrorKind::InvalidArgument, ErrorKind::OutOfRange];
