//! PCI plumbing shared by every model: config space, BAR backing, regions, irqs.
//!
//! A [`PciFunction`] is built from a model's [`PciLayout`] and owns
//! everything vfio-pci would own for the device: the virtualized config
//! space, the region and irq tables, the shared RAM behind mmappable BAR
//! areas, the MSI-X table and PBA, the interrupt routes and the runtime
//! power state of the low-power features ([`power`]).
//! Its deviations from vfio-pci are listed in the crate docs.

mod config;
pub(crate) mod interrupts;
pub(crate) mod power;

use std::ffi::CString;

use vfio_hal::pci::cfg;
use vfio_hal::region::flags as rflags;
use vfio_hal::{Capability, Error, FeatureOp, IrqSet, RegionInfo, Result, SparseArea, Target};

use crate::layout::{BarKind, BarLayout, MsixLayout, PciLayout};
use crate::sys::SharedRam;
use config::ConfigSpace;
use interrupts::{Interrupts, IrqMode};
use power::RuntimePm;

/// vfio-pci's fixed regions: BAR0–5, ROM, CONFIG, VGA.
pub(crate) const FIXED_REGIONS: u32 = 9;

const MSI_CTRL_ENABLE: u16 = 1 << 0;
const MSI_CTRL_64BIT: u16 = 1 << 7;
const MSIX_CTRL_ENABLE: u16 = 1 << 15;
const STATUS_INTERRUPT: u16 = 1 << 3;
/// Status bits that are write-1-to-clear (parity, aborts, SERR).
const STATUS_W1C: u16 = 0xf900;
/// Command bits a user can change: those vfio-pci passes through that
/// QEMU's PCI core implements (I/O, memory, bus master, SERR, INTx
/// disable; not parity error response).
const COMMAND_WRITABLE: u16 = 0x0507;
/// MSI message control: Multiple Message Capable and Enable.
const MSI_CTRL_QMASK: u16 = 0x000e;
const MSI_CTRL_QSIZE: u16 = 0x0070;
const CMD_IO: u16 = 1 << 0;

/// What backs a span of a BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backing {
    /// Shared RAM at this offset of the BAR.
    Ram,
    /// The MSI-X table: reads all ones, writes dropped (vfio-pci).
    MsixTable,
    /// The MSI-X pending-bit array (read only).
    MsixPba {
        /// Offset of the PBA in the BAR.
        base: u64,
    },
    /// The model's callbacks.
    Handler,
}

#[derive(Debug, Clone, Copy)]
struct Span {
    start: u64,
    end: u64,
    backing: Backing,
}

#[derive(Debug, Default)]
struct Bar {
    layout: Option<BarLayout>,
    ram: Option<SharedRam>,
    /// Non-handler spans, sorted and disjoint.
    spans: Vec<Span>,
}

/// What a region index addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// A BAR (0–5) that exists.
    Bar(u8),
    /// Config space.
    Config,
    /// A device-specific region (index 9 and up).
    Device,
    /// A zero-sized region.
    Absent,
}

/// The PCI function of one plugged device.
#[derive(Debug)]
pub(crate) struct PciFunction {
    pub(crate) config: ConfigSpace,
    /// Config space as it is after open (for the next open).
    initial_config: ConfigSpace,
    pub(crate) irqs: Interrupts,
    /// Low power (the low-power device features).
    pub(crate) power: RuntimePm,
    bars: [Bar; 6],
    regions: Vec<RegionInfo>,
    roles: Vec<Role>,
    msi_cap: Option<usize>,
    msix_cap: Option<usize>,
    /// The function's own MSI enable, which the model obeys. vfio-pci
    /// shows the user a virtual message control instead: `SET_IRQS` turns
    /// the function's enable on and off without touching it, and a user
    /// write reaches the function only while MSI is routed.
    msi_function_enable: bool,
    /// MSI was routed (`SET_IRQS`) at the last sync.
    msi_routed: bool,
}

fn bad_layout(reason: &'static str) -> Error {
    Error::InvalidArgument {
        op: "plug",
        target: Target::None,
        reason,
    }
}

