//! The differential edu script on the mock: deterministic (two fresh
//! mocks give the same trace) and of the expected shape, so the script is
//! tested without the real-kernel lane (which runs it on the real device
//! and diffs, in `facade/tests/differential.rs`).

use vfio_hal_conformance::differential::{self, Obs, Options, Trace};
use vfio_hal_conformance::edu::{expected_factorial, reg};
use vfio_hal_mock::{models::Edu, MockContainer};

fn mock_trace() -> Trace {
    let container = MockContainer::new();
    container.plug("edu", Edu::new()).expect("plug edu");
    let clock = container.clock();
    let hold = move |on: bool| clock.set_manual(on);
    differential::run(&container, "edu", &Options::mock(&hold)).expect("the script runs")
}

#[test]
fn two_fresh_mocks_give_the_same_trace() {
    let (a, b) = (mock_trace(), mock_trace());
    let diffs = a.diff(&b);
    assert!(
        diffs.is_empty(),
        "{}",
        diffs.iter().map(|d| format!("{d}\n")).collect::<String>()
    );
}

/// Sections in order, with their step counts: a changed script changes
/// these on purpose, and the lane's comparison with it.
#[test]
fn the_trace_has_the_scripts_shape() {
    let t = mock_trace();
    // BAR 0: 0x00..0xa0 at 1, 2, 4, 8 bytes (160 + 80 + 40 + 20), the
    // unlisted offsets at 4 and 8 bytes, the misaligned reads and the
    // registers after them; then as many writes (less the raise at 4
    // bytes), each with the registers after it, and the misaligned writes.
    let unlisted = differential::UNLISTED.len();
    let misaligned = differential::MISALIGNED.len();
    let reads = 300 + 2 * unlisted + misaligned + 1;
    let writes = 2 * (300 - 1 + 2 * unlisted) + 2 * misaligned;
    assert_eq!(
        t.sections(),
        [
            ("known", 3),
            ("info", 32),
            ("cfg", 54),
            ("bar0", reads + writes),
            ("live", 8),
            ("fact", 62),
            ("msi", 51),
            ("intx", 52),
            ("dma", 44),
            ("reset", 4),
            ("reopen", 5),
        ],
        "{t}"
    );
    let value = |id: &str| match t.get(id) {
        Some(Obs::Value(v)) => *v,
        other => panic!("{id}: {other:?}\n{t}"),
    };
    assert_eq!(value("bar0.r4@0x00"), u64::from(reg::ID_VALUE));
    assert_eq!(value("bar0.r8@0x00"), u64::MAX, "8 bytes below 0x80");
    assert_eq!(value("bar0.r1@0x00"), 0, "narrower than 4 bytes");
    for n in [0u32, 1, 12, 13] {
        assert_eq!(
            value(&format!("fact.{n}.result")),
            u64::from(expected_factorial(n))
        );
    }
    assert_eq!(
        value("fact.busy.status"),
        u64::from(reg::EDU_STATUS_COMPUTING)
    );
    assert_eq!(
        value("fact.busy.still_input"),
        u64::from(differential::BUSY_FACTORIAL)
    );
    assert_eq!(value("fact.irqfact.signals"), 1);
    assert_eq!(value("msi.0.raise_0x1.signals"), 1);
    assert_eq!(value("intx.9.unmask_0x0.signals"), 1);
    assert_eq!(value("dma.irq.irq_status"), u64::from(reg::DMA_IRQ));
    let bytes = |id: &str| match t.get(id) {
        Some(Obs::Bytes(b)) => b.clone(),
        other => panic!("{id}: {other:?}"),
    };
    assert!(bytes("dma.from_unmapped.buffer")[..64]
        .iter()
        .all(|&b| b == 0));
    assert_eq!(
        bytes("reset.registers_before"),
        bytes("reset.registers_after"),
        "edu keeps its registers"
    );
    assert!(
        t.steps().iter().all(|s| !matches!(s.obs, Obs::Bool(false))),
        "every wait finished:\n{t}"
    );
}
