//! VFIO migration v2: the device states of `enum vfio_device_mig_state`,
//! the optional features a device declares (`VFIO_DEVICE_FEATURE_MIGRATION`),
//! and the arcs the kernel walks between two states.
//!
//! A `VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE` request names only the state
//! wanted; the kernel (`vfio_mig_get_next_state`) steps the driver through
//! intermediate states, skipping those the device does not offer, and
//! refuses with `EINVAL` a state the device lacks or an arc out of
//! `STOP_COPY` into a pre-copy state. [`arcs`] plans the same walk, so a
//! VMM can check a request before making it and a model (the mock) refuses
//! exactly what the kernel refuses.
//!
//! ```
//! use vfio_hal::migration::{arcs, MigrationFlags, MigrationState as S};
//!
//! let flags = MigrationFlags::STOP_COPY | MigrationFlags::P2P;
//! // A source stopping for the final copy quiesces peer DMA first.
//! assert_eq!(arcs(flags, S::Running, S::StopCopy)?, [S::RunningP2p, S::Stop, S::StopCopy]);
//! // Without P2P the same request goes straight through STOP.
//! assert_eq!(arcs(MigrationFlags::STOP_COPY, S::Running, S::StopCopy)?, [S::Stop, S::StopCopy]);
//! // No way back from the final copy into pre-copy.
//! let all = flags | MigrationFlags::PRE_COPY;
//! assert_eq!(arcs(all, S::StopCopy, S::PreCopy).unwrap_err().errno(), Some(libc::EINVAL));
//! # Ok::<(), vfio_hal::Error>(())
//! ```

use std::fmt;
use std::io::{self, Read, Write};
use std::ops::BitOr;
use std::os::fd::BorrowedFd;

use crate::device::{feature, Device};
use crate::error::{Error, Result, Target};

/// The migration features a device offers (`struct
/// vfio_device_feature_migration`'s `flags`). Bits this crate does not
/// name are kept.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MigrationFlags(u64);

impl MigrationFlags {
    /// `VFIO_MIGRATION_STOP_COPY`: the mandatory STOP, RUNNING, STOP_COPY
    /// and RESUMING states.
    pub const STOP_COPY: Self = Self(1 << 0);
    /// `VFIO_MIGRATION_P2P`: RUNNING_P2P, where the device stops
    /// initiating peer-to-peer DMA but still answers it.
    pub const P2P: Self = Self(1 << 1);
    /// `VFIO_MIGRATION_PRE_COPY`: PRE_COPY (and PRE_COPY_P2P with P2P),
    /// where data streams while the device runs.
    pub const PRE_COPY: Self = Self(1 << 2);

    /// The flags as the kernel reports them.
    pub const fn from_bits(bits: u64) -> Self {
        Self(bits)
    }

    /// The raw bits.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for MigrationFlags {
    type Output = Self;

    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl fmt::Debug for MigrationFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (Self::STOP_COPY, "STOP_COPY"),
            (Self::P2P, "P2P"),
            (Self::PRE_COPY, "PRE_COPY"),
        ];
        let mut rest = self.0;
        let mut first = true;
        for (flag, name) in names {
            if self.contains(flag) {
                write!(f, "{}{name}", if first { "" } else { "|" })?;
                first = false;
                rest &= !flag.0;
            }
        }
        if rest != 0 || first {
            write!(f, "{}{rest:#x}", if first { "" } else { "|" })?;
        }
        Ok(())
    }
}

/// A device's migration state (`enum vfio_device_mig_state`; the
/// discriminants are the uAPI's numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum MigrationState {
    /// The device failed a transition and can only be reset
    /// (`VFIO_DEVICE_RESET` returns it to RUNNING); never a request.
    Error = 0,
    /// Not running, no DMA, internal state frozen.
    Stop = 1,
    /// Running normally.
    Running = 2,
    /// Stopped, its state readable from the data fd.
    StopCopy = 3,
    /// Stopped, its state writable into the data fd.
    Resuming = 4,
    /// Running, but not initiating peer-to-peer DMA.
    RunningP2p = 5,
    /// Running, its initial state (and what changes) readable from the
    /// data fd.
    PreCopy = 6,
    /// As [`PreCopy`](Self::PreCopy), not initiating peer-to-peer DMA.
    PreCopyP2p = 7,
}

