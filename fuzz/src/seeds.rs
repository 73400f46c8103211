//! The seed corpus: a few valid, realistic inputs per target, built here so
//! that they stay in step with the input formats. They are checked in under
//! `corpus/<target>/seed-<name>`; the tests below fail when a checked-in
//! seed differs from what this module builds, and rewrite them with
//!
//! ```text
//! VFIO_HAL_FUZZ_WRITE_SEEDS=1 cargo test --lib seeds
//! ```

use vfio_hal::caps::encode_chain;
use vfio_hal::irq::flags as irq_flags;
use vfio_hal::prelude::*;
use vfio_hal::{Capability, ChainKind, IovaRange, SparseArea};
use vfio_hal_mock::models::copy_engine::{self, reg as ce};
use vfio_hal_mock::models::edu::reg as edu;

use crate::input::Output;
use crate::mig_resume::{Model, CE_IN_FLIGHT};

/// One seed: its file name (after `seed-`) and its bytes.
pub type Seed = (&'static str, Vec<u8>);

/// The seeds of `target`.
pub fn of(target: &str) -> Vec<Seed> {
    match target {
        "caps_chain" => caps(),
        "irq_set" => irq(),
        "pci_config" => pci(),
        "iova_alloc" => iova(),
        "mig_resume" => mig_resume(),
        _ => Vec::new(),
    }
}

fn chain(kind: ChainKind, caps: &[Capability]) -> Vec<u8> {
    let selector = crate::caps::KINDS
        .iter()
        .position(|&k| k == kind)
        .unwrap_or(0) as u8;
    let (buf, first) = encode_chain(kind, caps);
    Output::default().u8(selector).u32(first).bytes(&buf).0
}

fn caps() -> Vec<Seed> {
    let x86 = vec![
        IovaRange {
            start: 0,
            end: 0xfedf_ffff,
        },
        IovaRange {
            start: 0xfef0_0000,
            end: (1 << 48) - 1,
        },
    ];
    vec![
        (
            "region-sparse-msix-type",
            chain(
                ChainKind::Region,
                &[
                    Capability::SparseMmap(vec![
                        SparseArea {
                            offset: 0,
                            size: 0x1000,
                        },
                        SparseArea {
                            offset: 0x3000,
                            size: 0x1000,
                        },
                    ]),
                    Capability::MsixMappable,
                    Capability::RegionType {
                        ty: 1 << 31,
                        subtype: 1,
                    },
                ],
            ),
        ),
        ("region-no-chain", chain(ChainKind::Region, &[])),
        (
            // An area ending at the last byte of the 64-bit space: one more
            // byte of size wraps, which the parser must refuse.
            "region-sparse-top",
            chain(
                ChainKind::Region,
                &[Capability::SparseMmap(vec![SparseArea {
                    offset: u64::MAX - 0xfff,
                    size: 0xfff,
                }])],
            ),
        ),
        (
            "device-zpci",
            chain(
                ChainKind::Device,
                &[
                    Capability::ZpciBase {
                        start_dma: 0x1000,
                        end_dma: 0xffff_ffff,
                        pchid: 0x100,
                        vfn: 1,
                        fmb_length: 32,
                        pft: 5,
                        gid: 2,
                    },
                    Capability::ZpciGroup {
                        dasm: 0xffff_ffff,
                        msi_addr: 0xfe00_0000,
                        flags: 1,
                        mui: 4000,
                        noi: 2048,
                        maxstbl: 4096,
                        version: 1,
                    },
                    Capability::ZpciUtil(b"s390 utility".to_vec()),
                    Capability::PciAtomicComp { flags: 7 },
                ],
            ),
        ),
        (
            "iommu-x86",
            chain(
                ChainKind::Iommu,
                &[
                    Capability::IovaRanges(x86),
                    Capability::Migration {
                        flags: 0,
                        pgsize_bitmap: 0x1000,
                        max_dirty_bitmap_size: 256 << 20,
                    },
                    Capability::DmaAvail { avail: 65535 },
                ],
            ),
        ),
        (
            "iommu-unknown-last",
            chain(
                ChainKind::Iommu,
                &[
                    Capability::DmaAvail { avail: 1 },
                    Capability::Unknown {
                        id: 0x99,
                        version: 1,
                        data: vec![1, 2, 3, 4, 5, 6, 7, 8],
                    },
                ],
            ),
        ),
    ]
}

const DATA_NONE: u32 = 1 << 0;
const DATA_BOOL: u32 = 1 << 1;
const DATA_EVENTFD: u32 = 1 << 2;
const ACTION_MASK: u32 = 1 << 3;
const ACTION_UNMASK: u32 = 1 << 4;
const ACTION_TRIGGER: u32 = 1 << 5;

/// The `irq_set` prefix ([`crate::irq`]) for an irq with `info_flags` and
/// `info_count` vectors whose index is the request's, then the payload.
fn irq_input(
    control: u8,
    info_flags: u32,
    info_count: u16,
    flags: u32,
    (index, start, count): (u32, u32, u32),
    data: &[u8],
) -> Vec<u8> {
    let argsz = (vfio_hal::irq::IRQ_SET_HEADER + data.len()) as u32;
    Output::default()
        .u8(control)
        .u8(info_flags as u8)
        .u16(info_count)
        .u8(0)
        .u32(count + 1)
        .u32(start)
        .u32(argsz)
        .u32(flags)
        .u32(index)
        .u32(start)
        .u32(count)
        .bytes(data)
        .0
}

fn irq() -> Vec<Seed> {
    let msi = irq_flags::EVENTFD | irq_flags::NORESIZE;
    let intx = irq_flags::EVENTFD | irq_flags::MASKABLE | irq_flags::AUTOMASKED;
    let fds: Vec<u8> = [10i32, -1, 12]
        .iter()
        .flat_map(|f| f.to_le_bytes())
        .collect();
    vec![
        (
            "msi-disable",
            irq_input(1, msi, 1, DATA_NONE | ACTION_TRIGGER, (1, 0, 0), &[]),
        ),
        (
            "msix-eventfds",
            irq_input(1, msi, 8, DATA_EVENTFD | ACTION_TRIGGER, (2, 0, 3), &fds),
        ),
        (
            "intx-mask-bool",
            irq_input(1, intx, 1, DATA_BOOL | ACTION_MASK, (0, 0, 1), &[1]),
        ),
        (
            "intx-resample",
            irq_input(
                1,
                intx,
                1,
                DATA_EVENTFD | ACTION_UNMASK,
                (0, 0, 1),
                &9i32.to_le_bytes(),
            ),
        ),
        (
            "msi-loopback",
            irq_input(1, msi, 1, DATA_NONE | ACTION_TRIGGER, (1, 0, 1), &[]),
        ),
        (
            "msix-count-override",
            irq_input(3, msi, 8, DATA_NONE | ACTION_TRIGGER, (2, 4, 4), &[]),
        ),
    ]
}

/// A 256-byte config space with the capability list `(offset, id)`.
fn config(vendor: u16, device: u16, bars: &[u32], chain: &[(u8, u8)]) -> Vec<u8> {
    let mut c = vec![0u8; 256];
    c[0..2].copy_from_slice(&vendor.to_le_bytes());
    c[2..4].copy_from_slice(&device.to_le_bytes());
    for (i, bar) in bars.iter().enumerate() {
        let at = 0x10 + 4 * i;
        c[at..at + 4].copy_from_slice(&bar.to_le_bytes());
    }
    if let Some(&(first, _)) = chain.first() {
        c[6] = 0x10; // status: capability list
        c[0x34] = first;
    }
    for (i, &(at, id)) in chain.iter().enumerate() {
        c[usize::from(at)] = id;
        c[usize::from(at) + 1] = chain.get(i + 1).map_or(0, |n| n.0);
    }
    // Sizes the BAR check reads from 0x40 + 4 * i (inside capability bodies).
    c
}

fn pci() -> Vec<Seed> {
    vec![
        (
            "edu-msi",
            config(0x1234, 0x11e8, &[0xfea0_0000], &[(0x40, 0x05)]),
        ),
        (
            "pcie-pm-msi-exp-msix",
            config(
                0x8086,
                0x10d3,
                &[0xf000_000c, 0x1, 0xc001],
                &[(0x40, 0x01), (0x50, 0x05), (0x70, 0x10), (0xb0, 0x11)],
            ),
        ),
        ("no-capabilities", config(0x1af4, 0x1000, &[0xc041], &[])),
    ]
}

fn iova() -> Vec<Seed> {
    // Op bytes: tag << 4 | kind (0 alloc, 2 release, 3 look-ups).
    let alloc = |o: Output, tag: u8, base: u16, shift: u8, align_shift: u8| {
        o.u8(tag << 4).u16(base).u8(shift).u8(align_shift)
    };
    let x86 = Output::default()
        .u8(2)
        .u8(4)
        .u64(0)
        .u64(0xfedf_ffff)
        .u8(4)
        .u64(0xfef0_0000)
        .u64((1 << 48) - 1);
    let x86 = alloc(x86, 1, 4, 12, 12); // 16 KiB ring, page aligned
    let x86 = alloc(x86, 2, 1, 21, 21); // 2 MiB, 2 MiB aligned
    let x86 = alloc(x86, 3, 1, 32, 30); // 4 GiB: only above the MSI hole
    let x86 = x86.u8(3).u8((2 << 4) | 2).u8(3);
    let x86 = alloc(x86, 2, 0x100, 12, 12).u8((1 << 4) | 2).u8(3);

    let pages = Output::default()
        .u8(2)
        .u8(0)
        .u32(1)
        .u16(15)
        .u8(0)
        .u32(64)
        .u16(31);
    let pages = alloc(pages, 0, 8, 12, 12);
    let pages = alloc(pages, 1, 8, 12, 12);
    let pages = alloc(pages, 2, 0, 0, 12); // size 0: refused
    let pages = alloc(pages, 3, 64, 12, 12); // fits nowhere: exhausted
                                             // Release tag 0 (live) and tag 5 (never allocated), then look up.
    let pages = pages.u8(2).u8((5 << 4) | 2).u8(3);
    let pages = alloc(pages, 4, 16, 12, 16).u8(3);

    let top = Output::default().u8(1).u8(1).u32(0).u16(0xffff);
    let top = alloc(top, 7, 0x8000, 12, 28);
    let top = top
        .u8((8 << 4) | 4)
        .u64(1 << 20)
        .u8(12)
        .u8((8 << 4) | 8)
        .u16(1)
        .u8(12)
        .u64(3)
        .u8(3);
    vec![("x86", x86.0), ("pages", pages.0), ("top", top.0)]
}

/// The `mig_resume` input ([`crate::mig_resume`]) writing `stream` to a
/// `model` in chunks of `lens` bytes and then the rest.
fn resume_input(model: Model, lens: &[u16], stream: &[u8]) -> Vec<u8> {
    let selector = crate::mig_resume::MODELS
        .iter()
        .position(|&m| m == model)
        .unwrap_or(0) as u8;
    let o = Output::default().u8(selector).u8(lens.len() as u8);
    lens.iter().fold(o, |o, &l| o.u16(l)).bytes(stream).0
}

/// What an edu streams after some work: liveness and the factorial's
/// interrupt enable set, an interrupt raised; with `busy` (manual clock),
/// a factorial and a DMA transfer still in flight.
fn edu_saved(busy: bool) -> Vec<u8> {
    let (c, dev) = Model::Edu.plug();
    c.clock().set_manual(busy);
    let bar0 = dev.region(0).expect("edu BAR0");
    let w32 = |at, v| bar0.write_at::<u32>(at, v).expect("edu write");
    w32(edu::LIVENESS, 0x1234_5678);
    w32(edu::STATUS, edu::EDU_STATUS_IRQFACT);
    w32(edu::FACTORIAL, 10);
    w32(edu::IRQ_RAISE, 0x4000);
    if busy {
        let w64 = |at, v| bar0.write_at::<u64>(at, v).expect("edu write");
        w64(edu::DMA_SRC, 0x10_0000);
        w64(edu::DMA_DST, edu::DMA_START);
        w64(edu::DMA_CNT, 64);
        w64(edu::DMA_CMD, edu::EDU_DMA_RUN | edu::EDU_DMA_IRQ);
    }
    crate::mig_resume::save(&dev)
}

/// What a copy engine streams with data in both SRAM areas and an
/// SRAM-to-SRAM copy in flight (manual clock).
fn copy_engine_saved() -> Vec<u8> {
    let (c, dev) = Model::CopyEngine.plug();
    c.clock().set_manual(true);
    dev.set_bus_master(true).expect("bus master");
    let sram = dev.region(copy_engine::SRAM_BAR.into()).expect("BAR2");
    sram.write(0x100, b"carried across").expect("SRAM");
    sram.write(0x5000, b"second area").expect("SRAM");
    let bar0 = dev.region(0).expect("BAR0");
    bar0.write_at::<u64>(ce::SRC, 0x100).expect("src");
    bar0.write_at::<u64>(ce::DST, 0x200).expect("dst");
    bar0.write_at::<u32>(ce::LEN, 14).expect("len");
    bar0.write_at::<u32>(ce::VECTOR, 1).expect("vector");
    bar0.write_at::<u32>(
        ce::DOORBELL,
        ce::DOORBELL_GO | ce::DOORBELL_SRC_SRAM | ce::DOORBELL_DST_SRAM,
    )
    .expect("go");
    crate::mig_resume::save(&dev)
}

/// Seeds of `mig_resume` that must be refused (the rest must load).
pub const MIG_REFUSED: [&str; 9] = [
    "edu-computing-nothing-due",
    "copy-engine-huge-request",
    "edu-torn",
    "edu-trailing",
    "edu-bad-magic",
    "edu-other-dma-mask",
    "edu-short-frame",
    "empty",
    "copy-engine-bad-flag",
];

fn mig_resume() -> Vec<Seed> {
    let idle = edu_saved(false);
    let busy = edu_saved(true);
    let engine = copy_engine_saved();
    // Stream offsets: a 4-byte frame length, then the state.
    let flip = |s: &[u8], at: usize, x: u8| {
        let mut v = s.to_vec();
        v[4 + at] ^= x;
        v
    };
    let mut two_frames = vec![3, 0, 0, 0, b'o', b'l', b'd'];
    two_frames.extend_from_slice(&busy);
    let mut trailing = idle.clone();
    trailing.extend_from_slice(&[0, 0, 0]);
    let mut short = idle[..idle.len() - 1].to_vec();
    short[..4].copy_from_slice(&(idle.len() as u32 - 5).to_le_bytes());
    // An engine with no request in flight but the in-flight fields left
    // set: loads, and saves them as zeros.
    // Computing with no factorial due: the edu would ignore every later
    // factorial write, through resets too (edu keeps its registers).
    let mut computing = flip(&idle, 4 + 8 + 8, edu::EDU_STATUS_COMPUTING as u8);
    computing[4 + 4 + 8 + 16 + 32..][..8].copy_from_slice(&u64::MAX.to_le_bytes());
    // A request in flight no doorbell starts: 4 GiB - 1 bytes.
    let mut huge = engine.clone();
    let len = 4 + CE_IN_FLIGHT + 1 + 16;
    huge[len..len + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut stale = flip(&engine, CE_IN_FLIGHT, 1);
    let left = 4 + CE_IN_FLIGHT + 1 + 28;
    stale[left..left + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    vec![
        ("edu-idle", resume_input(Model::Edu, &[], &idle)),
        ("edu-busy", resume_input(Model::Edu, &[], &busy)),
        (
            // An empty write, a split length field, a split body.
            "edu-busy-chunked",
            resume_input(Model::Edu, &[0, 2, 1000], &busy),
        ),
        (
            "edu-two-frames",
            resume_input(Model::Edu, &[7], &two_frames),
        ),
        (
            "edu-torn",
            resume_input(Model::Edu, &[], &idle[..idle.len() - 1]),
        ),
        ("edu-trailing", resume_input(Model::Edu, &[], &trailing)),
        (
            "edu-bad-magic",
            resume_input(Model::Edu, &[], &flip(&idle, 0, 0x20)),
        ),
        (
            "edu-other-dma-mask",
            resume_input(Model::Edu, &[], &flip(&idle, 7, 0x01)),
        ),
        ("edu-short-frame", resume_input(Model::Edu, &[], &short)),
        ("empty", resume_input(Model::Edu, &[], &[])),
        (
            "edu-computing-nothing-due",
            resume_input(Model::Edu, &[], &computing),
        ),
        (
            "copy-engine-busy",
            resume_input(Model::CopyEngine, &[], &engine),
        ),
        (
            "copy-engine-huge-request",
            resume_input(Model::CopyEngine, &[], &huge),
        ),
        (
            "copy-engine-bad-flag",
            resume_input(Model::CopyEngine, &[], &flip(&engine, CE_IN_FLIGHT, 3)),
        ),
        (
            "copy-engine-stale-request",
            resume_input(Model::CopyEngine, &[100], &stale),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use vfio_hal::caps::parse_chain;
    use vfio_hal::pci::walk_capabilities;
    use vfio_hal::IrqSet;

    use super::*;
    use crate::input::Input;
    use crate::TARGETS;

    fn corpus(target: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target)
    }

    #[test]
    fn seeds_match_the_checked_in_corpus() {
        let write = std::env::var_os("VFIO_HAL_FUZZ_WRITE_SEEDS").is_some();
        for (target, _) in TARGETS {
            let seeds = of(target);
            assert!(seeds.len() >= 3, "{target} has too few seeds");
            for (name, bytes) in seeds {
                let path = corpus(target).join(format!("seed-{name}"));
                if write {
                    std::fs::create_dir_all(corpus(target)).expect("create the corpus dir");
                    std::fs::write(&path, &bytes).expect("write a seed");
                }
                let stored = std::fs::read(&path).unwrap_or_else(|e| {
                    panic!(
                        "{}: {e} (regenerate: VFIO_HAL_FUZZ_WRITE_SEEDS=1 cargo test --lib seeds)",
                        path.display()
                    )
                });
                assert!(
                    stored == bytes,
                    "{} is stale; regenerate it",
                    path.display()
                );
            }
        }
    }

    #[test]
    fn every_corpus_file_passes_its_target() {
        for (target, check) in TARGETS {
            let dir = corpus(target);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                panic!("no corpus at {}", dir.display());
            };
            for entry in entries {
                let path = entry.expect("read the corpus dir").path();
                let bytes = std::fs::read(&path).expect("read a corpus file");
                check(&bytes);
            }
        }
    }

    #[test]
    fn the_seeds_are_valid_inputs_not_just_bytes() {
        for (_, bytes) in caps() {
            let mut input = Input::new(&bytes);
            let kind = crate::caps::KINDS[usize::from(input.u8()) % 3];
            let first = input.u32();
            parse_chain(kind, input.rest(), first).expect("a capability seed parses");
        }
        for (_, bytes) in irq() {
            IrqSet::parse(&bytes[crate::irq::PREFIX..]).expect("an irq seed parses");
        }
        let walked: usize = pci()
            .iter()
            .map(|(_, c)| walk_capabilities(c).expect("a config seed walks").len())
            .sum();
        assert_eq!(walked, 5);
        for (name, bytes) in iova() {
            assert!(bytes.len() > 20, "{name} has operations");
        }
        for (name, bytes) in mig_resume() {
            let (model, chunks) = crate::mig_resume::decode(&bytes);
            let loaded = crate::mig_resume::resume(model, &chunks);
            assert_eq!(loaded, !MIG_REFUSED.contains(&name), "{name}");
        }
    }
}
