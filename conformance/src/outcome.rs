//! How a case ends, and the small vocabulary cases use to say so.
//!
//! A case is a `fn(&F) -> CaseResult`. `Ok(())` means passed; the error
//! side says failed (with what was expected and what came back) or not
//! applicable (with the reason the case cannot apply to this fixture at all).
//! Errors of the hal, of the drivers and of the OS convert into a failure
//! that names their kind and errno, so `?` works inside cases; [`Context`]
//! adds which step failed.

use std::fmt;

use vfio_hal::{Error, ErrorKind, MapBufferError, UnmapError};

use crate::edu::DriverError;

/// The end of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every check held.
    Passed,
    /// A check did not hold: what was expected and what came back.
    Failed(String),
    /// The case cannot apply to this fixture (for example, no MSI-X device).
    NotApplicable(String),
}

impl Outcome {
    /// The outcome of a case's result.
    pub fn from_result(result: CaseResult) -> Self {
        match result {
            Ok(()) => Self::Passed,
            Err(CaseError::Failed(msg)) => Self::Failed(msg),
            Err(CaseError::NotApplicable(reason)) => Self::NotApplicable(reason),
        }
    }
}

/// Why a case did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaseError {
    /// A check failed.
    Failed(String),
    /// The case cannot apply to this fixture; the reason says why.
    NotApplicable(String),
}

impl fmt::Display for CaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed(msg) => write!(f, "FAILED: {msg}"),
            Self::NotApplicable(reason) => write!(f, "not applicable: {reason}"),
        }
    }
}

impl std::error::Error for CaseError {}

/// What every case returns.
pub type CaseResult = Result<(), CaseError>;

/// A failure with this message.
pub fn fail(msg: impl Into<String>) -> CaseError {
    CaseError::Failed(msg.into())
}

/// Not applicable, for this reason.
pub fn not_applicable(reason: impl Into<String>) -> CaseError {
    CaseError::NotApplicable(reason.into())
}

/// One line about an error for a failure message: its text, kind and errno.
pub trait Describe {
    /// The error, with its kind and (where it has one) errno.
    fn describe(&self) -> String;
}

impl Describe for Error {
    fn describe(&self) -> String {
        match self.errno() {
            Some(errno) => format!("{self} (kind {:?}, errno {errno})", self.kind()),
            None => format!("{self} (kind {:?})", self.kind()),
        }
    }
}

impl Describe for MapBufferError {
    fn describe(&self) -> String {
        self.error.describe()
    }
}

impl Describe for UnmapError {
    fn describe(&self) -> String {
        self.error.describe()
    }
}

impl Describe for DriverError {
    fn describe(&self) -> String {
        match self {
            DriverError::Hal(e) => e.describe(),
            other => other.to_string(),
        }
    }
}

impl Describe for std::io::Error {
    fn describe(&self) -> String {
        match self.raw_os_error() {
            Some(errno) => format!("{self} (errno {errno})"),
            None => self.to_string(),
        }
    }
}

impl Describe for CaseError {
    fn describe(&self) -> String {
        match self {
            Self::Failed(msg) | Self::NotApplicable(msg) => msg.clone(),
        }
    }
}

impl From<Error> for CaseError {
    fn from(e: Error) -> Self {
        fail(format!("unexpected error: {}", e.describe()))
    }
}

impl From<DriverError> for CaseError {
    fn from(e: DriverError) -> Self {
        fail(format!("driver error: {}", e.describe()))
    }
}

impl From<std::io::Error> for CaseError {
    fn from(e: std::io::Error) -> Self {
        fail(format!("OS error: {}", e.describe()))
    }
}

/// Names the step that failed: `open_device(edu).context("open edu")?`.
pub trait Context<T> {
    /// Turns an error into a failure that starts with `step`.
    fn context(self, step: impl fmt::Display) -> Result<T, CaseError>;
}

impl<T, E: Describe> Context<T> for Result<T, E> {
    fn context(self, step: impl fmt::Display) -> Result<T, CaseError> {
        self.map_err(|e| fail(format!("{step}: {}", e.describe())))
    }
}

/// Checks that `result` is an error of one of `kinds`, and returns it.
///
/// The failure message names the step, the expected kinds and what came back
/// (the value, or the error with its kind and errno).
pub fn expect_kind<T: fmt::Debug>(
    step: impl fmt::Display,
    result: Result<T, Error>,
    kinds: &[ErrorKind],
) -> Result<Error, CaseError> {
    let expected = kinds
        .iter()
        .map(|k| format!("{k:?}"))
        .collect::<Vec<_>>()
        .join(" or ");
    match result {
        Ok(v) => Err(fail(format!(
            "{step}: expected an error of kind {expected}, got Ok({v:?})"
        ))),
        Err(e) if kinds.contains(&e.kind()) => Ok(e),
        Err(e) => Err(fail(format!(
            "{step}: expected an error of kind {expected}, got {}",
            e.describe()
        ))),
    }
}

/// Checks that two values are equal; the failure says which step and both values.
pub fn expect_eq<T: PartialEq + fmt::Debug>(
    step: impl fmt::Display,
    expected: T,
    got: T,
) -> Result<(), CaseError> {
    if expected == got {
        Ok(())
    } else {
        Err(fail(format!("{step}: expected {expected:?}, got {got:?}")))
    }
}

/// Fails the case with a formatted message unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return ::std::result::Result::Err($crate::outcome::fail(::std::format!($($msg)+)));
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use vfio_hal::Target;

    #[test]
    fn expect_kind_names_what_came_back() {
        let e = Error::sys(
            "VFIO_IOMMU_UNMAP_DMA",
            Target::Iova { iova: 0, len: 4096 },
            libc::EINVAL,
        );
        let msg = expect_kind("unmap nothing", Err::<u64, _>(e), &[ErrorKind::NotMapped])
            .expect_err("wrong kind");
        let CaseError::Failed(msg) = msg else {
            panic!("not a failure: {msg:?}");
        };
        assert!(msg.contains("NotMapped"), "{msg}");
        assert!(msg.contains("InvalidArgument"), "{msg}");
        assert!(msg.contains("errno 22"), "{msg}");
        let msg = expect_kind(
            "unmap nothing",
            Ok::<u64, Error>(4096),
            &[ErrorKind::NotMapped],
        )
        .expect_err("no error");
        assert_eq!(
            msg,
            fail("unmap nothing: expected an error of kind NotMapped, got Ok(4096)")
        );
    }

    #[test]
    fn context_prefixes_the_step() {
        let r: Result<(), Error> = Err(Error::sys("open", Target::None, libc::ENOENT));
        let CaseError::Failed(msg) = r.context("open edu").expect_err("fails") else {
            panic!("not a failure");
        };
        assert!(msg.starts_with("open edu: not found: open on -: "), "{msg}");
        assert!(msg.contains("errno 2"), "{msg}");
    }
}
