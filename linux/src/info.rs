//! `argsz` info queries: run an info ioctl, and run it again with the larger
//! buffer the kernel asks for, so that the capability chain fits.
//!
//! VFIO info ioctls (`GET_INFO`, `GET_REGION_INFO`, `IOMMU_GET_INFO`) report
//! a chain that does not fit by setting the `CAPS` flag, a zero cap offset
//! and the needed size in `argsz`. The whole struct is then queried again
//! with that size — not only the chain: like crosvm we re-read every field,
//! because some drivers do not fully fill the info on a short `argsz`.
//!
//! The loop is written over a closure that performs the ioctl, so that its
//! logic is tested without a device (see the tests and `devfd`).

use vfio_hal::caps::{parse_chain, ChainKind, ParseError, MAX_INFO_SIZE};
use vfio_hal::error::Buffer;
use vfio_hal::{Capability, Error, Reader, Target};

use crate::sys::{Errno, SysResult};

/// How many times a query may be repeated because the kernel asked for
/// more room: once is the norm; more means the chain keeps growing.
const MAX_ROUNDS: usize = 4;

/// Reads the native-endian fields of a kernel `buffer`: a field past its
/// end is [`Error::Malformed`], never a zero.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    bytes: Reader<'a>,
    buffer: Buffer,
}

impl<'a> Fields<'a> {
    /// Reads `buf`, a `buffer` from the kernel.
    pub fn new(buf: &'a [u8], buffer: Buffer) -> Self {
        Self {
            bytes: Reader::new(buf),
            buffer,
        }
    }

    fn malformed(&self, source: ParseError) -> Error {
        Error::Malformed {
            buffer: self.buffer,
            source,
        }
    }

    /// The native-endian `u8` at byte `at`.
    pub fn u8(&self, at: usize) -> Result<u8, Error> {
        self.bytes.u8(at).map_err(|e| self.malformed(e))
    }

    /// The native-endian `u16` at byte `at`.
    pub fn u16(&self, at: usize) -> Result<u16, Error> {
        self.bytes.u16(at).map_err(|e| self.malformed(e))
    }

    /// The native-endian `u32` at byte `at`.
    pub fn u32(&self, at: usize) -> Result<u32, Error> {
        self.bytes.u32(at).map_err(|e| self.malformed(e))
    }

    /// The native-endian `u64` at byte `at`.
    pub fn u64(&self, at: usize) -> Result<u64, Error> {
        self.bytes.u64(at).map_err(|e| self.malformed(e))
    }
}

/// Writes a native-endian `u32` at `at`.
pub fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    if let Some(s) = buf.get_mut(at..at + 4) {
        s.copy_from_slice(&v.to_ne_bytes());
    }
}

/// Why a query failed, before it is given an op name and target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    /// The ioctl failed.
    Sys(Errno),
    /// The kernel asked for more than [`MAX_INFO_SIZE`] bytes, or kept
    /// asking for more after `MAX_ROUNDS` attempts.
    Malformed(ParseError),
}

impl QueryError {
    /// The typed HAL error: `op` on `target` failed reading `buffer`.
    pub fn into_error(self, op: &'static str, target: Target, buffer: Buffer) -> Error {
        match self {
            Self::Sys(e) => e.into_error(op, target),
            Self::Malformed(source) => Error::Malformed { buffer, source },
        }
    }
}

/// Runs an `argsz` query: a `fixed`-byte buffer, `init` writes the input
/// fields (e.g. the region index), `call` performs the ioctl (setting
/// `argsz` to the buffer length). Returns the buffer of the last call.
pub fn query(
    fixed: usize,
    init: impl Fn(&mut [u8]),
    mut call: impl FnMut(&mut [u8]) -> SysResult<i32>,
) -> Result<Vec<u8>, QueryError> {
    let mut len = fixed;
    for _ in 0..MAX_ROUNDS {
        let mut buf = vec![0u8; len];
        init(&mut buf);
        call(&mut buf).map_err(QueryError::Sys)?;
        let asked = Reader::new(&buf).u32(0).map_err(QueryError::Malformed)? as usize;
        if asked <= len {
            return Ok(buf);
        }
        if asked > MAX_INFO_SIZE {
            return Err(QueryError::Malformed(ParseError::TooLarge {
                len: asked,
                max: MAX_INFO_SIZE,
            }));
        }
        len = asked;
    }
    Err(QueryError::Malformed(ParseError::InvalidField {
        field: "argsz (still growing after repeated queries)",
        offset: 0,
        value: len as u64,
    }))
}

