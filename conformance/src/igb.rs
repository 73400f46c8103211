//! A driver for QEMU's `igb` NIC (the 82576, `8086:10c9`) used as a memcpy
//! engine, written against the hal traits: the NIC loops each frame it
//! sends back to its own receive queue, so a frame read from `src` by
//! transmit DMA lands in `dst` by receive DMA.
//!
//! Read from QEMU's emulation (`hw/net/igb_core.c`, `net_tx_pkt.c`,
//! `e1000x_common.c`) and the 82576 datasheet; the kernel's VFIO selftests
//! drive the same device the same way. The driver keeps its own register
//! map ([`reg`]).
//!
//! # How a copy works
//!
//! - **Loopback.** PHY loopback (PHY control bit 14) and MAC loopback
//!   (`RCTL.LBM`): QEMU honours either, the 82576 only the first. QEMU's
//!   receive path drops every frame while `STATUS.LU` is clear, and only its
//!   autonegotiation timer sets it (500 ms of virtual time after an
//!   autonegotiation restart): [`IgbDriver::open`] restarts it and waits.
//! - **One frame per copy.** The frame is a 64-byte header of the driver's
//!   own ([`frame_header`]: the station address as destination and source,
//!   the local experimental ethertype `0x88b5`, a sequence number) followed
//!   by the `len` source bytes. The header comes first in a transmit
//!   descriptor of its own; the source follows in one transmit descriptor
//!   per 4 KiB IOVA page it touches ([`fragments`]), because QEMU maps each
//!   transmit buffer in one piece and through an IOMMU a piece ends where the
//!   guest-physical pages stop being contiguous.
//! - **Header split.** The receive descriptor is of the header-split-always
//!   type with a 64-byte header buffer in the driver's memory: the header
//!   lands there, and exactly the `len` source bytes land at `dst` (the
//!   packet buffer). So the source is copied byte for byte whatever it holds
//!   (the device parses only the driver's header), nothing is padded (the
//!   frame is 65 bytes or more, past Ethernet's 60-byte minimum), and with
//!   CRC stripping (`RCTL.SECRC`) nothing is appended.
//! - **Completion.** The receive descriptor's write-back: done, end of
//!   packet, `len` bytes in the packet buffer, 64 in the header buffer, and
//!   the header the driver sent.
//! - **One MSI-X vector per request.** Vector 0 is the only interrupt
//!   enabled (`EIMS`); the IVAR entry of receive queue 0 points at it and
//!   transmit queue 0 has none, so a copy raises it once, at its receive
//!   write-back. Auto-clear (`EIAC`) clears the cause as the message goes,
//!   so every new cause raises a new message, and without throttling
//!   (`EITR0` = 0) none is held back. [`DmaEngine::send_msi`] sets the cause
//!   in `EICS`.
//!
//! # Guarantees
//!
//! Those of [`DmaEngine`], with these limits:
//! - copies of 1 to [`MAX_COPY`] (8 KiB) bytes: a frame of up to 8 KiB
//!   plus the header fits the receive buffer ([`RX_BUFFER`]), the long
//!   packet limit (`RLPML`) and the jumbo frames of a real 82576; there is
//!   no lower limit beyond one byte;
//! - `dst` must not be IOVA 0 ([`DriverError::InvalidRequest`]): igb reads
//!   a receive buffer address of 0 as "no buffer", skips the write and
//!   still reports the descriptor done;
//! - [`IgbDriver::open`] refuses a PF with SR-IOV virtual functions
//!   enabled: QEMU then does queue 0's DMA as the first VF, through that
//!   VF's address space;
//! - the driver's memory (rings and header buffers, one IOMMU page) lives
//!   at the start of the [`DriverMemory`] window;
//! - dropping the driver leaves the device quiet: interrupts masked,
//!   receive and transmit off, then a software reset (`CTRL.RST`), which
//!   restores every register (`RDBAL0` reads 0 again) and the PHY, before
//!   MSI-X is torn down and the driver's memory unmapped. SR-IOV
//!   configuration (config space) is not touched.
//!
//! # Faults: where igb differs from the copy engine
//!
//! igb does not [report faults](DmaEngine::reports_faults):
//! - **An unreadable source.** QEMU maps a transmit buffer it cannot reach
//!   through the IOMMU into a bounce buffer read as zeros, while the
//!   device's bounce budget lasts (4 KiB per address space by default,
//!   held until the frame is sent). So a frame with up to 4 KiB of
//!   unreadable source goes out with zeros there: the copy ends
//!   [`Completion::Done`] with its MSI. Beyond the budget the buffer does
//!   not map, the frame is dropped, the transmit descriptor is still written
//!   back, and the transmitted-packet counter (`TPT`) stays 0: the driver
//!   ends the request as [`Completion::Faulted`] with [`err::SOURCE`],
//!   with no byte of the destination written and no MSI.
//! - **An unwritable destination.** The receive write of the data fails
//!   silently, and the descriptor write-back (to the driver's memory) and
//!   the MSI happen as for a good copy: [`Completion::Done`], nothing
//!   written outside `dst..dst + len` (the device writes exactly `len`
//!   bytes there).
//!
//! Measured in the real-kernel lane (QEMU 10, emulated VT-d, legacy
//! backend): 4 KiB from an unmapped IOVA copied 4096 zeros, done, one MSI;
//! 4097 and 8192 bytes from unmapped IOVAs ended faulted, destination
//! untouched, no MSI; 8 KiB whose second page was unmapped copied the first
//! page and zeros, done; 4 and 8 KiB to unmapped IOVAs ended done with one
//! MSI and the mapped neighbour untouched. Opening takes about 0.7 s, most
//! of it the autonegotiation timer.
//!
//! The driver decides without a timeout of its own: in QEMU the frame
//! loops back inside the tail write, before the transmit write-back, and
//! `TPT` counts it once it was sent. A frame that was sent but is not
//! received within the driver's timeout is a [`DriverError::Timeout`].

