//! Every rule of the mock IOMMU, through the `Container` trait, plus a
//! property test against a naive model.

mod common;

use proptest::prelude::*;
use rstest::rstest;
use vfio_hal::decorate::inject::{FaultInjector, Plan};
use vfio_hal::decorate::Op;
use vfio_hal::{Container, DmaAccess, DmaBuffer, ErrorKind, IovaRange, Result};
use vfio_hal_mock::{
    ConfigError, DmaDirection, FaultReason, IommuConfig, MockContainer, MockIommu,
};

const PAGE: u64 = 4096;

/// Host memory for raw maps. Every test declares it before the container,
/// so it outlives the container and with it every mapping.
fn memory(pages: usize) -> DmaBuffer {
    DmaBuffer::new(pages * PAGE as usize).expect("alloc")
}

/// Maps `len` bytes of `mem` starting at page `page` to `iova`.
fn map(
    c: &MockContainer,
    iova: u64,
    mem: &DmaBuffer,
    page: u64,
    len: u64,
    access: DmaAccess,
) -> Result<()> {
    let host = mem.as_ptr().wrapping_add((page * PAGE) as usize);
    // SAFETY: `mem` outlives the container (see `memory`), and tests only
    // access it by copy through `DmaBuffer::read`/`write`.
    unsafe { c.map_dma_raw(iova, host, len, access) }
}

fn kind_errno<T: std::fmt::Debug>(r: Result<T>) -> (ErrorKind, Option<i32>) {
    let e = r.expect_err("the call must fail");
    (e.kind(), e.errno())
}

#[test]
fn one_page_maps_and_unmaps_returning_its_length() {
    let mem = memory(1);
    let c = MockContainer::new();
    map(&c, 0x1000, &mem, 0, PAGE, DmaAccess::ReadWrite).expect("map");
    assert_eq!((c.mapping_count(), c.mapped_bytes()), (1, PAGE));
    assert_eq!(c.unmap_dma(0x1000, PAGE).expect("unmap"), PAGE);
    assert_eq!((c.mapping_count(), c.mapped_bytes()), (0, 0));
}

#[rstest]
#[case::iova(0x1001, 0, PAGE)]
#[case::len(0x1000, 0, PAGE + 1)]
#[case::host(0x1000, 1, PAGE)]
#[case::zero_len(0x1000, 0, 0)]
fn misaligned_or_empty_maps_are_einval(
    #[case] iova: u64,
    #[case] host_off: usize,
    #[case] len: u64,
) {
    let mem = memory(2);
    let c = MockContainer::new();
    let host = mem.as_ptr().wrapping_add(host_off);
    // SAFETY: `mem` outlives the container; the map is expected to fail anyway.
    let r = unsafe { c.map_dma_raw(iova, host, len, DmaAccess::ReadWrite) };
    assert_eq!(
        kind_errno(r),
        (ErrorKind::InvalidArgument, Some(libc::EINVAL))
    );
    assert_eq!(c.mapping_count(), 0);
}

#[rstest]
#[case::iova(0x1001, PAGE)]
#[case::len(0x1000, 1)]
#[case::zero_len(0x1000, 0)]
fn misaligned_or_empty_unmaps_are_einval(#[case] iova: u64, #[case] len: u64) {
    let mem = memory(1);
    let c = MockContainer::new();
    map(&c, 0x1000, &mem, 0, PAGE, DmaAccess::ReadWrite).expect("map");
    assert_eq!(
        kind_errno(c.unmap_dma(iova, len)),
        (ErrorKind::InvalidArgument, Some(libc::EINVAL))
    );
    assert_eq!(c.mapping_count(), 1, "nothing was unmapped");
}

#[rstest]
#[case::same(0x10_000, 0x4000)]
#[case::front(0xe_000, 0x4000)]
#[case::back(0x13_000, 0x4000)]
#[case::inside(0x11_000, 0x1000)]
#[case::around(0xf_000, 0x8000)]
fn overlapping_maps_are_eexist(#[case] iova: u64, #[case] len: u64) {
    let mem = memory(8);
    let c = MockContainer::new();
    map(&c, 0x10_000, &mem, 0, 0x4000, DmaAccess::ReadWrite).expect("map");
    let r = map(&c, iova, &mem, 0, len, DmaAccess::ReadWrite);
    assert_eq!(
        kind_errno(r),
        (ErrorKind::AlreadyMapped, Some(libc::EEXIST))
    );
    assert_eq!(c.mapped_bytes(), 0x4000);
}

