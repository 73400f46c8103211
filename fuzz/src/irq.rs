//! `irq_set`: `VFIO_DEVICE_SET_IRQS` payloads and their validation.
//!
//! Input: a 13-byte prefix, then the payload ([`IrqSet::parse`] reads it):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | control: bit 0 the irq's index equals the request's, bit 1 override the request's count, bit 2 override its start |
//! | 1 | the irq's `VFIO_IRQ_INFO_*` flags (low 4 bits) |
//! | 2 | the irq's vector count |
//! | 1 | the irq's index when bit 0 is clear |
//! | 4 | the count override |
//! | 4 | the start override |
//!
//! Properties:
//! - `parse` returns, never panics; an error is `Malformed`.
//! - An accepted payload has `count <= MAX_VECTORS` and exactly `count`
//!   data entries inside `argsz`.
//! - Re-encoding it through [`IrqSet::to_bytes`] reproduces the header
//!   byte-for-byte, an `argsz` that covers exactly header and data, and
//!   parses back to the same request (eventfds: the same de-assigned slots,
//!   every other slot the stand-in fd that was passed).
//! - [`IrqSet::validate`] against the decoded [`IrqInfo`] gives exactly the
//!   verdict of the kernel's rules written out independently in [`rules`].

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::OnceLock;

use vfio_hal::irq::{flags, ParsedIrqData, ParsedIrqSet, IRQ_SET_HEADER, MAX_VECTORS};
use vfio_hal::{ErrorKind, IrqAction, IrqData, IrqInfo, IrqSet};

use crate::input::Input;

/// Bytes before the payload.
pub const PREFIX: usize = 13;

/// An open file to stand in for every eventfd of a re-encoded request.
fn stand_in() -> &'static File {
    static FILE: OnceLock<File> = OnceLock::new();
    FILE.get_or_init(|| File::open("/dev/null").unwrap_or_else(|e| panic!("/dev/null: {e}")))
}

/// The fuzz entry point.
pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let control = input.u8();
    let info_flags = u32::from(input.u8() & 0x0f);
    let info_count = u32::from(input.u16());
    let other_index = u32::from(input.u8());
    let count_override = input.u32();
    let start_override = input.u32();
    let payload = input.rest();

    let parsed = match IrqSet::parse(payload) {
        Ok(p) => p,
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Malformed, "{e}");
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    check_accepted(payload, &parsed);

    let fds: Vec<Option<BorrowedFd<'_>>> = match &parsed.data {
        ParsedIrqData::EventFd(raw) => raw
            .iter()
            .map(|&fd| (fd != -1).then(|| stand_in().as_fd()))
            .collect(),
        _ => Vec::new(),
    };
    let data = match &parsed.data {
        ParsedIrqData::None => IrqData::None,
        ParsedIrqData::Bool(b) => IrqData::Bool(b),
        ParsedIrqData::EventFd(_) => IrqData::EventFd(&fds),
    };
    let set = IrqSet {
        index: parsed.index,
        start: parsed.start,
        count: parsed.count,
        action: parsed.action,
        data,
    };
    check_reencoding(payload, &parsed, &set);

    let info = IrqInfo {
        index: if control & 1 != 0 {
            parsed.index
        } else {
            other_index
        },
        flags: info_flags,
        count: info_count,
    };
    let mut request = set;
    if control & 2 != 0 {
        request.count = count_override;
    }
    if control & 4 != 0 {
        request.start = start_override;
    }
    let verdict = request.validate(&info).map_err(|e| e.kind());
    assert_eq!(
        verdict,
        rules(&request, &info),
        "{request:?} against {info:?}"
    );
}

fn argsz(payload: &[u8]) -> usize {
    u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]) as usize
}

fn data_bytes(data: &ParsedIrqData) -> usize {
    match data {
        ParsedIrqData::None => 0,
        ParsedIrqData::Bool(b) => b.len(),
        ParsedIrqData::EventFd(f) => 4 * f.len(),
    }
}

fn check_accepted(payload: &[u8], p: &ParsedIrqSet) {
    assert!(p.count <= MAX_VECTORS, "{p:?}");
    let entries = match &p.data {
        ParsedIrqData::None => None,
        ParsedIrqData::Bool(b) => Some(b.len()),
        ParsedIrqData::EventFd(f) => Some(f.len()),
    };
    if let Some(n) = entries {
        assert_eq!(n, p.count as usize, "{p:?}");
    }
    let argsz = argsz(payload);
    assert!(argsz <= payload.len());
    assert!(
        IRQ_SET_HEADER + data_bytes(&p.data) <= argsz,
        "{p:?} in argsz {argsz}"
    );
}

fn check_reencoding(payload: &[u8], parsed: &ParsedIrqSet, set: &IrqSet<'_>) {
    let bytes = set.to_bytes();
    assert_eq!(bytes.len(), IRQ_SET_HEADER + data_bytes(&parsed.data));
    assert_eq!(argsz(&bytes), bytes.len(), "argsz of the encoding");
    assert_eq!(
        &bytes[4..IRQ_SET_HEADER],
        &payload[4..IRQ_SET_HEADER],
        "header fields"
    );
    let again = IrqSet::parse(&bytes).unwrap_or_else(|e| panic!("re-encoding does not parse: {e}"));
    match (&parsed.data, &again.data) {
        (ParsedIrqData::EventFd(was), ParsedIrqData::EventFd(now)) => {
            assert_eq!(
                (again.index, again.start, again.count, again.action),
                (parsed.index, parsed.start, parsed.count, parsed.action)
            );
            assert_eq!(was.len(), now.len());
            let stand_in = stand_in().as_raw_fd();
            for (&w, &n) in was.iter().zip(now) {
                assert_eq!(n, if w == -1 { -1 } else { stand_in });
            }
        }
        _ => assert_eq!(&again, parsed),
    }
}

/// `vfio_set_irqs_validate_and_prepare` plus vfio-pci's per-index checks,
/// in the order the HAL documents them, as an independent oracle.
pub fn rules(set: &IrqSet<'_>, info: &IrqInfo) -> Result<(), ErrorKind> {
    use ErrorKind::{InvalidArgument, OutOfRange, Overflow};
    let entries = match set.data {
        IrqData::None => None,
        IrqData::Bool(b) => Some(b.len()),
        IrqData::EventFd(f) => Some(f.len()),
    };
    let eventfd = matches!(set.data, IrqData::EventFd(_));
    if set.index != info.index {
        return Err(InvalidArgument);
    }
    if entries.is_some_and(|n| n != set.count as usize) {
        return Err(InvalidArgument);
    }
    if set.count > MAX_VECTORS {
        return Err(InvalidArgument);
    }
    let Some(end) = set.start.checked_add(set.count) else {
        return Err(Overflow);
    };
    let disable = set.action == IrqAction::Trigger && entries.is_none();
    if set.count == 0 && !disable {
        return Err(InvalidArgument);
    }
    if end > info.count {
        return Err(OutOfRange);
    }
    let maskable = info.flags & flags::MASKABLE != 0;
    let automasked = info.flags & flags::AUTOMASKED != 0;
    let signals = info.flags & flags::EVENTFD != 0;
    let ok = match set.action {
        IrqAction::Mask => maskable && !eventfd,
        IrqAction::Unmask => maskable && (!eventfd || automasked),
        IrqAction::Trigger => !eventfd || signals,
    };
    if ok {
        Ok(())
    } else {
        Err(InvalidArgument)
    }
}
