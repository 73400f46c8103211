//! An MSI-X DMA copy engine with the contract of the kernel selftests' drivers.
//!
//! `tools/testing/selftests/vfio` drives real DMA engines (Intel DSA, IOAT)
//! through a small driver interface; this model keeps that contract:
//! - a copy of `len` bytes from a source IOVA to a destination IOVA succeeds
//!   and raises exactly one MSI-X interrupt;
//! - a copy from or to an unmapped (or read-only destination) IOVA corrupts
//!   nothing — the IOMMU checks the whole range before a byte moves — raises
//!   no interrupt, records the IOMMU fault and reports an error status.
//!
//! # PCI
//! PCI Express endpoint `1234:0c0e`, class `0x080100` (DMA controller), no
//! INTx, no MSI, MSI-X with [`DEFAULT_VECTORS`] vectors (see
//! [`CopyEngine::with_vectors`]).
//!
//! | BAR | size | contents |
//! |---|---|---|
//! | 0 | 4 KiB, 32-bit | registers (below) |
//! | 2 | 32 KiB, 64-bit prefetchable | SRAM `0x0000..0x4000`, MSI-X table at `0x4000`, PBA at `0x4800`, SRAM `0x5000..0x8000` |
//!
//! BAR2's SRAM is ordinary device memory backed by a memfd: it is reported
//! through a sparse-mmap capability that leaves out the MSI-X page, so
//! [`vfio_hal::Region::mmap`] maps both SRAM areas and region reads and
//! writes see the same bytes. The engine can use it as a copy source or
//! destination ([`reg::DOORBELL_SRC_SRAM`], [`reg::DOORBELL_DST_SRAM`]).
//!
//! Region 9 is a read-only vendor-specific region (type
//! `VFIO_REGION_TYPE_PCI_VENDOR_TYPE | 0x1234`, subtype 1) of two u64
//! counters: completed requests, failed requests.
//!
//! # Registers (BAR0)
//! 32-bit registers take 4-byte accesses; 64-bit ones take 8-byte accesses
//! or 4-byte halves. Other widths and offsets are ignored and read all ones.
//!
//! | offset | access | register |
//! |---|---|---|
//! | `0x00` | RO u32 | identification [`ID_VALUE`] |
//! | `0x04` | RO u32 | number of MSI-X vectors |
//! | `0x08` | RW u64 | source: IOVA, or SRAM offset in BAR2 |
//! | `0x10` | RW u64 | destination: IOVA, or SRAM offset in BAR2 |
//! | `0x18` | RW u32 | length in bytes, 1 to [`MAX_LEN`] |
//! | `0x1c` | RW u32 | MSI-X vector raised on completion |
//! | `0x20` | WO u32 | doorbell: bit 0 go, bit 1 source is SRAM, bit 2 destination is SRAM |
//! | `0x24` | RW u32 | status: bit 0 busy (RO), bit 1 done, bit 2 error (both write 1 to clear) |
//! | `0x28` | RO u32 | error code of the last failed request ([`err`]) |
//! | `0x2c` | RO u32 | completed requests (wraps) |
//! | `0x30` | RO u64 | the faulting address of the last failed request |
//!
//! Writes to 0x08–0x20 are ignored while busy. A doorbell with a bad length
//! or vector fails at once; otherwise the copy runs [`COPY_LATENCY`] later
//! in virtual time: the whole source is read, then the whole destination
//! written, so a fault on either side leaves the destination untouched.
//! Bus mastering must be enabled (else error [`err::BUS_MASTER`]).

use std::time::Duration;

use crate::layout::{BarLayout, DeviceRegionLayout, MsixLayout, PciLayout, REGION_TYPE_PCI_VENDOR};
use crate::model::{DeviceContext, DeviceModel, DmaError};

