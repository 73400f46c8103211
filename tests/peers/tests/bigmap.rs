//! Mapping guest RAM (lane only): one DMA map and one unmap of 1 GiB at one
//! IOVA, the way a VMM maps guest RAM at start-up; ignored on the host.
//!
//! For each backing of the gigabyte — 2 MiB pages of the hugetlb pool
//! ([`PageBacking::HugeTlb`], the pool raised through its sysfs
//! `nr_hugepages` for the row and put back after), base pages
//! ([`PageBacking::Base`], `MADV_NOHUGEPAGE`) and transparent huge pages
//! ([`PageBacking::Transparent`]) — the buffer is made and pre-faulted
//! ([`DmaBuffer::populate`]) once, untimed, and then, in each round, mapped
//! and unmapped through:
//!
//! - vfio-hal's type1 backend ([`LegacyContainer`], `/dev/vfio/vfio`),
//!   against `vfio-ioctls` 0.10's `VfioContainer` (the same);
//! - vfio-hal's iommufd backend ([`IoasContainer`], `/dev/iommu` + cdev),
//!   against `vfio-ioctls`' `VfioIommufd` (its `vfio_cdev` feature: the
//!   same);
//! - [`IoasContainer`] with `IOMMU_OPTION_HUGE_PAGES` off
//!   ([`vfio_hal_iommufd::Ioas::set_huge_pages`]): what the IOMMU's large
//!   pages are worth.
//!
//! One gigabyte is held at a time (the guest has 3 GiB). A group belongs
//! to one container at a time, so each contender opens its container and
//! edu, maps, unmaps and closes in turn (mirrored order every other
//! round); only the map and the unmap calls are timed. On the compat
//! kernel `/dev/vfio/vfio` is iommufd's, so the two type1 contenders run
//! on iommufd there.
//!
//! Lines `bigmap(<kernel>): ...` on stdout give the medians over the rounds
//! and the ratios vfio-hal/vfio-ioctls (per backend) and huge/base (per
//! library), the IOMMU page sizes type1 reports, and how physically
//! contiguous each buffer is (from `/proc/self/pagemap`: the IOMMU can use
//! a large page only where the memory behind it is contiguous and
//! aligned). Asserted, since it cannot depend on load: every map succeeds,
//! every unmap returns 1 GiB, and edu's DMA engine reads and writes the
//! buffer through the mapping (in the first round of each vfio-hal
//! contender). A hugetlb pool the kernel cannot fill, or a kernel without
//! transparent huge pages, fails the test: the lane's kernel has both. (1
//! GiB pages are left out: the lane's guest has no room for a gigantic
//! pool beside the buffer.)

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vfio_hal::prelude::*;
use vfio_hal::{DmaAccess, DmaBuffer, HugePageSize, PageBacking};
use vfio_hal_guest_tests as lane;
use vfio_hal_iommufd::IoasContainer;
use vfio_hal_legacy::LegacyContainer;
use vfio_hal_peer_bench::timing::{median, round_order};
use vfio_ioctls::{VfioContainer, VfioDevice, VfioIommufd, VfioOps};

const GIB: u64 = 1 << 30;
/// 1 GiB-aligned, so every IOMMU page size can be used; edu's DMA engine
/// (28-bit addresses) reaches the first 256 MiB of the mapping.
const IOVA: u64 = 0;
/// Rounds per backing, one map + unmap per contender each (two in the
/// unoptimised build CI runs, which keeps the test near 20 s there).
const ROUNDS: usize = if cfg!(debug_assertions) { 2 } else { 5 };
/// edu's DMA buffer in its own address space, and where the DMA check
/// reads and writes the mapping (inside edu's reach, off the first page).
const EDU_BUFFER: u64 = 0x40000;
const DMA_SRC: u64 = 0x0ff0_0000 + 0x123 * 8;
const DMA_DST: u64 = 0x0200_0000 + 0x40;
const DMA_LEN: usize = 256;

