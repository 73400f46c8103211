//! One driver script for QEMU's `edu`, run on any backend, whose trace is
//! compared between backends: the mock's model against the real device.
//!
//! [`run`] drives one edu through every part of it a driver can reach —
//! device and region info, config space, every BAR 0 offset from `0x00` to
//! `0x9f` (and a few unlisted ones) at every access width, read and write,
//! misaligned accesses, liveness, factorial, the interrupt-on-factorial
//! status bit, MSI and INTx counted exactly on eventfds, DMA both ways with
//! IOMMU faults and with bus mastering off, reset and a close and reopen —
//! and records what it sees as a [`Trace`]: an ordered list of
//! [`Step`]s, each a step id and an [`Obs`]ervation. Nothing in a trace
//! depends on timing: the script waits (bounded) for the device to finish
//! before it looks, records no durations, and observes a busy device only
//! where the busy window is seconds long on QEMU and the mock's clock is
//! held ([`Options::hold_time`]).
//!
//! [`Trace::diff`] lists the steps where two traces differ, and
//! [`Deviation`] names the differences a comparison allows, each with why.
//!
//! The script lives here, beside the edu driver and its independent
//! register map ([`crate::edu::reg`]), because this crate is the one that
//! is generic over the hal traits and depends on no backend: the host tests
//! run it on the mock (a dev-dependency), and the lane's guest tests run it
//! on the real device through every real backend.
//!
//! The device is left as the script found it: registers (the factorial
//! result recomputed where some `n!` gives it), the DMA buffer, interrupts
//! off and bus mastering as it was; a second snapshot checks that.
//!
//! Left out on purpose: DMA ranges outside the device buffer and a zero
//! byte count (QEMU versions differ: some abort the whole VM), a factorial
//! of a huge `n` other than the one busy step (QEMU's worker really loops
//! `n` times), and looking at a DMA in flight (QEMU's transfer takes 100 ms,
//! too short a window to be sure of catching it).
//!
//! ```
//! use vfio_hal::Container;
//! use vfio_hal_conformance::differential::{self, Options};
//! use vfio_hal_mock::{models::Edu, MockContainer};
//!
//! let trace = || -> Result<_, Box<dyn std::error::Error>> {
//!     let container = MockContainer::new();
//!     container.plug("edu", Edu::new())?;
//!     let clock = container.clock();
//!     let hold = move |on: bool| clock.set_manual(on);
//!     Ok(differential::run(&container, "edu", &Options::mock(&hold))?)
//! };
//! let (a, b) = (trace()?, trace()?);
//! assert!(a.diff(&b).is_empty());
//! assert_eq!(a.get("fact.12.result"), Some(&differential::Obs::Value(479_001_600)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::time::{Duration, Instant};

use vfio_hal::eventfd::{EventFd, EventFdExt};
use vfio_hal::irq::index as irq_index;
use vfio_hal::pci::{cfg, region as pci_region};
use vfio_hal::{
    Container, Device, DeviceKind, DmaAccess, DmaBuffer, DmaMapping, ErrorKind, Irq, PciConfig,
    Region, RegionExt,
};

use crate::edu::reg;
use crate::edu::{expected_factorial, DEVICE_ID, VENDOR_ID};

/// What one step saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Obs {
    /// A value read, or a count.
    Value(u64),
    /// A yes/no fact.
    Bool(bool),
    /// Bytes read back (memory a DMA wrote, the device buffer).
    Bytes(Vec<u8>),
    /// A hal call failed, with this kind.
    Failed(ErrorKind),
    /// A hal call succeeded, with nothing to show.
    Done,
}

/// FNV-1a, to name a byte string in one line.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl fmt::Display for Obs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(v) => write!(f, "{v:#x}"),
            Self::Bool(b) => write!(f, "{b}"),
            Self::Bytes(b) => {
                let head: Vec<String> = b.iter().take(8).map(|x| format!("{x:02x}")).collect();
                write!(
                    f,
                    "{} bytes [{} ..] fnv {:016x}",
                    b.len(),
                    head.join(" "),
                    fnv(b)
                )
            }
            Self::Failed(kind) => write!(f, "failed: {kind:?}"),
            Self::Done => f.write_str("done"),
        }
    }
}

/// One step of a trace: its id (section and what was done) and what it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The step's id, `section.detail`, unique within a trace.
    pub id: String,
    /// The observation.
    pub obs: Obs,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.id, self.obs)
    }
}

/// The ordered observations of one run of the script.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    steps: Vec<Step>,
}

impl Trace {
    /// The steps, in order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Number of steps.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The observation of step `id`, if recorded.
    pub fn get(&self, id: &str) -> Option<&Obs> {
        self.steps.iter().find(|s| s.id == id).map(|s| &s.obs)
    }

    /// The number of steps of each section (the id's part before the first
    /// `.`), in order of first appearance.
    pub fn sections(&self) -> Vec<(&str, usize)> {
        let mut out: Vec<(&str, usize)> = Vec::new();
        for step in &self.steps {
            let section = step.id.split('.').next().unwrap_or("");
            match out.last_mut() {
                Some((name, n)) if *name == section => *n += 1,
                _ => out.push((section, 1)),
            }
        }
        out
    }

    /// Every step where `self` (the left trace) and `other` differ, in
    /// order: a different observation, a different step at the same
    /// position, or a step only one trace has.
    pub fn diff(&self, other: &Trace) -> Vec<Difference> {
        let len = self.steps.len().max(other.steps.len());
        (0..len)
            .filter_map(|index| {
                let (l, r) = (self.steps.get(index), other.steps.get(index));
                (l != r).then(|| Difference {
                    index,
                    left: l.cloned(),
                    right: r.cloned(),
                })
            })
            .collect()
    }

    fn record(&mut self, id: impl Into<String>, obs: Obs) {
        let id = id.into();
        debug_assert!(self.get(&id).is_none(), "step id {id} recorded twice");
        self.steps.push(Step { id, obs });
    }
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.steps.iter().enumerate() {
            writeln!(f, "{i:4} {step}")?;
        }
        Ok(())
    }
}

/// One step where two traces differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// Position in the traces.
    pub index: usize,
    /// The left trace's step there (`None`: the left trace is shorter).
    pub left: Option<Step>,
    /// The right trace's step there.
    pub right: Option<Step>,
}

impl Difference {
    /// The step id, where both traces have the same step here.
    pub fn step(&self) -> Option<&str> {
        match (&self.left, &self.right) {
            (Some(l), Some(r)) if l.id == r.id => Some(&l.id),
            _ => None,
        }
    }

    /// The first allowed deviation that covers this difference.
    pub fn allowed_by<'d>(&self, allowed: &'d [Deviation]) -> Option<&'d Deviation> {
        let step = self.step()?;
        allowed.iter().find(|d| d.covers(step))
    }
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |s: &Option<Step>| match s {
            Some(s) => s.obs.to_string(),
            None => "(no step)".to_owned(),
        };
        match self.step() {
            Some(step) => write!(f, "#{} {step}", self.index)?,
            None => {
                let id = |s: &Option<Step>| s.as_ref().map_or("-".to_owned(), |s| s.id.clone());
                write!(
                    f,
                    "#{} step {} against step {}",
                    self.index,
                    id(&self.left),
                    id(&self.right)
                )?;
            }
        }
        write!(
            f,
            ": left {} | right {}",
            show(&self.left),
            show(&self.right)
        )?;
        if let (
            Some(Step {
                obs: Obs::Bytes(l), ..
            }),
            Some(Step {
                obs: Obs::Bytes(r), ..
            }),
        ) = (&self.left, &self.right)
        {
            if let Some(at) = (0..l.len().min(r.len())).find(|&i| l[i] != r[i]) {
                write!(
                    f,
                    " (first difference at byte {at}: {:#04x} | {:#04x})",
                    l[at], r[at]
                )?;
            }
        }
        Ok(())
    }
}

/// A difference between two traces that a comparison allows, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deviation {
    /// A step id, or a prefix of step ids ending in `*`.
    pub step: &'static str,
    /// Why the two sides may differ here.
    pub why: &'static str,
}

