//! The `Irq` trait and the `VFIO_DEVICE_SET_IRQS` payload builder.
//!
//! Every interrupt operation is one `VFIO_DEVICE_SET_IRQS` call: an action
//! (mask, unmask, trigger) applied with some data (none, bools, eventfds) to
//! vectors `[start, start + count)` of one irq index. [`IrqSet`] is the typed
//! form; [`IrqSet::to_bytes`] builds the kernel payload and [`IrqSet::parse`]
//! reads one back (used by the mock and fuzzed). [`Irq`] needs only
//! [`Irq::set_irqs`]; every convenience is a provided method over it.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use crate::bytes::Reader;
use crate::caps::ParseError;
use crate::error::{Buffer, Error, Result, Target};

/// `VFIO_IRQ_INFO_*` bits of [`IrqInfo::flags`].
pub mod flags {
    /// Vectors can signal an eventfd.
    pub const EVENTFD: u32 = 1 << 0;
    /// Vectors can be masked and unmasked.
    pub const MASKABLE: u32 = 1 << 1;
    /// The kernel masks the vector when it fires (level-triggered INTx).
    pub const AUTOMASKED: u32 = 1 << 2;
    /// The vector count cannot be changed after the first trigger setup.
    pub const NORESIZE: u32 = 1 << 3;
}

/// vfio-pci irq indices.
pub mod index {
    /// Legacy INTx.
    pub const INTX: u32 = 0;
    /// MSI.
    pub const MSI: u32 = 1;
    /// MSI-X.
    pub const MSIX: u32 = 2;
    /// AER error notification.
    pub const ERR: u32 = 3;
    /// Device release request (hot-unplug).
    pub const REQ: u32 = 4;
}

/// What `VFIO_DEVICE_GET_IRQ_INFO` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct IrqInfo {
    /// The irq index.
    pub index: u32,
    /// `VFIO_IRQ_INFO_*`, see [`flags`].
    pub flags: u32,
    /// Number of vectors (0 if the device lacks this kind of interrupt).
    pub count: u32,
}

impl IrqInfo {
    /// Whether vectors can be masked.
    pub fn maskable(&self) -> bool {
        self.flags & flags::MASKABLE != 0
    }

    /// Whether the kernel masks on fire (INTx); such vectors take a resample fd.
    pub fn automasked(&self) -> bool {
        self.flags & flags::AUTOMASKED != 0
    }
}

/// The action of a `SET_IRQS` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IrqAction {
    /// Mask the vectors.
    Mask,
    /// Unmask the vectors (with eventfds: a resample eventfd that unmasks).
    Unmask,
    /// Trigger: with no data, fire (loopback); with eventfds, set signalling.
    Trigger,
}

/// The data of a `SET_IRQS` call.
#[derive(Debug, Clone, Copy)]
pub enum IrqData<'a> {
    /// No data: apply the action to every vector in the range.
    None,
    /// One bool per vector: apply the action where true.
    Bool(&'a [bool]),
    /// One eventfd per vector; `None` de-assigns (kernel: fd -1).
    EventFd(&'a [Option<BorrowedFd<'a>>]),
}

