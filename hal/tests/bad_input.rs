//! The hal half of the bad-input table in `docs/RELIABILITY.md`: every row
//! is one case below, named as in the table. Each feeds one malformed input
//! to a parser, bounds check, validator, the IOVA allocator or `DmaBuffer`,
//! and checks the exact error: the typed variant with the offset, value or
//! bound it violated, and the `ErrorKind` generic code sees. None may panic.
//!
//! Run: `cargo test -p vfio-hal --test bad_input` (also under Miri, see
//! `tests/reliability/miri.sh`).

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::LazyLock;

use rstest::rstest;
use vfio_hal::caps::{parse_chain, ParseError, MAX_CAPS, MAX_INFO_SIZE};
use vfio_hal::error::{check_bounds, check_index, Buffer};
use vfio_hal::irq::{flags, index as irq_index};
use vfio_hal::pci::walk_capabilities;
use vfio_hal::{
    ChainKind, DmaBuffer, Error, ErrorKind, IovaAllocator, IovaRange, IrqAction, IrqData, IrqInfo,
    IrqSet, MmapArea, RegionInfo, Target,
};

// ---------------------------------------------------------------------------
// Capability chains (region, device and IOMMU info buffers from the kernel).

/// Writes a `vfio_info_cap_header` (version 1) at `at`.
fn header(buf: &mut [u8], at: usize, id: u16, next: u32) {
    buf[at..at + 2].copy_from_slice(&id.to_le_bytes());
    buf[at + 2..at + 4].copy_from_slice(&1u16.to_le_bytes());
    buf[at + 4..at + 8].copy_from_slice(&next.to_le_bytes());
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// A zeroed buffer of `len` bytes edited by `f`.
fn buf(len: usize, f: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let mut b = vec![0u8; len];
    f(&mut b);
    b
}

/// 257 one-header capabilities (MSIX_MAPPABLE) chained after the region info.
fn too_many_caps() -> Vec<u8> {
    let n = MAX_CAPS + 1;
    buf(32 + 8 * n, |b| {
        for i in 0..n {
            let at = 32 + 8 * i;
            let next = if i + 1 < n { (at + 8) as u32 } else { 0 };
            header(b, at, 3, next);
        }
    })
}

fn info_buffer(kind: ChainKind) -> Buffer {
    match kind {
        ChainKind::Region => Buffer::RegionInfo,
        ChainKind::Device => Buffer::DeviceInfo,
        ChainKind::Iommu => Buffer::IommuInfo,
    }
}

#[rstest]
#[case::oversized_buffer(ChainKind::Region, vec![0; MAX_INFO_SIZE + 1], 32,
    ParseError::TooLarge { len: MAX_INFO_SIZE + 1, max: MAX_INFO_SIZE })]
#[case::first_cap_inside_info_struct(ChainKind::Region, vec![0; 64], 8,
    ParseError::InsideHeader { offset: 8, fixed: 32 })]
#[case::first_cap_past_the_end(ChainKind::Region, vec![0; 64], 0xffff_fff8,
    ParseError::Truncated { offset: 0xffff_fff8, need: 2, len: 64 })]
#[case::cap_header_cut_short(ChainKind::Region, vec![0; 36], 32,
    ParseError::Truncated { offset: 36, need: 4, len: 36 })]
#[case::cap_links_to_itself(ChainKind::Region, buf(48, |b| header(b, 32, 3, 32)), 32,
    ParseError::Cycle { offset: 32 })]
#[case::two_caps_link_in_a_cycle(ChainKind::Region,
    buf(64, |b| { header(b, 32, 3, 48); header(b, 48, 3, 32) }), 32,
    ParseError::Cycle { offset: 32 })]
#[case::next_points_inside_previous_cap(ChainKind::Region,
    buf(64, |b| { header(b, 32, 2, 40); header(b, 40, 3, 0) }), 32,
    ParseError::Overlap { first: 32, second: 40 })]
#[case::sparse_area_count_past_the_end(ChainKind::Region,
    buf(64, |b| { header(b, 32, 1, 0); put_u32(b, 40, 2) }), 32,
    ParseError::Truncated { offset: 48, need: 32, len: 64 })]
