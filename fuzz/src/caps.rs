//! `caps_chain`: region, device and IOMMU info capability chains.
//!
//! Input: one byte picks the [`ChainKind`] (mod 3), a little-endian `u32` is
//! the offset of the first capability (the info struct's `cap_offset`), the
//! rest is the info buffer as the kernel would return it.
//!
//! Properties:
//! - [`parse_chain`] returns, never panics; an error is a `Malformed` [`Error`].
//! - An accepted chain is laid out as the buffer says: the first entry is at
//!   `first`, each entry's `next` field is the following entry's offset and
//!   the last one's is 0, no entry starts in the fixed info struct or runs
//!   past the buffer, offsets are unique, at most [`MAX_CAPS`] entries.
//! - Re-encoding what was parsed gives a chain that parses to the same
//!   capabilities (unknown ones keep their bytes, padded to the next 8-byte
//!   boundary when another capability follows), and encoding that again is
//!   byte-for-byte the same buffer: encode ∘ parse is idempotent.

use std::collections::BTreeSet;

use vfio_hal::caps::{
    encode_chain, parse_chain, CapEntry, CAP_HEADER_SIZE, MAX_CAPS, MAX_INFO_SIZE,
};
use vfio_hal::error::Buffer;
use vfio_hal::{Capability, ChainKind, Error, ErrorKind};

use crate::input::Input;

/// The kinds, in the order the selector byte picks them.
pub const KINDS: [ChainKind; 3] = [ChainKind::Region, ChainKind::Device, ChainKind::Iommu];

/// The fuzz entry point.
pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let kind = KINDS[usize::from(input.u8()) % KINDS.len()];
    let first = input.u32();
    check_chain(kind, input.rest(), first);
}

fn buffer_of(kind: ChainKind) -> Buffer {
    match kind {
        ChainKind::Region => Buffer::RegionInfo,
        ChainKind::Device => Buffer::DeviceInfo,
        ChainKind::Iommu => Buffer::IommuInfo,
    }
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

/// Parses `buf` and checks every property of an accepted chain.
pub fn check_chain(kind: ChainKind, buf: &[u8], first: u32) {
    match parse_chain(kind, buf, first) {
        Ok(entries) => {
            check_layout(kind, buf, first, &entries);
            check_round_trip(kind, &entries);
        }
        Err(source) => {
            let err = Error::Malformed {
                buffer: buffer_of(kind),
                source,
            };
            assert_eq!(err.kind(), ErrorKind::Malformed);
            assert!(!err.to_string().is_empty());
        }
    }
}

fn check_layout(kind: ChainKind, buf: &[u8], first: u32, entries: &[CapEntry]) {
    if first == 0 {
        assert!(
            entries.is_empty(),
            "no chain, yet {} entries",
            entries.len()
        );
        return;
    }
    assert!(entries.len() <= MAX_CAPS, "{} entries", entries.len());
    assert_eq!(entries.first().map(|e| e.offset), Some(first as usize));
    let mut offsets = BTreeSet::new();
    for (i, e) in entries.iter().enumerate() {
        assert!(
            e.offset >= kind.fixed_size(),
            "entry inside the info struct: {e:?}"
        );
        assert!(
            e.offset + CAP_HEADER_SIZE <= buf.len(),
            "entry past the end: {e:?}"
        );
        assert!(
            offsets.insert(e.offset),
            "offset {} visited twice",
            e.offset
        );
        let version = u16::from_le_bytes([buf[e.offset + 2], buf[e.offset + 3]]);
        assert_eq!(e.version, version, "version of {e:?}");
        let next = u32_at(buf, e.offset + 4) as usize;
        match entries.get(i + 1) {
            Some(following) => assert_eq!(following.offset, next, "chain order at {i}"),
            None => assert_eq!(next, 0, "the last entry links on"),
        }
    }
}

fn check_round_trip(kind: ChainKind, entries: &[CapEntry]) {
    let caps: Vec<Capability> = entries.iter().map(|e| e.cap.clone()).collect();
    let (once, first) = encode_chain(kind, &caps);
    if once.len() > MAX_INFO_SIZE {
        return; // only reachable with inputs near the size limit
    }
    let reparsed: Vec<Capability> = parse_chain(kind, &once, first)
        .unwrap_or_else(|e| panic!("an encoded chain does not parse: {e}"))
        .into_iter()
        .map(|e| e.cap)
        .collect();
    assert_eq!(reparsed.len(), caps.len());
    for (i, (was, now)) in caps.iter().zip(&reparsed).enumerate() {
        let last = i + 1 == caps.len();
        match (was, now) {
            (
                Capability::Unknown { id, version, data },
                Capability::Unknown {
                    id: id2,
                    version: version2,
                    data: data2,
                },
            ) => {
                assert_eq!((id, version), (id2, version2));
                let padded = if last {
                    data.len()
                } else {
                    data.len().next_multiple_of(8)
                };
                assert_eq!(data2.len(), padded, "unknown capability {id} at {i}");
                assert_eq!(&data2[..data.len()], &data[..]);
                assert!(data2[data.len()..].iter().all(|&b| b == 0));
            }
            _ => assert_eq!(was, now, "capability {i}"),
        }
    }
    let (twice, first2) = encode_chain(kind, &reparsed);
    assert_eq!(first2, first);
    assert!(
        twice == once,
        "encode(parse(encode(caps))) differs from encode(caps)"
    );
}
