//! vfio-pci interrupt semantics on real eventfds: INTx masking and
//! resampling, MSI and MSI-X routing, exclusivity, ERR and REQ.

mod common;

use common::{copy_engine, edu, reg32, set_reg32};
use vfio_hal::eventfd::{EventFd, EventFdExt};
use vfio_hal::irq::index;
use vfio_hal::pci::cfg;
use vfio_hal::prelude::*;
use vfio_hal::{ErrorKind, IrqAction, IrqData, IrqSet};
use vfio_hal_mock::models::edu::reg;
use vfio_hal_mock::MockDevice;

fn irq(dev: &MockDevice, i: u32) -> vfio_hal_mock::MockIrq {
    dev.irq(i).expect("irq")
}

fn einval<T: std::fmt::Debug>(r: vfio_hal::Result<T>) {
    let e = r.expect_err("must be refused");
    assert_eq!(
        (e.kind(), e.errno()),
        (ErrorKind::InvalidArgument, Some(libc::EINVAL)),
        "{e}"
    );
}

/// edu with INTx routed; returns the trigger eventfd.
fn edu_intx() -> (vfio_hal_mock::MockContainer, MockDevice, EventFd) {
    let (c, dev) = edu().expect("edu");
    let trigger = EventFd::nonblocking().expect("eventfd");
    irq(&dev, index::INTX)
        .set_eventfd(0, Some(trigger.as_fd()))
        .expect("INTx");
    (c, dev, trigger)
}

// ---- INTx --------------------------------------------------------------------

#[test]
fn intx_is_automasked_and_unmask_resends_while_the_line_is_high() {
    let (_c, dev, trigger) = edu_intx();
    set_reg32(&dev, reg::IRQ_RAISE, 1);
    assert_eq!(
        trigger.take().expect("read eventfd"),
        1,
        "asserted: signalled and automasked"
    );
    set_reg32(&dev, reg::IRQ_RAISE, 2);
    assert_eq!(
        trigger.take().expect("read eventfd"),
        0,
        "masked: no second signal"
    );
    irq(&dev, index::INTX).unmask(0, 1).expect("unmask");
    assert_eq!(
        trigger.take().expect("read eventfd"),
        1,
        "line still high: re-sent, stays masked"
    );
    set_reg32(&dev, reg::IRQ_ACK, 3);
    irq(&dev, index::INTX).unmask(0, 1).expect("unmask");
    assert_eq!(
        trigger.take().expect("read eventfd"),
        0,
        "line low: just unmasked"
    );
    set_reg32(&dev, reg::IRQ_RAISE, 4);
    assert_eq!(
        trigger.take().expect("read eventfd"),
        1,
        "fires again once unmasked"
    );
}

#[test]
fn intx_mask_holds_the_interrupt_until_unmask() {
    let (_c, dev, trigger) = edu_intx();
    let intx = irq(&dev, index::INTX);
    intx.mask(0, 1).expect("mask");
    set_reg32(&dev, reg::IRQ_RAISE, 1);
    assert_eq!(trigger.take().expect("read eventfd"), 0);
    intx.unmask(0, 1).expect("unmask");
    assert_eq!(trigger.take().expect("read eventfd"), 1);
    // DATA_BOOL false is a no-op, true acts.
    set_reg32(&dev, reg::IRQ_ACK, 1);
    intx.unmask(0, 1).expect("unmask");
    let no = [false];
    intx.set_irqs(&IrqSet {
        index: 0,
        start: 0,
        count: 1,
        action: IrqAction::Mask,
        data: IrqData::Bool(&no),
    })
    .expect("bool mask");
    set_reg32(&dev, reg::IRQ_RAISE, 1);
    assert_eq!(
        trigger.take().expect("read eventfd"),
        1,
        "a false bool did not mask"
    );
}

