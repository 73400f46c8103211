//! The host as VFIO sees it: the sysfs and `/dev` trees, the kernel nodes
//! each backend opens, and the PCI devices, IOMMU groups and VFIO cdevs
//! sysfs describes.
//!
//! This is the one model of the host every crate of the project reads:
//! the legacy backend finds a device's group here, the iommufd backend its
//! cdev, the facade what stands in the way of opening it. Everything here
//! only reads directory entries, symlinks and small sysfs files; nothing
//! opens a VFIO node. Both roots are injectable ([`Host::new`]) so that every
//! lookup runs unchanged against a fake tree ([`crate::fake::FakeHost`]).
//!
//! A device is named by its PCI address (`0000:00:01.0`, or the short
//! `00:01.0`, looked up under `<sys>/bus/pci/devices/`), by the UUID of a
//! mediated device (looked up under `<sys>/bus/mdev/devices/`), or by the
//! absolute path of its sysfs directory (any bus). Its group is the last
//! component of the `iommu_group` symlink in that directory; its VFIO cdev
//! (Linux 6.6+) is the `vfioN` entry of its `vfio-dev` directory.
//!
//! VFIO devices are of two kinds here: PCI functions bound to vfio-pci (or
//! a vendor variant of it), and mediated devices, which their parent's
//! driver carves out of it and registers with VFIO itself (the kernel's
//! mtty sample, GVT-g, vfio-ccw, vfio-ap). A mediated device sits alone in
//! an emulated IOMMU group that is always viable.

use std::fmt;
use std::path::{Path, PathBuf};

use vfio_hal::{Error, Result, Target};

/// Drivers that leave an IOMMU group usable by VFIO besides VFIO's own: the
/// kernel's viability rule accepts devices that are unbound or bound to a
/// driver that does not use the kernel's DMA API.
const DMA_SAFE_DRIVERS: [&str; 2] = ["pci-stub", "pcieport"];

/// The sysfs and `/dev` trees: `/sys` and `/dev` by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    sys: PathBuf,
    dev: PathBuf,
}

impl Default for Host {
    fn default() -> Self {
        Self::new("/sys", "/dev")
    }
}

/// One device as sysfs describes it: a PCI function or a mediated device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDevice {
    /// The name VFIO knows it by: the PCI address, `0000:00:04.0`, or a
    /// mediated device's UUID.
    pub name: String,
    /// The bus it is on, and for a mediated device its type and parent.
    pub bus: Bus,
    /// Its sysfs directory.
    pub sysfs_dir: PathBuf,
    /// PCI vendor id, where sysfs has it (PCI functions only).
    pub vendor: Option<u16>,
    /// PCI device id, where sysfs has it (PCI functions only).
    pub device: Option<u16>,
    /// The bound driver (`vfio-pci`; a mediated device's parent driver,
    /// `mtty`), or `None` when unbound.
    pub driver: Option<String>,
    /// The IOMMU group, or `None` when the device has none (IOMMU off).
    pub group: Option<u32>,
    /// The VFIO device cdev (`vfio3`), on kernels with `VFIO_DEVICE_CDEV`.
    pub cdev: Option<String>,
}

impl HostDevice {
    /// Whether a VFIO driver owns the device: vfio-pci or a vendor variant
    /// of it for a PCI function; for a mediated device, its parent's driver
    /// (every mdev driver registers its devices with VFIO).
    pub fn bound_to_vfio(&self) -> bool {
        match self.bus {
            Bus::Pci => self.driver.as_deref().is_some_and(is_vfio_driver),
            Bus::Mdev(_) => self.driver.is_some(),
        }
    }
}

/// The bus a device is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bus {
    /// A PCI function.
    Pci,
    /// A mediated device (`<sys>/bus/mdev/devices/<uuid>`).
    Mdev(MdevType),
}

/// What a mediated device is: its type and the device it was carved from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdevType {
    /// The type's id, the directory under the parent's
    /// `mdev_supported_types` it was created through (`mtty-2`).
    pub id: String,
    /// The type's human-readable name, where the parent gives one
    /// (`Dual port serial`).
    pub name: Option<String>,
    /// The parent device's name (`mtty`, a PCI address for GVT-g).
    pub parent: String,
}