use std::time::{Duration, Instant};

use vfio_hal::{Container, Device, DmaAccess, DmaBuffer, DmaMapping, PciConfig, RegionExt};

use crate::dma_engine::{Completion, DmaEngine, DriverMemory, EngineKind};
use crate::edu::DriverError;
use crate::fixture::Fixture;
use crate::msix::MsixDriver;
use vfio_hal::eventfd::EventFd;

/// PCI vendor id of the 82576.
pub const VENDOR_ID: u16 = 0x8086;
/// PCI device id of the 82576 PF.
pub const DEVICE_ID: u16 = 0x10c9;

/// BAR 0 register offsets and bits, after the 82576 datasheet (section 8)
/// and the names of QEMU's `e1000_regs.h`/`igb_regs.h`.
pub mod reg {
    /// Device control.
    pub const CTRL: u64 = 0x0000;
    /// Device status (RO).
    pub const STATUS: u64 = 0x0008;
    /// MDI control: PHY register access.
    pub const MDIC: u64 = 0x0020;
    /// Interrupt mask clear (legacy causes).
    pub const IMC: u64 = 0x00d8;
    /// Receive control.
    pub const RCTL: u64 = 0x0100;
    /// Transmit control.
    pub const TCTL: u64 = 0x0400;
    /// General purpose interrupt enable.
    pub const GPIE: u64 = 0x1514;
    /// Extended interrupt cause set.
    pub const EICS: u64 = 0x1520;
    /// Extended interrupt mask set.
    pub const EIMS: u64 = 0x1524;
    /// Extended interrupt mask clear.
    pub const EIMC: u64 = 0x1528;
    /// Extended interrupt auto clear.
    pub const EIAC: u64 = 0x152c;
    /// Extended interrupt cause (write 1 to clear).
    pub const EICR: u64 = 0x1580;
    /// Interrupt throttle of vector 0.
    pub const EITR0: u64 = 0x1680;
    /// Interrupt vector allocation of queues 0 and 8.
    pub const IVAR0: u64 = 0x1700;
    /// Interrupt vector allocation of the other causes.
    pub const IVAR_MISC: u64 = 0x1740;
    /// Total packets transmitted (RO, clears on read).
    pub const TPT: u64 = 0x40d4;
    /// Receive long packet maximum length.
    pub const RLPML: u64 = 0x5004;
    /// Receive address 0, low half (bytes 0–3 of the station address).
    pub const RAL0: u64 = 0x5400;
    /// Receive address 0, high half (bytes 4–5, and [`RAH_AV`]).
    pub const RAH0: u64 = 0x5404;
    /// Receive descriptor base of queue 0, low half.
    pub const RDBAL0: u64 = 0xc000;
    /// Receive descriptor base of queue 0, high half.
    pub const RDBAH0: u64 = 0xc004;
    /// Receive descriptor ring length of queue 0, in bytes.
    pub const RDLEN0: u64 = 0xc008;
    /// Split and replication receive control of queue 0.
    pub const SRRCTL0: u64 = 0xc00c;
    /// Receive descriptor head of queue 0.
    pub const RDH0: u64 = 0xc010;
    /// Receive descriptor tail of queue 0.
    pub const RDT0: u64 = 0xc018;
    /// Receive descriptor control of queue 0.
    pub const RXDCTL0: u64 = 0xc028;
    /// Transmit descriptor base of queue 0, low half.
    pub const TDBAL0: u64 = 0xe000;
    /// Transmit descriptor base of queue 0, high half.
    pub const TDBAH0: u64 = 0xe004;
    /// Transmit descriptor ring length of queue 0, in bytes.
    pub const TDLEN0: u64 = 0xe008;
    /// Transmit descriptor head of queue 0.
    pub const TDH0: u64 = 0xe010;
    /// Transmit descriptor tail of queue 0.
    pub const TDT0: u64 = 0xe018;
    /// Transmit descriptor control of queue 0.
    pub const TXDCTL0: u64 = 0xe028;