/// PCI vendor id.
pub const VENDOR_ID: u16 = 0x1234;
/// PCI device id.
pub const DEVICE_ID: u16 = 0x0c0e;
/// Class code: DMA controller.
pub const CLASS_CODE: u32 = 0x080100;
/// Value of the identification register.
pub const ID_VALUE: u32 = 0x0c0e_0001;
/// Default MSI-X table size.
pub const DEFAULT_VECTORS: u16 = 4;
/// Largest copy.
pub const MAX_LEN: u32 = 1 << 20;
/// Virtual time from doorbell to completion.
pub const COPY_LATENCY: Duration = Duration::from_micros(10);
/// BAR holding the SRAM and the MSI-X structures.
pub const SRAM_BAR: u8 = 2;
/// The SRAM areas of BAR2, as (offset, size).
pub const SRAM_AREAS: [(u64, u64); 2] = [(0x0000, 0x4000), (0x5000, 0x3000)];
/// Offset of the MSI-X table in BAR2.
pub const MSIX_TABLE_OFFSET: u32 = 0x4000;
/// Offset of the MSI-X PBA in BAR2.
pub const MSIX_PBA_OFFSET: u32 = 0x4800;
/// Index of the counters region.
pub const COUNTERS_REGION: u32 = 9;

/// Register offsets and bits.
pub mod reg {
    /// Identification (RO).
    pub const ID: u64 = 0x00;
    /// MSI-X vector count (RO).
    pub const VECTORS: u64 = 0x04;
    /// Source address.
    pub const SRC: u64 = 0x08;
    /// Destination address.
    pub const DST: u64 = 0x10;
    /// Length.
    pub const LEN: u64 = 0x18;
    /// Completion vector.
    pub const VECTOR: u64 = 0x1c;
    /// Doorbell (WO).
    pub const DOORBELL: u64 = 0x20;
    /// Status.
    pub const STATUS: u64 = 0x24;
    /// Error code (RO).
    pub const ERROR: u64 = 0x28;
    /// Completed requests (RO).
    pub const COMPLETED: u64 = 0x2c;
    /// Faulting address (RO).
    pub const FAULT_ADDR: u64 = 0x30;

    /// Doorbell: start the copy.
    pub const DOORBELL_GO: u32 = 1 << 0;
    /// Doorbell: the source is an SRAM offset in BAR2.
    pub const DOORBELL_SRC_SRAM: u32 = 1 << 1;
    /// Doorbell: the destination is an SRAM offset in BAR2.
    pub const DOORBELL_DST_SRAM: u32 = 1 << 2;
    /// Status: a copy is in progress.
    pub const STATUS_BUSY: u32 = 1 << 0;
    /// Status: the last copy completed.
    pub const STATUS_DONE: u32 = 1 << 1;
    /// Status: the last copy failed; see the error register.
    pub const STATUS_ERROR: u32 = 1 << 2;
}

/// Error codes of the error register.
pub mod err {
    /// No error.
    pub const NONE: u32 = 0;
    /// Reading the source faulted in the IOMMU.
    pub const SRC_FAULT: u32 = 1;
    /// Writing the destination faulted in the IOMMU.
    pub const DST_FAULT: u32 = 2;
    /// Length 0 or above the maximum.
    pub const BAD_LENGTH: u32 = 3;
    /// Vector beyond the MSI-X table.
    pub const BAD_VECTOR: u32 = 4;
    /// Bus mastering is disabled in the command register.
    pub const BUS_MASTER: u32 = 5;
    /// An SRAM range outside the SRAM areas.
    pub const SRAM_RANGE: u32 = 6;
}

#[derive(Debug, Clone, Copy, Default)]
struct Request {
    src: u64,
    dst: u64,
    len: u32,
    vector: u32,
    doorbell: u32,
}

/// The copy engine model. See the module docs for the register map.
#[derive(Debug, Clone)]
pub struct CopyEngine {
    vectors: u16,
    regs: Request,
    running: Option<Request>,
    due: Option<Duration>,
    status: u32,
    error: u32,
    fault_addr: u64,
    completed: u64,
    failed: u64,
    scratch: Vec<u8>,
    /// Offers VFIO migration ([`CopyEngine::migratable`]).
    migratable: bool,
}

