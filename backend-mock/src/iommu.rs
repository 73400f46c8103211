//! The mock IOMMU: one IO address space with the kernel's mapping rules, and
//! the translation that device models' DMA goes through.
//!
//! Mappings live in a `BTreeMap` keyed by IOVA, so map, unmap and the
//! translation of one DMA access are O(log n) in the number of mappings.
//!
//! # Rules, and where they come from
//! Map and unmap return [`Error::sys`] with the errno the kernel returns, so
//! that [`Error::kind`] is the same on the mock and on the real backends.
//! The checks and their order follow `vfio_dma_do_map` /
//! `vfio_dma_do_unmap` in `drivers/vfio/vfio_iommu_type1.c` (type1v2):
//!
//! | request | errno | kind |
//! |---|---|---|
//! | `len == 0`, or `iova`, `len` or the host address not page aligned | `EINVAL` | `InvalidArgument` |
//! | `iova + len - 1` (or the host end) wraps | `EOVERFLOW` | `Overflow` |
//! | overlaps an existing mapping | `EEXIST` | `AlreadyMapped` |
//! | [`IommuConfig::max_mappings`] reached (type1's `dma_entry_limit`) | `ENOSPC` | `Exhausted` |
//! | not inside one of [`IommuConfig::iova_ranges`] (a reserved hole) | `EINVAL` | `InvalidArgument` |
//! | unmap that would split a mapping (unless [`IommuConfig::allow_split_unmap`]) | `EINVAL` | `InvalidArgument` |
//! | unmap of a range holding no mapping | `ENOENT` | `NotMapped` |
//!
//! Two notes on the sources. Type1 answered an address wrap with `EINVAL`
//! until the 2025 series "vfio/type1: handle DMA map/unmap up to the
//! addressable limit" switched it to `EOVERFLOW` (`check_add_overflow`),
//! which is what iommufd has always returned; the mock follows the current
//! rule. Type1 reports an unmap of nothing as success with a size of 0,
//! iommufd as `ENOENT`; the HAL normalises both to `NotMapped`, so the mock
//! returns `ENOENT` directly.
//!
//! # DMA
//! [`MockIommu::dma_read`] and [`MockIommu::dma_write`] translate a device
//! access. The whole range is checked first — every byte mapped, no gap
//! between mappings, the mapping's [`DmaAccess`] allowing the direction —
//! and only then copied, so a faulting access never touches memory. Faults
//! are recorded ([`MockIommu::faults`]) and returned to the model. The copy
//! happens with the mapping table locked, so an unmap waits for a DMA in
//! flight to finish, as the kernel's unmap waits for the IOTLB flush.
//!
//! # Dirty pages
//! While tracking is on ([`MockIommu::set_dirty_tracking`]), every device
//! write that goes through marks the IOMMU pages it touched, as a hardware
//! IOMMU's dirty bit does. [`MockIommu::read_dirty`] answers by
//! [`IommuConfig::dirty_reads`]: iommufd's rules by default, type1's
//! stricter ones (one page size, always clear, whole mappings) on request.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

use vfio_hal::dirty::{DirtyBitmap, MAX_BITMAP_BYTES};
use vfio_hal::{
    shared_memory, Capability, DmaAccess, Error, ErrorKind, IommuInfo, IovaRange, Result, Target,
};

/// The ioctl names the errors carry, as the type1 backend spells them.
const OP_MAP: &str = "VFIO_IOMMU_MAP_DMA";
const OP_UNMAP: &str = "VFIO_IOMMU_UNMAP_DMA";

/// How many faults are kept; older ones are dropped (and still counted).
pub const FAULT_LOG_CAPACITY: usize = 4096;