#[case::sparse_area_count_u32_max(ChainKind::Region,
    buf(64, |b| { header(b, 32, 1, 0); put_u32(b, 40, u32::MAX) }), 32,
    ParseError::Truncated { offset: 48, need: u32::MAX as usize * 16, len: 64 })]
#[case::sparse_area_end_wraps(ChainKind::Region,
    buf(64, |b| { header(b, 32, 1, 0); put_u32(b, 40, 1); put_u64(b, 48, u64::MAX); put_u64(b, 56, 1) }), 32,
    ParseError::InvalidField { field: "sparse_mmap_area.size", offset: 48, value: 1 })]
#[case::region_type_cap_cut_short(ChainKind::Region, buf(44, |b| header(b, 32, 2, 0)), 32,
    ParseError::Truncated { offset: 44, need: 4, len: 44 })]
#[case::more_than_max_caps(ChainKind::Region, too_many_caps(), 32,
    ParseError::TooMany { max: MAX_CAPS })]
#[case::device_cap_inside_info_struct(ChainKind::Device, vec![0; 64], 16,
    ParseError::InsideHeader { offset: 16, fixed: 24 })]
#[case::zpci_base_cut_short(ChainKind::Device, buf(40, |b| header(b, 24, 1, 0)), 24,
    ParseError::Truncated { offset: 40, need: 8, len: 40 })]
#[case::zpci_util_size_past_the_end(ChainKind::Device,
    buf(40, |b| { header(b, 24, 3, 0); put_u32(b, 32, 1000) }), 24,
    ParseError::Truncated { offset: 36, need: 1000, len: 40 })]
#[case::iova_range_ends_before_start(ChainKind::Iommu,
    buf(56, |b| { header(b, 24, 1, 0); put_u32(b, 32, 1); put_u64(b, 40, 0x2000); put_u64(b, 48, 0x1000) }), 24,
    ParseError::InvalidField { field: "iova_range.end", offset: 40, value: 0x1000 })]
#[case::migration_cap_cut_short(ChainKind::Iommu, buf(40, |b| header(b, 24, 2, 0)), 24,
    ParseError::Truncated { offset: 40, need: 8, len: 40 })]
#[case::dma_avail_cap_cut_short(ChainKind::Iommu, buf(34, |b| header(b, 24, 3, 0)), 24,
    ParseError::Truncated { offset: 32, need: 4, len: 34 })]
fn capability_chain(
    #[case] kind: ChainKind,
    #[case] info: Vec<u8>,
    #[case] first: u32,
    #[case] expected: ParseError,
) {
    let source = parse_chain(kind, &info, first).expect_err("a malformed chain must not parse");
    assert_eq!(source, expected);
    // As a backend reports it.
    let err = Error::Malformed {
        buffer: info_buffer(kind),
        source,
    };
    assert_eq!(err.kind(), ErrorKind::Malformed);
    assert!(!err.to_string().is_empty());
}

// ---------------------------------------------------------------------------
// VFIO_DEVICE_SET_IRQS payloads (IrqSet::parse: what the mock and a kernel receive).

const DATA_NONE: u32 = 1 << 0;
const DATA_BOOL: u32 = 1 << 1;
const DATA_EVENTFD: u32 = 1 << 2;
const ACTION_MASK: u32 = 1 << 3;
const ACTION_TRIGGER: u32 = 1 << 5;

/// A `struct vfio_irq_set` with this `argsz` and `flags`, index 1, start 0,
/// `count`, then `data`.
fn payload(argsz: u32, flags: u32, count: u32, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [argsz, flags, 1, 0, count] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn bad_flags(value: u32) -> ParseError {
    ParseError::InvalidField {
        field: "flags",
        offset: 4,
        value: u64::from(value),
    }
}

#[rstest]
#[case::empty_payload(vec![], ParseError::Truncated { offset: 0, need: 4, len: 0 })]
#[case::header_cut_short(vec![0; 19], ParseError::Truncated { offset: 16, need: 4, len: 19 })]
#[case::argsz_below_header(payload(8, DATA_NONE | ACTION_TRIGGER, 0, &[]),
    ParseError::InvalidField { field: "argsz", offset: 0, value: 8 })]