impl Deviation {
    /// Whether this deviation names `step`.
    pub fn covers(&self, step: &str) -> bool {
        match self.step.strip_suffix('*') {
            Some(prefix) => step.starts_with(prefix),
            None => step == self.step,
        }
    }
}

/// How the script waits, and how it holds a model's clock.
pub struct Options<'a> {
    /// The longest a completion (factorial, DMA) or an expected interrupt
    /// may take.
    pub timeout: Duration,
    /// How long to watch an eventfd for interrupts beyond those expected.
    pub quiet: Duration,
    /// Holds (`true`) or releases (`false`) the device's time, around the
    /// one step that looks at a busy device. On QEMU the busy window is
    /// seconds of real time and this is `None`; a model whose work
    /// completes right after each access (the mock's automatic clock) is
    /// held for the step, so it is busy too.
    pub hold_time: Option<&'a dyn Fn(bool)>,
}

impl fmt::Debug for Options<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("timeout", &self.timeout)
            .field("quiet", &self.quiet)
            .field("hold_time", &self.hold_time.is_some())
            .finish()
    }
}

impl<'a> Options<'a> {
    /// For a real edu under a TCG guest: generous waits, no clock to hold.
    pub fn real() -> Self {
        Self {
            timeout: Duration::from_secs(20),
            quiet: Duration::from_millis(200),
            hold_time: None,
        }
    }

    /// For a model on a virtual clock that `hold_time` holds and releases.
    pub fn mock(hold_time: &'a dyn Fn(bool)) -> Self {
        Self {
            timeout: Duration::from_secs(5),
            quiet: Duration::from_millis(5),
            hold_time: Some(hold_time),
        }
    }
}

/// Why the script could not run to its end (a step that merely fails is
/// recorded as [`Obs::Failed`] instead).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScriptError {
    /// A hal call the script needs in order to go on failed.
    #[error("{what}: {source}")]
    Hal {
        /// What the script was doing.
        what: &'static str,
        /// The error.
        #[source]
        source: vfio_hal::Error,
    },
    /// The OS refused an eventfd.
    #[error("{what}: {source}")]
    Os {
        /// What the script was doing.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The device is not an edu, or the container cannot hold the script's
    /// IOVA layout.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The device did not finish in time while the script put it back.
    #[error("{0}: no answer in time")]
    Timeout(&'static str),
    /// The device buffer read back differs from the one found, first at
    /// byte `at`.
    #[error(
        "edu's DMA buffer not restored: byte {at:#x} was {found:#04x}, reads back {read_back:#04x}"
    )]
    BufferNotRestored {
        /// The first differing byte's offset in the buffer.
        at: usize,
        /// Its value when the script found the device.
        found: u8,
        /// Its value read back after the restore.
        read_back: u8,
    },
    /// The device is not as the script found it after putting it back.
    #[error("edu not restored: found {found:x?}, left {left:x?}")]
    NotRestored {
        /// The state found.
        found: Box<Saved>,
        /// The state left.
        left: Box<Saved>,
    },
}

fn hal(what: &'static str) -> impl FnOnce(vfio_hal::Error) -> ScriptError {
    move |source| ScriptError::Hal { what, source }
}

fn os(what: &'static str) -> impl FnOnce(std::io::Error) -> ScriptError {
    move |source| ScriptError::Os { what, source }
}

/// The IOVAs the script uses, the same on every backend (they show up in
/// the DMA registers): page-sized slots from 16 MiB, below edu's 28-bit
/// DMA mask, with unmapped slots between the mapped ones.
pub mod iova {
    /// One IOMMU page; the script needs 4 KiB pages.
    pub const PAGE: u64 = 4096;
    /// The first slot.
    pub const BASE: u64 = 0x0100_0000;
    /// The source page: the device reads it (mapped read-only).
    pub const SRC: u64 = BASE;
    /// The destination page: the device writes it (read-write); the page
    /// after it is never mapped.
    pub const DST: u64 = BASE + 2 * PAGE;
    /// A page mapped read-only, which the device tries to write.
    pub const RO: u64 = BASE + 4 * PAGE;
    /// A page never mapped.
    pub const UNMAPPED: u64 = BASE + 6 * PAGE;
    /// The page the script saves and restores the device buffer through
    /// (not traced).
    pub const SCRATCH: u64 = BASE + 8 * PAGE;
    /// One past the last byte the script maps.
    pub const END: u64 = SCRATCH + PAGE;
}

/// A factorial input whose computation takes QEMU's worker thread a
/// second or more (it multiplies `n` times): the one step that catches the
/// device busy. Its result, like that of any `n` >= 34, is 0.
pub const BUSY_FACTORIAL: u32 = 0x4000_0000;

/// Where the script's BAR 0 write sweep writes what, by offset: most
/// offsets get a pattern; the factorial a small `n`; the status all ones.
fn sweep_value(offset: u64) -> u64 {
    match offset {
        reg::FACTORIAL => 6,
        reg::STATUS => 0xffff_ffff,
        // Bit 0 (start) clear: ignored, as the sweep wants.
        _ => 0xa5a5_5a5a_c3c3_3c3c,
    }
}

/// The command bits the script drives and compares: memory decode, bus
/// mastering, INTx disable.
const DRIVEN: u16 = cfg::CMD_MEMORY | cfg::CMD_BUS_MASTER | cfg::CMD_INTX_DISABLE;
/// Command bit 8, SERR# enable.
const CMD_SERR: u16 = 1 << 8;
/// Command bit 6, parity error response.
const CMD_PARITY: u16 = 1 << 6;

/// BAR 0 writes the sweep leaves out, `(offset, width)`: a raise would
/// interrupt with nothing routed (its own section routes first).
const SWEEP_SKIP_WRITE: &[(u64, usize)] = &[(reg::IRQ_RAISE, 4)];

/// Unlisted BAR 0 offsets the sweeps add, at 4 and 8 bytes.
pub const UNLISTED: &[u64] = &[0xa0, 0xf8, 0x100, 0x1000, 0x4_0000, 0x8_0000, 0xf_fff8];

/// Misaligned accesses, `(offset, length)`: the kernel splits them into
/// naturally aligned pieces (vfio-pci's rule: 8, then 4, 2, 1 bytes).
pub const MISALIGNED: &[(u64, usize)] = &[
    (0x01, 2),
    (0x01, 4),
    (0x02, 4),
    (0x03, 4),
    (0x05, 2),
    (0x04, 8),
    (0x06, 8),
    (0x81, 4),
    (0x84, 8),
    (0x94, 8),
    (0x9c, 8),
    (0x00, 16),
    (0x80, 32),
];

/// The restorable state of an edu, saved before the script and compared
/// after it puts the device back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    liveness: u32,
    factorial: u32,
    status: u32,
    irq_status: u32,
    dma: [u64; 4],
    command: u16,
    buffer: Vec<u8>,
}

type Reg<C> = <<C as Container>::Device as Device>::Region;
type IrqOf<C> = <<C as Container>::Device as Device>::Irq;

