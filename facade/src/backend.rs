//! Which backend serves a device: named by the user, or chosen at run time.
//!
//! Every backend describes itself once, in [`DESCRIPTIONS`]: its cargo
//! feature, the kernel nodes it needs, how it decides that it can serve a
//! device, and how it opens a container. [`crate::open()`], the offers of
//! [`crate::host::offers`] and the CLI loop over that table; nothing else in
//! the facade names a backend.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use vfio_hal::dynamic::DynContainer;
use vfio_hal::{Capability, ErrorKind, IommuInfo};
use vfio_hal_linux::{Host, HostDevice};

/// A backend of `vfio-hal`, as a user names it (`--backend auto|mock|legacy|iommufd`).
///
/// [`Backend::Auto`] is a request, never an outcome: [`crate::open()`] resolves
/// it to one of the others and says why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Backend {
    /// Probe the kernel: the first backend of [`DESCRIPTIONS`] that can
    /// serve the device (iommufd where the device has a cdev and
    /// `/dev/iommu` opens, else the legacy container). The mock only when no
    /// device is bound to vfio-pci and the name is one of the mock's models
    /// (or none).
    #[default]
    Auto,
    /// The in-memory backend with the built-in models ([`crate::MOCK_DEVICES`]).
    Mock,
    /// The VFIO type1 container (`/dev/vfio/vfio`) and the device's group.
    Legacy,
    /// iommufd (`/dev/iommu`) and the device's cdev (`/dev/vfio/devices/vfioN`).
    Iommufd,
}

/// A kernel node a backend opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    /// The path.
    pub path: PathBuf,
    /// What it is for.
    pub role: &'static str,
}

/// Opens an empty container of one backend on a host, attaching devices first.
pub type OpenContainer = fn(&Host, &[&str]) -> vfio_hal::Result<DynContainer>;

/// How the facade knows one backend; see the module docs.
#[derive(Clone, Copy)]
pub struct Description {
    /// The backend.
    pub backend: Backend,
    /// The cargo feature that builds it in.
    pub feature: &'static str,
    /// Whether this build has it.
    pub compiled_in: bool,
    /// What to do when its host nodes are missing, in a word (`offers`).
    pub missing_hint: &'static str,
    /// What to do when a node it needs is missing, in full (a `Problem`'s
    /// remedy, after the node's path).
    pub missing_remedy: &'static str,
    /// What a container of this backend declares it supports, from its
    /// IOMMU info: what the conformance suite expects of it.
    pub declares: fn(&IommuInfo) -> Declared,
    /// The nodes it needs on any host, whatever the device.
    pub host_nodes: fn(&Host) -> Vec<Need>,
    /// The nodes it needs for this device (its group node, its cdev node).
    pub device_nodes: fn(&Host, &HostDevice) -> Vec<PathBuf>,
    /// Whether it can serve `device` on this host: why, or why not. The
    /// automatic choice takes the first real backend that says yes.
    pub probe: fn(&Host, &HostDevice) -> Result<String, String>,
    /// Opens an empty container on `host`; `attach` names devices whose
    /// IOMMU context the container needs before any device is opened (type1
    /// has no IOMMU until a group is attached). `None` for the mock, whose
    /// containers come with their models, and for backends not built in.
    pub open_container: Option<OpenContainer>,
}

impl fmt::Debug for Description {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Description")
            .field("backend", &self.backend)
            .field("feature", &self.feature)
            .field("compiled_in", &self.compiled_in)
            .finish_non_exhaustive()
    }
}

/// What a backend's container declares it supports (see [`Description::declares`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Declared {
    /// The conformance mode it runs as (`iommufd`, `legacy-type1v2`, …).
    pub mode: &'static str,
    /// How it refuses an unmap that would split a mapping.
    pub split_unmap: ErrorKind,
    /// Whether it offers dirty tracking of DMA.
    pub dirty_tracking: bool,
}

/// Every backend, in the automatic choice's order of preference.
pub const DESCRIPTIONS: &[Description] = &[IOMMUFD, LEGACY, MOCK];

