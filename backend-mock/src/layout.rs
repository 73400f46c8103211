//! What a device model declares about itself: PCI identity, BARs, interrupts.
//!
//! The shared PCI plumbing turns a [`PciLayout`] into config space
//! (header, BARs with sizing, capability list), the vfio-pci region and irq
//! tables, and the backing of each BAR (handler callbacks, shared RAM, the
//! MSI-X table and PBA).

use vfio_hal::SparseArea;

/// The kind of a base address register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BarKind {
    /// 32-bit memory space.
    Memory32,
    /// 64-bit memory space; takes the next BAR slot for its high half.
    Memory64,
    /// I/O port space.
    Io,
}

/// One BAR of a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BarLayout {
    /// Size in bytes: a power of two, at least 16 (4 for I/O).
    pub size: u64,
    /// Memory or I/O, and width.
    pub kind: BarKind,
    /// The prefetchable bit (memory BARs only).
    pub prefetchable: bool,
    /// RAM-like areas: backed by a shared memfd, served without calling the
    /// model, and reported as mmappable (a sparse-mmap capability when they
    /// do not cover the whole BAR). Page aligned, inside the BAR, disjoint.
    /// Everything else in the BAR goes to the model's callbacks.
    pub ram: Vec<SparseArea>,
}

impl BarLayout {
    /// A handler-backed 32-bit memory BAR (no mmappable part).
    pub fn memory32(size: u64) -> Self {
        Self {
            size,
            kind: BarKind::Memory32,
            prefetchable: false,
            ram: Vec::new(),
        }
    }

    /// A handler-backed 64-bit memory BAR.
    pub fn memory64(size: u64) -> Self {
        Self {
            kind: BarKind::Memory64,
            ..Self::memory32(size)
        }
    }

    /// Adds a RAM-like area at `offset` of `size` bytes.
    pub fn with_ram(mut self, offset: u64, size: u64) -> Self {
        self.ram.push(SparseArea { offset, size });
        self
    }

    /// Sets the prefetchable bit.
    pub fn prefetchable(mut self) -> Self {
        self.prefetchable = true;
        self
    }
}

/// An MSI capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MsiLayout {
    /// Vectors the device can use: 1, 2, 4, 8, 16 or 32.
    pub vectors: u32,
    /// Whether the capability has a 64-bit message address.
    pub addr64: bool,
}

/// An MSI-X capability with its table and PBA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MsixLayout {
    /// Table size (1–2048).
    pub vectors: u16,
    /// BAR holding the table.
    pub table_bar: u8,
    /// Offset of the table in that BAR (8-byte aligned).
    pub table_offset: u32,
    /// BAR holding the pending-bit array.
    pub pba_bar: u8,
    /// Offset of the PBA in that BAR (8-byte aligned).
    pub pba_offset: u32,
}

impl MsixLayout {
    /// Bytes of the table (16 per vector).
    pub fn table_size(&self) -> u64 {
        u64::from(self.vectors) * 16
    }

    /// Bytes of the PBA (one bit per vector, in whole qwords).
    pub fn pba_size(&self) -> u64 {
        u64::from(self.vectors).div_ceil(64) * 8
    }
}

/// A device-specific region (index 9 and up), reported with a region-type
/// capability and served by the model's callbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceRegionLayout {
    /// `VFIO_REGION_TYPE_*` (e.g. `1 << 31 | vendor` for vendor types).
    pub ty: u32,
    /// Subtype within the type.
    pub subtype: u32,
    /// Size in bytes.
    pub size: u64,
    /// Whether the region takes writes (it always takes reads).
    pub writable: bool,
}

/// `VFIO_REGION_TYPE_PCI_VENDOR_TYPE`: OR a PCI vendor id into it.
pub const REGION_TYPE_PCI_VENDOR: u32 = 1 << 31;

/// Everything a model declares about its PCI function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciLayout {
    /// Vendor id.
    pub vendor_id: u16,
    /// Device id.
    pub device_id: u16,
    /// Subsystem vendor id.
    pub subsystem_vendor_id: u16,
    /// Subsystem id.
    pub subsystem_id: u16,
    /// Revision id.
    pub revision: u8,
    /// 24-bit class code (base class, subclass, programming interface).
    pub class_code: u32,
    /// Interrupt pin: 0 for none, 1 for INTA (INTx count 1).
    pub interrupt_pin: u8,
    /// BARs 0–5; a 64-bit BAR leaves the next slot `None`.
    pub bars: [Option<BarLayout>; 6],
    /// MSI capability.
    pub msi: Option<MsiLayout>,
    /// MSI-X capability.
    pub msix: Option<MsixLayout>,
    /// A PCI Express endpoint: adds the Express capability, a 4 KiB config
    /// space, and the ERR irq index (count 1), as vfio-pci reports for PCIe.
    pub pcie: bool,
    /// Device-specific regions, numbered from 9.
    pub device_regions: Vec<DeviceRegionLayout>,
}

impl PciLayout {
    /// A conventional PCI function with these ids and nothing else.
    pub fn new(vendor_id: u16, device_id: u16) -> Self {
        Self {
            vendor_id,
            device_id,
            // QEMU's defaults for its own devices.
            subsystem_vendor_id: 0x1af4,
            subsystem_id: 0x1100,
            revision: 0,
            class_code: 0,
            interrupt_pin: 0,
            bars: Default::default(),
            msi: None,
            msix: None,
            pcie: false,
            device_regions: Vec::new(),
        }
    }
}
