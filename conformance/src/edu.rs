//! A driver for QEMU's `edu` teaching device, written once against the hal traits.
//!
//! The same code drives the real device behind vfio-pci in the real-kernel
//! lane and the mock's model of it, which is the point: a user-space driver
//! tested without hardware is the driver that runs with it.
//!
//! The device (QEMU `hw/misc/edu.c`): BAR 0 holds 32-bit registers below
//! 0x80 and 32/64-bit DMA registers from 0x80; one MSI vector; a 4 KiB
//! buffer at device address [`reg::DMA_START`]. Completions are polled with
//! bounded timeouts and short sleeps — the real device finishes a DMA after
//! 100 ms of virtual time, the mock when it is polled — so correctness never
//! depends on how long anything sleeps.
//!
//! ```
//! use vfio_hal::Container;
//! use vfio_hal_conformance::edu::{expected_factorial, EduDriver};
//! use vfio_hal_mock::{models::Edu, MockContainer};
//!
//! let container = MockContainer::new();
//! container.plug("edu", Edu::new())?;
//! let mut edu = EduDriver::open(container.open_device("edu")?)?;
//! edu.check_liveness(0x1234_5678)?;
//! edu.enable_msi()?;
//! assert_eq!(edu.factorial(10)?, expected_factorial(10));
//! edu.round_trip(&container, 0x10_0000, 4096)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::{Duration, Instant};

use vfio_hal::irq::index as irq_index;
use vfio_hal::{
    Container, Device, DmaAccess, DmaBuffer, ErrorKind, Irq, MapBufferError, PciConfig, RegionExt,
    UnmapError,
};

use crate::dma_engine::{Completion, DmaEngine, DriverMemory, EngineKind};
use crate::fixture::Fixture;
use reg::{
    DMA_IRQ, DMA_SIZE, DMA_START, EDU_DMA_DIR, EDU_DMA_IRQ, EDU_DMA_RUN, EDU_STATUS_COMPUTING,
    EDU_STATUS_IRQFACT, FACT_IRQ, ID_VALUE,
};
use vfio_hal::eventfd::{EventFd, EventFdExt};

/// PCI vendor id of edu.
pub const VENDOR_ID: u16 = 0x1234;
/// PCI device id of edu.
pub const DEVICE_ID: u16 = 0x11e8;
/// PCI revision of edu.
pub const REVISION: u8 = 0x10;
/// edu masks RAM addresses of a DMA to 28 bits (QEMU's default `dma_mask`).
pub const DMA_MASK: u64 = (1 << 28) - 1;

/// BAR 0 register offsets and bits.
///
/// This driver reads the device as a driver reads real hardware, from its
/// own copy of the register map: it shares no constant with the mock's
/// model (`vfio_hal_mock::models::edu::reg`), so a bug in the model cannot
/// hide from the suite. Names and widths follow QEMU's `hw/misc/edu.c` in
/// both copies (its `#define`s; `dma_addr_t`, 64 bits, for the DMA
/// registers and their command bits; offsets named after the fields they
/// hold), and the test `register_maps` checks that the copies agree name
/// for name and value for value.
pub mod reg {
    /// Identification, [`ID_VALUE`] (RO).
    pub const ID: u64 = 0x00;
    /// Liveness: reads back the bitwise NOT of what was written.
    pub const LIVENESS: u64 = 0x04;
    /// Factorial: a write starts computing n!; a read gives the result.
    pub const FACTORIAL: u64 = 0x08;
    /// Status: [`EDU_STATUS_COMPUTING`] (RO), [`EDU_STATUS_IRQFACT`].
    pub const STATUS: u64 = 0x20;
    /// Interrupt status (RO).
    pub const IRQ_STATUS: u64 = 0x24;
    /// Write: interrupt status |= value, and raise the interrupt.
    pub const IRQ_RAISE: u64 = 0x60;
    /// Write: acknowledge (clear) interrupt status bits.
    pub const IRQ_ACK: u64 = 0x64;
    /// DMA source address.
    pub const DMA_SRC: u64 = 0x80;
    /// DMA destination address.
    pub const DMA_DST: u64 = 0x88;
    /// DMA byte count.
    pub const DMA_CNT: u64 = 0x90;
    /// DMA command.
    pub const DMA_CMD: u64 = 0x98;

