//! The kernel's mtty sample (`samples/vfio-mdev/mtty.c`) as a migration
//! subject: a dual-port virtual 16550 UART, one 8-byte I/O BAR per port,
//! whose registers and loop-back FIFO are its whole device state.
//!
//! [`serial_state_migrates`] programs both ports of the source with values
//! the destination does not hold, migrates it by stop-and-copy into the
//! destination and reads the state back there: the line control and
//! scratch registers, and the bytes waiting in each port's FIFO. It works
//! on any backend that can open the lane's two instances
//! ([`crate::MTTY_SRC`], [`crate::MTTY_DST`]).

use vfio_hal::migration::{self, MigrationState};
use vfio_hal::{Container, Device, Region, RegionExt};

/// 16550 register offsets in a port's BAR (DLAB clear).
const THR_RBR: u64 = 0;
const FCR: u64 = 2;
const LCR: u64 = 3;
const LSR: u64 = 5;
const SCR: u64 = 7;
/// FCR: FIFO on (mtty's FIFO holds one byte without it), both FIFOs
/// cleared.
const FCR_FIFO_CLEARED: u8 = 0x07;
/// Two line settings (8 data bits, 1 stop bit; odd or even parity), so
/// the source always gets one the destination does not have.
const LCR_CHOICES: [u8; 2] = [0x0b, 0x1b];
/// LSR: data ready.
const LSR_DR: u8 = 0x01;
/// The bytes left in each port's FIFO.
const FIFO_BYTES: [&[u8]; 2] = [b"vfio", b"hal!"];

/// What one port of the source is programmed with: values the
/// destination's port does not hold yet (mtty keeps its registers across
/// opens and resets, so earlier tests leave theirs).
struct PortState {
    lcr: u8,
    scratch: u8,
    fifo: &'static [u8],
}

fn write8(bar: &impl Region, offset: u64, value: u8) -> Result<(), String> {
    bar.write_at::<u8>(offset, value)
        .map_err(|e| format!("write {value:#04x} at {offset}: {e}"))
}

fn read8(bar: &impl Region, offset: u64) -> Result<u8, String> {
    bar.read_at::<u8>(offset)
        .map_err(|e| format!("read at {offset}: {e}"))
}

/// Migrates the source mtty's serial state into the destination through
/// `container`'s backend and checks it arrived; both devices are left
/// RUNNING. Returns a line describing what was checked.
///
/// The source's values are chosen to differ from what the destination's
/// registers hold before, so a migration that carried nothing fails.
pub fn serial_state_migrates<C: Container>(
    container: &C,
    src: &str,
    dst: &str,
) -> Result<String, String> {
    let open = |name: &str| {
        container
            .open_device(name)
            .map_err(|e| format!("open {name}: {e}"))
    };
    let (source, destination) = (open(src)?, open(dst)?);
    let mut ports = Vec::new();
    for (index, fifo) in FIFO_BYTES.into_iter().enumerate() {
        let theirs = region(&destination, index)?;
        let (their_lcr, their_scratch) = (read8(&theirs, LCR)?, read8(&theirs, SCR)?);
        let port = PortState {
            lcr: LCR_CHOICES[usize::from(their_lcr == LCR_CHOICES[0])],
            scratch: their_scratch ^ (0x5a + index as u8),
            fifo,
        };
        let bar = region(&source, index)?;
        write8(&bar, FCR, FCR_FIFO_CLEARED)?;
        write8(&bar, LCR, port.lcr)?;
        write8(&bar, SCR, port.scratch)?;
        for &byte in port.fifo {
            write8(&bar, THR_RBR, byte)?;
        }
        ports.push(port);
    }

    let mut wire = Vec::new();
    migration::save(&source, &mut wire).map_err(|e| format!("save {src}: {e}"))?;
    migration::load(&destination, &mut wire.as_slice())
        .map_err(|e| format!("load {} bytes into {dst}: {e}", wire.len()))?;
    destination
        .set_migration_state(MigrationState::Running)
        .map_err(|e| format!("run {dst}: {e}"))?;
    source
        .set_migration_state(MigrationState::Running)
        .map_err(|e| format!("run {src} again: {e}"))?;

    for (index, port) in ports.iter().enumerate() {
        let bar = region(&destination, index)?;
        let lcr = read8(&bar, LCR)?;
        let scratch = read8(&bar, SCR)?;
        let mut fifo = Vec::new();
        while fifo.len() <= port.fifo.len() && read8(&bar, LSR)? & LSR_DR != 0 {
            fifo.push(read8(&bar, THR_RBR)?);
        }
        if (lcr, scratch, fifo.as_slice()) != (port.lcr, port.scratch, port.fifo) {
            return Err(format!(
                "port {index} after migration: LCR {lcr:#04x}, SCR {scratch:#04x}, FIFO {fifo:?}; \
                 expected {:#04x}, {:#04x}, {:?}",
                port.lcr, port.scratch, port.fifo
            ));
        }
    }
    Ok(format!(
        "{src} -> {dst}: {} bytes of state; on both ports LCR, SCR and the FIFO's bytes arrived",
        wire.len()
    ))
}