#[case::argsz_past_buffer(payload(100, DATA_NONE | ACTION_TRIGGER, 0, &[]),
    ParseError::InvalidField { field: "argsz", offset: 0, value: 100 })]
#[case::undefined_flag_bit(payload(20, 0x40 | DATA_NONE | ACTION_TRIGGER, 0, &[]),
    bad_flags(0x40 | DATA_NONE | ACTION_TRIGGER))]
#[case::two_actions(payload(20, DATA_NONE | ACTION_MASK | ACTION_TRIGGER, 1, &[]),
    bad_flags(DATA_NONE | ACTION_MASK | ACTION_TRIGGER))]
#[case::no_action(payload(20, DATA_NONE, 1, &[]), bad_flags(DATA_NONE))]
#[case::two_data_kinds(payload(20, DATA_NONE | DATA_BOOL | ACTION_TRIGGER, 1, &[]),
    bad_flags(DATA_NONE | DATA_BOOL | ACTION_TRIGGER))]
#[case::no_data_kind(payload(20, ACTION_TRIGGER, 1, &[]), bad_flags(ACTION_TRIGGER))]
#[case::count_above_2048(payload(20, DATA_NONE | ACTION_TRIGGER, 2049, &[]),
    ParseError::InvalidField { field: "count", offset: 16, value: 2049 })]
#[case::bools_past_argsz(payload(22, DATA_BOOL | ACTION_MASK, 4, &[1, 1, 1, 1]),
    ParseError::Truncated { offset: 20, need: 4, len: 22 })]
#[case::eventfds_cut_short(payload(26, DATA_EVENTFD | ACTION_TRIGGER, 2, &[0; 6]),
    ParseError::Truncated { offset: 24, need: 4, len: 26 })]
fn irq_set_payload(#[case] bytes: Vec<u8>, #[case] expected: ParseError) {
    let err = IrqSet::parse(&bytes).expect_err("a malformed payload must not parse");
    assert_eq!(err.kind(), ErrorKind::Malformed);
    match err {
        Error::Malformed {
            buffer: Buffer::IrqSet,
            source,
        } => assert_eq!(source, expected),
        other => panic!("expected Malformed(IrqSet), got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// IrqSet::validate: the kernel's SET_IRQS rules, checked before any ioctl.

/// A stand-in eventfd: `validate` never touches the fd, any open one will do.
/// (Standard input: it needs no syscall to get, so this runs under Miri.)
fn fd() -> BorrowedFd<'static> {
    static STDIN: LazyLock<std::io::Stdin> = LazyLock::new(std::io::stdin);
    STDIN.as_fd()
}

/// One de-assigned vector.
static NO_FD: [Option<BorrowedFd<'static>>; 1] = [None];
/// One vector routed to the stand-in fd.
static ONE_FD: LazyLock<[Option<BorrowedFd<'static>>; 1]> = LazyLock::new(|| [Some(fd())]);

const MSI: IrqInfo = IrqInfo {
    index: irq_index::MSI,
    flags: flags::EVENTFD | flags::NORESIZE,
    count: 4,
};
const INTX: IrqInfo = IrqInfo {
    index: irq_index::INTX,
    flags: flags::EVENTFD | flags::MASKABLE | flags::AUTOMASKED,
    count: 1,
};
/// Maskable, not automasked: resample fds make no sense on it.
const MASKABLE_MSIX: IrqInfo = IrqInfo {
    index: irq_index::MSIX,
    flags: flags::EVENTFD | flags::MASKABLE | flags::NORESIZE,
    count: 8,
};
/// An index that cannot signal eventfds at all.
const SILENT: IrqInfo = IrqInfo {
    index: irq_index::ERR,
    flags: flags::MASKABLE,
    count: 1,
};

fn request(
    info: IrqInfo,
    action: IrqAction,
    start: u32,
    count: u32,
    data: IrqData<'static>,
) -> (IrqSet<'static>, IrqInfo) {
    (
        IrqSet {
            index: info.index,
            start,
            count,
            action,
            data,
        },
        info,
    )
}

fn with_fd(info: IrqInfo, action: IrqAction) -> (IrqSet<'static>, IrqInfo) {
    request(info, action, 0, 1, IrqData::EventFd(&*ONE_FD))
}

#[rstest]
#[case::index_differs_from_irq((IrqSet { index: irq_index::MSIX, ..IrqSet::disable(0) }, MSI),
    ErrorKind::InvalidArgument)]
#[case::count_differs_from_data_length(
    request(MSI, IrqAction::Trigger, 0, 2, IrqData::EventFd(&NO_FD)), ErrorKind::InvalidArgument)]