/// A typed `VFIO_DEVICE_SET_IRQS` request.
///
/// Checked against the irq's [`IrqInfo`] before it reaches a kernel, so a
/// bad request is a typed error rather than an `EINVAL`:
///
/// ```
/// use vfio_hal::irq::{flags, index, IrqAction, IrqInfo, IrqSet, ParsedIrqData};
/// use vfio_hal::ErrorKind;
///
/// let msix = IrqInfo { index: index::MSIX, flags: flags::EVENTFD | flags::NORESIZE, count: 8 };
///
/// // Fire vectors 2 and 3 from software; the payload round-trips.
/// let fire = IrqSet::no_data(index::MSIX, IrqAction::Trigger, 2, 2);
/// fire.validate(&msix)?;
/// let parsed = IrqSet::parse(&fire.to_bytes())?;
/// assert_eq!((parsed.start, parsed.count), (2, 2));
/// assert_eq!(parsed.data, ParsedIrqData::None);
///
/// // Past the last vector, and masking an index that is not maskable.
/// let past = IrqSet::no_data(index::MSIX, IrqAction::Trigger, 7, 2);
/// assert_eq!(past.validate(&msix).unwrap_err().kind(), ErrorKind::OutOfRange);
/// let mask = IrqSet::no_data(index::MSIX, IrqAction::Mask, 0, 1);
/// assert_eq!(mask.validate(&msix).unwrap_err().kind(), ErrorKind::InvalidArgument);
/// # Ok::<(), vfio_hal::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct IrqSet<'a> {
    /// The irq index.
    pub index: u32,
    /// First vector.
    pub start: u32,
    /// Number of vectors; must equal the data length when there is data.
    pub count: u32,
    /// The action.
    pub action: IrqAction,
    /// The data.
    pub data: IrqData<'a>,
}

const DATA_NONE: u32 = 1 << 0;
const DATA_BOOL: u32 = 1 << 1;
const DATA_EVENTFD: u32 = 1 << 2;
const ACTION_MASK: u32 = 1 << 3;
const ACTION_UNMASK: u32 = 1 << 4;
const ACTION_TRIGGER: u32 = 1 << 5;
/// Size of `struct vfio_irq_set` without its data.
pub const IRQ_SET_HEADER: usize = 20;
/// Most vectors one request may carry (MSI-X allows 2048).
pub const MAX_VECTORS: u32 = 2048;

impl<'a> IrqSet<'a> {
    /// Disables all signalling of `index` (`DATA_NONE | ACTION_TRIGGER`, count 0).
    pub fn disable(index: u32) -> Self {
        Self {
            index,
            start: 0,
            count: 0,
            action: IrqAction::Trigger,
            data: IrqData::None,
        }
    }