#[test]
fn adjacent_maps_do_not_overlap() {
    let mem = memory(2);
    let c = MockContainer::new();
    map(&c, 0x10_000, &mem, 0, PAGE, DmaAccess::ReadWrite).expect("map");
    map(&c, 0x10_000 + PAGE, &mem, 1, PAGE, DmaAccess::ReadWrite).expect("right after");
    map(&c, 0x10_000 - PAGE, &mem, 1, PAGE, DmaAccess::ReadWrite).expect("right before");
    assert_eq!(c.mapping_count(), 3);
}

#[test]
fn address_wrap_is_eoverflow() {
    // A container whose range reaches the top, so only the wrap can fail.
    let mem = memory(2);
    let c = MockContainer::with_config(IommuConfig {
        iova_ranges: vec![IovaRange {
            start: 0,
            end: u64::MAX,
        }],
        ..IommuConfig::default()
    })
    .expect("valid configuration");
    let top = u64::MAX - (PAGE - 1);
    let r = map(&c, top, &mem, 0, 2 * PAGE, DmaAccess::ReadWrite);
    assert_eq!(kind_errno(r), (ErrorKind::Overflow, Some(libc::EOVERFLOW)));
    assert_eq!(
        kind_errno(c.unmap_dma(top, 2 * PAGE)),
        (ErrorKind::Overflow, Some(libc::EOVERFLOW))
    );
    // The very last page itself is fine.
    map(&c, top, &mem, 0, PAGE, DmaAccess::ReadWrite).expect("last page of the address space");
    assert_eq!(c.unmap_dma(top, PAGE).expect("unmap"), PAGE);
}

#[rstest]
#[case::msi_window(0xfee0_0000)]
#[case::straddles_hole_start(0xfedf_f000)]
#[case::straddles_hole_end(0xfeef_f000)]
#[case::beyond_48_bits(1 << 48)]
fn maps_outside_the_iova_ranges_are_einval(#[case] iova: u64) {
    let mem = memory(2);
    let c = MockContainer::new();
    let r = map(&c, iova, &mem, 0, 2 * PAGE, DmaAccess::ReadWrite);
    assert_eq!(
        kind_errno(r),
        (ErrorKind::InvalidArgument, Some(libc::EINVAL))
    );
}

#[rstest]
#[case::last_page_of_the_last_range((1 << 48) - PAGE)]
#[case::last_page_below_the_hole(0xfedf_f000)]
#[case::first_page_above_the_hole(0xfef0_0000)]
#[case::page_zero(0)]
fn range_edges_map(#[case] iova: u64) {
    let mem = memory(1);
    let c = MockContainer::new();
    map(&c, iova, &mem, 0, PAGE, DmaAccess::ReadWrite).expect("edge page maps");
    assert_eq!(c.unmap_dma(iova, PAGE).expect("unmap"), PAGE);
}

#[test]
fn the_last_page_of_the_last_reported_range_maps() {
    let mem = memory(1);
    let c = MockContainer::new();
    let info = c.iommu_info().expect("info");
    let last = info.iova_ranges.last().expect("ranges");
    let iova = last.end - (info.min_page_size().expect("page size") - 1);
    map(&c, iova, &mem, 0, PAGE, DmaAccess::ReadWrite).expect("last page");
}

#[test]
fn the_mapping_limit_is_enospc_and_frees_up_on_unmap() {
    let mem = memory(1);
    let c = MockContainer::with_config(IommuConfig {
        max_mappings: 3,
        ..IommuConfig::default()
    })
    .expect("valid configuration");
    for i in 0..3 {
        map(&c, i * PAGE, &mem, 0, PAGE, DmaAccess::ReadWrite).expect("under the limit");
    }
    assert_eq!(c.iommu_info().expect("info").dma_avail, Some(0));
    let r = map(&c, 3 * PAGE, &mem, 0, PAGE, DmaAccess::ReadWrite);
    assert_eq!(kind_errno(r), (ErrorKind::Exhausted, Some(libc::ENOSPC)));
    c.unmap_dma(0, PAGE).expect("unmap");
    map(&c, 3 * PAGE, &mem, 0, PAGE, DmaAccess::ReadWrite).expect("a slot is free again");
}

