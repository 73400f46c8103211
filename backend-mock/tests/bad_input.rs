//! The mock half of the bad-input table in `docs/RELIABILITY.md`: every row
//! is one case below, named as in the table. Each makes one bad call through
//! the hal traits on a `MockContainer` with edu plugged and opened (and a
//! 2-page mapping at [`MAPPED`]), and checks the `ErrorKind` and, where the
//! mock answers as the kernel does, the errno. A refused call must also
//! leave the IOMMU as it was and must not panic.
//!
//! Run: `cargo test -p vfio-hal-mock --test bad_input`.

mod common;

use std::fs::File;
use std::os::fd::AsFd;

use common::EDU;
use rstest::rstest;
use vfio_hal::eventfd::{EventFd, EventFdExt};
use vfio_hal::irq::index;
use vfio_hal::pci::{cfg, region};
use vfio_hal::prelude::*;
use vfio_hal::{
    Container, DmaAccess, DmaBuffer, ErrorKind, FeatureOp, IovaRange, IrqAction, IrqData, IrqSet,
    Result,
};
use vfio_hal_mock::models::edu::{self, reg, Edu};
use vfio_hal_mock::{IommuConfig, MockContainer, MockDevice};

const PAGE: u64 = 4096;
/// IOVA of the fixture's 2-page mapping.
const MAPPED: u64 = 0x10_0000;

/// A container with edu open, a 2-page mapping at [`MAPPED`] backed by the
/// first two pages of `mem`, and host memory for further maps.
struct Fx {
    // Field order is drop order: the container (and with it every mapping)
    // goes before the memory the mappings point at.
    c: MockContainer,
    edu: MockDevice,
    mem: DmaBuffer,
}

impl Fx {
    fn new() -> Self {
        let c = MockContainer::new();
        c.plug(EDU, Edu::new()).expect("plug edu");
        let edu = c.open_device(EDU).expect("open edu");
        let mem = DmaBuffer::new(8 * PAGE as usize).expect("host memory");
        let fx = Self { c, edu, mem };
        map(&fx.c, fx.host(0), MAPPED, 2 * PAGE).expect("fixture mapping");
        fx
    }

    /// Host address `offset` bytes into the fixture's memory.
    fn host(&self, offset: usize) -> *mut u8 {
        self.mem.as_ptr().wrapping_add(offset)
    }
}

/// `map_dma_raw` of `[host, host + len)` at `iova`, read/write.
fn map(c: &MockContainer, host: *mut u8, iova: u64, len: u64) -> Result<()> {
    // SAFETY: every host range the cases pass lies inside `Fx::mem`, which
    // outlives every container that maps it (the fixture's container is
    // dropped first, and one a case creates is dropped inside the case); the
    // null and misaligned ones are refused by the argument checks before use.
    unsafe { c.map_dma_raw(iova, host, len, DmaAccess::ReadWrite) }
}

fn bar0(fx: &Fx) -> Result<vfio_hal_mock::MockRegion> {
    fx.edu.region(region::BAR0)
}

fn eventfd_route(fx: &Fx, irq: u32) -> Result<()> {
    let efd = EventFd::nonblocking().expect("eventfd");
    fx.edu.irq(irq)?.set_eventfd(0, Some(efd.as_fd()))
}

#[rstest]
// ---- DMA map and unmap (the type1v2 / iommufd rules) ----
#[case::map_of_zero_bytes(|fx: &Fx| map(&fx.c, fx.host(0), 0x20_0000, 0),
    ErrorKind::InvalidArgument, Some(libc::EINVAL))]
#[case::map_at_unaligned_iova(|fx: &Fx| map(&fx.c, fx.host(0), 0x20_0800, PAGE),
    ErrorKind::InvalidArgument, Some(libc::EINVAL))]
#[case::map_of_unaligned_length(|fx: &Fx| map(&fx.c, fx.host(0), 0x20_0000, 0x800),
    ErrorKind::InvalidArgument, Some(libc::EINVAL))]
#[case::map_of_unaligned_host_address(|fx: &Fx| map(&fx.c, fx.host(1), 0x20_0000, PAGE),
    ErrorKind::InvalidArgument, Some(libc::EINVAL))]
#[case::map_of_null_host_address(|fx: &Fx| map(&fx.c, std::ptr::null_mut(), 0x20_0000, PAGE),
    ErrorKind::InvalidArgument, Some(libc::EFAULT))]
#[case::map_that_wraps(|fx: &Fx| map(&fx.c, fx.host(0), u64::MAX - (PAGE - 1), 2 * PAGE),
    ErrorKind::Overflow, Some(libc::EOVERFLOW))]
#[case::map_over_an_existing_mapping(|fx: &Fx| map(&fx.c, fx.host(2 * PAGE as usize), MAPPED + PAGE, PAGE),
    ErrorKind::AlreadyMapped, Some(libc::EEXIST))]
#[case::map_into_the_msi_window(|fx: &Fx| map(&fx.c, fx.host(0), 0xfee0_0000, PAGE),
    ErrorKind::InvalidArgument, Some(libc::EINVAL))]
