//! C. DMA map/unmap: the kernel selftests' mapping rules, on every backend.
//!
//! Layouts are in IOMMU pages from the fixture's IOVA window; the host side
//! is a [`Scratch`] whose page `n` backs IOVA page `n` unless said otherwise.

use vfio_hal::{Capability, Container, DmaAccess, ErrorKind, IovaRange};

use super::{dma_page, edu, expect_all, filled, fresh, iova};
use crate::edu::Direction;
use crate::ensure;
use crate::fixture::{Fixture, SplitUnmap, IOVA_WINDOW, OUTSIDE_RANGES};
use crate::outcome::{
    expect_eq, expect_kind, fail, not_applicable, CaseError, CaseResult, Context, Describe,
};
use crate::scratch::Scratch;

fn scratch<F: Fixture>(f: &F, pages: u64) -> Result<Scratch<F::Container>, CaseError> {
    Scratch::new(fresh(f)?, pages)
}

/// Checks the fixture's mapping count, where it can tell one.
fn expect_live<F: Fixture>(f: &F, c: &F::Container, step: &str, expected: usize) -> CaseResult {
    match f.live_mappings(c) {
        Some(n) => expect_eq(format!("live mappings {step}"), expected, n),
        None => Ok(()),
    }
}

/// One page maps, and unmapping it returns its length; a second unmap finds nothing.
pub fn map_unmap_one_page<F: Fixture>(f: &F) -> CaseResult {
    let s = scratch(f, 1)?;
    let (p, at) = (s.page(), iova(f, s.page(), 0));
    s.map_pages(at, 0, 1).context("map one page")?;
    expect_live(f, s.container(), "after one map", 1)?;
    let n = s.container().unmap_dma(at, p).context("unmap it")?;
    expect_eq("bytes unmapped", p, n)?;
    expect_live(f, s.container(), "after its unmap", 0)?;
    expect_kind(
        "unmapping the same page again",
        s.container().unmap_dma(at, p),
        &[ErrorKind::NotMapped],
    )?;
    Ok(())
}

/// Unmapping a range that holds no mapping is `NotMapped`, also in a gap
/// between two mappings.
pub fn unmap_nothing<F: Fixture>(f: &F) -> CaseResult {
    let s = scratch(f, 4)?;
    let p = s.page();
    expect_kind(
        "unmap in an empty container",
        s.container().unmap_dma(iova(f, p, 0), p),
        &[ErrorKind::NotMapped],
    )?;
    s.map_pages(iova(f, p, 0), 0, 1).context("map page 0")?;
    s.map_pages(iova(f, p, 3), 3, 1).context("map page 3")?;
    expect_kind(
        "unmap of the gap [1, 3) between two mappings",
        s.container().unmap_dma(iova(f, p, 1), 2 * p),
        &[ErrorKind::NotMapped],
    )?;
    expect_live(f, s.container(), "after the refused unmap", 2)
}

/// Maps pages [2, 5), then tries pages [first, first + count): refused with
/// `AlreadyMapped`, leaving the original mapping whole and nothing else behind.
fn overlap<F: Fixture>(f: &F, shape: &str, first: u64, count: u64) -> CaseResult {
    let s = scratch(f, 8)?;
    let p = s.page();
    s.map_pages(iova(f, p, 2), 2, 3)
        .context("map pages [2, 5)")?;
    expect_kind(
        format!(
            "map of pages [{first}, {}) ({shape} the mapping [2, 5))",
            first + count
        ),
        s.map_pages(iova(f, p, first), first, count),
        &[ErrorKind::AlreadyMapped],
    )?;
    expect_live(f, s.container(), "after the refused map", 1)?;
    let n = s
        .container()
        .unmap_dma(iova(f, p, 2), 3 * p)
        .context("unmap the original mapping")?;
    expect_eq("bytes unmapped (the original mapping only)", 3 * p, n)?;
    expect_kind(
        "unmap of the whole window afterwards (the refused map must have left nothing)",
        s.container().unmap_dma(iova(f, p, 0), 8 * p),
        &[ErrorKind::NotMapped],
    )?;
    Ok(())
}

/// Mapping exactly an existing mapping's range again is refused.
pub fn overlap_identical<F: Fixture>(f: &F) -> CaseResult {
    overlap(f, "identical to", 2, 3)
}

