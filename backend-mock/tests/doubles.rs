//! The test doubles (fault injector, tracer, expectation mocks) over a small
//! hand-written backend that records what reaches it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::rc::Rc;

use vfio_hal::decorate::inject::{
    sweep, FaultInjector, InjectedFault, Injection, OpFilter, Plan, Sweep,
};
use vfio_hal::decorate::trace::{Outcome, Tracer};
use vfio_hal::decorate::{Args, IrqCall, IrqDataSummary, Object, Op};
use vfio_hal::error::{check_bounds, check_index};
use vfio_hal::irq::{index, ParsedIrqData};
use vfio_hal::prelude::*;
use vfio_hal::{
    DeviceInfo, DmaAccess, DmaBuffer, Error, ErrorKind, FeatureOp, IommuInfo, IrqData, IrqInfo,
    IrqSet, MmapArea, RegionInfo, Result, Target,
};

// ---------------------------------------------------------------------------
// A fake backend: just enough behaviour to see what reaches it.
// ---------------------------------------------------------------------------

/// What the fake backend saw and holds.
#[derive(Debug, Default)]
struct World {
    /// Every call that reached the backend, by method name.
    calls: Vec<&'static str>,
    /// Live DMA mappings: iova -> len.
    mappings: BTreeMap<u64, u64>,
    /// Live eventfd routes: (irq index, vector) -> fd.
    routes: BTreeMap<(u32, u32), RawFd>,
    /// Open devices.
    open_devices: usize,
}

type Shared = Rc<RefCell<World>>;

fn saw(world: &Shared, call: &'static str) {
    world.borrow_mut().calls.push(call);
}

const DEVICE: &str = "0000:00:04.0";
const REGION_SIZE: u64 = 0x100;
const MSIX_VECTORS: u32 = 4;

#[derive(Debug, Clone, Default)]
struct FakeContainer(Shared);

impl FakeContainer {
    fn calls(&self) -> Vec<&'static str> {
        self.0.borrow().calls.clone()
    }

    /// Mappings, routes and devices still alive.
    fn leftovers(&self) -> (usize, usize, usize) {
        let w = self.0.borrow();
        (w.mappings.len(), w.routes.len(), w.open_devices)
    }
}

// SAFETY: a bookkeeping double: nothing it "maps" is reachable by any
// device, so every answer keeps the promise.
unsafe impl Container for FakeContainer {
    type Device = FakeDevice;

    fn iommu_info(&self) -> Result<IommuInfo> {
        saw(&self.0, "iommu_info");
        Ok(IommuInfo {
            page_sizes: 0x1000,
            ..IommuInfo::default()
        })
    }

    unsafe fn map_dma_raw(
        &self,
        iova: u64,
        _host: *mut u8,
        len: u64,
        _access: DmaAccess,
    ) -> Result<()> {
        saw(&self.0, "map_dma_raw");
        let mut w = self.0.borrow_mut();
        let end = iova.checked_add(len).ok_or(Error::Overflow {
            op: "map",
            target: Target::None,
            offset: iova,
            len,
        })?;
        if w.mappings.range(..end).any(|(&at, &l)| at + l > iova) {
            return Err(Error::sys("map", Target::Iova { iova, len }, libc::EEXIST));
        }
        w.mappings.insert(iova, len);
        Ok(())
    }

    fn unmap_dma(&self, iova: u64, len: u64) -> Result<u64> {
        saw(&self.0, "unmap_dma");
        match self.0.borrow_mut().mappings.remove(&iova) {
            Some(l) if l == len => Ok(len),
            _ => Err(Error::sys(
                "unmap",
                Target::Iova { iova, len },
                libc::ENOENT,
            )),
        }
    }

    fn unmap_all(&self) -> Result<u64> {
        saw(&self.0, "unmap_all");
        let mut w = self.0.borrow_mut();
        let total = w.mappings.values().sum();
        w.mappings.clear();
        Ok(total)
    }

    fn open_device(&self, name: &str) -> Result<FakeDevice> {
        saw(&self.0, "open_device");
        if name != DEVICE {
            let target = Target::Device(name.to_owned());
            return Err(Error::sys("open", target, libc::ENOENT));
        }
        self.0.borrow_mut().open_devices += 1;
        Ok(FakeDevice {
            world: Rc::clone(&self.0),
            info: DeviceInfo {
                name: name.to_owned(),
                flags: vfio_hal::device::flags::PCI | vfio_hal::device::flags::RESET,
                num_regions: 1,
                num_irqs: 3,
                caps: Vec::new(),
            },
        })
    }
}

