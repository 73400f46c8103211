//! A device's VFIO file registered with a hypervisor: the mock hypervisor
//! answers as KVM-VFIO does, and a registration removes its file, and
//! closes its duplicate, when it drops.
//!
//! The tests take [`SERIAL`] so that none opens or closes fds while
//! another counts them.
//!
//! Run: `cargo test -p vfio-hal-mock --test hypervisor`.

mod common;

use std::os::fd::AsFd;
use std::sync::{Mutex, MutexGuard, PoisonError};

use vfio_hal::decorate::trace::Tracer;
use vfio_hal::hypervisor::{Hypervisor, VfioFileRegistration};
use vfio_hal::prelude::*;
use vfio_hal::ErrorKind;
use vfio_hal_mock::models::{CopyEngine, Edu};
use vfio_hal_mock::{MockContainer, MockHypervisor};

/// Held by every test of this file for its whole run.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

#[test]
fn registrations_add_each_device_once_and_remove_it_when_dropped() {
    let _serial = serial();
    let c = MockContainer::new();
    c.plug("edu", Edu::new()).expect("plug");
    c.plug("dma", CopyEngine::new()).expect("plug");
    let edu = c.open_device("edu").expect("open");
    let dma = c.open_device("dma").expect("open");
    let vm = MockHypervisor::new();

    let a = VfioFileRegistration::new(&vm, &edu).expect("add edu");
    let b = VfioFileRegistration::new(vm.clone(), &dma).expect("add dma");
    assert_eq!(vm.files(), ["edu", "dma"]);

    // The same file again, even through another duplicate: EEXIST.
    let e = VfioFileRegistration::new(&vm, &edu).expect_err("added twice");
    assert_eq!(e.errno(), Some(libc::EEXIST), "{e}");
    assert!(e.to_string().contains("edu"), "the device is named: {e}");

    drop(a);
    assert_eq!(vm.files(), ["dma"]);
    b.remove().expect("remove dma");
    assert!(vm.files().is_empty());
}

#[test]
fn the_mock_hypervisor_refuses_what_kvm_refuses() {
    let _serial = serial();
    let vm = MockHypervisor::new();
    let null = std::fs::File::open("/dev/null").expect("open");
    let e = vm.add_vfio_file(null.as_fd()).expect_err("no VFIO file");
    assert_eq!(
        (e.kind(), e.errno()),
        (ErrorKind::InvalidArgument, Some(libc::EINVAL))
    );
    assert!(e.to_string().contains("KVM_DEV_VFIO_FILE_ADD"), "{e}");
    let e = vm.remove_vfio_file(null.as_fd()).expect_err("never added");
    assert_eq!(
        (e.kind(), e.errno()),
        (ErrorKind::NotFound, Some(libc::ENOENT))
    );
    assert_eq!(vm.name(), "mock");
}

#[test]
fn a_registration_outlives_its_device_and_leaks_nothing() {
    let _serial = serial();
    let before = common::open_fds();
    let vm = MockHypervisor::new();
    {
        let (_c, edu) = common::edu().expect("edu");
        let registration = VfioFileRegistration::new(&vm, &edu).expect("add");
        drop(edu);
        assert_eq!(
            vm.files(),
            [common::EDU],
            "still added after the device closed"
        );
        registration
            .remove()
            .expect("remove after the device closed");
    }
    assert!(vm.files().is_empty());
    assert_eq!(
        common::open_fds(),
        before,
        "the device file and its duplicate are closed"
    );
}

#[test]
fn a_revoked_device_has_no_file_to_give() {
    let _serial = serial();
    let (_c, edu) = common::edu().expect("edu");
    edu.revoker().expect("revoker").revoke().expect("revoke");
    let e = edu.vfio_file().expect_err("revoked");
    assert_eq!(e.kind(), ErrorKind::DeviceGone, "{e}");
}

#[test]
fn a_decorated_device_gives_the_inner_devices_file() {
    let _serial = serial();
    let (_c, edu) = common::edu().expect("edu");
    let traced = Tracer::new(&edu);
    let vm = MockHypervisor::new();
    let _added = VfioFileRegistration::new(&vm, &traced).expect("add through the tracer");
    assert_eq!(vm.files(), [common::EDU]);
    assert_eq!(
        VfioFileRegistration::new(&vm, &edu)
            .expect_err("the same file")
            .errno(),
        Some(libc::EEXIST)
    );
}