impl Default for CopyEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl CopyEngine {
    /// An idle engine with [`DEFAULT_VECTORS`] MSI-X vectors.
    pub fn new() -> Self {
        Self::with_vectors(DEFAULT_VECTORS)
    }

    /// An idle engine with `vectors` MSI-X vectors (1–128: the table must
    /// fit before the PBA; plugging refuses other counts).
    pub fn with_vectors(vectors: u16) -> Self {
        Self {
            vectors,
            regs: Request::default(),
            running: None,
            due: None,
            status: 0,
            error: err::NONE,
            fault_addr: 0,
            completed: 0,
            failed: 0,
            scratch: Vec::new(),
            migratable: false,
        }
    }

    /// This engine with a migration driver: its device offers VFIO
    /// migration (see [`crate::migration`]) and carries its registers,
    /// counters, the request in flight (with the time left) and both SRAM
    /// areas, laid out as [`state`] says.
    pub fn migratable(mut self) -> Self {
        self.migratable = true;
        self
    }

    fn busy(&self) -> bool {
        self.running.is_some()
    }

    fn fail(&mut self, code: u32, addr: u64) {
        self.status = (self.status & !reg::STATUS_BUSY) | reg::STATUS_ERROR;
        self.error = code;
        self.fault_addr = addr;
        self.failed += 1;
    }

    fn ring(&mut self, ctx: &mut DeviceContext<'_>, doorbell: u32) {
        if doorbell & reg::DOORBELL_GO == 0 || self.busy() {
            return;
        }
        self.status &= !(reg::STATUS_DONE | reg::STATUS_ERROR);
        let request = Request {
            doorbell,
            ..self.regs
        };
        if request.len == 0 || request.len > MAX_LEN {
            return self.fail(err::BAD_LENGTH, 0);
        }
        if request.vector >= u32::from(self.vectors) {
            return self.fail(err::BAD_VECTOR, 0);
        }
        self.status |= reg::STATUS_BUSY;
        self.running = Some(request);
        self.due = Some(ctx.now() + COPY_LATENCY);
    }

    /// Runs a request: whole source into scratch, then whole destination.
    fn execute(&mut self, ctx: &mut DeviceContext<'_>, r: Request) {
        let len = r.len as usize;
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.resize(len, 0);
        let read = if r.doorbell & reg::DOORBELL_SRC_SRAM != 0 {
            ctx.ram_read(SRAM_BAR, r.src, &mut scratch)
                .map_err(|_| (err::SRAM_RANGE, r.src))
        } else {
            ctx.dma_read(r.src, &mut scratch)
                .map_err(|e| dma_code(e, err::SRC_FAULT, r.src))
        };
        let result = read.and_then(|()| {
            if r.doorbell & reg::DOORBELL_DST_SRAM != 0 {
                ctx.ram_write(SRAM_BAR, r.dst, &scratch)
                    .map_err(|_| (err::SRAM_RANGE, r.dst))
            } else {
                ctx.dma_write(r.dst, &scratch)
                    .map_err(|e| dma_code(e, err::DST_FAULT, r.dst))
            }
        });
        self.scratch = scratch;
        match result {
            Ok(()) => {
                self.status = (self.status & !reg::STATUS_BUSY) | reg::STATUS_DONE;
                self.error = err::NONE;
                self.completed += 1;
                if ctx.msix_enabled() {
                    ctx.signal_msix(r.vector);
                }
            }
            Err((code, addr)) => self.fail(code, addr),
        }
    }

    fn read32(&self, offset: u64) -> Option<u32> {
        Some(match offset {
            reg::ID => ID_VALUE,
            reg::VECTORS => u32::from(self.vectors),
            reg::LEN => self.regs.len,
            reg::VECTOR => self.regs.vector,
            reg::DOORBELL => 0,
            reg::STATUS => self.status,
            reg::ERROR => self.error,
            reg::COMPLETED => self.completed as u32,
            _ => return None,
        })
    }