/// Runs the script on the edu `name` of `container` and returns its trace.
///
/// # Errors
/// [`ScriptError`] when a step the script needs to go on fails (opening
/// the device, mapping its pages, making an eventfd), when `name` is not
/// an edu, or when the device cannot be put back as it was found.
pub fn run<C: Container>(
    container: &C,
    name: &str,
    opts: &Options<'_>,
) -> Result<Trace, ScriptError> {
    // Opened first: a type1 container has no IOMMU until a device's group
    // is attached.
    let dev = container
        .open_device(name)
        .map_err(hal("open the device"))?;
    let info = container.iommu_info().map_err(hal("IOMMU info"))?;
    if !info
        .iova_ranges
        .iter()
        .any(|r| r.contains(iova::BASE, iova::END - iova::BASE))
        || info.min_page_size().is_some_and(|p| p > iova::PAGE)
    {
        return Err(ScriptError::Unsupported(format!(
            "the script needs 4 KiB IOMMU pages and IOVAs {:#x}..{:#x}: {info:?}",
            iova::BASE,
            iova::END
        )));
    }
    let mut trace = Trace::default();
    // Each session maps the script's pages after opening the device and
    // unmaps them before closing it: on type1 the mappings go with the
    // container's last group, which the device's close detaches.
    let found = {
        let pages = Pages::map(container)?;
        let mut s = Session::new(dev, name, opts, &pages, &mut trace)?;
        let found = s.save()?;
        s.known_state()?;
        s.info();
        s.config()?;
        s.reads();
        s.writes()?;
        s.liveness();
        s.factorial()?;
        s.interrupts()?;
        s.intx()?;
        s.dma()?;
        s.reset()?;
        s.before_close();
        let dev = s.into_device();
        drop(pages);
        drop(dev);
        found
    };
    let dev = container
        .open_device(name)
        .map_err(hal("reopen the device"))?;
    let pages = Pages::map(container)?;
    let mut s = Session::new(dev, name, opts, &pages, &mut trace)?;
    s.after_reopen();
    s.restore(&found)?;
    let left = s.saved_registers()?;
    let dev = s.into_device();
    drop(pages);
    drop(dev);
    let found = Saved {
        buffer: Vec::new(),
        ..found
    };
    if left != found {
        return Err(ScriptError::NotRestored {
            found: Box::new(found),
            left: Box::new(left),
        });
    }
    Ok(trace)
}

/// The script's DMA pages, mapped for one session.
struct Pages<'c, C: Container> {
    src: DmaMapping<'c, C>,
    dst: DmaMapping<'c, C>,
    ro: DmaMapping<'c, C>,
    scratch: DmaMapping<'c, C>,
}

impl<'c, C: Container> Pages<'c, C> {
    fn map(c: &'c C) -> Result<Self, ScriptError> {
        let map = |at, access| {
            let buffer = DmaBuffer::new(iova::PAGE as usize).map_err(hal("allocate a page"))?;
            c.map_buffer(at, buffer, access)
                .map_err(|e| hal("map a page")(e.error))
        };
        Ok(Self {
            src: map(iova::SRC, DmaAccess::ReadOnly)?,
            dst: map(iova::DST, DmaAccess::ReadWrite)?,
            ro: map(iova::RO, DmaAccess::ReadOnly)?,
            scratch: map(iova::SCRATCH, DmaAccess::ReadWrite)?,
        })
    }
}

/// A page of `seed`'s pattern.
fn pattern(seed: u8) -> Vec<u8> {
    (0..iova::PAGE as usize)
        .map(|i| (i as u64 * 31 + u64::from(seed) * 7 + 1) as u8)
        .collect()
}

/// One open edu and the trace being written.
struct Session<'a, 'c, C: Container> {
    dev: C::Device,
    bar: Reg<C>,
    cfg: Reg<C>,
    msi: IrqOf<C>,
    intx: IrqOf<C>,
    opts: &'a Options<'a>,
    pages: &'a Pages<'c, C>,
    trace: &'a mut Trace,
}

impl<'a, 'c, C: Container> Session<'a, 'c, C> {
    fn new(
        dev: C::Device,
        name: &str,
        opts: &'a Options<'a>,
        pages: &'a Pages<'c, C>,
        trace: &'a mut Trace,
    ) -> Result<Self, ScriptError> {
        let id = (
            dev.vendor_id().map_err(hal("vendor id"))?,
            dev.device_id().map_err(hal("device id"))?,
        );
        if id != (VENDOR_ID, DEVICE_ID) {
            return Err(ScriptError::Unsupported(format!(
                "{name} is {:04x}:{:04x}, not an edu",
                id.0, id.1
            )));
        }
        Ok(Self {
            bar: dev.region(pci_region::BAR0).map_err(hal("BAR 0"))?,
            cfg: dev.config().map_err(hal("config space"))?,
            msi: dev.irq(irq_index::MSI).map_err(hal("MSI"))?,
            intx: dev.irq(irq_index::INTX).map_err(hal("INTx"))?,
            dev,
            opts,
            pages,
            trace,
        })
    }

    /// The device, with this session's regions and interrupts let go.
    fn into_device(self) -> C::Device {
        self.dev
    }

    fn rec(&mut self, id: impl Into<String>, obs: Obs) {
        self.trace.record(id, obs);
    }

    /// What step `id` recorded earlier in this trace.
    fn rec_value(&self, id: &str) -> Obs {
        self.trace.get(id).cloned().unwrap_or(Obs::Done)
    }

    fn obs<T: Into<u64>>(r: vfio_hal::Result<T>) -> Obs {
        match r {
            Ok(v) => Obs::Value(v.into()),
            Err(e) => Obs::Failed(e.kind()),
        }
    }

    fn done(r: vfio_hal::Result<()>) -> Obs {
        match r {
            Ok(()) => Obs::Done,
            Err(e) => Obs::Failed(e.kind()),
        }
    }

    // ---- register access ------------------------------------------------

    fn r32(&self, offset: u64) -> vfio_hal::Result<u32> {
        self.bar.read_at::<u32>(offset)
    }

    fn w32(&self, offset: u64, value: u32) -> vfio_hal::Result<()> {
        self.bar.write_at(offset, value)
    }

    fn r64(&self, offset: u64) -> vfio_hal::Result<u64> {
        self.bar.read_at::<u64>(offset)
    }

    fn w64(&self, offset: u64, value: u64) -> vfio_hal::Result<()> {
        self.bar.write_at(offset, value)
    }

    /// Records a 4-byte read of a register.
    fn see32(&mut self, id: impl Into<String>, offset: u64) {
        let obs = Self::obs(self.r32(offset));
        self.rec(id, obs);
    }

    /// Records an 8-byte read of a register.
    fn see64(&mut self, id: impl Into<String>, offset: u64) {
        let obs = Self::obs(self.r64(offset));
        self.rec(id, obs);
    }

    /// Every register's value: the 32-bit ones and the DMA registers.
    fn registers(&self) -> Obs {
        let mut packed = Vec::new();
        for off in [reg::LIVENESS, reg::FACTORIAL, reg::STATUS, reg::IRQ_STATUS] {
            match self.r32(off) {
                Ok(v) => packed.extend_from_slice(&v.to_le_bytes()),
                Err(e) => return Obs::Failed(e.kind()),
            }
        }
        for off in [reg::DMA_SRC, reg::DMA_DST, reg::DMA_CNT, reg::DMA_CMD] {
            match self.r64(off) {
                Ok(v) => packed.extend_from_slice(&v.to_le_bytes()),
                Err(e) => return Obs::Failed(e.kind()),
            }
        }
        Obs::Bytes(packed)
    }

    fn cfg16(&self, offset: u64) -> vfio_hal::Result<u16> {
        self.cfg.read_at::<u16>(offset)
    }

    fn see_cfg8(&mut self, id: &str, offset: u64) {
        let obs = Self::obs(self.cfg.read_at::<u8>(offset));
        self.rec(format!("cfg.{id}"), obs);
    }

    fn see_cfg16(&mut self, id: &str, offset: u64) {
        let obs = Self::obs(self.cfg16(offset));
        self.rec(format!("cfg.{id}"), obs);
    }

    fn see_cfg32(&mut self, id: &str, offset: u64) {
        let obs = Self::obs(self.cfg.read_at::<u32>(offset));
        self.rec(format!("cfg.{id}"), obs);
    }

    fn set_command(&self, set: u16, clear: u16) -> vfio_hal::Result<u16> {
        self.dev.update_command(set, clear)
    }

    // ---- waiting --------------------------------------------------------

    fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut() -> vfio_hal::Result<bool>,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match done() {
                Ok(true) => return true,
                Ok(false) => {}
                Err(_) => return false,
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn factorial_idle(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, || {
            Ok(self.r32(reg::STATUS)? & reg::EDU_STATUS_COMPUTING == 0)
        })
    }

    fn dma_idle(&self) -> bool {
        self.wait_until(self.opts.timeout, || {
            Ok(self.r64(reg::DMA_CMD)? & reg::EDU_DMA_RUN == 0)
        })
    }

