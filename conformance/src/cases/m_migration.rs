//! M: VFIO migration v2 on the fixture's migratable pair
//! ([`Fixture::migratable_pair`]): the features, the refusals of the state
//! machine, a stop-and-copy round trip whose state arrives byte for byte,
//! a pre-copy session that continues into STOP_COPY, and the device's
//! answer to every request in every state it has. Every case leaves both
//! devices RUNNING.

use std::io::{Read, Write};

use vfio_hal::migration::{self, MigrationFlags, MigrationState as S};
use vfio_hal::{Container, Device, ErrorKind};

use super::{edu_device, fresh, Dev};
use crate::ensure;
use crate::fixture::Fixture;
use crate::outcome::{
    expect_eq, expect_kind, fail, not_applicable, CaseError, CaseResult, Context, Describe,
};

/// The pair, opened.
fn pair<F: Fixture>(f: &F, c: &F::Container) -> Result<(Dev<F>, Dev<F>), CaseError> {
    let Some((src, dst)) = f.migratable_pair() else {
        return Err(not_applicable(
            "the fixture has no pair of devices with VFIO migration",
        ));
    };
    let open = |name: &str| {
        c.open_device(name)
            .context(format_args!("open_device({name})"))
    };
    Ok((open(src)?, open(dst)?))
}

/// Bytes of a pre-copy stream read between two looks at its info.
const CHUNK: usize = 512;

/// Back to RUNNING, by a reset where a transition cannot get there.
fn running<D: Device>(dev: &D) -> CaseResult {
    if dev.set_migration_state(S::Running).is_err() {
        dev.reset()
            .context("reset out of a failed migration state")?;
    }
    expect_eq(
        "the migration state at the end",
        S::Running,
        dev.migration_state().context("migration_state")?,
    )
}

/// A migratable device declares STOP_COPY, starts RUNNING and estimates
/// its STOP_COPY data; edu under vfio-pci has no migration (`ENOTTY`).
pub fn migration_features<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let (src, _dst) = pair(f, &c)?;
    let flags = src.migration_flags().context("migration_flags")?;
    ensure!(
        flags.contains(MigrationFlags::STOP_COPY),
        "migration flags {flags:?} lack the mandatory STOP_COPY"
    );
    expect_eq(
        "the state after open",
        S::Running,
        src.migration_state().context("migration_state")?,
    )?;
    match src.migration_data_size() {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotSupported => {}
        Err(e) => return Err(e).context("migration_data_size"),
    }
    let edu = edu_device(f, &c)?;
    expect_kind(
        "migration_flags of edu (no migration driver)",
        edu.migration_flags(),
        &[ErrorKind::NotSupported],
    )?;
    Ok(())
}

/// ERROR is never a request, an arc out of STOP_COPY into pre-copy is
/// blocked, and a state the device lacks is refused; each refusal is
/// `EINVAL` and leaves the state where it was.
pub fn migration_refusals<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let (src, _dst) = pair(f, &c)?;
    let flags = src.migration_flags().context("migration_flags")?;
    let refused = |what: &str, to: S, at: S| -> CaseResult {
        let e = match src.set_migration_state(to) {
            Ok(_) => return Err(fail(format!("{what}: {to:?} was accepted"))),
            Err(e) => e,
        };
        expect_eq(format_args!("{what}: errno"), Some(libc::EINVAL), e.errno())?;
        expect_eq(
            format_args!("{what}: the state after the refusal"),
            at,
            src.migration_state().context("migration_state")?,
        )
    };
    refused("request ERROR", S::Error, S::Running)?;
    for s in [S::RunningP2p, S::PreCopy, S::PreCopyP2p] {
        if !s.offered_by(flags) {
            refused("a state the device lacks", s, S::Running)?;
        }
    }
    src.set_migration_state(S::Stop).context("to STOP")?;
    let _session = src
        .set_migration_state(S::StopCopy)
        .context("to STOP_COPY")?;
    if flags.contains(MigrationFlags::PRE_COPY) {
        refused("STOP_COPY -> PRE_COPY", S::PreCopy, S::StopCopy)?;
    }
    running(&src)
}

/// Stop-and-copy from the source into the destination; the destination,
/// saved in turn, streams the same bytes: the whole state arrived.
pub fn migration_round_trip<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let (src, dst) = pair(f, &c)?;
    let mut wire = Vec::new();
    let sent = migration::save(&src, &mut wire).context("save the source")?;
    expect_eq("bytes saved", wire.len() as u64, sent)?;
    ensure!(!wire.is_empty(), "the source saved no state");
    migration::load(&dst, &mut wire.as_slice()).context("load into the destination")?;
    expect_eq(
        "the destination's state after loading",
        S::Stop,
        dst.migration_state().context("migration_state")?,
    )?;
    dst.set_migration_state(S::Running)
        .context("run the destination")?;
    let mut echo = Vec::new();
    migration::save(&dst, &mut echo).context("save the destination")?;
    ensure!(
        echo == wire,
        "the destination saved {} bytes that differ from the {} the source sent",
        echo.len(),
        wire.len()
    );
    running(&src)?;
    running(&dst)
}

