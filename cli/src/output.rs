//! Writing results to stdout and notes to stderr without panicking.
//!
//! `print!` panics when stdout fails (a closed pipe, a full disk). Results
//! go through [`say!`] instead, which hands the failure back as
//! [`CliError::Output`] so `main` can end quietly on a closed pipe and
//! report a full disk. Notes and progress on stderr are best effort: when
//! stderr itself fails there is nowhere left to say so.

use std::fmt;
use std::io::{self, Write};

use crate::CliError;

/// Writes `args` to stdout and flushes, so a failure shows up here and not
/// in a later write or at exit.
pub fn print(args: fmt::Arguments<'_>) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.flush())
        .map_err(CliError::Output)
}

/// `print!` to stdout as a `Result<(), CliError>`.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::output::print(format_args!($($arg)*))
    };
}
pub(crate) use say;

/// Writes a line to stderr, ignoring failure.
pub fn note(args: fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
}

/// A writer that keeps the first error of the writer it wraps and then
/// swallows everything: for reports that must run to the end (the
/// conformance suite restores the device as it goes) even when their
/// reader is gone.
#[derive(Debug)]
pub struct Latched<W> {
    inner: W,
    error: Option<io::Error>,
}

impl<W: Write> Latched<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self { inner, error: None }
    }

    /// The first write or flush error, if any.
    pub fn finish(mut self) -> Result<(), CliError> {
        if self.error.is_none() {
            if let Err(e) = self.inner.flush() {
                self.error = Some(e);
            }
        }
        self.error.map_or(Ok(()), |e| Err(CliError::Output(e)))
    }

    fn latch<T>(&mut self, result: io::Result<T>, nothing: T) -> io::Result<T> {
        result.or_else(|e| {
            self.error = Some(e);
            Ok(nothing)
        })
    }
}

impl<W: Write> Write for Latched<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.error.is_some() {
            return Ok(buf.len());
        }
        let written = self.inner.write(buf);
        self.latch(written, buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.error.is_some() {
            return Ok(());
        }
        let flushed = self.inner.flush();
        self.latch(flushed, ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Accepts `room` bytes, then fails like a full disk.
    struct Full {
        room: usize,
        written: Vec<u8>,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::StorageFull.into());
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            self.written.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_first_error_is_kept_and_later_writes_are_swallowed() {
        let mut w = Latched::new(Full {
            room: 4,
            written: Vec::new(),
        });
        assert!(writeln!(w, "case A01 ... ok").is_ok());
        assert!(writeln!(w, "case A02 ... ok").is_ok());
        assert_eq!(w.inner.written, b"case");
        match w.finish() {
            Err(CliError::Output(e)) => assert_eq!(e.kind(), io::ErrorKind::StorageFull),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_writer_that_never_fails_finishes_cleanly() {
        let mut w = Latched::new(Vec::new());
        assert!(writeln!(w, "ok").is_ok());
        assert!(w.finish().is_ok());
    }
}
