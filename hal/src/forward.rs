//! The traits through pointers: `&T`, `Box<T>` and `Arc<T>` implement
//! [`Container`], [`Device`], [`Region`] and [`Irq`] when `T` does (the
//! embedded-hal habit), forwarding every method, provided ones included, so
//! a backend's overrides are kept. Written once, for all four traits and all
//! three pointers: `Box<dyn Region>` is a region, `&device` a device.

use std::os::fd::{BorrowedFd, RawFd};
use std::sync::Arc;

use crate::container::{Container, DmaAccess, IommuInfo};
use crate::device::{Device, DeviceInfo, FeatureOp, FeatureSupport, VfToken};
use crate::dirty::DirtyBitmap;
use crate::error::Result;
use crate::irq::{Irq, IrqInfo, IrqSet};
use crate::memory::MmapArea;
use crate::migration::{MigrationData, MigrationFlags, MigrationState};
use crate::region::{Protection, Region, RegionInfo};
use crate::revoke::Revoker;

/// `forward! { <generics> Pointer<T>; ... }`: the four trait impls for each
/// pointer type, `T` naming the pointee.
macro_rules! forward {
    ($(<$($lt:lifetime,)? $t:ident> $ptr:ty;)*) => {$(
        impl<$($lt,)? $t: Region + ?Sized> Region for $ptr {
            fn info(&self) -> &RegionInfo { (**self).info() }
            fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> { (**self).read(offset, buf) }
            fn write(&self, offset: u64, data: &[u8]) -> Result<()> { (**self).write(offset, data) }
            #[inline]
            fn read_scalar(&self, offset: u64, size: usize) -> Result<u64> { (**self).read_scalar(offset, size) }
            #[inline]
            fn write_scalar(&self, offset: u64, size: usize, value: u64) -> Result<()> { (**self).write_scalar(offset, size, value) }
            fn mmap(&self) -> Result<Vec<MmapArea>> { (**self).mmap() }
            fn mmap_area(&self, area: usize, protection: Protection) -> Result<MmapArea> { (**self).mmap_area(area, protection) }
        }

        impl<$($lt,)? $t: Irq + ?Sized> Irq for $ptr {
            fn info(&self) -> IrqInfo { (**self).info() }
            fn set_irqs(&self, set: &IrqSet<'_>) -> Result<()> { (**self).set_irqs(set) }
            fn set_eventfds(&self, start: u32, fds: &[Option<BorrowedFd<'_>>]) -> Result<()> { (**self).set_eventfds(start, fds) }
            fn set_eventfd(&self, vector: u32, fd: Option<BorrowedFd<'_>>) -> Result<()> { (**self).set_eventfd(vector, fd) }
            fn disable(&self) -> Result<()> { (**self).disable() }
            fn mask(&self, start: u32, count: u32) -> Result<()> { (**self).mask(start, count) }
            fn unmask(&self, start: u32, count: u32) -> Result<()> { (**self).unmask(start, count) }
            fn trigger(&self, start: u32, count: u32) -> Result<()> { (**self).trigger(start, count) }
            fn set_resample(&self, fd: Option<BorrowedFd<'_>>) -> Result<()> { (**self).set_resample(fd) }
        }

        impl<$($lt,)? $t: Device + ?Sized> Device for $ptr {
            type Region = <$t as Device>::Region;
            type Irq = <$t as Device>::Irq;
            fn info(&self) -> &DeviceInfo { (**self).info() }
            fn region(&self, index: u32) -> Result<Self::Region> { (**self).region(index) }
            fn irq(&self, index: u32) -> Result<Self::Irq> { (**self).irq(index) }
            fn reset(&self) -> Result<()> { (**self).reset() }
            fn feature(&self, op: FeatureOp, feature: u32, data: &mut [u8]) -> Result<()> { (**self).feature(op, feature, data) }
            fn keep_fds(&self) -> Vec<RawFd> { (**self).keep_fds() }
            fn revoker(&self) -> Result<Revoker> { (**self).revoker() }
            fn vfio_file(&self) -> Result<BorrowedFd<'_>> { (**self).vfio_file() }
            fn probe_feature(&self, feature: u32) -> Result<FeatureSupport> { (**self).probe_feature(feature) }
            fn low_power_entry(&self) -> Result<()> { (**self).low_power_entry() }
            fn low_power_entry_with_wakeup(&self, wakeup: BorrowedFd<'_>) -> Result<()> { (**self).low_power_entry_with_wakeup(wakeup) }
            fn low_power_exit(&self) -> Result<()> { (**self).low_power_exit() }
            fn set_vf_token(&self, token: &VfToken) -> Result<()> { (**self).set_vf_token(token) }
            fn migration_flags(&self) -> Result<MigrationFlags> { (**self).migration_flags() }
            fn migration_state(&self) -> Result<MigrationState> { (**self).migration_state() }
            fn set_migration_state(&self, state: MigrationState) -> Result<Option<MigrationData>> { (**self).set_migration_state(state) }
            fn migration_data_size(&self) -> Result<u64> { (**self).migration_data_size() }
            fn dma_logging_start(&self, page_size: u64, ranges: &[(u64, u64)]) -> Result<u64> { (**self).dma_logging_start(page_size, ranges) }
            fn dma_logging_report(&self, iova: u64, len: u64, page_size: u64) -> Result<DirtyBitmap> { (**self).dma_logging_report(iova, len, page_size) }
            fn dma_logging_stop(&self) -> Result<()> { (**self).dma_logging_stop() }
        }

        // SAFETY: every call is forwarded unchanged, so each unmap answer is
        // the inner implementation's, which keeps Container's promise.
        unsafe impl<$($lt,)? $t: Container + ?Sized> Container for $ptr {
            type Device = <$t as Container>::Device;
            fn iommu_info(&self) -> Result<IommuInfo> { (**self).iommu_info() }
            unsafe fn map_dma_raw(&self, iova: u64, host: *mut u8, len: u64, access: DmaAccess) -> Result<()> {
                // SAFETY: the caller upholds map_dma_raw's contract, which we pass on unchanged.
                unsafe { (**self).map_dma_raw(iova, host, len, access) }
            }
            fn unmap_dma(&self, iova: u64, len: u64) -> Result<u64> { (**self).unmap_dma(iova, len) }
            fn unmap_all(&self) -> Result<u64> { (**self).unmap_all() }
            fn set_dirty_tracking(&self, enable: bool) -> Result<()> { (**self).set_dirty_tracking(enable) }
            fn read_dirty(&self, iova: u64, len: u64, page_size: u64, keep: bool) -> Result<DirtyBitmap> { (**self).read_dirty(iova, len, page_size, keep) }
            fn open_device(&self, name: &str) -> Result<Self::Device> { (**self).open_device(name) }
        }
    )*};
}

forward! {
    <'a, T> &'a T;
    <T> Box<T>;
    <T> Arc<T>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    /// A device whose provided `probe_feature` is overridden: forwarding
    /// must reach the override, not re-run the trait default.
    struct Probed(DeviceInfo);

    impl Device for Probed {
        type Region = Box<dyn Region>;
        type Irq = Box<dyn Irq>;
        fn info(&self) -> &DeviceInfo {
            &self.0
        }
        fn region(&self, index: u32) -> Result<Self::Region> {
            Err(Error::sys(
                "region",
                crate::Target::Region(index),
                libc::EINVAL,
            ))
        }
        fn irq(&self, index: u32) -> Result<Self::Irq> {
            Err(Error::sys("irq", crate::Target::Irq(index), libc::EINVAL))
        }
        fn reset(&self) -> Result<()> {
            Ok(())
        }
        fn feature(&self, _: FeatureOp, _: u32, _: &mut [u8]) -> Result<()> {
            Err(Error::sys("feature", crate::Target::None, libc::ENOTTY))
        }
        fn keep_fds(&self) -> Vec<RawFd> {
            Vec::new()
        }
        fn probe_feature(&self, _feature: u32) -> Result<FeatureSupport> {
            Ok(FeatureSupport {
                get: true,
                set: false,
            })
        }
    }

    fn probe<D: Device>(d: D) -> Result<FeatureSupport> {
        d.probe_feature(3)
    }

    /// A region whose byte path fails and whose scalar path answers: the
    /// pointers must reach the scalar override.
    struct Scalars(RegionInfo);

    impl Region for Scalars {
        fn info(&self) -> &RegionInfo {
            &self.0
        }
        fn read(&self, _: u64, _: &mut [u8]) -> Result<()> {
            Err(Error::sys("read", crate::Target::None, libc::EIO))
        }
        fn write(&self, _: u64, _: &[u8]) -> Result<()> {
            Err(Error::sys("write", crate::Target::None, libc::EIO))
        }
        fn read_scalar(&self, offset: u64, size: usize) -> Result<u64> {
            Ok(offset * 16 + size as u64)
        }
        fn write_scalar(&self, _: u64, _: usize, _: u64) -> Result<()> {
            Ok(())
        }
        fn mmap(&self) -> Result<Vec<MmapArea>> {
            Ok(Vec::new())
        }
    }

    #[test]
    fn every_pointer_reaches_the_scalar_overrides() {
        use crate::RegionExt;
        fn check<R: Region>(r: R) {
            assert_eq!(r.read_at::<u32>(2).ok(), Some(36));
            assert!(r.write_at::<u16>(0, 1).is_ok());
        }
        let r = Scalars(RegionInfo::default());
        check(&r);
        check(Arc::new(&r));
        check(Box::new(&&r));
        let erased: Box<dyn Region> = Box::new(r);
        check(&erased);
        check(erased);
    }

    #[test]
    fn every_pointer_reaches_the_override() {
        let info = DeviceInfo {
            name: "probed".into(),
            flags: 0,
            num_regions: 0,
            num_irqs: 0,
            caps: Vec::new(),
        };
        let dev = Probed(info);
        let want = FeatureSupport {
            get: true,
            set: false,
        };
        // The trait default would call `feature`, which fails.
        assert_eq!(probe(&dev).ok(), Some(want));
        assert_eq!(probe(Arc::new(&dev)).ok(), Some(want));
        assert_eq!(probe(Box::new(&&dev)).ok(), Some(want));
        let erased: Box<dyn Device<Region = Box<dyn Region>, Irq = Box<dyn Irq>>> = Box::new(dev);
        assert_eq!(probe(&erased).ok(), Some(want));
    }
}
