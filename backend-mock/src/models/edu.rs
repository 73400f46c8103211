//! QEMU's `edu` teaching device (`hw/misc/edu.c`), register for register.
//!
//! PCI `1234:11e8`, revision `0x10`, class `0x00ff00` ("other"), interrupt
//! pin A, an MSI capability (one vector, 64-bit, no per-vector masking) and
//! no MSI-X. BAR0 is 1 MiB of registers:
//!
//! | offset | access | register |
//! |---|---|---|
//! | `0x00` | RO | identification, `0x010000ed` |
//! | `0x04` | RW | liveness: reads the bitwise NOT of the last write |
//! | `0x08` | RW | factorial: a write (ignored while computing) starts `n!` (u32 wrap-around); reads the result |
//! | `0x20` | RW | status: bit 0 computing (RO), bit 7 raise interrupt `0x1` when the factorial is done |
//! | `0x24` | RO | interrupt status |
//! | `0x60` | WO | raise: interrupt status \|= value, and interrupt |
//! | `0x64` | WO | acknowledge: clear these interrupt status bits; INTx drops when it reaches 0 (MSI off) |
//! | `0x80` | RW | DMA source address |
//! | `0x88` | RW | DMA destination address |
//! | `0x90` | RW | DMA count |
//! | `0x98` | RW | DMA command: bit 0 start/running, bit 1 direction (0: RAM → buffer, 1: buffer → RAM), bit 2 interrupt `0x100` when done |
//!
//! Accesses narrower than 4 bytes never reach edu: QEMU's memory core
//! refuses them (edu declares a minimum access size of 4), so they read 0
//! and writes are dropped — measured in the real-kernel lane. 8-byte
//! accesses below `0x80` reach edu, which ignores them (reads give all
//! ones), as do unlisted offsets. The
//! DMA registers ignore writes while a transfer runs, and only a command
//! write with bit 0 set starts one. The device buffer is 4096 bytes at
//! device address `0x40000`; RAM addresses are masked to 28 bits (QEMU's
//! default `dma_mask`), so use IOVAs below 256 MiB. A transfer runs 100 ms
//! of virtual time after the command ([`crate::clock`]). Interrupts go out
//! as MSI when MSI is enabled in config space, else on INTx.
//!
//! A failed DMA read (RAM → device buffer) fills the buffer with zeros
//! where it failed, as QEMU's memory core reads an unassigned address (an
//! IOMMU translation that fails, or any address with bus mastering off) as
//! 0; it translates page by page, so a transfer that runs from a mapped
//! page into an unmapped one moves the mapped part. A failed DMA write
//! drops the bytes of the pages it could not reach. Like QEMU's edu, which
//! registers no reset handler, the model keeps its registers, its buffer
//! and the work in flight across a function reset and a close and reopen;
//! only the INTx line drops (the PCI core lowers it).
//!
//! Deviations from QEMU:
//! - QEMU logs a DMA range outside the device buffer and then either aborts
//!   (`hw_error`, older versions) or copies out of bounds. The mock refuses
//!   the copy, records an [`crate::Incident::Refused`], and completes the
//!   command as QEMU would otherwise (bit 0 cleared, interrupt if asked).
//! - DMA with bus mastering disabled is recorded as
//!   [`crate::Incident::DmaWithoutBusMaster`] (QEMU's DMA fails silently).
//! - vfio-pci would mmap BAR0; here it is handler-backed and not `MMAP`.
//! - The mock offers `VFIO_DEVICE_RESET` for every device, so a driver's
//!   reset path can be tested; vfio-pci has no reset method for an edu on
//!   the root bus (no FLR, no power-management reset, no bridge above it
//!   for a bus reset), so there `can_reset` is false and a reset is refused
//!   with `EINVAL`.
//!
//! ```
//! use vfio_hal::prelude::*;
//! use vfio_hal_mock::{models::edu::{self, Edu}, MockContainer};
//!
//! let container = MockContainer::new();
//! container.plug("edu", Edu::new())?;
//! let dev = container.open_device("edu")?;
//! let bar0 = dev.region(0)?;
//! bar0.write_at::<u32>(edu::reg::LIVENESS, 0x1234_5678)?;
//! assert_eq!(bar0.read_at::<u32>(edu::reg::LIVENESS)?, !0x1234_5678);
//! bar0.write_at::<u32>(edu::reg::FACTORIAL, 10)?;
//! assert_eq!(bar0.read_at::<u32>(edu::reg::FACTORIAL)?, 3_628_800);
//! # Ok::<(), vfio_hal::Error>(())
//! ```