#[case::count_above_2048(request(IrqInfo { count: 4096, ..MSI }, IrqAction::Trigger, 0, 2049, IrqData::None),
    ErrorKind::InvalidArgument)]
#[case::start_plus_count_wraps(
    request(MSI, IrqAction::Trigger, u32::MAX, 1, IrqData::None),
    ErrorKind::Overflow
)]
#[case::count_zero_with_mask(
    request(INTX, IrqAction::Mask, 0, 0, IrqData::None),
    ErrorKind::InvalidArgument
)]
#[case::vectors_past_the_last(
    request(MSI, IrqAction::Trigger, 3, 2, IrqData::None),
    ErrorKind::OutOfRange
)]
#[case::mask_on_unmaskable_msi(
    request(MSI, IrqAction::Mask, 0, 1, IrqData::None),
    ErrorKind::InvalidArgument
)]
#[case::mask_with_an_eventfd(with_fd(INTX, IrqAction::Mask), ErrorKind::InvalidArgument)]
#[case::resample_fd_on_edge_triggered(
    with_fd(MASKABLE_MSIX, IrqAction::Unmask),
    ErrorKind::InvalidArgument
)]
#[case::eventfd_on_index_without_eventfds(
    with_fd(SILENT, IrqAction::Trigger),
    ErrorKind::InvalidArgument
)]
fn irq_request(#[case] (set, info): (IrqSet<'static>, IrqInfo), #[case] expected: ErrorKind) {
    let err = set
        .validate(&info)
        .expect_err("an invalid request must be refused");
    assert_eq!(err.kind(), expected, "{err}");
    assert!(matches!(
        err,
        Error::InvalidArgument {
            target: Target::Irq(_),
            ..
        } | Error::Overflow {
            target: Target::Irq(_),
            ..
        } | Error::OutOfRange {
            target: Target::Irq(_),
            ..
        }
    ));
}

// ---------------------------------------------------------------------------
// Bounds: check_bounds, check_index and RegionInfo::check_access, which every
// backend uses for region, buffer and area accesses.

#[rstest]
#[case::offset_plus_length_wraps(u64::MAX, 2, u64::MAX, ErrorKind::Overflow)]
#[case::access_ends_past_the_size(0xffc, 8, 0x1000, ErrorKind::OutOfRange)]
#[case::any_byte_of_an_empty_object(0, 1, 0, ErrorKind::OutOfRange)]
#[case::offset_equal_to_size(0x1000, 1, 0x1000, ErrorKind::OutOfRange)]
#[case::huge_offset_empty_access(u64::MAX, 0, 0x1000, ErrorKind::OutOfRange)]
fn bounds(#[case] offset: u64, #[case] len: u64, #[case] size: u64, #[case] expected: ErrorKind) {
    let err =
        check_bounds("pread", Target::Region(0), offset, len, size).expect_err("out of bounds");
    assert_eq!(err.kind(), expected);
    match err {
        Error::Overflow {
            offset: o, len: l, ..
        } => assert_eq!((o, l), (offset, len)),
        Error::OutOfRange {
            offset: o,
            len: l,
            size: s,
            ..
        } => assert_eq!((o, l, s), (offset, len, size)),
        other => panic!("{other:?}"),
    }
}

#[rstest]
#[case::index_equal_to_count(9, 9)]
#[case::index_u32_max(u32::MAX, 9)]
#[case::any_index_of_none(0, 0)]
fn region_or_irq_index(#[case] index: u32, #[case] count: u32) {
    let err = check_index(
        "VFIO_DEVICE_GET_REGION_INFO",
        Target::Region(index),
        index,
        count,
    )
    .expect_err("no such index");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert!(matches!(err, Error::NoSuchIndex { count: c, .. } if c == count));
}

