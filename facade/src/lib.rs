//! # vfio-hal-facade
//!
//! The one dependency a VMM or a user-space driver needs: the `vfio-hal`
//! traits, every backend behind a cargo feature, and [`open()`], which picks
//! the backend at run time and hands back a type-erased container and
//! device.
//!
//! | feature | what it adds | default |
//! |---|---|---|
//! | `mock` | [`mock`]: the in-memory backend with QEMU's edu and a copy engine | yes |
//! | `legacy` | [`legacy`]: the VFIO type1 container/group backend | yes |
//! | `iommufd` | [`iommufd`]: iommufd + the device cdev | yes |
//! | `kvm` | `linux::kvm`: the KVM-VFIO pseudo device, for group and cdev fds (a [`hypervisor::Hypervisor`]) | no |
//! | `mshv` | `linux::mshv`: the same for the Microsoft Hypervisor (built and unit-tested only: no MSHV to run it on in CI) | no |
//! | `vm-memory` | [`guest_memory`]: a `GuestMemoryMmap` mapped into a container at IOVA = GPA | no |
//! | `conformance` | [`conformance`]: the conformance suite against a real device, destructive cases left out | no |
//!
//! The `vfio-hal` command-line tool is its own crate, `vfio-hal-cli`, so a
//! VMM depending on the facade does not build clap.
//!
//! A VMM that wants only the library and one backend writes
//! `vfio-hal-facade = { version = "0.1", default-features = false, features = ["iommufd"] }`.
//!
//! Everything of `vfio-hal` is re-exported at the root, so
//! `use vfio_hal_facade::prelude::*;` brings the traits in scope.
//!
//! Static dispatch stays the default: code generic over `C: Container`
//! takes a concrete backend ([`mock::MockContainer`],
//! `legacy::LegacyContainer`, `iommufd::IoasContainer`) and pays nothing.
//! [`open()`] is for the case where the backend is known only at run time;
//! it returns [`dynamic::DynContainer`] and [`dynamic::DynDevice`], which
//! implement the same traits, so the same generic code runs on them.
//!
//! ```
//! # #[cfg(feature = "mock")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use vfio_hal_facade::prelude::*;
//! use vfio_hal_facade::{open, Backend, OpenSpec};
//!
//! // The built-in mock edu; on a machine with VFIO devices, name one
//! // ("0000:00:04.0") with Backend::Auto instead.
//! let opened = open(&OpenSpec::new("edu").with_backend(Backend::Mock))?;
//! assert_eq!(opened.backend, Backend::Mock);
//! let bar0 = opened.device.region(0)?;
//! assert_eq!(bar0.read_at::<u32>(0x00)?, 0x0100_00ed); // edu's identification
//! bar0.write_at::<u32>(0x04, 0x1234_5678)?; // liveness: reads back inverted
//! assert_eq!(bar0.read_at::<u32>(0x04)?, !0x1234_5678);
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "mock"))]
//! # fn main() {}
//! ```
#![warn(missing_docs, missing_debug_implementations)]

pub mod backend;
#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "vm-memory")]
pub mod guest_memory;
pub mod host;
pub mod open;

pub use vfio_hal::*;

/// The in-memory backend (`vfio-hal-mock`): [`mock::MockContainer`], the
/// device models in [`mock::models`], fault injection and tracing.
#[cfg(feature = "mock")]
pub use vfio_hal_mock as mock;

/// The VFIO type1 container/group backend (`vfio-hal-legacy`).
#[cfg(feature = "legacy")]
pub use vfio_hal_legacy as legacy;

/// The iommufd + device-cdev backend (`vfio-hal-iommufd`).
#[cfg(feature = "iommufd")]
pub use vfio_hal_iommufd as iommufd;

/// The kernel plumbing under the real backends (`vfio-hal-linux`): the
/// host model and its fake, the device fd, the KVM-VFIO hook.
pub use vfio_hal_linux as linux;

pub use backend::Backend;
pub use backend::{auto_choice, Description, DESCRIPTIONS};
pub use host::{Host, HostDevice, Problem};
pub use open::{open, open_container, OpenError, OpenSpec, Opened, MOCK_DEVICES};