use std::time::Duration;

use crate::layout::{BarLayout, MsiLayout, PciLayout};
use crate::model::{DeviceContext, DeviceModel};

/// PCI vendor id (QEMU).
pub const VENDOR_ID: u16 = 0x1234;
/// PCI device id.
pub const DEVICE_ID: u16 = 0x11e8;
/// Revision id.
pub const REVISION: u8 = 0x10;
/// Class code: base 0x00, subclass 0xff ("other").
pub const CLASS_CODE: u32 = 0x00ff00;
/// Size of BAR0.
pub const BAR0_SIZE: u64 = 1 << 20;
/// QEMU's DMA timer: a transfer completes this long after its command.
pub const DMA_DELAY: Duration = Duration::from_millis(100);
/// Virtual time the factorial worker takes (QEMU's runs on a real thread).
pub const FACTORIAL_DELAY: Duration = Duration::from_micros(1);
/// QEMU's default DMA mask: 28 address bits.
pub const DEFAULT_DMA_MASK: u64 = (1 << 28) - 1;
/// The granule in which QEMU's emulated IOMMU translates a DMA.
const IOMMU_PAGE: u64 = 4096;

/// Register offsets and bits.
///
/// Names and widths follow QEMU's `hw/misc/edu.c` (its `#define`s, and
/// `dma_addr_t`, 64 bits, for the DMA registers and their command bits;
/// offsets are named after the fields they hold, without the `EDU_` prefix).
/// The conformance suite's edu driver keeps its own copy of this map, as an
/// independent reader of the device: a test there checks that the two agree
/// name for name and value for value, so a model bug cannot hide behind a
/// shared constant.
pub mod reg {
    /// Identification (RO).
    pub const ID: u64 = 0x00;
    /// Liveness check: reads the bitwise NOT of the last write.
    pub const LIVENESS: u64 = 0x04;
    /// Factorial input/result.
    pub const FACTORIAL: u64 = 0x08;
    /// Status.
    pub const STATUS: u64 = 0x20;
    /// Interrupt status (RO).
    pub const IRQ_STATUS: u64 = 0x24;
    /// Raise interrupt (WO).
    pub const IRQ_RAISE: u64 = 0x60;
    /// Acknowledge interrupt (WO).
    pub const IRQ_ACK: u64 = 0x64;
    /// DMA source address.
    pub const DMA_SRC: u64 = 0x80;
    /// DMA destination address.
    pub const DMA_DST: u64 = 0x88;
    /// DMA byte count.
    pub const DMA_CNT: u64 = 0x90;
    /// DMA command.
    pub const DMA_CMD: u64 = 0x98;

    /// The identification value.
    pub const ID_VALUE: u32 = 0x0100_00ed;
    /// Status bit 0: computing the factorial.
    pub const EDU_STATUS_COMPUTING: u32 = 0x01;
    /// Status bit 7: raise [`FACT_IRQ`] when the factorial is done.
    pub const EDU_STATUS_IRQFACT: u32 = 0x80;
    /// Interrupt status bit of a finished factorial.
    pub const FACT_IRQ: u32 = 0x001;
    /// Interrupt status bit of a finished DMA transfer.
    pub const DMA_IRQ: u32 = 0x100;
    /// DMA command bit 0: start (reads 1 while running).
    pub const EDU_DMA_RUN: u64 = 1 << 0;
    /// DMA command bit 1, the direction QEMU's `EDU_DMA_DIR(cmd)` reads:
    /// set (`EDU_DMA_TO_PCI`) = device buffer to RAM, clear
    /// (`EDU_DMA_FROM_PCI`) = RAM to device buffer.
    pub const EDU_DMA_DIR: u64 = 1 << 1;
    /// DMA command bit 2: raise [`DMA_IRQ`] when done.
    pub const EDU_DMA_IRQ: u64 = 1 << 2;
    /// Device address of the DMA buffer (QEMU's name; the command bit that
    /// starts a transfer is [`EDU_DMA_RUN`]).
    pub const DMA_START: u64 = 0x40000;
    /// Size of the DMA buffer.
    pub const DMA_SIZE: u64 = 4096;
}

