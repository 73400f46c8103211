//! A. Hygiene: bad indices, offsets and buffers give typed errors, never a panic.
//!
//! The kernel selftests' "region I/O errors instead of panics", plus the
//! bugs seen in the field (index getters returning 0 for a bad index,
//! `region_read(1, buf, u64::MAX - 1)` overflowing).

use vfio_hal::irq::index as irq_index;
use vfio_hal::pci::region as pci_region;
use vfio_hal::{Device, Error, ErrorKind, Irq, IrqData, IrqSet, PciConfig, Region, RegionExt};

use super::{edu_device, fresh};
use crate::ensure;
use crate::fixture::Fixture;
use crate::outcome::{expect_eq, expect_kind, not_applicable, CaseResult, Context};

fn expect_no_such_index<T: std::fmt::Debug>(
    step: &str,
    result: vfio_hal::Result<T>,
    count: u32,
) -> CaseResult {
    match expect_kind(step, result, &[ErrorKind::InvalidArgument])? {
        Error::NoSuchIndex { count: got, .. } => expect_eq(
            format!("{step}: the count carried by NoSuchIndex"),
            count,
            got,
        ),
        other => Err(crate::outcome::fail(format!(
            "{step}: expected Error::NoSuchIndex carrying the count {count}, got {other:?}"
        ))),
    }
}

/// A region index the device lacks is `InvalidArgument` carrying the region count.
pub fn bad_region_index<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dev = edu_device(f, &c)?;
    let n = dev.info().num_regions;
    expect_no_such_index("region(num_regions)", dev.region(n).map(|_| ()), n)?;
    expect_no_such_index("region(u32::MAX)", dev.region(u32::MAX).map(|_| ()), n)
}

/// An irq index the device lacks is `InvalidArgument` carrying the irq count.
pub fn bad_irq_index<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dev = edu_device(f, &c)?;
    let n = dev.info().num_irqs;
    expect_no_such_index("irq(num_irqs)", dev.irq(n).map(|_| ()), n)?;
    expect_no_such_index("irq(u32::MAX)", dev.irq(u32::MAX).map(|_| ()), n)
}

fn expect_out_of_range<T: std::fmt::Debug>(
    step: &str,
    result: vfio_hal::Result<T>,
    size: u64,
) -> CaseResult {
    match expect_kind(step, result, &[ErrorKind::OutOfRange])? {
        Error::OutOfRange { size: got, .. } => {
            expect_eq(format!("{step}: the size carried by OutOfRange"), size, got)
        }
        // A backend may report the kernel's answer instead of the HAL's check.
        Error::Sys { .. } => Ok(()),
        other => Err(crate::outcome::fail(format!(
            "{step}: expected Error::OutOfRange carrying the size {size:#x}, got {other:?}"
        ))),
    }
}

/// An access starting at or past the end of a region is `OutOfRange` with the size.
pub fn region_offset_past_end<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dev = edu_device(f, &c)?;
    for index in [pci_region::BAR0, pci_region::CONFIG] {
        let region = dev.region(index).context(format!("region({index})"))?;
        let size = region.info().size;
        ensure!(size >= 4, "region {index} is only {size} bytes");
        let mut buf = [0u8; 4];
        expect_out_of_range(
            &format!("region {index}: read 4 bytes at its size"),
            region.read(size, &mut buf),
            size,
        )?;
        expect_out_of_range(
            &format!("region {index}: write 4 bytes at its size"),
            region.write(size, &buf),
            size,
        )?;
        expect_out_of_range(
            &format!("region {index}: read_at::<u32> far past the end"),
            region.read_at::<u32>(size + 0x1000),
            size,
        )?;
    }
    Ok(())
}

/// An `offset + len` that does not fit in a u64 is `Overflow`, for reads and writes.
pub fn region_offset_overflow<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dev = edu_device(f, &c)?;
    for index in [pci_region::BAR0, pci_region::CONFIG] {
        let region = dev.region(index).context(format!("region({index})"))?;
        let mut buf = [0u8; 4];
        expect_kind(
            format!("region {index}: read 4 bytes at u64::MAX - 1"),
            region.read(u64::MAX - 1, &mut buf),
            &[ErrorKind::Overflow],
        )?;
        expect_kind(
            format!("region {index}: write 4 bytes at u64::MAX - 1"),
            region.write(u64::MAX - 1, &buf),
            &[ErrorKind::Overflow],
        )?;
        expect_kind(
            format!("region {index}: read_at::<u64>(u64::MAX)"),
            region.read_at::<u64>(u64::MAX),
            &[ErrorKind::Overflow],
        )?;
    }
    Ok(())
}

