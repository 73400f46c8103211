//! The facade on the real kernel, in the lane's guest (`bash tests/vm/lane.sh`
//! with `vfio-hal-facade` in `GUEST_TEST_PACKAGES`); ignored on the host.
//!
//! What only a real kernel shows: the automatic backend choice against the
//! nodes the booted kernel really has, both real backends opening edu
//! through `open`, sysfs discovery of the lane's devices, the
//! non-destructive conformance selection passing on each backend through
//! the type-erased `RealFixture`, and (feature `vm-memory`, which the lane
//! turns on) a vm-memory `GuestMemoryMmap` mapped into each real backend's
//! container for edu's DMA engine, unmapped on drop.

use vfio_hal::prelude::*;
use vfio_hal_conformance::runner::run_cases_to;
use vfio_hal_facade::conformance::{select, RealFixture, Selection};
use vfio_hal_facade::host::{check_device, offers};
use vfio_hal_facade::{open, Backend, Host, OpenSpec};
use vfio_hal_guest_tests::{self as lane, KernelFlavour};

const EDU_ID_VALUE: u32 = 0x0100_00ed;

fn edu() -> String {
    lane::lane_env(lane::EDU_BDF)
}

fn msix() -> String {
    lane::lane_env(lane::MSIX_BDF)
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn sysfs_shows_the_lanes_devices_bound_and_viable() {
    let host = Host::default();
    let names = host.vfio_device_names();
    // The spare edu is there unless another test binary has already
    // unplugged it (the lane runs the binaries in the order of their
    // hashed names).
    let spare = lane::lane_env(lane::SPARE_BDF);
    let present = lane::pci_device_dir(&spare).exists().then_some(spare);
    for bdf in [edu(), msix()].into_iter().chain(present) {
        assert!(names.contains(&bdf), "{bdf} not in {names:?}");
        let d = check_device(&host, &bdf).expect("usable");
        assert!(d.group.is_some() && d.bound_to_vfio(), "{d:?}");
    }
    let offers = offers(&host);
    let legacy = offers.iter().find(|o| o.backend == Backend::Legacy);
    assert!(legacy.is_some_and(|o| o.available), "{offers:?}");
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn auto_picks_iommufd_where_the_cdev_and_dev_iommu_exist() {
    let host = Host::default();
    let device = check_device(&host, &edu()).expect("edu usable");
    let expect = if device.cdev.is_some() && host.iommu_node().exists() {
        Backend::Iommufd
    } else {
        Backend::Legacy
    };
    let opened = open(&OpenSpec::new(edu())).expect("auto opens edu");
    println!(
        "auto on the {:?} kernel: {} ({})",
        lane::kernel_flavour(),
        opened.backend,
        opened.reason
    );
    assert_eq!(opened.backend, expect, "{}", opened.reason);
    let bar0 = opened.device.region(0).expect("bar0");
    assert_eq!(bar0.read_at::<u32>(0).expect("id"), EDU_ID_VALUE);
}

/// Hides the cdev by pointing sysfs at a copy of edu's directory without
/// `vfio-dev` (what a kernel without `VFIO_DEVICE_CDEV` shows): the
/// automatic choice takes the legacy backend, says why, and it opens the
/// real device through its group.
#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn hiding_the_cdev_makes_auto_pick_legacy_which_then_works() {
    let bdf = edu();
    let fake = std::env::temp_dir().join(format!("facade-choice-{}", std::process::id()));
    let dir = fake.join("bus/pci/devices").join(&bdf);
    std::fs::create_dir_all(&dir).expect("mkdir fake sysfs");
    let real = lane::pci_device_dir(&bdf);
    for link in ["iommu_group", "driver"] {
        let target = std::fs::read_link(real.join(link)).expect("edu's sysfs link");
        let target = real.join(target);
        std::os::unix::fs::symlink(&target, dir.join(link)).expect("symlink");
    }
    let host = Host::new(&fake, "/dev");
    let opened = open(&OpenSpec::new(bdf.clone()).with_host(host)).expect("legacy opens edu");
    println!(
        "auto with the cdev hidden: {} ({})",
        opened.backend, opened.reason
    );
    assert_eq!(opened.backend, Backend::Legacy, "{}", opened.reason);
    assert!(
        opened.reason.contains("no VFIO device cdev"),
        "{}",
        opened.reason
    );
    assert_eq!(opened.device.device_id().expect("device id"), 0x11e8);
    drop(opened);
    std::fs::remove_dir_all(&fake).expect("clean up");
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn both_real_backends_open_edu_by_request() {
    for backend in [Backend::Legacy, Backend::Iommufd] {
        let opened = open(&OpenSpec::new(edu()).with_backend(backend))
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        assert_eq!(opened.backend, backend);
        opened.device.set_bus_master(true).expect("bus master");
        let bar0 = opened.device.region(0).expect("bar0");
        assert_eq!(bar0.read_at::<u32>(0).expect("id"), EDU_ID_VALUE);
        bar0.write_at::<u32>(4, 0x5a5a_0f0f).expect("liveness");
        assert_eq!(bar0.read_at::<u32>(4).expect("liveness"), !0x5a5a_0f0f);
        let info = opened.container.iommu_info().expect("iommu info");
        assert!(!info.iova_ranges.is_empty(), "{backend}: {info:?}");
    }
}

/// The file each real backend gives a hypervisor: the group node on the
/// type1 path, the device cdev on the iommufd path; a registration (here
/// with the mock hypervisor, which keeps KVM-VFIO's bookkeeping) adds it
/// and removes it on drop.
#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn each_real_backend_gives_the_hypervisor_its_vfio_file() {
    use std::os::fd::AsRawFd;
    use vfio_hal::hypervisor::VfioFileRegistration;
    use vfio_hal_facade::mock::MockHypervisor;

    for (backend, prefix) in [
        (Backend::Legacy, "/dev/vfio/"),
        (Backend::Iommufd, "/dev/vfio/devices/vfio"),
    ] {
        let opened = open(&OpenSpec::new(edu()).with_backend(backend))
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        let file = opened.device.vfio_file().expect("vfio_file");
        let link = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .expect("readlink")
            .display()
            .to_string();
        let number = link
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("{backend}: {link}"));
        assert!(
            !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()),
            "{backend}: {link}"
        );
        let vm = MockHypervisor::new();
        let registration = VfioFileRegistration::new(&vm, &opened.device).expect("register");
        assert_eq!(vm.files(), [link], "{backend}");
        drop(opened);
        registration
            .remove()
            .expect("remove after the device closed");
        assert!(vm.files().is_empty(), "{backend}");
    }
}