/// Mapping a range strictly inside an existing mapping is refused.
pub fn overlap_inside<F: Fixture>(f: &F) -> CaseResult {
    overlap(f, "inside", 3, 1)
}

/// Mapping a range that covers an existing mapping is refused.
pub fn overlap_covering<F: Fixture>(f: &F) -> CaseResult {
    overlap(f, "covering", 1, 5)
}

/// Mapping a range that overlaps the start of an existing mapping is refused.
pub fn overlap_start<F: Fixture>(f: &F) -> CaseResult {
    overlap(f, "overlapping the start of", 1, 2)
}

/// Mapping a range that overlaps the end of an existing mapping is refused.
pub fn overlap_end<F: Fixture>(f: &F) -> CaseResult {
    overlap(f, "overlapping the end of", 4, 2)
}

/// Unmapping one page of a two-page mapping: refused with the declared kind
/// (mapping intact), or, where declared allowed, exactly that page goes.
pub fn split_unmap<F: Fixture>(f: &F) -> CaseResult {
    let s = scratch(f, 2)?;
    let p = s.page();
    let c = s.container();
    s.map_pages(iova(f, p, 0), 0, 2).context("map two pages")?;
    match f.capabilities().split_unmap {
        SplitUnmap::Refused(kind) => {
            ensure!(
                matches!(kind, ErrorKind::InvalidArgument | ErrorKind::NotMapped),
                "the fixture declares split unmaps refused with {kind:?}; the kernel uses \
                 InvalidArgument (type1v2) or NotMapped (iommufd)"
            );
            expect_kind(
                "unmap of the first page of a two-page mapping (declared refused)",
                c.unmap_dma(iova(f, p, 0), p),
                &[kind],
            )?;
            expect_kind(
                "unmap of the second page of a two-page mapping (declared refused)",
                c.unmap_dma(iova(f, p, 1), p),
                &[kind],
            )?;
            let n = c
                .unmap_dma(iova(f, p, 0), 2 * p)
                .context("unmap of the whole mapping")?;
            expect_eq("bytes unmapped (the mapping must still be whole)", 2 * p, n)
        }
        SplitUnmap::Allowed => {
            let n = c
                .unmap_dma(iova(f, p, 0), p)
                .context("unmap of the first page (declared allowed)")?;
            expect_eq("bytes unmapped by the split", p, n)?;
            expect_live(f, c, "after the split", 1)?;
            let n = c
                .unmap_dma(iova(f, p, 1), p)
                .context("unmap of the remaining page")?;
            expect_eq("bytes unmapped for the remaining page", p, n)?;
            expect_kind(
                "unmap of the whole range afterwards",
                c.unmap_dma(iova(f, p, 0), 2 * p),
                &[ErrorKind::NotMapped],
            )?;
            Ok(())
        }
    }
}

/// `unmap_all` returns the sum of every mapping, then 0: idempotent. Where
/// declared unsupported it is refused with `NotSupported` and unmaps nothing.
pub fn unmap_all_idempotent<F: Fixture>(f: &F) -> CaseResult {
    let s = scratch(f, 6)?;
    let p = s.page();
    let c = s.container();
    s.map_pages(iova(f, p, 0), 0, 1).context("map page 0")?;
    s.map_pages(iova(f, p, 2), 2, 2)
        .context("map pages [2, 4)")?;
    s.map_pages(iova(f, p, 5), 5, 1).context("map page 5")?;
    if f.capabilities().unmap_all {
        expect_eq(
            "unmap_all with 4 pages mapped",
            4 * p,
            c.unmap_all().context("first unmap_all")?,
        )?;
        expect_eq(
            "unmap_all of an empty container",
            0,
            c.unmap_all().context("second unmap_all")?,
        )?;
        expect_live(f, c, "after unmap_all", 0)?;
        s.map_pages(iova(f, p, 0), 0, 6)
            .context("map the whole window after unmap_all")?;
        Ok(())
    } else {
        expect_kind(
            "unmap_all (declared unsupported)",
            c.unmap_all(),
            &[ErrorKind::NotSupported],
        )?;
        let n = c
            .unmap_dma(iova(f, p, 0), 6 * p)
            .context("unmap the window after the refused unmap_all")?;
        expect_eq("bytes still mapped after the refused unmap_all", 4 * p, n)
    }
}