/// The edu device model. See the module docs for the register map.
#[derive(Debug, Clone)]
pub struct Edu {
    dma_mask: u64,
    liveness: u32,
    factorial: u32,
    status: u32,
    irq_status: u32,
    dma_src: u64,
    dma_dst: u64,
    dma_count: u64,
    dma_cmd: u64,
    buffer: Box<[u8]>,
    factorial_due: Option<Duration>,
    dma_due: Option<Duration>,
    /// Offers VFIO migration ([`Edu::migratable`]).
    migratable: bool,
}

impl Default for Edu {
    fn default() -> Self {
        Self::new()
    }
}

/// `n!` modulo 2^32, as QEMU's worker loop computes it.
fn factorial(n: u32) -> u32 {
    let mut acc: u32 = 1;
    let mut n = n;
    // From 34! on the product has 32 factors of two and stays 0.
    while n > 0 && acc != 0 {
        acc = acc.wrapping_mul(n);
        n -= 1;
    }
    acc
}

impl Edu {
    /// A freshly powered-on edu with QEMU's default 28-bit DMA mask.
    pub fn new() -> Self {
        Self::with_dma_mask(DEFAULT_DMA_MASK)
    }

    /// An edu with another DMA mask (QEMU's `dma_mask` property).
    pub fn with_dma_mask(dma_mask: u64) -> Self {
        Self {
            dma_mask,
            liveness: 0,
            factorial: 0,
            status: 0,
            irq_status: 0,
            dma_src: 0,
            dma_dst: 0,
            dma_count: 0,
            dma_cmd: 0,
            buffer: vec![0; reg::DMA_SIZE as usize].into_boxed_slice(),
            factorial_due: None,
            dma_due: None,
            migratable: false,
        }
    }

    /// This edu with a migration driver: its device offers VFIO migration
    /// (STOP_COPY, P2P, PRE_COPY; see [`crate::migration`]) and carries its
    /// whole state, laid out as [`state`] says. QEMU's edu bound to
    /// vfio-pci has none (its migration features are `ENOTTY`), which
    /// `Edu::new()` keeps.
    pub fn migratable(mut self) -> Self {
        self.migratable = true;
        self
    }

    fn raise_irq(&mut self, ctx: &mut DeviceContext<'_>, bits: u32) {
        self.irq_status |= bits;
        if self.irq_status != 0 {
            if ctx.msi_enabled() {
                ctx.signal_msi(0);
            } else {
                ctx.set_intx(true);
            }
        }
    }

    fn lower_irq(&mut self, ctx: &mut DeviceContext<'_>, bits: u32) {
        self.irq_status &= !bits;
        if self.irq_status == 0 && !ctx.msi_enabled() {
            ctx.set_intx(false);
        }
    }

    fn dma_running(&self) -> bool {
        self.dma_cmd & reg::EDU_DMA_RUN != 0
    }

    fn mmio_read(&self, addr: u64, size: usize) -> u64 {
        if size < 4 {
            // Refused by QEMU's memory core before edu sees it.
            return 0;
        }
        if size == 8 && addr < 0x80 {
            return u64::MAX;
        }
        match addr {
            reg::ID => u64::from(reg::ID_VALUE),
            reg::LIVENESS => u64::from(self.liveness),
            reg::FACTORIAL => u64::from(self.factorial),
            reg::STATUS => u64::from(self.status),
            reg::IRQ_STATUS => u64::from(self.irq_status),
            reg::DMA_SRC => self.dma_src,
            reg::DMA_DST => self.dma_dst,
            reg::DMA_CNT => self.dma_count,
            reg::DMA_CMD => self.dma_cmd,
            _ => u64::MAX,
        }
    }

    fn mmio_write(&mut self, ctx: &mut DeviceContext<'_>, addr: u64, val: u64, size: usize) {
        let wide_ok = size == 4 || (size == 8 && addr >= 0x80);
        if !wide_ok {
            return;
        }
        match addr {
            reg::LIVENESS => self.liveness = !(val as u32),
            reg::FACTORIAL if self.status & reg::EDU_STATUS_COMPUTING == 0 => {
                self.factorial = val as u32;
                self.status |= reg::EDU_STATUS_COMPUTING;
                self.factorial_due = Some(ctx.now() + FACTORIAL_DELAY);
            }
            reg::STATUS => {
                if val as u32 & reg::EDU_STATUS_IRQFACT != 0 {
                    self.status |= reg::EDU_STATUS_IRQFACT;
                } else {
                    self.status &= !reg::EDU_STATUS_IRQFACT;
                }
            }
            reg::IRQ_RAISE => self.raise_irq(ctx, val as u32),
            reg::IRQ_ACK => self.lower_irq(ctx, val as u32),
            reg::DMA_SRC if !self.dma_running() => self.dma_src = val,
            reg::DMA_DST if !self.dma_running() => self.dma_dst = val,
            reg::DMA_CNT if !self.dma_running() => self.dma_count = val,
            reg::DMA_CMD if val & reg::EDU_DMA_RUN != 0 && !self.dma_running() => {
                self.dma_cmd = val;
                self.dma_due = Some(ctx.now() + DMA_DELAY);
            }
            _ => {}
        }
    }