    /// Waits until `expect` signals arrived (or the timeout passed), then
    /// one quiet window for more; returns the total.
    fn signals(&self, fd: &EventFd, expect: u64) -> Result<u64, ScriptError> {
        let deadline = Instant::now() + self.opts.timeout;
        let mut total = 0;
        while total < expect && Instant::now() < deadline {
            total += fd
                .wait(Duration::from_millis(10))
                .map_err(os("wait for an interrupt"))?;
        }
        Ok(total
            + fd.wait(self.opts.quiet)
                .map_err(os("watch for more interrupts"))?)
    }

    fn see_signals(
        &mut self,
        id: impl Into<String>,
        fd: &EventFd,
        expect: u64,
    ) -> Result<(), ScriptError> {
        let n = self.signals(fd, expect)?;
        self.rec(id, Obs::Value(n));
        Ok(())
    }

    // ---- factorial and DMA, as a driver does them ------------------------

    /// Computes `n!`, waiting for it; false if it never finished.
    fn compute(&self, n: u32) -> vfio_hal::Result<bool> {
        if !self.factorial_idle(self.opts.timeout) {
            return Ok(false);
        }
        self.w32(reg::FACTORIAL, n)?;
        Ok(self.factorial_idle(self.opts.timeout))
    }

    /// Starts a transfer after the last one ended and waits for it; false
    /// if it never finished. 32-bit register writes where the value fits.
    fn transfer(&self, src: u64, dst: u64, count: u64, cmd: u64) -> vfio_hal::Result<bool> {
        if !self.dma_idle() {
            return Ok(false);
        }
        for (off, v) in [
            (reg::DMA_SRC, src),
            (reg::DMA_DST, dst),
            (reg::DMA_CNT, count),
        ] {
            match u32::try_from(v) {
                Ok(v) => self.w32(off, v)?,
                Err(_) => self.w64(off, v)?,
            }
        }
        self.w32(reg::DMA_CMD, cmd as u32)?;
        Ok(self.dma_idle())
    }

    /// RAM at `from` into the device buffer at `offset`.
    fn to_device(&self, from: u64, offset: u64, count: u64, cmd: u64) -> vfio_hal::Result<bool> {
        self.transfer(from, reg::DMA_START + offset, count, reg::EDU_DMA_RUN | cmd)
    }

    /// The device buffer at `offset` out to RAM at `to`.
    fn to_ram(&self, offset: u64, to: u64, count: u64, cmd: u64) -> vfio_hal::Result<bool> {
        self.transfer(
            reg::DMA_START + offset,
            to,
            count,
            reg::EDU_DMA_RUN | reg::EDU_DMA_DIR | cmd,
        )
    }

    fn see_transfer(&mut self, id: &str, r: vfio_hal::Result<bool>) {
        let obs = match r {
            Ok(done) => Obs::Bool(done),
            Err(e) => Obs::Failed(e.kind()),
        };
        self.rec(format!("{id}.done"), obs);
    }

    /// The whole device buffer, copied out through the destination page
    /// (cleared first) and recorded.
    fn see_buffer(&mut self, id: &str) {
        self.pages.dst.buffer().fill(0);
        let r = self.to_ram(0, iova::DST, reg::DMA_SIZE, 0);
        self.see_transfer(&format!("dma.{id}.readout"), r);
        let bytes = self.pages.dst.buffer().to_vec();
        self.rec(format!("dma.{id}.buffer"), Obs::Bytes(bytes));
    }

    fn new_eventfd() -> Result<EventFd, ScriptError> {
        EventFd::nonblocking().map_err(os("create an eventfd"))
    }

    fn route_msi(&self, fd: &EventFd) -> Result<(), ScriptError> {
        self.msi
            .set_eventfd(0, Some(fd.as_fd()))
            .map_err(hal("route MSI"))
    }

    fn msi_control(&self) -> Obs {
        match self.dev.find_capability(cfg::CAP_ID_MSI) {
            Ok(Some(cap)) => Self::obs(self.cfg16(u64::from(cap.offset) + 2)),
            Ok(None) => Obs::Failed(ErrorKind::NotFound),
            Err(e) => Obs::Failed(e.kind()),
        }
    }

    // ---- saving and restoring (not traced) -------------------------------

    /// The registers and the command register, read without side effects.
    fn saved_registers(&self) -> Result<Saved, ScriptError> {
        let what = "save the device's registers";
        if !self.factorial_idle(self.opts.timeout) || !self.dma_idle() {
            return Err(ScriptError::Timeout("the device is busy"));
        }
        let read = || -> vfio_hal::Result<Saved> {
            Ok(Saved {
                liveness: self.r32(reg::LIVENESS)?,
                factorial: self.r32(reg::FACTORIAL)?,
                status: self.r32(reg::STATUS)?,
                irq_status: self.r32(reg::IRQ_STATUS)?,
                dma: [
                    self.r64(reg::DMA_SRC)?,
                    self.r64(reg::DMA_DST)?,
                    self.r64(reg::DMA_CNT)?,
                    self.r64(reg::DMA_CMD)?,
                ],
                command: self.dev.command()?,
                buffer: Vec::new(),
            })
        };
        read().map_err(hal(what))
    }

    /// The registers and the device buffer. Copying the buffer out is a
    /// transfer, which leaves its own command bits: [`Session::restore`]
    /// puts the found ones back.
    fn save(&self) -> Result<Saved, ScriptError> {
        let what = "save the device buffer";
        let found = self.saved_registers()?;
        self.set_command(cfg::CMD_BUS_MASTER | cfg::CMD_MEMORY, 0)
            .map_err(hal(what))?;
        self.pages.scratch.buffer().fill(0);
        if !self
            .to_ram(0, iova::SCRATCH, reg::DMA_SIZE, 0)
            .map_err(hal(what))?
        {
            return Err(ScriptError::Timeout("copy the device buffer out"));
        }
        self.cfg
            .write_at(cfg::COMMAND, found.command)
            .map_err(hal(what))?;
        Ok(Saved {
            buffer: self.pages.scratch.buffer().to_vec(),
            ..found
        })
    }

    /// Puts back what [`Session::save`] found. The command register of a
    /// finished transfer can only be set by a transfer, so after the buffer
    /// goes back in (and is checked), a one-byte transfer that leaves the
    /// buffer as it is runs with the found command bits; an interrupt it
    /// raises goes to an eventfd, and interrupts end off.
    fn restore(&self, saved: &Saved) -> Result<(), ScriptError> {
        let what = "put the device back";
        let timeout = ScriptError::Timeout;
        self.set_command(cfg::CMD_BUS_MASTER | cfg::CMD_MEMORY, 0)
            .map_err(hal(what))?;
        let fd = Self::new_eventfd()?;
        self.route_msi(&fd)?;
        let scratch = self.pages.scratch.buffer();
        scratch.write(0, &saved.buffer).map_err(hal(what))?;
        if !self
            .to_device(iova::SCRATCH, 0, reg::DMA_SIZE, 0)
            .map_err(hal(what))?
        {
            return Err(timeout("copy the device buffer back"));
        }
        let dst = self.pages.dst.buffer();
        dst.fill(0);
        if !self
            .to_ram(0, iova::DST, reg::DMA_SIZE, 0)
            .map_err(hal(what))?
        {
            return Err(timeout("check the device buffer"));
        }
        let back = dst.to_vec();
        if let Some(at) =
            (0..back.len().min(saved.buffer.len())).find(|&i| back[i] != saved.buffer[i])
        {
            return Err(ScriptError::BufferNotRestored {
                at,
                found: saved.buffer[at],
                read_back: back[at],
            });
        }
        let cmd = saved.dma[3] & !reg::EDU_DMA_RUN;
        let set = if cmd & reg::EDU_DMA_DIR != 0 {
            self.to_ram(0, iova::SCRATCH, 1, cmd)
        } else {
            self.to_device(iova::SCRATCH, 0, 1, cmd)
        };
        if !set.map_err(hal(what))? {
            return Err(timeout("set the found command bits"));
        }
        let [src, dst, cnt, _] = saved.dma;
        self.w64(reg::DMA_SRC, src).map_err(hal(what))?;
        self.w64(reg::DMA_DST, dst).map_err(hal(what))?;
        self.w64(reg::DMA_CNT, cnt).map_err(hal(what))?;
        // The factorial: some n! gives every finished result (0 is 34!).
        self.w32(reg::STATUS, 0).map_err(hal(what))?;
        if let Some(n) = (0..=34).find(|&n| expected_factorial(n) == saved.factorial) {
            if !self.compute(n).map_err(hal(what))? {
                return Err(timeout("recompute the factorial"));
            }
        }
        self.w32(reg::STATUS, saved.status).map_err(hal(what))?;
        self.w32(reg::LIVENESS, !saved.liveness)
            .map_err(hal(what))?;
        // Interrupt status: raised with MSI routed, so no INTx is left
        // asserted; then interrupts off.
        self.w32(reg::IRQ_ACK, u32::MAX).map_err(hal(what))?;
        if saved.irq_status != 0 {
            self.w32(reg::IRQ_RAISE, saved.irq_status)
                .map_err(hal(what))?;
        }
        self.signals(&fd, u64::from(saved.irq_status != 0))?;
        self.msi.disable().map_err(hal(what))?;
        self.cfg
            .write_at(cfg::COMMAND, saved.command)
            .map_err(hal(what))?;
        Ok(())
    }

