//! Registers a model declares side-effect free
//! ([`DeviceModel::pure_registers`]) are read without the device lock from
//! the value the model last gave — and only while nothing has happened to
//! the device since. Each test here fails if the mirror serves a value it
//! should not, or if it never serves one.
//!
//! Run: `cargo test -p vfio-hal-mock --test register_mirror`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use vfio_hal::eventfd::{EventFd, EventFdExt};
use vfio_hal::irq::index;
use vfio_hal::pci::cfg;
use vfio_hal::prelude::*;
use vfio_hal::{ErrorKind, Result};
use vfio_hal_mock::models::edu::{reg, Edu};
use vfio_hal_mock::{BarLayout, DeviceContext, DeviceModel, MockContainer, MockDevice, PciLayout};

/// Register 0 is declared pure, register 4 is not; both read `value`.
/// Every call of `read` is counted. A write at [`SCHEDULE`] schedules work
/// one virtual second later.
#[derive(Debug)]
struct Counted {
    value: u32,
    reads: Arc<AtomicUsize>,
    due: Option<Duration>,
}

const SCHEDULE: u64 = 12;

impl DeviceModel for Counted {
    fn layout(&self) -> PciLayout {
        let mut l = PciLayout::new(0x1234, 0x0001);
        l.bars[0] = Some(BarLayout::memory32(4096));
        l.msi = Some(vfio_hal_mock::MsiLayout {
            vectors: 1,
            addr64: true,
        });
        l
    }

    fn read(&mut self, _: &mut DeviceContext<'_>, _: u32, _: u64, data: &mut [u8]) -> Result<()> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let n = data.len().min(4);
        data[..n].copy_from_slice(&self.value.to_le_bytes()[..n]);
        Ok(())
    }

    fn write(&mut self, ctx: &mut DeviceContext<'_>, _: u32, at: u64, data: &[u8]) -> Result<()> {
        if at == SCHEDULE {
            self.due = Some(ctx.now() + Duration::from_secs(1));
            return Ok(());
        }
        let mut bytes = [0; 4];
        let n = data.len().min(4);
        bytes[..n].copy_from_slice(&data[..n]);
        self.value = u32::from_le_bytes(bytes);
        Ok(())
    }

    fn reset(&mut self, _: &mut DeviceContext<'_>) {}

    fn deadline(&self) -> Option<Duration> {
        self.due
    }

    fn on_deadline(&mut self, _: &mut DeviceContext<'_>) {
        self.due = None;
    }

    fn pure_registers(&self) -> Vec<(u32, u64)> {
        vec![(0, 0)]
    }
}

fn counted() -> (MockContainer, MockDevice, Arc<AtomicUsize>) {
    let reads = Arc::new(AtomicUsize::new(0));
    let c = MockContainer::new();
    c.plug(
        "counted",
        Counted {
            value: 7,
            reads: Arc::clone(&reads),
            due: None,
        },
    )
    .expect("plug");
    let d = c.open_device("counted").expect("open");
    (c, d, reads)
}

#[test]
fn a_declared_register_is_read_from_the_model_once_until_something_happens() {
    let (_c, dev, reads) = counted();
    let bar0 = dev.region(0).expect("bar0");
    for _ in 0..3 {
        assert_eq!(bar0.read_at::<u32>(0).expect("read"), 7);
    }
    assert_eq!(
        reads.load(Ordering::Relaxed),
        1,
        "served from the mirror after the first"
    );

    for _ in 0..3 {
        assert_eq!(bar0.read_at::<u32>(4).expect("read"), 7);
    }
    assert_eq!(
        reads.load(Ordering::Relaxed),
        4,
        "undeclared: the model every time"
    );

    // Other widths of the declared register go to the model too.
    assert_eq!(bar0.read_at::<u16>(0).expect("read"), 7);
    assert_eq!(reads.load(Ordering::Relaxed), 5);

    bar0.write_at::<u32>(0, 9).expect("write");
    assert_eq!(
        bar0.read_at::<u32>(0).expect("read"),
        9,
        "a write is seen at once"
    );
    assert_eq!(bar0.read_at::<u32>(0).expect("read"), 9);
    assert_eq!(reads.load(Ordering::Relaxed), 6);
}

#[test]
fn every_kind_of_change_to_the_device_sends_the_next_read_to_the_model() {
    let (c, dev, reads) = counted();
    let bar0 = dev.region(0).expect("bar0");
    let msi = dev.irq(index::MSI).expect("msi");
    let efd = EventFd::nonblocking().expect("eventfd");
    type Change<'a> = (&'static str, Box<dyn Fn() + 'a>);
    let changes: Vec<Change<'_>> = vec![
        (
            "a write elsewhere",
            Box::new(|| bar0.write_at::<u32>(8, 1).expect("write")),
        ),
        ("a device reset", Box::new(|| dev.reset().expect("reset"))),
        (
            "a config write",
            Box::new(|| {
                dev.update_command(cfg::CMD_MEMORY, 0).expect("command");
            }),
        ),
        (
            "an interrupt route",
            Box::new(|| msi.set_eventfd(0, Some(efd.as_fd())).expect("route")),
        ),
        (
            "a clock advance",
            Box::new(|| c.clock().advance(std::time::Duration::from_millis(1))),
        ),
    ];
    for (what, change) in &changes {
        bar0.read_at::<u32>(0).expect("fill");
        let before = reads.load(Ordering::Relaxed);
        bar0.read_at::<u32>(0).expect("mirrored");
        assert_eq!(
            reads.load(Ordering::Relaxed),
            before,
            "{what}: mirrored before"
        );
        change();
        bar0.read_at::<u32>(0).expect("read");
        assert_eq!(reads.load(Ordering::Relaxed), before + 1, "after {what}");
    }
}

