//! A VMM in one file: real KVM (through kvm-ioctls) runs a few instructions
//! of 16-bit guest code that drive an edu device through vfio-hal.
//!
//! ```text
//! cargo run -p vfio-hal-facade --example kvm_vmm              # the mock edu
//! cargo run -p vfio-hal-facade --example kvm_vmm 0000:00:04.0 # a real edu on vfio-pci
//! cargo run -p vfio-hal-facade --example kvm_vmm -- --unplug  # the hotplug story, mock edu
//! ```
//!
//! What happens:
//! - The device is opened through the facade ([`vfio_hal_facade::open`]),
//!   so the VMM holds a `DynDevice` and does not know which backend serves
//!   it. By default that is the mock edu; a PCI address of a real edu bound
//!   to vfio-pci runs the same VMM on the kernel's VFIO.
//! - The hypervisor is told about the device
//!   ([`vfio_hal_facade::hypervisor`]): a real device's VFIO file (its
//!   group, or its cdev) is added to KVM's VFIO pseudo device for the run;
//!   the mock's placeholder file is no VFIO file to KVM, so for the mock
//!   edu the registration goes to the mock hypervisor.
//! - Guest RAM is 64 KiB at GPA 0 (a page-aligned `DmaBuffer`). BAR0 of the
//!   device appears at GPA `0x10000`. Where the region can be mmapped (a
//!   real device), its mmap is a KVM memory slot there and the guest's
//!   register accesses never exit; where it cannot (the mock's registers
//!   are handler-backed), the window has no memory slot, every access
//!   exits to the VMM, and the VMM forwards it to the hal `Region` of BAR0
//!   with the guest's width and offset. The outcome says which it was.
//! - Guest RAM is DMA-mapped in the device's container at IOVA = GPA for
//!   the run, so the device reads and writes guest memory directly.
//! - The guest (listing at [`GUEST_CODE`]) installs an interrupt handler
//!   for IRQ 5 on the 8259 PIC, reads edu's identification register, writes
//!   and reads back the liveness register, reports both on I/O ports, then
//!   has edu copy 16 bytes of its RAM into edu's buffer and back to another
//!   place in its RAM (the second transfer raising edu's DMA interrupt),
//!   compares the two and reports the answer; takes the DMA interrupt,
//!   then raises one through edu's raise register (`0x60`) and takes that
//!   too. It times, with `rdtsc`, 64 reads of the identification register,
//!   the DMA round trip, and the raised interrupt from the register write
//!   to its handler; the VMM prints them (`--trap-bar` keeps BAR0 trapped
//!   on a real device too, to compare).
//! - The device's MSI goes to an eventfd (`VFIO_DEVICE_SET_IRQS`). Where KVM
//!   has an in-kernel irqchip (`KVM_CREATE_IRQCHIP`), that eventfd is an
//!   irqfd on GSI 5: KVM injects the interrupt without the VMM, the guest's
//!   handler reads and acknowledges edu's interrupt status, and the guest
//!   reports it. Without one, the VMM reads the eventfd itself when the
//!   guest halts (a userspace-irqchip VMM would inject from there; this
//!   example stops).
//! - The hotplug story ([`run_hotplug`], `--unplug`): a second guest
//!   ([`LOOP_CODE`]) reads edu in a loop and counts; the device's REQ
//!   interrupt goes to an eventfd the VMM thread waits on while the vCPU
//!   thread runs. When the host asks for the device back (the mock's
//!   `request_unplug`; QEMU's `device_del` in the real-kernel lane), the
//!   VMM revokes the device, deletes BAR0's memory slot, unregisters the
//!   irqfd, removes the VFIO file from the hypervisor and drops every
//!   handle; the host's removal completes, the guest's accesses exit and
//!   read all-ones, and the guest keeps counting.
//!
//! The run fails (exit status 1) unless the guest read `0x010000ed` and the
//! inverted liveness pattern, and the interrupt arrived. `cargo test` runs
//! it too (this example is built with `test = true`); without `/dev/kvm`
//! that test passes with a loud `SKIPPED` line, or fails when
//! `VFIO_HAL_REQUIRE_KVM=1` says the machine must have KVM.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use vfio_hal_facade::dynamic::{DynContainer, DynDevice, DynIrq, DynRegion};
use vfio_hal_facade::eventfd::{EventFd, EventFdExt};
use vfio_hal_facade::hypervisor::{Hypervisor, VfioFileRegistration};
use vfio_hal_facade::linux::kvm::KvmVfioDevice;
use vfio_hal_facade::mock::MockHypervisor;
use vfio_hal_facade::prelude::*;
use vfio_hal_facade::{
    open, Backend, DmaAccess, DmaBuffer, MmapArea, OpenSpec, Opened, OwnedDmaMapping, Protection,
    Revoker,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Guest RAM: 64 KiB at GPA 0 (interrupt vector table, code, stack).
const RAM_SIZE: usize = 0x1_0000;
/// Where the code is loaded and starts (CS = 0, IP = 0x1000).
const CODE_GPA: u64 = 0x1000;
/// The MMIO window of BAR0 (segment 0x1000 in the guest).
const BAR0_GPA: u64 = 0x1_0000;
/// How much of BAR0 the window shows (edu's registers end at 0x9f).
const BAR0_WINDOW: u64 = 0x1_0000;
/// The byte the guest's interrupt handler increments.
const HANDLER_COUNT_GPA: u64 = 0x600;
/// Where the guest's DMA data is (the VMM puts [`DMA_PATTERN`] there), and
/// where edu copies it back to.
const DMA_SOURCE_GPA: u64 = 0x2000;
const DMA_BACK_GPA: u64 = 0x3000;
/// The 16 bytes the guest has edu copy out and back.
const DMA_PATTERN: [u8; 16] = *b"vfio-hal DMA L2!";
/// edu's interrupt status bit for a finished DMA transfer.
const EDU_DMA_IRQ: u32 = 0x100;
/// The status the guest raises through edu's raise register.
const EDU_RAISED: u32 = 0x1;
/// The GSI (PIC IRQ line) the device's MSI is routed to.
const EDU_GSI: u32 = 5;
/// The pattern the guest writes to edu's liveness register.
const LIVENESS_PATTERN: u32 = 0x1234_5678;
/// edu's identification register value.
const EDU_ID: u32 = 0x0100_00ed;

/// Ports the guest reports on (`out dx, eax`).
mod port {
    /// The identification register, as read by the guest.
    pub const ID: u16 = 0x510;
    /// The liveness register after writing the pattern.
    pub const LIVENESS: u16 = 0x514;
    /// edu's interrupt status, read by the guest's interrupt handler.
    pub const ISR_STATUS: u16 = 0x518;
    /// The end: how many times the handler ran (one byte).
    pub const DONE: u16 = 0x51c;
    /// Whether the 16 bytes edu copied back equal the ones it copied out
    /// (one byte: 1 or 0).
    pub const DMA_MATCH: u16 = 0x520;
    /// TSC cycles of 64 reads of the identification register.
    pub const READ_CYCLES: u16 = 0x524;
    /// TSC cycles of the DMA round trip (both transfers, with polling).
    pub const DMA_CYCLES: u16 = 0x528;
    /// TSC cycles from a write of the raise register to the handler (the
    /// handler reports it each time; the raised interrupt's is the last).
    pub const IRQ_CYCLES: u16 = 0x52c;
    /// The master 8259's command and data ports (KVM's in-kernel PIC
    /// serves them; without it they exit and are ignored).
    pub const PIC: [u16; 2] = [0x20, 0x21];
}

/// The guest: 16-bit real mode, loaded at `0000:1000`. Assembled with GNU
/// as (`.code16`, linked at 0x1000) and listed with `objdump -d -M
/// i8086,intel`; the listing is the source. Offsets are from the start of
/// the code; jump targets are absolute.
///
/// ```text
/// 000 fa                             cli
/// 001 31 c0                          xor ax,ax
/// 003 8e d8                          mov ds,ax
/// 005 8e d0                          mov ss,ax
/// 007 bc 00 80                       mov sp,0x8000
/// 00a c7 06 94 00 29 11              mov WORD PTR ds:0x94,isr          ; IVT[0x25].ip = isr
/// 010 c7 06 96 00 00 00              mov WORD PTR ds:0x96,0x0          ; IVT[0x25].cs = 0
/// 016 b0 11                          mov al,0x11                       ; ICW1: edge, cascade, ICW4
/// 018 e6 20                          out 0x20,al
/// 01a b0 20                          mov al,0x20                       ; ICW2: vectors 0x20..0x27
/// 01c e6 21                          out 0x21,al
/// 01e b0 04                          mov al,0x4                        ; ICW3: slave on IRQ 2
/// 020 e6 21                          out 0x21,al
/// 022 b0 01                          mov al,0x1                        ; ICW4: 8086 mode
/// 024 e6 21                          out 0x21,al
/// 026 b0 df                          mov al,0xdf                       ; mask all but IRQ 5
/// 028 e6 21                          out 0x21,al
/// 02a b8 00 10                       mov ax,0x1000
/// 02d 8e c0                          mov es,ax                         ; es:0 = BAR0 (GPA 0x10000)
/// 02f 26 66 a1 00 00                 mov eax,es:0x0                    ; identification
/// 034 ba 10 05                       mov dx,0x510
/// 037 66 ef                          out dx,eax
/// 039 26 66 c7 06 04 00 78 56 34 12  mov DWORD PTR es:0x4,0x12345678   ; liveness
/// 043 26 66 a1 04 00                 mov eax,es:0x4
/// 048 ba 14 05                       mov dx,0x514
/// 04b 66 ef                          out dx,eax
/// 04d 0f 31                          rdtsc                             ; time 64 reads of the identification register
/// 04f 66 89 c3                       mov ebx,eax
/// 052 b9 40 00                       mov cx,0x40
/// reads:
/// 055 26 66 a1 00 00                 mov eax,es:0x0
/// 05a e2 f9                          loop reads
/// 05c 0f 31                          rdtsc
/// 05e 66 29 d8                       sub eax,ebx
/// 061 ba 24 05                       mov dx,0x524                      ; cycles
/// 064 66 ef                          out dx,eax
/// 066 0f 31                          rdtsc                             ; time the DMA round trip
/// 068 66 89 c3                       mov ebx,eax
/// 06b 26 66 c7 06 80 00 00 20 00 00  mov DWORD PTR es:0x80,0x2000      ; source: guest RAM (IOVA = GPA)
/// 075 26 66 c7 06 88 00 00 00 04 00  mov DWORD PTR es:0x88,0x40000     ; destination: edu's buffer
/// 07f 26 66 c7 06 90 00 10 00 00 00  mov DWORD PTR es:0x90,0x10        ; 16 bytes
/// 089 26 66 c7 06 98 00 01 00 00 00  mov DWORD PTR es:0x98,0x1         ; start, RAM -> device
/// to_dev:
/// 093 26 66 a1 98 00                 mov eax,es:0x98                   ; poll the command register (4-byte reads)
/// 098 a8 01                          test al,0x1
/// 09a 75 f7                          jne to_dev
/// 09c 26 66 c7 06 80 00 00 00 04 00  mov DWORD PTR es:0x80,0x40000     ; source: edu's buffer
/// 0a6 26 66 c7 06 88 00 00 30 00 00  mov DWORD PTR es:0x88,0x3000      ; destination: guest RAM
/// 0b0 26 66 c7 06 90 00 10 00 00 00  mov DWORD PTR es:0x90,0x10
/// 0ba 26 66 c7 06 98 00 07 00 00 00  mov DWORD PTR es:0x98,0x7         ; start, device -> RAM, interrupt when done
/// to_ram:
/// 0c4 26 66 a1 98 00                 mov eax,es:0x98
/// 0c9 a8 01                          test al,0x1
/// 0cb 75 f7                          jne to_ram
/// 0cd 0f 31                          rdtsc
/// 0cf 66 29 d8                       sub eax,ebx
/// 0d2 ba 28 05                       mov dx,0x528                      ; cycles
/// 0d5 66 ef                          out dx,eax
/// 0d7 31 db                          xor bx,bx
/// compare:
/// 0d9 66 8b 87 00 20                 mov eax,DWORD PTR [bx+0x2000]     ; did the 16 bytes come back?
/// 0de 66 3b 87 00 30                 cmp eax,DWORD PTR [bx+0x3000]
/// 0e3 75 0c                          jne differ
/// 0e5 83 c3 04                       add bx,0x4
/// 0e8 83 fb 10                       cmp bx,0x10
/// 0eb 75 ec                          jne compare
/// 0ed b0 01                          mov al,0x1
/// 0ef eb 02                          jmp report
/// differ:
/// 0f1 b0 00                          mov al,0x0
/// report:
/// 0f3 ba 20 05                       mov dx,0x520                      ; 1: yes, 0: no
/// 0f6 ee                             out dx,al
/// dma_irq:
/// 0f7 80 3e 00 06 01                 cmp BYTE PTR ds:0x600,0x1         ; the DMA interrupt taken?
/// 0fc 73 05                          jae raise
/// 0fe fb                             sti                               ; sti; hlt: no lost wakeup
/// 0ff f4                             hlt
/// 100 fa                             cli
/// 101 eb f4                          jmp dma_irq
/// raise:
/// 103 0f 31                          rdtsc                             ; time an interrupt: raise it
/// 105 66 a3 00 07                    mov ds:0x700,eax
/// 109 26 66 c7 06 60 00 01 00 00 00  mov DWORD PTR es:0x60,0x1
/// raised:
/// 113 80 3e 00 06 02                 cmp BYTE PTR ds:0x600,0x2         ; the raised one taken?
/// 118 73 05                          jae done
/// 11a fb                             sti
/// 11b f4                             hlt
/// 11c fa                             cli
/// 11d eb f4                          jmp raised
/// done:
/// 11f a0 00 06                       mov al,ds:0x600                   ; report the handler count
/// 122 ba 1c 05                       mov dx,0x51c
/// 125 ee                             out dx,al
/// 126 f4                             hlt
/// 127 eb f6                          jmp done
/// isr:
/// 129 66 50                          push eax
/// 12b 66 52                          push edx
/// 12d 0f 31                          rdtsc                             ; cycles since the raise
/// 12f 66 2b 06 00 07                 sub eax,DWORD PTR ds:0x700
/// 134 ba 2c 05                       mov dx,0x52c
/// 137 66 ef                          out dx,eax
/// 139 26 66 a1 24 00                 mov eax,es:0x24                   ; interrupt status: 0x100 DMA, 0x1 raised
/// 13e ba 18 05                       mov dx,0x518
/// 141 66 ef                          out dx,eax
/// 143 26 66 a3 64 00                 mov es:0x64,eax                   ; acknowledge
/// 148 fe 06 00 06                    inc BYTE PTR ds:0x600
/// 14c b0 20                          mov al,0x20                       ; EOI
/// 14e e6 20                          out 0x20,al
/// 150 66 5a                          pop edx
/// 152 66 58                          pop eax
/// 154 cf                             iret
/// ```
#[rustfmt::skip]
const GUEST_CODE: [u8; 0x155] = [
    0xfa, 0x31, 0xc0, 0x8e, 0xd8, 0x8e, 0xd0, 0xbc, 0x00, 0x80, 0xc7, 0x06,
    0x94, 0x00, 0x29, 0x11, 0xc7, 0x06, 0x96, 0x00, 0x00, 0x00, 0xb0, 0x11,
    0xe6, 0x20, 0xb0, 0x20, 0xe6, 0x21, 0xb0, 0x04, 0xe6, 0x21, 0xb0, 0x01,
    0xe6, 0x21, 0xb0, 0xdf, 0xe6, 0x21, 0xb8, 0x00, 0x10, 0x8e, 0xc0, 0x26,
    0x66, 0xa1, 0x00, 0x00, 0xba, 0x10, 0x05, 0x66, 0xef, 0x26, 0x66, 0xc7,
    0x06, 0x04, 0x00, 0x78, 0x56, 0x34, 0x12, 0x26, 0x66, 0xa1, 0x04, 0x00,
    0xba, 0x14, 0x05, 0x66, 0xef, 0x0f, 0x31, 0x66, 0x89, 0xc3, 0xb9, 0x40,
    0x00, 0x26, 0x66, 0xa1, 0x00, 0x00, 0xe2, 0xf9, 0x0f, 0x31, 0x66, 0x29,
    0xd8, 0xba, 0x24, 0x05, 0x66, 0xef, 0x0f, 0x31, 0x66, 0x89, 0xc3, 0x26,
    0x66, 0xc7, 0x06, 0x80, 0x00, 0x00, 0x20, 0x00, 0x00, 0x26, 0x66, 0xc7,
    0x06, 0x88, 0x00, 0x00, 0x00, 0x04, 0x00, 0x26, 0x66, 0xc7, 0x06, 0x90,
    0x00, 0x10, 0x00, 0x00, 0x00, 0x26, 0x66, 0xc7, 0x06, 0x98, 0x00, 0x01,
    0x00, 0x00, 0x00, 0x26, 0x66, 0xa1, 0x98, 0x00, 0xa8, 0x01, 0x75, 0xf7,
    0x26, 0x66, 0xc7, 0x06, 0x80, 0x00, 0x00, 0x00, 0x04, 0x00, 0x26, 0x66,
    0xc7, 0x06, 0x88, 0x00, 0x00, 0x30, 0x00, 0x00, 0x26, 0x66, 0xc7, 0x06,
    0x90, 0x00, 0x10, 0x00, 0x00, 0x00, 0x26, 0x66, 0xc7, 0x06, 0x98, 0x00,
    0x07, 0x00, 0x00, 0x00, 0x26, 0x66, 0xa1, 0x98, 0x00, 0xa8, 0x01, 0x75,
    0xf7, 0x0f, 0x31, 0x66, 0x29, 0xd8, 0xba, 0x28, 0x05, 0x66, 0xef, 0x31,
    0xdb, 0x66, 0x8b, 0x87, 0x00, 0x20, 0x66, 0x3b, 0x87, 0x00, 0x30, 0x75,
    0x0c, 0x83, 0xc3, 0x04, 0x83, 0xfb, 0x10, 0x75, 0xec, 0xb0, 0x01, 0xeb,
    0x02, 0xb0, 0x00, 0xba, 0x20, 0x05, 0xee, 0x80, 0x3e, 0x00, 0x06, 0x01,
    0x73, 0x05, 0xfb, 0xf4, 0xfa, 0xeb, 0xf4, 0x0f, 0x31, 0x66, 0xa3, 0x00,
    0x07, 0x26, 0x66, 0xc7, 0x06, 0x60, 0x00, 0x01, 0x00, 0x00, 0x00, 0x80,
    0x3e, 0x00, 0x06, 0x02, 0x73, 0x05, 0xfb, 0xf4, 0xfa, 0xeb, 0xf4, 0xa0,
    0x00, 0x06, 0xba, 0x1c, 0x05, 0xee, 0xf4, 0xeb, 0xf6, 0x66, 0x50, 0x66,
    0x52, 0x0f, 0x31, 0x66, 0x2b, 0x06, 0x00, 0x07, 0xba, 0x2c, 0x05, 0x66,
    0xef, 0x26, 0x66, 0xa1, 0x24, 0x00, 0xba, 0x18, 0x05, 0x66, 0xef, 0x26,
    0x66, 0xa3, 0x64, 0x00, 0xfe, 0x06, 0x00, 0x06, 0xb0, 0x20, 0xe6, 0x20,
    0x66, 0x5a, 0x66, 0x58, 0xcf,
];

/// How the device's interrupt reached the guest (or the VMM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// MSI eventfd → KVM irqfd → in-kernel PIC → the guest's handler ran
    /// this many times and saw this interrupt status.
    Irqfd {
        handler_runs: u8,
        /// The status the first run saw (edu's DMA interrupt).
        dma_status: Option<u32>,
        /// The status the second run saw (the raised interrupt).
        raised_status: Option<u32>,
    },
    /// No in-kernel irqchip: the VMM read this count from the eventfd.
    EventfdRead(u64),
    /// Nothing arrived.
    None,
}

