//! Live migration of a guest with a passed-through device, the way a VMM
//! does it with VFIO migration v2 and IOMMU dirty tracking — here between
//! two `MockContainer`s standing for the source and the destination host,
//! each with a migratable edu and the guest's RAM mapped at IOVA = guest
//! physical address.
//!
//! The guest keeps edu busy: each job moves a slice of its RAM through
//! edu's DMA engine (into the device's buffer, or out of it into a page)
//! and folds a factorial into a checksum. Mid-workload the VMM migrates:
//! 1. **pre-copy** while the guest runs: dirty tracking on, every RAM page
//!    copied, then rounds of "copy the pages the bitmap says the device
//!    wrote" until few remain; meanwhile the device streams its state from
//!    PRE_COPY into the destination's device, which is RESUMING;
//! 2. **stop-and-copy**: the vCPU paused with a job in flight, the device
//!    to STOP_COPY (it stops, the DMA still pending), the last dirty
//!    pages, the rest of the device's stream, the vCPU state;
//! 3. **resume**: the destination's device leaves RESUMING (the state
//!    loads) and runs; the pending DMA completes there, into the
//!    destination's RAM, and the guest finishes its work.
//!
//! The guest's final RAM and checksum equal those of the same work done
//! without migration. The migration steps use only the hal traits, so the
//! same calls drive a vfio-pci device with a migration driver through the
//! kernel backends (where type1 reports every mapped page dirty, which
//! copies more but stays correct). RAM written by vCPUs is the
//! hypervisor's to track (KVM's dirty log); this guest writes RAM only
//! through its device.
//!
//! ```text
//! cargo run -p vfio-hal-mock --example live_migration
//! ```

use std::error::Error;
use std::io::{Read, Write};
use std::sync::Arc;

use vfio_hal::migration::{MigrationData, MigrationState};
use vfio_hal::prelude::*;
use vfio_hal::{DmaAccess, DmaBuffer, OwnedDmaMapping};
use vfio_hal_mock::models::edu::{reg, Edu, DMA_DELAY};
use vfio_hal_mock::{MockContainer, MockDevice};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const PAGE: u64 = 4096;
/// Where the guest's RAM sits, in guest physical (= IO virtual) addresses.
const RAM_IOVA: u64 = 0x10_0000;
const RAM_PAGES: u64 = 16;
const RAM_LEN: u64 = RAM_PAGES * PAGE;
/// The guest's whole workload.
const JOBS: u32 = 40;
/// Jobs the guest runs before the migration starts.
const WARM_UP: u32 = 8;
/// Pre-copy ends when at most this many pages are dirty (the downtime
/// budget) or after `MAX_ROUNDS` rounds.
const DOWNTIME_PAGES: usize = 2;
const MAX_ROUNDS: u32 = 5;

/// One host's side of the guest: its container with the guest's RAM
/// mapped, and the edu passed through to it.
struct Host {
    container: Arc<MockContainer>,
    ram: OwnedDmaMapping<MockContainer>,
    edu: MockDevice,
}

impl Host {
    /// A host whose guest RAM starts as `ram`. The mock's clock is manual:
    /// the device's work completes when the guest waits for it.
    fn new(ram: DmaBuffer) -> Result<Self> {
        let container = Arc::new(MockContainer::new());
        container.clock().set_manual(true);
        container.plug("edu", Edu::new().migratable())?;
        let ram = container.map_buffer_owned(RAM_IOVA, ram, DmaAccess::ReadWrite)?;
        let edu = container.open_device("edu")?;
        // The guest's PCI configuration is the VMM's to restore on the
        // destination (vfio-pci's config space is not in the device's
        // migration stream); this guest's driver needs bus mastering only.
        edu.set_bus_master(true)?;
        Ok(Self {
            container,
            ram,
            edu,
        })
    }

    fn ram(&self) -> &DmaBuffer {
        self.ram.buffer()
    }
}

/// The guest RAM the guest booted with: every page a different pattern.
fn booted_ram() -> Result<DmaBuffer> {
    let ram = DmaBuffer::new(RAM_LEN as usize)?;
    let bytes: Vec<u8> = (0..RAM_LEN).map(|i| (i * 31 / 7) as u8).collect();
    ram.write(0, &bytes)?;
    Ok(ram)
}

