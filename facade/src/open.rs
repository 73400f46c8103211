//! Opening a device with a backend chosen at run time.
//!
//! [`open()`] turns a device name and a [`Backend`] request into a
//! type-erased container and device, and says which backend it took and
//! why. Before it touches a VFIO node it checks sysfs ([`Host`]), so the
//! common setup mistakes — device not bound to vfio-pci, group not viable,
//! modules not loaded — come back as a [`Problem`] that says what to do,
//! not as a bare `ENOENT`.
//!
//! The mock is never a silent fallback: it serves a request only when the
//! user asked for it (`Backend::Mock`), or when no device is bound to
//! vfio-pci on this machine *and* the name is one of the mock's models (or
//! no name was given). A PCI address always goes to a real backend.

use std::fmt;

use vfio_hal::dynamic::{DynContainer, DynDevice};
use vfio_hal::{Error, ErrorKind, Target};

use crate::backend::{auto_choice, Backend};
use crate::host::{check_device, check_nodes, is_pci_address, Host, Problem};

/// The models the mock backend serves, by the names [`open()`] knows them.
pub const MOCK_DEVICES: [&str; 2] = ["edu", "copy-engine"];

/// What to open: a device name, a backend request and the host trees.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpenSpec {
    device: Option<String>,
    backend: Backend,
    host: Host,
}

impl OpenSpec {
    /// Device `device`: a PCI address (`0000:00:04.0` or `00:04.0`), the
    /// absolute path of its sysfs directory, or a mock model
    /// ([`MOCK_DEVICES`]); backend [`Backend::Auto`].
    pub fn new(device: impl Into<String>) -> Self {
        Self {
            device: Some(device.into()),
            ..Self::default()
        }
    }

    /// No device named: the only candidate is the mock edu, when nothing is
    /// bound to vfio-pci (or the backend is [`Backend::Mock`]).
    pub fn unnamed() -> Self {
        Self::default()
    }

    /// Requests `backend` instead of [`Backend::Auto`].
    pub fn with_backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Looks at other sysfs and `/dev` trees (tests, containers).
    pub fn with_host(mut self, host: Host) -> Self {
        self.host = host;
        self
    }

    /// The device name, if one was given.
    pub fn device(&self) -> Option<&str> {
        self.device.as_deref()
    }

    /// The backend requested.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The trees inspected.
    pub fn host(&self) -> &Host {
        &self.host
    }
}

/// An open device, its container, and which backend serves them.
pub struct Opened {
    /// The device. Declared first so that it is dropped before its container.
    pub device: DynDevice,
    /// The container (IO address space) the device is attached to.
    pub container: DynContainer,
    /// The device's name as the backend knows it (a normalized PCI address,
    /// or the mock model's name).
    pub name: String,
    /// The backend that serves it: never [`Backend::Auto`].
    pub backend: Backend,
    /// Why this backend: what was found, or that it was asked for.
    pub reason: String,
    /// The mock behind `container` (a shared handle), when the mock serves it.
    #[cfg(feature = "mock")]
    mock: Option<vfio_hal_mock::MockContainer>,
}

impl Opened {
    /// The [`MockContainer`](vfio_hal_mock::MockContainer) behind
    /// [`Opened::container`] when the mock backend serves the device; `None`
    /// on a real backend. It shares the container's state: a test reads its
    /// IOMMU faults and incidents, drives its clock, or plugs more models.
    ///
    /// ```
    /// use vfio_hal_facade::prelude::*;
    /// use vfio_hal_facade::{open, Backend, OpenSpec};
    /// use vfio_hal_facade::mock::models::{edu::reg, Edu};
    ///
    /// let opened = open(&OpenSpec::new("edu").with_backend(Backend::Mock))?;
    /// let mock = opened.mock().expect("the mock serves it");
    /// // A device DMA with bus mastering off moves nothing and is recorded.
    /// let bar0 = opened.device.region(0)?;
    /// bar0.write_at::<u64>(reg::DMA_SRC, 0x10_0000)?;
    /// bar0.write_at::<u64>(reg::DMA_DST, reg::DMA_START)?;
    /// bar0.write_at::<u64>(reg::DMA_CNT, 4)?;
    /// bar0.write_at::<u64>(reg::DMA_CMD, reg::EDU_DMA_RUN)?;
    /// while bar0.read_at::<u64>(reg::DMA_CMD)? & reg::EDU_DMA_RUN != 0 {}
    /// assert_eq!(mock.incidents().len(), 1, "{:?}", mock.incidents());
    ///
    /// mock.plug("second-edu", Edu::new())?;
    /// let second = opened.container.open_device("second-edu")?;
    /// assert_eq!(second.region(0)?.read_at::<u32>(0)?, 0x0100_00ed);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "mock")]
    pub fn mock(&self) -> Option<&vfio_hal_mock::MockContainer> {
        self.mock.as_ref()
    }
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("name", &self.name)
            .field("backend", &self.backend)
            .field("reason", &self.reason)
            .field("info", self.device.info())
            .finish_non_exhaustive()
    }
}

