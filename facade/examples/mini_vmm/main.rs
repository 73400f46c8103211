//! A small VMM's VFIO side, structured as a VMM author would: a [`Vmm`]
//! owns the container (in an `Arc`), its guest RAM as long-lived owned DMA
//! mappings at IOVA = GPA, and its passed-through devices, generic over the
//! backend's `Container`.
//!
//! ```text
//! cargo run -p vfio-hal-facade --example mini_vmm
//! ```
//!
//! On the mock's copy engine and edu it:
//! - maps two guest RAM ranges;
//! - attaches the copy engine, routing its MSI-X vectors from the MSI-X
//!   layout (and checking the table lies in BAR2 at `0x4000`, where the
//!   layout says), and edu, which has MSI only;
//! - finds the copy engine's counters region by `(type, subtype)`;
//! - has the copy engine copy bytes from one guest range to the other by
//!   guest-physical address, waits for the completion interrupt on its
//!   eventfd, and checks the bytes and the counters;
//! - raises edu's interrupt and waits for it;
//! - tears down (devices, mappings, container) and shows nothing leaked:
//!   the mock holds no mapping and the same IOVAs map again.
//!
//! `cargo test` runs the same on the facade's mock and on a bare
//! `MockContainer` (this example is built with `test = true`). The facade's
//! lane test runs [`Vmm`] on the real kernel's edu and NVMe.

mod vmm;

use std::process::ExitCode;
use std::time::Duration;

use vfio_hal_facade::mock::layout::REGION_TYPE_PCI_VENDOR;
use vfio_hal_facade::mock::models::copy_engine::{self as ce, reg};
use vfio_hal_facade::mock::models::edu;
use vfio_hal_facade::mock::MockContainer;
use vfio_hal_facade::prelude::*;
use vfio_hal_facade::{irq, open, Backend, OpenSpec, Opened};
use vmm::{assert_unmapped, BoxError, Vmm};

/// Guest RAM as `(gpa, len)`: below edu's 28-bit DMA mask.
const RAM: [(u64, usize); 2] = [(0x10_0000, 0x1_0000), (0x20_0000, 0x4000)];
/// The copy's source and destination (guest-physical) and length.
const SRC: u64 = RAM[0].0 + 0x2040;
const DST: u64 = RAM[1].0 + 0x100;
const LEN: usize = 512;
/// The copy engine's completion vector.
const VECTOR: u32 = 1;
/// How long an interrupt may take.
const IRQ_TIMEOUT: Duration = Duration::from_secs(5);

/// What a run did, for `main` to print and the tests to check.
#[derive(Debug)]
struct Report {
    msix_vectors: usize,
    msix_table: (u32, u64),
    direct_areas: usize,
    edu_msi_vectors: usize,
    copy_signals: Vec<u64>,
    completed: u64,
    edu_signals: u64,
    live_mappings_after: usize,
}

