#![no_main]
//! Fuzz target `pci_config`: see `vfio_hal_fuzz::pci` for the input format and the properties.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vfio_hal_fuzz::pci::check(data);
});