fn is_vfio_driver(driver: &str) -> bool {
    driver.contains("vfio")
}

/// A device of an IOMMU group that keeps the group from being viable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocker {
    /// The device's PCI address.
    pub device: String,
    /// The host driver it is bound to.
    pub driver: String,
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.device, self.driver)
    }
}

/// Where a device's VFIO cdev is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdevLocation {
    /// The device's name (its PCI address, or the last component of its
    /// sysfs path).
    pub name: String,
    /// The device's sysfs directory.
    pub sysfs_dir: PathBuf,
    /// The cdev's name, `vfioN`.
    pub cdev: String,
    /// Its node, `<dev>/vfio/devices/vfioN`.
    pub node: PathBuf,
}

/// Why a device name found no device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    /// The name is neither a PCI address nor an absolute sysfs path.
    #[error("`{name}` is not a PCI address (0000:00:04.0), an mdev UUID or a sysfs device path")]
    BadName {
        /// The name given.
        name: String,
    },
    /// No device lives where the name points.
    #[error("no device {name} (looked for {})", path.display())]
    NoSuchDevice {
        /// The name given.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
}

impl From<LookupError> for Error {
    fn from(e: LookupError) -> Self {
        const OP: &str = "sysfs device lookup";
        match e {
            LookupError::BadName { name } => Error::InvalidArgument {
                op: OP,
                target: Target::Device(name),
                reason: "a device is named by a PCI address such as 0000:00:01.0, a mediated device's UUID or an absolute sysfs path",
            },
            LookupError::NoSuchDevice { path, .. } => {
                Error::sys("stat", Target::Path(path_string(&path)), libc::ENOENT)
            }
        }
    }
}

impl Host {
    /// The trees at `sys` (normally `/sys`) and `dev` (normally `/dev`).
    pub fn new(sys: impl Into<PathBuf>, dev: impl Into<PathBuf>) -> Self {
        Self {
            sys: sys.into(),
            dev: dev.into(),
        }
    }

    /// The sysfs root.
    pub fn sys(&self) -> &Path {
        &self.sys
    }

    /// The `/dev` root.
    pub fn dev(&self) -> &Path {
        &self.dev
    }

    /// `<dev>/vfio`: the legacy container and the group nodes.
    pub fn vfio_dir(&self) -> PathBuf {
        self.dev.join("vfio")
    }

    /// `<dev>/vfio/vfio`: the legacy container (type1, or iommufd's compat mode).
    pub fn container_node(&self) -> PathBuf {
        self.vfio_dir().join("vfio")
    }

    /// `<dev>/vfio/<group>`: an IOMMU group's node.
    pub fn group_node(&self, group: u32) -> PathBuf {
        self.vfio_dir().join(group.to_string())
    }

    /// `<dev>/iommu`: iommufd.
    pub fn iommu_node(&self) -> PathBuf {
        self.dev.join("iommu")
    }

    /// `<dev>/vfio/devices`: the VFIO device cdevs.
    pub fn cdev_dir(&self) -> PathBuf {
        self.vfio_dir().join("devices")
    }

    /// `<sys>/bus/pci/drivers/vfio-pci`: present when vfio-pci is loaded;
    /// it lists the devices bound to it.
    pub fn vfio_pci_driver_dir(&self) -> PathBuf {
        self.sys.join("bus/pci/drivers/vfio-pci")
    }

    /// `<sys>/bus/mdev/devices`: the mediated devices, by UUID.
    pub fn mdev_dir(&self) -> PathBuf {
        self.sys.join("bus/mdev/devices")
    }

