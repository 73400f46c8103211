//! No file descriptor outlives what holds it. One test in its own binary,
//! so no other test opens or closes fds while it counts.

mod common;

use common::{open_fds, DMA, EDU};
use vfio_hal::eventfd::{EventFd, EventFdExt};
use vfio_hal::irq::index;
use vfio_hal::prelude::*;
use vfio_hal::Container;
use vfio_hal_mock::models::{CopyEngine, Edu};
use vfio_hal_mock::MockContainer;

#[test]
fn routes_mmaps_and_devices_release_every_fd() {
    // Warm up anything lazily opened (e.g. by std) before counting.
    {
        let c = MockContainer::new();
        c.plug(DMA, CopyEngine::new()).expect("plug");
        let d = c.open_device(DMA).expect("open");
        let e = EventFd::nonblocking().expect("eventfd");
        d.irq(index::MSIX)
            .and_then(|i| i.set_eventfd(0, Some(e.as_fd())))
            .expect("route");
    }
    let baseline = open_fds();

    // Each route holds exactly one dup, released on disable.
    let c = MockContainer::new();
    c.plug(EDU, Edu::new()).expect("plug edu");
    c.plug(DMA, CopyEngine::new()).expect("plug copy engine");
    let after_plug = open_fds();
    assert_eq!(
        after_plug,
        baseline + 1,
        "one memfd for the copy engine's SRAM"
    );
    let edu = c.open_device(EDU).expect("open");
    let efd = EventFd::nonblocking().expect("eventfd");
    let with_efd = open_fds();
    let msi = edu.irq(index::MSI).expect("msi");
    msi.set_eventfd(0, Some(efd.as_fd())).expect("route");
    assert_eq!(open_fds(), with_efd + 1, "the route holds one dup");
    msi.set_eventfd(0, Some(efd.as_fd())).expect("re-route");
    assert_eq!(open_fds(), with_efd + 1, "re-routing replaces the dup");
    msi.disable().expect("disable");
    assert_eq!(open_fds(), with_efd, "disable closes the dup");
    drop((msi, efd, edu));

    // Open/route/mmap/drop cycles leave nothing behind.
    for round in 0..20 {
        let edu = c.open_device(EDU).expect("open edu");
        let dma = c.open_device(DMA).expect("open copy engine");
        let intx = EventFd::nonblocking().expect("eventfd");
        let resample = EventFd::nonblocking().expect("eventfd");
        let intx_irq = edu.irq(index::INTX).expect("intx");
        intx_irq.set_eventfd(0, Some(intx.as_fd())).expect("INTx");
        intx_irq
            .set_resample(Some(resample.as_fd()))
            .expect("resample");
        let vectors: Vec<EventFd> = (0..4)
            .map(|_| EventFd::nonblocking().expect("eventfd"))
            .collect();
        let fds: Vec<_> = vectors.iter().map(|v| Some(v.as_fd())).collect();
        dma.irq(index::MSIX)
            .and_then(|i| i.set_eventfds(0, &fds))
            .expect("MSI-X");
        for i in [index::ERR, index::REQ] {
            dma.irq(i)
                .and_then(|irq| irq.set_eventfd(0, Some(vectors[0].as_fd())))
                .expect("err/req");
        }
        let areas = dma.region(2).and_then(|r| r.mmap()).expect("mmap");
        assert_eq!(areas.len(), 2);
        if round % 2 == 0 {
            // Close with routes still set up: close tears them down.
            drop((edu, dma, intx_irq, areas));
        } else {
            drop(intx_irq);
            drop(areas);
            drop(dma);
            drop(edu);
        }
        drop((intx, resample, vectors));
        assert_eq!(open_fds(), after_plug, "round {round}");
    }

    // Unplug with routes live closes them; so does dropping the container.
    let dma = c.open_device(DMA).expect("open");
    let efd = EventFd::nonblocking().expect("eventfd");
    let before_route = open_fds();
    dma.irq(index::MSIX)
        .and_then(|i| i.set_eventfd(0, Some(efd.as_fd())))
        .expect("route");
    assert_eq!(open_fds(), before_route + 1);
    c.unplug(DMA).expect("unplug");
    assert_eq!(open_fds(), before_route, "unplug closed the route");
    drop((dma, efd));
    drop(c);
    assert_eq!(open_fds(), baseline, "the memfd went with the last handle");
}
