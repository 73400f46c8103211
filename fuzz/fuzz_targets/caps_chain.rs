#![no_main]
//! Fuzz target `caps_chain`: see `vfio_hal_fuzz::caps` for the input format and the properties.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vfio_hal_fuzz::caps::check(data);
});
