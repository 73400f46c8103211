//! The mock IOMMU's dirty tracking through the `Container` trait: device
//! writes through a mapping mark the pages they touch, device reads do
//! not; a read clears unless it keeps (iommufd's `NO_CLEAR`); tracking off,
//! a page size below the IOMMU's, and bad ranges are refused; unmapping
//! forgets what was written there.
//!
//! Run: `cargo test -p vfio-hal-mock --test dirty`.

use vfio_hal::prelude::*;
use vfio_hal::{Capability, DmaAccess, DmaBuffer, DmaMapping, ErrorKind};
use vfio_hal_mock::models::edu::{reg, Edu};
use vfio_hal_mock::{DirtyReads, IommuConfig, MockContainer, MockDevice};

const PAGE: u64 = 4096;
const BASE: u64 = 0x10_0000;

fn dirty(c: &MockContainer, len: u64, page: u64, keep: bool) -> Vec<u64> {
    c.read_dirty(BASE, len, page, keep)
        .expect("read dirty")
        .dirty()
        .collect()
}

/// An edu plugged into `c`, opened, with bus mastering on.
fn edu_on(c: &MockContainer) -> MockDevice {
    c.plug("edu", Edu::new()).expect("plug");
    let edu = c.open_device("edu").expect("edu");
    edu.set_bus_master(true).expect("bus master");
    edu
}

/// `pages` pages of fresh RAM mapped read-write at `iova`.
fn map_ram(c: &MockContainer, iova: u64, pages: u64) -> DmaMapping<'_, MockContainer> {
    c.map_buffer(
        iova,
        DmaBuffer::new((pages * PAGE) as usize).expect("buffer"),
        DmaAccess::ReadWrite,
    )
    .expect("map")
}

/// edu's DMA engine moves `len` bytes between its buffer and `iova`,
/// towards RAM when `to_ram`.
fn edu_dma(edu: &impl Device, iova: u64, len: u64, to_ram: bool) {
    let bar = edu.region(0).expect("BAR0");
    let buffer = reg::DMA_START;
    let (src, dst) = if to_ram {
        (buffer, iova)
    } else {
        (iova, buffer)
    };
    bar.write_at::<u64>(reg::DMA_SRC, src).expect("src");
    bar.write_at::<u64>(reg::DMA_DST, dst).expect("dst");
    bar.write_at::<u64>(reg::DMA_CNT, len).expect("count");
    let dir = if to_ram { reg::EDU_DMA_DIR } else { 0 };
    bar.write_at::<u64>(reg::DMA_CMD, reg::EDU_DMA_RUN | dir)
        .expect("go");
    // The automatic clock completes the transfer on the next access.
    assert_eq!(
        bar.read_at::<u64>(reg::DMA_CMD).expect("cmd") & reg::EDU_DMA_RUN,
        0
    );
}

#[test]
fn device_writes_mark_exactly_their_pages_and_reads_clear_them() {
    let c = MockContainer::new();
    let edu = edu_on(&c);
    let _ram = map_ram(&c, BASE, 4);
    c.set_dirty_tracking(true).expect("start");
    assert!(
        dirty(&c, 4 * PAGE, PAGE, false).is_empty(),
        "clean at start"
    );

    edu_dma(&edu, BASE + 2 * PAGE + 0x10, 64, true);
    edu_dma(&edu, BASE, 64, false);
    assert_eq!(
        dirty(&c, 4 * PAGE, PAGE, true),
        [BASE + 2 * PAGE],
        "only the write"
    );
    assert_eq!(
        dirty(&c, 4 * PAGE, PAGE, false),
        [BASE + 2 * PAGE],
        "kept by the last read"
    );
    assert!(
        dirty(&c, 4 * PAGE, PAGE, false).is_empty(),
        "cleared by the last read"
    );

    // A write across a page boundary marks both; a larger page size
    // reports the pages that contain them.
    edu_dma(&edu, BASE + PAGE - 8, 16, true);
    assert_eq!(dirty(&c, 4 * PAGE, 2 * PAGE, true), [BASE]);
    assert_eq!(dirty(&c, 4 * PAGE, PAGE, false), [BASE, BASE + PAGE]);

    c.set_dirty_tracking(false).expect("stop");
    let e = c
        .read_dirty(BASE, 4 * PAGE, PAGE, false)
        .expect_err("not tracking");
    assert_eq!(
        (e.kind(), e.errno()),
        (ErrorKind::InvalidArgument, Some(libc::EINVAL))
    );
}