#[derive(Debug)]
struct FakeDevice {
    world: Shared,
    info: DeviceInfo,
}

impl Drop for FakeDevice {
    fn drop(&mut self) {
        let mut w = self.world.borrow_mut();
        w.open_devices -= 1;
        // Closing a device fd tears down its irq routes, as vfio-pci does.
        w.routes.clear();
    }
}

impl Device for FakeDevice {
    type Region = FakeRegion;
    type Irq = FakeIrq;

    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn region(&self, index: u32) -> Result<FakeRegion> {
        saw(&self.world, "region");
        check_index(
            "region",
            Target::Region(index),
            index,
            self.info.num_regions,
        )?;
        Ok(FakeRegion {
            world: Rc::clone(&self.world),
            info: RegionInfo {
                index,
                flags: vfio_hal::region::flags::READ | vfio_hal::region::flags::WRITE,
                size: REGION_SIZE,
                ..RegionInfo::default()
            },
        })
    }

    fn irq(&self, index: u32) -> Result<FakeIrq> {
        saw(&self.world, "irq");
        check_index("irq", Target::Irq(index), index, self.info.num_irqs)?;
        Ok(FakeIrq {
            world: Rc::clone(&self.world),
            info: IrqInfo {
                index,
                flags: vfio_hal::irq::flags::EVENTFD | vfio_hal::irq::flags::MASKABLE,
                count: MSIX_VECTORS,
            },
        })
    }

    fn reset(&self) -> Result<()> {
        saw(&self.world, "reset");
        Ok(())
    }

    fn feature(&self, _op: FeatureOp, feature: u32, _data: &mut [u8]) -> Result<()> {
        saw(&self.world, "feature");
        Err(Error::sys(
            "feature",
            Target::Feature(feature),
            libc::ENOTTY,
        ))
    }

    fn keep_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }
}

#[derive(Debug)]
struct FakeRegion {
    world: Shared,
    info: RegionInfo,
}

impl Region for FakeRegion {
    fn info(&self) -> &RegionInfo {
        &self.info
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        saw(&self.world, "read");
        self.info.check_access("read", offset, buf.len() as u64)?;
        // Byte at offset o reads as o (the region is 256 bytes).
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (offset as usize + i) as u8;
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        saw(&self.world, "write");
        check_bounds(
            "write",
            Target::Region(self.info.index),
            offset,
            data.len() as u64,
            REGION_SIZE,
        )
    }

    fn mmap(&self) -> Result<Vec<MmapArea>> {
        saw(&self.world, "mmap");
        Err(vfio_hal::region::not_permitted(
            "mmap",
            self.info.index,
            "fake",
        ))
    }
}

#[derive(Debug)]
struct FakeIrq {
    world: Shared,
    info: IrqInfo,
}

impl FakeIrq {
    fn route(&self, start: u32, fds: &[Option<BorrowedFd<'_>>]) {
        let mut w = self.world.borrow_mut();
        for (vector, fd) in (start..).zip(fds) {
            match fd {
                Some(fd) => w.routes.insert((self.info.index, vector), fd.as_raw_fd()),
                None => w.routes.remove(&(self.info.index, vector)),
            };
        }
    }
}

impl Irq for FakeIrq {
    fn info(&self) -> IrqInfo {
        self.info
    }

    fn set_irqs(&self, set: &IrqSet<'_>) -> Result<()> {
        saw(&self.world, "set_irqs");
        set.validate(&self.info)?;
        // Check the payload round-trips, as a kernel would parse it.
        let parsed = IrqSet::parse(&set.to_bytes())?;
        match (set.data, parsed.data) {
            (IrqData::EventFd(fds), ParsedIrqData::EventFd(_)) => self.route(set.start, fds),
            (IrqData::None, ParsedIrqData::None) if set.count == 0 => {
                let index = self.info.index;
                self.world.borrow_mut().routes.retain(|k, _| k.0 != index);
            }
            _ => {}
        }
        Ok(())
    }