/// Why [`open()`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Found from sysfs before any VFIO node was opened.
    #[error(transparent)]
    Problem(#[from] Problem),
    /// The backend refused.
    #[error("{device} ({backend} backend): {error}")]
    Hal {
        /// The device.
        device: String,
        /// The backend that refused.
        backend: Backend,
        /// Its error, errno and operation included (boxed: it is large and
        /// this is the cold path).
        #[source]
        error: Box<Error>,
        /// What to do, where the error's kind says.
        remedy: Option<String>,
    },
}

impl OpenError {
    /// The backend-independent kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Problem(p) => p.kind(),
            Self::Hal { error, .. } => error.kind(),
        }
    }

    /// The errno, where a system call failed.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Problem(_) => None,
            Self::Hal { error, .. } => error.errno(),
        }
    }

    /// What to do about it, where there is something to say.
    pub fn remedy(&self) -> Option<String> {
        match self {
            Self::Problem(p) => Some(p.remedy()),
            Self::Hal { remedy, .. } => remedy.clone(),
        }
    }
}

/// Opens the device of `spec` with the backend it asks for, resolving
/// [`Backend::Auto`] by probing the kernel (see the module docs).
pub fn open(spec: &OpenSpec) -> Result<Opened, OpenError> {
    let host = spec.host();
    let is_mock_name = |n: &str| MOCK_DEVICES.contains(&n);
    match (spec.backend(), spec.device()) {
        (Backend::Mock, name) => open_mock(
            name.unwrap_or(MOCK_DEVICES[0]),
            "asked for (--backend mock)".to_owned(),
        ),
        (Backend::Auto, None) => {
            let present = host.vfio_device_names();
            if present.is_empty() {
                open_mock(
                    MOCK_DEVICES[0],
                    "no device named and none is bound to vfio-pci on this machine: the built-in mock edu".to_owned(),
                )
            } else {
                Err(Problem::DeviceNeeded { present }.into())
            }
        }
        (Backend::Auto, Some(name)) if is_mock_name(name) && !is_pci_address(name) => {
            let present = host.vfio_device_names();
            if present.is_empty() {
                open_mock(
                    name,
                    format!("no device is bound to vfio-pci on this machine, so `{name}` is the built-in mock model (--backend mock chooses it explicitly)"),
                )
            } else {
                Err(Problem::MockNameWithVfioDevices {
                    name: name.to_owned(),
                    present,
                }
                .into())
            }
        }
        (_, None) => Err(Problem::DeviceNeeded {
            present: host.vfio_device_names(),
        }
        .into()),
        (requested, Some(name)) => open_real(host, name, requested),
    }
}

#[cfg(feature = "mock")]
fn open_mock(name: &str, reason: String) -> Result<Opened, OpenError> {
    use vfio_hal::dynamic::{erase_container, erase_device};
    use vfio_hal::Container;
    use vfio_hal_mock::models::{CopyEngine, Edu};
    use vfio_hal_mock::MockContainer;

    if !MOCK_DEVICES.contains(&name) {
        return Err(Problem::UnknownMockDevice {
            name: name.to_owned(),
            known: MOCK_DEVICES.iter().map(|&s| s.to_owned()).collect(),
        }
        .into());
    }
    let hal = |error: Error| OpenError::Hal {
        device: name.to_owned(),
        backend: Backend::Mock,
        error: Box::new(error),
        remedy: None,
    };
    let container = MockContainer::new();
    container.plug(MOCK_DEVICES[0], Edu::new()).map_err(hal)?;
    container
        .plug(MOCK_DEVICES[1], CopyEngine::new())
        .map_err(hal)?;
    let device = container.open_device(name).map_err(hal)?;
    Ok(Opened {
        device: erase_device(device),
        container: erase_container(container.clone()),
        name: name.to_owned(),
        backend: Backend::Mock,
        reason,
        mock: Some(container),
    })
}

#[cfg(not(feature = "mock"))]
fn open_mock(_name: &str, _reason: String) -> Result<Opened, OpenError> {
    Err(Problem::NotBuilt {
        backend: Backend::Mock,
        feature: "mock",
    }
    .into())
}