#[test]
fn the_resample_eventfd_unmasks_like_kvms_irqfd_resampler() {
    let (_c, dev, trigger) = edu_intx();
    let resample = EventFd::nonblocking().expect("eventfd");
    irq(&dev, index::INTX)
        .set_resample(Some(resample.as_fd()))
        .expect("resample");
    set_reg32(&dev, reg::IRQ_RAISE, 1);
    assert_eq!(trigger.take().expect("read eventfd"), 1);
    // Guest EOI with the line still high: re-sent.
    resample.write(1).expect("signal");
    let _ = reg32(&dev, reg::IRQ_STATUS);
    assert_eq!(
        trigger.take().expect("read eventfd"),
        1,
        "resample with the line high re-sends"
    );
    assert_eq!(
        resample.take().expect("read eventfd"),
        0,
        "the resample count was consumed"
    );
    // Acknowledge, then EOI: unmasked, and the next raise fires.
    set_reg32(&dev, reg::IRQ_ACK, 1);
    resample.write(1).expect("signal");
    set_reg32(&dev, reg::IRQ_RAISE, 1);
    assert_eq!(trigger.take().expect("read eventfd"), 1);
    // Without a resample nothing unmasks.
    set_reg32(&dev, reg::IRQ_ACK, 1);
    set_reg32(&dev, reg::IRQ_RAISE, 1);
    assert_eq!(trigger.take().expect("read eventfd"), 0);
    irq(&dev, index::INTX)
        .set_resample(None)
        .expect("remove resample");
    resample.write(1).expect("signal");
    set_reg32(&dev, reg::IRQ_ACK, 1);
    set_reg32(&dev, reg::IRQ_RAISE, 1);
    assert_eq!(
        trigger.take().expect("read eventfd"),
        0,
        "a removed resample fd does nothing"
    );
}

#[test]
fn the_command_registers_intx_disable_bit_masks() {
    let (_c, dev, trigger) = edu_intx();
    dev.update_command(cfg::CMD_INTX_DISABLE, 0)
        .expect("disable INTx");
    set_reg32(&dev, reg::IRQ_RAISE, 1);
    assert_eq!(trigger.take().expect("read eventfd"), 0);
    irq(&dev, index::INTX)
        .unmask(0, 1)
        .expect("unmask is ignored while disabled");
    assert_eq!(trigger.take().expect("read eventfd"), 0);
    dev.update_command(0, cfg::CMD_INTX_DISABLE)
        .expect("enable INTx");
    assert_eq!(
        trigger.take().expect("read eventfd"),
        1,
        "the pending level fires on re-enable"
    );
}

#[test]
fn intx_loopback_trigger_fires_the_eventfd() {
    let (_c, dev, trigger) = edu_intx();
    irq(&dev, index::INTX).trigger(0, 1).expect("loopback");
    assert_eq!(trigger.take().expect("read eventfd"), 1);
    let yes = [true];
    irq(&dev, index::INTX)
        .set_irqs(&IrqSet {
            index: 0,
            start: 0,
            count: 1,
            action: IrqAction::Trigger,
            data: IrqData::Bool(&yes),
        })
        .expect("bool loopback");
    assert_eq!(trigger.take().expect("read eventfd"), 1);
}

#[test]
fn intx_requests_need_intx_enabled() {
    let (_c, dev) = edu().expect("edu");
    let intx = irq(&dev, index::INTX);
    einval(intx.mask(0, 1));
    einval(intx.unmask(0, 1));
    einval(intx.trigger(0, 1));
    einval(intx.disable());
    let trigger = EventFd::nonblocking().expect("eventfd");
    intx.set_eventfd(0, Some(trigger.as_fd())).expect("enable");
    intx.disable().expect("disable");
    einval(intx.trigger(0, 1));
}

#[test]
fn an_asserted_line_fires_as_soon_as_intx_is_enabled() {
    let (_c, dev) = edu().expect("edu");
    set_reg32(&dev, reg::IRQ_RAISE, 1);
    let trigger = EventFd::nonblocking().expect("eventfd");
    irq(&dev, index::INTX)
        .set_eventfd(0, Some(trigger.as_fd()))
        .expect("enable");
    assert_eq!(trigger.take().expect("read eventfd"), 1);
}

// ---- Exclusivity and validation -------------------------------------------------

