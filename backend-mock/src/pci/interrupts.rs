//! vfio-pci's interrupt semantics: the `SET_IRQS` state machine and eventfd delivery.
//!
//! Mirrors `drivers/vfio/pci/vfio_pci_intrs.c`:
//! - One interrupt mode at a time: INTx, MSI or MSI-X. Setting up a trigger
//!   on one while another is enabled is `EINVAL`; so is any other request on
//!   an index that is not enabled (a loopback trigger, a mask, even a
//!   disable).
//! - INTx is level triggered and automasked: when the line is asserted and
//!   not masked, the kernel masks it and signals the trigger eventfd. Unmask
//!   (an `UNMASK` request, or a write to the resample eventfd) re-signals
//!   instead when the line is still asserted. The command register's INTx
//!   disable bit masks as well.
//! - MSI/MSI-X vectors are allocated when the index is first enabled
//!   (`start + count` of them) and cannot grow afterwards (`NORESIZE`).
//!   A vector routed to `-1` stays allocated and silent.
//! - ERR and REQ take one eventfd each; a loopback trigger fires it.
//! - An MSI/MSI-X message sent with bus mastering off is dropped (it is a
//!   memory write by the device). The kernel says nothing; the mock logs a
//!   warning the first time a route loses a message this way, since a driver
//!   waiting on that eventfd would otherwise get no hint.
//!
//! Delivery writes a u64 1 to our dup of the eventfd, as `eventfd_signal` does.

use vfio_hal::irq::{flags, index};
use vfio_hal::{Error, IrqAction, IrqData, IrqInfo, IrqSet, Result, Target};

use crate::sys::EventRoute;

const OP: &str = "VFIO_DEVICE_SET_IRQS";

/// Which interrupt mode is enabled (vfio-pci's `irq_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IrqMode {
    /// Nothing enabled.
    None,
    /// Legacy INTx.
    Intx,
    /// MSI.
    Msi,
    /// MSI-X.
    Msix,
}

#[derive(Debug, Default)]
struct Intx {
    trigger: Option<EventRoute>,
    resample: Option<EventRoute>,
    /// Automasked or masked by request (vfio's `ctx->masked`).
    masked: bool,
    /// The device's interrupt line.
    line: bool,
    /// The command register's INTx disable bit (vfio's `virq_disabled`).
    virq_disabled: bool,
}

#[derive(Debug)]
pub(crate) struct Interrupts {
    infos: [IrqInfo; 5],
    mode: IrqMode,
    intx: Intx,
    /// MSI or MSI-X vector routes; the length is the allocated count.
    vectors: Vec<Option<MsiRoute>>,
    /// MSI-X pending bits: messages of allocated vectors with no eventfd.
    msix_pending: Vec<bool>,
    err: Option<EventRoute>,
    req: Option<EventRoute>,
}

/// One MSI/MSI-X vector's eventfd, and whether it has already warned of a
/// message dropped with bus mastering off (re-routing starts afresh).
#[derive(Debug)]
struct MsiRoute {
    eventfd: EventRoute,
    warned_without_bus_master: bool,
}

impl MsiRoute {
    fn signal(&self) {
        self.eventfd.signal();
    }
}

fn einval(index: u32) -> Error {
    Error::sys(OP, Target::Irq(index), libc::EINVAL)
}

fn enotty(index: u32) -> Error {
    Error::sys(OP, Target::Irq(index), libc::ENOTTY)
}

/// The first bool of a `DATA_BOOL` request (validated non-empty), or true for `DATA_NONE`.
fn first_bool(data: &IrqData<'_>) -> bool {
    match data {
        IrqData::Bool(b) => b.first().copied().unwrap_or(false),
        _ => true,
    }
}

