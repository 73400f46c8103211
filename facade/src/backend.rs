//! Which backend serves a device: named by the user, or chosen at run time.

use std::fmt;
use std::str::FromStr;

/// A backend of `vfio-hal`, as a user names it (`--backend auto|mock|legacy|iommufd`).
///
/// [`Backend::Auto`] is a request, never an outcome: [`crate::open()`] resolves
/// it to one of the other three and says why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Backend {
    /// Probe the kernel: iommufd where the device has a cdev and `/dev/iommu`
    /// opens, else the legacy container. The mock only when no device is
    /// bound to vfio-pci and the name is one of the mock's models (or none).
    #[default]
    Auto,
    /// The in-memory backend with the built-in models ([`crate::MOCK_DEVICES`]).
    Mock,
    /// The VFIO type1 container (`/dev/vfio/vfio`) and the device's group.
    Legacy,
    /// iommufd (`/dev/iommu`) and the device's cdev (`/dev/vfio/devices/vfioN`).
    Iommufd,
}

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

    /// Whether this build has the backend (its cargo feature is on).
    /// `Auto` is always available: it resolves to one that is.
    pub fn compiled_in(self) -> bool {
        match self {
            Self::Auto => true,
            Self::Mock => cfg!(feature = "mock"),
            Self::Legacy => cfg!(feature = "legacy"),
            Self::Iommufd => cfg!(feature = "iommufd"),
        }
    }

    /// The cargo feature that builds the backend in.
    pub fn feature(self) -> Option<&'static str> {
        match self {
            Self::Auto => None,
            Self::Mock => Some("mock"),
            Self::Legacy => Some("legacy"),
            Self::Iommufd => Some("iommufd"),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for b in Backend::ALL {
            assert_eq!(b.name().parse::<Backend>(), Ok(b));
        }
        assert_eq!("IOMMUFD".parse::<Backend>(), Ok(Backend::Iommufd));
        let e = "type1".parse::<Backend>().expect_err("not a backend");
        assert!(e.to_string().contains("auto, mock, legacy, iommufd"), "{e}");
    }
}