    /// The sysfs directory of `device` and the name VFIO knows it by.
    ///
    /// `device` is a PCI address (full or short), resolved under
    /// `<sys>/bus/pci/devices/`, a mediated device's UUID, resolved under
    /// `<sys>/bus/mdev/devices/`, or an absolute path to a device
    /// directory, whose last component (after resolving symlinks) is the
    /// name. The directory is not checked to exist.
    pub fn device_dir(&self, device: &str) -> Result<(PathBuf, String), LookupError> {
        let bad = || LookupError::BadName {
            name: device.to_owned(),
        };
        if device.starts_with('/') {
            let dir = std::fs::canonicalize(device).map_err(|_| LookupError::NoSuchDevice {
                name: device.to_owned(),
                path: PathBuf::from(device),
            })?;
            let name = dir
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_owned)
                .ok_or_else(bad)?;
            return Ok((dir, name));
        }
        if let Some(uuid) = normalize_uuid(device) {
            return Ok((self.mdev_dir().join(&uuid), uuid));
        }
        let name = normalize_pci_address(device).ok_or_else(bad)?;
        Ok((self.sys.join("bus/pci/devices").join(&name), name))
    }

    /// The device `name` (see [`Host::device_dir`]), as sysfs describes it.
    pub fn device(&self, name: &str) -> Result<HostDevice, LookupError> {
        let (dir, name) = self.device_dir(name)?;
        if !dir.exists() {
            return Err(LookupError::NoSuchDevice { name, path: dir });
        }
        let cdev = cdev_in(&dir, &name).ok();
        Ok(HostDevice {
            bus: mdev_type_of(&dir).map_or(Bus::Pci, Bus::Mdev),
            vendor: read_hex_u16(&dir.join("vendor")),
            device: read_hex_u16(&dir.join("device")),
            driver: link_name(&dir.join("driver")),
            group: group_in(&dir, &name).ok(),
            cdev,
            sysfs_dir: dir,
            name,
        })
    }

    /// The VFIO devices: the PCI functions bound to vfio-pci, sorted by
    /// address, then the mediated devices with a driver, sorted by UUID.
    pub fn vfio_devices(&self) -> Vec<HostDevice> {
        let pci = sorted_entries(&self.vfio_pci_driver_dir())
            .into_iter()
            .filter(|n| is_pci_address(n));
        let mdev = sorted_entries(&self.mdev_dir())
            .into_iter()
            .filter(|n| normalize_uuid(n).is_some());
        pci.chain(mdev)
            .filter_map(|n| self.device(&n).ok())
            .filter(HostDevice::bound_to_vfio)
            .collect()
    }

    /// The names of the VFIO devices ([`Host::vfio_devices`]).
    pub fn vfio_device_names(&self) -> Vec<String> {
        self.vfio_devices().into_iter().map(|d| d.name).collect()
    }

    /// The devices of IOMMU group `group` that keep it from being viable.
    pub fn blockers(&self, group: u32) -> Vec<Blocker> {
        let dir = self
            .sys
            .join("kernel/iommu_groups")
            .join(group.to_string())
            .join("devices");
        sorted_entries(&dir)
            .into_iter()
            .filter_map(|device| {
                let entry = dir.join(&device);
                let driver = link_name(&entry.join("driver"))?;
                // A mediated device's group is emulated: the kernel never
                // checks its viability, and its driver is VFIO's.
                let harmless = is_vfio_driver(&driver)
                    || DMA_SAFE_DRIVERS.contains(&driver.as_str())
                    || mdev_type_of(&entry).is_some();
                (!harmless).then_some(Blocker { device, driver })
            })
            .collect()
    }

    /// The IOMMU group number of `device` (see [`Host::device_dir`]).
    pub fn iommu_group(&self, device: &str) -> Result<u32> {
        let (dir, name) = self.device_dir(device)?;
        if !dir.exists() {
            return Err(LookupError::NoSuchDevice { name, path: dir }.into());
        }
        group_in(&dir, &name)
    }

    /// The VFIO cdev name (`vfioN`) of `device`, for `<dev>/vfio/devices/`.
    ///
    /// `NotFound` when the device is not bound to a VFIO driver or the
    /// kernel lacks `CONFIG_VFIO_DEVICE_CDEV`.
    pub fn vfio_cdev(&self, device: &str) -> Result<String> {
        let (dir, name) = self.device_dir(device)?;
        cdev_in(&dir, &name)
    }

    /// Finds the cdev of `device` (see [`Host::device_dir`]).
    ///
    /// `NotFound` when the device has no `vfio-dev/vfioN` entry: the kernel
    /// lacks `VFIO_DEVICE_CDEV`, the device is not bound to a VFIO driver,
    /// or it does not exist. The `/dev` node itself is not checked here:
    /// opening it reports its absence with the path.
    pub fn find_cdev(&self, device: &str) -> Result<CdevLocation> {
        let (sysfs_dir, name) = self.device_dir(device)?;
        let cdev = cdev_in(&sysfs_dir, &name)?;
        let node = self.cdev_dir().join(&cdev);
        Ok(CdevLocation {
            name,
            sysfs_dir,
            cdev,
            node,
        })
    }
}