/// What the run observed.
#[derive(Debug, Clone)]
struct Outcome {
    device: String,
    backend: Backend,
    /// How the guest reached BAR0.
    bar0: Bar0Path,
    /// Which hypervisor the device's VFIO file was added to for the run.
    hypervisor: &'static str,
    identification: Option<u32>,
    liveness: Option<u32>,
    delivery: Delivery,
    mmio_reads: u32,
    mmio_writes: u32,
    /// edu's interrupt status after the run (the handler acknowledges it).
    status_after: u32,
    /// The guest's answer: did the bytes edu copied back match (1)?
    dma_match: Option<u8>,
    /// What the VMM found at [`DMA_BACK_GPA`] after the run.
    dma_back: [u8; 16],
    /// What the guest timed.
    timing: Timing,
}

/// The guest's `rdtsc` figures, and the TSC rate to turn them into time.
#[derive(Debug, Clone, Copy, Default)]
struct Timing {
    tsc_khz: Option<u32>,
    read_cycles: Option<u32>,
    dma_cycles: Option<u32>,
    irq_cycles: Option<u32>,
}

impl Timing {
    /// `cycles` in nanoseconds, divided by `per`.
    fn ns(&self, cycles: Option<u32>, per: u32) -> Option<f64> {
        let khz = f64::from(self.tsc_khz?);
        Some(f64::from(cycles?) * 1e6 / khz / f64::from(per))
    }

