//! `mig_resume`: a migratable mock device (VFIO migration v2, see
//! [`vfio_hal_mock::migration`]) resuming from arbitrary bytes.
//!
//! Input: one byte picks the model ([`MODELS`], mod 2: a migratable edu or
//! copy engine, plugged into a container of its own and opened); one byte
//! whose low two bits are the number of extra writes (0–3), that many
//! little-endian `u16` chunk lengths; the rest is the incoming stream. The
//! device is saved once (its state before the load), moved to RESUMING,
//! given the stream through the data stream in those chunks (each cut to
//! what is left, the last one the rest), then asked for STOP, where it
//! loads the last frame.
//!
//! Properties, as the mock documents them:
//! - Nothing panics; RESUMING hands out a stream, which takes every write.
//! - A stream with bytes after its last frame, with no frame at all, or
//!   whose last frame is not as long as the model's state is refused.
//! - Accepted: no stream is handed out, the device is in STOP, the
//!   session's stream answers `ENODEV`. `MIG_DATA_SIZE` is what STOP_COPY
//!   then streams: one frame, the loaded state as the model's layout
//!   carries it (the edu's byte for byte; the copy engine's with the
//!   in-flight request zeroed when the flag says none is in flight). That
//!   stream loads into a fresh device, which saves the same bytes again;
//!   the device moves to RUNNING and answers its ID register, and (the
//!   clock being automatic) an edu has finished the work it loaded: not
//!   computing, no DMA running.
//! - Refused: `EINVAL` (kind `InvalidArgument`), the device in ERROR, the
//!   session's stream `ENODEV`, RUNNING refused from ERROR (no arc leaves
//!   it); a reset brings the device back to RUNNING, and it saves what it
//!   saved before the load: a refused state leaves the model as it was.

use std::io::{Read, Write};

use vfio_hal::migration::{self, MigrationState as S};
use vfio_hal::prelude::*;
use vfio_hal::ErrorKind;
use vfio_hal_mock::models::{copy_engine, edu, CopyEngine, Edu};
use vfio_hal_mock::{MockContainer, MockDevice};

use crate::input::Input;

/// A migratable model the target resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// [`Edu::migratable`], QEMU's default DMA mask.
    Edu,
    /// [`CopyEngine::migratable`], the default vector count.
    CopyEngine,
}

/// The models, in the order the selector byte picks them.
pub const MODELS: [Model; 2] = [Model::Edu, Model::CopyEngine];

impl Model {
    /// A container with this model plugged, and the opened device.
    pub fn plug(self) -> (MockContainer, MockDevice) {
        let c = MockContainer::new();
        let name = match self {
            Model::Edu => "edu",
            Model::CopyEngine => "copy-engine",
        };
        match self {
            Model::Edu => c.plug(name, Edu::new().migratable()),
            Model::CopyEngine => c.plug(name, CopyEngine::new().migratable()),
        }
        .unwrap_or_else(|e| panic!("plug {name}: {e}"));
        let dev = c
            .open_device(name)
            .unwrap_or_else(|e| panic!("open {name}: {e}"));
        (c, dev)
    }

    /// The length of the model's saved state.
    pub fn state_len(self) -> usize {
        match self {
            Model::Edu => edu::state::LEN,
            Model::CopyEngine => copy_engine::state::LEN,
        }
    }

    /// The value of the ID register at BAR0 offset 0.
    fn id(self) -> u32 {
        match self {
            Model::Edu => edu::reg::ID_VALUE,
            Model::CopyEngine => copy_engine::ID_VALUE,
        }
    }

    /// The state a device that loaded `state` saves: the edu's layout
    /// carries every field as it is; the copy engine's saves the in-flight
    /// request as zeros when its flag (byte [`CE_IN_FLIGHT`]) is 0.
    fn canonical(self, state: &[u8]) -> Vec<u8> {
        let mut out = state.to_vec();
        if self == Model::CopyEngine && out[CE_IN_FLIGHT] == 0 {
            out[CE_IN_FLIGHT + 1..CE_IN_FLIGHT + 1 + CE_REQUEST].fill(0);
        }
        out
    }
}