#[rstest]
#[case::middle(0x11_000, 0x1000)]
#[case::head(0x10_000, 0x1000)]
#[case::tail(0x13_000, 0x1000)]
#[case::straddles_start(0xf_000, 0x2000)]
#[case::straddles_end(0x13_000, 0x2000)]
fn unmaps_that_would_split_a_mapping_are_refused(#[case] iova: u64, #[case] len: u64) {
    let mem = memory(4);
    let c = MockContainer::new();
    map(&c, 0x10_000, &mem, 0, 0x4000, DmaAccess::ReadWrite).expect("map");
    assert_eq!(
        kind_errno(c.unmap_dma(iova, len)),
        (ErrorKind::InvalidArgument, Some(libc::EINVAL))
    );
    assert_eq!(c.mapped_bytes(), 0x4000, "the mapping is intact");
}

#[test]
fn split_unmap_is_allowed_when_configured() {
    let mem = memory(4);
    let c = MockContainer::with_config(IommuConfig {
        allow_split_unmap: true,
        ..IommuConfig::default()
    })
    .expect("valid configuration");
    map(&c, 0x10_000, &mem, 0, 0x4000, DmaAccess::ReadWrite).expect("map");
    assert_eq!(c.unmap_dma(0x11_000, 0x1000).expect("split"), 0x1000);
    assert_eq!((c.mapping_count(), c.mapped_bytes()), (2, 0x3000));
}

#[rstest]
#[case::empty_space(0x50_000, PAGE)]
#[case::between_mappings(0x11_000, PAGE)]
fn unmapping_nothing_is_not_mapped(#[case] iova: u64, #[case] len: u64) {
    let mem = memory(1);
    let c = MockContainer::new();
    map(&c, 0x10_000, &mem, 0, PAGE, DmaAccess::ReadWrite).expect("map");
    map(&c, 0x12_000, &mem, 0, PAGE, DmaAccess::ReadWrite).expect("map");
    assert_eq!(
        kind_errno(c.unmap_dma(iova, len)),
        (ErrorKind::NotMapped, Some(libc::ENOENT))
    );
}

#[test]
fn a_superset_unmap_returns_the_sum_of_the_mappings_inside() {
    let mem = memory(4);
    let c = MockContainer::new();
    map(&c, 0x10_000, &mem, 0, PAGE, DmaAccess::ReadWrite).expect("map");
    map(&c, 0x12_000, &mem, 0, 2 * PAGE, DmaAccess::ReadOnly).expect("map");
    map(&c, 0x20_000, &mem, 0, 4 * PAGE, DmaAccess::WriteOnly).expect("map");
    map(&c, 0x40_000, &mem, 0, PAGE, DmaAccess::ReadWrite).expect("outside the unmap");
    assert_eq!(c.unmap_dma(0x8_000, 0x20_000).expect("superset"), 7 * PAGE);
    assert_eq!((c.mapping_count(), c.mapped_bytes()), (1, PAGE));
}

#[test]
fn unmap_all_returns_the_bytes_and_is_idempotent() {
    let mem = memory(2);
    let c = MockContainer::new();
    assert_eq!(c.unmap_all().expect("empty"), 0);
    map(&c, 0x10_000, &mem, 0, PAGE, DmaAccess::ReadWrite).expect("map");
    map(&c, 0x30_000, &mem, 0, 2 * PAGE, DmaAccess::ReadWrite).expect("map");
    assert_eq!(c.unmap_all().expect("unmap all"), 3 * PAGE);
    assert_eq!(c.unmap_all().expect("again"), 0);
    assert_eq!(c.mapping_count(), 0);
}