    // Overridden (one "ioctl" of its own) so the tests can tell whether a
    // decorator forwards provided methods or re-derives them via set_irqs.
    fn set_eventfd(&self, vector: u32, fd: Option<BorrowedFd<'_>>) -> Result<()> {
        saw(&self.world, "set_eventfd");
        IrqSet::eventfds(self.info.index, vector, &[fd]).validate(&self.info)?;
        self.route(vector, &[fd]);
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------

fn eventfd_stand_in() -> File {
    File::open("/dev/null").expect("open /dev/null as a stand-in eventfd")
}

/// The injected error's (op, kind, call), or a panic naming what came instead.
fn injected(err: &Error) -> (&'static str, ErrorKind, u64) {
    match (err.op(), InjectedFault::of(err)) {
        (Some(op), Some(fault)) => (op, err.kind(), fault.call),
        _ => panic!("expected an injected error, got {err:?}"),
    }
}

/// A five-step bring-up that touches every object of the tree:
/// open_device, device.region, region.read, device.irq, set_eventfd.
fn bring_up<C: Container>(c: &C, fd: BorrowedFd<'_>) -> Result<(C::Device, u32)> {
    let dev = c.open_device(DEVICE)?;
    let id = dev.region(0)?.read_at::<u32>(0)?;
    dev.irq(index::MSIX)?.set_eventfd(0, Some(fd))?;
    Ok((dev, id))
}

const BRING_UP: [Op; 5] = [
    Op::OpenDevice,
    Op::Region,
    Op::RegionRead,
    Op::Irq,
    Op::SetEventfd,
];
const BRING_UP_BACKEND: [&str; 5] = ["open_device", "region", "read", "irq", "set_eventfd"];

// ---------------------------------------------------------------------------
// FaultInjector.
// ---------------------------------------------------------------------------

#[test]
fn counting_mode_counts_every_step_and_fails_nothing() {
    let fd = eventfd_stand_in();
    let inj = FaultInjector::new(FakeContainer::default());
    let (dev, id) = bring_up(&inj, fd.as_fd()).expect("nothing is injected in counting mode");
    assert_eq!(id, 0x0302_0100, "the read reached the backend");
    assert_eq!(inj.calls(), BRING_UP.len() as u64);
    assert_eq!(inj.injected(), 0);
    assert_eq!(inj.last_injection(), None);
    assert_eq!(inj.inner().calls(), BRING_UP_BACKEND);
    // The infallible getters reach the backend but are not operations.
    assert_eq!(dev.info().name, DEVICE);
    assert!(dev.keep_fds().is_empty());
    assert_eq!(inj.calls(), BRING_UP.len() as u64);
}

#[test]
fn the_nth_call_fails_across_container_device_region_and_irq() {
    let fd = eventfd_stand_in();
    for (n, op) in (1u64..).zip(BRING_UP) {
        let inj = FaultInjector::with_plan(FakeContainer::default(), Plan::fail_nth(n));
        let err = bring_up(&inj, fd.as_fd()).expect_err("step n is failed");
        assert_eq!(
            injected(&err),
            (op.name(), Plan::DEFAULT_KIND, n),
            "step {n}"
        );
        assert_eq!(inj.last_injection(), Some(Injection { op, call: n }));
        assert_eq!(inj.injected(), 1);
        assert_eq!(inj.calls(), n, "the routine stops at the failure");
        // The failed call never reached the backend: it saw exactly the
        // steps before it.
        let reached = usize::try_from(n - 1).expect("small");
        assert_eq!(
            inj.inner().calls(),
            &BRING_UP_BACKEND[..reached],
            "step {n}"
        );
        assert_eq!(inj.inner().leftovers(), (0, 0, 0), "step {n} leaked");
    }
    // One past the end: nothing fires.
    let plan = Plan::fail_nth(BRING_UP.len() as u64 + 1);
    let inj = FaultInjector::with_plan(FakeContainer::default(), plan);
    assert!(bring_up(&inj, fd.as_fd()).is_ok());
    assert_eq!(inj.injected(), 0);
}

#[test]
fn the_chosen_kind_is_what_generic_code_sees() {
    let plan = Plan::fail_every(Op::OpenDevice).with_kind(ErrorKind::NotViable);
    let inj = FaultInjector::with_plan(FakeContainer::default(), plan);
    let err = inj.open_device(DEVICE).expect_err("injected");
    assert_eq!(err.kind(), ErrorKind::NotViable);
    assert_eq!(err.errno(), None);
    assert!(
        err.to_string().contains("open_device"),
        "the message names the op: {err}"
    );
}

#[test]
fn a_filter_fails_every_matching_op_and_nothing_else() {
    let plan = Plan::fail_every([Op::UnmapDma, Op::UnmapAll]).with_kind(ErrorKind::DeviceGone);
    let inj = FaultInjector::with_plan(FakeContainer::default(), plan);
    for i in 0..3u64 {
        // SAFETY: the fake backend never dereferences the host address.
        unsafe {
            inj.map_dma_raw(
                i * 0x1000,
                std::ptr::null_mut(),
                0x1000,
                DmaAccess::ReadWrite,
            )
        }
        .expect("maps are not selected");
    }
    for i in 0..3u64 {
        let err = inj
            .unmap_dma(i * 0x1000, 0x1000)
            .expect_err("every unmap fails");
        assert_eq!(err.kind(), ErrorKind::DeviceGone);
        assert_eq!(injected(&err).2, 4 + i, "calls are numbered over all ops");
    }
    assert_eq!(
        injected(&inj.unmap_all().expect_err("selected")).0,
        "unmap_all"
    );
    assert_eq!(inj.injected(), 4);
    assert_eq!(inj.calls(), 7);
    assert_eq!(
        inj.inner().leftovers().0,
        3,
        "failed unmaps did not reach the backend"
    );
    assert!(inj.iommu_info().is_ok(), "not selected");
}

#[test]
fn nth_counts_only_the_selected_ops() {
    let fd = eventfd_stand_in();
    let plan = Plan::fail_nth(2).only(OpFilter::object(Object::Device));
    let inj = FaultInjector::with_plan(FakeContainer::default(), plan);
    // Device ops in bring_up: device.region (1st), device.irq (2nd).
    let err = bring_up(&inj, fd.as_fd()).expect_err("2nd device op fails");
    assert_eq!(injected(&err), ("device.irq", Plan::DEFAULT_KIND, 4));
    assert_eq!(inj.selected_calls(), 2);
    assert_eq!(inj.calls(), 4);
}

#[test]
fn arm_rearm_and_disarm_control_the_shared_plan() {
    let inj = FaultInjector::new(FakeContainer::default());
    let dev = inj.open_device(DEVICE).expect("counting");
    // The device shares the plan armed later on the container.
    inj.arm(Plan::fail_nth(1).only(Op::Reset));
    assert_eq!(inj.calls(), 0, "arm zeroes the counters");
    assert!(dev.reset().is_err());
    assert!(dev.reset().is_ok(), "the 1st reset only");
    inj.rearm();
    assert!(dev.reset().is_err(), "rearm re-arms the same plan");
    inj.disarm();
    inj.rearm();
    assert!(dev.reset().is_ok(), "disarmed: count only");
    assert_eq!(inj.calls(), 1);
    assert_eq!(inj.plan(), Plan::count_only().only(Op::Reset));
}

#[test]
fn provided_methods_are_forwarded_not_rederived() {
    let fd = eventfd_stand_in();
    let inj = FaultInjector::new(FakeContainer::default());
    let dev = inj.open_device(DEVICE).expect("open");
    let irq = dev.irq(index::MSIX).expect("irq");
    irq.set_eventfd(1, Some(fd.as_fd())).expect("route");
    irq.disable().expect("disable");
    // The fake overrides set_eventfd; `disable` uses the trait default,
    // which the *backend* runs as its own set_irqs.
    assert_eq!(
        inj.inner().calls(),
        ["open_device", "irq", "set_eventfd", "set_irqs"]
    );
    // One operation each at the wrapper, under the name that was called.
    assert_eq!(inj.calls(), 4);
    inj.arm(Plan::fail_every(Op::SetIrqs));
    irq.set_eventfd(1, Some(fd.as_fd()))
        .expect("set_eventfd is its own op, not a set_irqs");
    assert!(irq.set_irqs(&IrqSet::disable(index::MSIX)).is_err());
}

#[test]
fn map_buffer_is_one_map_and_its_guard_one_unmap() {
    let inj = FaultInjector::new(FakeContainer::default());
    let buffer = DmaBuffer::new(0x1000).expect("buffer");
    let mapping = inj
        .map_buffer(0x10_0000, buffer, DmaAccess::ReadWrite)
        .expect("map");
    assert_eq!(inj.inner().leftovers().0, 1);
    drop(mapping);
    assert_eq!(inj.inner().leftovers().0, 0);
    assert_eq!(inj.inner().calls(), ["map_dma_raw", "unmap_dma"]);
    assert_eq!(inj.calls(), 2);

    inj.arm(Plan::fail_every(Op::MapDma).with_kind(ErrorKind::Exhausted));
    let buffer = DmaBuffer::new(0x1000).expect("buffer");
    let err = inj
        .map_buffer(0x10_0000, buffer, DmaAccess::ReadOnly)
        .expect_err("injected");
    assert_eq!(err.kind(), ErrorKind::Exhausted);
    assert_eq!(err.buffer.len(), 0x1000, "the buffer comes back");
}

#[test]
fn an_injected_unmap_failure_never_frees_memory_the_backend_still_maps() {
    let inj = FaultInjector::new(FakeContainer::default());
    let map = |iova| {
        let buffer = DmaBuffer::new(0x1000).expect("buffer");
        inj.map_buffer(iova, buffer, DmaAccess::ReadWrite)
            .expect("map")
    };
    let (busy, gone) = (map(0x1000), map(0x2000));
    // Busy: the guard keeps (leaks) the buffer, the backend keeps the mapping.
    inj.arm(Plan::fail_every(Op::UnmapDma).with_kind(ErrorKind::Busy));
    drop(busy);
    assert_eq!(inj.inner().leftovers().0, 2);
    assert_eq!(inj.inner().calls().last(), Some(&"map_dma_raw"));
    // NotMapped: the guard frees the buffer, so the injector makes it true.
    inj.arm(Plan::fail_every(Op::UnmapDma).with_kind(ErrorKind::NotMapped));
    drop(gone);
    assert_eq!(inj.injected(), 1);
    assert_eq!(inj.inner().calls().last(), Some(&"unmap_dma"));
    let live: Vec<u64> = inj.inner().0.borrow().mappings.keys().copied().collect();
    assert_eq!(live, [0x1000], "the NotMapped mapping is really gone");
}

#[test]
fn a_sweep_fails_each_step_once_and_the_check_sees_every_run() {
    let fd = eventfd_stand_in();
    let mut seen = Vec::new();
    let steps = sweep(
        FakeContainer::default,
        |c| bring_up(c, fd.as_fd()),
        |step| {
            assert_eq!(step.steps, BRING_UP.len() as u64);
            match step.injection {
                None => {
                    assert_eq!(step.step, 0, "only the clean run injects nothing");
                    assert!(step.result.is_ok());
                }
                Some(fault) => {
                    let err = step.result.as_ref().expect_err("the fault surfaces");
                    assert_eq!(injected(err).2, step.step);
                    assert_eq!(fault.op, BRING_UP[step.step as usize - 1]);
                }
            }
            // Leak check: once the routine's result is gone, nothing is left.
            drop(step.result);
            assert_eq!(
                step.injector.inner().leftovers(),
                (0, 0, 0),
                "step {}",
                step.step
            );
            seen.push(step.step);
        },
    )
    .expect("the clean run succeeds");
    assert_eq!(steps, 5);
    assert_eq!(seen, [0, 1, 2, 3, 4, 5]);
}

#[test]
fn a_sweep_finds_a_leaky_error_path_and_a_filter_spares_teardown() {
    /// Maps two buffers by hand and forgets to unmap the first if the second fails.
    fn leaky<C: Container>(c: &C) -> Result<()> {
        // SAFETY: the fake backend never dereferences the host address.
        unsafe { c.map_dma_raw(0x1000, std::ptr::null_mut(), 0x1000, DmaAccess::ReadWrite)? };
        // SAFETY: as above.
        unsafe { c.map_dma_raw(0x2000, std::ptr::null_mut(), 0x1000, DmaAccess::ReadWrite)? };
        c.unmap_all()?;
        Ok(())
    }
    let mut leaks = Vec::new();
    let steps = Sweep {
        ops: OpFilter::only(Op::MapDma),
        kind: ErrorKind::Exhausted,
    }
    .run(FakeContainer::default, leaky, |step| {
        if let Err(e) = &step.result {
            assert_eq!(e.kind(), ErrorKind::Exhausted);
        }
        if step.injector.inner().leftovers().0 != 0 {
            leaks.push(step.step);
        }
    })
    .expect("clean run");
    assert_eq!(steps, 2, "only the two maps are steps");
    assert_eq!(leaks, [2], "failing the 2nd map leaks the 1st");
}

#[test]
fn a_sweep_reports_a_routine_that_fails_on_its_own() {
    let mut checks = 0;
    let result = sweep(
        FakeContainer::default,
        |c| c.open_device("no-such-device"),
        |_| checks += 1,
    );
    assert_eq!(
        result.expect_err("clean run fails").kind(),
        ErrorKind::NotFound
    );
    assert_eq!(checks, 0);
}

// ---------------------------------------------------------------------------
// Over the in-memory backend.
// ---------------------------------------------------------------------------

mod in_memory {
    use super::*;
    use vfio_hal::eventfd::{EventFd, EventFdExt};
    use vfio_hal_mock::models::edu::Edu;
    use vfio_hal_mock::MockContainer;

    /// Open eventfds of this process (the mock dups the ones it routes).
    /// Only this test creates eventfds in this test binary.
    fn open_eventfds() -> usize {
        std::fs::read_dir("/proc/self/fd")
            .expect("/proc/self/fd")
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|link| link.as_os_str() == "anon_inode:[eventfd]")
            .count()
    }

    fn edu() -> MockContainer {
        let c = MockContainer::new();
        c.plug("edu", Edu::new()).expect("plug edu");
        c
    }

    /// open_device, map a buffer, route MSI vector 0, unmap.
    fn bring_up<C: Container>(c: &C, fd: BorrowedFd<'_>) -> Result<C::Device> {
        let dev = c.open_device("edu")?;
        let buffer = DmaBuffer::new(0x1000)?;
        let mapping = c.map_buffer(0x10_0000, buffer, DmaAccess::ReadWrite)?;
        dev.irq(index::MSI)?.set_eventfd(0, Some(fd))?;
        mapping.unmap()?;
        Ok(dev)
    }

    #[test]
    fn every_step_of_a_bring_up_fails_cleanly() {
        // A real eventfd: the mock refuses anything else as an irq route.
        let efd = EventFd::nonblocking().expect("eventfd");
        let baseline = open_eventfds();
        let mut failed = Vec::new();
        let steps = sweep(
            edu,
            |c| bring_up(c, efd.as_fd()),
            |step| {
                let inner = step.injector.inner();
                match step.injection {
                    None => {
                        let dev = step.result.as_ref().expect("the clean run succeeds");
                        assert_eq!(open_eventfds(), baseline + 1, "the route holds a dup");
                        assert_eq!(dev.info().name, "edu");
                    }
                    Some(fault) => {
                        let err = step.result.as_ref().expect_err("the fault surfaces");
                        assert_eq!(
                            injected(err),
                            (fault.op.name(), Plan::DEFAULT_KIND, step.step)
                        );
                        failed.push(fault.op);
                    }
                }
                drop(step.result);
                // Nothing left behind, except where the unmap itself was failed:
                // then the mapping stays (and its buffer is leaked on purpose).
                let expect_mappings =
                    usize::from(step.injection.map(|f| f.op) == Some(Op::UnmapDma));
                assert_eq!(inner.mapping_count(), expect_mappings, "step {}", step.step);
                assert_eq!(
                    open_eventfds(),
                    baseline,
                    "step {} leaked a route",
                    step.step
                );
            },
        )
        .expect("the clean run succeeds");
        assert_eq!(steps, 5);
        assert_eq!(
            failed,
            [
                Op::OpenDevice,
                Op::MapDma,
                Op::Irq,
                Op::SetEventfd,
                Op::UnmapDma
            ]
        );
    }

    #[test]
    fn decorated_backends_erase_like_any_other() {
        let tracer = Tracer::new(FaultInjector::with_plan(edu(), Plan::fail_every(Op::Reset)));
        let log = tracer.log().clone();
        let c = vfio_hal::dynamic::erase_container(tracer);
        let dev = c.open_device("edu").expect("open through two decorators");
        let err = dev.reset().expect_err("reset fails");
        assert_eq!(injected(&err).0, "reset");
        assert_eq!(log.ops(), [Op::OpenDevice, Op::Reset]);
    }

    #[test]
    fn the_tracer_shows_the_mock_kernel_errors() {
        let tracer = Tracer::new(edu());
        assert!(tracer.open_device("nope").is_err());
        let dev = tracer.open_device("edu").expect("open");
        let bar0 = dev.region(0).expect("bar0");
        let id = bar0.read_at::<u32>(0).expect("id register");
        assert!(tracer.unmap_dma(0x1000, 0x1000).is_err());
        let events = tracer.events();
        assert_eq!(events[0].outcome.kind(), Some(ErrorKind::NotFound));
        assert_eq!(events[3].outcome, Outcome::Value(u64::from(id)));
        assert_eq!(events[4].outcome.kind(), Some(ErrorKind::NotMapped));
    }
}

// ---------------------------------------------------------------------------
// Tracer.
// ---------------------------------------------------------------------------

#[test]
fn the_tracer_records_calls_arguments_and_results_in_order() {
    let fd = eventfd_stand_in();
    let raw = fd.as_raw_fd();
    let tracer = Tracer::new(FakeContainer::default());
    let (dev, _) = bring_up(&tracer, fd.as_fd()).expect("bring up");
    let region = dev.region(0).expect("region");
    region.write_at(0x10, 0xabcd_u16).expect("write");
    let err = region
        .read_at::<u64>(REGION_SIZE - 4)
        .expect_err("past the end");
    assert_eq!(err.kind(), ErrorKind::OutOfRange);
    assert!(tracer.unmap_dma(0x1000, 0x1000).is_err());
    drop(dev);

    let events = tracer.events();
    assert_eq!(
        tracer.log().ops(),
        [
            Op::OpenDevice,
            Op::Region,
            Op::RegionRead,
            Op::Irq,
            Op::SetEventfd,
            Op::Region,
            Op::RegionWrite,
            Op::RegionRead,
            Op::UnmapDma,
        ]
    );
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=9).collect::<Vec<_>>(), "numbered from 1");
    assert_eq!(events[0].args, Args::Name(DEVICE.into()));
    assert_eq!(events[1].args, Args::Index(0));
    assert_eq!(
        (&events[2].args, &events[2].outcome),
        (
            &Args::Access {
                region: Some(0),
                offset: 0,
                len: 4,
                value: None
            },
            &Outcome::Value(0x0302_0100)
        )
    );
    assert_eq!(
        events[4].args,
        Args::Irq(IrqCall {
            index: Some(index::MSIX),
            start: 0,
            count: 1,
            action: vfio_hal::IrqAction::Trigger,
            data: IrqDataSummary::EventFd(vec![Some(raw)]),
        })
    );
    assert_eq!(
        events[6].args,
        Args::Access {
            region: Some(0),
            offset: 0x10,
            len: 2,
            value: Some(0xabcd)
        }
    );
    assert_eq!(events[7].outcome.kind(), Some(ErrorKind::OutOfRange));
    match &events[8].outcome {
        Outcome::Failed { kind, errno, .. } => {
            assert_eq!((*kind, *errno), (ErrorKind::NotMapped, Some(libc::ENOENT)));
        }
        other => panic!("unmap of nothing must fail, got {other:?}"),
    }
    // The dump is one readable line per call.
    let dump = tracer.to_string();
    assert_eq!(dump.lines().count(), 9, "{dump}");
    assert!(
        dump.contains(&format!(
            "#5 set_eventfd(index 2, Trigger [0, +1), eventfds [{raw}]) -> Ok"
        )),
        "{dump}"
    );
    assert!(
        dump.contains("#7 region.write(region 0, offset 0x10, len 2, value 0xabcd) -> Ok"),
        "{dump}"
    );