    /// Routes vectors `[start, start + fds.len())` to eventfds (`None` de-assigns).
    pub fn eventfds(index: u32, start: u32, fds: &'a [Option<BorrowedFd<'a>>]) -> Self {
        Self {
            index,
            start,
            count: fds.len() as u32,
            action: IrqAction::Trigger,
            data: IrqData::EventFd(fds),
        }
    }

    /// `action` on `[start, start + count)` with no data.
    pub fn no_data(index: u32, action: IrqAction, start: u32, count: u32) -> Self {
        Self {
            index,
            start,
            count,
            action,
            data: IrqData::None,
        }
    }

    /// The `VFIO_IRQ_SET_*` flag word.
    pub fn flags(&self) -> u32 {
        let data = match self.data {
            IrqData::None => DATA_NONE,
            IrqData::Bool(_) => DATA_BOOL,
            IrqData::EventFd(_) => DATA_EVENTFD,
        };
        let action = match self.action {
            IrqAction::Mask => ACTION_MASK,
            IrqAction::Unmask => ACTION_UNMASK,
            IrqAction::Trigger => ACTION_TRIGGER,
        };
        data | action
    }

    fn data_len(&self) -> Option<usize> {
        match self.data {
            IrqData::None => None,
            IrqData::Bool(b) => Some(b.len()),
            IrqData::EventFd(f) => Some(f.len()),
        }
    }

    fn invalid(&self, reason: &'static str) -> Error {
        Error::InvalidArgument {
            op: "VFIO_DEVICE_SET_IRQS",
            target: Target::Irq(self.index),
            reason,
        }
    }

    /// Checks the request against the rules the kernel applies
    /// (`vfio_set_irqs_validate_and_prepare`) and against `info`.
    pub fn validate(&self, info: &IrqInfo) -> Result<()> {
        if self.index != info.index {
            return Err(self.invalid("request index differs from the irq's index"));
        }
        if let Some(n) = self.data_len() {
            if n != self.count as usize {
                return Err(self.invalid("count differs from the number of data entries"));
            }
        }
        if self.count > MAX_VECTORS {
            return Err(self.invalid("count exceeds the 2048-vector limit"));
        }
        let end = self.start.checked_add(self.count).ok_or(Error::Overflow {
            op: "VFIO_DEVICE_SET_IRQS",
            target: Target::Irq(self.index),
            offset: u64::from(self.start),
            len: u64::from(self.count),
        })?;
        if self.count == 0
            && !(self.action == IrqAction::Trigger && matches!(self.data, IrqData::None))
        {
            return Err(
                self.invalid("count 0 is only allowed to disable (DATA_NONE | ACTION_TRIGGER)")
            );
        }
        if end > info.count {
            return Err(Error::OutOfRange {
                op: "VFIO_DEVICE_SET_IRQS",
                target: Target::Irq(self.index),
                offset: u64::from(self.start),
                len: u64::from(self.count),
                size: u64::from(info.count),
            });
        }
        match (self.action, self.data) {
            (IrqAction::Mask | IrqAction::Unmask, _) if !info.maskable() => {
                Err(self.invalid("irq index is not maskable"))
            }
            (IrqAction::Mask, IrqData::EventFd(_)) => Err(self.invalid("mask takes no eventfd")),
            (IrqAction::Unmask, IrqData::EventFd(_)) if !info.automasked() => {
                Err(self.invalid("a resample (unmask) eventfd needs an automasked index (INTx)"))
            }
            (IrqAction::Trigger, IrqData::EventFd(_)) if info.flags & flags::EVENTFD == 0 => {
                Err(self.invalid("irq index cannot signal eventfds"))
            }
            _ => Ok(()),
        }
    }

    /// Serialises into a `struct vfio_irq_set` payload (host byte order), `argsz` included.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(IRQ_SET_HEADER + 4 * self.count as usize);
        b.extend_from_slice(&[0; 4]); // argsz, patched below
        b.extend_from_slice(&self.flags().to_ne_bytes());
        b.extend_from_slice(&self.index.to_ne_bytes());
        b.extend_from_slice(&self.start.to_ne_bytes());
        b.extend_from_slice(&self.count.to_ne_bytes());
        match self.data {
            IrqData::None => {}
            IrqData::Bool(v) => b.extend(v.iter().map(|&x| u8::from(x))),
            IrqData::EventFd(v) => {
                for fd in v {
                    let raw: RawFd = fd.map_or(-1, |f| f.as_raw_fd());
                    b.extend_from_slice(&raw.to_ne_bytes());
                }
            }
        }
        let argsz = b.len() as u32;
        b[..4].copy_from_slice(&argsz.to_ne_bytes());
        b
    }

    /// Parses a `struct vfio_irq_set` payload (untrusted bytes).
    pub fn parse(bytes: &[u8]) -> Result<ParsedIrqSet> {
        parse_irq_set(bytes).map_err(|source| Error::Malformed {
            buffer: Buffer::IrqSet,
            source,
        })
    }
}

/// An owned, parsed `SET_IRQS` payload (what a kernel or the mock receives).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedIrqSet {
    /// The irq index.
    pub index: u32,
    /// First vector.
    pub start: u32,
    /// Vector count.
    pub count: u32,
    /// The action.
    pub action: IrqAction,
    /// The data.
    pub data: ParsedIrqData,
}

/// Data of a [`ParsedIrqSet`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedIrqData {
    /// No data.
    None,
    /// One bool per vector.
    Bool(Vec<bool>),
    /// One raw fd per vector (-1 de-assigns).
    EventFd(Vec<RawFd>),
}