#[test]
fn map_buffer_guards_unmap_on_drop_and_hand_the_buffer_back_on_failure() {
    let c = MockContainer::new();
    let guard = c
        .map_buffer(
            0x10_000,
            DmaBuffer::new(8192).expect("alloc"),
            DmaAccess::ReadWrite,
        )
        .expect("map");
    assert_eq!(guard.len(), 8192);
    let failed = c
        .map_buffer(
            0x11_000,
            DmaBuffer::new(4096).expect("alloc"),
            DmaAccess::ReadWrite,
        )
        .expect_err("overlaps");
    assert_eq!(failed.kind(), ErrorKind::AlreadyMapped);
    assert_eq!(failed.buffer.len(), 4096);
    drop(guard);
    assert_eq!(c.mapping_count(), 0);
}

#[test]
fn unmap_after_unmap_all_hands_the_buffer_back_like_drop_frees_it() {
    let c = MockContainer::new();
    let buffer = memory(256);
    buffer.write(0x1234, b"kept").expect("write");
    let guard = c
        .map_buffer(0x10_0000, buffer, DmaAccess::ReadWrite)
        .expect("map");
    assert_eq!(c.unmap_all().expect("unmap all"), 256 * PAGE);
    let failed = guard.unmap().expect_err("nothing is mapped any more");
    assert_eq!(failed.kind(), ErrorKind::NotMapped);
    let buffer = failed
        .buffer
        .expect("not mapped, so the buffer comes back instead of leaking");
    assert_eq!(buffer.len(), 256 * PAGE as usize);
    let mut back = [0u8; 4];
    buffer.read(0x1234, &mut back).expect("read");
    assert_eq!(&back, b"kept");
    // The buffer is whole again: it maps a second time.
    let again = c
        .map_buffer(0x10_0000, buffer, DmaAccess::ReadWrite)
        .expect("remap");
    assert_eq!(again.unmap().expect("unmap").len(), 256 * PAGE as usize);
}

#[test]
fn a_failed_unmap_that_may_leave_the_mapping_keeps_the_buffer_out_of_reach() {
    let inj = FaultInjector::with_plan(MockContainer::new(), Plan::fail_every(Op::UnmapDma));
    let guard = inj
        .map_buffer(0x10_0000, memory(1), DmaAccess::ReadWrite)
        .expect("map");
    let failed = guard.unmap().expect_err("unmaps fail");
    assert_eq!(failed.kind(), Plan::DEFAULT_KIND);
    assert!(
        failed.buffer.is_none(),
        "still mapped: leaked, not returned"
    );
    assert_eq!(inj.inner().mapping_count(), 1);
}

#[test]
fn iommu_info_reports_page_size_ranges_and_remaining_slots() {
    let mem = memory(1);
    let c = MockContainer::new();
    let info = c.iommu_info().expect("info");
    assert_eq!(info.min_page_size(), Some(PAGE));
    assert_eq!(info.iova_ranges, IommuConfig::x86_iova_ranges());
    assert_eq!(info.dma_avail, Some(65535));
    map(&c, 0, &mem, 0, PAGE, DmaAccess::ReadWrite).expect("map");
    assert_eq!(c.iommu_info().expect("info").dma_avail, Some(65534));
}

#[test]
fn a_custom_page_size_is_enforced() {
    let mem = memory(32);
    let c = MockContainer::with_config(IommuConfig {
        page_size: 0x10_000,
        ..IommuConfig::default()
    })
    .expect("valid configuration");
    assert_eq!(
        c.iommu_info().expect("info").min_page_size(),
        Some(0x10_000)
    );
    let r = map(&c, 0x1000, &mem, 0, 0x10_000, DmaAccess::ReadWrite);
    assert_eq!(kind_errno(r).0, ErrorKind::InvalidArgument);
    let r = map(&c, 0x10_000, &mem, 0, 0x1000, DmaAccess::ReadWrite);
    assert_eq!(kind_errno(r).0, ErrorKind::InvalidArgument);
}

const fn range(start: u64, end: u64) -> IovaRange {
    IovaRange { start, end }
}

#[rstest]
#[case::page_size_zero(IommuConfig { page_size: 0, ..IommuConfig::default() },
    ConfigError::PageSize { page_size: 0 })]