/// The guest's vCPU, as far as this workload goes: the job it is at and
/// the checksum so far. Migrated by the VMM with the rest of the vCPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Vcpu {
    job: u32,
    checksum: u64,
}

impl Vcpu {
    /// Starts the current job on `edu`: a DMA (odd jobs out of the device
    /// into a RAM page, even ones from RAM into the device's buffer) and a
    /// factorial, both in flight until the guest waits.
    fn start(&self, edu: &MockDevice) -> Result<()> {
        let k = u64::from(self.job);
        let bar = edu.region(0)?;
        let page = RAM_IOVA + (k * 7 % RAM_PAGES) * PAGE + (k % 5) * 64;
        let buffer = reg::DMA_START + (k % 8) * 64;
        let (src, dst, dir) = if k % 2 == 1 {
            (buffer, page, reg::EDU_DMA_DIR)
        } else {
            (page, buffer, 0)
        };
        bar.write_at::<u64>(reg::DMA_SRC, src)?;
        bar.write_at::<u64>(reg::DMA_DST, dst)?;
        bar.write_at::<u64>(reg::DMA_CNT, 256 + (k % 4) * 128)?;
        bar.write_at::<u64>(reg::DMA_CMD, reg::EDU_DMA_RUN | dir)?;
        bar.write_at::<u32>(reg::FACTORIAL, self.job % 12 + 1)?;
        Ok(())
    }

    /// Waits for the current job on `host` (its clock runs on) and folds
    /// the factorial into the checksum.
    fn finish(&mut self, host: &Host) -> Result<()> {
        host.container.clock().advance(DMA_DELAY);
        let bar = host.edu.region(0)?;
        if bar.read_at::<u64>(reg::DMA_CMD)? & reg::EDU_DMA_RUN != 0
            || bar.read_at::<u32>(reg::STATUS)? & reg::EDU_STATUS_COMPUTING != 0
        {
            return Err(format!("job {} did not complete", self.job).into());
        }
        let factorial = bar.read_at::<u32>(reg::FACTORIAL)?;
        self.checksum = self.checksum.rotate_left(7) ^ u64::from(factorial);
        self.job += 1;
        Ok(())
    }

    /// Runs `jobs` more jobs to their end (fewer if the workload ends).
    fn run(&mut self, host: &Host, jobs: u32) -> Result<()> {
        let end = JOBS.min(self.job + jobs);
        while self.job < end {
            self.start(&host.edu)?;
            self.finish(host)?;
        }
        Ok(())
    }
}

/// What the guest ends with: its RAM and its vCPU.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    ram: Vec<u8>,
    vcpu: Vcpu,
}

/// The workload on one host, no migration: the reference.
fn without_migration() -> Result<Outcome> {
    let host = Host::new(booted_ram()?)?;
    let mut vcpu = Vcpu::default();
    vcpu.run(&host, JOBS)?;
    Ok(Outcome {
        ram: host.ram().to_vec(),
        vcpu,
    })
}

/// Copies RAM pages (their guest physical addresses) from `src` to `dst`.
fn copy_pages(src: &DmaBuffer, dst: &DmaBuffer, pages: &[u64]) -> Result<()> {
    let mut page = vec![0; PAGE as usize];
    for &gpa in pages {
        let offset = gpa - RAM_IOVA;
        src.read(offset, &mut page)?;
        dst.write(offset, &page)?;
    }
    Ok(())
}

/// Forwards what the device's pre-copy stream holds now (initial bytes
/// and bytes dirtied since) to the destination; returns the byte count.
fn forward_precopy(from: &mut MigrationData, to: &mut MigrationData) -> Result<u64> {
    let info = from.precopy_info()?;
    let len = info.initial_bytes + info.dirty_bytes;
    let mut bytes = vec![0; usize::try_from(len)?];
    from.read_exact(&mut bytes)?;
    to.write_all(&bytes)?;
    Ok(len)
}

/// How a migration is done; the default is the correct way.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Copy the pages dirtied after the last pre-copy round, at the stop.
    final_dirty_pages: bool,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            final_dirty_pages: true,
        }
    }
}

