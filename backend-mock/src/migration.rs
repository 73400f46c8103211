//! VFIO migration v2 of a mock device whose model can save and load its
//! state ([`DeviceModel::save_state`](crate::DeviceModel::save_state)):
//! the state machine of `vfio.h`, walked as the kernel walks it
//! ([`vfio_hal::migration::arcs`]), and the data stream of each session.
//!
//! A device offers STOP_COPY, P2P and PRE_COPY. In STOP, STOP_COPY and
//! RESUMING the model is frozen: its scheduled work waits (the virtual
//! clock runs on) until the device runs again. Entering PRE_COPY from a
//! running state or STOP_COPY from STOP opens a saving session; entering
//! RESUMING opens a loading one; leaving them ends the session, after
//! which its stream answers `ENODEV`, as the kernel's disabled data file
//! does.
//!
//! The stream is a sequence of frames, each a little-endian `u32` length
//! and that many bytes of one saved state: PRE_COPY streams the state as
//! it was on entry, STOP_COPY appends the state at the stop, and leaving
//! RESUMING loads the last complete frame. Bytes after the last frame, a
//! frame the model refuses, or no frame at all fail the transition with
//! `EINVAL` and leave the device in ERROR; `VFIO_DEVICE_RESET` brings it
//! back to RUNNING.
//!
//! Deviations from a kernel driver: PRE_COPY reports no dirty bytes (the
//! models do not track what changed), so the whole state comes again at
//! STOP_COPY. A failed load leaves the device in ERROR where mtty stays in
//! RESUMING; the uAPI allows both ("optionally" ERROR).

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, MutexGuard};

use vfio_hal::device::feature;
use vfio_hal::migration::{self, DataStream, MigrationData, MigrationState, PrecopyInfo};
use vfio_hal::{Error, Result, Target};

/// The most a loading session accepts: a stream longer than any model's
/// state is refused (`EFBIG`) instead of growing without bound.
pub const MAX_STREAM_BYTES: usize = 64 << 20;

const OP: &str = "VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE";

fn invalid() -> Error {
    Error::sys(OP, Target::Feature(feature::MIG_DEVICE_STATE), libc::EINVAL)
}

/// One session's bytes, shared by the device and the stream handed out.
#[derive(Debug, Default)]
struct Session {
    /// Saving (the device writes, the user reads) or loading.
    saving: bool,
    data: Vec<u8>,
    /// Bytes of `data` the user has read (saving sessions).
    read: usize,
    /// The last frame is in (STOP_COPY): the end of `data` is end of stream.
    complete: bool,
    /// The session ended: every access is `ENODEV`.
    ended: bool,
}

fn lock(session: &Mutex<Session>) -> MutexGuard<'_, Session> {
    session
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A mock device's migration state and its open session.
#[derive(Debug)]
pub(crate) struct Migration {
    state: MigrationState,
    session: Option<Arc<Mutex<Session>>>,
}

impl Default for Migration {
    fn default() -> Self {
        Self {
            state: MigrationState::Running,
            session: None,
        }
    }
}

/// What one arc asks of the model.
pub(crate) enum Work {
    /// Nothing: the model keeps (or resumes) running.
    None,
    /// Save the state into the session (a new frame).
    Save,
    /// Load the last frame of this loading session.
    Load(Vec<u8>),
}

impl Migration {
    /// The state (`MIG_DEVICE_STATE` GET).
    pub(crate) fn state(&self) -> MigrationState {
        self.state
    }

    /// Whether the model must not run: STOP, STOP_COPY, RESUMING (and
    /// ERROR, where the device does nothing until reset).
    pub(crate) fn frozen(&self) -> bool {
        matches!(
            self.state,
            MigrationState::Stop
                | MigrationState::StopCopy
                | MigrationState::Resuming
                | MigrationState::Error
        )
    }

    /// The walk to `to`, checked as the kernel checks it.
    pub(crate) fn plan(&self, to: MigrationState) -> Result<Vec<MigrationState>> {
        migration::arcs(migration_flags(), self.state, to)
    }

    /// Takes one arc to `next`: what the model must do for it, and the
    /// stream to hand out when this arc opens a session.
    pub(crate) fn step(&mut self, next: MigrationState) -> (Work, Option<MigrationData>) {
        use MigrationState as S;
        let from = std::mem::replace(&mut self.state, next);
        match (from, next) {
            (S::Stop, S::StopCopy) | (S::Running | S::RunningP2p, S::PreCopy | S::PreCopyP2p) => {
                let session = self.open(true);
                lock(&session).complete = next == S::StopCopy;
                (Work::Save, Some(self.stream(next, session)))
            }
            (S::PreCopy | S::PreCopyP2p, S::StopCopy) => {
                if let Some(s) = &self.session {
                    lock(s).complete = true;
                }
                (Work::Save, None)
            }
            (S::Stop, S::Resuming) => {
                let session = self.open(false);
                (Work::None, Some(self.stream(next, session)))
            }
            (S::Resuming, S::Stop) => {
                let data = self
                    .end()
                    .map(|s| std::mem::take(&mut lock(&s).data))
                    .unwrap_or_default();
                (Work::Load(data), None)
            }
            (S::StopCopy, S::Stop) | (S::PreCopy, S::Running) | (S::PreCopyP2p, S::RunningP2p) => {
                self.end();
                (Work::None, None)
            }
            _ => (Work::None, None),
        }
    }

