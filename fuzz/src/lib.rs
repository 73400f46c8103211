//! The properties the fuzz targets check, kept out of the targets so that
//! `cargo test --lib` (on stable, no libFuzzer) can replay the corpus through
//! the very same code and regenerate the seed corpus.
//!
//! Every `check` function takes the raw fuzz input, decodes it, calls the
//! code under test and panics (a fuzz crash) when a property fails: a parser
//! panicking, an accepted input that breaks the format's invariants, an
//! encode → parse round trip that does not hold, an allocator state no
//! sequential model allows, or a mock device that resumes from a migration
//! stream other than its documentation says.

pub mod caps;
pub mod input;
pub mod iova;
pub mod irq;
pub mod mig_resume;
pub mod pci;
pub mod seeds;

/// A fuzz target's entry point: checks one input, panics on a violation.
pub type Check = fn(&[u8]);

/// The fuzz targets, by name, with the function each one runs.
pub const TARGETS: [(&str, Check); 5] = [
    ("caps_chain", caps::check),
    ("irq_set", irq::check),
    ("pci_config", pci::check),
    ("iova_alloc", iova::check),
    ("mig_resume", mig_resume::check),
];