    /// One 4-byte register read, in ns.
    fn read_ns(&self) -> Option<f64> {
        self.ns(self.read_cycles, 64)
    }

    fn dma_ns(&self) -> Option<f64> {
        self.ns(self.dma_cycles, 1)
    }

    fn irq_ns(&self) -> Option<f64> {
        self.ns(self.irq_cycles, 1)
    }
}

impl Outcome {
    /// Every check, with what was expected and what came back.
    fn check(&self) -> Result<(), String> {
        let mut failures = Vec::new();
        if self.identification != Some(EDU_ID) {
            failures.push(format!(
                "the guest read identification {:x?}, expected {EDU_ID:#010x}",
                self.identification
            ));
        }
        if self.liveness != Some(!LIVENESS_PATTERN) {
            failures.push(format!(
                "the guest read liveness {:x?}, expected {:#010x}",
                self.liveness, !LIVENESS_PATTERN
            ));
        }
        if self.dma_match != Some(1) || self.dma_back != DMA_PATTERN {
            failures.push(format!(
                "DMA round trip: the guest answered {:?} (1: equal), guest RAM at {DMA_BACK_GPA:#x} holds {:?}, expected {:?}",
                self.dma_match,
                String::from_utf8_lossy(&self.dma_back),
                String::from_utf8_lossy(&DMA_PATTERN)
            ));
        }
        match self.delivery {
            Delivery::Irqfd {
                handler_runs: 2,
                dma_status: Some(EDU_DMA_IRQ),
                raised_status: Some(EDU_RAISED),
            } if self.status_after == 0 => {}
            Delivery::EventfdRead(n) if n >= 1 => {}
            other => failures.push(format!(
                "interrupt: {other:?}, status after the run {:#x}; expected the handler to run twice, see status {EDU_DMA_IRQ:#x} (DMA done), then {EDU_RAISED:#x} (raised), and acknowledge both",
                self.status_after
            )),
        }
        if self.bar0 == Bar0Path::Mapped && self.mmio_reads + self.mmio_writes != 0 {
            failures.push(format!(
                "BAR0 is a memory slot, yet {} reads and {} writes exited",
                self.mmio_reads, self.mmio_writes
            ));
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }
}

/// How the guest reaches BAR0.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bar0Path {
    /// The region's mmap is a KVM memory slot: accesses do not exit.
    Mapped,
    /// No memory slot (why): every access exits and is forwarded.
    Trapped(String),
}

/// The parts of the VM the vCPU thread owns. Field order is drop order:
/// the vCPU and VM go before the memory they map.
struct Machine {
    vcpu: VcpuFd,
    /// Shared with the thread that watches the device's REQ in a hotplug
    /// run ([`run_hotplug`]), which removes the device's memory slot and
    /// irqfd while the vCPU runs; that thread drops its handle before the
    /// vCPU thread drops the machine.
    vm: Arc<VmFd>,
    /// Guest RAM, DMA-mapped in the device's container at IOVA = GPA; the
    /// guard unmaps it (and frees it) when the machine goes.
    ram: OwnedDmaMapping<DynContainer>,
    /// The mmap of BAR0 behind memory slot 1, if any; declared after the
    /// VM, so it is unmapped only once the VM and its vCPU are gone.
    bar0_map: Option<MmapArea>,
    irqchip: bool,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("irqchip", &self.irqchip)
            .finish_non_exhaustive()
    }
}

fn setup_machine(
    want_irqchip: bool,
    container: &Arc<DynContainer>,
    code: &[u8],
) -> Result<Machine, BoxError> {
    let kvm = Kvm::new().map_err(|e| format!("open /dev/kvm: {e}"))?;
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    // Intel CPUs without unrestricted guest run real mode through a TSS.
    vm.set_tss_address(0xfffb_d000)
        .map_err(|e| format!("KVM_SET_TSS_ADDR: {e}"))?;
    let irqchip = want_irqchip && vm.create_irq_chip().is_ok();

    let memory = DmaBuffer::new(RAM_SIZE)?;
    memory.write(CODE_GPA, code)?;
    memory.write(DMA_SOURCE_GPA, &DMA_PATTERN)?;
    let ram = container
        .map_buffer_owned(0, memory, DmaAccess::ReadWrite)
        .map_err(|e| format!("DMA-map guest RAM at IOVA = GPA: {}", e.error))?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: RAM_SIZE as u64,
        userspace_addr: ram.buffer().as_ptr() as u64,
    };
    // SAFETY: `ram` owns RAM_SIZE bytes of this process's memory and lives
    // in `Machine` next to the VM, declared after it, so it is freed only
    // once the VM and its vCPU are gone.
    unsafe { vm.set_user_memory_region(region) }
        .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION: {e}"))?;

    let vcpu = vm
        .create_vcpu(0)
        .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
    if irqchip {
        // The 8259's output reaches the CPU through the local APIC's LINT0
        // in ExtINT mode (and LINT1 is NMI), as firmware sets them up.
        const LVT0: usize = 0x350;
        const LVT1: usize = 0x360;
        const EXTINT: u32 = 0x700;
        const NMI: u32 = 0x400;
        let mut lapic = vcpu
            .get_lapic()
            .map_err(|e| format!("KVM_GET_LAPIC: {e}"))?;
        for (reg, value) in [(LVT0, EXTINT), (LVT1, NMI)] {
            for (i, b) in value.to_le_bytes().into_iter().enumerate() {
                lapic.regs[reg + i] = b as _;
            }
        }
        vcpu.set_lapic(&lapic)
            .map_err(|e| format!("KVM_SET_LAPIC: {e}"))?;
    }
    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    for seg in [
        &mut sregs.cs,
        &mut sregs.ds,
        &mut sregs.es,
        &mut sregs.ss,
        &mut sregs.fs,
        &mut sregs.gs,
    ] {
        seg.base = 0;
        seg.selector = 0;
    }
    vcpu.set_sregs(&sregs)
        .map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
    let mut regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
    regs.rip = CODE_GPA;
    regs.rflags = 0x2;
    regs.rsp = 0x8000;
    vcpu.set_regs(&regs)
        .map_err(|e| format!("KVM_SET_REGS: {e}"))?;
    Ok(Machine {
        vcpu,
        vm: Arc::new(vm),
        ram,
        bar0_map: None,
        irqchip,
    })
}

