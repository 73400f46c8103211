//! The fixed-width integers that typed register access supports.

mod sealed {
    pub trait Sealed {}
}

/// A plain little-endian register width: `u8`, `u16`, `u32` or `u64`.
///
/// Sealed: registers are only ever these widths, and `MmapArea` relies on
/// every implementor being a primitive integer for its volatile accesses.
pub trait Scalar:
    sealed::Sealed + Copy + Default + Eq + std::fmt::Debug + Send + Sync + 'static
{
    /// Width in bytes.
    const SIZE: usize;
    /// Decodes from little-endian bytes; `bytes.len()` must equal `SIZE`.
    fn from_le_slice(bytes: &[u8]) -> Self;
    /// Encodes into little-endian bytes, written to `out[..SIZE]`.
    fn write_le(self, out: &mut [u8]);
    /// Widens to `u64`.
    fn to_u64(self) -> u64;
    /// Truncates from `u64`.
    fn from_u64(v: u64) -> Self;
}

macro_rules! scalar {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl Scalar for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn from_le_slice(bytes: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(&bytes[..Self::SIZE]);
                <$t>::from_le_bytes(a)
            }
            fn write_le(self, out: &mut [u8]) {
                out[..Self::SIZE].copy_from_slice(&self.to_le_bytes());
            }
            fn to_u64(self) -> u64 {
                self as u64
            }
            fn from_u64(v: u64) -> Self {
                v as $t
            }
        }
    )*};
}

scalar!(u8, u16, u32, u64);