    /// CTRL: software reset (self-clearing).
    pub const CTRL_RST: u32 = 1 << 26;
    /// STATUS: link up.
    pub const STATUS_LU: u32 = 1 << 1;
    /// STATUS: SR-IOV virtual functions are enabled.
    pub const STATUS_IOV_MODE: u32 = 1 << 18;
    /// MDIC: the data field.
    pub const MDIC_DATA_MASK: u32 = 0xffff;
    /// MDIC: shift of the PHY register number.
    pub const MDIC_REG_SHIFT: u32 = 16;
    /// MDIC: shift of the PHY address (the internal PHY is 1).
    pub const MDIC_PHY_SHIFT: u32 = 21;
    /// MDIC: write operation.
    pub const MDIC_OP_WRITE: u32 = 1 << 26;
    /// MDIC: the access is complete.
    pub const MDIC_READY: u32 = 1 << 28;
    /// MDIC: the access failed.
    pub const MDIC_ERROR: u32 = 1 << 30;
    /// RCTL: receiver enable.
    pub const RCTL_EN: u32 = 1 << 1;
    /// RCTL: long packet enable (frames up to RLPML).
    pub const RCTL_LPE: u32 = 1 << 5;
    /// RCTL: loopback mode MAC.
    pub const RCTL_LBM_MAC: u32 = 1 << 6;
    /// RCTL: strip the Ethernet CRC.
    pub const RCTL_SECRC: u32 = 1 << 26;
    /// TCTL: transmitter enable.
    pub const TCTL_EN: u32 = 1 << 1;
    /// TCTL: pad short packets.
    pub const TCTL_PSP: u32 = 1 << 3;
    /// GPIE: MSI-X mode (causes go to vectors through IVAR).
    pub const GPIE_MSIX_MODE: u32 = 1 << 4;
    /// IVAR entry: valid.
    pub const IVAR_VALID: u32 = 0x80;
    /// RAH: address valid.
    pub const RAH_AV: u32 = 1 << 31;
    /// RXDCTL/TXDCTL: queue enable.
    pub const QUEUE_ENABLE: u32 = 1 << 25;
    /// SRRCTL: shift of the packet buffer size field (1 KiB units, right).
    pub const SRRCTL_BSIZEPKT_SHIFT: u32 = 10;
    /// SRRCTL: the header buffer size field (64-byte units, bits 11:8).
    pub const SRRCTL_BSIZEHDRSIZE_MASK: u32 = 0xf00;
    /// SRRCTL: shift of the header buffer size (left).
    pub const SRRCTL_BSIZEHDRSIZE_SHIFT: u32 = 2;
    /// SRRCTL: descriptor type "advanced, header split always".
    pub const SRRCTL_DESCTYPE_HDR_SPLIT_ALWAYS: u32 = 0x0a00_0000;
}

/// PHY registers (IEEE 802.3 clause 22) the driver writes through MDIC.
pub mod phy {
    /// PHY address of the 82576's internal PHY.
    pub const ADDRESS: u32 = 1;
    /// Basic mode control register.
    pub const BMCR: u32 = 0;
    /// BMCR: loopback.
    pub const BMCR_LOOPBACK: u16 = 1 << 14;
    /// BMCR: autonegotiation enable.
    pub const BMCR_AUTOEN: u16 = 1 << 12;
    /// BMCR: restart autonegotiation (self-clearing).
    pub const BMCR_ANRESTART: u16 = 1 << 9;
    /// BMCR: full duplex.
    pub const BMCR_FD: u16 = 1 << 8;
    /// BMCR: 1000 Mb/s (with speed bit 13 clear).
    pub const BMCR_SPEED1000: u16 = 1 << 6;
}

/// Advanced descriptor fields (datasheet 7.1.5, 7.2.2.3).
pub mod desc {
    /// Bytes of one descriptor, transmit or receive.
    pub const LEN: u64 = 16;
    /// Transmit `cmd_type_len`: advanced data descriptor.
    pub const TX_DTYP_DATA: u32 = 0x0030_0000;
    /// Transmit `cmd_type_len`: end of packet.
    pub const TX_EOP: u32 = 1 << 24;
    /// Transmit `cmd_type_len`: insert the Ethernet CRC.
    pub const TX_IFCS: u32 = 1 << 25;
    /// Transmit `cmd_type_len`: report status (write the descriptor back).
    pub const TX_RS: u32 = 1 << 27;
    /// Transmit `cmd_type_len`: descriptor extension (advanced format).
    pub const TX_DEXT: u32 = 1 << 29;
    /// Transmit `olinfo_status`: shift of the packet's payload length.
    pub const TX_PAYLEN_SHIFT: u32 = 14;
    /// Transmit write-back status: descriptor done.
    pub const TX_STAT_DD: u32 = 1 << 0;
    /// Receive write-back status: descriptor done.
    pub const RX_STAT_DD: u32 = 1 << 0;
    /// Receive write-back status: end of packet.
    pub const RX_STAT_EOP: u32 = 1 << 1;
    /// Receive write-back `hdr_info`: the header length field.
    pub const RX_HDR_LEN_MASK: u16 = 0x7fe0;
    /// Receive write-back `hdr_info`: shift of the header length.
    pub const RX_HDR_LEN_SHIFT: u32 = 5;
}

/// Error codes of [`Completion::Faulted`].
pub mod err {
    /// The frame was not sent: a transmit buffer of the source did not map
    /// (the device could not read it through the IOMMU).
    pub const SOURCE: u32 = 1;
}

/// Largest copy, in bytes.
pub const MAX_COPY: u64 = 8 << 10;
/// Bytes of the driver's frame header, in front of the copied bytes.
pub const HEADER_LEN: u64 = 64;
/// The ethertype of the driver's frames: IEEE 802's local experimental
/// ethertype 1, which QEMU parses no further.
pub const ETHERTYPE: u16 = 0x88b5;
/// Receive packet buffer size: the whole frame (header included) must fit
/// one buffer for igb to take it. A multiple of 1 KiB.
pub const RX_BUFFER: u64 = (HEADER_LEN + MAX_COPY).next_multiple_of(1024);
/// The longest frame accepted (`RLPML`): header, data and the 4-byte CRC
/// the long-packet check counts.
pub const MAX_FRAME: u64 = HEADER_LEN + MAX_COPY + 4;
/// Source bytes per transmit descriptor at most: QEMU maps a transmit
/// buffer in one piece, which through an IOMMU ends at a page whose
/// guest-physical successor is not contiguous, so no buffer crosses a
/// 4 KiB IOVA page (the smallest IOMMU page).
pub const TX_FRAGMENT: u64 = 4096;
/// Transmit descriptors in the ring.
pub const TX_RING: u32 = 16;
/// Receive descriptors in the ring.
pub const RX_RING: u32 = 8;
/// The MSI-X vector of completions and [`DmaEngine::send_msi`].
pub const VECTOR: u32 = 0;