/// Makes the mmap of BAR0's first [`BAR0_WINDOW`] bytes memory slot 1 at
/// [`BAR0_GPA`], if the region has a mappable area there; otherwise the
/// window stays trapped, and the reason is returned.
fn map_bar0(machine: &mut Machine, bar0: &DynRegion) -> Bar0Path {
    let area = match bar0.mmap_area(0, Protection::ReadWrite) {
        Ok(area) if area.region_offset() == 0 && area.len() >= BAR0_WINDOW => area,
        Ok(area) => {
            return Bar0Path::Trapped(format!(
                "BAR0's first mappable area is [{:#x}, +{:#x}), not the window",
                area.region_offset(),
                area.len()
            ))
        }
        Err(e) => return Bar0Path::Trapped(e.to_string()),
    };
    let slot = kvm_userspace_memory_region {
        slot: 1,
        flags: 0,
        guest_phys_addr: BAR0_GPA,
        memory_size: BAR0_WINDOW,
        userspace_addr: area.as_ptr() as u64,
    };
    // SAFETY: `area` maps at least BAR0_WINDOW bytes (checked above) and is
    // kept in `machine.bar0_map`, declared after the VM, so it stays mapped
    // for as long as the VM can reach it.
    if let Err(e) = unsafe { machine.vm.set_user_memory_region(slot) } {
        return Bar0Path::Trapped(format!("KVM_SET_USER_MEMORY_REGION of BAR0: {e}"));
    }
    machine.bar0_map = Some(area);
    Bar0Path::Mapped
}

/// BAR0 as the run asks: a memory slot where it can be ([`map_bar0`]), or
/// trapped.
fn place_bar0(machine: &mut Machine, bar0: &DynRegion, map_bar: bool) -> Bar0Path {
    if map_bar {
        map_bar0(machine, bar0)
    } else {
        Bar0Path::Trapped("asked to trap it (--trap-bar)".into())
    }
}

/// Adds `device`'s VFIO file to the VM's hypervisor for the run: KVM's
/// VFIO pseudo device for a real device; for the mock, whose placeholder
/// file is no VFIO file to KVM, the mock hypervisor.
fn tell_hypervisor(
    backend: Backend,
    vm: &VmFd,
    device: &DynDevice,
) -> Result<VfioFileRegistration<Box<dyn Hypervisor>>, BoxError> {
    let hook: Box<dyn Hypervisor> = match backend {
        Backend::Mock => Box::new(MockHypervisor::new()),
        _ => Box::new(KvmVfioDevice::new(vm)?),
    };
    Ok(VfioFileRegistration::new(hook, device)?)
}

/// Routes the device's MSI to a new eventfd, and that to a KVM irqfd on
/// [`EDU_GSI`] where the VM has an in-kernel irqchip.
fn route_msi(machine: &Machine, msi: &DynIrq) -> Result<EventFd, BoxError> {
    let efd = EventFd::nonblocking().map_err(|e| format!("eventfd: {e}"))?;
    if machine.irqchip {
        machine
            .vm
            .register_irqfd(&efd, EDU_GSI)
            .map_err(|e| format!("KVM_IRQFD: {e}"))?;
    }
    msi.set_eventfd(0, Some(efd.as_fd()))?;
    Ok(efd)
}

/// What the exit loop collected.
#[derive(Debug, Default)]
struct Exits {
    identification: Option<u32>,
    liveness: Option<u32>,
    isr_statuses: Vec<u32>,
    dma_match: Option<u8>,
    timing: Timing,
    dma_back: [u8; 16],
    handler_runs: Option<u8>,
    eventfd_count: Option<u64>,
    handler_count_in_ram: u8,
    mmio_reads: u32,
    mmio_writes: u32,
}

fn le_u32(data: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(..4)?.try_into().ok()?))
}

/// Runs the vCPU until the guest reports it is done: MMIO in the BAR0
/// window goes to `bar0`, reports on the ports are collected.
fn run_vcpu(machine: &mut Machine, bar0: &DynRegion, efd: &EventFd) -> Result<Exits, BoxError> {
    let window = BAR0_GPA..BAR0_GPA + BAR0_WINDOW;
    let mut exits = Exits::default();
    exits.timing.tsc_khz = machine.vcpu.get_tsc_khz().ok();
    for _ in 0..10_000 {
        match machine.vcpu.run().map_err(|e| format!("KVM_RUN: {e}"))? {
            VcpuExit::MmioRead(addr, data) if window.contains(&addr) => {
                exits.mmio_reads += 1;
                bar0.read(addr - BAR0_GPA, data)?;
            }
            VcpuExit::MmioWrite(addr, data) if window.contains(&addr) => {
                exits.mmio_writes += 1;
                bar0.write(addr - BAR0_GPA, data)?;
            }
            VcpuExit::IoOut(port::ID, data) => exits.identification = le_u32(data),
            VcpuExit::IoOut(port::LIVENESS, data) => exits.liveness = le_u32(data),
            VcpuExit::IoOut(port::ISR_STATUS, data) => exits.isr_statuses.extend(le_u32(data)),
            VcpuExit::IoOut(port::READ_CYCLES, data) => exits.timing.read_cycles = le_u32(data),
            VcpuExit::IoOut(port::DMA_CYCLES, data) => exits.timing.dma_cycles = le_u32(data),
            VcpuExit::IoOut(port::IRQ_CYCLES, data) => exits.timing.irq_cycles = le_u32(data),
            VcpuExit::IoOut(port::DMA_MATCH, data) => exits.dma_match = data.first().copied(),
            VcpuExit::IoOut(port::DONE, data) => {
                exits.handler_runs = data.first().copied();
                return Ok(exits);
            }
            VcpuExit::IoOut(p, _) if port::PIC.contains(&p) && !machine.irqchip => {}
            VcpuExit::Hlt if !machine.irqchip => {
                // No in-kernel irqchip: the interrupt is the VMM's to take.
                exits.eventfd_count = Some(
                    efd.wait(Duration::from_secs(5))
                        .map_err(|e| format!("read the MSI eventfd: {e}"))?,
                );
                return Ok(exits);
            }
            other => {
                let what = format!("{other:?}");
                let rip = machine.vcpu.get_regs().map(|r| r.rip).unwrap_or(u64::MAX);
                return Err(format!("unexpected exit {what} at rip {rip:#x}").into());
            }
        }
    }
    Err("the guest did not finish within 10 000 exits".into())
}

/// What to open: the mock edu, or a device by name (a PCI address).
fn spec_for(device: Option<&str>) -> OpenSpec {
    match device {
        None => OpenSpec::new("edu").with_backend(Backend::Mock),
        Some(name) => OpenSpec::new(name),
    }
}

/// Builds the VM, wires the device and runs the guest on its own thread,
/// waiting at most `timeout` for it.
/// `want_irqchip: false` skips `KVM_CREATE_IRQCHIP`, to exercise the path
/// of a KVM without one.
fn run_vmm(
    spec: &OpenSpec,
    want_irqchip: bool,
    map_bar: bool,
    timeout: Duration,
) -> Result<Outcome, BoxError> {
    let opened: Opened = open(spec)?;
    // Shared with the guest-RAM mapping the vCPU thread owns.
    let container = Arc::new(opened.container);
    opened.device.set_bus_master(true)?; // memory decode + bus mastering
    let bar0 = opened.device.region(vfio_hal_facade::pci::region::BAR0)?;
    let msi = opened.device.irq(vfio_hal_facade::irq::index::MSI)?;

    let mut machine = setup_machine(want_irqchip, &container, &GUEST_CODE)?;
    let bar0_path = place_bar0(&mut machine, &bar0, map_bar);
    let registration = tell_hypervisor(opened.backend, &machine.vm, &opened.device)?;
    let hypervisor = registration.hypervisor().name();
    let efd = route_msi(&machine, &msi)?;

    let (tx, rx) = mpsc::channel();
    // The vCPU thread owns the machine: if the guest never finishes, the
    // thread stays blocked in KVM_RUN with everything the guest may touch.
    let worker = std::thread::spawn(move || {
        let result = run_vcpu(&mut machine, &bar0, &efd).and_then(|mut exits| {
            // The handler's counter, straight from guest RAM.
            let mut flag = [0u8; 1];
            machine.ram.buffer().read(HANDLER_COUNT_GPA, &mut flag)?;
            exits.handler_count_in_ram = flag[0];
            machine
                .ram
                .buffer()
                .read(DMA_BACK_GPA, &mut exits.dma_back)?;
            Ok((exits, machine.irqchip))
        });
        // Tear the route down before the eventfd goes.
        let teardown = msi.disable();
        if machine.irqchip {
            let _ = machine.vm.unregister_irqfd(&efd, EDU_GSI);
        }
        let _ = tx.send(result.and_then(|r| teardown.map(|()| r).map_err(Into::into)));
        drop((machine, efd));
    });
    let (exits, irqchip) = rx
        .recv_timeout(timeout)
        .map_err(|_| format!("the guest did not finish within {timeout:?}: no interrupt?"))??;
    let _ = worker.join();
    registration.remove()?;

    let status_after = opened
        .device
        .region(vfio_hal_facade::pci::region::BAR0)?
        .read_at::<u32>(0x24)?;
    let delivery = match (irqchip, exits.eventfd_count) {
        (true, _) => match exits.handler_runs {
            Some(n) if n > 0 && n == exits.handler_count_in_ram => Delivery::Irqfd {
                handler_runs: n,
                dma_status: exits.isr_statuses.first().copied(),
                raised_status: exits.isr_statuses.get(1).copied(),
            },
            _ => Delivery::None,
        },
        (false, Some(n)) if n > 0 => Delivery::EventfdRead(n),
        (false, _) => Delivery::None,
    };
    Ok(Outcome {
        device: opened.name.clone(),
        backend: opened.backend,
        bar0: bar0_path,
        hypervisor,
        identification: exits.identification,
        liveness: exits.liveness,
        delivery,
        mmio_reads: exits.mmio_reads,
        mmio_writes: exits.mmio_writes,
        status_after,
        dma_match: exits.dma_match,
        dma_back: exits.dma_back,
        timing: exits.timing,
    })
}

