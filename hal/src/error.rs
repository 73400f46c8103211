//! The one error type every backend returns, and the kinds generic code matches on.
//!
//! Design (embedded-hal style, adapted): generic VMM code matches on
//! [`Error::kind`], which is stable and `#[non_exhaustive]`; humans read the
//! variant, which keeps the errno, the operation (ioctl name) and what it
//! acted on. Unlike embedded-hal there is a single concrete type rather than
//! one per backend: every VFIO backend speaks Linux errno, a single type keeps
//! trait objects free of an extra associated type, and lets decorators such as
//! a fault injector produce errors for any backend. No variant depends on a
//! cargo feature, and no constructor drops an errno.

use std::fmt;

use crate::caps::ParseError;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure happened, independent of backend.
///
/// Generic code branches on this; it never needs to look at errno values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The backend, kernel or device does not offer this operation.
    NotSupported,
    /// An argument is malformed (misaligned, bad flag combination, bad index).
    InvalidArgument,
    /// An offset or length lies outside the object it addresses.
    OutOfRange,
    /// `start + len` does not fit in 64 bits.
    Overflow,
    /// The IOVA range overlaps an existing mapping.
    AlreadyMapped,
    /// Nothing is mapped where an unmap asked. (iommufd also reports an unmap
    /// that would split a mapping this way; type1v2 says `InvalidArgument`.)
    NotMapped,
    /// The object is in use or temporarily unavailable.
    Busy,
    /// The caller lacks the permission (file mode, capability, rlimit on pinning).
    PermissionDenied,
    /// The named device, group or node does not exist.
    NotFound,
    /// The device was removed (hot-unplug), or revoked so that it can be.
    DeviceGone,
    /// The IOMMU group is not viable: another device in it is bound to a host driver.
    NotViable,
    /// A limit was reached (mapping count, IOVA space, memory).
    Exhausted,
    /// A buffer returned by the kernel or a caller is malformed.
    Malformed,
    /// A plain I/O error.
    Io,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// The kind a raw errno means when nothing more specific is known.
    pub fn from_errno(errno: i32) -> Self {
        match errno {
            libc::ENOTTY | libc::EOPNOTSUPP | libc::ENOSYS => Self::NotSupported,
            libc::EINVAL | libc::EFAULT | libc::EBADF => Self::InvalidArgument,
            libc::ERANGE | libc::E2BIG => Self::OutOfRange,
            libc::EOVERFLOW => Self::Overflow,
            libc::EEXIST => Self::AlreadyMapped,
            libc::EBUSY | libc::EAGAIN => Self::Busy,
            libc::EPERM | libc::EACCES => Self::PermissionDenied,
            libc::ENOENT => Self::NotFound,
            libc::ENODEV | libc::ENXIO => Self::DeviceGone,
            libc::ENOSPC | libc::ENOMEM | libc::EMFILE | libc::ENFILE => Self::Exhausted,
            libc::EIO => Self::Io,
            _ => Self::Other,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotSupported => "not supported",
            Self::InvalidArgument => "invalid argument",
            Self::OutOfRange => "out of range",
            Self::Overflow => "overflow",
            Self::AlreadyMapped => "already mapped",
            Self::NotMapped => "not mapped",
            Self::Busy => "busy",
            Self::PermissionDenied => "permission denied",
            Self::NotFound => "not found",
            Self::DeviceGone => "device gone",
            Self::NotViable => "not viable",
            Self::Exhausted => "exhausted",
            Self::Malformed => "malformed",
            Self::Io => "I/O error",
            Self::Other => "error",
        })
    }
}

/// What an operation acted on; carried by every error for context.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Target {
    /// Nothing more specific than the operation itself.
    #[default]
    None,
    /// A file or device node path.
    Path(String),
    /// The IOMMU group with this number.
    Group(u32),
    /// The device with this name (a PCI address for vfio-pci).
    Device(String),
    /// The region with this index.
    Region(u32),
    /// The interrupt index with this number.
    Irq(u32),
    /// The IOVA range `[iova, iova + len)`.
    Iova {
        /// First IOVA.
        iova: u64,
        /// Length in bytes.
        len: u64,
    },
    /// The `VFIO_DEVICE_FEATURE` with this number.
    Feature(u32),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("-"),
            Self::Path(p) => write!(f, "path {p}"),
            Self::Group(g) => write!(f, "group {g}"),
            Self::Device(d) => write!(f, "device {d}"),
            Self::Region(i) => write!(f, "region {i}"),
            Self::Irq(i) => write!(f, "irq index {i}"),
            Self::Iova { iova, len } => write!(f, "IOVA {iova:#x}+{len:#x}"),
            Self::Feature(n) => write!(f, "device feature {n}"),
        }
    }
}