// The whole frame fits one receive buffer, whose size field has 7 bits of 1 KiB.
const _: () = assert!(RX_BUFFER >= HEADER_LEN + MAX_COPY && RX_BUFFER <= 127 << 10);
// The rings are 128-byte aligned, and everything fits the smallest page.
const _: () = assert!(layout::RX_RING_AT % 128 == 0 && layout::END <= 4096);

/// Where the driver keeps things in its memory (offsets into its page).
mod layout {
    use super::{desc, RX_RING, TX_RING};

    /// The transmit ring (128-byte aligned).
    pub const TX_RING_AT: u64 = 0x000;
    /// The receive ring (128-byte aligned).
    pub const RX_RING_AT: u64 = TX_RING_AT + TX_RING as u64 * desc::LEN;
    /// The header of the frame being sent.
    pub const TX_HEADER_AT: u64 = RX_RING_AT + RX_RING as u64 * desc::LEN;
    /// The receive header buffer.
    pub const RX_HEADER_AT: u64 = TX_HEADER_AT + super::HEADER_LEN;
    /// Bytes used.
    pub const END: u64 = RX_HEADER_AT + super::HEADER_LEN;
}

/// The transmit buffers of `len` bytes at IOVA `src`: `(iova, bytes)`, cut
/// at every [`TX_FRAGMENT`] boundary.
pub fn fragments(src: u64, len: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let (mut at, end) = (src, src.saturating_add(len));
    while at < end {
        let next = (at / TX_FRAGMENT + 1).saturating_mul(TX_FRAGMENT).min(end);
        out.push((at, next - at));
        at = next;
    }
    out
}

/// An advanced transmit data descriptor (read format): `bytes` at `addr`,
/// in a frame of `frame_len` bytes; the `last` one ends the frame and asks
/// for its write-back.
pub fn tx_descriptor(addr: u64, bytes: u16, frame_len: u32, last: bool) -> [u8; 16] {
    let mut cmd = u32::from(bytes) | desc::TX_DTYP_DATA | desc::TX_DEXT | desc::TX_IFCS;
    if last {
        cmd |= desc::TX_EOP | desc::TX_RS;
    }
    let olinfo = frame_len << desc::TX_PAYLEN_SHIFT;
    let mut d = [0u8; 16];
    d[0..8].copy_from_slice(&addr.to_le_bytes());
    d[8..12].copy_from_slice(&cmd.to_le_bytes());
    d[12..16].copy_from_slice(&olinfo.to_le_bytes());
    d
}

/// Whether a transmit descriptor has been written back (done).
pub fn tx_done(d: &[u8; 16]) -> bool {
    le32(&d[12..16]) & desc::TX_STAT_DD != 0
}

/// An advanced receive descriptor (read format): the packet buffer at
/// `packet`, the header buffer at `header`.
pub fn rx_descriptor(packet: u64, header: u64) -> [u8; 16] {
    let mut d = [0u8; 16];
    d[0..8].copy_from_slice(&packet.to_le_bytes());
    d[8..16].copy_from_slice(&header.to_le_bytes());
    d
}

/// An advanced receive descriptor as the device wrote it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxWriteBack {
    /// The status and error bits.
    pub status: u32,
    /// Bytes in the packet buffer.
    pub length: u16,
    /// Bytes in the header buffer.
    pub header_len: u16,
}

impl RxWriteBack {
    /// Decodes a write-back. Meaningful once [`RxWriteBack::done`].
    pub fn parse(d: &[u8; 16]) -> Self {
        let hdr_info = u16::from_le_bytes([d[2], d[3]]);
        Self {
            status: le32(&d[8..12]),
            length: u16::from_le_bytes([d[12], d[13]]),
            header_len: (hdr_info & desc::RX_HDR_LEN_MASK) >> desc::RX_HDR_LEN_SHIFT,
        }
    }

    /// The descriptor is done.
    pub fn done(&self) -> bool {
        self.status & desc::RX_STAT_DD != 0
    }

    /// The descriptor holds the end of its frame.
    pub fn end_of_packet(&self) -> bool {
        self.status & desc::RX_STAT_EOP != 0
    }
}

/// The driver's frame header: `mac` as destination and source, [`ETHERTYPE`],
/// a tag and the request's sequence number, zeros up to [`HEADER_LEN`].
pub fn frame_header(mac: [u8; 6], seq: u32) -> [u8; HEADER_LEN as usize] {
    const TAG: &[u8] = b"vfio-hal igb memcpy";
    let mut h = [0u8; HEADER_LEN as usize];
    h[0..6].copy_from_slice(&mac);
    h[6..12].copy_from_slice(&mac);
    h[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
    h[14..14 + TAG.len()].copy_from_slice(TAG);
    h[14 + TAG.len()..18 + TAG.len()].copy_from_slice(&seq.to_le_bytes());
    h
}

/// SRRCTL of the receive queue: [`RX_BUFFER`] packet buffers, a
/// [`HEADER_LEN`] header buffer, header split always.
pub const fn srrctl() -> u32 {
    (RX_BUFFER >> reg::SRRCTL_BSIZEPKT_SHIFT) as u32
        | (((HEADER_LEN as u32) << reg::SRRCTL_BSIZEHDRSIZE_SHIFT) & reg::SRRCTL_BSIZEHDRSIZE_MASK)
        | reg::SRRCTL_DESCTYPE_HDR_SPLIT_ALWAYS
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// The request in flight.
#[derive(Debug, Clone, Copy)]
struct Pending {
    rx_slot: u32,
    tx_last: u32,
    len: u64,
    header: [u8; HEADER_LEN as usize],
}

/// A driver for one igb as a memcpy engine (see the module docs).
pub struct IgbDriver<'c, C: Container> {
    // Dropped in this order, after `Drop::drop` quiesced the device: the
    // BAR, MSI-X (disabled, then the device closes), the driver's memory.
    bar: <C::Device as Device>::Region,
    msix: MsixDriver<C::Device>,
    memory: DmaMapping<'c, C>,
    timeout: Duration,
    mac: [u8; 6],
    tx_tail: u32,
    rx_tail: u32,
    seq: u32,
    pending: Option<Pending>,
}

impl<C: Container> std::fmt::Debug for IgbDriver<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IgbDriver")
            .field("msix", &self.msix)
            .field("memory", &self.memory)
            .field("timeout", &self.timeout)
            .field("tx_tail", &self.tx_tail)
            .field("rx_tail", &self.rx_tail)
            .finish()
    }
}

