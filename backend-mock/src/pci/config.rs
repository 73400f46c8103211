//! Config space bytes with per-bit write masks, as vfio-pci virtualizes them.
//!
//! Every byte has a write mask (bits the user may change) and a
//! write-1-to-clear mask (status error bits). A user write keeps the bits
//! outside the write mask, takes the new value inside it, and clears the W1C
//! bits written as one. The device side (the plumbing) writes directly.
//! BAR sizing needs no special case: a BAR's mask covers only the address
//! bits above its size, so writing all ones reads back `~(size - 1) | flags`.

/// Start of the capability area (after the type 0 header).
pub(crate) const CAP_START: usize = 0x40;
/// Size of conventional config space; capabilities live below it.
pub(crate) const LEGACY_SIZE: usize = 0x100;

#[derive(Debug, Clone)]
pub(crate) struct ConfigSpace {
    bytes: Vec<u8>,
    wmask: Vec<u8>,
    w1c: Vec<u8>,
    /// Where the next capability goes, and the previous one's `next` byte.
    next_cap: usize,
    last_link: usize,
}

impl ConfigSpace {
    pub(crate) fn new(size: usize) -> Self {
        Self {
            bytes: vec![0; size],
            wmask: vec![0; size],
            w1c: vec![0; size],
            next_cap: CAP_START,
            last_link: vfio_hal::pci::cfg::CAP_PTR as usize,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Copies bytes out; the range must be in bounds (checked by the caller).
    pub(crate) fn read(&self, offset: usize, out: &mut [u8]) {
        if let Some(src) = self.bytes.get(offset..offset + out.len()) {
            out.copy_from_slice(src);
        }
    }

    /// A user write through the masks; out-of-bounds bytes are dropped.
    pub(crate) fn user_write(&mut self, offset: usize, data: &[u8]) {
        for (i, &v) in data.iter().enumerate() {
            let at = offset + i;
            let (Some(b), Some(&w), Some(&c)) =
                (self.bytes.get_mut(at), self.wmask.get(at), self.w1c.get(at))
            else {
                return;
            };
            *b = ((*b & !w) | (v & w)) & !(v & c);
        }
    }

    pub(crate) fn u8(&self, at: usize) -> u8 {
        self.bytes.get(at).copied().unwrap_or(0)
    }

    /// One bounds check when both bytes exist (the command register is
    /// read on every BAR access); a missing byte reads as 0.
    #[inline]
    pub(crate) fn u16(&self, at: usize) -> u16 {
        match self.bytes.get(at..at + 2) {
            Some(&[lo, hi]) => u16::from_le_bytes([lo, hi]),
            _ => u16::from(self.u8(at)),
        }
    }

    #[cfg(test)]
    pub(crate) fn u32(&self, at: usize) -> u32 {
        u32::from(self.u16(at)) | (u32::from(self.u16(at + 2)) << 16)
    }

    fn put(v: &mut [u8], at: usize, bytes: &[u8]) {
        if let Some(dst) = v.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    }

    pub(crate) fn set_u8(&mut self, at: usize, v: u8) {
        Self::put(&mut self.bytes, at, &[v]);
    }

    pub(crate) fn set_u16(&mut self, at: usize, v: u16) {
        Self::put(&mut self.bytes, at, &v.to_le_bytes());
    }

    pub(crate) fn set_u32(&mut self, at: usize, v: u32) {
        Self::put(&mut self.bytes, at, &v.to_le_bytes());
    }

    /// Sets or clears `bits` of the u16 at `at` (device side).
    pub(crate) fn set_bits16(&mut self, at: usize, bits: u16, on: bool) {
        let v = self.u16(at);
        self.set_u16(at, if on { v | bits } else { v & !bits });
    }

    pub(crate) fn writable_u8(&mut self, at: usize, mask: u8) {
        Self::put(&mut self.wmask, at, &[mask]);
    }

    pub(crate) fn writable_u16(&mut self, at: usize, mask: u16) {
        Self::put(&mut self.wmask, at, &mask.to_le_bytes());
    }

    pub(crate) fn writable_u32(&mut self, at: usize, mask: u32) {
        Self::put(&mut self.wmask, at, &mask.to_le_bytes());
    }

    pub(crate) fn w1c_u16(&mut self, at: usize, mask: u16) {
        Self::put(&mut self.w1c, at, &mask.to_le_bytes());
    }

    /// Appends a capability of `size` bytes with `id` to the list; returns
    /// its offset, or `None` if it does not fit below 0x100.
    pub(crate) fn add_capability(&mut self, id: u8, size: usize) -> Option<usize> {
        let at = self.next_cap.next_multiple_of(4);
        if at + size > LEGACY_SIZE.min(self.len()) {
            return None;
        }
        self.set_u8(at, id);
        self.set_u8(at + 1, 0);
        self.set_u8(self.last_link, at as u8);
        self.last_link = at + 1;
        self.next_cap = at + size;
        let status = vfio_hal::pci::cfg::STATUS as usize;
        self.set_bits16(status, vfio_hal::pci::cfg::STATUS_CAP_LIST, true);
        Some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_apply_per_bit() {
        let mut c = ConfigSpace::new(256);
        c.set_u16(6, 0x8010);
        c.w1c_u16(6, 0xf900);
        c.writable_u16(4, 0x0006);
        c.user_write(4, &[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(c.u16(4), 0x0006, "only the writable command bits");
        assert_eq!(c.u16(6), 0x0010, "W1C cleared bit 15, RO bit 4 stays");
    }

    #[test]
    fn bar_sizing_falls_out_of_the_mask() {
        let mut c = ConfigSpace::new(256);
        c.set_u32(0x10, 0xc000_0000);
        c.writable_u32(0x10, !(0x10_0000u32 - 1) & !0xf);
        c.user_write(0x10, &u32::MAX.to_le_bytes());
        assert_eq!(c.u32(0x10), 0xfff0_0000);
    }

    #[test]
    fn capabilities_chain_from_0x34() {
        let mut c = ConfigSpace::new(256);
        let a = c.add_capability(0x05, 14).expect("fits");
        let b = c.add_capability(0x11, 12).expect("fits");
        assert_eq!((a, b), (0x40, 0x50));
        assert_eq!(c.u8(0x34), 0x40);
        assert_eq!(c.u8(0x41), 0x50);
        assert_eq!(c.u8(0x51), 0);
        assert!(c.add_capability(0x10, 0x100).is_none());
    }
}