fn open_real(host: &Host, name: &str, requested: Backend) -> Result<Opened, OpenError> {
    let device = check_device(host, name)?;
    let (backend, reason) = match requested {
        Backend::Auto => auto_choice(host, &device).ok_or(Problem::NotBuilt {
            backend: Backend::Legacy,
            feature: "legacy",
        })?,
        b => (b, format!("asked for (--backend {b})")),
    };
    if let (false, Some(feature)) = (backend.compiled_in(), backend.feature()) {
        return Err(Problem::NotBuilt { backend, feature }.into());
    }
    check_nodes(host, backend, &device)?;
    let hal = |error: Error| OpenError::Hal {
        device: device.name.clone(),
        backend,
        remedy: remedy_for(host, &error),
        error: Box::new(error),
    };
    let container = open_container(host, backend, &[]).map_err(hal)?;
    let opened = vfio_hal::Container::open_device(&container, &device.name).map_err(hal)?;
    log::info!("{}: {backend} backend: {reason}", device.name);
    Ok(Opened {
        device: opened,
        container,
        name: device.name,
        backend,
        reason,
        #[cfg(feature = "mock")]
        mock: None,
    })
}

/// A fresh, empty container of a real backend (`Legacy` or `Iommufd`)
/// looking at `host`'s trees.
///
/// A type1 container has no IOMMU until a group is attached, so the
/// legacy backend attaches the groups of the `attach` devices now (for the
/// container's lifetime): its IOMMU info and DMA maps then work before any
/// device is opened. iommufd's IOAS has its IOMMU from the start and
/// ignores `attach`. Devices are opened with `Container::open_device`.
pub fn open_container(
    host: &Host,
    backend: Backend,
    attach: &[&str],
) -> vfio_hal::Result<DynContainer> {
    let open = backend.description().and_then(|d| d.open_container);
    match open {
        Some(open) => open(host, attach),
        None => Err(Error::NotSupported {
            op: "open container",
            target: Target::None,
            reason: match backend {
                Backend::Auto => "resolve Backend::Auto first",
                Backend::Mock => "mock containers come with their models: use open()",
                _ => "the backend is not in this build",
            },
        }),
    }
}

