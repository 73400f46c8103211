//! Bounds-checked reading of untrusted byte buffers (kernel info structs,
//! capability chains, PCI config space).
//!
//! Every read names its offset; one past the end is a
//! [`ParseError::Truncated`] with the offset, the size needed and the
//! buffer's length, never a zero or a panic.
//!
//! ```
//! use vfio_hal::bytes::Reader;
//! use vfio_hal::caps::ParseError;
//!
//! let buf = 7u32.to_ne_bytes();
//! let r = Reader::new(&buf);
//! assert_eq!(r.u32(0), Ok(7));
//! assert_eq!(r.u32(2), Err(ParseError::Truncated { offset: 2, need: 4, len: 4 }));
//! ```

use crate::caps::ParseError;

/// A bounds-checked reader over an untrusted buffer.
///
/// Kernel structs are in the host's byte order; PCI config space is
/// little-endian whatever the host.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    buf: &'a [u8],
    little_endian: bool,
}

impl<'a> Reader<'a> {
    /// A reader for kernel structs (native byte order).
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            little_endian: cfg!(target_endian = "little"),
        }
    }

    /// A reader for little-endian data (PCI config space).
    pub fn little_endian(buf: &'a [u8]) -> Self {
        Self {
            buf,
            little_endian: true,
        }
    }

    /// The `len` bytes at `offset`.
    pub fn bytes(&self, offset: usize, len: usize) -> Result<&'a [u8], ParseError> {
        offset
            .checked_add(len)
            .and_then(|end| self.buf.get(offset..end))
            .ok_or(ParseError::Truncated {
                offset,
                need: len,
                len: self.buf.len(),
            })
    }

    fn array<const N: usize>(&self, offset: usize) -> Result<[u8; N], ParseError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(offset, N)?);
        Ok(out)
    }

    /// The `N`-byte number at `offset`, decoded in this reader's byte order.
    fn number<const N: usize, T>(
        &self,
        offset: usize,
        from_le: fn([u8; N]) -> T,
        from_be: fn([u8; N]) -> T,
    ) -> Result<T, ParseError> {
        let bytes = self.array(offset)?;
        Ok(if self.little_endian {
            from_le(bytes)
        } else {
            from_be(bytes)
        })
    }

    /// The byte at `offset`.
    pub fn u8(&self, offset: usize) -> Result<u8, ParseError> {
        Ok(self.array::<1>(offset)?[0])
    }

    /// The `u16` at `offset`.
    pub fn u16(&self, offset: usize) -> Result<u16, ParseError> {
        self.number(offset, u16::from_le_bytes, u16::from_be_bytes)
    }

    /// The `u32` at `offset`.
    pub fn u32(&self, offset: usize) -> Result<u32, ParseError> {
        self.number(offset, u32::from_le_bytes, u32::from_be_bytes)
    }

    /// The `u64` at `offset`.
    pub fn u64(&self, offset: usize) -> Result<u64, ParseError> {
        self.number(offset, u64::from_le_bytes, u64::from_be_bytes)
    }

    /// Checks that `count` elements of `elem` bytes fit at `offset`;
    /// returns their total size.
    pub fn elements(&self, offset: usize, count: u64, elem: usize) -> Result<usize, ParseError> {
        let total = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(elem))
            .ok_or(ParseError::CountOverflow {
                offset,
                count,
                elem,
            })?;
        self.bytes(offset, total)?;
        Ok(total)
    }
}