#[test]
fn bad_reads_are_refused_and_unmapping_forgets() {
    let c = MockContainer::new();
    c.set_dirty_tracking(true).expect("start");
    let e = c
        .read_dirty(BASE, 4 * PAGE, PAGE / 2, false)
        .expect_err("below the IOMMU page");
    assert_eq!(e.errno(), Some(libc::EINVAL));
    for (iova, len) in [(BASE + 1, PAGE), (BASE, PAGE + 1), (BASE, 0)] {
        let e = c
            .read_dirty(iova, len, PAGE, false)
            .expect_err("unaligned or empty");
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{iova:#x}+{len:#x}");
    }
    let e = c
        .read_dirty(u64::MAX - PAGE + 1, 2 * PAGE, PAGE, false)
        .expect_err("wraps");
    assert_eq!(e.kind(), ErrorKind::Overflow);

    let edu = edu_on(&c);
    let ram = map_ram(&c, BASE, 1);
    edu_dma(&edu, BASE, 4, true);
    drop(ram);
    assert!(
        dirty(&c, PAGE, PAGE, false).is_empty(),
        "unmapped: forgotten"
    );
}

/// type1's rules (`DirtyReads::Type1`): only the IOMMU page size, every
/// read clears, and a range may not start or end inside a mapping.
#[test]
fn type1_flavoured_reads_follow_type1s_rules() {
    let c = MockContainer::with_config(IommuConfig {
        dirty_reads: DirtyReads::Type1,
        ..IommuConfig::default()
    })
    .expect("container");
    let edu = edu_on(&c);
    let _low = map_ram(&c, BASE, 2);
    let _high = map_ram(&c, BASE + 2 * PAGE, 2);
    c.set_dirty_tracking(true).expect("start");
    edu_dma(&edu, BASE + 3 * PAGE, 8, true);
    let refused = |iova, len, page, keep, what| {
        let e = c.read_dirty(iova, len, page, keep).expect_err(what);
        assert_eq!(
            (e.kind(), e.errno()),
            (ErrorKind::InvalidArgument, Some(libc::EINVAL)),
            "{what}"
        );
    };
    refused(BASE, 4 * PAGE, PAGE, true, "keep");
    refused(
        BASE,
        4 * PAGE,
        2 * PAGE,
        false,
        "a page size above the IOMMU's",
    );
    refused(
        BASE + PAGE,
        3 * PAGE,
        PAGE,
        false,
        "starts inside a mapping",
    );
    refused(BASE, 3 * PAGE, PAGE, false, "ends inside a mapping");
    assert_eq!(
        dirty(&c, 4 * PAGE, PAGE, false),
        [BASE + 3 * PAGE],
        "both mappings whole: the write"
    );
    assert_eq!(
        c.read_dirty(BASE + 2 * PAGE, 2 * PAGE, PAGE, false)
            .expect("one mapping whole")
            .count(),
        0,
        "the read cleared"
    );
}

#[test]
fn the_iommu_info_reports_dirty_tracking_for_its_page_size() {
    let c = MockContainer::new();
    let info = c.iommu_info().expect("info");
    let migration = info.caps.iter().find_map(|cap| match cap {
        Capability::Migration { pgsize_bitmap, .. } => Some(*pgsize_bitmap),
        _ => None,
    });
    assert_eq!(migration, Some(info.page_sizes));
}

/// A migratable edu logs its own DMA writes (`DMA_LOGGING_*`, as migration
/// drivers offer); plain edu, like vfio-pci's, has no logging.
#[test]
fn device_dma_logging_reports_the_pages_the_device_wrote() {
    use vfio_hal::device::feature::{DMA_LOGGING_REPORT, DMA_LOGGING_START, DMA_LOGGING_STOP};
    use vfio_hal::FeatureSupport;
    let c = MockContainer::new();
    c.plug("plain", Edu::new()).expect("plug");
    c.plug("edu", Edu::new().migratable()).expect("plug");
    let plain = c.open_device("plain").expect("plain edu");
    let e = plain
        .dma_logging_start(PAGE, &[(BASE, 4 * PAGE)])
        .expect_err("no logging");
    assert_eq!(
        (e.kind(), e.errno()),
        (ErrorKind::NotSupported, Some(libc::ENOTTY))
    );
    let e = plain
        .dma_logging_report(BASE, 4 * PAGE, PAGE)
        .expect_err("no logging");
    assert_eq!(
        e.target(),
        Some(&vfio_hal::Target::Feature(DMA_LOGGING_REPORT))
    );

    let edu = c.open_device("edu").expect("edu");
    let probe = |f| edu.probe_feature(f).expect("probe");
    assert_eq!(
        probe(DMA_LOGGING_START),
        FeatureSupport {
            get: false,
            set: true
        }
    );
    assert_eq!(
        probe(DMA_LOGGING_STOP),
        FeatureSupport {
            get: false,
            set: true
        }
    );
    assert_eq!(
        probe(DMA_LOGGING_REPORT),
        FeatureSupport {
            get: true,
            set: false
        }
    );
    edu.set_bus_master(true).expect("bus master");
    let _ram = map_ram(&c, BASE, 4);
    let e = edu.dma_logging_start(PAGE, &[]).expect_err("no range");
    assert_eq!(e.errno(), Some(libc::EINVAL));
    assert_eq!(
        edu.dma_logging_start(PAGE, &[(BASE, 2 * PAGE)])
            .expect("start"),
        PAGE
    );
    edu_dma(&edu, BASE + PAGE + 8, 8, true);
    edu_dma(&edu, BASE + 3 * PAGE, 8, true); // outside the logged range
    let report = |what| {
        edu.dma_logging_report(BASE, 4 * PAGE, PAGE)
            .unwrap_or_else(|e| panic!("{what}: {e}"))
            .dirty()
            .collect::<Vec<_>>()
    };
    assert_eq!(report("first"), [BASE + PAGE]);
    assert!(report("second").is_empty(), "a report clears");
    edu.dma_logging_stop().expect("stop");
    let e = edu
        .dma_logging_report(BASE, 4 * PAGE, PAGE)
        .expect_err("stopped");
    assert_eq!(e.errno(), Some(libc::EINVAL));
}