    // ---- the traced sections ---------------------------------------------

    /// Puts every register into a known state, whatever an earlier user
    /// left (not traced, but its completions are).
    fn known_state(&mut self) -> Result<(), ScriptError> {
        let what = "set a known state";
        self.set_command(cfg::CMD_BUS_MASTER | cfg::CMD_MEMORY, 0)
            .map_err(hal(what))?;
        self.w32(reg::STATUS, 0).map_err(hal(what))?;
        self.w32(reg::IRQ_ACK, u32::MAX).map_err(hal(what))?;
        self.w32(reg::LIVENESS, 0x1111_1111).map_err(hal(what))?;
        self.pages
            .src
            .buffer()
            .write(0, &pattern(1))
            .map_err(hal(what))?;
        let r = self.to_device(iova::SRC, 0, reg::DMA_SIZE, 0);
        self.see_transfer("known.load", r);
        let r = self.compute(5);
        self.rec("known.factorial_done", Self::done(r.map(drop)));
        self.set_command(0, cfg::CMD_BUS_MASTER)
            .map_err(hal(what))?;
        let regs = self.registers();
        self.rec("known.registers", regs);
        Ok(())
    }

    fn info(&mut self) {
        let info = self.dev.info().clone();
        self.rec("info.kind_pci", Obs::Bool(info.kind() == DeviceKind::Pci));
        self.rec("info.can_reset", Obs::Bool(info.can_reset()));
        self.rec("info.num_regions", Obs::Value(info.num_regions.into()));
        self.rec("info.num_irqs", Obs::Value(info.num_irqs.into()));
        for index in 0..info.num_regions {
            let (size, flags) = match self.dev.region(index) {
                Ok(r) => (Obs::Value(r.info().size), Obs::Value(r.info().flags.into())),
                Err(e) => (Obs::Failed(e.kind()), Obs::Failed(e.kind())),
            };
            self.rec(format!("info.region{index}.size"), size);
            self.rec(format!("info.region{index}.flags"), flags);
        }
        for index in 0..info.num_irqs {
            let (count, flags) = match self.dev.irq(index) {
                Ok(i) => (
                    Obs::Value(i.info().count.into()),
                    Obs::Value(i.info().flags.into()),
                ),
                Err(e) => (Obs::Failed(e.kind()), Obs::Failed(e.kind())),
            };
            self.rec(format!("info.irq{index}.count"), count);
            self.rec(format!("info.irq{index}.flags"), flags);
        }
    }

    fn config(&mut self) -> Result<(), ScriptError> {
        let what = "config space";
        self.see_cfg16("vendor", cfg::VENDOR_ID);
        self.see_cfg16("device", cfg::DEVICE_ID);
        // Command: the bits the script drives. The I/O decode and SERR bits
        // start as firmware and the guest kernel left them (SeaBIOS turns
        // I/O decode on although edu has no I/O BAR): not the device's.
        let command = self.dev.command().map(|c| c & DRIVEN);
        self.rec("cfg.command", Self::obs(command));
        self.see_cfg16("status", cfg::STATUS);
        self.see_cfg8("revision", cfg::REVISION);
        let class = Self::obs(self.dev.class_code());
        self.rec("cfg.class", class);
        self.see_cfg8("cache_line", 0x0c);
        self.see_cfg8("latency", 0x0d);
        self.see_cfg8("header_type", cfg::HEADER_TYPE);
        self.see_cfg8("bist", 0x0f);
        // BAR 0's address is the platform's choice: only its type bits.
        let bar0 = self.cfg.read_at::<u32>(cfg::BAR0);
        self.rec("cfg.bar0_type", Self::obs(bar0.map(|v| v & 0xf)));
        for bar in 1..6u64 {
            self.see_cfg32(&format!("bar{bar}"), cfg::BAR0 + 4 * bar);
        }
        self.see_cfg32("cardbus_cis", 0x28);
        self.see_cfg16("subsystem_vendor", 0x2c);
        self.see_cfg16("subsystem", 0x2e);
        self.see_cfg32("rom", 0x30);
        self.see_cfg8("cap_ptr", cfg::CAP_PTR);
        self.see_cfg8("interrupt_pin", cfg::INTERRUPT_PIN);
        self.see_cfg8("min_gnt", 0x3e);
        self.see_cfg8("max_lat", 0x3f);
        let caps = self.dev.capabilities();
        match &caps {
            Ok(caps) => {
                self.rec("cfg.caps.count", Obs::Value(caps.len() as u64));
                for (i, cap) in caps.iter().enumerate() {
                    let v = (u64::from(cap.id) << 8) | u64::from(cap.offset);
                    self.rec(format!("cfg.caps.{i}.id_offset"), Obs::Value(v));
                }
            }
            Err(e) => self.rec("cfg.caps.count", Obs::Failed(e.kind())),
        }
        let ext = self.dev.extended_capabilities().map(|c| c.len() as u64);
        self.rec("cfg.ext_caps.count", Self::obs(ext));
        let msi = self.dev.find_capability(cfg::CAP_ID_MSI).ok().flatten();
        self.rec("cfg.msi.present", Obs::Bool(msi.is_some()));
        if let Some(cap) = msi {
            let control = self.msi_control();
            self.rec("cfg.msi.control", control);
            // Address and data are the kernel's (its interrupt remapping
            // format, virtualized by vfio-pci): not compared.
            let fd = Self::new_eventfd()?;
            self.route_msi(&fd)?;
            let control = self.msi_control();
            self.rec("cfg.msi.control_routed", control);
            // A user write of the enable bit: vfio-pci keeps it virtual.
            let at = u64::from(cap.offset) + 2;
            let w = self.cfg.write_at::<u16>(at, 0);
            self.rec("cfg.msi.write_control", Self::done(w));
            let control = self.msi_control();
            self.rec("cfg.msi.control_after_write", control);
            if let Obs::Value(found) = self.rec_value("cfg.msi.control") {
                self.cfg
                    .write_at::<u16>(at, found as u16)
                    .map_err(hal("write the MSI control back"))?;
            }
            self.msi.disable().map_err(hal("disable MSI"))?;
            let control = self.msi_control();
            self.rec("cfg.msi.control_disabled", control);
        }
        // Command bits written and read back, each on its own.
        let command_bits = [
            ("bus_master", cfg::CMD_BUS_MASTER),
            ("intx_disable", cfg::CMD_INTX_DISABLE),
            ("serr", CMD_SERR),
            ("parity", CMD_PARITY),
        ];
        for (name, bits) in command_bits {
            let set = self.set_command(bits, 0).and_then(|_| self.dev.command());
            self.rec(
                format!("cfg.command.set_{name}"),
                Self::obs(set.map(|c| c & bits)),
            );
            let clear = self.set_command(0, bits).and_then(|_| self.dev.command());
            self.rec(
                format!("cfg.command.clear_{name}"),
                Self::obs(clear.map(|c| c & bits)),
            );
        }
        let off = self
            .set_command(0, cfg::CMD_MEMORY)
            .and_then(|_| self.dev.command())
            .map(|c| c & DRIVEN);
        self.rec("cfg.command.clear_memory", Self::obs(off));
        self.see32("cfg.decode_off.bar0_id", reg::ID);
        let w = self.w32(reg::LIVENESS, 0x2222_2222);
        self.rec("cfg.decode_off.bar0_write", Self::done(w));
        let on = self
            .set_command(cfg::CMD_MEMORY, 0)
            .and_then(|_| self.dev.command())
            .map(|c| c & DRIVEN);
        self.rec("cfg.command.set_memory", Self::obs(on));
        self.see32("cfg.decode_on.bar0_id", reg::ID);
        self.see32("cfg.decode_on.liveness", reg::LIVENESS);
        // Status: its error bits are write-1-to-clear; none is set.
        let w = self.cfg.write_at::<u16>(cfg::STATUS, 0xffff);
        self.rec("cfg.status.write_ones", Self::done(w));
        self.see_cfg16("status.after_write", cfg::STATUS);
        // BAR sizing: all ones in, the size mask out, the address back.
        let saved = self.cfg.read_at::<u32>(cfg::BAR0).map_err(hal(what))?;
        for (name, at, ones) in [
            ("bar0", cfg::BAR0, u32::MAX),
            ("bar1", cfg::BAR0 + 4, u32::MAX),
            ("rom", 0x30, 0xffff_f800),
        ] {
            let old = self.cfg.read_at::<u32>(at).map_err(hal(what))?;
            let sized = self
                .cfg
                .write_at(at, ones)
                .and_then(|()| self.cfg.read_at::<u32>(at));
            self.rec(format!("cfg.sizing.{name}"), Self::obs(sized));
            self.cfg.write_at(at, old).map_err(hal(what))?;
        }
        let back = self.cfg.read_at::<u32>(cfg::BAR0).map_err(hal(what))?;
        self.rec("cfg.sizing.bar0_restored", Obs::Bool(back == saved));
        // The interrupt line is the platform's routing; a write reads back.
        let line = self.cfg.read_at::<u8>(0x3c).map_err(hal(what))?;
        let written = self
            .cfg
            .write_at::<u8>(0x3c, 0x5a)
            .and_then(|()| self.cfg.read_at::<u8>(0x3c));
        self.rec("cfg.interrupt_line.write", Self::obs(written));
        self.cfg.write_at::<u8>(0x3c, line).map_err(hal(what))?;
        Ok(())
    }