/// An unmap covering several mappings and gaps returns the sum of the mappings.
pub fn superset_unmap_returns_sum<F: Fixture>(f: &F) -> CaseResult {
    let s = scratch(f, 6)?;
    let p = s.page();
    let c = s.container();
    s.map_pages(iova(f, p, 1), 1, 1).context("map page 1")?;
    s.map_pages(iova(f, p, 3), 3, 2)
        .context("map pages [3, 5)")?;
    let n = c
        .unmap_dma(iova(f, p, 0), 6 * p)
        .context("unmap pages [0, 6)")?;
    expect_eq("bytes unmapped by the superset unmap", 3 * p, n)?;
    expect_kind(
        "the same superset unmap again",
        c.unmap_dma(iova(f, p, 0), 6 * p),
        &[ErrorKind::NotMapped],
    )?;
    Ok(())
}

/// The last page of the last usable IOVA range maps and unmaps.
pub fn last_page_of_last_range<F: Fixture>(f: &F) -> CaseResult {
    let s = scratch(f, 1)?;
    let p = s.page();
    let info = s.container().iommu_info().context("iommu_info")?;
    let last = *info
        .iova_ranges
        .last()
        .ok_or_else(|| fail("iommu_info reports no usable IOVA range"))?;
    let at = last.end.wrapping_add(1).wrapping_sub(p) & !(p - 1);
    ensure!(
        at >= last.start,
        "the last IOVA range {last} holds no whole page of {p:#x} bytes"
    );
    s.map_pages(at, 0, 1)
        .context(format_args!("map the last page {at:#x} of {last}"))?;
    let n = s
        .container()
        .unmap_dma(at, p)
        .context(format_args!("unmap the last page {at:#x}"))?;
    expect_eq("bytes unmapped", p, n)
}

/// A page outside every usable IOVA range (a reserved hole, or past the end)
/// does not map, and neither does a mapping straddling a range's end.
pub fn outside_iova_ranges<F: Fixture>(f: &F) -> CaseResult {
    let s = scratch(f, 2)?;
    let p = s.page();
    let info = s.container().iommu_info().context("iommu_info")?;
    let Some((range, outside)) = first_page_outside(&info.iova_ranges, p) else {
        return Err(not_applicable(
            "the usable IOVA ranges cover the whole 64-bit space: no page lies outside",
        ));
    };
    expect_kind(
        format!("map of page {outside:#x}, outside every range"),
        s.map_pages(outside, 0, 1),
        OUTSIDE_RANGES,
    )?;
    if outside == range.end.wrapping_add(1) && outside >= p {
        let straddle = outside - p;
        if straddle >= range.start {
            expect_kind(
                format!("map of two pages from {straddle:#x}, straddling the end of {range}"),
                s.map_pages(straddle, 0, 2),
                OUTSIDE_RANGES,
            )?;
        }
    }
    expect_live(f, s.container(), "after the refused maps", 0)
}

/// The first page-aligned page after a usable range that no range contains,
/// with the range it follows.
fn first_page_outside(ranges: &[IovaRange], p: u64) -> Option<(IovaRange, u64)> {
    ranges.iter().find_map(|r| {
        let aligned = r.end.checked_add(1)?.checked_next_multiple_of(p)?;
        let last = aligned.checked_add(p - 1)?;
        let touches = ranges.iter().any(|o| o.start <= last && aligned <= o.end);
        (!touches).then_some((*r, aligned))
    })
}

/// A map or unmap whose `iova + len` wraps past 2^64 is `Overflow`.
pub fn iova_wrap_overflows<F: Fixture>(f: &F) -> CaseResult {
    let s = scratch(f, 2)?;
    let p = s.page();
    let top = 0u64.wrapping_sub(p);
    expect_kind(
        format!("map of two pages at {top:#x} (wraps)"),
        s.map_pages(top, 0, 2),
        &[ErrorKind::Overflow],
    )?;
    expect_kind(
        format!("unmap of two pages at {top:#x} (wraps)"),
        s.container().unmap_dma(top, 2 * p),
        &[ErrorKind::Overflow],
    )?;
    expect_live(f, s.container(), "after the refused map", 0)
}

