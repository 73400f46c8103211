#![no_main]
//! Fuzz target `irq_set`: see `vfio_hal_fuzz::irq` for the input format and the properties.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vfio_hal_fuzz::irq::check(data);
});