    fn reg64(&self, base: u64) -> Option<u64> {
        Some(match base {
            reg::SRC => self.regs.src,
            reg::DST => self.regs.dst,
            reg::FAULT_ADDR => self.fault_addr,
            _ => return None,
        })
    }

    fn set_reg64(&mut self, base: u64, f: impl FnOnce(u64) -> u64) {
        if self.busy() {
            return;
        }
        match base {
            reg::SRC => self.regs.src = f(self.regs.src),
            reg::DST => self.regs.dst = f(self.regs.dst),
            _ => {}
        }
    }

    fn bar0_read(&self, offset: u64, size: usize) -> u64 {
        match size {
            8 => self.reg64(offset).unwrap_or(u64::MAX),
            4 => match (self.read32(offset), self.reg64(offset & !7)) {
                (Some(v), _) => u64::from(v),
                (None, Some(v)) if offset & 4 == 0 => v & 0xffff_ffff,
                (None, Some(v)) => v >> 32,
                (None, None) => u64::MAX,
            },
            _ => u64::MAX,
        }
    }

    fn bar0_write(&mut self, ctx: &mut DeviceContext<'_>, offset: u64, val: u64, size: usize) {
        match (size, offset) {
            (8, reg::SRC | reg::DST) => self.set_reg64(offset, |_| val),
            (4, reg::SRC | reg::DST) => {
                self.set_reg64(offset, |old| (old & !0xffff_ffff) | (val & 0xffff_ffff))
            }
            (4, o) if o == reg::SRC + 4 || o == reg::DST + 4 => {
                self.set_reg64(o - 4, |old| (old & 0xffff_ffff) | (val << 32))
            }
            (4, reg::LEN) if !self.busy() => self.regs.len = val as u32,
            (4, reg::VECTOR) if !self.busy() => self.regs.vector = val as u32,
            (4, reg::DOORBELL) => self.ring(ctx, val as u32),
            (4, reg::STATUS) => {
                self.status &= !(val as u32 & (reg::STATUS_DONE | reg::STATUS_ERROR));
            }
            _ => {}
        }
    }
}

fn dma_code(e: DmaError, fault: u32, addr: u64) -> (u32, u64) {
    match e {
        DmaError::BusMasterDisabled => (err::BUS_MASTER, addr),
        DmaError::Fault(f) => (fault, f.at),
    }
}

impl DeviceModel for CopyEngine {
    fn layout(&self) -> PciLayout {
        let mut l = PciLayout::new(VENDOR_ID, DEVICE_ID);
        l.revision = 1;
        l.class_code = CLASS_CODE;
        l.pcie = true;
        l.bars[0] = Some(BarLayout::memory32(0x1000));
        let mut bar2 = BarLayout::memory64(0x8000).prefetchable();
        for (offset, size) in SRAM_AREAS {
            bar2 = bar2.with_ram(offset, size);
        }
        l.bars[2] = Some(bar2);
        l.msix = Some(MsixLayout {
            vectors: self.vectors,
            table_bar: SRAM_BAR,
            table_offset: MSIX_TABLE_OFFSET,
            pba_bar: SRAM_BAR,
            pba_offset: MSIX_PBA_OFFSET,
        });
        l.device_regions.push(DeviceRegionLayout {
            ty: REGION_TYPE_PCI_VENDOR | u32::from(VENDOR_ID),
            subtype: 1,
            size: 16,
            writable: false,
        });
        l
    }