fn region<D: Device>(device: &D, index: usize) -> Result<D::Region, String> {
    let index = u32::try_from(index).map_err(|e| e.to_string())?;
    device.region(index).map_err(|e| format!("BAR{index}: {e}"))
}

/// Opens the mtty `uuid` by its sysfs path (`/sys/bus/mdev/devices/<uuid>`)
/// through `container`'s backend, checks VFIO describes it as the PCI
/// device it emulates with all three migration features, RUNNING, and
/// drives the kernel's device DMA logging on it: mtty has logging
/// callbacks that track nothing (it does no DMA), so a report over a
/// logged range comes back clean. Returns a line describing what was seen.
pub fn opens_by_path_with_migration_and_logging<C: Container>(
    container: &C,
    uuid: &str,
) -> Result<String, String> {
    use vfio_hal::device::DeviceKind;
    use vfio_hal::migration::MigrationFlags;

    const PAGE: u64 = 4096;
    const LOGGED: (u64, u64) = (0x10_0000, 16 * PAGE);
    let path = format!("/sys/bus/mdev/devices/{uuid}");
    let device = container
        .open_device(&path)
        .map_err(|e| format!("open {path}: {e}"))?;
    let info = device.info();
    if info.kind() != DeviceKind::Pci || info.num_regions < 2 {
        return Err(format!("{path}: {info:?}, not a PCI device with two BARs"));
    }
    let flags = device
        .migration_flags()
        .map_err(|e| format!("migration flags: {e}"))?;
    let all = MigrationFlags::STOP_COPY | MigrationFlags::P2P | MigrationFlags::PRE_COPY;
    if flags != all {
        return Err(format!("migration flags {flags:?}, mtty offers {all:?}"));
    }
    let state = device
        .migration_state()
        .map_err(|e| format!("migration state: {e}"))?;
    if state != MigrationState::Running {
        return Err(format!("state {state:?} after open"));
    }
    let page = device
        .dma_logging_start(PAGE, &[LOGGED])
        .map_err(|e| format!("DMA logging start: {e}"))?;
    let report = device
        .dma_logging_report(LOGGED.0, LOGGED.1, page)
        .map_err(|e| format!("DMA logging report: {e}"));
    let stop = device
        .dma_logging_stop()
        .map_err(|e| format!("DMA logging stop: {e}"));
    let dirty = report?.dirty().count();
    stop?;
    if dirty != 0 {
        return Err(format!(
            "mtty does no DMA, yet {dirty} pages are reported dirty"
        ));
    }
    Ok(format!(
        "{path}: PCI, {} regions, migration {flags:?}, RUNNING; DMA logging of {} pages at {page} bytes: clean",
        info.num_regions,
        LOGGED.1 / PAGE
    ))
}
