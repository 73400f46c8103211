//! F. Device DMA through the IOMMU, driven by the edu DMA engine.
//!
//! A DMA aimed at an unmapped IOVA must not touch memory: the real IOMMU
//! faults (and the kernel only logs it), so the cases check buffers filled
//! with patterns; where the fixture can count faults they check that too.
//! Buffers are one DMA page (host or IOMMU page, the larger); transfers are
//! edu's 4 KiB.

use vfio_hal::{Container, DmaAccess, PciConfig};

use super::c_dma::expect_fault_recorded;
use super::{dma_page, edu, expect_all, filled, fresh, iova};
use crate::edu::{Direction, DMA_MASK};
use crate::ensure;
use crate::fixture::Fixture;
use crate::outcome::{CaseResult, Context};

/// edu moves data RAM → device → RAM through the IOMMU, with its MSI, and
/// the data arrives intact (whole buffer and a short transfer).
pub fn edu_round_trip<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dp = dma_page(&c)?;
    let mut e = edu(f, &c)?;
    e.enable_msi().context("route MSI")?;
    e.round_trip(&c, iova(f, dp, 0), 4096)
        .context("round trip of 4096 bytes")?;
    e.round_trip(&c, iova(f, dp, 8), 100)
        .context("round trip of 100 bytes")?;
    Ok(())
}

/// DMA aimed at unmapped IOVAs — between and after two mapped buffers, in
/// both directions — corrupts no memory, and the device still completes.
pub fn dma_at_unmapped_iova<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dp = dma_page(&c)?;
    let a = c
        .map_buffer(iova(f, dp, 0), filled(dp, 0xa5)?, DmaAccess::ReadWrite)
        .context("map buffer A at page 0")?;
    let b = c
        .map_buffer(iova(f, dp, 2), filled(dp, 0x5a)?, DmaAccess::ReadWrite)
        .context("map buffer B at page 2")?;
    let e = edu(f, &c)?;
    e.dma(Direction::ToDevice, a.iova(), 0, 4096)
        .context("load the device buffer from A")?;
    let before = f.iommu_faults(&c);
    e.dma(Direction::ToRam, iova(f, dp, 1), 0, 4096)
        .context("DMA into the unmapped page between A and B")?;
    expect_all(
        "buffer A after a DMA into the gap after it",
        &a.buffer().to_vec(),
        0xa5,
    )?;
    expect_all(
        "buffer B after a DMA into the gap before it",
        &b.buffer().to_vec(),
        0x5a,
    )?;
    expect_fault_recorded(f, &c, before, "a device write to an unmapped IOVA")?;
    let before = f.iommu_faults(&c);
    e.dma(Direction::ToDevice, iova(f, dp, 3), 0, 4096)
        .context("DMA from the unmapped page after B")?;
    expect_all(
        "buffer A after a DMA from an unmapped page",
        &a.buffer().to_vec(),
        0xa5,
    )?;
    expect_all(
        "buffer B after a DMA from an unmapped page",
        &b.buffer().to_vec(),
        0x5a,
    )?;
    expect_fault_recorded(f, &c, before, "a device read from an unmapped IOVA")?;
    // The device is still usable afterwards.
    e.round_trip(&c, iova(f, dp, 4), 4096)
        .context("round trip after the faults")?;
    Ok(())
}

/// After an unmap the device can no longer reach the memory: a DMA to the
/// old IOVA leaves the (still allocated) buffer untouched.
pub fn dma_after_unmap<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dp = dma_page(&c)?;
    let at = iova(f, dp, 0);
    let src = c
        .map_buffer(iova(f, dp, 2), filled(dp, 0xcc)?, DmaAccess::ReadOnly)
        .context("map the source")?;
    let target = c
        .map_buffer(at, filled(dp, 0x33)?, DmaAccess::ReadWrite)
        .context("map the target")?;
    let e = edu(f, &c)?;
    e.dma(Direction::ToDevice, src.iova(), 0, 4096)
        .context("load 0xcc into the device")?;
    e.dma(Direction::ToRam, at, 0, 4096)
        .context("DMA into the mapped target")?;
    expect_all(
        "target while mapped",
        &target.buffer().to_vec()[..4096],
        0xcc,
    )?;
    let kept = target.unmap().context("unmap the target")?;
    kept.fill(0x33);
    let before = f.iommu_faults(&c);
    e.dma(Direction::ToRam, at, 0, 4096)
        .context("DMA to the IOVA after its unmap")?;
    expect_all(
        "the buffer after a DMA to its old IOVA",
        &kept.to_vec(),
        0x33,
    )?;
    expect_fault_recorded(f, &c, before, "a device write to an unmapped IOVA")
}

/// edu masks DMA addresses to 28 bits: a transfer to `iova + 2^28` lands at `iova`.
pub fn edu_dma_mask<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dp = dma_page(&c)?;
    let src = c
        .map_buffer(iova(f, dp, 2), filled(dp, 0x3c)?, DmaAccess::ReadOnly)
        .context("map the source")?;
    let dst = c
        .map_buffer(iova(f, dp, 0), filled(dp, 0)?, DmaAccess::ReadWrite)
        .context("map the destination")?;
    let e = edu(f, &c)?;
    e.dma(Direction::ToDevice, src.iova(), 0, 4096)
        .context("load the device buffer")?;
    let aliased = dst.iova() + DMA_MASK + 1;
    ensure!(
        aliased & DMA_MASK == dst.iova(),
        "the destination IOVA {:#x} is above edu's 28-bit reach",
        dst.iova()
    );
    e.dma(Direction::ToRam, aliased, 0, 4096)
        .context(format_args!("DMA to {aliased:#x} (= destination + 2^28)"))?;
    expect_all(
        "the destination after a DMA to its 2^28 alias",
        &dst.buffer().to_vec()[..4096],
        0x3c,
    )
}

/// With bus mastering off the device cannot reach memory: a DMA moves
/// nothing; with it back on, the same DMA lands.
pub fn dma_needs_bus_master<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dp = dma_page(&c)?;
    let src = c
        .map_buffer(iova(f, dp, 2), filled(dp, 0x69)?, DmaAccess::ReadOnly)
        .context("map the source")?;
    let dst = c
        .map_buffer(iova(f, dp, 0), filled(dp, 0x96)?, DmaAccess::ReadWrite)
        .context("map the destination")?;
    let e = edu(f, &c)?;
    e.dma(Direction::ToDevice, src.iova(), 0, 4096)
        .context("load the device buffer")?;
    e.device()
        .set_bus_master(false)
        .context("disable bus mastering")?;
    e.dma(Direction::ToRam, dst.iova(), 0, 4096)
        .context("DMA with bus mastering off")?;
    expect_all(
        "the destination after a DMA with bus mastering off",
        &dst.buffer().to_vec(),
        0x96,
    )?;
    e.device()
        .set_bus_master(true)
        .context("enable bus mastering")?;
    e.dma(Direction::ToRam, dst.iova(), 0, 4096)
        .context("DMA with bus mastering on")?;
    expect_all(
        "the destination after a DMA with bus mastering on",
        &dst.buffer().to_vec()[..4096],
        0x69,
    )
}