    tracer.clear();
    assert!(tracer.log().is_empty());
    tracer.iommu_info().expect("info");
    assert_eq!(tracer.events()[0].seq, 10, "call numbers survive clear");
}

#[test]
fn a_tracer_over_an_injector_logs_the_injected_failures() {
    let fd = eventfd_stand_in();
    let inj = FaultInjector::with_plan(
        FakeContainer::default(),
        Plan::fail_nth(3).with_kind(ErrorKind::Busy),
    );
    let tracer = Tracer::new(inj);
    let err = bring_up(&tracer, fd.as_fd()).expect_err("the third call fails");
    let events = tracer.events();
    let outcomes: Vec<_> = events.iter().map(|e| &e.outcome).collect();
    assert_eq!(outcomes.len(), 3);
    assert!(outcomes[0].is_ok() && outcomes[1].is_ok());
    assert_eq!(outcomes[2].kind(), Some(ErrorKind::Busy));
    assert_eq!(tracer.inner().injected(), 1);
    // Both number calls from 1: the tracer's #3 is the injector's call #3.
    let injection = InjectedFault::of(&err).expect("injected");
    assert_eq!(
        (events[2].seq, events[2].op),
        (injection.call, injection.op)
    );
    assert_eq!(injection.call, 3);
}

#[test]
fn tracers_share_one_log_across_the_tree() {
    let tracer = Tracer::new(FakeContainer::default());
    let dev = tracer.open_device(DEVICE).expect("open");
    let irq = dev.irq(index::MSIX).expect("irq");
    irq.mask(0, 2).expect("mask");
    dev.reset().expect("reset");
    assert!(dev.feature(FeatureOp::ProbeGet, 1, &mut []).is_err());
    assert_eq!(
        tracer.log().ops(),
        [Op::OpenDevice, Op::Irq, Op::Mask, Op::Reset, Op::Feature]
    );
    assert_eq!(
        tracer.events()[4].outcome.kind(),
        Some(ErrorKind::NotSupported)
    );
}