fn region_info(index: u32, flags: u32, size: u64, caps: Vec<Capability>) -> RegionInfo {
    let flags = if caps.is_empty() {
        flags
    } else {
        flags | rflags::CAPS
    };
    RegionInfo {
        index,
        flags,
        size,
        offset: vfio_hal::pci::region_offset(index),
        caps,
    }
}

impl PciFunction {
    /// Builds the function; `name` labels the memfds. Fails on an
    /// inconsistent layout (with the rule it breaks).
    pub(crate) fn new(name: &str, layout: &PciLayout) -> Result<Self> {
        Self::check_layout(layout)?;
        let config_size = if layout.pcie { 4096 } else { 256 };
        let mut config = ConfigSpace::new(config_size);
        config.set_u16(cfg::VENDOR_ID as usize, layout.vendor_id);
        config.set_u16(cfg::DEVICE_ID as usize, layout.device_id);
        config.set_u8(cfg::REVISION as usize, layout.revision);
        let class = layout.class_code.to_le_bytes();
        for (i, b) in class[..3].iter().enumerate() {
            config.set_u8(cfg::CLASS as usize + i, *b);
        }
        config.writable_u8(0x0c, 0xff); // cache line size
        config.writable_u8(0x0d, 0xff); // latency timer
        config.set_u16(0x2c, layout.subsystem_vendor_id);
        config.set_u16(0x2e, layout.subsystem_id);
        config.writable_u8(0x3c, 0xff); // interrupt line
        config.set_u8(cfg::INTERRUPT_PIN as usize, layout.interrupt_pin);
        config.writable_u16(cfg::COMMAND as usize, COMMAND_WRITABLE);
        config.w1c_u16(cfg::STATUS as usize, STATUS_W1C);

        let mut bars: [Bar; 6] = Default::default();
        let mut regions = Vec::new();
        let mut roles = Vec::new();
        let mut command = 0u16;
        let mut mem32_base: u64 = 0xc000_0000;
        let mut mem64_base: u64 = 0x80_0000_0000;
        let mut io_base: u64 = 0xc000;
        for (i, slot) in layout.bars.iter().enumerate() {
            let index = i as u32;
            let Some(bar) = slot else {
                regions.push(region_info(index, 0, 0, Vec::new()));
                roles.push(Role::Absent);
                continue;
            };
            let reg = cfg::BAR0 as usize + 4 * i;
            let base_cursor = match bar.kind {
                BarKind::Memory32 => &mut mem32_base,
                BarKind::Memory64 => &mut mem64_base,
                BarKind::Io => &mut io_base,
            };
            let base = base_cursor.next_multiple_of(bar.size);
            *base_cursor = base + bar.size;
            let size_mask = !(bar.size - 1);
            match bar.kind {
                BarKind::Io => {
                    command |= CMD_IO;
                    config.set_u32(reg, (base as u32) | 1);
                    config.writable_u32(reg, (size_mask as u32) & !0x3);
                }
                BarKind::Memory32 | BarKind::Memory64 => {
                    command |= cfg::CMD_MEMORY;
                    let mut flags = if bar.prefetchable { 0x8 } else { 0 };
                    if bar.kind == BarKind::Memory64 {
                        flags |= 0x4;
                    }
                    config.set_u32(reg, (base as u32) | flags);
                    config.writable_u32(reg, (size_mask as u32) & !0xf);
                    if bar.kind == BarKind::Memory64 {
                        config.set_u32(reg + 4, (base >> 32) as u32);
                        config.writable_u32(reg + 4, (size_mask >> 32) as u32);
                    }
                }
            }
            let (ram, spans, flags, caps) = Self::bar_backing(name, i, bar, layout.msix)?;
            regions.push(region_info(index, flags, bar.size, caps));
            roles.push(Role::Bar(i as u8));
            bars[i] = Bar {
                layout: Some(bar.clone()),
                ram,
                spans,
            };
        }
        config.set_u16(cfg::COMMAND as usize, command);
        // ROM, CONFIG, VGA.
        regions.push(region_info(6, 0, 0, Vec::new()));
        roles.push(Role::Absent);
        regions.push(region_info(
            7,
            rflags::READ | rflags::WRITE,
            config_size as u64,
            Vec::new(),
        ));
        roles.push(Role::Config);
        regions.push(region_info(8, 0, 0, Vec::new()));
        roles.push(Role::Absent);
        for (i, r) in layout.device_regions.iter().enumerate() {
            let flags = rflags::READ | if r.writable { rflags::WRITE } else { 0 };
            let caps = vec![Capability::RegionType {
                ty: r.ty,
                subtype: r.subtype,
            }];
            regions.push(region_info(FIXED_REGIONS + i as u32, flags, r.size, caps));
            roles.push(if r.size == 0 {
                Role::Absent
            } else {
                Role::Device
            });
        }

        let msi_cap = match layout.msi {
            Some(msi) => {
                let size = if msi.addr64 { 14 } else { 10 };
                let at = config
                    .add_capability(cfg::CAP_ID_MSI, size)
                    .ok_or(bad_layout("capabilities do not fit in config space"))?;
                let mmc = msi.vectors.trailing_zeros() as u16;
                let ctrl = (mmc << 1) | if msi.addr64 { MSI_CTRL_64BIT } else { 0 };
                config.set_u16(at + 2, ctrl);
                // vfio-pci virtualizes the whole word and lets the user
                // write all of it (see `config_write`).
                config.writable_u16(at + 2, 0xffff);
                config.writable_u32(at + 4, 0xffff_fffc);
                if msi.addr64 {
                    config.writable_u32(at + 8, 0xffff_ffff);
                    config.writable_u16(at + 12, 0xffff);
                } else {
                    config.writable_u16(at + 8, 0xffff);
                }
                Some(at)
            }
            None => None,
        };
        let msix_cap = match layout.msix {
            Some(x) => {
                let at = config
                    .add_capability(cfg::CAP_ID_MSIX, 12)
                    .ok_or(bad_layout("capabilities do not fit in config space"))?;
                // Read-only to the user: vfio-pci reads the MSI-X
                // capability from the function and drops writes to it.
                config.set_u16(at + 2, x.vectors - 1);
                config.set_u32(at + 4, x.table_offset | u32::from(x.table_bar));
                config.set_u32(at + 8, x.pba_offset | u32::from(x.pba_bar));
                Some(at)
            }
            None => None,
        };
        if layout.pcie {
            let at = config
                .add_capability(cfg::CAP_ID_EXP, 0x3c)
                .ok_or(bad_layout("capabilities do not fit in config space"))?;
            config.set_u16(at + 2, 0x0002); // version 2, endpoint
            config.writable_u16(at + 8, 0x7fff); // device control
            config.w1c_u16(at + 10, 0x000f); // device status error bits
        }
        let irqs = Interrupts::new(
            layout.interrupt_pin != 0,
            layout.msi.map_or(0, |m| m.vectors),
            layout.msix.map_or(0, |m| u32::from(m.vectors)),
            layout.pcie,
        );
        Ok(Self {
            initial_config: config.clone(),
            config,
            irqs,
            power: RuntimePm::default(),
            bars,
            regions,
            roles,
            msi_cap,
            msix_cap,
            msi_function_enable: false,
            msi_routed: false,
        })
    }

