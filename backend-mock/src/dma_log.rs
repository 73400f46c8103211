//! Device-side DMA dirty logging (`VFIO_DEVICE_FEATURE_DMA_LOGGING_*`) of
//! a mock device whose model migrates: while logging runs, every DMA write
//! the model makes inside a logged range marks the pages it touches, and
//! a report reads and clears them, checked as `vfio_main.c` checks its
//! arguments. Models that cannot migrate have no logging (`ENOTTY`, as a
//! device without `log_ops`).

use std::collections::BTreeSet;

use vfio_hal::device::feature;
use vfio_hal::dirty::DirtyBitmap;
use vfio_hal::{Error, Result, Target};

/// Most ranges one start takes (the kernel's `LOG_MAX_RANGES`).
pub const MAX_RANGES: usize = 256;

fn refused(feature: u32, errno: i32) -> Error {
    Error::sys("VFIO_DEVICE_FEATURE", Target::Feature(feature), errno)
}

/// The log while it runs.
#[derive(Debug)]
struct Running {
    page_size: u64,
    /// `(first, last)` IOVA of each logged range, disjoint.
    ranges: Vec<(u64, u64)>,
    /// Dirty pages (of `page_size`) by IOVA.
    dirty: BTreeSet<u64>,
}

/// One device's DMA log: off, or running over its ranges.
#[derive(Debug, Default)]
pub(crate) struct DmaLog {
    running: Option<Running>,
}

impl DmaLog {
    /// `DMA_LOGGING_START` over `ranges` (`(iova, length)`) in pages of
    /// `page_size`; replaces a log that runs. The rules of
    /// `vfio_ioctl_device_feature_logging_start`: at least one range
    /// (`EINVAL`), at most [`MAX_RANGES`] (`E2BIG`), each aligned to the
    /// page size (`EINVAL`), not wrapping (`EOVERFLOW`) and not overlapping
    /// another (`EINVAL`); the page size a power of two (the driver's own
    /// check, `EINVAL`).
    pub(crate) fn start(&mut self, page_size: u64, ranges: &[(u64, u64)]) -> Result<()> {
        let f = feature::DMA_LOGGING_START;
        if ranges.is_empty() {
            return Err(refused(f, libc::EINVAL));
        }
        if ranges.len() > MAX_RANGES {
            return Err(refused(f, libc::E2BIG));
        }
        if !page_size.is_power_of_two() {
            return Err(refused(f, libc::EINVAL));
        }
        let mut taken: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for &(iova, len) in ranges {
            if iova % page_size != 0 || len % page_size != 0 || len == 0 {
                return Err(refused(f, libc::EINVAL));
            }
            let last = iova
                .checked_add(len - 1)
                .ok_or_else(|| refused(f, libc::EOVERFLOW))?;
            if taken.iter().any(|&(a, b)| iova <= b && a <= last) {
                return Err(refused(f, libc::EINVAL));
            }
            taken.push((iova, last));
        }
        self.running = Some(Running {
            page_size,
            ranges: taken,
            dirty: BTreeSet::new(),
        });
        Ok(())
    }

    /// `DMA_LOGGING_STOP`: forgets the log (fine when none runs).
    pub(crate) fn stop(&mut self) {
        self.running = None;
    }

    /// A DMA write of `len` bytes at `iova` went through: marks the logged
    /// pages it touches.
    pub(crate) fn wrote(&mut self, iova: u64, len: u64) {
        let Some(log) = &mut self.running else { return };
        if len == 0 {
            return;
        }
        let last = iova.saturating_add(len - 1);
        let page = log.page_size;
        for &(a, b) in &log.ranges {
            let (from, to) = (iova.max(a), last.min(b));
            if from > to {
                continue;
            }
            let mut at = from & !(page - 1);
            while at <= to {
                log.dirty.insert(at);
                match at.checked_add(page) {
                    Some(next) => at = next,
                    None => break,
                }
            }
        }
    }

    /// `DMA_LOGGING_REPORT` of `[iova, iova + len)` in pages of
    /// `page_size`, which clears what it reports; `EINVAL` while no log
    /// runs and for a page size below 4 KiB or not a power of two, as
    /// the kernel checks, and [`DirtyBitmap::new`]'s errors for the range.
    pub(crate) fn report(&mut self, iova: u64, len: u64, page_size: u64) -> Result<DirtyBitmap> {
        let f = feature::DMA_LOGGING_REPORT;
        if page_size < 4096 || !page_size.is_power_of_two() {
            return Err(refused(f, libc::EINVAL));
        }
        if iova.checked_add(len).is_none() {
            return Err(refused(f, libc::EOVERFLOW));
        }
        let mut bitmap = DirtyBitmap::new(iova, len, page_size)?;
        let log = self
            .running
            .as_mut()
            .ok_or_else(|| refused(f, libc::EINVAL))?;
        let last = iova + (len - 1);
        let pages: Vec<u64> = log.dirty.range(iova..=last).copied().collect();
        for page in pages {
            bitmap.mark(page, log.page_size.min(last - page + 1))?;
            log.dirty.remove(&page);
        }
        Ok(bitmap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_checks_its_ranges_as_the_kernel_does() {
        let mut log = DmaLog::default();
        let errno = |r: Result<()>| r.expect_err("refused").errno();
        assert_eq!(errno(log.start(4096, &[])), Some(libc::EINVAL));
        assert_eq!(
            errno(log.start(4096, &[(0, 4096); MAX_RANGES + 1])),
            Some(libc::E2BIG)
        );
        assert_eq!(errno(log.start(4096, &[(0x800, 4096)])), Some(libc::EINVAL));
        assert_eq!(errno(log.start(3000, &[(0, 3000)])), Some(libc::EINVAL));
        assert_eq!(
            errno(log.start(4096, &[(u64::MAX - 4095, 8192)])),
            Some(libc::EOVERFLOW)
        );
        assert_eq!(
            errno(log.start(4096, &[(0, 8192), (4096, 4096)])),
            Some(libc::EINVAL),
            "overlap"
        );
        log.start(4096, &[(0, 8192), (0x10000, 4096)])
            .expect("fine");
    }

    #[test]
    fn writes_inside_the_ranges_are_reported_once() {
        let mut log = DmaLog::default();
        log.start(4096, &[(0x1000, 0x2000)]).expect("start");
        log.wrote(0x0ff0, 0x20); // straddles the range's start
        log.wrote(0x5000, 8); // outside every range
        let dirty: Vec<u64> = log
            .report(0, 0x8000, 4096)
            .expect("report")
            .dirty()
            .collect();
        assert_eq!(dirty, [0x1000]);
        assert_eq!(
            log.report(0, 0x8000, 4096).expect("again").count(),
            0,
            "cleared"
        );
        log.stop();
        let e = log.report(0, 0x8000, 4096).expect_err("stopped");
        assert_eq!(e.errno(), Some(libc::EINVAL));
    }
}