    /// Every offset from 0 to 0x9f at every width, the unlisted offsets,
    /// and the misaligned accesses.
    fn reads(&mut self) {
        for width in [1usize, 2, 4, 8] {
            for off in (0..0xa0u64).step_by(width) {
                let obs = Self::obs(self.bar.read_scalar(off, width));
                self.rec(format!("bar0.r{width}@{off:#04x}"), obs);
            }
        }
        for &off in UNLISTED {
            for width in [4usize, 8] {
                let obs = Self::obs(self.bar.read_scalar(off, width));
                self.rec(format!("bar0.r{width}@{off:#x}"), obs);
            }
        }
        for &(off, len) in MISALIGNED {
            let mut buf = vec![0u8; len];
            let obs = match self.bar.read(off, &mut buf) {
                Ok(()) => Obs::Bytes(buf),
                Err(e) => Obs::Failed(e.kind()),
            };
            self.rec(format!("bar0.read{len}@{off:#x}"), obs);
        }
        let regs = self.registers();
        self.rec("bar0.registers_after_reads", regs);
    }

    /// A write at every offset and width, each followed by every
    /// register's value; the known state is put back after a write that
    /// changed something.
    fn writes(&mut self) -> Result<(), ScriptError> {
        let known = self.registers();
        let mut accesses: Vec<(u64, usize)> = Vec::new();
        for width in [1usize, 2, 4, 8] {
            accesses.extend((0..0xa0u64).step_by(width).map(|off| (off, width)));
        }
        for &off in UNLISTED {
            accesses.extend([(off, 4), (off, 8)]);
        }
        for (off, width) in accesses {
            if SWEEP_SKIP_WRITE.contains(&(off, width)) {
                continue;
            }
            let w = self.bar.write_scalar(off, width, sweep_value(off));
            self.rec(format!("bar0.w{width}@{off:#x}"), Self::done(w));
            // A factorial write starts work: wait for it before looking.
            self.factorial_idle(self.opts.timeout);
            let regs = self.registers();
            let changed = regs != known;
            self.rec(format!("bar0.w{width}@{off:#x}.registers"), regs);
            if changed {
                self.back_to_known()?;
            }
        }
        for &(off, len) in MISALIGNED {
            // High halves that land on the factorial or the command are
            // small or even: no long factorial, no transfer.
            let value: u64 = 0x0000_0006_1234_5678;
            let bytes = value.to_le_bytes();
            let data: Vec<u8> = (0..len).map(|i| bytes[i % 8]).collect();
            let w = self.bar.write(off, &data);
            self.rec(format!("bar0.write{len}@{off:#x}"), Self::done(w));
            self.factorial_idle(self.opts.timeout);
            let regs = self.registers();
            let changed = regs != known;
            self.rec(format!("bar0.write{len}@{off:#x}.registers"), regs);
            if changed {
                self.back_to_known()?;
            }
        }
        Ok(())
    }

    /// The known state of [`Session::known_state`] again, for the registers
    /// a write sweep can change.
    fn back_to_known(&mut self) -> Result<(), ScriptError> {
        let what = "back to the known state";
        self.w32(reg::STATUS, 0).map_err(hal(what))?;
        self.w32(reg::LIVENESS, 0x1111_1111).map_err(hal(what))?;
        if !self.compute(5).map_err(hal(what))? {
            return Err(ScriptError::Timeout("factorial of 5"));
        }
        self.w64(reg::DMA_SRC, iova::SRC).map_err(hal(what))?;
        self.w64(reg::DMA_DST, reg::DMA_START).map_err(hal(what))?;
        self.w64(reg::DMA_CNT, reg::DMA_SIZE).map_err(hal(what))?;
        self.w32(reg::IRQ_ACK, u32::MAX).map_err(hal(what))?;
        Ok(())
    }

    fn liveness(&mut self) {
        for x in [0u32, u32::MAX, 0x1234_5678, 0x8000_0001] {
            let w = self.w32(reg::LIVENESS, x);
            self.rec(format!("live.write_{x:#x}"), Self::done(w));
            self.see32(format!("live.read_{x:#x}"), reg::LIVENESS);
        }
    }