    fn check_layout(layout: &PciLayout) -> Result<()> {
        if layout.interrupt_pin > 4 {
            return Err(bad_layout("interrupt pin must be 0 (none) or 1-4"));
        }
        for (i, slot) in layout.bars.iter().enumerate() {
            let Some(bar) = slot else { continue };
            let min = if bar.kind == BarKind::Io { 4 } else { 16 };
            if !bar.size.is_power_of_two() || bar.size < min {
                return Err(bad_layout(
                    "BAR size must be a power of two (>= 16, or 4 for I/O)",
                ));
            }
            match bar.kind {
                BarKind::Memory64 if i == 5 || layout.bars[i + 1].is_some() => {
                    return Err(bad_layout("a 64-bit BAR needs the next slot free"));
                }
                BarKind::Memory32 | BarKind::Io if bar.size > 1 << 31 => {
                    return Err(bad_layout("32-bit BARs are at most 2 GiB"));
                }
                BarKind::Io if !bar.ram.is_empty() || bar.size > 256 => {
                    return Err(bad_layout("I/O BARs are at most 256 bytes and have no RAM"));
                }
                _ => {}
            }
            let page = vfio_hal::memory::page_size();
            let mut areas = bar.ram.clone();
            areas.sort_by_key(|a| a.offset);
            for a in &areas {
                let fits = a.offset.checked_add(a.size).is_some_and(|e| e <= bar.size);
                if a.size == 0 || !fits || a.offset % page != 0 || a.size % page != 0 {
                    return Err(bad_layout(
                        "RAM areas must be non-empty, page aligned and inside their BAR",
                    ));
                }
            }
            if areas
                .windows(2)
                .any(|w| w[0].offset + w[0].size > w[1].offset)
            {
                return Err(bad_layout("RAM areas must not overlap"));
            }
        }
        if let Some(msi) = layout.msi {
            if !msi.vectors.is_power_of_two() || msi.vectors > 32 {
                return Err(bad_layout("MSI vectors must be 1, 2, 4, 8, 16 or 32"));
            }
        }
        if let Some(x) = layout.msix {
            if x.vectors == 0 || x.vectors > 2048 {
                return Err(bad_layout("MSI-X vectors must be 1-2048"));
            }
            let table = (x.table_bar, u64::from(x.table_offset), x.table_size());
            let pba = (x.pba_bar, u64::from(x.pba_offset), x.pba_size());
            for (bar, offset, size) in [table, pba] {
                let Some(Some(b)) = layout.bars.get(bar as usize) else {
                    return Err(bad_layout("MSI-X table or PBA names a missing BAR"));
                };
                if b.kind == BarKind::Io || offset % 8 != 0 || offset + size > b.size {
                    return Err(bad_layout(
                        "MSI-X table and PBA must be 8-byte aligned inside a memory BAR",
                    ));
                }
                if b.ram
                    .iter()
                    .any(|a| offset < a.offset + a.size && a.offset < offset + size)
                {
                    return Err(bad_layout("MSI-X table and PBA must not overlap RAM areas"));
                }
            }
            if table.0 == pba.0 && table.1 < pba.1 + pba.2 && pba.1 < table.1 + table.2 {
                return Err(bad_layout("MSI-X table and PBA overlap"));
            }
        }
        Ok(())
    }