    /// The identification register's value.
    pub const ID_VALUE: u32 = 0x0100_00ed;
    /// Status: a factorial is being computed.
    pub const EDU_STATUS_COMPUTING: u32 = 0x01;
    /// Status: raise interrupt [`FACT_IRQ`] when the factorial finishes.
    pub const EDU_STATUS_IRQFACT: u32 = 0x80;
    /// Interrupt status bit of a finished factorial.
    pub const FACT_IRQ: u32 = 0x001;
    /// Interrupt status bit of a finished DMA.
    pub const DMA_IRQ: u32 = 0x100;
    /// DMA command: start (reads as 1 while the transfer runs).
    pub const EDU_DMA_RUN: u64 = 0x1;
    /// DMA command: the direction bit (`EDU_DMA_DIR(cmd)`); set
    /// (`EDU_DMA_TO_PCI`) = device buffer → RAM, clear = RAM → device buffer.
    pub const EDU_DMA_DIR: u64 = 0x2;
    /// DMA command: raise interrupt [`DMA_IRQ`] when done.
    pub const EDU_DMA_IRQ: u64 = 0x4;
    /// Device address of the DMA buffer.
    pub const DMA_START: u64 = 0x40000;
    /// Size of the DMA buffer.
    pub const DMA_SIZE: u64 = 4096;
}

/// How long the driver waits for the device unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
const POLL_INTERVAL: Duration = Duration::from_millis(1);
const IRQ_WAIT_SLICE: Duration = Duration::from_millis(10);

/// n! with u32 wrap-around, as edu computes it.
pub fn expected_factorial(n: u32) -> u32 {
    (1..=n).fold(1u32, |acc, k| acc.wrapping_mul(k))
}

/// What went wrong in a driver operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError {
    /// A hal call failed.
    #[error(transparent)]
    Hal(#[from] vfio_hal::Error),
    /// The OS refused something the driver needs (an eventfd).
    #[error("{what}: {source}")]
    Os {
        /// What the driver was doing.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The device did not finish, or its interrupt did not arrive, in time.
    #[error("{what}: no answer within {timeout:?}")]
    Timeout {
        /// What the driver waited for.
        what: &'static str,
        /// How long it waited.
        timeout: Duration,
    },
    /// A register read back something the device model rules out.
    #[error("{what}: expected {expected:#x}, read {got:#x}")]
    Unexpected {
        /// Which register or check.
        what: &'static str,
        /// What the device should have returned.
        expected: u64,
        /// What it returned.
        got: u64,
    },
    /// Data moved by DMA differs from what was written.
    #[error("DMA data check: byte {offset} should be {expected:#04x}, is {got:#04x}")]
    DataMismatch {
        /// Offset of the first differing byte.
        offset: usize,
        /// The byte written.
        expected: u8,
        /// The byte found.
        got: u8,
    },
    /// A request the device cannot serve (edu would abort QEMU on it).
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
}

impl DriverError {
    /// The hal error kind, where a hal call failed.
    pub fn hal_kind(&self) -> Option<ErrorKind> {
        match self {
            Self::Hal(e) => Some(e.kind()),
            _ => None,
        }
    }
}

impl From<MapBufferError> for DriverError {
    fn from(e: MapBufferError) -> Self {
        Self::Hal(e.error)
    }
}

impl From<UnmapError> for DriverError {
    fn from(e: UnmapError) -> Self {
        Self::Hal(e.error)
    }
}

/// Direction of an edu DMA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// RAM (an IOVA) into the device buffer.
    ToDevice,
    /// The device buffer out to RAM (an IOVA).
    ToRam,
}