/// The tracer around each real backend records a driver's calls as it
/// does around the mock: the device opened through it, register reads
/// with the values the device returned, a write with its value, a DMA map
/// and unmap with their IOVA and length, an MSI route, in call order.
#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn the_tracer_records_a_drivers_calls_on_each_real_backend() {
    use vfio_hal::decorate::trace::{Outcome, Tracer};
    use vfio_hal::decorate::{Args, Op};
    use vfio_hal::eventfd::{EventFd, EventFdExt};
    use vfio_hal::{Container, DmaAccess, DmaBuffer};

    fn drive<C: Container>(backend: &str, container: C) {
        let tracer = Tracer::new(container);
        let dev = tracer.open_device(&edu()).expect("open edu");
        dev.set_bus_master(true).expect("bus master");
        tracer.clear();
        let bar0 = dev.region(0).expect("bar0");
        assert_eq!(bar0.read_at::<u32>(0).expect("id"), EDU_ID_VALUE);
        bar0.write_at::<u32>(4, 0x1234_5678).expect("liveness");
        assert_eq!(bar0.read_at::<u32>(4).expect("liveness"), !0x1234_5678);
        let mapping = tracer
            .map_buffer(
                0x10_0000,
                DmaBuffer::new(4096).expect("buffer"),
                DmaAccess::ReadWrite,
            )
            .expect("map");
        drop(mapping);
        let efd = EventFd::nonblocking().expect("eventfd");
        let msi = dev.irq(vfio_hal::irq::index::MSI).expect("msi");
        msi.set_eventfd(0, Some(efd.as_fd())).expect("route");
        msi.disable().expect("disable");

        let events = tracer.events();
        let ops: Vec<Op> = events.iter().map(|e| e.op).collect();
        assert_eq!(
            ops,
            [
                Op::Region,
                Op::RegionRead,
                Op::RegionWrite,
                Op::RegionRead,
                Op::MapDma,
                Op::UnmapDma,
                Op::Irq,
                Op::SetEventfd,
                Op::Disable,
            ],
            "{backend}:\n{tracer}"
        );
        assert!(
            events.iter().all(|e| e.outcome.is_ok()),
            "{backend}:\n{tracer}"
        );
        assert_eq!(
            events[1].outcome,
            Outcome::Value(u64::from(EDU_ID_VALUE)),
            "{backend}"
        );
        assert!(
            matches!(
                events[2].args,
                Args::Access {
                    offset: 4,
                    len: 4,
                    value: Some(0x1234_5678),
                    ..
                }
            ),
            "{backend}: {:?}",
            events[2].args
        );
        assert_eq!(
            events[3].outcome,
            Outcome::Value(u64::from(!0x1234_5678u32)),
            "{backend}"
        );
        assert!(
            matches!(
                events[4].args,
                Args::Map {
                    iova: 0x10_0000,
                    len: 4096,
                    ..
                }
            ),
            "{backend}: {:?}",
            events[4].args
        );
        assert_eq!(
            events[5].outcome,
            Outcome::Value(4096),
            "{backend}: unmapped bytes"
        );
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "{backend}: {seqs:?}"
        );
        println!("{backend}:\n{tracer}");
    }

    drive(
        "legacy",
        vfio_hal_facade::legacy::LegacyContainer::open().expect("type1 container"),
    );
    drive(
        "iommufd",
        vfio_hal_facade::iommufd::IoasContainer::open().expect("IOAS container"),
    );
}