    /// The RAM, spans, region flags and caps of BAR `i`.
    #[allow(clippy::type_complexity)]
    fn bar_backing(
        name: &str,
        i: usize,
        bar: &BarLayout,
        msix: Option<MsixLayout>,
    ) -> Result<(Option<SharedRam>, Vec<Span>, u32, Vec<Capability>)> {
        let mut spans: Vec<Span> = bar
            .ram
            .iter()
            .map(|a| Span {
                start: a.offset,
                end: a.offset + a.size,
                backing: Backing::Ram,
            })
            .collect();
        if let Some(x) = msix {
            if usize::from(x.table_bar) == i {
                let start = u64::from(x.table_offset);
                spans.push(Span {
                    start,
                    end: start + x.table_size(),
                    backing: Backing::MsixTable,
                });
            }
            if usize::from(x.pba_bar) == i {
                let start = u64::from(x.pba_offset);
                spans.push(Span {
                    start,
                    end: start + x.pba_size(),
                    backing: Backing::MsixPba { base: start },
                });
            }
        }
        spans.sort_by_key(|s| s.start);
        let mut flags = rflags::READ | rflags::WRITE;
        let mut caps = Vec::new();
        let ram = if bar.ram.is_empty() {
            None
        } else {
            flags |= rflags::MMAP;
            let whole = bar.ram.len() == 1 && bar.ram[0].offset == 0 && bar.ram[0].size == bar.size;
            if !whole {
                let mut areas = bar.ram.clone();
                areas.sort_by_key(|a| a.offset);
                caps.push(Capability::SparseMmap(areas));
            }
            let label = CString::new(format!("vfio-mock {name} BAR{i}"))
                .unwrap_or_else(|_| c"vfio-mock BAR".to_owned());
            Some(SharedRam::new(&label, bar.size)?)
        };
        Ok((ram, spans, flags, caps))
    }

    /// Number of regions (9 plus device-specific ones).
    pub(crate) fn region_count(&self) -> u32 {
        self.regions.len() as u32
    }

    pub(crate) fn region(&self, index: u32) -> Option<&RegionInfo> {
        self.regions.get(index as usize)
    }

