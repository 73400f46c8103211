//! The VMM's state: the container, the guest-RAM mappings into it (IOVA =
//! guest-physical address) and the passed-through devices with their
//! interrupt routes. Backend-agnostic: the `mini_vmm` example runs it on the
//! mock, the facade's lane test (which includes this file by `#[path]`) on
//! the real kernel.

use std::sync::Arc;
use std::time::Duration;

use vfio_hal_facade::eventfd::{EventFd, EventFdExt};
use vfio_hal_facade::irq::index as irq_index;
use vfio_hal_facade::memory::page_size;
use vfio_hal_facade::msix::MsixLayout;
use vfio_hal_facade::prelude::*;
use vfio_hal_facade::{DmaAccess, DmaBuffer, OwnedDmaMapping, SparseArea};

/// Any error of the VMM, with the step that failed in its message.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where a device's interrupts go: one eventfd per vector of one index.
#[derive(Debug)]
pub struct Interrupts {
    /// `irq::index::MSIX` when the device has MSI-X, else `irq::index::MSI`.
    pub index: u32,
    /// The eventfd of each vector, in vector order.
    pub vectors: Vec<EventFd>,
    /// The MSI-X table and PBA placement, when routed through MSI-X.
    pub msix: Option<MsixLayout>,
    /// The parts of the MSI-X table's BAR the VMM may map straight into the
    /// guest (everything but the pages of the table and PBA, which it traps).
    pub direct_areas: Vec<SparseArea>,
}

/// A device given to the guest. The device is declared before its
/// interrupts so it (and the kernel's routes) goes before the eventfds.
#[derive(Debug)]
pub struct Passthrough<D> {
    /// The device's name in its backend (PCI address, or mock name).
    pub name: String,
    /// The device.
    pub device: D,
    /// Its interrupt routes.
    pub interrupts: Interrupts,
}

/// A VMM's VFIO state. Fields drop in declaration order: the guest RAM
/// (each guard unmaps its range), then the devices, then the container,
/// which the mappings share through its `Arc` and so cannot outlive. RAM
/// goes before the devices because on type1 a container's IOMMU, and every
/// mapping in it, goes with its last group: closing the devices first
/// would leave the guards nothing to unmap.
pub struct Vmm<C: Container> {
    ram: Vec<OwnedDmaMapping<C>>,
    devices: Vec<Passthrough<C::Device>>,
    container: Arc<C>,
}

impl<C: Container> Vmm<C> {
    /// A VMM with no RAM and no devices yet.
    pub fn new(container: C) -> Self {
        Self {
            ram: Vec::new(),
            devices: Vec::new(),
            container: Arc::new(container),
        }
    }

    /// The container, e.g. to open a second device in it.
    pub fn container(&self) -> &C {
        &self.container
    }

    /// Adds `len` bytes of zeroed guest RAM at `gpa`, mapped for device DMA
    /// at IOVA = `gpa`.
    pub fn add_ram(&mut self, gpa: u64, len: usize) -> Result<(), BoxError> {
        let buffer = DmaBuffer::new(len)?;
        let mapping = self
            .container
            .map_buffer_owned(gpa, buffer, DmaAccess::ReadWrite)
            .map_err(|e| format!("map guest RAM at {gpa:#x}: {e}"))?;
        self.ram.push(mapping);
        Ok(())
    }

    /// The guest RAM as `(gpa, len)`, in the order it was added.
    pub fn ram_ranges(&self) -> Vec<(u64, u64)> {
        self.ram.iter().map(|m| (m.iova(), m.len())).collect()
    }

    /// The RAM mapping holding `len` bytes at `gpa`, and the offset in it.
    fn ram_at(&self, gpa: u64, len: usize) -> Result<(&DmaBuffer, u64), BoxError> {
        self.ram
            .iter()
            .find(|m| gpa >= m.iova() && gpa - m.iova() + len as u64 <= m.len())
            .map(|m| (m.buffer(), gpa - m.iova()))
            .ok_or_else(|| format!("{len} bytes at GPA {gpa:#x} are not guest RAM").into())
    }

    /// Writes guest RAM, as the guest's CPU would.
    pub fn write_guest(&self, gpa: u64, data: &[u8]) -> Result<(), BoxError> {
        let (buffer, offset) = self.ram_at(gpa, data.len())?;
        Ok(buffer.write(offset, data)?)
    }

    /// Reads guest RAM.
    pub fn read_guest(&self, gpa: u64, len: usize) -> Result<Vec<u8>, BoxError> {
        let (buffer, offset) = self.ram_at(gpa, len)?;
        let mut out = vec![0; len];
        buffer.read(offset, &mut out)?;
        Ok(out)
    }

