//! Why a command failed, how that is told (stderr, and JSON on stdout
//! with `--json`), and the exit status it gives.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;
use vfio_hal::ErrorKind;
use vfio_hal_facade::OpenError;

/// The exit status of a command that failed.
const FAILED: u8 = 1;

/// The exit status of a command line that does not parse (clap's).
const MALFORMED: u8 = 2;

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
    /// The command line does not parse.
    #[error("{}", command_line_message(.0))]
    CommandLine(clap::Error),
    /// A tree named by `--sys-root` or `--dev-root` cannot be read.
    #[error("{option} {}: {error}", path.display())]
    Root {
        /// The option.
        option: &'static str,
        /// The directory it named.
        path: PathBuf,
        /// Why it cannot be read.
        #[source]
        error: io::Error,
    },
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
            Self::CommandLine(_) => Some(ErrorKind::InvalidArgument),
            Self::Root { error, .. } => Some(
                error
                    .raw_os_error()
                    .map_or(ErrorKind::Io, ErrorKind::from_errno),
            ),
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
            Self::CommandLine(_) => Some(
                "`vfio-hal --help` lists the commands, `vfio-hal COMMAND --help` their options"
                    .to_owned(),
            ),
            _ => None,
        }
    }

    fn errno(&self) -> Option<i32> {
        match self {
            Self::Open(e) => e.errno(),
            Self::Hal { error, .. } => error.errno(),
            Self::Output(e) | Self::Root { error: e, .. } => e.raw_os_error(),
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
        if let Self::CommandLine(e) = self {
            // clap's own text: the error, the usage and where help is.
            let _ = write!(stderr, "{}", e.render());
        } else {
            let _ = writeln!(stderr, "error: {self}");
            if let Some(remedy) = self.remedy() {
                let _ = writeln!(stderr, "what to do: {remedy}");
            }
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
        ExitCode::from(if matches!(self, Self::CommandLine(_)) {
            MALFORMED
        } else {
            FAILED
        })
    }
}

/// The one-line gist of clap's error text: its first line, without the
/// `error: ` clap puts in front.
fn command_line_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}