impl<'c, C: Container> IgbDriver<'c, C> {
    /// Checks the identity, resets the device by software, brings the
    /// loopback link up, maps the driver's memory at the start of `memory`'s
    /// window, sets up one transmit and one receive queue and routes MSI-X
    /// vector [`VECTOR`].
    pub fn open(
        device: C::Device,
        memory: DriverMemory<'c, C>,
        timeout: Duration,
    ) -> Result<Self, DriverError> {
        let ids = (device.vendor_id()?, device.device_id()?);
        if ids != (VENDOR_ID, DEVICE_ID) {
            return Err(DriverError::Unexpected {
                what: "igb vendor:device id",
                expected: (u64::from(VENDOR_ID) << 16) | u64::from(DEVICE_ID),
                got: (u64::from(ids.0) << 16) | u64::from(ids.1),
            });
        }
        let bar = device.region(vfio_hal::pci::region::BAR0)?;
        device.set_bus_master(true)?;
        let status = bar.read_at::<u32>(reg::STATUS)?;
        if status & reg::STATUS_IOV_MODE != 0 {
            return Err(DriverError::InvalidRequest(
                "igb has SR-IOV virtual functions enabled: queue 0 would DMA as the first VF",
            ));
        }
        reset(&bar, timeout)?;
        let mac = station_address(&bar)?;
        let memory = map_memory(memory)?;
        let msix = MsixDriver::open(device)?;
        let mut driver = Self {
            bar,
            msix,
            memory,
            timeout,
            mac,
            tx_tail: 0,
            rx_tail: 0,
            seq: 0,
            pending: None,
        };
        driver.link_up()?;
        driver.queues()?;
        driver.msix.route()?;
        driver.interrupts()?;
        let bar = &driver.bar;
        bar.write_at(
            reg::RCTL,
            reg::RCTL_EN | reg::RCTL_LPE | reg::RCTL_LBM_MAC | reg::RCTL_SECRC,
        )?;
        bar.write_at(reg::TCTL, reg::TCTL_EN | reg::TCTL_PSP)?;
        Ok(driver)
    }

    /// The MSI-X side (eventfds per vector).
    pub fn msix(&self) -> &MsixDriver<C::Device> {
        &self.msix
    }

    /// IOVA of a byte of the driver's memory.
    fn iova(&self, offset: u64) -> u64 {
        self.memory.iova() + offset
    }

    fn write_phy(&self, register: u32, value: u16) -> Result<(), DriverError> {
        let mdic = (u32::from(value) & reg::MDIC_DATA_MASK)
            | (register << reg::MDIC_REG_SHIFT)
            | (phy::ADDRESS << reg::MDIC_PHY_SHIFT)
            | reg::MDIC_OP_WRITE;
        self.bar.write_at(reg::MDIC, mdic)?;
        let mdic = poll(self.timeout, "igb PHY write (MDIC ready)", || {
            let v = self.bar.read_at::<u32>(reg::MDIC)?;
            Ok((v & reg::MDIC_READY != 0).then_some(v))
        })?;
        if mdic & reg::MDIC_ERROR != 0 {
            return Err(DriverError::Unexpected {
                what: "igb PHY write (MDIC error bit)",
                expected: 0,
                got: u64::from(mdic),
            });
        }
        Ok(())
    }

    /// Restarts autonegotiation (which alone sets STATUS.LU in QEMU), puts
    /// the PHY in loopback and waits for the link.
    fn link_up(&self) -> Result<(), DriverError> {
        self.write_phy(phy::BMCR, phy::BMCR_AUTOEN | phy::BMCR_ANRESTART)?;
        self.write_phy(
            phy::BMCR,
            phy::BMCR_LOOPBACK | phy::BMCR_SPEED1000 | phy::BMCR_FD,
        )?;
        poll(self.timeout, "igb link up (STATUS.LU)", || {
            Ok((self.bar.read_at::<u32>(reg::STATUS)? & reg::STATUS_LU != 0).then_some(()))
        })
    }