    /// Takes `device` into the VM: bus mastering on (its DMA and MSI need
    /// it), every MSI-X vector (or, without MSI-X, every MSI vector) routed
    /// to its own eventfd, the MSI-X table checked to lie where the
    /// capability says. Returns the device's slot for [`Vmm::device`].
    pub fn attach(&mut self, name: &str, device: C::Device) -> Result<usize, BoxError> {
        device.set_bus_master(true)?;
        let msix = device.msix_layout()?;
        let index = if msix.is_some() {
            irq_index::MSIX
        } else {
            irq_index::MSI
        };
        let irq = device.irq(index)?;
        let count = irq.info().count;
        let direct_areas = match &msix {
            Some(layout) => {
                if layout.table_size != count {
                    return Err(format!(
                        "{name}: the MSI-X capability says {} vectors, VFIO {count}",
                        layout.table_size
                    )
                    .into());
                }
                msix_direct_areas(&device, layout).map_err(|e| format!("{name}: {e}"))?
            }
            None if count == 0 => return Err(format!("{name}: neither MSI-X nor MSI").into()),
            None => Vec::new(),
        };
        let vectors = (0..count)
            .map(|_| EventFd::nonblocking())
            .collect::<Result<Vec<_>, _>>()?;
        let fds: Vec<_> = vectors.iter().map(|e| Some(e.as_fd())).collect();
        irq.set_eventfds(0, &fds)
            .map_err(|e| format!("{name}: route {count} vectors: {e}"))?;
        self.devices.push(Passthrough {
            name: name.to_owned(),
            device,
            interrupts: Interrupts {
                index,
                vectors,
                msix,
                direct_areas,
            },
        });
        Ok(self.devices.len() - 1)
    }

    /// The device in `slot` (from [`Vmm::attach`]).
    pub fn device(&self, slot: usize) -> &Passthrough<C::Device> {
        &self.devices[slot]
    }

    /// Waits up to `timeout` for `vector` of the device in `slot`: how many
    /// times it fired (0: not in time).
    pub fn wait_interrupt(
        &self,
        slot: usize,
        vector: usize,
        timeout: Duration,
    ) -> Result<u64, BoxError> {
        let efd = self.devices[slot]
            .interrupts
            .vectors
            .get(vector)
            .ok_or_else(|| format!("{}: no vector {vector}", self.devices[slot].name))?;
        Ok(efd.wait(timeout)?)
    }

    /// Tears the VM down in order — the devices stop mastering the bus (no
    /// DMA in flight to RAM about to go), the guest RAM is unmapped (each
    /// range, errors reported), the devices are closed, then the VMM's hold
    /// on the container goes — and hands the container back: only possible
    /// once no mapping is left to share it.
    pub fn shutdown(self) -> Result<C, BoxError> {
        let Self {
            ram,
            devices,
            container,
        } = self;
        for d in &devices {
            d.device
                .set_bus_master(false)
                .map_err(|e| format!("{}: quiesce: {e}", d.name))?;
        }
        for mapping in ram {
            let iova = mapping.iova();
            mapping
                .unmap()
                .map_err(|e| format!("unmap guest RAM at {iova:#x}: {e}"))?;
        }
        drop(devices);
        Arc::into_inner(container).ok_or_else(|| "a mapping outlived the VMM".into())
    }
}

/// The parts of the MSI-X table's BAR the VMM may map into the guest, after
/// checking that the device's own mmap areas leave the table's page out
/// (unless the BAR says the table may be mapped) and that the table's
/// device-file offset is where the layout puts it.
fn msix_direct_areas<D: Device>(
    device: &D,
    layout: &MsixLayout,
) -> Result<Vec<SparseArea>, BoxError> {
    let bar = device.region(layout.table_bar)?;
    let info = bar.info();
    let page = page_size();
    let table_page = layout.table_offset & !(page - 1);
    let table_end = layout.table_offset + layout.table_len();
    let covers_table = |a: &SparseArea| a.offset < table_end && a.offset + a.size > table_page;
    if !info.msix_mappable() {
        if let Some(a) = info.mappable_areas().iter().find(|a| covers_table(a)) {
            return Err(format!("BAR{} maps {a:?} over the MSI-X table", layout.table_bar).into());
        }
    }
    let at = device.file_offset(layout.table_bar, layout.table_offset)?;
    if at != info.offset + layout.table_offset {
        return Err(format!("the MSI-X table is at file offset {at:#x}, not in its BAR").into());
    }
    let direct = layout.mappable_areas(info, page)?;
    if let Some(a) = direct.iter().find(|a| covers_table(a)) {
        return Err(format!("the direct area {a:?} covers the MSI-X table").into());
    }
    Ok(direct)
}

/// Maps each `(iova, len)` again and unmaps it: the check that a torn-down
/// VMM left none of its guest RAM mapped in `container`.
pub fn assert_unmapped<C: Container>(container: &C, ranges: &[(u64, u64)]) -> Result<(), BoxError> {
    for &(iova, len) in ranges {
        let buffer = DmaBuffer::new(usize::try_from(len)?)?;
        container
            .map_buffer(iova, buffer, DmaAccess::ReadWrite)
            .map_err(|e| format!("{iova:#x} still mapped? {e}"))?
            .unmap()?;
    }
    Ok(())
}
