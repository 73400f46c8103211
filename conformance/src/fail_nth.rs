//! [`StepFaults`] over the Linux kernel's per-thread fault injection.
//!
//! With `CONFIG_FAULT_INJECTION`, writing `n` to
//! `/proc/thread-self/fail-nth` makes the `n`th fault-injection point this
//! thread reaches fail (iommufd's page pinning and allocations with
//! `CONFIG_IOMMUFD_TEST`); reading it back gives 0 once that happened.
//! The real backends' fixtures hand it to the suite so that group G can
//! fail steps *inside* their ioctls, not only whole hal calls.

use std::fs::OpenOptions;
use std::io::{Read, Write};

use vfio_hal::{Error, Result, Target};

use crate::fixture::StepFaults;

/// The kernel's `fail-nth` file for the calling thread.
pub const FAIL_NTH: &str = "/proc/thread-self/fail-nth";

/// Fails the Nth kernel fault-injection point reached by this thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelFailNth;

fn proc_error(e: &std::io::Error) -> Error {
    Error::from_io("fail-nth", Target::Path(FAIL_NTH.into()), e)
}

fn write(text: &[u8]) -> Result<()> {
    OpenOptions::new()
        .write(true)
        .open(FAIL_NTH)
        .and_then(|mut f| f.write_all(text))
        .map_err(|e| proc_error(&e))
}

impl StepFaults for KernelFailNth {
    fn arm(&self, nth: u64) -> Result<()> {
        write(nth.to_string().as_bytes())
    }

    fn disarm(&self) -> Result<bool> {
        // procfs cannot seek this file: one open to read, one to write.
        let mut text = String::new();
        OpenOptions::new()
            .read(true)
            .open(FAIL_NTH)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map_err(|e| proc_error(&e))?;
        // 0: the armed point was reached and failed; N > 0: N more to go.
        let left: u64 = text.trim().parse().map_err(|_| Error::InvalidArgument {
            op: "fail-nth",
            target: Target::Path(FAIL_NTH.into()),
            reason: "not a number",
        })?;
        write(b"0")?;
        Ok(left == 0)
    }
}