impl Interrupts {
    /// The irq table as vfio-pci reports it for a function with these resources.
    pub(crate) fn new(intx: bool, msi: u32, msix: u32, pcie: bool) -> Self {
        let info = |index, flags, count| IrqInfo {
            index,
            flags,
            count,
        };
        let noresize = flags::EVENTFD | flags::NORESIZE;
        Self {
            infos: [
                info(
                    index::INTX,
                    flags::EVENTFD | flags::MASKABLE | flags::AUTOMASKED,
                    u32::from(intx),
                ),
                info(index::MSI, noresize, msi),
                info(index::MSIX, noresize, msix),
                // vfio-pci answers ERR only for PCI Express (EINVAL otherwise,
                // which the kernel backends report as count 0, no flags).
                info(index::ERR, if pcie { noresize } else { 0 }, u32::from(pcie)),
                info(index::REQ, noresize, 1),
            ],
            mode: IrqMode::None,
            intx: Intx::default(),
            vectors: Vec::new(),
            msix_pending: vec![false; msix as usize],
            err: None,
            req: None,
        }
    }

    pub(crate) fn infos(&self) -> &[IrqInfo; 5] {
        &self.infos
    }

    pub(crate) fn mode(&self) -> IrqMode {
        self.mode
    }

    pub(crate) fn intx_line(&self) -> bool {
        self.intx.line
    }

    /// Closes every route and returns to no mode (device close, unplug).
    pub(crate) fn teardown(&mut self) {
        self.mode = IrqMode::None;
        let line = self.intx.line;
        self.intx = Intx {
            line,
            ..Intx::default()
        };
        self.vectors.clear();
        self.msix_pending.fill(false);
        self.err = None;
        self.req = None;
    }

    /// Function reset: the device lowers its line and forgets pending
    /// messages; routes stay (vfio-pci restores the MSI state after FLR).
    pub(crate) fn device_reset(&mut self) {
        self.intx.line = false;
        self.msix_pending.fill(false);
    }

    /// One `SET_IRQS` request.
    pub(crate) fn set_irqs(&mut self, set: &IrqSet<'_>) -> Result<()> {
        let info = self
            .infos
            .get(set.index as usize)
            .copied()
            .ok_or_else(|| einval(set.index))?;
        set.validate(&info)?;
        self.poll_resample();
        match (set.index, set.action) {
            (index::INTX, IrqAction::Mask) => self.intx_mask_request(set),
            (index::INTX, IrqAction::Unmask) => self.intx_unmask_request(set),
            (index::INTX, IrqAction::Trigger) => self.intx_trigger_request(set),
            (index::MSI | index::MSIX, IrqAction::Trigger) => self.msi_trigger_request(set),
            (index::ERR, IrqAction::Trigger) if info.count > 0 => {
                Self::single_trigger(&mut self.err, set)
            }
            (index::REQ, IrqAction::Trigger) => Self::single_trigger(&mut self.req, set),
            _ => Err(enotty(set.index)),
        }
    }

    // ---- INTx ------------------------------------------------------------

    fn intx_mask_request(&mut self, set: &IrqSet<'_>) -> Result<()> {
        if self.mode != IrqMode::Intx || set.start != 0 || set.count != 1 {
            return Err(einval(set.index));
        }
        match set.data {
            IrqData::EventFd(_) => Err(enotty(set.index)),
            data => {
                if first_bool(&data) {
                    self.intx.masked = true;
                }
                Ok(())
            }
        }
    }

    fn intx_unmask_request(&mut self, set: &IrqSet<'_>) -> Result<()> {
        if self.mode != IrqMode::Intx || set.start != 0 || set.count != 1 {
            return Err(einval(set.index));
        }
        match set.data {
            IrqData::EventFd(fds) => {
                self.intx.resample = match fds.first().copied().flatten() {
                    Some(fd) => Some(EventRoute::dup(OP, &Target::Irq(set.index), fd)?),
                    None => None,
                };
                // A resample fd that is already signalled unmasks at once (virqfd does too).
                self.poll_resample();
                Ok(())
            }
            data => {
                if first_bool(&data) {
                    self.intx_unmask();
                }
                Ok(())
            }
        }
    }

