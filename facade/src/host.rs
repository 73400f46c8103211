//! What this machine offers for VFIO, read from sysfs and `/dev`, and what
//! stands in the way of opening a device — with what to do about it.
//!
//! Everything here only reads directory entries, symlinks and small sysfs
//! files: nothing opens a VFIO node, so a look never disturbs a device in
//! use. Both roots are injectable ([`Host::new`]) so that every diagnosis is
//! tested against a fake tree.
//!
//! The viability rule is the kernel's: a group can be handed to user space
//! when every device in it is unbound or bound to a driver that does not
//! use the kernel's DMA API (vfio-pci and its vendor variants, pci-stub,
//! pcieport); any other driver makes the kernel refuse the group.

use std::fmt;
use std::path::{Path, PathBuf};

use vfio_hal::ErrorKind;

use crate::backend::Backend;

/// Drivers that leave an IOMMU group usable by VFIO (besides VFIO's own).
const DMA_SAFE_DRIVERS: [&str; 2] = ["pci-stub", "pcieport"];

/// The sysfs and `/dev` trees to inspect: `/sys` and `/dev` by default.
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

/// One PCI device as sysfs describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciDevice {
    /// The PCI address, `0000:00:04.0`.
    pub name: String,
    /// Its sysfs directory.
    pub sysfs_dir: PathBuf,
    /// PCI vendor id, where sysfs has it.
    pub vendor: Option<u16>,
    /// PCI device id, where sysfs has it.
    pub device: Option<u16>,
    /// The bound driver (`vfio-pci`), or `None` when unbound.
    pub driver: Option<String>,
    /// The IOMMU group, or `None` when the device has none (IOMMU off).
    pub group: Option<u32>,
    /// The VFIO device cdev (`vfio3`), on kernels with `VFIO_DEVICE_CDEV`.
    pub cdev: Option<String>,
}

impl PciDevice {
    /// Whether a VFIO driver (vfio-pci or a vendor variant of it) owns the device.
    pub fn bound_to_vfio(&self) -> bool {
        self.driver.as_deref().is_some_and(is_vfio_driver)
    }
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

/// A kernel interface VFIO backends use, and whether this machine has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The path.
    pub path: PathBuf,
    /// Whether it exists.
    pub present: bool,
    /// What it is for.
    pub role: &'static str,
}

/// Whether the running kernel offers a backend, and why (not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The backend.
    pub backend: Backend,
    /// Whether this kernel and this build can use it.
    pub available: bool,
    /// What was found or what is missing, and what to do.
    pub reason: String,
}

/// Why a device cannot be opened, found before any VFIO node is touched,
/// or a request that names no usable device. [`fmt::Display`] says what is
/// wrong; [`Problem::remedy`] says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// No PCI device has this address.
    #[error("no PCI device {name} (looked for {})", path.display())]
    NoSuchDevice {
        /// The address asked for.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The device is not bound to vfio-pci.
    #[error("{name} is {}, not to vfio-pci", match driver { Some(d) => format!("bound to {d}"), None => "bound to no driver".to_owned() })]
    NotBoundToVfio {
        /// The device.
        name: String,
        /// The driver it is bound to, if any.
        driver: Option<String>,
    },
    /// The device has no IOMMU group: the IOMMU is off or absent.
    #[error("{name} has no IOMMU group (no iommu_group link in sysfs): the IOMMU is off")]
    NoIommuGroup {
        /// The device.
        name: String,
    },
    /// Another device of the group is bound to a host driver.
    #[error("IOMMU group {group} of {name} is not viable: {}", blockers.iter().map(|b| format!("{} is bound to {}", b.device, b.driver)).collect::<Vec<_>>().join(", "))]
    GroupNotViable {
        /// The device asked for.
        name: String,
        /// Its group.
        group: u32,
        /// The devices in the way.
        blockers: Vec<Blocker>,
    },
    /// A kernel node the chosen backend needs is missing.
    #[error("{} is missing, which the {backend} backend needs", path.display())]
    MissingNode {
        /// The backend.
        backend: Backend,
        /// The node.
        path: PathBuf,
    },
    /// The mock has no model of this name.
    #[error("the mock backend has no device `{name}` (it has {})", known.join(", "))]
    UnknownMockDevice {
        /// The name asked for.
        name: String,
        /// The models it has.
        known: Vec<String>,
    },
    /// A mock model's name was given while real VFIO devices are present.
    #[error("`{name}` is not a PCI address, and this machine has VFIO devices ({})", present.join(", "))]
    MockNameWithVfioDevices {
        /// The name given.
        name: String,
        /// The devices bound to vfio-pci.
        present: Vec<String>,
    },
    /// No device was named, and the choice is not obvious.
    #[error("no device named, and {}", if present.is_empty() { "no device is bound to vfio-pci on this machine".to_owned() } else { format!("this machine has VFIO devices ({})", present.join(", ")) })]
    DeviceNeeded {
        /// The devices bound to vfio-pci.
        present: Vec<String>,
    },
    /// The name is neither a PCI address, a sysfs path nor a mock model.
    #[error("`{name}` is not a PCI address (0000:00:04.0) or a sysfs device path")]
    BadName {
        /// The name given.
        name: String,
    },
    /// The backend was not compiled into this build.
    #[error("this build has no {backend} backend (cargo feature `{feature}` is off)")]
    NotBuilt {
        /// The backend.
        backend: Backend,
        /// Its cargo feature.
        feature: &'static str,
    },
}