#[case::page_size_not_a_power_of_two(IommuConfig { page_size: 3000, ..IommuConfig::default() },
    ConfigError::PageSize { page_size: 3000 })]
#[case::no_mapping_allowed(IommuConfig { max_mappings: 0, ..IommuConfig::default() },
    ConfigError::NoMappings)]
#[case::no_iova_range(IommuConfig { iova_ranges: vec![], ..IommuConfig::default() },
    ConfigError::NoIovaRange)]
#[case::reversed_range(IommuConfig { iova_ranges: vec![range(0x2000, 0x1000)], ..IommuConfig::default() },
    ConfigError::Reversed { range: range(0x2000, 0x1000) })]
#[case::range_smaller_than_a_page(IommuConfig { iova_ranges: vec![range(0x1000, 0x1fff), range(0x10_0800, 0x10_17ff)], ..IommuConfig::default() },
    ConfigError::NoPage { range: range(0x10_0800, 0x10_17ff), page_size: PAGE })]
#[case::overlapping_ranges(IommuConfig { iova_ranges: vec![range(0x1000, 0x2fff), range(0, 0x1fff)], ..IommuConfig::default() },
    ConfigError::Unordered { first: range(0x1000, 0x2fff), second: range(0, 0x1fff) })]
#[case::touching_ranges(IommuConfig { iova_ranges: vec![range(0, 0xfff), range(0x1000, 0x1fff)], ..IommuConfig::default() },
    ConfigError::Unordered { first: range(0, 0xfff), second: range(0x1000, 0x1fff) })]
fn a_nonsense_configuration_is_refused_with_the_rule_it_breaks(
    #[case] config: IommuConfig,
    #[case] why: ConfigError,
) {
    let e = MockContainer::with_config(config).expect_err("refused, not repaired");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    let source = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<ConfigError>());
    assert_eq!(source, Some(&why), "{e}");
    assert!(e.to_string().contains(&why.to_string()), "{e}");
}

// ---- Device-side translation --------------------------------------------

fn iommu() -> MockIommu {
    MockIommu::new(IommuConfig::default()).expect("valid")
}

/// Maps through the IOMMU directly.
fn raw_map(io: &MockIommu, iova: u64, mem: &DmaBuffer, page: u64, len: u64, access: DmaAccess) {
    let host = mem.as_ptr().wrapping_add((page * PAGE) as usize);
    // SAFETY: `mem` is declared before `io` in each test, so it outlives it.
    unsafe { io.map(iova, host, len, access) }.expect("map");
}

#[test]
fn dma_spanning_two_adjacent_mappings_translates_piecewise() {
    let mem = memory(4);
    let io = iommu();
    // Two mappings, back to back in IOVA space, from non-adjacent host pages.
    raw_map(&io, 0x10_000, &mem, 3, PAGE, DmaAccess::ReadWrite);
    raw_map(&io, 0x11_000, &mem, 0, PAGE, DmaAccess::ReadWrite);
    io.dma_write("t", 0x10_ffe, &[1, 2, 3, 4])
        .expect("spans both");
    let mut tail = [0u8; 2];
    mem.read(3 * PAGE + PAGE - 2, &mut tail).expect("read");
    let mut head = [0u8; 2];
    mem.read(0, &mut head).expect("read");
    assert_eq!((tail, head), ([1, 2], [3, 4]));
    let mut back = [0u8; 4];
    io.dma_read("t", 0x10_ffe, &mut back).expect("read back");
    assert_eq!(back, [1, 2, 3, 4]);
}

#[test]
fn a_fault_is_recorded_and_touches_no_memory() {
    let mem = memory(2);
    let io = iommu();
    raw_map(&io, 0x10_000, &mem, 0, PAGE, DmaAccess::ReadWrite);
    // Runs off the end of the mapping: the mapped part must stay untouched too.
    let fault = io
        .dma_write("dev", 0x10_ff0, &[0xaa; 32])
        .expect_err("runs off the mapping");
    assert_eq!(
        (
            fault.iova,
            fault.len,
            fault.at,
            fault.direction,
            fault.reason
        ),
        (
            0x10_ff0,
            32,
            0x11_000,
            DmaDirection::Write,
            FaultReason::NotMapped
        )
    );
    assert_eq!(fault.device, "dev");
    assert!(mem.to_vec().iter().all(|&b| b == 0), "no byte written");
    assert_eq!(io.faults(), vec![fault]);
}