#[test]
fn region_access_that_wraps() {
    let info = RegionInfo {
        index: 0,
        size: 0x1000,
        ..RegionInfo::default()
    };
    let err = info
        .check_access("pread", u64::MAX - 3, 8)
        .expect_err("wraps");
    assert_eq!(err.kind(), ErrorKind::Overflow);
    assert!(matches!(
        err,
        Error::Overflow {
            target: Target::Region(0),
            ..
        }
    ));
}

// ---------------------------------------------------------------------------
// PCI config-space walks (walk_capabilities over a snapshot from the device).

/// A config snapshot of `len` bytes with the capability-list status bit,
/// the capability pointer and `(offset, id, next)` entries.
fn config(len: usize, ptr: u8, caps: &[(u8, u8, u8)]) -> Vec<u8> {
    buf(len, |c| {
        c[6] = 0x10;
        c[0x34] = ptr;
        for &(at, id, next) in caps {
            c[usize::from(at)] = id;
            c[usize::from(at) + 1] = next;
        }
    })
}

/// Every possible capability slot (0x40..=0xfc) linked in order, and the
/// last one linked back to the first.
fn every_slot_then_back() -> Vec<u8> {
    let slots: Vec<u8> = (0x40..=0xfcu8).step_by(4).collect();
    let chain: Vec<(u8, u8, u8)> = slots
        .iter()
        .enumerate()
        .map(|(i, &at)| (at, 0x09, slots.get(i + 1).copied().unwrap_or(0x40)))
        .collect();
    config(256, 0x40, &chain)
}

fn bad_pointer(offset: usize, value: u8) -> ParseError {
    ParseError::InvalidField {
        field: "capability pointer",
        offset,
        value: u64::from(value),
    }
}

#[rstest]
#[case::snapshot_shorter_than_status(vec![0; 6], ParseError::Truncated { offset: 6, need: 2, len: 6 })]
#[case::snapshot_ends_before_cap_pointer(buf(0x34, |c| c[6] = 0x10),
    ParseError::Truncated { offset: 0x34, need: 1, len: 0x34 })]
#[case::cap_pointer_into_header(config(256, 0x20, &[]), bad_pointer(0x34, 0x20))]
#[case::next_pointer_into_header(config(256, 0x40, &[(0x40, 0x05, 0x10)]), bad_pointer(0x41, 0x10))]
#[case::cap_links_to_itself(config(256, 0x40, &[(0x40, 0x05, 0x40)]), ParseError::Cycle { offset: 0x40 })]
#[case::two_caps_link_in_a_cycle(config(256, 0x40, &[(0x40, 0x05, 0x50), (0x50, 0x10, 0x40)]),
    ParseError::Cycle { offset: 0x40 })]
#[case::low_pointer_bits_hide_a_cycle(config(256, 0x40, &[(0x40, 0x05, 0x43)]),
    ParseError::Cycle { offset: 0x40 })]
#[case::cap_pointer_past_the_snapshot(config(64, 0x80, &[]),
    ParseError::Truncated { offset: 0x80, need: 1, len: 64 })]
#[case::every_slot_used_then_a_loop(every_slot_then_back(), ParseError::Cycle { offset: 0x40 })]
fn config_space_walk(#[case] snapshot: Vec<u8>, #[case] expected: ParseError) {
    let source = walk_capabilities(&snapshot).expect_err("a malformed list must not walk");
    assert_eq!(source, expected);
    let err = Error::Malformed {
        buffer: Buffer::ConfigSpace,
        source,
    };
    assert_eq!(err.kind(), ErrorKind::Malformed);
}

// ---------------------------------------------------------------------------
// IovaAllocator: ranges from the IOMMU, sizes and alignments from callers.

const PAGES: [IovaRange; 2] = [
    IovaRange {
        start: 0x1000,
        end: 0xffff,
    },
    IovaRange {
        start: 0x10_0000,
        end: 0x10_ffff,
    },
];

#[rstest]
#[case::no_ranges(&[])]
#[case::overlapping_ranges(&[IovaRange { start: 0, end: 0x1fff }, IovaRange { start: 0x1000, end: 0x2fff }])]
#[case::range_ends_before_it_starts(&[IovaRange { start: 0x2000, end: 0x1000 }])]
fn allocator_ranges(#[case] ranges: &[IovaRange]) {
    let err = IovaAllocator::<u32>::new(ranges).expect_err("unusable ranges");
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}

