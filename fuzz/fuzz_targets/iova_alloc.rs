#![no_main]
//! Fuzz target `iova_alloc`: see `vfio_hal_fuzz::iova` for the input format and the properties.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vfio_hal_fuzz::iova::check(data);
});