/// Configuration of a mock IOMMU. Public fields; [`Default`] is an x86
/// machine with type1's default limits.
///
/// ```
/// use vfio_hal_mock::{IommuConfig, MockContainer};
/// use vfio_hal::IovaRange;
///
/// // A 64 KiB-page IOMMU with a small aperture and room for 8 mappings.
/// let config = IommuConfig {
///     page_size: 0x1_0000,
///     iova_ranges: vec![IovaRange { start: 0, end: 0xffff_ffff }],
///     max_mappings: 8,
///     ..IommuConfig::default()
/// };
/// let container = MockContainer::with_config(config)?;
/// assert_eq!(container.mapping_count(), 0);
/// # Ok::<(), vfio_hal::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IommuConfig {
    /// The one page size the IOMMU maps with (a power of two); map and unmap
    /// arguments must be aligned to it. Default 4096.
    pub page_size: u64,
    /// Usable IOVA ranges; the holes between them are reserved. Default: x86,
    /// `[0, 0xfedf_ffff]` and `[0xfef0_0000, 2^48 - 1]` (the MSI window
    /// `0xfee0_0000..=0xfeef_ffff` is a hole, and 48 address bits).
    pub iova_ranges: Vec<IovaRange>,
    /// Most mappings at once, like type1's `dma_entry_limit`. Default 65535.
    pub max_mappings: u32,
    /// Whether an unmap may cut a mapping in two (type1 v1 and hardware page
    /// tables allow it; type1v2 and iommufd refuse). Default false.
    pub allow_split_unmap: bool,
    /// Which kernel interface's rules dirty-bitmap reads follow. Default
    /// [`DirtyReads::Iommufd`], the more permissive.
    pub dirty_reads: DirtyReads,
}

/// How [`MockIommu::read_dirty`] answers: type1 and iommufd differ.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum DirtyReads {
    /// iommufd's `IOMMU_HWPT_GET_DIRTY_BITMAP`: any power-of-two page size
    /// from the IOMMU's up, `keep` honoured (`NO_CLEAR`), any aligned range.
    #[default]
    Iommufd,
    /// type1's `VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP`: only the IOMMU's
    /// page size, every read clears (`keep` is `EINVAL`), and a range that
    /// starts or ends inside a mapping is `EINVAL` ("must fully cover
    /// vfio_dma mappings", `vfio_iova_dirty_bitmap`).
    ///
    /// Deliberate deviation: the mock still reports only the pages devices
    /// wrote. The kernel's type1 knows those only for devices that pin
    /// pages (mediated devices); behind a vfio-pci device it reports every
    /// page of every mapping dirty on every read, which would leave a
    /// caller's bitmap handling untested.
    Type1,
}

/// An [`IommuConfig`] no IOMMU could have, as [`IommuConfig::validate`]
/// reports it (the source of its `InvalidArgument` error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The page size is 0 or not a power of two.
    #[error("page size {page_size:#x} is not a power of two")]
    PageSize {
        /// The configured page size.
        page_size: u64,
    },
    /// `max_mappings` is 0: nothing could ever be mapped.
    #[error("max_mappings is 0: nothing could be mapped")]
    NoMappings,
    /// No IOVA range: nothing could ever be mapped.
    #[error("no IOVA range: nothing could be mapped")]
    NoIovaRange,
    /// A range ends before it starts.
    #[error("IOVA range {range} ends before it starts")]
    Reversed {
        /// The range.
        range: IovaRange,
    },
    /// A range holds no whole page-aligned page.
    #[error("IOVA range {range} holds no aligned page of {page_size:#x} bytes")]
    NoPage {
        /// The range.
        range: IovaRange,
        /// The configured page size.
        page_size: u64,
    },
    /// Two neighbouring ranges are out of order, overlap or touch (they
    /// must be ascending with a hole between them).
    #[error("IOVA ranges {first} and {second} are not ascending and apart")]
    Unordered {
        /// The earlier range in the list.
        first: IovaRange,
        /// The one after it.
        second: IovaRange,
    },
}

impl IommuConfig {
    /// x86's usable IOVA ranges with 48 address bits, around the MSI window.
    pub fn x86_iova_ranges() -> Vec<IovaRange> {
        vec![
            IovaRange {
                start: 0,
                end: 0xfedf_ffff,
            },
            IovaRange {
                start: 0xfef0_0000,
                end: (1 << 48) - 1,
            },
        ]
    }

