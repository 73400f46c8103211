//! Built-in device models, ready to plug.
//!
//! - [`Edu`]: QEMU's `edu` teaching device, faithful to `hw/misc/edu.c`, so
//!   that one driver runs unchanged on the mock and on QEMU.
//! - [`CopyEngine`]: an MSI-X DMA copy engine with the kernel selftests'
//!   driver contract.

pub mod copy_engine;
pub mod edu;
mod fields;

pub use copy_engine::CopyEngine;
pub use edu::Edu;