/// Which buffer a [`Error::Malformed`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Buffer {
    /// `VFIO_DEVICE_GET_REGION_INFO` output.
    RegionInfo,
    /// `VFIO_DEVICE_GET_INFO` output.
    DeviceInfo,
    /// `VFIO_IOMMU_GET_INFO` output.
    IommuInfo,
    /// `VFIO_DEVICE_GET_IRQ_INFO` output.
    IrqInfo,
    /// A `VFIO_DEVICE_SET_IRQS` payload.
    IrqSet,
    /// PCI configuration space.
    ConfigSpace,
}

impl fmt::Display for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RegionInfo => "region info",
            Self::DeviceInfo => "device info",
            Self::IommuInfo => "IOMMU info",
            Self::IrqInfo => "irq info",
            Self::IrqSet => "irq-set payload",
            Self::ConfigSpace => "PCI config space",
        })
    }
}

/// Every failure of every backend.
///
/// Generic code matches on [`Error::kind`]; [`Error::op`] and
/// [`Error::target`] say which operation failed on what, and
/// [`Error::with_target`] lets a layer that knows more name the object.
/// The message leads with the kind.
///
/// ```
/// use vfio_hal::{Error, ErrorKind, Target};
///
/// let err = Error::sys("mmap", Target::None, libc::EINVAL);
/// assert_eq!(err.kind(), ErrorKind::InvalidArgument);
/// assert_eq!(err.op(), Some("mmap"));
/// assert_eq!(err.target(), Some(&Target::None));
///
/// // The caller knows which region it mapped, so it names it.
/// let err = err.with_target(Target::Region(2));
/// assert_eq!(err.target(), Some(&Target::Region(2)));
/// assert_eq!(err.errno(), Some(libc::EINVAL));
/// assert!(err.to_string().starts_with("invalid argument: mmap on region 2: "), "{err}");
/// ```
///
/// What a backend returns, here the mock refusing a read past a BAR's end
/// before the device sees it:
///
/// ```
/// use vfio_hal::prelude::*;
/// use vfio_hal::{ErrorKind, Target};
/// use vfio_hal_mock::{models::edu::Edu, MockContainer};
///
/// let container = MockContainer::new();
/// container.plug("edu", Edu::new())?;
/// let bar0 = container.open_device("edu")?.region(0)?;
/// let err = bar0.read_at::<u32>(bar0.info().size).unwrap_err();
/// match err.kind() {
///     ErrorKind::OutOfRange => assert_eq!(err.target(), Some(&Target::Region(0))),
///     other => panic!("unexpected {other}: {err}"),
/// }
/// # Ok::<(), vfio_hal::Error>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call or ioctl failed with `errno`.
    Sys {
        /// The ioctl or syscall name, e.g. `VFIO_IOMMU_MAP_DMA`.
        op: &'static str,
        /// What it acted on.
        target: Target,
        /// The errno the kernel (or a kernel-faithful mock) returned.
        errno: i32,
    },
    /// `offset + len` does not fit in a `u64`.
    Overflow {
        /// The operation.
        op: &'static str,
        /// What it acted on.
        target: Target,
        /// Start of the access.
        offset: u64,
        /// Length of the access.
        len: u64,
    },
    /// An access lies (partly) outside the object.
    OutOfRange {
        /// The operation.
        op: &'static str,
        /// What it acted on.
        target: Target,
        /// Start of the access.
        offset: u64,
        /// Length of the access.
        len: u64,
        /// The object's size: the violated bound.
        size: u64,
    },
    /// An index names no region, irq or area of the device.
    NoSuchIndex {
        /// The operation.
        op: &'static str,
        /// The region or irq that was asked for.
        target: Target,
        /// How many the device has: the violated bound.
        count: u32,
    },
    /// An argument violates a documented rule that the HAL checks itself.
    InvalidArgument {
        /// The operation.
        op: &'static str,
        /// What it acted on.
        target: Target,
        /// The violated rule.
        reason: &'static str,
    },
    /// The backend or device lacks this capability.
    NotSupported {
        /// The operation.
        op: &'static str,
        /// What it acted on.
        target: Target,
        /// Why, e.g. "region has no MMAP flag".
        reason: &'static str,
    },
    /// A system call or ioctl failed with an errno that, at that call, is
    /// known to mean one thing, which `reason` says: a device or group that
    /// is still open or bound elsewhere. Usually `EBUSY`; binding a device
    /// cdev while another file of the device is bound is `EINVAL`.
    Busy {
        /// The ioctl or syscall name.
        op: &'static str,
        /// What it acted on.
        target: Target,
        /// The errno the kernel (or a kernel-faithful mock) returned.
        errno: i32,
        /// What is busy, and what frees it.
        reason: &'static str,
    },
    /// A limit was reached that the HAL itself tracks.
    Exhausted {
        /// The operation.
        op: &'static str,
        /// What it acted on.
        target: Target,
        /// Which limit.
        reason: &'static str,
    },
    /// A lookup found nothing, outside any system call.
    NotFound {
        /// The operation.
        op: &'static str,
        /// What was looked up.
        target: Target,
        /// What was missing.
        reason: &'static str,
    },
    /// The IOMMU group cannot be used: another device in it is bound to a host driver.
    NotViable {
        /// The group number.
        group: u32,
    },
    /// A buffer from the kernel or a caller did not parse.
    Malformed {
        /// Which buffer.
        buffer: Buffer,
        /// What was wrong, with the byte offset.
        #[source]
        source: ParseError,
    },
    /// The device was revoked ([`crate::revoke`]): its handles were let go
    /// so that the host can remove it, and refuse every operation.
    Revoked {
        /// The operation that was refused.
        op: &'static str,
        /// What it would have acted on.
        target: Target,
    },
    /// Any other failure, of the kind its producer chose; the detail is the
    /// source error (a device model's refusal, an injected fault, an I/O
    /// error without errno), reachable by downcasting
    /// [`std::error::Error::source`]. Build it with [`Error::other`].
    Other {
        /// The operation.
        op: &'static str,
        /// What it acted on.
        target: Target,
        /// The kind the producer chose.
        kind: ErrorKind,
        /// The detail.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.kind())?;
        match self {
            Self::Sys { op, target, errno } => write!(
                f,
                "{op} on {target}: {}",
                std::io::Error::from_raw_os_error(*errno)
            ),
            Self::Overflow {
                op,
                target,
                offset,
                len,
            } => write!(
                f,
                "{op} on {target}: offset {offset:#x} + length {len:#x} overflows u64"
            ),
            Self::OutOfRange {
                op,
                target,
                offset,
                len,
                size,
            } => write!(
                f,
                "{op} on {target}: [{offset:#x}, +{len:#x}) exceeds the size {size:#x}"
            ),
            Self::NoSuchIndex { op, target, count } => {
                write!(f, "{op}: {target} does not exist (there are {count})")
            }
            Self::InvalidArgument { op, target, reason }
            | Self::NotSupported { op, target, reason }
            | Self::Exhausted { op, target, reason }
            | Self::NotFound { op, target, reason } => write!(f, "{op} on {target}: {reason}"),
            Self::Busy {
                op,
                target,
                errno,
                reason,
            } => write!(
                f,
                "{op} on {target}: {reason} ({})",
                std::io::Error::from_raw_os_error(*errno)
            ),
            Self::NotViable { group } => write!(
                f,
                "group {group}: bind every device in /sys/kernel/iommu_groups/{group}/devices to vfio-pci (or unbind it)"
            ),
            Self::Malformed { buffer, source } => write!(f, "{buffer}: {source}"),
            Self::Revoked { op, target } => write!(
                f,
                "{op} on {target}: the device was revoked (released for removal)"
            ),
            Self::Other {
                op, target, source, ..
            } => write!(f, "{op} on {target}: {source}"),
        }
    }
}