    fn intx_trigger_request(&mut self, set: &IrqSet<'_>) -> Result<()> {
        if self.mode == IrqMode::Intx && set.count == 0 && matches!(set.data, IrqData::None) {
            self.intx_disable();
            return Ok(());
        }
        if !matches!(self.mode, IrqMode::Intx | IrqMode::None) || set.start != 0 || set.count != 1 {
            return Err(einval(set.index));
        }
        if let IrqData::EventFd(fds) = set.data {
            let trigger = match fds.first().copied().flatten() {
                Some(fd) => Some(EventRoute::dup(OP, &Target::Irq(set.index), fd)?),
                None => None,
            };
            if self.mode == IrqMode::Intx {
                self.intx.trigger = trigger;
            } else {
                self.mode = IrqMode::Intx;
                self.intx.trigger = trigger;
                self.intx.masked = self.intx.virq_disabled;
            }
            // A line already asserted fires as soon as the handler is installed.
            self.intx_service();
            return Ok(());
        }
        if self.mode != IrqMode::Intx {
            return Err(einval(set.index));
        }
        if first_bool(&set.data) {
            self.intx_send();
        }
        Ok(())
    }

    fn intx_disable(&mut self) {
        self.mode = IrqMode::None;
        self.intx.trigger = None;
        self.intx.resample = None;
        self.intx.masked = false;
    }

    /// `vfio_send_intx_eventfd`.
    fn intx_send(&self) {
        if self.mode == IrqMode::Intx && !self.intx.virq_disabled {
            if let Some(t) = &self.intx.trigger {
                t.signal();
            }
        }
    }

    /// The hard-irq handler: an asserted, unmasked line is masked and signalled.
    fn intx_service(&mut self) {
        if self.mode == IrqMode::Intx && self.intx.line && !self.intx.masked {
            self.intx.masked = true;
            self.intx_send();
        }
    }

    /// `vfio_pci_intx_mask`: masks an enabled, unmasked INTx; true if it did.
    pub(crate) fn intx_mask(&mut self) -> bool {
        let masks = self.mode == IrqMode::Intx && !self.intx.masked;
        if masks {
            self.intx.masked = true;
        }
        masks
    }

    /// `vfio_pci_intx_unmask_handler`: a line still asserted re-sends and stays masked.
    pub(crate) fn intx_unmask(&mut self) {
        if self.mode == IrqMode::Intx && self.intx.masked && !self.intx.virq_disabled {
            if self.intx.line {
                self.intx_send();
            } else {
                self.intx.masked = false;
            }
        }
    }

    /// Whether an INTx resample eventfd is routed (and must be polled on
    /// every access).
    pub(crate) fn resample_routed(&self) -> bool {
        self.intx.resample.is_some()
    }

    /// Unmasks if the resample eventfd was written since the last look.
    #[inline]
    pub(crate) fn poll_resample(&mut self) {
        let fired = self.intx.resample.as_ref().is_some_and(EventRoute::consume);
        if fired {
            self.intx_unmask();
        }
    }

    /// The device drives its INTx line.
    pub(crate) fn set_intx_line(&mut self, asserted: bool) {
        self.poll_resample();
        self.intx.line = asserted;
        self.intx_service();
    }

    /// The command register's INTx disable bit changed.
    pub(crate) fn set_intx_disable(&mut self, disabled: bool) {
        if disabled == self.intx.virq_disabled {
            return;
        }
        if disabled {
            self.intx.virq_disabled = true;
            if self.mode == IrqMode::Intx {
                self.intx.masked = true;
            }
        } else {
            self.intx.virq_disabled = false;
            self.intx_unmask();
        }
    }

    // ---- MSI / MSI-X -----------------------------------------------------

    fn msi_trigger_request(&mut self, set: &IrqSet<'_>) -> Result<()> {
        let want = if set.index == index::MSIX {
            IrqMode::Msix
        } else {
            IrqMode::Msi
        };
        if self.mode == want && set.count == 0 && matches!(set.data, IrqData::None) {
            self.msi_disable();
            return Ok(());
        }
        if !(self.mode == want || self.mode == IrqMode::None) {
            return Err(einval(set.index));
        }
        if let IrqData::EventFd(fds) = set.data {
            if self.mode == want {
                return self.msi_set_block(set.index, set.start, fds);
            }
            // Enabling allocates start + count vectors (validated against the count).
            self.mode = want;
            self.vectors = (0..set.start + set.count).map(|_| None).collect();
            let result = self.msi_set_block(set.index, set.start, fds);
            if result.is_err() {
                self.msi_disable();
            }
            return result;
        }
        if self.mode != want {
            return Err(einval(set.index));
        }
        for i in set.start..set.start.saturating_add(set.count) {
            let fire = match set.data {
                IrqData::Bool(b) => b.get((i - set.start) as usize).copied().unwrap_or(false),
                _ => true,
            };
            if let (true, Some(Some(t))) = (fire, self.vectors.get(i as usize)) {
                t.signal();
            }
        }
        Ok(())
    }