fn report(line: std::fmt::Arguments<'_>) {
    // Straight to stdout: libtest captures `println!` of a passing test.
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Lib {
    HalType1,
    HalIommufd,
    PeerType1,
    PeerIommufd,
    /// `IoasContainer` with `IOMMU_OPTION_HUGE_PAGES` off: every 4 KiB
    /// page its own IOMMU entry, however the memory is backed.
    HalIommufdSmall,
}

impl Lib {
    const ALL: [Lib; 5] = [
        Lib::HalType1,
        Lib::PeerType1,
        Lib::HalIommufd,
        Lib::PeerIommufd,
        Lib::HalIommufdSmall,
    ];

    fn name(self) -> &'static str {
        match self {
            Lib::HalType1 => "vfio-hal LegacyContainer",
            Lib::HalIommufd => "vfio-hal IoasContainer",
            Lib::PeerType1 => "vfio-ioctls VfioContainer",
            Lib::PeerIommufd => "vfio-ioctls VfioIommufd",
            Lib::HalIommufdSmall => "vfio-hal IoasContainer (IOMMU huge pages off)",
        }
    }

    /// The `vfio-ioctls` peer of a vfio-hal backend.
    fn peer(self) -> Lib {
        match self {
            Lib::HalType1 => Lib::PeerType1,
            _ => Lib::PeerIommufd,
        }
    }
}

/// Seconds of one map and one unmap, per library.
#[derive(Default)]
struct Times {
    map: Vec<(Lib, f64)>,
    unmap: Vec<(Lib, f64)>,
}

impl Times {
    fn ms(v: &[(Lib, f64)], lib: Lib) -> f64 {
        let s: Vec<f64> = v
            .iter()
            .filter(|(l, _)| *l == lib)
            .map(|(_, t)| *t)
            .collect();
        median(&s) * 1e3
    }
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed().as_secs_f64())
}