impl MigrationState {
    /// Every state, in uAPI order.
    pub const ALL: [Self; 8] = [
        Self::Error,
        Self::Stop,
        Self::Running,
        Self::StopCopy,
        Self::Resuming,
        Self::RunningP2p,
        Self::PreCopy,
        Self::PreCopyP2p,
    ];

    /// The state numbered `raw` (from the kernel's reply).
    ///
    /// # Errors
    /// `InvalidArgument` for a number the uAPI does not define.
    pub fn from_raw(raw: u32) -> Result<Self> {
        Self::ALL
            .get(raw as usize)
            .copied()
            .ok_or(Error::InvalidArgument {
                op: "VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE",
                target: Target::Feature(feature::MIG_DEVICE_STATE),
                reason: "the uAPI defines device states 0 to 7 only",
            })
    }

    /// The uAPI's number.
    pub const fn raw(self) -> u32 {
        self as u32
    }

    /// The features a device needs for this state to exist; `None` for
    /// [`Error`](Self::Error), which every device has and none may request.
    pub const fn needs(self) -> Option<MigrationFlags> {
        use MigrationFlags as F;
        Some(match self {
            Self::Error => return None,
            Self::Stop | Self::Running | Self::StopCopy | Self::Resuming => F::STOP_COPY,
            Self::RunningP2p => F(F::STOP_COPY.0 | F::P2P.0),
            Self::PreCopy => F(F::STOP_COPY.0 | F::PRE_COPY.0),
            Self::PreCopyP2p => F(F::STOP_COPY.0 | F::P2P.0 | F::PRE_COPY.0),
        })
    }

    /// Whether a device with `flags` has this state.
    pub const fn offered_by(self, flags: MigrationFlags) -> bool {
        match self.needs() {
            Some(needs) => flags.contains(needs),
            None => false,
        }
    }

    /// Whether entering this state hands out a data fd (read on the source
    /// in STOP_COPY and the pre-copy states, written on the destination in
    /// RESUMING).
    pub const fn has_data_fd(self) -> bool {
        matches!(
            self,
            Self::StopCopy | Self::Resuming | Self::PreCopy | Self::PreCopyP2p
        )
    }

    /// One step from `self` towards `to` before optional states are
    /// skipped: the uAPI's state graph with every feature present.
    const fn step(self, to: Self) -> Self {
        use MigrationState::*;
        if matches!(self, Error) || matches!(to, Error) {
            return Error;
        }
        if self as u32 == to as u32 {
            return to;
        }
        match (self, to) {
            (Stop, StopCopy | Resuming) => to,
            (Stop, _) => RunningP2p,
            (Running, PreCopy) => PreCopy,
            (Running, _) => RunningP2p,
            (PreCopy, PreCopyP2p | StopCopy) => PreCopyP2p,
            (PreCopy, _) => Running,
            (PreCopyP2p, PreCopy | StopCopy) => to,
            (PreCopyP2p, _) => RunningP2p,
            (StopCopy, PreCopy | PreCopyP2p) => Error,
            (StopCopy, _) => Stop,
            (Resuming, _) => Stop,
            (RunningP2p, Running | PreCopy) => Running,
            (RunningP2p, PreCopyP2p) => PreCopyP2p,
            (RunningP2p, _) => Stop,
            (Error, _) => Error,
        }
    }
}