/// Bytes of a request in the copy engine's layout (source, destination,
/// length, vector, doorbell).
const CE_REQUEST: usize = 8 + 8 + 4 + 4 + 4;
/// Offset of the copy engine's in-flight flag: after the magic, the vector
/// count and the request registers.
pub const CE_IN_FLIGHT: usize = 4 + 2 + CE_REQUEST;

/// The model and the chunks the stream is written in.
pub fn decode(data: &[u8]) -> (Model, Vec<&[u8]>) {
    let mut input = Input::new(data);
    let model = MODELS[usize::from(input.u8()) % MODELS.len()];
    let extra = input.u8() & 3;
    let lens: Vec<usize> = (0..extra).map(|_| usize::from(input.u16())).collect();
    let mut rest = input.rest();
    let mut chunks = Vec::with_capacity(lens.len() + 1);
    for len in lens {
        let (chunk, tail) = rest.split_at(len.min(rest.len()));
        chunks.push(chunk);
        rest = tail;
    }
    chunks.push(rest);
    (model, chunks)
}

/// The fuzz entry point.
pub fn check(data: &[u8]) {
    let (model, chunks) = decode(data);
    resume(model, &chunks);
}

/// The last frame of `stream`, read by the framing the mock documents (a
/// little-endian `u32` length, that many bytes, again until the end);
/// `None` when bytes follow the last frame or there is none.
pub fn last_frame(stream: &[u8]) -> Option<&[u8]> {
    let mut at = 0usize;
    let mut last = None;
    while at < stream.len() {
        let body = at.checked_add(4).filter(|&b| b <= stream.len())?;
        let mut len = [0u8; 4];
        len.copy_from_slice(&stream[at..body]);
        let end = body
            .checked_add(u32::from_le_bytes(len) as usize)
            .filter(|&e| e <= stream.len())?;
        last = Some(&stream[body..end]);
        at = end;
    }
    last
}

fn state_of(dev: &MockDevice) -> S {
    dev.migration_state()
        .unwrap_or_else(|e| panic!("MIG_DEVICE_STATE GET: {e}"))
}

/// What `dev` streams in STOP_COPY ([`migration::save`]: it ends in STOP).
pub fn save(dev: &MockDevice) -> Vec<u8> {
    let mut out = Vec::new();
    let n = migration::save(dev, &mut out).unwrap_or_else(|e| panic!("save: {e}"));
    assert_eq!(n as usize, out.len(), "save counts what it copied");
    assert_eq!(state_of(dev), S::Stop, "save ends in STOP");
    out
}

/// Whether the stream of a session that ended answers `ENODEV`.
fn assert_ended(stream: &mut migration::MigrationData) {
    let w = stream.write(&[0]).expect_err("a write after the session");
    assert_eq!(w.raw_os_error(), Some(libc::ENODEV), "write: {w}");
    let r = stream.read(&mut [0]).expect_err("a read after the session");
    assert_eq!(r.raw_os_error(), Some(libc::ENODEV), "read: {r}");
}

/// Resumes a fresh `model` from `chunks` and checks every property;
/// whether the device took the state.
pub fn resume(model: Model, chunks: &[&[u8]]) -> bool {
    let (_container, dev) = model.plug();
    let before = save(&dev);
    let mut sink = dev
        .set_migration_state(S::Resuming)
        .unwrap_or_else(|e| panic!("STOP -> RESUMING: {e}"))
        .expect("RESUMING hands out a stream");
    assert_eq!(sink.state(), S::Resuming);
    assert_eq!(state_of(&dev), S::Resuming);
    for chunk in chunks {
        sink.write_all(chunk)
            .unwrap_or_else(|e| panic!("write {} bytes: {e}", chunk.len()));
    }
    let stream = chunks.concat();
    let frame = last_frame(&stream);
    match dev.set_migration_state(S::Stop) {
        Ok(handed) => {
            assert!(handed.is_none(), "RESUMING -> STOP handed out a stream");
            let Some(frame) = frame else {
                panic!("loaded a torn stream of {} bytes", stream.len());
            };
            assert_eq!(frame.len(), model.state_len(), "loaded a state this long");
            assert_eq!(state_of(&dev), S::Stop);
            assert_ended(&mut sink);
            check_loaded(model, &dev, frame);
            true
        }
        Err(e) => {
            assert_eq!(
                (e.kind(), e.errno()),
                (ErrorKind::InvalidArgument, Some(libc::EINVAL)),
                "a refused load: {e}"
            );
            assert_eq!(state_of(&dev), S::Error, "a refused load leaves ERROR");
            assert_ended(&mut sink);
            let e = dev
                .set_migration_state(S::Running)
                .expect_err("no arc leaves ERROR");
            assert_eq!(e.errno(), Some(libc::EINVAL), "ERROR -> RUNNING: {e}");
            assert_eq!(state_of(&dev), S::Error);
            dev.reset().unwrap_or_else(|e| panic!("reset: {e}"));
            assert_eq!(state_of(&dev), S::Running, "a reset leaves ERROR");
            let after = save(&dev);
            assert!(after == before, "a refused load changed the model");
            false
        }
    }
}