    fn read(
        &mut self,
        _ctx: &mut DeviceContext<'_>,
        region: u32,
        offset: u64,
        data: &mut [u8],
    ) -> vfio_hal::Result<()> {
        match region {
            0 => {
                let v = self.bar0_read(offset, data.len()).to_le_bytes();
                let n = data.len().min(8);
                data[..n].copy_from_slice(&v[..n]);
            }
            COUNTERS_REGION => {
                let mut counters = [0u8; 16];
                counters[..8].copy_from_slice(&self.completed.to_le_bytes());
                counters[8..].copy_from_slice(&self.failed.to_le_bytes());
                let at = offset as usize;
                match counters.get(at..at + data.len()) {
                    Some(src) => data.copy_from_slice(src),
                    None => data.fill(0xff),
                }
            }
            // BAR2 outside SRAM and the MSI-X structures: reserved.
            _ => data.fill(0xff),
        }
        Ok(())
    }

    fn write(
        &mut self,
        ctx: &mut DeviceContext<'_>,
        region: u32,
        offset: u64,
        data: &[u8],
    ) -> vfio_hal::Result<()> {
        if region == 0 {
            let mut bytes = [0u8; 8];
            let n = data.len().min(8);
            bytes[..n].copy_from_slice(&data[..n]);
            self.bar0_write(ctx, offset, u64::from_le_bytes(bytes), data.len());
        }
        Ok(())
    }

    fn reset(&mut self, _ctx: &mut DeviceContext<'_>) {
        let scratch = std::mem::take(&mut self.scratch);
        let migratable = self.migratable;
        *self = Self::with_vectors(self.vectors);
        self.scratch = scratch;
        self.migratable = migratable;
    }

    /// For a [`migratable`](CopyEngine::migratable) engine, the layout of
    /// [`state`].
    fn save_state(&self, ctx: &DeviceContext<'_>) -> Option<Vec<u8>> {
        if !self.migratable {
            return None;
        }
        let mut sram = Vec::with_capacity(state::SRAM_BYTES);
        for (offset, len) in SRAM_AREAS {
            let mut area = vec![0; len as usize];
            // The areas are the layout's own: reading them cannot fail.
            ctx.ram_read(SRAM_BAR, offset, &mut area).ok()?;
            sram.extend_from_slice(&area);
        }
        Some(state::save(self, ctx.now(), &sram))
    }

    /// Takes the state of an engine with as many vectors; the SRAM areas
    /// are written back.
    fn load_state(
        &mut self,
        ctx: &mut DeviceContext<'_>,
        bytes: &[u8],
    ) -> std::result::Result<(), String> {
        if !self.migratable {
            return Err("this engine has no migration driver".into());
        }
        let (mut loaded, sram) = state::load(bytes, self.vectors, ctx.now())?;
        let mut at = 0;
        for (offset, len) in SRAM_AREAS {
            let len = len as usize;
            ctx.ram_write(SRAM_BAR, offset, &sram[at..at + len])
                .map_err(|e| format!("write SRAM back: {e}"))?;
            at += len;
        }
        loaded.scratch = std::mem::take(&mut self.scratch);
        loaded.migratable = true;
        *self = loaded;
        Ok(())
    }

    fn deadline(&self) -> Option<Duration> {
        self.due
    }

    fn on_deadline(&mut self, ctx: &mut DeviceContext<'_>) {
        self.due = None;
        if let Some(r) = self.running.take() {
            self.execute(ctx, r);
        }
    }
}

/// The migration layout of a copy engine's state, little endian: the magic
/// `CPE1`, the vector count (`u16`), the request registers (source and
/// destination `u64`, length, vector and doorbell `u32`), a byte 1 and the
/// same five fields for a request in flight (0 and zeros for none; one in
/// flight has a length of 1 to [`MAX_LEN`] and a vector the engine has), the
/// nanoseconds left until it finishes (`u64::MAX`: none), status and error
/// (`u32`), the fault address, completed and failed counts (`u64`), then
/// both SRAM areas, in order.
pub mod state {
    use std::time::Duration;

    use super::{CopyEngine, Request, MAX_LEN, SRAM_AREAS};
    use crate::models::fields::Fields;