/// The MSI-X lookups on a real device: the lane's NVMe has its table
/// inside BAR0; edu has MSI only.
#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn msix_layout_and_one_area_mmap_on_both_backends() {
    use vfio_hal::irq::index as irq_index;
    use vfio_hal::Protection;
    for backend in [Backend::Legacy, Backend::Iommufd] {
        let opened = open(&OpenSpec::new(msix()).with_backend(backend))
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        let device = &opened.device;
        let layout = device
            .msix_layout()
            .expect("a well-formed capability")
            .expect("the NVMe has MSI-X");
        assert_eq!(
            layout.table_size,
            device.irq(irq_index::MSIX).expect("msix").info().count,
            "{backend}: {layout:?}"
        );
        let bar = device.region(layout.table_bar).expect("table BAR");
        let page = vfio_hal::memory::page_size();
        let areas = layout
            .mappable_areas(bar.info(), page)
            .expect("page size is a power of two");
        for a in &areas {
            let first = layout.table_offset & !(page - 1);
            assert!(
                a.offset + a.size <= first || a.offset >= layout.table_offset + layout.table_len(),
                "{backend}: {a:?} covers the table of {layout:?}"
            );
        }
        assert_eq!(
            device
                .file_offset(layout.table_bar, layout.table_offset)
                .expect("inside"),
            bar.info().offset + layout.table_offset
        );
        if !bar.info().mappable_areas().is_empty() {
            let area = bar.mmap_area(0, Protection::Read).expect("one area");
            assert_eq!(area.len(), bar.info().mappable_areas()[0].size);
            assert!(!area.is_writable());
        }
        drop(opened);
        let edu = open(&OpenSpec::new(edu()).with_backend(backend)).expect("edu");
        assert_eq!(edu.device.msix_layout().expect("config"), None);
    }
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn the_non_destructive_suite_passes_on_every_backend() {
    let mut failed = Vec::new();
    for backend in [Backend::Legacy, Backend::Iommufd] {
        let fixture = RealFixture::probe(Host::default(), backend, edu(), Some(msix()))
            .unwrap_or_else(|e| panic!("{backend}: fixture: {e}"));
        let expected_mode = match (backend, lane::kernel_flavour()) {
            (Backend::Legacy, KernelFlavour::Default) => "legacy-type1v2",
            (Backend::Legacy, KernelFlavour::Compat) => "legacy-iommufd-compat",
            _ => "iommufd",
        };
        assert_eq!(
            vfio_hal_conformance::Fixture::mode(&fixture),
            expected_mode,
            "the probe tells the legacy modes apart"
        );
        let plan = select(
            vfio_hal_conformance::cases::all::<RealFixture>(),
            &Selection::NonDestructive,
        )
        .expect("selects");
        let summary = run_cases_to(&fixture, &plan.run, &mut std::io::stdout().lock());
        if !summary.success() || summary.passed() < 30 {
            failed.push(format!("{backend}: {summary}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("; "));
}

/// vm-memory interop on the real kernel: a `GuestMemoryMmap` mapped at
/// IOVA = GPA into each real backend's container, edu's DMA engine moving
/// bytes between two guest regions by guest-physical address, the result
/// read back through vm-memory, and the mappings gone once the guard drops.
#[cfg(feature = "vm-memory")]
mod guest_memory {
    use super::*;
    use vfio_hal::{DmaAccess, DmaBuffer};
    use vfio_hal_conformance::edu::{Direction, EduDriver};
    use vfio_hal_facade::guest_memory::map_guest_memory;
    use vfio_hal_facade::Opened;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    /// Two guest RAM regions, below edu's 28-bit DMA mask and clear of the
    /// x86 MSI window: `(guest address, length)`.
    const RAM: [(u64, usize); 2] = [(0x10_0000, 0x1_0000), (0x20_0000, 0x4000)];
    const LEN: usize = 256;

    #[test]
    #[cfg_attr(
        not(vfio_hal_guest),
        ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
    )]
    fn edu_dmas_guest_memory_by_guest_address_and_drop_unmaps() {
        let (src, dst) = (RAM[0].0 + 0x2040, RAM[1].0 + 0x100);
        for (salt, backend) in [(0x11u8, Backend::Legacy), (0x77, Backend::Iommufd)] {
            let Opened {
                device, container, ..
            } = open(&OpenSpec::new(edu()).with_backend(backend))
                .unwrap_or_else(|e| panic!("{backend}: {e}"));
            let ram =
                GuestMemoryMmap::<()>::from_ranges(&RAM.map(|(gpa, len)| (GuestAddress(gpa), len)))
                    .expect("guest memory");
            let pattern: Vec<u8> = (0..LEN).map(|i| (i as u8).wrapping_mul(7) ^ salt).collect();
            ram.write_slice(&pattern, GuestAddress(src))
                .expect("write the source");

            let dma = map_guest_memory(&container, &ram, DmaAccess::ReadWrite)
                .unwrap_or_else(|e| panic!("{backend}: map guest memory: {e}"));
            let mapped: Vec<(u64, u64)> = RAM.iter().map(|&(g, l)| (g, l as u64)).collect();
            assert_eq!(dma.mappings(), mapped, "{backend}");
            let edu = EduDriver::open(device).expect("edu driver");
            // Guest RAM -> edu's buffer -> the other guest region, by GPA.
            edu.dma(Direction::ToDevice, src, 0, LEN as u64)
                .unwrap_or_else(|e| panic!("{backend}: DMA from guest RAM: {e}"));
            edu.dma(Direction::ToRam, dst, 0, LEN as u64)
                .unwrap_or_else(|e| panic!("{backend}: DMA to guest RAM: {e}"));
            let mut got = vec![0u8; LEN];
            ram.read_slice(&mut got, GuestAddress(dst))
                .expect("read the destination");
            assert_eq!(
                got, pattern,
                "{backend}: the device's write, seen through vm-memory"
            );

            drop(dma);
            // Unmapped on drop: each guest range's IOVAs take a new mapping.
            for (iova, len) in RAM {
                let buffer = DmaBuffer::new(len).expect("buffer");
                let m = container
                    .map_buffer(iova, buffer, DmaAccess::ReadWrite)
                    .unwrap_or_else(|e| panic!("{backend}: {iova:#x} still mapped? {e}"));
                m.unmap().expect("unmap");
            }
        }
    }
}

/// The `mini_vmm` example's VMM state, shared rather than copied.
#[path = "../examples/mini_vmm/vmm.rs"]
mod mini_vmm;

/// The `mini_vmm` example's `Vmm` on the real devices of each real backend:
/// guest RAM mapped at IOVA = GPA, edu's one MSI vector and the NVMe's
/// MSI-X vectors (table in BAR0) routed from the MSI-X layout, edu's raised
/// interrupt arriving on its eventfd, and after the teardown the guest RAM's
/// IOVAs mapping again in the container it hands back. The copy engine's DMA
/// is the example's, on the mock.
#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn the_mini_vmm_routes_interrupts_and_maps_guest_ram_on_real_devices() {
    use std::time::Duration;
    use vfio_hal::irq::index as irq_index;
    use vfio_hal_facade::Opened;

    const RAM: [(u64, usize); 2] = [(0x10_0000, 0x1_0000), (0x20_0000, 0x4000)];
    const EDU_IRQ_RAISE: u64 = 0x60;
    const EDU_IRQ_ACK: u64 = 0x64;
    for backend in [Backend::Legacy, Backend::Iommufd] {
        for bdf in [edu(), msix()] {
            let Opened {
                device, container, ..
            } = open(&OpenSpec::new(bdf.clone()).with_backend(backend))
                .unwrap_or_else(|e| panic!("{backend} {bdf}: {e}"));
            let mut vmm = mini_vmm::Vmm::new(container);
            let info = vmm.container().iommu_info().expect("iommu info");
            for (gpa, len) in RAM {
                assert!(
                    info.iova_ranges.iter().any(|r| r.contains(gpa, len as u64)),
                    "{backend}: guest RAM at {gpa:#x} outside {:?}",
                    info.iova_ranges
                );
                vmm.add_ram(gpa, len)
                    .unwrap_or_else(|e| panic!("{backend}: {e}"));
            }
            let ranges = vmm.ram_ranges();
            vmm.write_guest(RAM[1].0 + 8, b"guest")
                .expect("write guest RAM");
            assert_eq!(
                vmm.read_guest(RAM[1].0 + 8, 5).expect("read guest RAM"),
                b"guest"
            );
            let slot = vmm
                .attach(&bdf, device)
                .unwrap_or_else(|e| panic!("{backend} {bdf}: attach: {e}"));
            let dev = vmm.device(slot);
            let irqs = &dev.interrupts;
            if bdf == edu() {
                assert_eq!(
                    (irqs.index, irqs.vectors.len(), irqs.msix),
                    (irq_index::MSI, 1, None),
                    "{backend}: edu has one MSI vector, no MSI-X"
                );
                let bar0 = dev.device.region(0).expect("bar0");
                bar0.write_at::<u32>(EDU_IRQ_RAISE, 1).expect("raise");
                let signals = vmm
                    .wait_interrupt(slot, 0, Duration::from_secs(5))
                    .expect("wait");
                bar0.write_at::<u32>(EDU_IRQ_ACK, 1).expect("ack");
                assert_eq!(signals, 1, "{backend}: edu's MSI on its eventfd");
            } else {
                let layout = irqs.msix.expect("the NVMe has MSI-X");
                assert_eq!(irqs.index, irq_index::MSIX, "{backend}");
                assert_eq!(irqs.vectors.len() as u32, layout.table_size, "{backend}");
                assert_eq!(layout.table_bar, 0, "{backend}: {layout:?}");
                println!(
                    "{backend}: NVMe {} MSI-X vectors, table at BAR0 {:#x}, {} direct areas",
                    layout.table_size,
                    layout.table_offset,
                    irqs.direct_areas.len()
                );
            }
            let container = vmm
                .shutdown()
                .unwrap_or_else(|e| panic!("{backend} {bdf}: shutdown: {e}"));
            // A type1 container has no IOMMU without a group: open the
            // device again, then the same IOVAs must map (nothing left).
            let again = container
                .open_device(&bdf)
                .unwrap_or_else(|e| panic!("{backend} {bdf}: reopen: {e}"));
            mini_vmm::assert_unmapped(&container, &ranges)
                .unwrap_or_else(|e| panic!("{backend} {bdf}: {e}"));
            drop(again);
        }
    }
}