/// What to do about a backend's error, from its kind and target.
fn remedy_for(host: &Host, error: &Error) -> Option<String> {
    let path = match error {
        Error::Sys {
            target: Target::Path(p),
            ..
        } => Some(p.as_str()),
        _ => None,
    };
    match error.kind() {
        ErrorKind::PermissionDenied => Some(format!(
            "run as root, or give your user read-write access to {} (a udev rule or chown on /dev/vfio/*, /dev/iommu); mapping DMA also needs RLIMIT_MEMLOCK (ulimit -l) as large as the memory mapped",
            path.unwrap_or("the VFIO nodes")
        )),
        ErrorKind::NotViable => match error {
            Error::NotViable { group } => Some(
                Problem::GroupNotViable {
                    name: String::new(),
                    group: *group,
                    blockers: host.blockers(*group),
                }
                .remedy(),
            ),
            _ => None,
        },
        ErrorKind::Busy => Some(
            "the device or its group is open elsewhere (another VMM or vfio-hal process): close that first".to_owned(),
        ),
        ErrorKind::NotFound if path.is_some() => Some(format!(
            "{} is missing: load VFIO (`modprobe vfio-pci vfio_iommu_type1`, or `modprobe iommufd`)",
            path.unwrap_or_default()
        )),
        ErrorKind::DeviceGone => {
            Some("the device was removed (hot-unplug); `vfio-hal list` shows what is left".to_owned())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(feature = "mock")]
    use vfio_hal::prelude::*;
    use vfio_hal_linux::fake::FakeHost;

    #[cfg(feature = "mock")]
    #[test]
    fn the_mock_serves_its_models_by_request() {
        for name in MOCK_DEVICES {
            let o = open(&OpenSpec::new(name).with_backend(Backend::Mock)).expect("mock opens");
            assert_eq!((o.backend, o.name.as_str()), (Backend::Mock, name));
            assert!(o.device.info().num_regions >= 9);
        }
        let e = open(&OpenSpec::new("nvme").with_backend(Backend::Mock)).expect_err("no model");
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.to_string().contains("edu, copy-engine"), "{e}");
    }

    #[cfg(feature = "mock")]
    #[test]
    fn the_mock_behind_an_opened_device_is_its_container() {
        use vfio_hal::{Container, DmaAccess, DmaBuffer};

        let o = open(&OpenSpec::new("copy-engine").with_backend(Backend::Mock)).expect("opens");
        let mock = o.mock().expect("served by the mock");
        assert_eq!(mock.devices(), ["copy-engine", "edu"], "sorted");
        let buffer = DmaBuffer::new(0x1000).expect("buffer");
        let mapping = o
            .container
            .map_buffer(0x10_0000, buffer, DmaAccess::ReadOnly)
            .expect("map");
        assert_eq!(mock.mapping_count(), 1, "the same IOMMU");
        drop(mapping);
        assert_eq!(mock.mapping_count(), 0);
    }

    #[cfg(feature = "mock")]
    #[test]
    fn auto_takes_the_mock_only_when_nothing_is_bound_to_vfio() {
        let t = FakeHost::new().expect("tree");
        let o = open(&OpenSpec::new("edu").with_host(t.host())).expect("mock edu");
        assert_eq!(o.backend, Backend::Mock);
        assert!(
            o.reason.contains("no device is bound to vfio-pci"),
            "{}",
            o.reason
        );
        let o = open(&OpenSpec::unnamed().with_host(t.host())).expect("unnamed: mock edu");
        assert_eq!((o.backend, o.name.as_str()), (Backend::Mock, "edu"));
        let bar0 = o.device.region(0).expect("bar0");
        assert_eq!(bar0.read_at::<u32>(0).expect("id"), 0x0100_00ed);

        t.add_device("0000:00:04.0", Some("vfio-pci"), Some(1), None)
            .expect("device");
        let e = open(&OpenSpec::new("edu").with_host(t.host())).expect_err("ambiguous");
        assert!(
            matches!(
                e,
                OpenError::Problem(Problem::MockNameWithVfioDevices { .. })
            ),
            "{e:?}"
        );
        assert!(e.remedy().is_some_and(|r| r.contains("--backend mock")));
        let e = open(&OpenSpec::unnamed().with_host(t.host())).expect_err("must name one");
        assert!(e.to_string().contains("0000:00:04.0"), "{e}");
    }

    #[test]
    fn a_pci_address_never_falls_back_to_the_mock() {
        let t = FakeHost::new().expect("tree");
        t.add_device("0000:00:05.0", Some("e1000e"), Some(2), None)
            .expect("device");
        let e = open(&OpenSpec::new("00:05.0").with_host(t.host())).expect_err("not vfio");
        assert!(
            matches!(e, OpenError::Problem(Problem::NotBoundToVfio { .. })),
            "{e:?}"
        );
        let e = open(&OpenSpec::new("0000:00:06.0").with_host(t.host())).expect_err("absent");
        assert!(
            matches!(e, OpenError::Problem(Problem::NoSuchDevice { .. })),
            "{e:?}"
        );
        let e = open(&OpenSpec::new("ede").with_host(t.host())).expect_err("bad name");
        assert!(
            matches!(e, OpenError::Problem(Problem::BadName { .. })),
            "{e:?}"
        );
    }

    #[cfg(feature = "legacy")]
    #[test]
    fn a_missing_container_node_is_reported_before_opening_anything() {
        let t = FakeHost::new().expect("tree");
        t.add_device("0000:00:04.0", Some("vfio-pci"), Some(3), None)
            .expect("device");
        let e = open(
            &OpenSpec::new("0000:00:04.0")
                .with_backend(Backend::Legacy)
                .with_host(t.host()),
        )
        .expect_err("no /dev/vfio");
        assert!(
            matches!(e, OpenError::Problem(Problem::MissingNode { .. })),
            "{e:?}"
        );
        assert!(e.to_string().contains("vfio/vfio"), "{e}");
        assert!(e.remedy().is_some_and(|r| r.contains("modprobe")));
    }

    #[cfg(feature = "legacy")]
    #[test]
    fn a_node_that_is_not_vfio_fails_with_the_backends_error() {
        // The nodes exist but are plain files: the legacy backend's ioctl fails typed.
        let t = FakeHost::new().expect("tree");
        t.add_device("0000:00:04.0", Some("vfio-pci"), Some(3), None)
            .expect("device");
        t.add_node("vfio/vfio").expect("node");
        t.add_node("vfio/3").expect("node");
        let e = open(
            &OpenSpec::new("0000:00:04.0")
                .with_backend(Backend::Legacy)
                .with_host(t.host()),
        )
        .expect_err("not a VFIO node");
        assert!(
            matches!(
                e,
                OpenError::Hal {
                    backend: Backend::Legacy,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn permission_denied_says_what_to_do() {
        let e = Error::sys("open", Target::Path("/dev/vfio/7".into()), libc::EACCES);
        let r = remedy_for(&Host::default(), &e).expect("a remedy");
        assert!(r.contains("/dev/vfio/7") && r.contains("ulimit -l"), "{r}");
        let e = Error::NotViable { group: 7 };
        assert!(remedy_for(&Host::default(), &e).is_some_and(|r| r.contains("iommu_groups/7")));
    }
}