/// Whether `name` reads as a PCI address: `dddd:bb:dd.f` or `bb:dd.f`.
pub fn is_pci_address(name: &str) -> bool {
    normalize_pci_address(name).is_some()
}

/// `bb:dd.f` becomes `0000:bb:dd.f`; a full address is lower-cased.
/// `None` if `name` is not a PCI address.
pub fn normalize_pci_address(name: &str) -> Option<String> {
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    let (domain, rest) = match name.split(':').count() {
        3 => name.split_once(':')?,
        2 => ("0000", name),
        _ => return None,
    };
    let (bus, devfn) = rest.split_once(':')?;
    let (dev, func) = devfn.split_once('.')?;
    let ok = hex(domain, 4)
        && hex(bus, 2)
        && hex(dev, 2)
        && func.len() == 1
        && matches!(func.as_bytes()[0], b'0'..=b'7');
    ok.then(|| format!("{domain}:{bus}:{dev}.{func}").to_ascii_lowercase())
}

/// A mediated device's UUID (`8-4-4-4-12` hex digits), lower-cased, as
/// sysfs names it; `None` if `name` is not one.
pub fn normalize_uuid(name: &str) -> Option<String> {
    let groups: Vec<&str> = name.split('-').collect();
    let shaped = groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()));
    shaped.then(|| name.to_ascii_lowercase())
}

/// The type of the mediated device whose sysfs directory is `dir`, from
/// its `mdev_type` link (`<parent>/mdev_supported_types/<id>`); `None`
/// when `dir` is not a mediated device.
fn mdev_type_of(dir: &Path) -> Option<MdevType> {
    let type_dir = std::fs::canonicalize(dir.join("mdev_type")).ok()?;
    let id = type_dir.file_name()?.to_str()?.to_owned();
    let name = std::fs::read_to_string(type_dir.join("name"))
        .ok()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty());
    let parent = std::fs::canonicalize(dir)
        .ok()?
        .parent()?
        .file_name()?
        .to_str()?
        .to_owned();
    Some(MdevType { id, name, parent })
}

/// Refuses names that would escape a devices directory or cannot be passed
/// to the kernel (`VFIO_GROUP_GET_DEVICE_FD` takes the name as a C string).
pub fn check_name(op: &'static str, name: &str) -> Result<()> {
    let bad =
        name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0');
    if bad {
        return Err(Error::InvalidArgument {
            op,
            target: Target::Device(name.into()),
            reason: "a device name is a bus address such as 0000:00:01.0 (no '/', no NUL)",
        });
    }
    Ok(())
}

/// The IOMMU group of the device `name` whose sysfs directory is `dir`: the
/// last component of its `iommu_group` link.
fn group_in(dir: &Path, name: &str) -> Result<u32> {
    const OP: &str = "iommu group lookup";
    let link = dir.join("iommu_group");
    let target = std::fs::read_link(&link).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => Error::NotFound {
            op: OP,
            target: Target::Device(name.to_owned()),
            reason: "the device has no iommu_group link: no IOMMU, or the IOMMU is off",
        },
        _ => Error::from_io("readlink", Target::Path(path_string(&link)), &e),
    })?;
    target
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or(Error::InvalidArgument {
            op: OP,
            target: Target::Path(path_string(&link)),
            reason: "the iommu_group link does not end in a group number",
        })
}

