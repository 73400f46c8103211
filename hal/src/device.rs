//! The `Device` trait: one VFIO device, its regions, irqs and features.

use std::fmt;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use crate::caps::Capability;
use crate::dirty::DirtyBitmap;
use crate::error::{Error, ErrorKind, Result, Target};
use crate::irq::Irq;
use crate::migration::{MigrationData, MigrationFlags, MigrationState};
use crate::region::Region;
use crate::revoke::Revoker;

/// `VFIO_DEVICE_FLAGS_*` bits of [`DeviceInfo::flags`].
pub mod flags {
    /// The device supports `VFIO_DEVICE_RESET`.
    pub const RESET: u32 = 1 << 0;
    /// vfio-pci device.
    pub const PCI: u32 = 1 << 1;
    /// vfio-platform device.
    pub const PLATFORM: u32 = 1 << 2;
    /// vfio-amba device.
    pub const AMBA: u32 = 1 << 3;
    /// vfio-ccw device.
    pub const CCW: u32 = 1 << 4;
    /// vfio-ap device.
    pub const AP: u32 = 1 << 5;
    /// vfio-fsl-mc device.
    pub const FSL_MC: u32 = 1 << 6;
    /// Device info has a capability chain.
    pub const CAPS: u32 = 1 << 7;
    /// vfio-cdx device.
    pub const CDX: u32 = 1 << 8;
}

/// `VFIO_DEVICE_FEATURE_*` numbers.
pub mod feature {
    /// Set the VF token of an SR-IOV PF (`uuid_t`, SET only: the kernel
    /// never tells a token back, it could be a previous user's).
    pub const PCI_VF_TOKEN: u32 = 0;
    /// Migration support (`struct vfio_device_feature_migration`).
    pub const MIGRATION: u32 = 1;
    /// Migration device state.
    pub const MIG_DEVICE_STATE: u32 = 2;
    /// Enter low-power state (no payload).
    pub const LOW_POWER_ENTRY: u32 = 3;
    /// Enter low-power state, wake on eventfd.
    pub const LOW_POWER_ENTRY_WITH_WAKEUP: u32 = 4;
    /// Leave low-power state (no payload).
    pub const LOW_POWER_EXIT: u32 = 5;
    /// Start device DMA dirty logging.
    pub const DMA_LOGGING_START: u32 = 6;
    /// Stop device DMA dirty logging.
    pub const DMA_LOGGING_STOP: u32 = 7;
    /// Read the device DMA dirty log.
    pub const DMA_LOGGING_REPORT: u32 = 8;
    /// Migration data size estimate.
    pub const MIG_DATA_SIZE: u32 = 9;
    /// Set or clear PCI bus mastering (`VFIO_DEVICE_FEATURE_BUS_MASTER`;
    /// payload: `u32` op, 0 = clear, 1 = set).
    pub const BUS_MASTER: u32 = 10;
    /// Export MMIO ranges of a region as a dma-buf
    /// (`VFIO_DEVICE_FEATURE_DMA_BUF`). Its SET answers with a new file
    /// descriptor, so [`Device::feature`](super::Device::feature), which has
    /// no way to hand one back, only probes it.
    pub const DMA_BUF: u32 = 11;
}

/// The bus a device sits on, from its info flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeviceKind {
    /// PCI (vfio-pci).
    Pci,
    /// Platform device.
    Platform,
    /// ARM AMBA.
    Amba,
    /// s390 channel I/O.
    Ccw,
    /// s390 adjunct processor.
    Ap,
    /// NXP fsl-mc.
    FslMc,
    /// AMD CDX.
    Cdx,
    /// No bus flag set.
    Unknown,
}

/// What `VFIO_DEVICE_GET_INFO` reports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceInfo {
    /// The device's name (PCI address for vfio-pci, model name for the mock).
    pub name: String,
    /// `VFIO_DEVICE_FLAGS_*`, see [`flags`].
    pub flags: u32,
    /// Number of regions.
    pub num_regions: u32,
    /// Number of irq indices.
    pub num_irqs: u32,
    /// Device-info capabilities.
    pub caps: Vec<Capability>,
}