#[case::map_above_the_address_width(|fx: &Fx| map(&fx.c, fx.host(0), 1 << 48, PAGE),
    ErrorKind::InvalidArgument, Some(libc::EINVAL))]
#[case::map_past_the_mapping_limit(|fx: &Fx| {
        let small = MockContainer::with_config(IommuConfig { max_mappings: 1, ..IommuConfig::default() })?;
        map(&small, fx.host(0), 0x20_0000, PAGE)?;
        map(&small, fx.host(PAGE as usize), 0x30_0000, PAGE)
    }, ErrorKind::Exhausted, Some(libc::ENOSPC))]
#[case::map_buffer_refused_hands_the_buffer_back(|fx: &Fx| {
        let buffer = DmaBuffer::new(PAGE as usize)?;
        match fx.c.map_buffer(MAPPED, buffer, DmaAccess::ReadWrite) {
            Ok(_) => Ok(()),
            Err(e) => {
                assert_eq!(e.buffer.len(), PAGE as usize, "the buffer comes back whole");
                Err(e.error)
            }
        }
    }, ErrorKind::AlreadyMapped, Some(libc::EEXIST))]
#[case::unmap_where_nothing_is_mapped(|fx: &Fx| fx.c.unmap_dma(0x40_0000, PAGE).map(drop),
    ErrorKind::NotMapped, Some(libc::ENOENT))]
#[case::unmap_that_splits_a_mapping(|fx: &Fx| fx.c.unmap_dma(MAPPED, PAGE).map(drop),
    ErrorKind::InvalidArgument, Some(libc::EINVAL))]
#[case::unmap_of_zero_bytes(|fx: &Fx| fx.c.unmap_dma(MAPPED, 0).map(drop),
    ErrorKind::InvalidArgument, Some(libc::EINVAL))]
#[case::unmap_at_unaligned_iova(|fx: &Fx| fx.c.unmap_dma(MAPPED + 0x800, PAGE).map(drop),
    ErrorKind::InvalidArgument, Some(libc::EINVAL))]
#[case::unmap_that_wraps(|fx: &Fx| fx.c.unmap_dma(u64::MAX - (PAGE - 1), 2 * PAGE).map(drop),
    ErrorKind::Overflow, Some(libc::EOVERFLOW))]
#[case::invalid_iommu_configuration(|_: &Fx| MockContainer::with_config(IommuConfig {
        iova_ranges: vec![IovaRange { start: 0x2000, end: 0x1000 }],
        ..IommuConfig::default()
    }).map(drop), ErrorKind::InvalidArgument, None)]
// ---- Regions ----
#[case::region_index_past_the_count(|fx: &Fx| fx.edu.region(fx.edu.info().num_regions).map(drop),
    ErrorKind::InvalidArgument, None)]
#[case::region_index_u32_max(|fx: &Fx| fx.edu.region(u32::MAX).map(drop), ErrorKind::InvalidArgument, None)]
#[case::bar_read_past_the_end(|fx: &Fx| bar0(fx)?.read_at::<u32>(edu::BAR0_SIZE).map(drop),
    ErrorKind::OutOfRange, None)]
#[case::bar_read_that_wraps(|fx: &Fx| bar0(fx)?.read_at::<u64>(u64::MAX - 3).map(drop),
    ErrorKind::Overflow, None)]
#[case::bar_write_across_the_end(|fx: &Fx| bar0(fx)?.write_at::<u32>(edu::BAR0_SIZE - 2, 0),
    ErrorKind::OutOfRange, None)]
#[case::config_read_past_config_space(|fx: &Fx| {
        let config = fx.edu.config()?;
        let size = config.info().size;
        config.read_at::<u8>(size).map(drop)
    }, ErrorKind::OutOfRange, None)]
#[case::read_of_the_absent_rom(|fx: &Fx| fx.edu.region(region::ROM)?.read_at::<u32>(0).map(drop),
    ErrorKind::NotSupported, None)]
#[case::write_to_the_absent_vga_region(|fx: &Fx| fx.edu.region(region::VGA)?.write_at::<u8>(0, 1),
    ErrorKind::NotSupported, None)]
#[case::bar_read_with_memory_decode_off(|fx: &Fx| {
        fx.edu.update_command(0, cfg::CMD_MEMORY)?;
        bar0(fx)?.read_at::<u32>(reg::ID).map(drop)
    }, ErrorKind::Io, Some(libc::EIO))]
#[case::mmap_of_a_register_bar(|fx: &Fx| bar0(fx)?.mmap().map(drop), ErrorKind::NotSupported, None)]
// ---- Interrupts ----
#[case::irq_index_past_the_count(|fx: &Fx| fx.edu.irq(fx.edu.info().num_irqs).map(drop),
    ErrorKind::InvalidArgument, None)]
