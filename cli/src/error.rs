//! Why a command failed, how that is told (stderr, and JSON on stdout
//! with `--json`), and the exit status it gives.

use std::io::{self, Write};
use std::process::ExitCode;

use serde_json::json;
use vfio_hal::ErrorKind;
use vfio_hal_facade::OpenError;

/// The exit status of a command that failed.
const FAILED: u8 = 1;

/// The exit status after stdout's reader went away: 128 + SIGPIPE, what a
/// shell reports for `cat`, `ls` or `yes` killed by the signal in the same
/// place, so `set -o pipefail` scripts see the same as with those tools.
pub const BROKEN_PIPE: u8 = 128 + 13;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The device could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// A hal call failed.
    #[error("{what}: {error}")]
    Hal {
        /// What the command was doing.
        what: String,
        /// The error.
        #[source]
        error: vfio_hal::Error,
    },
    /// The request cannot be served as given.
    #[error("{0}")]
    Usage(String),
    /// Something checked did not hold (conformance failures, a refused device).
    #[error("{0}")]
    Failed(String),
    /// A count `bench` does not take.
    #[error(transparent)]
    Count(#[from] crate::bench::CountOutOfRange),
    /// Stdout failed: its reader went away, or the disk is full.
    #[error("writing to stdout: {0}")]
    Output(#[source] io::Error),
}

impl CliError {
    /// Wraps a hal error with what was being done.
    pub fn hal(what: impl Into<String>) -> impl FnOnce(vfio_hal::Error) -> Self {
        let what = what.into();
        move |error| Self::Hal { what, error }
    }

    fn kind(&self) -> Option<ErrorKind> {
        match self {
            Self::Open(e) => Some(e.kind()),
            Self::Hal { error, .. } => Some(error.kind()),
            Self::Usage(_) => Some(ErrorKind::InvalidArgument),
            Self::Count(_) => Some(ErrorKind::OutOfRange),
            Self::Output(_) => Some(ErrorKind::Io),
            Self::Failed(_) => None,
        }
    }

    fn remedy(&self) -> Option<String> {
        match self {
            Self::Open(e) => e.remedy(),
            Self::Hal { error, .. } if error.kind() == ErrorKind::PermissionDenied => {
                Some("run as root, or raise RLIMIT_MEMLOCK (ulimit -l) for DMA mappings".to_owned())
            }
            _ => None,
        }
    }

    fn errno(&self) -> Option<i32> {
        match self {
            Self::Open(e) => e.errno(),
            Self::Hal { error, .. } => error.errno(),
            Self::Output(e) => e.raw_os_error(),
            _ => None,
        }
    }

    /// Whether the reader of stdout went away: not a failure to report.
    fn is_broken_pipe(&self) -> bool {
        matches!(self, Self::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }

    /// Tells the error (on stderr; with `json` also on stdout, unless stdout
    /// is what failed) and gives the exit status.
    pub fn report(&self, json: bool) -> ExitCode {
        if self.is_broken_pipe() {
            return ExitCode::from(BROKEN_PIPE);
        }
        let mut stderr = io::stderr().lock();
        let _ = writeln!(stderr, "error: {self}");
        if let Some(remedy) = self.remedy() {
            let _ = writeln!(stderr, "what to do: {remedy}");
        }
        if json && !matches!(self, Self::Output(_)) {
            let value = json!({
                "error": {
                    "message": self.to_string(),
                    "kind": self.kind().map(|k| format!("{k:?}")),
                    "errno": self.errno(),
                    "remedy": self.remedy(),
                }
            });
            // Stdout failing now leaves the text on stderr as the report.
            let _ = crate::output::say!("{value:#}\n");
        }
        ExitCode::from(FAILED)
    }
}