    fn factorial(&mut self) -> Result<(), ScriptError> {
        for n in [0u32, 1, 2, 5, 12, 13, 20, 33, 34, 35] {
            let done = self.compute(n);
            self.rec(format!("fact.{n}.done"), Self::done(done.map(drop)));
            self.see32(format!("fact.{n}.result"), reg::FACTORIAL);
            self.see32(format!("fact.{n}.status"), reg::STATUS);
        }
        // The busy device: a long computation, a write while it runs.
        if let Some(hold) = self.opts.hold_time {
            hold(true);
        }
        let w = self.w32(reg::FACTORIAL, BUSY_FACTORIAL);
        self.rec("fact.busy.start", Self::done(w));
        self.see32("fact.busy.status", reg::STATUS);
        self.see32("fact.busy.reads_input", reg::FACTORIAL);
        let w = self.w32(reg::FACTORIAL, 5);
        self.rec("fact.busy.write_while_computing", Self::done(w));
        self.see32("fact.busy.still_input", reg::FACTORIAL);
        if let Some(hold) = self.opts.hold_time {
            hold(false);
        }
        let idle = self.factorial_idle(self.opts.timeout * 6);
        self.rec("fact.busy.finished", Obs::Bool(idle));
        self.see32("fact.busy.result", reg::FACTORIAL);
        self.see32("fact.busy.status_after", reg::STATUS);
        // The status register: bit 7 read-write, bit 0 read-only.
        for v in [0x80u32, 0x81, 0x01, 0xffff_ffff, 0] {
            let w = self.w32(reg::STATUS, v);
            self.rec(format!("fact.status.write_{v:#x}"), Self::done(w));
            self.see32(format!("fact.status.read_{v:#x}"), reg::STATUS);
        }
        // Interrupt on completion, counted on an MSI eventfd.
        self.set_command(cfg::CMD_BUS_MASTER, 0)
            .map_err(hal("bus master"))?;
        let fd = Self::new_eventfd()?;
        self.route_msi(&fd)?;
        for (name, status, expect) in [("irqfact", reg::EDU_STATUS_IRQFACT, 1), ("plain", 0, 0)] {
            let w = self.w32(reg::STATUS, status);
            self.rec(format!("fact.{name}.status_write"), Self::done(w));
            let done = self.compute(4);
            self.rec(format!("fact.{name}.done"), Self::done(done.map(drop)));
            self.see_signals(format!("fact.{name}.signals"), &fd, expect)?;
            self.see32(format!("fact.{name}.irq_status"), reg::IRQ_STATUS);
            self.see32(format!("fact.{name}.result"), reg::FACTORIAL);
            let w = self.w32(reg::IRQ_ACK, reg::FACT_IRQ);
            self.rec(format!("fact.{name}.ack"), Self::done(w));
            self.see32(format!("fact.{name}.irq_status_acked"), reg::IRQ_STATUS);
        }
        self.w32(reg::STATUS, 0).map_err(hal("status"))?;
        self.msi.disable().map_err(hal("disable MSI"))?;
        self.set_command(0, cfg::CMD_BUS_MASTER)
            .map_err(hal("bus master"))?;
        Ok(())
    }

    /// Raise, status, acknowledge with MSI on an eventfd, one raise at a
    /// time (MSIs back to back may coalesce); MSI with bus mastering off;
    /// the loopback trigger.
    fn interrupts(&mut self) -> Result<(), ScriptError> {
        self.set_command(cfg::CMD_BUS_MASTER, 0)
            .map_err(hal("bus master"))?;
        let fd = Self::new_eventfd()?;
        self.route_msi(&fd)?;
        let w = self.w32(reg::IRQ_ACK, u32::MAX);
        self.rec("msi.ack_all", Self::done(w));
        self.see32("msi.irq_status_clear", reg::IRQ_STATUS);
        // (raise or ack, bits, expected signals)
        let plan: [(&str, u32, u64); 12] = [
            ("raise", 0x1, 1),
            ("raise", 0x2, 1),
            ("ack", 0x1, 0),
            ("ack", 0x2, 0),
            ("raise", 0x0, 0),
            ("raise", 0x4, 1),
            ("raise", 0x0, 1),
            ("ack", 0x8, 0),
            ("ack", 0x4, 0),
            ("raise", 0x8000_0000, 1),
            ("raise", 0x100, 1),
            ("ack", u32::MAX, 0),
        ];
        for (i, (op, bits, expect)) in plan.into_iter().enumerate() {
            let offset = if op == "raise" {
                reg::IRQ_RAISE
            } else {
                reg::IRQ_ACK
            };
            let w = self.w32(offset, bits);
            let id = format!("msi.{i}.{op}_{bits:#x}");
            self.rec(id.clone(), Self::done(w));
            self.see_signals(format!("{id}.signals"), &fd, expect)?;
            self.see32(format!("{id}.irq_status"), reg::IRQ_STATUS);
        }
        // An MSI is a memory write by the device: none without bus mastering.
        self.set_command(0, cfg::CMD_BUS_MASTER)
            .map_err(hal("bus master"))?;
        let w = self.w32(reg::IRQ_RAISE, 1);
        self.rec("msi.no_master.raise", Self::done(w));
        self.see_signals("msi.no_master.signals", &fd, 0)?;
        self.see32("msi.no_master.irq_status", reg::IRQ_STATUS);
        self.set_command(cfg::CMD_BUS_MASTER, 0)
            .map_err(hal("bus master"))?;
        self.see_signals("msi.master_again.signals", &fd, 0)?;
        let w = self.w32(reg::IRQ_ACK, 1);
        self.rec("msi.master_again.ack", Self::done(w));
        let t = self.msi.trigger(0, 1);
        self.rec("msi.loopback", Self::done(t));
        self.see_signals("msi.loopback.signals", &fd, 1)?;
        // Unrouted: the old eventfd hears nothing.
        let d = self.msi.set_eventfd(0, None);
        self.rec("msi.deassign", Self::done(d));
        let w = self.w32(reg::IRQ_RAISE, 1);
        self.rec("msi.deassigned.raise", Self::done(w));
        self.see_signals("msi.deassigned.signals", &fd, 0)?;
        self.see32("msi.deassigned.irq_status", reg::IRQ_STATUS);
        let w = self.w32(reg::IRQ_ACK, 1);
        self.rec("msi.deassigned.ack", Self::done(w));
        self.msi.disable().map_err(hal("disable MSI"))?;
        let control = self.msi_control();
        self.rec("msi.control_disabled", control);
        Ok(())
    }

    /// INTx on an eventfd: automasked when it fires, explicit mask and
    /// unmask, the config status register's interrupt bit.
    fn intx(&mut self) -> Result<(), ScriptError> {
        const STATUS_INTERRUPT: u16 = 1 << 3;
        let fd = Self::new_eventfd()?;
        let r = self.intx.set_eventfd(0, Some(fd.as_fd()));
        let routed = r.is_ok();
        self.rec("intx.route", Self::done(r));
        if !routed {
            return Ok(());
        }
        let w = self.w32(reg::IRQ_ACK, u32::MAX);
        self.rec("intx.ack_all", Self::done(w));
        let pending = |s: &Self| s.cfg16(cfg::STATUS).map(|v| v & STATUS_INTERRUPT);
        let plan: [(&str, u32, u64); 12] = [
            ("raise", 1, 1),
            ("raise", 2, 0),
            ("ack", 3, 0),
            ("unmask", 0, 0),
            ("raise", 1, 1),
            ("ack", 1, 0),
            ("unmask", 0, 0),
            ("mask", 0, 0),
            ("raise", 1, 0),
            ("unmask", 0, 1),
            ("ack", 1, 0),
            ("unmask", 0, 0),
        ];
        for (i, (op, bits, expect)) in plan.into_iter().enumerate() {
            let r = match op {
                "raise" => self.w32(reg::IRQ_RAISE, bits),
                "ack" => self.w32(reg::IRQ_ACK, bits),
                "mask" => self.intx.mask(0, 1),
                _ => self.intx.unmask(0, 1),
            };
            let id = format!("intx.{i}.{op}_{bits:#x}");
            self.rec(id.clone(), Self::done(r));
            self.see_signals(format!("{id}.signals"), &fd, expect)?;
            self.see32(format!("{id}.irq_status"), reg::IRQ_STATUS);
            let bit = Self::obs(pending(self));
            self.rec(format!("{id}.cfg_status_interrupt"), bit);
        }
        let d = self.intx.disable();
        self.rec("intx.disable", Self::done(d));
        let w = self.w32(reg::IRQ_ACK, u32::MAX);
        self.rec("intx.final_ack", Self::done(w));
        Ok(())
    }