/// The properties of a device that took `frame`, in STOP.
fn check_loaded(model: Model, dev: &MockDevice, frame: &[u8]) {
    let size = dev
        .migration_data_size()
        .unwrap_or_else(|e| panic!("MIG_DATA_SIZE: {e}"));
    let saved = save(dev);
    assert_eq!(
        saved.len() as u64,
        size,
        "MIG_DATA_SIZE is what STOP_COPY streams"
    );
    assert_eq!(saved.len(), 4 + frame.len(), "one frame");
    assert!(
        last_frame(&saved) == Some(&model.canonical(frame)[..]),
        "the saved state is not the loaded one"
    );

    let (_container, fresh) = model.plug();
    let n = migration::load(&fresh, &mut saved.as_slice())
        .unwrap_or_else(|e| panic!("a saved state does not load: {e}"));
    assert_eq!(n as usize, saved.len());
    assert_eq!(state_of(&fresh), S::Stop);
    assert!(save(&fresh) == saved, "a reloaded state saves other bytes");

    let handed = dev
        .set_migration_state(S::Running)
        .unwrap_or_else(|e| panic!("STOP -> RUNNING after a load: {e}"));
    assert!(handed.is_none(), "STOP -> RUNNING handed out a stream");
    assert_eq!(state_of(dev), S::Running);
    let bar0 = dev.region(0).unwrap_or_else(|e| panic!("BAR0: {e}"));
    // The first access runs the loaded work that is due, the second sees it done.
    for _ in 0..2 {
        let id = bar0
            .read_at::<u32>(0)
            .unwrap_or_else(|e| panic!("ID read: {e}"));
        assert_eq!(id, model.id(), "ID register");
    }
    if model == Model::Edu {
        // The clock is automatic: the accesses ran all the work loaded.
        let status = bar0
            .read_at::<u32>(edu::reg::STATUS)
            .unwrap_or_else(|e| panic!("edu status: {e}"));
        let cmd = bar0
            .read_at::<u64>(edu::reg::DMA_CMD)
            .unwrap_or_else(|e| panic!("edu DMA command: {e}"));
        assert_eq!(
            status & edu::reg::EDU_STATUS_COMPUTING,
            0,
            "still computing"
        );
        assert_eq!(cmd & edu::reg::EDU_DMA_RUN, 0, "DMA still running");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_cut_to_what_is_left() {
        let (model, chunks) = decode(&[1, 2, 3, 0, 0xff, 0xff, b'a', b'b', b'c', b'd']);
        assert_eq!(model, Model::CopyEngine);
        assert_eq!(chunks, [&b"abc"[..], &b"d"[..], &b""[..]]);
        let (model, chunks) = decode(&[0]);
        assert_eq!(model, Model::Edu);
        assert_eq!(chunks, [&b""[..]]);
    }

    #[test]
    fn framing_as_documented() {
        assert_eq!(last_frame(&[]), None);
        assert_eq!(last_frame(&[0, 0, 0, 0]), Some(&[][..]));
        assert_eq!(last_frame(&[1, 0, 0, 0, 7, 1, 0, 0, 0, 9]), Some(&[9][..]));
        assert_eq!(last_frame(&[1, 0, 0, 0, 7, 1]), None);
        assert_eq!(last_frame(&[0xff, 0xff, 0xff, 0xff, 0]), None);
    }
}
