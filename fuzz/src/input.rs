//! A cursor over fuzz input that never fails: past the end it reads zeros.
//!
//! Structured targets (an allocator op sequence, an irq info plus a payload)
//! decode their fields with it, so every byte string is some valid program
//! and the fuzzer spends no time on inputs that do not decode.

/// Reads little-endian fields off the front of the input.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// Whether every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.data.len());
        out[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        out
    }

    /// The next byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }

    /// The next little-endian `u16` (zero-padded past the end).
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }

    /// The next little-endian `u32` (zero-padded past the end).
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }

    /// The next little-endian `u64` (zero-padded past the end).
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }

    /// Everything not read yet.
    pub fn rest(self) -> &'a [u8] {
        self.data
    }
}

/// Writes fields in the order an [`Input`] reads them (for seeds).
#[derive(Debug, Clone, Default)]
pub struct Output(pub Vec<u8>);

impl Output {
    /// Appends one byte.
    pub fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }

    /// Appends a little-endian `u16`.
    pub fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a little-endian `u32`.
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends a little-endian `u64`.
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Appends raw bytes.
    pub fn bytes(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_end_are_zero_padded() {
        let mut i = Input::new(&[1, 2, 3]);
        assert_eq!(i.u16(), 0x0201);
        assert!(!i.is_empty());
        assert_eq!(i.u32(), 3);
        assert!(i.is_empty());
        assert_eq!(i.u64(), 0);
    }

    #[test]
    fn output_writes_what_input_reads() {
        let bytes = Output::default().u8(7).u16(0x1234).u32(5).u64(u64::MAX).0;
        let mut i = Input::new(&bytes);
        assert_eq!(
            (i.u8(), i.u16(), i.u32(), i.u64()),
            (7, 0x1234, 5, u64::MAX)
        );
        assert!(i.is_empty());
    }
}