/// Boots a VMM on `container`, whose devices (the mock's copy engine and
/// edu) `mock` shows the state of, runs one copy and one edu interrupt,
/// and tears it down.
fn run<C: Container>(
    container: C,
    copy_engine: C::Device,
    mock: &MockContainer,
) -> Result<Report, BoxError> {
    let mut vmm = Vmm::new(container);
    for (gpa, len) in RAM {
        vmm.add_ram(gpa, len)?;
    }
    let ranges = vmm.ram_ranges();
    if mock.mapping_count() != RAM.len() {
        return Err(format!("{} mappings, not {}", mock.mapping_count(), RAM.len()).into());
    }

    let ce_slot = vmm.attach("copy-engine", copy_engine)?;
    let edu_device = vmm.container().open_device("edu")?;
    let edu_slot = vmm.attach("edu", edu_device)?;

    let ce_dev = vmm.device(ce_slot);
    let layout = ce_dev.interrupts.msix.ok_or("the copy engine has MSI-X")?;
    let msix_table = (layout.table_bar, layout.table_offset);
    if msix_table != (u32::from(ce::SRAM_BAR), u64::from(ce::MSIX_TABLE_OFFSET)) {
        return Err(format!("MSI-X table at {msix_table:?}, not where the model has it").into());
    }
    let counters = ce_dev
        .device
        .region_by_type(REGION_TYPE_PCI_VENDOR | u32::from(ce::VENDOR_ID), 1)?
        .ok_or("no counters region")?;
    if counters.info().index != ce::COUNTERS_REGION {
        return Err(format!("counters found at region {}", counters.info().index).into());
    }
    let completed_before = counters.read_at::<u64>(0)?;

    // One DMA through guest RAM: a pattern written by the "guest", copied
    // by the device from one guest range to the other, by GPA.
    let pattern: Vec<u8> = (0..LEN)
        .map(|i| (i as u8).wrapping_mul(13) ^ 0x5a)
        .collect();
    vmm.write_guest(SRC, &pattern)?;
    let bar0 = ce_dev.device.region(0)?;
    bar0.write_at::<u64>(reg::SRC, SRC)?;
    bar0.write_at::<u64>(reg::DST, DST)?;
    bar0.write_at::<u32>(reg::LEN, LEN as u32)?;
    bar0.write_at::<u32>(reg::VECTOR, VECTOR)?;
    bar0.write_at::<u32>(reg::DOORBELL, reg::DOORBELL_GO)?;
    let mut copy_signals = Vec::new();
    for v in 0..ce_dev.interrupts.vectors.len() {
        let timeout = if v == VECTOR as usize {
            IRQ_TIMEOUT
        } else {
            Duration::ZERO
        };
        copy_signals.push(vmm.wait_interrupt(ce_slot, v, timeout)?);
    }
    let status = bar0.read_at::<u32>(reg::STATUS)?;
    if status != reg::STATUS_DONE {
        return Err(format!("copy status {status:#x}").into());
    }
    if vmm.read_guest(DST, LEN)? != pattern {
        return Err("the destination does not hold the source's bytes".into());
    }
    let completed = counters.read_at::<u64>(0)? - completed_before;

    // edu: MSI, one vector.
    let edu_dev = vmm.device(edu_slot);
    let edu_bar0 = edu_dev.device.region(0)?;
    edu_bar0.write_at::<u32>(edu::reg::IRQ_RAISE, 1)?;
    let edu_signals = vmm.wait_interrupt(edu_slot, 0, IRQ_TIMEOUT)?;
    edu_bar0.write_at::<u32>(edu::reg::IRQ_ACK, 1)?;

    let report = Report {
        msix_vectors: ce_dev.interrupts.vectors.len(),
        msix_table,
        direct_areas: ce_dev.interrupts.direct_areas.len(),
        edu_msi_vectors: if edu_dev.interrupts.index == irq::index::MSI {
            edu_dev.interrupts.vectors.len()
        } else {
            0
        },
        copy_signals,
        completed,
        edu_signals,
        live_mappings_after: 0,
    };
    drop((bar0, counters, edu_bar0));

    let container = vmm.shutdown()?;
    let live_mappings_after = mock.mapping_count();
    assert_unmapped(&container, &ranges)?;
    Ok(Report {
        live_mappings_after,
        ..report
    })
}

/// The VMM on the facade's mock, as a VMM that chose its backend at run
/// time holds it: type-erased.
fn run_on_the_facade_mock() -> Result<Report, BoxError> {
    let opened = open(&OpenSpec::new("copy-engine").with_backend(Backend::Mock))?;
    let mock = opened.mock().ok_or("the mock serves it")?.clone();
    let Opened {
        device, container, ..
    } = opened;
    run(container, device, &mock)
}

fn main() -> ExitCode {
    match run_on_the_facade_mock() {
        Ok(r) => {
            println!(
                "copy engine: {} MSI-X vectors routed, table in BAR{} at {:#x}, \
                 {} BAR areas mappable into the guest",
                r.msix_vectors, r.msix_table.0, r.msix_table.1, r.direct_areas
            );
            println!("edu: {} MSI vector routed", r.edu_msi_vectors);
            println!(
                "DMA: {LEN} bytes GPA {SRC:#x} -> {DST:#x}, interrupts per vector {:?}, \
                 counters region: {} completed",
                r.copy_signals, r.completed
            );
            println!("edu interrupt: {} signal", r.edu_signals);
            println!(
                "teardown: {} live mappings, the guest RAM IOVAs map again",
                r.live_mappings_after
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mini_vmm: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(r: &Report) {
        assert_eq!(r.msix_vectors, usize::from(ce::DEFAULT_VECTORS), "{r:?}");
        let mut expected = vec![0; r.msix_vectors];
        expected[VECTOR as usize] = 1;
        assert_eq!(
            r.copy_signals, expected,
            "exactly one interrupt, on its vector"
        );
        assert_eq!(r.completed, 1, "{r:?}");
        assert_eq!((r.edu_msi_vectors, r.edu_signals), (1, 1), "{r:?}");
        // BAR2's two SRAM areas, around the MSI-X page.
        assert_eq!(r.direct_areas, 2, "{r:?}");
        assert_eq!(r.live_mappings_after, 0, "{r:?}");
    }

    #[test]
    fn the_vmm_runs_on_the_facade_mock() {
        check(&run_on_the_facade_mock().expect("run"));
    }

    #[test]
    fn the_same_vmm_runs_on_a_bare_mock_container() {
        let mock = MockContainer::new();
        mock.plug("copy-engine", ce::CopyEngine::new())
            .expect("plug");
        mock.plug("edu", edu::Edu::new()).expect("plug");
        let device = mock.open_device("copy-engine").expect("open");
        check(&run(mock.clone(), device, &mock).expect("run"));
    }
}