/// A pre-copy session: entering PRE_COPY hands out a stream whose
/// initial bytes the pre-copy info counts, never growing and reaching zero
/// as they are read; STOP_COPY continues the same session (no new stream)
/// to its end of stream (reads of 0 bytes); the concatenated stream loads.
pub fn migration_precopy<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let (src, dst) = pair(f, &c)?;
    if !src
        .migration_flags()
        .context("migration_flags")?
        .contains(MigrationFlags::PRE_COPY)
    {
        return Err(not_applicable("the device has no PRE_COPY"));
    }
    let mut stream = src
        .set_migration_state(S::PreCopy)
        .context("to PRE_COPY")?
        .ok_or_else(|| fail("entering PRE_COPY handed out no stream"))?;
    let info = stream.precopy_info().context("precopy_info")?;
    ensure!(
        info.initial_bytes > 0,
        "PRE_COPY reports no initial bytes: {info:?}"
    );
    let initial = usize::try_from(info.initial_bytes)
        .unwrap_or(usize::MAX)
        .min(1 << 26);
    let mut wire = vec![0; initial];
    let mut left = info.initial_bytes;
    for chunk in wire.chunks_mut(CHUNK) {
        stream.read_exact(chunk).context("read the initial bytes")?;
        let now = stream.precopy_info().context("precopy_info")?.initial_bytes;
        ensure!(
            now <= left,
            "initial bytes grew from {left} to {now} while being read"
        );
        left = now;
    }
    expect_eq("initial bytes left once all were read", 0, left)?;
    let next = src
        .set_migration_state(S::StopCopy)
        .context("to STOP_COPY")?;
    ensure!(
        next.is_none(),
        "STOP_COPY opened a new session instead of continuing"
    );
    stream
        .read_to_end(&mut wire)
        .context("read the rest of the session")?;
    expect_eq(
        "a read after the end of stream",
        0,
        stream.read(&mut [0; 16]).context("read at the end")?,
    )?;
    src.set_migration_state(S::Stop).context("to STOP")?;
    migration::load(&dst, &mut wire.as_slice()).context("load the session into the destination")?;
    running(&src)?;
    running(&dst)
}

/// Every request in every state the device declares — each pair (from,
/// to) of its states, and ERROR, which none may request — answered as the
/// uAPI's state machine ([`migration::arcs`]) says: the device reaches
/// `to`, with a new stream exactly when the last arc opens a session
/// (enters STOP_COPY or RESUMING from STOP, a pre-copy state from a
/// running one), or refuses with `EINVAL` and stays at `from`. Each
/// `from` is reached from RUNNING; RESUMING is left holding a state the
/// destination saved, as on a real destination (a device may refuse to
/// leave RESUMING with no state — into ERROR or staying put, both allowed).
pub fn migration_answers<F: Fixture>(f: &F) -> CaseResult {
    let c = fresh(f)?;
    let (src, dst) = pair(f, &c)?;
    let flags = src.migration_flags().context("migration_flags")?;
    let mut saved = Vec::new();
    migration::save(&dst, &mut saved).context("save the destination")?;
    running(&dst)?;
    let states: Vec<S> = S::ALL.into_iter().filter(|s| s.offered_by(flags)).collect();
    for &from in &states {
        for to in states.iter().copied().chain([S::Error]) {
            let what = format!("{from:?} -> {to:?}");
            let entered = src
                .set_migration_state(from)
                .context(format_args!("{what}: reach {from:?} from RUNNING"))?;
            if from == S::Resuming {
                entered
                    .ok_or_else(|| fail(format!("{what}: RESUMING handed out no stream")))?
                    .write_all(&saved)
                    .context(format_args!("{what}: write a saved state"))?;
            }
            let expected = migration::arcs(flags, from, to);
            match (expected, src.set_migration_state(to)) {
                (Ok(path), Ok(stream)) => {
                    let last = path.len().checked_sub(2).map_or(from, |i| path[i]);
                    let opens = !path.is_empty() && to.has_data_fd() && !last.has_data_fd();
                    expect_eq(
                        format_args!("{what}: a new stream handed out"),
                        opens,
                        stream.is_some(),
                    )?;
                    expect_eq(
                        format_args!("{what}: the state reached"),
                        to,
                        src.migration_state().context("migration_state")?,
                    )?;
                }
                (Err(_), Err(e)) => {
                    expect_eq(format_args!("{what}: errno"), Some(libc::EINVAL), e.errno())?;
                    expect_eq(
                        format_args!("{what}: the state after the refusal"),
                        from,
                        src.migration_state().context("migration_state")?,
                    )?;
                }
                (Ok(path), Err(e)) => {
                    return Err(fail(format!(
                        "{what}: refused ({}), but the uAPI walks {path:?}",
                        e.describe()
                    )))
                }
                (Err(_), Ok(_)) => {
                    return Err(fail(format!("{what}: accepted, but the uAPI refuses it")))
                }
            }
            running(&src).context(format_args!("{what}: back to RUNNING"))?;
        }
    }
    Ok(())
}