impl DeviceInfo {
    /// The bus, from the flags.
    pub fn kind(&self) -> DeviceKind {
        const BUSES: [(u32, DeviceKind); 7] = [
            (flags::PCI, DeviceKind::Pci),
            (flags::PLATFORM, DeviceKind::Platform),
            (flags::AMBA, DeviceKind::Amba),
            (flags::CCW, DeviceKind::Ccw),
            (flags::AP, DeviceKind::Ap),
            (flags::FSL_MC, DeviceKind::FslMc),
            (flags::CDX, DeviceKind::Cdx),
        ];
        BUSES
            .iter()
            .find(|(bit, _)| self.flags & bit != 0)
            .map_or(DeviceKind::Unknown, |&(_, k)| k)
    }

    /// Whether `VFIO_DEVICE_RESET` is supported.
    pub fn can_reset(&self) -> bool {
        self.flags & flags::RESET != 0
    }
}

/// The operation of a `VFIO_DEVICE_FEATURE` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeatureOp {
    /// Ask whether GET is supported.
    ProbeGet,
    /// Ask whether SET is supported.
    ProbeSet,
    /// Read the feature's payload.
    Get,
    /// Write the feature's payload.
    Set,
}

impl FeatureOp {
    /// The `VFIO_DEVICE_FEATURE_{PROBE,GET,SET}` flag bits.
    pub fn flags(self) -> u32 {
        const GET: u32 = 1 << 16;
        const SET: u32 = 1 << 17;
        const PROBE: u32 = 1 << 18;
        match self {
            Self::ProbeGet => PROBE | GET,
            Self::ProbeSet => PROBE | SET,
            Self::Get => GET,
            Self::Set => SET,
        }
    }
}

/// Which directions a probed feature supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FeatureSupport {
    /// GET is supported.
    pub get: bool,
    /// SET is supported.
    pub set: bool,
}

/// One VFIO device.
///
/// Regions and irqs are handed out as owned handles that share the device's
/// file descriptor, so a VMM can keep one per BAR in its dispatch tables.
///
/// ```
/// use vfio_hal::prelude::*;
/// use vfio_hal::{irq::index, pci, DeviceKind, ErrorKind};
/// use vfio_hal_mock::{models::edu::Edu, MockContainer};
///
/// let container = MockContainer::new();
/// container.plug("edu", Edu::new())?;
/// let edu = container.open_device("edu")?;
/// assert_eq!(edu.info().kind(), DeviceKind::Pci);
/// assert_eq!(edu.region(pci::region::BAR0)?.info().size, 1 << 20);
/// assert_eq!(edu.irq(index::MSI)?.info().count, 1);
/// assert_eq!((edu.vendor_id()?, edu.device_id()?), (0x1234, 0x11e8)); // PciConfig
///
/// // An index the device lacks is an error, not a panic.
/// let err = edu.region(edu.info().num_regions).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::InvalidArgument);
/// # Ok::<(), vfio_hal::Error>(())
/// ```
pub trait Device {
    /// Handle to one region.
    type Region: Region;
    /// Handle to one irq index.
    type Irq: Irq;

    /// Flags, bus, counts and name, as read when the device was opened.
    fn info(&self) -> &DeviceInfo;

    /// The region with `index`; [`ErrorKind::InvalidArgument`] (with the count)
    /// for an index the device lacks.
    fn region(&self, index: u32) -> Result<Self::Region>;

    /// The irq index `index`; [`ErrorKind::InvalidArgument`] for one it lacks.
    fn irq(&self, index: u32) -> Result<Self::Irq>;

    /// Function-level reset (`VFIO_DEVICE_RESET`).
    fn reset(&self) -> Result<()>;