#[test]
fn intx_msi_and_msix_are_mutually_exclusive() {
    let (_c, dev, _trigger) = edu_intx();
    let msi_fd = EventFd::nonblocking().expect("eventfd");
    einval(irq(&dev, index::MSI).set_eventfd(0, Some(msi_fd.as_fd())));
    irq(&dev, index::INTX).disable().expect("disable INTx");
    irq(&dev, index::MSI)
        .set_eventfd(0, Some(msi_fd.as_fd()))
        .expect("MSI now");
    let intx_fd = EventFd::nonblocking().expect("eventfd");
    einval(irq(&dev, index::INTX).set_eventfd(0, Some(intx_fd.as_fd())));

    let (_c2, ce) = copy_engine().expect("copy engine");
    let a = EventFd::nonblocking().expect("eventfd");
    irq(&ce, index::MSIX)
        .set_eventfd(0, Some(a.as_fd()))
        .expect("MSI-X");
    // The copy engine has no MSI and no INTx: those are out of range.
    let e = irq(&ce, index::MSI)
        .set_eventfd(0, Some(a.as_fd()))
        .expect_err("no MSI");
    assert_eq!(e.kind(), ErrorKind::OutOfRange);
}

#[test]
fn msi_and_msix_take_no_mask_and_bad_ranges_are_refused() {
    let (_c, dev) = copy_engine().expect("copy engine");
    let msix = irq(&dev, index::MSIX);
    assert_eq!(
        msix.mask(0, 1).expect_err("not maskable").kind(),
        ErrorKind::InvalidArgument
    );
    let a = EventFd::nonblocking().expect("eventfd");
    assert_eq!(
        msix.set_eventfd(4, Some(a.as_fd()))
            .expect_err("past the table")
            .kind(),
        ErrorKind::OutOfRange
    );
    let fds = [Some(a.as_fd())];
    let mismatched = IrqSet {
        index: 2,
        start: 0,
        count: 2,
        action: IrqAction::Trigger,
        data: IrqData::EventFd(&fds),
    };
    assert_eq!(
        msix.set_irqs(&mismatched).expect_err("count").kind(),
        ErrorKind::InvalidArgument
    );
    let other_index = IrqSet::eventfds(1, 0, &fds);
    assert_eq!(
        msix.set_irqs(&other_index).expect_err("index").kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn msix_vectors_cannot_grow_after_enable_noresize() {
    let (_c, dev) = copy_engine().expect("copy engine");
    let msix = irq(&dev, index::MSIX);
    let a = EventFd::nonblocking().expect("eventfd");
    let b = EventFd::nonblocking().expect("eventfd");
    msix.set_eventfds(0, &[Some(a.as_fd()), Some(b.as_fd())])
        .expect("enable with 2");
    einval(msix.set_eventfd(3, Some(a.as_fd())));
    msix.set_eventfd(1, Some(a.as_fd()))
        .expect("re-route inside the allocation");
    msix.disable().expect("disable");
    msix.set_eventfd(3, Some(a.as_fd()))
        .expect("re-enable with 4");
}

#[test]
fn a_non_eventfd_is_refused() {
    let (_c, dev) = copy_engine().expect("copy engine");
    let file = std::fs::File::open("/dev/null").expect("open");
    use std::os::fd::AsFd;
    let e = irq(&dev, index::MSIX)
        .set_eventfd(0, Some(file.as_fd()))
        .expect_err("not an eventfd");
    assert_eq!(
        (e.kind(), e.errno()),
        (ErrorKind::InvalidArgument, Some(libc::EINVAL))
    );
    assert!(!msix_enabled(&dev), "a failed enable leaves MSI-X off");
}

fn msix_enabled(dev: &MockDevice) -> bool {
    let cap = dev
        .find_capability(cfg::CAP_ID_MSIX)
        .expect("walk")
        .expect("cap");
    dev.config()
        .and_then(|c| c.read_at::<u16>(u64::from(cap.offset) + 2))
        .expect("ctrl")
        & 0x8000
        != 0
}

// ---- MSI-X routing ----------------------------------------------------------------

#[test]
fn msix_vectors_route_per_vector_and_none_deassigns() {
    let (_c, dev) = copy_engine().expect("copy engine");
    let msix = irq(&dev, index::MSIX);
    let fds: Vec<EventFd> = (0..4)
        .map(|_| EventFd::nonblocking().expect("eventfd"))
        .collect();
    msix.set_eventfds(
        0,
        &[
            Some(fds[0].as_fd()),
            Some(fds[1].as_fd()),
            None,
            Some(fds[3].as_fd()),
        ],
    )
    .expect("route");
    assert!(msix_enabled(&dev));
    msix.trigger(0, 4).expect("loopback all");
    let counts: Vec<u64> = fds
        .iter()
        .map(|e| e.take().expect("read eventfd"))
        .collect();
    assert_eq!(counts, vec![1, 1, 0, 1]);
    msix.set_eventfd(1, None).expect("de-assign vector 1");
    msix.trigger(0, 4).expect("loopback all");
    let counts: Vec<u64> = fds
        .iter()
        .map(|e| e.take().expect("read eventfd"))
        .collect();
    assert_eq!(counts, vec![1, 0, 0, 1]);
    // Swap two vectors' eventfds.
    msix.set_eventfds(0, &[Some(fds[3].as_fd()), None, None, Some(fds[0].as_fd())])
        .expect("swap");
    msix.trigger(3, 1).expect("vector 3");
    assert_eq!(
        (
            fds[0].take().expect("read eventfd"),
            fds[3].take().expect("read eventfd")
        ),
        (1, 0)
    );
    let bools = [false, false, false, true];
    msix.set_irqs(&IrqSet {
        index: 2,
        start: 0,
        count: 4,
        action: IrqAction::Trigger,
        data: IrqData::Bool(&bools),
    })
    .expect("bool loopback");
    assert_eq!(
        (
            fds[0].take().expect("read eventfd"),
            fds[3].take().expect("read eventfd")
        ),
        (1, 0)
    );
    msix.disable().expect("disable");
    assert!(!msix_enabled(&dev));
    einval(msix.trigger(0, 1));
}

#[test]
fn routes_survive_the_callers_copy_being_closed() {
    let (_c, dev) = copy_engine().expect("copy engine");
    let efd = EventFd::nonblocking().expect("eventfd");
    // Route a dup we then close: the mock keeps its own dup, like eventfd_ctx.
    let dup = efd.as_fd().try_clone_to_owned().expect("dup");
    {
        use std::os::fd::AsFd;
        irq(&dev, index::MSIX)
            .set_eventfd(0, Some(dup.as_fd()))
            .expect("route");
    }
    drop(dup);
    irq(&dev, index::MSIX).trigger(0, 1).expect("loopback");
    assert_eq!(efd.take().expect("read eventfd"), 1);
}

// ---- MSI ----------------------------------------------------------------------------

#[test]
fn msi_loopback_and_deassign() {
    let (_c, dev) = edu().expect("edu");
    let msi = irq(&dev, index::MSI);
    let efd = EventFd::nonblocking().expect("eventfd");
    msi.set_eventfd(0, Some(efd.as_fd())).expect("enable");
    msi.trigger(0, 1).expect("loopback");
    assert_eq!(efd.take().expect("read eventfd"), 1);
    msi.set_eventfd(0, None).expect("de-assign, stays enabled");
    msi.trigger(0, 1).expect("loopback to nothing");
    set_reg32(&dev, reg::IRQ_RAISE, 1);
    assert_eq!(efd.take().expect("read eventfd"), 0);
    msi.disable().expect("disable");
    einval(msi.disable());
}

// ---- ERR and REQ --------------------------------------------------------------------

#[test]
fn err_and_req_take_one_eventfd_each() {
    let (c, dev) = copy_engine().expect("copy engine");
    for i in [index::ERR, index::REQ] {
        let irq = irq(&dev, i);
        einval(irq.trigger(0, 1));
        let efd = EventFd::nonblocking().expect("eventfd");
        irq.set_eventfd(0, Some(efd.as_fd())).expect("set");
        irq.trigger(0, 1).expect("loopback");
        assert_eq!(efd.take().expect("read eventfd"), 1, "index {i}");
        irq.disable().expect("remove");
        einval(irq.trigger(0, 1));
    }
    let req = EventFd::nonblocking().expect("eventfd");
    irq(&dev, index::REQ)
        .set_eventfd(0, Some(req.as_fd()))
        .expect("REQ");
    assert!(c.request_unplug(common::DMA).expect("request"));
    assert_eq!(req.take().expect("read eventfd"), 1, "release requested");
    // edu is conventional PCI: no ERR vector at all.
    let (_c2, edu_dev) = edu().expect("edu");
    let efd = EventFd::nonblocking().expect("eventfd");
    assert_eq!(
        irq(&edu_dev, index::ERR)
            .set_eventfd(0, Some(efd.as_fd()))
            .expect_err("count 0")
            .kind(),
        ErrorKind::OutOfRange
    );
}