/// A misaligned IOVA, length or host address, or a zero length, is `InvalidArgument`.
pub fn misalignment<F: Fixture>(f: &F) -> CaseResult {
    let s = scratch(f, 2)?;
    let p = s.page();
    let at = iova(f, p, 0);
    let rw = DmaAccess::ReadWrite;
    let invalid = &[ErrorKind::InvalidArgument];
    expect_kind(
        "map at a misaligned IOVA (+1)",
        s.map(at + 1, 0, p, rw),
        invalid,
    )?;
    expect_kind(
        "map at an IOVA off by half a page",
        s.map(at + p / 2, 0, p, rw),
        invalid,
    )?;
    expect_kind(
        "map of a length that is not a page multiple",
        s.map(at, 0, p + p / 2, rw),
        invalid,
    )?;
    expect_kind("map of length 0", s.map(at, 0, 0, rw), invalid)?;
    expect_kind(
        "map of a misaligned host address (+1)",
        s.map(at, 1, p, rw),
        invalid,
    )?;
    expect_live(f, s.container(), "after the refused maps", 0)
}

/// A read-only mapping is honoured by device DMA: edu reads from it, and its
/// write into it changes nothing (the IOMMU faults; where the fixture can
/// see faults, one is recorded).
pub fn read_only_mapping_honoured<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dp = dma_page(&c)?;
    let ro = c
        .map_buffer(iova(f, dp, 0), filled(dp, 0x11)?, DmaAccess::ReadOnly)
        .context("map the read-only buffer")?;
    let other = c
        .map_buffer(iova(f, dp, 1), filled(dp, 0xee)?, DmaAccess::ReadOnly)
        .context("map the source buffer")?;
    let sink = c
        .map_buffer(iova(f, dp, 2), filled(dp, 0)?, DmaAccess::ReadWrite)
        .context("map the sink buffer")?;
    let e = edu(f, &c)?;
    // The device may read a read-only mapping.
    e.dma(Direction::ToDevice, ro.iova(), 0, 4096)
        .context("DMA from the read-only mapping into the device")?;
    e.dma(Direction::ToRam, sink.iova(), 0, 4096)
        .context("DMA from the device into the sink")?;
    expect_all(
        "the sink after a DMA of the read-only mapping's contents (the device must be able to read it)",
        &sink.buffer().to_vec()[..4096],
        0x11,
    )?;
    // It may not write one.
    e.dma(Direction::ToDevice, other.iova(), 0, 4096)
        .context("load 0xee into the device")?;
    let faults_before = f.iommu_faults(&c);
    e.dma(Direction::ToRam, ro.iova(), 0, 4096)
        .context("DMA from the device into the read-only mapping")?;
    expect_all(
        "the read-only mapping after the device wrote to it",
        &ro.buffer().to_vec(),
        0x11,
    )?;
    expect_fault_recorded(
        f,
        &c,
        faults_before,
        "a device write to a read-only mapping",
    )
}

/// Where the fixture declares faults observable, checks one more was recorded.
pub(crate) fn expect_fault_recorded<F: Fixture>(
    f: &F,
    c: &F::Container,
    before: Option<u64>,
    what: &str,
) -> CaseResult {
    if !f.capabilities().iommu_faults_observable {
        return Ok(());
    }
    match (before, f.iommu_faults(c)) {
        (Some(b), Some(a)) if a > b => Ok(()),
        (Some(b), Some(a)) => Err(fail(format!(
            "no IOMMU fault recorded for {what}: the count went from {b} to {a}"
        ))),
        _ => Err(fail(
            "the fixture declares IOMMU faults observable but iommu_faults() returned None",
        )),
    }
}