/// One edu DMA of `len` bytes; `to_ram` selects device buffer → RAM.
fn edu_dma(bar0: &impl Region, src: u64, dst: u64, len: usize, to_ram: bool) {
    bar0.write_at::<u64>(0x80, src).expect("src");
    bar0.write_at::<u64>(0x88, dst).expect("dst");
    bar0.write_at::<u64>(0x90, len as u64).expect("count");
    bar0.write_at::<u64>(0x98, if to_ram { 0b11 } else { 0b01 })
        .expect("start");
    let deadline = Instant::now() + Duration::from_secs(20);
    while bar0.read_at::<u64>(0x98).expect("command") & 1 != 0 {
        assert!(Instant::now() < deadline, "edu DMA did not finish");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// edu copies `DMA_LEN` bytes from the mapping into its buffer and back
/// to another place of the mapping: the mapping translates both ways.
fn check_dma(edu: &impl Device, buf: &DmaBuffer, round: usize) {
    let pattern: Vec<u8> = (0..DMA_LEN).map(|i| (i * 13 + round + 1) as u8).collect();
    buf.write(DMA_SRC, &pattern).expect("pattern");
    buf.write(DMA_DST, &[0; DMA_LEN]).expect("clear");
    edu.set_bus_master(true).expect("bus master");
    let bar0 = edu.region(0).expect("BAR0");
    edu_dma(&bar0, IOVA + DMA_SRC, EDU_BUFFER, DMA_LEN, false);
    edu_dma(&bar0, EDU_BUFFER, IOVA + DMA_DST, DMA_LEN, true);
    let mut got = vec![0; DMA_LEN];
    buf.read(DMA_DST, &mut got).expect("read back");
    assert!(got == pattern, "edu's DMA through the 1 GiB mapping");
}

/// One library's session: open, map, (DMA check), unmap, close.
/// Returns the IOMMU page-size bitmap the container reports.
fn session(lib: Lib, bdf: &str, buf: &DmaBuffer, check: bool, t: &mut Times) -> u64 {
    let len = usize::try_from(GIB).expect("fits usize");
    match lib {
        Lib::HalType1 | Lib::HalIommufd | Lib::HalIommufdSmall => {
            fn run<C: Container>(
                lib: Lib,
                c: &C,
                bdf: &str,
                buf: &DmaBuffer,
                check: bool,
                t: &mut Times,
            ) -> u64 {
                let edu = c.open_device(bdf).expect("open edu");
                let pages = c.iommu_info().expect("iommu info").page_sizes;
                let (r, s) = timed(|| {
                    // SAFETY: `buf` outlives the mapping, undone below before
                    // the session ends; nothing references its memory.
                    unsafe { c.map_dma_raw(IOVA, buf.as_ptr(), GIB, DmaAccess::ReadWrite) }
                });
                r.unwrap_or_else(|e| panic!("{}: map 1 GiB: {e}", lib.name()));
                t.map.push((lib, s));
                if check {
                    check_dma(&edu, buf, 0);
                }
                let (r, s) = timed(|| c.unmap_dma(IOVA, GIB));
                let n = r.unwrap_or_else(|e| panic!("{}: unmap 1 GiB: {e}", lib.name()));
                assert_eq!(n, GIB, "{}: unmap returns the size", lib.name());
                t.unmap.push((lib, s));
                pages
            }
            if lib == Lib::HalType1 {
                let c = LegacyContainer::open().expect("vfio-hal: type1 container");
                run(lib, &c, bdf, buf, check, t)
            } else {
                let c = IoasContainer::open().expect("vfio-hal: iommufd IOAS");
                if lib == Lib::HalIommufdSmall {
                    // Before any device is attached: the kernel refuses
                    // the change once a domain holds mappings.
                    c.ioas()
                        .set_huge_pages(false)
                        .expect("IOMMU_OPTION_HUGE_PAGES off");
                }
                run(lib, &c, bdf, buf, check, t)
            }
        }
        Lib::PeerType1 | Lib::PeerIommufd => {
            let ops: Arc<dyn VfioOps> = if lib == Lib::PeerType1 {
                Arc::new(VfioContainer::new(None).expect("vfio-ioctls: container"))
            } else {
                let fd = iommufd_ioctls::IommuFd::new().expect("vfio-ioctls: /dev/iommu");
                Arc::new(VfioIommufd::new(Arc::new(fd), None, None).expect("vfio-ioctls: IOAS"))
            };
            let _edu = VfioDevice::new(&lane::pci_device_dir(bdf), ops.clone(), true)
                .unwrap_or_else(|e| panic!("{}: open edu: {e}", lib.name()));
            let (r, s) = timed(|| {
                // SAFETY: as in the vfio-hal sessions.
                unsafe { ops.vfio_dma_map(IOVA, len, buf.as_ptr()) }
            });
            r.unwrap_or_else(|e| panic!("{}: map 1 GiB: {e}", lib.name()));
            t.map.push((lib, s));
            let (r, s) = timed(|| ops.vfio_dma_unmap(IOVA, len));
            r.unwrap_or_else(|e| panic!("{}: unmap 1 GiB: {e}", lib.name()));
            t.unmap.push((lib, s));
            0
        }
    }
}

/// A hugetlb pool raised for a row, put back on drop.
struct Pool {
    nr: std::path::PathBuf,
    before: u64,
}

fn read_u64(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

impl Pool {
    /// Asks the pool of `size` for enough free pages to hold 1 GiB;
    /// `Err` says what the kernel managed.
    fn raise(size: HugePageSize) -> Result<Self, String> {
        let pages = GIB / size.bytes() as u64;
        if !size.sysfs_dir().is_dir() {
            return Err("the kernel has no pool of this size".into());
        }
        let nr = size.sysfs_dir().join("nr_hugepages");
        let before = read_u64(&nr);
        let wrote = std::fs::write(&nr, (before + pages).to_string());
        let pool = Self { nr, before };
        match size.free_pages() {
            Ok(free) if free >= pages => Ok(pool),
            Ok(free) => Err(format!(
                "the kernel found {free} of {pages} free pages{}",
                wrote
                    .err()
                    .map(|e| format!(" (nr_hugepages: {e})"))
                    .unwrap_or_default()
            )),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.nr, self.before.to_string());
    }
}

/// The THP share of the buffer, from `/proc/self/smaps` (kB).
fn anon_huge_kb(buf: &DmaBuffer) -> Option<u64> {
    let start = format!("{:x}-", buf.as_ptr() as usize);
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&start));
    lines.next()?;
    lines
        .take_while(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w.ends_with(':'))
        })
        .find_map(|l| l.strip_prefix("AnonHugePages:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// How physically contiguous `buf` is: the runs of consecutive frames
/// (`/proc/self/pagemap`, root only) and how many 2 MiB-aligned 2 MiB
/// chunks are one run (what an IOMMU can map with a 2 MiB page).
fn contiguity(buf: &DmaBuffer) -> String {
    use std::os::unix::fs::FileExt;
    const PAGE: usize = 4096;
    let pages = buf.len() / PAGE;
    let mut raw = vec![0u8; pages * 8];
    let at = (buf.as_ptr() as usize / PAGE * 8) as u64;
    let read =
        std::fs::File::open("/proc/self/pagemap").and_then(|f| f.read_exact_at(&mut raw, at));
    if let Err(e) = read {
        return format!("contiguity unknown (pagemap: {e})");
    }
    let pfns: Vec<u64> = raw
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .map(|e| if e >> 63 == 1 { e & ((1 << 55) - 1) } else { 0 })
        .collect();
    if pfns.iter().all(|&p| p == 0) {
        return "contiguity unknown (pagemap hides frames)".into();
    }
    let runs = 1 + pfns.windows(2).filter(|w| w[1] != w[0] + 1).count();
    let per_2m = (2 << 20) / PAGE;
    let chunks = pfns
        .chunks_exact(per_2m)
        .filter(|c| c[0] % per_2m as u64 == 0 && c.windows(2).all(|w| w[1] == w[0] + 1))
        .count();
    format!(
        "{runs} physically contiguous runs, {chunks} of {} 2 MiB chunks contiguous and aligned",
        pages / per_2m
    )
}

/// The rows' names and how to make each buffer (with what keeps it valid).
#[derive(Clone, Copy, PartialEq)]
enum Row {
    Base,
    HugeTlb,
    Thp,
}

impl Row {
    fn label(self) -> &'static str {
        match self {
            Row::Base => "4 KiB pages",
            Row::HugeTlb => "2 MiB hugetlb",
            Row::Thp => "THP",
        }
    }
}

fn page_list(bitmap: u64) -> String {
    let names: Vec<String> = (0..64)
        .filter(|b| bitmap >> b & 1 == 1)
        .map(|b| match b {
            0..=9 => format!("{}B", 1u64 << b),
            10..=19 => format!("{}K", 1u64 << (b - 10)),
            20..=29 => format!("{}M", 1u64 << (b - 20)),
            _ => format!("{}G", 1u64 << (b - 30)),
        })
        .collect();
    if names.len() > 4 {
        format!(
            "{}..{} (every power of two)",
            names[0],
            names[names.len() - 1]
        )
    } else {
        names.join(",")
    }
}

#[test]
#[cfg_attr(
    not(vfio_hal_guest),
    ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
)]
fn map_one_gib_of_guest_ram() {
    let kernel = lane::lane_env(lane::KERNEL);
    let bdf = lane::lane_env(lane::EDU_BDF);
    let start = Instant::now();
    let len = usize::try_from(GIB).expect("fits usize");
    report(format_args!(
        "bigmap({kernel}): one map + one unmap of 1 GiB at IOVA {IOVA:#x}, buffer pre-faulted; \
         median of {ROUNDS} rounds, libraries in mirrored order each round"
    ));
    let mut results: Vec<(Row, Times)> = Vec::new();
    let mut skipped = Vec::new();
    // Hugetlb first: the pool is easiest to fill before the other rows
    // have churned the guest's memory. One gigabyte is held at a time.
    for row in [Row::HugeTlb, Row::Base, Row::Thp] {
        let mut pool = None;
        let made = match row {
            Row::Base => DmaBuffer::with_backing(len, PageBacking::Base),
            Row::Thp => DmaBuffer::with_backing(len, PageBacking::Transparent),
            Row::HugeTlb => {
                let size = HugePageSize::Size2MiB;
                match Pool::raise(size) {
                    Ok(p) => {
                        pool = Some(p);
                        DmaBuffer::with_huge_pages(len, size)
                    }
                    Err(why) => {
                        skipped.push(format!("{}: {why}", row.label()));
                        continue;
                    }
                }
            }
        };
        let buf = match made {
            Ok(b) => b,
            Err(e) if row != Row::Base => {
                skipped.push(format!("{}: {e}", row.label()));
                continue;
            }
            Err(e) => panic!("1 GiB of base pages: {e}"),
        };
        let (r, fault_s) = timed(|| buf.populate());
        r.expect("pre-fault 1 GiB");
        if row == Row::Thp {
            let kb = anon_huge_kb(&buf).unwrap_or(0);
            report(format_args!(
                "bigmap({kernel}): THP: {} MiB of the 1 GiB are transparent huge pages",
                kb >> 10
            ));
            if kb == 0 {
                skipped.push("THP: the kernel gave no transparent huge pages".into());
                continue;
            }
        }
        let mut t = Times::default();
        let mut bitmap = 0;
        for round in 0..ROUNDS {
            for lib in round_order(&Lib::ALL, round) {
                let pages = session(lib, &bdf, &buf, round == 0, &mut t);
                if lib == Lib::HalType1 {
                    bitmap = pages;
                }
            }
        }
        report(format_args!(
            "bigmap({kernel}): {}: pre-fault {:.0} ms; {}; type1 IOMMU page sizes {} ({bitmap:#x})",
            row.label(),
            fault_s * 1e3,
            contiguity(&buf),
            page_list(bitmap)
        ));
        drop(buf);
        drop(pool);
        results.push((row, t));
    }

    let get = |row: Row| results.iter().find(|(r, _)| *r == row).map(|(_, t)| t);
    for (row, t) in &results {
        for lib in [Lib::HalType1, Lib::HalIommufd] {
            let (m, u) = (Times::ms(&t.map, lib), Times::ms(&t.unmap, lib));
            let (pm, pu) = (
                Times::ms(&t.map, lib.peer()),
                Times::ms(&t.unmap, lib.peer()),
            );
            report(format_args!(
                "bigmap({kernel}): {} {}: map {m:.1} ms, unmap {u:.1} ms; {} map {pm:.1} ms, \
                 unmap {pu:.1} ms; vfio-hal/vfio-ioctls map {:.3}, unmap {:.3}",
                row.label(),
                lib.name(),
                lib.peer().name(),
                m / pm,
                u / pu
            ));
        }
        let small = Lib::HalIommufdSmall;
        let (m, u) = (Times::ms(&t.map, small), Times::ms(&t.unmap, small));
        report(format_args!(
            "bigmap({kernel}): {} {}: map {m:.1} ms, unmap {u:.1} ms; /huge pages on: map {:.3}, unmap {:.3}",
            row.label(),
            small.name(),
            m / Times::ms(&t.map, Lib::HalIommufd),
            u / Times::ms(&t.unmap, Lib::HalIommufd)
        ));
    }
    if let Some(base) = get(Row::Base) {
        for row in [Row::HugeTlb, Row::Thp] {
            let Some(huge) = get(row) else { continue };
            let ratios: Vec<String> = Lib::ALL
                .iter()
                .map(|&lib| {
                    format!(
                        "{} map {:.3} unmap {:.3}",
                        lib.name(),
                        Times::ms(&huge.map, lib) / Times::ms(&base.map, lib),
                        Times::ms(&huge.unmap, lib) / Times::ms(&base.unmap, lib)
                    )
                })
                .collect();
            report(format_args!(
                "bigmap({kernel}): {}/4 KiB pages: {}",
                row.label(),
                ratios.join("; ")
            ));
        }
    }
    for s in &skipped {
        report(format_args!("bigmap({kernel}): missing row: {s}"));
    }
    if cfg!(debug_assertions) {
        report(format_args!(
            "bigmap({kernel}): unoptimised build: figures not representative (use lane.sh --release)"
        ));
    }
    report(format_args!(
        "bigmap({kernel}): test took {:.1} s",
        start.elapsed().as_secs_f64()
    ));
    assert!(
        skipped.is_empty(),
        "the lane's kernel offers every row (hugetlb and THP): {skipped:?}"
    );
}
