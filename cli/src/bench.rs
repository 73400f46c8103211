//! `vfio-hal bench DEV`: region read and DMA map+unmap throughput.
//!
//! Both loops go through the type-erased hal (`DynDevice`,
//! `DynContainer`), as a VMM choosing its backend at run time would. The
//! map loop maps and unmaps one page-sized buffer at one IOVA through the
//! safe `map_buffer`/`DmaMapping::unmap` pair. For criterion statistics
//! use the backends' own benches (`docs/PERFORMANCE.md`); this is the quick
//! look an operator takes on a given machine.
//!
//! The counts are bounded ([`MAX_READS`], [`MAX_MAPS`]) so that a run ends
//! in seconds to minutes, and a run longer than a second says how far it is
//! on stderr once a second.

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use vfio_hal::device::DeviceKind;
use vfio_hal::prelude::*;
use vfio_hal::{DmaAccess, DmaBuffer, IommuInfo};

use crate::describe;
use crate::output::{note, say};
use crate::table::{hex, Table};
use crate::{parse_u64, CliError, Ctx};

/// Arguments of `bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The device; the mock edu when omitted and nothing is bound to vfio-pci.
    dev: Option<String>,
    /// Region to read.
    #[arg(long, default_value = "bar0", value_parser = describe::parse_region)]
    region: u32,
    /// Offset of the 4-byte register to read.
    #[arg(long, default_value = "0", value_parser = parse_u64)]
    offset: u64,
    /// Number of register reads (1 to 10000000).
    #[arg(long, default_value = "100000", value_parser = parse_u64)]
    reads: u64,
    /// Number of map+unmap pairs (1 to 1000000).
    #[arg(long, default_value = "10000", value_parser = parse_u64)]
    maps: u64,
}

/// The most `--reads` a run takes: about ten seconds of reads of a real
/// BAR at a microsecond each (a `pread` per read).
pub const MAX_READS: u64 = 10_000_000;

/// The most `--maps` a run takes: each pair pins, maps, unmaps and unpins a
/// page, a few microseconds on a real IOMMU.
pub const MAX_MAPS: u64 = 1_000_000;

/// A count outside what `bench` takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{option} {given} is out of range: it takes 1 to {max}")]
pub struct CountOutOfRange {
    /// The option (`--reads`, `--maps`).
    pub option: &'static str,
    /// The count given.
    pub given: u64,
    /// The largest count taken.
    pub max: u64,
}

/// `given` if it is between 1 and `max`.
fn check_count(option: &'static str, given: u64, max: u64) -> Result<u64, CountOutOfRange> {
    if (1..=max).contains(&given) {
        Ok(given)
    } else {
        Err(CountOutOfRange { option, given, max })
    }
}

/// How far a loop is, for a line on stderr once a second.
#[derive(Debug)]
struct Progress {
    name: &'static str,
    total: u64,
    started: Instant,
    /// Elapsed time at which the next line is due.
    due: Duration,
}

impl Progress {
    /// Time between two lines, and before the first.
    const EVERY: Duration = Duration::from_secs(1);
    /// Operations between two looks at the clock, so that reading it costs
    /// nothing next to the operations measured.
    const CHECK_EVERY: u64 = 1 << 14;

    fn new(name: &'static str, total: u64, started: Instant) -> Self {
        Self {
            name,
            total,
            started,
            due: Self::EVERY,
        }
    }

    /// The line to show after `done` operations at `now`, if one is due.
    fn line(&mut self, done: u64, now: Instant) -> Option<String> {
        let elapsed = now.saturating_duration_since(self.started);
        if elapsed < self.due {
            return None;
        }
        while self.due <= elapsed {
            self.due += Self::EVERY;
        }
        Some(format!(
            "bench: {}: {done} of {} ({}%) after {:.0} s",
            self.name,
            self.total,
            done.saturating_mul(100) / self.total.max(1),
            elapsed.as_secs_f64()
        ))
    }
}

/// Runs `op` `ops` times, showing progress on long runs; the time taken.
fn timed(
    name: &'static str,
    ops: u64,
    mut op: impl FnMut() -> Result<(), CliError>,
) -> Result<Duration, CliError> {
    let start = Instant::now();
    let mut progress = Progress::new(name, ops, start);
    for done in 1..=ops {
        op()?;
        if done % Progress::CHECK_EVERY == 0 {
            if let Some(line) = progress.line(done, Instant::now()) {
                note(format_args!("{line}"));
            }
        }
    }
    Ok(start.elapsed())
}

/// One measured loop.
struct Measured {
    name: &'static str,
    what: String,
    ops: u64,
    elapsed: Duration,
}

impl Measured {
    fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    fn ns_per_op(&self) -> f64 {
        self.elapsed.as_nanos() as f64 / self.ops.max(1) as f64
    }
}

/// The first page-aligned IOVA at or above 1 MiB where one page fits.
fn bench_iova(info: &IommuInfo, page: u64) -> Option<u64> {
    info.iova_ranges.iter().find_map(|r| {
        let start = r.start.max(0x10_0000).checked_next_multiple_of(page)?;
        r.contains(start, page).then_some(start)
    })
}

