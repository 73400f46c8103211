//! `pci_config`: walks of the standard capability list and BAR decoding.
//!
//! Input: a config-space snapshot of any length (vfio-pci returns 256 bytes
//! for conventional PCI, 4096 for PCIe; a short read gives fewer).
//!
//! Properties:
//! - [`walk_capabilities`] returns, never panics; an error is `Malformed`.
//! - Without the status register's capability-list bit the list is empty.
//! - Otherwise the walk is the list the bytes describe: it starts at the
//!   capability pointer, follows each entry's next pointer (low two bits
//!   ignored) to a 0, every entry lies at 0x40 or above and is read where it
//!   sits, no offset repeats, at most [`MAX_PCI_CAPS`] entries.
//! - [`decode_bar`] on each BAR register is consistent with the register's
//!   type bits.

use std::collections::BTreeSet;

use vfio_hal::error::Buffer;
use vfio_hal::pci::{cfg, decode_bar, walk_capabilities, Bar, PciCap, MAX_PCI_CAPS};
use vfio_hal::{Error, ErrorKind};

/// The fuzz entry point.
pub fn check(config: &[u8]) {
    match walk_capabilities(config) {
        Ok(caps) => check_walk(config, &caps),
        Err(source) => {
            let err = Error::Malformed {
                buffer: Buffer::ConfigSpace,
                source,
            };
            assert_eq!(err.kind(), ErrorKind::Malformed);
            assert!(!err.to_string().is_empty());
        }
    }
    check_bars(config);
}

fn byte(config: &[u8], at: u64) -> u8 {
    config[at as usize]
}

fn check_walk(config: &[u8], caps: &[PciCap]) {
    let status = u16::from_le_bytes([byte(config, cfg::STATUS), byte(config, cfg::STATUS + 1)]);
    if status & cfg::STATUS_CAP_LIST == 0 {
        assert!(
            caps.is_empty(),
            "capabilities without the list bit: {caps:?}"
        );
        return;
    }
    assert!(caps.len() <= MAX_PCI_CAPS, "{} capabilities", caps.len());
    let mut seen = BTreeSet::new();
    let mut expect = byte(config, cfg::CAP_PTR) & !3;
    for cap in caps {
        assert_eq!(cap.offset, expect, "walk left the chain: {caps:?}");
        assert!(cap.offset >= 0x40, "{cap:?}");
        assert!(seen.insert(cap.offset), "{cap:?} visited twice");
        assert_eq!(cap.id, byte(config, u64::from(cap.offset)), "{cap:?}");
        expect = byte(config, u64::from(cap.offset) + 1) & !3;
    }
    assert_eq!(expect, 0, "the walk stopped before the end of the chain");
}

fn reg32(config: &[u8], at: u64) -> u32 {
    let at = at as usize;
    match config.get(at..at + 4) {
        Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        None => 0,
    }
}

fn check_bars(config: &[u8]) {
    for i in 0..6u64 {
        let low = reg32(config, cfg::BAR0 + 4 * i);
        let high = reg32(config, cfg::BAR0 + 4 * (i + 1));
        // A size from elsewhere in the snapshot, sometimes 0 (absent).
        let size = u64::from(reg32(config, 0x40 + 4 * i)) << 4;
        match decode_bar(low, high, size) {
            Bar::Absent => assert_eq!(size, 0),
            Bar::Io { address, size: s } => {
                assert!(size != 0 && low & 1 == 1);
                assert_eq!((address, s), (low & !3, size));
            }
            Bar::Memory {
                address,
                size: s,
                is_64bit,
                prefetchable,
            } => {
                assert!(size != 0 && low & 1 == 0);
                assert_eq!(s, size);
                assert_eq!(address & 0xf, 0);
                assert_eq!(address as u32, low & !0xf);
                assert_eq!(is_64bit, (low >> 1) & 3 == 2);
                assert_eq!(prefetchable, low & 8 != 0);
                let upper = if is_64bit { high } else { 0 };
                assert_eq!((address >> 32) as u32, upper);
            }
        }
    }
}