    /// Queue 0 of each direction over the driver's rings.
    fn queues(&self) -> Result<(), DriverError> {
        let bar = &self.bar;
        let tx = self.iova(layout::TX_RING_AT);
        bar.write_at(reg::TDBAL0, tx as u32)?;
        bar.write_at(reg::TDBAH0, (tx >> 32) as u32)?;
        bar.write_at(reg::TDLEN0, TX_RING * desc::LEN as u32)?;
        bar.write_at(reg::TDH0, 0u32)?;
        bar.write_at(reg::TDT0, 0u32)?;
        bar.write_at(reg::TXDCTL0, reg::QUEUE_ENABLE)?;
        let rx = self.iova(layout::RX_RING_AT);
        bar.write_at(reg::RDBAL0, rx as u32)?;
        bar.write_at(reg::RDBAH0, (rx >> 32) as u32)?;
        bar.write_at(reg::RDLEN0, RX_RING * desc::LEN as u32)?;
        bar.write_at(reg::RDH0, 0u32)?;
        bar.write_at(reg::RDT0, 0u32)?;
        bar.write_at(reg::SRRCTL0, srrctl())?;
        bar.write_at(reg::RLPML, MAX_FRAME as u32)?;
        bar.write_at(reg::RXDCTL0, reg::QUEUE_ENABLE)?;
        // Clears the transmitted-packet count: from here on it counts per request.
        bar.read_at::<u32>(reg::TPT)?;
        Ok(())
    }

    /// MSI-X mode, receive queue 0 (only) on vector 0, auto-clear, no
    /// throttling, every cause but vector 0 masked.
    fn interrupts(&self) -> Result<(), DriverError> {
        let bar = &self.bar;
        bar.write_at(reg::IMC, u32::MAX)?;
        bar.write_at(reg::GPIE, reg::GPIE_MSIX_MODE)?;
        bar.write_at(reg::EIMC, u32::MAX)?;
        bar.write_at(reg::EICR, u32::MAX)?;
        bar.write_at(reg::EIAC, 1u32 << VECTOR)?;
        bar.write_at(reg::EITR0, 0u32)?;
        // Byte 0: receive queue 0; byte 1 (transmit queue 0) stays invalid.
        bar.write_at(reg::IVAR0, reg::IVAR_VALID | VECTOR)?;
        bar.write_at(reg::IVAR_MISC, 0u32)?;
        bar.write_at(reg::EIMS, 1u32 << VECTOR)?;
        Ok(())
    }

    fn write_memory(&self, offset: u64, data: &[u8]) -> Result<(), DriverError> {
        Ok(self.memory.buffer().write(offset, data)?)
    }

    fn descriptor(&self, offset: u64) -> Result<[u8; 16], DriverError> {
        let mut d = [0u8; 16];
        self.memory.buffer().read(offset, &mut d)?;
        Ok(d)
    }

    fn tx_slot(slot: u32) -> u64 {
        layout::TX_RING_AT + u64::from(slot) * desc::LEN
    }

    fn rx_slot(slot: u32) -> u64 {
        layout::RX_RING_AT + u64::from(slot) * desc::LEN
    }

    /// Takes a posted receive descriptor back from the device (its frame
    /// never came): the tail returns to the head.
    fn unpost(&mut self, rx_slot: u32) -> Result<(), DriverError> {
        self.bar.write_at(reg::RDT0, rx_slot)?;
        self.rx_tail = rx_slot;
        Ok(())
    }

    /// Ends the request in flight from its receive write-back.
    fn received(&mut self, p: Pending) -> Result<Completion, DriverError> {
        let wb = RxWriteBack::parse(&self.descriptor(Self::rx_slot(p.rx_slot))?);
        if !wb.end_of_packet() {
            return Err(DriverError::Unexpected {
                what: "igb receive write-back status (end of packet)",
                expected: u64::from(desc::RX_STAT_DD | desc::RX_STAT_EOP),
                got: u64::from(wb.status),
            });
        }
        if u64::from(wb.length) != p.len {
            return Err(DriverError::Unexpected {
                what: "igb receive write-back length (bytes at dst)",
                expected: p.len,
                got: u64::from(wb.length),
            });
        }
        if u64::from(wb.header_len) != HEADER_LEN {
            return Err(DriverError::Unexpected {
                what: "igb receive write-back header length",
                expected: HEADER_LEN,
                got: u64::from(wb.header_len),
            });
        }
        let mut header = [0u8; HEADER_LEN as usize];
        self.memory
            .buffer()
            .read(layout::RX_HEADER_AT, &mut header)?;
        if let Some(offset) = (0..header.len()).find(|&i| header[i] != p.header[i]) {
            return Err(DriverError::DataMismatch {
                offset,
                expected: p.header[offset],
                got: header[offset],
            });
        }
        Ok(Completion::Done)
    }
}

/// Masks every interrupt and resets the device by software; waits for the
/// reset bit to clear.
fn reset<R: vfio_hal::Region>(bar: &R, timeout: Duration) -> Result<(), DriverError> {
    bar.write_at(reg::IMC, u32::MAX)?;
    bar.write_at(reg::EIMC, u32::MAX)?;
    let ctrl = bar.read_at::<u32>(reg::CTRL)?;
    bar.write_at(reg::CTRL, ctrl | reg::CTRL_RST)?;
    // The datasheet asks for a pause before the next access.
    std::thread::sleep(Duration::from_millis(1));
    poll(timeout, "igb software reset (CTRL.RST clear)", || {
        Ok((bar.read_at::<u32>(reg::CTRL)? & reg::CTRL_RST == 0).then_some(()))
    })?;
    bar.write_at(reg::IMC, u32::MAX)?;
    Ok(())
}