impl Problem {
    /// The backend-independent kind, as a hal error would report it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NoSuchDevice { .. }
            | Self::NotBoundToVfio { .. }
            | Self::MissingNode { .. }
            | Self::UnknownMockDevice { .. } => ErrorKind::NotFound,
            Self::NoIommuGroup { .. } | Self::NotBuilt { .. } => ErrorKind::NotSupported,
            Self::GroupNotViable { .. } => ErrorKind::NotViable,
            Self::MockNameWithVfioDevices { .. }
            | Self::DeviceNeeded { .. }
            | Self::BadName { .. } => ErrorKind::InvalidArgument,
        }
    }

    /// What to do about it: shell commands where there are some.
    pub fn remedy(&self) -> String {
        match self {
            Self::NoSuchDevice { .. } => {
                "`vfio-hal list` shows the devices bound to vfio-pci; `lspci -D` shows all PCI addresses"
                    .to_owned()
            }
            Self::NotBoundToVfio { name, driver } => {
                let unbind = if driver.is_some() {
                    format!("  echo {name} > /sys/bus/pci/devices/{name}/driver/unbind\n")
                } else {
                    String::new()
                };
                format!(
                    "hand it to VFIO (as root):\n  modprobe vfio-pci\n  echo vfio-pci > /sys/bus/pci/devices/{name}/driver_override\n{unbind}  echo {name} > /sys/bus/pci/drivers_probe"
                )
            }
            Self::NoIommuGroup { .. } => {
                "enable the IOMMU: boot with intel_iommu=on (Intel) or amd_iommu=on (AMD), and turn VT-d/AMD-Vi on in the firmware".to_owned()
            }
            Self::GroupNotViable { group, blockers, .. } => {
                let mut s = format!(
                    "every device in /sys/kernel/iommu_groups/{group}/devices must be bound to vfio-pci (or unbound):\n"
                );
                for b in blockers {
                    s.push_str(&format!(
                        "  echo vfio-pci > /sys/bus/pci/devices/{0}/driver_override; echo {0} > /sys/bus/pci/devices/{0}/driver/unbind; echo {0} > /sys/bus/pci/drivers_probe\n",
                        b.device
                    ));
                }
                s.push_str("or move the device to a slot with its own group (ACS)");
                s
            }
            Self::MissingNode { backend, path } => match backend {
                Backend::Iommufd => format!(
                    "{} appears with a kernel built with CONFIG_IOMMUFD and CONFIG_VFIO_DEVICE_CDEV (Linux 6.6+): `modprobe iommufd`, or use --backend legacy",
                    path.display()
                ),
                _ => format!(
                    "load VFIO: `modprobe vfio-pci vfio_iommu_type1` (or iommufd's compat mode); {} must exist",
                    path.display()
                ),
            },
            Self::UnknownMockDevice { known, .. } => {
                format!("name one of the mock's models: {}", known.join(", "))
            }
            Self::MockNameWithVfioDevices { name, .. } => format!(
                "name one of the VFIO devices, or pass --backend mock to use the built-in mock `{name}`"
            ),
            Self::DeviceNeeded { .. } => {
                "name one of the VFIO devices, or pass --backend mock for the built-in mock edu".to_owned()
            }
            Self::BadName { .. } => {
                "give a PCI address such as 0000:00:04.0 (`vfio-hal list` shows them), or edu / copy-engine with --backend mock".to_owned()
            }
            Self::NotBuilt { feature, .. } => {
                format!("rebuild with `--features {feature}`")
            }
        }
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

    /// `<dev>/vfio/vfio`: the legacy container.
    pub fn container_node(&self) -> PathBuf {
        self.dev.join("vfio/vfio")
    }

    /// `<dev>/iommu`: iommufd.
    pub fn iommu_node(&self) -> PathBuf {
        self.dev.join("iommu")
    }

    /// `<dev>/vfio/devices`: the VFIO device cdevs.
    pub fn cdev_dir(&self) -> PathBuf {
        self.dev.join("vfio/devices")
    }

    fn vfio_pci_driver_dir(&self) -> PathBuf {
        self.sys.join("bus/pci/drivers/vfio-pci")
    }

    /// The kernel interfaces VFIO uses, and which of them exist.
    pub fn nodes(&self) -> Vec<Node> {
        let node = |path: PathBuf, role| Node {
            present: path.exists(),
            path,
            role,
        };
        vec![
            node(
                self.vfio_pci_driver_dir(),
                "the vfio-pci driver (modprobe vfio-pci)",
            ),
            node(
                self.container_node(),
                "legacy container (type1, or iommufd's compat mode)",
            ),
            node(self.iommu_node(), "iommufd (CONFIG_IOMMUFD)"),
            node(
                self.cdev_dir(),
                "VFIO device cdevs (CONFIG_VFIO_DEVICE_CDEV, Linux 6.6+)",
            ),
        ]
    }

    /// Which backends this kernel and this build offer, and why.
    pub fn offers(&self) -> Vec<Offer> {
        let present = |p: &Path| p.exists();
        let build = |b: Backend, offer: Offer| -> Offer {
            match b.feature() {
                Some(f) if !b.compiled_in() => Offer {
                    available: false,
                    reason: format!("not in this build (cargo feature `{f}`)"),
                    ..offer
                },
                _ => offer,
            }
        };
        let legacy = if present(&self.container_node()) {
            Offer {
                backend: Backend::Legacy,
                available: true,
                reason: format!("{} is present", self.container_node().display()),
            }
        } else {
            Offer {
                backend: Backend::Legacy,
                available: false,
                reason: format!(
                    "no {} (modprobe vfio-pci vfio_iommu_type1)",
                    self.container_node().display()
                ),
            }
        };
        let iommufd = match (present(&self.iommu_node()), present(&self.cdev_dir())) {
            (true, true) => Offer {
                backend: Backend::Iommufd,
                available: true,
                reason: format!(
                    "{} and {} are present",
                    self.iommu_node().display(),
                    self.cdev_dir().display()
                ),
            },
            (iommu, _) => Offer {
                backend: Backend::Iommufd,
                available: false,
                reason: format!(
                    "no {} (needs CONFIG_IOMMUFD and CONFIG_VFIO_DEVICE_CDEV, Linux 6.6+)",
                    if iommu {
                        self.cdev_dir()
                    } else {
                        self.iommu_node()
                    }
                    .display()
                ),
            },
        };
        let mock = Offer {
            backend: Backend::Mock,
            available: true,
            reason: format!(
                "built in, no kernel needed: {}",
                crate::open::MOCK_DEVICES.join(", ")
            ),
        };
        vec![
            build(Backend::Iommufd, iommufd),
            build(Backend::Legacy, legacy),
            build(Backend::Mock, mock),
        ]
    }

    /// The devices bound to vfio-pci, sorted by address.
    pub fn vfio_devices(&self) -> Vec<PciDevice> {
        sorted_entries(&self.vfio_pci_driver_dir())
            .into_iter()
            .filter(|n| is_pci_address(n))
            .filter_map(|n| self.pci_device(&n).ok())
            .collect()
    }

    /// The names of the devices bound to vfio-pci, sorted.
    pub fn vfio_device_names(&self) -> Vec<String> {
        self.vfio_devices().into_iter().map(|d| d.name).collect()
    }

    /// The PCI device `name`: an address (`0000:00:04.0` or `00:04.0`) or
    /// the absolute path of its sysfs directory.
    pub fn pci_device(&self, name: &str) -> Result<PciDevice, Problem> {
        let (dir, name) = if name.starts_with('/') {
            let dir = std::fs::canonicalize(name).map_err(|_| Problem::NoSuchDevice {
                name: name.to_owned(),
                path: PathBuf::from(name),
            })?;
            let last = dir
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_owned)
                .ok_or_else(|| Problem::BadName {
                    name: name.to_owned(),
                })?;
            (dir, last)
        } else {
            let addr = normalize_pci_address(name).ok_or_else(|| Problem::BadName {
                name: name.to_owned(),
            })?;
            (self.sys.join("bus/pci/devices").join(&addr), addr)
        };
        if !dir.exists() {
            return Err(Problem::NoSuchDevice { name, path: dir });
        }
        let cdev = sorted_entries(&dir.join("vfio-dev"))
            .into_iter()
            .find(|n| n.starts_with("vfio"));
        Ok(PciDevice {
            vendor: read_hex_u16(&dir.join("vendor")),
            device: read_hex_u16(&dir.join("device")),
            driver: link_name(&dir.join("driver")),
            group: link_name(&dir.join("iommu_group")).and_then(|g| g.parse().ok()),
            cdev,
            sysfs_dir: dir,
            name,
        })
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
                let driver = link_name(&dir.join(&device).join("driver"))?;
                let harmless =
                    is_vfio_driver(&driver) || DMA_SAFE_DRIVERS.contains(&driver.as_str());
                (!harmless).then_some(Blocker { device, driver })
            })
            .collect()
    }

    /// Checks, from sysfs alone, that `name` can be handed to VFIO: it
    /// exists, is bound to vfio-pci, has an IOMMU group and the group is
    /// viable. Returns the device.
    pub fn check_device(&self, name: &str) -> Result<PciDevice, Problem> {
        let device = self.pci_device(name)?;
        if !device.bound_to_vfio() {
            return Err(Problem::NotBoundToVfio {
                name: device.name,
                driver: device.driver,
            });
        }
        let Some(group) = device.group else {
            return Err(Problem::NoIommuGroup { name: device.name });
        };
        let blockers = self.blockers(group);
        if !blockers.is_empty() {
            return Err(Problem::GroupNotViable {
                name: device.name,
                group,
                blockers,
            });
        }
        Ok(device)
    }

    /// Checks that the nodes `backend` needs for `device` exist.
    pub fn check_nodes(&self, backend: Backend, device: &PciDevice) -> Result<(), Problem> {
        let mut needed = Vec::new();
        match backend {
            Backend::Legacy => {
                needed.push(self.container_node());
                if let Some(g) = device.group {
                    needed.push(self.dev.join("vfio").join(g.to_string()));
                }
            }
            Backend::Iommufd => {
                needed.push(self.iommu_node());
                if let Some(c) = &device.cdev {
                    needed.push(self.cdev_dir().join(c));
                }
            }
            Backend::Auto | Backend::Mock => {}
        }
        match needed.into_iter().find(|p| !p.exists()) {
            Some(path) => Err(Problem::MissingNode { backend, path }),
            None => Ok(()),
        }
    }
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.device, self.driver)
    }
}

