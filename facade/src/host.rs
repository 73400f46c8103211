//! What this machine offers for VFIO, and what stands in the way of opening
//! a device — with what to do about it.
//!
//! The host itself (its trees, PCI devices, groups, cdevs) is
//! [`vfio_hal_linux::host`], re-exported here; this module adds the
//! diagnosis: which backends the kernel offers ([`offers`]), the nodes they
//! need ([`nodes`]), and why a device cannot be opened ([`Problem`],
//! [`check_device`], [`check_nodes`]), found from sysfs before any VFIO node
//! is opened. Every diagnosis is tested against a [`fake::FakeHost`].
//!
//! The viability rule is the kernel's: a group can be handed to user space
//! when every device in it is unbound or bound to a driver that does not
//! use the kernel's DMA API (vfio-pci and its vendor variants, pci-stub,
//! pcieport); any other driver makes the kernel refuse the group.

use std::path::PathBuf;

use vfio_hal::ErrorKind;
pub use vfio_hal_linux::fake;
pub use vfio_hal_linux::host::{is_pci_address, normalize_pci_address, normalize_uuid};
pub use vfio_hal_linux::{Blocker, Bus, Host, HostDevice, LookupError, MdevType};

use crate::backend::{Backend, DESCRIPTIONS};

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
/// or a request that names no usable device. [`std::fmt::Display`] says what is
/// wrong; [`Problem::remedy`] says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// No device has this address, UUID or path.
    #[error("no device {name} (looked for {})", path.display())]
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
    /// The name is neither a PCI address, an mdev UUID, a sysfs path nor a mock model.
    #[error("`{name}` is not a PCI address (0000:00:04.0), a mediated device's UUID or a sysfs device path")]
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
            Self::MissingNode { backend, path } => format!(
                "{}: {}",
                path.display(),
                backend.description().map_or("", |d| d.missing_remedy)
            ),
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

impl From<LookupError> for Problem {
    fn from(e: LookupError) -> Self {
        match e {
            LookupError::BadName { name } => Self::BadName { name },
            LookupError::NoSuchDevice { name, path } => Self::NoSuchDevice { name, path },
            // `LookupError` may grow; a new lookup failure is a bad name
            // until it gets its own diagnosis.
            _ => Self::BadName {
                name: e.to_string(),
            },
        }
    }
}

/// The kernel interfaces VFIO uses, and which of them exist: the vfio-pci
/// driver, then every backend's nodes.
pub fn nodes(host: &Host) -> Vec<Node> {
    let node = |path: PathBuf, role| Node {
        present: path.exists(),
        path,
        role,
    };
    let mut nodes = vec![node(
        host.vfio_pci_driver_dir(),
        "the vfio-pci driver (modprobe vfio-pci)",
    )];
    for d in DESCRIPTIONS {
        nodes.extend(
            (d.host_nodes)(host)
                .into_iter()
                .map(|n| node(n.path, n.role)),
        );
    }
    nodes
}

/// Which backends this kernel and this build offer, and why.
pub fn offers(host: &Host) -> Vec<Offer> {
    DESCRIPTIONS
        .iter()
        .map(|d| {
            let needs = (d.host_nodes)(host);
            let (available, reason) = if !d.compiled_in {
                (
                    false,
                    format!("not in this build (cargo feature `{}`)", d.feature),
                )
            } else if needs.is_empty() {
                (
                    true,
                    format!(
                        "built in, no kernel needed: {}",
                        crate::open::MOCK_DEVICES.join(", ")
                    ),
                )
            } else if let Some(missing) = needs.iter().find(|n| !n.path.exists()) {
                (
                    false,
                    format!("no {} ({})", missing.path.display(), d.missing_hint),
                )
            } else {
                let paths: Vec<String> =
                    needs.iter().map(|n| n.path.display().to_string()).collect();
                let verb = if paths.len() == 1 { "is" } else { "are" };
                (true, format!("{} {verb} present", paths.join(" and ")))
            };
            Offer {
                backend: d.backend,
                available,
                reason,
            }
        })
        .collect()
}