/// Matches `$error` on its variants: those with an `op` and a `target`
/// give `$found` with both bound, the others `$none`. One list of
/// variants for every accessor.
macro_rules! op_and_target {
    ($error:expr, |$op:ident, $target:ident| $found:expr, $none:expr) => {
        match $error {
            Error::Sys {
                op: $op,
                target: $target,
                ..
            }
            | Error::Overflow {
                op: $op,
                target: $target,
                ..
            }
            | Error::OutOfRange {
                op: $op,
                target: $target,
                ..
            }
            | Error::NoSuchIndex {
                op: $op,
                target: $target,
                ..
            }
            | Error::InvalidArgument {
                op: $op,
                target: $target,
                ..
            }
            | Error::NotSupported {
                op: $op,
                target: $target,
                ..
            }
            | Error::Busy {
                op: $op,
                target: $target,
                ..
            }
            | Error::Exhausted {
                op: $op,
                target: $target,
                ..
            }
            | Error::NotFound {
                op: $op,
                target: $target,
                ..
            }
            | Error::Revoked {
                op: $op,
                target: $target,
            }
            | Error::Other {
                op: $op,
                target: $target,
                ..
            } => $found,
            Error::NotViable { .. } | Error::Malformed { .. } => $none,
        }
    };
}

impl Error {
    /// Builds [`Error::Sys`] from an errno.
    pub fn sys(op: &'static str, target: Target, errno: i32) -> Self {
        Self::Sys { op, target, errno }
    }