    pub(crate) fn role(&self, index: u32) -> Role {
        self.roles
            .get(index as usize)
            .copied()
            .unwrap_or(Role::Absent)
    }

    /// Back to the state right after open: config as enabled by vfio-pci, no interrupts.
    pub(crate) fn reopen(&mut self) {
        self.config = self.initial_config.clone();
        self.irqs.teardown();
        self.irqs.device_reset();
        self.msi_routed = false;
        self.msi_function_enable = false;
    }

    // ---- Config space ------------------------------------------------------

    pub(crate) fn config_read(&self, offset: u64, out: &mut [u8]) {
        self.config.read(offset as usize, out);
    }

    /// A user write, with the side effects vfio-pci gives command and MSI-X control.
    pub(crate) fn config_write(&mut self, offset: u64, data: &[u8]) {
        let at = offset as usize;
        self.config.user_write(at, data);
        let touches = |reg: usize, len: usize| at < reg + len && reg < at + data.len();
        if touches(cfg::COMMAND as usize, 2) {
            let cmd = self.config.u16(cfg::COMMAND as usize);
            self.irqs.set_intx_disable(cmd & cfg::CMD_INTX_DISABLE != 0);
        }
        if let Some(cap) = self.msi_cap {
            if touches(cap + 2, 2) {
                self.msi_control_written(cap + 2);
            }
        }
    }

    /// vfio-pci's `vfio_msi_config_write`: the word is kept as written,
    /// except that Enable stays clear while MSI is not routed and Multiple
    /// Message Enable is capped at what the function is capable of; the
    /// result also goes to the function.
    fn msi_control_written(&mut self, at: usize) {
        let mut ctrl = self.config.u16(at);
        if !self.msi_routed {
            ctrl &= !MSI_CTRL_ENABLE;
        }
        let capable = (self.initial_config.u16(at) & MSI_CTRL_QMASK) >> 1;
        if (ctrl & MSI_CTRL_QSIZE) >> 4 > capable {
            ctrl = (ctrl & !MSI_CTRL_QSIZE) | (capable << 4);
        }
        self.config.set_u16(at, ctrl);
        if self.msi_routed {
            self.msi_function_enable = ctrl & MSI_CTRL_ENABLE != 0;
        }
    }

    /// Makes config space reflect the interrupt state (enable bits, INTx status).
    pub(crate) fn sync_irq_state(&mut self) {
        let mode = self.irqs.mode();
        // Routing and unrouting MSI enables and disables it in the
        // function; re-routing its eventfds does not.
        let routed = mode == IrqMode::Msi;
        if routed != self.msi_routed {
            self.msi_routed = routed;
            self.msi_function_enable = routed;
        }
        if let Some(cap) = self.msix_cap {
            self.config
                .set_bits16(cap + 2, MSIX_CTRL_ENABLE, mode == IrqMode::Msix);
        }
        let line = self.irqs.intx_line();
        self.config
            .set_bits16(cfg::STATUS as usize, STATUS_INTERRUPT, line);
    }

    // ---- Runtime power ----------------------------------------------------

    /// Before an access through the device fd: out of runtime suspend
    /// ([`RuntimePm::resume`]).
    #[inline]
    pub(crate) fn pm_get(&mut self) {
        self.power.resume(&mut self.irqs);
    }

    /// After the access: back into runtime suspend while low power is
    /// engaged ([`RuntimePm::suspend`]).
    #[inline]
    pub(crate) fn pm_put(&mut self) {
        self.power.suspend(&mut self.irqs);
    }

    /// One `VFIO_DEVICE_FEATURE` call: the low-power features, `ENOTTY`
    /// for every other (as vfio-pci answers a feature it lacks).
    pub(crate) fn feature(&mut self, op: FeatureOp, feature: u32, data: &[u8]) -> Result<()> {
        self.power.feature(op, feature, data).unwrap_or_else(|| {
            Err(Error::sys(
                "VFIO_DEVICE_FEATURE",
                Target::Feature(feature),
                libc::ENOTTY,
            ))
        })
    }

    /// One `SET_IRQS` request, with config space following.
    pub(crate) fn set_irqs(&mut self, set: &IrqSet<'_>) -> Result<()> {
        let result = self.irqs.set_irqs(set);
        self.sync_irq_state();
        result
    }