fn parse_irq_set(bytes: &[u8]) -> std::result::Result<ParsedIrqSet, ParseError> {
    let r = Reader::new(bytes);
    let argsz = r.u32(0)? as usize;
    let flags = r.u32(4)?;
    let index = r.u32(8)?;
    let start = r.u32(12)?;
    let count = r.u32(16)?;
    if argsz > bytes.len() || argsz < IRQ_SET_HEADER {
        return Err(ParseError::InvalidField {
            field: "argsz",
            offset: 0,
            value: argsz as u64,
        });
    }
    let bad_flags = ParseError::InvalidField {
        field: "flags",
        offset: 4,
        value: u64::from(flags),
    };
    if flags & !0x3f != 0 {
        return Err(bad_flags);
    }
    let action = match flags & (ACTION_MASK | ACTION_UNMASK | ACTION_TRIGGER) {
        ACTION_MASK => IrqAction::Mask,
        ACTION_UNMASK => IrqAction::Unmask,
        ACTION_TRIGGER => IrqAction::Trigger,
        _ => return Err(bad_flags),
    };
    if count > MAX_VECTORS {
        return Err(ParseError::InvalidField {
            field: "count",
            offset: 16,
            value: u64::from(count),
        });
    }
    let n = count as usize;
    let body = &bytes[..argsz];
    let r = Reader::new(body);
    let data = match flags & (DATA_NONE | DATA_BOOL | DATA_EVENTFD) {
        DATA_NONE => ParsedIrqData::None,
        DATA_BOOL => ParsedIrqData::Bool(
            r.bytes(IRQ_SET_HEADER, n)?
                .iter()
                .map(|&b| b != 0)
                .collect(),
        ),
        DATA_EVENTFD => ParsedIrqData::EventFd(
            (0..n)
                .map(|i| r.u32(IRQ_SET_HEADER + 4 * i).map(|v| v as RawFd))
                .collect::<std::result::Result<_, _>>()?,
        ),
        _ => return Err(bad_flags),
    };
    Ok(ParsedIrqSet {
        index,
        start,
        count,
        action,
        data,
    })
}