    /// Checks the configuration; used by [`MockIommu::new`] and
    /// [`crate::MockContainer::with_config`].
    ///
    /// Errors: `InvalidArgument` whose source is the [`ConfigError`] naming
    /// the broken rule and the offending value.
    pub fn validate(&self) -> Result<()> {
        self.check()
            .map_err(|e| Error::other("IommuConfig", Target::None, ErrorKind::InvalidArgument, e))
    }

    fn check(&self) -> Result<(), ConfigError> {
        let page_size = self.page_size;
        if !page_size.is_power_of_two() {
            return Err(ConfigError::PageSize { page_size });
        }
        if self.max_mappings == 0 {
            return Err(ConfigError::NoMappings);
        }
        if self.iova_ranges.is_empty() {
            return Err(ConfigError::NoIovaRange);
        }
        for &range in &self.iova_ranges {
            if range.end < range.start {
                return Err(ConfigError::Reversed { range });
            }
            // The first page-aligned IOVA in the range, and its last byte.
            let holds_a_page = range
                .start
                .checked_next_multiple_of(page_size)
                .and_then(|aligned| aligned.checked_add(page_size - 1))
                .is_some_and(|last| last <= range.end);
            if !holds_a_page {
                return Err(ConfigError::NoPage { range, page_size });
            }
        }
        // A hole must separate neighbours: touching ones are one range.
        let apart = |w: &[IovaRange]| w[0].end.checked_add(1).is_some_and(|n| n < w[1].start);
        if let Some(w) = self.iova_ranges.windows(2).find(|w| !apart(w)) {
            return Err(ConfigError::Unordered {
                first: w[0],
                second: w[1],
            });
        }
        Ok(())
    }

    /// The inclusive range containing `[iova, last]`, if one does.
    fn range_containing(&self, iova: u64, last: u64) -> Option<&IovaRange> {
        // Sorted and disjoint: the candidate is the last range starting at or before `iova`.
        let i = self.iova_ranges.partition_point(|r| r.start <= iova);
        let r = self.iova_ranges.get(i.checked_sub(1)?)?;
        (last <= r.end).then_some(r)
    }
}

impl Default for IommuConfig {
    fn default() -> Self {
        Self {
            page_size: 4096,
            iova_ranges: Self::x86_iova_ranges(),
            max_mappings: 65535,
            allow_split_unmap: false,
            dirty_reads: DirtyReads::default(),
        }
    }
}

/// Which way a device access moves data, seen from the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DmaDirection {
    /// The device reads host memory.
    Read,
    /// The device writes host memory.
    Write,
}

impl DmaDirection {
    /// Whether this is a device write.
    pub fn is_write(self) -> bool {
        self == Self::Write
    }
}

/// Why the IOMMU refused a device access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultReason {
    /// Some byte of the access has no mapping (unmapped, or a gap between two mappings).
    NotMapped,
    /// A device write hit a mapping without write permission (a read-only mapping).
    WriteToReadOnly,
    /// A device read hit a mapping without read permission (a write-only mapping).
    ReadFromWriteOnly,
    /// `iova + len` wraps around the address space.
    AddressOverflow,
}

/// One recorded IOMMU fault: a device access that was refused whole.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IommuFault {
    /// The device that made the access (its plug name).
    pub device: String,
    /// First IOVA of the access.
    pub iova: u64,
    /// Length of the access in bytes.
    pub len: u64,
    /// Read or write.
    pub direction: DmaDirection,
    /// The first IOVA that failed translation.
    pub at: u64,
    /// Why it failed.
    pub reason: FaultReason,
}

impl fmt::Display for IommuFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IOMMU fault: {} {:?} of {:#x}+{:#x} failed at {:#x}: {:?}",
            self.device, self.direction, self.iova, self.len, self.at, self.reason
        )
    }
}

/// A live mapping, as [`MockIommu::mappings`] lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MappingInfo {
    /// First IOVA.
    pub iova: u64,
    /// Length in bytes.
    pub len: u64,
    /// What the device may do.
    pub access: DmaAccess,
}

#[derive(Debug, Clone, Copy)]
struct Mapping {
    len: u64,
    /// Host address with exposed provenance (see `host_ptr`).
    host: usize,
    access: DmaAccess,
}