#[test]
fn a_gap_between_mappings_faults_the_whole_access() {
    let mem = memory(2);
    let io = iommu();
    raw_map(&io, 0x10_000, &mem, 0, PAGE, DmaAccess::ReadWrite);
    raw_map(&io, 0x12_000, &mem, 1, PAGE, DmaAccess::ReadWrite);
    let fault = io
        .dma_write("dev", 0x10_000, &[0x55; 3 * PAGE as usize])
        .expect_err("gap");
    assert_eq!((fault.at, fault.reason), (0x11_000, FaultReason::NotMapped));
    assert!(mem.to_vec().iter().all(|&b| b == 0));
    let mut out = [7u8; 16];
    let fault = io
        .dma_read("dev", 0x11_ff8, &mut out)
        .expect_err("starts in the gap");
    assert_eq!(fault.reason, FaultReason::NotMapped);
    assert_eq!(out, [7; 16], "the destination buffer is untouched");
}

#[test]
fn read_only_mappings_refuse_device_writes_and_write_only_refuse_reads() {
    let mem = memory(2);
    let io = iommu();
    raw_map(&io, 0x10_000, &mem, 0, PAGE, DmaAccess::ReadOnly);
    raw_map(&io, 0x11_000, &mem, 1, PAGE, DmaAccess::WriteOnly);
    mem.write(0, &[9; 8]).expect("host write");
    let mut out = [0u8; 8];
    io.dma_read("dev", 0x10_000, &mut out)
        .expect("reads are allowed");
    assert_eq!(out, [9; 8]);
    let fault = io
        .dma_write("dev", 0x10_000, &[1; 8])
        .expect_err("read only");
    assert_eq!(fault.reason, FaultReason::WriteToReadOnly);
    let mut check = [0u8; 8];
    mem.read(0, &mut check).expect("read");
    assert_eq!(check, [9; 8], "memory untouched");
    io.dma_write("dev", 0x11_000, &[1; 8])
        .expect("writes are allowed");
    let fault = io
        .dma_read("dev", 0x11_000, &mut out)
        .expect_err("write only");
    assert_eq!(fault.reason, FaultReason::ReadFromWriteOnly);
    // A write spanning a writable and a read-only mapping fails whole.
    let fault = io.dma_write("dev", 0x10_ff8, &[2; 16]).expect_err("mixed");
    assert_eq!(
        (fault.at, fault.reason),
        (0x10_ff8, FaultReason::WriteToReadOnly)
    );
    assert_eq!(io.fault_count(), 3);
    assert_eq!(io.take_faults().len(), 3);
    assert!(io.faults().is_empty());
}

#[test]
fn dma_after_unmap_faults() {
    let mem = memory(1);
    let io = iommu();
    raw_map(&io, 0x10_000, &mem, 0, PAGE, DmaAccess::ReadWrite);
    io.dma_write("dev", 0x10_000, &[1]).expect("mapped");
    io.unmap(0x10_000, PAGE).expect("unmap");
    assert_eq!(
        io.dma_write("dev", 0x10_000, &[2])
            .expect_err("gone")
            .reason,
        FaultReason::NotMapped
    );
}

// ---- The mock against a naive model --------------------------------------

/// A Vec of (iova, len) with the rules spelled out the slow, obvious way.
#[derive(Debug, Default)]
struct Model {
    maps: Vec<(u64, u64)>,
}

const MAX_MAPPINGS: usize = 6;
const RANGES: [(u64, u64); 2] = [(0, 20 * PAGE - 1), (24 * PAGE, 48 * PAGE - 1)];

impl Model {
    fn overlaps(a: (u64, u64), iova: u64, len: u64) -> bool {
        let (a0, a1, i, l) = (a.0 as u128, a.1 as u128, iova as u128, len as u128);
        a0 < i + l && i < a0 + a1
    }