/// The station address in receive address 0, which the reset loads from
/// the EEPROM and marks valid.
fn station_address<R: vfio_hal::Region>(bar: &R) -> Result<[u8; 6], DriverError> {
    let low = bar.read_at::<u32>(reg::RAL0)?;
    let high = bar.read_at::<u32>(reg::RAH0)?;
    if high & reg::RAH_AV == 0 {
        return Err(DriverError::Unexpected {
            what: "igb receive address 0 (valid bit)",
            expected: u64::from(reg::RAH_AV),
            got: u64::from(high),
        });
    }
    let mut mac = [0u8; 6];
    mac[0..4].copy_from_slice(&low.to_le_bytes());
    mac[4..6].copy_from_slice(&high.to_le_bytes()[0..2]);
    Ok(mac)
}

/// One IOMMU page (at least one host page) of driver memory, mapped at the
/// start of the window.
fn map_memory<C: Container>(memory: DriverMemory<'_, C>) -> Result<DmaMapping<'_, C>, DriverError> {
    let page = memory
        .container
        .iommu_info()?
        .min_page_size()
        .unwrap_or(4096)
        .max(vfio_hal::memory::page_size());
    if memory.iova % page != 0 || memory.len < page || page < layout::END {
        return Err(DriverError::InvalidRequest(
            "the driver memory window must hold one IOMMU page, aligned",
        ));
    }
    let len = usize::try_from(page)
        .map_err(|_| DriverError::InvalidRequest("the IOMMU page does not fit in memory"))?;
    let buffer = DmaBuffer::new(len)?;
    Ok(memory
        .container
        .map_buffer(memory.iova, buffer, DmaAccess::ReadWrite)?)
}

/// Polls `ready` every millisecond until it gives a value or `timeout` passed.
fn poll<T>(
    timeout: Duration,
    what: &'static str,
    mut ready: impl FnMut() -> Result<Option<T>, DriverError>,
) -> Result<T, DriverError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = ready()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(DriverError::Timeout { what, timeout });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// igb as a [`DmaEngine`] (see the module docs for its limits and faults).
impl<C: Container> DmaEngine for IgbDriver<'_, C> {
    fn max_memcpy_size(&self) -> u64 {
        MAX_COPY
    }

    fn reports_faults(&self) -> bool {
        false
    }

    fn memcpy_start(&mut self, src: u64, dst: u64, len: u64) -> Result<(), DriverError> {
        if !(1..=MAX_COPY).contains(&len) {
            return Err(DriverError::InvalidRequest(
                "an igb copy moves 1 byte to 8 KiB",
            ));
        }
        if dst == 0 {
            return Err(DriverError::InvalidRequest(
                "igb takes a receive buffer at IOVA 0 for no buffer",
            ));
        }
        if src.checked_add(len).is_none() || dst.checked_add(len).is_none() {
            return Err(DriverError::InvalidRequest("the copy wraps the IOVA space"));
        }
        if self.pending.is_some() {
            return Err(DriverError::InvalidRequest(
                "a request is in flight: memcpy_wait first",
            ));
        }
        let pieces = fragments(src, len);
        let frame_len = (HEADER_LEN + len) as u32;
        self.seq = self.seq.wrapping_add(1);
        let header = frame_header(self.mac, self.seq);
        self.write_memory(layout::TX_HEADER_AT, &header)?;
        self.write_memory(layout::RX_HEADER_AT, &[0u8; HEADER_LEN as usize])?;
        let rx_slot = self.rx_tail;
        self.write_memory(
            Self::rx_slot(rx_slot),
            &rx_descriptor(dst, self.iova(layout::RX_HEADER_AT)),
        )?;
        let mut slot = self.tx_tail;
        self.write_memory(
            Self::tx_slot(slot),
            &tx_descriptor(
                self.iova(layout::TX_HEADER_AT),
                HEADER_LEN as u16,
                frame_len,
                false,
            ),
        )?;
        for (i, &(at, bytes)) in pieces.iter().enumerate() {
            slot = (slot + 1) % TX_RING;
            let last = i + 1 == pieces.len();
            self.write_memory(
                Self::tx_slot(slot),
                &tx_descriptor(at, bytes as u16, frame_len, last),
            )?;
        }
        let tx_last = slot;
        self.rx_tail = (rx_slot + 1) % RX_RING;
        self.tx_tail = (tx_last + 1) % TX_RING;
        self.pending = Some(Pending {
            rx_slot,
            tx_last,
            len,
            header,
        });
        // The descriptors are in memory before either tail moves (the tail
        // writes are system calls or uncached stores after the copies).
        self.bar.write_at(reg::RDT0, self.rx_tail)?;
        self.bar.write_at(reg::TDT0, self.tx_tail)?;
        Ok(())
    }

    fn memcpy_wait(&mut self) -> Result<Completion, DriverError> {
        let Some(p) = self.pending.take() else {
            return Err(DriverError::InvalidRequest("no request was started"));
        };
        let tx_at = Self::tx_slot(p.tx_last);
        poll(self.timeout, "igb transmit write-back", || {
            Ok(tx_done(&self.descriptor(tx_at)?).then_some(()))
        })?;
        let sent = self.bar.read_at::<u32>(reg::TPT)?;
        if sent == 0 {
            // Dropped before it left: a source buffer did not map.
            self.unpost(p.rx_slot)?;
            return Ok(Completion::Faulted(err::SOURCE));
        }
        if sent != 1 {
            return Err(DriverError::Unexpected {
                what: "igb frames transmitted for one request (TPT)",
                expected: 1,
                got: u64::from(sent),
            });
        }
        let rx_at = Self::rx_slot(p.rx_slot);
        let arrived = poll(self.timeout, "igb receive write-back", || {
            Ok(RxWriteBack::parse(&self.descriptor(rx_at)?)
                .done()
                .then_some(()))
        });
        if let Err(e) = arrived {
            self.unpost(p.rx_slot)?;
            return Err(e);
        }
        self.received(p)
    }

    /// Sets vector 0's cause in EICS: the device raises the vector as for a
    /// completion, and no DMA happens.
    fn send_msi(&mut self) -> Result<(), DriverError> {
        Ok(self.bar.write_at(reg::EICS, 1u32 << VECTOR)?)
    }

    fn msi_eventfd(&self) -> Option<&EventFd> {
        self.msix.eventfd(VECTOR)
    }
}

