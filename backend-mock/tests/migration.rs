//! VFIO migration v2 on the mock: the features as vfio answers them, the
//! state machine walked and refused as the kernel walks and refuses it,
//! the data stream's semantics, and an edu's whole state (registers,
//! buffer, interrupt status, work in flight) carried from one mock device
//! to another through the stream.
//!
//! Run: `cargo test -p vfio-hal-mock --test migration`.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{copy_engine, reg32, set_reg32, EDU};
use vfio_hal::device::feature::{MIGRATION, MIG_DATA_SIZE, MIG_DEVICE_STATE};
use vfio_hal::migration::{MigrationData, MigrationFlags, MigrationState as S};
use vfio_hal::prelude::*;
use vfio_hal::{ErrorKind, FeatureOp, FeatureSupport};
use vfio_hal_mock::models::edu::{reg, state, Edu, FACTORIAL_DELAY};
use vfio_hal_mock::{MockContainer, MockDevice};

/// A container with a migratable edu plugged, and the opened device.
fn edu() -> vfio_hal::Result<(MockContainer, MockDevice)> {
    let c = MockContainer::new();
    c.plug(EDU, Edu::new().migratable())?;
    let d = c.open_device(EDU)?;
    Ok((c, d))
}

fn set(dev: &MockDevice, to: S) -> Option<MigrationData> {
    dev.set_migration_state(to)
        .unwrap_or_else(|e| panic!("to {to:?}: {e}"))
}

fn einval<T: std::fmt::Debug>(r: vfio_hal::Result<T>) {
    let e = r.expect_err("refused");
    assert_eq!(
        (e.kind(), e.errno()),
        (ErrorKind::InvalidArgument, Some(libc::EINVAL)),
        "{e}"
    );
}

fn read_all(data: &mut MigrationData) -> Vec<u8> {
    let mut out = Vec::new();
    data.read_to_end(&mut out).expect("read to the end");
    out
}