    fn dma(&mut self) -> Result<(), ScriptError> {
        let what = "DMA pages";
        let pages = self.pages;
        let (src, dst, ro) = (pages.src.buffer(), pages.dst.buffer(), pages.ro.buffer());
        src.write(0, &pattern(2)).map_err(hal(what))?;
        ro.fill(0x33);
        dst.fill(0);
        self.set_command(cfg::CMD_BUS_MASTER, 0)
            .map_err(hal("bus master"))?;
        // A whole page in, and out again.
        let r = self.to_device(iova::SRC, 0, reg::DMA_SIZE, 0);
        self.see_transfer("dma.full_in", r);
        self.see64("dma.full_in.cmd", reg::DMA_CMD);
        self.see_buffer("full");
        self.see64("dma.full.cmd", reg::DMA_CMD);
        let regs = self.registers();
        self.rec("dma.full.registers", regs);
        // Parts: into the middle of the buffer, from a misaligned IOVA, an
        // odd length, out to a misaligned IOVA.
        let r = self.to_device(iova::SRC + 0x100, 0x200, 16, 0);
        self.see_transfer("dma.part_in", r);
        let r = self.to_device(iova::SRC + 3, 0x7ff, 61, 0);
        self.see_transfer("dma.odd_in", r);
        self.see_buffer("parts");
        dst.fill(0);
        let r = self.to_ram(0x7fd, iova::DST + 5, 0x33, 0);
        self.see_transfer("dma.odd_out", r);
        self.rec("dma.odd_out.dst", Obs::Bytes(dst.to_vec()));
        // RAM addresses are masked to 28 bits.
        let r = self.to_device(iova::SRC | (1 << 28), 0x10, 8, 0);
        self.see_transfer("dma.masked_in", r);
        self.see64("dma.masked_in.src", reg::DMA_SRC);
        self.see_buffer("masked");
        // Faults: from and to an unmapped IOVA, to a read-only page, and
        // across the end of a mapped page into an unmapped one.
        let r = self.to_device(iova::SRC, 0, reg::DMA_SIZE, 0);
        self.see_transfer("dma.reload", r);
        let r = self.to_device(iova::UNMAPPED, 0, 64, 0);
        self.see_transfer("dma.from_unmapped", r);
        self.see_buffer("from_unmapped");
        dst.fill(0x44);
        let r = self.to_ram(0, iova::UNMAPPED, 64, 0);
        self.see_transfer("dma.to_unmapped", r);
        self.rec("dma.to_unmapped.dst", Obs::Bytes(dst.to_vec()));
        let r = self.to_ram(0, iova::RO, 64, 0);
        self.see_transfer("dma.to_read_only", r);
        self.rec("dma.to_read_only.page", Obs::Bytes(ro.to_vec()));
        dst.write(0, &pattern(3)).map_err(hal(what))?;
        let r = self.to_device(iova::SRC, 0, reg::DMA_SIZE, 0);
        self.see_transfer("dma.reload2", r);
        let r = self.to_device(iova::DST + iova::PAGE - 32, 0x100, 64, 0);
        self.see_transfer("dma.across_in", r);
        self.see_buffer("across_in");
        dst.fill(0x55);
        let r = self.to_ram(0x100, iova::DST + iova::PAGE - 32, 64, 0);
        self.see_transfer("dma.across_out", r);
        self.rec("dma.across_out.dst", Obs::Bytes(dst.to_vec()));
        // The completion interrupt.
        let fd = Self::new_eventfd()?;
        self.route_msi(&fd)?;
        self.w32(reg::IRQ_ACK, u32::MAX).map_err(hal("ack"))?;
        let r = self.to_ram(0, iova::DST, 16, reg::EDU_DMA_IRQ);
        self.see_transfer("dma.irq", r);
        self.see_signals("dma.irq.signals", &fd, 1)?;
        self.see32("dma.irq.irq_status", reg::IRQ_STATUS);
        self.see64("dma.irq.cmd", reg::DMA_CMD);
        let w = self.w32(reg::IRQ_ACK, reg::DMA_IRQ);
        self.rec("dma.irq.ack", Self::done(w));
        self.see32("dma.irq.irq_status_acked", reg::IRQ_STATUS);
        // Bus mastering off: nothing reaches memory, the device still
        // completes, its interrupt (an MSI: a memory write) is lost.
        let r = self.to_device(iova::SRC, 0, reg::DMA_SIZE, 0);
        self.see_transfer("dma.reload3", r);
        self.set_command(0, cfg::CMD_BUS_MASTER)
            .map_err(hal("bus master"))?;
        let r = self.to_device(iova::SRC + 0x800, 0, 64, 0);
        self.see_transfer("dma.no_master_in", r);
        dst.fill(0x66);
        let r = self.to_ram(0x40, iova::DST, 64, reg::EDU_DMA_IRQ);
        self.see_transfer("dma.no_master_out", r);
        self.see_signals("dma.no_master_out.signals", &fd, 0)?;
        self.see32("dma.no_master_out.irq_status", reg::IRQ_STATUS);
        self.rec("dma.no_master_out.dst", Obs::Bytes(dst.to_vec()));
        self.set_command(cfg::CMD_BUS_MASTER, 0)
            .map_err(hal("bus master"))?;
        self.w32(reg::IRQ_ACK, u32::MAX).map_err(hal("ack"))?;
        self.see_buffer("no_master");
        self.msi.disable().map_err(hal("disable MSI"))?;
        self.set_command(0, cfg::CMD_BUS_MASTER)
            .map_err(hal("bus master"))?;
        Ok(())
    }

    /// `Device::reset` where the device offers it; edu's registers before
    /// and after.
    fn reset(&mut self) -> Result<(), ScriptError> {
        let what = "before the reset";
        self.w32(reg::LIVENESS, 0x0bad_cafe).map_err(hal(what))?;
        self.w32(reg::STATUS, reg::EDU_STATUS_IRQFACT)
            .map_err(hal(what))?;
        self.set_command(cfg::CMD_BUS_MASTER, 0)
            .map_err(hal(what))?;
        let before = self.registers();
        self.rec("reset.registers_before", before);
        let r = self.dev.reset();
        self.rec("reset.result", Self::done(r));
        let after = self.registers();
        self.rec("reset.registers_after", after);
        let cmd = Self::obs(self.dev.command().map(|c| c & DRIVEN));
        self.rec("reset.command_after", cmd);
        self.w32(reg::STATUS, 0).map_err(hal("status"))?;
        self.set_command(0, cfg::CMD_BUS_MASTER)
            .map_err(hal("bus master"))?;
        Ok(())
    }

    /// Markers the reopen looks for: vfio-pci tries a reset on close.
    fn before_close(&mut self) {
        let w = self.w32(reg::LIVENESS, 0x5eed_0001);
        self.rec("reopen.marker", Self::done(w));
        let regs = self.registers();
        self.rec("reopen.registers_at_close", regs);
    }

    fn after_reopen(&mut self) {
        let regs = self.registers();
        self.rec("reopen.registers", regs);
        let cmd = Self::obs(self.dev.command().map(|c| c & cfg::CMD_BUS_MASTER));
        self.rec("reopen.bus_master", cmd);
        let control = self.msi_control();
        self.rec("reopen.msi_control", control);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(id: &str, v: u64) -> Step {
        Step {
            id: id.to_owned(),
            obs: Obs::Value(v),
        }
    }

    #[test]
    fn diff_lists_changed_missing_and_misplaced_steps() {
        let a = Trace {
            steps: vec![step("x.a", 1), step("x.b", 2), step("x.c", 3)],
        };
        let b = Trace {
            steps: vec![step("x.a", 1), step("x.b", 9)],
        };
        let d = a.diff(&b);
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(d[0].step(), Some("x.b"));
        assert_eq!((d[1].index, d[1].right.is_none()), (2, true));
        assert!(a.diff(&a).is_empty());
        assert_eq!(a.sections(), vec![("x", 3)]);
    }

    #[test]
    fn deviations_match_exact_ids_and_prefixes() {
        let exact = Deviation {
            step: "reset.result",
            why: "",
        };
        let prefix = Deviation {
            step: "info.region0.*",
            why: "",
        };
        assert!(exact.covers("reset.result") && !exact.covers("reset.result2"));
        assert!(prefix.covers("info.region0.flags") && !prefix.covers("info.region1.flags"));
    }

    #[test]
    fn bytes_show_their_first_difference() {
        let d = Difference {
            index: 4,
            left: Some(Step {
                id: "d".into(),
                obs: Obs::Bytes(vec![1, 2, 3]),
            }),
            right: Some(Step {
                id: "d".into(),
                obs: Obs::Bytes(vec![1, 2, 0]),
            }),
        };
        let text = d.to_string();
        assert!(text.contains("first difference at byte 2"), "{text}");
    }
}