    /// One `VFIO_DEVICE_FEATURE` call: `data` is the payload after the
    /// header (read for `Set`, filled for `Get`, empty for probes).
    ///
    /// Payloads are raw bytes in the kernel's layout. Some features'
    /// payloads carry user pointers the kernel dereferences (DMA logging
    /// start and report): backends must refuse GET/SET of such features
    /// through this safe method (probes are fine) with `NotSupported`,
    /// and offer them only through typed, checked calls. The same holds for
    /// features whose answer is a new file descriptor ([`feature::DMA_BUF`]):
    /// this method returns none, so the descriptor would leak.
    fn feature(&self, op: FeatureOp, feature: u32, data: &mut [u8]) -> Result<()>;

    /// The file descriptors a sandboxed VMM must keep open for this device
    /// (its own fd, and its group, container or iommufd).
    fn keep_fds(&self) -> Vec<RawFd>;

    /// The file a hypervisor's VFIO pseudo device must be given for this
    /// device ([`crate::hypervisor`]): the group on the type1 path, the
    /// device cdev on the iommufd path, a placeholder file of the device on
    /// the mock. Valid while the device lives.
    ///
    /// `NotSupported` from a backend with no such file (the default).
    fn vfio_file(&self) -> Result<BorrowedFd<'_>> {
        Err(Error::NotSupported {
            op: "vfio_file",
            target: Target::Device(self.info().name.clone()),
            reason: "this backend has no VFIO file to give a hypervisor",
        })
    }

    /// A handle that revokes this device and every region and irq handle of
    /// it at once, from any thread: what a VMM does when the device's REQ
    /// interrupt asks for it back (see [`crate::revoke`]).
    ///
    /// `NotSupported` from a backend that cannot revoke (the default).
    fn revoker(&self) -> Result<Revoker> {
        Err(Error::NotSupported {
            op: "revoker",
            target: Target::Device(self.info().name.clone()),
            reason: "this backend cannot revoke its devices",
        })
    }

    /// Which directions of `feature` are supported; an unknown feature is
    /// simply unsupported (not an error).
    fn probe_feature(&self, feature: u32) -> Result<FeatureSupport> {
        let probe = |op| match self.feature(op, feature, &mut []) {
            Ok(()) => Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::NotSupported | ErrorKind::InvalidArgument
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        };
        Ok(FeatureSupport {
            get: probe(FeatureOp::ProbeGet)?,
            set: probe(FeatureOp::ProbeSet)?,
        })
    }

    /// Puts the device into D3cold-capable low power (`LOW_POWER_ENTRY`).
    fn low_power_entry(&self) -> Result<()> {
        self.feature(FeatureOp::Set, feature::LOW_POWER_ENTRY, &mut [])
    }

    /// Low-power entry; the kernel signals `wakeup` when the device wants to wake.
    fn low_power_entry_with_wakeup(&self, wakeup: BorrowedFd<'_>) -> Result<()> {
        // struct vfio_device_low_power_entry_with_wakeup { s32 fd; u32 reserved; }
        let mut payload = [0u8; 8];
        payload[..4].copy_from_slice(&wakeup.as_raw_fd().to_ne_bytes());
        self.feature(
            FeatureOp::Set,
            feature::LOW_POWER_ENTRY_WITH_WAKEUP,
            &mut payload,
        )
    }

    /// Leaves low power (`LOW_POWER_EXIT`).
    fn low_power_exit(&self) -> Result<()> {
        self.feature(FeatureOp::Set, feature::LOW_POWER_EXIT, &mut [])
    }

    /// Sets the VF token of this SR-IOV physical function
    /// (`PCI_VF_TOKEN`): from now on its virtual functions open only with
    /// this token (see [`VfToken`]).
    fn set_vf_token(&self, token: &VfToken) -> Result<()> {
        let mut payload = *token.as_bytes();
        self.feature(FeatureOp::Set, feature::PCI_VF_TOKEN, &mut payload)
    }

    /// The migration features the device offers (`MIGRATION`, GET);
    /// `NotSupported` (`ENOTTY`) for a device that cannot migrate.
    fn migration_flags(&self) -> Result<MigrationFlags> {
        // struct vfio_device_feature_migration { __aligned_u64 flags; }
        let mut payload = [0u8; 8];
        self.feature(FeatureOp::Get, feature::MIGRATION, &mut payload)?;
        Ok(MigrationFlags::from_bits(u64::from_ne_bytes(payload)))
    }

    /// The device's migration state (`MIG_DEVICE_STATE`, GET).
    fn migration_state(&self) -> Result<MigrationState> {
        // struct vfio_device_feature_mig_state { __u32 device_state; __s32 data_fd; }
        let mut payload = [0u8; 8];
        self.feature(FeatureOp::Get, feature::MIG_DEVICE_STATE, &mut payload)?;
        let [a, b, c, d, ..] = payload;
        MigrationState::from_raw(u32::from_ne_bytes([a, b, c, d]))
    }

    /// Moves the device to `state` (`MIG_DEVICE_STATE`, SET), through the
    /// intermediate states [`migration::arcs`](crate::migration::arcs)
    /// lists; returns the data stream when the last arc opens a session
    /// (see [`MigrationData`]); moving between saving states keeps the
    /// stream handed out before.
    ///
    /// `EINVAL` for a state the device lacks or an arc the uAPI blocks; a
    /// device that fails a transition may be left in
    /// [`MigrationState::Error`] ([`Device::migration_state`] tells), from
    /// which only a reset brings it back. `NotSupported` from a backend
    /// that cannot migrate devices (the default).
    fn set_migration_state(&self, state: MigrationState) -> Result<Option<MigrationData>> {
        let _ = state;
        Err(Error::NotSupported {
            op: "VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE",
            target: Target::Feature(feature::MIG_DEVICE_STATE),
            reason: "this backend cannot migrate devices",
        })
    }

    /// Starts the device's own dirty logging of its DMA writes
    /// (`DMA_LOGGING_START`) over `ranges` (`(iova, length)` pairs, page
    /// aligned, disjoint) in pages of `page_size`; returns the page size the
    /// device logs in (its driver may pick another). `NotSupported`
    /// (`ENOTTY`) for a device without logging (vfio-pci's own; the
    /// default).
    fn dma_logging_start(&self, page_size: u64, ranges: &[(u64, u64)]) -> Result<u64> {
        let _ = (page_size, ranges);
        Err(Error::NotSupported {
            op: "VFIO_DEVICE_FEATURE_DMA_LOGGING_START",
            target: Target::Feature(feature::DMA_LOGGING_START),
            reason: "this backend has no device DMA logging",
        })
    }

    /// Which `page_size` pages of `[iova, iova + len)` the device wrote
    /// since logging started or the last report, which clears them
    /// (`DMA_LOGGING_REPORT`). `NotSupported` as for
    /// [`dma_logging_start`](Self::dma_logging_start).
    fn dma_logging_report(&self, iova: u64, len: u64, page_size: u64) -> Result<DirtyBitmap> {
        let _ = (iova, len, page_size);
        Err(Error::NotSupported {
            op: "VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT",
            target: Target::Feature(feature::DMA_LOGGING_REPORT),
            reason: "this backend has no device DMA logging",
        })
    }

    /// Stops the device's DMA logging (`DMA_LOGGING_STOP`).
    fn dma_logging_stop(&self) -> Result<()> {
        self.feature(FeatureOp::Set, feature::DMA_LOGGING_STOP, &mut [])
    }

    /// The device's estimate of its STOP_COPY data, in bytes
    /// (`MIG_DATA_SIZE`, GET).
    fn migration_data_size(&self) -> Result<u64> {
        // struct vfio_device_feature_mig_data_size { __aligned_u64 stop_copy_length; }
        let mut payload = [0u8; 8];
        self.feature(FeatureOp::Get, feature::MIG_DATA_SIZE, &mut payload)?;
        Ok(u64::from_ne_bytes(payload))
    }
}