/// Runs `bench`.
pub fn run(ctx: &Ctx, args: &BenchArgs) -> Result<(), CliError> {
    let reads = check_count("--reads", args.reads, MAX_READS)?;
    let maps = check_count("--maps", args.maps, MAX_MAPS)?;
    let opened = ctx.open(args.dev.as_deref())?;
    let pci = opened.device.info().kind() == DeviceKind::Pci;
    let region_name = describe::region_name(pci, args.region);
    let region = opened
        .device
        .region(args.region)
        .map_err(CliError::hal(format!("region {region_name}")))?;

    let mut buf = [0u8; 4];
    let at = format!("{region_name}+{}", hex(args.offset));
    let elapsed = timed("region-read", reads, || {
        region
            .read(args.offset, &mut buf)
            .map_err(CliError::hal(format!("read {at}")))
    })?;
    let reads = Measured {
        name: "region-read",
        what: format!("4-byte reads of {at}"),
        ops: reads,
        elapsed,
    };

    let container = &opened.container;
    let iommu = container
        .iommu_info()
        .map_err(CliError::hal("iommu info"))?;
    let page = iommu
        .min_page_size()
        .unwrap_or(4096)
        .max(vfio_hal::memory::page_size());
    let iova = bench_iova(&iommu, page).ok_or_else(|| {
        CliError::Failed("no usable IOVA range has room for one page above 1 MiB".to_owned())
    })?;
    let len = usize::try_from(page).map_err(|_| CliError::Failed("page size".to_owned()))?;
    let alignment = len;
    // Moved into each mapping and back out of its unmap; gone only when
    // an unmap fails, which ends the run.
    let mut buffer = Some(
        DmaBuffer::with_alignment(len, alignment)
            .map_err(CliError::hal("allocate a DMA buffer"))?,
    );
    let elapsed = timed("map-unmap", maps, || {
        let unmapped = buffer
            .take()
            .ok_or_else(|| CliError::Failed("the DMA buffer was lost".to_owned()))?;
        let mapping = container
            .map_buffer(iova, unmapped, DmaAccess::ReadWrite)
            .map_err(|e| CliError::Hal {
                what: format!("map {} at {}", hex(page), hex(iova)),
                error: e.error,
            })?;
        buffer = Some(
            mapping
                .unmap()
                .map_err(vfio_hal::Error::from)
                .map_err(CliError::hal(format!("unmap {}", hex(iova))))?,
        );
        Ok(())
    })?;
    let maps = Measured {
        name: "map-unmap",
        what: format!(
            "map+unmap of {} at IOVA {}",
            crate::table::size(page),
            hex(iova)
        ),
        ops: maps,
        elapsed,
    };

    let results = [reads, maps];
    if ctx.json {
        return ctx.print_json(&json!({
            "device": opened.name,
            "backend": opened.backend.name(),
            "results": results.iter().map(|m| json!({
                "name": m.name,
                "what": m.what,
                "ops": m.ops,
                "seconds": m.elapsed.as_secs_f64(),
                "ops_per_sec": m.ops_per_sec(),
                "ns_per_op": m.ns_per_op(),
            })).collect::<Vec<_>>(),
        }));
    }
    say!("{} ({} backend)\n", opened.name, opened.backend)?;
    let mut t = Table::new(&["BENCHMARK", "OPS", "SECONDS", "OPS/S", "NS/OP", "WHAT"]);
    for m in &results {
        t.row(vec![
            m.name.to_owned(),
            m.ops.to_string(),
            format!("{:.3}", m.elapsed.as_secs_f64()),
            format!("{:.0}", m.ops_per_sec()),
            format!("{:.0}", m.ns_per_op()),
            m.what.clone(),
        ]);
    }
    say!("{}", t.render())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vfio_hal::IovaRange;

    #[test]
    fn the_bench_iova_skips_low_memory_and_holes() {
        let info = IommuInfo {
            page_sizes: 0x1000,
            iova_ranges: vec![
                IovaRange {
                    start: 0,
                    end: 0xfff,
                },
                IovaRange {
                    start: 0x20_0800,
                    end: 0x40_0000,
                },
            ],
            ..IommuInfo::default()
        };
        assert_eq!(bench_iova(&info, 0x1000), Some(0x20_1000));
        assert_eq!(bench_iova(&info, 1 << 30), None);
    }

    #[test]
    fn counts_are_taken_from_1_to_their_maximum() {
        assert_eq!(check_count("--reads", 1, MAX_READS), Ok(1));
        assert_eq!(check_count("--reads", MAX_READS, MAX_READS), Ok(MAX_READS));
        let Err(e) = check_count("--maps", u64::MAX, MAX_MAPS) else {
            panic!("u64::MAX maps are refused");
        };
        assert_eq!((e.given, e.max), (u64::MAX, MAX_MAPS));
        assert_eq!(
            e.to_string(),
            "--maps 18446744073709551615 is out of range: it takes 1 to 1000000"
        );
        assert!(check_count("--reads", 0, MAX_READS).is_err());
        assert!(check_count("--reads", MAX_READS + 1, MAX_READS).is_err());
    }

    #[test]
    fn progress_is_shown_once_a_second_after_the_first() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut p = Progress::new("region-read", 400, t0);
        assert_eq!(p.line(10, at(999)), None, "nothing in the first second");
        assert_eq!(
            p.line(100, at(1000)).as_deref(),
            Some("bench: region-read: 100 of 400 (25%) after 1 s")
        );
        assert_eq!(p.line(150, at(1500)), None, "one line a second");
        assert!(p.line(200, at(2000)).is_some());
        // A long stall gives one line, not one per second missed.
        assert!(p.line(300, at(5500)).is_some());
        assert_eq!(p.line(310, at(5900)), None);
    }
}