    const MAGIC: &[u8; 4] = b"CPE1";
    /// Bytes of both SRAM areas.
    pub const SRAM_BYTES: usize = (SRAM_AREAS[0].1 + SRAM_AREAS[1].1) as usize;
    const REQUEST: usize = 8 + 8 + 4 + 4 + 4;
    /// The state's length in bytes.
    pub const LEN: usize = 4 + 2 + REQUEST + 1 + REQUEST + 8 + 4 + 4 + 8 + 8 + 8 + SRAM_BYTES;
    const NONE: u64 = u64::MAX;

    fn put_request(out: &mut Vec<u8>, r: &Request) {
        out.extend_from_slice(&r.src.to_le_bytes());
        out.extend_from_slice(&r.dst.to_le_bytes());
        for v in [r.len, r.vector, r.doorbell] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    pub(super) fn save(engine: &CopyEngine, now: Duration, sram: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&engine.vectors.to_le_bytes());
        put_request(&mut out, &engine.regs);
        out.push(u8::from(engine.running.is_some()));
        put_request(&mut out, &engine.running.unwrap_or_default());
        let left = engine.due.map_or(NONE, |t| {
            u64::try_from(t.saturating_sub(now).as_nanos()).unwrap_or(NONE - 1)
        });
        out.extend_from_slice(&left.to_le_bytes());
        out.extend_from_slice(&engine.status.to_le_bytes());
        out.extend_from_slice(&engine.error.to_le_bytes());
        for v in [engine.fault_addr, engine.completed, engine.failed] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(sram);
        out
    }

    impl Fields<'_> {
        fn request(&mut self) -> Result<Request, String> {
            Ok(Request {
                src: self.u64()?,
                dst: self.u64()?,
                len: self.u32()?,
                vector: self.u32()?,
                doorbell: self.u32()?,
            })
        }
    }

    /// Parses a saved state for an engine with `vectors` MSI-X vectors,
    /// its request in flight scheduled from `now`; the engine and the
    /// SRAM bytes.
    pub(super) fn load(
        bytes: &[u8],
        vectors: u16,
        now: Duration,
    ) -> Result<(CopyEngine, &[u8]), String> {
        if bytes.len() != LEN {
            return Err(format!(
                "a copy engine state is {LEN} bytes, not {}",
                bytes.len()
            ));
        }
        let mut f = Fields(bytes);
        let magic = f.take::<4>()?;
        if &magic != MAGIC {
            return Err(format!("not a copy engine state (magic {magic:02x?})"));
        }
        let saved_vectors = u16::from_le_bytes(f.take()?);
        if saved_vectors != vectors {
            return Err(format!(
                "saved by an engine with {saved_vectors} vectors, this one has {vectors}"
            ));
        }
        let mut engine = CopyEngine::with_vectors(vectors);
        engine.regs = f.request()?;
        let [running] = f.take::<1>()?;
        let in_flight = f.request()?;
        let left = f.u64()?;
        engine.running = match running {
            0 => None,
            1 => Some(in_flight),
            other => return Err(format!("bad in-flight flag {other}")),
        };
        engine.due = (left != NONE).then(|| now.saturating_add(Duration::from_nanos(left)));
        if engine.running.is_some() != engine.due.is_some() {
            return Err("a request in flight needs a finish time, and only one does".into());
        }
        // Only what a doorbell starts: a longer request would have the
        // engine allocate its length (up to 4 GiB) when it runs.
        if let Some(r) = engine.running {
            if r.len == 0 || r.len > MAX_LEN || r.vector >= u32::from(vectors) {
                return Err(format!(
                    "a request in flight of {} bytes raising vector {} was never started",
                    r.len, r.vector
                ));
            }
        }
        engine.status = f.u32()?;
        engine.error = f.u32()?;
        engine.fault_addr = f.u64()?;
        engine.completed = f.u64()?;
        engine.failed = f.u64()?;
        if f.0.len() != SRAM_BYTES {
            return Err("the SRAM is not whole".into());
        }
        Ok((engine, f.0))
    }
}