/// One irq index of a device (INTx, MSI, MSI-X, ERR, REQ).
///
/// Only [`Irq::info`] and [`Irq::set_irqs`] are required; the rest are the
/// common requests, built with [`IrqSet`].
///
/// Interrupts arrive on eventfds. A loopback [`Irq::trigger`] checks a
/// route without the device:
///
/// ```
/// use std::time::Duration;
/// use vfio_hal::prelude::*;
/// use vfio_hal::irq::index;
/// use vfio_hal::eventfd::{EventFd, EventFdExt};
/// use vfio_hal_mock::{models::edu::Edu, MockContainer};
///
/// let container = MockContainer::new();
/// container.plug("edu", Edu::new())?;
/// let msi = container.open_device("edu")?.irq(index::MSI)?;
/// assert_eq!(msi.info().count, 1);
///
/// let efd = EventFd::nonblocking()?;
/// msi.set_eventfd(0, Some(efd.as_fd()))?;
/// msi.trigger(0, 1)?;
/// assert_eq!(efd.wait(Duration::from_secs(5))?, 1);
/// msi.disable()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Irq {
    /// Index, flags and vector count.
    fn info(&self) -> IrqInfo;

    /// Sends one `VFIO_DEVICE_SET_IRQS` request.
    fn set_irqs(&self, set: &IrqSet<'_>) -> Result<()>;

    /// Routes vectors `[start, start + fds.len())` to eventfds; `None`
    /// de-assigns that vector.
    ///
    /// # Bus mastering
    /// A device sends an MSI or MSI-X message as a memory write, so while
    /// bus mastering is off in its command register the message is dropped,
    /// as on hardware: the route is accepted, the eventfd never fires, and
    /// nothing reports an error. vfio-pci opens devices with it off. A
    /// driver enables it with
    /// [`PciConfig::set_bus_master`](crate::PciConfig::set_bus_master); a
    /// VMM forwards the guest's command-register writes, so the guest's
    /// driver does. INTx (a wire, not a write) and a loopback
    /// [`Irq::trigger`] do not depend on it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use vfio_hal::prelude::*;
    /// use vfio_hal::irq::index;
    /// use vfio_hal::eventfd::{EventFd, EventFdExt};
    /// use vfio_hal_mock::{models::edu::{reg, Edu}, MockContainer};
    ///
    /// let container = MockContainer::new();
    /// container.plug("edu", Edu::new())?;
    /// let edu = container.open_device("edu")?;
    /// let bar0 = edu.region(0)?;
    /// let efd = EventFd::nonblocking()?;
    /// edu.irq(index::MSI)?.set_eventfds(0, &[Some(efd.as_fd())])?;
    ///
    /// bar0.write_at::<u32>(reg::IRQ_RAISE, 1)?; // bus mastering off: dropped
    /// assert_eq!(efd.wait(Duration::from_millis(10))?, 0);
    ///
    /// edu.set_bus_master(true)?;
    /// bar0.write_at::<u32>(reg::IRQ_RAISE, 1)?;
    /// assert_eq!(efd.wait(Duration::from_secs(5))?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    fn set_eventfds(&self, start: u32, fds: &[Option<BorrowedFd<'_>>]) -> Result<()> {
        self.set_irqs(&IrqSet::eventfds(self.info().index, start, fds))
    }

    /// Routes one vector to `fd` (or de-assigns it with `None`).
    ///
    /// MSI and MSI-X need bus mastering on to be delivered, see
    /// [`Irq::set_eventfds`] (and
    /// [`PciConfig::set_bus_master`](crate::PciConfig::set_bus_master)).
    fn set_eventfd(&self, vector: u32, fd: Option<BorrowedFd<'_>>) -> Result<()> {
        self.set_eventfds(vector, &[fd])
    }

    /// Tears down all signalling for this index.
    fn disable(&self) -> Result<()> {
        self.set_irqs(&IrqSet::disable(self.info().index))
    }

    /// Masks `[start, start + count)`.
    fn mask(&self, start: u32, count: u32) -> Result<()> {
        self.set_irqs(&IrqSet::no_data(
            self.info().index,
            IrqAction::Mask,
            start,
            count,
        ))
    }

    /// Unmasks `[start, start + count)`.
    fn unmask(&self, start: u32, count: u32) -> Result<()> {
        self.set_irqs(&IrqSet::no_data(
            self.info().index,
            IrqAction::Unmask,
            start,
            count,
        ))
    }

    /// Fires `[start, start + count)` from software (loopback test).
    fn trigger(&self, start: u32, count: u32) -> Result<()> {
        self.set_irqs(&IrqSet::no_data(
            self.info().index,
            IrqAction::Trigger,
            start,
            count,
        ))
    }

    /// Sets (or with `None` removes) the INTx resample eventfd: a write to it
    /// unmasks the automasked line, as KVM's irqfd resampler does.
    fn set_resample(&self, fd: Option<BorrowedFd<'_>>) -> Result<()> {
        let fds = [fd];
        self.set_irqs(&IrqSet {
            index: self.info().index,
            start: 0,
            count: 1,
            action: IrqAction::Unmask,
            data: IrqData::EventFd(&fds),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use proptest::prelude::*;
    use std::os::fd::AsFd;

    fn msi(count: u32) -> IrqInfo {
        IrqInfo {
            index: index::MSI,
            flags: flags::EVENTFD | flags::NORESIZE,
            count,
        }
    }

    fn intx() -> IrqInfo {
        IrqInfo {
            index: index::INTX,
            flags: flags::EVENTFD | flags::MASKABLE | flags::AUTOMASKED,
            count: 1,
        }
    }

    #[test]
    fn disable_is_count_zero_data_none_trigger() {
        let b = IrqSet::disable(1).to_bytes();
        assert_eq!(b.len(), IRQ_SET_HEADER);
        assert_eq!(
            u32::from_ne_bytes(b[4..8].try_into().expect("4")),
            DATA_NONE | ACTION_TRIGGER
        );
        IrqSet::disable(1)
            .validate(&msi(1))
            .expect("disable is valid");
    }

    #[test]
    fn eventfd_payload_has_minus_one_for_deassign() {
        let f = std::fs::File::open("/dev/null").expect("open");
        let fds = [Some(f.as_fd()), None];
        let set = IrqSet::eventfds(2, 3, &fds);
        let b = set.to_bytes();
        assert_eq!(b.len(), IRQ_SET_HEADER + 8);
        let parsed = IrqSet::parse(&b).expect("parses");
        assert_eq!(parsed.data, ParsedIrqData::EventFd(vec![f.as_raw_fd(), -1]));
        assert_eq!((parsed.index, parsed.start, parsed.count), (2, 3, 2));
    }

    #[test]
    fn invalid_combinations_are_rejected() {
        let mask_msi = IrqSet {
            index: 1,
            start: 0,
            count: 1,
            action: IrqAction::Mask,
            data: IrqData::None,
        };
        assert_eq!(
            mask_msi
                .validate(&msi(1))
                .expect_err("msi not maskable")
                .kind(),
            ErrorKind::InvalidArgument
        );
        let f = std::fs::File::open("/dev/null").expect("open");
        let fds = [Some(f.as_fd())];
        let resample_msi = IrqSet {
            index: 1,
            start: 0,
            count: 1,
            action: IrqAction::Unmask,
            data: IrqData::EventFd(&fds),
        };
        assert!(resample_msi.validate(&msi(1)).is_err());
        let resample_intx = IrqSet {
            index: 0,
            ..resample_msi
        };
        resample_intx
            .validate(&intx())
            .expect("INTx takes a resample fd");
        let past = IrqSet::eventfds(1, 1, &fds);
        assert_eq!(
            past.validate(&msi(1)).expect_err("past end").kind(),
            ErrorKind::OutOfRange
        );
        let wrap = IrqSet {
            index: 1,
            start: u32::MAX,
            count: 1,
            action: IrqAction::Trigger,
            data: IrqData::None,
        };
        assert_eq!(
            wrap.validate(&msi(1)).expect_err("wraps").kind(),
            ErrorKind::Overflow
        );
        let zero_mask = IrqSet {
            index: 0,
            start: 0,
            count: 0,
            action: IrqAction::Mask,
            data: IrqData::None,
        };
        assert!(zero_mask.validate(&intx()).is_err());
    }

    fn arb_action() -> impl Strategy<Value = IrqAction> {
        prop_oneof![
            Just(IrqAction::Mask),
            Just(IrqAction::Unmask),
            Just(IrqAction::Trigger)
        ]
    }

    proptest! {
        #[test]
        fn bool_sets_round_trip(index: u32, start: u32, action in arb_action(), v in proptest::collection::vec(any::<bool>(), 0..64)) {
            let set = IrqSet { index, start, count: v.len() as u32, action, data: IrqData::Bool(&v) };
            let b = set.to_bytes();
            prop_assert_eq!(b.len(), IRQ_SET_HEADER + v.len());
            let p = IrqSet::parse(&b).expect("round trip");
            prop_assert_eq!(p, ParsedIrqSet { index, start, count: v.len() as u32, action, data: ParsedIrqData::Bool(v.clone()) });
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = IrqSet::parse(&bytes);
        }

        #[test]
        fn validate_accepts_exactly_the_in_range_requests(start in 0u32..40, count in 0u32..40, vectors in 0u32..32) {
            let info = IrqInfo { index: 2, flags: flags::EVENTFD | flags::MASKABLE, count: vectors };
            let set = IrqSet { index: 2, start, count, action: IrqAction::Trigger, data: IrqData::None };
            let ok = set.validate(&info).is_ok();
            let expect = start + count <= vectors;
            prop_assert_eq!(ok, expect, "start={} count={} vectors={}", start, count, vectors);
        }
    }
}