    fn finish_factorial(&mut self, ctx: &mut DeviceContext<'_>) {
        self.factorial_due = None;
        self.factorial = factorial(self.factorial);
        self.status &= !reg::EDU_STATUS_COMPUTING;
        if self.status & reg::EDU_STATUS_IRQFACT != 0 {
            self.raise_irq(ctx, reg::FACT_IRQ);
        }
    }

    /// The buffer indices of a transfer, if it lies inside the buffer.
    fn buffer_range(addr: u64, count: u64) -> Option<std::ops::Range<usize>> {
        let end = addr.checked_add(count)?;
        let limit = reg::DMA_START + reg::DMA_SIZE;
        (addr >= reg::DMA_START && end <= limit)
            .then(|| (addr - reg::DMA_START) as usize..(end - reg::DMA_START) as usize)
    }

    fn clamp(&self, addr: u64) -> u64 {
        let masked = addr & self.dma_mask;
        if masked != addr {
            log::debug!("edu: clamping DMA {addr:#018x} to {masked:#018x}");
        }
        masked
    }

    /// The pieces of `[ram, ram + len)` that lie in one IOMMU page each,
    /// as `(iova, buffer range)`: QEMU translates a DMA page by page.
    fn pages(ram: u64, len: usize) -> impl Iterator<Item = (u64, std::ops::Range<usize>)> {
        let mut done = 0usize;
        std::iter::from_fn(move || {
            if done >= len {
                return None;
            }
            let at = ram.wrapping_add(done as u64);
            let room = IOMMU_PAGE - at % IOMMU_PAGE;
            let n = (len - done).min(usize::try_from(room).unwrap_or(usize::MAX));
            let piece = (at, done..done + n);
            done += n;
            Some(piece)
        })
    }

    /// RAM into the buffer (QEMU's `pci_dma_read`): a page the device
    /// cannot read arrives as zeros; with bus mastering off, all of it.
    fn dma_from_ram(ctx: &mut DeviceContext<'_>, ram: u64, buffer: &mut [u8]) {
        if !ctx.bus_master() {
            // Recorded once, as one attempt; nothing reaches memory.
            let _ = ctx.dma_read(ram, buffer);
            buffer.fill(0);
            return;
        }
        for (iova, range) in Self::pages(ram, buffer.len()) {
            let piece = &mut buffer[range];
            if let Err(e) = ctx.dma_read(iova, piece) {
                // Already recorded by the context (fault or incident).
                log::debug!("edu: DMA read failed, zeros instead: {e}");
                piece.fill(0);
            }
        }
    }

    /// The buffer out to RAM (QEMU's `pci_dma_write`): a page the device
    /// cannot write is left alone.
    fn dma_to_ram(ctx: &mut DeviceContext<'_>, ram: u64, buffer: &[u8]) {
        if !ctx.bus_master() {
            let _ = ctx.dma_write(ram, buffer);
            return;
        }
        for (iova, range) in Self::pages(ram, buffer.len()) {
            if let Err(e) = ctx.dma_write(iova, &buffer[range]) {
                log::debug!("edu: DMA write failed: {e}");
            }
        }
    }

    /// QEMU's `edu_dma_timer`.
    fn finish_dma(&mut self, ctx: &mut DeviceContext<'_>) {
        self.dma_due = None;
        if !self.dma_running() {
            return;
        }
        let to_ram = self.dma_cmd & reg::EDU_DMA_DIR != 0;
        let (buffer_addr, ram_addr) = if to_ram {
            (self.dma_src, self.dma_dst)
        } else {
            (self.dma_dst, self.dma_src)
        };
        match Self::buffer_range(buffer_addr, self.dma_count) {
            None => ctx.refuse(format!(
                "edu: DMA range {buffer_addr:#x}+{:#x} is outside the device buffer [{:#x}, {:#x})",
                self.dma_count,
                reg::DMA_START,
                reg::DMA_START + reg::DMA_SIZE
            )),
            Some(range) => {
                let ram = self.clamp(ram_addr);
                let buffer = &mut self.buffer[range];
                if to_ram {
                    Self::dma_to_ram(ctx, ram, buffer);
                } else {
                    Self::dma_from_ram(ctx, ram, buffer);
                }
            }
        }
        self.dma_cmd &= !reg::EDU_DMA_RUN;
        if self.dma_cmd & reg::EDU_DMA_IRQ != 0 {
            self.raise_irq(ctx, reg::DMA_IRQ);
        }
    }
}