/// What `VFIO_MIG_GET_PRECOPY_INFO` reports on a pre-copy data stream:
/// bytes of the initial state still to read, and bytes the device has
/// dirtied since (an estimate; both shrink as the stream is read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PrecopyInfo {
    /// Initial state not yet read.
    pub initial_bytes: u64,
    /// State changed since, not yet read.
    pub dirty_bytes: u64,
}

/// What a backend puts behind a [`MigrationData`]: the kernel's data fd,
/// or a device model's stream.
pub trait DataStream: Read + Write + Send + fmt::Debug {
    /// `VFIO_MIG_GET_PRECOPY_INFO`; `EINVAL` outside the pre-copy states,
    /// as the kernel answers.
    fn precopy_info(&self) -> Result<PrecopyInfo>;

    /// The data fd, where the stream is one (the kernel's).
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

/// The data stream a migration session hands out: on the source, entering
/// PRE_COPY (or PRE_COPY_P2P) from a running state, or STOP_COPY from
/// STOP, opens one, which the saving states then share; read it to its
/// end in STOP_COPY. On the destination, entering RESUMING opens one:
/// write the source's bytes into it, then leave RESUMING. Closed on drop.
///
/// As the kernel's data fd: in a pre-copy state a read with nothing to
/// hand out now fails with `ENOMSG`; in STOP_COPY the end of the state is
/// end of stream (a read of 0); once its session ends (the device leaves
/// the saving states, or RESUMING) reads and writes fail with `ENODEV`.
pub struct MigrationData {
    state: MigrationState,
    stream: Box<dyn DataStream>,
}

impl MigrationData {
    /// Wraps a backend's stream, handed out on entering `state`.
    pub fn new(state: MigrationState, stream: Box<dyn DataStream>) -> Self {
        Self { state, stream }
    }

    /// The state that handed this stream out.
    pub fn state(&self) -> MigrationState {
        self.state
    }

    /// How much pre-copy data is left (`VFIO_MIG_GET_PRECOPY_INFO`).
    ///
    /// # Errors
    /// `EINVAL` when the device is not in a pre-copy state.
    pub fn precopy_info(&self) -> Result<PrecopyInfo> {
        self.stream.precopy_info()
    }
}

impl fmt::Debug for MigrationData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MigrationData")
            .field("state", &self.state)
            .field("stream", &self.stream)
            .finish()
    }
}