// ---------------------------------------------------------------------------
// Expectation mocks (feature `mockall`).
// ---------------------------------------------------------------------------

#[cfg(feature = "mockall")]
mod expectations {
    use super::*;
    use vfio_hal_mock::expect::{MockContainer, MockDevice, MockIrq};

    /// VMM-style code under test: route MSI-X vector 0 to `fd`.
    fn route_msix<C: Container>(c: &C, fd: BorrowedFd<'_>) -> Result<C::Device> {
        let dev = c.open_device(DEVICE)?;
        dev.irq(index::MSIX)?.set_eventfd(0, Some(fd))?;
        Ok(dev)
    }

    fn expecting_one_route(raw: RawFd) -> MockContainer {
        let mut c = MockContainer::new();
        c.expect_open_device()
            .withf(|name| name == DEVICE)
            .times(1)
            .returning(move |_| {
                let mut dev = MockDevice::new();
                dev.expect_irq()
                    .withf(|&i| i == index::MSIX)
                    .times(1)
                    .returning(move |_| {
                        let mut irq = MockIrq::new();
                        irq.expect_set_eventfd()
                            .withf(move |&v, fd| v == 0 && fd.map(|f| f.as_raw_fd()) == Some(raw))
                            .times(1)
                            .returning(|_, _| Ok(()));
                        Ok(irq)
                    });
                Ok(dev)
            });
        c
    }