impl Mapping {
    /// Inclusive last IOVA of a mapping that starts at `iova`.
    fn last(&self, iova: u64) -> u64 {
        // Cannot wrap: checked when the mapping was made.
        iova + (self.len - 1)
    }
}

#[derive(Debug, Default)]
struct Table {
    maps: BTreeMap<u64, Mapping>,
    bytes: u64,
}

impl Table {
    /// The mapping that contains `iova`, with its start.
    fn containing(&self, iova: u64) -> Option<(u64, Mapping)> {
        let (&start, &m) = self.maps.range(..=iova).next_back()?;
        (m.last(start) >= iova).then_some((start, m))
    }

    fn insert(&mut self, iova: u64, m: Mapping) {
        self.bytes += m.len;
        self.maps.insert(iova, m);
    }

    fn remove(&mut self, iova: u64) -> Option<Mapping> {
        let m = self.maps.remove(&iova)?;
        self.bytes -= m.len;
        Some(m)
    }

    /// Removes the mapping that is exactly `[iova, iova + len)`, in one
    /// descent of the tree; false (and nothing changed) if there is none.
    fn remove_exact(&mut self, iova: u64, len: u64) -> bool {
        match self.maps.entry(iova) {
            Entry::Occupied(e) if e.get().len == len => {
                e.remove();
                self.bytes -= len;
                true
            }
            _ => false,
        }
    }
}

#[derive(Debug, Default)]
struct FaultLog {
    recent: VecDeque<IommuFault>,
    total: u64,
}

/// An in-memory IOMMU: the mapping table and the DMA translation.
///
/// [`crate::MockContainer`] owns one; it is public so that tests of custom
/// device models can use it directly.
#[derive(Debug)]
pub struct MockIommu {
    config: IommuConfig,
    table: Mutex<Table>,
    faults: Mutex<FaultLog>,
    /// While dirty tracking runs: the IOMMU pages (of the configured page
    /// size) devices wrote, by IOVA.
    dirty: Mutex<Option<BTreeSet<u64>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere cannot leave the table half-updated in a way that
    // matters more than refusing every later call would.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn iova_err(op: &'static str, iova: u64, len: u64, errno: i32) -> Error {
    Error::sys(op, Target::Iova { iova, len }, errno)
}

/// Rebuilds a host pointer from an address stored by `map`.
fn host_ptr(addr: usize) -> *mut u8 {
    std::ptr::with_exposed_provenance_mut(addr)
}