/// The shared secret between the user of an SR-IOV physical function and
/// the users of its virtual functions: while the PF is bound to vfio-pci,
/// the kernel opens one of its VFs only for a caller presenting the PF's
/// current token (`"<bdf> vf_token=<uuid>"` on the group path), so a VF
/// user cannot unknowingly depend on an untrusted PF driver. The PF's user
/// sets it with [`Device::set_vf_token`].
///
/// `Debug` does not print the token; `Display` does (the UUID form the
/// kernel parses).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VfToken([u8; 16]);

impl VfToken {
    /// The token with these UUID bytes (in the order the text form shows them).
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The UUID bytes (the kernel's `uuid_t`).
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Debug for VfToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VfToken(..)")
    }
}

/// The UUID text form, `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lower case.
impl fmt::Display for VfToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Lookups over any [`Device`] (also `dyn Device`) that need nothing but
/// its regions.
///
/// ```
/// use vfio_hal::prelude::*;
/// use vfio_hal_mock::{models::copy_engine::{self, CopyEngine}, MockContainer};
///
/// let container = MockContainer::new();
/// container.plug("ce", CopyEngine::new())?;
/// let ce = container.open_device("ce")?;
///
/// // The copy engine's counters: a vendor-specific region found by type.
/// let ty = vfio_hal_mock::layout::REGION_TYPE_PCI_VENDOR | u32::from(copy_engine::VENDOR_ID);
/// let counters = ce.region_by_type(ty, 1)?.expect("the copy engine has counters");
/// assert_eq!(counters.info().index, copy_engine::COUNTERS_REGION);
/// assert_eq!(ce.region_by_type(ty, 2)?.map(|r| r.info().index), None);
///
/// // Byte 8 of BAR0 in the device file (vfio-pci puts region i at i << 40).
/// assert_eq!(ce.file_offset(0, 8)?, 8);
/// assert_eq!(ce.file_offset(2, 0x10)?, (2 << 40) + 0x10);
/// assert!(ce.file_offset(0, 0x1000).is_err()); // BAR0 has 4 KiB
/// # Ok::<(), vfio_hal::Error>(())
/// ```
pub trait DeviceExt: Device {
    /// The first region whose region-type capability is `(ty, subtype)`
    /// ([`RegionInfo::region_type`](crate::RegionInfo::region_type); crosvm's
    /// `get_cap_type_info`), or `None`. Walks every index below
    /// `num_regions`; a region that cannot be queried is an error.
    fn region_by_type(&self, ty: u32, subtype: u32) -> Result<Option<Self::Region>> {
        for index in 0..self.info().num_regions {
            let region = self.region(index)?;
            if region.info().region_type() == Some((ty, subtype)) {
                return Ok(Some(region));
            }
        }
        Ok(None)
    }

    /// The device-file offset of `offset` inside region `index` (crosvm's
    /// `get_offset_for_addr`); see [`RegionInfo::file_offset`](crate::RegionInfo::file_offset).
    fn file_offset(&self, index: u32, offset: u64) -> Result<u64> {
        self.region(index)?.info().file_offset(offset)
    }
}

impl<D: Device + ?Sized> DeviceExt for D {}

#[cfg(test)]
mod tests {
    use super::VfToken;

    #[test]
    fn a_vf_token_prints_as_the_uuid_the_kernel_parses_and_debug_hides_it() {
        let token = VfToken::from_bytes([
            0xbd, 0x8d, 0x9d, 0x2b, 0x5a, 0x5f, 0x4f, 0x5a, 0xa2, 0x11, 0xf5, 0x91, 0x51, 0x4b,
            0xa1, 0xf3,
        ]);
        assert_eq!(token.to_string(), "bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3");
        assert_eq!(format!("{token:?}"), "VfToken(..)");
    }
}