/// Parses the chain at `cap_offset` of a queried buffer (0: none).
pub fn caps(
    kind: ChainKind,
    buf: &[u8],
    cap_offset: u32,
    buffer: Buffer,
) -> Result<Vec<Capability>, Error> {
    parse_chain(kind, buf, cap_offset)
        .map(|entries| entries.into_iter().map(|e| e.cap).collect())
        .map_err(|source| Error::Malformed { buffer, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vfio_hal::caps::encode_chain;
    use vfio_hal::SparseArea;

    /// A kernel-faithful `GET_REGION_INFO` for one region with a sparse-mmap
    /// capability: short `argsz` gets the needed size and no chain.
    fn fake_region_info(buf: &mut [u8], calls: &mut Vec<usize>) -> SysResult<i32> {
        calls.push(buf.len());
        let argsz = Reader::new(buf).u32(0).expect("argsz") as usize;
        if argsz < 32 {
            return Err(Errno(libc::EINVAL));
        }
        let caps = [Capability::SparseMmap(vec![
            SparseArea {
                offset: 0,
                size: 0x1000,
            },
            SparseArea {
                offset: 0x3000,
                size: 0x1000,
            },
        ])];
        let (chain, first) = encode_chain(ChainKind::Region, &caps);
        put_u32(buf, 4, 0xf); // READ | WRITE | MMAP | CAPS
        if argsz < chain.len() {
            put_u32(buf, 0, chain.len() as u32);
            put_u32(buf, 12, 0);
        } else {
            buf[32..chain.len()].copy_from_slice(&chain[32..]);
            put_u32(buf, 12, first);
        }
        buf[16..24].copy_from_slice(&0x4000u64.to_ne_bytes());
        Ok(0)
    }

    #[test]
    fn a_chain_that_does_not_fit_is_queried_again_with_the_asked_size() {
        let mut calls = Vec::new();
        let buf = query(
            32,
            |b| put_u32(b, 8, 0),
            |b| {
                put_u32(b, 0, b.len() as u32);
                fake_region_info(b, &mut calls)
            },
        )
        .expect("query");
        assert_eq!(calls.len(), 2, "one short call, one full call");
        assert_eq!(calls[0], 32);
        assert!(calls[1] > 32);
        let caps = caps(
            ChainKind::Region,
            &buf,
            Reader::new(&buf).u32(12).expect("cap_offset"),
            Buffer::RegionInfo,
        )
        .expect("chain parses");
        assert!(matches!(&caps[..], [Capability::SparseMmap(a)] if a.len() == 2));
    }

    #[test]
    fn a_field_past_the_end_is_malformed_not_zero() {
        let buf = [0xffu8; 20];
        let fields = Fields::new(&buf, Buffer::RegionInfo);
        assert_eq!(fields.u32(16).ok(), Some(u32::MAX));
        let e = fields.u64(16).expect_err("8 bytes at 16 of 20");
        assert!(
            matches!(
                e,
                Error::Malformed {
                    buffer: Buffer::RegionInfo,
                    source: ParseError::Truncated {
                        offset: 16,
                        need: 8,
                        len: 20
                    }
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn no_chain_means_one_call() {
        let mut n = 0;
        let buf = query(
            24,
            |_| {},
            |b| {
                n += 1;
                put_u32(b, 8, 9);
                Ok(0)
            },
        )
        .expect("query");
        assert_eq!(n, 1);
        assert_eq!(Reader::new(&buf).u32(8), Ok(9));
    }

    #[test]
    fn the_input_fields_are_written_again_for_every_round() {
        let mut seen = Vec::new();
        query(
            32,
            |b| put_u32(b, 8, 7),
            |b| {
                seen.push(Reader::new(b).u32(8).expect("index"));
                if b.len() == 32 {
                    put_u32(b, 0, 64);
                }
                // A driver that clobbers input fields on a short call.
                put_u32(b, 8, 0xdead);
                Ok(0)
            },
        )
        .expect("query");
        assert_eq!(seen, vec![7, 7]);
    }

    #[test]
    fn an_absurd_size_request_is_malformed_not_an_allocation() {
        let e = query(
            24,
            |_| {},
            |b| {
                put_u32(b, 0, u32::MAX);
                Ok(0)
            },
        )
        .expect_err("refused");
        assert!(matches!(
            e,
            QueryError::Malformed(ParseError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_size_that_keeps_growing_is_malformed() {
        let e = query(
            24,
            |_| {},
            |b| {
                let grow = b.len() as u32 + 8;
                put_u32(b, 0, grow);
                Ok(0)
            },
        )
        .expect_err("refused");
        assert!(matches!(
            e,
            QueryError::Malformed(ParseError::InvalidField { .. })
        ));
    }

    #[test]
    fn errno_is_kept() {
        let e = query(24, |_| {}, |_| Err(Errno(libc::ENOTTY))).expect_err("fails");
        let e = e.into_error(
            "VFIO_DEVICE_GET_INFO",
            Target::Device("x".into()),
            Buffer::DeviceInfo,
        );
        assert_eq!(e.errno(), Some(libc::ENOTTY));
        assert!(e.to_string().contains("VFIO_DEVICE_GET_INFO"));
    }
}