/// The IOMMU info is coherent, the fixture's IOVA window fits in it, and
/// the fixture's fault counter exists exactly when it declares one.
pub fn iommu_info_sane<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let info = c.iommu_info().context("iommu_info")?;
    let p = info
        .min_page_size()
        .ok_or_else(|| fail("page-size bitmap is empty"))?;
    ensure!(
        !info.iova_ranges.is_empty(),
        "no usable IOVA range reported"
    );
    for r in &info.iova_ranges {
        ensure!(r.start <= r.end, "IOVA range {r} ends before it starts");
    }
    for w in info.iova_ranges.windows(2) {
        ensure!(
            w[0].end < w[1].start,
            "IOVA ranges {} and {} are not ascending and disjoint",
            w[0],
            w[1]
        );
    }
    if let Some(listed) = info.caps.iter().find_map(|cap| match cap {
        Capability::IovaRanges(r) => Some(r),
        _ => None,
    }) {
        expect_eq(
            "IOVA ranges in the capability chain vs iova_ranges",
            &info.iova_ranges,
            listed,
        )?;
    }
    let caps = f.capabilities();
    match (caps.iommu_faults_observable, f.iommu_faults(&c)) {
        (true, None) => {
            return Err(fail(
                "the fixture declares IOMMU faults observable but iommu_faults() returns None",
            ))
        }
        (false, Some(_)) => {
            return Err(fail(
                "the fixture counts IOMMU faults but declares them unobservable",
            ))
        }
        _ => {}
    }
    let base = caps.iova_base;
    ensure!(
        base % p == 0,
        "the fixture's IOVA base {base:#x} is not aligned to the IOMMU page {p:#x}"
    );
    ensure!(
        info.iova_ranges
            .iter()
            .any(|r| r.contains(base, IOVA_WINDOW)),
        "the fixture's IOVA window [{base:#x}, +{IOVA_WINDOW:#x}) is not inside one usable range"
    );
    ensure!(
        base + IOVA_WINDOW <= 1 << 28,
        "the fixture's IOVA window ends above 256 MiB, out of edu's 28-bit DMA reach"
    );
    Ok(())
}

/// Where the IOMMU reports how many more mappings fit, each map takes one and
/// each unmap gives it back.
pub fn dma_avail_counts<F: Fixture>(f: &F) -> CaseResult {
    let s = scratch(f, 2)?;
    let p = s.page();
    let c = s.container();
    let avail = || -> Result<Option<u32>, CaseError> {
        Ok(c.iommu_info().context("iommu_info")?.dma_avail)
    };
    let Some(start) = avail()? else {
        return Err(not_applicable(
            "the IOMMU does not report how many mappings remain (dma_avail)",
        ));
    };
    s.map_pages(iova(f, p, 0), 0, 1).context("map page 0")?;
    s.map_pages(iova(f, p, 1), 1, 1).context("map page 1")?;
    expect_eq(
        "dma_avail after two maps",
        Some(start.saturating_sub(2)),
        avail()?,
    )?;
    c.unmap_dma(iova(f, p, 0), 2 * p).context("unmap both")?;
    expect_eq("dma_avail after unmapping both", Some(start), avail()?)
}

/// The IOMMU reports dirty-tracking support exactly when the fixture declares it.
pub fn dirty_tracking_declared<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let info = c.iommu_info().context("iommu_info")?;
    let migration = info.caps.iter().find_map(|cap| match cap {
        Capability::Migration { pgsize_bitmap, .. } => Some(*pgsize_bitmap),
        _ => None,
    });
    match (f.capabilities().dirty_tracking, migration) {
        (true, Some(bitmap)) => {
            ensure!(
                bitmap & info.page_sizes != 0,
                "dirty tracking reports page sizes {bitmap:#x}, none of the IOMMU's {:#x}",
                info.page_sizes
            );
            Ok(())
        }
        (false, None) => Ok(()),
        (true, None) => Err(fail(
            "the fixture declares dirty tracking, but the IOMMU info has no migration capability",
        )),
        (false, Some(_)) => Err(fail(
            "the IOMMU info has a migration (dirty-tracking) capability the fixture does not declare",
        )),
    }
}