/// A buffer that starts inside a region but ends one byte past it is refused whole.
pub fn buffer_ending_past_end<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dev = edu_device(f, &c)?;
    let config = dev.config().context("config region")?;
    let size = config.info().size;
    let mut buf = [0u8; 8];
    expect_out_of_range(
        "config: read 8 bytes at size - 7",
        config.read(size - 7, &mut buf),
        size,
    )?;
    // A refused write must not have written its in-bounds part: the last
    // bytes of config space are read back before and after.
    let mut before = [0u8; 4];
    config
        .read(size - 4, &mut before)
        .context("read the last config dword")?;
    expect_out_of_range(
        "config: write 8 bytes at size - 4",
        config.write(size - 4, &[0xa5; 8]),
        size,
    )?;
    let mut after = [0u8; 4];
    config
        .read(size - 4, &mut after)
        .context("re-read the last config dword")?;
    expect_eq("last config dword after the refused write", before, after)
}

/// A buffer larger than the whole region is refused.
pub fn oversized_buffer<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dev = edu_device(f, &c)?;
    for index in [pci_region::BAR0, pci_region::CONFIG] {
        let region = dev.region(index).context(format!("region({index})"))?;
        let size = region.info().size;
        let len = usize::try_from(size + 1).map_err(|_| crate::outcome::fail("region too big"))?;
        let mut buf = vec![0u8; len];
        expect_out_of_range(
            &format!("region {index}: read {len} bytes at 0"),
            region.read(0, &mut buf),
            size,
        )?;
        expect_out_of_range(
            &format!("region {index}: write {len} bytes at 0"),
            region.write(0, &buf),
            size,
        )?;
    }
    Ok(())
}

/// An empty access at the very end of a region is in bounds; one byte further is not.
pub fn zero_length_access<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dev = edu_device(f, &c)?;
    let config = dev.config().context("config region")?;
    let size = config.info().size;
    config
        .read(size, &mut [])
        .context("empty read at the end of config space")?;
    config
        .write(size, &[])
        .context("empty write at the end of config space")?;
    expect_out_of_range(
        "empty read one byte past the end",
        config.read(size + 1, &mut []),
        size,
    )
}

/// Reading an unimplemented BAR (size 0) is refused, not served.
pub fn absent_region_access<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dev = edu_device(f, &c)?;
    let mut absent = None;
    for index in pci_region::BAR0..=pci_region::BAR5 {
        let region = dev.region(index).context(format!("region({index})"))?;
        if region.info().size == 0 {
            absent = Some(region);
            break;
        }
    }
    let Some(region) = absent else {
        return Err(not_applicable("edu implements every BAR"));
    };
    let index = region.info().index;
    let mut buf = [0u8; 4];
    expect_kind(
        format!("read 4 bytes of absent BAR {index}"),
        region.read(0, &mut buf),
        &[ErrorKind::OutOfRange, ErrorKind::NotSupported],
    )?;
    expect_kind(
        format!("write 4 bytes to absent BAR {index}"),
        region.write(0, &buf),
        &[ErrorKind::OutOfRange, ErrorKind::NotSupported],
    )?;
    Ok(())
}

/// Opening a device the container cannot reach is `NotFound`.
pub fn open_unknown_device<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    // A well-formed PCI address no fixture uses.
    expect_kind(
        "open_device(0000:ff:1f.7)",
        vfio_hal::Container::open_device(&c, "0000:ff:1f.7").map(|_| ()),
        &[ErrorKind::NotFound],
    )?;
    Ok(())
}

/// A `SET_IRQS` request whose count differs from its data is refused before it
/// reaches the device, and so is one whose index differs from the irq's.
pub fn malformed_irq_set<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let dev = edu_device(f, &c)?;
    let msi = dev.irq(irq_index::MSI).context("irq(MSI)")?;
    let flags = [true];
    let set = IrqSet {
        index: irq_index::MSI,
        start: 0,
        count: 2,
        action: vfio_hal::IrqAction::Trigger,
        data: IrqData::Bool(&flags),
    };
    expect_kind(
        "MSI trigger with count 2 and one bool",
        msi.set_irqs(&set),
        &[ErrorKind::InvalidArgument],
    )?;
    let other = IrqSet {
        index: irq_index::INTX,
        ..IrqSet::no_data(irq_index::MSI, vfio_hal::IrqAction::Trigger, 0, 1)
    };
    expect_kind(
        "a request for index 0 sent through the MSI irq",
        msi.set_irqs(&other),
        &[ErrorKind::InvalidArgument],
    )?;
    Ok(())
}