#[test]
fn a_bar_without_memory_decode_refuses_a_register_the_mirror_holds() {
    let (_c, dev) = common::edu().expect("edu");
    let bar0 = dev.region(0).expect("bar0");
    assert_eq!(bar0.read_at::<u32>(reg::ID).expect("read"), reg::ID_VALUE);
    assert_eq!(bar0.read_at::<u32>(reg::ID).expect("read"), reg::ID_VALUE);
    dev.update_command(0, cfg::CMD_MEMORY).expect("decode off");
    let err = bar0.read_at::<u32>(reg::ID).expect_err("no decode");
    assert_eq!(err.errno(), Some(libc::EIO), "{err}");
    dev.update_command(cfg::CMD_MEMORY, 0).expect("decode on");
    assert_eq!(bar0.read_at::<u32>(reg::ID).expect("read"), reg::ID_VALUE);
}

#[test]
fn revoked_and_unplugged_devices_refuse_registers_the_mirror_holds() {
    let c = MockContainer::new();
    c.plug("edu", Edu::new()).expect("plug");
    let dev = c.open_device("edu").expect("open");
    let bar0 = dev.region(0).expect("bar0");
    bar0.read_at::<u32>(reg::ID).expect("fill");
    bar0.read_at::<u32>(reg::ID).expect("mirrored");
    dev.revoker().expect("revoker").revoke().expect("revoke");
    assert_eq!(
        bar0.read_at::<u32>(reg::ID).expect_err("revoked").kind(),
        ErrorKind::DeviceGone
    );

    let again = c.open_device("edu").expect("reopen");
    let bar0 = again.region(0).expect("bar0");
    bar0.read_at::<u32>(reg::ID).expect("fill");
    bar0.read_at::<u32>(reg::ID).expect("mirrored");
    c.unplug("edu").expect("unplug");
    assert_eq!(
        bar0.read_at::<u32>(reg::ID).expect_err("unplugged").kind(),
        ErrorKind::DeviceGone
    );
}

#[test]
fn while_work_is_scheduled_every_read_goes_to_the_model() {
    let (c, dev, reads) = counted();
    let clock = c.clock();
    clock.set_manual(true);
    let bar0 = dev.region(0).expect("bar0");
    bar0.write_at::<u32>(SCHEDULE, 1).expect("schedule");
    for n in 1..=3 {
        bar0.read_at::<u32>(0).expect("read");
        assert_eq!(
            reads.load(Ordering::Relaxed),
            n,
            "work pending: the locked path"
        );
    }
    clock.advance(Duration::from_secs(1));
    bar0.read_at::<u32>(0).expect("fill");
    bar0.read_at::<u32>(0).expect("mirrored");
    assert_eq!(
        reads.load(Ordering::Relaxed),
        4,
        "nothing pending: mirrored again"
    );
}

#[test]
fn edus_status_shows_a_factorial_in_progress_and_its_end() {
    let (c, dev) = common::edu().expect("edu");
    let clock = c.clock();
    clock.set_manual(true);
    let bar0 = dev.region(0).expect("bar0");
    assert_eq!(bar0.read_at::<u32>(reg::STATUS).expect("fill"), 0);
    bar0.write_at::<u32>(reg::FACTORIAL, 5).expect("start 5!");
    for _ in 0..2 {
        let status = bar0.read_at::<u32>(reg::STATUS).expect("status");
        assert_ne!(status & reg::EDU_STATUS_COMPUTING, 0, "computing");
    }
    clock.advance(vfio_hal_mock::models::edu::FACTORIAL_DELAY);
    let status = bar0.read_at::<u32>(reg::STATUS).expect("status");
    assert_eq!(status & reg::EDU_STATUS_COMPUTING, 0, "done");
    assert_eq!(bar0.read_at::<u32>(reg::FACTORIAL).expect("result"), 120);
}

#[test]
fn a_reader_racing_a_writer_sees_the_writes_in_order_and_the_last_one_at_the_end() {
    const WRITES: u32 = if cfg!(miri) { 50 } else { 20_000 };
    let (_c, dev) = common::edu().expect("edu");
    let bar0 = dev.region(0).expect("bar0");
    bar0.write_at::<u32>(reg::LIVENESS, !0).expect("write");
    thread::scope(|s| {
        s.spawn(|| {
            for i in 1..=WRITES {
                bar0.write_at::<u32>(reg::LIVENESS, !i).expect("write");
            }
        });
        let mut seen = 0;
        while seen < WRITES {
            // Liveness reads the NOT of the last write: i.
            let now = bar0.read_at::<u32>(reg::LIVENESS).expect("read");
            assert!(now >= seen && now <= WRITES, "read {now} after {seen}");
            seen = now;
        }
    });
    assert_eq!(bar0.read_at::<u32>(reg::LIVENESS).expect("read"), WRITES);
}
