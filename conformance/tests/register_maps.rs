//! The drivers' register maps against the mock's models.
//!
//! The conformance drivers keep their own register maps, as independent
//! readers of the device; these tests keep the two copies from drifting
//! apart: the edu maps must name the same constants with the same types
//! (widths), and every constant must have the same value on both sides.

use vfio_hal_conformance::{copy_engine as drv_ce, edu as drv_edu};
use vfio_hal_mock::models::{copy_engine as mock_ce, edu as mock_edu};

/// Asserts that each named constant has the same type and value in both paths.
macro_rules! same {
    ($a:path, $b:path; $($name:ident),+ $(,)?) => {$({
        use $a as a;
        use $b as b;
        same_value(stringify!($name), a::$name, b::$name);
    })+};
}

fn same_value<T: PartialEq + std::fmt::Debug>(name: &str, driver: T, model: T) {
    assert_eq!(
        driver, model,
        "{name}: driver {driver:#x?}, model {model:#x?}"
    );
}

/// The `(name, type)` of every `pub const` in `pub mod reg { … }` of a source file.
fn reg_consts(source: &str) -> Vec<(String, String)> {
    let start = source.find("pub mod reg {").expect("a `pub mod reg` block");
    let body = &source[start..];
    let body = &body[..body.find("\n}").expect("the end of `pub mod reg`")];
    let mut consts: Vec<(String, String)> = body
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .map(|decl| {
            let (name, rest) = decl.split_once(':').expect("`NAME: TYPE`");
            let ty = rest.split('=').next().expect("a type").trim();
            (name.trim().to_owned(), ty.to_owned())
        })
        .collect();
    consts.sort();
    consts
}

#[test]
fn edu_maps_name_the_same_constants_with_the_same_widths() {
    let driver = reg_consts(include_str!("../src/edu.rs"));
    let model = reg_consts(include_str!("../../backend-mock/src/models/edu.rs"));
    assert!(driver.len() >= 20, "parsed too little: {driver:?}");
    assert_eq!(driver, model, "driver (left) and model (right) edu::reg");
}

#[test]
fn edu_maps_agree_value_for_value() {
    same!(drv_edu::reg, mock_edu::reg;
        ID, LIVENESS, FACTORIAL, STATUS, IRQ_STATUS, IRQ_RAISE, IRQ_ACK,
        DMA_SRC, DMA_DST, DMA_CNT, DMA_CMD,
        ID_VALUE, EDU_STATUS_COMPUTING, EDU_STATUS_IRQFACT, FACT_IRQ, DMA_IRQ,
        EDU_DMA_RUN, EDU_DMA_DIR, EDU_DMA_IRQ, DMA_START, DMA_SIZE,
    );
    same!(drv_edu, mock_edu; VENDOR_ID, DEVICE_ID, REVISION);
    same_value("DMA_MASK", drv_edu::DMA_MASK, mock_edu::DEFAULT_DMA_MASK);
}

#[test]
fn copy_engine_map_agrees_with_the_model() {
    same!(drv_ce::reg, mock_ce::reg;
        ID, SRC, DST, LEN, VECTOR, DOORBELL, STATUS, ERROR,
        DOORBELL_GO, DOORBELL_SRC_SRAM, DOORBELL_DST_SRAM, STATUS_BUSY, STATUS_DONE, STATUS_ERROR,
    );
    same!(drv_ce::err, mock_ce::err; SRC_FAULT, DST_FAULT);
    same!(drv_ce, mock_ce; VENDOR_ID, DEVICE_ID, ID_VALUE, MAX_LEN);
}
