//! `vfio-hal bench DEV`: region read and DMA map+unmap throughput.
//!
//! Both loops go through the type-erased hal (`DynDevice`,
//! `DynContainer`), as a VMM choosing its backend at run time would. The
//! map loop maps and unmaps one page-sized buffer at one IOVA through the
//! safe `map_buffer`/`DmaMapping::unmap` pair. For criterion statistics
//! use the backends' own benches (`docs/PERFORMANCE.md`); this is the quick
//! look an operator takes on a given machine.

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use vfio_hal::device::DeviceKind;
use vfio_hal::prelude::*;
use vfio_hal::{DmaAccess, DmaBuffer, IommuInfo};

use crate::describe;
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
    /// Number of register reads.
    #[arg(long, default_value = "100000", value_parser = parse_u64)]
    reads: u64,
    /// Number of map+unmap pairs.
    #[arg(long, default_value = "10000", value_parser = parse_u64)]
    maps: u64,
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
    if args.reads == 0 || args.maps == 0 {
        return Err(CliError::Usage(
            "--reads and --maps must be at least 1".to_owned(),
        ));
    }
    let opened = ctx.open(args.dev.as_deref())?;
    let pci = opened.device.info().kind() == DeviceKind::Pci;
    let region_name = describe::region_name(pci, args.region);
    let region = opened
        .device
        .region(args.region)
        .map_err(CliError::hal(format!("region {region_name}")))?;

    let mut buf = [0u8; 4];
    let start = Instant::now();
    for _ in 0..args.reads {
        region
            .read(args.offset, &mut buf)
            .map_err(CliError::hal(format!(
                "read {region_name}+{}",
                hex(args.offset)
            )))?;
    }
    let reads = Measured {
        name: "region-read",
        what: format!("4-byte reads of {region_name}+{}", hex(args.offset)),
        ops: args.reads,
        elapsed: start.elapsed(),
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
    let mut buffer = DmaBuffer::with_alignment(len, alignment)
        .map_err(CliError::hal("allocate a DMA buffer"))?;
    let start = Instant::now();
    for _ in 0..args.maps {
        let mapping = container
            .map_buffer(iova, buffer, DmaAccess::ReadWrite)
            .map_err(|e| CliError::Hal {
                what: format!("map {} at {}", hex(page), hex(iova)),
                error: e.error,
            })?;
        buffer = mapping
            .unmap()
            .map_err(vfio_hal::Error::from)
            .map_err(CliError::hal(format!("unmap {}", hex(iova))))?;
    }
    let maps = Measured {
        name: "map-unmap",
        what: format!(
            "map+unmap of {} at IOVA {}",
            crate::table::size(page),
            hex(iova)
        ),
        ops: args.maps,
        elapsed: start.elapsed(),
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
    println!("{} ({} backend)", opened.name, opened.backend);
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
    print!("{}", t.render());
    Ok(())
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
}