#[case::mask_of_msi(|fx: &Fx| fx.edu.irq(index::MSI)?.mask(0, 1), ErrorKind::InvalidArgument, None)]
#[case::msi_vector_past_the_count(|fx: &Fx| fx.edu.irq(index::MSI)?.set_eventfd(1, None),
    ErrorKind::OutOfRange, None)]
#[case::err_route_on_conventional_pci(|fx: &Fx| eventfd_route(fx, index::ERR), ErrorKind::OutOfRange, None)]
#[case::msi_loopback_while_msi_is_off(|fx: &Fx| fx.edu.irq(index::MSI)?.trigger(0, 1),
    ErrorKind::InvalidArgument, Some(libc::EINVAL))]
#[cfg_attr(
    miri,
    ignore = "Miri's fds are not the host's: the mock's /proc/self/fd eventfd check misjudges them"
)]
#[case::msi_while_intx_is_enabled(|fx: &Fx| {
        let intx = EventFd::nonblocking().expect("eventfd");
        fx.edu.irq(index::INTX)?.set_eventfd(0, Some(intx.as_fd()))?;
        eventfd_route(fx, index::MSI)
    }, ErrorKind::InvalidArgument, Some(libc::EINVAL))]
#[cfg_attr(
    miri,
    ignore = "Miri's fds are not the host's: the mock's /proc/self/fd eventfd check misjudges them"
)]
#[case::route_to_a_file_that_is_not_an_eventfd(|fx: &Fx| {
        let null = File::open("/dev/null").expect("/dev/null");
        fx.edu.irq(index::MSI)?.set_eventfd(0, Some(null.as_fd()))
    }, ErrorKind::InvalidArgument, None)]
#[case::count_differs_from_the_eventfds(|fx: &Fx| fx.edu.irq(index::INTX)?.set_irqs(&IrqSet {
        index: index::INTX, start: 0, count: 2, action: IrqAction::Trigger, data: IrqData::EventFd(&[None]),
    }), ErrorKind::InvalidArgument, None)]
#[case::request_for_another_index(|fx: &Fx| fx.edu.irq(index::MSI)?.set_irqs(&IrqSet::disable(index::INTX)),
    ErrorKind::InvalidArgument, None)]
// ---- Device lifecycle ----
#[case::unsupported_device_feature(|fx: &Fx| fx.edu.feature(FeatureOp::Get, 0xfff0, &mut []),
    ErrorKind::NotSupported, Some(libc::ENOTTY))]
#[case::open_of_an_unknown_device(|fx: &Fx| fx.c.open_device("0000:00:1f.7").map(drop),
    ErrorKind::NotFound, Some(libc::ENOENT))]
#[case::open_of_an_open_device(|fx: &Fx| fx.c.open_device(EDU).map(drop), ErrorKind::Busy, Some(libc::EBUSY))]
#[case::plug_under_a_name_in_use(|fx: &Fx| fx.c.plug(EDU, Edu::new()), ErrorKind::Busy, Some(libc::EBUSY))]
#[case::unplug_of_an_unknown_device(|fx: &Fx| fx.c.unplug("0000:00:1f.7"), ErrorKind::NotFound, Some(libc::ENOENT))]
#[case::region_read_after_unplug(|fx: &Fx| {
        let bar = bar0(fx)?;
        fx.c.unplug(EDU)?;
        bar.read_at::<u32>(reg::ID).map(drop)
    }, ErrorKind::DeviceGone, Some(libc::ENODEV))]
#[case::region_lookup_after_unplug(|fx: &Fx| { fx.c.unplug(EDU)?; bar0(fx).map(drop) },
    ErrorKind::DeviceGone, Some(libc::ENODEV))]
#[case::irq_route_after_unplug(|fx: &Fx| {
        let msi = fx.edu.irq(index::MSI)?;
        fx.c.unplug(EDU)?;
        msi.disable()
    }, ErrorKind::DeviceGone, Some(libc::ENODEV))]
#[case::reset_after_unplug(|fx: &Fx| { fx.c.unplug(EDU)?; fx.edu.reset() },
    ErrorKind::DeviceGone, Some(libc::ENODEV))]
fn mock_call(
    #[case] call: fn(&Fx) -> Result<()>,
    #[case] kind: ErrorKind,
    #[case] errno: Option<i32>,
) {
    let fx = Fx::new();
    let before = fx.c.mappings();
    let err = call(&fx).expect_err("a bad call must fail");
    assert_eq!(err.kind(), kind, "{err}");
    if errno.is_some() {
        assert_eq!(err.errno(), errno, "{err}");
    }
    assert_eq!(
        fx.c.mappings(),
        before,
        "a refused call changed the mappings"
    );
    if fx.c.devices().iter().any(|d| d == EDU) {
        // The device still works (memory decode back on, for the case that cleared it).
        fx.edu
            .update_command(cfg::CMD_MEMORY, 0)
            .expect("config write");
        let id = bar0(&fx).and_then(|b| b.read_at::<u32>(reg::ID));
        assert_eq!(id.expect("edu still answers"), reg::ID_VALUE);
    }
}