/// A fake sysfs and `/dev` tree in a temporary directory, for testing
/// diagnoses (this crate's, and those of tools built on it) without
/// hardware. Removed on drop.
pub mod fake {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::Host;

    /// The tree; see the module docs.
    #[derive(Debug)]
    pub struct FakeHost {
        root: PathBuf,
    }

    fn write(path: &Path, text: &str) -> std::io::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, text)
    }

    fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::os::unix::fs::symlink(target, link)
    }

    impl FakeHost {
        /// An empty tree under the system's temporary directory.
        pub fn new() -> std::io::Result<Self> {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let root = std::env::temp_dir().join(format!(
                "vfio-hal-facade-host-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(root.join("sys/bus/pci/devices"))?;
            std::fs::create_dir_all(root.join("dev"))?;
            Ok(Self { root })
        }

        /// The [`Host`] looking at this tree.
        pub fn host(&self) -> Host {
            Host::new(self.root.join("sys"), self.root.join("dev"))
        }

        /// `rel` under the tree's root.
        pub fn path(&self, rel: &str) -> PathBuf {
            self.root.join(rel)
        }

        /// Adds PCI device `bdf` with ids `1234:11e8`, bound to `driver`
        /// (a link into `bus/pci/drivers/<driver>`, which lists it back), in
        /// IOMMU `group`, with VFIO cdev `cdev`.
        pub fn add_device(
            &self,
            bdf: &str,
            driver: Option<&str>,
            group: Option<u32>,
            cdev: Option<&str>,
        ) -> std::io::Result<PathBuf> {
            let sys = self.root.join("sys");
            let dir = sys.join("bus/pci/devices").join(bdf);
            write(&dir.join("vendor"), "0x1234\n")?;
            write(&dir.join("device"), "0x11e8\n")?;
            if let Some(d) = driver {
                let ddir = sys.join("bus/pci/drivers").join(d);
                std::fs::create_dir_all(&ddir)?;
                symlink(&ddir, &dir.join("driver"))?;
                symlink(&dir, &ddir.join(bdf))?;
            }
            if let Some(g) = group {
                let gdir = sys.join("kernel/iommu_groups").join(g.to_string());
                std::fs::create_dir_all(gdir.join("devices"))?;
                symlink(&gdir, &dir.join("iommu_group"))?;
                symlink(&dir, &gdir.join("devices").join(bdf))?;
            }
            if let Some(c) = cdev {
                std::fs::create_dir_all(dir.join("vfio-dev").join(c))?;
            }
            Ok(dir)
        }

        /// Creates the node `rel` under `dev` (an empty file).
        pub fn add_node(&self, rel: &str) -> std::io::Result<()> {
            write(&self.root.join("dev").join(rel), "")
        }
    }

    impl Drop for FakeHost {
        fn drop(&mut self) {
            if let Err(e) = std::fs::remove_dir_all(&self.root) {
                log::warn!("removing {}: {e}", self.root.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeHost;
    use super::*;

    const EDU: &str = "0000:00:04.0";

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
    fn a_bound_viable_device_passes_and_is_listed() {
        let t = FakeHost::new().expect("tree");
        t.add_device(EDU, Some("vfio-pci"), Some(7), Some("vfio0"))
            .expect("device");
        let host = t.host();
        let d = host.check_device("00:04.0").expect("usable");
        assert_eq!((d.vendor, d.device), (Some(0x1234), Some(0x11e8)));
        assert_eq!((d.group, d.cdev.as_deref()), (Some(7), Some("vfio0")));
        assert_eq!(host.vfio_device_names(), vec![EDU.to_owned()]);
    }

    #[test]
    fn a_device_on_a_host_driver_is_not_bound_and_the_remedy_rebinds_it() {
        let t = FakeHost::new().expect("tree");
        t.add_device(EDU, Some("virtio-pci"), Some(3), None)
            .expect("device");
        let p = t.host().check_device(EDU).expect_err("not vfio");
        assert_eq!(p.kind(), ErrorKind::NotFound);
        assert!(p.to_string().contains("bound to virtio-pci"), "{p}");
        let r = p.remedy();
        assert!(
            r.contains("driver_override") && r.contains("drivers_probe"),
            "{r}"
        );
        assert!(r.contains("driver/unbind"), "{r}");
    }

    #[test]
    fn an_absent_device_says_where_it_looked() {
        let t = FakeHost::new().expect("tree");
        let p = t.host().check_device("0000:00:1f.7").expect_err("absent");
        assert!(matches!(p, Problem::NoSuchDevice { .. }), "{p:?}");
        assert!(
            p.to_string().contains("bus/pci/devices/0000:00:1f.7"),
            "{p}"
        );
    }

    #[test]
    fn a_group_shared_with_a_host_driver_is_not_viable() {
        let t = FakeHost::new().expect("tree");
        t.add_device(EDU, Some("vfio-pci"), Some(5), None)
            .expect("device");
        t.add_device("0000:00:04.1", Some("snd_hda_intel"), Some(5), None)
            .expect("sibling");
        t.add_device("0000:00:00.0", Some("pcieport"), Some(5), None)
            .expect("bridge");
        let p = t.host().check_device(EDU).expect_err("blocked");
        assert_eq!(p.kind(), ErrorKind::NotViable);
        assert!(
            p.to_string()
                .contains("0000:00:04.1 is bound to snd_hda_intel"),
            "{p}"
        );
        assert!(!p.to_string().contains("pcieport"), "{p}");
        assert!(p.remedy().contains("iommu_groups/5"), "{}", p.remedy());
    }

    #[test]
    fn no_iommu_group_means_the_iommu_is_off() {
        let t = FakeHost::new().expect("tree");
        t.add_device(EDU, Some("vfio-pci"), None, None)
            .expect("device");
        let p = t.host().check_device(EDU).expect_err("no group");
        assert!(matches!(p, Problem::NoIommuGroup { .. }), "{p:?}");
        assert!(p.remedy().contains("intel_iommu=on"), "{}", p.remedy());
    }

    #[test]
    fn missing_nodes_are_named_per_backend() {
        let t = FakeHost::new().expect("tree");
        t.add_device(EDU, Some("vfio-pci"), Some(9), Some("vfio2"))
            .expect("device");
        let host = t.host();
        let d = host.check_device(EDU).expect("usable");
        let p = host
            .check_nodes(Backend::Legacy, &d)
            .expect_err("no /dev/vfio");
        assert!(p.to_string().contains("vfio/vfio"), "{p}");
        assert!(p.remedy().contains("modprobe vfio-pci"), "{}", p.remedy());
        t.add_node("vfio/vfio").expect("node");
        let p = host
            .check_nodes(Backend::Legacy, &d)
            .expect_err("no group node");
        assert!(p.to_string().contains("vfio/9"), "{p}");
        t.add_node("vfio/9").expect("node");
        host.check_nodes(Backend::Legacy, &d)
            .expect("legacy nodes present");
        let p = host
            .check_nodes(Backend::Iommufd, &d)
            .expect_err("no iommu");
        assert!(p.remedy().contains("CONFIG_IOMMUFD"), "{}", p.remedy());
    }

    #[test]
    fn offers_follow_the_nodes() {
        let t = FakeHost::new().expect("tree");
        let host = t.host();
        let available = |b: Backend| {
            host.offers()
                .into_iter()
                .find(|o| o.backend == b)
                .map(|o| o.available)
        };
        assert_eq!(available(Backend::Legacy), Some(false));
        assert_eq!(available(Backend::Iommufd), Some(false));
        assert_eq!(available(Backend::Mock), Some(cfg!(feature = "mock")));
        t.add_node("vfio/vfio").expect("node");
        t.add_node("iommu").expect("node");
        std::fs::create_dir_all(t.path("dev/vfio/devices")).expect("cdev dir");
        assert_eq!(available(Backend::Legacy), Some(cfg!(feature = "legacy")));
        assert_eq!(available(Backend::Iommufd), Some(cfg!(feature = "iommufd")));
    }
}