/// One stream frame holding `state`.
fn frame(state: &[u8]) -> Vec<u8> {
    let mut v = (state.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(state);
    v
}

#[test]
fn the_features_answer_as_vfio_does() {
    let (_c, dev) = edu().expect("edu");
    let flags = dev.migration_flags().expect("MIGRATION");
    assert_eq!(
        flags,
        MigrationFlags::STOP_COPY | MigrationFlags::P2P | MigrationFlags::PRE_COPY
    );
    assert_eq!(dev.migration_state().expect("state"), S::Running);
    assert_eq!(
        dev.migration_data_size().expect("size"),
        4 + state::LEN as u64,
        "one frame of edu's state"
    );
    let probe = |f| dev.probe_feature(f).expect("probe");
    assert_eq!(
        probe(MIGRATION),
        FeatureSupport {
            get: true,
            set: false
        }
    );
    assert_eq!(
        probe(MIG_DEVICE_STATE),
        FeatureSupport {
            get: true,
            set: true
        }
    );
    assert_eq!(
        probe(MIG_DATA_SIZE),
        FeatureSupport {
            get: true,
            set: false
        }
    );
    einval(dev.feature(FeatureOp::Set, MIGRATION, &mut [0; 8]));
    einval(dev.feature(FeatureOp::Get, MIGRATION, &mut [0; 4]));
    // Setting the state answers with a stream: only the typed call has it.
    let e = dev
        .feature(
            FeatureOp::Set,
            MIG_DEVICE_STATE,
            &mut [1, 0, 0, 0, 0, 0, 0, 0],
        )
        .expect_err("raw SET");
    assert_eq!(e.kind(), ErrorKind::NotSupported);
    assert_eq!(
        dev.migration_state().expect("state"),
        S::Running,
        "unchanged"
    );
}

#[test]
fn a_model_that_cannot_migrate_has_no_migration_features() {
    let (_c, dev) = copy_engine().expect("copy engine");
    let e = dev.migration_flags().expect_err("no migration");
    assert_eq!(
        (e.kind(), e.errno()),
        (ErrorKind::NotSupported, Some(libc::ENOTTY))
    );
    let e = dev.set_migration_state(S::Stop).expect_err("no migration");
    assert_eq!(e.errno(), Some(libc::ENOTTY));
}

#[test]
fn refused_requests_leave_the_state_as_it_was() {
    let (_c, dev) = edu().expect("edu");
    einval(dev.set_migration_state(S::Error));
    set(&dev, S::StopCopy);
    einval(dev.set_migration_state(S::PreCopy));
    einval(dev.set_migration_state(S::PreCopyP2p));
    assert_eq!(dev.migration_state().expect("state"), S::StopCopy);
}

#[test]
fn stop_freezes_the_model_and_running_again_finishes_its_work() {
    let (c, dev) = edu().expect("edu");
    let clock = c.clock();
    clock.set_manual(true);
    set_reg32(&dev, reg::FACTORIAL, 5);
    assert!(set(&dev, S::Stop).is_none(), "STOP has no data");
    clock.advance(FACTORIAL_DELAY * 10);
    assert_ne!(
        reg32(&dev, reg::STATUS) & reg::EDU_STATUS_COMPUTING,
        0,
        "no progress while stopped"
    );
    set(&dev, S::Running);
    clock.advance(Duration::ZERO);
    assert_eq!(reg32(&dev, reg::STATUS) & reg::EDU_STATUS_COMPUTING, 0);
    assert_eq!(reg32(&dev, reg::FACTORIAL), 120);
}

/// The usual VMM sequence: the source pre-copies while running, stops for
/// the final copy; the destination resumes from the stream; the edu's
/// state (and its factorial still in flight) arrives.
#[test]
fn an_edu_migrates_to_another_device_with_its_work_in_flight() {
    let (src_c, src) = edu().expect("source edu");
    src_c.clock().set_manual(true);
    set_reg32(&src, reg::LIVENESS, 0x1234_5678);
    set_reg32(&src, reg::DMA_SRC, 0x4000);
    set_reg32(&src, reg::IRQ_RAISE, 0x40);
    set_reg32(&src, reg::FACTORIAL, 6);

    let mut stream = set(&src, S::PreCopy).expect("PRE_COPY opens a session");
    assert_eq!(stream.state(), S::PreCopy);
    let info = stream.precopy_info().expect("pre-copy info");
    assert_eq!(info.initial_bytes, 4 + state::LEN as u64);
    let mut initial = vec![0; info.initial_bytes as usize];
    stream.read_exact(&mut initial).expect("the initial state");
    let e = stream.read(&mut [0; 16]).expect_err("nothing more for now");
    assert_eq!(e.raw_os_error(), Some(libc::ENOMSG));
    assert_eq!(stream.precopy_info().expect("info").initial_bytes, 0);

    assert!(set(&src, S::StopCopy).is_none(), "the session goes on");
    let rest = read_all(&mut stream);
    assert_eq!(rest.len(), 4 + state::LEN, "the state at the stop");
    einval(stream.precopy_info());
    set(&src, S::Stop);
    let e = stream.read(&mut [0; 1]).expect_err("session over");
    assert_eq!(e.raw_os_error(), Some(libc::ENODEV));

    let dst_c = MockContainer::new();
    dst_c.clock().set_manual(true);
    dst_c.plug("edu", Edu::new().migratable()).expect("plug");
    let dst = dst_c.open_device("edu").expect("destination edu");
    set(&dst, S::Stop);
    let mut sink = set(&dst, S::Resuming).expect("RESUMING opens a session");
    sink.write_all(&initial).expect("pre-copy frame");
    sink.write_all(&rest).expect("final frame");
    set(&dst, S::Running);
    assert_eq!(reg32(&dst, reg::LIVENESS), !0x1234_5678);
    assert_eq!(reg32(&dst, reg::DMA_SRC), 0x4000);
    assert_eq!(reg32(&dst, reg::IRQ_STATUS), 0x40);
    assert_ne!(
        reg32(&dst, reg::STATUS) & reg::EDU_STATUS_COMPUTING,
        0,
        "still computing"
    );
    dst_c.clock().advance(FACTORIAL_DELAY);
    assert_eq!(
        reg32(&dst, reg::FACTORIAL),
        720,
        "the work in flight finished here"
    );
    let e = sink.write(&[0]).expect_err("session over");
    assert_eq!(e.raw_os_error(), Some(libc::ENODEV));
}

#[test]
fn bad_resume_data_fails_into_error_and_a_reset_recovers() {
    let (_c, dev) = edu().expect("edu");
    let garbage: &[&[u8]] = &[
        b"",
        &[1, 2, 3],
        &frame(b"not an edu"),
        &frame(&[0; state::LEN]),
        &{
            let mut torn = frame(&[0; state::LEN]);
            torn.pop();
            torn
        },
    ];
    for bytes in garbage {
        set(&dev, S::Stop);
        let mut sink = set(&dev, S::Resuming).expect("RESUMING");
        sink.write_all(bytes).expect("write");
        einval(dev.set_migration_state(S::Stop));
        assert_eq!(
            dev.migration_state().expect("state"),
            S::Error,
            "{bytes:02x?}"
        );
        einval(dev.set_migration_state(S::Running));
        dev.reset().expect("reset");
        assert_eq!(dev.migration_state().expect("state"), S::Running);
    }
}

#[test]
fn a_state_from_an_edu_with_another_dma_mask_is_refused() {
    let c = MockContainer::new();
    c.plug("wide", Edu::with_dma_mask(u64::MAX).migratable())
        .expect("plug");
    let wide = c.open_device("wide").expect("open");
    set(&wide, S::Stop);
    let saved = read_all(&mut set(&wide, S::StopCopy).expect("STOP_COPY"));
    let (_c2, narrow) = edu().expect("edu");
    set(&narrow, S::Stop);
    set(&narrow, S::Resuming)
        .expect("RESUMING")
        .write_all(&saved)
        .expect("write");
    einval(narrow.set_migration_state(S::Stop));
}

#[test]
fn closing_the_device_ends_its_session_and_returns_it_to_running() {
    let (c, dev) = edu().expect("edu");
    set(&dev, S::Stop);
    let mut stream = set(&dev, S::StopCopy).expect("STOP_COPY");
    drop(dev);
    let e = stream.read(&mut [0; 1]).expect_err("closed");
    assert_eq!(e.raw_os_error(), Some(libc::ENODEV));
    let dev = c.open_device(EDU).expect("reopen");
    assert_eq!(dev.migration_state().expect("state"), S::Running);
}

#[test]
fn an_oversized_resume_stream_is_refused() {
    let (_c, dev) = edu().expect("edu");
    set(&dev, S::Stop);
    let mut sink = set(&dev, S::Resuming).expect("RESUMING");
    let chunk = vec![0; 1 << 20];
    let e = (0..=vfio_hal_mock::migration::MAX_STREAM_BYTES >> 20)
        .find_map(|_| sink.write(&chunk).err())
        .expect("refused past the bound");
    assert_eq!(e.raw_os_error(), Some(libc::EFBIG));
}

proptest::proptest! {
    /// Any bytes fed to RESUMING either load (a well-formed edu state, here
    /// a saved one with bytes flipped in its registers) or fail into ERROR
    /// with EINVAL; nothing panics, and a reset always recovers.
    #[test]
    fn any_resume_bytes_load_or_fail_cleanly(
        garbage in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        flips in proptest::collection::vec((0usize..4 + state::LEN, proptest::num::u8::ANY), 0..8),
        as_is in proptest::bool::ANY,
    ) {
        let (_c, src) = edu().expect("edu");
        set(&src, S::Stop);
        let mut saved = read_all(&mut set(&src, S::StopCopy).expect("STOP_COPY"));
        for (at, x) in flips {
            saved[at] ^= x;
        }
        let bytes = if as_is { saved } else { [saved, garbage].concat() };
        let (_c2, dst) = edu().expect("edu");
        set(&dst, S::Stop);
        set(&dst, S::Resuming).expect("RESUMING").write_all(&bytes).expect("write");
        match dst.set_migration_state(S::Stop) {
            Ok(_) => proptest::prop_assert_eq!(dst.migration_state().expect("state"), S::Stop),
            Err(e) => {
                proptest::prop_assert_eq!(e.errno(), Some(libc::EINVAL));
                proptest::prop_assert_eq!(dst.migration_state().expect("state"), S::Error);
            }
        }
        dst.reset().expect("reset");
        proptest::prop_assert_eq!(dst.migration_state().expect("state"), S::Running);
        // The device works after either outcome.
        set_reg32(&dst, reg::LIVENESS, 7);
        proptest::prop_assert_eq!(reg32(&dst, reg::LIVENESS), !7);
    }
}

#[test]
fn save_and_load_walk_the_usual_sequence_and_refuse_a_device_already_saving() {
    let (_c, src) = edu().expect("edu");
    set_reg32(&src, reg::LIVENESS, 0x55);
    let mut wire = Vec::new();
    let n = vfio_hal::migration::save(&src, &mut wire).expect("save");
    assert_eq!(n as usize, wire.len());
    assert_eq!(src.migration_state().expect("state"), S::Stop);
    let (_c2, dst) = edu().expect("edu");
    vfio_hal::migration::load(&dst, &mut wire.as_slice()).expect("load");
    assert_eq!(
        dst.migration_state().expect("state"),
        S::Stop,
        "the VMM resumes it"
    );
    set(&dst, S::Running);
    assert_eq!(reg32(&dst, reg::LIVENESS), !0x55);

    set(&src, S::Running);
    let _precopy = set(&src, S::PreCopy).expect("pre-copy stream");
    let e = vfio_hal::migration::save(&src, &mut Vec::new()).expect_err("already saving");
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert_eq!(
        src.migration_state().expect("state"),
        S::PreCopy,
        "not moved"
    );
    einval(vfio_hal::migration::load(&dst, &mut [0u8; 3].as_slice()).map(drop));
    assert_eq!(dst.migration_state().expect("state"), S::Error);
}

/// A migratable copy engine carries its registers, counters, both SRAM
/// areas and a request in flight to another engine, where the request
/// finishes (SRAM to SRAM: no IOMMU mapping needed).
#[test]
fn a_copy_engine_migrates_with_its_sram_and_a_request_in_flight() {
    use vfio_hal_mock::models::copy_engine::{reg as ce, CopyEngine, SRAM_BAR};
    let engine = |c: &MockContainer| {
        c.plug("engine", CopyEngine::new().migratable())
            .expect("plug");
        let dev = c.open_device("engine").expect("open");
        dev.set_bus_master(true).expect("bus master");
        dev
    };
    let src_c = MockContainer::new();
    src_c.clock().set_manual(true);
    let src = engine(&src_c);
    let bar0 = src.region(0).expect("BAR0");
    let sram = src.region(SRAM_BAR.into()).expect("BAR2");
    sram.write(0x100, b"carried across").expect("SRAM");
    sram.write(0x5000, b"second area").expect("SRAM");
    bar0.write_at::<u64>(ce::SRC, 0x100).expect("src");
    bar0.write_at::<u64>(ce::DST, 0x200).expect("dst");
    bar0.write_at::<u32>(ce::LEN, 14).expect("len");
    bar0.write_at::<u32>(
        ce::DOORBELL,
        ce::DOORBELL_GO | ce::DOORBELL_SRC_SRAM | ce::DOORBELL_DST_SRAM,
    )
    .expect("go");
    assert_ne!(
        bar0.read_at::<u32>(ce::STATUS).expect("status") & ce::STATUS_BUSY,
        0
    );
    let mut wire = Vec::new();
    vfio_hal::migration::save(&src, &mut wire).expect("save");

    let dst_c = MockContainer::new();
    dst_c.clock().set_manual(true);
    let dst = engine(&dst_c);
    vfio_hal::migration::load(&dst, &mut wire.as_slice()).expect("load");
    set(&dst, S::Running);
    let (bar0, sram) = (
        dst.region(0).expect("BAR0"),
        dst.region(SRAM_BAR.into()).expect("BAR2"),
    );
    let mut got = [0u8; 11];
    sram.read(0x5000, &mut got).expect("SRAM");
    assert_eq!(&got, b"second area");
    assert_ne!(
        bar0.read_at::<u32>(ce::STATUS).expect("status") & ce::STATUS_BUSY,
        0,
        "still in flight"
    );
    dst_c
        .clock()
        .advance(vfio_hal_mock::models::copy_engine::COPY_LATENCY);
    assert_eq!(bar0.read_at::<u32>(ce::COMPLETED).expect("completed"), 1);
    let mut copied = [0u8; 14];
    sram.read(0x200, &mut copied).expect("SRAM");
    assert_eq!(
        &copied, b"carried across",
        "the request finished on the destination"
    );
    // A state from an engine with other vectors is refused.
    let c = MockContainer::new();
    c.plug("wide", CopyEngine::with_vectors(8).migratable())
        .expect("plug");
    let wide = c.open_device("wide").expect("open");
    einval(vfio_hal::migration::load(&wide, &mut wire.as_slice()).map(drop));
}