    /// Builds [`Error::Other`]: a failure of `kind` whose detail is `source`.
    pub fn other(
        op: &'static str,
        target: Target,
        kind: ErrorKind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Other {
            op,
            target,
            kind,
            source: source.into(),
        }
    }

    /// Builds [`Error::Sys`] from `std::io::Error::last_os_error()`.
    ///
    /// Falls back to `EIO` only if the OS reported no errno at all, which
    /// Linux never does after a failed syscall.
    pub fn last_os_error(op: &'static str, target: Target) -> Self {
        let errno = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        Self::sys(op, target, errno)
    }

    /// Builds an error from a `std::io::Error`, keeping its errno; one
    /// without errno is an [`ErrorKind::Io`] [`Error::Other`] whose source
    /// is an `std::io::Error` of the same kind and message.
    pub fn from_io(op: &'static str, target: Target, err: &std::io::Error) -> Self {
        match err.raw_os_error() {
            Some(errno) => Self::sys(op, target, errno),
            None => Self::other(
                op,
                target,
                ErrorKind::Io,
                std::io::Error::new(err.kind(), err.to_string()),
            ),
        }
    }

    /// The backend-independent kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Sys { target, errno, .. } => match (*errno, target) {
                // ENOENT about an IOVA range means "nothing mapped there"
                // (iommufd and type1 both use it that way).
                (libc::ENOENT, Target::Iova { .. }) => ErrorKind::NotMapped,
                (errno, _) => ErrorKind::from_errno(errno),
            },
            Self::Overflow { .. } => ErrorKind::Overflow,
            Self::OutOfRange { .. } => ErrorKind::OutOfRange,
            Self::NoSuchIndex { .. } | Self::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            Self::NotSupported { .. } => ErrorKind::NotSupported,
            Self::NotViable { .. } => ErrorKind::NotViable,
            Self::Busy { .. } => ErrorKind::Busy,
            Self::Exhausted { .. } => ErrorKind::Exhausted,
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::Malformed { .. } => ErrorKind::Malformed,
            Self::Revoked { .. } => ErrorKind::DeviceGone,
            Self::Other { kind, .. } => *kind,
        }
    }

    /// The errno, where the error came from a system call.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Sys { errno, .. } => Some(*errno),
            Self::Busy { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// The operation that failed (an ioctl or method name); `None` for
    /// [`Error::NotViable`] and [`Error::Malformed`], which name none.
    pub fn op(&self) -> Option<&'static str> {
        op_and_target!(self, |op, _target| Some(*op), None)
    }

    /// What the operation acted on; `None` for the variants without a
    /// target ([`Error::NotViable`] names its group, [`Error::Malformed`]
    /// its buffer).
    pub fn target(&self) -> Option<&Target> {
        op_and_target!(self, |_op, target| Some(target), None)
    }

    /// The same error about `target`; kind, op, errno and source stay.
    /// Variants without a target ([`Error::target`] is `None`) are returned
    /// unchanged.
    ///
    /// Retargeting can change the kind where it depends on the target: an
    /// `ENOENT` is [`ErrorKind::NotMapped`] about an IOVA range and
    /// [`ErrorKind::NotFound`] about anything else.
    #[must_use]
    pub fn with_target(mut self, new: Target) -> Self {
        op_and_target!(&mut self, |_op, target| *target = new, ());
        self
    }
}