/// The workload, migrated from one host to another in its middle.
fn with_migration(plan: Plan, log: &mut impl Write) -> Result<Outcome> {
    let src = Host::new(booted_ram()?)?;
    let mut vcpu = Vcpu::default();
    vcpu.run(&src, WARM_UP)?;

    // The destination: empty RAM, the device waiting for state.
    let dst = Host::new(DmaBuffer::new(RAM_LEN as usize)?)?;
    let mut incoming = dst
        .edu
        .set_migration_state(MigrationState::Resuming)?
        .ok_or("RESUMING opened no stream")?;

    // 1. Pre-copy, the guest running on the source.
    src.container.set_dirty_tracking(true)?;
    let mut outgoing = src
        .edu
        .set_migration_state(MigrationState::PreCopy)?
        .ok_or("PRE_COPY opened no stream")?;
    let mut pages: Vec<u64> = (0..RAM_PAGES).map(|p| RAM_IOVA + p * PAGE).collect();
    for round in 0.. {
        copy_pages(src.ram(), dst.ram(), &pages)?;
        let state = forward_precopy(&mut outgoing, &mut incoming)?;
        writeln!(
            log,
            "pre-copy round {round}: {} pages, {state} bytes of device state",
            pages.len()
        )?;
        vcpu.run(&src, 8 >> round)?;
        pages = src
            .container
            .read_dirty(RAM_IOVA, RAM_LEN, PAGE, false)?
            .dirty()
            .collect();
        if pages.len() <= DOWNTIME_PAGES || round + 1 == MAX_ROUNDS {
            break;
        }
    }

    // 2. Stop-and-copy: the vCPU pauses with a job in flight, one whose
    // DMA writes RAM (an odd one), which the destination completes.
    if vcpu.job % 2 == 0 {
        vcpu.run(&src, 1)?;
    }
    vcpu.start(&src.edu)?;
    if src
        .edu
        .set_migration_state(MigrationState::StopCopy)?
        .is_some()
    {
        return Err("STOP_COPY opened a new session instead of continuing".into());
    }
    let last = src.container.read_dirty(RAM_IOVA, RAM_LEN, PAGE, false)?;
    pages.extend(
        last.dirty()
            .filter(|p| !pages.contains(p))
            .collect::<Vec<_>>(),
    );
    if plan.final_dirty_pages {
        copy_pages(src.ram(), dst.ram(), &pages)?;
    }
    let mut rest = Vec::new();
    outgoing.read_to_end(&mut rest)?;
    incoming.write_all(&rest)?;
    src.edu.set_migration_state(MigrationState::Stop)?;
    src.container.set_dirty_tracking(false)?;
    writeln!(
        log,
        "stop-and-copy: {} pages, {} bytes of device state, job {} (a DMA into RAM) in flight",
        pages.len(),
        rest.len(),
        vcpu.job
    )?;

    // 3. Resume on the destination; the job in flight completes there.
    dst.edu.set_migration_state(MigrationState::Running)?;
    drop(src);
    vcpu.finish(&dst)?;
    vcpu.run(&dst, JOBS)?;
    writeln!(
        log,
        "resumed: the guest finished job {} on the destination",
        JOBS - 1
    )?;
    Ok(Outcome {
        ram: dst.ram().to_vec(),
        vcpu,
    })
}

fn main() -> Result<()> {
    let reference = without_migration()?;
    let migrated = with_migration(Plan::default(), &mut std::io::stdout())?;
    if migrated != reference {
        return Err("the migrated guest ended differently from the unmigrated one".into());
    }
    println!(
        "the migrated guest ended as the unmigrated one: checksum {:#018x}",
        migrated.vcpu.checksum
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_migrated_guest_ends_as_the_unmigrated_one() {
        let mut log = Vec::new();
        let migrated = with_migration(Plan::default(), &mut log).expect("migrate");
        let log = String::from_utf8(log).expect("utf-8");
        print!("{log}");
        assert_eq!(migrated, without_migration().expect("reference"));
        assert_eq!(migrated.vcpu.job, JOBS);
        assert!(
            log.contains("pre-copy round 1:"),
            "more than one round:\n{log}"
        );
    }

    /// The comparison can fail: pages the device wrote after the last
    /// pre-copy round, left behind, change the guest's RAM.
    #[test]
    fn leaving_the_last_dirty_pages_behind_changes_the_guests_ram() {
        let plan = Plan {
            final_dirty_pages: false,
        };
        let migrated = with_migration(plan, &mut std::io::sink()).expect("migrate");
        let reference = without_migration().expect("reference");
        assert_eq!(migrated.vcpu, reference.vcpu, "the vCPU moved whole");
        assert_ne!(migrated.ram, reference.ram);
    }
}