const IOMMUFD: Description = Description {
    backend: Backend::Iommufd,
    feature: "iommufd",
    compiled_in: cfg!(feature = "iommufd"),
    missing_hint: "needs CONFIG_IOMMUFD and CONFIG_VFIO_DEVICE_CDEV, Linux 6.6+",
    missing_remedy: "appears with a kernel built with CONFIG_IOMMUFD and CONFIG_VFIO_DEVICE_CDEV (Linux 6.6+): `modprobe iommufd`, or use --backend legacy",
    // An IOAS refuses a split unmap with ENOENT; its dirty tracking is a
    // HWPT's, outside the container.
    declares: |_| Declared {
        mode: "iommufd",
        split_unmap: ErrorKind::NotMapped,
        dirty_tracking: false,
    },
    host_nodes: |host| {
        vec![
            Need {
                path: host.iommu_node(),
                role: "iommufd (CONFIG_IOMMUFD)",
            },
            Need {
                path: host.cdev_dir(),
                role: "VFIO device cdevs (CONFIG_VFIO_DEVICE_CDEV, Linux 6.6+)",
            },
        ]
    },
    device_nodes: |host, device| {
        device
            .cdev
            .iter()
            .map(|c| host.cdev_dir().join(c))
            .collect()
    },
    probe: iommufd_probe,
    #[cfg(feature = "iommufd")]
    open_container: Some(|host, _attach| {
        let container = vfio_hal_iommufd::IoasContainer::open_in(host.clone())?;
        Ok(vfio_hal::dynamic::erase_container(container))
    }),
    #[cfg(not(feature = "iommufd"))]
    open_container: None,
};

/// iommufd serves a device that has a cdev whose node exists, on a host
/// whose `/dev/iommu` opens.
fn iommufd_probe(host: &Host, device: &HostDevice) -> Result<String, String> {
    let loc = host
        .find_cdev(&device.name)
        .map_err(|e| format!("no VFIO device cdev ({e})"))?;
    if let Err(e) = std::fs::metadata(&loc.node) {
        return Err(format!(
            "sysfs lists cdev {} but {} is missing ({e})",
            loc.cdev,
            loc.node.display()
        ));
    }
    #[cfg(feature = "iommufd")]
    if let Err(e) = vfio_hal_iommufd::Iommufd::open_in(host) {
        return Err(format!("the device has cdev {}, but {e}", loc.cdev));
    }
    Ok(format!(
        "{} has cdev {} and {} opens",
        loc.name,
        loc.node.display(),
        host.iommu_node().display()
    ))
}

const LEGACY: Description = Description {
    backend: Backend::Legacy,
    feature: "legacy",
    compiled_in: cfg!(feature = "legacy"),
    missing_hint: "modprobe vfio-pci vfio_iommu_type1",
    missing_remedy: "load VFIO: `modprobe vfio-pci vfio_iommu_type1` (or iommufd's compat mode) so that it exists",
    // type1 reports its migration (dirty-tracking) capability in
    // VFIO_IOMMU_GET_INFO; iommufd's compat mode serving /dev/vfio/vfio does
    // not, and refuses a split unmap as iommufd does.
    declares: |info| {
        let type1 = info
            .caps
            .iter()
            .any(|c| matches!(c, Capability::Migration { .. }));
        if type1 {
            Declared {
                mode: "legacy-type1v2",
                split_unmap: ErrorKind::InvalidArgument,
                dirty_tracking: true,
            }
        } else {
            Declared {
                mode: "legacy-iommufd-compat",
                split_unmap: ErrorKind::NotMapped,
                dirty_tracking: false,
            }
        }
    },
    host_nodes: |host| {
        vec![Need {
            path: host.container_node(),
            role: "legacy container (type1, or iommufd's compat mode)",
        }]
    },
    device_nodes: |host, device| {
        device
            .group
            .map(|g| host.group_node(g))
            .into_iter()
            .collect()
    },
    // The last real resort: opening it reports its own errors.
    probe: |host, _device| {
        Ok(format!(
            "the type1 container {}",
            host.container_node().display()
        ))
    },
    #[cfg(feature = "legacy")]
    open_container: Some(|host, attach| {
        use vfio_hal_legacy::{ContainerConfig, LegacyContainer};
        let container = LegacyContainer::open_with(ContainerConfig {
            host: host.clone(),
            ..ContainerConfig::default()
        })?;
        for device in attach {
            container.attach(device)?;
        }
        Ok(vfio_hal::dynamic::erase_container(container))
    }),
    #[cfg(not(feature = "legacy"))]
    open_container: None,
};

const MOCK: Description = Description {
    backend: Backend::Mock,
    feature: "mock",
    compiled_in: cfg!(feature = "mock"),
    missing_hint: "",
    missing_remedy: "",
    // The mock's own fixture declares its modes (vfio_hal_mock::conformance).
    declares: |_| Declared {
        mode: "mock",
        split_unmap: ErrorKind::NotMapped,
        dirty_tracking: false,
    },
    host_nodes: |_| Vec::new(),
    device_nodes: |_, _| Vec::new(),
    probe: |_, _| Err("the mock serves its own models, not host devices".to_owned()),
    open_container: None,
};

impl Backend {
    /// Every backend, in the order `--help` lists them.
    pub const ALL: [Backend; 4] = [Self::Auto, Self::Mock, Self::Legacy, Self::Iommufd];

