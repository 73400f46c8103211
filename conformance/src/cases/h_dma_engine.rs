//! H. The DMA engines' contract ([`DmaEngine`], the kernel selftests'
//! driver interface), run once per engine of the fixture: a copy between
//! mapped buffers moves the data and raises exactly one MSI; a copy touching
//! an unmapped IOVA corrupts nothing, ends as done with its one MSI or as
//! faulted with none (an engine that reports faults always the latter),
//! and leaves the engine ready for the next; `send_msi` raises exactly one.

use vfio_hal::{Container, DmaAccess, DmaBuffer};

use super::c_dma::expect_fault_recorded;
use super::{count_signals, dma_page, filled, fresh, iova, quiet, Dev};
use crate::dma_engine::{Completion, DmaEngine, DriverMemory, EngineKind};
use crate::fixture::Fixture;
use crate::outcome::{expect_eq, fail, not_applicable, CaseError, CaseResult, Context};
use vfio_hal::eventfd::{EventFd, EventFdExt};

/// Bytes one copy of these cases moves: edu's buffer, and within one DMA page.
const COPY_LEN: u64 = 4096;

/// The fixture's engine of kind `K`, opened on a container, with the
/// fixture's driver window lent to it.
fn engine<'c, K: EngineKind, F: Fixture>(
    f: &F,
    c: &'c F::Container,
) -> Result<K::Driver<'c, F::Container>, CaseError> {
    let Some(name) = K::device_name(f) else {
        return Err(not_applicable(format!("the fixture has no {}", K::NAME)));
    };
    let dev: Dev<F> = c
        .open_device(name)
        .context(format_args!("open_device({name})"))?;
    let drv = K::open(
        dev,
        DriverMemory::for_fixture(f, c),
        f.capabilities().timeout,
    )
    .context("DMA engine driver: open")?;
    if drv.max_memcpy_size() < COPY_LEN {
        return Err(not_applicable(format!(
            "the engine copies at most {} bytes per request",
            drv.max_memcpy_size()
        )));
    }
    Ok(drv)
}

fn msi(drv: &impl DmaEngine) -> Result<&EventFd, CaseError> {
    drv.msi_eventfd()
        .ok_or_else(|| fail("the engine's driver has no MSI routed after open"))
}

/// One request, started and waited for.
fn memcpy(drv: &mut impl DmaEngine, src: u64, dst: u64, len: u64) -> Result<Completion, CaseError> {
    drv.memcpy_start(src, dst, len)
        .context(format_args!("memcpy_start({src:#x} -> {dst:#x}, {len})"))?;
    drv.memcpy_wait().context("memcpy_wait")
}

fn pattern(seed: u8) -> Vec<u8> {
    (0..COPY_LEN as u32)
        .map(|i| (i as u8).wrapping_mul(13) ^ seed)
        .collect()
}

/// A DMA page holding `data` at its start, zeros after.
fn buffer(dp: u64, data: &[u8]) -> Result<DmaBuffer, CaseError> {
    let b = filled(dp, 0)?;
    b.write(0, data).context("fill the buffer")?;
    Ok(b)
}

/// The first [`COPY_LEN`] bytes (what a copy moves) of a buffer.
fn head(b: &DmaBuffer) -> Vec<u8> {
    let mut v = b.to_vec();
    v.truncate(COPY_LEN as usize);
    v
}

/// What a copy from an unmapped IOVA may end as: faulted with the
/// destination as it was (`before`, seen now as `after`) and no MSI, or —
/// from an engine that does not report faults — done with exactly one MSI
/// (what it copied out is unspecified; its MSI is not).
fn check_copy_from_unmapped<F: Fixture>(
    f: &F,
    drv: &impl DmaEngine,
    done: Completion,
    before: &[u8],
    after: &[u8],
) -> CaseResult {
    match (drv.reports_faults(), done) {
        (_, Completion::Faulted(_)) => {
            expect_eq("destination after the faulted copy", before, after)?;
            expect_eq(
                "MSIs after a copy from an unmapped IOVA ended as faulted",
                0,
                msi(drv)?.wait(quiet(f))?,
            )?;
        }
        (true, Completion::Done) => {
            return Err(fail("a copy from an unmapped IOVA completed as done"))
        }
        (false, Completion::Done) => expect_eq(
            "MSIs after a copy from an unmapped IOVA the engine did not see fault",
            1,
            count_signals(f, msi(drv)?, 1)?,
        )?,
    }
    Ok(())
}

/// A copy between two mapped buffers completes, moves the data, and
/// raises exactly one MSI.
pub fn copy_succeeds<K: EngineKind, F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let mut drv = engine::<K, F>(f, &c)?;
    let dp = dma_page(&c)?;
    let data = pattern(0x5c);
    let src = c
        .map_buffer(iova(f, dp, 0), buffer(dp, &data)?, DmaAccess::ReadOnly)
        .context("map the source")?;
    let dst = c
        .map_buffer(iova(f, dp, 2), filled(dp, 0)?, DmaAccess::ReadWrite)
        .context("map the destination")?;
    let done = memcpy(&mut drv, src.iova(), dst.iova(), COPY_LEN)?;
    expect_eq("copy completion", Completion::Done, done)?;
    expect_eq("copied data", data, head(dst.buffer()))?;
    expect_eq("MSIs for one copy", 1, count_signals(f, msi(&drv)?, 1)?)
}