/// Checks, from sysfs alone, that `name` can be handed to VFIO: it
/// exists, is bound to vfio-pci, has an IOMMU group and the group is
/// viable. Returns the device.
pub fn check_device(host: &Host, name: &str) -> Result<HostDevice, Problem> {
    let device = host.device(name)?;
    if !device.bound_to_vfio() {
        return Err(Problem::NotBoundToVfio {
            name: device.name,
            driver: device.driver,
        });
    }
    let Some(group) = device.group else {
        return Err(Problem::NoIommuGroup { name: device.name });
    };
    let blockers = host.blockers(group);
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
pub fn check_nodes(host: &Host, backend: Backend, device: &HostDevice) -> Result<(), Problem> {
    let Some(d) = backend.description() else {
        return Ok(());
    };
    let host_nodes = (d.host_nodes)(host).into_iter().map(|n| n.path);
    // The cdev directory is implied by the cdev node; name the node.
    let mut needed: Vec<PathBuf> = host_nodes.filter(|p| *p != host.cdev_dir()).collect();
    needed.extend((d.device_nodes)(host, device));
    match needed.into_iter().find(|p| !p.exists()) {
        Some(path) => Err(Problem::MissingNode { backend, path }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeHost;
    use super::*;

    const EDU: &str = "0000:00:04.0";

    #[test]
    fn a_bound_viable_device_passes_and_is_listed() {
        let t = FakeHost::new().expect("tree");
        t.add_device(EDU, Some("vfio-pci"), Some(7), Some("vfio0"))
            .expect("device");
        let host = t.host();
        let d = check_device(&host, "00:04.0").expect("usable");
        assert_eq!((d.vendor, d.device), (Some(0x1234), Some(0x11e8)));
        assert_eq!((d.group, d.cdev.as_deref()), (Some(7), Some("vfio0")));
        assert_eq!(host.vfio_device_names(), vec![EDU.to_owned()]);
    }

    #[test]
    fn a_device_on_a_host_driver_is_not_bound_and_the_remedy_rebinds_it() {
        let t = FakeHost::new().expect("tree");
        t.add_device(EDU, Some("virtio-pci"), Some(3), None)
            .expect("device");
        let p = check_device(&t.host(), EDU).expect_err("not vfio");
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
        let p = check_device(&t.host(), "0000:00:1f.7").expect_err("absent");
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
        let p = check_device(&t.host(), EDU).expect_err("blocked");
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
        let p = check_device(&t.host(), EDU).expect_err("no group");
        assert!(matches!(p, Problem::NoIommuGroup { .. }), "{p:?}");
        assert!(p.remedy().contains("intel_iommu=on"), "{}", p.remedy());
    }

    #[test]
    fn missing_nodes_are_named_per_backend() {
        let t = FakeHost::new().expect("tree");
        t.add_device(EDU, Some("vfio-pci"), Some(9), Some("vfio2"))
            .expect("device");
        let host = t.host();
        let d = check_device(&host, EDU).expect("usable");
        let p = check_nodes(&host, Backend::Legacy, &d).expect_err("no /dev/vfio");
        assert!(p.to_string().contains("vfio/vfio"), "{p}");
        assert!(p.remedy().contains("modprobe vfio-pci"), "{}", p.remedy());
        t.add_node("vfio/vfio").expect("node");
        let p = check_nodes(&host, Backend::Legacy, &d).expect_err("no group node");
        assert!(p.to_string().contains("vfio/9"), "{p}");
        t.add_node("vfio/9").expect("node");
        check_nodes(&host, Backend::Legacy, &d).expect("legacy nodes present");
        let p = check_nodes(&host, Backend::Iommufd, &d).expect_err("no iommu");
        assert!(p.remedy().contains("CONFIG_IOMMUFD"), "{}", p.remedy());
    }

    #[test]
    fn offers_follow_the_nodes() {
        let t = FakeHost::new().expect("tree");
        let host = t.host();
        let available = |b: Backend| {
            offers(&host)
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