/// The guest of a hotplug run ([`run_hotplug`]): 16-bit real mode, loaded
/// at `0000:1000`, assembled and listed as [`GUEST_CODE`] is. It reads
/// edu's identification register in a loop, keeps the last value and a
/// counter in its RAM, and every 1024 rounds reports both on ports — the
/// device is in use for as long as it is there, and the reports show that
/// the guest keeps running once it is gone.
///
/// ```text
/// 00 fa                   cli
/// 01 31 c0                xor ax,ax
/// 03 8e d8                mov ds,ax
/// 05 8e d0                mov ss,ax
/// 07 bc 00 80             mov sp,0x8000
/// 0a b8 00 10             mov ax,0x1000
/// 0d 8e c0                mov es,ax                    ; es:0 = BAR0 (GPA 0x10000)
/// spin:
/// 0f 26 66 a1 00 00       mov eax,es:0x0               ; identification
/// 14 66 a3 00 08          mov ds:0x800,eax             ; the last value read
/// 18 66 ff 06 04 08       inc DWORD PTR ds:0x804       ; the counter
/// 1d f7 06 04 08 ff 03    test WORD PTR ds:0x804,0x3ff
/// 23 75 ea                jne spin
/// 25 66 a1 00 08          mov eax,ds:0x800
/// 29 ba 34 05             mov dx,0x534                 ; the last identification read
/// 2c 66 ef                out dx,eax
/// 2e 66 a1 04 08          mov eax,ds:0x804
/// 32 ba 30 05             mov dx,0x530                 ; the counter
/// 35 66 ef                out dx,eax
/// 37 eb d6                jmp spin
/// ```
#[rustfmt::skip]
const LOOP_CODE: [u8; 0x39] = [
    0xfa, 0x31, 0xc0, 0x8e, 0xd8, 0x8e, 0xd0, 0xbc, 0x00, 0x80, 0xb8, 0x00,
    0x10, 0x8e, 0xc0, 0x26, 0x66, 0xa1, 0x00, 0x00, 0x66, 0xa3, 0x00, 0x08,
    0x66, 0xff, 0x06, 0x04, 0x08, 0xf7, 0x06, 0x04, 0x08, 0xff, 0x03, 0x75,
    0xea, 0x66, 0xa1, 0x00, 0x08, 0xba, 0x34, 0x05, 0x66, 0xef, 0x66, 0xa1,
    0x04, 0x08, 0xba, 0x30, 0x05, 0x66, 0xef, 0xeb, 0xd6,
];
/// Where [`LOOP_CODE`] keeps its counter.
const LOOP_COUNTER_GPA: u64 = 0x804;
/// Rounds of [`LOOP_CODE`] between two reports.
const LOOP_REPORT_EVERY: u64 = 0x400;
/// The ports [`LOOP_CODE`] reports on.
mod loop_port {
    /// The counter (every [`super::LOOP_REPORT_EVERY`] rounds).
    pub const COUNTER: u16 = 0x530;
    /// The identification value the guest read last.
    pub const LAST_ID: u16 = 0x534;
}
/// What a removed PCI device answers to reads: the VMM's answer to the
/// guest's trapped accesses once the device is revoked.
const REMOVED: u32 = u32::MAX;

/// How a hotplug run's device leaves: who asks the host to unplug it, and
/// how the VMM learns that the host's removal completed.
trait Unplug {
    /// Asks for the unplug; the device's REQ interrupt follows.
    fn request(&self, opened: &UnplugTarget<'_>) -> Result<(), BoxError>;
    /// Waits (at most `timeout`) until the host has removed the device,
    /// after the VMM let go of it.
    fn wait_removed(&self, opened: &UnplugTarget<'_>, timeout: Duration) -> Result<(), BoxError>;
}

/// The device a hotplug run unplugs, as [`Unplug`] sees it.
struct UnplugTarget<'a> {
    /// Its name in its backend.
    name: &'a str,
    /// The mock container serving it, if the mock does.
    mock: Option<&'a vfio_hal_facade::mock::MockContainer>,
}

/// The mock's unplug: [`MockContainer::request_unplug`] signals REQ as
/// vfio-pci does; the device is gone for the mock once nobody holds it open
/// (a second request then finds nobody to ask).
///
/// [`MockContainer::request_unplug`]: vfio_hal_facade::mock::MockContainer::request_unplug
struct MockUnplug;

impl Unplug for MockUnplug {
    fn request(&self, target: &UnplugTarget<'_>) -> Result<(), BoxError> {
        let mock = target
            .mock
            .ok_or("the mock unplug needs a device of the mock")?;
        if mock.request_unplug(target.name)? {
            Ok(())
        } else {
            Err(format!("the mock found nobody to ask for {}", target.name).into())
        }
    }