    /// `vfio_msi_set_block`: routes vectors; fails past the allocated count
    /// (NORESIZE). On a bad fd at vector j, vectors `start..=j` end up
    /// de-assigned, as in the kernel.
    fn msi_set_block(
        &mut self,
        irq: u32,
        start: u32,
        fds: &[Option<std::os::fd::BorrowedFd<'_>>],
    ) -> Result<()> {
        let start = start as usize;
        if start + fds.len() > self.vectors.len() {
            return Err(einval(irq));
        }
        for (i, fd) in fds.iter().enumerate() {
            let j = start + i;
            self.vectors[j] = None;
            if let Some(fd) = fd {
                match EventRoute::dup(OP, &Target::Irq(irq), *fd) {
                    Ok(eventfd) => {
                        self.vectors[j] = Some(MsiRoute {
                            eventfd,
                            warned_without_bus_master: false,
                        })
                    }
                    Err(e) => {
                        self.vectors[start..j].fill_with(|| None);
                        return Err(e);
                    }
                }
            }
        }
        self.msix_flush_pending();
        Ok(())
    }

    fn msi_disable(&mut self) {
        self.mode = IrqMode::None;
        self.vectors.clear();
        self.msix_pending.fill(false);
    }

    /// The device sends MSI message `vector`; true if an eventfd was signalled.
    pub(crate) fn signal_msi(&mut self, vector: u32) -> bool {
        if self.mode != IrqMode::Msi {
            return false;
        }
        match self.vectors.get(vector as usize) {
            Some(Some(t)) => {
                t.signal();
                true
            }
            _ => false,
        }
    }

    /// The device sends MSI-X message `vector`; true if an eventfd was
    /// signalled. A masked or unrouted vector sets its pending bit instead.
    pub(crate) fn signal_msix(&mut self, vector: u32) -> bool {
        if self.mode != IrqMode::Msix {
            return false;
        }
        let v = vector as usize;
        if v >= self.msix_pending.len() {
            return false;
        }
        match self.vectors.get(v) {
            Some(Some(t)) => {
                t.signal();
                true
            }
            _ => {
                self.msix_pending[v] = true;
                false
            }
        }
    }

    /// The device sent message `vector` of `mode` (MSI or MSI-X) with bus
    /// mastering off, so it was dropped. Warns once per route; a vector with
    /// no eventfd, or of a mode that is not enabled, has nobody waiting.
    pub(crate) fn dropped_without_bus_master(&mut self, device: &str, mode: IrqMode, vector: u32) {
        if self.mode != mode {
            return;
        }
        let Some(Some(route)) = self.vectors.get_mut(vector as usize) else {
            return;
        };
        if !route.warned_without_bus_master {
            route.warned_without_bus_master = true;
            let kind = if mode == IrqMode::Msix {
                "MSI-X"
            } else {
                "MSI"
            };
            log::warn!(
                "{device}: {kind} vector {vector} was raised with bus mastering off and \
                 dropped, as on hardware; its eventfd will not fire until bus mastering \
                 is enabled (PciConfig::set_bus_master). Not repeated for this route."
            );
        }
    }

    /// Delivers pending MSI-X messages whose vector can now be signalled.
    fn msix_flush_pending(&mut self) {
        if self.mode != IrqMode::Msix {
            return;
        }
        for (v, pending) in self.msix_pending.iter_mut().enumerate() {
            if let (true, Some(Some(t))) = (*pending, self.vectors.get(v)) {
                t.signal();
                *pending = false;
            }
        }
    }

    /// The pending bit of MSI-X vector `v`.
    pub(crate) fn msix_pending(&self, v: usize) -> bool {
        self.msix_pending.get(v).copied().unwrap_or(false)
    }

    // ---- ERR / REQ -------------------------------------------------------

    /// `vfio_pci_set_ctx_trigger_single`.
    fn single_trigger(slot: &mut Option<EventRoute>, set: &IrqSet<'_>) -> Result<()> {
        if set.start != 0 || set.count > 1 {
            return Err(einval(set.index));
        }
        match set.data {
            IrqData::None => match slot {
                Some(t) if set.count > 0 => {
                    t.signal();
                    Ok(())
                }
                Some(_) => {
                    *slot = None;
                    Ok(())
                }
                None => Err(einval(set.index)),
            },
            IrqData::Bool(b) => {
                if let (Some(true), Some(t)) = (b.first().copied(), slot.as_ref()) {
                    t.signal();
                }
                Ok(())
            }
            IrqData::EventFd(fds) => {
                *slot = match fds.first().copied().flatten() {
                    Some(fd) => Some(EventRoute::dup(OP, &Target::Irq(set.index), fd)?),
                    None => None,
                };
                Ok(())
            }
        }
    }

    /// Signals the REQ eventfd (a release request); true if one is set.
    pub(crate) fn request_release(&self) -> bool {
        match &self.req {
            Some(t) => {
                t.signal();
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};
    use std::sync::Mutex;

    use vfio_hal::irq::index;
    use vfio_hal::prelude::*;

    use crate::models::edu::{reg, Edu};
    use crate::MockContainer;

    /// Keeps every warning logged in this test binary.
    struct WarningLog(Mutex<Vec<String>>);

    impl log::Log for WarningLog {
        fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
            metadata.level() <= log::Level::Warn
        }

        fn log(&self, record: &log::Record<'_>) {
            if self.enabled(record.metadata()) {
                let mut lines = self.0.lock().unwrap_or_else(|e| e.into_inner());
                lines.push(record.args().to_string());
            }
        }

        fn flush(&self) {}
    }

    static WARNINGS: WarningLog = WarningLog(Mutex::new(Vec::new()));

    /// Warnings so far that mention `device`.
    fn warnings_about(device: &str) -> usize {
        let lines = WARNINGS.0.lock().unwrap_or_else(|e| e.into_inner());
        lines
            .iter()
            .filter(|l| l.starts_with(&format!("{device}: ")))
            .count()
    }

    fn eventfd() -> OwnedFd {
        // SAFETY: eventfd takes no pointers; the result is checked before use.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        assert!(raw >= 0, "eventfd: {}", std::io::Error::last_os_error());
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        unsafe { OwnedFd::from_raw_fd(raw) }
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "routing checks /proc/self/fd, and Miri's fds are not the host's"
    )]
    fn msi_dropped_without_bus_master_warns_once_per_route() {
        // A logger may already be installed by another test: ours is the only one here.
        let _ = log::set_logger(&WARNINGS);
        log::set_max_level(log::LevelFilter::Warn);
        let name = "edu-msi-without-bus-master";
        let container = MockContainer::new();
        container.plug(name, Edu::new()).expect("plug");
        let edu = container.open_device(name).expect("open");
        let bar0 = edu.region(0).expect("BAR0");
        let msi = edu.irq(index::MSI).expect("MSI");
        let efd = eventfd();
        let raise = || bar0.write_at::<u32>(reg::IRQ_RAISE, 1).expect("raise");

        msi.set_eventfd(0, Some(efd.as_fd())).expect("route");
        raise();
        raise();
        assert_eq!(
            warnings_about(name),
            1,
            "one warning for the route, not one per raise"
        );

        msi.set_eventfd(0, Some(efd.as_fd())).expect("re-route");
        raise();
        assert_eq!(warnings_about(name), 2, "a new route warns afresh");

        edu.set_bus_master(true).expect("bus master");
        raise();
        assert_eq!(
            warnings_about(name),
            2,
            "delivered, so nothing to warn about"
        );
    }
}