impl Read for MigrationData {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

impl Write for MigrationData {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

impl MigrationData {
    /// The kernel's data fd behind the stream (for `poll` or `splice`);
    /// `None` for a device model's in-process stream.
    pub fn as_fd(&self) -> Option<BorrowedFd<'_>> {
        self.stream.fd()
    }
}

/// The source half of a stop-and-copy migration, the usual VMM sequence
/// once the guest is paused: moves `device` to STOP_COPY (the kernel
/// quiesces peer DMA on the way where the device offers P2P), copies the
/// stream into `out` to its end, and leaves the device in STOP. Returns
/// the bytes copied.
///
/// # Errors
/// `InvalidArgument` for a device already saving (pre-copy: finish from
/// the stream its session handed out); the device's refusal of a
/// transition (`EINVAL`, or `NotSupported` for a device that cannot
/// migrate); a failed read of the stream or write to `out` (its errno
/// where it has one). On an error the device is wherever it got to:
/// [`Device::migration_state`] tells.
///
/// ```
/// use vfio_hal::migration::{self, MigrationState};
/// use vfio_hal::prelude::*;
/// use vfio_hal_mock::{models::edu::{reg, Edu}, MockContainer};
///
/// let host = MockContainer::new();
/// host.plug("src", Edu::new().migratable())?;
/// host.plug("dst", Edu::new().migratable())?;
/// let (src, dst) = (host.open_device("src")?, host.open_device("dst")?);
/// src.region(0)?.write_at::<u32>(reg::LIVENESS, 0x1234)?;
///
/// let mut wire = Vec::new();
/// migration::save(&src, &mut wire)?;
/// migration::load(&dst, &mut wire.as_slice())?;
/// dst.set_migration_state(MigrationState::Running)?;
/// assert_eq!(dst.region(0)?.read_at::<u32>(reg::LIVENESS)?, !0x1234);
/// # Ok::<(), vfio_hal::Error>(())
/// ```
pub fn save<D: Device + ?Sized>(device: &D, out: &mut impl Write) -> Result<u64> {
    if matches!(
        device.migration_state()?,
        MigrationState::PreCopy | MigrationState::PreCopyP2p | MigrationState::StopCopy
    ) {
        return Err(Error::InvalidArgument {
            op: "migration::save",
            target: Target::Feature(feature::MIG_DEVICE_STATE),
            reason: "the device is already saving: its session's stream was handed out \
                     before; read the rest of it there",
        });
    }
    let Some(mut stream) = device.set_migration_state(MigrationState::StopCopy)? else {
        return Err(refused());
    };
    let copied = copy_data(&mut stream, out)?;
    device.set_migration_state(MigrationState::Stop)?;
    Ok(copied)
}

/// The destination half: moves `device` to RESUMING, copies `input` to
/// its end into the stream, and moves it to STOP, where the device checks
/// and takes the state. Move it to RUNNING when the VMM resumes. Returns
/// the bytes copied.
///
/// # Errors
/// As [`save`]; a state the device refuses fails the move to STOP
/// (`EINVAL` from the kernel's and the mock's drivers), after which the
/// device may be in ERROR, from which only a reset brings it back.
pub fn load<D: Device + ?Sized>(device: &D, input: &mut impl Read) -> Result<u64> {
    if device.migration_state()? != MigrationState::Stop {
        device.set_migration_state(MigrationState::Stop)?;
    }
    let Some(mut stream) = device.set_migration_state(MigrationState::Resuming)? else {
        return Err(refused());
    };
    let copied = copy_data(input, &mut stream)?;
    device.set_migration_state(MigrationState::Stop)?;
    Ok(copied)
}

/// Copies a migration stream to its end, errors typed with their errno.
fn copy_data(from: &mut impl Read, to: &mut impl Write) -> Result<u64> {
    io::copy(from, to).map_err(|e| {
        Error::from_io(
            "migration data",
            Target::Feature(feature::MIG_DEVICE_STATE),
            &e,
        )
    })
}

/// The refusal the kernel gives: `EINVAL` from the state feature.
pub(crate) fn refused() -> Error {
    Error::sys(
        "VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE",
        Target::Feature(feature::MIG_DEVICE_STATE),
        libc::EINVAL,
    )
}

/// The next state the kernel moves a device with `flags` to, from `from`
/// on the way to `to` (`vfio_mig_get_next_state`); `to` itself when it is
/// one arc away.
///
/// # Errors
/// `EINVAL` (kind `InvalidArgument`), as the kernel answers: `from` or
/// `to` is a state the device does not have (ERROR included), or no path
/// leads there (out of STOP_COPY into a pre-copy state).
pub fn next_state(
    flags: MigrationFlags,
    from: MigrationState,
    to: MigrationState,
) -> Result<MigrationState> {
    if !from.offered_by(flags) || !to.offered_by(flags) {
        return Err(refused());
    }
    let mut next = from.step(to);
    // Skip optional states the device lacks; each skip moves strictly
    // along the graph, so this ends within the number of states.
    for _ in 0..MigrationState::ALL.len() {
        if next == MigrationState::Error || next.offered_by(flags) {
            break;
        }
        next = next.step(to);
    }
    if next == MigrationState::Error || !next.offered_by(flags) {
        return Err(refused());
    }
    Ok(next)
}

/// Every state the kernel moves the device through from `from` to `to`,
/// ending with `to`; empty when they are the same.
///
/// # Errors
/// As [`next_state`].
pub fn arcs(
    flags: MigrationFlags,
    from: MigrationState,
    to: MigrationState,
) -> Result<Vec<MigrationState>> {
    let mut path = Vec::new();
    let mut at = from;
    while at != to {
        at = next_state(flags, at, to)?;
        path.push(at);
        if path.len() > MigrationState::ALL.len() {
            return Err(refused());
        }
    }
    if path.is_empty() {
        // The request is still checked: both ends must exist.
        next_state(flags, from, to)?;
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use MigrationState as S;

    const ALL_FEATURES: MigrationFlags = MigrationFlags(0b111);

    fn flag_sets() -> [MigrationFlags; 4] {
        use MigrationFlags as F;
        [
            F::STOP_COPY,
            F::STOP_COPY | F::P2P,
            F::STOP_COPY | F::PRE_COPY,
            F::STOP_COPY | F::P2P | F::PRE_COPY,
        ]
    }

    #[test]
    fn raw_numbers_are_the_uapis() {
        for (i, s) in S::ALL.iter().enumerate() {
            assert_eq!(s.raw(), i as u32);
            assert_eq!(S::from_raw(i as u32).expect("defined"), *s);
        }
        let e = S::from_raw(8).expect_err("undefined");
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    }

    /// The walks the uAPI documents (`vfio.h`, `vfio_mig_get_next_state`)
    /// for a device with every feature.
    #[test]
    fn the_documented_multi_step_walks_with_every_feature() {
        let walks: &[&[S]] = &[
            &[S::PreCopy, S::PreCopyP2p, S::StopCopy],
            &[S::PreCopy, S::Running, S::RunningP2p],
            &[S::PreCopy, S::Running, S::RunningP2p, S::Stop],
            &[S::PreCopy, S::Running, S::RunningP2p, S::Stop, S::Resuming],
            &[S::PreCopyP2p, S::RunningP2p, S::Running],
            &[S::PreCopyP2p, S::RunningP2p, S::Stop],
            &[S::PreCopyP2p, S::RunningP2p, S::Stop, S::Resuming],
            &[S::Resuming, S::Stop, S::RunningP2p],
            &[S::Resuming, S::Stop, S::RunningP2p, S::PreCopyP2p],
            &[S::Resuming, S::Stop, S::RunningP2p, S::Running],
            &[S::Resuming, S::Stop, S::RunningP2p, S::Running, S::PreCopy],
            &[S::Resuming, S::Stop, S::StopCopy],
            &[S::Running, S::RunningP2p, S::PreCopyP2p],
            &[S::Running, S::RunningP2p, S::Stop],
            &[S::Running, S::RunningP2p, S::Stop, S::Resuming],
            &[S::Running, S::RunningP2p, S::Stop, S::StopCopy],
            &[S::RunningP2p, S::Running, S::PreCopy],
            &[S::RunningP2p, S::Stop, S::Resuming],
            &[S::RunningP2p, S::Stop, S::StopCopy],
            &[S::Stop, S::RunningP2p, S::PreCopyP2p],
            &[S::Stop, S::RunningP2p, S::Running],
            &[S::Stop, S::RunningP2p, S::Running, S::PreCopy],
            &[S::StopCopy, S::Stop, S::Resuming],
            &[S::StopCopy, S::Stop, S::RunningP2p],
            &[S::StopCopy, S::Stop, S::RunningP2p, S::Running],
        ];
        for walk in walks {
            let (from, to) = (walk[0], walk[walk.len() - 1]);
            assert_eq!(
                arcs(ALL_FEATURES, from, to).expect("a path"),
                &walk[1..],
                "{from:?} -> {to:?}"
            );
        }
    }

    #[test]
    fn stop_copy_never_goes_back_to_pre_copy() {
        for to in [S::PreCopy, S::PreCopyP2p] {
            let e = arcs(ALL_FEATURES, S::StopCopy, to).expect_err("blocked");
            assert_eq!(e.errno(), Some(libc::EINVAL), "{to:?}");
        }
    }

    #[test]
    fn a_state_the_device_lacks_is_refused_at_either_end() {
        let plain = MigrationFlags::STOP_COPY;
        for s in [S::RunningP2p, S::PreCopy, S::PreCopyP2p, S::Error] {
            assert!(next_state(plain, S::Running, s).is_err(), "to {s:?}");
            assert!(next_state(plain, s, S::Running).is_err(), "from {s:?}");
        }
        let e = next_state(MigrationFlags::default(), S::Running, S::Stop).expect_err("none");
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    }

    /// Every planned arc stays inside the device's states and is one the
    /// uAPI obliges a driver with those features to implement.
    #[test]
    fn every_arc_of_every_walk_is_one_a_driver_implements() {
        let required = |flags: MigrationFlags, a: S, b: S| {
            let p2p = flags.contains(MigrationFlags::P2P);
            let pre = flags.contains(MigrationFlags::PRE_COPY);
            let base = matches!(
                (a, b),
                (S::Resuming, S::Stop)
                    | (S::Stop, S::Resuming)
                    | (S::Stop, S::StopCopy)
                    | (S::StopCopy, S::Stop)
            );
            let with_p2p = p2p
                && matches!(
                    (a, b),
                    (S::Running, S::RunningP2p)
                        | (S::RunningP2p, S::Running)
                        | (S::RunningP2p, S::Stop)
                        | (S::Stop, S::RunningP2p)
                );
            let without_p2p =
                !p2p && matches!((a, b), (S::Running, S::Stop) | (S::Stop, S::Running));
            let with_pre =
                pre && matches!((a, b), (S::Running, S::PreCopy) | (S::PreCopy, S::Running));
            let pre_alone = pre && !p2p && matches!((a, b), (S::PreCopy, S::StopCopy));
            let pre_and_p2p = pre
                && p2p
                && matches!(
                    (a, b),
                    (S::PreCopy, S::PreCopyP2p)
                        | (S::PreCopyP2p, S::PreCopy)
                        | (S::PreCopyP2p, S::RunningP2p)
                        | (S::PreCopyP2p, S::StopCopy)
                        | (S::RunningP2p, S::PreCopyP2p)
                );
            base || with_p2p || without_p2p || with_pre || pre_alone || pre_and_p2p
        };
        for flags in flag_sets() {
            for from in S::ALL.into_iter().filter(|s| s.offered_by(flags)) {
                for to in S::ALL.into_iter().filter(|s| s.offered_by(flags)) {
                    let blocked = from == S::StopCopy && matches!(to, S::PreCopy | S::PreCopyP2p);
                    match arcs(flags, from, to) {
                        Ok(path) => {
                            assert!(!blocked, "{flags:?}: {from:?} -> {to:?} should be refused");
                            let mut at = from;
                            for &next in &path {
                                assert!(next.offered_by(flags), "{flags:?}: {next:?}");
                                assert!(
                                    required(flags, at, next),
                                    "{flags:?}: {from:?} -> {to:?} takes {at:?} -> {next:?}"
                                );
                                at = next;
                            }
                            assert_eq!(at, to);
                        }
                        Err(e) => {
                            assert!(blocked, "{flags:?}: {from:?} -> {to:?}: {e}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn data_fds_come_with_the_copy_and_resume_states() {
        let with: Vec<S> = S::ALL.into_iter().filter(|s| s.has_data_fd()).collect();
        assert_eq!(with, [S::StopCopy, S::Resuming, S::PreCopy, S::PreCopyP2p]);
    }

    #[test]
    fn flags_print_by_name_and_keep_unknown_bits() {
        let f = MigrationFlags::STOP_COPY | MigrationFlags::PRE_COPY;
        assert_eq!(format!("{f:?}"), "STOP_COPY|PRE_COPY");
        assert_eq!(
            format!("{:?}", MigrationFlags::from_bits(0x11)),
            "STOP_COPY|0x10"
        );
        assert_eq!(format!("{:?}", MigrationFlags::default()), "0x0");
    }
}