    fn wait_removed(&self, target: &UnplugTarget<'_>, timeout: Duration) -> Result<(), BoxError> {
        let mock = target
            .mock
            .ok_or("the mock unplug needs a device of the mock")?;
        wait_until(timeout, "the mock device to be let go", || {
            Ok(!mock.request_unplug(target.name)?)
        })
    }
}

/// Polls `done` every millisecond until it is true, for at most `timeout`.
fn wait_until(
    timeout: Duration,
    what: &str,
    mut done: impl FnMut() -> Result<bool, BoxError>,
) -> Result<(), BoxError> {
    let start = std::time::Instant::now();
    while !done()? {
        if start.elapsed() > timeout {
            return Err(format!("timed out after {timeout:?} waiting for {what}").into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// What the vCPU thread of a hotplug run shares with the VMM thread.
#[derive(Debug, Default)]
struct Progress {
    /// The guest's counter at its last report.
    counter: AtomicU64,
    /// Set by the VMM thread: return at the guest's next report.
    stop: AtomicBool,
}

/// What the vCPU thread of a hotplug run collected.
#[derive(Debug, Default)]
struct LoopExits {
    /// How many times the guest reported.
    reports: u64,
    /// The identification values the guest reported, each once, in order.
    idents: Vec<u32>,
    /// Trapped accesses forwarded to the hal region of BAR0.
    mmio_accesses: u64,
    /// Trapped accesses the revoked region refused (`DeviceGone`): the
    /// guest read [`REMOVED`], its writes were dropped.
    gone_accesses: u64,
    /// The guest's counter, read from its RAM at the end.
    counter_in_ram: u32,
}

/// Runs [`LOOP_CODE`] until the VMM thread sets `progress.stop`: the
/// guest's trapped accesses go to `bar0`, and once the device is revoked
/// they get what a removed device answers.
fn run_loop_vcpu(
    machine: &mut Machine,
    bar0: &DynRegion,
    progress: &Progress,
) -> Result<LoopExits, BoxError> {
    let window = BAR0_GPA..BAR0_GPA + BAR0_WINDOW;
    let mut exits = LoopExits::default();
    let forward = |exits: &mut LoopExits, r: vfio_hal_facade::Result<()>, data: &mut [u8]| {
        exits.mmio_accesses += 1;
        match r {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == vfio_hal_facade::ErrorKind::DeviceGone => {
                exits.gone_accesses += 1;
                data.fill(0xff);
                Ok(())
            }
            Err(e) => Err(e),
        }
    };
    loop {
        match machine.vcpu.run().map_err(|e| format!("KVM_RUN: {e}"))? {
            VcpuExit::MmioRead(addr, data) if window.contains(&addr) => {
                let r = bar0.read(addr - BAR0_GPA, data);
                forward(&mut exits, r, data)?;
            }
            VcpuExit::MmioWrite(addr, data) if window.contains(&addr) => {
                let r = bar0.write(addr - BAR0_GPA, data);
                forward(&mut exits, r, &mut [])?;
            }
            VcpuExit::IoOut(loop_port::LAST_ID, data) => {
                let id = le_u32(data).ok_or("a short identification report")?;
                if !exits.idents.contains(&id) {
                    exits.idents.push(id);
                }
            }
            VcpuExit::IoOut(loop_port::COUNTER, data) => {
                let counter = le_u32(data).ok_or("a short counter report")?;
                exits.reports += 1;
                progress
                    .counter
                    .store(u64::from(counter), Ordering::Release);
                if progress.stop.load(Ordering::Acquire) {
                    break;
                }
            }
            other => {
                let what = format!("{other:?}");
                let rip = machine.vcpu.get_regs().map(|r| r.rip).unwrap_or(u64::MAX);
                return Err(format!("unexpected exit {what} at rip {rip:#x}").into());
            }
        }
    }
    let mut counter = [0u8; 4];
    machine.ram.buffer().read(LOOP_COUNTER_GPA, &mut counter)?;
    exits.counter_in_ram = u32::from_le_bytes(counter);
    Ok(exits)
}

/// What a hotplug run observed.
#[derive(Debug, Clone)]
struct HotplugOutcome {
    device: String,
    backend: Backend,
    bar0: Bar0Path,
    hypervisor: &'static str,
    /// The guest's counter when the VMM saw REQ, once the host had removed
    /// the device, and (from guest RAM) at the end.
    counter_at_req: u64,
    counter_at_removed: u64,
    counter_final: u64,
    /// From the unplug request to REQ, and from the revocation to the
    /// host's removal.
    req_after: Duration,
    removed_after: Duration,
    /// What the MSI and REQ irqs answered to `disable` after the
    /// revocation (it tore their routes down).
    irqs_after_revoke: [Option<vfio_hal_facade::ErrorKind>; 2],
    /// The identification values the guest reported, in order.
    idents: Vec<u32>,
    reports: u64,
    mmio_accesses: u64,
    gone_accesses: u64,
}

impl HotplugOutcome {
    /// Every check of the story, with what was expected and what came back.
    fn check(&self) -> Result<(), String> {
        let mut failures = Vec::new();
        if self.idents.first() != Some(&EDU_ID) {
            failures.push(format!(
                "the guest first read {:x?}, expected edu's identification {EDU_ID:#010x}",
                self.idents
            ));
        }
        if self.idents.last() != Some(&REMOVED) || self.gone_accesses == 0 {
            failures.push(format!(
                "the guest read {:x?} ({} trapped accesses refused): expected it to end up reading {REMOVED:#x} from the removed device",
                self.idents, self.gone_accesses
            ));
        }
        if !(0 < self.counter_at_req
            && self.counter_at_req <= self.counter_at_removed
            && self.counter_at_removed + 2 * LOOP_REPORT_EVERY <= self.counter_final)
        {
            failures.push(format!(
                "the guest's counter: {} at REQ, {} at the removal, {} at the end; expected it to keep running past the removal",
                self.counter_at_req, self.counter_at_removed, self.counter_final
            ));
        }
        let gone = Some(vfio_hal_facade::ErrorKind::DeviceGone);
        if self.irqs_after_revoke != [gone, gone] {
            failures.push(format!(
                "MSI and REQ disable after the revocation: {:?}, expected DeviceGone",
                self.irqs_after_revoke
            ));
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }
}

/// What the VMM thread of a hotplug run measured.
#[derive(Debug)]
struct Unplugged {
    counter_at_req: u64,
    counter_at_removed: u64,
    req_after: Duration,
    removed_after: Duration,
    irqs_after_revoke: [Option<vfio_hal_facade::ErrorKind>; 2],
}

/// The device's handles a hotplug run lets go of when REQ arrives.
struct Passthrough {
    device: DynDevice,
    msi: DynIrq,
    req: DynIrq,
    msi_fd: EventFd,
    req_fd: EventFd,
    registration: VfioFileRegistration<Box<dyn Hypervisor>>,
    revoker: Revoker,
}

/// The hotplug story of passthrough: the guest ([`LOOP_CODE`]) uses the
/// device (BAR0 mapped as in [`run_vmm`] where it can be, its MSI on an
/// irqfd, its VFIO file added to the hypervisor) while `unplug` asks the
/// host to remove it; the device's REQ interrupt, routed to an eventfd this
/// thread waits on, makes the VMM let go of it while the vCPU thread keeps
/// running the guest: revoke it ([`Revoker::revoke`]: BAR mmaps become
/// zero pages, the routes go, every later call is `DeviceGone`), delete
/// BAR0's memory slot (so the guest's accesses exit and read a removed
/// device's all-ones), unregister the irqfd, remove the VFIO file from the
/// hypervisor, drop every handle. Then the host's removal completes, and
/// the guest is still counting.
fn run_hotplug(
    spec: &OpenSpec,
    map_bar: bool,
    unplug: &dyn Unplug,
    timeout: Duration,
) -> Result<HotplugOutcome, BoxError> {
    let opened: Opened = open(spec)?;
    let mock = opened.mock().cloned();
    let Opened {
        device,
        container,
        name,
        backend,
        ..
    } = opened;
    let container = Arc::new(container);
    device.set_bus_master(true)?;
    let bar0 = device.region(vfio_hal_facade::pci::region::BAR0)?;
    let msi = device.irq(vfio_hal_facade::irq::index::MSI)?;
    let req = device.irq(vfio_hal_facade::irq::index::REQ)?;
    // Taken before the handles spread over threads.
    let revoker = device.revoker()?;

    let mut machine = setup_machine(true, &container, &LOOP_CODE)?;
    let bar0_path = place_bar0(&mut machine, &bar0, map_bar);
    let registration = tell_hypervisor(backend, &machine.vm, &device)?;
    let hypervisor = registration.hypervisor().name();
    let irqchip = machine.irqchip;
    let msi_fd = route_msi(&machine, &msi)?;
    let req_fd = EventFd::nonblocking().map_err(|e| format!("eventfd: {e}"))?;
    req.set_eventfd(0, Some(req_fd.as_fd()))?;
    let passthrough = Passthrough {
        device,
        msi,
        req,
        msi_fd,
        req_fd,
        registration,
        revoker,
    };

    let vm = Arc::clone(&machine.vm);
    let progress = Arc::new(Progress::default());
    let (tx, rx) = mpsc::channel();
    // As in `run_vmm`: if the guest stops reporting, the vCPU thread stays
    // blocked in KVM_RUN with everything the guest may touch.
    let worker = {
        let progress = Arc::clone(&progress);
        std::thread::spawn(move || {
            let result = run_loop_vcpu(&mut machine, &bar0, &progress);
            // Whatever happened, the VMM thread waits no more.
            progress.stop.store(true, Ordering::Release);
            drop((machine, bar0));
            let _ = tx.send(result);
        })
    };
    let target = UnplugTarget {
        name: &name,
        mock: mock.as_ref(),
    };
    let unplugged = unplug_while_running(
        passthrough,
        vm,
        map_bar && bar0_path == Bar0Path::Mapped,
        irqchip,
        &progress,
        unplug,
        &target,
        timeout,
    );
    // Stop the guest at its next report (the VMM thread's handle of the
    // VM is gone by now, so the vCPU thread's is the last).
    progress.stop.store(true, Ordering::Release);
    let exits = rx
        .recv_timeout(timeout)
        .map_err(|_| format!("the guest did not report within {timeout:?} of the stop"))??;
    let _ = worker.join();
    let unplugged = unplugged?;
    Ok(HotplugOutcome {
        device: name,
        backend,
        bar0: bar0_path,
        hypervisor,
        counter_at_req: unplugged.counter_at_req,
        counter_at_removed: unplugged.counter_at_removed,
        counter_final: u64::from(exits.counter_in_ram),
        req_after: unplugged.req_after,
        removed_after: unplugged.removed_after,
        irqs_after_revoke: unplugged.irqs_after_revoke,
        idents: exits.idents,
        reports: exits.reports,
        mmio_accesses: exits.mmio_accesses,
        gone_accesses: exits.gone_accesses,
    })
}

/// The VMM thread's part of [`run_hotplug`], while the vCPU thread runs the
/// guest: unplug, wait for REQ, let go of the device, wait for the removal,
/// watch the guest keep counting.
#[allow(clippy::too_many_arguments)]
fn unplug_while_running(
    passthrough: Passthrough,
    vm: Arc<VmFd>,
    bar0_slot: bool,
    irqchip: bool,
    progress: &Progress,
    unplug: &dyn Unplug,
    target: &UnplugTarget<'_>,
    timeout: Duration,
) -> Result<Unplugged, BoxError> {
    let counter = || progress.counter.load(Ordering::Acquire);
    let running = |what: &str| -> Result<(), BoxError> {
        if progress.stop.load(Ordering::Acquire) {
            Err(format!("the vCPU thread stopped {what}").into())
        } else {
            Ok(())
        }
    };
    wait_until(timeout, "the guest's first report", || {
        running("before the guest's first report")?;
        Ok(counter() > 0)
    })?;

    let asked = std::time::Instant::now();
    unplug.request(target)?;
    let fired = passthrough
        .req_fd
        .wait(timeout)
        .map_err(|e| format!("wait for REQ: {e}"))?;
    if fired == 0 {
        return Err(format!("no REQ interrupt within {timeout:?} of the unplug request").into());
    }
    let req_after = asked.elapsed();
    let counter_at_req = counter();

    // Let go of the device, the guest running.
    let revoked = std::time::Instant::now();
    let Passthrough {
        device,
        msi,
        req,
        msi_fd,
        req_fd,
        registration,
        revoker,
    } = passthrough;
    revoker.revoke()?;
    if bar0_slot {
        let delete = kvm_userspace_memory_region {
            slot: 1,
            flags: 0,
            guest_phys_addr: BAR0_GPA,
            memory_size: 0,
            userspace_addr: 0,
        };
        // SAFETY: a size of 0 deletes slot 1; the guest's accesses to the
        // window exit from now on. No memory is handed to KVM.
        unsafe { vm.set_user_memory_region(delete) }
            .map_err(|e| format!("delete BAR0's memory slot: {e}"))?;
    }
    if irqchip {
        vm.unregister_irqfd(&msi_fd, EDU_GSI)
            .map_err(|e| format!("unregister the MSI irqfd: {e}"))?;
    }
    drop(vm);
    registration.remove()?;
    // The revocation tore the routes down; the irqs say so.
    let irqs_after_revoke = [msi.disable(), req.disable()].map(|r| r.err().map(|e| e.kind()));
    drop((msi, req, msi_fd, req_fd, device, revoker));

    unplug.wait_removed(target, timeout)?;
    let removed_after = revoked.elapsed();
    let counter_at_removed = counter();
    wait_until(
        timeout,
        "the guest to keep counting after the removal",
        || {
            running("while the guest should keep counting")?;
            Ok(counter() >= counter_at_removed + 2 * LOOP_REPORT_EVERY)
        },
    )?;
    Ok(Unplugged {
        counter_at_req,
        counter_at_removed,
        req_after,
        removed_after,
        irqs_after_revoke,
    })
}

fn print_hotplug(outcome: &HotplugOutcome) {
    println!(
        "hotplug: device {} ({} backend, its VFIO file added to the {} hypervisor), BAR0 {}",
        outcome.device,
        outcome.backend,
        outcome.hypervisor,
        match &outcome.bar0 {
            Bar0Path::Mapped => "a KVM memory slot until the unplug".to_owned(),
            Bar0Path::Trapped(why) => format!("trapped ({why})"),
        }
    );
    println!(
        "REQ {:?} after the unplug request (guest counter {}); revoked; BAR0 slot (if any), irqfd and VFIO file removed; handles dropped; the host removed the device {:?} after the revocation (counter {}); the guest ran on to {}",
        outcome.req_after,
        outcome.counter_at_req,
        outcome.removed_after,
        outcome.counter_at_removed,
        outcome.counter_final
    );
    println!(
        "the guest read {:x?}; {} reports, {} trapped accesses ({} refused as DeviceGone, answered {REMOVED:#x})",
        outcome.idents, outcome.reports, outcome.mmio_accesses, outcome.gone_accesses
    );
}

fn hex(v: Option<u32>) -> String {
    v.map_or_else(|| "nothing".to_owned(), |v| format!("{v:#010x}"))
}

fn print(outcome: &Outcome) {
    println!(
        "device {} ({} backend, its VFIO file added to the {} hypervisor), BAR0 at GPA {BAR0_GPA:#x}",
        outcome.device, outcome.backend, outcome.hypervisor
    );
    match &outcome.bar0 {
        Bar0Path::Mapped => println!("BAR0: its mmap is a KVM memory slot (no exits)"),
        Bar0Path::Trapped(why) => println!("BAR0: trapped, every access exits ({why})"),
    }
    println!(
        "guest read identification {} (expected {EDU_ID:#010x})",
        hex(outcome.identification)
    );
    println!(
        "guest wrote liveness {LIVENESS_PATTERN:#010x}, read back {} (expected {:#010x})",
        hex(outcome.liveness),
        !LIVENESS_PATTERN
    );
    println!(
        "DMA: edu copied guest RAM {DMA_SOURCE_GPA:#x} -> its buffer -> guest RAM {DMA_BACK_GPA:#x} (IOVA = GPA); the guest found them {}, the VMM reads {:?} there",
        match outcome.dma_match {
            Some(1) => "equal",
            Some(_) => "different",
            None => "(no answer)",
        },
        String::from_utf8_lossy(&outcome.dma_back)
    );
    match outcome.delivery {
        Delivery::Irqfd {
            handler_runs,
            dma_status,
            raised_status,
        } => println!(
            "interrupt: MSI eventfd -> KVM irqfd GSI {EDU_GSI} -> in-kernel PIC -> guest handler ran {handler_runs} time(s), saw status {} then {}, acknowledged them (status now {:#x})",
            hex(dma_status),
            hex(raised_status),
            outcome.status_after
        ),
        Delivery::EventfdRead(n) => println!(
            "interrupt: no in-kernel irqchip; the VMM read {n} from the MSI eventfd"
        ),
        Delivery::None => println!("interrupt: none arrived"),
    }
    println!(
        "MMIO exits forwarded to the hal region: {} reads, {} writes",
        outcome.mmio_reads, outcome.mmio_writes
    );
    let t = &outcome.timing;
    let shown =
        |ns: Option<f64>| ns.map_or_else(|| "not measured".to_owned(), |v| format!("{v:.0} ns"));
    println!(
        "guest-timed (TSC at {} kHz): register read {}, DMA round trip {}, interrupt raise -> handler {}",
        t.tsc_khz.map_or_else(|| "?".to_owned(), |k| k.to_string()),
        shown(t.read_ns()),
        shown(t.dma_ns()),
        shown(t.irq_ns())
    );
}

#[cfg_attr(test, allow(dead_code))]
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let want_irqchip = !args.iter().any(|a| a == "--no-irqchip");
    let map_bar = !args.iter().any(|a| a == "--trap-bar");
    let device = args.iter().find(|a| !a.starts_with("--"));
    if args.iter().any(|a| a == "--unplug") {
        return main_unplug(device.map(String::as_str), map_bar);
    }
    let outcome = run_vmm(
        &spec_for(device.map(String::as_str)),
        want_irqchip,
        map_bar,
        Duration::from_secs(10),
    );
    exit_code(outcome.map(|o| {
        print(&o);
        o.check()
    }))
}

/// `--unplug`: the hotplug story ([`run_hotplug`]) on the mock edu, whose
/// container plays the host asking for the device back.
#[cfg_attr(test, allow(dead_code))]
fn main_unplug(device: Option<&str>, map_bar: bool) -> ExitCode {
    if let Some(device) = device {
        eprintln!("FAILED: --unplug runs on the mock edu only; {device} is the host's to unplug");
        return ExitCode::FAILURE;
    }
    let outcome = run_hotplug(
        &spec_for(None),
        map_bar,
        &MockUnplug,
        Duration::from_secs(10),
    );
    exit_code(outcome.map(|o| {
        print_hotplug(&o);
        o.check()
    }))
}

/// The exit status of a run: `ok` and success if it ran and its checks
/// passed, else what failed and failure.
#[cfg_attr(test, allow(dead_code))]
fn exit_code(run: Result<Result<(), String>, BoxError>) -> ExitCode {
    match run {
        Ok(Ok(())) => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("FAILED: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Held by every test that runs a VM, for its whole run: some count
    /// this process's fds, which a VM built on another thread would move.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether KVM can be used here. libtest cannot mark a test skipped at
    /// run time, so without usable KVM the tests pass with a loud
    /// `SKIPPED` line on stderr — unless `VFIO_HAL_REQUIRE_KVM=1` (set it
    /// where KVM must exist, as in CI) turns the skip into a failure.
    fn kvm_usable(test: &str) -> bool {
        let usable = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm");
        match usable {
            Ok(_) => true,
            Err(e) => {
                let msg =
                    format!("{test}: /dev/kvm is not usable ({e}): the KVM example did not run");
                if std::env::var_os("VFIO_HAL_REQUIRE_KVM").is_some_and(|v| v == "1") {
                    panic!("{msg}, and VFIO_HAL_REQUIRE_KVM=1 requires it");
                }
                // Straight to the process's stderr: libtest captures
                // eprintln! of passing tests, and a skip must be seen.
                use std::io::Write;
                let _ = writeln!(std::io::stderr().lock(), "SKIPPED: {msg}");
                false
            }
        }
    }

    #[test]
    fn the_guest_reads_edu_and_its_interrupt_arrives_through_irqfd() {
        let _serial = serial();
        if !kvm_usable("irqfd") {
            return;
        }
        let outcome =
            run_vmm(&spec_for(None), true, true, Duration::from_secs(20)).expect("the VMM runs");
        print(&outcome);
        if let Err(e) = outcome.check() {
            panic!("{e}: {outcome:?}");
        }
        assert_eq!(outcome.backend, Backend::Mock);
        // x86 KVM always offers the in-kernel irqchip; elsewhere the
        // eventfd path below is what runs.
        if cfg!(target_arch = "x86_64") {
            assert!(
                matches!(outcome.delivery, Delivery::Irqfd { .. }),
                "{outcome:?}"
            );
        }
        assert!(
            outcome.mmio_reads >= 3 && outcome.mmio_writes >= 3,
            "{outcome:?}"
        );
    }

    #[test]
    fn without_an_irqchip_the_vmm_reads_the_eventfd() {
        let _serial = serial();
        if !kvm_usable("no irqchip") {
            return;
        }
        let outcome =
            run_vmm(&spec_for(None), false, true, Duration::from_secs(20)).expect("the VMM runs");
        print(&outcome);
        if let Err(e) = outcome.check() {
            panic!("{e}: {outcome:?}");
        }
        assert_eq!(outcome.delivery, Delivery::EventfdRead(1), "{outcome:?}");
    }

    /// In the lane's guest (nested KVM under TCG): the same VMM on the
    /// guest's real edu, through each real backend, its VFIO file added to
    /// KVM, guest RAM DMA-mapped at IOVA = GPA and the MSI injected by
    /// KVM's irqfd; once with BAR0 a memory slot and once trapped, and the
    /// guest's timings of both printed side by side (a `passthrough(...)`
    /// line per backend).
    #[test]
    #[cfg_attr(
        not(vfio_hal_guest),
        ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
    )]
    fn the_vmm_passes_the_lanes_real_edu_through_each_backend_to_a_kvm_guest() {
        let _serial = serial();
        assert!(kvm_usable("lane"), "the lane's guest kernel has KVM");
        let kernel = vfio_hal_guest_tests::lane_env(vfio_hal_guest_tests::KERNEL);
        let edu = vfio_hal_guest_tests::lane_env(vfio_hal_guest_tests::EDU_BDF);
        for backend in [Backend::Legacy, Backend::Iommufd] {
            let spec = OpenSpec::new(edu.as_str()).with_backend(backend);
            let run = |map_bar| {
                let outcome = run_vmm(&spec, true, map_bar, Duration::from_secs(120))
                    .unwrap_or_else(|e| panic!("{backend}: {e}"));
                print(&outcome);
                if let Err(e) = outcome.check() {
                    panic!("{backend}: {e}: {outcome:?}");
                }
                assert_eq!((outcome.backend, outcome.hypervisor), (backend, "kvm"));
                assert!(
                    matches!(outcome.delivery, Delivery::Irqfd { .. }),
                    "{backend}: {outcome:?}"
                );
                outcome
            };
            let mapped = run(true);
            assert_eq!(
                mapped.bar0,
                Bar0Path::Mapped,
                "{backend}: the BAR is mappable"
            );
            let trapped = run(false);
            assert!(trapped.mmio_reads >= 64, "{backend}: {trapped:?}");
            let figure = |ns: Option<f64>| ns.map_or_else(|| "?".to_owned(), |v| format!("{v:.0}"));
            let ratio = match (trapped.timing.read_ns(), mapped.timing.read_ns()) {
                (Some(t), Some(m)) if m > 0.0 => format!("{:.1}", t / m),
                _ => "?".to_owned(),
            };
            use std::io::Write;
            let _ = writeln!(
                std::io::stdout().lock(),
                "passthrough({kernel}, {backend}): L2 register read {} ns mapped, {} ns trapped ({ratio}x); DMA round trip {} ns; interrupt raise -> L2 handler {} ns (mapped run)",
                figure(mapped.timing.read_ns()),
                figure(trapped.timing.read_ns()),
                figure(mapped.timing.dma_ns()),
                figure(mapped.timing.irq_ns()),
            );
        }
    }

    /// The fds of this process, for checking that a run leaves none behind.
    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
    }

    #[test]
    fn on_req_the_vmm_lets_go_of_the_mock_edu_and_the_guest_keeps_running() {
        let _serial = serial();
        if !kvm_usable("hotplug") {
            return;
        }
        let fds = open_fds();
        let outcome = run_hotplug(&spec_for(None), true, &MockUnplug, Duration::from_secs(20))
            .expect("the hotplug run");
        print_hotplug(&outcome);
        if let Err(e) = outcome.check() {
            panic!("{e}: {outcome:?}");
        }
        assert_eq!(
            (outcome.backend, outcome.hypervisor),
            (Backend::Mock, "mock")
        );
        assert_eq!(open_fds(), fds, "the run left fds open: {outcome:?}");
    }

    /// The lane's unplug of a device passed through to a KVM guest:
    /// QEMU's `device_del` reaches the VMM as REQ.
    struct LaneUnplug {
        id: String,
        bdf: String,
    }

    impl Unplug for LaneUnplug {
        fn request(&self, _: &UnplugTarget<'_>) -> Result<(), BoxError> {
            Ok(vfio_hal_guest_tests::request_unplug(&self.id)?)
        }

        fn wait_removed(&self, _: &UnplugTarget<'_>, timeout: Duration) -> Result<(), BoxError> {
            if vfio_hal_guest_tests::wait_until_removed(&self.bdf, timeout) {
                Ok(())
            } else {
                Err(format!(
                    "{} still present {timeout:?} after the VMM let go",
                    self.bdf
                )
                .into())
            }
        }
    }

    /// In the lane's guest: `device_del` of the third (legacy) and fourth
    /// (iommufd) spare edu while a KVM guest uses it, BAR0 a memory slot;
    /// the VMM lets go on REQ, QEMU's removal completes, the KVM guest
    /// keeps running, and no fd is left behind. A `hotplug(<kernel>,
    /// <backend>)` line per backend.
    #[test]
    #[cfg_attr(
        not(vfio_hal_guest),
        ignore = "needs the real-kernel lane: bash tests/vm/lane.sh"
    )]
    fn device_del_of_a_passed_through_edu_leaves_the_kvm_guest_running() {
        use vfio_hal_guest_tests as lane;
        let _serial = serial();
        assert!(
            kvm_usable("lane hotplug"),
            "the lane's guest kernel has KVM"
        );
        let kernel = lane::lane_env(lane::KERNEL);
        for (backend, bdf, id) in [
            (Backend::Legacy, lane::SPARE3_BDF, lane::SPARE3_ID),
            (Backend::Iommufd, lane::SPARE4_BDF, lane::SPARE4_ID),
        ] {
            let unplug = LaneUnplug {
                id: lane::lane_env(id),
                bdf: lane::lane_env(bdf),
            };
            let fds = open_fds();
            let spec = OpenSpec::new(unplug.bdf.as_str()).with_backend(backend);
            let outcome = run_hotplug(&spec, true, &unplug, Duration::from_secs(120))
                .unwrap_or_else(|e| panic!("{backend}: {e}"));
            print_hotplug(&outcome);
            if let Err(e) = outcome.check() {
                panic!("{backend}: {e}: {outcome:?}");
            }
            assert_eq!((outcome.backend, outcome.hypervisor), (backend, "kvm"));
            assert_eq!(
                outcome.bar0,
                Bar0Path::Mapped,
                "{backend}: the BAR is mappable"
            );
            assert!(!lane::pci_device_dir(&unplug.bdf).exists());
            assert_eq!(open_fds(), fds, "{backend}: the run left fds open");
            use std::io::Write;
            let _ = writeln!(
                std::io::stdout().lock(),
                "hotplug({kernel}, {backend}): device_del -> REQ {:?}; revoke, slot/irqfd/VFIO file removed -> device gone {:?} later; L2 counter {} at REQ, {} at removal, {} at the end; L2 read {:x?}",
                outcome.req_after,
                outcome.removed_after,
                outcome.counter_at_req,
                outcome.counter_at_removed,
                outcome.counter_final,
                outcome.idents,
            );
        }
    }

    #[test]
    fn the_loop_listing_matches_the_bytes() {
        assert_eq!(&LOOP_CODE[0x16..0x18], &0x800u16.to_le_bytes());
        assert_eq!(
            &LOOP_CODE[0x1b..0x1d],
            &(LOOP_COUNTER_GPA as u16).to_le_bytes()
        );
        assert_eq!(
            &LOOP_CODE[0x21..0x23],
            &((LOOP_REPORT_EVERY - 1) as u16).to_le_bytes()
        );
        assert_eq!(&LOOP_CODE[0x2a..0x2c], &loop_port::LAST_ID.to_le_bytes());
        assert_eq!(&LOOP_CODE[0x33..0x35], &loop_port::COUNTER.to_le_bytes());
        // The last jump goes back to `spin` (0x0f).
        assert_eq!(0x39 + i32::from(LOOP_CODE[0x38] as i8), 0x0f);
    }

    #[test]
    fn the_check_fails_on_a_wrong_value_or_a_missing_interrupt() {
        let good = Outcome {
            device: "edu".into(),
            backend: Backend::Mock,
            bar0: Bar0Path::Trapped("handler-backed".into()),
            hypervisor: "mock",
            identification: Some(EDU_ID),
            liveness: Some(!LIVENESS_PATTERN),
            delivery: Delivery::Irqfd {
                handler_runs: 2,
                dma_status: Some(EDU_DMA_IRQ),
                raised_status: Some(EDU_RAISED),
            },
            mmio_reads: 3,
            mmio_writes: 3,
            status_after: 0,
            dma_match: Some(1),
            dma_back: DMA_PATTERN,
            timing: Timing::default(),
        };
        assert_eq!(good.check(), Ok(()));
        let wrong_id = Outcome {
            identification: Some(0xffff_ffff),
            ..good.clone()
        };
        assert!(wrong_id
            .check()
            .is_err_and(|e| e.contains("identification")));
        let no_irq = Outcome {
            delivery: Delivery::None,
            ..wrong_id
        };
        let e = no_irq.check().expect_err("two failures");
        assert!(
            e.contains("identification") && e.contains("interrupt"),
            "{e}"
        );
        let unacked = Outcome {
            identification: Some(EDU_ID),
            delivery: Delivery::Irqfd {
                handler_runs: 2,
                dma_status: Some(EDU_DMA_IRQ),
                raised_status: Some(EDU_RAISED),
            },
            status_after: 1,
            ..no_irq
        };
        assert!(unacked.check().is_err());
        let dma_lost = Outcome {
            dma_back: [0; 16],
            ..good.clone()
        };
        assert!(dma_lost
            .check()
            .is_err_and(|e| e.contains("DMA round trip")));
        let mapped_but_exiting = Outcome {
            bar0: Bar0Path::Mapped,
            ..good.clone()
        };
        assert!(mapped_but_exiting
            .check()
            .is_err_and(|e| e.contains("memory slot")));
    }

    #[test]
    fn the_listing_matches_the_bytes() {
        // Spot checks that tie the listing to the array: the handler's
        // address in the vector table, and the handler's first and last bytes.
        let isr = 0x129;
        assert_eq!(
            &GUEST_CODE[0x0e..0x10],
            &((CODE_GPA as u16) + isr).to_le_bytes()
        );
        assert_eq!(&GUEST_CODE[isr as usize..isr as usize + 2], &[0x66, 0x50]);
        assert_eq!(GUEST_CODE.last(), Some(&0xcf));
        assert_eq!(&GUEST_CODE[0x35..0x37], &port::ID.to_le_bytes());
        assert_eq!(&GUEST_CODE[0x3f..0x43], &LIVENESS_PATTERN.to_le_bytes());
        // The DMA source and destination in guest RAM, and the answer's port.
        assert_eq!(
            &GUEST_CODE[0x71..0x75],
            &(DMA_SOURCE_GPA as u32).to_le_bytes()
        );
        assert_eq!(
            &GUEST_CODE[0xac..0xb0],
            &(DMA_BACK_GPA as u32).to_le_bytes()
        );
        assert_eq!(&GUEST_CODE[0xf4..0xf6], &port::DMA_MATCH.to_le_bytes());
        assert_eq!(&GUEST_CODE[0x135..0x137], &port::IRQ_CYCLES.to_le_bytes());
    }
}