    pub(crate) fn command(&self) -> u16 {
        self.config.u16(cfg::COMMAND as usize)
    }

    /// Whether the function's MSI is enabled (not what config space shows
    /// the user: see `msi_function_enable`).
    pub(crate) fn msi_enabled(&self) -> bool {
        self.msi_cap.is_some() && self.msi_function_enable
    }

    /// Whether the MSI-X capability's enable bit is set.
    pub(crate) fn msix_enabled(&self) -> bool {
        self.msix_cap
            .is_some_and(|cap| self.config.u16(cap + 2) & MSIX_CTRL_ENABLE != 0)
    }

    /// The device drives INTx.
    pub(crate) fn set_intx(&mut self, asserted: bool) {
        self.irqs.set_intx_line(asserted);
        self.config
            .set_bits16(cfg::STATUS as usize, STATUS_INTERRUPT, asserted);
    }

    // ---- BARs --------------------------------------------------------------

    /// Whether accesses to BAR `bar` decode (memory or I/O enable).
    #[inline]
    pub(crate) fn decodes(&self, bar: u8) -> bool {
        let cmd = self.command();
        match self.bars[bar as usize].layout.as_ref().map(|l| l.kind) {
            Some(BarKind::Io) => cmd & CMD_IO != 0,
            Some(_) => cmd & cfg::CMD_MEMORY != 0,
            None => false,
        }
    }

    /// What backs `offset` of `bar`, and where that backing ends.
    #[inline]
    pub(crate) fn classify(&self, bar: u8, offset: u64) -> (Backing, u64) {
        let b = &self.bars[bar as usize];
        for s in &b.spans {
            if offset < s.start {
                return (Backing::Handler, s.start);
            }
            if offset < s.end {
                return (s.backing, s.end);
            }
        }
        (Backing::Handler, b.layout.as_ref().map_or(0, |l| l.size))
    }

    /// Size of `bar` (0 if absent).
    pub(crate) fn bar_size(&self, bar: u8) -> u64 {
        self.bars
            .get(bar as usize)
            .and_then(|b| b.layout.as_ref())
            .map_or(0, |l| l.size)
    }

    /// The shared RAM of `bar`, if it has RAM areas.
    pub(crate) fn ram(&self, bar: u8) -> Option<&SharedRam> {
        self.bars.get(bar as usize)?.ram.as_ref()
    }

    /// Whether `[offset, offset + len)` of `bar` lies inside one RAM area.
    pub(crate) fn in_ram(&self, bar: u8, offset: u64, len: u64) -> bool {
        let Some(end) = offset.checked_add(len) else {
            return false;
        };
        self.bars
            .get(bar as usize)
            .and_then(|b| b.layout.as_ref())
            .is_some_and(|l| {
                l.ram
                    .iter()
                    .any(|a| offset >= a.offset && end <= a.offset + a.size)
            })
    }

    /// Reads the PBA bytes at `offset` (`base` is where the PBA starts).
    pub(crate) fn pba_read(&self, base: u64, offset: u64, out: &mut [u8]) {
        for (i, byte) in out.iter_mut().enumerate() {
            let first = ((offset - base) as usize + i) * 8;
            *byte = (0..8).fold(0u8, |acc, bit| {
                acc | (u8::from(self.irqs.msix_pending(first + bit)) << bit)
            });
        }
    }

    /// The areas of region `index` a user may mmap, each as a fresh mapping.
    pub(crate) fn mmap(&self, index: u32) -> Result<Vec<vfio_hal::MmapArea>> {
        let not_mappable = || Error::NotSupported {
            op: "mmap",
            target: Target::Region(index),
            reason: "region has no mmappable area (handler-backed in the mock)",
        };
        let info = self.region(index).ok_or_else(not_mappable)?;
        let Role::Bar(bar) = self.role(index) else {
            return Err(not_mappable());
        };
        let ram = self.ram(bar).ok_or_else(not_mappable)?;
        let areas: Vec<SparseArea> = info.mappable_areas();
        if areas.is_empty() {
            return Err(not_mappable());
        }
        areas
            .iter()
            .map(|a| ram.map(a.offset, a.size, info.writable()))
            .collect()
    }
}
