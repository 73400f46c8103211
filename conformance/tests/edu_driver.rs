//! The edu driver, written once against the hal traits, on the mock's model:
//! liveness, factorial with its interrupt, DMA round trip with MSI and data check.

use vfio_hal::eventfd::EventFdExt;
use vfio_hal::Container;
use vfio_hal_conformance::edu::{expected_factorial, Direction, DriverError, EduDriver};
use vfio_hal_conformance::Fixture;
use vfio_hal_mock::conformance::MockFixture;
use vfio_hal_mock::MockContainer;

fn open() -> (
    MockContainer,
    EduDriver<<MockContainer as Container>::Device>,
) {
    let fixture = MockFixture::new();
    let container = fixture.container().expect("a mock container");
    let device = container.open_device(fixture.edu()).expect("open edu");
    let driver = EduDriver::open(device).expect("edu driver opens");
    (container, driver)
}

#[test]
fn liveness() {
    let (_c, edu) = open();
    for x in [0, 1, 0x1234_5678, u32::MAX] {
        edu.check_liveness(x).expect("liveness reads back !x");
    }
    assert_eq!(edu.identification().expect("id"), 0x0100_00ed);
}

#[test]
fn factorial_with_its_interrupt() {
    let (_c, mut edu) = open();
    edu.enable_msi().expect("route MSI");
    for n in [0, 1, 5, 10, 12, 13, 20] {
        assert_eq!(
            edu.factorial(n).expect("factorial"),
            expected_factorial(n),
            "{n}!"
        );
    }
    let fd = edu.msi_eventfd().expect("routed");
    assert_eq!(
        fd.take().expect("read"),
        0,
        "each interrupt was consumed exactly once"
    );
    assert_eq!(
        edu.interrupt_status().expect("status"),
        0,
        "and acknowledged"
    );
}

#[test]
fn dma_round_trip_with_msi() {
    let (c, mut edu) = open();
    edu.enable_msi().expect("route MSI");
    edu.round_trip(&c, 0x10_0000, 4096)
        .expect("4 KiB round trip");
    edu.round_trip(&c, 0x20_0000, 1).expect("1-byte round trip");
    assert_eq!(c.mapping_count(), 0, "the round trip unmapped its buffers");
    assert!(c.faults().is_empty(), "no IOMMU fault: {:?}", c.faults());
}

#[test]
fn dma_outside_the_device_buffer_is_refused_by_the_driver() {
    let (_c, edu) = open();
    let err = edu
        .dma(Direction::ToDevice, 0x10_0000, 4000, 200)
        .expect_err("ends past the 4 KiB buffer");
    assert!(matches!(err, DriverError::InvalidRequest(_)), "{err:?}");
}

#[test]
fn a_device_that_is_not_edu_is_refused() {
    let fixture = MockFixture::new();
    let c = fixture.container().expect("container");
    let dev = c
        .open_device(MockFixture::COPY_ENGINE)
        .expect("open the copy engine");
    let err = EduDriver::open(dev).expect_err("not an edu");
    assert!(matches!(err, DriverError::Unexpected { .. }), "{err:?}");
}