    fn map(&mut self, iova: u64, len: u64) -> std::result::Result<(), ErrorKind> {
        if len == 0 || iova % PAGE != 0 || len % PAGE != 0 {
            return Err(ErrorKind::InvalidArgument);
        }
        if iova.checked_add(len - 1).is_none() {
            return Err(ErrorKind::Overflow);
        }
        if self.maps.iter().any(|&m| Self::overlaps(m, iova, len)) {
            return Err(ErrorKind::AlreadyMapped);
        }
        if self.maps.len() >= MAX_MAPPINGS {
            return Err(ErrorKind::Exhausted);
        }
        if !RANGES
            .iter()
            .any(|&(s, e)| iova >= s && iova + (len - 1) <= e)
        {
            return Err(ErrorKind::InvalidArgument);
        }
        self.maps.push((iova, len));
        Ok(())
    }

    fn unmap(&mut self, iova: u64, len: u64) -> std::result::Result<u64, ErrorKind> {
        if len == 0 || iova % PAGE != 0 || len % PAGE != 0 {
            return Err(ErrorKind::InvalidArgument);
        }
        if iova.checked_add(len - 1).is_none() {
            return Err(ErrorKind::Overflow);
        }
        let inside =
            |m: &(u64, u64)| m.0 >= iova && m.0 as u128 + m.1 as u128 <= iova as u128 + len as u128;
        if self
            .maps
            .iter()
            .any(|m| Self::overlaps(*m, iova, len) && !inside(m))
        {
            return Err(ErrorKind::InvalidArgument);
        }
        let sum: u64 = self.maps.iter().filter(|m| inside(m)).map(|m| m.1).sum();
        self.maps.retain(|m| !inside(m));
        if sum == 0 {
            Err(ErrorKind::NotMapped)
        } else {
            Ok(sum)
        }
    }
}

#[derive(Debug, Clone)]
enum Step {
    Map(u64, u64),
    Unmap(u64, u64),
    UnmapAll,
}

fn addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => (0u64..52).prop_map(|p| p * PAGE),
        1 => (0u64..52).prop_map(|p| p * PAGE + 0x10),
        1 => Just(u64::MAX - PAGE + 1),
    ]
}

fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => (0u64..6).prop_map(|p| p * PAGE),
        1 => Just(PAGE / 2),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (addr(), size()).prop_map(|(a, s)| Step::Map(a, s)),
        4 => (addr(), size()).prop_map(|(a, s)| Step::Unmap(a, s)),
        1 => Just(Step::UnmapAll),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_mock_iommu_matches_a_naive_model(steps in proptest::collection::vec(step(), 1..60)) {
        let mem = memory(8);
        let c = MockContainer::with_config(IommuConfig {
            page_size: PAGE,
            iova_ranges: RANGES.iter().map(|&(start, end)| IovaRange { start, end }).collect(),
            max_mappings: MAX_MAPPINGS as u32,
            allow_split_unmap: false,
            ..IommuConfig::default()
        })
    .expect("valid configuration");
        let mut model = Model::default();
        for s in steps {
            match s {
                Step::Map(iova, len) => {
                    let got = map(&c, iova, &mem, 0, len, DmaAccess::ReadWrite).map_err(|e| e.kind());
                    prop_assert_eq!(got, model.map(iova, len), "map {:#x}+{:#x}", iova, len);
                }
                Step::Unmap(iova, len) => {
                    let got = c.unmap_dma(iova, len).map_err(|e| e.kind());
                    prop_assert_eq!(got, model.unmap(iova, len), "unmap {:#x}+{:#x}", iova, len);
                }
                Step::UnmapAll => {
                    let want: u64 = model.maps.iter().map(|m| m.1).sum();
                    model.maps.clear();
                    prop_assert_eq!(c.unmap_all().expect("unmap all"), want);
                }
            }
            let mut want: Vec<(u64, u64)> = model.maps.clone();
            want.sort_unstable();
            let got: Vec<(u64, u64)> = c.mappings().iter().map(|m| (m.iova, m.len)).collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(c.mapped_bytes(), model.maps.iter().map(|m| m.1).sum::<u64>());
        }
    }
}
