//! `OwnedDmaMapping`: a DMA guard that shares ownership of its container,
//! so it can live next to the container in long-lived state.

use std::sync::Arc;

use vfio_hal::decorate::inject::{FaultInjector, Plan};
use vfio_hal::decorate::Op;
use vfio_hal::{Container, DmaAccess, DmaBuffer, ErrorKind, OwnedDmaMapping};
use vfio_hal_mock::MockContainer;

const PAGE: usize = 4096;

/// What a VMM keeps: its container and the guest-RAM mappings into it.
struct Vm<C: Container> {
    container: Arc<C>,
    ram: Vec<OwnedDmaMapping<C>>,
}

fn boot<C: Container>(container: C) -> Vm<C> {
    let container = Arc::new(container);
    let ram = [0x10_0000, 0x20_0000]
        .into_iter()
        .map(|iova| {
            let buffer = DmaBuffer::new(PAGE).expect("buffer");
            container
                .map_buffer_owned(iova, buffer, DmaAccess::ReadWrite)
                .expect("map")
        })
        .collect();
    Vm { container, ram }
}

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn the_guard_lives_in_a_struct_with_its_container_and_is_send_and_sync() {
    assert_send_sync::<Vm<MockContainer>>();
    let mock = MockContainer::new();
    let vm = boot(mock.clone());
    assert_eq!(mock.mapping_count(), 2, "the mappings outlive boot()");
    assert_eq!(vm.ram[1].iova(), 0x20_0000);
    assert_eq!(vm.ram[1].len(), PAGE as u64);
    assert!(std::ptr::eq(vm.ram[0].container(), &*vm.container));
    // The state moves to another thread and is dropped there.
    std::thread::spawn(move || drop(vm)).join().expect("thread");
    assert_eq!(mock.mapping_count(), 0, "dropping the state unmapped");
}

#[test]
fn drop_unmaps_so_the_range_maps_again() {
    let vm = boot(MockContainer::new());
    let Vm { container, mut ram } = vm;
    drop(ram.remove(0));
    assert_eq!(container.mapping_count(), 1);
    let again = container
        .map_buffer_owned(
            0x10_0000,
            DmaBuffer::new(PAGE).expect("buffer"),
            DmaAccess::ReadOnly,
        )
        .expect("the dropped guard's range is free again");
    assert_eq!(again.access(), DmaAccess::ReadOnly);
}

#[test]
fn unmap_hands_the_buffer_back() {
    let container = Arc::new(MockContainer::new());
    let buffer = DmaBuffer::new(PAGE).expect("buffer");
    buffer.write(8, b"kept").expect("write");
    let guard = container
        .map_buffer_owned(0x10_0000, buffer, DmaAccess::ReadWrite)
        .expect("map");
    let back = guard.unmap().expect("unmap");
    let mut data = [0u8; 4];
    back.read(8, &mut data).expect("read");
    assert_eq!(&data, b"kept");
    assert_eq!(container.mapping_count(), 0);
}

#[test]
fn a_failed_map_hands_the_buffer_back() {
    let container = Arc::new(MockContainer::new());
    let e = container
        .map_buffer_owned(
            0x1234,
            DmaBuffer::new(PAGE).expect("buffer"),
            DmaAccess::ReadWrite,
        )
        .expect_err("misaligned");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert_eq!(e.buffer.len(), PAGE);
}

#[test]
fn a_failed_unmap_in_drop_leaks_the_buffer_instead_of_freeing_it() {
    let mock = MockContainer::new();
    let vm = boot(FaultInjector::with_plan(
        mock.clone(),
        Plan::fail_every(Op::UnmapDma),
    ));
    vm.ram[0].buffer().write(0, b"still here").expect("write");
    drop(vm);
    assert_eq!(mock.mapping_count(), 2, "the unmaps failed");
    // Had the guard freed (munmapped) the buffer, this device read of the
    // still-mapped range would touch unmapped memory.
    let mut seen = [0u8; 10];
    mock.iommu()
        .dma_read("test", 0x10_0000, &mut seen)
        .expect("the mapping still translates");
    assert_eq!(&seen, b"still here");
}