    /// Appends one saved state as a frame of the saving session.
    pub(crate) fn append(&mut self, state: &[u8]) {
        let Some(session) = &self.session else { return };
        let mut s = lock(session);
        let len = u32::try_from(state.len()).unwrap_or(u32::MAX);
        s.data.extend_from_slice(&len.to_le_bytes());
        s.data.extend_from_slice(&state[..len as usize]);
    }

    /// A transition failed: ERROR, session ended.
    pub(crate) fn fail(&mut self) {
        self.end();
        self.state = MigrationState::Error;
    }

    /// `VFIO_DEVICE_RESET`, and the device's close: back to RUNNING.
    pub(crate) fn reset(&mut self) {
        self.end();
        self.state = MigrationState::Running;
    }

    /// Bytes STOP_COPY would stream now (`MIG_DATA_SIZE`): one frame of
    /// a state `state_len` long.
    pub(crate) fn data_size(state_len: usize) -> u64 {
        4 + state_len as u64
    }

    fn open(&mut self, saving: bool) -> Arc<Mutex<Session>> {
        self.end();
        let session = Arc::new(Mutex::new(Session {
            saving,
            ..Session::default()
        }));
        self.session = Some(Arc::clone(&session));
        session
    }

    fn end(&mut self) -> Option<Arc<Mutex<Session>>> {
        let session = self.session.take()?;
        lock(&session).ended = true;
        Some(session)
    }

    fn stream(&self, state: MigrationState, session: Arc<Mutex<Session>>) -> MigrationData {
        MigrationData::new(state, Box::new(MockStream { session }))
    }
}

/// What a mock device offers: every optional state.
pub(crate) fn migration_flags() -> migration::MigrationFlags {
    use migration::MigrationFlags as F;
    F::STOP_COPY | F::P2P | F::PRE_COPY
}

/// The last complete frame of a loading session's bytes.
///
/// # Errors
/// `EINVAL` when there is none, or bytes follow the last frame.
pub(crate) fn last_frame(data: &[u8]) -> Result<&[u8]> {
    let mut rest = data;
    let mut last = None;
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(invalid());
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > tail.len() {
            return Err(invalid());
        }
        let (frame, tail) = tail.split_at(len);
        last = Some(frame);
        rest = tail;
    }
    last.ok_or_else(invalid)
}

/// The stream handed out for a session.
#[derive(Debug)]
struct MockStream {
    session: Arc<Mutex<Session>>,
}

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

impl Read for MockStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut s = lock(&self.session);
        if s.ended {
            return Err(errno(libc::ENODEV));
        }
        if !s.saving {
            return Err(errno(libc::EINVAL));
        }
        let left = &s.data[s.read..];
        if left.is_empty() {
            // In pre-copy, nothing more for now; in STOP_COPY, the end.
            return if s.complete || buf.is_empty() {
                Ok(0)
            } else {
                Err(errno(libc::ENOMSG))
            };
        }
        let n = left.len().min(buf.len());
        buf[..n].copy_from_slice(&left[..n]);
        s.read += n;
        Ok(n)
    }
}

impl Write for MockStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut s = lock(&self.session);
        if s.ended {
            return Err(errno(libc::ENODEV));
        }
        if s.saving {
            return Err(errno(libc::EINVAL));
        }
        if s.data.len().saturating_add(buf.len()) > MAX_STREAM_BYTES {
            return Err(errno(libc::EFBIG));
        }
        s.data.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl DataStream for MockStream {
    fn precopy_info(&self) -> Result<PrecopyInfo> {
        let s = lock(&self.session);
        if s.ended || !s.saving || s.complete {
            return Err(Error::sys(
                "VFIO_MIG_GET_PRECOPY_INFO",
                Target::Feature(feature::MIG_DEVICE_STATE),
                libc::EINVAL,
            ));
        }
        Ok(PrecopyInfo {
            initial_bytes: (s.data.len() - s.read) as u64,
            dirty_bytes: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_complete_frame_wins_and_a_torn_stream_is_refused() {
        let frame = |b: &[u8]| {
            let mut v = (b.len() as u32).to_le_bytes().to_vec();
            v.extend_from_slice(b);
            v
        };
        let mut two = frame(b"first");
        two.extend(frame(b"second"));
        assert_eq!(last_frame(&two).expect("two frames"), b"second");
        assert_eq!(last_frame(&frame(b"")).expect("an empty state"), b"");
        for torn in [&two[..two.len() - 1], &two[..2], &[][..]] {
            let e = last_frame(torn).expect_err("torn");
            assert_eq!(e.errno(), Some(libc::EINVAL));
        }
        let mut huge = u32::MAX.to_le_bytes().to_vec();
        huge.push(0);
        assert!(last_frame(&huge).is_err(), "a length past the data");
    }
}