/// Checks that `[offset, offset + len)` lies inside an object of `size` bytes.
///
/// The arithmetic is checked: a wrap is [`Error::Overflow`], an access past
/// the end is [`Error::OutOfRange`]. Every backend uses this one function so
/// their bounds behaviour cannot drift apart.
#[inline]
pub fn check_bounds(
    op: &'static str,
    target: Target,
    offset: u64,
    len: u64,
    size: u64,
) -> Result<()> {
    match offset.checked_add(len) {
        None => Err(Error::Overflow {
            op,
            target,
            offset,
            len,
        }),
        Some(end) if end > size => Err(Error::OutOfRange {
            op,
            target,
            offset,
            len,
            size,
        }),
        Some(_) => Ok(()),
    }
}

/// Checks that `index` is below `count` (a region or irq index).
pub fn check_index(op: &'static str, target: Target, index: u32, count: u32) -> Result<()> {
    if index < count {
        Ok(())
    } else {
        Err(Error::NoSuchIndex { op, target, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn enoent_on_an_iova_range_means_not_mapped() {
        let e = Error::sys(
            "IOMMU_IOAS_UNMAP",
            Target::Iova { iova: 0, len: 4096 },
            libc::ENOENT,
        );
        assert_eq!(e.kind(), ErrorKind::NotMapped);
        let e = Error::sys("open", Target::Path("/dev/vfio/7".into()), libc::ENOENT);
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn the_errno_and_op_survive_into_the_message() {
        let e = Error::sys(
            "VFIO_IOMMU_MAP_DMA",
            Target::Iova {
                iova: 0x1000,
                len: 0x1000,
            },
            libc::EEXIST,
        );
        assert_eq!(e.errno(), Some(libc::EEXIST));
        assert_eq!(e.kind(), ErrorKind::AlreadyMapped);
        let text = e.to_string();
        assert!(text.contains("VFIO_IOMMU_MAP_DMA"), "{text}");
        assert!(text.contains("0x1000"), "{text}");
        assert!(text.contains("File exists"), "{text}");
    }

    #[test]
    fn the_message_leads_with_the_kind() {
        let e = Error::sys(
            "unmap_dma",
            Target::Iova {
                iova: 0x1000,
                len: 0x1000,
            },
            libc::ENOENT,
        );
        assert_eq!(
            e.to_string(),
            format!(
                "not mapped: unmap_dma on IOVA 0x1000+0x1000: {}",
                std::io::Error::from_raw_os_error(libc::ENOENT)
            )
        );
        assert_eq!(ErrorKind::DeviceGone.to_string(), "device gone");
    }

    #[test]
    fn an_io_error_without_errno_is_an_io_error_with_its_source() {
        let io = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short read");
        let e = Error::from_io("read", Target::Path("/x".into()), &io);
        assert_eq!(e.kind(), ErrorKind::Io);
        assert_eq!(e.errno(), None);
        let text = e.to_string();
        assert!(
            text.starts_with("I/O error: read on path /x: short read"),
            "{text}"
        );
        assert!(!text.contains("model"), "{text}");
        let source = std::error::Error::source(&e).expect("has a source");
        let source = source
            .downcast_ref::<std::io::Error>()
            .expect("an io::Error");
        assert_eq!(source.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn with_target_keeps_everything_but_the_target() {
        let e = Error::sys("mmap", Target::None, libc::EINVAL).with_target(Target::Region(3));
        assert_eq!(
            (e.op(), e.target(), e.errno()),
            (Some("mmap"), Some(&Target::Region(3)), Some(libc::EINVAL))
        );
        let e = Error::other("reset", Target::None, ErrorKind::Busy, "model says no")
            .with_target(Target::Device("edu".into()));
        assert_eq!(e.kind(), ErrorKind::Busy);
        assert_eq!(e.target(), Some(&Target::Device("edu".into())));
        assert_eq!(
            std::error::Error::source(&e).map(ToString::to_string),
            Some("model says no".into())
        );
        let e = Error::NotViable { group: 4 }.with_target(Target::Group(4));
        assert_eq!((e.op(), e.target()), (None, None));
    }

    proptest! {
        #[test]
        fn check_bounds_agrees_with_wide_arithmetic(offset: u64, len: u64, size: u64) {
            let wide_end = offset as u128 + len as u128;
            let r = check_bounds("read", Target::Region(0), offset, len, size);
            match r {
                Ok(()) => prop_assert!(wide_end <= size as u128),
                Err(e) if wide_end > u64::MAX as u128 => prop_assert_eq!(e.kind(), ErrorKind::Overflow),
                Err(e) => {
                    prop_assert_eq!(e.kind(), ErrorKind::OutOfRange);
                    prop_assert!(wide_end > size as u128);
                }
            }
        }
    }
}
