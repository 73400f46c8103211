//! Type erasure: choosing a backend at run time.
//!
//! Static dispatch is the default: VMM code is generic over `C: Container`
//! and pays nothing. When the backend is only known at run time (legacy or
//! iommufd, picked by probing the kernel; the mock in tests), wrap it with
//! [`erase_container`] or [`erase_device`]: the result implements the same
//! traits with boxed regions and irqs, so the same generic code runs on it.
//!
//! Erasure rather than an `enum` of backends because it is open: third-party
//! backends and the test decorators (fault injector, tracer) erase the same
//! way, and the hal crate need not depend on any backend. The cost is one
//! indirect call per operation, next to an ioctl of several hundred ns.

use std::os::fd::{BorrowedFd, RawFd};

use crate::container::{Container, DmaAccess, IommuInfo};
use crate::device::{Device, DeviceInfo, FeatureOp, FeatureSupport, VfToken};
use crate::dirty::DirtyBitmap;
use crate::error::Result;
use crate::irq::Irq;
use crate::migration::{MigrationData, MigrationFlags, MigrationState};
use crate::region::Region;
use crate::revoke::Revoker;

/// A region of any backend.
pub type DynRegion = Box<dyn Region + Send + Sync>;
/// An irq index of any backend.
pub type DynIrq = Box<dyn Irq + Send + Sync>;
/// A device of any backend.
pub type DynDevice = Box<dyn Device<Region = DynRegion, Irq = DynIrq> + Send + Sync>;
/// A container of any backend.
pub type DynContainer = Box<dyn Container<Device = DynDevice> + Send + Sync>;

/// Wraps a concrete backend type so that it erases to the `Dyn*` types.
#[derive(Debug)]
pub struct Erased<T>(pub T);

impl<D> Device for Erased<D>
where
    D: Device,
    D::Region: Send + Sync + 'static,
    D::Irq: Send + Sync + 'static,
{
    type Region = DynRegion;
    type Irq = DynIrq;
    fn info(&self) -> &DeviceInfo {
        self.0.info()
    }
    fn region(&self, index: u32) -> Result<DynRegion> {
        Ok(Box::new(self.0.region(index)?))
    }
    fn irq(&self, index: u32) -> Result<DynIrq> {
        Ok(Box::new(self.0.irq(index)?))
    }
    fn reset(&self) -> Result<()> {
        self.0.reset()
    }
    fn feature(&self, op: FeatureOp, feature: u32, data: &mut [u8]) -> Result<()> {
        self.0.feature(op, feature, data)
    }
    fn keep_fds(&self) -> Vec<RawFd> {
        self.0.keep_fds()
    }
    fn revoker(&self) -> Result<Revoker> {
        self.0.revoker()
    }
    fn vfio_file(&self) -> Result<BorrowedFd<'_>> {
        self.0.vfio_file()
    }
    fn probe_feature(&self, feature: u32) -> Result<FeatureSupport> {
        self.0.probe_feature(feature)
    }
    fn low_power_entry(&self) -> Result<()> {
        self.0.low_power_entry()
    }
    fn low_power_entry_with_wakeup(&self, wakeup: BorrowedFd<'_>) -> Result<()> {
        self.0.low_power_entry_with_wakeup(wakeup)
    }
    fn low_power_exit(&self) -> Result<()> {
        self.0.low_power_exit()
    }
    fn set_vf_token(&self, token: &VfToken) -> Result<()> {
        self.0.set_vf_token(token)
    }
    fn migration_flags(&self) -> Result<MigrationFlags> {
        self.0.migration_flags()
    }
    fn migration_state(&self) -> Result<MigrationState> {
        self.0.migration_state()
    }
    fn set_migration_state(&self, state: MigrationState) -> Result<Option<MigrationData>> {
        self.0.set_migration_state(state)
    }
    fn migration_data_size(&self) -> Result<u64> {
        self.0.migration_data_size()
    }
    fn dma_logging_start(&self, page_size: u64, ranges: &[(u64, u64)]) -> Result<u64> {
        self.0.dma_logging_start(page_size, ranges)
    }
    fn dma_logging_report(&self, iova: u64, len: u64, page_size: u64) -> Result<DirtyBitmap> {
        self.0.dma_logging_report(iova, len, page_size)
    }
    fn dma_logging_stop(&self) -> Result<()> {
        self.0.dma_logging_stop()
    }
}

// SAFETY: every call is forwarded unchanged (only the device type is
// erased), so each unmap answer is the inner implementation's.
unsafe impl<C> Container for Erased<C>
where
    C: Container,
    C::Device: Send + Sync + 'static,
    <C::Device as Device>::Region: Send + Sync + 'static,
    <C::Device as Device>::Irq: Send + Sync + 'static,
{
    type Device = DynDevice;
    fn iommu_info(&self) -> Result<IommuInfo> {
        self.0.iommu_info()
    }
    unsafe fn map_dma_raw(
        &self,
        iova: u64,
        host: *mut u8,
        len: u64,
        access: DmaAccess,
    ) -> Result<()> {
        // SAFETY: the caller upholds map_dma_raw's contract, which we pass on unchanged.
        unsafe { self.0.map_dma_raw(iova, host, len, access) }
    }
    fn unmap_dma(&self, iova: u64, len: u64) -> Result<u64> {
        self.0.unmap_dma(iova, len)
    }
    fn unmap_all(&self) -> Result<u64> {
        self.0.unmap_all()
    }
    fn set_dirty_tracking(&self, enable: bool) -> Result<()> {
        self.0.set_dirty_tracking(enable)
    }
    fn read_dirty(&self, iova: u64, len: u64, page_size: u64, keep: bool) -> Result<DirtyBitmap> {
        self.0.read_dirty(iova, len, page_size, keep)
    }
    fn open_device(&self, name: &str) -> Result<DynDevice> {
        Ok(erase_device(self.0.open_device(name)?))
    }
}

/// Erases a device's concrete type.
pub fn erase_device<D>(device: D) -> DynDevice
where
    D: Device + Send + Sync + 'static,
    D::Region: Send + Sync + 'static,
    D::Irq: Send + Sync + 'static,
{
    Box::new(Erased(device))
}

/// Erases a container's concrete type (and the devices it opens).
pub fn erase_container<C>(container: C) -> DynContainer
where
    C: Container + Send + Sync + 'static,
    C::Device: Send + Sync + 'static,
    <C::Device as Device>::Region: Send + Sync + 'static,
    <C::Device as Device>::Irq: Send + Sync + 'static,
{
    Box::new(Erased(container))
}