/// While dirty tracking runs, a device write shows in the bitmap of its
/// mapping: exactly the page written where the IOMMU can tell
/// ([`Capabilities::dirty_pages_exact`](crate::fixture::Capabilities::dirty_pages_exact)),
/// else (type1 with devices that pin no pages) every page of the mapping,
/// on every read. A read clears exact bits; with tracking stopped a read
/// is refused. A container that does not declare dirty tracking refuses
/// both to start it and to read a bitmap with `NotSupported`.
pub fn dirty_pages_track_device_writes<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dp = dma_page(&c)?;
    if !f.capabilities().dirty_tracking {
        // With a device attached, as a VMM asks: type1 has no IOMMU before.
        let _edu = edu(f, &c)?;
        expect_kind(
            "starting dirty tracking the IOMMU does not offer",
            c.set_dirty_tracking(true),
            &[ErrorKind::NotSupported],
        )?;
        return expect_kind(
            "reading dirty pages the IOMMU does not track",
            c.read_dirty(iova(f, dp, 0), 4 * dp, dp, false),
            &[ErrorKind::NotSupported],
        )
        .map(drop);
    }
    let ram = c
        .map_buffer(iova(f, dp, 0), filled(4 * dp, 0)?, DmaAccess::ReadWrite)
        .context("map four pages")?;
    let e = edu(f, &c)?;
    c.set_dirty_tracking(true).context("start dirty tracking")?;
    let read = |what: &str| {
        c.read_dirty(ram.iova(), 4 * dp, dp, false)
            .map(|b| b.dirty().collect::<Vec<u64>>())
            .context(format_args!("read the dirty bitmap ({what})"))
    };
    let before = read("before any DMA")?;
    let written = ram.iova() + 2 * dp;
    e.dma(Direction::ToRam, written, 0, 64)
        .context("DMA from the device into page 2")?;
    let every: Vec<u64> = (0..4).map(|p| ram.iova() + p * dp).collect();
    let (first, second) = (read("after the DMA")?, read("again")?);
    if f.capabilities().dirty_pages_exact {
        expect_eq("dirty pages before any DMA", Vec::<u64>::new(), before)?;
        expect_eq("dirty pages after the DMA", vec![written], first)?;
        expect_eq(
            "dirty pages after a clearing read",
            Vec::<u64>::new(),
            second,
        )?;
    } else {
        expect_eq(
            "dirty pages after the DMA (the whole mapping)",
            every.clone(),
            first,
        )?;
        expect_eq(
            "dirty pages on the next read (the whole mapping)",
            every,
            second,
        )?;
    }
    c.set_dirty_tracking(false).context("stop dirty tracking")?;
    expect_kind(
        "a read with tracking stopped",
        c.read_dirty(ram.iova(), 4 * dp, dp, false),
        &[ErrorKind::InvalidArgument],
    )?;
    Ok(())
}

/// `map_buffer`'s guard: the mapping lives as long as the guard, a refused
/// map hands the buffer back unharmed, and `unmap` returns it with its data.
pub fn map_buffer_guard<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dp = dma_page(&c)?;
    let at = iova(f, dp, 0);
    let guard = c
        .map_buffer(at, filled(dp, 0x42)?, DmaAccess::ReadWrite)
        .context("map_buffer")?;
    expect_eq("guard IOVA", at, guard.iova())?;
    expect_eq("guard length", dp, guard.len())?;
    match c.map_buffer(at, filled(dp, 0x24)?, DmaAccess::ReadWrite) {
        Ok(m) => {
            return Err(fail(format!(
                "a second map_buffer at {at:#x} succeeded: {m:?}"
            )))
        }
        Err(e) => {
            ensure!(
                e.kind() == ErrorKind::AlreadyMapped,
                "second map_buffer at the same IOVA: expected AlreadyMapped, got {}",
                e.describe()
            );
            expect_all(
                "the buffer a refused map_buffer handed back",
                &e.buffer.to_vec(),
                0x24,
            )?;
        }
    }
    drop(guard);
    expect_kind(
        "unmap after the guard was dropped",
        c.unmap_dma(at, dp),
        &[ErrorKind::NotMapped],
    )?;
    let guard = c
        .map_buffer(at, filled(dp, 0x77)?, DmaAccess::ReadWrite)
        .context("map_buffer at the freed IOVA")?;
    let back = guard.unmap().context("DmaMapping::unmap")?;
    expect_all(
        "the buffer DmaMapping::unmap returned",
        &back.to_vec(),
        0x77,
    )?;
    expect_kind(
        "unmap after DmaMapping::unmap",
        c.unmap_dma(at, dp),
        &[ErrorKind::NotMapped],
    )?;
    Ok(())
}