#[rstest]
#[case::zero_size(0, 0x1000, 9, ErrorKind::InvalidArgument)]
#[case::zero_alignment(0x1000, 0, 9, ErrorKind::InvalidArgument)]
#[case::alignment_not_a_power_of_two(0x1000, 0x3000, 9, ErrorKind::InvalidArgument)]
#[case::tag_already_allocated(0x1000, 0x1000, 1, ErrorKind::InvalidArgument)]
#[case::larger_than_any_range(0x1_1000, 0x1000, 9, ErrorKind::Exhausted)]
#[case::alignment_beyond_every_range(0x1000, 1 << 63, 9, ErrorKind::Exhausted)]
#[case::size_u64_max(u64::MAX, 1, 9, ErrorKind::Exhausted)]
fn allocator_alloc(
    #[case] size: u64,
    #[case] align: u64,
    #[case] tag: u32,
    #[case] expected: ErrorKind,
) {
    let mut a = IovaAllocator::new(&PAGES).expect("valid ranges");
    a.alloc(0x1000, 0x1000, 1).expect("tag 1");
    let free = a.free_bytes();
    let err = a.alloc(size, align, tag).expect_err("refused");
    assert_eq!(err.kind(), expected, "{err}");
    assert_eq!(a.free_bytes(), free, "a refused alloc takes nothing");
    assert_eq!(a.allocations().count(), 1);
}

#[rstest]
#[case::release_of_an_unknown_tag(false)]
#[case::release_twice(true)]
fn allocator_release(#[case] allocate_first: bool) {
    let mut a = IovaAllocator::new(&PAGES).expect("valid ranges");
    if allocate_first {
        a.alloc(0x2000, 0x1000, 7).expect("alloc");
        a.release(&7).expect("first release");
    }
    let err = a.release(&7).expect_err("nothing under tag 7");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        a.free_bytes(),
        PAGES.iter().map(IovaRange::size).sum::<u128>()
    );
}

// ---------------------------------------------------------------------------
// DmaBuffer and MmapArea: sizes, alignments and offsets from callers.

#[rstest]
#[case::buffer_of_zero_bytes(|| DmaBuffer::new(0).map(drop), ErrorKind::InvalidArgument)]
#[case::buffer_size_rounds_past_usize(|| DmaBuffer::new(usize::MAX).map(drop), ErrorKind::Overflow)]
#[case::buffer_alignment_not_a_power_of_two(|| DmaBuffer::with_alignment(4096, 3).map(drop),
    ErrorKind::InvalidArgument)]
#[case::buffer_alignment_zero(|| DmaBuffer::with_alignment(4096, 0).map(drop), ErrorKind::InvalidArgument)]
#[case::aligned_buffer_size_overflows(|| DmaBuffer::with_alignment(usize::MAX - 4095, 1 << 21).map(drop),
    ErrorKind::Overflow)]
#[case::buffer_read_past_the_end(|| DmaBuffer::new(4096)?.read(4095, &mut [0; 2]), ErrorKind::OutOfRange)]
#[case::buffer_read_at_the_end(|| DmaBuffer::new(4096)?.read(4096, &mut [0; 1]), ErrorKind::OutOfRange)]
#[case::buffer_write_offset_wraps(|| DmaBuffer::new(4096)?.write(u64::MAX, &[1]), ErrorKind::Overflow)]
#[case::mmap_of_zero_bytes(|| MmapArea::map_fd(fd(), 0, 0, 0, false).map(drop), ErrorKind::InvalidArgument)]
fn memory(#[case] op: fn() -> vfio_hal::Result<()>, #[case] expected: ErrorKind) {
    let err = op().expect_err("refused");
    assert_eq!(err.kind(), expected, "{err}");
}

/// A test of its own (not a `memory` case) so that Miri can skip just this.
#[test]
#[cfg_attr(miri, ignore = "Miri stops with resource exhaustion on a 4 EiB mmap")]
fn buffer_larger_than_the_address_space() {
    let err = DmaBuffer::new(1 << 62).expect_err("no 4 EiB mapping");
    assert_eq!(err.kind(), ErrorKind::Exhausted, "{err}");
    assert_eq!(err.errno(), Some(libc::ENOMEM));
}