/// A driver for one edu device.
///
/// # Guarantees
/// - [`EduDriver::open`] checks the identity and enables memory decode and
///   bus mastering (vfio-pci leaves both off).
/// - Every wait is bounded by the driver's timeout and fails with
///   [`DriverError::Timeout`]; the driver never relies on sleeping long enough.
/// - With MSI enabled, every completion waits for exactly its interrupt, checks
///   the interrupt-status bit and acknowledges it.
/// - Dropping the driver tears the MSI route down before the eventfd closes.
pub struct EduDriver<D: Device> {
    bar: D::Region,
    msi: D::Irq,
    irq: Option<EventFd>,
    timeout: Duration,
    device: D,
}

impl<D: Device> std::fmt::Debug for EduDriver<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EduDriver")
            .field("device", &self.device.info().name)
            .field("msi", &self.irq)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl<D: Device> EduDriver<D> {
    /// Takes an opened device, checks it is an edu and enables bus mastering.
    pub fn open(device: D) -> Result<Self, DriverError> {
        let vendor = device.vendor_id()?;
        let id = device.device_id()?;
        if (vendor, id) != (VENDOR_ID, DEVICE_ID) {
            return Err(DriverError::Unexpected {
                what: "PCI vendor:device id",
                expected: (u64::from(VENDOR_ID) << 16) | u64::from(DEVICE_ID),
                got: (u64::from(vendor) << 16) | u64::from(id),
            });
        }
        let bar = device.region(vfio_hal::pci::region::BAR0)?;
        let msi = device.irq(irq_index::MSI)?;
        device.set_bus_master(true)?;
        let driver = Self {
            bar,
            msi,
            irq: None,
            timeout: DEFAULT_TIMEOUT,
            device,
        };
        let ident = driver.identification()?;
        if ident & 0xff != ID_VALUE & 0xff {
            return Err(DriverError::Unexpected {
                what: "identification register",
                expected: u64::from(ID_VALUE),
                got: u64::from(ident),
            });
        }
        Ok(driver)
    }

    /// Sets how long waits may take.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// BAR 0.
    pub fn bar(&self) -> &D::Region {
        &self.bar
    }

    /// The MSI irq index.
    pub fn msi(&self) -> &D::Irq {
        &self.msi
    }

    /// The eventfd MSI is routed to, once [`EduDriver::enable_msi`] ran.
    pub fn msi_eventfd(&self) -> Option<&EventFd> {
        self.irq.as_ref()
    }

    /// The identification register (`0x010000ed` on QEMU's edu).
    pub fn identification(&self) -> Result<u32, DriverError> {
        Ok(self.bar.read_at::<u32>(reg::ID)?)
    }

    /// Writes `x` to the liveness register and checks it reads back `!x`.
    pub fn check_liveness(&self, x: u32) -> Result<(), DriverError> {
        self.bar.write_at(reg::LIVENESS, x)?;
        let got = self.bar.read_at::<u32>(reg::LIVENESS)?;
        if got == !x {
            Ok(())
        } else {
            Err(DriverError::Unexpected {
                what: "liveness register",
                expected: u64::from(!x),
                got: u64::from(got),
            })
        }
    }

    /// Routes MSI vector 0 to a new eventfd (a no-op if already routed).
    pub fn enable_msi(&mut self) -> Result<(), DriverError> {
        if self.irq.is_some() {
            return Ok(());
        }
        let fd = EventFd::nonblocking().map_err(|source| DriverError::Os {
            what: "create the MSI eventfd",
            source,
        })?;
        self.msi.set_eventfd(0, Some(fd.as_fd()))?;
        self.irq = Some(fd);
        Ok(())
    }

    /// Tears the MSI route down (a no-op if not routed).
    pub fn disable_msi(&mut self) -> Result<(), DriverError> {
        if self.irq.is_some() {
            self.msi.disable()?;
            self.irq = None;
        }
        Ok(())
    }

    /// Sets interrupt-status bits and raises the interrupt (register 0x60).
    pub fn raise(&self, bits: u32) -> Result<(), DriverError> {
        Ok(self.bar.write_at(reg::IRQ_RAISE, bits)?)
    }

    /// Clears interrupt-status bits (register 0x64).
    pub fn acknowledge(&self, bits: u32) -> Result<(), DriverError> {
        Ok(self.bar.write_at(reg::IRQ_ACK, bits)?)
    }

    /// The interrupt-status register.
    pub fn interrupt_status(&self) -> Result<u32, DriverError> {
        Ok(self.bar.read_at::<u32>(reg::IRQ_STATUS)?)
    }

    /// Computes `n!` (u32 wrap-around) on the device. With MSI enabled, asks
    /// for the completion interrupt, waits for it and acknowledges it.
    pub fn factorial(&self, n: u32) -> Result<u32, DriverError> {
        self.wait_until("previous factorial", || {
            Ok(self.bar.read_at::<u32>(reg::STATUS)? & EDU_STATUS_COMPUTING == 0)
        })?;
        let with_irq = self.irq.is_some();
        if with_irq {
            self.drain_irq()?;
            self.bar.write_at(reg::STATUS, EDU_STATUS_IRQFACT)?;
        }
        self.bar.write_at(reg::FACTORIAL, n)?;
        self.wait_until("factorial", || {
            Ok(self.bar.read_at::<u32>(reg::STATUS)? & EDU_STATUS_COMPUTING == 0)
        })?;
        if with_irq {
            self.await_irq("factorial interrupt", FACT_IRQ)?;
            self.bar.write_at(reg::STATUS, 0u32)?;
        }
        Ok(self.bar.read_at::<u32>(reg::FACTORIAL)?)
    }

    /// Moves `len` bytes between RAM at `iova` and the device buffer at
    /// `offset`, and waits until the device is done (for its interrupt too,
    /// with MSI enabled).
    ///
    /// `iova` is not checked: edu masks it to 28 bits, and an unmapped IOVA
    /// is the IOMMU's business (the suite aims there on purpose). The device
    /// buffer range is checked, since QEMU aborts on one outside it.
    pub fn dma(
        &self,
        direction: Direction,
        iova: u64,
        offset: u64,
        len: u64,
    ) -> Result<(), DriverError> {
        let with_irq = self.irq.is_some();
        if with_irq {
            self.drain_irq()?;
        }
        self.dma_start(direction, iova, offset, len, with_irq)?;
        self.dma_idle("DMA")?;
        if with_irq {
            self.await_irq("DMA interrupt", DMA_IRQ)?;
        }
        Ok(())
    }

    /// Starts one transfer (after the previous one ended), asking for the
    /// completion interrupt if `irq`.
    fn dma_start(
        &self,
        direction: Direction,
        iova: u64,
        offset: u64,
        len: u64,
        irq: bool,
    ) -> Result<(), DriverError> {
        if len == 0 || offset.checked_add(len).is_none_or(|end| end > DMA_SIZE) {
            return Err(DriverError::InvalidRequest(
                "DMA must lie inside the 4 KiB device buffer and move at least one byte",
            ));
        }
        self.dma_idle("previous DMA")?;
        let device = DMA_START + offset;
        let (src, dst, dir) = match direction {
            Direction::ToDevice => (iova, device, 0),
            Direction::ToRam => (device, iova, EDU_DMA_DIR),
        };
        self.write_addr(reg::DMA_SRC, src)?;
        self.write_addr(reg::DMA_DST, dst)?;
        self.write_addr(reg::DMA_CNT, len)?;
        let irq_bit = if irq { EDU_DMA_IRQ } else { 0 };
        self.write_addr(reg::DMA_CMD, EDU_DMA_RUN | dir | irq_bit)
    }

    /// Waits until no transfer runs.
    fn dma_idle(&self, what: &'static str) -> Result<(), DriverError> {
        self.wait_until(what, || {
            Ok(u64::from(self.bar.read_at::<u32>(reg::DMA_CMD)?) & EDU_DMA_RUN == 0)
        })
    }

    /// A DMA round trip through the IOMMU: maps a source (read-only for the
    /// device) and a destination buffer (whole IOMMU pages each) at `iova`
    /// and right after it,
    /// fills the source with a pattern, moves it RAM → device buffer → RAM,
    /// checks the destination, and unmaps both.
    pub fn round_trip<C: Container>(
        &self,
        container: &C,
        iova: u64,
        len: usize,
    ) -> Result<(), DriverError> {
        let count = u64::try_from(len)
            .ok()
            .filter(|&l| l > 0 && l <= DMA_SIZE)
            .ok_or(DriverError::InvalidRequest(
                "a round trip moves 1 to 4096 bytes",
            ))?;
        let pattern: Vec<u8> = (0..len)
            .map(|i| (i as u64 * 31 + iova / 4096 * 7 + 1) as u8)
            .collect();
        // Whole IOMMU pages, whatever the host page size.
        let page = container.iommu_info()?.min_page_size().unwrap_or(DMA_SIZE);
        let size = usize::try_from(count.next_multiple_of(page))
            .map_err(|_| DriverError::InvalidRequest("the IOMMU page does not fit in memory"))?;
        let src = DmaBuffer::new(size)?;
        src.write(0, &pattern)?;
        let dst = DmaBuffer::new(size)?;
        dst.fill(0);
        let dst_iova = iova
            .checked_add(src.len() as u64)
            .ok_or(DriverError::InvalidRequest("IOVA range wraps"))?;
        let src = container.map_buffer(iova, src, DmaAccess::ReadOnly)?;
        let dst = container.map_buffer(dst_iova, dst, DmaAccess::ReadWrite)?;
        self.dma(Direction::ToDevice, src.iova(), 0, count)?;
        self.dma(Direction::ToRam, dst.iova(), 0, count)?;
        let mut got = vec![0u8; len];
        dst.buffer().read(0, &mut got)?;
        if let Some(offset) = (0..len).find(|&i| got[i] != pattern[i]) {
            return Err(DriverError::DataMismatch {
                offset,
                expected: pattern[offset],
                got: got[offset],
            });
        }
        dst.unmap()?;
        src.unmap()?;
        Ok(())
    }

    /// Resets the device and restores what the driver set up: bus
    /// mastering, and the MSI route if there was one.
    pub fn reset(&mut self) -> Result<(), DriverError> {
        self.device.reset()?;
        self.device.set_bus_master(true)?;
        if let Some(fd) = &self.irq {
            self.msi.set_eventfd(0, Some(fd.as_fd()))?;
        }
        Ok(())
    }

    fn write_addr(&self, reg: u64, value: u64) -> Result<(), DriverError> {
        // 32-bit writes where the value fits: kernels before 8-byte region
        // access support split 64-bit writes, and edu ignores the high half.
        match u32::try_from(value) {
            Ok(v) => self.bar.write_at(reg, v)?,
            Err(_) => self.bar.write_at(reg, value)?,
        }
        Ok(())
    }

    fn drain_irq(&self) -> Result<(), DriverError> {
        if let Some(fd) = &self.irq {
            fd.take().map_err(|source| DriverError::Os {
                what: "drain the MSI eventfd",
                source,
            })?;
        }
        Ok(())
    }

    /// Waits for one interrupt, checks `bit` in the interrupt status and acknowledges it.
    fn await_irq(&self, what: &'static str, bit: u32) -> Result<(), DriverError> {
        let Some(fd) = &self.irq else {
            return Ok(());
        };
        let deadline = Instant::now() + self.timeout;
        loop {
            let signals = fd.wait(IRQ_WAIT_SLICE).map_err(|source| DriverError::Os {
                what: "wait for the MSI eventfd",
                source,
            })?;
            if signals > 0 {
                break;
            }
            // Let a model that completes on access see one.
            let _ = self.interrupt_status()?;
            if Instant::now() >= deadline {
                return Err(DriverError::Timeout {
                    what,
                    timeout: self.timeout,
                });
            }
        }
        let status = self.interrupt_status()?;
        if status & bit == 0 {
            return Err(DriverError::Unexpected {
                what: "interrupt status after the interrupt",
                expected: u64::from(bit),
                got: u64::from(status),
            });
        }
        self.acknowledge(bit)
    }

    fn wait_until(
        &self,
        what: &'static str,
        mut done: impl FnMut() -> Result<bool, DriverError>,
    ) -> Result<(), DriverError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            if done()? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(DriverError::Timeout {
                    what,
                    timeout: self.timeout,
                });
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

/// edu as a [`DmaEngine`]: a copy is two transfers through the device
/// buffer (source → buffer, then buffer → destination, the second with
/// the completion interrupt), so it moves at most 4 KiB, and edu cannot see
/// IOMMU faults: a faulted read fills the buffer with zeros (QEMU reads an
/// address it cannot translate as 0), which are copied out.
impl<D: Device> DmaEngine for EduDriver<D> {
    fn max_memcpy_size(&self) -> u64 {
        DMA_SIZE
    }

    fn reports_faults(&self) -> bool {
        false
    }

    fn memcpy_start(&mut self, src: u64, dst: u64, len: u64) -> Result<(), DriverError> {
        if len == 0 || len > DMA_SIZE {
            return Err(DriverError::InvalidRequest(
                "an edu copy moves 1 to 4096 bytes",
            ));
        }
        self.dma_start(Direction::ToDevice, src, 0, len, false)?;
        self.dma_idle("DMA into the device buffer")?;
        self.dma_start(Direction::ToRam, dst, 0, len, self.irq.is_some())
    }

    fn memcpy_wait(&mut self) -> Result<Completion, DriverError> {
        self.dma_idle("DMA out of the device buffer")?;
        if self.irq.is_some() {
            self.acknowledge(DMA_IRQ)?;
        }
        Ok(Completion::Done)
    }

    fn send_msi(&mut self) -> Result<(), DriverError> {
        if self.irq.is_none() {
            return Err(DriverError::InvalidRequest("send_msi needs MSI routed"));
        }
        self.raise(DMA_IRQ)?;
        self.acknowledge(DMA_IRQ)
    }

    fn msi_eventfd(&self) -> Option<&EventFd> {
        self.irq.as_ref()
    }
}

/// QEMU's edu as a DMA engine of the H cases: the fixture's edu device,
/// with its MSI routed.
#[derive(Debug, Clone, Copy)]
pub struct EduEngine;

impl EngineKind for EduEngine {
    const NAME: &'static str = "edu";

    type Driver<'c, C: Container + 'c> = EduDriver<C::Device>;

    fn device_name<F: Fixture>(fixture: &F) -> Option<&str> {
        Some(fixture.edu())
    }

    /// edu copies through its own buffer: it takes no driver memory.
    fn open<'c, C: Container>(
        device: C::Device,
        _memory: DriverMemory<'c, C>,
        timeout: Duration,
    ) -> Result<EduDriver<C::Device>, DriverError> {
        let mut driver = EduDriver::open(device)?.with_timeout(timeout);
        driver.enable_msi()?;
        Ok(driver)
    }
}

impl<D: Device> Drop for EduDriver<D> {
    fn drop(&mut self) {
        if self.irq.is_some() {
            if let Err(e) = self.msi.disable() {
                log::warn!("edu driver: disabling MSI on drop failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factorial_wraps_like_a_u32() {
        assert_eq!(expected_factorial(0), 1);
        assert_eq!(expected_factorial(5), 120);
        assert_eq!(expected_factorial(12), 479_001_600);
        assert_eq!(expected_factorial(13), 1_932_053_504);
    }
}