impl DeviceModel for Edu {
    fn layout(&self) -> PciLayout {
        let mut l = PciLayout::new(VENDOR_ID, DEVICE_ID);
        l.revision = REVISION;
        l.class_code = CLASS_CODE;
        l.interrupt_pin = 1;
        l.bars[0] = Some(BarLayout::memory32(BAR0_SIZE));
        l.msi = Some(MsiLayout {
            vectors: 1,
            addr64: true,
        });
        l
    }

    fn read(
        &mut self,
        _ctx: &mut DeviceContext<'_>,
        _region: u32,
        offset: u64,
        data: &mut [u8],
    ) -> vfio_hal::Result<()> {
        let val = self.mmio_read(offset, data.len()).to_le_bytes();
        // Fixed-size copies for the sizes the plumbing passes (no memcpy call).
        match data.len() {
            4 => data.copy_from_slice(&val[..4]),
            8 => data.copy_from_slice(&val),
            n => data[..n.min(8)].copy_from_slice(&val[..n.min(8)]),
        }
        Ok(())
    }

    fn write(
        &mut self,
        ctx: &mut DeviceContext<'_>,
        _region: u32,
        offset: u64,
        data: &[u8],
    ) -> vfio_hal::Result<()> {
        let mut bytes = [0u8; 8];
        let n = data.len().min(8);
        bytes[..n].copy_from_slice(&data[..n]);
        self.mmio_write(ctx, offset, u64::from_le_bytes(bytes), data.len());
        Ok(())
    }

    /// QEMU's edu registers no reset handler: registers, buffer and work
    /// in flight survive; the PCI core lowers the INTx line.
    fn reset(&mut self, ctx: &mut DeviceContext<'_>) {
        ctx.set_intx(false);
    }

    /// For a [`migratable`](Edu::migratable) edu: every register, the DMA
    /// buffer, the interrupt status and the work in flight (as time left),
    /// in the layout of [`state`].
    fn save_state(&self, ctx: &DeviceContext<'_>) -> Option<Vec<u8>> {
        self.migratable.then(|| state::save(self, ctx.now()))
    }

    /// Takes a state of an edu with the same DMA mask; the INTx line
    /// follows the loaded interrupt status (as QEMU's PCI core restores
    /// its level), MSI is the destination's own.
    fn load_state(
        &mut self,
        ctx: &mut DeviceContext<'_>,
        bytes: &[u8],
    ) -> std::result::Result<(), String> {
        if !self.migratable {
            return Err("this edu has no migration driver".into());
        }
        *self = state::load(bytes, self.dma_mask, ctx.now())?.migratable();
        ctx.set_intx(self.irq_status != 0 && !ctx.msi_enabled());
        Ok(())
    }

    /// Every edu register: QEMU's `edu_mmio_read` only returns state.
    fn pure_registers(&self) -> Vec<(u32, u64)> {
        [
            reg::ID,
            reg::LIVENESS,
            reg::FACTORIAL,
            reg::STATUS,
            reg::IRQ_STATUS,
            reg::DMA_SRC,
            reg::DMA_DST,
            reg::DMA_CNT,
            reg::DMA_CMD,
        ]
        .map(|offset| (0, offset))
        .to_vec()
    }

