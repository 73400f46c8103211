//! H. The copy engine's DMA contract (kernel selftests' DMA drivers); only
//! for fixtures with a copy engine ([`Fixture::copy_engine`]).

use vfio_hal::{Container, DmaAccess, DmaBuffer};

use super::c_dma::expect_fault_recorded;
use super::{count_signals, dma_page, filled, fresh, iova, quiet, Dev};
use crate::copy_engine::{err, CopyEngineDriver, CopyStatus};
use crate::fixture::Fixture;
use crate::outcome::{expect_eq, fail, not_applicable, CaseError, CaseResult, Context};

fn engine<F: Fixture>(f: &F, c: &F::Container) -> Result<CopyEngineDriver<Dev<F>>, CaseError> {
    let Some(name) = f.copy_engine() else {
        return Err(not_applicable(
            "the fixture has no copy engine (its cases need the mock's register map)",
        ));
    };
    let dev = c
        .open_device(name)
        .context(format_args!("open_device({name})"))?;
    CopyEngineDriver::open(dev, f.capabilities().timeout).context("copy engine driver: open")
}

fn pattern(seed: u8) -> Vec<u8> {
    (0..4096u32)
        .map(|i| (i as u8).wrapping_mul(13) ^ seed)
        .collect()
}

/// A DMA page holding `data` at its start, zeros after.
fn buffer(dp: u64, data: &[u8]) -> Result<DmaBuffer, CaseError> {
    let b = filled(dp, 0)?;
    b.write(0, data).context("fill the buffer")?;
    Ok(b)
}

/// The first 4 KiB (what a copy moves) of a buffer.
fn head(b: &DmaBuffer) -> Vec<u8> {
    let mut v = b.to_vec();
    v.truncate(4096);
    v
}

/// Checks that no vector fired within the quiet window.
fn expect_no_interrupt<F: Fixture>(
    f: &F,
    drv: &CopyEngineDriver<Dev<F>>,
    what: &str,
) -> CaseResult {
    let msix = drv.msix();
    let mut counts = Vec::new();
    for v in 0..msix.vectors() {
        let fd = msix
            .eventfd(v)
            .ok_or_else(|| fail(format!("vector {v} has no eventfd")))?;
        counts.push(fd.wait(if v == 0 { quiet(f) } else { Default::default() })?);
    }
    expect_eq(
        format!("interrupts per vector after {what}"),
        vec![0; counts.len()],
        counts,
    )
}

/// A copy between two mapped buffers succeeds, moves the data, and raises
/// exactly one interrupt, on the requested vector.
pub fn copy_succeeds<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let drv = engine(f, &c)?;
    let dp = dma_page(&c)?;
    let data = pattern(0x5c);
    let src = c
        .map_buffer(iova(f, dp, 0), buffer(dp, &data)?, DmaAccess::ReadOnly)
        .context("map the source")?;
    let dst = c
        .map_buffer(
            iova(f, dp, 2),
            buffer(dp, &[0; 4096])?,
            DmaAccess::ReadWrite,
        )
        .context("map the destination")?;
    let vector = drv.msix().vectors() - 1;
    let status = drv.copy(src.iova(), dst.iova(), 4096, vector)?;
    expect_eq("copy status", CopyStatus::Done, status)?;
    expect_eq("copied data", data, head(dst.buffer()))?;
    let fd = drv
        .msix()
        .eventfd(vector)
        .ok_or_else(|| fail("no eventfd for the completion vector"))?;
    expect_eq(
        format!("interrupts on vector {vector}"),
        1,
        count_signals(f, fd, 1)?,
    )?;
    expect_no_interrupt(f, &drv, "the one expected completion interrupt")
}

/// A copy from an unmapped IOVA fails with a source fault, leaves the
/// destination untouched and raises no interrupt.
pub fn copy_from_unmapped<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let drv = engine(f, &c)?;
    let dp = dma_page(&c)?;
    let before = pattern(0x77);
    let dst = c
        .map_buffer(iova(f, dp, 2), buffer(dp, &before)?, DmaAccess::ReadWrite)
        .context("map the destination")?;
    let faults = f.iommu_faults(&c);
    let status = drv.copy(iova(f, dp, 0), dst.iova(), 4096, 0)?;
    expect_eq("copy status", CopyStatus::Failed(err::SRC_FAULT), status)?;
    expect_eq(
        "destination after the failed copy",
        before,
        head(dst.buffer()),
    )?;
    expect_no_interrupt(f, &drv, "a copy from an unmapped IOVA")?;
    expect_fault_recorded(f, &c, faults, "a copy from an unmapped IOVA")
}

/// A copy to an unmapped IOVA fails with a destination fault, corrupts no
/// mapped buffer and raises no interrupt.
pub fn copy_to_unmapped<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let drv = engine(f, &c)?;
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
    let status = drv.copy(src.iova(), iova(f, dp, 1), 4096, 0)?;
    expect_eq("copy status", CopyStatus::Failed(err::DST_FAULT), status)?;
    expect_eq("source after the failed copy", data, head(src.buffer()))?;
    expect_eq(
        "the mapped neighbour of the unmapped destination",
        neighbour_data,
        head(neighbour.buffer()),
    )?;
    expect_no_interrupt(f, &drv, "a copy to an unmapped IOVA")?;
    expect_fault_recorded(f, &c, faults, "a copy to an unmapped IOVA")
}

/// Every completed request raises exactly one interrupt on its vector.
pub fn one_msi_per_request<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let drv = engine(f, &c)?;
    let dp = dma_page(&c)?;
    let src = c
        .map_buffer(
            iova(f, dp, 0),
            buffer(dp, &pattern(1))?,
            DmaAccess::ReadOnly,
        )
        .context("map the source")?;
    let dst = c
        .map_buffer(
            iova(f, dp, 2),
            buffer(dp, &[0; 4096])?,
            DmaAccess::ReadWrite,
        )
        .context("map the destination")?;
    let vectors = drv.msix().vectors();
    let requests = 10u32;
    for i in 0..requests {
        let status = drv.copy(src.iova(), dst.iova(), 64 * (i + 1), i % vectors)?;
        expect_eq(format!("status of request {i}"), CopyStatus::Done, status)?;
    }
    for v in 0..vectors {
        let expected = u64::from((0..requests).filter(|i| i % vectors == v).count() as u32);
        let fd = drv
            .msix()
            .eventfd(v)
            .ok_or_else(|| fail(format!("vector {v} has no eventfd")))?;
        expect_eq(
            format!("interrupts on vector {v} for {requests} requests over {vectors} vectors"),
            expected,
            count_signals(f, fd, expected)?,
        )?;
    }
    Ok(())
}