    #[test]
    fn set_eventfd_0_is_called_exactly_once() {
        let fd = eventfd_stand_in();
        let mut c = expecting_one_route(fd.as_raw_fd());
        route_msix(&c, fd.as_fd()).expect("routed");
        c.checkpoint(); // panics if open_device was not called exactly once
    }

    #[test]
    #[should_panic(expected = "MockIrq::set_eventfd")]
    fn a_route_to_the_wrong_fd_is_caught() {
        let fd = eventfd_stand_in();
        let other = eventfd_stand_in();
        let c = expecting_one_route(other.as_raw_fd());
        let _ = route_msix(&c, fd.as_fd());
    }

    #[test]
    fn an_injected_failure_never_reaches_the_mock() {
        let fd = eventfd_stand_in();
        let mut c = MockContainer::new();
        c.expect_open_device().never();
        let inj = FaultInjector::with_plan(c, Plan::fail_every(Op::OpenDevice));
        let err = route_msix(&inj, fd.as_fd()).expect_err("injected");
        assert_eq!(injected(&err).0, "open_device");
        // The mock verifies `never()` when it drops with the injector.
    }

    #[test]
    fn the_decorators_pass_expectations_through() {
        let fd = eventfd_stand_in();
        let c = expecting_one_route(fd.as_raw_fd());
        let tracer = Tracer::new(FaultInjector::new(c));
        route_msix(&tracer, fd.as_fd()).expect("routed");
        assert_eq!(tracer.inner().calls(), 3);
        assert_eq!(
            tracer.log().ops(),
            [Op::OpenDevice, Op::Irq, Op::SetEventfd]
        );
    }

    #[test]
    fn map_buffer_is_expected_as_map_then_unmap() {
        let mut c = MockContainer::new();
        let mut seq = mockall::Sequence::new();
        c.expect_map_dma_raw()
            .withf(|&iova, host, &len, &access| {
                iova == 0x4000 && !host.is_null() && len == 0x1000 && access == DmaAccess::ReadOnly
            })
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, _, _, _| Ok(()));
        c.expect_unmap_dma()
            .withf(|&iova, &len| (iova, len) == (0x4000, 0x1000))
            .times(1)
            .in_sequence(&mut seq)
            .returning(|_, len| Ok(len));
        let buffer = DmaBuffer::new(0x1000).expect("buffer");
        let mapping = c
            .map_buffer(0x4000, buffer, DmaAccess::ReadOnly)
            .expect("mapped");
        let buffer = mapping.unmap().expect("unmapped");
        assert_eq!(buffer.len(), 0x1000);
    }
}