/// A copy from an unmapped IOVA corrupts nothing: ended as faulted, it
/// left the destination untouched and raises no MSI; ended as done (only
/// by an engine that does not report faults), it raises its one MSI.
pub fn copy_from_unmapped<K: EngineKind, F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let mut drv = engine::<K, F>(f, &c)?;
    let dp = dma_page(&c)?;
    let before = pattern(0x77);
    let dst = c
        .map_buffer(iova(f, dp, 2), buffer(dp, &before)?, DmaAccess::ReadWrite)
        .context("map the destination")?;
    let faults = f.iommu_faults(&c);
    let done = memcpy(&mut drv, iova(f, dp, 0), dst.iova(), COPY_LEN)?;
    check_copy_from_unmapped(f, &drv, done, &before, &head(dst.buffer()))?;
    expect_fault_recorded(f, &c, faults, "a copy from an unmapped IOVA")
}

/// A copy to an unmapped IOVA corrupts neither the source nor the mapped
/// neighbour of the destination; an engine that reports faults ends it as
/// faulted with no MSI, one that does not may also complete it with its
/// one MSI.
pub fn copy_to_unmapped<K: EngineKind, F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let mut drv = engine::<K, F>(f, &c)?;
    let dp = dma_page(&c)?;
    let data = pattern(0x21);
    let neighbour_data = pattern(0x99);
    let src = c
        .map_buffer(iova(f, dp, 0), buffer(dp, &data)?, DmaAccess::ReadOnly)
        .context("map the source")?;
    let neighbour = c
        .map_buffer(
            iova(f, dp, 2),
            buffer(dp, &neighbour_data)?,
            DmaAccess::ReadWrite,
        )
        .context("map the neighbour")?;
    let faults = f.iommu_faults(&c);
    let done = memcpy(&mut drv, src.iova(), iova(f, dp, 1), COPY_LEN)?;
    expect_eq("source after the copy", data, head(src.buffer()))?;
    expect_eq(
        "the mapped neighbour of the unmapped destination",
        neighbour_data,
        head(neighbour.buffer()),
    )?;
    let (expected, what) = match (drv.reports_faults(), done) {
        (_, Completion::Faulted(_)) => (0, "a copy ended as faulted"),
        (true, Completion::Done) => {
            return Err(fail("a copy to an unmapped IOVA completed as done"))
        }
        (false, Completion::Done) => (1, "a copy the engine did not see fault"),
    };
    expect_eq(
        format!("MSIs after {what}"),
        expected,
        count_signals(f, msi(&drv)?, expected)?,
    )?;
    expect_fault_recorded(f, &c, faults, "a copy to an unmapped IOVA")
}

/// Every completed request raises exactly one MSI: ten copies of growing
/// length, ten MSIs.
pub fn one_msi_per_request<K: EngineKind, F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let mut drv = engine::<K, F>(f, &c)?;
    let dp = dma_page(&c)?;
    let src = c
        .map_buffer(
            iova(f, dp, 0),
            buffer(dp, &pattern(1))?,
            DmaAccess::ReadOnly,
        )
        .context("map the source")?;
    let dst = c
        .map_buffer(iova(f, dp, 2), filled(dp, 0)?, DmaAccess::ReadWrite)
        .context("map the destination")?;
    let requests = 10u64;
    for i in 0..requests {
        let done = memcpy(&mut drv, src.iova(), dst.iova(), 64 * (i + 1))?;
        expect_eq(format!("completion of request {i}"), Completion::Done, done)?;
    }
    expect_eq(
        format!("MSIs for {requests} requests"),
        requests,
        count_signals(f, msi(&drv)?, requests)?,
    )
}

/// `send_msi` makes the device raise exactly one MSI, and moves no data.
pub fn send_msi_once<K: EngineKind, F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let mut drv = engine::<K, F>(f, &c)?;
    let dp = dma_page(&c)?;
    let mapped = c
        .map_buffer(iova(f, dp, 0), filled(dp, 0xe1)?, DmaAccess::ReadWrite)
        .context("map a buffer")?;
    drv.send_msi().context("send_msi")?;
    expect_eq("MSIs for one send_msi", 1, count_signals(f, msi(&drv)?, 1)?)?;
    super::expect_all(
        "a mapped buffer after send_msi",
        &mapped.buffer().to_vec(),
        0xe1,
    )
}

/// A faulted request leaves the engine ready for the next: a copy of two
/// pages (or the engine's most, if less) from an unmapped IOVA ends either
/// way the contract allows, and then a copy between mapped buffers moves
/// the data with its one MSI.
pub fn ready_after_a_fault<K: EngineKind, F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let mut drv = engine::<K, F>(f, &c)?;
    let dp = dma_page(&c)?;
    let len = drv.max_memcpy_size().min(2 * COPY_LEN);
    let span = len.next_multiple_of(dp);
    // The source page, an unmapped hole of `span`, one more unmapped page,
    // then the destination.
    let hole = iova(f, dp, 1);
    let data = pattern(0x42);
    let src = c
        .map_buffer(iova(f, dp, 0), buffer(dp, &data)?, DmaAccess::ReadOnly)
        .context("map the source")?;
    let before = vec![0xd5; span as usize];
    let dst = c
        .map_buffer(
            hole + span + dp,
            buffer(span, &before)?,
            DmaAccess::ReadWrite,
        )
        .context("map the destination")?;
    let done = memcpy(&mut drv, hole, dst.iova(), len)?;
    check_copy_from_unmapped(f, &drv, done, &before, &dst.buffer().to_vec())?;
    let next = memcpy(&mut drv, src.iova(), dst.iova(), COPY_LEN)?;
    expect_eq(
        "completion of the copy after the fault",
        Completion::Done,
        next,
    )?;
    expect_eq("data copied after the fault", data, head(dst.buffer()))?;
    expect_eq(
        "MSIs for the copy after the fault",
        1,
        count_signals(f, msi(&drv)?, 1)?,
    )
}