impl MockIommu {
    /// An empty IOMMU; the configuration must be valid ([`IommuConfig::validate`]).
    pub fn new(config: IommuConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            table: Mutex::new(Table::default()),
            faults: Mutex::new(FaultLog::default()),
            dirty: Mutex::new(None),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &IommuConfig {
        &self.config
    }

    /// What `VFIO_IOMMU_GET_INFO` would report: the page size, the ranges,
    /// the remaining mapping count, and the matching capability chain.
    pub fn info(&self) -> IommuInfo {
        let avail = self
            .config
            .max_mappings
            .saturating_sub(u32::try_from(self.mapping_count()).unwrap_or(u32::MAX));
        IommuInfo {
            page_sizes: self.config.page_size,
            iova_ranges: self.config.iova_ranges.clone(),
            dma_avail: Some(avail),
            caps: vec![
                Capability::IovaRanges(self.config.iova_ranges.clone()),
                Capability::Migration {
                    flags: 0,
                    pgsize_bitmap: self.config.page_size,
                    max_dirty_bitmap_size: MAX_BITMAP_BYTES,
                },
                Capability::DmaAvail { avail },
            ],
        }
    }

    /// Number of live mappings.
    pub fn mapping_count(&self) -> usize {
        lock(&self.table).maps.len()
    }

    /// Total bytes mapped.
    pub fn mapped_bytes(&self) -> u64 {
        lock(&self.table).bytes
    }

    /// Every live mapping, ascending by IOVA.
    pub fn mappings(&self) -> Vec<MappingInfo> {
        lock(&self.table)
            .maps
            .iter()
            .map(|(&iova, m)| MappingInfo {
                iova,
                len: m.len,
                access: m.access,
            })
            .collect()
    }

    /// Maps `[host, host + len)` at `iova`, with the rules in the module docs.
    ///
    /// # Safety
    /// The contract of [`vfio_hal::Container::map_dma_raw`]: the host range
    /// stays valid process memory until it is unmapped or the IOMMU is
    /// dropped, and the caller holds no references to it that assume
    /// exclusive access (device DMA may write it at any time).
    pub unsafe fn map(&self, iova: u64, host: *mut u8, len: u64, access: DmaAccess) -> Result<()> {
        let err = |errno| iova_err(OP_MAP, iova, len, errno);
        let mask = self.config.page_size - 1;
        let host_addr = host.expose_provenance();
        if len == 0 || (iova | len | host_addr as u64) & mask != 0 {
            return Err(err(libc::EINVAL));
        }
        if host.is_null() {
            return Err(err(libc::EFAULT));
        }
        let last = iova
            .checked_add(len - 1)
            .ok_or_else(|| err(libc::EOVERFLOW))?;
        let host_len = usize::try_from(len).map_err(|_| err(libc::EOVERFLOW))?;
        host_addr
            .checked_add(host_len - 1)
            .ok_or_else(|| err(libc::EOVERFLOW))?;
        let mut table = lock(&self.table);
        // Disjoint mappings: only the last one starting at or before `last` can overlap.
        if let Some((&start, m)) = table.maps.range(..=last).next_back() {
            if m.last(start) >= iova {
                return Err(err(libc::EEXIST));
            }
        }
        if table.maps.len() >= self.config.max_mappings as usize {
            return Err(err(libc::ENOSPC));
        }
        if self.config.range_containing(iova, last).is_none() {
            return Err(err(libc::EINVAL));
        }
        table.insert(
            iova,
            Mapping {
                len,
                host: host_addr,
                access,
            },
        );
        Ok(())
    }

    /// Unmaps every mapping inside `[iova, iova + len)`; returns the bytes unmapped.
    pub fn unmap(&self, iova: u64, len: u64) -> Result<u64> {
        let unmapped = self.unmap_table(iova, len)?;
        // What was written there is no longer the device's to report.
        if let Some(dirty) = lock(&self.dirty).as_mut() {
            let last = iova.saturating_add(len - 1);
            dirty.retain(|&page| page < iova || page > last);
        }
        Ok(unmapped)
    }

    fn unmap_table(&self, iova: u64, len: u64) -> Result<u64> {
        let err = |errno| iova_err(OP_UNMAP, iova, len, errno);
        let mask = self.config.page_size - 1;
        if len == 0 || (iova | len) & mask != 0 {
            return Err(err(libc::EINVAL));
        }
        let last = iova
            .checked_add(len - 1)
            .ok_or_else(|| err(libc::EOVERFLOW))?;
        let mut table = lock(&self.table);
        // The common unmap, of one whole mapping: no split, nothing else
        // inside the range (mappings are disjoint), the same answer as the
        // general walk below.
        if table.remove_exact(iova, len) {
            return Ok(len);
        }
        let head = table.containing(iova).filter(|&(start, _)| start < iova);
        let tail = table
            .containing(last)
            .filter(|&(start, m)| m.last(start) > last);
        if !self.config.allow_split_unmap {
            if head.is_some() || tail.is_some() {
                return Err(err(libc::EINVAL));
            }
        } else {
            // Splitting one mapping into two needs a free slot.
            let one_split = matches!((head, tail), (Some((a, _)), Some((b, _))) if a == b);
            if one_split && table.maps.len() >= self.config.max_mappings as usize {
                return Err(err(libc::ENOSPC));
            }
        }
        let mut unmapped = 0u64;
        // Split mode only: cut the mappings that stick out on either side.
        let piece = |start: u64, m: Mapping, from: u64, to: u64| {
            let offset = from - start;
            (
                from,
                Mapping {
                    len: to - from + 1,
                    host: m.host + offset as usize,
                    access: m.access,
                },
            )
        };
        match (head, tail) {
            (Some((start, m)), Some((t, _))) if start == t => {
                table.remove(start);
                let (a, left) = piece(start, m, start, iova - 1);
                let (b, right) = piece(start, m, last + 1, m.last(start));
                table.insert(a, left);
                table.insert(b, right);
                unmapped += len;
            }
            (head, tail) => {
                if let Some((start, m)) = head {
                    table.remove(start);
                    let (a, left) = piece(start, m, start, iova - 1);
                    table.insert(a, left);
                    unmapped += m.last(start) - iova + 1;
                }
                if let Some((start, m)) = tail {
                    table.remove(start);
                    let (b, right) = piece(start, m, last + 1, m.last(start));
                    table.insert(b, right);
                    unmapped += last - start + 1;
                }
            }
        }
        // Everything that starts inside the range now also ends inside it.
        while let Some((&start, _)) = table.maps.range(iova..=last).next() {
            match table.remove(start) {
                Some(m) => unmapped += m.len,
                None => break,
            }
        }
        if unmapped == 0 {
            return Err(err(libc::ENOENT));
        }
        Ok(unmapped)
    }

    /// Unmaps everything; returns the bytes unmapped (0 when already empty).
    pub fn unmap_all(&self) -> u64 {
        let mut table = lock(&self.table);
        let bytes = table.bytes;
        *table = Table::default();
        if let Some(dirty) = lock(&self.dirty).as_mut() {
            dirty.clear();
        }
        bytes
    }

    /// Starts (forgetting earlier marks) or stops dirty tracking: while it
    /// runs, every device write through a mapping marks the IOMMU pages it
    /// touches.
    pub fn set_dirty_tracking(&self, enable: bool) {
        *lock(&self.dirty) = enable.then(BTreeSet::new);
    }

    /// Which `page_size` pages of `[iova, iova + len)` devices wrote since
    /// tracking started or the last read; the read clears them unless
    /// `keep`. The rules for `page_size`, `keep` and the range are
    /// [`IommuConfig::dirty_reads`]'s; the range also follows
    /// [`DirtyBitmap::new`].
    ///
    /// # Errors
    /// `EINVAL` while tracking is off, for a page size below the IOMMU's,
    /// and for what [`DirtyReads`] refuses; [`DirtyBitmap::new`]'s errors
    /// for the range.
    pub fn read_dirty(
        &self,
        iova: u64,
        len: u64,
        page_size: u64,
        keep: bool,
    ) -> Result<DirtyBitmap> {
        const OP: &str = "VFIO_IOMMU_DIRTY_PAGES";
        let err = || iova_err(OP, iova, len, libc::EINVAL);
        if page_size < self.config.page_size {
            return Err(err());
        }
        let mut bitmap = DirtyBitmap::new(iova, len, page_size)?;
        if self.config.dirty_reads == DirtyReads::Type1
            && (keep || page_size != self.config.page_size || self.bisects_a_mapping(iova, len))
        {
            return Err(err());
        }
        let mut guard = lock(&self.dirty);
        let dirty = guard.as_mut().ok_or_else(err)?;
        let last = iova + (len - 1);
        let written: Vec<u64> = dirty.range(iova..=last).copied().collect();
        for &page in &written {
            bitmap.mark(page, 1)?;
        }
        if !keep {
            for page in written {
                dirty.remove(&page);
            }
        }
        Ok(bitmap)
    }

    /// Whether `[iova, iova + len)` (not empty) starts or ends inside a mapping.
    fn bisects_a_mapping(&self, iova: u64, len: u64) -> bool {
        let last = iova.saturating_add(len - 1);
        let table = lock(&self.table);
        let containing = |at: u64| {
            table
                .maps
                .range(..=at)
                .next_back()
                .filter(|(&start, m)| m.last(start) >= at)
                .map(|(&start, m)| (start, m.last(start)))
        };
        containing(iova).is_some_and(|(start, _)| start != iova)
            || containing(last).is_some_and(|(_, end)| end != last)
    }

    /// Marks the IOMMU pages of a device write that went through.
    fn mark_dirty(&self, iova: u64, len: u64) {
        if len == 0 {
            return;
        }
        if let Some(dirty) = lock(&self.dirty).as_mut() {
            let page = self.config.page_size;
            let first = iova & !(page - 1);
            let last = iova.saturating_add(len - 1) & !(page - 1);
            let mut at = first;
            loop {
                dirty.insert(at);
                match at.checked_add(page) {
                    Some(next) if next <= last => at = next,
                    _ => break,
                }
            }
        }
    }

    /// Checks a device access of `len` bytes at `iova` without copying.
    pub fn check(&self, iova: u64, len: u64, direction: DmaDirection) -> Result<(), FaultReason> {
        Self::check_locked(&lock(&self.table), iova, len, direction).map_err(|(_, r)| r)
    }

    /// Walks the translation of `[iova, iova + len)`: Ok if every byte is
    /// mapped with the needed permission, else the first failing IOVA.
    fn check_locked(
        table: &Table,
        iova: u64,
        len: u64,
        direction: DmaDirection,
    ) -> Result<(), (u64, FaultReason)> {
        if len == 0 {
            return Ok(());
        }
        let last = iova
            .checked_add(len - 1)
            .ok_or((iova, FaultReason::AddressOverflow))?;
        let mut pos = iova;
        loop {
            let (start, m) = table.containing(pos).ok_or((pos, FaultReason::NotMapped))?;
            let allowed = match direction {
                DmaDirection::Read => m.access.device_reads(),
                DmaDirection::Write => m.access.device_writes(),
            };
            if !allowed {
                let reason = match direction {
                    DmaDirection::Read => FaultReason::ReadFromWriteOnly,
                    DmaDirection::Write => FaultReason::WriteToReadOnly,
                };
                return Err((pos, reason));
            }
            let end = m.last(start);
            if end >= last {
                return Ok(());
            }
            pos = end + 1;
        }
    }

    /// Copies between device-visible memory and `buf`, segment by segment.
    /// The range must have passed `check_locked` under the same lock.
    fn copy_locked(table: &Table, iova: u64, mut buf: Copy<'_>) {
        let total = buf.len();
        let mut done = 0usize;
        while done < total {
            let pos = iova + done as u64;
            let Some((start, m)) = table.containing(pos) else {
                return; // unreachable after a successful check
            };
            let in_map = (pos - start) as usize;
            let seg = (m.len as usize - in_map).min(total - done);
            let host = host_ptr(m.host + in_map);
            // Both arms: `map` accepted `[m.host, m.host + m.len)` under the
            // contract of `Container::map_dma_raw`: live process memory until
            // it is unmapped, and unmapping needs the table lock we hold; no
            // Rust reference points into it, so the CPU side reaches it only
            // by copy (`DmaBuffer` uses these same `shared_memory` copies),
            // and the device side is this copy. The host segment lies inside
            // that mapping (in_map + seg <= m.len); the Rust side is a
            // `seg`-byte subslice of `buf`, a Rust borrow, so the two cannot
            // overlap.
            match &mut buf {
                // SAFETY: as above.
                Copy::In(out) => unsafe { shared_memory::read(host, &mut out[done..done + seg]) },
                // SAFETY: as above; `check_locked` found the segment mapped for
                // device writes, which the mapper promised the memory allows.
                Copy::Out(data) => unsafe { shared_memory::write(host, &data[done..done + seg]) },
            }
            done += seg;
        }
    }

    fn record(&self, fault: IommuFault) {
        log::debug!("{fault}");
        let mut log = lock(&self.faults);
        if log.recent.len() == FAULT_LOG_CAPACITY {
            log.recent.pop_front();
        }
        log.recent.push_back(fault);
        log.total += 1;
    }

    fn access(
        &self,
        device: &str,
        iova: u64,
        buf: Copy<'_>,
        direction: DmaDirection,
    ) -> Result<(), IommuFault> {
        let len = buf.len() as u64;
        let table = lock(&self.table);
        match Self::check_locked(&table, iova, len, direction) {
            Ok(()) => {
                Self::copy_locked(&table, iova, buf);
                drop(table);
                if direction.is_write() {
                    self.mark_dirty(iova, len);
                }
                Ok(())
            }
            Err((at, reason)) => {
                drop(table);
                let fault = IommuFault {
                    device: device.to_owned(),
                    iova,
                    len,
                    direction,
                    at,
                    reason,
                };
                self.record(fault.clone());
                Err(fault)
            }
        }
    }

    /// A device read of `buf.len()` bytes at `iova` into `buf`.
    ///
    /// On a fault nothing is copied, the fault is recorded and returned.
    pub fn dma_read(&self, device: &str, iova: u64, buf: &mut [u8]) -> Result<(), IommuFault> {
        self.access(device, iova, Copy::In(buf), DmaDirection::Read)
    }

    /// A device write of `data` at `iova`.
    ///
    /// On a fault nothing is written, the fault is recorded and returned.
    pub fn dma_write(&self, device: &str, iova: u64, data: &[u8]) -> Result<(), IommuFault> {
        self.access(device, iova, Copy::Out(data), DmaDirection::Write)
    }

    /// The recorded faults, oldest first (at most [`FAULT_LOG_CAPACITY`]).
    pub fn faults(&self) -> Vec<IommuFault> {
        lock(&self.faults).recent.iter().cloned().collect()
    }

    /// How many faults were recorded in total, including dropped ones.
    pub fn fault_count(&self) -> u64 {
        lock(&self.faults).total
    }

    /// Returns and forgets the recorded faults.
    pub fn take_faults(&self) -> Vec<IommuFault> {
        std::mem::take(&mut lock(&self.faults).recent).into()
    }
}

/// The Rust side of a DMA copy.
enum Copy<'a> {
    /// Device read: memory → this buffer.
    In(&'a mut [u8]),
    /// Device write: this data → memory.
    Out(&'a [u8]),
}

impl Copy<'_> {
    fn len(&self) -> usize {
        match self {
            Self::In(b) => b.len(),
            Self::Out(b) => b.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iommu() -> MockIommu {
        MockIommu::new(IommuConfig::default()).expect("default config is valid")
    }

    /// Page-aligned host memory for unit tests.
    fn pages(n: usize) -> vfio_hal::DmaBuffer {
        vfio_hal::DmaBuffer::new(n * 4096).expect("alloc")
    }

    #[test]
    fn split_mode_trims_both_sides_and_keeps_the_right_host_bytes() {
        let config = IommuConfig {
            allow_split_unmap: true,
            ..IommuConfig::default()
        };
        let io = MockIommu::new(config).expect("valid");
        let buf = pages(4);
        for i in 0..4u8 {
            buf.write(u64::from(i) * 4096, &[i + 1]).expect("in bounds");
        }
        // SAFETY: `buf` stays alive until after `unmap_all` below.
        unsafe { io.map(0x10000, buf.as_ptr(), 0x4000, DmaAccess::ReadWrite) }.expect("map");
        assert_eq!(io.unmap(0x11000, 0x2000).expect("split"), 0x2000);
        assert_eq!(
            io.mappings(),
            vec![
                MappingInfo {
                    iova: 0x10000,
                    len: 0x1000,
                    access: DmaAccess::ReadWrite
                },
                MappingInfo {
                    iova: 0x13000,
                    len: 0x1000,
                    access: DmaAccess::ReadWrite
                },
            ]
        );
        let mut b = [0u8];
        io.dma_read("t", 0x13000, &mut b)
            .expect("tail still mapped");
        assert_eq!(b, [4]);
        assert_eq!(
            io.dma_read("t", 0x11000, &mut b).expect_err("hole").reason,
            FaultReason::NotMapped
        );
        assert_eq!(io.unmap_all(), 0x2000);
    }

    #[test]
    fn info_reports_ranges_and_remaining_slots() {
        let io = iommu();
        let info = io.info();
        assert_eq!(info.min_page_size(), Some(4096));
        assert_eq!(info.iova_ranges, IommuConfig::x86_iova_ranges());
        assert_eq!(info.dma_avail, Some(65535));
    }
}
