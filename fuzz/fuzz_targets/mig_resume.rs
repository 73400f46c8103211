#![no_main]
//! Fuzz target `mig_resume`: see `vfio_hal_fuzz::mig_resume` for the input format and the properties.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vfio_hal_fuzz::mig_resume::check(data);
});