/// The VFIO cdev (`vfioN`) listed in the `vfio-dev` directory of the
/// device `name` whose sysfs directory is `dir`, the first by name.
fn cdev_in(dir: &Path, name: &str) -> Result<String> {
    const OP: &str = "vfio cdev lookup";
    let vfio_dev = dir.join("vfio-dev");
    let entries = std::fs::read_dir(&vfio_dev).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => Error::NotFound {
            op: OP,
            target: Target::Device(name.to_owned()),
            reason: "no vfio-dev directory: not bound to vfio-pci, or no VFIO cdev support",
        },
        _ => Error::from_io("readdir", Target::Path(path_string(&vfio_dev)), &e),
    })?;
    let mut cdevs: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| is_cdev_name(n))
        .collect();
    cdevs.sort();
    cdevs.into_iter().next().ok_or(Error::NotFound {
        op: OP,
        target: Target::Device(name.to_owned()),
        reason: "the vfio-dev directory holds no vfioN entry",
    })
}

fn is_cdev_name(name: &str) -> bool {
    name.strip_prefix("vfio")
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

fn path_string(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn link_name(path: &Path) -> Option<String> {
    std::fs::read_link(path)
        .ok()?
        .file_name()?
        .to_str()
        .map(str::to_owned)
}

fn read_hex_u16(path: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(path).ok()?;
    let t = text.trim();
    u16::from_str_radix(t.strip_prefix("0x").unwrap_or(t), 16).ok()
}

fn sorted_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeHost;
    use std::os::unix::fs::symlink;
    use vfio_hal::ErrorKind;

    const EDU: &str = "0000:00:04.0";

    /// edu bound to vfio-pci in group 5 with cdev vfio3, and a device
    /// without an IOMMU group.
    fn tree() -> FakeHost {
        let t = FakeHost::new().expect("tree");
        t.add_device(EDU, Some("vfio-pci"), Some(5), Some("vfio3"))
            .expect("edu");
        t.add_device("0000:00:02.0", None, None, None)
            .expect("plain");
        t
    }

    #[test]
    fn pci_addresses_are_recognised_and_normalized() {
        assert_eq!(
            normalize_pci_address("00:04.0").as_deref(),
            Some("0000:00:04.0")
        );
        assert_eq!(
            normalize_pci_address("0000:AF:1f.7").as_deref(),
            Some("0000:af:1f.7")
        );
        for bad in [
            "edu",
            "0000:00:04",
            "0000:00:04.8",
            "00:4.0",
            "1:2:3:4",
            "",
            "0000:00:04.00",
        ] {
            assert!(!is_pci_address(bad), "{bad}");
        }
    }

    #[test]
    fn a_device_is_described_and_listed() {
        let t = tree();
        let host = t.host();
        let d = host.device("00:04.0").expect("edu");
        assert_eq!(d.name, EDU);
        assert_eq!((d.vendor, d.device), (Some(0x1234), Some(0x11e8)));
        assert_eq!((d.group, d.cdev.as_deref()), (Some(5), Some("vfio3")));
        assert!(d.bound_to_vfio());
        assert_eq!(host.vfio_device_names(), vec![EDU.to_owned()]);
    }

    const MTTY: &str = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001";

    #[test]
    fn uuids_are_recognised_and_lower_cased() {
        assert_eq!(
            normalize_uuid("83B8F4F2-509F-382F-3C1E-E6BFE0FA1001").as_deref(),
            Some(MTTY)
        );
        for bad in [
            "83b8f4f2-509f-382f-3c1e",
            "83b8f4f2509f382f3c1ee6bfe0fa1001",
            "83b8f4f2-509f-382f-3c1e-e6bfe0fa100g",
            "83b8f4f2-509f-382f-3c1e-e6bfe0fa10011",
            "",
        ] {
            assert_eq!(normalize_uuid(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_mediated_device_is_named_by_uuid_or_path_described_and_listed() {
        let t = tree();
        let dir = t
            .add_mdev(MTTY, "mtty", "mtty-2", "Dual port serial", 9, Some("vfio4"))
            .expect("mdev");
        let host = t.host();
        let by_path = dir.to_str().expect("utf-8").to_owned();
        let upper = MTTY.to_ascii_uppercase();
        for name in [MTTY, upper.as_str(), by_path.as_str()] {
            let d = host.device(name).expect("mtty");
            assert_eq!(d.name, MTTY);
            assert_eq!(
                d.bus,
                Bus::Mdev(MdevType {
                    id: "mtty-2".into(),
                    name: Some("Dual port serial".into()),
                    parent: "mtty".into(),
                })
            );
            assert_eq!((d.vendor, d.device), (None, None));
            assert_eq!((d.group, d.cdev.as_deref()), (Some(9), Some("vfio4")));
            assert!(d.bound_to_vfio(), "{d:?}");
            assert_eq!(host.iommu_group(name).expect("group"), 9);
            assert_eq!(host.find_cdev(name).expect("cdev").cdev, "vfio4");
        }
        assert!(host.blockers(9).is_empty(), "{:?}", host.blockers(9));
        assert_eq!(
            host.vfio_device_names(),
            vec![EDU.to_owned(), MTTY.to_owned()]
        );
        assert_eq!(host.device(EDU).expect("edu").bus, Bus::Pci);
    }

    #[test]
    fn a_mediated_device_without_a_driver_is_not_listed() {
        let t = tree();
        let dir = t
            .add_mdev(MTTY, "mtty", "mtty-1", "Single port serial", 9, None)
            .expect("mdev");
        std::fs::remove_file(dir.join("driver")).expect("unbind");
        let host = t.host();
        assert!(!host.device(MTTY).expect("mtty").bound_to_vfio());
        assert_eq!(host.vfio_device_names(), vec![EDU.to_owned()]);
    }

    #[test]
    fn group_from_a_bdf_and_from_a_sysfs_path() {
        let t = tree();
        let host = t.host();
        assert_eq!(host.iommu_group(EDU).expect("group"), 5);
        let link = t.path("sys/bus/pci/devices").join(EDU);
        let path = link.to_str().expect("utf-8");
        let (dir, name) = host.device_dir(path).expect("device");
        assert_eq!(name, EDU);
        assert_eq!(dir, std::fs::canonicalize(&link).expect("realpath"));
        assert_eq!(host.iommu_group(path).expect("group"), 5);
    }

    #[test]
    fn a_missing_device_is_not_found_with_its_path() {
        let t = tree();
        let e = t.host().iommu_group("0000:00:09.0").expect_err("absent");
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(
            e.to_string().contains("bus/pci/devices/0000:00:09.0"),
            "{e}"
        );
        let l = t.host().device("0000:00:1f.7").expect_err("absent");
        assert!(matches!(l, LookupError::NoSuchDevice { .. }), "{l:?}");
    }

    #[test]
    fn a_device_without_iommu_is_not_found_with_a_reason() {
        let t = tree();
        let e = t.host().iommu_group("0000:00:02.0").expect_err("no iommu");
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.to_string().contains("iommu_group"), "{e}");
    }

    #[test]
    fn names_that_are_no_address_or_path_are_refused() {
        let host = Host::default();
        for bad in ["", ".", "..", "../../etc", "a\0b", "edu"] {
            let e = host.iommu_group(bad).expect_err(bad);
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad:?}");
            assert!(check_name("t", bad).is_err() || bad == "edu", "{bad:?}");
        }
    }

    #[test]
    fn a_link_that_does_not_end_in_a_number_is_invalid() {
        let t = tree();
        let dev = t.path("sys/bus/pci/devices/0000:00:02.0");
        symlink(
            "../../../kernel/iommu_groups/noiommu",
            dev.join("iommu_group"),
        )
        .expect("link");
        let e = t.host().iommu_group("0000:00:02.0").expect_err("bad");
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn cdev_lookup() {
        let t = tree();
        let host = t.host();
        assert_eq!(host.vfio_cdev(EDU).expect("cdev"), "vfio3");
        let loc = host.find_cdev(EDU).expect("cdev");
        assert_eq!(loc.node, t.path("dev/vfio/devices/vfio3"));
        let e = host.vfio_cdev("0000:00:02.0").expect_err("not bound");
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn blockers_are_host_drivers_only() {
        let t = tree();
        t.add_device("0000:00:04.1", Some("snd_hda_intel"), Some(5), None)
            .expect("sibling");
        t.add_device("0000:00:00.0", Some("pcieport"), Some(5), None)
            .expect("bridge");
        let b = t.host().blockers(5);
        assert_eq!(
            b,
            vec![Blocker {
                device: "0000:00:04.1".into(),
                driver: "snd_hda_intel".into()
            }]
        );
    }
}