    fn deadline(&self) -> Option<Duration> {
        match (self.factorial_due, self.dma_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_deadline(&mut self, ctx: &mut DeviceContext<'_>) {
        let now = ctx.now();
        if self.factorial_due.is_some_and(|t| t <= now) {
            self.finish_factorial(ctx);
        }
        if self.dma_due.is_some_and(|t| t <= now) {
            self.finish_dma(ctx);
        }
    }
}

/// The migration layout of an edu's state, little endian: the magic
/// `EDU1`, the DMA mask, liveness, factorial, status and interrupt status
/// (`u32`s), DMA source, destination, count and command (`u64`s), the
/// nanoseconds left until the factorial and the DMA finish (`u64::MAX`:
/// none in flight; one is in flight exactly when the status says
/// computing, the other exactly when the command says running), then the
/// 4 KiB buffer.
pub mod state {
    use std::time::Duration;

    use super::{reg, Edu};
    use crate::models::fields::Fields;

    const MAGIC: &[u8; 4] = b"EDU1";
    /// The state's length in bytes.
    pub const LEN: usize = 4 + 8 + 4 * 4 + 4 * 8 + 2 * 8 + reg::DMA_SIZE as usize;
    const NONE: u64 = u64::MAX;

    fn left(due: Option<Duration>, now: Duration) -> u64 {
        due.map_or(NONE, |t| {
            u64::try_from(t.saturating_sub(now).as_nanos()).unwrap_or(NONE - 1)
        })
    }

    pub(super) fn save(edu: &Edu, now: Duration) -> Vec<u8> {
        let mut out = Vec::with_capacity(LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&edu.dma_mask.to_le_bytes());
        for v in [edu.liveness, edu.factorial, edu.status, edu.irq_status] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [edu.dma_src, edu.dma_dst, edu.dma_count, edu.dma_cmd] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for due in [edu.factorial_due, edu.dma_due] {
            out.extend_from_slice(&left(due, now).to_le_bytes());
        }
        out.extend_from_slice(&edu.buffer);
        out
    }

    /// Parses a saved state for an edu whose DMA mask is `dma_mask`, its
    /// work scheduled from `now`.
    pub(super) fn load(bytes: &[u8], dma_mask: u64, now: Duration) -> Result<Edu, String> {
        if bytes.len() != LEN {
            return Err(format!("an edu state is {LEN} bytes, not {}", bytes.len()));
        }
        let mut f = Fields(bytes);
        let magic = f.take::<4>()?;
        if &magic != MAGIC {
            return Err(format!("not an edu state (magic {magic:02x?})"));
        }
        let mask = f.u64()?;
        if mask != dma_mask {
            return Err(format!(
                "saved by an edu with DMA mask {mask:#x}, this one has {dma_mask:#x}"
            ));
        }
        let mut edu = Edu::with_dma_mask(dma_mask);
        edu.liveness = f.u32()?;
        edu.factorial = f.u32()?;
        edu.status = f.u32()?;
        edu.irq_status = f.u32()?;
        edu.dma_src = f.u64()?;
        edu.dma_dst = f.u64()?;
        edu.dma_count = f.u64()?;
        edu.dma_cmd = f.u64()?;
        let due =
            |left: u64| (left != NONE).then(|| now.saturating_add(Duration::from_nanos(left)));
        edu.factorial_due = due(f.u64()?);
        edu.dma_due = due(f.u64()?);
        // As every edu keeps them: computing while a factorial is due, the
        // DMA running while a transfer is (else the registers stay locked).
        if (edu.status & reg::EDU_STATUS_COMPUTING != 0) != edu.factorial_due.is_some() {
            return Err("computing needs a factorial due, and only it has one".into());
        }
        if edu.dma_running() != edu.dma_due.is_some() {
            return Err("a running DMA needs a finish time, and only it has one".into());
        }
        if f.0.len() != edu.buffer.len() {
            return Err("the buffer is not 4 KiB".into());
        }
        edu.buffer.copy_from_slice(f.0);
        Ok(edu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factorial_wraps_like_u32_arithmetic() {
        assert_eq!(factorial(0), 1);
        assert_eq!(factorial(1), 1);
        assert_eq!(factorial(12), 479_001_600);
        // 13! = 6227020800 = 0x1_7328_cc00
        assert_eq!(factorial(13), 0x7328_cc00);
        let slow = (1..=20u32).fold(1u32, |a, n| a.wrapping_mul(n));
        assert_eq!(factorial(20), slow);
        assert_eq!(factorial(34), 0);
        assert_eq!(factorial(u32::MAX), 0);
    }

    #[test]
    fn buffer_range_checks_overflow_and_bounds() {
        assert_eq!(Edu::buffer_range(0x40000, 4096), Some(0..4096));
        assert_eq!(Edu::buffer_range(0x40ff0, 16), Some(0xff0..0x1000));
        assert_eq!(Edu::buffer_range(0x40ff0, 17), None);
        assert_eq!(Edu::buffer_range(0x3ffff, 1), None);
        assert_eq!(Edu::buffer_range(u64::MAX, 2), None);
        assert_eq!(Edu::buffer_range(0x40000, 0), Some(0..0));
    }
}