impl<C: Container> Drop for IgbDriver<'_, C> {
    /// Interrupts masked, receive and transmit off, then a software reset;
    /// MSI-X and the driver's memory go after, with the fields.
    fn drop(&mut self) {
        let bar = &self.bar;
        let quiet = [
            (reg::EIMC, u32::MAX),
            (reg::IMC, u32::MAX),
            (reg::RCTL, 0),
            (reg::TCTL, 0),
            (reg::RXDCTL0, 0),
            (reg::TXDCTL0, 0),
        ];
        for (at, value) in quiet {
            if let Err(e) = bar.write_at(at, value) {
                log::warn!("igb driver: quiescing on drop, write {at:#x}: {e}");
            }
        }
        if let Err(e) = reset(bar, self.timeout) {
            log::warn!("igb driver: software reset on drop: {e}");
        }
    }
}

/// The fixture's igb as a DMA engine of the H cases.
#[derive(Debug, Clone, Copy)]
pub struct IgbEngine;

impl EngineKind for IgbEngine {
    const NAME: &'static str = "igb";

    type Driver<'c, C: Container + 'c> = IgbDriver<'c, C>;

    fn device_name<F: Fixture>(fixture: &F) -> Option<&str> {
        fixture.igb()
    }

    fn open<'c, C: Container>(
        device: C::Device,
        memory: DriverMemory<'c, C>,
        timeout: Duration,
    ) -> Result<IgbDriver<'c, C>, DriverError> {
        IgbDriver::open(device, memory, timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_end_at_every_4k_iova_boundary() {
        assert_eq!(fragments(0x1000, 0x1000), vec![(0x1000, 0x1000)]);
        assert_eq!(
            fragments(0x1ff0, 0x20),
            vec![(0x1ff0, 0x10), (0x2000, 0x10)]
        );
        assert_eq!(
            fragments(0x10_0800, MAX_COPY),
            vec![(0x10_0800, 0x800), (0x10_1000, 0x1000), (0x10_2000, 0x800)]
        );
        assert_eq!(fragments(0x5, 1), vec![(0x5, 1)]);
        assert!(fragments(0x5, 0).is_empty());
        let total: u64 = fragments(0x3_0123, 5000).iter().map(|f| f.1).sum();
        assert_eq!(total, 5000);
    }

    #[test]
    fn a_transmit_descriptor_is_the_advanced_data_format() {
        let d = tx_descriptor(0x1122_3344_5566_7788, 0x40, 0x1040, false);
        assert_eq!(&d[0..8], &0x1122_3344_5566_7788u64.to_le_bytes());
        // DTALEN 0x40, DTYP data, DEXT, IFCS; no EOP, no RS.
        assert_eq!(le32(&d[8..12]), 0x2230_0040);
        // PAYLEN in bits 31:14.
        assert_eq!(le32(&d[12..16]), 0x1040 << 14);
        assert!(!tx_done(&d), "a fresh descriptor is not done");
        let last = tx_descriptor(0x2000, 0x1000, 0x1040, true);
        assert_eq!(le32(&last[8..12]), 0x2b30_1000, "EOP and RS on the last");
        let mut back = last;
        back[12] |= 1;
        assert!(tx_done(&back));
    }

    #[test]
    fn a_receive_descriptor_and_its_write_back() {
        let d = rx_descriptor(0xdead_b000, 0x40f_f240);
        assert_eq!(&d[0..8], &0xdead_b000u64.to_le_bytes());
        assert_eq!(&d[8..16], &0x40f_f240u64.to_le_bytes());
        assert!(
            !RxWriteBack::parse(&d).done(),
            "an aligned header address reads as not done"
        );
        // What QEMU writes back for 100 bytes after a 64-byte header.
        let mut wb = [0u8; 16];
        wb[2..4].copy_from_slice(&(64u16 << 5).to_le_bytes());
        wb[8..12].copy_from_slice(&3u32.to_le_bytes());
        wb[12..14].copy_from_slice(&100u16.to_le_bytes());
        let wb = RxWriteBack::parse(&wb);
        assert!(wb.done() && wb.end_of_packet());
        assert_eq!((wb.length, wb.header_len), (100, 64));
    }

    #[test]
    fn the_frame_header_is_ours_and_numbered() {
        let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        let h = frame_header(mac, 7);
        assert_eq!(&h[0..6], &mac);
        assert_eq!(&h[6..12], &mac);
        assert_eq!(&h[12..14], &[0x88, 0xb5]);
        assert_ne!(frame_header(mac, 8), h, "the sequence number differs");
    }

    #[test]
    fn receive_sizes_hold_the_largest_frame() {
        // 9 KiB packet buffers, a 64-byte header buffer, header split always.
        assert_eq!(srrctl(), 0x0a00_0109);
        assert_eq!(MAX_FRAME, 8260);
        // Header plus the most 4 KiB pieces a copy can touch, in the ring.
        let worst = 1 + fragments(0xfff, MAX_COPY).len() as u32;
        assert!(worst < TX_RING);
    }
}