    /// The name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Mock => "mock",
            Self::Legacy => "legacy",
            Self::Iommufd => "iommufd",
        }
    }

    /// Its description; `None` for [`Backend::Auto`], which is a request.
    pub fn description(self) -> Option<&'static Description> {
        DESCRIPTIONS.iter().find(|d| d.backend == self)
    }

    /// Whether this build has the backend (its cargo feature is on).
    /// `Auto` is always available: it resolves to one that is.
    pub fn compiled_in(self) -> bool {
        self.description().is_none_or(|d| d.compiled_in)
    }

    /// The cargo feature that builds the backend in.
    pub fn feature(self) -> Option<&'static str> {
        self.description().map(|d| d.feature)
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A backend name that is not one of `auto`, `mock`, `legacy`, `iommufd`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown backend `{0}`: expected one of auto, mock, legacy, iommufd")]
pub struct UnknownBackend(pub String);

impl FromStr for Backend {
    type Err = UnknownBackend;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|b| b.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownBackend(s.to_owned()))
    }
}

/// The automatic choice for `device`: the first compiled-in real backend of
/// [`DESCRIPTIONS`] whose probe says yes, and why — the refusals of the
/// ones before it included, so that a VMM can log what it did not get.
/// `None` when no real backend is built in.
pub fn auto_choice(host: &Host, device: &HostDevice) -> Option<(Backend, String)> {
    let mut refused = Vec::new();
    for d in DESCRIPTIONS
        .iter()
        .filter(|d| d.compiled_in && d.open_container.is_some())
    {
        match (d.probe)(host, device) {
            Ok(why) if refused.is_empty() => return Some((d.backend, why)),
            Ok(why) => return Some((d.backend, format!("{}; {why}", refused.join("; ")))),
            Err(why) => refused.push(format!("not {}: {why}", d.backend)),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use vfio_hal_linux::fake::FakeHost;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for b in Backend::ALL {
            assert_eq!(b.name().parse::<Backend>(), Ok(b));
        }
        assert_eq!("IOMMUFD".parse::<Backend>(), Ok(Backend::Iommufd));
        let e = "type1".parse::<Backend>().expect_err("not a backend");
        assert!(e.to_string().contains("auto, mock, legacy, iommufd"), "{e}");
    }

    #[test]
    fn every_backend_but_auto_is_described_once() {
        for b in Backend::ALL {
            let n = DESCRIPTIONS.iter().filter(|d| d.backend == b).count();
            assert_eq!(n, usize::from(b != Backend::Auto), "{b}");
        }
    }

    fn edu(t: &FakeHost, cdev: Option<&str>) -> HostDevice {
        t.add_device("0000:00:01.0", Some("vfio-pci"), Some(1), cdev)
            .expect("device");
        t.host().device("0000:00:01.0").expect("device")
    }

    #[cfg(all(feature = "iommufd", feature = "legacy"))]
    #[test]
    fn cdev_and_iommu_node_pick_iommufd() {
        let t = FakeHost::new().expect("tree");
        let d = edu(&t, Some("vfio0"));
        t.add_node("vfio/devices/vfio0").expect("node");
        t.add_node("iommu").expect("node");
        let (b, why) = auto_choice(&t.host(), &d).expect("a backend");
        assert_eq!(b, Backend::Iommufd, "{why}");
        assert!(why.contains("vfio0"), "{why}");
    }

    #[cfg(feature = "legacy")]
    #[test]
    fn no_cdev_picks_legacy_and_says_so() {
        let t = FakeHost::new().expect("tree");
        let d = edu(&t, None);
        t.add_node("iommu").expect("node");
        let (b, why) = auto_choice(&t.host(), &d).expect("a backend");
        assert_eq!(b, Backend::Legacy, "{why}");
        if cfg!(feature = "iommufd") {
            assert!(why.contains("no VFIO device cdev"), "{why}");
            assert!(why.contains("vfio-dev"), "{why}");
        }
    }

    #[cfg(all(feature = "iommufd", feature = "legacy"))]
    #[test]
    fn no_dev_iommu_or_a_hidden_cdev_node_picks_legacy_and_names_the_node() {
        let t = FakeHost::new().expect("tree");
        let d = edu(&t, Some("vfio0"));
        let (b, why) = auto_choice(&t.host(), &d).expect("a backend");
        assert_eq!(b, Backend::Legacy, "{why}");
        assert!(why.contains("is missing"), "{why}");
        t.add_node("vfio/devices/vfio0").expect("node");
        let (b, why) = auto_choice(&t.host(), &d).expect("a backend");
        assert_eq!(b, Backend::Legacy, "{why}");
        let iommu = t.path("dev/iommu");
        assert!(why.contains(&iommu.display().to_string()), "{why}");
    }

    #[test]
    fn the_mock_is_never_an_automatic_choice_for_a_host_device() {
        let t = FakeHost::new().expect("tree");
        let d = edu(&t, None);
        let choice = auto_choice(&t.host(), &d);
        assert!(
            choice.as_ref().is_none_or(|(b, _)| *b != Backend::Mock),
            "{choice:?}"
        );
    }
}
